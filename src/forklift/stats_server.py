"""The read-only stats listener (`--stats ADDR`): status as JSON, Prometheus metrics, the
status page. It accepts no command: reload, stop and stack dumps go to the control socket.

Two ways in, on one port:
- uWSGI's stats style: connect and read. A new connection that sends nothing for `QUIET`
  seconds (or shuts its side down at once) gets the status JSON and is closed. `uwsgitop`,
  `nc` and `forklift status --stats` (which shuts down its side: no wait) work this way.
- HTTP/1.x: `GET /metrics` (Prometheus text format), `GET /status.json`, `GET /` (the page);
  HEAD too. HTTP/1.1 connections stay open for the next request (a browser polling the page
  keeps one connection).

It runs inside the master's loop and never blocks it: sockets are non-blocking, a client gets
at most `MAX_REQUEST` bytes and `DEADLINE` seconds per exchange (slow readers and writers are
dropped), and at most `MAX_CLIENTS` are kept at once (a newcomer takes the place of the
longest-idle or oldest one).
"""

from __future__ import annotations

import json
import re
import socket
import time
from importlib import resources

from .prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE

MAX_CLIENTS = 32
MAX_REQUEST = 8192  # a GET head fits; anything longer is not a stats request
DEADLINE = 5.0  # seconds for one exchange (a request read and its answer written)
# A new connection silent this long is a raw-JSON reader (uwsgitop, nc). Not shorter: a
# browser may open a connection a moment before it sends its request on it.
QUIET = 1.0
KEEPALIVE = 15.0  # an HTTP client may send its next request within this
_ACCEPT_BATCH = 16

# RFC 9112 §3: request-line = method SP request-target SP HTTP-version
_REQUEST_LINE = re.compile(rb"([A-Z]{1,16}) (\S{1,2048}) HTTP/1\.([01])\r?\n")
_METHOD_PREFIX = re.compile(rb"[A-Z]{1,16}( |$)|[A-Z]{0,16}$")
_CLOSE = re.compile(rb"\nconnection:[ \t]*close", re.IGNORECASE)
_HAS_BODY = re.compile(rb"\n(content-length:[ \t]*[1-9]|transfer-encoding:)", re.IGNORECASE)
READ_ONLY = (
    "this stats port is read-only; commands (reload, stop, stacks) are accepted only on the "
    "control socket (PIDFILE.sock)"
)


def status_page() -> bytes:
    """The self-contained status page shipped in the package."""
    return resources.files("forklift").joinpath("status_page.html").read_bytes()


class _Client:
    __slots__ = (
        "sock",
        "inbox",
        "outbox",
        "deadline",
        "quiet_until",
        "writing",
        "draining",
        "keep_alive",
        "served",
        "since",
    )

    def __init__(self, sock, now: float):
        self.sock = sock
        self.inbox = b""
        self.outbox = b""
        self.since = now  # accepted (or its last answer sent): the oldest idle goes first
        self.deadline = now + DEADLINE
        self.quiet_until = now + QUIET
        self.writing = False
        self.draining = False  # answered for good: read and discard until the peer closes
        self.keep_alive = False  # the answer being written leaves the connection open
        self.served = 0  # HTTP answers sent; a raw-JSON reader is one that never asked


class StatsServer:
    """Serve `status()` (a dict) and `metrics()` (text) on a bound, listening socket."""

    def __init__(self, sock, status, metrics):
        self.sock = sock
        sock.setblocking(False)
        self._status = status
        self._metrics = metrics
        self._page: bytes | None = None
        self._clients: dict = {}  # socket -> _Client

    # -- for the master's select() -----------------------------------------------------------
    def readers(self) -> list:
        return [self.sock] + [c.sock for c in self._clients.values() if not c.writing]

    def writers(self) -> list:
        return [c.sock for c in self._clients.values() if c.writing]

    def timeout(self) -> float | None:
        """How soon the loop must call `tick()` again (None: nothing pending)."""
        return 0.1 if self._clients else None

    def owns(self, sock) -> bool:
        return sock is self.sock or sock in self._clients

    def on_readable(self, sock) -> None:
        if sock is self.sock:
            self._accept()
            return
        client = self._clients.get(sock)
        if client is not None:
            self._read(client)

    def on_writable(self, sock) -> None:
        client = self._clients.get(sock)
        if client is not None:
            self._write(client)

    def tick(self, now: float | None = None) -> None:
        """Answer silent raw-JSON readers; drop clients past their deadline."""
        now = time.monotonic() if now is None else now
        for client in list(self._clients.values()):
            if now >= client.deadline:
                self._drop(client)
            elif (
                not client.served
                and not client.writing
                and not client.draining
                and not client.inbox
                and now >= client.quiet_until
            ):
                self._answer_json(client)

    def close(self) -> None:
        for client in list(self._clients.values()):
            self._drop(client)
        self.sock.close()

    # -- clients ---------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors or an aborted connection: try again later
            if len(self._clients) >= MAX_CLIENTS:
                self._make_room()
            conn.setblocking(False)
            self._clients[conn] = _Client(conn, time.monotonic())

    def _make_room(self) -> None:
        """Full: close an idle keep-alive connection if there is one, else the client that
        has been here longest. A newcomer always gets in, so connections held open on
        purpose cannot lock Prometheus or an operator out; an honest client is answered
        within a pass of the loop, so it is never the oldest for long."""
        clients = list(self._clients.values())
        idle = [c for c in clients if c.served and not c.inbox and not c.writing]
        self._drop(min(idle or clients, key=lambda c: c.since))

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        if client.draining:
            if not data:
                self._drop(client)
            return  # discarded: the answer is out, only the peer's close is awaited
        if not data:
            if client.inbox:
                self._drop(client)  # a partial request, then EOF: nothing to answer
            else:
                self._answer_json(client)  # connected, said nothing, shut down: uWSGI style
            return
        if not client.inbox:
            client.deadline = time.monotonic() + DEADLINE  # a new request: its own deadline
        client.inbox += data
        self._parse(client)

    def _parse(self, client: _Client) -> None:
        inbox = client.inbox
        if not _METHOD_PREFIX.match(inbox[:17]):
            # Not HTTP: a command attempt (or garbage). Say why once, then close.
            self._respond_raw(client, json.dumps({"error": READ_ONLY}).encode() + b"\n")
            return
        if len(inbox) > MAX_REQUEST:
            self._respond(client, 431, "Request Header Fields Too Large", b"head too large\n")
            return
        end = inbox.find(b"\r\n\r\n")
        if end < 0:
            end = inbox.find(b"\n\n")
        if end < 0:
            return  # wait for the rest of the head (within the deadline)
        match = _REQUEST_LINE.match(inbox)
        if match is None:
            self._respond(client, 400, "Bad Request", b"malformed request line\n")
            return
        method, target, minor = match.group(1), match.group(2), match.group(3)
        head = inbox[: end + 2]
        client.inbox = inbox[end + 4 if inbox[end : end + 4] == b"\r\n\r\n" else end + 2 :]
        # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; 1.0 closes here. A request with a
        # body is answered and closed: its body is never read.
        keep_alive = minor == b"1" and not _CLOSE.search(head) and not _HAS_BODY.search(head)
        if method not in (b"GET", b"HEAD"):
            self._respond(
                client,
                405,
                "Method Not Allowed",
                READ_ONLY.encode() + b"\n",
                extra=b"Allow: GET, HEAD\r\n",
            )
            return
        path = target.partition(b"?")[0]
        head_only = method == b"HEAD"
        if path == b"/metrics":
            body, kind = self._metrics().encode(), METRICS_CONTENT_TYPE
        elif path in (b"/status.json", b"/status"):
            body, kind = json.dumps(self._status()).encode(), "application/json"
        elif path in (b"/", b"/index.html"):
            if self._page is None:
                self._page = status_page()
            body, kind = self._page, "text/html; charset=utf-8"
        else:
            self._respond(client, 404, "Not Found", b"try /metrics, /status.json or /\n")
            return
        self._respond(client, 200, "OK", body, kind, head_only=head_only, keep_alive=keep_alive)

    def _answer_json(self, client: _Client) -> None:
        self._respond_raw(client, json.dumps(self._status()).encode() + b"\n")

    def _respond(
        self,
        client: _Client,
        status: int,
        reason: str,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        extra: bytes = b"",
        head_only: bool = False,
        keep_alive: bool = False,
    ) -> None:
        head = (
            (
                f"HTTP/1.1 {status} {reason}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\n"
                "X-Content-Type-Options: nosniff\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
            ).encode()
            + extra
            + b"\r\n"
        )
        client.served += 1
        self._respond_raw(client, head if head_only else head + body, keep_alive)

    def _respond_raw(self, client: _Client, data: bytes, keep_alive: bool = False) -> None:
        if not keep_alive:
            client.inbox = b""
        client.keep_alive = keep_alive
        client.outbox = data
        client.writing = True
        self._write(client)

    def _write(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        client.outbox = client.outbox[sent:]
        if client.outbox:
            return
        client.writing = False
        if client.keep_alive:
            now = time.monotonic()
            client.since = now
            client.deadline = now + KEEPALIVE
            if client.inbox:  # a pipelined request already arrived
                client.deadline = now + DEADLINE
                self._parse(client)
            return
        # Close our side and wait for the peer's close: closing with unread bytes in the
        # receive buffer would send a reset that can destroy the answer in flight.
        client.draining = True
        try:
            client.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        self._clients.pop(client.sock, None)
        try:
            client.sock.close()
        except OSError:
            pass
