"""forklift.config: listen addresses, sizes and networks from strings, and `Config.validate`.

Every bad value must become a ConfigError whose one line names the option, never a traceback.
Regression tests for bugs found in `config.py` (since fixed) are grouped at the end.
"""

from __future__ import annotations

import ipaddress

import pytest

from forklift.config import (
    PROTOCOL_HTTP,
    PROTOCOL_UWSGI,
    Config,
    ListenAddress,
    parse_address,
    parse_networks,
    parse_size,
)
from forklift.errors import ConfigError

# --- parse_address -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, host, port",
    [
        ("127.0.0.1:8000", "127.0.0.1", 8000),
        ("0.0.0.0:80", "0.0.0.0", 80),
        ("localhost:6000", "localhost", 6000),
        ("app-1.internal.example:6000", "app-1.internal.example", 6000),
        (":6000", "", 6000),  # uWSGI's "every IPv4 interface"
        ("*:6000", "", 6000),
        ("6000", "", 6000),
        ("[::1]:8000", "::1", 8000),
        ("[::]:8000", "::", 8000),
        ("  127.0.0.1:8000  ", "127.0.0.1", 8000),
        ("127.0.0.1:0", "127.0.0.1", 0),
        ("127.0.0.1:65535", "127.0.0.1", 65535),
    ],
)
def test_parse_address_tcp(text, host, port):
    address = parse_address(text, PROTOCOL_HTTP)
    assert address == ListenAddress(PROTOCOL_HTTP, host=host, port=port)
    assert not address.is_unix


@pytest.mark.parametrize(
    "text, path",
    [
        ("unix:/run/app.sock", "/run/app.sock"),
        ("unix:relative.sock", "relative.sock"),
        ("/run/app.sock", "/run/app.sock"),
        ("/tmp/socket", "/tmp/socket"),
        ("app.sock", "app.sock"),
        ("./var/app", "./var/app"),
    ],
)
def test_parse_address_unix(text, path):
    address = parse_address(text, PROTOCOL_UWSGI)
    assert address == ListenAddress(PROTOCOL_UWSGI, path=path)
    assert address.is_unix
    assert str(address) == f"unix:{path}"


def test_parse_address_keeps_the_protocol():
    assert parse_address(":6000", PROTOCOL_UWSGI).protocol == PROTOCOL_UWSGI
    assert parse_address(":6000", PROTOCOL_HTTP).protocol == PROTOCOL_HTTP


def test_listen_address_prints_back_in_the_same_form():
    assert str(parse_address("127.0.0.1:8000", PROTOCOL_HTTP)) == "127.0.0.1:8000"
    assert str(parse_address("[::1]:8000", PROTOCOL_HTTP)) == "[::1]:8000"
    assert str(parse_address(":6000", PROTOCOL_HTTP)) == ":6000"


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:65536",
        "127.0.0.1:99999",
        "127.0.0.1:",
        "127.0.0.1:-1",
        "127.0.0.1:http",
        "127.0.0.1:80a",
        "host:8 0",
        "",
        ":",
        "[::1]",
        "[::1]:",
        "[::1]:x",
        "unix:",
        "bad..host:80",
        "under_score:80",
    ],
)
def test_parse_address_rejects_with_the_option_name(text):
    with pytest.raises(ConfigError) as raised:
        parse_address(text, PROTOCOL_HTTP, "--socket")
    message = str(raised.value)
    assert message.startswith("--socket:")
    assert "\n" not in message


# --- parse_size --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", 0),
        ("65536", 65536),
        ("64k", 64 * 1024),
        ("64K", 64 * 1024),
        ("10m", 10 * 1024**2),
        ("2G", 2 * 1024**3),
        (" 8k ", 8192),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text, "--limit-post") == expected


@pytest.mark.parametrize("text", ["", "k", "1.5m", "-1", "10 m", "10mb", "ten", "0x10"])
def test_parse_size_rejects_with_the_option_name(text):
    with pytest.raises(ConfigError, match="^--limit-post: "):
        parse_size(text, "--limit-post")


# --- parse_networks ------------------------------------------------------------------------------


def test_parse_networks_addresses_and_cidrs():
    nets = parse_networks("10.0.0.0/8, 192.168.1.7 ,::1,2001:db8::/32", "--forwarded-allow-ips")
    assert nets == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("2001:db8::/32"),
    )


def test_parse_networks_host_bits_are_tolerated():
    assert parse_networks("10.1.2.3/8", "k") == (ipaddress.ip_network("10.0.0.0/8"),)


def test_parse_networks_star_allows_every_peer():
    nets = parse_networks("*", "k")
    for peer in ("203.0.113.5", "127.0.0.1", "2001:db8::5", "::1"):
        assert any(ipaddress.ip_address(peer) in net for net in nets), peer


def test_parse_networks_empty_items_are_skipped():
    assert parse_networks("", "k") == ()
    assert parse_networks("127.0.0.1,,", "k") == (ipaddress.ip_network("127.0.0.1/32"),)


@pytest.mark.parametrize("text", ["nginx.internal", "10.0.0.0/33", "10.0.0.256", "1.2.3.4/8/9"])
def test_parse_networks_rejects_with_the_option_name(text):
    with pytest.raises(ConfigError, match="^--uwsgi-allow-ips: ") as raised:
        parse_networks(f"127.0.0.1, {text}", "--uwsgi-allow-ips")
    assert text in str(raised.value)


def test_default_allow_lists_are_loopback_only():
    config = Config()
    for nets in (config.uwsgi_allow_ips, config.forwarded_allow_ips):
        assert any(ipaddress.ip_address("127.0.0.1") in n for n in nets)
        assert any(ipaddress.ip_address("::1") in n for n in nets)
        assert not any(ipaddress.ip_address("10.0.0.1") in n for n in nets)


# --- Config.validate -----------------------------------------------------------------------------


def test_validate_defaults_listen_on_loopback_8000():
    config = Config(app="pkg.mod:app").validate()
    assert config.listeners == [ListenAddress(PROTOCOL_HTTP, "127.0.0.1", 8000)]


def test_validate_keeps_given_listeners():
    mine = [ListenAddress(PROTOCOL_UWSGI, "", 6000)]
    assert Config(app="m:a", listeners=list(mine)).validate().listeners == mine


def test_validate_module_without_callable_uses_the_callable_option():
    assert Config(app="pkg.wsgi").validate().app == "pkg.wsgi:application"
    assert Config(app="pkg.wsgi", callable="app").validate().app == "pkg.wsgi:app"
    assert Config(app="pkg.wsgi:other", callable="app").validate().app == "pkg.wsgi:other"


def test_validate_an_app_from_wsgi_file_or_mounts_is_enough():
    Config(wsgi_file="manage.py").validate()
    Config(mounts=[("/a", "a:app")]).validate()


def test_validate_without_any_app_says_how_to_give_one():
    with pytest.raises(ConfigError, match="no application"):
        Config().validate()


@pytest.mark.parametrize(
    "field, value, option",
    [
        ("processes", 0, "--processes"),
        ("threads", 0, "--threads"),
        ("threads", -1, "--threads"),
        ("backlog", 0, "--backlog"),
        ("max_request_line", 0, "--max-request-line"),
        ("max_header_bytes", 0, "--max-header-bytes"),
        ("head_timeout", 0, "--head-timeout"),
        ("keepalive_timeout", -1.0, "--keepalive-timeout"),
        ("socket_timeout", 0.0, "--socket-timeout"),
        ("buffer_size", 0, "--buffer-size"),
        ("buffer_size", 65537, "--buffer-size"),
        ("script_name", "app", "--mount"),
    ],
)
def test_validate_errors_name_the_option(field, value, option):
    config = Config(app="m:a", **{field: value})
    with pytest.raises(ConfigError) as raised:
        config.validate()
    assert str(raised.value).startswith(option + ":")


@pytest.mark.parametrize("buffer_size", [1, 4096, 65535])
def test_validate_accepts_buffer_sizes_uwsgi_can_carry(buffer_size):
    Config(app="m:a", buffer_size=buffer_size).validate()


def test_validate_strips_a_trailing_slash_from_the_mount_prefix():
    assert Config(app="m:a", script_name="/app/").validate().script_name == "/app"
    assert Config(app="m:a", script_name="/app").validate().script_name == "/app"


def test_replace_gives_a_new_config():
    config = Config(app="m:a")
    other = config.replace(processes=4)
    assert other.processes == 4
    assert config.processes == 1


def test_configs_do_not_share_their_lists():
    a, b = Config(), Config()
    a.pythonpath.append("/x")
    a.mounts.append(("/a", "a:app"))
    assert b.pythonpath == [] and b.mounts == []


# =============================================================================================
# Regressions: bugs once found in config.py, fixed; each test below failed before its fix
# =============================================================================================


def test_bug_superscript_digit_port_is_a_config_error():
    port = "8\u00b2"  # "8²"
    # str.isdigit() is True for "²" but int("²") raises ValueError: a traceback instead of
    # the one-line ConfigError naming the option.
    with pytest.raises(ConfigError, match="^--http: "):
        parse_address(f"127.0.0.1:{port}", PROTOCOL_HTTP, "--http")


def test_bug_superscript_digit_size_is_a_config_error():
    text = "\u00b2k"  # "²k"
    with pytest.raises(ConfigError, match="^--limit-post: "):
        parse_size(text, "--limit-post")


def test_bug_host_with_a_dash_is_still_checked():
    host = "bad host-name"
    # `part.isalnum() or "-" in part` accepts any label that contains a dash, whatever
    # else it holds: "bad host-name" is taken, and fails later at bind, far from the option.
    with pytest.raises(ConfigError, match="^--http: bad host"):
        parse_address(f"{host}:80", PROTOCOL_HTTP, "--http")


def test_bug_mount_at_the_root_is_accepted():
    # `--mount /` means the app lives at the root. validate() strips the slash, then rejects
    # the empty prefix with "--mount: prefix must start with '/', got '/'".
    config = Config(app="m:a", script_name="/").validate()
    assert config.script_name == ""
