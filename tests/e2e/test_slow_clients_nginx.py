"""Slow clients behind nginx with `proxy_buffering off` and `proxy_request_buffering off`
(streaming both ways, so nginx passes the client's slowness on to forklift): 64 clients that
stop reading a 10 MiB list answer, 64 that stop reading a 100 x 1 MiB stream and 64 that
trickle a 1 MB upload leave another client answered at once; a resumed reader gets its
answer byte-exact; every streamed answer's close() is called once.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from pathlib import Path

import pytest
from nginx_support import Forklift, make_dir, nginx_conf, start_nginx, wait_until

from support.wire import resume_reading, stalled_client

APPS = Path(__file__).resolve().parent.parent / "functional" / "apps"
sys.path.insert(0, str(APPS))
from slowclients import CHUNKS, LIST_BODY, stream_chunk  # noqa: E402

pytestmark = pytest.mark.requires("nginx")
SLOW = 64


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode()


def assert_others_served_at_once(port: int) -> None:
    times = []
    for _ in range(5):  # the first one included
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(get("/hello"))
            assert resume_reading(sock).endswith(b"\r\n\r\nhello")
        times.append(time.monotonic() - started)
    assert max(times) < 0.5, times


def cpu_ticks(pid: int) -> int:
    """CPU time (user + system, all threads) of a process and its children, in ticks."""
    total = 0
    pids = [pid] + [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for one in pids:
        fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total


def settled(pid: int) -> bool:
    """Has forklift stopped working for 0.2 s? The first fill of 128 connections' socket
    buffers (megabytes each on loopback) is CPU work that any server does once; what the
    test measures is what happens after it."""
    before = cpu_ticks(pid)
    time.sleep(0.2)
    return cpu_ticks(pid) == before


@pytest.fixture(scope="module")
def front():
    directory = make_dir("slowcl-")
    upstream = Forklift(
        ["--http", "127.0.0.1:0", "--processes", "2", "--chdir", str(APPS), "slowclients:app"],
        directory,
        env={"FIXTURE_DIR": str(directory)},
    ).start()
    port = upstream.port("http")

    def conf(listen: int) -> str:
        return nginx_conf(
            directory,
            f"    server {{\n        listen 127.0.0.1:{listen};\n"
            "        location / {\n"
            f"            proxy_pass http://127.0.0.1:{port};\n"
            "            proxy_http_version 1.1;\n"
            "            proxy_buffering off;\n"
            "            proxy_request_buffering off;\n"
            "            client_max_body_size 10m;\n"
            "        }\n    }\n",
        )

    nginx = start_nginx(directory, conf)
    yield nginx, directory, upstream.pid
    nginx.stop()
    upstream.stop()


def test_slow_readers_behind_nginx_hold_no_worker(front):
    nginx, directory, upstream_pid = front
    run = time.monotonic_ns()
    lists = [stalled_client(nginx.port, get("/list")) for _ in range(SLOW)]
    streams = [stalled_client(nginx.port, get(f"/stream?tag={run}-{i}")) for i in range(SLOW)]
    try:
        for sock in lists + streams:
            assert sock.recv(1, socket.MSG_PEEK)
        wait_until(lambda: settled(upstream_pid), 20, what="the first fill of the buffers")
        assert_others_served_at_once(nginx.port)
        raw = resume_reading(lists[0])
        assert raw.partition(b"\r\n\r\n")[2] == LIST_BODY
        expected = b"".join(stream_chunk(i) for i in range(CHUNKS))
        assert resume_reading(streams[0]).partition(b"\r\n\r\n")[2] == expected
    finally:
        for sock in lists + streams:
            sock.close()
    log = directory / "close.log"
    for i in range(SLOW):
        tag = f"close {run}-{i}"
        wait_until(lambda tag=tag: tag in log.read_text().split("\n"), 15, what=tag)
        assert log.read_text().split("\n").count(tag) == 1


def test_slow_senders_behind_nginx_hold_no_worker(front):
    nginx, _, _ = front
    size = 1_000_000
    head = f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
    senders = [stalled_client(nginx.port, head + b"s" * 200_000) for _ in range(SLOW)]
    try:
        for sock in senders:
            sock.send(b"s")
        assert_others_served_at_once(nginx.port)
        body = os.urandom(size)
        with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as sock:
            sock.sendall(head + body)
            answer = sock.recv(65536).partition(b"\r\n\r\n")[2]
        assert answer == f"{size} {hashlib.sha256(body).hexdigest()}".encode()
    finally:
        for sock in senders:
            sock.close()
