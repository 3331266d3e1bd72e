"""forklift.nginx: `forklift nginx-config` output holds the settings the README promises, and
nginx itself accepts it (`nginx -t`).

Assertions look at directives, not comments: the text is read into (block path, directive)
pairs, so `keepalive 32;` in a comment would not count as keep-alive.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from forklift.config import PROTOCOL_HTTP, PROTOCOL_UWSGI, parse_address
from forklift.errors import ConfigError
from forklift.nginx import UWSGI_PARAMS, main, render

NGINX = "/usr/sbin/nginx"


def uwsgi(*addresses):
    return [parse_address(a, PROTOCOL_UWSGI) for a in addresses]


def http(*addresses):
    return [parse_address(a, PROTOCOL_HTTP) for a in addresses]


def directives(text: str) -> list:
    """[(block path, directive)] of an nginx config, comments dropped.

    `location /static/ { alias /x/; }` gives (("location /static/",), "alias /x/;").
    """
    result, path = [], []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            path.append(line[:-1].strip())
        elif line == "}":
            path.pop()
        else:
            result.append((tuple(path), line))
    assert path == [], "unbalanced braces"
    return result


def in_block(text: str, block: str) -> list:
    """Directives whose innermost enclosing block is `block` ("upstream forklift", ...)."""
    return [d for p, d in directives(text) if p and p[-1] == block]


def location_root(text: str) -> list:
    return in_block(text, "location /")


# --- what every configuration carries ---------------------------------------------------------


@pytest.mark.parametrize(
    "upstreams, kind",
    [
        (uwsgi("127.0.0.1:6000"), "uwsgi"),
        (uwsgi("10.0.0.1:6000", "10.0.0.2:6000"), "uwsgi"),
        (http("127.0.0.1:8000"), "proxy"),
        (http("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"), "proxy"),
    ],
)
def test_failover_settings_the_readme_promises(upstreams, kind):
    text = render(upstreams)
    loc = location_root(text)
    assert f"{kind}_connect_timeout 1s;" in loc
    assert f"{kind}_next_upstream error timeout;" in loc
    # A 503 never counts as a failure: the database is shared, so it would eject every host.
    assert not any("http_503" in d for d in loc)
    assert f"{kind}_next_upstream_tries {max(2, len(upstreams))};" in loc
    assert f"{kind}_read_timeout 60s;" in loc
    assert f"{kind}_send_timeout 60s;" in loc


def test_non_idempotent_retries_only_with_idempotent_writes():
    for upstreams, kind in ((uwsgi("a1:6000", "a2:6000"), "uwsgi"), (http("a1:80"), "proxy")):
        assert not any("non_idempotent" in d for _, d in directives(render(upstreams)))
        loc = location_root(render(upstreams, idempotent_writes=True))
        assert f"{kind}_next_upstream error timeout non_idempotent;" in loc


def test_read_timeout_option():
    loc = location_root(render(uwsgi(":6000"), read_timeout=300))
    assert "uwsgi_read_timeout 300s;" in loc
    assert "uwsgi_send_timeout 300s;" in loc


def test_server_block_options():
    text = render(
        http(":8000"), server_name="example.org", listen="443", client_max_body_size="25m"
    )
    server = in_block(text, "server")
    assert "listen 443;" in server
    assert "server_name example.org;" in server
    assert "client_max_body_size 25m;" in server


# --- upstream block -----------------------------------------------------------------------------


def test_one_upstream_has_no_zone_and_no_max_fails():
    upstream = in_block(render(uwsgi("127.0.0.1:6000")), "upstream forklift")
    assert "server 127.0.0.1:6000;" in upstream
    assert not any(d.startswith("zone") for d in upstream)


def test_several_upstreams_share_a_zone_and_are_skipped_after_one_failure():
    text = render(uwsgi("10.0.0.1:6000", "[2001:db8::2]:6000", "unix:/run/app.sock"))
    upstream = in_block(text, "upstream forklift")
    assert "zone forklift 64k;" in upstream
    assert [d for d in upstream if d.startswith("server ")] == [
        "server 10.0.0.1:6000 max_fails=1 fail_timeout=5s;",
        "server [2001:db8::2]:6000 max_fails=1 fail_timeout=5s;",
        "server unix:/run/app.sock max_fails=1 fail_timeout=5s;",
    ]


def test_every_interface_address_is_reached_on_loopback():
    assert "server 127.0.0.1:6000;" in in_block(render(uwsgi(":6000")), "upstream forklift")


def test_upstream_name_is_used_by_the_pass():
    text = render(uwsgi(":6000"), upstream_name="gameprogress")
    assert in_block(text, "upstream gameprogress")
    assert "uwsgi_pass gameprogress;" in location_root(text)


def test_http_keepalive_with_one_upstream():
    upstream = in_block(render(http("127.0.0.1:8000")), "upstream forklift")
    assert "keepalive 32;" in upstream
    loc = location_root(render(http("127.0.0.1:8000")))
    # Upstream keep-alive needs HTTP/1.1 and an empty Connection header.
    assert "proxy_http_version 1.1;" in loc
    assert 'proxy_set_header Connection "";' in loc


def test_upstream_idle_connections_end_before_forklift_closes_them():
    # A request nginx sends on a connection forklift is closing fails (a POST is not
    # retried): nginx's idle limit must be below forklift's --keepalive-timeout.
    default = in_block(render(http("127.0.0.1:8000")), "upstream forklift")
    assert "keepalive_timeout 4000ms;" in default
    short = in_block(
        render(http("127.0.0.1:8000"), backend_keepalive_timeout=1.0), "upstream forklift"
    )
    assert "keepalive_timeout 500ms;" in short


def test_upstream_idle_limit_follows_the_ini(tmp_path, capsys):
    ini = tmp_path / "uwsgi.ini"
    ini.write_text("[uwsgi]\nhttp = 127.0.0.1:8000\nhttp-keepalive = 30\nmodule = app:app\n")
    assert main(["--ini", str(ini)]) == 0
    assert "keepalive_timeout 29000ms;" in in_block(capsys.readouterr().out, "upstream forklift")


def test_no_http_keepalive_with_several_upstreams_unless_asked():
    several = http("10.0.0.1:8000", "10.0.0.2:8000")
    assert not any(
        d.startswith("keepalive") for d in in_block(render(several), "upstream forklift")
    )
    assert "keepalive 32;" in in_block(render(several, keepalive=True), "upstream forklift")


def test_uwsgi_never_has_upstream_keepalive():
    # The uwsgi protocol is one request per connection.
    for ups in (uwsgi(":6000"), uwsgi("a:1", "b:2")):
        text = render(ups, keepalive=True)
        assert not any(d.startswith("keepalive") for _, d in directives(text))


def test_http_proxy_sets_the_forwarded_headers_forklift_reads():
    loc = location_root(render(http(":8000")))
    assert "proxy_pass http://forklift;" in loc
    assert "proxy_set_header Host $host;" in loc
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in loc
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in loc


# --- uwsgi params -------------------------------------------------------------------------------


def test_uwsgi_params_are_inline_and_complete():
    loc = location_root(render(uwsgi(":6000")))
    assert not any(d.startswith("include") for d in loc)
    params = {
        d.split()[1]: " ".join(d.rstrip(";").split()[2:])
        for d in loc
        if d.startswith("uwsgi_param ")
    }
    assert params == dict(UWSGI_PARAMS)
    # What forklift's uwsgi_environ needs to build an environ.
    for name in ("REQUEST_METHOD", "REQUEST_URI", "PATH_INFO", "QUERY_STRING", "CONTENT_LENGTH"):
        assert name in params
    assert params["HTTPS"] == "$https if_not_empty"
    assert "uwsgi_pass forklift;" in loc
    assert loc.index("uwsgi_pass forklift;") > max(
        i for i, d in enumerate(loc) if d.startswith("uwsgi_param")
    )


def test_http_config_has_no_uwsgi_params():
    assert not any("uwsgi" in d for _, d in directives(render(http(":8000"))))


# --- statics ------------------------------------------------------------------------------------


def test_static_locations_alias_the_directory_with_inline_types():
    text = render(uwsgi(":6000"), statics=[("/static", "/srv/app/static"), ("media/", "/m/")])
    static = in_block(text, "location /static/")
    assert "alias /srv/app/static/;" in static
    assert "default_type application/octet-stream;" in static
    types = in_block(text, "types")
    assert "text/css css;" in types
    assert "application/javascript js mjs;" in types
    assert "image/png png;" in types
    assert "alias /m/;" in in_block(text, "location /media/")
    # Inside the server block, before the catch-all location.
    paths = [p for p, d in directives(text) if d == "alias /srv/app/static/;"]
    assert paths[0][0] == "server"


def test_without_statics_no_alias():
    assert not any(d.startswith("alias") for _, d in directives(render(uwsgi(":6000"))))


# --- full configuration ---------------------------------------------------------------------


def test_full_config_wraps_the_blocks_in_http_with_the_pid_given():
    text = render(http(":8000"), full=True, pid="/var/run/x.pid")
    top = [d for p, d in directives(text) if p == ()]
    assert "pid /var/run/x.pid;" in top
    assert "worker_processes auto;" in top
    assert "worker_connections 1024;" in in_block(text, "events")
    assert [p for p, d in directives(text) if d == "keepalive 32;"] == [
        ("http", "upstream forklift")
    ]
    assert "sendfile on;" in in_block(text, "http")


def test_blocks_only_without_full():
    top = [d for p, d in directives(render(http(":8000")))]
    assert not any(d.startswith(("pid", "worker_processes")) for d in top)


# --- refusals -------------------------------------------------------------------------------------


def test_no_upstream_is_a_config_error():
    with pytest.raises(ConfigError, match="at least one"):
        render([])


def test_mixed_protocols_are_a_config_error():
    with pytest.raises(ConfigError, match="same protocol"):
        render(uwsgi(":6000") + http(":8000"))


def test_cli_prints_the_config(capsys):
    assert main(["--socket", "127.0.0.1:6000", "--static", "/s=/srv/s"]) == 0
    out = capsys.readouterr().out
    assert "uwsgi_pass forklift;" in location_root(out)
    assert "alias /srv/s/;" in in_block(out, "location /s/")


def test_cli_bad_static_is_exit_2_with_one_line(capsys):
    assert main(["--socket", ":6000", "--static", "/s"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--static" in err


# --- nginx -t ----------------------------------------------------------------------------------

# Debian's nginx is built with /var/lib/nginx/* temp paths and /var/log/nginx/error.log; the
# temp paths are added inside `http {` here and `-e` moves the startup error log, so that the
# check writes nothing outside tmp_path. The pid file is placed through render's `pid`.
_TEMP_PATHS = ("client_body", "proxy", "uwsgi", "fastcgi", "scgi")


def nginx_check(tmp_path, text: str) -> subprocess.CompletedProcess:
    temp = "".join(f"    {name}_temp_path {tmp_path}/{name}_temp;\n" for name in _TEMP_PATHS)
    text, count = re.subn(r"(?m)^http \{\n", "http {\n" + temp, text)
    assert count == 1
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    return subprocess.run(
        [NGINX, "-t", "-p", f"{tmp_path}/", "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


needs_nginx = pytest.mark.requires("nginx")


@needs_nginx
@pytest.mark.parametrize(
    "upstreams, options",
    [
        (uwsgi("127.0.0.1:6000"), {}),
        (uwsgi("10.0.0.1:6000", "[::1]:6000", "unix:/run/app.sock"), {"idempotent_writes": True}),
        (http("127.0.0.1:8000"), {"statics": [("/static", "/srv/app/static")]}),
        (http("10.0.0.1:8000", "10.0.0.2:8000"), {"keepalive": True, "idempotent_writes": True}),
        (http("10.0.0.1:8000", "10.0.0.2:8000"), {"statics": [("/a", "/x"), ("/b/", "/y/")]}),
    ],
)
def test_nginx_accepts_the_full_config(tmp_path, upstreams, options):
    text = render(upstreams, full=True, pid=str(tmp_path / "nginx.pid"), **options)
    result = nginx_check(tmp_path, text)
    assert result.returncode == 0, f"{result.stderr}\n{text}"
    assert "test is successful" in result.stderr


@needs_nginx
def test_nginx_accepts_the_blocks_inside_an_http_block(tmp_path):
    blocks = render(uwsgi(":6000", "10.0.0.2:6000"), statics=[("/static", "/srv/s")])
    text = f"pid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{\n{blocks}}}\n"
    result = nginx_check(tmp_path, text)
    assert result.returncode == 0, f"{result.stderr}\n{text}"


@needs_nginx
def test_nginx_check_fails_on_a_broken_config(tmp_path):
    # The check above can fail: a config nginx refuses gives a non-zero exit.
    text = render(uwsgi(":6000"), full=True, pid=str(tmp_path / "nginx.pid"))
    result = nginx_check(tmp_path, text.replace("uwsgi_connect_timeout 1s;", "uwsgi_bogus 1;"))
    assert result.returncode != 0
