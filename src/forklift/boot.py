"""Becoming a worker after fork(): import the app, check its health, tell the master, serve.

Apart from the loop (`worker.py`) because it is the one place that imports the app:
the master only forks, so a broken release fails here, in the process that would serve it.
"""

from __future__ import annotations

import os
import random
import traceback

from .appload import load_app
from .errors import AppImportError
from .log import AccessLog, error_log
from .worker import Worker
from .wsgi import check_app

EXIT_BOOT_FAILED = 3  # the exit code of a worker whose app did not import or failed its check


def boot(
    config,
    listeners,
    notify,
    *,
    preloaded_app=None,
    health=None,
    slot=None,
    master_pid: int = 0,
    log_boot_errors: bool = True,
    metrics=None,
) -> int:
    """Become a worker (after fork): import the app, check its health, report, serve.

    The master only forks: what the app needs (its import, its check, its config's paths)
    happens here, in the process that will serve it, so a broken release fails in a worker
    and the master stays clean. `notify(line)` tells the master "ready PID" or "bootfail PID
    reason"; `health` is (path, host) the app must answer with a 2xx before traffic.
    `metrics` is the worker's `metrics.WorkerMetrics` (None: metrics off).
    `log_boot_errors` False: the master reports a failure of the very first start itself.
    Returns the process exit code.
    """
    pid = os.getpid()

    def failed(reason: str, log_line: str | None) -> int:
        if log_line:
            error_log.error("worker %d%s", pid, log_line)
        notify(f"bootfail {pid} {reason}")
        return EXIT_BOOT_FAILED

    try:
        app = preloaded_app or load_app(config)
    except AppImportError as exc:
        return failed(str(exc), f": {exc}" if log_boot_errors else None)
    except BaseException as exc:
        trace = traceback.format_exc()
        return failed(f"{type(exc).__name__}: {exc}", f" failed to boot:\n{trace}")
    problem = check_app(app, health[0], health[1]) if health is not None else None
    if problem is not None:
        return failed(problem, f": {problem}")
    access_log = (
        AccessLog(config.access_log, config.access_log_format) if config.access_log else None
    )
    worker = Worker(
        config,
        app,
        listeners,
        access_log=access_log,
        slot=slot,
        notify=notify,
        master_pid=master_pid,
        metrics=metrics,
    )
    if config.max_requests:
        # Jitter, so workers started together do not all recycle at the same moment.
        worker.max_requests = config.max_requests + random.randint(
            0, max(0, config.max_requests_jitter)
        )
    worker.install_signal_handlers()
    notify(f"ready {pid}")
    try:
        worker.run()
    except BaseException:
        error_log.critical("worker %d crashed:\n%s", pid, traceback.format_exc())
        return 1
    return 0
