"""forklift.options and the command line: one table, the same meaning in a file and in argv.

uWSGI takes every option both ways; so must forklift. The central test gives each honoured
key an example value and checks that `--key VALUE` and `key = VALUE` in an ini produce the
same Config; a key added to the table without an example fails it, so the promise cannot
quietly stop holding. The rest reads argv as uWSGI users type it.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forklift.cli import UsageError, build_config, parse_command_line
from forklift.config import PROTOCOL_HTTP, PROTOCOL_UWSGI, ListenAddress
from forklift.errors import ConfigError
from forklift.ini_config import config_from_ini, read_with_warnings
from forklift.options import ACCEPTED_NOOP, FLAG, NOOP_FLAGS, OPTIONS, REFUSED

# One value per honoured key, not its default (a flag's is "true" or "false").
EXAMPLES = {
    "manage-script-name": "true",
    "preload": "true",
    "lazy-apps": "false",
    "need-app": "false",
    "wsgi-disable-file-wrapper": "true",
    "vacuum": "true",
    "strict": "true",
    "disable-logging": "true",
    "log-4xx": "true",
    "log-5xx": "true",
    "module": "pkg.app:application",
    "wsgi-file": "site.py",
    "callable": "site",
    "chdir": "/srv/app",
    "pythonpath": "/srv/lib",
    "virtualenv": "/srv/venv",
    "env": "DJANGO_SETTINGS_MODULE=site.settings",
    "mount": "/api=api:app",
    "health-check": "/healthz",
    "health-host": "app.example",
    "http": "127.0.0.1:9001",
    "socket": "127.0.0.1:9002",
    "uwsgi-socket": "/run/app.sock",
    "protocol": "http",
    "listen": "128",
    "chmod-socket": "660",
    "chown-socket": "www-data:www-data",
    "uwsgi-allow-ips": "10.0.0.0/8",
    "forwarded-allow-ips": "10.0.0.1",
    "processes": "4",
    "threads": "8",
    "max-request-line": "4k",
    "max-header-size": "32k",
    "max-header-fields": "50",
    "limit-post": "10m",
    "post-buffering": "8192",
    "stream-request-body": "true",
    "body-temp-dir": "/var/tmp/app-bodies",
    "response-buffer": "128k",
    "buffer-size": "65536",
    "head-timeout": "7",
    "keepalive-timeout": "3",
    "socket-timeout": "12",
    "graceful-timeout": "9",
    "pidfile": "/run/app/app.pid",
    "daemonize": "/var/log/app/daemon.log",
    "harakiri": "60",
    "max-requests": "1000",
    "max-requests-jitter": "50",
    "reload-on-rss": "512",
    "stats": "127.0.0.1:9191",
    "uid": "www-data",
    "gid": "www-data",
    "umask": "022",
    "logto": "/var/log/app/app.log",
    "access-log": "/var/log/app/access.log",
    "log-level": "warning",
    "log-slow": "500",
    "log-maxsize": "1m",
    "log-date": "%Y-%m-%d",
    "logger": "file:/var/log/app/error.log",
    "req-logger": "file:/var/log/app/req.log",
    "log-syslog": "myapp,local0",
    "static-map": "/static=/srv/app/static",
    "add-header": "X-Served-By: forklift",
    "touch-reload": "/srv/app/reload",
    "attach-daemon": "celery worker",
    "exec-asap": "mkdir -p /tmp/x",
    "hook-pre-app": "exec:true",
    "plugins": "python3,http",
    "route": "^/health donotlog:",
    "smart-attach-daemon": None,  # refused, with its reason: see test below
    "https": ":8443,/etc/ssl/site.crt,/etc/ssl/site.key",
    "certfile": None,  # needs keyfile: the pair is tested in test_ini_tls_proxy.py
    "keyfile": None,
    "proxy-protocol": "true",
    "proxy-allow-ips": "10.0.0.0/8",
    "disable-metrics": "true",
    "py-autoreload": "2",
    "access-log-format": "json",
}

_IGNORED_FIELDS = ("ini_warnings", "origins", "config_file")


def _fields(config) -> dict:
    data = dataclasses.asdict(config)
    for name in _IGNORED_FIELDS:
        data.pop(name)
    for listener in data["listeners"]:
        if listener["tls"]:
            listener["tls"].pop("key")  # where it was written: FILE:LINE or --https
    return data


def _from_ini(tmp_path, lines: list):
    ini = tmp_path / "same.ini"
    ini.write_text("[uwsgi]\n" + "\n".join(lines) + "\n")
    return config_from_ini(str(ini)).validate()


# Keys that alone leave the Config as it was: a warning only (said, not done), or the
# protocol of `socket` listeners when there is none.
_NO_EFFECT_ALONE = ("log-date", "route", "plugins", "protocol")


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_every_key_means_the_same_on_the_command_line_and_in_a_file(tmp_path, option):
    assert option.name in EXAMPLES, f"add an example value for {option.name!r}"
    value = EXAMPLES[option.name]
    if value is None:
        return
    app = [] if option.name in ("module", "wsgi-file", "mount") else ["app:app"]
    if option.takes == FLAG and value == "true":
        argv = [f"--{option.name}", *app]  # a bare flag is true
    else:
        argv = [f"--{option.name}={value}", *app]
    from_argv = build_config(parse_command_line(argv))
    lines = [f"{option.name} = {value}"] + [f"module = {a}" for a in app]
    from_ini = _from_ini(tmp_path, lines)
    assert _fields(from_argv) == _fields(from_ini)
    if option.name not in _NO_EFFECT_ALONE:
        assert _fields(from_argv) != _fields(build_config(parse_command_line(["app:app"])))


def test_value_options_take_the_next_word_as_their_value():
    for option in OPTIONS:
        value = EXAMPLES[option.name]
        if option.takes != "value" or value is None:
            continue
        spaced = build_config(parse_command_line([f"--{option.name}", value, "--module", "a:b"]))
        joined = build_config(parse_command_line([f"--{option.name}={value}", "--module", "a:b"]))
        assert _fields(spaced) == _fields(joined), option.name


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.aliases], ids=lambda o: o.name)
def test_aliases_work_on_the_command_line(option):
    value = EXAMPLES[option.name]
    if value is None:
        return
    alias = option.aliases[-1]
    first = build_config(parse_command_line([f"--{option.name}={value}", "--module", "x:y"]))
    second = build_config(parse_command_line([f"--{alias}={value}", "--module", "x:y"]))
    assert _fields(first) == _fields(second)


def test_smart_attach_daemon_is_refused_with_its_reason():
    with pytest.raises(ConfigError, match="run it as its own service"):
        build_config(parse_command_line(["--smart-attach-daemon", "/run/x.pid cmd", "a:b"]))


def test_the_issue_command_line_is_read_as_uwsgi_reads_it():
    config = build_config(
        parse_command_line(["--socket", "app.sock", "--chmod-socket", "666", "app:app"])
    )
    assert config.listeners == [ListenAddress(PROTOCOL_UWSGI, path="app.sock")]
    assert config.chmod_socket == 0o666
    assert config.app == "app:app"


def test_bare_flags_mean_true_and_do_not_eat_the_app():
    config = build_config(parse_command_line(["--vacuum", "--master", "app:app"]))
    assert config.vacuum is True
    assert config.app == "app:app"
    assert any("--master" in w for w in config.ini_warnings)


def test_noop_keys_that_take_a_value_consume_it():
    config = build_config(parse_command_line(["--offload-threads", "4", "app:app"]))
    assert config.app == "app:app"


@pytest.mark.parametrize(
    "argv, field, value",
    [
        (["-s", ":6000"], "listeners", [ListenAddress(PROTOCOL_UWSGI, "", 6000)]),
        (["-s:6000"], "listeners", [ListenAddress(PROTOCOL_UWSGI, "", 6000)]),
        (["-p", "3"], "processes", 3),
        (["-p3"], "processes", 3),
        (["-H", "/srv/venv"], "virtualenv", "/srv/venv"),
        (["-t", "30"], "harakiri", 30.0),
        (["-L"], "access_log", None),
        (["-M", "-p", "2"], "processes", 2),
        (["-w", "4"], "processes", 4),  # gunicorn's reading: a number is the worker count
        (["-b", "8192"], "buffer_size", 8192),  # uWSGI's buffer-size
        (["-b", "127.0.0.1:8123"], "listeners", [ListenAddress(PROTOCOL_HTTP, "127.0.0.1", 8123)]),
    ],
)
def test_short_options(argv, field, value):
    config = build_config(parse_command_line([*argv, "app:app"]))
    assert getattr(config, field) == value


def test_w_with_a_module_is_the_app():
    assert build_config(parse_command_line(["-w", "site.wsgi:app"])).app == "site.wsgi:app"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--reload-on", "5", "a:b"], "unknown option --reload-on"),  # no abbreviations
        (["--proc", "2", "a:b"], "unknown option --proc"),
        (["--guid", "x", "a:b"], "did you mean --gid?"),
        (["--emperor", "/etc/vassals", "a:b"], "--emperor: not supported: emperor mode"),
        (["-Z", "a:b"], "unknown option -Z"),
        (["--socket"], "--socket needs a value (ADDR)"),
        (["--socket", "--http", ":80", "a:b"], "--socket needs a value"),
        (["a:b", "c:d"], "one app only"),
        (["app.yaml"], "only uWSGI ini files"),
        (["--ini"], "--ini needs a file"),
    ],
)
def test_unreadable_command_lines_are_one_line(argv, needle):
    with pytest.raises(UsageError) as raised:
        parse_command_line(argv)
    assert needle in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--processes", "two", "a:b"], "--processes 'two': expected worker processes (>= 1)"),
        (["--threads", "0", "a:b"], "--threads '0': must be at least 1"),
        (["--limit-post", "10q", "a:b"], "--limit-post '10q': expected a size in bytes"),
        (["--http", "localhost:http", "a:b"], "--http 'localhost:http': bad port"),
        (["--log-level", "loud", "a:b"], "accepted: debug, info, warning, error"),
        (["--protocol", "fastcgi", "-s", ":1", "a:b"], "accepted: http, http11, uwsgi"),
    ],
)
def test_bad_values_name_the_option_the_value_and_what_is_accepted(argv, needle):
    with pytest.raises(ConfigError) as raised:
        build_config(parse_command_line(argv))
    assert needle in str(raised.value)


def test_threads_true_is_one_with_a_warning():
    config = build_config(parse_command_line(["--threads", "true", "a:b"]))
    assert config.threads == 1
    assert any("read as 1" in w for w in config.ini_warnings)


def test_positional_ini_and_options_after_it(tmp_path):
    ini = tmp_path / "uwsgi.ini"
    ini.write_text("[uwsgi]\nmodule = site:app\nsocket = :6000\nprocesses = 2\n")
    config = build_config(parse_command_line([str(ini), "--processes", "5"]))
    assert (config.app, config.processes) == ("site:app", 5)
    assert config.listeners == [ListenAddress(PROTOCOL_UWSGI, "", 6000)]


def test_command_line_listeners_replace_the_files(tmp_path):
    ini = tmp_path / "uwsgi.ini"
    ini.write_text("[uwsgi]\nmodule = site:app\nsocket = :6000\n")
    config = build_config(parse_command_line(["--ini", str(ini), "--http", ":8080"]))
    assert config.listeners == [ListenAddress(PROTOCOL_HTTP, "", 8080)]


def test_d_followed_by_an_option_logs_to_the_inis_logto(tmp_path):
    # The seed's `uwsgi -d --ini uwsgi.ini`: never a log file named `--ini`.
    ini = tmp_path / "uwsgi.ini"
    ini.write_text("[uwsgi]\nmodule = site:app\nlogto = /var/log/site.log\n")
    cmd = parse_command_line(["-d", "--ini", str(ini)])
    assert cmd.inis == [str(ini)]
    config = build_config(cmd)
    assert config.daemonize == "/var/log/site.log"
    notes = [w for w in config.ini_warnings if w.startswith("-d ")]
    assert len(notes) == 1
    assert "'--ini', not a log file" in notes[0] and f"{ini}:3" in notes[0]


def test_d_without_any_log_file_logs_next_to_the_ini(tmp_path):
    ini = tmp_path / "site.ini"
    ini.write_text("[uwsgi]\nmodule = site:app\n")
    config = build_config(parse_command_line(["-d", "--ini", str(ini)]))
    assert config.daemonize == str(tmp_path / "site.log")
    assert any("next to the ini" in w for w in config.ini_warnings)
    with pytest.raises(ConfigError, match="and no logto: give -d FILE, or --logto FILE"):
        build_config(parse_command_line(["site:app", "-d"]))


def test_reload_and_stop_take_a_pidfile_and_are_not_abbreviations():
    assert parse_command_line(["--reload", "uwsgi.pid"]).action == "reload"
    cmd = parse_command_line(["--stop", "uwsgi.pid"])
    assert (cmd.action, cmd.action_arg) == ("stop", "uwsgi.pid")


def test_tables_do_not_overlap():
    honoured = {name for o in OPTIONS for name in (o.name, *o.aliases)}
    assert not honoured & ACCEPTED_NOOP
    assert not honoured & set(REFUSED)
    assert not ACCEPTED_NOOP & set(REFUSED)
    assert NOOP_FLAGS <= ACCEPTED_NOOP


# --- values as uWSGI reads them, in a file ---------------------------------------------------


def _read(tmp_path, *lines):
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\nmodule = app\n" + "\n".join(lines) + "\n")
    return read_with_warnings(str(ini))


def test_threads_true_in_a_file(tmp_path):
    config, warnings = _read(tmp_path, "threads = true")
    assert config.threads == 1
    assert any(":3: threads = true: read as 1" in w for w in warnings)


def test_buffer_size_65536_is_accepted(tmp_path):
    config, _ = _read(tmp_path, "buffer-size = 65536")
    assert config.validate().buffer_size == 65536


@pytest.mark.parametrize(
    "line", ["plugins = python3,syslog", "plugin = python", "plugins = logfile", "plugin = http"]
)
def test_plugins_real_files_name_are_accepted(tmp_path, line):
    config, warnings = _read(tmp_path, line)
    assert any("accepted but without effect" in w for w in warnings)


def test_logger_syslog_is_honoured(tmp_path):
    config, _ = _read(tmp_path, "logger = syslog:myapp,local3")
    assert config.syslog == ("myapp", "local3", None)


def test_wsgi_disable_file_wrapper(tmp_path):
    config, _ = _read(tmp_path, "wsgi-disable-file-wrapper = true")
    assert config.file_wrapper is False


def test_route_that_only_touches_logging_is_warned(tmp_path):
    config, warnings = _read(tmp_path, "route = ^/health donotlog:")
    assert any("donotlog" in w and "ignored" in w for w in warnings)


def test_route_that_changes_the_answer_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r":3: route-if-not = .*redirect-permanent.* nginx"):
        _read(
            tmp_path, "route-if-not = equal:${HTTPS};on redirect-permanent:https://x${REQUEST_URI}"
        )


def test_bad_socket_says_the_key_once(tmp_path):
    with pytest.raises(ConfigError) as raised:
        _read(tmp_path, "socket = :99999")
    message = str(raised.value).removeprefix(str(tmp_path))
    assert message.count("socket") == 1
    assert ":3: socket = :99999: bad port" in message


def test_a_django_projects_ini_is_accepted_whole(tmp_path):
    """The keys a Django/Flask project's uwsgi.ini usually has: none refused."""
    config, warnings = _read(
        tmp_path,
        "chdir = /srv/site",
        "home = /srv/site/venv",
        "env = DJANGO_SETTINGS_MODULE=site.settings",
        "master = true",
        "processes = %k",
        "threads = 2",
        "enable-threads = true",
        "single-interpreter = true",
        "lazy-apps = true",
        "need-app = true",
        "strict = false",
        "socket = /run/site/site.sock",
        "chmod-socket = 664",
        "vacuum = true",
        "die-on-term = true",
        "harakiri = 60",
        "max-requests = 5000",
        "max-requests-delta = 100",
        "buffer-size = 32768",
        "post-buffering = 4096",
        "thunder-lock = true",
        "offload-threads = 2",
        "cheaper = 1",
        "cheaper-algo = spare",
        "memory-report = true",
        "stats = 127.0.0.1:9191",
        "static-map = /static=/srv/site/static",
        "touch-reload = /srv/site/reload",
        "py-autoreload = 1",
        "logto = /var/log/site/uwsgi.log",
        "log-maxsize = 10485760",
        "pidfile = /run/site/site.pid",
        "uid = www-data",
        "gid = www-data",
        "route-run = fixpathinfo:",
        "ignore-sigpipe = true",
        "wsgi-disable-file-wrapper = true",
    )
    config.validate()
    assert config.processes >= 1 and config.threads == 2
    assert not any("unknown option" in w for w in warnings), warnings


def test_daemonize_true_in_a_file_never_logs_to_a_file_named_true(tmp_path):
    ini = tmp_path / "uwsgi.ini"
    ini.write_text("[uwsgi]\nmodule = site:app\ndaemonize = true\n")
    config = build_config(parse_command_line(["--ini", str(ini)]))
    assert config.daemonize == str(tmp_path / "uwsgi.log")
    note = next(w for w in config.ini_warnings if "names no log file" in w)
    assert note.startswith(f"{ini}:3: daemonize = true names no log file: logging to ")
    ini.write_text("[uwsgi]\nmodule = site:app\ndaemonize = true\nlogto = /var/log/s.log\n")
    assert build_config(parse_command_line(["--ini", str(ini)])).daemonize == "/var/log/s.log"


def test_module_with_a_trailing_comment_is_the_module(tmp_path):
    config, _ = _read(tmp_path, "module = app:app  # app.py:variable app")
    assert config.app == "app:app"


def test_unset_environment_variable_in_a_socket_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("FORKLIFT_TEST_PORT", raising=False)
    with pytest.raises(
        ConfigError,
        match=r":3: http-socket = :\$\(FORKLIFT_TEST_PORT\): the "
        "environment variable FORKLIFT_TEST_PORT is not set",
    ):
        _read(tmp_path, "http-socket = :$(FORKLIFT_TEST_PORT)")


@pytest.mark.parametrize(
    "line", ["plugins = router_static,router_redirect", "plugin = cheaper_busyness"]
)
def test_plugins_that_serve_python_are_accepted(tmp_path, line):
    _read(tmp_path, line)


@pytest.mark.parametrize("line", ["plugins = php", "plugin = rack", "plugins = python3,gevent"])
def test_plugins_of_other_languages_or_loops_are_refused(tmp_path, line):
    with pytest.raises(ConfigError, match=r":3: plugins? = .*: plugin '(php|rack|gevent)'"):
        _read(tmp_path, line)


def test_http_keepalive_written_as_a_flag_keeps_the_default(tmp_path):
    config, _ = _read(tmp_path, "http-keepalive = true")
    assert config.keepalive_timeout == 5.0
    config, _ = _read(tmp_path, "http-keepalive = 2")
    assert config.keepalive_timeout == 2.0


def test_unset_environment_variable_in_a_count_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    with pytest.raises(ConfigError, match=r"the environment variable WEB_CONCURRENCY is not set"):
        _read(tmp_path, "workers = $(WEB_CONCURRENCY)")


# --- no value makes a traceback ----------------------------------------------------------------

_VALUE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00%$@"),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(
    option=st.sampled_from([o for o in OPTIONS if o.name not in ("exec-asap",)]),
    value=_VALUE_TEXT,
)
def test_any_value_is_accepted_or_refused_in_one_line_naming_file_line_and_key(option, value):
    value = value.strip(" \t")
    with tempfile.TemporaryDirectory() as directory:
        ini = Path(directory) / "fuzz.ini"
        ini.write_text(f"[uwsgi]\nmodule = app:app\n{option.name} = {value}\n", encoding="utf-8")
        try:
            read_with_warnings(str(ini))
        except ConfigError as exc:
            message = str(exc)
            assert message.startswith(f"{ini}:3: {option.name} = "), message
            assert "\n" not in message


_WORDS = st.one_of(
    st.sampled_from(
        [f"--{o.name}" for o in OPTIONS if o.name != "exec-asap"]
        + ["-s", "-p", "-M", "-H", "-d", "-w", "-b", "-t", "--ini", "--", "--master", "a:b"]
    ),
    _VALUE_TEXT,
)


@settings(max_examples=300, deadline=None)
@given(argv=st.lists(_WORDS, max_size=6))
def test_any_command_line_is_served_or_refused_in_one_line(argv):
    argv = [word for word in argv if word not in ("--ini", "-d") and not word.endswith(".ini")]
    try:
        build_config(parse_command_line(argv))
    except ConfigError as exc:
        assert "\n" not in str(exc)
