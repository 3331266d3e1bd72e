"""A client that stops reading a large answer must not stall the other clients, even when the
app runs inline in the event loop (--threads 1): the unsent rest is left to the loop."""

from __future__ import annotations

import http.client
import socket
import time

import pytest

from support import wait_until

from .apps.bigbody import BIG


def _server_end_established(server_port: int, client_port: int) -> bool:
    """Whether the server's end of our connection is still ESTABLISHED, from /proc/net/tcp
    (state 01, linux/tcp_states.h): a server that closed it has moved it to FIN_WAIT1."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if (
                int(local.split(":")[1], 16) == server_port
                and int(remote.split(":")[1], 16) == client_port
            ):
                return state == "01"
    return False


def _request_big_and_stall(port: int, pipelined: int = 2) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * pipelined)
    return sock


def _read_answers(sock: socket.socket, count: int) -> list:
    """Read `count` whole answers (head + Content-Length body) from a raw socket."""
    data = b""
    bodies = []
    deadline = time.monotonic() + 20
    while len(bodies) < count and time.monotonic() < deadline:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end].decode("latin-1")
            length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
            if len(data) >= end + 4 + length:
                bodies.append(data[end + 4 : end + 4 + length])
                data = data[end + 4 + length :]
                continue
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return bodies


@pytest.mark.parametrize("threads", [1, 4], ids=lambda n: f"threads{n}")
def test_stalled_reader_does_not_block_others(servers, threads):
    server = servers.get("bigbody:app", "--threads", str(threads))
    stalled = [_request_big_and_stall(server.port) for _ in range(3)]
    try:
        for sock in stalled:  # their answers have begun: they fill the socket buffers and wait
            assert sock.recv(1, socket.MSG_PEEK), "no answer began"
        for _ in range(20):
            start = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b"small"
            conn.close()
            assert time.monotonic() - start < 1.0
        # The stalled clients then read everything, pipelined answers in order, intact.
        for sock in stalled:
            assert _read_answers(sock, 2) == [BIG, BIG]
    finally:
        for sock in stalled:
            sock.close()


def test_client_that_never_reads_is_dropped_after_the_socket_timeout(servers):
    server = servers.get("bigbody:app", "--threads", "1", "--socket-timeout", "1")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # kernel buffers cannot hide it
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    try:
        # Nothing read: no progress for 1 s (one extension allowed) -> connection dropped.
        # Seen without reading a byte (our unread buffer holds the FIN back): the server's
        # end of the connection leaves ESTABLISHED.
        client_port = sock.getsockname()[1]
        assert _server_end_established(server.port, client_port), "not seen in /proc/net/tcp"
        wait_until(
            lambda: not _server_end_established(server.port, client_port), 10, what="the drop"
        )
        sock.settimeout(5)
        received = 0
        try:
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < 3 * len(BIG)
    finally:
        sock.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"small"
