"""Apps that fail: a short 500 with the traceback in the error log only; an error after the
head closes the connection; a header with CR/LF/NUL is never sent (no response splitting)."""

from __future__ import annotations

import pytest

from support.wire import count_responses, request

from .apps.failing import SECRET


@pytest.fixture
def failing(servers, threads):
    return servers.get("failing:app", "--threads", str(threads))


def _everything(server, path: str) -> bytes:
    with server.connect() as wire:
        wire.send(request("GET", path) + request("GET", "/smuggled-after"))
        return wire.read_until_eof(timeout=5)


def _assert_short_500(data: bytes) -> None:
    assert data.startswith(b"HTTP/1.1 500 "), data[:200]
    head, _, body = data.partition(b"\r\n\r\n")
    assert len(body) < 200, body
    for leak in (b"Traceback", SECRET.encode(), b'File "', b"injected", b"never be seen"):
        assert leak not in data, f"{leak!r} leaked to the client: {data!r}"


class TestExceptionBeforeTheHead:
    def test_500_to_head_has_no_body(self, failing):
        # RFC 9110 §9.3.2: the 500 answering a HEAD is a head only, then the close.
        with failing.connect() as wire:
            wire.send(request("HEAD", "/before"))
            everything = wire.read_until_eof(timeout=5)
        assert everything.startswith(b"HTTP/1.1 500 "), everything[:200]
        assert everything.endswith(b"\r\n\r\n") and everything.count(b"\r\n\r\n") == 1
        assert b"\r\ncontent-length: " in everything.lower()

    def test_500_short_body_traceback_only_in_the_log(self, failing):
        mark = failing.stderr_mark()
        with failing.connect() as wire:
            wire.send(request("GET", "/before"))
            resp = wire.read_response()
            assert resp.status == 500
            assert resp.header("content-type", "").startswith("text/plain")
            rest = wire.read_until_eof()
        _assert_short_500(resp.raw_head + resp.body + rest)
        log = failing.wait_for_stderr(mark, SECRET)
        assert "Traceback (most recent call last)" in log
        assert f"RuntimeError: boom before start_response {SECRET}" in log
        assert "GET /before" in log

    def test_server_keeps_serving(self, failing):
        for _ in range(3):
            assert failing.exchange(request("GET", "/before")).status == 500
        assert failing.exchange(request("GET", "/fine")).body == b"ok"

    @pytest.mark.parametrize("path", ["/notbytes", "/nostart"])
    def test_pep3333_violations_are_a_500(self, failing, path):
        mark = failing.stderr_mark()
        _assert_short_500(_everything(failing, path))
        assert "[ERROR]" in failing.wait_for_stderr(mark, "[ERROR]")


class TestExceptionAfterTheHead:
    def test_connection_is_closed_and_body_not_terminated(self, failing):
        mark = failing.stderr_mark()
        data = _everything(failing, "/after")
        assert data.startswith(b"HTTP/1.1 200 ")
        assert b"first chunk;" in data
        assert not data.endswith(b"0\r\n\r\n"), "a truncated body must not look complete"
        assert count_responses(data) == 1
        assert SECRET.encode() not in data
        log = failing.wait_for_stderr(mark, SECRET)
        assert "Traceback" in log and SECRET in log

    def test_exc_info_after_the_head_reraises_and_closes(self, failing):
        mark = failing.stderr_mark()
        data = _everything(failing, "/exc_info_late")
        assert data.startswith(b"HTTP/1.1 200 ")
        assert b"partial;" in data and b"never" not in data
        assert not data.endswith(b"0\r\n\r\n")
        assert count_responses(data) == 1
        assert SECRET in failing.wait_for_stderr(mark, SECRET)


def test_exc_info_before_the_head_replaces_the_response(failing):
    with failing.connect() as wire:
        wire.send(request("GET", "/exc_info") + request("GET", "/fine"))
        resp = wire.read_response()
        assert resp.status == 503
        assert resp.body == b"handled: try later"
        assert wire.read_response().body == b"ok"


class TestBadHeaderFromTheApp:
    def test_app_recovering_with_exc_info_is_answered(self, failing):
        with failing.connect() as wire:
            wire.send(request("GET", "/badheader/recovered") + request("GET", "/fine"))
            resp = wire.read_response()
            assert (resp.status, resp.body) == (502, b"recovered by the app")
            assert not resp.has_header("x-bad") and not resp.has_header("set-cookie")
            if not resp.closes:
                assert wire.read_response().body == b"ok"

    @pytest.mark.parametrize(
        "path",
        [
            "/badheader/crlf",
            "/badheader/lf",
            "/badheader/cr",
            "/badheader/nul",
            "/badheader/name",
            "/badheader/space",
            "/badheader/caught",
            "/badstatus",
        ],
    )
    def test_500_and_nothing_injected(self, failing, path):
        mark = failing.stderr_mark()
        data = _everything(failing, path)
        _assert_short_500(data)
        assert b"set-cookie" not in data.lower()
        assert count_responses(data) == 1
        assert path in failing.wait_for_stderr(mark, path)


class TestFramingMistakesOfTheApp:
    def test_fewer_bytes_than_content_length_closes_the_connection(self, failing):
        with failing.connect() as wire:
            wire.send(request("GET", "/short") + request("GET", "/smuggled-after"))
            head = wire.read_head()
            assert head[1] == 200
            rest = wire.read_until_eof()
        assert rest == b"only ten..", "the connection must close after a short body"

    def test_more_bytes_than_content_length_are_cut(self, failing):
        with failing.connect() as wire:
            wire.send(request("GET", "/long") + request("GET", "/fine", [("Connection", "close")]))
            first = wire.read_response()
            assert first.body == b"12345"
            # The server may close here (it could not announce it in the head it had sent)
            # or answer the next request; never may the excess bytes look like a response.
            rest = wire.read_until_eof()
        assert b"X-Smuggled" not in rest
        assert count_responses(rest) <= 1
        if rest:
            assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b"\r\n\r\nok")

    def test_hop_by_hop_headers_from_the_app_do_not_break_framing(self, failing):
        with failing.connect() as wire:
            wire.send(request("GET", "/hopbyhop") + request("GET", "/fine"))
            first = wire.read_response()
            if first.status == 200:
                assert first.body == b"abcdef"
                assert len([n for n, _ in first.headers if n == "transfer-encoding"]) <= 1
                assert "timeout=99" not in (first.header("keep-alive") or "")
            else:
                assert first.status == 500
            if not first.closes:
                assert wire.read_response().body == b"ok"
