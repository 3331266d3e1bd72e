"""How each option's value lands in a `Config`: the `Builder` and one applier per kind of key.

An applier takes the builder and one entry (`key`, `value`, `file`, `line`; from an ini file
or from the command line, whose entries have no file) and sets `Config` fields. Values are
read as uWSGI reads them where real files rely on it (`4 ; four workers` is 4, `true` in a
count is 1, with a warning). Every bad value is one `ConfigError` line: where (`FILE:LINE`
or `--key`), the key, the value, and what is accepted.
"""

from __future__ import annotations

import dataclasses
import re

from .config import (
    PROTOCOL_HTTP,
    PROTOCOL_UWSGI,
    Config,
    ListenAddress,
    parse_address,
    parse_networks,
    split_https,
    tls_paths_absolute,
)
from .errors import ConfigError

VALUE, FLAG, OPTIONAL = "value", "flag", "optional"

_TRUE = ("true", "yes", "on", "y", "t", "enable", "enabled")
_FALSE = ("false", "no", "off", "n", "f", "disable", "disabled", "")
# A number as uWSGI's atoi reads it, an optional k/m/g, then nothing or a comment (`4 ; four`).
_leading_number = re.compile(r"\s*([+-]?\d+)\s*([kKmMgG])?\s*(?:[;#].*)?$")
_UNSET_ENV = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)[^)]*\)")
_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def describe(entry) -> str:
    """Where a value was given and what it was: `FILE:LINE: key = value` or `--key value`."""
    if entry.line:
        return f"{entry.file}:{entry.line}: {entry.key} = {entry.value}"
    dashes = "-" if len(entry.key) == 1 else "--"
    return f"{dashes}{entry.key} {entry.value!r}"


def as_bool(value: str) -> bool:
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    match = _leading_number.match(value)
    return int(match.group(1)) != 0 if match else True


class Builder:
    """Accumulates entries into a Config, remembering where each value came from."""

    def __init__(self, config: Config):
        self.config = config
        self.sockets: list = []  # entries of `socket`: protocol decided at the end
        self.protocol = PROTOCOL_UWSGI
        self.noop: list = []
        self.warnings: list = []

    def fail(self, entry, why: str):
        unset = _UNSET_ENV.search(entry.value)
        if unset and "environment variable" not in why:  # uWSGI leaves an unset $(NAME) as is
            why += f" (the environment variable {unset.group(1)} is not set)"
        raise ConfigError(f"{describe(entry)}: {why}")

    def warn(self, entry, what: str) -> None:
        self.warnings.append(f"{describe(entry)}: {what}")

    def origin(self, attr: str, entry) -> None:
        self.config.origins[attr] = describe(entry)

    def number(self, entry, minimum: int = 0, what: str = "a whole number") -> int:
        """A count as uWSGI reads it (leading digits; `4 ; four` is 4), with two mercies real
        files need: `true` is 1 (uWSGI's reading of a bare key) and is said in a warning."""
        text = entry.value.strip()
        low = text.lower()
        if low in _TRUE:
            self.warn(entry, "read as 1, as uWSGI reads a boolean here")
            value = 1
        elif low in _FALSE and low:
            value = 0
        else:
            match = _leading_number.match(text)
            if not match or match.group(2):
                self.fail(entry, f"expected {what} (>= {minimum})")
            value = int(match.group(1))
        if value < minimum:
            self.fail(entry, f"must be at least {minimum} ({what})")
        return value

    def size(self, entry, maximum: int | None = None) -> int:
        """Bytes: digits with an optional k/m/g (powers of 1024); a trailing comment is ignored."""
        match = _leading_number.match(entry.value)
        if not match or int(match.group(1)) < 0:
            self.fail(entry, "expected a size in bytes (e.g. 65536, 64k, 10m)")
        value = int(match.group(1)) * _SIZE_UNITS.get((match.group(2) or "").lower(), 1)
        if maximum is not None and not 1 <= value <= maximum:
            self.fail(entry, f"must be between 1 and {maximum}")
        return value

    def seconds(self, entry) -> float:
        text = re.split(r"\s+[;#]|[;#]", entry.value, maxsplit=1)[0].strip()  # `30 ; s` is 30
        try:
            value = float(text)
        except ValueError:
            self.fail(entry, "expected a number of seconds")
        if value != value or value in (float("inf"), float("-inf")):
            self.fail(entry, "expected a number of seconds")
        if value < 0:
            self.fail(entry, "expected a number of seconds (>= 0)")
        return value

    def address(self, entry, protocol: str) -> ListenAddress:
        try:
            return parse_address(entry.value, protocol, "")
        except ConfigError as exc:
            unset = _UNSET_ENV.search(entry.value)
            if unset:  # uWSGI leaves an unset $(NAME) as written
                self.fail(entry, f"the environment variable {unset.group(1)} is not set")
            self.fail(entry, f"{exc} (accepted: host:port, :port, [v6]:port, unix:/path)")


# --- appliers -----------------------------------------------------------------------------------


def text(attr):
    def apply(b: Builder, e) -> None:
        setattr(b.config, attr, e.value.strip())
        b.origin(attr, e)

    return apply


def flag(attr):
    def apply(b: Builder, e) -> None:
        setattr(b.config, attr, as_bool(e.value))

    return apply


def count(attr, minimum=0, what="a whole number"):
    def apply(b: Builder, e) -> None:
        setattr(b.config, attr, b.number(e, minimum, what))
        b.origin(attr, e)

    return apply


def size(attr, maximum=None):
    def apply(b: Builder, e) -> None:
        setattr(b.config, attr, b.size(e, maximum))

    return apply


def seconds(attr):
    def apply(b: Builder, e) -> None:
        setattr(b.config, attr, b.seconds(e))

    return apply


def append(attr):
    def apply(b: Builder, e) -> None:
        getattr(b.config, attr).append(e.value.strip())

    return apply


# `module = app:app  # the app` keeps its comment in uWSGI (and fails there); a module path
# has no spaces, so what follows one is dropped.
_TRAILING_COMMENT = re.compile(r"\s+[#;].*$")


def app(b: Builder, e) -> None:
    """`module = pkg.mod[:callable]` (uWSGI's `wsgi`, `-w`, the positional argument)."""
    b.config.app, b.config.wsgi_file = _TRAILING_COMMENT.sub("", e.value.strip()), None
    b.origin("app", e)


def callable_name(b: Builder, e) -> None:
    b.config.callable = _TRAILING_COMMENT.sub("", e.value.strip())


def wsgi_file(b: Builder, e) -> None:
    b.config.wsgi_file = e.value.strip()
    b.origin("wsgi_file", e)


def short_w(b: Builder, e) -> None:
    """-w: uWSGI's module, gunicorn's worker count; a number can only mean workers."""
    if e.value.strip().isdigit():
        count("processes", 1, "worker processes")(b, e)
    else:
        app(b, e)


def short_b(b: Builder, e) -> None:
    """-b: uWSGI's buffer-size, gunicorn's bind; an address can only mean a listener."""
    if any(c in e.value for c in ":/[") and not e.value.strip().isdigit():
        http(b, e)
    else:
        b.config.buffer_size = b.size(e, 65536)


def socket(b: Builder, e) -> None:
    for part in e.value.split(","):
        if part.strip():
            b.sockets.append(e._replace(value=part.strip()))


def http(b: Builder, e) -> None:
    for part in e.value.split(","):
        if part.strip():
            b.config.listeners.append(b.address(e._replace(value=part.strip()), PROTOCOL_HTTP))


def uwsgi_socket(b: Builder, e) -> None:
    for part in e.value.split(","):
        if part.strip():
            b.config.listeners.append(b.address(e._replace(value=part.strip()), PROTOCOL_UWSGI))


def https(b: Builder, e) -> None:
    """`https = ADDR,CERT,KEY[,CIPHERS[,CA]]`: uWSGI's HTTPS router; forklift's workers
    terminate TLS on that address themselves."""
    try:
        text, files = split_https(e.value, "")
    except ConfigError as exc:
        b.fail(e, str(exc).removeprefix(": "))
    # The error messages of a certificate found bad at start name this file and line.
    key = f"{e.file}:{e.line}: {e.key}" if e.line else f"--{e.key}"
    files = dataclasses.replace(files, key=key)
    address = b.address(e._replace(value=text), PROTOCOL_HTTP)
    b.config.listeners.append(dataclasses.replace(address, tls=tls_paths_absolute(files)))


def access_log_format(b: Builder, e) -> None:
    value = e.value.strip().lower()
    if value not in ("combined", "json"):
        b.fail(e, "accepted: combined, json")
    b.config.access_log_format = value


def disable_metrics(b: Builder, e) -> None:
    b.config.metrics = not as_bool(e.value)


def protocol(b: Builder, e) -> None:
    value = e.value.strip().lower()
    if value in ("http", "http11"):
        b.protocol = PROTOCOL_HTTP
    elif value == "uwsgi":
        b.protocol = PROTOCOL_UWSGI
    else:
        b.fail(e, "accepted: http, http11, uwsgi (forklift speaks HTTP/1.1 and uwsgi)")


def mount(b: Builder, e) -> None:
    """`mount = /PREFIX=APP` (uWSGI), or `--mount /PREFIX`: the one app under a prefix."""
    prefix, sep, app = e.value.partition("=")
    prefix = prefix.strip()
    if not prefix.startswith("/"):
        b.fail(e, "expected /PREFIX=APP (or /PREFIX for the one app)")
    if not sep:
        if e.line:  # in a file, uWSGI's mount always names its app
            b.fail(e, "expected /PREFIX=APP")
        b.config.script_name = prefix
        return
    if not app.strip():
        b.fail(e, "expected /PREFIX=APP, the app is missing")
    b.config.mounts.append((prefix.rstrip("/") or "/", app.strip()))


def static_map(b: Builder, e) -> None:
    prefix, sep, directory = e.value.partition("=")
    if not sep or not prefix.strip().startswith("/"):
        b.fail(e, "expected /URL=DIRECTORY")
    b.config.static_maps.append((prefix.strip(), directory.strip()))


def add_header(b: Builder, e) -> None:
    name, sep, value = e.value.partition(":")
    if not sep or not name.strip():
        b.fail(e, "expected 'Name: value'")
    b.config.add_headers.append((name.strip(), value.strip()))


def networks(attr):
    def apply(b: Builder, e) -> None:
        try:
            setattr(b.config, attr, parse_networks(e.value, ""))
        except ConfigError as exc:
            b.fail(e, f"{exc} (accepted: addresses or CIDR networks, comma-separated, or *)")

    return apply


def mode(b: Builder, e) -> None:
    value = e.value.strip()
    if value.lower() in ("", "1") + _TRUE:
        value = "666"  # uWSGI: chmod-socket without a mode means 666
    try:
        b.config.chmod_socket = int(value, 8)
    except ValueError:
        b.fail(e, "expected an octal mode such as 660")


def umask(b: Builder, e) -> None:
    try:
        b.config.umask = int(e.value.strip(), 8)
    except ValueError:
        b.fail(e, "expected an octal umask such as 022")


def logto(b: Builder, e) -> None:
    b.config.error_log = e.value.strip()
    b.origin("error_log", e)
    if b.config.access_log == "-":
        b.config.access_log = b.config.error_log  # uWSGI's logto carries request lines too


def access_log(b: Builder, e) -> None:
    b.config.access_log = e.value.strip() or "-"


def disable_logging(b: Builder, e) -> None:
    if as_bool(e.value):
        b.config.access_log = None


def env(b: Builder, e) -> None:
    if "=" not in e.value:
        b.fail(e, "expected NAME=VALUE")
    b.config.env.append(e.value.strip())


def log_level(b: Builder, e) -> None:
    value = e.value.strip().lower()
    if value not in ("debug", "info", "warning", "error"):
        b.fail(e, "accepted: debug, info, warning, error")
    b.config.log_level = value


# Plugins that would serve another language or run another loop: what the file asks for
# cannot be done, so the start stops. Every other plugin name is accepted (it loads nothing).
_GREEN_PLUGINS = frozenset(
    ("gevent", "greenlet", "ugreen", "asyncio", "tornado", "stackless", "coroae", "fiber")
)
_ENGINE_PLUGINS = (
    "php",
    "psgi",
    "rack",
    "ruby",
    "lua",
    "jvm",
    "jwsgi",
    "ring",
    "mono",
    "cgi",
    "perl",
    "gccgo",
    "v8",
    "pypy",
    "glusterfs",
    "rados",
)


def plugins(b: Builder, e) -> None:
    """Naming a plugin loads nothing here. What forklift does itself (python, http, static,
    routing, logging plugins...) is accepted; a language or loop engine is refused, since
    the app it would serve cannot be served."""
    for name in re.split(r"[\s,]+", e.value.strip()):
        base = name.rpartition("/")[2].removesuffix(".so").removesuffix("_plugin")
        if base in _GREEN_PLUGINS:
            b.fail(
                e,
                f"plugin {name!r}: green threads and async loops are not supported "
                "(forklift uses threads: threads = N)",
            )
        if base.startswith(_ENGINE_PLUGINS):
            b.fail(e, f"plugin {name!r}: forklift serves Python WSGI apps only")
    b.noop.append(e)


def logger(b: Builder, e, requests: bool) -> None:
    """uWSGI's `logger = [name] file:PATH`, `syslog[:IDENT[,FACILITY]]` (/dev/log) or
    `rsyslog:HOST:PORT[,IDENT]` (UDP)."""
    value = e.value.strip()
    spec = value.split(None, 1)[-1] if " " in value else value  # "name file:..." form
    plugin, _, arg = spec.partition(":")
    if plugin == "file" and arg:
        if arg.startswith("logfile="):
            arg = arg[len("logfile=") :].split(",")[0]
        if requests:
            b.config.access_log = arg
        else:
            b.config.error_log = arg
            b.origin("error_log", e)
            if b.config.access_log == "-":
                b.config.access_log = arg  # uWSGI's logger carries request lines too
        return
    if plugin == "syslog" and not requests:
        ident, _, facility = arg.partition(",")
        b.config.syslog = (ident or "forklift", facility or "user", None)
        return
    if plugin == "rsyslog" and not requests:  # rsyslog:HOST:PORT[,IDENT]: syslog over UDP
        address, _, ident = arg.partition(",")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            b.fail(e, "expected rsyslog:HOST:PORT[,IDENT]")
        b.config.syslog = (ident or "forklift", "user", (host, int(port)))
        return
    b.warn(
        e,
        "only file:PATH, syslog[:IDENT[,FACILITY]] and rsyslog:HOST:PORT are supported; "
        "logging to the error log (stderr or logto) instead",
    )


def log_syslog(b: Builder, e) -> None:
    value = e.value.strip()
    ident, _, facility = ("" if value.lower() in _TRUE else value).partition(",")
    b.config.syslog = (ident or "forklift", facility or "user", None)


def log_date(b: Builder, e) -> None:
    """Lines carry their ISO date already; a strftime format given here is not followed."""
    if e.value.strip() and e.value.strip().lower() not in _TRUE:
        b.warn(e, "format ignored: forklift's log lines carry ISO dates")


def daemonize(b: Builder, e) -> None:
    b.config.daemonize = e.value.strip()
    b.origin("daemonize", e)


def autoreload(b: Builder, e) -> None:
    """`py-autoreload = N` polls every N seconds; `true` (a flag in some files) is every 1 s."""
    if e.value.strip().lower() in _TRUE:
        b.config.py_autoreload = 1.0
        return
    b.config.py_autoreload = b.seconds(e)


def keepalive(b: Builder, e) -> None:
    """`http-keepalive`: seconds in forklift; uWSGI files often write it as a flag, which
    keeps forklift's default (keep-alive is always on)."""
    if e.value.strip().lower() in _TRUE:
        return
    b.config.keepalive_timeout = b.seconds(e)


def harakiri(b: Builder, e) -> None:
    b.config.harakiri = b.seconds(e)


def buffer_size(b: Builder, e) -> None:
    # 65536 is what real files write as "the maximum"; the 16-bit packet size caps it at 65535.
    b.config.buffer_size = b.size(e, 65536)


def file_wrapper(b: Builder, e) -> None:
    b.config.file_wrapper = not as_bool(e.value)


# Route actions that only affect logging or bookkeeping: accepted, said in a warning.
_HARMLESS_ROUTE_ACTIONS = (
    "donotlog",
    "log",
    "logvar",
    "continue",
    "last",
    "fixpathinfo",
    "donotoffload",
    "harakiri",
    "addvar",
    "setapp",
)


def route(b: Builder, e) -> None:
    """uWSGI's internal routing: rules that only touch logging are accepted with a warning;
    rules that change the answer (redirect, rewrite, static, auth...) are refused, because
    silently not doing them would serve something else than the file says."""
    value = e.value.strip()
    parts = value.split(None, 1)
    action = value if e.key == "route-run" else (parts[1] if len(parts) > 1 else "")
    name = action.strip().split(":", 1)[0].strip()
    if name in _HARMLESS_ROUTE_ACTIONS:
        b.warn(e, f"routing action {name!r} ignored (forklift has no internal router)")
        return
    b.fail(
        e,
        f"routing action {name or value!r} is not done by forklift (do it in nginx or in the app)",
    )


def preload(b: Builder, e) -> None:
    b.config.preload = as_bool(e.value)


def lazy(b: Builder, e) -> None:
    b.config.lazy_apps = as_bool(e.value)


def safe_attach(b: Builder, e) -> None:
    b.fail(e, "a self-daemonizing process cannot be supervised here: run it as its own service")


def noop(b: Builder, e) -> None:
    """A key without effect here: remembered, so one warning names them all."""
    b.noop.append(e)
