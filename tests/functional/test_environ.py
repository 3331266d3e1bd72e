"""The WSGI environ an app sees for real requests (the echo app sends it back as JSON)."""

from __future__ import annotations

import json
import socket

import pytest

from support.wire import request


def _environ(server, data: bytes) -> dict:
    with server.connect() as wire:
        wire.send(data)
        resp = wire.read_response()
        local = wire.sock.getsockname()
    assert resp.status == 200, resp
    got = json.loads(resp.body)
    got["client"] = local
    return got


def test_required_keys_and_types(echo, threads):
    got = _environ(echo, request("POST", "/x/y?a=1", [("Content-Type", "text/plain")], b"hi"))
    env, wsgi = got["environ"], got["wsgi"]
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/x/y"
    assert env["QUERY_STRING"] == "a=1"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "2"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert wsgi["wsgi.version"] == [1, 0]
    assert wsgi["wsgi.url_scheme"] == "http"
    assert wsgi["wsgi.multithread"] is (threads > 1)
    assert wsgi["wsgi.multiprocess"] is False
    assert wsgi["wsgi.run_once"] is False


def test_path_info_is_percent_decoded_latin1(echo):
    got = _environ(echo, request("GET", "/caf%C3%A9/a%20b/%2Fslash?q=caf%C3%A9"))
    path = got["environ"]["PATH_INFO"]
    assert path == "/caf\xc3\xa9/a b//slash"  # UTF-8 bytes carried one per latin-1 char
    assert path.encode("latin-1").decode("utf-8") == "/café/a b//slash"
    assert got["environ"]["QUERY_STRING"] == "q=caf%C3%A9"


def test_raw_non_ascii_bytes_in_the_target(echo):
    with echo.connect() as wire:
        wire.send(b"GET /\xc3\xa9t\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = json.loads(wire.read_response().body)
    assert got["environ"]["PATH_INFO"].encode("latin-1") == "/été".encode()


def test_query_string_is_untouched(echo):
    query = "a=%20b&c=d%2Fe+f&&g=%ZZ&h=%c3%a9;i=j"
    got = _environ(echo, request("GET", f"/q?{query}"))
    assert got["environ"]["QUERY_STRING"] == query
    assert got["environ"]["PATH_INFO"] == "/q"
    assert got["environ"]["REQUEST_URI"] == f"/q?{query}"


def test_empty_query_string(echo):
    env = _environ(echo, request("GET", "/nothing?"))["environ"]
    assert env["QUERY_STRING"] == ""
    env = _environ(echo, request("GET", "/nothing"))["environ"]
    assert env["QUERY_STRING"] == ""


def test_absolute_form_target(echo):
    env = _environ(echo, request("GET", "http://example.org:8080/abs/p?x=1"))["environ"]
    assert env["PATH_INFO"] == "/abs/p"
    assert env["QUERY_STRING"] == "x=1"
    assert env["HTTP_HOST"] == "example.org:8080"


def test_header_with_underscore_is_dropped(echo):
    env = _environ(
        echo,
        request(
            "GET",
            "/",
            [
                ("X-Forwarded-For", "10.0.0.1"),
                ("X-Forwarded_For", "6.6.6.6"),
                ("X_Real_IP", "6.6.6.6"),
            ],
        ),
    )["environ"]
    assert env["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"
    assert "HTTP_X_REAL_IP" not in env
    assert "6.6.6.6" not in json.dumps(env)


def test_underscore_header_alone_does_not_pose_as_the_dash_one(echo):
    env = _environ(echo, request("GET", "/", [("X-Forwarded_For", "6.6.6.6")]))["environ"]
    assert "HTTP_X_FORWARDED_FOR" not in env


def test_repeated_headers_are_joined(echo):
    env = _environ(
        echo,
        request(
            "GET",
            "/",
            [
                ("Accept", "text/html"),
                ("X-Multi", "a"),
                ("accept", "application/json"),
                ("X-Multi", "b, c"),
                ("Cookie", "a=1"),
                ("Cookie", "b=2"),
            ],
        ),
    )["environ"]
    assert env["HTTP_ACCEPT"] == "text/html, application/json"
    assert env["HTTP_X_MULTI"] == "a, b, c"
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_header_values_keep_inner_space_and_lose_outer(echo):
    env = _environ(echo, request("GET", "/", [("X-Spaced", " \t inner  value \t ")]))["environ"]
    assert env["HTTP_X_SPACED"] == "inner  value"


def test_remote_and_server_addresses(echo):
    got = _environ(echo, request("GET", "/", version="HTTP/1.0", host=None))
    env = got["environ"]
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(got["client"][1])
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(echo.port)


def test_server_name_follows_the_host_header(echo):
    env = _environ(echo, request("GET", "/", host="www.example.com:8443"))["environ"]
    assert env["HTTP_HOST"] == "www.example.com:8443"
    assert env["SERVER_NAME"] == "www.example.com"
    assert env["SERVER_PORT"] == str(echo.port)


class TestMount:
    @pytest.fixture
    def mounted(self, servers, threads):
        return servers.get("echo:app", "--threads", str(threads), "--mount", "/app")

    def test_script_name_and_path_info(self, mounted):
        env = _environ(mounted, request("GET", "/app/x/y?z=1"))["environ"]
        assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == (
            "/app",
            "/x/y",
            "z=1",
        )

    def test_the_prefix_itself(self, mounted):
        env = _environ(mounted, request("GET", "/app"))["environ"]
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "")
        env = _environ(mounted, request("GET", "/app/"))["environ"]
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/")

    def test_percent_encoded_prefix(self, mounted):
        env = _environ(mounted, request("GET", "/%61pp/x"))["environ"]
        assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/x")

    @pytest.mark.parametrize("path", ["/", "/other", "/application", "/ap"])
    def test_outside_the_prefix_is_404(self, mounted, path):
        resp = mounted.exchange(request("GET", path))
        assert resp.status == 404
        assert mounted.exchange(request("GET", "/app/ok")).status == 200


def test_unix_socket_environ(servers, threads):
    server = servers.get("echo:app", "--threads", str(threads), unix=True)
    env = _environ(server, request("GET", "/u", host="sock.example"))["environ"]
    assert env["PATH_INFO"] == "/u"
    assert env["SERVER_NAME"] == "sock.example"
    assert env["REMOTE_ADDR"] in ("", "127.0.0.1")  # no peer address on a unix socket
    env = _environ(server, request("GET", "/u", version="HTTP/1.0", host=None))["environ"]
    assert env["SERVER_NAME"] and env["SERVER_PORT"]


@pytest.mark.requires("ipv6-loopback")
def test_ipv6_listener(servers, threads):
    server = servers.get("echo:app", "--threads", str(threads), listen=("[::1]:0",))
    assert server.addresses[0][0] == socket.AF_INET6
    got = _environ(server, request("GET", "/v6", version="HTTP/1.0", host=None))
    env = got["environ"]
    assert env["REMOTE_ADDR"] == "::1"
    assert env["REMOTE_PORT"] == str(got["client"][1])
    assert env["SERVER_NAME"] == "::1"
    assert env["SERVER_PORT"] == str(server.addresses[0][1][1])
    env = _environ(server, request("GET", "/v6", host=f"[::1]:{server.addresses[0][1][1]}"))[
        "environ"
    ]
    assert env["SERVER_NAME"] == "[::1]"


def test_two_listeners_one_server(servers, tmp_path_factory):
    server = servers.get("echo:app", "--threads", "2", listen=("127.0.0.1:0", "127.0.0.1:0"))
    ports = {addr[1][1] for addr in server.addresses}
    assert len(ports) == 2
    for index in (0, 1):
        with server.connect(index) as wire:
            wire.send(request("GET", f"/l{index}", version="HTTP/1.0", host=None))
            env = json.loads(wire.read_response().body)["environ"]
            assert env["SERVER_PORT"] == str(server.addresses[index][1][1])
