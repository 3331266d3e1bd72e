"""The socket side of a connection: send, wait, defer, sendfile, and receive with a timeout.

Sockets stay non-blocking for the event loop. A request's thread (or the inline loop) waits
with poll() only when the kernel buffer is full or empty (`wait`, the one wait helper), so
the common small answer is one send() and no extra system call.

What bytes to send is decided elsewhere (framing in the protocol layer); a `Sink` only moves
them. An inline worker defers what the kernel will not take now: it stays in `Sink.out`, and
the event loop sends it when the client reads (`write_pending`), serving others meanwhile.
"""

from __future__ import annotations

import fcntl
import os
import select
import sys
import termios
import time

from .errors import PeerGone

RECV_SIZE = 65536
DEFER_LIMIT = 4 << 20  # bytes of answer an inline worker keeps for the loop to flush
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_FILE_BLOCK = 256 * 1024  # a file sent through TLS is read in blocks of this size


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
    """Where one connection's answers go: its socket, its send timeout, and what is deferred.

    `out` is what is left to send: the event loop owns it between requests (see the module
    docstring); before more bytes are sent directly, it is flushed first, so order holds.
    """

    __slots__ = ("sock", "fd", "timeout", "defer", "out", "unsent", "kernel_sendfile")
    # `sendfile` works on every sink: over TLS it sends the file's blocks through the socket.
    can_sendfile = True

    def __init__(self, sock, timeout: float, defer: bool = False):
        self.use(sock)
        self.timeout = timeout
        # Inline worker: what the kernel will not take now is left in `out` for the event
        # loop to flush, so a client that reads slowly does not stall the worker.
        self.defer = defer
        self.out = bytearray()
        self.unsent = -1  # the kernel's send queue at the last look (TIOCOUTQ)

    def use(self, sock) -> None:
        """Send through `sock` from now on (the TLS socket, once the handshake is done).
        Over TLS, files go through the socket's send(): os.sendfile() would put plaintext
        on the wire."""
        self.sock = sock
        self.fd = sock.fileno()
        self.kernel_sendfile = not getattr(sock, "encrypts", False)

    def send(self, data) -> None:
        """Send `data` after whatever is deferred; defer what the kernel will not take now
        when this sink may, else wait (up to the timeout) until it is sent."""
        out = self.out
        if out:
            if self.defer and len(out) + len(data) <= DEFER_LIMIT:
                out += data
                return
            self.flush()
            send_all(self.sock, data, self.timeout)
            return
        if not self.defer:
            send_all(self.sock, data, self.timeout)
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise PeerGone(f"send failed: {exc}") from None
        if sent < len(data):
            rest = memoryview(data)[sent:]
            if len(rest) <= DEFER_LIMIT:
                out += rest
            else:
                send_all(self.sock, rest, self.timeout)

    def send_all(self, data) -> None:
        """Send what is deferred, then `data`, waiting as long as the timeout allows."""
        self.flush()
        send_all(self.sock, data, self.timeout)

    def flush(self) -> None:
        """Send what was deferred, waiting as long as it takes (before a sendfile)."""
        out = self.out
        if out:
            send_all(self.sock, bytes(out), self.timeout)
            out.clear()

    def sendfile(self, fd: int, offset: int, count: int) -> int:
        """Send `count` bytes of file `fd` from `offset` (after what is deferred); returns the
        bytes sent, fewer than `count` only when the file ended early."""
        self.flush()
        if not self.kernel_sendfile:
            return self._send_file_blocks(fd, offset, count)
        sock_fd = self.fd
        sent = 0
        while sent < count:
            try:
                n = os.sendfile(sock_fd, fd, offset + sent, count - sent)
            except BlockingIOError:
                wait(sock_fd, _POLLOUT, self.timeout, "send")
                continue
            except OSError as exc:
                raise PeerGone(f"sendfile failed: {exc}") from None
            if n == 0:  # the file shrank under us
                break
            sent += n
        return sent

    def _send_file_blocks(self, fd: int, offset: int, count: int) -> int:
        sent = 0
        while sent < count:
            block = os.pread(fd, min(count - sent, _FILE_BLOCK), offset + sent)
            if not block:  # the file shrank under us
                break
            send_all(self.sock, block, self.timeout)
            sent += len(block)
        return sent

    def recv(self) -> bytes:
        """Some bytes of the request, waiting up to the timeout; b"" when the peer closed."""
        return recv_wait(self.sock, self.timeout)

    def write_pending(self) -> int | None:
        """One send of what is deferred, without waiting (the loop found the socket
        writable). Returns the bytes still deferred, or None when the kernel took nothing."""
        out = self.out
        try:
            sent = self.sock.send(out)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise PeerGone(f"send failed: {exc}") from None
        del out[:sent]
        return len(out)

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
