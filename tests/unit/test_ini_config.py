"""forklift.ini_config: what each uWSGI key means for a forklift `Config`.

Small ini files are written to tmp_path and read with `config_from_ini`. The dialect itself
(placeholders, includes, logic) is tested in test_uwsgi_ini.py; here each honoured key must
set its Config field, refused keys stop the start with file and line, no-op keys are named in
one warning, and unknown keys get a did-you-mean.
"""

from __future__ import annotations

import pytest

from forklift.config import PROTOCOL_HTTP, PROTOCOL_UWSGI, Config, ListenAddress
from forklift.errors import ConfigError
from forklift.ini_config import ACCEPTED_NOOP, REFUSED, config_from_ini, read_with_warnings


@pytest.fixture
def ini(tmp_path):
    """Write `[uwsgi]` plus the given lines to a file; return its path as a string."""
    counter = iter(range(1000))

    def write(*lines: str, section: str = "uwsgi") -> str:
        path = tmp_path / f"app{next(counter)}.ini"
        path.write_text(f"[{section}]\n" + "\n".join(lines) + "\n")
        return str(path)

    return write


def load(ini, *lines: str, **kwargs) -> Config:
    return config_from_ini(ini(*lines), **kwargs)


# --- honoured keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["processes", "workers"])
def test_processes(ini, key):
    assert load(ini, f"{key} = 4").processes == 4


def test_threads(ini):
    assert load(ini, "threads = 8").threads == 8


def test_socket_is_uwsgi_protocol(ini):
    config = load(ini, "socket = :6000")
    assert config.listeners == [ListenAddress(PROTOCOL_UWSGI, "", 6000)]


def test_socket_with_several_addresses(ini):
    config = load(ini, "socket = 127.0.0.1:6000, /run/app.sock")
    assert config.listeners == [
        ListenAddress(PROTOCOL_UWSGI, "127.0.0.1", 6000),
        ListenAddress(PROTOCOL_UWSGI, path="/run/app.sock"),
    ]


def test_http_socket_is_http_protocol(ini):
    config = load(ini, "http-socket = 0.0.0.0:8000")
    assert config.listeners == [ListenAddress(PROTOCOL_HTTP, "0.0.0.0", 8000)]


@pytest.mark.parametrize("order", ["before", "after"])
def test_protocol_http_turns_socket_into_http_wherever_it_is_written(ini, order):
    lines = ["socket = :6000", "protocol = http"]
    if order == "before":
        lines.reverse()
    assert load(ini, *lines).listeners == [ListenAddress(PROTOCOL_HTTP, "", 6000)]


def test_protocol_http_leaves_an_explicit_uwsgi_socket_alone(ini):
    config = load(ini, "uwsgi-socket = :6001", "socket = :6000", "protocol = http")
    assert sorted(config.listeners, key=str) == [
        ListenAddress(PROTOCOL_HTTP, "", 6000),
        ListenAddress(PROTOCOL_UWSGI, "", 6001),
    ]


def test_uwsgi_and_http_sockets_together(ini):
    config = load(ini, "socket = :6000", "http-socket = 127.0.0.1:8000")
    assert sorted(config.listeners, key=str) == sorted(
        [ListenAddress(PROTOCOL_UWSGI, "", 6000), ListenAddress(PROTOCOL_HTTP, "127.0.0.1", 8000)],
        key=str,
    )


def test_unknown_protocol_is_refused(ini):
    with pytest.raises(ConfigError, match=r":3: protocol: .*fastcgi"):
        load(ini, "socket = :6000", "protocol = fastcgi")


def test_bad_socket_address_names_file_line_and_key(ini):
    path = ini("processes = 2", "socket = 127.0.0.1:99999")
    with pytest.raises(ConfigError) as raised:
        config_from_ini(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:3: socket: ")
    assert "99999" in message


def test_module_with_callable(ini):
    config = load(ini, "module = mysite.wsgi:app")
    assert config.app == "mysite.wsgi:app"
    assert config.validate().app == "mysite.wsgi:app"


def test_module_without_callable_takes_the_callable_key(ini):
    config = load(ini, "module = mysite.wsgi", "callable = app")
    assert config.callable == "app"
    assert config.validate().app == "mysite.wsgi:app"
    assert load(ini, "module = mysite.wsgi").validate().app == "mysite.wsgi:application"


def test_wsgi_file(ini):
    config = load(ini, "wsgi-file = manage.py", "callable = app")
    assert (config.wsgi_file, config.callable) == ("manage.py", "app")


def test_chdir(ini):
    assert load(ini, "chdir = /srv/app").chdir == "/srv/app"


def test_pythonpath_keys_accumulate(ini):
    config = load(ini, "pythonpath = /a", "python-path = /b", "pp = /c")
    assert config.pythonpath == ["/a", "/b", "/c"]


def test_env_keeps_name_and_value(ini):
    config = load(ini, "env = DJANGO_SETTINGS_MODULE=site.settings", "env = EMPTY=")
    assert config.env == ["DJANGO_SETTINGS_MODULE=site.settings", "EMPTY="]


def test_env_without_equals_is_an_error(ini):
    with pytest.raises(ConfigError, match=r":2: env: "):
        load(ini, "env = JUSTANAME")


def test_mount(ini):
    config = load(ini, "mount = /api=api.wsgi:app", "mount = /=site.py", "manage-script-name")
    assert config.mounts == [("/api", "api.wsgi:app"), ("/", "site.py")]
    assert config.manage_script_name is True


@pytest.mark.parametrize("value", ["api=app:x", "/api", "/api="])
def test_bad_mount_is_an_error(ini, value):
    with pytest.raises(ConfigError, match=r":2: mount: "):
        load(ini, f"mount = {value}")


def test_static_map(ini):
    config = load(ini, "static-map = /static=/srv/app/static", "static-map = /media=media")
    assert config.static_maps == [("/static", "/srv/app/static"), ("/media", "media")]


def test_bad_static_map_is_an_error(ini):
    with pytest.raises(ConfigError, match=r":2: static-map: "):
        load(ini, "static-map = /srv/app/static")


def test_add_header(ini):
    config = load(ini, "add-header = X-Frame-Options: DENY", "add-header = X-A:1:2")
    assert config.add_headers == [("X-Frame-Options", "DENY"), ("X-A", "1:2")]


def test_bad_add_header_is_an_error(ini):
    with pytest.raises(ConfigError, match=r":2: add-header: "):
        load(ini, "add-header = NoColonHere")


def test_harakiri(ini):
    config = load(ini, "harakiri = 30")
    assert config.harakiri == 30.0


def test_max_requests(ini):
    config = load(ini, "max-requests = 5000", "max-requests-delta = 100")
    assert (config.max_requests, config.max_requests_jitter) == (5000, 100)


def test_buffer_size(ini):
    assert load(ini, "buffer-size = 32768").buffer_size == 32768


def test_limit_post(ini):
    assert load(ini, "limit-post = 1048576").max_body_size == 1048576


@pytest.mark.parametrize(
    "value, mode", [("660", 0o660), ("0600", 0o600), ("", 0o666), ("1", 0o666), ("true", 0o666)]
)
def test_chmod_socket(ini, value, mode):
    assert load(ini, f"chmod-socket = {value}").chmod_socket == mode


def test_chmod_socket_not_octal_is_an_error(ini):
    with pytest.raises(ConfigError, match=r":2: chmod-socket: "):
        load(ini, "chmod-socket = 689")


def test_uid_gid(ini):
    config = load(ini, "uid = www-data", "gid = www-data")
    assert (config.uid, config.gid) == ("www-data", "www-data")


def test_logto_sends_both_logs_to_the_file(ini):
    config = load(ini, "logto = /var/log/app.log")
    assert config.error_log == "/var/log/app.log"
    assert config.access_log == "/var/log/app.log"


def test_disable_logging_turns_the_access_log_off_but_keeps_the_error_log(ini):
    config = load(ini, "logto = /var/log/app.log", "disable-logging = true")
    assert config.access_log is None
    assert config.error_log == "/var/log/app.log"
    assert load(ini, "disable-logging").access_log is None
    assert load(ini, "disable-logging = false").access_log == "-"


def test_log_maxsize(ini):
    assert load(ini, "log-maxsize = 20971520").log_maxsize == 20971520


@pytest.mark.parametrize(
    "line, field, value",
    [
        ("processes = 4 ; four workers", "processes", 4),
        ("workers = 2 # two", "processes", 2),
        ("threads = 8 ; per worker", "threads", 8),
        ("harakiri = 60 ; seconds", "harakiri", 60.0),
        ("max-requests = 1000 ; then recycle", "max_requests", 1000),
        ("buffer-size = 32768 ; big cookies", "buffer_size", 32768),
        ("limit-post = 65536 ; 64k", "max_body_size", 65536),
        ("log-maxsize = 1000000 ; rotate", "log_maxsize", 1000000),
        ("listen = 128 ; backlog", "backlog", 128),
        ("socket-timeout = 10 ; s", "socket_timeout", 10.0),
    ],
)
def test_numeric_value_with_a_trailing_comment_is_read_as_uwsgi_does(ini, line, field, value):
    # uWSGI keeps "4 ; four workers" as the value and its atoi() reads the leading number.
    assert getattr(load(ini, line), field) == value


def test_negative_number_is_refused_where_a_count_is_expected(ini):
    with pytest.raises(ConfigError, match=r":2: processes: must be at least 1"):
        load(ini, "processes = -1")


def test_keys_of_other_sections_are_not_read(ini):
    path = ini("processes = 3")
    with open(path, "a") as f:
        f.write("[other]\nprocesses = 9\n")
    assert config_from_ini(path).processes == 3
    assert config_from_ini(path + ":other").processes == 9


def test_base_config_is_extended_and_config_file_remembered(ini):
    path = ini("threads = 4")
    config = config_from_ini(path, Config(processes=3))
    assert (config.processes, config.threads) == (3, 4)
    assert config.config_file == path


# --- refused keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, key",
    [
        ("emperor = /etc/uwsgi/vassals", "emperor"),
        ("gevent = 100", "gevent"),
        ("spooler = /var/spool", "spooler"),
        ("route-uri = ^/old redirect:/new", "route-uri"),
        ("plugins = php", "plugins"),
        ("plugins = python3,php", "plugins"),
        ("emperor-stats = :9191", "emperor-stats"),
        ("ssl-socket = :443,cert,key", "ssl-socket"),
    ],
)
def test_refused_key_names_key_file_and_line(ini, line, key):
    path = ini("processes = 2", "# a comment", line)
    with pytest.raises(ConfigError) as raised:
        config_from_ini(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:4: {key}: ")
    assert "\n" not in message


def test_python_plugins_are_accepted_as_noops(ini):
    config = load(ini, "plugins = python3", "plugin = http")
    assert config.ini_warnings == [
        f"{config.config_file}: accepted but without effect in forklift: plugin, plugins"
    ]


def test_every_refused_key_has_a_reason():
    assert all(reason.strip() for reason in REFUSED.values())
    assert not set(REFUSED) & ACCEPTED_NOOP


# --- no-op keys --------------------------------------------------------------------------------


def test_noop_keys_give_exactly_one_warning_listing_them(ini):
    path = ini(
        "master = true",
        "processes = 2",
        "enable-threads = true",
        "vacuum = true",
        "die-on-term = true",
        "master = true",
        "thunder-lock",
    )
    config = config_from_ini(path)
    assert config.ini_warnings == [
        f"{path}: accepted but without effect in forklift: "
        "die-on-term, enable-threads, master, thunder-lock"
    ]
    assert config.processes == 2
    assert config.vacuum is True


def test_honoured_keys_alone_give_no_warning(ini):
    config = load(ini, "socket = :6000", "processes = 2", "module = app:app", "vacuum = true")
    assert config.ini_warnings == []


# --- unknown keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typo, meant",
    [("guid", "gid"), ("vaccum", "vacuum"), ("maximum-requests", "max-requests")],
)
def test_unknown_key_warns_with_did_you_mean(ini, typo, meant):
    path = ini("processes = 1", f"{typo} = 1")
    config, warnings = read_with_warnings(path)
    assert warnings == [f"{path}:3: unknown option {typo!r} (did you mean {meant!r}?); ignored"]
    assert config.ini_warnings == warnings


def test_unknown_key_with_nothing_close_warns_without_a_suggestion(ini):
    path = ini("zzqqxx = 1")
    assert config_from_ini(path).ini_warnings == [f"{path}:2: unknown option 'zzqqxx'; ignored"]


def test_unknown_key_does_not_change_the_config(ini):
    assert load(ini, "guid = www-data").gid is None


def test_user_variable_referenced_by_a_placeholder_is_silent(ini):
    config = load(ini, "project = myapp", "chdir = /srv/%(project)", "base = /opt")
    assert config.chdir == "/srv/myapp"
    # `project` is a variable; `base`, referenced by nothing, is a possible typo.
    assert len(config.ini_warnings) == 1
    assert "'base'" in config.ini_warnings[0]


@pytest.mark.parametrize("flag", ["strict = true", "strict", "strict-mode = 1"])
def test_strict_in_the_file_makes_an_unknown_key_an_error(ini, flag):
    path = ini(flag, "guid = www-data")
    with pytest.raises(ConfigError) as raised:
        config_from_ini(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:3: unknown option 'guid'")
    assert "did you mean 'gid'" in message


def test_strict_argument_makes_an_unknown_key_an_error(ini):
    path = ini("guid = www-data")
    with pytest.raises(ConfigError, match="unknown option 'guid'"):
        config_from_ini(path, strict=True)


def test_strict_does_not_touch_noop_keys_or_user_variables(ini):
    config = load(ini, "master = true", "name = x", "procname = %(name)", strict=True)
    assert len(config.ini_warnings) == 1  # the no-op line


def test_strict_false_in_the_file_keeps_warnings(ini):
    assert load(ini, "strict = false", "guid = x").ini_warnings[0].endswith("; ignored")


def test_zero_workers_or_threads_names_the_ini_line(tmp_path):
    from forklift.errors import ConfigError
    from forklift.ini_config import config_from_ini

    for key in ("threads", "processes", "workers"):
        ini = tmp_path / f"{key}.ini"
        ini.write_text(f"[uwsgi]\nmodule = app\n{key} = 0\n")
        try:
            config_from_ini(str(ini))
        except ConfigError as exc:
            assert str(exc).startswith(f"{ini}:3: {key}:"), exc
        else:
            raise AssertionError(f"{key} = 0 was accepted")


def test_logger_file_sends_logs_to_the_file(tmp_path):
    from forklift.ini_config import config_from_ini, read_with_warnings

    ini = tmp_path / "log.ini"
    ini.write_text(
        "[uwsgi]\nmodule = app\nlogger = file:/var/log/app/error.log\n"
        "req-logger = file:logfile=/var/log/app/access.log,maxsize=100\n"
    )
    config = config_from_ini(str(ini))
    assert config.error_log == "/var/log/app/error.log"
    assert config.access_log == "/var/log/app/access.log"
    ini.write_text("[uwsgi]\nmodule = app\nlogger = syslog:myapp\n")
    config, warnings = read_with_warnings(str(ini))
    assert config.error_log is None
    assert any("only file:PATH" in w for w in warnings)
