"""forklift.tls on its own: certificate files into a context, and the non-blocking handshake.

The handshake is driven the way the worker drives it: both ends non-blocking on a socket
pair, `handshake_step` called again only when it said which way to wait.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import time
import warnings

import pytest

from forklift.config import TlsFiles, split_https
from forklift.errors import ConfigError
from forklift.tls import TlsHandshakeError, accept_tls, build_context, handshake_step

from .certs import shared_pki

pytestmark = pytest.mark.requires("openssl")


@pytest.fixture
def pki(tmp_path_factory):
    return shared_pki(tmp_path_factory)


def client_context(pki, **kwargs) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    for name, value in kwargs.items():
        setattr(ctx, name, value)
    return ctx


def drive(server: ssl.SSLSocket, client: ssl.SSLSocket, timeout: float = 5.0) -> list:
    """Run both handshakes to the end; returns what the server asked to wait for, in order."""
    waits, server_done, client_done = [], False, False
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        while not (server_done and client_done):
            assert time.monotonic() < deadline, "handshake did not finish"
            if not server_done:
                want = handshake_step(server)
                server_done = want == 0
                if want:
                    waits.append(want)
            if not client_done:
                try:
                    client.do_handshake()
                    client_done = True
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
            if not server_done:
                sel.register(server, waits[-1])
                sel.select(0.5)
                sel.unregister(server)
    return waits


def tls_pair(server_ctx, client_ctx, server_hostname="localhost"):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    server = accept_tls(server_ctx, a)
    client = client_ctx.wrap_socket(
        b, server_hostname=server_hostname, do_handshake_on_connect=False
    )
    return server, client


def test_handshake_completes_in_steps_with_alpn_http11(pki):
    ctx = build_context(TlsFiles(str(pki.cert), str(pki.key)))
    client_ctx = client_context(pki)
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    server, client = tls_pair(ctx, client_ctx)
    with server, client:
        waits = drive(server, client)
        assert selectors.EVENT_READ in waits  # it waited instead of blocking
        assert server.selected_alpn_protocol() == "http/1.1"
        assert client.version() in ("TLSv1.2", "TLSv1.3")
        client.sendall(b"ping")
        deadline = time.monotonic() + 5
        while True:
            try:
                assert server.recv(4) == b"ping"
                break
            except ssl.SSLWantReadError:
                assert time.monotonic() < deadline
                time.sleep(0.01)


def test_tls_1_1_clients_are_refused_by_the_server(pki):
    ctx = build_context(TlsFiles(str(pki.cert), str(pki.key)))
    client_ctx = client_context(pki)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: the point
        client_ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    client_ctx.set_ciphers("ALL:@SECLEVEL=0")
    server, client = tls_pair(ctx, client_ctx)
    with server, client, pytest.raises(TlsHandshakeError, match="UNSUPPORTED_PROTOCOL"):
        drive_server_only(server, client)


def drive_server_only(server, client, timeout: float = 5.0) -> None:
    """Like `drive`, but errors of the client are ignored: only the server's verdict counts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.do_handshake()
        except (ssl.SSLError, OSError):
            pass
        if handshake_step(server) == 0:
            return
        time.sleep(0.01)
    raise AssertionError("handshake neither finished nor failed")


def test_a_client_hanging_up_mid_handshake_is_a_typed_error(pki):
    ctx = build_context(TlsFiles(str(pki.cert), str(pki.key)))
    a, b = socket.socketpair()
    a.setblocking(False)
    server = accept_tls(ctx, a)
    with server:
        b.sendall(b"\x16\x03\x01\x00\x05hello")  # a record header, then not a ClientHello
        b.close()
        deadline = time.monotonic() + 5
        with pytest.raises(TlsHandshakeError):
            while time.monotonic() < deadline:
                if handshake_step(server) == 0:
                    break
                time.sleep(0.01)


def test_client_certificate_required_with_bang_ca(pki):
    address, files = split_https(f":8443,{pki.cert},{pki.key},,!{pki.ca}")
    assert files.require_client_cert and files.ca == str(pki.ca)
    ctx = build_context(files)
    server, client = tls_pair(ctx, client_context(pki))
    with server, client, pytest.raises(TlsHandshakeError, match="CERTIFICATE"):
        drive_server_only(server, client)
    client_ctx = client_context(pki)
    client_ctx.load_cert_chain(str(pki.cert), str(pki.key))  # signed by the same CA
    server, client = tls_pair(ctx, client_ctx)
    with server, client:
        drive(server, client)
        assert server.getpeercert()["subject"]


def test_split_https_uwsgi_forms(pki):
    assert split_https(":8443,a.crt,a.key") == (":8443", TlsFiles("a.crt", "a.key", key="https"))
    _, files = split_https("127.0.0.1:8443, a.crt, a.key, HIGH, ca.crt", key="--https")
    assert files == TlsFiles("a.crt", "a.key", "HIGH", "ca.crt", False, "--https")
    for bad in (":8443", ":8443,a.crt", ":8443,,a.key", "a,b,c,d,e,f"):
        with pytest.raises(ConfigError, match="ADDR,CERT,KEY"):
            split_https(bad)


def one_line_error(files: TlsFiles) -> str:
    with pytest.raises(ConfigError) as info:
        build_context(files)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_files_are_named(pki, tmp_path):
    missing = tmp_path / "nope.crt"
    message = one_line_error(TlsFiles(str(missing), str(pki.key), key="https"))
    assert message == f"https: certificate file {missing}: No such file or directory"
    message = one_line_error(TlsFiles(str(pki.cert), str(tmp_path / "nope.key")))
    assert message.startswith("--https: key file ") and "nope.key" in message


def test_a_key_that_does_not_match_is_named(pki):
    message = one_line_error(TlsFiles(str(pki.cert), str(pki.other_key)))
    assert message == f"--https: key file {pki.other_key} does not match certificate {pki.cert}"


def test_not_pem_and_encrypted_keys_are_named(pki, tmp_path):
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    assert str(junk) in one_line_error(TlsFiles(str(junk), str(pki.key)))
    message = one_line_error(TlsFiles(str(pki.cert), str(pki.encrypted_key)))
    assert "encrypted" in message and str(pki.encrypted_key) in message


def test_bad_ciphers_and_ca_are_named(pki, tmp_path):
    message = one_line_error(TlsFiles(str(pki.cert), str(pki.key), ciphers="NOSUCHCIPHER"))
    assert "NOSUCHCIPHER" in message
    message = one_line_error(TlsFiles(str(pki.cert), str(pki.key), ca=str(tmp_path / "x.pem")))
    assert "CA file" in message and "x.pem" in message
