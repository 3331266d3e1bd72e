"""forklift.wsgi: the environ an app sees, `wsgi.input`, and one app call run to its end.

Environs are built the way the worker builds them: request bytes are fed to the real
`http1.RequestParser`, and its `RequestHead` goes through `split_target`, `decode_path` and
`http_environ`. Responses go to a recording sink instead of a socket.

Regression tests for bugs found in `wsgi.py` (since fixed) are grouped at the end.
"""

from __future__ import annotations

import io
import os
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forklift.abnf import split_target
from forklift.errors import PeerGone
from forklift.http1 import RequestHead, RequestParser
from forklift.wsgi import (
    AppError,
    BodyReader,
    FileWrapper,
    base_environ,
    check_app,
    decode_path,
    http_environ,
    mount_split,
    run_app,
    uwsgi_environ,
)

# --- helpers ---------------------------------------------------------------------------------


def parse_head(raw: bytes) -> RequestHead:
    """The RequestHead the real parser makes of `raw` (a head, CRLF CRLF, maybe a body)."""
    parser = RequestParser()
    parser.receive_data(raw)
    event = parser.next_event()
    assert isinstance(event, RequestHead), event
    return event


def request(target: str = "/", *fields: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def base(**overrides) -> dict:
    settings_ = {
        "server_name": "listener.local",
        "server_port": "8000",
        "multithread": False,
        "multiprocess": True,
        "errors": io.StringIO(),
    }
    settings_.update(overrides)
    return base_environ(**settings_)


def environ_for(raw: bytes, peer=("192.0.2.7", 54321), **base_overrides) -> dict:
    """The environ of `raw` as the worker builds it (no mount)."""
    head = parse_head(raw)
    path, query, authority = split_target(head.target)
    return http_environ(base(**base_overrides), head, decode_path(path), query, authority, peer)


# --- environ: PEP 3333 keys and types ----------------------------------------------------------

# PEP 3333 "environ Variables": the CGI keys a server must provide (CONTENT_TYPE and
# CONTENT_LENGTH may be absent when the request has none) and the wsgi.* keys with their
# types. wsgi.input is added by the worker after http_environ.
REQUIRED_CGI = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
)


def test_every_required_key_is_present_with_the_type_pep3333_gives_it():
    env = environ_for(request("/a/b?x=1", "Host: example.com", "Content-Length: 0"))
    for key in REQUIRED_CGI:
        assert type(env[key]) is str, key
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] in ("http", "https")
    assert hasattr(env["wsgi.errors"], "write")
    for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once"):
        assert type(env[key]) is bool, key
    # PEP 3333: every key is a native string, and so is every CGI value.
    for key, value in env.items():
        assert type(key) is str
        if not key.startswith("wsgi."):
            assert type(value) is str, (key, value)


def test_request_line_values():
    env = environ_for(request("/p?q=1", "Host: example.com", method="PUT", version="1.0"))
    assert env["REQUEST_METHOD"] == "PUT"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert env["REQUEST_URI"] == "/p?q=1"
    assert env["SCRIPT_NAME"] == ""
    assert env["REMOTE_ADDR"] == "192.0.2.7"
    assert env["REMOTE_PORT"] == "54321"
    assert environ_for(request("/", "Host: x"))["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_unix_socket_peer_has_an_empty_remote_addr():
    env = environ_for(request("/", "Host: x"), peer=None)
    assert env["REMOTE_ADDR"] == ""
    assert "REMOTE_PORT" not in env


def test_base_environ_is_copied_not_shared():
    b = base()
    head = parse_head(request("/", "Host: x"))
    env = http_environ(b, head, "/", b"", None, None)
    env["SCRIPT_NAME"] = "/changed"
    assert b["SCRIPT_NAME"] == ""
    assert "REQUEST_METHOD" not in b


def test_base_environ_offers_the_file_wrapper_and_listener_settings():
    b = base_environ(
        server_name="h", server_port="81", url_scheme="https", multithread=True, multiprocess=False
    )
    assert b["wsgi.file_wrapper"] is FileWrapper
    assert b["wsgi.errors"] is sys.stderr
    assert (b["wsgi.url_scheme"], b["wsgi.multithread"], b["wsgi.multiprocess"]) == (
        "https",
        True,
        False,
    )


# --- environ: path and query -------------------------------------------------------------------


def test_path_info_is_percent_decoded_and_carried_as_latin1():
    # PEP 3333: bytes as str. The UTF-8 bytes of "é" arrive as two latin-1 characters.
    env = environ_for(request("/caf%C3%A9", "Host: x"))
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9"
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café"


def test_raw_obs_text_in_the_target_reaches_path_info_as_latin1():
    env = environ_for(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9"


def test_query_string_is_not_decoded():
    env = environ_for(request("/s?q=a%20b&r=%2F+c", "Host: x"))
    assert env["QUERY_STRING"] == "q=a%20b&r=%2F+c"
    assert env["PATH_INFO"] == "/s"


def test_encoded_slash_is_decoded_in_path_info_but_kept_in_request_uri():
    env = environ_for(request("/a%2Fb", "Host: x"))
    assert env["PATH_INFO"] == "/a/b"
    assert env["REQUEST_URI"] == "/a%2Fb"


# --- environ: headers -------------------------------------------------------------------------


field_names = st.sampled_from(
    ["Cookie", "Accept", "X-Forwarded-For", "X_Forwarded_For", "Content-Type", "X-A"]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(field_names, st.sampled_from(["1", "a=b", "x, y", "\xe9"])), max_size=6))
def test_fields_seen_before_make_the_environ_they_made_the_first_time(fields):
    # The environ entries of a field list are remembered (wsgi._FIELD_ENTRIES): the second
    # request with the same fields must get what the first got, and what an app did to the
    # first environ must not reach the second.
    raw = request("/", "Host: h", *(f"{name}: {value}" for name, value in fields))
    first = environ_for(raw)
    del first["wsgi.errors"]  # a new stream each time (base())
    fresh = dict(first)
    first["HTTP_HOST"] = "changed by the app"
    first.pop("HTTP_COOKIE", None)
    again = environ_for(raw)
    del again["wsgi.errors"]
    assert again == fresh


def test_header_becomes_http_key():
    env = environ_for(request("/", "Host: x", "X-Request-Id: abc", "accept: text/html"))
    assert env["HTTP_X_REQUEST_ID"] == "abc"
    assert env["HTTP_ACCEPT"] == "text/html"


def test_header_with_underscore_is_dropped_so_it_cannot_pose_as_a_dash_header():
    env = environ_for(
        request("/", "Host: x", "X-Forwarded_For: 6.6.6.6", "X-Forwarded-For: 10.0.0.1")
    )
    assert env["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"
    env = environ_for(request("/", "Host: x", "X_Auth_User: admin"))
    assert "HTTP_X_AUTH_USER" not in env
    assert not any("admin" in str(v) for v in env.values())


def test_repeated_header_joined_with_comma():
    env = environ_for(request("/", "Host: x", "Accept: a/b", "X-A: 1", "Accept: c/d"))
    assert env["HTTP_ACCEPT"] == "a/b, c/d"


def test_repeated_cookie_joined_with_semicolon():
    env = environ_for(request("/", "Host: x", "Cookie: a=1", "Cookie: b=2; c=3"))
    assert env["HTTP_COOKIE"] == "a=1; b=2; c=3"


def test_content_length_and_type_have_no_http_prefix():
    env = environ_for(
        request("/", "Host: x", "Content-Type: text/plain", "Content-Length: 5", method="POST")
    )
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


def test_content_length_list_of_equal_values_arrives_as_one_number():
    env = environ_for(request("/", "Host: x", "Content-Length: 5", "Content-Length: 5"))
    assert env["CONTENT_LENGTH"] == "5"


def test_no_content_length_without_a_body():
    env = environ_for(request("/", "Host: x"))
    assert "CONTENT_LENGTH" not in env
    assert "wsgi.input_terminated" not in env


def test_header_value_bytes_reach_the_app_as_latin1():
    env = environ_for(b"GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9\r\n\r\n")
    assert env["HTTP_X_NAME"] == "caf\u00c3\u00a9"


def test_chunked_request_sets_input_terminated_and_no_content_length():
    raw = request("/", "Host: x", "Transfer-Encoding: chunked", method="POST")
    env = environ_for(raw + b"0\r\n\r\n")
    assert env["wsgi.input_terminated"] is True
    assert "CONTENT_LENGTH" not in env


# --- environ: host and server name ------------------------------------------------------------


def test_server_name_comes_from_host_without_its_port():
    env = environ_for(request("/", "Host: example.org:8080"))
    assert env["SERVER_NAME"] == "example.org"
    assert env["HTTP_HOST"] == "example.org:8080"
    assert env["SERVER_PORT"] == "8000"  # the listener's port, as CGI defines it


def test_server_name_keeps_an_ipv6_literal_whole():
    env = environ_for(request("/", "Host: [2001:db8::1]:8080"))
    assert env["SERVER_NAME"] == "[2001:db8::1]"
    env = environ_for(request("/", "Host: [::1]"))
    assert env["SERVER_NAME"] == "[::1]"


def test_server_name_from_the_listener_without_host():
    env = environ_for(request("/", version="1.0"))
    assert env["SERVER_NAME"] == "listener.local"
    assert "HTTP_HOST" not in env


def test_absolute_form_target_sets_host_over_the_host_header():
    # RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host.
    env = environ_for(request("http://good.example:81/p?q=1", "Host: other.example"))
    assert env["HTTP_HOST"] == "good.example:81"
    assert env["SERVER_NAME"] == "good.example"
    assert env["PATH_INFO"] == "/p"
    assert env["QUERY_STRING"] == "q=1"


# --- split_target, decode_path, mount_split ---------------------------------------------------


@pytest.mark.parametrize(
    "target, expected",
    [
        (b"/", (b"/", b"", None)),
        (b"/a/b?x=1&y", (b"/a/b", b"x=1&y", None)),
        (b"/a?", (b"/a", b"", None)),
        (b"/a?x=1?y=2", (b"/a", b"x=1?y=2", None)),
        (b"/a?x#frag", (b"/a", b"x", None)),
        (b"/a#frag", (b"/a", b"", None)),
        (b"*", (b"*", b"", None)),
        (b"http://h.example/p?q", (b"/p", b"q", b"h.example")),
        (b"HTTPS://h.example:8443/", (b"/", b"", b"h.example:8443")),
        (b"http://h.example", (b"/", b"", b"h.example")),
        (b"http://user:pw@h.example/p", (b"/p", b"", b"h.example")),
        (b"http://[::1]:8080/p", (b"/p", b"", b"[::1]:8080")),
    ],
)
def test_split_target(target, expected):
    assert split_target(target) == expected


def test_split_target_other_schemes_are_not_absolute_form():
    path, query, authority = split_target(b"ftp://h.example/p")
    assert authority is None
    assert path == b"ftp://h.example/p"


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"/plain", "/plain"),
        (b"/a%20b", "/a b"),
        (b"/%41%42", "/AB"),
        (b"/%e2%82%ac", "/\u00e2\u0082\u00ac"),  # UTF-8 of the euro sign, as latin-1
        (b"/%zz%4", "/%zz%4"),  # broken escapes stay as written
        (b"/%00", "/\x00"),
        (b"/%ff", "/\u00ff"),
    ],
)
def test_decode_path(raw, expected):
    assert decode_path(raw) == expected


@pytest.mark.parametrize(
    "path, script_name, expected",
    [
        ("/x", "", ("", "/x")),
        ("/app", "/app", ("/app", "")),
        ("/app/", "/app", ("/app", "/")),
        ("/app/x/y", "/app", ("/app", "/x/y")),
        ("/application", "/app", None),
        ("/ap", "/app", None),
        ("/", "/app", None),
        ("/other/app", "/app", None),
    ],
)
def test_mount_split(path, script_name, expected):
    assert mount_split(path, script_name) == expected


# --- uwsgi_environ ---------------------------------------------------------------------------

NGINX_VARS = {
    "REQUEST_METHOD": "POST",
    "REQUEST_URI": "/p%20q?x=1",
    "PATH_INFO": "/p q",
    "QUERY_STRING": "x=1",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "SERVER_NAME": "site.example",
    "SERVER_PORT": "443",
    "REMOTE_ADDR": "203.0.113.9",
    "CONTENT_LENGTH": "4",
    "HTTP_HOST": "site.example",
}


def test_uwsgi_environ_keeps_what_nginx_sent():
    env = uwsgi_environ(base(), dict(NGINX_VARS), ("127.0.0.1", 40000))
    for key, value in NGINX_VARS.items():
        assert env[key] == value
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == (1, 0)


def test_uwsgi_environ_drops_transfer_encoding_nginx_already_dechunked():
    env = uwsgi_environ(base(), {**NGINX_VARS, "HTTP_TRANSFER_ENCODING": "chunked"}, None)
    assert "HTTP_TRANSFER_ENCODING" not in env
    assert env["CONTENT_LENGTH"] == "4"


@pytest.mark.parametrize("https", ["on", "ON", "1"])
def test_uwsgi_environ_https_on_means_https_scheme(https):
    env = uwsgi_environ(base(), {**NGINX_VARS, "HTTPS": https}, None)
    assert env["wsgi.url_scheme"] == "https"


def test_uwsgi_environ_request_scheme_https_means_https():
    env = uwsgi_environ(base(), {**NGINX_VARS, "REQUEST_SCHEME": "https"}, None)
    assert env["wsgi.url_scheme"] == "https"
    env = uwsgi_environ(base(), {**NGINX_VARS, "HTTPS": "off"}, None)
    assert env["wsgi.url_scheme"] == "http"


def test_uwsgi_environ_derives_path_info_and_query_from_request_uri_when_missing():
    vars_ = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/caf%C3%A9/x?a=%20b"}
    env = uwsgi_environ(base(), vars_, ("10.0.0.1", 1))
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9/x"
    assert env["QUERY_STRING"] == "a=%20b"
    # The rest falls back to the listener and the peer.
    assert env["SERVER_NAME"] == "listener.local"
    assert env["SERVER_PORT"] == "8000"
    assert env["REMOTE_ADDR"] == "10.0.0.1"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"


def test_uwsgi_environ_query_string_sent_by_nginx_wins_over_request_uri():
    vars_ = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/x?a=1", "QUERY_STRING": "b=2"}
    env = uwsgi_environ(base(), vars_, None)
    assert env["PATH_INFO"] == "/x"
    assert env["QUERY_STRING"] == "b=2"


def test_uwsgi_environ_minimal_vars_still_have_every_required_key():
    env = uwsgi_environ(base(), {"REQUEST_METHOD": "GET"}, None)
    for key in REQUIRED_CGI:
        assert type(env[key]) is str, key
    assert env["PATH_INFO"] == "/"
    assert env["QUERY_STRING"] == ""
    assert env["REMOTE_ADDR"] == ""


def test_uwsgi_environ_empty_server_name_falls_back_to_the_listener():
    env = uwsgi_environ(base(), {**NGINX_VARS, "SERVER_NAME": "", "SERVER_PORT": ""}, None)
    assert env["SERVER_NAME"] == "listener.local"
    assert env["SERVER_PORT"] == "8000"


# --- BodyReader --------------------------------------------------------------------------------


class Puller:
    """`pull` for BodyReader: hands out `pieces`, then b"" forever; counts calls after the end."""

    def __init__(self, pieces, log=None):
        self.pieces = list(pieces)
        self.calls = 0
        self.calls_after_end = 0
        self.log = log

    def __call__(self) -> bytes:
        self.calls += 1
        if self.log is not None:
            self.log.append("pull")
        if not self.pieces:
            self.calls_after_end += 1
            return b""
        return self.pieces.pop(0)


def split_into(data: bytes, lengths) -> list:
    """`data` cut into pieces of the given lengths (the rest is one last piece)."""
    pieces, pos = [], 0
    for n in lengths:
        if pos >= len(data):
            break
        pieces.append(data[pos : pos + n])
        pos += n
    if pos < len(data):
        pieces.append(data[pos:])
    return pieces


# Small pieces and small reads, so that reads often end exactly where a piece ends.
_piece_lengths = st.lists(st.integers(min_value=1, max_value=12), max_size=20)
_sizes = st.integers(min_value=-1, max_value=16)
_operation = st.one_of(
    st.tuples(st.just("read"), _sizes),
    st.tuples(st.just("read"), st.none()),
    st.tuples(st.just("readline"), _sizes),
    st.tuples(st.just("readline"), st.none()),
    st.tuples(st.just("readlines"), st.integers(min_value=-1, max_value=16)),
    st.tuples(st.just("next"), st.none()),
    st.tuples(st.just("readinto"), st.integers(min_value=0, max_value=16)),
)


def _apply(stream, op):
    name, arg = op
    if name == "read":
        return stream.read(arg)
    if name == "readline":
        return stream.readline(arg)
    if name == "readlines":
        return stream.readlines(arg)
    if name == "next":
        return next(stream, "StopIteration")
    buf = bytearray(arg)
    n = stream.readinto(buf)
    return n, bytes(buf[:n])


# Bodies with many newlines, so that readline and iteration meet line ends often.
_bodies = st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r\n", b"xyz\n", b"\x00", b"\xff"])).map(
    b"".join
) | st.binary(max_size=100)


@settings(max_examples=300, deadline=None)
@given(
    body=_bodies,
    lengths=_piece_lengths,
    ops=st.lists(_operation, max_size=15),
)
def test_body_reader_reads_like_bytesio_however_the_body_arrives(body, lengths, ops):
    reader = BodyReader(Puller(split_into(body, lengths)))
    reference = io.BytesIO(body)
    for op in ops:
        assert _apply(reader, op) == _apply(reference, op), op
    # Whatever was read so far, the rest of the body is still there, once.
    assert reader.read() == reference.read()
    assert reader.read() == b""
    assert reader.finished


@settings(max_examples=100, deadline=None)
@given(body=_bodies, lengths=_piece_lengths)
def test_body_reader_iteration_gives_the_lines(body, lengths):
    reader = BodyReader(Puller(split_into(body, lengths)))
    assert list(reader) == list(io.BytesIO(body))


def test_body_reader_is_a_readable_stream_that_io_wrappers_accept():
    reader = BodyReader(Puller([b"line one\nline", b" two\n"]))
    assert reader.readable()
    text = io.TextIOWrapper(io.BufferedReader(reader), encoding="utf-8")
    assert text.readlines() == ["line one\n", "line two\n"]


def test_body_reader_never_pulls_after_the_end():
    puller = Puller([b"abc"])
    reader = BodyReader(puller)
    assert reader.read() == b"abc"
    for _ in range(3):
        assert reader.read() == b""
        assert reader.readline() == b""
        assert reader.read(5) == b""
    assert puller.calls_after_end == 1


def test_body_reader_read_of_n_pulls_no_more_than_it_needs():
    puller = Puller([b"abcd", b"efgh", b"ijkl"])
    reader = BodyReader(puller)
    assert reader.read(6) == b"abcdef"
    assert puller.calls == 2
    assert reader.readline(2) == b"gh"
    assert puller.calls == 2


def test_on_first_read_is_called_once_before_the_first_pull():
    log = []
    reader = BodyReader(Puller([b"ab\n", b"cd"], log), on_first_read=lambda: log.append("hook"))
    assert log == []  # an app that never reads never triggers it (no 100 Continue)
    assert reader.read(0) == b""
    assert log == []
    assert reader.readline() == b"ab\n"
    assert log == ["hook", "pull"]
    reader.read(1)
    reader.read()
    reader.read()
    assert log.count("hook") == 1


@pytest.mark.parametrize(
    "first",
    [lambda r: r.read(), lambda r: r.readline(), lambda r: next(r), lambda r: r.readlines()],
)
def test_on_first_read_is_called_by_any_kind_of_read(first):
    calls = []
    reader = BodyReader(Puller([b"x\n"]), on_first_read=lambda: calls.append(1))
    first(reader)
    assert calls == [1]


def test_drain_discards_the_rest_of_the_body():
    puller = Puller([b"abc", b"def", b"ghi"])
    reader = BodyReader(puller)
    assert reader.read(4) == b"abcd"
    assert not reader.finished
    reader.drain()
    assert reader.finished
    assert puller.pieces == []
    assert reader.read() == b""
    reader.drain()  # a second drain is harmless and pulls nothing more
    assert puller.calls_after_end == 1


def test_peer_gone_while_reading_reaches_the_app_as_an_oserror():
    def pull():
        raise PeerGone("recv failed")

    reader = BodyReader(pull)
    with pytest.raises(OSError):
        reader.read(10)


# --- FileWrapper ------------------------------------------------------------------------------


def test_file_wrapper_iterates_in_blocks_and_closes_the_file():
    f = io.BytesIO(b"0123456789")
    wrapper = FileWrapper(f, blksize=4)
    assert list(wrapper) == [b"0123", b"4567", b"89"]
    wrapper.close()
    assert f.closed


def test_file_wrapper_sendfile_span_of_a_regular_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    with open(path, "rb") as f:
        f.seek(30)
        fd, offset, count = FileWrapper(f).sendfile_span()
        assert (fd, offset, count) == (f.fileno(), 30, 70)


def test_file_wrapper_sendfile_span_is_none_for_non_files():
    assert FileWrapper(io.BytesIO(b"x")).sendfile_span() is None
    r, w = os.pipe()
    try:
        with os.fdopen(r, "rb") as pipe:
            assert FileWrapper(pipe).sendfile_span() is None
    finally:
        os.close(w)


# --- run_app -----------------------------------------------------------------------------------


class Sink:
    """A worker's response sink that records what it was asked to send."""

    def __init__(self, *, can_sendfile: bool = False, fail_on_body: int | None = None):
        self.calls: list = []
        self.head_sent = False
        self.can_sendfile = can_sendfile
        self.fail_on_body = fail_on_body  # raise PeerGone on this send_body call (0-based)
        self._bodies = 0
        self.held = 0  # bytes a socket would still hold: none, this sink takes everything

    def wait_room(self, limit):
        pass  # nothing is ever held here

    def send_head(self, status, headers, known_length):
        assert not self.head_sent, "head sent twice"
        self.calls.append(("head", status, list(headers), known_length))
        self.head_sent = True

    def send_body(self, data):
        assert self.head_sent
        if self.fail_on_body == self._bodies:
            raise PeerGone("send failed: broken pipe")
        self._bodies += 1
        self.calls.append(("body", bytes(data)))

    def sendfile(self, fd, offset, count):
        assert self.head_sent
        self.calls.append(("sendfile", os.pread(fd, count, offset)))

    def finish(self):
        self.calls.append(("finish",))


class Result:
    """An app result with a close() that records being called."""

    def __init__(self, items, fail_at: int | None = None):
        self.items = list(items)
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self):
        for i, item in enumerate(self.items):
            if i == self.fail_at:
                raise RuntimeError("app broke mid-body")
            yield item

    def close(self):
        self.closed += 1


OK = "200 OK"
TEXT = [("Content-Type", "text/plain")]


def app_returning(result, status=OK, headers=TEXT):
    def app(environ, start_response):
        start_response(status, list(headers))
        return result

    return app


def run(app, sink=None):
    sink = sink if sink is not None else Sink()
    run_app(app, {"REQUEST_METHOD": "GET"}, sink)
    return sink.calls


def test_single_element_list_is_sent_with_its_length():
    assert run(app_returning([b"hello"])) == [
        ("head", OK, TEXT, 5),
        ("body", b"hello"),
        ("finish",),
    ]


def test_single_empty_element_sends_length_zero_and_no_body():
    assert run(app_returning([b""])) == [("head", OK, TEXT, 0), ("finish",)]


def test_empty_body_sends_head_with_length_zero():
    assert run(app_returning([])) == [("head", OK, TEXT, 0), ("finish",)]
    result = Result([b"", b""])
    assert run(app_returning(result)) == [("head", OK, TEXT, 0), ("finish",)]
    assert result.closed == 1


def test_generator_body_streams_with_unknown_length_from_its_first_non_empty_chunk():
    sink = Sink()
    seen_at_yield = []

    def body():
        yield b""
        seen_at_yield.append(sink.head_sent)  # the empty chunk must not have sent the head
        yield b"a"
        yield b""
        yield b"bc"

    assert run(app_returning(body()), sink) == [
        ("head", OK, TEXT, None),
        ("body", b"a"),
        ("body", b"bc"),
        ("finish",),
    ]
    assert seen_at_yield == [False]


def test_app_failing_before_its_first_byte_has_sent_nothing():
    # So the worker can still answer 500.
    result = Result([b"", b"late"], fail_at=1)
    sink = Sink()
    with pytest.raises(RuntimeError):
        run(app_returning(result), sink)
    assert sink.calls == []
    assert result.closed == 1


def test_list_of_several_chunks_streams():
    assert run(app_returning([b"a", b"b"])) == [
        ("head", OK, TEXT, None),
        ("body", b"a"),
        ("body", b"b"),
        ("finish",),
    ]


def test_write_callable_sends_the_head_then_the_data():
    def app(environ, start_response):
        write = start_response(OK, TEXT)
        write(b"one")
        write(b"")
        write(b"two")
        return [b"three"]

    assert run(app) == [
        ("head", OK, TEXT, None),
        ("body", b"one"),
        ("body", b"two"),
        ("body", b"three"),
        ("finish",),
    ]


def test_write_of_non_bytes_is_an_app_error():
    def app(environ, start_response):
        start_response(OK, TEXT)("text")
        return []

    sink = Sink()
    with pytest.raises(AppError, match="bytes"):
        run(app, sink)
    assert sink.calls == []


@pytest.mark.parametrize("item", ["text", bytearray(b"x"), memoryview(b"x"), 3])
def test_yielding_non_bytes_is_an_app_error_and_close_is_called(item):
    result = Result([item])
    sink = Sink()
    with pytest.raises(AppError):
        run(app_returning(result), sink)
    assert sink.calls == []
    assert result.closed == 1
    with pytest.raises(AppError):
        run(app_returning([item]))


def test_body_without_start_response_is_an_app_error():
    with pytest.raises(AppError, match="start_response"):
        run(lambda environ, start_response: [b"x"])
    with pytest.raises(AppError, match="start_response"):
        run(lambda environ, start_response: iter([b"x"]))


def test_start_response_twice_without_exc_info_is_an_error():
    def app(environ, start_response):
        start_response(OK, TEXT)
        start_response("500 Internal Server Error", TEXT)
        return [b"x"]

    sink = Sink()
    with pytest.raises(AppError, match="twice"):
        run(app, sink)
    assert sink.calls == []


def test_exc_info_before_the_head_is_sent_replaces_the_response():
    def app(environ, start_response):
        start_response(OK, TEXT)
        try:
            raise ValueError("boom")
        except ValueError:
            start_response("500 Internal Server Error", [("X-Error", "1")], sys.exc_info())
        return [b"sorry"]

    assert run(app) == [
        ("head", "500 Internal Server Error", [("X-Error", "1")], 5),
        ("body", b"sorry"),
        ("finish",),
    ]


def test_exc_info_after_the_head_is_sent_re_raises_the_apps_exception():
    error = ValueError("boom")

    def app(environ, start_response):
        write = start_response(OK, TEXT)
        write(b"partial")
        try:
            raise error
        except ValueError:
            start_response("500 Internal Server Error", TEXT, sys.exc_info())
        return [b"never"]

    sink = Sink()
    with pytest.raises(ValueError) as raised:
        run(app, sink)
    assert raised.value is error
    assert sink.calls == [("head", OK, TEXT, None), ("body", b"partial")]


@pytest.mark.parametrize(
    "status, headers",
    [
        (OK, [("X-Bad", "a\r\nSet-Cookie: evil=1")]),
        (OK, [("X-Bad", "a\nb")]),
        (OK, [("X-Bad", "a\rb")]),
        (OK, [("X-Bad", "a\x00b")]),
        (OK, [("X-Bad", "a\x7fb")]),
        (OK, [("X-Bad", "\u20ac")]),  # not latin-1
        (OK, [("X-Bad", 5)]),
        (OK, [("X-Bad", b"bytes")]),
        (OK, [("X Bad", "v")]),
        (OK, [("X-Bad:", "v")]),
        (OK, [("X-Bad\r\n", "v")]),
        (OK, [("", "v")]),
        (OK, [(b"X-Bad", "v")]),
        (OK, [("X-Bad", "v", "extra")]),
        (OK, [["X-Bad", "v"]]),
        (OK, (("X-Ok", "v"),)),  # PEP 3333: headers must be a list
        ("200", TEXT),
        ("20 OK", TEXT),
        ("099 Low", TEXT),
        ("200 OK\r\nX: y", TEXT),
        (b"200 OK", TEXT),
        (200, TEXT),
    ],
)
def test_bad_status_or_header_is_an_app_error_and_nothing_is_sent(status, headers):
    def app(environ, start_response):
        start_response(status, headers)
        return [b"x"]

    sink = Sink()
    with pytest.raises(AppError):
        run(app, sink)
    assert sink.calls == []


def test_bad_header_is_an_error_even_when_the_app_swallows_it():
    result = Result([b"x"])

    def app(environ, start_response):
        try:
            start_response(OK, [("X-Bad", "a\r\nb")])
        except AppError:
            pass
        return result

    sink = Sink()
    with pytest.raises(AppError):
        run(app, sink)
    assert sink.calls == []
    assert result.closed == 1


def test_valid_start_response_with_exc_info_recovers_from_a_rejected_one():
    def app(environ, start_response):
        try:
            start_response(OK, [("X-Bad", "a\nb")])
        except AppError:
            start_response("500 Internal Server Error", TEXT, sys.exc_info())
        return [b"err"]

    assert run(app)[0] == ("head", "500 Internal Server Error", TEXT, 3)


def test_acceptable_header_values_pass():
    headers = [("X-Tab", "a\tb"), ("X-Latin1", "caf\u00e9"), ("X-Empty", ""), ("X~!#$%", "v")]
    assert run(app_returning([b""], headers=headers))[0] == ("head", OK, headers, 0)


def test_close_is_called_after_a_normal_response():
    result = Result([b"a", b"b"])
    run(app_returning(result))
    assert result.closed == 1


def test_close_is_called_when_the_app_raises_mid_iteration():
    result = Result([b"a", b"b", b"c"], fail_at=2)
    sink = Sink()
    with pytest.raises(RuntimeError):
        run(app_returning(result), sink)
    assert result.closed == 1
    assert sink.calls == [("head", OK, TEXT, None), ("body", b"a"), ("body", b"b")]


def test_close_is_called_when_the_client_goes_away():
    result = Result([b"a", b"b", b"c"])
    sink = Sink(fail_on_body=1)
    with pytest.raises(PeerGone):
        run(app_returning(result), sink)
    assert result.closed == 1
    assert ("finish",) not in sink.calls


def test_close_is_called_when_the_client_goes_away_during_a_known_length_body():
    class OneItem(list):  # a list subclass with close(): not the one-piece fast path
        closed = 0

        def close(self):
            self.closed += 1

    result = OneItem([b"abc"])
    with pytest.raises(PeerGone):
        run(app_returning(result), Sink(fail_on_body=0))
    assert result.closed == 1


def test_generator_close_runs_its_finally():
    cleaned = []

    def body():
        try:
            yield b"a"
            yield b"b"
        finally:
            cleaned.append(True)

    with pytest.raises(PeerGone):
        run(app_returning(body()), Sink(fail_on_body=0))
    assert cleaned == [True]


# --- run_app with the file wrapper -------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 4)
    return path


def file_app(path, headers=TEXT, seek=0, blksize=300):
    opened = []

    def app(environ, start_response):
        start_response(OK, list(headers))
        f = open(path, "rb")  # noqa: SIM115 - closed through the wrapper by run_app
        f.seek(seek)
        opened.append(f)
        return environ["wsgi.file_wrapper"](f, blksize)

    return app, opened


def run_with_wrapper(app, sink):
    run_app(app, {"REQUEST_METHOD": "GET", "wsgi.file_wrapper": FileWrapper}, sink)
    return sink.calls


def test_file_wrapper_of_a_regular_file_is_sendfiled_when_the_sink_can(data_file):
    app, opened = file_app(data_file)
    sink = Sink(can_sendfile=True)
    body = run_app(app, {"REQUEST_METHOD": "GET", "wsgi.file_wrapper": FileWrapper}, sink)
    content = data_file.read_bytes()
    assert sink.calls == [("head", OK, TEXT, len(content)), ("sendfile", content), ("finish",)]
    # The file stays open until the loop has sent it; the worker then closes the body once.
    assert not opened[0].closed
    body.close()
    body.close()
    assert opened[0].closed


def test_sendfile_starts_at_the_files_position(data_file):
    app, _ = file_app(data_file, seek=1000)
    calls = run_with_wrapper(app, Sink(can_sendfile=True))
    assert calls == [
        ("head", OK, TEXT, 24),
        ("sendfile", data_file.read_bytes()[1000:]),
        ("finish",),
    ]


def test_sendfile_honours_a_shorter_content_length(data_file):
    headers = [("Content-Length", "10")]
    app, _ = file_app(data_file, headers=headers)
    calls = run_with_wrapper(app, Sink(can_sendfile=True))
    assert calls == [("head", OK, headers, 10), ("sendfile", bytes(range(10))), ("finish",)]


def test_file_wrapper_is_iterated_when_the_sink_cannot_sendfile(data_file):
    app, opened = file_app(data_file, blksize=300)
    calls = run_with_wrapper(app, Sink(can_sendfile=False))
    content = data_file.read_bytes()
    assert calls[0] == ("head", OK, TEXT, None)
    assert [c[1] for c in calls[1:-1]] == [content[i : i + 300] for i in range(0, 1024, 300)]
    assert calls[-1] == ("finish",)
    assert opened[0].closed


def test_file_wrapper_of_a_non_file_is_iterated_even_when_the_sink_can_sendfile():
    f = io.BytesIO(b"in memory")

    def app(environ, start_response):
        start_response(OK, TEXT)
        return environ["wsgi.file_wrapper"](f)

    calls = run_with_wrapper(app, Sink(can_sendfile=True))
    assert calls == [("head", OK, TEXT, None), ("body", b"in memory"), ("finish",)]
    assert f.closed


# --- check_app -------------------------------------------------------------------------------


def test_check_app_2xx_is_healthy():
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("204 No Content", [])
        return []

    assert check_app(app, "/health?deep=1", host="svc.local:8080") is None
    assert seen["PATH_INFO"] == "/health"
    assert seen["QUERY_STRING"] == "deep=1"
    assert seen["HTTP_HOST"] == "svc.local:8080"
    assert seen["SERVER_NAME"] == "svc.local"
    assert seen["REQUEST_METHOD"] == "GET"
    assert seen["wsgi.input"].read() == b""


def test_check_app_non_2xx_says_what_it_answered():
    message = check_app(app_returning([b"down"], status="500 Internal Server Error"), "/health")
    assert message is not None
    assert "/health" in message
    assert "500" in message
    message = check_app(app_returning([], status="302 Found"), "/")
    assert message is not None and "302" in message


def test_check_app_exception_is_a_message_not_a_crash():
    def app(environ, start_response):
        raise KeyError("DATABASE_URL")

    message = check_app(app, "/health")
    assert message is not None
    assert "KeyError" in message
    assert "DATABASE_URL" in message


def test_check_app_exception_while_iterating_still_closes():
    result = Result([b"a", b"b"], fail_at=1)
    message = check_app(app_returning(result), "/")
    assert message is not None and "RuntimeError" in message
    assert result.closed == 1


def test_check_app_never_calling_start_response():
    message = check_app(lambda environ, start_response: [], "/")
    assert message is not None and "start_response" in message


# =============================================================================================
# Regressions: bugs once found in wsgi.py, fixed; each test below failed before its fix
# =============================================================================================


def test_absolute_form_without_a_path_keeps_its_query():
    # RFC 9112 §3.2.2 absolute-form is an absolute-URI (RFC 3986 §4.3): `http://h?q` has an
    # empty path and a query. split_target puts the query into the authority instead.
    assert split_target(b"http://h.example?x=1") == (b"/", b"x=1", b"h.example")
    env = environ_for(request("http://h.example:81?x=1", "Host: other"))
    assert env["HTTP_HOST"] == "h.example:81"
    assert env["SERVER_NAME"] == "h.example"
    assert env["QUERY_STRING"] == "x=1"


@pytest.mark.parametrize(
    "bad",
    [
        [("X-A", b"1")],  # bytes value
        [("X-A", "1\r\nX-B: 2")],  # a line break smuggling a field
        [["X-A", "1"]],  # a list, not a tuple (unhashable)
        [("X-A", "1", "2")],
        [("X-A", "1"), ("X A", "2")],  # a name that is no token
    ],
)
def test_headers_checked_once_do_not_vouch_for_different_ones(bad):
    # Valid header lists are remembered (wsgi._VALID_HEADS): a list that only resembles one
    # must still be refused, however often its valid twin was answered before.
    for _ in range(3):
        assert run(app_returning([b"x"], headers=[("X-A", "1")]))[0][0] == "head"
    with pytest.raises(AppError):
        run(app_returning([b"x"], headers=bad))


def test_a_status_checked_once_does_not_vouch_for_another():
    run(app_returning([b"x"], status="200 OK"))
    for status in ("200 OK\r\n", "20 OK", b"200 OK"):
        with pytest.raises(AppError, match="status"):
            run(app_returning([b"x"], status=status, headers=[]))
