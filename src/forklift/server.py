"""Start serving a Config: bind the listeners, import the app, run the worker(s)."""

from __future__ import annotations

import signal

from . import sockets
from .appload import load_app
from .log import AccessLog, error_log, setup_error_log
from .worker import Worker


def describe(listener) -> str:
    """The address a listener really has (port 0 becomes the port the kernel chose)."""
    addr = listener.address
    if addr.is_unix:
        return str(addr)
    host = addr.host or "0.0.0.0"
    return f"[{host}]:{listener.port}" if ":" in host else f"{host}:{listener.port}"


def serve(config) -> int:
    """Serve until stopped; the return value is the process exit code."""
    setup_error_log(config.error_log, config.log_level)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    listeners = [sockets.bind(addr, config.backlog) for addr in config.listeners]
    try:
        app = load_app(config)
        access_log = AccessLog(config.access_log) if config.access_log else None
        worker = Worker(config, app, listeners, access_log=access_log)
        worker.install_signal_handlers()
        for listener in listeners:
            error_log.info("listening on %s (%s)", describe(listener), listener.address.protocol)
        worker.run()
    finally:
        sockets.close_all(listeners, unlink=True)
    return 0
