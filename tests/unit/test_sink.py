"""forklift.sink: the socket side of a connection, over a real `socket.socketpair()`.

What a worker relies on: bytes arrive whole and in order, whether sent at once, deferred for
the loop, or sent from a file; a peer that stops reading or goes away becomes `PeerGone`
within the timeout, never a hang; the queued rest is handed to the loop (`queue`,
`drain`) and the slow reader's progress can be measured (`kernel_queue_shrank`).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time

import pytest

from forklift.errors import PeerGone
from forklift.sink import Sink, recv_wait, send_all, wait

BIG = bytes(range(256)) * 8192  # 2 MiB: more than any socket buffer here holds


@pytest.fixture
def pair():
    """(server side, client side); small buffers so "the kernel is full" comes quickly."""
    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    server.setblocking(False)
    client.settimeout(5)
    yield server, client
    server.close()
    client.close()


def read_exactly(sock, n: int) -> bytes:
    parts, have = [], 0
    while have < n:
        data = sock.recv(min(1 << 20, n - have))
        assert data, f"peer closed after {have} of {n} bytes"
        parts.append(data)
        have += len(data)
    return b"".join(parts)


def test_a_small_answer_leaves_in_one_send_and_nothing_is_queued(pair):
    server, client = pair
    sink = Sink(server, timeout=1.0)
    sink.send(b"HTTP/1.1 200 OK\r\n\r\nhello")
    assert not sink.pending and sink.queued == 0
    assert read_exactly(client, 24) == b"HTTP/1.1 200 OK\r\n\r\nhello"


def test_what_the_kernel_will_not_take_is_queued_for_the_loop_without_waiting(pair):
    server, client = pair
    sink = Sink(server, timeout=0.2)
    started = time.monotonic()
    sink.send(BIG)  # nobody reads: a blocking send would wait out the timeout and fail
    assert time.monotonic() - started < 0.2
    assert 0 < sink.queued < len(BIG)
    # What is held is a view of the caller's buffer, not a copy of it.
    assert sink.queue[0].obj is BIG
    # The loop drains as the client reads; every byte arrives, in order.
    received = bytearray()
    for _ in range(10_000):
        received += client.recv(1 << 16)
        sink.drain()
        if not sink.pending:
            break
    received += read_exactly(client, len(BIG) - len(received))
    assert bytes(received) == BIG and sink.queued == 0


def test_bytes_sent_after_a_queued_rest_keep_their_order(pair):
    server, client = pair
    sink = Sink(server, timeout=2.0)
    sink.send(BIG)
    assert sink.pending
    sink.send(b"<after>")  # joins the queue, behind the rest
    tail = b"<then sent directly>"
    done = []

    def send_tail():
        sink.send_all(tail)  # waits: everything queued first, then the tail
        done.append(True)

    sender = threading.Thread(target=send_tail)
    sender.start()
    data = read_exactly(client, len(BIG) + 7 + len(tail))
    sender.join(5)
    assert done and data == BIG + b"<after>" + tail
    assert not sink.pending


def test_wait_room_returns_once_at_most_the_limit_is_held(pair):
    server, client = pair
    sink = Sink(server, timeout=5.0)
    sink.send(BIG)
    results = []
    reader = threading.Thread(target=lambda: results.append(read_exactly(client, len(BIG))))
    reader.start()
    sink.wait_room(65536)
    assert sink.queued <= 65536
    sink.flush()
    reader.join(5)
    assert results == [BIG]


def test_wait_room_gives_up_on_a_peer_that_reads_nothing(pair):
    server, _client = pair
    sink = Sink(server, timeout=0.2)
    sink.send(BIG)
    started = time.monotonic()
    with pytest.raises(PeerGone, match="send timed out"):
        sink.wait_room(0)
    assert time.monotonic() - started < 2.0


def test_a_peer_that_never_reads_is_gone_after_the_timeout(pair):
    server, _client = pair
    started = time.monotonic()
    with pytest.raises(PeerGone, match="send timed out"):
        send_all(server, BIG, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2.0


def test_a_closed_peer_is_peer_gone_not_an_oserror_from_the_kernel(pair):
    server, client = pair
    client.close()
    with pytest.raises(PeerGone, match="send failed"):
        Sink(server, timeout=0.5).send_all(b"x" * 100_000)


def test_recv_returns_what_came_and_empty_bytes_at_the_peers_close(pair):
    server, client = pair
    client.sendall(b"body")
    assert recv_wait(server, timeout=1.0) == b"body"
    client.shutdown(socket.SHUT_WR)
    assert Sink(server, timeout=1.0).recv() == b""


def test_recv_from_a_silent_peer_is_gone_after_the_timeout(pair):
    server, _client = pair
    started = time.monotonic()
    with pytest.raises(PeerGone, match="timed out"):
        Sink(server, timeout=0.1).recv()
    assert time.monotonic() - started < 2.0


def test_wait_names_what_timed_out(pair):
    server, _client = pair
    with pytest.raises(PeerGone, match="reading the head timed out"):
        wait(server.fileno(), 1, 0.05, "reading the head")  # POLLIN on a silent peer


def test_a_queued_file_goes_out_after_what_was_queued_before_it(pair):
    server, client = pair
    sink = Sink(server, timeout=5.0)
    sink.send(b"HEAD")
    with tempfile.TemporaryFile() as f:
        f.write(b"0123456789" * 50_000)
        f.flush()
        got = []
        reader = threading.Thread(target=lambda: got.append(read_exactly(client, 4 + 400_000)))
        reader.start()
        sink.queue_file(f.fileno(), 100_000, 400_000)
        sink.send(b"TAIL")
        assert sink.pending  # nothing waits in send(): the file is the loop's to send
        sink.flush()
        reader.join(5)
        assert read_exactly(client, 4) == b"TAIL"
    assert got == [b"HEAD" + (b"0123456789" * 50_000)[100_000:500_000]]


def test_a_file_that_shrank_ends_the_connection(pair):
    server, client = pair
    sink = Sink(server, timeout=1.0)
    fd, path = tempfile.mkstemp()
    try:
        os.write(fd, b"short")
        sink.queue_file(fd, 0, 1000)
        with pytest.raises(PeerGone, match="file ended"):
            sink.flush()
        assert read_exactly(client, 5) == b"short"
    finally:
        os.close(fd)
        os.unlink(path)


def test_a_slow_readers_progress_shows_in_the_kernel_queue():
    # TCP over loopback, as the worker's clients are: TIOCOUTQ counts what the peer has not
    # acknowledged yet, which is what a unix socketpair does not track the same way.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # before the handshake
        client.settimeout(5)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    with server, client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        server.setblocking(False)
        sink = Sink(server, timeout=1.0)
        sink.send(BIG)
        assert sink.pending  # the kernel's queue is full
        assert sink.kernel_queue_shrank()  # first look: a queue is there
        assert not sink.kernel_queue_shrank()  # nobody read since
        read_exactly(client, 8192)
        shrank = False
        for _ in range(200):  # the ACKs that shrink it come back within a moment
            shrank = sink.kernel_queue_shrank()
            if shrank:
                break
            time.sleep(0.005)
        assert shrank
