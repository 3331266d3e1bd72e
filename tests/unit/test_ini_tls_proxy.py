"""uWSGI keys for TLS, the PROXY protocol and py-autoreload, read into a `Config`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forklift.cli import build_parser, config_from_args
from forklift.config import PROTOCOL_HTTP, ListenAddress, TlsFiles, parse_networks
from forklift.errors import ConfigError
from forklift.ini_config import config_from_ini

FILES = Path(__file__).parent / "ini_files"


def test_https_router_file_serves_tls_on_its_address():
    config = config_from_ini(str(FILES / "https_router.ini")).validate()
    plain, tls = config.listeners
    assert plain == ListenAddress(PROTOCOL_HTTP, "", 8000)
    assert (tls.protocol, tls.host, tls.port) == (PROTOCOL_HTTP, "", 8443)
    assert tls.tls.certfile == str(FILES / "uwsgi-ssl.crt")  # %d: the ini's directory
    assert tls.tls.keyfile == str(FILES / "uwsgi-ssl.key")
    assert tls.tls.ciphers == "HIGH"
    assert tls.tls.key.endswith("https_router.ini:5: https")  # errors name file and line
    assert not any("'https'" in w or ": https" in w for w in config.ini_warnings)


def test_proxy_protocol_file():
    config = config_from_ini(str(FILES / "proxy_protocol.ini")).validate()
    assert config.proxy_protocol is True
    assert config.proxy_allow_ips == parse_networks("127.0.0.1,::1", "x")
    assert config.py_autoreload == 2.0
    warned = " ".join(config.ini_warnings)
    assert "http-enable-proxy-protocol" not in warned and "py-autoreload" not in warned


def test_https_socket_and_client_ca(tmp_path):
    path = tmp_path / "a.ini"
    path.write_text("[uwsgi]\nmodule = a:b\nhttps-socket = 127.0.0.1:9443,c.pem,k.pem,,!ca.pem\n")
    (listener,) = config_from_ini(str(path)).validate().listeners
    assert listener.tls == TlsFiles(
        os.path.abspath("c.pem"),
        os.path.abspath("k.pem"),
        None,
        os.path.abspath("ca.pem"),
        True,
        f"{path}:3: https-socket",
    )


def test_https_without_key_names_file_and_line(tmp_path):
    path = tmp_path / "a.ini"
    path.write_text("[uwsgi]\nmodule = a:b\nhttps = :8443,server.crt\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: https: expected ADDR,CERT,KEY"):
        config_from_ini(str(path))


def cli(*argv: str):
    return config_from_args(build_parser().parse_args([*argv, "app:app"]))


def test_cli_https_and_certfile_keyfile():
    config = cli("--https", "127.0.0.1:8443,/c.pem,/k.pem", "--http", ":8000", "--socket", ":6000")
    assert [a.tls is not None for a in config.listeners] == [False, False, True]
    config = cli("--http", ":8443", "--socket", ":6000", "--certfile", "c", "--keyfile", "k")
    http, uwsgi = config.listeners
    assert http.tls == TlsFiles(os.path.abspath("c"), os.path.abspath("k"), key="--certfile")
    assert uwsgi.tls is None  # gunicorn's --certfile is about HTTP listeners


def test_cli_certfile_needs_keyfile():
    with pytest.raises(ConfigError, match="--certfile needs --keyfile too"):
        cli("--certfile", "c.pem")
    with pytest.raises(ConfigError, match="--keyfile needs --certfile too"):
        cli("--keyfile", "k.pem")


def test_cli_proxy_protocol_and_autoreload():
    config = cli("--proxy-protocol", "--proxy-allow-ips", "10.0.0.0/8", "--py-autoreload", "1.5")
    assert config.proxy_protocol and config.py_autoreload == 1.5
    assert config.proxy_allow_ips == parse_networks("10.0.0.0/8", "x")
    assert cli().proxy_protocol is False and cli().listeners_defaulted is True
    with pytest.raises(ConfigError, match="--proxy-allow-ips"):
        cli("--proxy-allow-ips", "not-an-ip")
