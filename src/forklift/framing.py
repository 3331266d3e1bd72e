"""How an answer is delimited on the wire, decided once for every protocol, and the one face
every protocol adapter shows the worker.

`body_framing` is the one decision (RFC 9110 §6.4.1, §8.6, §9.3.2; RFC 9112 §6.1-6.3): no
body for 1xx, 204, 304 and HEAD; a length when the app or the server knows it; otherwise
chunked when the protocol and client allow it, else delimited by closing. `http1` and `uwsgi`
serialise their heads around it. `Response` is what `wsgi.run_app` drives: it keeps the
body's bookkeeping (Content-Length owed, chunking) and hands the bytes to a sink, so no
socket is touched here and no framing rule is known by the sink.

Sans-IO like the parsers: nothing here imports a socket, a thread or the WSGI environ.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import NamedTuple, Protocol

from .errors import ProtocolError
from .events import Data

#: How a response body is delimited on the wire.
BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE = "none", "length", "chunked", "close"

# Header names the server owns: an app's values for these are replaced or checked, not copied
# (RFC 9110 §7.6.1: hop-by-hop fields describe this connection, which is the server's).
HOP_BY_HOP = frozenset(("connection", "transfer-encoding", "keep-alive"))

_COALESCE_LIMIT = 65536  # head + body joined into one send below this; two sends above

#: Reason phrases for the statuses the server itself answers (RFC 9110 §15).
REASONS = {
    100: "Continue",
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


def reason(status: int) -> str:
    """The reason phrase for a status the server answers itself."""
    return REASONS.get(status, "Bad Request" if 400 <= status < 500 else "Error")


class ResponseFrame(NamedTuple):
    """The decided framing of one response: its serialised head, body mode and fate."""

    head: bytes
    body_mode: str
    content_length: int | None
    keep_alive: bool


def app_fields(headers: list) -> tuple:
    """(the app's header fields serialised as "Name: value" lines, its Content-Length or None).

    Hop-by-hop fields are dropped: how the body and the connection are framed is the
    server's decision. Content-Length is kept aside, to be written once where the framing
    decides it. `headers` are (str, str) pairs the gateway validated.
    """
    lines = []
    content_length = None
    for name, value in headers:
        lname = name.lower()
        if lname == "content-length":
            content_length = int(value) if (value.isascii() and value.isdigit()) else None
            if content_length is None:
                raise ValueError(f"Content-Length from the app is not a number: {value!r}")
            continue
        if lname in HOP_BY_HOP:
            continue
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines), content_length


def body_framing(
    code: int, is_head: bool, content_length: int | None, known_length: int | None, can_chunk: bool
) -> tuple:
    """(body mode, Content-Length to announce or None) of one response.

    `content_length` is the app's header, `known_length` what the server knows without it
    (a one-piece body). `can_chunk`: the protocol and the client both take chunked bodies.
    """
    if code < 200 or code == 204:
        return BODY_NONE, None  # RFC 9110 §8.6: no Content-Length in 1xx or 204
    if code == 304:
        return BODY_NONE, content_length  # §15.4.5: the length of what a 200 would carry
    if is_head:
        # §9.3.2: the head a GET would have, without the body.
        return BODY_NONE, content_length if content_length is not None else known_length
    if content_length is not None:
        return BODY_LENGTH, content_length
    if known_length is not None:
        return BODY_LENGTH, known_length
    if can_chunk:
        return BODY_CHUNKED, None
    return BODY_UNTIL_CLOSE, None


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def error_response(
    status: int, reason: str, message: str = "", extra: bytes = b"", *, head_only: bool = False
) -> bytes:
    """A complete, self-contained error response that closes the connection.

    `head_only` for an answer to HEAD: Content-Length still announces the body a GET would
    get, but no body follows (RFC 9110 §9.3.2 and §8.6).
    """
    body = (message or reason).encode("latin-1", "replace") + b"\n"
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n%s\r\n%s"
        % (status, reason.encode("latin-1"), len(body), extra, b"" if head_only else body)
    )


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


def error_answer(status: int, message: str = "", *, head_only: bool = False) -> bytes:
    """`ProtocolAdapter.error_answer` for both protocols: behind nginx a uwsgi listener's error
    goes out as the same HTTP answer (nginx passes it to the client), with a Date line."""
    return error_response(status, reason(status), message, date_cache.get(), head_only=head_only)


def discard_buffered_body(parser) -> None:
    """Consume request body bytes the parser already holds, without waiting for more."""
    try:
        while type(parser.next_event()) is Data:
            pass
    except ProtocolError:
        return


class Response:
    """One answer as `wsgi.run_app` drives it (`send_head`, `send_body`, `sendfile`,
    `finish`): the body's framing state, with the bytes handed to `sink`.

    A protocol subclasses it with `frame()`, its head serialisation around `body_framing`.
    The head is held back and sent with the first body bytes, so a small answer leaves in
    one send(). After `finish`, `keep_alive` says whether the connection may carry another
    request; `status` and `sent` are for the access log.
    """

    __slots__ = (
        "sink",
        "parser",
        "request",
        "head_sent",
        "keep_alive",
        "mode",
        "remaining",
        "pending",
        "status",
        "sent",
    )

    def __init__(self, request, parser, sink, keep_alive: bool):
        self.sink = sink
        self.parser = parser
        self.request = request
        self.head_sent = False
        self.keep_alive = keep_alive
        self.mode = BODY_NONE
        self.remaining = None
        self.pending = b""
        self.status = ""
        self.sent = 0

    @property
    def can_sendfile(self) -> bool:
        """Whether `run_app` may hand a file to `sendfile`: the sink's call (a TLS sink,
        say, cannot let the kernel send plain file bytes)."""
        return self.sink.can_sendfile

    def frame(self, status: str, headers: list, known_length: int | None) -> ResponseFrame:
        """Serialise the head around `body_framing` (each protocol's own syntax)."""
        raise NotImplementedError

    def send_head(self, status: str, headers: list, known_length: int | None) -> None:
        if self.keep_alive and not self.parser.message_complete:
            # A request body the app left unread would be parsed as the next request unless
            # we drain it; if it is not all here yet, closing is the safe answer (RFC 9112
            # §9.3).
            discard_buffered_body(self.parser)
            if not self.parser.message_complete:
                self.keep_alive = False
        frame = self.frame(status, headers, known_length)
        self.head_sent = True
        self.status = status
        self.keep_alive = frame.keep_alive
        self.mode = frame.body_mode
        self.remaining = frame.content_length
        self.pending = frame.head

    def send_body(self, data: bytes) -> None:
        mode = self.mode
        if mode == BODY_NONE:
            return
        if mode == BODY_LENGTH:
            if len(data) > self.remaining:
                # More than the app's Content-Length: the excess would be read as the start
                # of another response. Cut it and close.
                data = data[: self.remaining]
                self.keep_alive = False
            self.remaining -= len(data)
        elif mode == BODY_CHUNKED:
            if len(data) >= _COALESCE_LIMIT:
                # A big chunk goes out as size line, the app's own buffer, CRLF: no copy.
                size_line = b"%x\r\n" % len(data)
                self.sent += len(size_line) + len(data) + 2
                self.sink.send(self.pending + size_line)
                self.pending = b""
                self.sink.send(data)
                self.sink.send(b"\r\n")
                return
            data = chunk(data)
        self.sent += len(data)
        if self.pending:
            if len(data) < _COALESCE_LIMIT:
                data = self.pending + data
                self.pending = b""
            else:
                self.sink.send(self.pending)
                self.pending = b""
        self.sink.send(data)

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        """Queue `count` bytes of file `fd` (the sink sends them with sendfile, from the
        loop); a file that ends early makes the sink close the connection."""
        sink = self.sink
        if self.pending:
            sink.send(self.pending)
            self.pending = b""
        if self.mode == BODY_NONE or count <= 0:
            return
        sink.queue_file(fd, offset, count)
        self.sent += count
        if self.remaining is not None:
            self.remaining -= count

    @property
    def held(self) -> int:
        """Bytes of this answer the sink holds in memory (the bound on advancing the app)."""
        return self.sink.queued

    def wait_room(self, limit: int) -> None:
        """Block until the sink holds at most `limit` bytes (for the legacy `write()`)."""
        if self.pending:
            self.sink.send(self.pending)
            self.pending = b""
        self.sink.wait_room(limit)

    def finish(self) -> None:
        out = self.pending
        self.pending = b""
        if self.mode == BODY_CHUNKED:
            out += LAST_CHUNK
        elif self.mode == BODY_LENGTH and self.remaining:
            self.keep_alive = False  # fewer bytes than promised: only a close can tell
        if out:
            self.sink.send(out)


class ProtocolAdapter(Protocol):
    """The face every protocol module (`http1.HTTP`, `uwsgi.UWSGI`) shows the worker.

    The worker holds one adapter per listener and knows no protocol beyond this face.

    Parsers (`new_parser()`) answer `receive_data(bytes)`, `next_event()` (a request, `Data`,
    `EndOfMessage`, `ConnectionClosed`, `NEED_DATA` or `PAUSED`), `error` (the
    `ProtocolError` that killed it, or None), `message_complete`, `at_message_boundary` and
    `start_next_request()`. A request event carries the facts the worker needs:
    `method`, `content_length` (None or 0 for no body), `has_body`, `expect_continue`,
    `keep_alive`, `dropped` (names of fields the parser refused to pass on), and, for the
    gateway, either `vars` (CGI variables a proxy sent) or `target`/`http_version`/`headers`.
    """

    name: str  # "http", "uwsgi": for logs
    rejection: str  # how a log line names malformed input: "bad request", "bad uwsgi packet"
    loud_rejections: bool  # log malformed input as a warning (a proxy's) or debug (a client's)
    continue_response: bytes  # the interim answer to Expect: 100-continue
    dropped_warning: str  # a log line ("... %s") naming the fields a request's `dropped` lists

    def new_parser(self): ...

    def response(self, request, parser, sink, keep_alive: bool) -> Response: ...

    def error_answer(self, status: int, message: str = "", *, head_only: bool = False) -> bytes:
        """A whole answer that closes; `head_only` (the parser's `request_is_head`) omits
        the body for HEAD (RFC 9110 §9.3.2)."""

    def timeout_answer(self, *, head_only: bool = False) -> bytes | None: ...
