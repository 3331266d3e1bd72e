"""Request and response bodies: big uploads, wsgi.input's reading methods, streamed downloads,
the write() callable, wsgi.file_wrapper (sendfile), unread bodies and Expect: 100-continue."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest

from support.wire import chunked, request

from .apps import filewrap, streaming, writer

TEN_MB = 10 * 1024 * 1024


def _payload(size: int) -> bytes:
    return os.urandom(size // 2).hex().encode()[:size]


def _json(resp) -> dict:
    assert resp.status == 200, resp
    return json.loads(resp.body)


class TestUploads:
    def test_10mb_chunked_upload(self, echo):
        body = _payload(TEN_MB)
        with echo.connect(timeout=20) as wire:
            wire.send(request("POST", "/up", [("Transfer-Encoding", "chunked")]))
            wire.send(chunked(body, 100_000))
            got = _json(wire.read_response())
            assert got["body_length"] == TEN_MB
            assert got["body_sha256"] == hashlib.sha256(body).hexdigest()
            assert got["wsgi"].get("wsgi.input_terminated") is True
            # The loop read the body whole: the app is told its length, as behind nginx,
            # and no longer sees the transport's chunked coding.
            assert got["environ"]["CONTENT_LENGTH"] == str(TEN_MB)
            assert "HTTP_TRANSFER_ENCODING" not in got["environ"]
            # the connection is still good for the next request
            wire.send(request("GET", "/after"))
            assert _json(wire.read_response())["path"] == "/after"

    def test_10mb_content_length_upload(self, echo):
        body = _payload(TEN_MB)
        with echo.connect(timeout=20) as wire:
            wire.send(request("PUT", "/up", body=body))
            got = _json(wire.read_response())
            assert got["body_length"] == TEN_MB
            assert got["body_sha256"] == hashlib.sha256(body).hexdigest()
            assert got["environ"]["CONTENT_LENGTH"] == str(TEN_MB)
            wire.send(request("GET", "/after"))
            assert _json(wire.read_response())["path"] == "/after"

    def test_odd_chunk_sizes_and_extensions_and_trailers(self, echo):
        body = _payload(200_000)
        pieces, i, n = [], 0, 1
        while i < len(body):
            part = body[i : i + n]
            pieces.append(b'%x;ext=val;q="a b"\r\n%s\r\n' % (len(part), part))
            i += len(part)
            n = n * 3 + 1
        wire_body = b"".join(pieces) + b"0\r\nX-Trailer: yes\r\n\r\n"
        with echo.connect() as wire:
            wire.send(request("POST", "/", [("Transfer-Encoding", "chunked")]) + wire_body)
            got = _json(wire.read_response())
            assert got["body_sha256"] == hashlib.sha256(body).hexdigest()
            wire.send(request("GET", "/next"))
            assert _json(wire.read_response())["path"] == "/next"

    @pytest.mark.parametrize("how", ["block", "tiny", "all", "readline", "readlines", "iter"])
    @pytest.mark.parametrize("size", [300, 300_000], ids=["buffered", "streamed"])
    @pytest.mark.parametrize("framing", ["length", "chunked"])
    def test_every_way_of_reading_wsgi_input(self, echo, how, size, framing):
        lines = [b"line %d %s\n" % (i, b"." * (i % 50)) for i in range(size // 30)]
        body = b"".join(lines)[:size] + b"no newline at the end"
        if framing == "chunked":
            data = request("POST", f"/?read={how}", [("Transfer-Encoding", "chunked")])
            data += chunked(body, 4096)
        else:
            data = request("POST", f"/?read={how}", body=body)
        with echo.connect() as wire:
            wire.send(data + request("GET", "/next"))
            got = _json(wire.read_response())
            assert got["body_length"] == len(body)
            assert got["body_sha256"] == hashlib.sha256(body).hexdigest()
            assert _json(wire.read_response())["path"] == "/next"

    def test_the_app_cannot_read_past_the_body(self, servers, threads):
        # read(n) larger than the body returns what there is and never waits for more
        # (the next pipelined request must not leak into this body).
        server = servers.get("echo:app", "--threads", str(threads))
        body = b"exactly this"
        data = request("POST", "/?read=block", body=body) + request("GET", "/second")
        with server.connect() as wire:
            wire.send(data)
            assert _json(wire.read_response())["body"] == body.decode()
            assert _json(wire.read_response())["path"] == "/second"


class TestResponseFraming:
    def test_app_content_length_is_sent_once(self, echo):
        resp = echo.exchange(request("GET", "/one-length"))
        lengths = [v for n, v in resp.headers if n == "content-length"]
        assert lengths == [str(len(resp.body))], (
            f"Content-Length headers on the wire: {lengths} (raw head {resp.raw_head!r})"
        )

    def test_streamed_download_is_chunked_and_complete(self, servers, threads):
        server = servers.get("streaming:app", "--threads", str(threads))
        with server.connect(timeout=10) as wire:
            wire.send(request("GET", "/?chunks=2000&size=997"))
            resp = wire.read_response()
            assert resp.status == 200
            assert resp.chunked and resp.header("transfer-encoding") == "chunked"
            assert not resp.has_header("content-length")
            assert resp.body == streaming.expected(2000, 997)
            assert len(resp.body) == 2000 * 997
            wire.send(request("GET", "/?chunks=3&size=10"))
            assert wire.read_response().body == streaming.expected(3, 10)

    def test_streamed_download_with_requests(self, servers, threads):
        requests = pytest.importorskip("requests")
        server = servers.get("streaming:app", "--threads", str(threads))
        with requests.get(f"{server.url}/?chunks=500&size=4096", stream=True, timeout=10) as r:
            got = b"".join(r.iter_content(65536))
        assert got == streaming.expected(500, 4096)

    @pytest.mark.parametrize("query", ["", "?cl=1", "?mix=1"])
    def test_write_callable(self, servers, threads, query):
        server = servers.get("writer:app", "--threads", str(threads))
        with server.connect() as wire:
            wire.send(request("GET", f"/{query}") + request("GET", f"/{query}"))
            for _ in range(2):
                resp = wire.read_response()
                assert resp.status == 200
                assert resp.body == writer.BODY
                if query == "?cl=1":
                    assert not resp.chunked
                else:
                    assert resp.chunked


class TestFileWrapper:
    @pytest.fixture
    def files(self, servers, threads):
        return servers.get("filewrap:app", "--threads", str(threads))

    def test_file_is_sent_with_its_length(self, files):
        with files.connect(timeout=10) as wire:
            wire.send(request("GET", "/") + request("GET", "/?offset=1000001"))
            resp = wire.read_response()
            assert resp.header("content-length") == str(filewrap.SIZE)
            assert not resp.chunked
            assert resp.body == filewrap.data()
            resp = wire.read_response()
            assert resp.header("content-length") == str(filewrap.SIZE - 1000001)
            assert resp.body == filewrap.data()[1000001:]

    def test_declared_length_and_head(self, files):
        with files.connect(timeout=10) as wire:
            wire.send(
                request("GET", "/?cl=1") + request("HEAD", "/") + request("GET", "/?offset=7")
            )
            assert wire.read_response().body == filewrap.data()
            head = wire.read_response("HEAD")
            assert head.status == 200 and head.header("content-length") == str(filewrap.SIZE)
            assert wire.read_response().body == filewrap.data()[7:]

    def test_file_like_without_fileno_is_iterated(self, files):
        resp = files.exchange(request("GET", "/?missing=1"))
        assert resp.body == filewrap.data()

    def test_http10_file_download(self, files):
        with files.connect(timeout=10) as wire:
            wire.send(request("GET", "/?offset=5", version="HTTP/1.0", host=None))
            assert wire.read_response().body == filewrap.data()[5:]
            assert wire.read_until_eof() == b""

    def test_under_the_validator(self, servers, threads):
        server = servers.get("filewrap:validated", "--threads", str(threads))
        with server.connect(timeout=10) as wire:
            wire.send(request("GET", "/?offset=3"))
            assert wire.read_response().body == filewrap.data()[3:]


class TestUnreadBody:
    @pytest.mark.parametrize("framing", ["length", "chunked"])
    def test_small_unread_body_is_not_taken_for_the_next_request(self, servers, threads, framing):
        server = servers.get("noread:app", "--threads", str(threads))
        smuggled = request("GET", "/smuggled")
        if framing == "chunked":
            post = request("POST", "/", [("Transfer-Encoding", "chunked")]) + chunked(smuggled)
        else:
            post = request("POST", "/", body=smuggled)
        with server.connect() as wire:
            wire.send(post + request("GET", "/second"))
            first = wire.read_response()
            expected = len(smuggled)  # chunked too: the loop read it whole, length known
            assert first.body == b"did not read %s" % str(expected).encode()
            second = wire.read_response()
            assert second.status == 200
            if first.closes:
                assert wire.read_until_eof() == b""
            else:
                assert wire.nothing_within(0.2), "the unread body was answered as a request"

    @pytest.mark.parametrize("mode", ["spooled", "streamed"])
    def test_large_unread_body_the_response_still_arrives(self, servers, threads, mode):
        # Spooled (the default): the loop reads the whole body before the app runs, so the
        # connection can carry on. Streamed: the server answers without reading the body
        # and must close the connection in a way that does not destroy the answer.
        extra = ["--stream-request-body"] if mode == "streamed" else []
        server = servers.get("noread:app", "--threads", str(threads), *extra)
        body = b"u" * (2 * 1024 * 1024)
        with server.connect() as wire:
            sender_error = []

            def send_body():
                try:
                    wire.sock.sendall(body)
                except OSError as exc:
                    sender_error.append(exc)

            wire.send(request("POST", "/", [("Content-Length", str(len(body)))]))
            t = threading.Thread(target=send_body, daemon=True)
            t.start()
            resp = wire.read_response()
            t.join(10)
            assert resp.status == 200
            assert resp.body == b"did not read %d" % len(body)
            assert resp.closes == (mode == "streamed")


class TestExpectContinue:
    def test_100_continue_is_sent_when_the_app_reads(self, echo):
        body = b"expected body " * 1000
        with echo.connect() as wire:
            wire.send(
                request(
                    "POST", "/exp", [("Expect", "100-continue"), ("Content-Length", str(len(body)))]
                )
            )
            interim = wire.read_response()
            assert (interim.status, interim.version) == (100, "HTTP/1.1")
            wire.send(body)
            final = wire.read_response()
            assert _json(final)["body"] == body.decode()
            wire.send(request("GET", "/next"))
            assert _json(wire.read_response())["path"] == "/next"

    def test_100_continue_comes_at_once_when_the_loop_reads_the_body(self, servers, threads):
        # By default the loop reads the body before the app runs (as nginx would): the 100
        # comes at once, though the app sleeps 0.6 s before it reads.
        server = servers.get("slow:app", "--threads", str(threads))
        with server.connect() as wire:
            wire.send(
                request("POST", "/?s=0.6", [("Expect", "100-continue"), ("Content-Length", "5")])
            )
            started = time.monotonic()
            assert wire.read_response().status == 100
            assert time.monotonic() - started < 0.4
            wire.send(b"hello")
            assert _json(wire.read_response())["body_length"] == 5

    def test_100_continue_waits_for_the_apps_first_read(self, servers, threads):
        # Streamed bodies: the slow app sleeps 0.6 s before it reads: no 100 before that.
        server = servers.get("slow:app", "--threads", str(threads), "--stream-request-body")
        with server.connect() as wire:
            wire.send(
                request("POST", "/?s=0.6", [("Expect", "100-continue"), ("Content-Length", "5")])
            )
            assert wire.nothing_within(0.4), "100 Continue was sent before the app read"
            interim = wire.read_response()
            assert interim.status == 100
            wire.send(b"hello")
            assert _json(wire.read_response())["body_length"] == 5

    def test_app_that_does_not_read_gets_no_100_and_does_not_hang(self, servers, threads):
        server = servers.get("noread:app", "--threads", str(threads), "--stream-request-body")
        with server.connect() as wire:
            wire.send(
                request("POST", "/", [("Expect", "100-continue"), ("Content-Length", "100000")])
            )
            resp = wire.read_response()
            assert resp.status == 200, "expected the final response, not an interim one"
            assert resp.body == b"did not read 100000"
            # The body never came, so the connection cannot be reused: the server closes.
            rest = wire.read_until_eof()
            assert b"100 Continue" not in rest

    def test_chunked_expect_continue(self, echo):
        body = b"c" * 70000
        with echo.connect() as wire:
            wire.send(
                request("POST", "/", [("Expect", "100-continue"), ("Transfer-Encoding", "chunked")])
            )
            assert wire.read_response().status == 100
            wire.send(chunked(body, 5000))
            assert _json(wire.read_response())["body_length"] == len(body)

    def test_http10_expect_gets_no_100(self, echo):
        with echo.connect() as wire:
            wire.send(
                request(
                    "POST",
                    "/",
                    [("Expect", "100-continue"), ("Content-Length", "3")],
                    version="HTTP/1.0",
                    host=None,
                )
                + b"abc"
            )
            resp = wire.read_response()
            assert resp.status == 200 and _json(resp)["body"] == "abc"

    def test_body_sent_without_waiting_is_read(self, echo):
        # curl sends the body anyway after a second; a 100 may or may not come, the
        # final answer must be right and the connection reusable.
        with echo.connect() as wire:
            wire.send(request("POST", "/", [("Expect", "100-continue")], body=b"eager"))
            final = wire.read_final_response()
            assert _json(final)["body"] == "eager"
            wire.send(request("GET", "/next"))
            assert _json(wire.read_final_response())["path"] == "/next"
