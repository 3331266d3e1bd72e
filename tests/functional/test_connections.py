"""Connection management: keep-alive, pipelining, HTTP/1.0, bodiless responses, idle timeout."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from support.wire import count_responses, request


def _echo_json(resp) -> dict:
    assert resp.status == 200, resp
    return json.loads(resp.body)


@pytest.fixture(params=["tcp", "unix"])
def echo_any(servers, threads, request):
    """The echo app over TCP and over a unix socket (waitress runs its tests on both)."""
    return servers.get("echo:app", "--threads", str(threads), unix=request.param == "unix")


class TestKeepAlive:
    def test_hundred_requests_on_one_raw_connection(self, echo_any):
        with echo_any.connect() as wire:
            for i in range(100):
                wire.send(request("GET", f"/n/{i}?i={i}"))
                resp = wire.read_response()
                data = _echo_json(resp)
                assert data["path"] == f"/n/{i}"
                assert data["query"] == f"i={i}"
                assert not resp.closes
            assert wire.nothing_within(0.05)  # still open, nothing extra on the wire

    def test_hundred_requests_with_http_client(self, echo):
        conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=5)
        try:
            ports = set()
            for i in range(100):
                body = b"x" * i
                conn.request("POST", f"/post/{i}", body=body)
                resp = conn.getresponse()
                data = json.loads(resp.read())
                assert resp.status == 200
                assert data["body_length"] == i
                ports.add(data["environ"]["REMOTE_PORT"])
            assert len(ports) == 1, "http.client had to reconnect: keep-alive was broken"
        finally:
            conn.close()

    def test_client_connection_close_is_honoured(self, echo):
        with echo.connect() as wire:
            wire.send(request("GET", "/bye", [("Connection", "close")]))
            resp = wire.read_response()
            assert resp.status == 200
            assert resp.closes
            assert wire.read_until_eof() == b""

    def test_idle_keepalive_connection_is_closed_after_the_timeout(self, servers, threads):
        server = servers.get("echo:app", "--threads", str(threads), "--keepalive-timeout", "1")
        with server.connect() as wire:
            wire.send(request("GET", "/first"))
            assert wire.read_response().status == 200
            start = time.monotonic()
            assert wire.read_until_eof(timeout=4) == b""
            assert 0.5 < time.monotonic() - start < 3.5


class TestPipelining:
    def test_requests_in_one_send_are_answered_in_order(self, echo_any):
        paths = [f"/p{i}" for i in range(10)]
        data = b"".join(
            request("POST", p, body=p.encode() * 3) if i % 2 else request("GET", p)
            for i, p in enumerate(paths)
        )
        with echo_any.connect() as wire:
            wire.send(data)
            for i, p in enumerate(paths):
                got = _echo_json(wire.read_response())
                assert got["path"] == p
                assert got["body"] == (p * 3 if i % 2 else "")
            assert wire.nothing_within(0.05)

    def test_pipelined_chunked_and_head_requests(self, echo):
        body = b"chunk-one" * 100
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        data = (
            request("POST", "/c", [("Transfer-Encoding", "chunked")])
            + chunked
            + request("HEAD", "/h")
            + request("GET", "/last", [("Connection", "close")])
        )
        with echo.connect() as wire:
            wire.send(data)
            first = _echo_json(wire.read_response())
            assert first["path"] == "/c" and first["body"] == body.decode()
            head = wire.read_response("HEAD")
            assert head.status == 200 and head.body == b""
            last = wire.read_response()
            assert _echo_json(last)["path"] == "/last"
            assert wire.read_until_eof() == b""

    def test_many_small_requests_in_one_send(self, echo):
        with echo.connect() as wire:
            wire.send(b"".join(request("GET", f"/m{i}") for i in range(200)))
            for i in range(200):
                assert _echo_json(wire.read_response())["path"] == f"/m{i}"

    @pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
    def test_nothing_is_answered_after_connection_close(self, echo, version):
        with echo.connect() as wire:
            wire.send(
                request("GET", "/last", [("Connection", "close")], version=version)
                + request("GET", "/smuggled")
            )
            everything = wire.read_until_eof()
        assert count_responses(everything) == 1
        assert b"/smuggled" not in everything

    def test_request_then_half_close_is_answered(self, echo):
        with echo.connect() as wire:
            wire.send(request("GET", "/half") + request("GET", "/half2"))
            wire.sock.shutdown(socket.SHUT_WR)
            assert _echo_json(wire.read_response())["path"] == "/half"
            assert _echo_json(wire.read_response())["path"] == "/half2"
            assert wire.read_until_eof() == b""

    def test_request_split_across_sends(self, echo):
        data = request("POST", "/split?x=1", body=b"0123456789")
        with echo.connect() as wire:
            for i in range(0, len(data), 7):
                wire.send(data[i : i + 7])
                time.sleep(0.002)  # the behaviour under test: pieces arrive apart, not one read
            got = _echo_json(wire.read_response())
            assert got["body"] == "0123456789" and got["query"] == "x=1"


class TestHttp10:
    def test_without_keepalive_the_server_closes(self, echo):
        with echo.connect() as wire:
            wire.send(request("GET", "/ten", version="HTTP/1.0", host=None))
            resp = wire.read_response()
            assert resp.version in ("HTTP/1.0", "HTTP/1.1")
            assert _echo_json(resp)["environ"]["SERVER_PROTOCOL"] == "HTTP/1.0"
            assert wire.read_until_eof() == b""

    def test_with_keepalive_the_connection_stays(self, echo):
        with echo.connect() as wire:
            for i in range(3):
                wire.send(
                    request(
                        "GET",
                        f"/ka{i}",
                        [("Connection", "keep-alive")],
                        version="HTTP/1.0",
                        host=None,
                    )
                )
                resp = wire.read_response()
                assert _echo_json(resp)["path"] == f"/ka{i}"
                assert (resp.header("connection") or "").lower() == "keep-alive"
            assert wire.nothing_within(0.05)

    def test_streamed_body_is_close_delimited_not_chunked(self, servers, threads):
        server = servers.get("streaming:app", "--threads", str(threads))
        from .apps.streaming import expected

        with server.connect() as wire:
            wire.send(
                request(
                    "GET",
                    "/?chunks=50&size=100",
                    [("Connection", "keep-alive")],
                    version="HTTP/1.0",
                    host=None,
                )
            )
            resp = wire.read_response()
            assert not resp.chunked  # HTTP/1.0 has no chunked coding
            assert resp.body == expected(50, 100)


class TestBodilessResponses:
    def test_head_has_the_headers_but_no_body(self, servers, threads):
        server = servers.get("writer:app", "--threads", str(threads))
        with server.connect() as wire:
            wire.send(request("GET", "/?cl=1") + request("HEAD", "/?cl=1"))
            get = wire.read_response()
            head = wire.read_response("HEAD")
            assert get.status == head.status == 200
            assert head.header("content-type") == get.header("content-type") == "text/plain"
            assert head.header("content-length") == get.header("content-length")
            # The next request is answered right after the head: no stray body bytes.
            wire.send(request("GET", "/"))
            from .apps.writer import BODY

            assert wire.read_response().body == BODY

    def test_head_on_echo_keeps_the_connection_usable(self, echo):
        with echo.connect() as wire:
            wire.send(request("HEAD", "/h"))
            head = wire.read_response("HEAD")
            assert head.status == 200 and head.has_header("content-length")
            assert wire.nothing_within(0.1), "a HEAD response carried body bytes"
            wire.send(request("GET", "/after-head"))
            assert _echo_json(wire.read_response())["path"] == "/after-head"

    def test_head_of_a_streamed_response_has_no_body(self, servers, threads):
        server = servers.get("streaming:app", "--threads", str(threads))
        with server.connect() as wire:
            wire.send(request("HEAD", "/?chunks=10") + request("GET", "/?chunks=1&size=20"))
            head = wire.read_response("HEAD")
            assert head.status == 200
            nxt = wire.read_response()
            assert nxt.status == 200 and len(nxt.body) == 20

    @pytest.mark.parametrize("status", [204, 304])
    def test_204_and_304_have_no_body(self, echo, status):
        with echo.connect() as wire:
            wire.send(request("GET", f"/?status={status}") + request("GET", "/next"))
            resp = wire.read_response()
            assert resp.status == status
            assert not resp.has_header("transfer-encoding")
            if status == 204:
                assert not resp.has_header("content-length")
            assert _echo_json(wire.read_response())["path"] == "/next"
