"""The PROXY protocol on real sockets: Debian's HAProxy in front of forklift (send-proxy and
send-proxy-v2), a uwsgi listener behind a PROXY header, and peers that break the rules
(outside --proxy-allow-ips, malformed headers fed byte by byte, a header that never ends).

Clients bind 127.0.0.2 (still loopback): the app must see that address and the client's own
port, never HAProxy's 127.0.0.1 and its outgoing port.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

import pytest

from forklift.proxy_protocol import build_v1, build_v2

from .certs import shared_pki
from .haproxy_support import HAProxy
from .server import Forklift, wait_for
from .wire import Wire

CLIENT_HOST = "127.0.0.2"
GET = b"GET /who HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    """echo over HTTP and uwsgi, both expecting a PROXY header; head-timeout 1 s."""
    server = Forklift(
        tmp_path_factory.mktemp("pp"),
        "echo:app",
        "--proxy-protocol",
        "--head-timeout",
        "1",
        "--socket",
        "127.0.0.1:0",
    ).start()
    assert wait_for(lambda: server.stderr().count("listening on") >= 2, 10), server.stderr()
    yield server
    server.stop()


def uwsgi_port(server) -> int:
    line = next(x for x in server.stderr().splitlines() if "(uwsgi)" in x)
    return int(line.split("listening on ")[1].split()[0].rpartition(":")[2])


def client(port: int, source: str = CLIENT_HOST) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def environ_of(response) -> dict:
    return json.loads(response.body)["environ"]


@pytest.mark.requires("haproxy")
@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_haproxy_tells_forklift_who_the_client_is(proxied, tmp_path, send_proxy):
    haproxy = HAProxy(tmp_path, {"web": (proxied.port, send_proxy)}).start()
    try:
        with client(haproxy.ports["web"]) as sock:
            client_port = sock.getsockname()[1]
            wire = Wire(sock)
            for _ in range(2):  # keep-alive: the header was for the whole connection
                wire.send(GET)
                response = wire.read_response()
                assert response.status == 200
                environ = environ_of(response)
                assert environ["REMOTE_ADDR"] == CLIENT_HOST
                assert environ["REMOTE_PORT"] == str(client_port)
                assert json.loads(response.body)["path"] == "/who"  # the header is not the path
    finally:
        haproxy.stop()


def uwsgi_packet(pairs: dict) -> bytes:
    block = b"".join(
        struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode()
        for k, v in pairs.items()
    )
    return struct.pack("<BHB", 0, len(block), 0) + block


def uwsgi_exchange(server, header: bytes, pairs: dict) -> dict:
    with client(uwsgi_port(server), "127.0.0.1") as sock:
        wire = Wire(sock)
        wire.send(header + uwsgi_packet(pairs))
        return environ_of(wire.read_response())


NGINX_VARS = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/u",
    "QUERY_STRING": "",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "SERVER_NAME": "localhost",
    "SERVER_PORT": "80",
    "HTTP_HOST": "localhost",
}


def test_uwsgi_listener_behind_a_proxy_header(proxied):
    header = build_v2(("2001:db8::42", 51000), ("::1", 443))
    # A packet without REMOTE_ADDR: the client is the one the PROXY header names.
    environ = uwsgi_exchange(proxied, header, NGINX_VARS)
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("2001:db8::42", "51000")
    # A web server's packet names the HTTP client itself: it knows better than a TCP
    # balancer between it and forklift, whose header names the web server.
    vars_ = dict(NGINX_VARS, REMOTE_ADDR="198.51.100.9", REMOTE_PORT="40000")
    environ = uwsgi_exchange(proxied, build_v1(("10.0.0.5", 1234), ("127.0.0.1", 80)), vars_)
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("198.51.100.9", "40000")


def test_a_peer_outside_the_allow_list_is_closed_and_logged(proxied):
    mark = proxied.stderr_mark()
    with client(proxied.port) as sock:  # 127.0.0.2: not in the default 127.0.0.1,::1
        sock.sendall(build_v1(("203.0.113.1", 1), ("127.0.0.1", 80)) + GET)
        assert closed_by_server(sock)
    log = proxied.wait_for_stderr(mark, "proxy-allow-ips")
    assert f"from {CLIENT_HOST}" in log and "--proxy-allow-ips" in log, log


def closed_by_server(sock) -> bool:
    """The server closed: EOF, or a reset when it closed with our bytes unread."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def send_byte_by_byte(sock, data: bytes) -> int:
    """Send one byte at a time until the server closes; the count that went out."""
    for i in range(len(data)):
        try:
            sock.sendall(data[i : i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return i
        time.sleep(0.002)
    return len(data)


@pytest.mark.parametrize(
    "bad, reason",
    [
        (b"PROXY TCP4 203.0.113.1 127.0.0.1 99999 80\r\n", "bad port"),
        (b"PROXY TCP4 203.0.113.1 127.0.0.1 1 80\n", "stray CR or LF"),
        (b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n", "longer than 107"),
        (
            build_v2(("203.0.113.1", 1), ("127.0.0.1", 80)).replace(b"\x21\x11", b"\x11\x11"),
            "version",
        ),
        (
            build_v2(("203.0.113.1", 1), ("127.0.0.1", 80)).replace(b"\x21\x11", b"\x2f\x11"),
            "command",
        ),
        (GET, "no PROXY header"),
    ],
    ids=["v1-port", "v1-lf", "v1-long", "v2-version", "v2-command", "missing"],
)
def test_malformed_headers_fed_byte_by_byte_are_closed_and_logged(proxied, bad, reason):
    mark = proxied.stderr_mark()
    with client(proxied.port, "127.0.0.1") as sock:
        send_byte_by_byte(sock, bad + GET)
        data = b""
        for _ in range(100):
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    assert b"HTTP/1.1 200" not in data  # the app never ran
    log = proxied.wait_for_stderr(mark, reason)
    assert reason in log and "PROXY" in log, log
    lines = [x for x in log.splitlines() if reason in x]
    assert len(lines) == 1, log  # one line per connection


def test_a_header_that_never_ends_is_cut_at_head_timeout(proxied):
    mark = proxied.stderr_mark()
    with client(proxied.port, "127.0.0.1") as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.1 ")
        started = time.monotonic()
        assert closed_by_server(sock)
        assert 0.8 < time.monotonic() - started < 4.0
        # meanwhile others were served: a proper client right now
    log = proxied.wait_for_stderr(mark, "head-timeout")
    assert "PROXY header" in log and "head-timeout" in log, log


def test_others_are_served_while_a_proxy_header_stalls(proxied):
    with client(proxied.port, "127.0.0.1") as stalled:
        stalled.sendall(b"PROXY TCP6 ")
        started = time.monotonic()
        with client(proxied.port, "127.0.0.1") as sock:
            wire = Wire(sock)
            wire.send(build_v1(("198.51.100.4", 4444), ("127.0.0.1", 80)) + GET)
            assert environ_of(wire.read_response())["REMOTE_ADDR"] == "198.51.100.4"
        assert time.monotonic() - started < 0.9


@pytest.mark.requires("haproxy", "openssl")
def test_haproxy_send_proxy_v2_then_tls_to_forklift(tmp_path, tmp_path_factory):
    """HAProxy originates TLS to forklift after its PROXY header (`ssl send-proxy-v2`):
    the header comes first, in clear, then the handshake."""
    pki = shared_pki(tmp_path_factory)
    server = Forklift(
        tmp_path, "echo:app", "--proxy-protocol",
        "--https", f"127.0.0.1:0,{pki.cert},{pki.key}", listen=(),
    ).start()  # fmt: skip
    try:
        assert wait_for(lambda: "(https)" in server.stderr(), 10), server.stderr()
        line = next(x for x in server.stderr().splitlines() if "(https)" in x)
        port = int(line.split("listening on ")[1].split()[0].rpartition(":")[2])
        options = f"ssl verify required ca-file {pki.ca} sni str(localhost) send-proxy-v2"
        haproxy = HAProxy(tmp_path, {"tls": (port, options)}).start()
        try:
            with client(haproxy.ports["tls"]) as sock:
                client_port = sock.getsockname()[1]
                wire = Wire(sock)
                wire.send(GET)
                response = wire.read_response()
        finally:
            haproxy.stop()
        answer = json.loads(response.body)
        assert answer["environ"]["REMOTE_ADDR"] == CLIENT_HOST
        assert answer["environ"]["REMOTE_PORT"] == str(client_port)
        assert answer["wsgi"]["wsgi.url_scheme"] == "https"
    finally:
        server.stop()


def test_an_ini_with_http_enable_proxy_protocol(tmp_path):
    """The shape of uwsgi.ini files behind HAProxy or a cloud balancer, run unchanged."""
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(
        "[uwsgi]\n"
        f"chdir = {Path(__file__).parent / 'apps'}\n"
        "module = echo:app\n"
        "http-socket = 127.0.0.1:0\n"
        "http-enable-proxy-protocol = 1\n"
        "http-auto-chunked = true\n"
        "http-keepalive = 75\n"
        "http-timeout = 75\n"
        "master = 1\n"
        "thunder-lock = 1\n"
        "die-on-term = true\n"
    )
    server = Forklift(tmp_path, None, "--ini", str(ini), listen=()).start()
    try:
        assert wait_for(lambda: "listening on" in server.stderr(), 10), server.stderr()
        line = next(x for x in server.stderr().splitlines() if "listening on" in x)
        port = int(line.split("listening on ")[1].split()[0].rpartition(":")[2])
        with client(port, "127.0.0.1") as sock:
            wire = Wire(sock)
            wire.send(build_v2(("192.0.2.55", 61000), ("198.51.100.1", 80)) + GET)
            environ = environ_of(wire.read_response())
        assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("192.0.2.55", "61000")
        assert "unknown option 'http-enable-proxy-protocol'" not in server.stderr()
    finally:
        server.stop()


@pytest.mark.requires("haproxy")
def test_haproxy_health_checks_with_a_local_header_are_served_quietly(proxied, tmp_path):
    """HAProxy's checks over send-proxy-v2 carry a LOCAL header (the proxy speaking for
    itself): accepted, REMOTE_ADDR the real peer, and no warning every interval."""
    mark = proxied.stderr_mark()
    out_mark = proxied.stdout_path.stat().st_size
    haproxy = HAProxy(
        tmp_path,
        {
            "checked": (
                proxied.port,
                "send-proxy-v2 check check-send-proxy inter 100ms",
                ("option httpchk GET /health",),
            )
        },
    ).start()
    try:

        def checks_seen() -> int:
            with open(proxied.stdout_path, "rb") as f:
                f.seek(out_mark)
                return f.read().count(b"GET /health")

        assert wait_for(lambda: checks_seen() >= 3, 10), proxied.stdout()[-2000:]
    finally:
        haproxy.stop()
    assert "WARNING" not in proxied.stderr_since(mark), proxied.stderr_since(mark)
    checks = [x for x in proxied.stdout().splitlines() if "GET /health" in x]
    assert checks and all(x.startswith("127.0.0.1 ") for x in checks), checks[:3]
