"""PEP 3333 for forklift: the environ, `start_response`, `write()`, `wsgi.input`, the file
wrapper, and running one app call to its end (result iterated and always closed).

`build_environ` makes the whole environ of one request in one call: HTTP fields or the CGI
variables a proxy sent, the mount, and X-Forwarded trust (`proxy.py`). Nothing here knows
which protocol or socket delivered the request, and no HTTP grammar is written here (it is
`abnf`'s); the answer goes to a response the worker provides (`send_head`, `send_body`,
`sendfile`, `finish`, `head_sent`: a `framing.Response`).
"""

from __future__ import annotations

import io
import os
import stat
import sys
from urllib.parse import unquote_to_bytes

from .abnf import field_value_forbidden_text, split_target, status_text, token_text
from .errors import PeerGone
from .memo import Memo
from .proxy import apply_forwarded, assign_request_id, next_request_id

# What an app may send: header names are tokens; values hold no CTL but HTAB, latin-1 only.
_header_name_ok = token_text.fullmatch
_header_value_bad = field_value_forbidden_text.search
_status_ok = status_text.fullmatch


class AppError(Exception):
    """The application broke PEP 3333 (bad status or header, write before start_response)."""


# --- environ ---------------------------------------------------------------------------------
def _environ_key(name: bytes) -> str | None:
    """CGI name for a header field, or None for fields that must not reach the app.

    A field whose name holds "_" is dropped: CGI turns "-" into "_", so `X-Forwarded_For`
    would otherwise arrive as HTTP_X_FORWARDED_FOR and pose as `X-Forwarded-For`.
    """
    if b"_" in name:
        return None
    key = name.decode("ascii").upper().replace("-", "_")
    if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
        return key
    return "HTTP_" + key


_KEY_CACHE = Memo(512)  # field name -> CGI key (None: dropped), for names seen before


def base_environ(
    *,
    server_name: str,
    server_port: str,
    url_scheme: str = "http",
    multithread: bool,
    multiprocess: bool,
    errors=None,
    script_name: str = "",
) -> dict:
    """The per-listener part of every environ; copied for each request (dict.copy is cheap)."""
    return {
        "SCRIPT_NAME": script_name,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.errors": errors if errors is not None else sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }


def decode_path(path: bytes) -> str:
    """PATH_INFO: percent-decoded bytes carried as a latin-1 str (PEP 3333 "bytes as str")."""
    if b"%" in path:
        path = unquote_to_bytes(path)
    return path.decode("latin-1")


def mount_split(path: str, script_name: str) -> tuple | None:
    """(SCRIPT_NAME, PATH_INFO) for an app mounted at `script_name`, None when outside it."""
    if not script_name:
        return "", path
    if path == script_name or path.startswith(script_name + "/"):
        return script_name, path[len(script_name) :]
    return None


def field_entries(headers) -> dict:
    """The environ entries of a request's header fields: HTTP_* (CONTENT_TYPE and
    CONTENT_LENGTH bare), latin-1 strs, repeated fields joined, dangerous names dropped."""
    entries: dict = {}
    cache = _KEY_CACHE
    for name, value in headers:
        key = cache.get(name, 0)
        if key == 0:
            key = cache.remember(name, _environ_key(name))
        if key is None:
            continue
        value = value.decode("latin-1")
        if key in entries:
            # RFC 9110 §5.3: a repeated field is one list joined by commas; cookies are the
            # exception (RFC 6265 §5.4 joins cookie-pairs with "; ").
            entries[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            entries[key] = value
    return entries


# A client sends the same fields on every request (a browser's, a proxy's): their entries
# are made once per distinct list (the parser hands out the same pairs for the same bytes).
_FIELD_ENTRIES = Memo(256)


def http_environ(base: dict, head, path_info: str, query: bytes, authority, peer) -> dict:
    """The environ of one HTTP/1.x request. `peer` is (addr, port) or None (unix socket)."""
    environ = base.copy()
    environ["REQUEST_METHOD"] = head.method
    environ["PATH_INFO"] = path_info
    environ["QUERY_STRING"] = query.decode("latin-1")
    uri = head.target.decode("latin-1")
    environ["REQUEST_URI"] = uri
    environ["RAW_URI"] = uri
    environ["SERVER_PROTOCOL"] = "HTTP/1.1" if head.http_version == "1.1" else "HTTP/1.0"
    if peer is not None:
        environ["REMOTE_ADDR"] = peer[0]
        environ["REMOTE_PORT"] = str(peer[1])
    else:
        environ["REMOTE_ADDR"] = ""
    fields = tuple(head.headers)  # hashed from the pairs' own cached hashes
    entries = _FIELD_ENTRIES.get(fields)
    if entries is None:
        entries = _FIELD_ENTRIES.remember(fields, field_entries(fields))
    environ.update(entries)
    if head.content_length is not None:
        environ["CONTENT_LENGTH"] = str(head.content_length)  # "5, 5" arrives as "5"
    if head.chunked:
        environ["wsgi.input_terminated"] = True  # read() to EOF is safe; Werkzeug relies on it
    if authority is not None:
        environ["HTTP_HOST"] = authority.decode("latin-1")  # RFC 9112 §3.2.2
    host = environ.get("HTTP_HOST")
    if host:
        if host[:1] == "[":
            environ["SERVER_NAME"] = host[: host.find("]") + 1] or host
        else:
            environ["SERVER_NAME"] = host.partition(":")[0]
    return environ


def build_environ(request, site, peer, body) -> dict | None:
    """The whole environ of one request, or None when its path is outside the app's mount.

    `request` is a protocol's request event: CGI `vars` a proxy sent (uwsgi), or an HTTP
    head. `site` is the listener's: `.environ` (its `base_environ`), `.script_name` (the
    mount) and `.forwarded_allow_ips`. `peer` is (addr, port), None on a unix socket.
    `body` becomes `wsgi.input`.
    """
    script_name = site.script_name
    if request.vars is not None:
        environ = uwsgi_environ(site.environ, request.vars, peer)
        split = mount_split(environ["PATH_INFO"], script_name)
        if split is None:
            return None
        environ["PATH_INFO"] = split[1]
    else:
        path, query, authority = split_target(request.target)
        path = path.decode("latin-1") if b"%" not in path else decode_path(path)
        if script_name:
            split = mount_split(path, script_name)
            if split is None:
                return None
        else:
            split = ("", path)
        environ = http_environ(site.environ, request, split[1], query, authority, peer)
        # A proxy's word about the client, believed only from a trusted proxy. (uwsgi vars
        # are a proxy's word already: the listener admits trusted peers only.)
        if "HTTP_X_FORWARDED_FOR" in environ or "HTTP_X_FORWARDED_PROTO" in environ:
            apply_forwarded(environ, peer, site.forwarded_allow_ips)
    if split[0]:
        environ["SCRIPT_NAME"] = split[0]
    environ["wsgi.input"] = body
    if "HTTP_X_REQUEST_ID" in environ:
        assign_request_id(environ, peer, site.forwarded_allow_ips, request.vars is not None)
    else:  # the common case, without a call: a new id
        environ["HTTP_X_REQUEST_ID"] = environ["forklift.request_id"] = next_request_id[0]()
    return environ


def body_length_known(environ: dict, size: int) -> None:
    """A chunked body the server read whole: give the app its length, as nginx does.

    The chunked coding was the transport's (hop-by-hop); an app that still sees
    `Transfer-Encoding: chunked` may try to de-chunk bytes that are not chunked any more
    (dulwich's git server does)."""
    environ["CONTENT_LENGTH"] = str(size)
    environ.pop("HTTP_TRANSFER_ENCODING", None)


# --- wsgi.input ------------------------------------------------------------------------------
class BodyReader(io.RawIOBase):
    """`wsgi.input` for a body that is still arriving: reads never block past the body.

    `pull()` returns the next piece of the body, or b"" at its end; it does the socket
    reads (with the worker's timeout) and raises PeerGone when the client disappears.
    `on_first_read` sends the interim "100 Continue" when the client asked to wait for it.
    """

    def __init__(self, pull, on_first_read=None):
        super().__init__()
        self._pull = pull
        self._on_first_read = on_first_read
        # Unread bytes are buf[pos:]. Reads slice at an offset, and pieces that must be put
        # together are joined once: `buf += piece` and `buf = buf[n:]` made read() of a big
        # body, and readline() over many short lines, quadratic (50 MB: seconds of CPU).
        self._buf = b""
        self._pos = 0
        self._done = False

    @property
    def finished(self) -> bool:
        return self._done and self._pos >= len(self._buf)

    def readable(self) -> bool:
        return True

    def _more(self) -> bytes:
        """The next piece of the body from the socket, or b"" at its end."""
        if self._done:
            return b""
        if self._on_first_read is not None:
            hook, self._on_first_read = self._on_first_read, None
            hook()
        data = self._pull()
        if not data:
            self._done = True
        return data

    def _rest(self) -> list:
        buf, pos = self._buf, self._pos
        self._buf, self._pos = b"", 0
        return [buf[pos:]] if pos < len(buf) else []

    def read(self, size: int | None = -1) -> bytes:
        buf, pos = self._buf, self._pos
        if size is not None and 0 <= size <= len(buf) - pos:
            self._pos = pos + size
            return buf[pos : pos + size]
        parts = self._rest()
        have = sum(len(p) for p in parts)
        unlimited = size is None or size < 0
        while unlimited or have < size:
            data = self._more()
            if not data:
                break
            parts.append(data)
            have += len(data)
        data = b"".join(parts)
        if unlimited or have <= size:
            return data
        self._buf, self._pos = data, size
        return data[:size]

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        if size is None:
            size = -1
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n", pos)
        if end >= 0 and (size < 0 or end - pos < size):
            self._pos = end + 1
            return buf[pos : end + 1]
        if 0 <= size <= len(buf) - pos:
            self._pos = pos + size
            return buf[pos : pos + size]
        parts = self._rest()
        have = sum(len(p) for p in parts)
        while True:
            data = self._more()
            if not data:
                return b"".join(parts)
            parts.append(data)
            have += len(data)
            if b"\n" in data or 0 <= size <= have:
                break
        self._buf, self._pos = b"".join(parts), 0
        return self.readline(size)  # the line's end, or `size` bytes, is in the buffer now

    def readlines(self, hint: int = -1) -> list:
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def drain(self) -> None:
        """Read and discard the rest of the body."""
        self._buf, self._pos = b"", 0
        while self._more():
            pass


# --- file wrapper ----------------------------------------------------------------------------
class FileWrapper:
    """`wsgi.file_wrapper`: iterates a file in blocks; the worker may `sendfile` it instead."""

    def __init__(self, filelike, blksize: int = 65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read, size = self.filelike.read, self.blksize
        while True:
            data = read(size)
            if not data:
                return
            yield data

    def sendfile_span(self) -> tuple | None:
        """(fd, offset, count) when the file is a regular file the kernel can send."""
        try:
            fd = self.filelike.fileno()
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            offset = self.filelike.tell()
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None
        return fd, offset, max(0, st.st_size - offset)


# --- running the app -------------------------------------------------------------------------
class _Response:
    __slots__ = ("status", "headers", "invalid")

    def __init__(self):
        self.status = None
        self.headers = None
        self.invalid = None


# Status and header lists already found valid. An app sends the same few on almost every
# answer (a hello's constant list; Flask's type and length), so the check is one lookup of
# their values; bounded, and emptied when full, so per-request values (cookies, ETags)
# cannot grow it.
_VALID_HEADS = Memo(512)


def _check_headers(status, headers) -> str | None:
    """Why the app's status or headers cannot be sent, or None when they are fine."""
    key = None
    if type(headers) is list:
        try:
            key = (status, *headers)
            if key in _VALID_HEADS:
                return None
        except TypeError:  # an unhashable item: the check below names it
            key = None
    problem = _check_headers_one_by_one(status, headers)
    if problem is None and key is not None:
        _VALID_HEADS.remember(key, True)
    return problem


def _check_headers_one_by_one(status, headers) -> str | None:
    if type(status) is not str or not _status_ok(status):
        return f"bad status {status!r}"
    if type(headers) is not list:
        return f"headers must be a list, got {type(headers).__name__}"
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            return f"header {item!r} is not a (name, value) tuple"
        name, value = item
        if type(name) is not str or not _header_name_ok(name):
            return f"bad header name {name!r}"
        if type(value) is not str or _header_value_bad(value):
            return f"bad value for header {name}: {value!r}"
    return None


HOLD_DEFAULT = 65536  # bytes of answer held per connection before the app is advanced again


def run_app(app, environ: dict, sink, hold: int = HOLD_DEFAULT):
    """Call the app for one request and hand its answer to `sink` (a `framing.Response`).

    Returns None when the answer is all handed over (the result closed), or an `AppBody`
    the caller advances when the socket takes more (`AppBody.advance`) and closes exactly
    once (`AppBody.close`): an iterator still running, or a file still being sent.
    A list body is handed over whole: its items are the app's own buffers, queued as they
    are. Any other iterable is advanced only while the sink holds at most `hold` bytes.

    Errors before the head is sent become a 500 (traceback to the error log); after it, the
    exception propagates so the worker closes the connection. PeerGone propagates too. On
    any exception the result's close() has been called.
    """
    response = _Response()

    def write(data):
        if response.status is None:
            raise AppError("write() called before start_response()")
        if type(data) is not bytes:
            raise AppError(f"write() needs bytes, got {type(data).__name__}")
        if not sink.head_sent:
            sink.send_head(response.status, response.headers, None)
        if data:
            sink.send_body(data)
            sink.wait_room(hold)  # PEP 3333: sent or held before write() returns; bounded

    def start_response(status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if sink.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif response.status is not None:
            raise AppError("start_response() called twice without exc_info")
        problem = _check_headers(status, headers)
        if problem is not None:
            response.invalid = problem
            raise AppError(problem)
        # A valid call after a rejected one is the app recovering (PEP 3333's error handler
        # calls start_response again with exc_info): the rejected response is replaced.
        response.invalid = None
        response.status = status
        response.headers = headers
        return write

    result = app(environ, start_response)
    body = None
    try:
        if response.invalid:
            raise AppError(response.invalid)
        kind = type(result)
        if kind is list and len(result) == 1 and not sink.head_sent:
            # The common case: the whole body in one piece, its length known (a list has
            # no close() to call).
            data = result[0]
            if type(data) is not bytes:
                raise AppError(f"the app yielded {type(data).__name__}, not bytes")
            _require_status(response)
            sink.send_head(response.status, response.headers, len(data))
            if data:
                sink.send_body(data)
            sink.finish()
            return None
        body = AppBody(result, None, response, sink)
        if kind is FileWrapper and not sink.head_sent and _try_sendfile(result, response, sink):
            sink.finish()
            return body  # closed once the file is out
        body.iterator = iter(result)
        # A list's items are in memory already: all of them are handed over at once.
        body.advance(-1 if kind is list or kind is tuple else hold)
    except BaseException:
        if body is None:
            body = AppBody(result, None, response, sink)
        body.close()
        raise
    if body.iterator is None:
        return None  # ended (and closed) already
    return body


class AppBody:
    """An app's iterable being sent: advanced only while the sink has room, closed once.

    Which thread advances and closes it is the worker's rule (see README, serving model):
    the worker's own thread in inline mode; a request thread with --threads, and only when
    the socket is writable.
    """

    __slots__ = ("result", "iterator", "state", "response", "closed")

    def __init__(self, result, iterator, state: _Response, response):
        self.result = result
        self.iterator = iterator  # None once the iterable is exhausted
        self.state = state
        self.response = response
        self.closed = False

    def advance(self, hold: int, budget: int = 64) -> None:
        """Hand chunks to the response while it holds at most `hold` bytes (-1: all of
        them), at most `budget` chunks per call; at the end, finish the answer and close.
        An exception from the app propagates, after close()."""
        response = self.response
        iterator = self.iterator
        state = self.state
        try:
            while hold < 0 or (budget > 0 and response.held <= hold):
                budget -= 1
                try:
                    data = next(iterator)
                except StopIteration:
                    if not response.head_sent:
                        _require_status(state)
                        response.send_head(state.status, state.headers, 0)
                    response.finish()
                    self.iterator = None
                    self.close()
                    return
                if type(data) is not bytes:
                    raise AppError(f"the app yielded {type(data).__name__}, not bytes")
                if data:
                    if not response.head_sent:
                        _require_status(state)
                        response.send_head(state.status, state.headers, None)
                    response.send_body(data)
        except BaseException:
            self.iterator = None
            self.close()
            raise

    def close(self) -> None:
        """Call the result's close() (PEP 3333), exactly once whatever happens."""
        if self.closed:
            return
        self.closed = True
        close = getattr(self.result, "close", None)
        if close is not None:
            close()


def _require_status(response: _Response) -> None:
    if response.invalid:
        raise AppError(response.invalid)
    if response.status is None:
        raise AppError("the app returned a body without calling start_response()")


def _try_sendfile(result: FileWrapper, response: _Response, answer) -> bool:
    _require_status(response)
    if not getattr(answer, "can_sendfile", False):
        return False
    span = result.sendfile_span()
    if span is None:
        return False
    fd, offset, count = span
    for name, value in response.headers:
        if name.lower() == "content-length" and (value.isascii() and value.isdigit()):
            count = min(count, int(value))
    answer.send_head(response.status, response.headers, count)
    answer.sendfile(fd, offset, count)
    return True


__all__ = [
    "AppBody",
    "AppError",
    "BodyReader",
    "FileWrapper",
    "PeerGone",
    "base_environ",
    "body_length_known",
    "build_environ",
    "check_app",
    "decode_path",
    "http_environ",
    "mount_split",
    "run_app",
    "uwsgi_environ",
]


def uwsgi_environ(base: dict, vars: dict, peer) -> dict:
    """The environ of one uwsgi request: nginx's vars (uwsgi_params) over the listener's base.

    REMOTE_ADDR, SERVER_NAME and REQUEST_URI are kept as nginx sent them; PATH_INFO is
    derived from REQUEST_URI only when nginx did not send it. The caller applies the mount.
    """
    environ = base.copy()
    environ.update(vars)
    # nginx has de-chunked the body and sends CONTENT_LENGTH, but also passes the client's
    # hop-by-hop Transfer-Encoding along; an app that sees it would wait for a chunked end.
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    if "PATH_INFO" not in vars:
        path, query, _ = split_target(vars.get("REQUEST_URI", "/").encode("latin-1"))
        environ["PATH_INFO"] = decode_path(path)
        if "QUERY_STRING" not in vars:
            environ["QUERY_STRING"] = query.decode("latin-1")
    environ.setdefault("QUERY_STRING", "")
    environ.setdefault("SERVER_PROTOCOL", "HTTP/1.0")
    if "REMOTE_ADDR" not in vars:
        # The peer itself, or the client a PROXY header named: with its port, as over HTTP.
        environ["REMOTE_ADDR"] = peer[0] if peer else ""
        if peer:
            environ["REMOTE_PORT"] = str(peer[1])
    if environ.get("HTTPS", "").lower() in ("on", "1") or vars.get("REQUEST_SCHEME") == "https":
        environ["wsgi.url_scheme"] = "https"
    if not environ.get("SERVER_NAME"):
        environ["SERVER_NAME"] = base["SERVER_NAME"]
    if not environ.get("SERVER_PORT"):
        environ["SERVER_PORT"] = base["SERVER_PORT"]
    return environ


def check_app(app, path: str, host: str = "localhost") -> str | None:
    """Call the app in-process with `GET path` (a health check before traffic).

    Returns None for a 2xx answer, otherwise one line saying what went wrong.
    """
    raw_path, _, query = path.partition("?")
    environ = base_environ(
        server_name=host.partition(":")[0], server_port="80", multithread=False, multiprocess=True
    )
    environ.update(
        {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": decode_path(raw_path.encode("latin-1")),
            "QUERY_STRING": query,
            "REQUEST_URI": path,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": host,
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.input": io.BytesIO(),
        }
    )
    seen = []

    def start_response(status, headers, exc_info=None):
        seen.append(status)
        return lambda data: None

    try:
        result = app(environ, start_response)
        try:
            for _ in result:
                pass
        finally:
            if hasattr(result, "close"):
                result.close()
    except Exception as exc:
        return f"health check GET {path} raised {type(exc).__name__}: {exc}"
    if not seen:
        return f"health check GET {path}: the app never called start_response"
    status = seen[-1]
    if status[:1] != "2":
        return f"health check GET {path} answered {status}"
    return None
