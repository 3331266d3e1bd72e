"""The read-only stats listener, driven by a select() loop as the master drives it: it
answers raw-JSON readers and HTTP GETs, refuses every command, and neither garbage nor slow
clients block the loop."""

from __future__ import annotations

import json
import os
import random
import select
import socket
import threading
import time

import pytest

from forklift import stats_server
from forklift.stats_server import READ_ONLY, StatsServer


class Loop:
    """The master's part: select over the server's sockets, call tick() every pass. It
    records its longest pass, which must stay short whatever clients do."""

    def __init__(self, server: StatsServer):
        self.server = server
        self.running = True
        self.longest = 0.0
        self.passes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        server = self.server
        while self.running:
            started = time.monotonic()
            r, w, _ = select.select(server.readers(), server.writers(), [], 0.05)
            for sock in r:
                server.on_readable(sock)
            for sock in w:
                server.on_writable(sock)
            server.tick()
            self.passes += 1
            self.longest = max(self.longest, time.monotonic() - started)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def served():
    calls = {"status": 0}

    def status():
        calls["status"] += 1
        return {"pid": os.getpid(), "generation": 1, "workers": [], "big": "x" * 2_000_000}

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    server = StatsServer(listener, status, lambda: "# TYPE up gauge\nup 1\n")
    with Loop(server) as loop:
        loop.address = listener.getsockname()
        loop.calls = calls
        yield loop


def read_all(sock, timeout=5.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def http_get(address, path, method="GET") -> tuple:
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = read_all(s)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def read_response(sock) -> tuple:
    """One HTTP response with a Content-Length from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    while len(body) < int(headers["Content-Length"]):
        body += sock.recv(65536)
    return headers, body


def test_a_client_that_connects_and_reads_gets_the_status(served):
    with socket.create_connection(served.address, timeout=5) as s:
        doc = json.loads(read_all(s))  # sends nothing at all: uWSGI's stats style
    assert doc["pid"] == os.getpid()
    with socket.create_connection(served.address, timeout=5) as s:
        s.shutdown(socket.SHUT_WR)  # forklift status --stats does this
        assert json.loads(read_all(s))["generation"] == 1


def test_http_endpoints(served):
    status, headers, body = http_get(served.address, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert body == b"# TYPE up gauge\nup 1\n"
    status, headers, body = http_get(served.address, "/status.json?x=1")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["pid"] == os.getpid()
    assert int(headers["Content-Length"]) == len(body)
    status, headers, body = http_get(served.address, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<canvas" in body and b"http://" not in body and b"https://" not in body
    status, headers, body = http_get(served.address, "/metrics", "HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    assert http_get(served.address, "/admin")[0] == 404


def test_keep_alive_serves_a_browser_polling_on_one_connection(served):
    with socket.create_connection(served.address, timeout=5) as s:
        for _ in range(3):
            s.sendall(b"GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n")
            headers, body = read_response(s)
            assert headers["Connection"] == "keep-alive"
            assert json.loads(body)["pid"] == os.getpid()
        # two pipelined requests, answered in order
        s.sendall(b"GET /metrics HTTP/1.1\r\n\r\nGET /status.json HTTP/1.1\r\n\r\n")
        assert read_response(s)[1].startswith(b"# TYPE up")
        assert json.loads(read_response(s)[1])["generation"] == 1
        # idle after its answers: it is not mistaken for a raw-JSON reader
        s.settimeout(1.5)
        with pytest.raises(TimeoutError):
            s.recv(1)


@pytest.mark.parametrize(
    "attempt",
    [
        b'{"cmd": "reload"}\n',
        b'{"cmd": "stop"}\n',
        b'{"cmd": "stacks", "pid": 1}\n',
        b"reload\n",
        b"POST /reload HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"PUT /metrics HTTP/1.1\r\n\r\n",
        b"DELETE / HTTP/1.1\r\n\r\n",
    ],
)
def test_every_command_is_refused(served, attempt):
    before = served.calls["status"]
    with socket.create_connection(served.address, timeout=5) as s:
        s.sendall(attempt)
        answer = read_all(s)
    assert READ_ONLY.encode() in answer
    assert not answer.startswith(b"HTTP/1.1 2")
    assert served.calls["status"] == before  # not even a status was produced


def test_garbage_and_huge_heads_close_and_the_server_goes_on(served):
    noise = random.Random(19).randbytes(3000)
    for junk in (
        noise,
        b" GET / HTTP/1.1\r\n",
        b"\x00" * 10,
        b"GET " + b"a" * 20000,
        b"GET / HTTP/9\r\n\r\n",
    ):
        with socket.create_connection(served.address, timeout=5) as s:
            try:
                s.sendall(junk)
                answer = read_all(s, timeout=stats_server.DEADLINE + 3)
            except (ConnectionResetError, BrokenPipeError):
                answer = b""
        assert not answer.startswith(b"HTTP/1.1 200")
    assert http_get(served.address, "/metrics")[0] == 200


def test_slow_clients_never_block_and_are_dropped_at_the_deadline(served, monkeypatch):
    monkeypatch.setattr(stats_server, "DEADLINE", 0.5)
    slow = []
    for _ in range(5):  # half a request each, then silence
        s = socket.create_connection(served.address, timeout=5)
        s.sendall(b"GET /metr")
        slow.append(s)
    stuck_reader = socket.create_connection(served.address, timeout=5)
    stuck_reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck_reader.sendall(b"GET /status.json HTTP/1.1\r\n\r\n")  # 2 MB answer, never read
    started = time.monotonic()
    assert http_get(served.address, "/metrics")[0] == 200  # served meanwhile
    assert time.monotonic() - started < 1.0
    for s in slow:
        assert read_all(s, 3.0) == b""  # dropped, with nothing said
        s.close()
    stuck_reader.close()
    assert served.longest < 0.5  # no pass of the loop waited on a client


def test_a_flood_of_connections_is_capped_and_newcomers_still_get_in(served):
    flood = [socket.create_connection(served.address, timeout=5) for _ in range(100)]
    try:
        for s in flood:
            s.sendall(b"GET /me")  # never finished
        for _ in range(3):
            assert http_get(served.address, "/metrics")[0] == 200
        assert len(served.server._clients) <= stats_server.MAX_CLIENTS
    finally:
        for s in flood:
            s.close()
