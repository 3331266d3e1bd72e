"""A worker's watchdog thread: the heartbeat the master reads, noticing that the master
died, and harakiri (a request past its time limit gets its stack logged, then the worker
is killed and the master replaces it).

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

    def __init__(self, worker, slot, notify, master_pid: int, harakiri: float):
        self.worker = worker
        self.slot = slot
        self.notify = notify
        self.master_pid = master_pid
        self.harakiri = harakiri

    def start(self) -> None:
        threading.Thread(target=self._run, name="forklift-watchdog", daemon=True).start()

    def _run(self) -> None:
        worker = self.worker
        harakiri = self.harakiri
        parent = self.master_pid
        while True:
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
            for ident, (start, method, uri) in list(worker.busy.items()):
                if now - start > harakiri:
                    self._kill(ident, method, uri, now - start)

    def _kill(self, ident: int, method: str, uri: str, elapsed: float) -> None:
        frame = sys._current_frames().get(ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
        error_log.error(
            "harakiri: %s %s has run %.1f s (limit %s s); worker %d killed. Stuck at:\n%s",
            method,
            uri,
            elapsed,
            self.harakiri,
            os.getpid(),
            stack.rstrip(),
        )
        for handler in error_log.handlers:
            handler.flush()
        if self.notify is not None:
            self.notify(f"harakiri {os.getpid()}")
        os.kill(os.getpid(), signal.SIGKILL)
