"""Retention of history: deleting events and activity counts older than the retention period.

Pruning runs on a background thread of each process that serves writes, in bounded batches
(`history.PRUNE_BATCH` events per transaction) with a pause between them, so that a backlog of
millions of old events never becomes one long transaction: on SQLite a batch holds the write
lock for milliseconds and writers queue behind it only that long; on PostgreSQL deleting old
rows takes no lock that a writer of new rows waits for. Several processes pruning at once do
no harm: each batch deletes whatever is still there.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Protocol

from .errors import StoreUnavailable
from .history import PRUNE_BATCH, SECONDS_PER_DAY

log = logging.getLogger("gameprogress")

PRUNE_INTERVAL = 600.0  # seconds between rounds: history only needs day precision
FIRST_PRUNE_DELAY = 5.0  # after start: a process being born has better things to do
PAUSE_BETWEEN_BATCHES = 0.05  # seconds: lets queued writers through on SQLite
MAX_BATCHES_PER_ROUND = 1000  # a round deletes at most a million events, then waits its turn


class _Prunable(Protocol):
    def prune_history(self, before: int, batch: int) -> int: ...


class Pruner:
    """Deletes history older than `retention_days` (0: keep forever), in bounded batches."""

    def __init__(
        self,
        store: _Prunable,
        retention_days: int,
        clock: Callable[[], float],
        batch: int = PRUNE_BATCH,
        pause: float = PAUSE_BETWEEN_BATCHES,
    ) -> None:
        self.store = store
        self.retention_days = retention_days
        self.clock = clock
        self.batch = batch
        self.pause = pause
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def cutoff(self) -> int:
        """Unix seconds before which history is deleted."""
        return int(self.clock()) - self.retention_days * SECONDS_PER_DAY

    def prune_round(self, max_batches: int = MAX_BATCHES_PER_ROUND) -> int:
        """Delete old history batch by batch until none is left (or `max_batches` ran)."""
        if self.retention_days == 0:
            return 0
        before = self.cutoff()
        total = 0
        for _ in range(max_batches):
            deleted = self.store.prune_history(before, self.batch)
            total += deleted
            if deleted < self.batch or self._stop.wait(self.pause):
                break
        if total:
            log.info("pruned %d events older than %d days", total, self.retention_days)
        return total

    def ensure_running(self) -> None:
        """Start this process's pruning thread if it is not running (cheap when it is).

        Called from the write routes rather than at app creation: a pre-fork server may
        build the app before forking, and threads do not survive a fork.
        """
        if self._pid == os.getpid() or self.retention_days == 0:
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, name="gameprogress-pruner", daemon=True
            )
            self._pid = os.getpid()
            self._thread.start()

    def _run(self) -> None:
        stop = self._stop
        delay = FIRST_PRUNE_DELAY
        while not stop.wait(delay):
            delay = PRUNE_INTERVAL
            try:
                self.prune_round()
            except StoreUnavailable as exc:
                log.warning("pruning history postponed: %s", exc)
            except Exception:
                # A background job has no caller to tell: log it whole and try again next
                # round rather than let the thread die and history grow unnoticed.
                log.exception("pruning history failed; trying again in %.0f s", PRUNE_INTERVAL)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            thread.join(timeout)
        self._thread = None
        self._pid = 0
