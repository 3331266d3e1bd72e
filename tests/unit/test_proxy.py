"""forklift.proxy: whose word about the client is believed.

X-Forwarded-For/-Proto rewrite REMOTE_ADDR and the URL scheme only when the peer is a trusted
proxy (or a unix socket, which only a local proxy reaches); the rightmost address is the one
the trusted proxy saw, anything left of it the client wrote.
"""

from __future__ import annotations

import pytest

from forklift.config import parse_networks
from forklift.proxy import apply_forwarded, peer_in

LOCAL = parse_networks("127.0.0.1,::1", "--forwarded-allow-ips")
LAN = parse_networks("10.0.0.0/8", "--forwarded-allow-ips")


@pytest.mark.parametrize(
    "host, networks, expected",
    [
        ("127.0.0.1", LOCAL, True),
        ("::1", LOCAL, True),
        ("::ffff:127.0.0.1", LOCAL, True),  # an IPv4 client on a dual-stack socket
        ("fe80::1%eth0", LOCAL, False),  # a zone does not make a link-local address local
        ("10.20.30.40", LAN, True),
        ("11.0.0.1", LAN, False),
        ("not an address", LOCAL, False),
    ],
)
def test_peer_in(host, networks, expected):
    assert peer_in(host, networks) is expected
    assert peer_in(host, networks) is expected  # the cached answer is the same


def environ(**fields) -> dict:
    return {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "5000", "wsgi.url_scheme": "http", **fields}


def test_a_trusted_proxy_names_the_client_and_the_scheme():
    env = environ(HTTP_X_FORWARDED_FOR="203.0.113.9, 198.51.100.7", HTTP_X_FORWARDED_PROTO="HTTPS")
    apply_forwarded(env, ("127.0.0.1", 5000), LOCAL)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("198.51.100.7", "0")
    assert env["wsgi.url_scheme"] == "https"


def test_an_untrusted_peer_changes_nothing():
    env = environ(REMOTE_ADDR="192.0.2.5", HTTP_X_FORWARDED_FOR="127.0.0.1")
    env["HTTP_X_FORWARDED_PROTO"] = "https"
    before = dict(env)
    apply_forwarded(env, ("192.0.2.5", 40000), LOCAL)
    assert env == before


def test_a_unix_socket_peer_is_a_local_proxy():
    env = environ(REMOTE_ADDR="", HTTP_X_FORWARDED_FOR="203.0.113.9")
    apply_forwarded(env, None, LOCAL)
    assert env["REMOTE_ADDR"] == "203.0.113.9"


def test_a_scheme_that_is_not_http_or_https_is_ignored():
    env = environ(HTTP_X_FORWARDED_PROTO="gopher")
    apply_forwarded(env, ("127.0.0.1", 1), LOCAL)
    assert env["wsgi.url_scheme"] == "http"
