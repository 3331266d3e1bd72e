"""forklift.preludes: the PROXY header and TLS handshake, driven as the event loop drives them.

A socket pair stands for an accepted connection; the test plays the proxy or client on the
other end, sending whole, split or byte by byte, and calls `step()` only when the socket is
ready in the direction it asked for.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import threading
import time

import pytest

from forklift.config import TlsFiles
from forklift.errors import PeerGone
from forklift.preludes import Prelude, SilentPeer
from forklift.proxy_protocol import ProxyHeaderError, build_v1, build_v2
from forklift.tls import TlsHandshakeError, TlsSocket, build_context

from .certs import shared_pki

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
V1 = build_v1(("203.0.113.7", 40000), ("127.0.0.1", 8000))
V2 = build_v2(("2001:db8::7", 40001), ("::1", 8443), tlvs=b"\x04\x00\x03abc")


@pytest.fixture
def pki(tmp_path_factory):
    return shared_pki(tmp_path_factory)


def run(prelude: Prelude, timeout: float = 5.0) -> None:
    """Step the prelude to the end, waiting each time as it asks (bounded)."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        while True:
            want = prelude.step()
            if not want:
                return
            left = deadline - time.monotonic()
            assert left > 0, "prelude did not finish"
            sel.register(prelude, want)
            sel.select(min(left, 0.5))
            sel.unregister(prelude)


def pair():
    server, client = socket.socketpair()
    server.setblocking(False)
    return server, client


def send_in_pieces(sock, data: bytes, size: int) -> threading.Thread:
    def send():
        for i in range(0, len(data), size):
            sock.sendall(data[i : i + size])
            time.sleep(0.001)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_proxy_header_is_taken_and_nothing_more(header, size):
    server, client = pair()
    with server, client:
        sender = send_in_pieces(client, header + REQUEST, size)
        prelude = Prelude(server, proxy=True)
        run(prelude)
        sender.join(5)
        assert prelude.proxy.source in (("203.0.113.7", 40000), ("2001:db8::7", 40001))
        assert prelude.sock is server
        server.setblocking(True)
        server.settimeout(5)
        got = b""
        while len(got) < len(REQUEST):
            got += server.recv(4096)
        assert got == REQUEST  # the request is untouched, for the protocol parser


def test_missing_header_is_refused_at_the_first_byte():
    server, client = pair()
    with server, client:
        client.sendall(REQUEST)
        with pytest.raises(ProxyHeaderError, match="no PROXY header"):
            run(Prelude(server, proxy=True))


def test_malformed_header_byte_by_byte():
    server, client = pair()
    with server, client:
        sender = send_in_pieces(client, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", 1)
        with pytest.raises(ProxyHeaderError, match="bad port"):
            run(Prelude(server, proxy=True))
        sender.join(5)


def test_peer_closing_midway_is_peer_gone():
    server, client = pair()
    with server:
        client.sendall(V1[:10])
        client.close()
        with pytest.raises(PeerGone, match="before the PROXY header was complete"):
            run(Prelude(server, proxy=True))


def tls_client(sock, pki, results: list, payload: bytes = b"", header: bytes = b""):
    """A blocking TLS client in a thread: optional PROXY header, handshake, payload."""

    def go():
        try:
            if header:
                sock.sendall(header)
            ctx = ssl.create_default_context(cafile=str(pki.ca))
            with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
                tls.sendall(payload)
                results.append(tls.recv(100))
        except (OSError, ssl.SSLError) as exc:
            results.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    return thread


@pytest.mark.requires("openssl")
def test_proxy_then_tls_then_plaintext_request(pki):
    ctx = build_context(TlsFiles(str(pki.cert), str(pki.key)))
    server, client = pair()
    client.settimeout(5)
    results: list = []
    thread = tls_client(client, pki, results, payload=REQUEST, header=V1)
    prelude = Prelude(server, proxy=True, tls_context=ctx)
    run(prelude)
    assert isinstance(prelude.sock, TlsSocket)
    assert prelude.proxy.source == ("203.0.113.7", 40000)
    got, deadline = b"", time.monotonic() + 5
    with selectors.DefaultSelector() as sel:
        sel.register(prelude, selectors.EVENT_READ)
        while len(got) < len(REQUEST) and time.monotonic() < deadline:
            try:
                got += prelude.sock.recv(65536)
            except BlockingIOError:
                sel.select(0.5)  # TLS socket: wait for the next record
    assert got == REQUEST
    prelude.sock.send(b"pong")
    thread.join(5)
    assert results == [b"pong"]
    prelude.sock.close()
    client.close()


@pytest.mark.requires("openssl")
def test_a_plaintext_client_on_a_tls_listener_fails_the_handshake(pki):
    ctx = build_context(TlsFiles(str(pki.cert), str(pki.key)))
    server, client = pair()
    with client:
        client.sendall(REQUEST)
        with pytest.raises(TlsHandshakeError):
            run(Prelude(server, proxy=False, tls_context=ctx))


@pytest.mark.parametrize(
    "tls",
    [
        pytest.param(False, id="proxy"),
        pytest.param(True, id="tls", marks=pytest.mark.requires("openssl")),
    ],
)
def test_a_peer_that_closes_without_a_byte_is_a_silent_peer(tls, tmp_path_factory):
    """A load balancer's TCP check connects and closes: no warning each time."""
    ctx = None
    if tls:
        pki = shared_pki(tmp_path_factory)
        ctx = build_context(TlsFiles(str(pki.cert), str(pki.key)))
    server, client = pair()
    client.close()
    with server, pytest.raises(SilentPeer):
        run(Prelude(server, proxy=not tls, tls_context=ctx))
