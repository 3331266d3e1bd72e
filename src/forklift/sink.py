"""The socket side of a connection: send, wait, defer, sendfile, and receive with a timeout.

Sockets stay non-blocking for the event loop. A request's thread (or the inline loop) waits
with poll() only when the kernel buffer is full or empty (`wait`, the one wait helper), so
the common small answer is one send() and no extra system call.

What bytes to send is decided elsewhere (framing in the protocol layer); a `Sink` only moves
them. What the kernel will not take now is queued, never waited for: the app's own buffers
(memoryviews, no copy) and file spans (sent with non-blocking `sendfile`). The event loop
sends the queue when the client reads (`drain`), serving others meanwhile; how much of an
answer may be queued before the app's iterator is advanced again is the caller's bound
(`outbox.pump`). Only the legacy `write()` and error answers wait (`wait_room`, `send_all`).
"""

from __future__ import annotations

import collections
import fcntl
import os
import select
import sys
import termios
import time

from .errors import PeerGone

RECV_SIZE = 65536
_IOV_BATCH = 64  # queued buffers handed to one sendmsg()
_FILE_BLOCK = 256 * 1024  # a file sent through TLS is read in blocks of this size
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT


def wait(fd: int, events: int, timeout: float, what: str) -> None:
    """Wait until `fd` is ready for `events` (POLLIN/POLLOUT); PeerGone after `timeout`."""
    poller = select.poll()
    poller.register(fd, events)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        # +1 ms: poll() rounds down, and a wait of 0 ms would spin until the deadline.
        if left > 0 and poller.poll(int(left * 1000) + 1):
            return
        if time.monotonic() >= deadline:
            raise PeerGone(f"{what} timed out")


def send_all(sock, data, timeout: float) -> None:
    """Send everything or raise PeerGone; the first send is tried without waiting."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError as exc:
        raise PeerGone(f"send failed: {exc}") from None
    if sent == len(data):
        return
    view = memoryview(data)[sent:]
    fd = sock.fileno()
    while view:
        wait(fd, _POLLOUT, timeout, "send")
        try:
            sent = sock.send(view)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise PeerGone(f"send failed: {exc}") from None
        view = view[sent:]


def recv_wait(sock, timeout: float) -> bytes:
    """Receive some bytes, waiting up to `timeout`; b"" at EOF; PeerGone on reset/timeout."""
    while True:
        try:
            return sock.recv(RECV_SIZE)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise PeerGone(f"recv failed: {exc}") from None
        wait(sock.fileno(), _POLLIN, timeout, "reading the request body")


class Sink:
    """Where one connection's answers go: its socket, its send timeout, and its queue.

    The queue holds what the kernel did not take yet, in order: bytes-like pieces and file
    spans (`[fd, offset, count]`). `queued` counts the bytes held in memory (file spans are
    on disk and do not count). Whoever owns the connection (the loop, or the one thread
    running its request) is the only one touching it.
    """

    __slots__ = ("sock", "fd", "timeout", "queue", "queued", "unsent", "kernel_sendfile")
    # Files work on every sink: over TLS `drain` sends the file's blocks through the socket.
    can_sendfile = True

    def __init__(self, sock, timeout: float, fd: int = -1):
        self.use(sock, fd)
        self.timeout = timeout
        self.queue = collections.deque()
        self.queued = 0
        self.unsent = -1  # the kernel's send queue at the last look (TIOCOUTQ)

    def use(self, sock, fd: int = -1) -> None:
        """Send through `sock` from now on (the TLS socket, once the handshake is done).
        Over TLS, files and queued pieces go through the socket's send(): os.sendfile()
        and sendmsg() would put plaintext on the wire."""
        self.sock = sock
        self.fd = fd if fd >= 0 else sock.fileno()  # accept() told it: no fileno() call
        self.kernel_sendfile = not getattr(sock, "encrypts", False)

    @property
    def pending(self) -> bool:
        """Is anything left to send?"""
        return bool(self.queue)

    def send(self, data) -> None:
        """Send `data` after whatever is queued, without waiting: what the kernel will not
        take now is queued (a view of `data`, not a copy)."""
        if self.queue:
            self.queue.append(data)
            self.queued += len(data)
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise PeerGone(f"send failed: {exc}") from None
        if sent < len(data):
            rest = memoryview(data)[sent:] if sent else data
            self.queue.append(rest)
            self.queued += len(rest)

    def queue_file(self, fd: int, offset: int, count: int) -> None:
        """Send `count` bytes of file `fd` from `offset` after what is queued (`drain` sends
        it with sendfile, without waiting). The file must stay open until it is out."""
        if count > 0:
            self.queue.append([fd, offset, count])

    def drain(self) -> int:
        """Send what is queued until the kernel is full or the queue empty, never waiting.
        Returns the bytes that went (0: none); PeerGone when the peer is gone."""
        queue = self.queue
        moved = 0
        while queue:
            item = queue[0]
            if type(item) is list:
                n = self._send_file_span(item)
                if n is None:
                    return moved
                moved += n
                continue
            buffers = []
            for piece in queue:
                if type(piece) is list or len(buffers) >= _IOV_BATCH:
                    break
                buffers.append(piece)
            try:
                if self.kernel_sendfile:
                    n = self.sock.sendmsg(buffers)
                else:
                    n = self.sock.send(buffers[0])  # TLS: one record source at a time
            except (BlockingIOError, InterruptedError):
                return moved
            except OSError as exc:
                raise PeerGone(f"send failed: {exc}") from None
            moved += n
            self.queued -= n
            while n:
                first = queue[0]
                if n >= len(first):
                    n -= len(first)
                    queue.popleft()
                else:
                    queue[0] = memoryview(first)[n:]
                    return moved  # the kernel took part of it: it is full
        return moved

    def _send_file_span(self, span: list) -> int | None:
        """One sendfile() of the span at the queue's head (over TLS: one block read and
        sent through the socket); None when the kernel is full."""
        try:
            if self.kernel_sendfile:
                n = os.sendfile(self.fd, span[0], span[1], span[2])
            else:
                block = os.pread(span[0], min(span[2], _FILE_BLOCK), span[1])
                n = self.sock.send(block) if block else 0
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise PeerGone(f"sendfile failed: {exc}") from None
        if n == 0:
            # The file shrank under us: the promised length cannot be kept; only a close
            # tells the client.
            raise PeerGone("the file ended before the length its answer promised")
        span[1] += n
        span[2] -= n
        if span[2] == 0:
            self.queue.popleft()
        return n

    def wait_room(self, limit: int) -> None:
        """Wait (up to the timeout per step) until at most `limit` bytes are queued: the
        legacy `write()` is bounded this way, since it must not return before its bytes
        are sent or held."""
        while self.queued > limit or (self.queue and type(self.queue[0]) is list):
            if not self.drain():
                wait(self.fd, _POLLOUT, self.timeout, "send")

    def flush(self) -> None:
        """Send everything queued, waiting as long as the timeout allows per step."""
        while self.queue:
            if not self.drain() and self.queue:
                wait(self.fd, _POLLOUT, self.timeout, "send")

    def send_all(self, data) -> None:
        """Send what is queued, then `data`, waiting as long as the timeout allows."""
        self.flush()
        send_all(self.sock, data, self.timeout)

    def discard(self) -> None:
        """Forget what is queued (the connection is closing)."""
        self.queue.clear()
        self.queued = 0

    def recv(self) -> bytes:
        """Some bytes of the request, waiting up to the timeout; b"" when the peer closed."""
        return recv_wait(self.sock, self.timeout)

    def kernel_queue_shrank(self) -> bool:
        """Did the kernel's send queue for this socket shrink since the last look?

        A client that reads slowly wakes the loop only when a third of its buffer is free,
        so its progress is measured in this queue, not in our sends."""
        try:
            raw = fcntl.ioctl(self.fd, termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return False
        unsent = int.from_bytes(raw, sys.byteorder, signed=True)
        shrank = self.unsent < 0 or unsent < self.unsent
        self.unsent = unsent
        return shrank and unsent > 0
