"""The one table of forklift's options: every key it knows, for the command line and the ini.

uWSGI takes every option both ways (`socket = :6000` in a file is `--socket :6000` on the
command line); so does forklift. A key is in exactly one group, each with one policy:

- `OPTIONS`: keys forklift honours; each `Option` says how many words it takes on the command
  line (`VALUE`; `FLAG`: a bare `--key` is true; `OPTIONAL`: `--key=VALUE` or bare), how its
  value lands in `Config` (an applier of `option_values.py`), and its line in `--help`;
- `ACCEPTED_NOOP`: keys with no meaning for a pure-Python pre-fork server, accepted and
  listed in one warning line so nobody believes they do something (`NOOP_FLAGS` take no
  value on the command line);
- `REFUSED` (and `_REFUSED_PREFIXES`): keys asking for something forklift will not do; the
  start stops with one line naming the key, where it was written, and why.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import NamedTuple

from . import option_values as v
from .option_values import FLAG, OPTIONAL, VALUE, Builder

__all__ = ["FLAG", "OPTIONAL", "VALUE", "Builder", "Option", "OPTIONS", "apply_entries"]


class Option(NamedTuple):
    """One honoured key: its names, what it takes on the command line, what it does."""

    name: str
    apply: Callable
    takes: str = VALUE
    aliases: tuple = ()
    short: str | None = None
    metavar: str = "VALUE"
    help: str = ""
    group: str = "application"


_L = "listeners"
_C = "concurrency"
_LIM = "limits"
_T = "timeouts (seconds)"
_P = "process management"
_LOG = "logging"
_U = "uWSGI features"

# fmt: off
OPTIONS: tuple = (
    # --- application
    Option("module", v.app, aliases=("wsgi",), metavar="MODULE[:CALLABLE]",
           help="the WSGI app (also the positional argument)"),
    Option("wsgi-file", v.wsgi_file, aliases=("file",), metavar="FILE",
           help="load the app from this Python file (relative: to chdir)"),
    Option("callable", v.callable_name, metavar="NAME",
           help="name of the app in the module (default: application)"),
    Option("chdir", v.text("chdir"), aliases=("chdir2",), metavar="DIR",
           help="change to DIR before importing the app (checked at start)"),
    Option("pythonpath", v.append("pythonpath"), aliases=("python-path", "pp"), metavar="DIR",
           help="add DIR to sys.path (repeatable)"),
    Option("virtualenv", v.text("virtualenv"), aliases=("home", "venv", "pyhome"), short="H",
           metavar="DIR", help="a venv whose site-packages each worker puts first on sys.path"),
    Option("env", v.env, metavar="NAME=VALUE", help="set before the import (repeatable)"),
    Option("mount", v.mount, metavar="/PREFIX[=APP]",
           help="serve the app (or APP) under this URL prefix"),
    Option("manage-script-name", v.flag("manage_script_name"), FLAG,
           help="mounts: move the prefix from PATH_INFO to SCRIPT_NAME"),
    Option("health-check", v.text("health_check"), metavar="PATH",
           help="each new worker must answer GET PATH with a 2xx before it accepts"),
    Option("health-host", v.text("health_host"), metavar="HOST",
           help="Host header of the health check"),
    Option("preload", v.preload, FLAG,
           help="import the app in the master before forking (HUP does not re-import)"),
    Option("lazy-apps", v.lazy, FLAG, help="import the app in each worker (the default)"),
    Option("need-app", v.flag("need_app"), FLAG, help="a failed import stops the start (default)"),
    Option("wsgi-disable-file-wrapper", v.file_wrapper, FLAG,
           help="no wsgi.file_wrapper in the environ"),
    # --- listeners
    Option("http", v.http, aliases=("http-socket",), metavar="ADDR", group=_L,
           help="listen for HTTP/1.1 on ADDR (repeatable; default 127.0.0.1:8000)"),
    Option("socket", v.socket, short="s", metavar="ADDR", group=_L,
           help="listen for the uwsgi protocol on ADDR (nginx uwsgi_pass; repeatable)"),
    Option("uwsgi-socket", v.uwsgi_socket, metavar="ADDR", group=_L,
           help="the same, whatever `protocol` says"),
    Option("protocol", v.protocol, aliases=("socket-protocol",), metavar="http|uwsgi", group=_L,
           help="the protocol of `socket` listeners (default uwsgi)"),
    Option("listen", v.count("backlog", 1, "a listen backlog"), short="l", metavar="N",
           group=_L, help="listen backlog (1024)"),
    Option("chmod-socket", v.mode, OPTIONAL, short="C", metavar="MODE", group=_L,
           help="mode of unix sockets (bare: 666)"),
    Option("chown-socket", v.text("chown_socket"), metavar="USER[:GROUP]", group=_L,
           help="owner of unix sockets (as root)"),
    Option("uwsgi-allow-ips", v.networks("uwsgi_allow_ips"), metavar="LIST", group=_L,
           help="peers allowed on TCP uwsgi listeners (127.0.0.1,::1; CIDR allowed)"),
    Option("forwarded-allow-ips", v.networks("forwarded_allow_ips"), metavar="LIST", group=_L,
           help="peers whose X-Forwarded-For/-Proto are believed (127.0.0.1,::1; '*' all)"),
    Option("https", v.https, aliases=("https-socket",), metavar="ADDR,CERT,KEY[,CIPHERS[,CA]]",
           group=_L, help="listen for HTTPS on ADDR (a CA asks for client certificates, "
           "!CA requires them; repeatable)"),
    Option("certfile", v.text("certfile"), metavar="FILE", group=_L,
           help="TLS certificate for every http listener"),
    Option("keyfile", v.text("keyfile"), metavar="FILE", group=_L,
           help="TLS private key for every http listener"),
    Option("proxy-protocol", v.flag("proxy_protocol"), FLAG,
           aliases=("enable-proxy-protocol", "http-enable-proxy-protocol"), group=_L,
           help="expect a PROXY protocol v1/v2 header (HAProxy send-proxy) first"),
    Option("proxy-allow-ips", v.networks("proxy_allow_ips"), metavar="LIST", group=_L,
           help="peers allowed to send a PROXY header (127.0.0.1,::1; CIDR allowed)"),
    # --- concurrency
    Option("processes", v.count("processes", 1, "worker processes"), aliases=("workers",),
           short="p", metavar="N", group=_C, help="worker processes (1)"),
    Option("threads", v.count("threads", 1, "threads per worker"), metavar="N", group=_C,
           help="threads per worker (1)"),
    # --- limits
    Option("max-request-line", v.size("max_request_line"), metavar="BYTES", group=_LIM,
           help="request line limit, 414 (8k)"),
    Option("max-header-size", v.size("max_header_bytes"), metavar="BYTES", group=_LIM,
           help="header block limit, 431 (64k)"),
    Option("max-header-fields", v.count("max_header_fields", 1), metavar="N", group=_LIM,
           help="field count limit, 431 (100)"),
    Option("limit-post", v.size("max_body_size"), aliases=("max-body-size",), metavar="BYTES",
           group=_LIM, help="request body limit, 413 (default: none)"),
    Option("post-buffering", v.size("post_buffering"), metavar="BYTES", group=_LIM,
           help="request body bytes kept in memory; the loop spools the rest to a temporary "
                "file before the app runs (64k; 0: the app reads the body as it arrives)"),
    Option("stream-request-body", v.flag("stream_request_body"), FLAG, group=_LIM,
           help="the app reads request bodies from the socket as they arrive (a slow sender "
                "then holds that request's thread)"),
    Option("body-temp-dir", v.text("body_temp_dir"), metavar="DIR", group=_LIM,
           help="where spooled request bodies go (default: $TMPDIR)"),
    Option("response-buffer", v.size("response_buffer"), metavar="BYTES", group=_LIM,
           help="answer bytes held per connection before the app's iterator is advanced "
                "again (64k)"),
    Option("buffer-size", v.buffer_size, metavar="BYTES", group=_LIM,
           help="uwsgi packet size limit (4096; up to 65536)"),
    # --- timeouts
    Option("head-timeout", v.seconds("head_timeout"), metavar="SECONDS", group=_T,
           help="the request head must arrive in (10)"),
    Option("keepalive-timeout", v.keepalive, aliases=("http-keepalive",),
           metavar="SECONDS", group=_T, help="idle keep-alive (5)"),
    Option("socket-timeout", v.seconds("socket_timeout"), aliases=("http-timeout",), short="z",
           metavar="SECONDS", group=_T, help="each body read or response write (30)"),
    Option("graceful-timeout", v.seconds("graceful_timeout"),
           aliases=("worker-reload-mercy", "reload-mercy"), metavar="SECONDS", group=_T,
           help="TERM: time to finish requests (30)"),
    # --- process management
    Option("pidfile", v.text("pidfile"), aliases=("pidfile2", "safe-pidfile", "safe-pidfile2"),
           metavar="FILE", group=_P,
           help="write the master's pid here (relative: to the start directory)"),
    Option("daemonize", v.daemonize, aliases=("daemonize2",), short="d", metavar="LOGFILE",
           group=_P, help="detach once the workers serve, output to LOGFILE "
           "(-d followed by an option: to the ini's logto)"),
    Option("harakiri", v.harakiri, aliases=("timeout",), short="t", metavar="SECONDS",
           group=_P, help="kill and replace a worker whose request runs longer"),
    Option("max-requests", v.count("max_requests"), short="R", metavar="N", group=_P,
           help="replace a worker after N requests"),
    Option("max-requests-jitter", v.count("max_requests_jitter"),
           aliases=("max-requests-delta",), metavar="N", group=_P,
           help="add 0..N to max-requests"),
    Option("reload-on-rss", v.count("reload_on_rss"), metavar="MB", group=_P,
           help="replace a worker above MB resident memory"),
    Option("vacuum", v.flag("vacuum"), FLAG, group=_P,
           help="remove unix sockets and the pidfile on exit"),
    Option("stats", v.text("stats"), aliases=("stats-server",), metavar="ADDR", group=_P,
           help="read-only: status JSON (raw or GET /status.json), GET /metrics, GET / (a page)"),
    Option("disable-metrics", v.disable_metrics, FLAG, group=_P,
           help="no request metrics (on by default)"),
    Option("py-autoreload", v.autoreload, aliases=("python-autoreload",),
           metavar="SECONDS", group=_P,
           help="development: poll the app's module files every SECONDS, reload on a change"),
    Option("uid", v.text("uid"), metavar="USER", group=_P, help="run as USER (when root)"),
    Option("gid", v.text("gid"), metavar="GROUP", group=_P, help="run as GROUP (when root)"),
    Option("umask", v.umask, metavar="MASK", group=_P, help="umask of the server"),
    Option("strict", v.flag("strict"), FLAG, group=_P, help="unknown ini keys are errors"),
    # --- logging
    Option("logto", v.logto, aliases=("logto2", "error-log"), metavar="FILE", group=_LOG,
           help="error log (and stderr of every process); a missing directory is created"),
    Option("access-log", v.access_log, metavar="FILE", group=_LOG,
           help="access log file (default: stdout; with logto: that file)"),
    Option("access-log-format", v.access_log_format, metavar="combined|json", group=_LOG,
           help="json: OpenTelemetry field names, every value escaped"),
    Option("disable-logging", v.disable_logging, FLAG, short="L", group=_LOG,
           help="no access log"),
    Option("log-level", v.log_level, metavar="LEVEL", group=_LOG,
           help="error log level: debug, info, warning, error"),
    Option("log-4xx", v.flag("log_4xx"), FLAG, group=_LOG, help="log 4xx even when disabled"),
    Option("log-5xx", v.flag("log_5xx"), FLAG, group=_LOG, help="log 5xx even when disabled"),
    Option("log-slow", v.count("log_slow"), metavar="MS", group=_LOG,
           help="log requests slower than MS to the error log"),
    Option("log-maxsize", v.size("log_maxsize"), metavar="BYTES", group=_LOG,
           help="rotate a log file past BYTES"),
    Option("log-date", v.log_date, OPTIONAL, aliases=("logdate",), group=_LOG,
           help="(lines always carry dates)"),
    Option("logger", lambda b, e: v.logger(b, e, requests=False), metavar="file:PATH|syslog",
           group=_LOG, help="error log to a file, or to syslog"),
    Option("req-logger", lambda b, e: v.logger(b, e, requests=True), metavar="file:PATH",
           group=_LOG, help="access log to a file"),
    Option("log-syslog", v.log_syslog, OPTIONAL, metavar="IDENT[,FACILITY]", group=_LOG,
           help="error log to syslog (/dev/log) as well"),
    # --- uWSGI features
    Option("static-map", v.static_map, aliases=("static-map2",), metavar="/URL=DIR", group=_U,
           help="serve files of DIR under /URL"),
    Option("add-header", v.add_header, metavar="'Name: value'", group=_U,
           help="add a header to every answer"),
    Option("touch-reload", v.append("touch_reload"),
           aliases=("touch-chain-reload", "touch-workers-reload", "fs-reload"), metavar="FILE",
           group=_U, help="graceful reload when FILE's mtime changes"),
    Option("attach-daemon", v.append("attach_daemons"), aliases=("attach-daemon2",),
           metavar="CMD", group=_U, help="a command the master runs and restarts"),
    Option("exec-asap", v.append("exec_asap"), aliases=("exec-pre-app", "exec-as-root"),
           metavar="CMD", group=_U, help="run CMD before serving; a failure stops the start"),
    Option("hook-pre-app", v.append("hook_pre_app"), aliases=("hook-asap",),
           metavar="exec:CMD", group=_U, help="run CMD before the app is imported"),
    Option("plugins", v.plugins, aliases=("plugin", "need-plugin", "need-plugins"),
           metavar="NAMES", group=_U, help="python*, http, logfile, syslog...: nothing to load"),
    Option("route", v.route, aliases=("route-uri", "route-host", "route-if", "route-if-not",
                                      "route-run", "route-label", "route-qs", "route-remote-addr",
                                      "route-user-agent", "route-referer"),
           metavar="RULE", group=_U, help="logging-only rules are accepted; others refused"),
    Option("smart-attach-daemon", v.safe_attach, aliases=("smart-attach-daemon2",),
           metavar="PIDFILE CMD", group=_U),
)

#: Keys that mean nothing for a pure-Python pre-fork server: accepted, named in a warning.
NOOP_FLAGS = frozenset("""
    master enable-threads single-interpreter thunder-lock memory-report auto-procname
    die-on-term ignore-sigpipe ignore-write-errors disable-write-exception harakiri-verbose
    log-reopen log-master log-x-forwarded-for no-orphans reuse-port so-keepalive tcp-nodelay
    show-config honour-stdin close-on-exec close-on-exec2 catch-exceptions static-gzip-all
    log-micros log-zero log-sendfile log-ioerror http-auto-chunked http-websockets
    http-raw-body add-header-on-reload pep3333-input stats-http stats-minified skip-atexit
    skip-atexit-teardown master-as-root threaded-logger enable-metrics freebind
    py-call-osafterfork py-call-uwsgi-fork-hooks honour-range no-default-app lazy no-site
    evil-reload-on-rss strict-mode cheap vhost die-on-idle logfile-chown
""".split())  # noqa: SIM905 - a table of names reads better as words
ACCEPTED_NOOP = NOOP_FLAGS | frozenset("""
    procname procname-prefix procname-prefix-spaced procname-append procname-master
    hook-master-start optimize cpu-affinity buffer-size-hint
    max-fd set-placeholder set-ph cheaper cheaper-algo cheaper-initial cheaper-step
    cheaper-overload cheaper-busyness-max cheaper-busyness-min cheaper-busyness-multiplier
    cheaper-busyness-penalty cheaper-busyness-verbose cheaper-busyness-backlog-alert
    cheaper-rss-limit-soft cheaper-rss-limit-hard idle py-tracebacker print
    wsgi-env-behavior wsgi-env-behaviour static-index static-expires-uri static-expires
    static-expires-type static-expires-type-mtime static-expires-mtime static-safe
    static-skip-ext static-cache-paths static-gzip static-gzip-ext static-gzip-dir
    check-static file-serve-mode mimefile python-worker-override post-buffering-bufsize
    upload-progress touch-logreopen log-drain log-format logformat log-prefix
    log-backupname logfile-chmod log-encoder master-fifo max-worker-lifetime
    max-worker-lifetime-delta min-worker-lifetime worker-exec http-keepalive-timeout
    env-file reload-on-as limit-as limit-nproc offload-threads threads-stacksize
    thread-stacksize pcre-jit carbon carbon-id carbon-freq stats-push pyargv
    py-program-name pymodule-alias import pyimport python-import py-import shared-import
    unenv mule-reload-mercy harakiri-graceful-timeout harakiri-graceful-signal
    socket-send-timeout so-send-timeout hook-accepting hook-accepting-once hook-accepting1
    hook-accepting1-once hook-post-app hook-as-user hook-as-root exec-post-app exec-as-user
    exec-as-user-atexit exec-master-start plugins-dir plugin-dir wsgi-strict http-modifier1
    socket-modifier1 modifier1 py-executable declare-option ksm cap listen-queue-alert
""".split())  # noqa: SIM905
# fmt: on

#: Keys asking for something forklift will not do, with the reason given to the operator.
REFUSED = {
    "emperor": "emperor mode is not part of forklift: run one forklift per app, under systemd",
    "vassal": "emperor mode (managing vassals) is not part of forklift",
    "fastrouter": "the fastrouter is not part of forklift: put nginx in front",
    "http-to": "the HTTP router is not part of forklift: nginx proxies to forklift directly",
    "gevent": "gevent loops are not supported: forklift uses threads (threads = N)",
    "async": "async cores are not supported: forklift uses threads (threads = N)",
    "ugreen": "green threads are not supported: forklift uses threads (threads = N)",
    "greenlet": "green threads are not supported: forklift uses threads (threads = N)",
    "asyncio": "the asyncio loop engine is not supported: forklift serves WSGI with threads",
    "spooler": "the spooler is not part of forklift: use a task queue",
    "mule": "mules are not part of forklift: run background work as attach-daemon or a service",
    "mules": "mules are not part of forklift",
    "cache": "uWSGI's caches are not part of forklift: use Redis or memcached",
    "cache2": "uWSGI's caches are not part of forklift: use Redis or memcached",
    "cron": "uWSGI's cron is not part of forklift: use a systemd timer",
    "cron2": "uWSGI's cron is not part of forklift: use a systemd timer",
    "unique-cron": "uWSGI's cron is not part of forklift: use a systemd timer",
    "log-route": "log routing is not part of forklift",
    "zerg": "zerg mode is not part of forklift",
    "zerg-server": "zerg mode is not part of forklift",
    "subscribe-to": "subscriptions (fastrouter) are not part of forklift",
    "subscribe2": "subscriptions (fastrouter) are not part of forklift",
    "legion": "legions are not part of forklift",
    "ssl-socket": "the uwsgi protocol over TLS is not served: use https or https-socket",
    "fastcgi-socket": "FastCGI is not served: use socket (uwsgi protocol) or http-socket",
    "scgi-socket": "SCGI is not served: use socket (uwsgi protocol) or http-socket",
    "shared-socket": "shared sockets (bound for uWSGI's routers) are not part of forklift",
    "sharedarea": "shared areas are not part of forklift",
    "rack": "only Python WSGI apps are served",
    "psgi": "only Python WSGI apps are served",
    "lua": "only Python WSGI apps are served",
    "php": "only Python WSGI apps are served",
    "jvm": "only Python WSGI apps are served",
    "cgi": "only Python WSGI apps are served",
    "wsgi-file-python2": "only Python 3 apps are served",
    "paste": "PasteDeploy apps are not loaded: give module = a file calling loadapp()",
    "ini-paste": "PasteDeploy apps are not loaded: give module = a file calling loadapp()",
}
_REFUSED_PREFIXES = (
    ("emperor-", "emperor mode is not part of forklift"),
    ("fastrouter-", "the fastrouter is not part of forklift: put nginx in front"),
    ("spooler-", "the spooler is not part of forklift: use a task queue"),
    ("cache2-", "uWSGI's caches are not part of forklift"),
    ("legion-", "legions are not part of forklift"),
    ("gevent-", "gevent loops are not supported"),
    ("subscription-", "subscriptions are not part of forklift"),
    ("rawrouter", "the rawrouter is not part of forklift"),
    ("sslrouter", "the sslrouter is not part of forklift"),
)

BY_NAME: dict = {name: o for o in OPTIONS for name in (o.name, *o.aliases)}
#: Short options. -w and -b mean different things to uWSGI and gunicorn users: their value
#: decides (see `option_values.short_w`, `short_b`).
BY_SHORT: dict = {o.short: o for o in OPTIONS if o.short}
BY_SHORT.update(
    w=Option("w", v.short_w, metavar="MODULE|N"),
    b=Option("b", v.short_b, metavar="BYTES|ADDR"),
    M=Option("master", v.noop, FLAG),
    T=Option("enable-threads", v.noop, FLAG),
    i=Option("single-interpreter", v.noop, FLAG),
    m=Option("memory-report", v.noop, FLAG),
)

KNOWN_KEYS = frozenset(BY_NAME) | ACCEPTED_NOOP | frozenset(REFUSED) | {"ini"}


def refusal(key: str) -> str | None:
    """Why forklift refuses `key`, or None when it does not."""
    return REFUSED.get(key) or next(
        (reason for prefix, reason in _REFUSED_PREFIXES if key.startswith(prefix)), None
    )


def suggest(key: str) -> str | None:
    """The known key a typo most likely meant (`guid` -> `gid`), or None."""
    matches = difflib.get_close_matches(key, sorted(BY_NAME) + sorted(ACCEPTED_NOOP), 4, 0.7)
    if not matches:
        return None
    return next((m for m in matches if m[:1] == key[:1]), matches[0])


def apply_entries(builder: Builder, entries, *, user_vars=frozenset()) -> list:
    """Apply ini entries in order; return the unknown ones. Refused keys raise ConfigError."""
    unknown = []
    for entry in entries:
        key = entry.key
        if key.startswith("if-") or key in ("endif", "else", "end"):
            continue
        option = BY_NAME.get(key)
        if option is not None:
            option.apply(builder, entry)
        elif key in ACCEPTED_NOOP:
            builder.noop.append(entry)
        elif (why := refusal(key)) is not None:
            builder.fail(entry, f"not supported: {why}")
        elif key not in user_vars:  # a user variable that %(...) refers to is not a typo
            unknown.append(entry)
    for entry in builder.sockets:
        builder.config.listeners.append(builder.address(entry, builder.protocol))
    builder.sockets = []
    return unknown
