"""The read-only stats listener (`--stats ADDR`): status as JSON, Prometheus metrics, the
status page. It accepts no command: reload, stop and stack dumps go to the control socket.

Two ways in, on one port:
- uWSGI's stats style: connect and read. A client that sends nothing for a moment (or shuts
  its side down) gets the status JSON and the connection closes. `uwsgitop`, `nc` and
  `forklift status --stats` work this way.
- HTTP/1.x: `GET /metrics` (Prometheus text format), `GET /status.json`, `GET /` (the page);
  HEAD too. Each answer closes the connection.

It runs inside the master's loop and never blocks it: sockets are non-blocking, a client gets
at most `MAX_REQUEST` bytes and `DEADLINE` seconds for its whole exchange (slow readers and
writers are dropped), and at most `MAX_CLIENTS` are served at once (more are closed at once).
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
DEADLINE = 5.0  # seconds for one client's whole exchange, reading and writing
QUIET = 0.05  # a client silent this long after connecting is a raw-JSON reader
_ACCEPT_BATCH = 16

# RFC 9112 §3: request-line = method SP request-target SP HTTP-version
_REQUEST_LINE = re.compile(rb"([A-Z]{1,16}) (\S{1,2048}) HTTP/1\.[01]\r?\n")
_METHOD_PREFIX = re.compile(rb"[A-Z]{0,16}( |$)")
READ_ONLY = (
    "this stats port is read-only; commands (reload, stop, stacks) are accepted only on the "
    "control socket (PIDFILE.sock)"
)


def status_page() -> bytes:
    """The self-contained status page shipped in the package."""
    return resources.files("forklift").joinpath("status_page.html").read_bytes()


class _Client:
    __slots__ = ("sock", "inbox", "outbox", "deadline", "quiet_until", "writing", "draining")

    def __init__(self, sock, now: float):
        self.sock = sock
        self.inbox = b""
        self.outbox = b""
        self.deadline = now + DEADLINE
        self.quiet_until = now + QUIET
        self.writing = False
        self.draining = False  # answered: read and discard until the peer closes


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
        return QUIET if self._clients else None

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
                not client.writing
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
                conn.close()  # too many at once: a flood must not grow the master
                continue
            conn.setblocking(False)
            self._clients[conn] = _Client(conn, time.monotonic())

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
        method, target = match.group(1), match.group(2)
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
            body = self._metrics().encode()
            self._respond(client, 200, "OK", body, METRICS_CONTENT_TYPE, head_only=head_only)
        elif path in (b"/status.json", b"/status"):
            body = json.dumps(self._status()).encode()
            self._respond(client, 200, "OK", body, "application/json", head_only=head_only)
        elif path in (b"/", b"/index.html"):
            if self._page is None:
                self._page = status_page()
            self._respond(
                client, 200, "OK", self._page, "text/html; charset=utf-8", head_only=head_only
            )
        else:
            self._respond(client, 404, "Not Found", b"try /metrics, /status.json or /\n")

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
    ) -> None:
        head = (
            (
                f"HTTP/1.1 {status} {reason}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Cache-Control: no-store\r\n"
                "X-Content-Type-Options: nosniff\r\n"
                "Connection: close\r\n"
            ).encode()
            + extra
            + b"\r\n"
        )
        self._respond_raw(client, head if head_only else head + body)

    def _respond_raw(self, client: _Client, data: bytes) -> None:
        client.inbox = b""
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
        if not client.outbox:
            # Close our side and wait for the peer's close: closing with unread bytes in
            # the receive buffer would send a reset that can destroy the answer in flight.
            client.writing = False
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
