"""A worker's request threads (threads > 1): a fixed pool fed by one queue, and a count of
the requests queued or running, so the loop can stop accepting when every thread has work.

Why a count and not the queue's length: a connection handed to a thread stays that thread's
until its request is answered (and any pipelined ones after it), so "busy" is "handed out
and not yet given back", which only the pool knows.
"""

from __future__ import annotations

import queue
import threading

from .log import error_log


class Pool:
    """`size` threads running `serve(item)` for each submitted item; `on_room()` is called
    (from the thread) each time a thread finishes an item and the pool is no longer full."""

    def __init__(self, size: int, serve, on_room):
        self.size = size
        self._serve = serve
        self._on_room = on_room
        self._queue = queue.SimpleQueue()
        self._threads = []
        self._lock = threading.Lock()
        self.occupied = 0  # items queued or running

    @property
    def full(self) -> bool:
        return self.occupied >= self.size

    def start(self) -> None:
        for i in range(self.size):
            t = threading.Thread(target=self._run, name=f"forklift-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, item, when_full) -> None:
        """Queue `item`; when every thread now has work, call `when_full()` first: before
        the item is queued, so its thread cannot finish (and report room) ahead of it."""
        with self._lock:
            self.occupied += 1
            full = self.occupied >= self.size
        if full:
            when_full()
        self._queue.put(item)

    def stop(self) -> None:
        """Ask every thread to end after its current item (they are daemons: not joined)."""
        for _ in self._threads:
            self._queue.put(None)

    def _run(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            try:
                self._serve(item)
            except Exception:
                # `serve` handles the request's own failures; this is a bug of ours, and a
                # thread lost to it would shrink the pool for good: log it and go on.
                error_log.exception("request thread: unexpected error; serving on")
            finally:
                with self._lock:
                    self.occupied -= 1
                    room = self.occupied < self.size
                if room:
                    self._on_room()
