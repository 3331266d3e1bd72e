"""The `forklift` command: options into a `Config`, then serve (or run a control subcommand).

Exit codes: 0 after a clean stop, 1 when the app cannot be imported or the server fails,
2 for a bad option or config value. Errors are one line on stderr, never a traceback wall.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from . import __version__
from .argtypes import OneLineParser, seconds
from .config import (
    PROTOCOL_HTTP,
    PROTOCOL_UWSGI,
    Config,
    parse_address,
    parse_networks,
    parse_size,
    split_https,
    tls_paths_absolute,
)
from .errors import AppImportError, ConfigError

DESCRIPTION = """\
Serve a WSGI application over HTTP/1.1 (and the uwsgi protocol) with pre-forked workers.

  forklift --http 127.0.0.1:8000 myproject.wsgi:application
  forklift --http :8000 --processes 4 --threads 8 --chdir /srv/app app:app
  forklift --http unix:/run/app.sock --wsgi-file manage.py --callable app
"""

EPILOG = """\
control: forklift reload|stop|status --pidfile FILE
watch:   forklift top --pidfile FILE | --ini FILE | --stats ADDR
deploy:  forklift deploy|releases|rollback|systemd-unit --app DIR   (see docs/deploy.md)
nginx:   forklift nginx-config --upstream ADDR | --ini FILE

addresses: host:port, :port (every IPv4 interface), [::1]:port, unix:/path/to.sock

signals (to the master): HUP graceful reload, TERM graceful stop within --graceful-timeout,
INT/QUIT fast stop, TTIN/TTOU one worker more/less, USR1 reopen log files.
"""

_Parser = OneLineParser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text, "size")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="forklift",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("app", nargs="?", metavar="MODULE:CALLABLE", help="the WSGI app to serve")
    p.add_argument("--version", action="version", version=f"forklift {__version__}")

    p.add_argument(
        "--ini",
        metavar="FILE[:SECTION]",
        help="read a uWSGI ini file (uWSGI's keys and dialect); other options override it",
    )
    p.add_argument("--strict", action="store_true", help="unknown ini keys are errors")

    g = p.add_argument_group("application")
    g.add_argument("--wsgi-file", metavar="FILE", help="load the app from this Python file")
    g.add_argument("--module", metavar="MODULE[:CALLABLE]", help="same as the positional app")
    g.add_argument(
        "--callable", metavar="NAME", help="name of the app in the module (default: application)"
    )
    g.add_argument("--chdir", metavar="DIR", help="change to DIR before importing the app")
    g.add_argument(
        "--pythonpath", metavar="DIR", action="append", default=[], help="add DIR to sys.path"
    )
    g.add_argument(
        "--mount", metavar="/PREFIX", help="serve the app under this URL prefix (SCRIPT_NAME)"
    )
    g.add_argument(
        "--virtualenv",
        "--home",
        "-H",
        dest="virtualenv",
        metavar="DIR",
        help="a venv whose site-packages each worker puts first on sys.path (resolved at spawn)",
    )
    g.add_argument(
        "--health-check",
        metavar="PATH",
        help="each new worker must answer GET PATH with a 2xx, in-process, before it accepts",
    )
    g.add_argument("--health-host", metavar="HOST", help="Host header of the health check")
    g.add_argument(
        "--env", metavar="NAME=VALUE", action="append", default=[], help="set before import"
    )

    g = p.add_argument_group("listeners")
    g.add_argument(
        "--http",
        "--http-socket",
        dest="http",
        metavar="ADDR",
        action="append",
        default=[],
        help="listen for HTTP/1.1 on ADDR (repeatable; default 127.0.0.1:8000)",
    )
    g.add_argument(
        "--socket",
        "--uwsgi-socket",
        dest="uwsgi",
        metavar="ADDR",
        action="append",
        default=[],
        help="listen for the uwsgi protocol (nginx uwsgi_pass) on ADDR (repeatable)",
    )
    g.add_argument(
        "--listen", metavar="N", type=_positive_int, help="listen backlog (default 1024)"
    )
    g.add_argument(
        "--uwsgi-allow-ips",
        metavar="LIST",
        help="peers allowed on TCP uwsgi listeners (default 127.0.0.1,::1; CIDR allowed)",
    )

    g.add_argument(
        "--forwarded-allow-ips",
        metavar="LIST",
        help="peers whose X-Forwarded-For/-Proto are believed (default 127.0.0.1,::1; '*' all)",
    )
    g.add_argument(
        "--https",
        "--https-socket",
        dest="https",
        metavar="ADDR,CERT,KEY[,CIPHERS[,CA]]",
        action="append",
        default=[],
        help="listen for HTTPS on ADDR with this certificate and key (repeatable; a CA asks "
        "clients for certificates, !CA requires them)",
    )
    g.add_argument("--certfile", metavar="FILE", help="TLS certificate for every --http listener")
    g.add_argument("--keyfile", metavar="FILE", help="TLS private key for every --http listener")
    g.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="expect a PROXY protocol v1/v2 header (HAProxy send-proxy) first on every listener",
    )
    g.add_argument(
        "--proxy-allow-ips",
        metavar="LIST",
        help="peers allowed to send a PROXY header (default 127.0.0.1,::1; CIDR allowed)",
    )

    g = p.add_argument_group("concurrency")
    g.add_argument(
        "--processes",
        "--workers",
        "-w",
        dest="processes",
        metavar="N",
        type=_positive_int,
        help="worker processes (default 1)",
    )
    g.add_argument(
        "--threads", metavar="N", type=_positive_int, help="threads per worker (default 1)"
    )

    g = p.add_argument_group("limits")
    g.add_argument(
        "--max-request-line", metavar="BYTES", type=_size, help="request line limit, 414 (8k)"
    )
    g.add_argument(
        "--max-header-size", metavar="BYTES", type=_size, help="header block limit, 431 (64k)"
    )
    g.add_argument(
        "--max-header-fields", metavar="N", type=_positive_int, help="field count limit, 431 (100)"
    )
    g.add_argument(
        "--limit-post",
        "--max-body-size",
        dest="limit_post",
        metavar="BYTES",
        type=_size,
        help="request body limit, 413 (default: none)",
    )
    g.add_argument(
        "--post-buffering",
        metavar="BYTES",
        type=_size,
        help="request body bytes kept in memory; the rest is spooled to a temporary file "
        "before the app runs (64k; 0: stream bodies to the app)",
    )
    g.add_argument(
        "--stream-request-body",
        action="store_true",
        default=None,
        help="the app reads request bodies from the socket as they arrive (a slow sender "
        "then holds that request's thread)",
    )
    g.add_argument(
        "--body-temp-dir", metavar="DIR", help="where spooled request bodies go ($TMPDIR)"
    )
    g.add_argument(
        "--response-buffer",
        metavar="BYTES",
        type=_size,
        help="answer bytes held per connection before the app's iterator is advanced (64k)",
    )
    g.add_argument(
        "--buffer-size", metavar="BYTES", type=_size, help="uwsgi packet size limit (4096)"
    )

    g = p.add_argument_group("timeouts (seconds)")
    g.add_argument(
        "--head-timeout",
        type=seconds,
        metavar="SECONDS",
        help="the request head must arrive in (10)",
    )
    g.add_argument(
        "--keepalive-timeout",
        "--http-keepalive",
        metavar="SECONDS",
        type=seconds,
        help="idle keep-alive (5)",
    )
    g.add_argument(
        "--socket-timeout",
        metavar="SECONDS",
        type=seconds,
        help="each body read or response write (30)",
    )
    g.add_argument(
        "--graceful-timeout",
        metavar="SECONDS",
        type=seconds,
        help="TERM: time to finish requests (30)",
    )

    g = p.add_argument_group("process management")
    g.add_argument("--pidfile", metavar="FILE", help="write the master's pid here")
    g.add_argument(
        "--daemonize", "-d", metavar="LOGFILE", help="detach; stdout and stderr go to LOGFILE"
    )
    g.add_argument(
        "--harakiri",
        "--timeout",
        dest="harakiri",
        metavar="SECONDS",
        type=seconds,
        help="kill and replace a worker whose request runs longer; its stack is logged",
    )
    g.add_argument(
        "--max-requests", metavar="N", type=_positive_int, help="replace a worker after N requests"
    )
    g.add_argument(
        "--max-requests-jitter", metavar="J", type=_positive_int, help="add 0..J to max-requests"
    )
    g.add_argument(
        "--reload-on-rss", metavar="MB", type=_positive_int, help="replace a worker above MB RSS"
    )
    g.add_argument(
        "--preload",
        action="store_true",
        help="import the app in the master before forking (shared memory; HUP then restarts "
        "workers but does not re-import changed code)",
    )
    g.add_argument("--vacuum", action="store_true", help="remove unix sockets and pidfile on exit")
    g.add_argument(
        "--stats",
        metavar="ADDR",
        help="read-only: status JSON (raw or GET /status.json), GET /metrics, GET / (a page)",
    )
    g.add_argument(
        "--disable-metrics", action="store_true", help="no request metrics (on by default)"
    )
    g.add_argument(
        "--py-autoreload",
        metavar="SECONDS",
        type=seconds,
        help="development: poll the app's module files every SECONDS, reload when one changes",
    )

    g = p.add_argument_group("logging")
    g.add_argument("--disable-logging", action="store_true", help="no access log")
    g.add_argument("--access-log", metavar="FILE", help="access log file (default: stdout)")
    g.add_argument(
        "--access-log-format",
        choices=["combined", "json"],
        help="combined (default) or json (OpenTelemetry field names, every value escaped)",
    )
    g.add_argument(
        "--logto",
        "--error-log",
        dest="logto",
        metavar="FILE",
        help="error log file; stderr of every process goes there too",
    )
    g.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="error log level"
    )
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """Turn parsed options into a validated Config (ConfigError on bad values)."""
    if args.ini:
        from .ini_config import config_from_ini

        config = config_from_ini(args.ini, strict=args.strict)
    else:
        config = Config()
    if args.app and args.module:
        raise ConfigError("give the app either as MODULE:CALLABLE or with --module, not both")
    if args.app or args.module:
        config.app = args.app or args.module
        config.wsgi_file = None
    if args.wsgi_file:
        config.wsgi_file = args.wsgi_file
    if args.callable:
        config.callable = args.callable
    if args.chdir:
        config.chdir = args.chdir
    config.pythonpath = config.pythonpath + list(args.pythonpath)
    config.env = config.env + list(args.env)
    for item in config.env:
        if "=" not in item:
            raise ConfigError(f"--env: expected NAME=VALUE, got {item!r}")
    if args.mount:
        prefix, _, app = args.mount.partition("=")
        config.script_name = prefix
        if app and not config.app and not config.wsgi_file:
            if app.endswith(".py"):
                config.wsgi_file = app
            else:
                config.app = app
    listeners = [parse_address(a, PROTOCOL_HTTP, "--http") for a in args.http]
    listeners += [parse_address(a, PROTOCOL_UWSGI, "--socket") for a in args.uwsgi]
    for text in args.https:
        addr, files = split_https(text, "--https")
        address = parse_address(addr, PROTOCOL_HTTP, "--https")
        listeners.append(dataclasses.replace(address, tls=tls_paths_absolute(files)))
    if listeners:
        config.listeners = listeners  # the command line overrides the file's listeners
    if args.uwsgi_allow_ips:
        config.uwsgi_allow_ips = parse_networks(args.uwsgi_allow_ips, "--uwsgi-allow-ips")
    if args.proxy_allow_ips:
        config.proxy_allow_ips = parse_networks(args.proxy_allow_ips, "--proxy-allow-ips")
    config.proxy_protocol = config.proxy_protocol or args.proxy_protocol
    if args.forwarded_allow_ips:
        config.forwarded_allow_ips = parse_networks(
            args.forwarded_allow_ips, "--forwarded-allow-ips"
        )
    simple = {
        "listen": "backlog",
        "processes": "processes",
        "threads": "threads",
        "max_request_line": "max_request_line",
        "max_header_size": "max_header_bytes",
        "max_header_fields": "max_header_fields",
        "limit_post": "max_body_size",
        "post_buffering": "post_buffering",
        "stream_request_body": "stream_request_body",
        "body_temp_dir": "body_temp_dir",
        "response_buffer": "response_buffer",
        "buffer_size": "buffer_size",
        "head_timeout": "head_timeout",
        "keepalive_timeout": "keepalive_timeout",
        "socket_timeout": "socket_timeout",
        "graceful_timeout": "graceful_timeout",
        "logto": "error_log",
        "pidfile": "pidfile",
        "daemonize": "daemonize",
        "harakiri": "harakiri",
        "max_requests": "max_requests",
        "max_requests_jitter": "max_requests_jitter",
        "reload_on_rss": "reload_on_rss",
        "stats": "stats",
        "virtualenv": "virtualenv",
        "health_check": "health_check",
        "health_host": "health_host",
        "log_level": "log_level",
        "certfile": "certfile",
        "keyfile": "keyfile",
        "py_autoreload": "py_autoreload",
        "access_log_format": "access_log_format",
    }
    for arg, attr in simple.items():
        value = getattr(args, arg)
        if value is not None:
            setattr(config, attr, value)
    if args.disable_metrics:
        config.metrics = False
    config.preload = config.preload or args.preload
    config.vacuum = config.vacuum or args.vacuum
    if args.strict:
        config.strict = True
    if args.disable_logging:
        config.access_log = None
    elif args.access_log:
        config.access_log = args.access_log
    return config.validate()


CONTROL_COMMANDS = ("reload", "stop", "status")
DEPLOY_COMMANDS = ("deploy", "releases", "rollback", "systemd-unit")


def control_main(argv: list) -> int:
    """`forklift reload|stop|status --pidfile F`: act on a running master."""
    from . import control

    p = _Parser(prog=f"forklift {argv[0]}", description=control_main.__doc__)
    p.add_argument("--pidfile", metavar="FILE", help="the master's pidfile")
    p.add_argument("--stats", metavar="ADDR", help="the master's --stats address (status)")
    p.add_argument("--timeout", type=seconds, default=None, help="seconds to wait")
    if argv[0] == "reload":
        p.add_argument("--health-check", metavar="PATH", help="new workers must answer 2xx")
        p.add_argument("--health-host", metavar="HOST", help="Host for the health check")
    if argv[0] == "stop":
        p.add_argument("--graceful", action="store_true", help="TERM: finish requests first")
    if argv[0] == "status":
        p.add_argument("--json", action="store_true", help="print the raw JSON document")
    args = p.parse_args(argv[1:])
    if not args.pidfile and not (argv[0] == "status" and args.stats):
        p.error("--pidfile is required")
    try:
        if argv[0] == "reload":
            status = control.reload(
                args.pidfile, args.timeout or 120.0, args.health_check, args.health_host
            )
            print(f"reloaded: generation {status['generation']} is serving")
        elif argv[0] == "stop":
            control.stop(args.pidfile, args.graceful, args.timeout or 60.0)
            print("stopped")
        else:
            status = control.fetch_status(args.pidfile, args.stats)
            if args.json:
                import json

                print(json.dumps(status, indent=2))
            else:
                print(control.format_status(status))
    except control.ControlError as exc:
        print(f"forklift {argv[0]}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in CONTROL_COMMANDS:
        return control_main(argv)
    if argv and argv[0] in DEPLOY_COMMANDS:
        from .deploy.cli import main as deploy_main

        return deploy_main(argv)
    if argv and argv[0] == "top":
        from .top import main as top_main

        return top_main(argv[1:])
    if argv and argv[0] == "nginx-config":
        from .nginx import main as nginx_main

        return nginx_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.app and not args.ini and args.app.endswith(".ini") or ".ini:" in (args.app or ""):
        args.ini, args.app = args.app, None  # `forklift uwsgi.ini`, as `uwsgi uwsgi.ini`
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"forklift: error: {exc}", file=sys.stderr)
        return 2
    for warning in config.ini_warnings:
        print(f"forklift: warning: {warning}", file=sys.stderr)
    from .server import serve  # imported late: --help must not pay for the server modules

    def reload_config() -> Config:
        """HUP: read the ini file again; the command line still overrides it."""
        fresh = config_from_args(args)
        for warning in fresh.ini_warnings:
            print(f"forklift: warning: {warning}", file=sys.stderr)
        return fresh

    try:
        return serve(config, reload_config if args.ini else None)
    except ConfigError as exc:
        print(f"forklift: error: {exc}", file=sys.stderr)
        return 2
    except AppImportError as exc:
        print(f"forklift: error: {exc}", file=sys.stderr)
        return 1
