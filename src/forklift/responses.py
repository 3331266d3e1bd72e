"""Writing answers on a client connection's socket: the HTTP/1.x and uwsgi response sinks
that `wsgi.run_app` drives, and send/receive with a timeout on non-blocking sockets.

Sockets stay non-blocking for the event loop; a request's thread (or the inline loop) waits
with poll() only when the kernel buffer is full or empty, so the common small answer is one
send() and no extra system call.
"""

from __future__ import annotations

import os
import select
import time
from email.utils import formatdate

from . import http1, uwsgi
from .errors import PeerGone, ProtocolError
from .events import NEED_DATA, Data, EndOfMessage

RECV_SIZE = 65536
DEFER_LIMIT = 4 << 20  # bytes of answer an inline worker keeps for the loop to flush
_COALESCE_LIMIT = 65536  # head + body joined into one send below this; writev above


class _DateCache:
    """The Date header line, formatted once per second (RFC 9110 §6.6.1)."""

    __slots__ = ("second", "line")

    def __init__(self):
        self.second = -1
        self.line = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.line = b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
            self.second = now
        return self.line


date_cache = _DateCache()


# --- blocking-with-timeout I/O on non-blocking sockets ---------------------------------------
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
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    ms = int(timeout * 1000)
    while view:
        if not poller.poll(ms):
            raise PeerGone("send timed out")
        try:
            sent = sock.send(view)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise PeerGone(f"send failed: {exc}") from None
        view = view[sent:]


def recv_wait(sock, timeout: float) -> bytes:
    """Receive some bytes, waiting up to `timeout`; b"" at EOF; PeerGone on reset/timeout."""
    try:
        return sock.recv(RECV_SIZE)
    except BlockingIOError:
        pass
    except OSError as exc:
        raise PeerGone(f"recv failed: {exc}") from None
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(int(left * 1000) + 1):
            raise PeerGone("timed out reading the request body")
        try:
            return sock.recv(RECV_SIZE)
        except BlockingIOError:
            continue
        except OSError as exc:
            raise PeerGone(f"recv failed: {exc}") from None


class HttpResponse:
    """The `sink` of wsgi.run_app for HTTP/1.x: frames the body and writes it to the socket.

    The head is held back and sent with the first body bytes, so a small answer leaves in
    one send().
    """

    __slots__ = (
        "conn",
        "request",
        "timeout",
        "head_sent",
        "keep_alive",
        "mode",
        "remaining",
        "pending",
        "status",
        "sent",
        "defer",
    )
    can_sendfile = True

    def __init__(self, conn, request, timeout, keep_alive, defer=False):
        self.conn = conn
        self.request = request
        self.timeout = timeout
        self.head_sent = False
        self.keep_alive = keep_alive
        self.mode = http1.BODY_NONE
        self.remaining = None
        self.pending = b""
        self.status = ""
        self.sent = 0
        # Inline worker: what the kernel will not take now is left in conn.out for the
        # event loop to flush, so a client that reads slowly does not stall the worker.
        self.defer = defer

    def _send(self, data) -> None:
        conn = self.conn
        out = conn.out
        if out:
            if self.defer and len(out) + len(data) <= DEFER_LIMIT:
                out += data
                return
            send_all(conn.sock, bytes(out), self.timeout)
            out.clear()
            send_all(conn.sock, data, self.timeout)
            return
        if not self.defer:
            send_all(conn.sock, data, self.timeout)
            return
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise PeerGone(f"send failed: {exc}") from None
        if sent < len(data):
            rest = memoryview(data)[sent:]
            if len(rest) <= DEFER_LIMIT:
                out += rest
            else:
                send_all(conn.sock, rest, self.timeout)

    def flush_deferred(self) -> None:
        """Send what was deferred, waiting as long as it takes (before a sendfile)."""
        out = self.conn.out
        if out:
            send_all(self.conn.sock, bytes(out), self.timeout)
            out.clear()

    def send_head(self, status, headers, known_length):
        # A request body the app left unread would be parsed as the next request unless we
        # drain it; if it is not all here yet, closing is the safe answer (RFC 9112 §9.3).
        conn = self.conn
        if not conn.parser.message_complete:
            drain_buffered_body(conn)
            if not conn.parser.message_complete:
                self.keep_alive = False
        frame = http1.frame_response(
            self.request,
            status,
            headers,
            known_length=known_length,
            keep_alive=self.keep_alive,
            extra=date_cache.get(),
        )
        self.head_sent = True
        self.status = status
        self.keep_alive = frame.keep_alive
        self.mode = frame.body_mode
        self.remaining = frame.content_length
        self.pending = frame.head

    def send_body(self, data):
        mode = self.mode
        if mode == http1.BODY_NONE:
            return
        if mode == http1.BODY_LENGTH:
            if len(data) > self.remaining:
                # More than the app's Content-Length: the excess would be read as the start
                # of another response. Cut it and close.
                data = data[: self.remaining]
                self.keep_alive = False
            self.remaining -= len(data)
        elif mode == http1.BODY_CHUNKED:
            data = http1.chunk(data)
        self.sent += len(data)
        if self.pending:
            if len(data) < _COALESCE_LIMIT:
                data = self.pending + data
                self.pending = b""
            else:
                self._send(self.pending)
                self.pending = b""
        self._send(data)

    def sendfile(self, fd, offset, count):
        self.flush_deferred()
        if self.pending:
            send_all(self.conn.sock, self.pending, self.timeout)
            self.pending = b""
        if self.mode == http1.BODY_NONE or count <= 0:
            return
        sock = self.conn.sock
        poller = None
        end = offset + count
        while offset < end:
            try:
                n = os.sendfile(sock.fileno(), fd, offset, end - offset)
            except BlockingIOError:
                n = -1
            except OSError as exc:
                raise PeerGone(f"sendfile failed: {exc}") from None
            if n == 0:  # the file shrank under us: the promised length cannot be kept
                self.keep_alive = False
                break
            if n > 0:
                offset += n
                self.sent += n
                if self.remaining is not None:
                    self.remaining -= n
                continue
            if poller is None:
                poller = select.poll()
                poller.register(sock.fileno(), select.POLLOUT)
            if not poller.poll(int(self.timeout * 1000)):
                raise PeerGone("send timed out")

    def finish(self):
        out = self.pending
        self.pending = b""
        if self.mode == http1.BODY_CHUNKED:
            out += http1.LAST_CHUNK
        elif self.mode == http1.BODY_LENGTH and self.remaining:
            self.keep_alive = False  # fewer bytes than promised: only a close can tell
        if out:
            self._send(out)


class UwsgiResponse(HttpResponse):
    """The sink for a uwsgi request: an HTTP status line and headers as nginx's uwsgi module
    reads them, a body with Content-Length when known or delimited by the close, never
    chunked; the connection always closes after it (one request per connection)."""

    __slots__ = ("method",)

    def __init__(self, conn, method, timeout):
        super().__init__(conn, None, timeout, False)
        self.method = method

    def send_head(self, status, headers, known_length):
        code = int(status[:3])
        out = []
        length = None
        for name, value in headers:
            lname = name.lower()
            if lname == "content-length":
                length = int(value) if (value.isascii() and value.isdigit()) else None
                continue  # re-added below, once
            if lname in ("connection", "transfer-encoding", "keep-alive"):
                continue
            out.append((name, value))
        if length is None:
            length = known_length
        if code < 200 or code in (204, 304) or self.method == "HEAD":
            mode = http1.BODY_NONE
        else:
            mode = http1.BODY_LENGTH if length is not None else http1.BODY_UNTIL_CLOSE
        if length is not None and code >= 200 and code != 204:
            out.append(("Content-Length", str(length)))
        self.head_sent = True
        self.status = status
        self.mode = mode
        self.remaining = length
        self.pending = uwsgi.response_head(status, out)


def drain_buffered_body(conn) -> None:
    """Consume body bytes already received, without waiting for more."""
    parser = conn.parser
    try:
        while True:
            event = parser.next_event()
            if event is NEED_DATA or type(event) is EndOfMessage:
                return
            if type(event) is not Data:
                return
    except ProtocolError:
        return
