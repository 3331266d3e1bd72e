"""Slow clients never hold a worker (issue 23): with 2 workers, 64 clients that stop reading a
10 MiB list answer and 64 that stop reading a 100 x 1 MiB streamed answer, or 64 that trickle
a 1 MB upload, leave another client answered at once; memory stays bounded; a reader that
resumes gets its answer byte-exact; close() is called once per answer, also on a timeout.

Clients use a 4 KiB receive buffer (SO_RCVBUF before connect) so they stall fast.
"""

from __future__ import annotations

import hashlib
import os
import resource
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from support import wait_until
from support.wire import resume_reading, stalled_client

from .apps.slowclients import CHUNKS, LIST_BODY, stream_chunk

SLOW = 64


def slow_get(port: int, path: str) -> socket.socket:
    """Ask for `path` (HTTP/1.0: the answer ends with the connection) and read nothing."""
    return stalled_client(port, f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())


def answer_started(sock: socket.socket) -> bool:
    return bool(sock.recv(1, socket.MSG_PEEK))


def body_of(raw: bytes) -> bytes:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 200"), head[:200]
    return body


def worker_pids(server) -> list:
    pid = server.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_ticks(pids) -> int:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total


def settled(pids) -> bool:
    """Have the workers stopped working for 0.2 s? Filling 128 connections' socket buffers
    (megabytes each on loopback) is CPU work any server does once; the test measures what
    happens after it."""
    before = cpu_ticks(pids)
    time.sleep(0.2)
    return cpu_ticks(pids) == before


def timed_hello(port: int) -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /hello HTTP/1.0\r\nHost: x\r\n\r\n")
        assert resume_reading(sock).endswith(b"\r\n\r\nhello")
    return time.monotonic() - started


def assert_others_served_at_once(port: int) -> None:
    for _ in range(5):
        assert timed_hello(port) < 0.5


def closes(server) -> list:
    path = server.dir / "close.log"
    return path.read_text().split("\n") if path.exists() else []


@pytest.fixture(params=[1, 4], ids=lambda n: f"threads{n}")
def two_workers(request, servers):
    return servers.get("slowclients:app", "--processes", "2", "--threads", str(request.param))


def test_slow_readers_of_big_answers_hold_no_worker(two_workers):
    server = two_workers
    pids = wait_until(lambda: len(worker_pids(server)) == 2 and worker_pids(server), 10)
    timed_hello(server.port)
    before = {pid: rss_bytes(pid) for pid in pids}
    run = time.monotonic_ns()
    lists = [slow_get(server.port, "/list") for _ in range(SLOW)]
    streams = [slow_get(server.port, f"/stream?tag={run}-{i}") for i in range(SLOW)]
    try:
        for sock in lists + streams:
            assert answer_started(sock)
        wait_until(lambda: settled(pids), 20)
        assert_others_served_at_once(server.port)
        # Each worker holds about one 1 MiB chunk per stalled stream (32 each), no more.
        for pid in pids:
            grown = rss_bytes(pid) - before[pid]
            assert grown < 100 << 20, f"worker {pid} grew by {grown >> 20} MiB"
        # Two of each resume reading: their answers are whole and exact.
        for sock in lists[:2]:
            assert body_of(resume_reading(sock)) == LIST_BODY
        expected = b"".join(stream_chunk(i) for i in range(CHUNKS))
        for sock in streams[:2]:
            assert body_of(resume_reading(sock)) == expected
    finally:
        for sock in lists + streams:
            sock.close()
    # Every streamed answer's close() was called exactly once: read whole or abandoned.
    for i in range(SLOW):
        tag = f"close {run}-{i}"
        wait_until(lambda tag=tag: tag in closes(server), 10)
        assert closes(server).count(tag) == 1, tag


def test_a_reader_that_stalls_past_the_socket_timeout_is_closed_once(servers):
    server = servers.get("slowclients:app", "--socket-timeout", "1")
    mark = server.stderr_mark()
    tag = f"timeout-{time.monotonic_ns()}"
    with slow_get(server.port, f"/stream?tag={tag}") as sock:
        assert answer_started(sock)
        line = server.wait_for_stderr(mark, "read nothing of its answer", timeout=10)
        assert wait_until(lambda: f"close {tag}" in closes(server), 5)
        assert closes(server).count(f"close {tag}") == 1
        assert line.count("read nothing of its answer") == 1
        assert len(resume_reading(sock)) < CHUNKS * (1 << 20)  # cut short, not sent whole
    assert_others_served_at_once(server.port)


def spool_files(pids, directory: str) -> int:
    """Descriptors the workers hold on files in `directory` (spooled bodies)."""
    count = 0
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            count += target.startswith(directory)
    return count


@pytest.mark.parametrize("threads", [1, 4], ids=lambda n: f"threads{n}")
def test_slow_senders_hold_no_worker_and_uploads_arrive_whole(servers, threads, tmp_path):
    spool_dir = str(tmp_path)
    server = servers.get(
        "slowclients:app",
        "--processes",
        "2",
        "--threads",
        str(threads),
        "--body-temp-dir",
        spool_dir,
    )
    pids = wait_until(lambda: len(worker_pids(server)) == 2 and worker_pids(server), 10)
    size = 1_000_000
    head = f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
    senders = []
    stop = threading.Event()
    try:
        for _ in range(SLOW):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(head + b"s" * 200_000)
            senders.append(sock)

        def trickle():  # one byte a second each, bounded
            for _ in range(30):
                if stop.wait(1.0):
                    return
                for sock in senders:
                    sock.send(b"s")

        threading.Thread(target=trickle, daemon=True).start()
        # Bodies past post-buffering (64k) wait in temporary files, not in the app.
        wait_until(lambda: spool_files(pids, spool_dir) == SLOW, 10)
        assert_others_served_at_once(server.port)
        body = os.urandom(size)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head + body[:500_000])
            sock.sendall(body[500_000:])
            answer = body_of(sock.recv(65536))
        assert answer == f"{size} {hashlib.sha256(body).hexdigest()}".encode()
    finally:
        stop.set()
        for sock in senders:
            sock.close()
    # The requests ended with their clients: their temporary files are gone.
    wait_until(lambda: spool_files(pids, spool_dir) == 0, 10)


def test_a_git_push_with_a_chunked_upload_arrives_byte_exact(servers, tmp_path):
    server = servers.get("slowclients:app", "--post-buffering", "65536")
    work = tmp_path / "work"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(git + ["init", "-q", "-b", "main", str(work)], check=True)
    (work / "big.bin").write_bytes(os.urandom(3_000_000))
    subprocess.run(git + ["-C", str(work), "add", "big.bin"], check=True)
    subprocess.run(git + ["-C", str(work), "commit", "-q", "-m", "big"], check=True)
    url = f"http://127.0.0.1:{server.port}/git/"
    # http.postBuffer below the pack's size: git sends the pack with chunked encoding.
    push = subprocess.run(
        git + ["-c", "http.postBuffer=65536", "-C", str(work), "push", url, "main"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert push.returncode == 0, push.stderr
    head = subprocess.run(
        ["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    repo = server.dir / "repo.git"
    served = subprocess.run(
        ["git", "--git-dir", str(repo), "rev-parse", "refs/heads/main"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert served == head
    blob = subprocess.run(
        ["git", "--git-dir", str(repo), "cat-file", "blob", "main:big.bin"], capture_output=True
    ).stdout
    assert blob == (work / "big.bin").read_bytes()


def test_a_full_disk_answers_507_and_the_worker_serves_on(servers, tmp_path):
    # A file size limit on the worker (RLIMIT_FSIZE; Python ignores SIGXFSZ) makes the
    # kernel refuse the spool's writes past 100 kB, as a full disk would.
    server = servers.get("slowclients:app", "--body-temp-dir", str(tmp_path))
    (worker,) = wait_until(lambda: len(worker_pids(server)) == 1 and worker_pids(server), 10)
    resource.prlimit(worker, resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
    size = 1_000_000
    head = f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        try:
            sock.sendall(head + b"d" * size)
        except OSError:
            pass  # the server may close before it has read everything
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 507 "), answer[:100]
    assert worker_pids(server) == [worker]
    assert_others_served_at_once(server.port)
    wait_until(lambda: spool_files([worker], str(tmp_path)) == 0, 5)
