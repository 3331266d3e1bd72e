"""Sans-IO HTTP/1.1, server side: request bytes in, events out; response heads out as bytes.

`RequestParser` is fed whatever the socket produced (`receive_data`) and asked for the next
event (`next_event`): a `RequestHead`, body `Data`, `EndOfMessage`, or `NEED_DATA`. After a
message ends it answers `PAUSED` until the server has answered and calls
`start_next_request()`, so pipelined bytes wait in the buffer and a request that must close
the connection can never let a second one through. Every violation raises `ProtocolError`
carrying the status to answer; the parser is then dead and the connection must close.

`frame_response` serialises a response head around `framing.body_framing`; `HTTP` is this
module behind the one face the worker knows (`framing.ProtocolAdapter`).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .abnf import TOKEN
from .abnf import token as _token
from .errors import ProtocolError
from .events import NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage
from .framing import (
    BODY_CHUNKED,
    BODY_UNTIL_CLOSE,
    Response,
    ResponseFrame,
    app_fields,
    body_framing,
    date_cache,
    error_answer,
    error_response,
    reason,
)
from .memo import Memo

# --- Grammar (RFC 9112 §3 and §5; the token rule is abnf's), compiled once ------------------
# request-line = method SP request-target SP HTTP-version. The target is any run of visible
# bytes: obs-text (0x80-0xFF) is let through as nginx does, it reaches PATH_INFO as latin-1.
_request_line = re.compile(rb"(" + TOKEN + rb") ([\x21-\x7e\x80-\xff]+) HTTP/([0-9])\.([0-9])")
# field-line = field-name ":" OWS field-value OWS. No space before the colon (§5.1), values
# are VCHAR / obs-text with inner SP and HTAB; any other CTL (CR, LF, NUL, ...) fails the match.
# The value must start with a visible byte, so that OWS and value never compete for the same
# spaces: otherwise a long run of spaces before a bad byte costs quadratic backtracking.
_field_line = re.compile(
    rb"(" + TOKEN + rb"):[ \t]*((?:[\x21-\x7e\x80-\xff][\t\x20-\x7e\x80-\xff]*)?)"
)
# --- request-target (RFC 9112 §3.2) and Host (RFC 9110 §7.2), RFC 3986 §3.2.2 and §3.2.3 ---
# reg-name = *( unreserved / pct-encoded / sub-delims ); an IP-literal is an IPv6 address or
# an IPvFuture in brackets; port = *DIGIT. Host = uri-host [ ":" port ].
# Written as "chars, then any number of (%XX, chars)": the same language as the grammar's
# *( char / %XX ), matched in half the time (no alternation tried at every byte).
_REG_CHARS = rb"[-0-9A-Za-z._~!$&'()*+,;=]*"
_REG_NAME = _REG_CHARS + rb"(?:%[0-9A-Fa-f]{2}" + _REG_CHARS + rb")*"
_IP_LITERAL = rb"\[(?:[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\.[-0-9A-Za-z._~!$&'()*+,;=:]+)\]"
_URI_HOST = rb"(?:" + _IP_LITERAL + rb"|" + _REG_NAME + rb")"
_host_value = re.compile(_URI_HOST + rb"(?::[0-9]*)?")
# authority-form = uri-host ":" port (§3.2.3): the port is not optional, the host not empty.
_authority_form = re.compile(rb"(?:" + _IP_LITERAL + rb"|" + _REG_NAME + rb"):[0-9]+")
# absolute-form = absolute-URI (§3.2.2); its scheme, per RFC 3986 §3.1.
_scheme = re.compile(rb"[A-Za-z][-+.0-9A-Za-z]*:")
# An http(s) URI: "//" authority, then a path, query or nothing (RFC 9110 §4.2.1-4.2.2).
_http_uri = re.compile(rb"(?i:https?)://([^/?#]*)(?:[/?#].*)?", re.DOTALL)
# A line ending that is not CRLF: a bare LF, or a CR followed by anything but LF (§2.2).
_bad_line_ending = re.compile(rb"(?<!\r)\n|\r[^\n]")
# chunk = chunk-size [ chunk-ext ] CRLF; extensions are parsed only to be skipped (§7.1.1):
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ). Whitespace is
# allowed around ";" and "=" only: none after the size or a value, before the CRLF.
# quoted-string (RFC 9110 §5.6.4): qdtext is HTAB, SP, VCHAR but '"' and "\\", obs-text; a
# quoted-pair escapes HTAB, SP, VCHAR or obs-text, never a CTL.
_QUOTED_STRING = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT_VALUE = rb"(?:" + TOKEN + rb"|" + _QUOTED_STRING + rb")"
_chunk_size_line = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:[ \t]*;[ \t]*" + TOKEN + rb"(?:[ \t]*=[ \t]*" + _CHUNK_EXT_VALUE + rb")?)*"
)
_digits = re.compile(rb"[0-9]+")

_TE_CODINGS = frozenset((b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress"))
_CRLF = b"\r\n"
_MAX_CHUNK_LINE = 4096  # size + extensions; extensions are ignored, so this is generous
_MAX_EMPTY_LINES = 8  # CRLFs tolerated before a request line (RFC 9112 §2.2 asks for one)
_MAX_CL_DIGITS = 18  # fits in a signed 64-bit integer; anything longer is not a length
# Parsed field blocks, per set of limits (one in a worker; tests make others). Blocks up to
# 4 KiB (a browser's, cookies included) are remembered: at most 256 × 4 KiB per limits.
_field_memos: dict = {}
_MEMO_MAX_FIELD_BYTES = 4096
# Request lines that passed (a polled endpoint, a health check, assets), up to 1 KiB: no limit
# depends on them here (the line's length was checked before the head was complete).
_request_lines = Memo(512)
_MEMO_MAX_LINE_BYTES = 1024


def field_memo(limits: Limits) -> Memo:
    """The memo of field blocks parsed under `limits` (one per set of limits)."""
    memo = _field_memos.get(limits)
    if memo is None:
        memo = _field_memos.setdefault(limits, Memo(256))
    return memo


class RequestHead(NamedTuple):
    """A parsed request line and field block.

    `headers` keeps the fields in order as (lower-cased name, value) pairs of bytes, values
    stripped of surrounding whitespace. The framing facts the server needs are pre-computed.
    """

    method: str
    target: bytes
    http_version: str  # "1.1" or "1.0"
    headers: list
    keep_alive: bool  # what the client asked for; the response may still close
    content_length: int | None  # None when chunked or absent
    chunked: bool
    expect_continue: bool

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    # The rest of the request face every protocol shows (framing.ProtocolAdapter).
    vars = None  # an HTTP request carries fields, not CGI variables
    dropped = ()  # the parser passes every field on (the gateway decides what the app sees)


class Limits(NamedTuple):
    """Parser limits; the worker builds one from `Config`. `max_body` None means unlimited."""

    max_request_line: int = 8192
    max_header_bytes: int = 65536
    max_header_fields: int = 100
    max_body: int | None = None


DEFAULT_LIMITS = Limits()

# Parser states
_HEAD, _BODY_LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _END, _PAUSED, _DEAD = range(
    9
)


class RequestParser:
    """Turns the bytes of one connection into request events (see the module docstring)."""

    __slots__ = (
        "_buf",
        "_state",
        "_scanned",
        "_remaining",
        "_body_seen",
        "_eof",
        "_limits",
        "_trailers",
        "_error",
        "_empty_lines",
        "_head",
        "_method",
        "_memo",
    )

    def __init__(self, limits: Limits = DEFAULT_LIMITS, memo: Memo | None = None):
        self._limits = limits
        # The field blocks parsed under these limits (`field_memo`); the adapter passes its
        # own, so a new connection costs no lookup.
        self._memo = memo if memo is not None else field_memo(limits)
        self._buf = bytearray()
        self._state = _HEAD
        self._scanned = 0  # bytes of the buffer already checked for line endings
        self._remaining = 0  # body bytes left in a Content-Length body or the current chunk
        self._body_seen = 0  # body bytes so far, for the size limit on chunked bodies
        self._eof = False
        self._trailers: list = []
        self._error: ProtocolError | None = None
        self._empty_lines = 0
        self._head = None  # the head being parsed, while it is parsed (for _fail)
        self._method: bytes | None = None  # of the current request, once known

    # -- input -------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; b"" means the peer closed its sending side."""
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def trailing_data(self) -> bytes:
        """Bytes received but not consumed yet (e.g. a pipelined request)."""
        return bytes(self._buf)

    @property
    def at_message_boundary(self) -> bool:
        """True when no part of a request has been consumed or buffered."""
        return self._state == _HEAD and not self._buf

    @property
    def error(self) -> ProtocolError | None:
        """The error that ended this connection's parsing, or None."""
        return self._error

    @property
    def message_complete(self) -> bool:
        """True once the current request's body has been read to its end."""
        return self._state in (_END, _PAUSED)

    @property
    def request_is_head(self) -> bool:
        """True when the request being read, answered or refused is a HEAD request.

        Any answer to HEAD, an error included, carries no content (RFC 9110 §9.3.2): the
        client reads none, and would take the bytes for the next response. Before its head
        is complete (a 408, a 414), a request is HEAD when its line starts "HEAD ".
        """
        method = self._method
        if method is None:
            return self._state == _HEAD and self._buf.startswith(b"HEAD ")
        return method == b"HEAD"

    def start_next_request(self) -> None:
        """The response to the previous request is done; parse the next one."""
        if self._state != _PAUSED and self._state != _END:
            raise RuntimeError("start_next_request() before the message ended")
        self._method = None
        self._state = _HEAD
        self._scanned = 0
        self._body_seen = 0

    # -- events ------------------------------------------------------------------------------
    def next_event(self):
        """Return the next event, NEED_DATA or PAUSED; raise ProtocolError on bad input."""
        state = self._state
        if state == _HEAD:
            return self._parse_head()
        if state == _BODY_LENGTH:
            return self._read_length_body()
        if state == _END:
            self._state = _PAUSED
            trailers = tuple(self._trailers)
            self._trailers = []
            return EndOfMessage(trailers)
        if state == _PAUSED:
            return PAUSED
        if state == _DEAD:
            raise self._error  # type: ignore[misc]
        return self._read_chunked_body()

    def _fail(self, message: str, status: int = 400):
        head = self._head
        if self._method is None:  # remembered for request_is_head: the buffer may go on
            line = head if head is not None else self._buf if self._state == _HEAD else b""
            self._method = b"HEAD" if line.startswith(b"HEAD ") else b""
        if head is not None:
            # A line ending that is not CRLF came before whatever else is wrong with this
            # head: a byte-at-a-time reader would have stopped there, so we do too.
            # The head was cut before its CRLF CRLF: a CR at its very end is a CR CR LF.
            self._head = None
            if _bad_line_ending.search(head) or head.endswith(b"\r"):
                message, status = "line ending is not CRLF", 400
        self._state = _DEAD
        self._error = ProtocolError(message, status)
        raise self._error

    # -- head --------------------------------------------------------------------------------
    def _parse_head(self):
        buf = self._buf
        if not buf:  # the common case between keep-alive requests
            if self._eof:
                return ConnectionClosed()
            return NEED_DATA
        # RFC 9112 §2.2: ignore empty lines before the request line, a few of them.
        while buf.startswith(_CRLF):
            del buf[:2]
            self._scanned = max(0, self._scanned - 2)
            self._empty_lines += 1
            if self._empty_lines > _MAX_EMPTY_LINES:
                self._fail("too many empty lines before the request line")
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            return self._head_incomplete()
        limits = self._limits
        # The faults a byte-at-a-time reader would have met before the head was complete
        # are reported first, so the answer never depends on how the bytes were split.
        # A head shorter than the request-line limit cannot be too long, and a stray CR or
        # LF in it fails the grammar below: `_fail` then looks for it (see _head_fault).
        if end + 4 > limits.max_request_line:
            self._check_head_prefix(self._scanned, end + 4)
        head = bytes(buf[:end])
        self._head = head
        del buf[: end + 4]
        self._scanned = 0
        self._empty_lines = 0
        line_end = head.find(_CRLF)
        request_line = head if line_end < 0 else head[:line_end]
        fields = b"" if line_end < 0 else head[line_end + 2 :]
        # A field block parsed before (under these limits) is not parsed again: a client
        # sends the same fields on every request (a browser's, a proxy's), and the facts
        # below are a function of those bytes alone. Only blocks that passed are remembered.
        known = self._memo.get(fields)
        if known is None:
            if (fields.count(_CRLF) + 1 if fields else 0) > limits.max_header_fields:
                self._fail("too many header fields", 431)
            if len(head) - len(request_line) > limits.max_header_bytes:
                self._fail("request header fields too large", 431)

        line = _request_lines.get(request_line)
        if line is None:
            line = self._parse_request_line(request_line, head)
            if len(request_line) <= _MEMO_MAX_LINE_BYTES:
                _request_lines.remember(request_line, line)
        method, target, http_version = line
        self._method = method

        if known is None:
            known = self._parse_fields(fields)
            if len(fields) <= _MEMO_MAX_FIELD_BYTES:
                self._memo.remember(fields, known)
        headers, content_length, transfer_encoding, connection, expect, host_count = known
        headers = list(headers)  # the request's own list; the pairs are immutable

        # RFC 9112 §3.2: an HTTP/1.1 request needs exactly one Host.
        if host_count > 1 or (host_count == 0 and http_version == "1.1"):
            self._fail("a request must carry exactly one Host field")

        chunked = False
        if transfer_encoding is not None:
            # RFC 9112 §6.1: TE in HTTP/1.0 is faulty framing; §6.3 ¶3: CL+TE is an attack.
            if http_version == "1.0":
                self._fail("Transfer-Encoding in an HTTP/1.0 request")
            if content_length is not None:
                self._fail("both Content-Length and Transfer-Encoding")
            self._check_transfer_encoding(transfer_encoding)
            chunked = True
        elif (
            content_length is not None
            and limits.max_body is not None
            and content_length > limits.max_body
        ):
            self._fail("request body larger than the limit", 413)

        if connection:
            tokens = {t.strip().lower() for t in connection.split(b",")}
            keep_alive = (b"close" not in tokens) and (
                http_version == "1.1" or b"keep-alive" in tokens
            )
        else:
            keep_alive = http_version == "1.1"
        # Expect is an HTTP/1.1 feature; an HTTP/1.0 client never waits for the 100.
        expect_continue = http_version == "1.1" and expect.lower() == b"100-continue"

        if chunked:
            self._state = _CHUNK_SIZE
        elif content_length:
            self._state = _BODY_LENGTH
            self._remaining = content_length
        else:
            self._state = _END
        self._head = None
        return RequestHead(
            method.decode("ascii"),
            target,
            http_version,
            headers,
            keep_alive,
            content_length,
            chunked,
            expect_continue,
        )

    def _parse_request_line(self, request_line: bytes, head: bytes) -> tuple:
        """(method, target, HTTP version) of a request line, checked; raises on a fault."""
        match = _request_line.fullmatch(request_line)
        if match is None:
            if _bad_line_ending.search(head):
                self._fail("line ending is not CRLF")
            self._fail("malformed request line")
        method, target, major, minor = match.groups()
        self._method = method
        if major != b"1" or minor not in (b"0", b"1"):
            self._fail("HTTP version not supported", 505)
        if target[:1] != b"/" or method == b"CONNECT":  # else origin-form: nothing to check
            self._check_target(method, target)
        return method, target, "1.1" if minor == b"1" else "1.0"

    def _parse_fields(self, fields: bytes) -> tuple:
        """The field lines of a head (`fields`, CRLF-separated, b"" for none), checked:
        (pairs, content length, transfer codings, connection options, expect, Host count).
        Raises on the first faulty line."""
        headers = []
        append = headers.append
        field_line = _field_line.fullmatch
        content_length = None
        transfer_encoding = None
        connection = b""
        expect = b""
        host_count = 0
        for line in fields.split(_CRLF) if fields else ():
            m = field_line(line)
            if m is None:
                if line[:1] in (b" ", b"\t"):
                    self._fail("obsolete line folding in header field")
                if _bad_line_ending.search(line):
                    self._fail("line ending is not CRLF")
                self._fail("malformed header field")
            name, value = m.groups()
            name = name.lower()
            value = value.rstrip(b" \t")
            append((name, value))
            # Framing fields are checked here, once, so the body reader can trust them.
            if name == b"content-length":
                content_length = self._parse_content_length(value, content_length)
            elif name == b"transfer-encoding":
                transfer_encoding = (
                    value if transfer_encoding is None else transfer_encoding + b"," + value
                )
            elif name == b"connection":
                connection = connection + b"," + value if connection else value
            elif name == b"host":
                host_count += 1
                # RFC 9112 §3.2: a Host field with an invalid value is a 400.
                if not _host_value.fullmatch(value):
                    self._fail("invalid Host field value")
            elif name == b"expect":
                expect = value
        return tuple(headers), content_length, transfer_encoding, connection, expect, host_count

    def _check_target(self, method: bytes, target: bytes) -> None:
        """The request-target must take one of the four forms of RFC 9112 §3.2, the one its
        method allows; otherwise 400 (§3.2: "SHOULD respond with a 400").

        forklift does not tunnel, so a well-formed CONNECT is refused with 501 (RFC 9110
        §9.1: a method the origin server does not implement) and the connection closed:
        the bytes after its head would be the tunnel, never a request.
        """
        if method == b"CONNECT":
            # §3.2.3: CONNECT, and only CONNECT, uses the authority-form, host ":" port.
            if not _authority_form.fullmatch(target) or target[:1] == b":":
                self._fail("CONNECT needs an authority-form target (host:port)")
            self._fail("CONNECT is not implemented: forklift does not tunnel", 501)
        if target[:1] == b"/":
            return  # origin-form (§3.2.1): absolute-path [ "?" query ]
        if target == b"*":
            # §3.2.4: the asterisk-form is only for a server-wide OPTIONS.
            if method != b"OPTIONS":
                self._fail("the asterisk-form target is only for OPTIONS")
            return
        if not _scheme.match(target):
            self._fail("invalid request-target")
        # §3.2.2: the absolute-form. Not a proxy, forklift serves http and https URIs only.
        m = _http_uri.fullmatch(target)
        if m is None:
            self._fail("absolute-form target is not an http or https URI")
        authority = m.group(1)
        if b"@" in authority:
            # RFC 9110 §4.2.4: userinfo in an http URI from a client is to be treated as an
            # error (it hides the real host from whoever reads the URI).
            self._fail("userinfo in an absolute-form target")
        # RFC 9110 §4.2.1: an http URI with an empty host is invalid and MUST be rejected.
        if authority[:1] in (b"", b":") or not _host_value.fullmatch(authority):
            self._fail("invalid authority in an absolute-form target")

    def _head_incomplete(self):
        buf = self._buf
        self._check_head_prefix(self._scanned, len(buf))
        self._scanned = len(buf)
        if self._eof:
            if buf:
                self._fail("connection closed inside a request head")
            return ConnectionClosed()
        return NEED_DATA

    def _check_head_prefix(self, lo: int, hi: int) -> None:
        """Fail with the earliest fault whose byte lies in buf[lo:hi]: a line ending that is
        not CRLF (400), a request line past its limit (414), a head past its limit (431).
        Bytes before `lo` were checked by an earlier call."""
        buf = self._buf
        limits = self._limits
        faults = []
        m = _bad_line_ending.search(buf, max(0, lo - 1), hi)
        if m is not None:
            faults.append((m.end() - 1, 0, "line ending is not CRLF", 400))
        max_line = limits.max_request_line
        if hi > max_line:
            line_end = buf.find(_CRLF, 0, max_line + 2)
            if line_end < 0 or line_end > max_line:
                # Arrives with byte max_line, or the one after if that byte is a CR.
                at = max_line + (buf[max_line : max_line + 1] == b"\r")
                if lo <= at < hi:
                    faults.append((at, 1, "request line too long", 414))
        max_head = max_line + limits.max_header_bytes + 4
        if lo <= max_head < hi:
            faults.append((max_head, 2, "request header fields too large", 431))
        if faults:
            _, _, message, status = min(faults)
            self._fail(message, status)

    def _parse_content_length(self, value: bytes, previous: int | None) -> int:
        # RFC 9110 §8.6: 1*DIGIT. A list of identical values ("5, 5") may be one length.
        parts = value.split(b",") if b"," in value else (value,)
        length = previous
        for part in parts:
            part = part.strip(b" \t")
            if not _digits.fullmatch(part):
                self._fail("Content-Length is not a decimal number")
            if len(part) > _MAX_CL_DIGITS:
                self._fail("Content-Length too large", 413 if self._limits.max_body else 400)
            n = int(part)
            if length is not None and n != length:
                self._fail("conflicting Content-Length values")
            length = n
        return length  # type: ignore[return-value]

    def _check_transfer_encoding(self, value: bytes) -> None:
        codings = [c.strip(b" \t").lower() for c in value.split(b",")]
        codings = [c for c in codings if c]
        if not codings:
            self._fail("empty Transfer-Encoding")
        for coding in codings:
            if coding != b"chunked" and coding not in _TE_CODINGS:
                if _token.fullmatch(coding):
                    self._fail("unknown transfer coding", 501)
                self._fail("malformed Transfer-Encoding")
        if codings.count(b"chunked") > 1:
            # RFC 9112 §6.1: a sender MUST NOT apply chunked more than once.
            self._fail("chunked applied more than once")
        if codings[-1] != b"chunked":
            # RFC 9112 §6.3 ¶4: the length of such a request cannot be determined.
            self._fail("Transfer-Encoding does not end with chunked")
        if len(codings) > 1:
            # A compressed-then-chunked body would reach the app still compressed, and WSGI
            # has no way to say so: refuse rather than deliver bytes the app cannot read.
            self._fail("only the chunked transfer coding is implemented", 501)

    # -- bodies ------------------------------------------------------------------------------
    def _read_length_body(self):
        buf = self._buf
        if not buf:
            if self._eof:
                self._fail("connection closed inside a request body")
            return NEED_DATA
        data = _take(buf, self._remaining)
        remaining = self._remaining - len(data)
        self._remaining = remaining
        if not remaining:
            self._state = _END
        return Data(data)

    def _read_chunked_body(self):
        buf = self._buf
        while True:
            state = self._state
            if state == _CHUNK_SIZE:
                end = buf.find(_CRLF)
                if end < 0:
                    if _bad_line_ending.search(buf):
                        self._fail("line ending is not CRLF")
                    if len(buf) - (buf[-1:] == b"\r") > _MAX_CHUNK_LINE:
                        self._fail("chunk size line too long")
                    return self._need_body_data()
                if end > _MAX_CHUNK_LINE:
                    self._fail("chunk size line too long")
                line = bytes(buf[:end])
                m = _chunk_size_line.fullmatch(line)
                if m is None:
                    self._fail("malformed chunk size")
                size = int(m.group(1), 16)
                del buf[: end + 2]
                if size == 0:
                    self._state = _TRAILERS
                    self._scanned = 0
                    continue
                self._body_seen += size
                max_body = self._limits.max_body
                if max_body is not None and self._body_seen > max_body:
                    self._fail("request body larger than the limit", 413)
                self._remaining = size
                self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if not buf:
                    return self._need_body_data()
                data = _take(buf, self._remaining)
                self._remaining -= len(data)
                if not self._remaining:
                    self._state = _CHUNK_END
                return Data(data)
            elif state == _CHUNK_END:
                if len(buf) < 2:
                    if buf and buf[:1] != b"\r":
                        self._fail("chunk data not followed by CRLF")
                    return self._need_body_data()
                if buf[:2] != _CRLF:
                    self._fail("chunk data not followed by CRLF")
                del buf[:2]
                self._state = _CHUNK_SIZE
            else:  # _TRAILERS
                return self._read_trailers()

    def _read_trailers(self):
        buf = self._buf
        if buf[:2] == _CRLF:
            del buf[:2]
            self._state = _END
            return self.next_event()
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        hi = len(buf) if end < 0 else end + 4
        # As for heads: the earliest fault wins, however the bytes were split.
        limit = self._limits.max_header_bytes + 4
        m = _bad_line_ending.search(buf, max(0, self._scanned - 1), hi)
        bad_eol_at = m.end() - 1 if m is not None else None
        too_big = self._scanned <= limit < hi
        if bad_eol_at is not None and (not too_big or bad_eol_at <= limit):
            self._fail("line ending is not CRLF")
        if too_big:
            self._fail("trailer section too large", 431)
        if end < 0:
            self._scanned = len(buf)
            return self._need_body_data()
        block = bytes(buf[:end])
        del buf[: end + 4]
        self._scanned = 0
        lines = block.split(_CRLF)
        if len(lines) > self._limits.max_header_fields:
            self._fail("too many trailer fields", 431)
        for line in lines:
            m = _field_line.fullmatch(line)
            if m is None:
                self._fail("malformed trailer field")
            self._trailers.append((m.group(1).lower(), m.group(2).rstrip(b" \t")))
        self._state = _END
        return self.next_event()

    def _need_body_data(self):
        if self._eof:
            self._fail("connection closed inside a chunked body")
        return NEED_DATA


def _take(buf: bytearray, limit: int) -> bytes:
    """Remove and return up to `limit` bytes from the front of `buf`."""
    if len(buf) <= limit:
        data = bytes(buf)
        buf.clear()
    else:
        data = bytes(buf[:limit])
        del buf[:limit]
    return data


# --- Responses ------------------------------------------------------------------------------
CONTINUE_RESPONSE = b"HTTP/1.1 100 Continue\r\n\r\n"


def status_code(status: str) -> int:
    """The integer code of a WSGI status string such as '200 OK'."""
    return int(status[:3])


def frame_response(
    request: RequestHead | None,
    status: str,
    headers: list,
    known_length: int | None = None,
    keep_alive: bool = True,
    extra: bytes = b"",
) -> ResponseFrame:
    """Decide how to delimit a response body and serialise the head.

    `headers` are (str, str) pairs the caller validated. `known_length` is the body length
    when the server knows it without a Content-Length header (a one-element body).
    `keep_alive` False forces `Connection: close`. `extra` is pre-serialised header lines
    (Date, Server) the caller adds. The body rules are `framing.body_framing`'s; this adds
    what HTTP/1.x says about the connection (RFC 9112 §9).
    """
    http10 = request is None or request.http_version == "1.0"
    keep_alive = keep_alive and request is not None and request.keep_alive
    is_head = request is not None and request.method == "HEAD"
    # `extra` (the Date line) is part of the key: it changes once a second, and the whole
    # frame is then one lookup, with nothing built per answer.
    key = (http10, keep_alive, is_head, known_length, extra, status, *headers)
    made = _heads.get(key)
    if made is None:
        start, body_mode, content_length, keep_alive = _frame(
            http10, keep_alive, is_head, status, headers, known_length
        )
        # RFC 9110 §6.2: answer with the highest version we conform to, even to HTTP/1.0.
        made = ResponseFrame(start + extra + _CRLF, body_mode, content_length, keep_alive)
        _heads.remember(key, made)
    return made


_heads = Memo()  # the heads of this protocol's answers


def _frame(http10, keep_alive, is_head, status, headers, known_length) -> tuple:
    """`frame_response`'s decision, made once per distinct head: (the head's bytes before
    `extra`, body mode, Content-Length, keep-alive)."""
    fields, content_length = app_fields(headers)
    body_mode, content_length = body_framing(
        int(status[:3]), is_head, content_length, known_length, not http10 and keep_alive
    )
    if body_mode == BODY_UNTIL_CLOSE:
        keep_alive = False
    if content_length is not None:
        fields += f"Content-Length: {content_length}\r\n"
    if body_mode == BODY_CHUNKED:
        fields += "Transfer-Encoding: chunked\r\n"
    if not keep_alive:
        fields += "Connection: close\r\n"
    elif http10:
        fields += "Connection: keep-alive\r\n"
    start = b"HTTP/1.1 " + (status + "\r\n" + fields).encode("latin-1")
    return start, body_mode, content_length, keep_alive


class HttpResponse(Response):
    """An HTTP/1.x answer: a Date header, chunked when the length is unknown and the
    client keeps the connection, `Connection` as the request and the server decide."""

    __slots__ = ()

    def frame(self, status: str, headers: list, known_length: int | None) -> ResponseFrame:
        # Positional: this runs once per answer, and keywords cost more than they say here.
        return frame_response(
            self.request, status, headers, known_length, self.keep_alive, date_cache.get()
        )


class HTTP:
    """HTTP/1.x behind the worker's one protocol face (`framing.ProtocolAdapter`)."""

    name = "http"
    rejection = "bad request"
    loud_rejections = False  # a client's mistake (or a scanner): not worth a warning
    continue_response = CONTINUE_RESPONSE
    dropped_warning = "ignored header fields: %s"  # never logged: the parser drops none

    def __init__(self, limits: Limits = DEFAULT_LIMITS):
        self.limits = limits
        self._field_memo = field_memo(limits)

    def new_parser(self) -> RequestParser:
        return RequestParser(self.limits, self._field_memo)

    def response(self, request, parser, sink, keep_alive: bool) -> HttpResponse:
        return HttpResponse(request, parser, sink, keep_alive)

    error_answer = staticmethod(error_answer)

    def timeout_answer(self, *, head_only: bool = False) -> bytes:
        return error_response(408, reason(408), extra=date_cache.get(), head_only=head_only)
