"""Apps that fail: raise before start_response, raise after the first chunk, send a header
with CR/LF/NUL (an attempt at response splitting), a bad status, or recover with exc_info.

Deliberately not wrapped in wsgiref.validate: the validator would catch the bad headers
before the server does, and the server is what is under test.
"""

import sys

SECRET = "s3cr3t-in-the-traceback"


def _before(environ, start_response):
    raise RuntimeError(f"boom before start_response {SECRET}")


def _after(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first chunk;"
    raise RuntimeError(f"boom after the first chunk {SECRET}")


_BAD_HEADERS = {
    "/badheader/crlf": ("X-Bad", "a\r\nSet-Cookie: injected=1"),
    "/badheader/lf": ("X-Bad", "a\nSet-Cookie: injected=1"),
    "/badheader/cr": ("X-Bad", "a\rSet-Cookie: injected=1"),
    "/badheader/nul": ("X-Bad", "a\x00injected"),
    "/badheader/name": ("X-Bad\r\nSet-Cookie", "injected=1"),
    "/badheader/space": ("X Bad", "injected"),
}


def _bad_header(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), _BAD_HEADERS[environ["PATH_INFO"]]])
    return [b"should never be seen"]


def _bad_header_caught(environ, start_response):
    # An app that swallows the error from start_response and answers anyway.
    try:
        start_response("200 OK", [("X-Bad", "a\r\nSet-Cookie: injected=1")])
    except Exception:
        pass
    return [b"should never be seen"]


def _bad_header_recovered(environ, start_response):
    # PEP 3333's error handling: the app catches the error start_response raised and calls
    # it again with exc_info before anything was sent; the second response replaces it.
    try:
        start_response("200 OK", [("X-Bad", "a\r\nSet-Cookie: injected=1")])
    except Exception:
        start_response("502 Bad Gateway", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"recovered by the app"]
    return [b"should never be seen"]


def _bad_status(environ, start_response):
    start_response("200 OK\r\nSet-Cookie: injected=1", [("Content-Type", "text/plain")])
    return [b"should never be seen"]


def _exc_info(environ, start_response):
    # PEP 3333: before anything is sent, start_response may be called again with exc_info.
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("found a problem")
    except ValueError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"handled: try later"]


def _exc_info_late(environ, start_response):
    # exc_info after the head was sent: start_response must re-raise, the server closes.
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"partial;")
    try:
        raise ValueError(f"late problem {SECRET}")
    except ValueError:
        start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"never"]


def _not_bytes(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["a str, not bytes"]


def _no_start(environ, start_response):
    return [b"a body without start_response"]


def _short_body(environ, start_response):
    # Promises 100 bytes, delivers 10: only closing the connection can tell the client.
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
    yield b"only ten.."


def _long_body(environ, start_response):
    # Promises 5 bytes, yields more: the excess must not reach the wire as a "next response".
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    yield b"12345"
    yield b"HTTP/1.1 200 OK\r\nX-Smuggled: 1\r\nContent-Length: 0\r\n\r\n"


def _hop_by_hop(environ, start_response):
    # PEP 3333 forbids hop-by-hop headers from the app; the server must still frame correctly.
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
            ("Keep-Alive", "timeout=99"),
        ],
    )
    yield b"abc"
    yield b"def"


ROUTES = {
    "/short": _short_body,
    "/long": _long_body,
    "/hopbyhop": _hop_by_hop,
    "/before": _before,
    "/after": _after,
    "/badheader/caught": _bad_header_caught,
    "/badheader/recovered": _bad_header_recovered,
    "/badstatus": _bad_status,
    "/exc_info": _exc_info,
    "/exc_info_late": _exc_info_late,
    "/notbytes": _not_bytes,
    "/nostart": _no_start,
}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path in _BAD_HEADERS:
        return _bad_header(environ, start_response)
    if path in ROUTES:
        return ROUTES[path](environ, start_response)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
