"""A worker's watchdog thread: the heartbeat the master reads, noticing that the master
died, harakiri (a request past its time limit gets its stack logged, then the worker is
killed and the master replaces it), and the request metrics: their flush to shared memory and
the request the worker is serving now (for `forklift top`).

A thread, not a signal: the request that overran holds the GIL only between bytecodes, and
a stack dumped from another thread shows where it is stuck.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback

from .log import error_log

_PERIOD = 0.25  # seconds between looks: the heartbeat's resolution, harakiri's slack


class Watchdog:
    """Watch one worker (`worker.busy`, `worker.alive`, `worker.stop`) from a thread.

    `slot` is the worker's scoreboard slot (None without a master); `master_pid` is the pid
    the master had before fork(), so a master killed while this worker booted is noticed.
    """

    def __init__(self, worker, slot, notify, master_pid: int, harakiri: float, metrics=None):
        self.worker = worker
        self.slot = slot
        self.notify = notify
        self.master_pid = master_pid
        self.harakiri = harakiri
        self.metrics = metrics  # metrics.WorkerMetrics, or None

    def start(self) -> None:
        threading.Thread(target=self._run, name="forklift-watchdog", daemon=True).start()

    def _run(self) -> None:
        worker = self.worker
        harakiri = self.harakiri
        parent = self.master_pid
        metrics = self.metrics
        while True:
            if metrics is not None:
                metrics.flush()
                self._report_current(metrics)
            if self.slot is not None:
                self.slot.heartbeat()
                if parent and os.getppid() != parent and worker.alive:
                    # The master is gone (killed -9): nobody would reap, replace or stop
                    # us, and a new master could not bind. Finish what is in flight, exit.
                    error_log.error("worker %d: the master died; stopping", os.getpid())
                    worker.orphaned()
            time.sleep(_PERIOD)
            if not harakiri:
                continue
            now = time.monotonic()
            for ident, (start, method, uri, request_id) in list(worker.busy.items()):
                if now - start > harakiri:
                    self._kill(ident, method, uri, now - start, request_id)

    def _report_current(self, metrics) -> None:
        """Show the longest-running request in the shared board (for `forklift top`)."""
        worker = self.worker
        busy = list(worker.busy.values())
        environ = worker.current_environ
        if environ is not None:
            start = worker.current_start  # read after the environ: never older than it
            uri = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
            busy.append((start, environ.get("REQUEST_METHOD", ""), uri))
        if not busy:
            metrics.set_current(0.0, "", "")
            return
        start, method, uri = min(busy)[:3]
        metrics.set_current(start, method, uri)

    def _kill(self, ident: int, method: str, uri: str, elapsed: float, request_id: str) -> None:
        frame = sys._current_frames().get(ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
        error_log.error(
            "harakiri: %s %s has run %.1f s (limit %s s); worker %d killed [request %s]. "
            "Stuck at:\n%s",
            method,
            uri,
            elapsed,
            self.harakiri,
            os.getpid(),
            request_id,
            stack.rstrip(),
        )
        for handler in error_log.handlers:
            handler.flush()
        if self.metrics is not None:
            self.metrics.flush()  # what this worker answered is counted, though it dies now
        if self.notify is not None:
            self.notify(f"harakiri {os.getpid()}")
        os.kill(os.getpid(), signal.SIGKILL)


def log_thread_stacks(busy: dict) -> None:
    """Write the stack of every thread of this worker to the error log, each with the
    request it serves (`busy`: thread ident -> (start, method, path, request id))."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        request = busy.get(ident)
        what = f" serving {request[1]} {request[2]} [request {request[3]}]" if request else ""
        stack = "".join(traceback.format_stack(frame)).rstrip()
        parts.append(f"--- thread {names.get(ident, ident)}{what}:\n{stack}")
    error_log.warning(
        "thread stacks of worker %d (asked through the control socket):\n%s",
        os.getpid(),
        "\n".join(parts),
    )
