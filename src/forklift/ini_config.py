"""uWSGI's vocabulary into a `Config`: `forklift --ini uwsgi.ini` runs a file written for uWSGI.

`uwsgi_ini.read_ini` resolves the dialect (magic variables, placeholders, includes, logic);
this module decides what each key means. Keys fall in four groups, each with one policy:

- keys forklift honours (`_APPLY`): they set `Config` fields;
- keys with no meaning for a pure-Python pre-fork server (`ACCEPTED_NOOP`): accepted, and
  listed in one warning line so nobody believes they do something;
- keys asking for something forklift will not do (`REFUSED`): the start stops with one line
  naming the key, the file, the line, and why;
- unknown keys: one warning with a did-you-mean, an error under `strict`. A key that some
  `%(name)` references is a user variable, not a typo, and is silent.
"""

from __future__ import annotations

import dataclasses
import difflib
import os

from .config import (
    PROTOCOL_HTTP,
    PROTOCOL_UWSGI,
    Config,
    ListenAddress,
    parse_address,
    parse_networks,
    parse_size,
    split_https,
    tls_paths_absolute,
)
from .errors import ConfigError
from .uwsgi_ini import atoi, read_ini, referenced_names

_TRUE = ("true", "1", "yes", "on", "y", "t", "enable", "enabled")
_FALSE = ("false", "0", "no", "off", "n", "f", "disable", "disabled", "")


def _bool(entry) -> bool:
    value = entry.value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return atoi(value) != 0 if value[:1].isdecimal() or value[:1] in "+-" else True


class _Builder:
    """Accumulates entries into a Config, remembering where each value came from."""

    def __init__(self, config: Config):
        self.config = config
        self.sockets: list = []  # (entry) of `socket`/`uwsgi-socket`: protocol decided at the end
        self.protocol = PROTOCOL_UWSGI
        self.noop: list = []
        self.unknown: list = []
        self.warnings: list = []

    def fail(self, entry, why: str):
        raise ConfigError(f"{entry.file}:{entry.line}: {entry.key}: {why}")

    def int(self, entry, minimum: int = 0) -> int:
        value = atoi(entry.value)
        if value < minimum:
            self.fail(entry, f"must be at least {minimum}, got {entry.value!r}")
        return value

    def address(self, entry, protocol: str) -> ListenAddress:
        try:
            return parse_address(entry.value.split(",")[0], protocol, entry.key)
        except ConfigError as exc:
            self.fail(entry, str(exc))


def _set(attr, convert="str", minimum: int = 0):
    def apply(b: _Builder, e) -> None:
        if convert == "int":
            value = b.int(e, minimum)
        elif convert == "bool":
            value = _bool(e)
        elif convert == "size":
            try:
                value = parse_size(
                    str(atoi(e.value)) if e.value.strip()[:1].isdecimal() else e.value, e.key
                )
            except ConfigError as exc:
                b.fail(e, str(exc))
        elif convert == "float":
            value = float(atoi(e.value))
        else:
            value = e.value
        setattr(b.config, attr, value)

    return apply


def _append(attr):
    def apply(b: _Builder, e) -> None:
        getattr(b.config, attr).append(e.value)

    return apply


def _module(b: _Builder, e) -> None:
    b.config.app = e.value.strip()


def _socket(b: _Builder, e) -> None:
    for part in e.value.split(","):
        b.sockets.append(e._replace(value=part.strip()))


def _http(b: _Builder, e) -> None:
    b.config.listeners.append(b.address(e, PROTOCOL_HTTP))


def _uwsgi_socket(b: _Builder, e) -> None:
    b.config.listeners.append(b.address(e, PROTOCOL_UWSGI))


def _https(b: _Builder, e) -> None:
    """`https = ADDR,CERT,KEY[,CIPHERS[,CA]]`: uWSGI's HTTPS router; forklift's workers
    terminate TLS on that address themselves."""
    # The key names file and line: a certificate problem found at start is reported so.
    text, files = split_https(e.value, f"{e.file}:{e.line}: {e.key}")
    address = b.address(e._replace(value=text), PROTOCOL_HTTP)
    b.config.listeners.append(dataclasses.replace(address, tls=tls_paths_absolute(files)))


def _protocol(b: _Builder, e) -> None:
    value = e.value.strip().lower()
    if value in ("http", "http11"):
        b.protocol = PROTOCOL_HTTP
    elif value == "uwsgi":
        b.protocol = PROTOCOL_UWSGI
    else:
        b.fail(e, f"protocol {value!r} is not served (forklift speaks http and uwsgi)")


def _mount(b: _Builder, e) -> None:
    prefix, sep, app = e.value.partition("=")
    if not sep or not prefix.startswith("/") or not app.strip():
        b.fail(e, f"expected /PREFIX=APP, got {e.value!r}")
    b.config.mounts.append((prefix.strip().rstrip("/") or "/", app.strip()))


def _static_map(b: _Builder, e) -> None:
    prefix, sep, directory = e.value.partition("=")
    if not sep or not prefix.startswith("/"):
        b.fail(e, f"expected /URL=DIRECTORY, got {e.value!r}")
    b.config.static_maps.append((prefix.strip(), directory.strip()))


def _add_header(b: _Builder, e) -> None:
    name, sep, value = e.value.partition(":")
    if not sep or not name.strip():
        b.fail(e, f"expected 'Name: value', got {e.value!r}")
    b.config.add_headers.append((name.strip(), value.strip()))


def _networks(attr):
    def apply(b: _Builder, e) -> None:
        try:
            setattr(b.config, attr, parse_networks(e.value, e.key))
        except ConfigError as exc:
            b.fail(e, str(exc))

    return apply


def _mode(b: _Builder, e) -> None:
    value = e.value.strip() or "666"
    if value in ("1", "true"):
        value = "666"  # uWSGI: chmod-socket without a mode means 666
    try:
        b.config.chmod_socket = int(value, 8)
    except ValueError:
        b.fail(e, f"expected an octal mode such as 660, got {e.value!r}")


def _umask(b: _Builder, e) -> None:
    try:
        b.config.umask = int(e.value.strip(), 8)
    except ValueError:
        b.fail(e, f"expected an octal umask such as 022, got {e.value!r}")


def _logto(b: _Builder, e) -> None:
    b.config.error_log = e.value
    if b.config.access_log == "-":
        b.config.access_log = e.value  # uWSGI's logto carries request lines too


def _disable_logging(b: _Builder, e) -> None:
    if _bool(e):
        b.config.access_log = None


def _env(b: _Builder, e) -> None:
    if "=" not in e.value:
        b.fail(e, f"expected NAME=VALUE, got {e.value!r}")
    b.config.env.append(e.value)


def _plugins(b: _Builder, e) -> None:
    for name in e.value.replace(" ", ",").split(","):
        name = name.strip()
        if name and not (name.startswith("python") or name in ("http", "logfile", "0")):
            b.fail(e, f"plugin {name!r}: forklift is a pure-Python server and loads no plugins")
    b.noop.append(e)


def _logger(b: _Builder, e, requests: bool) -> None:
    """uWSGI's `logger = [name] file:PATH` (or `file:logfile=PATH,...`): the log goes to a
    file. Other logger plugins (syslog, socket, zeromq, ...) are not available: warned."""
    value = e.value.strip()
    spec = value.split(None, 1)[-1] if " " in value else value  # "name file:..." form
    plugin, _, arg = spec.partition(":")
    if plugin != "file" or not arg:
        b.warnings.append(
            f"{e.file}:{e.line}: {e.key} {value!r}: only file:PATH is supported; "
            "logging to stderr/stdout instead"
        )
        return
    if arg.startswith("logfile="):
        arg = arg[len("logfile=") :].split(",")[0]
    if requests:
        b.config.access_log = arg
    else:
        b.config.error_log = arg
        if b.config.access_log == "-":
            b.config.access_log = arg  # uWSGI's logger carries request lines too


def _log_date(b: _Builder, e) -> None:
    """Every forklift log line starts with its date already; a strftime format given
    here is not followed (the warning says so), a bare `log-date` needs nothing."""
    if e.value.strip() and e.value.strip().lower() not in _TRUE:
        b.warnings.append(
            f"{e.file}:{e.line}: log-date format {e.value!r} ignored: lines carry ISO dates"
        )


def _daemonize(b: _Builder, e) -> None:
    b.config.daemonize = e.value


def _harakiri(b: _Builder, e) -> None:
    b.config.harakiri = float(b.int(e))


def _limit_post(b: _Builder, e) -> None:
    b.config.max_body_size = b.int(e)


_APPLY = {
    "module": _module,
    "wsgi": _module,
    "wsgi-file": _set("wsgi_file"),
    "file": _set("wsgi_file"),
    "callable": _set("callable"),
    "chdir": _set("chdir"),
    "chdir2": _set("chdir"),
    "pythonpath": _append("pythonpath"),
    "python-path": _append("pythonpath"),
    "pp": _append("pythonpath"),
    "virtualenv": _set("virtualenv"),
    "venv": _set("virtualenv"),
    "home": _set("virtualenv"),
    "pyhome": _set("virtualenv"),
    "env": _env,
    "mount": _mount,
    "manage-script-name": _set("manage_script_name", "bool"),
    "socket": _socket,
    "uwsgi-socket": _uwsgi_socket,
    "http-socket": _http,
    "http": _http,
    "https": _https,
    "https-socket": _https,
    "http-enable-proxy-protocol": _set("proxy_protocol", "bool"),
    "enable-proxy-protocol": _set("proxy_protocol", "bool"),
    "py-autoreload": _set("py_autoreload", "float"),
    "python-autoreload": _set("py_autoreload", "float"),
    "protocol": _protocol,
    "socket-protocol": _protocol,
    "listen": _set("backlog", "int", 1),
    "chmod-socket": _mode,
    "chown-socket": _set("chown_socket"),
    "uid": _set("uid"),
    "gid": _set("gid"),
    "umask": _umask,
    "processes": _set("processes", "int", 1),
    "workers": _set("processes", "int", 1),
    "threads": _set("threads", "int", 1),
    "buffer-size": _set("buffer_size", "int", 1),
    "post-buffering": _set("post_buffering", "int"),
    "limit-post": _limit_post,
    "socket-timeout": _set("socket_timeout", "float"),
    "http-timeout": _set("socket_timeout", "float"),
    "http-keepalive": _set("keepalive_timeout", "float"),
    "harakiri": _harakiri,
    "max-requests": _set("max_requests", "int"),
    "max-requests-delta": _set("max_requests_jitter", "int"),
    "reload-on-rss": _set("reload_on_rss", "int"),
    "worker-reload-mercy": _set("graceful_timeout", "float"),
    "reload-mercy": _set("graceful_timeout", "float"),
    "pidfile": _set("pidfile"),
    "pidfile2": _set("pidfile"),
    "daemonize": _daemonize,
    "daemonize2": _daemonize,
    "logto": _logto,
    "logto2": _logto,
    "disable-logging": _disable_logging,
    "log-4xx": _set("log_4xx", "bool"),
    "log-5xx": _set("log_5xx", "bool"),
    "log-slow": _set("log_slow", "int"),
    "log-date": _log_date,
    "logger": lambda b, e: _logger(b, e, requests=False),
    "req-logger": lambda b, e: _logger(b, e, requests=True),
    "log-maxsize": _set("log_maxsize", "int"),
    "vacuum": _set("vacuum", "bool"),
    "stats": _set("stats"),
    "stats-server": _set("stats"),
    "static-map": _static_map,
    "add-header": _add_header,
    "touch-reload": _append("touch_reload"),
    "attach-daemon": _append("attach_daemons"),
    "attach-daemon2": _append("attach_daemons"),
    "exec-asap": _append("exec_asap"),
    "exec-pre-app": _append("exec_asap"),
    "hook-pre-app": _append("hook_pre_app"),
    "hook-asap": _append("hook_pre_app"),
    "strict": _set("strict", "bool"),
    "need-app": _set("need_app", "bool"),
    "lazy-apps": _set("lazy_apps", "bool"),
    "plugins": _plugins,
    "plugin": _plugins,
    "uwsgi-allow-ips": _networks("uwsgi_allow_ips"),
    "forwarded-allow-ips": _networks("forwarded_allow_ips"),
}

#: Keys that mean nothing for a pure-Python pre-fork server: accepted, named in a warning.
ACCEPTED_NOOP = frozenset(
    [
        "master",
        "enable-threads",
        "single-interpreter",
        "thunder-lock",
        "offload-threads",
        "memory-report",
        "auto-procname",
        "procname",
        "procname-prefix",
        "procname-prefix-spaced",
        "procname-append",
        "procname-master",
        "die-on-term",
        "ignore-sigpipe",
        "ignore-write-errors",
        "disable-write-exception",
        "harakiri-verbose",
        "log-reopen",
        "logdate",
        "log-master",
        "log-x-forwarded-for",
        "hook-master-start",
        "no-orphans",
        "optimize",
        "cpu-affinity",
        "reuse-port",
        "so-keepalive",
        "tcp-nodelay",
        "buffer-size-hint",
        "max-fd",
        "set-placeholder",
        "set-ph",
        "cheaper",
        "cheaper-algo",
        "cheaper-initial",
        "cheaper-step",
        "cheaper-overload",
        "cheaper-busyness-max",
        "cheaper-busyness-min",
        "cheaper-busyness-multiplier",
        "cheaper-rss-limit-soft",
        "cheaper-rss-limit-hard",
        "idle",
        "die-on-idle",
        "vhost",
        "no-site",
        "py-tracebacker",
        "memory-report",
        "show-config",
        "print",
        "strict-mode",
        "wsgi-env-behavior",
        "wsgi-env-behaviour",
        "honour-stdin",
        "close-on-exec",
        "close-on-exec2",
        "catch-exceptions",
        "evil-reload-on-rss",
        "reload-on-as",
        "static-index",
        "static-expires-uri",
        "static-expires",
        "static-gzip-all",
        "check-static",
        "route-run",
        "python-worker-override",
        "lazy",
        "post-buffering-bufsize",
        "upload-progress",
        "touch-logreopen",
        "log-micros",
        "log-zero",
        "log-sendfile",
        "log-ioerror",
        "log-drain",
        "log-format",
        "logformat",
        "master-fifo",
        "max-worker-lifetime",
        "max-worker-lifetime-delta",
        "min-worker-lifetime",
        "worker-exec",
        "http-auto-chunked",
        "http-websockets",
        "http-raw-body",
        "http-keepalive-timeout",
        "add-header-on-reload",
        "env-file",
        "pep3333-input",
        "stats-http",
        "memory-report",
    ]
)

#: Keys asking for something forklift will not do, with the reason given to the operator.
REFUSED = {
    "emperor": "emperor mode is not part of forklift: run one forklift per app, under systemd",
    "vassal": "emperor mode (managing vassals) is not part of forklift",
    "fastrouter": "the fastrouter is not part of forklift: put nginx in front",
    "http-to": "the HTTP router is not part of forklift: nginx proxies to forklift directly",
    "gevent": "gevent loops are not supported: forklift uses threads (--threads)",
    "async": "async cores are not supported: forklift uses threads (--threads)",
    "ugreen": "green threads are not supported: forklift uses threads (--threads)",
    "greenlet": "green threads are not supported: forklift uses threads (--threads)",
    "asyncio": "the asyncio loop engine is not supported: forklift serves WSGI with threads",
    "spooler": "the spooler is not part of forklift: use a task queue",
    "mule": "mules are not part of forklift: run background work as attach-daemon or a service",
    "mules": "mules are not part of forklift",
    "cache": "uWSGI's caches are not part of forklift: use Redis or memcached",
    "cache2": "uWSGI's caches are not part of forklift: use Redis or memcached",
    "cron": "uWSGI's cron is not part of forklift: use a systemd timer",
    "cron2": "uWSGI's cron is not part of forklift: use a systemd timer",
    "unique-cron": "uWSGI's cron is not part of forklift: use a systemd timer",
    "route": "internal routing is not part of forklift: route in nginx or in the app",
    "route-uri": "internal routing is not part of forklift: route in nginx or in the app",
    "route-host": "internal routing is not part of forklift: route in nginx or in the app",
    "log-route": "log routing is not part of forklift",
    "zerg": "zerg mode is not part of forklift",
    "zerg-server": "zerg mode is not part of forklift",
    "subscribe-to": "subscriptions (fastrouter) are not part of forklift",
    "subscribe2": "subscriptions (fastrouter) are not part of forklift",
    "legion": "legions are not part of forklift",
    "ssl-socket": "the uwsgi protocol over TLS is not served: use https or https-socket",
    "fastcgi-socket": "FastCGI is not served: use socket (uwsgi protocol) or http-socket",
    "scgi-socket": "SCGI is not served: use socket (uwsgi protocol) or http-socket",
    "rack": "only Python WSGI apps are served",
    "psgi": "only Python WSGI apps are served",
    "lua": "only Python WSGI apps are served",
    "php": "only Python WSGI apps are served",
    "jvm": "only Python WSGI apps are served",
    "wsgi-file-python2": "only Python 3 apps are served",
}
_REFUSED_PREFIXES = (
    ("emperor-", "emperor mode is not part of forklift"),
    ("fastrouter-", "the fastrouter is not part of forklift: put nginx in front"),
    ("spooler-", "the spooler is not part of forklift: use a task queue"),
    ("cache2-", "uWSGI's caches are not part of forklift"),
    ("legion-", "legions are not part of forklift"),
    ("route-", "internal routing is not part of forklift"),
    ("gevent-", "gevent loops are not supported"),
    ("subscription-", "subscriptions are not part of forklift"),
    ("rawrouter", "the rawrouter is not part of forklift"),
    ("sslrouter", "the sslrouter is not part of forklift"),
)

KNOWN_KEYS = frozenset(_APPLY) | ACCEPTED_NOOP | frozenset(REFUSED) | {"ini"}


def suggest(key: str) -> str | None:
    """The known key a typo most likely meant (`guid` -> `gid`), or None."""
    matches = difflib.get_close_matches(
        key, sorted(_APPLY) + sorted(ACCEPTED_NOOP), n=4, cutoff=0.7
    )
    if not matches:
        return None
    for match in matches:
        if match[:1] == key[:1]:
            return match
    return matches[0]


def config_from_ini(
    spec: str, base: Config | None = None, *, reload: bool = False, strict: bool = False
) -> Config:
    """Read `FILE[:SECTION]` into a Config (not yet validated); warnings in `ini_warnings`.

    `strict` (the command line's --strict) makes unknown keys errors, as `strict = true`."""
    config, _ = read_with_warnings(spec, base, reload=reload, strict=strict)
    return config


def read_with_warnings(
    spec: str, base: Config | None = None, *, reload: bool = False, strict: bool = False
):
    """(Config, [warning lines]) for an ini file; ConfigError on a refused or invalid key."""
    entries = read_ini(spec, reload=reload)
    builder = _Builder(base if base is not None else Config())
    user_vars = referenced_names(entries)
    strict = strict or any(e.key in ("strict", "strict-mode") and _bool(e) for e in entries)
    for entry in entries:
        key = entry.key
        if key.startswith("if-") or key in ("endif", "else", "end"):
            continue
        apply = _APPLY.get(key)
        if apply is not None:
            apply(builder, entry)
            continue
        if key in ACCEPTED_NOOP:
            builder.noop.append(entry)
            continue
        why = REFUSED.get(key) or next(
            (reason for prefix, reason in _REFUSED_PREFIXES if key.startswith(prefix)), None
        )
        if why is not None:
            builder.fail(entry, f"not supported: {why}")
        if key in user_vars:
            continue  # a user variable that %(...) refers to
        builder.unknown.append(entry)

    for entry in builder.sockets:
        builder.config.listeners.append(builder.address(entry, builder.protocol))

    warnings = list(builder.warnings)
    if builder.noop:
        names = sorted({e.key for e in builder.noop})
        warnings.append(
            f"{entry_file(entries)}: accepted but without effect in forklift: {', '.join(names)}"
        )
    for entry in builder.unknown:
        hint = suggest(entry.key)
        message = f"{entry.file}:{entry.line}: unknown option {entry.key!r}"
        if hint:
            message += f" (did you mean {hint!r}?)"
        if strict:
            raise ConfigError(message + " [strict]")
        warnings.append(message + "; ignored")
    config = builder.config
    config.config_file = spec
    config.ini_warnings = warnings
    return config, warnings


def entry_file(entries) -> str:
    return entries[0].file if entries else "ini"


def resolve_relative(path: str, base_dir: str) -> str:
    return path if os.path.isabs(path) else os.path.join(base_dir, path)
