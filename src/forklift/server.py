"""Start serving a Config: bind the listeners, write the pidfile, hand over to the master."""

from __future__ import annotations

import os
import signal
import sys

from . import sockets
from .appload import load_app
from .errors import ConfigError
from .log import error_log, setup_error_log
from .master import Master


def describe(listener) -> str:
    """The address a listener really has (port 0 becomes the port the kernel chose)."""
    addr = listener.address
    if addr.is_unix:
        return str(addr)
    host = addr.host or "0.0.0.0"
    return f"[{host}]:{listener.port}" if ":" in host else f"{host}:{listener.port}"


def serve(config, reload_config=None) -> int:
    """Serve until stopped; the return value is the process exit code.

    `reload_config`, when given, is called on HUP to re-read the configuration file.
    """
    if config.daemonize:
        daemonize(config.daemonize)
    setup_error_log(config.error_log, config.log_level)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    listeners = [sockets.bind(addr, config.backlog) for addr in config.listeners]
    try:
        for listener in listeners:
            error_log.info("listening on %s (%s)", describe(listener), listener.address.protocol)
        app = load_app(config) if config.preload else None
        if config.pidfile:
            write_pidfile(config.pidfile)
        try:
            return Master(config, listeners, reload_config, preloaded_app=app).run()
        finally:
            if config.pidfile:
                remove_pidfile(config.pidfile)
    finally:
        sockets.close_all(listeners, unlink=True)


def write_pidfile(path: str) -> None:
    """Write our pid, refusing to overwrite the pidfile of a master that is still running."""
    try:
        with open(path) as f:
            old = int(f.read().strip() or 0)
    except (OSError, ValueError):
        old = 0
    if old and old != os.getpid():
        try:
            os.kill(old, 0)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise ConfigError(f"pidfile {path}: process {old} is running") from None
        else:
            raise ConfigError(f"pidfile {path}: forklift {old} is already running") from None
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            if int(f.read().strip() or 0) != os.getpid():
                return  # a newer master owns it now
        os.unlink(path)
    except (OSError, ValueError):
        pass


def daemonize(logfile: str) -> None:
    """Detach (double fork, new session); stdout and stderr go to `logfile` (uWSGI's -d)."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    fd = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
