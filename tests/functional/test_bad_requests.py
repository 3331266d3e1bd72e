"""Malformed requests over a real socket: the right 4xx/5xx, then the connection closes, and a
second request smuggled into the same bytes is never answered."""

from __future__ import annotations

import pytest

from support.wire import count_responses, request

HOST = b"Host: localhost\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"

CASES = {
    # request line
    "method-not-token": (b"GE(T / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "lowercase-version": (b"GET / http/1.1\r\n" + HOST + b"\r\n", 400),
    "http-2": (b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505),
    "http-0.9-version": (b"GET / HTTP/0.9\r\n" + HOST + b"\r\n", 505),
    "http-1.2": (b"GET / HTTP/1.2\r\n" + HOST + b"\r\n", 505),
    "double-space": (b"GET  / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "request-line-too-long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414),
    # request-target forms (RFC 9112 §3.2)
    "target-not-origin-form": (b"GET foo/bar HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "target-bang": (b"GET ! HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "asterisk-for-get": (b"GET * HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "connect": (b"CONNECT localhost:443 HTTP/1.1\r\n" + HOST + b"\r\n", 501),
    "h2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    "invalid-host": (b"GET / HTTP/1.1\r\nHost: local host\r\n\r\n", 400),
    # fields
    "no-host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "two-hosts": (b"GET / HTTP/1.1\r\n" + HOST + HOST + b"\r\n", 400),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost : localhost\r\n\r\n", 400),
    "space-in-name": (b"GET / HTTP/1.1\r\n" + HOST + b"X Y: z\r\n\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\r\n  folded\r\n\r\n", 400),
    "nul-in-value": (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n", 400),
    "ctl-in-value": (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\x01b\r\n\r\n", 400),
    "bare-lf": (b"GET / HTTP/1.1\n" + b"Host: localhost\n\n", 400),
    "bare-lf-in-fields": (b"GET / HTTP/1.1\r\nHost: localhost\nX-A: b\r\n\r\n", 400),
    "bare-cr": (b"GET / HTTP/1.1\r\nHost: localhost\rX-A: b\r\n\r\n", 400),
    "no-colon": (b"GET / HTTP/1.1\r\n" + HOST + b"NoColonHere\r\n\r\n", 400),
    "too-many-fields": (
        b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n",
        431,
    ),
    "field-block-too-large": (
        b"GET / HTTP/1.1\r\n"
        + HOST
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))
        + b"\r\n",
        431,
    ),
    # Content-Length
    "cl-plus": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: +5\r\n\r\nhello", 400),
    "cl-minus": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: -5\r\n\r\nhello", 400),
    "cl-hex": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 0x5\r\n\r\nhello", 400),
    "cl-inner-space": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1 0\r\n\r\nhello", 400),
    "cl-empty": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: \r\n\r\nhello", 400),
    "cl-differing-duplicates": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    "cl-differing-list": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5, 6\r\n\r\nhello!",
        400,
    ),
    "cl-huge": (b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: " + b"9" * 40 + b"\r\n\r\n", 400),
    # Transfer-Encoding
    "cl-and-te": (
        b"POST / HTTP/1.1\r\n"
        + HOST
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-and-cl": (
        b"POST / HTTP/1.1\r\n"
        + HOST
        + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-not-ending-in-chunked": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-gzip-only": (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\nxx", 400),
    "te-unknown": (b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: foo\r\n\r\n0\r\n\r\n", 501),
    "te-in-http10": (
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "chunk-size-overflow": (
        b"POST / HTTP/1.1\r\n"
        + HOST
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"f" * 17
        + b"\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "chunk-size-junk": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "chunk-size-negative": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "chunk-without-crlf": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
        400,
    ),
    "chunk-size-then-space": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "chunk-bare-lf": (
        b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        400,
    ),
}


def _assert_one_answer_then_close(server, data: bytes, status: int) -> bytes:
    with server.connect() as wire:
        wire.send(data)
        everything = wire.read_until_eof(timeout=5)
    assert everything.startswith(b"HTTP/1.1 %d " % status), everything[:200]
    assert count_responses(everything) == 1, f"more than one response: {everything!r}"
    assert b"smuggled" not in everything
    head = everything.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nconnection: close" in head
    return everything


@pytest.mark.parametrize("name", sorted(CASES))
def test_rejected_and_closed_and_nothing_smuggled(echo, name):
    data, status = CASES[name]
    _assert_one_answer_then_close(echo, data + SMUGGLED, status)


@pytest.mark.parametrize("name", ["chunk-size-junk", "chunk-without-crlf", "chunk-size-overflow"])
def test_bad_chunk_in_a_streamed_body(echo, name):
    # The first 100 KB are fine, so the app is already reading when the junk arrives.
    good = b"%x\r\n%s\r\n" % (100_000, b"g" * 100_000)
    data, status = CASES[name]
    head, _, chunks = data.partition(b"\r\n\r\n")
    with echo.connect() as wire:
        wire.send(head + b"\r\n\r\n" + good + chunks + SMUGGLED)
        everything = wire.read_until_eof(timeout=5)
    # The head is not sent yet when the app's read hits the junk: the client's fault gets
    # its 400, as it would have before the app was called.
    assert everything.startswith(b"HTTP/1.1 400 "), everything[:200]
    assert count_responses(everything) == 1
    assert b"smuggled" not in everything


class TestBodyLimit:
    @pytest.fixture
    def limited(self, servers, threads):
        return servers.get("echo:app", "--threads", str(threads), "--limit-post", "1k")

    def test_content_length_over_the_limit(self, limited):
        data = request("POST", "/", body=b"x" * 2000) + SMUGGLED
        _assert_one_answer_then_close(limited, data, 413)

    def test_chunked_body_over_the_limit(self, limited):
        body = b"400\r\n" + b"x" * 1024 + b"\r\n" + b"10\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n"
        data = request("POST", "/", [("Transfer-Encoding", "chunked")]) + body + SMUGGLED
        _assert_one_answer_then_close(limited, data, 413)

    def test_large_chunked_body_over_the_limit_while_streaming(self, servers, threads):
        server = servers.get("echo:app", "--threads", str(threads), "--limit-post", "200k")
        body = b"".join(b"8000\r\n" + b"z" * 0x8000 + b"\r\n" for _ in range(10)) + b"0\r\n\r\n"
        data = request("POST", "/", [("Transfer-Encoding", "chunked")]) + body + SMUGGLED
        _assert_one_answer_then_close(server, data, 413)

    def test_body_at_the_limit_is_fine(self, limited):
        with limited.connect() as wire:
            wire.send(request("POST", "/", body=b"x" * 1024))
            assert wire.read_response().status == 200


def test_server_keeps_serving_after_bad_requests(echo):
    for name in ("obs-fold", "cl-and-te", "bare-lf"):
        _assert_one_answer_then_close(echo, CASES[name][0], CASES[name][1])
    with echo.connect() as wire:
        wire.send(request("GET", "/fine"))
        assert wire.read_response().status == 200


def test_error_after_a_good_request_on_the_same_connection(echo):
    # A good request, then a bad one pipelined behind it: one 200, one 400, then close.
    with echo.connect() as wire:
        wire.send(request("GET", "/good") + CASES["obs-fold"][0] + SMUGGLED)
        first = wire.read_response()
        assert first.status == 200
        rest = wire.read_until_eof()
    assert rest.startswith(b"HTTP/1.1 400 ")
    assert count_responses(rest) == 1


@pytest.mark.parametrize(
    "data, status",
    [
        (b"HEAD / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"HEAD foo HTTP/1.1\r\n" + HOST + b"\r\n", 400),
        (b"HEAD / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ],
    ids=["400", "bad target", "501"],
)
def test_error_answer_to_head_has_no_body(echo, data, status):
    # RFC 9110 §9.3.2: no content in any answer to HEAD, an error included; a client would
    # read the bytes as its next response. Content-Length still says what a GET would get.
    everything = _assert_one_answer_then_close(echo, data + SMUGGLED, status)
    head, sep, body = everything.partition(b"\r\n\r\n")
    assert sep and body == b"", everything
    assert int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]) > 0
