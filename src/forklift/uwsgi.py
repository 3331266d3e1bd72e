"""Sans-IO uwsgi protocol, server side: one packet of vars and a body in, events out.

A uwsgi request is a 4-byte header (modifier1 u8, datasize u16 little-endian, modifier2 u8),
a vars block of `datasize` bytes made of (u16 LE name size, name, u16 LE value size, value)
records, then CONTENT_LENGTH bytes of body. `UwsgiParser` is fed the connection's bytes
(`receive_data`) and answers, from `next_event`, one `UwsgiRequest`, the body as `Data`
pieces, `EndOfMessage`, then `PAUSED` forever: nginx's uwsgi module sends one request per
connection and expects the connection to close after the answer, so nothing after the body
is ever parsed (a second packet smuggled behind the first is dropped unread).

Anything malformed raises `ProtocolError` with `status=None` (nginx cannot be answered on a
broken packet; the worker logs one line and closes), except a body over the configured limit,
which carries 413 so the log says what happened. The parser is then dead: every later call
raises the same error.

Policy decisions the protocol leaves open, made here once:

- `UWSGI_*` vars (case-sensitive prefix) are removed and their names reported in
  `UwsgiRequest.dropped`. uWSGI lets them load code, chdir, switch virtualenvs and set
  environment variables; a peer never selects code or environment here.
- Duplicated vars: the ones that frame the body or route the request (`FRAMING_VARS`) are
  refused, since two copies that disagree are how requests get smuggled. Other `HTTP_*`
  vars are joined as a proxy folds repeated header fields (RFC 9110 §5.3: ", "; cookies
  with "; " as RFC 6265 §5.4 wants). Other CGI vars (REMOTE_ADDR, HTTPS, ...) may repeat
  only with the same value (nginx sends both when a `uwsgi_param` repeats a line of
  `uwsgi_params`); two different values are refused, as we could not tell which to trust.
- CONTENT_LENGTH must be 1*DIGIT, at most 18 digits (it fits a signed 64-bit integer);
  empty means no body, as do an empty CONTENT_TYPE and no type. Both are then removed.
- Var names must be visible ASCII: nginx only produces such names, anything else is noise.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from .abnf import token_text as _token  # RFC 9110 §5.6.2: a method is a token
from .errors import ProtocolError
from .events import NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage
from .framing import (
    Response,
    ResponseFrame,
    app_fields,
    body_framing,
    error_answer,
)
from .memo import Memo

# --- Grammar, compiled once ------------------------------------------------------------------
_content_length = re.compile(r"[0-9]{1,18}")  # 1*DIGIT, bounded to fit a signed 64-bit int
_var_name = re.compile(r"[\x21-\x7e]+")  # visible ASCII
_var_names = re.compile(r"[\x21-\x7e]+(?:\n[\x21-\x7e]+)*")  # the names, joined by LF
_header = struct.Struct("<BHB")  # modifier1, datasize (little-endian), modifier2
_u16 = struct.Struct("<H")

HEADER_SIZE = _header.size
# Var names already checked (visible ASCII): nginx sends the same few dozen on every request.
# A Memo: a peer inventing names cannot grow it (it is emptied when full).
_KNOWN_NAMES = Memo(1024)  # name -> True
_COMMON_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))
MAX_PACKET_SIZE = 0xFFFF  # datasize is 16 bits, so no buffer-size can admit more
DROPPED_PREFIX = "UWSGI_"

#: Vars whose second copy is a protocol error: they frame the body, or route the request
#: (method, path, query, host); two that disagree would let a peer smuggle or misroute.
FRAMING_VARS = frozenset(
    (
        "REQUEST_METHOD",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",
        "PATH_INFO",
        "SCRIPT_NAME",
        "QUERY_STRING",
        "REQUEST_URI",
        "SERVER_PROTOCOL",
        "HTTP_HOST",
        "HTTP_CONTENT_LENGTH",
        "HTTP_TRANSFER_ENCODING",
    )
)


class UwsgiRequest(NamedTuple):
    """The vars of one packet, cleaned up.

    `vars` maps names to values decoded as latin-1, so UTF-8 bytes reach the app as the
    latin-1 str PEP 3333 asks for. `content_length` is the body size (0 when none).
    `dropped` names the `UWSGI_*` vars that were removed, for the worker's warning.
    """

    vars: dict
    content_length: int
    dropped: tuple

    # The rest of the request face every protocol shows (framing.ProtocolAdapter).
    @property
    def method(self) -> str:
        return self.vars["REQUEST_METHOD"]

    @property
    def has_body(self) -> bool:
        return self.content_length > 0

    expect_continue = False  # nginx has read the body before it connects
    keep_alive = False  # one request per connection: nginx expects the close


# Parser states
_HEAD, _BODY, _END, _PAUSED, _CLOSED, _DEAD = range(6)


class UwsgiParser:
    """Turns the bytes of one uwsgi connection into events (see the module docstring).

    `buffer_size` bounds the vars block as uWSGI's `buffer-size` does (values above 65535
    change nothing: datasize cannot exceed it). `max_body_size` None means unlimited.
    """

    # The adapter face's `request_is_head`: the method is in the vars block, and nginx, the
    # peer, drops the body of an answer to HEAD itself (RFC 9110 §9.3.2).
    request_is_head = False

    __slots__ = (
        "_buffer_size",
        "_max_body_size",
        "_buf",
        "_chunks",
        "_remaining",
        "_state",
        "_eof",
        "_error",
    )

    def __init__(self, buffer_size: int = 4096, max_body_size: int | None = None):
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self._buffer_size = min(buffer_size, MAX_PACKET_SIZE)
        self._max_body_size = max_body_size
        self._buf = bytearray()  # the packet, until it is complete
        self._chunks: deque = deque()  # body bytes, as received: handed out without a copy
        self._remaining = 0  # body bytes still to hand out
        self._state = _HEAD
        self._eof = False
        self._error: ProtocolError | None = None

    @property
    def error(self) -> ProtocolError | None:
        """The error that ended this connection's parsing, or None."""
        return self._error

    @property
    def message_complete(self) -> bool:
        """True once the request's body has been read to its end."""
        return self._state == _END or self._state == _PAUSED

    @property
    def at_message_boundary(self) -> bool:
        """True when no part of a packet has been received."""
        return self._state == _HEAD and not self._buf

    def start_next_request(self) -> None:
        """Never called: a uwsgi connection carries one request (see the module docstring)."""
        raise RuntimeError("a uwsgi connection carries one request")

    # -- input -------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; b"" means the peer closed its sending side."""
        if not data:
            self._eof = True
            return
        if self._eof:
            return  # nothing can follow a close; a caller that says otherwise is ignored
        state = self._state
        if state == _BODY:
            self._chunks.append(bytes(data))
        elif state == _HEAD:
            self._buf += data
        # After the body: one request per connection, so the rest is never read.

    # -- events ------------------------------------------------------------------------------
    def next_event(self):
        """Return the next event, NEED_DATA or PAUSED; raise ProtocolError on bad input."""
        state = self._state
        if state == _BODY:
            return self._body_event()
        if state == _HEAD:
            return self._packet_event()
        if state == _END:
            self._state = _PAUSED
            return EndOfMessage()
        if state == _PAUSED:
            return PAUSED
        if state == _CLOSED:
            return ConnectionClosed()
        raise self._error  # type: ignore[misc]

    def _fail(self, message: str, status: int | None = None):
        self._state = _DEAD
        self._buf = bytearray()
        self._chunks.clear()
        self._error = ProtocolError("uwsgi: " + message, status)
        raise self._error

    def _packet_event(self):
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            if not self._eof:
                return NEED_DATA
            if not buf:
                self._state = _CLOSED  # closed before sending anything: not an error
                return ConnectionClosed()
            self._fail("peer closed the connection inside the packet header")
        modifier1, datasize, _modifier2 = _header.unpack_from(buf)
        if modifier1 != 0:
            self._fail(f"modifier1 {modifier1} is not supported (only 0, a WSGI request)")
        if datasize > self._buffer_size:
            self._fail(f"packet of {datasize} bytes exceeds buffer-size {self._buffer_size}")
        end = HEADER_SIZE + datasize
        if len(buf) < end:
            if self._eof:
                self._fail("peer closed the connection inside the vars block")
            return NEED_DATA
        request = self._decode_vars(bytes(buf[HEADER_SIZE:end]))
        if len(buf) > end:
            self._chunks.append(bytes(buf[end:]))
        self._buf = bytearray()
        self._remaining = request.content_length
        self._state = _BODY if request.content_length else _END
        return request

    def _decode_vars(self, block: bytes) -> UwsgiRequest:
        # Hot path (once per request behind nginx). A packet from nginx is well formed and
        # names each var once, so the records are read with no check inside the loop; the
        # block is checked as a whole after it (every record inside it, ending exactly at its
        # end, no name twice). Anything else is read again by `_read_vars_carefully`, which
        # merges repeats and names the first fault.
        text = block.decode("latin-1")  # 1:1, so byte offsets are str offsets
        env = self._read_vars(block, text)
        dropped: list = []
        if DROPPED_PREFIX in text:
            dropped = [n for n in env if n.startswith(DROPPED_PREFIX)]
            for name in dropped:
                del env[name]

        method = env.get("REQUEST_METHOD")
        if method is None:
            self._fail("no REQUEST_METHOD")
        if method not in _COMMON_METHODS and not _token.fullmatch(method):
            self._fail(f"REQUEST_METHOD {method[:40]!r} is not a token")
        length = 0
        raw_length = env.get("CONTENT_LENGTH")
        if raw_length is not None:
            if raw_length == "":
                del env["CONTENT_LENGTH"]
            elif _content_length.fullmatch(raw_length):
                length = int(raw_length)
                env["CONTENT_LENGTH"] = str(length)  # no leading zeros for the app
            else:
                self._fail(f"CONTENT_LENGTH {raw_length[:40]!r} is not a length")
        if self._max_body_size is not None and length > self._max_body_size:
            self._fail(f"body of {length} bytes exceeds the limit of {self._max_body_size}", 413)
        if env.get("CONTENT_TYPE") == "":
            del env["CONTENT_TYPE"]
        return UwsgiRequest(env, length, tuple(dropped))

    def _read_vars(self, block: bytes, text: str) -> dict:
        """The vars of a block (`text` is the block as latin-1); raises on a fault."""
        size = len(block)
        env: dict = {}
        pos = count = 0
        try:
            while pos < size:
                start = pos + 2
                name_end = start + (block[pos] | block[pos + 1] << 8)
                pos = name_end + 2 + (block[name_end] | block[name_end + 1] << 8)
                env[text[start:name_end]] = text[name_end + 2 : pos]
                count += 1
        except IndexError:  # a size field cut by the block's end
            pos = -1
        if pos != size or count != len(env) or not _KNOWN_NAMES.keys() >= env.keys():
            return self._read_vars_carefully(block, text)
        return env

    def _read_vars_carefully(self, block: bytes, text: str) -> dict:
        """The vars of a block the fast reading found unusual: every size checked as it is
        read, repeated names merged (`_merge_duplicate`), names checked; raises on a fault.
        Names that pass join `_KNOWN_NAMES` (bounded), so the fast reading accepts them."""
        env: dict = {}
        size = len(block)
        pos = 0
        while pos < size:
            if pos + 2 > size:
                self._fail("vars block ends inside a name size")
            name_len = block[pos] | (block[pos + 1] << 8)
            if name_len == 0:
                self._fail("empty var name")
            name_end = pos + 2 + name_len
            if name_end + 2 > size:
                self._fail("var name or value size runs past the vars block")
            value_end = name_end + 2 + (block[name_end] | (block[name_end + 1] << 8))
            if value_end > size:
                self._fail("var value runs past the vars block")
            name = text[pos + 2 : name_end]
            value = text[name_end + 2 : value_end]
            pos = value_end
            if name in env:
                self._merge_duplicate(env, name, value)
            else:
                env[name] = value
        if env and not _var_names.fullmatch("\n".join(env)):
            bad = next(n for n in env if not _var_name.fullmatch(n))
            self._fail(f"var name {bad!r} is not visible ASCII")
        for name in env:
            _KNOWN_NAMES.remember(name, True)
        return env

    def _merge_duplicate(self, env: dict, name: str, value: str) -> None:
        if name in FRAMING_VARS:
            self._fail(f"duplicated {name}")
        if name.startswith(DROPPED_PREFIX):
            return
        if name.startswith("HTTP_"):
            env[name] += ("; " if name == "HTTP_COOKIE" else ", ") + value
        elif env[name] != value:
            self._fail(f"two different values for {name}")

    def _body_event(self):
        chunks = self._chunks
        if not chunks:
            if self._eof:
                self._fail(f"peer closed the connection with {self._remaining} body bytes unsent")
            return NEED_DATA
        chunk = chunks.popleft()
        remaining = self._remaining
        if len(chunk) < remaining:
            self._remaining = remaining - len(chunk)
            return Data(chunk)
        # The body ends in this chunk; whatever follows it is never read (one request per
        # connection), so it is dropped with the rest of the queue.
        chunks.clear()
        self._remaining = 0
        self._state = _END
        return Data(chunk if len(chunk) == remaining else chunk[:remaining])


_heads = Memo()  # the heads of this protocol's answers


def frame_response(
    method: str, status: str, headers: list, known_length: int | None
) -> ResponseFrame:
    """The answer to a uwsgi request, serialised as nginx's uwsgi module reads it: an
    HTTP/1.x head (`HTTP/1.1 <status>`, the fields, a blank line; `headers` are PEP 3333
    latin-1 strs the gateway validated). The body rules are `framing.body_framing`'s, never
    chunked (nginx reads a uwsgi answer as HTTP/1.0): Content-Length when known, else
    delimited by the close that ends every uwsgi connection anyway."""
    key = (method == "HEAD", known_length, status, *headers)
    frame = _heads.get(key)
    if frame is not None:
        return frame
    fields, content_length = app_fields(headers)
    body_mode, content_length = body_framing(
        int(status[:3]), method == "HEAD", content_length, known_length, False
    )
    if content_length is not None:
        fields += f"Content-Length: {content_length}\r\n"
    head = ("HTTP/1.1 " + status + "\r\n" + fields + "\r\n").encode("latin-1")
    return _heads.remember(key, ResponseFrame(head, body_mode, content_length, False))


class UwsgiResponse(Response):
    """The answer to a uwsgi request; the connection always closes after it."""

    __slots__ = ()

    def frame(self, status: str, headers: list, known_length: int | None) -> ResponseFrame:
        return frame_response(self.request.method, status, headers, known_length)


class UWSGI:
    """The uwsgi protocol behind the worker's one protocol face (`framing.ProtocolAdapter`).

    `buffer_size` and `max_body_size` are `UwsgiParser`'s limits.
    """

    name = "uwsgi"
    rejection = "bad uwsgi packet"
    loud_rejections = True  # only nginx speaks to us: a broken packet is a proxy's bug
    continue_response = b""  # nginx never waits for a 100
    dropped_warning = "ignored uwsgi vars from the peer (they never select code or environment): %s"

    def __init__(self, buffer_size: int = 4096, max_body_size: int | None = None):
        self.buffer_size = buffer_size
        self.max_body_size = max_body_size

    def new_parser(self) -> UwsgiParser:
        return UwsgiParser(self.buffer_size, self.max_body_size)

    def response(self, request, parser, sink, keep_alive: bool) -> UwsgiResponse:
        return UwsgiResponse(request, parser, sink, False)

    error_answer = staticmethod(error_answer)  # nginx passes it on as an HTTP answer

    def timeout_answer(self, *, head_only: bool = False) -> None:
        return None  # nginx has its own uwsgi_read_timeout; a close is all it needs


def _packable(item, what: str) -> bytes:
    data = item.encode("latin-1") if isinstance(item, str) else bytes(item)
    if len(data) > MAX_PACKET_SIZE:
        raise ValueError(f"uwsgi {what} of {len(data)} bytes does not fit a 16-bit size")
    return data


def encode_vars(vars: Mapping | Iterable, *, modifier1: int = 0, modifier2: int = 0) -> bytes:
    """Build a whole packet (header + vars block): the inverse of `UwsgiParser`.

    `vars` is a mapping, or pairs when a name must repeat. A str is encoded as latin-1, the
    inverse of the parser's decoding; pass bytes to send anything else (UTF-8 paths).
    Raises ValueError when a name, a value or the block does not fit 16 bits.
    """
    items = vars.items() if isinstance(vars, Mapping) else vars
    block = bytearray()
    pack = _u16.pack
    for name, value in items:
        name_b = _packable(name, "var name")
        value_b = _packable(value, "var value")
        block += pack(len(name_b))
        block += name_b
        block += pack(len(value_b))
        block += value_b
    if len(block) > MAX_PACKET_SIZE:
        raise ValueError(f"uwsgi vars block of {len(block)} bytes does not fit a 16-bit size")
    return _header.pack(modifier1, len(block), modifier2) + bytes(block)
