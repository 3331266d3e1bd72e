"""A worker's request threads (threads > 1): leader and followers, with the lead kept or
handed over as the app's own requests say.

Why not a loop thread feeding a queue of request threads (the first design): every request
then crossed threads, and under the GIL each crossing is a context switch. On an app that
computes (Flask over SQLite: a request's thread CPU time is 99% of its wall time), four
threads served 0.7-0.9x the requests of one, at 3.6-4.7 context switches per request.

Here one thread at a time leads: it runs the worker's event loop (`turn`), which queues the
requests it finds complete (`submit`), and it serves them itself. Whether another thread
leads meanwhile is measured, not configured:

- keep (the app computes: CPU time over wall time of requests that ran alone is at least
  `COMPUTES`): the leader keeps the lead while it serves, as an inline worker does, and no
  request changes thread. A follower, the deputy, looks at the leader's request: once it
  has spent most of a `CHECK` neither on a CPU nor queued for one (it waits: a database, a
  remote call; the kernel's schedstat says), or has run for `LONG` whatever it does, the
  deputy takes the lead. It looks every `CALM` seconds, and every `CHECK` at a request it
  has looked at once and for `ALERT` seconds after it took the lead: a waiting request holds
  the worker's other clients for `CALM` + `CHECK` at most, two `CHECK`s once requests have
  waited lately. Why not look every `CHECK` always: each look takes the GIL from the
  leader, which then blocks on its return from the next system call, several times per
  look; on gameprogress, looks every 5 ms cost the leader 0.27 context switches per request
  (every 2 ms, 3% of the requests), every 20 ms 0.07.
- hand over (the app waits): the leader gives the lead to an idle follower before it serves,
  so as many requests wait at once as there are threads. Every `PROBE` seconds the pool
  keeps the lead again and measures a few requests (each rescued by the deputy).

A thread holding the lead while it serves, with no idle follower, is the pool being full:
nobody runs the loop, so nobody accepts, and new clients stay queued for other workers.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque

from .log import error_log

CHECK = 0.005  # how often the deputy looks at a leader that serves, once alert
CALM = 0.02  # how often it looks while no request has waited or run long for ALERT seconds
ALERT = 10.0  # after a lead taken from a serving leader, the deputy looks every CHECK this long
LONG = 0.02  # a request that computes longer than this lets the deputy lead all the same
PROBE = 1.0  # seconds of handing over before measuring again
IDLE = 1.0  # no request for this long: the deputy sleeps until the next one starts
COMPUTES = 0.5  # CPU share of a request's wall time at which the app is deemed to compute
_SAMPLES = 8  # requests that ran alone before the measure decides
_MEASURE_MASK = 7  # once decided, one request in 8 is measured (two clock system calls)
_monotonic = time.monotonic
_thread_time = time.thread_time


class Pool:
    """`size` threads taking turns at `turn()` (one round of the worker's loop; False when
    the worker is done) and serving what it `submit`s with `serve(item)`."""

    def __init__(self, size: int, turn, serve):
        self.size = size
        self._turn = turn
        self._serve = serve
        self._ready = deque()  # items the loop found; only the leader touches it
        # One lock over the state below; each thread sleeps on its own wake-up queue (C code
        # both ways: a threading.Condition's wait and notify are Python, ~10 calls each, and
        # an app that waits hands the lead over on every request).
        self._lock = threading.Lock()
        self._waiting = deque()  # wake-up queues of the followers that are not the deputy
        self._threads = []
        self._done = False
        self._error = None  # a bug in the loop: raised again by join()
        self.finished = threading.Event()
        self._leader = 0  # thread ident; 0: nobody leads
        self._deputy = 0
        self._deputy_wake = None
        self._deputy_asleep = False
        self._idle = 0  # threads waiting for the lead
        # The leader's thread (CPU clock, kernel task) and, while it serves, since when.
        self._since = 0.0
        self._clock = 0
        self._stat_fd = -1
        self._look = (0.0, 0.0, 0, 0)  # the deputy's first look: (since, when, ran, queued)
        self._alert_until = 0.0  # the deputy looks every CHECK until then, else every CALM
        self._serving = 0
        self._starts = 0
        self._last_start = 0.0
        self.keep = True  # keep the lead while serving (the app computes)
        self.cpu_share = 1.0  # moving average over requests that ran alone
        self._samples = 0
        self._probe_at = 0.0
        self._said = None  # the last verdict written to the log
        self.steals = 0  # leads taken by the deputy from a leader that served
        self.handovers = 0  # leads given to a follower before serving

    def submit(self, item) -> None:
        """Serve `item` after this turn (called by the leader, from `turn`)."""
        self._ready.append(item)

    @property
    def stocked(self) -> bool:
        """The leader has found work enough for every thread this turn: it stops accepting
        until that is served, and leaves the clients still queued to other workers."""
        return len(self._ready) >= self.size

    def start(self) -> None:
        for i in range(self.size):
            t = threading.Thread(target=self._run, name=f"forklift-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def join(self) -> None:
        """Wait until the worker is done (a turn said so); the main thread waits here, free
        for signal handlers."""
        self.finished.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Every thread ends after its current item (they are daemons: not joined)."""
        with self._lock:
            self._done = True
            while self._waiting:
                self._waiting.popleft().put(None)
            if self._deputy:
                self._deputy_wake.put(None)
        self.finished.set()

    # -- a thread's life ---------------------------------------------------------------------
    def _run(self) -> None:
        me = threading.get_ident()
        clock = time.pthread_getcpuclockid(me)
        # The kernel's account of this thread, opened once: each look is then one pread,
        # where open/read/close were six system calls, each letting the GIL go to and fro.
        try:
            stat_fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
        except OSError:  # no schedstat in this kernel: the CPU clock alone
            stat_fd = -1
        wake = queue.SimpleQueue()  # a token here: look again (the lead may be free)
        try:
            while self._wait_for_lead(me, wake, clock, stat_fd):
                try:
                    if self._lead(me):
                        continue
                except Exception as exc:  # a bug in the loop itself: the worker cannot go on
                    error_log.exception("worker loop: unexpected error")
                    self._error = exc
                self.stop()
                return
        finally:
            if stat_fd >= 0:
                os.close(stat_fd)

    def _lead(self, me: int) -> bool:
        """Run the loop and serve what it finds until the lead is given away or taken
        (True), or the worker is done (False)."""
        ready = self._ready
        lock = self._lock
        serve = self._serve
        while True:
            if not ready:
                if not self._turn():
                    return False
                continue
            item = ready.popleft()
            with lock:
                now = _monotonic()
                self._serving += 1
                self._starts = starts = self._starts + 1
                alone = self._serving == 1
                self._last_start = now
                if not self.keep and now >= self._probe_at:
                    self.keep = True  # measure again
                    self._samples = 0
                keep = self.keep or not self._idle
                if keep:
                    self._since = now
                    if self._deputy_asleep:  # it has a request to watch now
                        self._deputy_asleep = False
                        self._deputy_wake.put(None)
                else:
                    self._leader = 0
                    self.handovers += 1
                    self._wake_one()
                measure = (
                    alone and self.keep and (self._samples < _SAMPLES or not starts & _MEASURE_MASK)
                )
            cpu0 = _thread_time() if measure else 0.0
            try:
                serve(item)
            except Exception:
                # `serve` handles the request's own failures; this is a bug of ours, and a
                # thread lost to it would shrink the pool for good: log it and go on.
                error_log.exception("request thread: unexpected error; serving on")
            if measure:
                cpu = _thread_time() - cpu0
                wall = _monotonic() - now
            with lock:
                self._serving -= 1
                if measure and self._starts == starts and wall > 0:
                    self._measured(cpu / wall, now + wall)
                if not keep or self._leader != me:
                    return True  # handed over, or taken by the deputy: follow
                self._since = 0.0

    def _measured(self, share: float, now: float) -> None:
        """One request that ran alone used `share` of its wall time on the CPU."""
        self._samples += 1
        if self._samples == 1:
            self.cpu_share = share
        else:
            self.cpu_share += (share - self.cpu_share) / _SAMPLES
        if self._samples < _SAMPLES:
            return
        computes = self.cpu_share >= COMPUTES
        if not computes:
            self.keep = False
            self._probe_at = now + PROBE
        if computes is not self._said:  # a change, not every probe: one line each
            self._said = computes
            error_log.info(
                "request threads: the app %s (its requests are %.0f%% on a CPU)",
                "computes: one thread serves at a time, another leads while a request waits"
                if computes
                else "waits: each request gets its own thread",
                100 * self.cpu_share,
            )

    def _wait_for_lead(self, me: int, wake, clock: int, stat_fd: int) -> bool:
        """Block until this thread leads (True) or the worker is done (False). `clock`
        and `stat_fd` (its schedstat, or -1) are the thread's, for the deputy's looks."""
        lock = self._lock
        lock.acquire()
        self._idle += 1
        try:
            while True:
                if self._done:
                    return False
                if not self._leader:
                    break
                if not self._deputy:
                    self._deputy = me
                    self._deputy_wake = wake
                timeout = None
                if self._deputy != me:
                    self._waiting.append(wake)  # until a hand-over pops it
                elif self._since:
                    if self._stuck():
                        self.steals += 1
                        self._alert_until = _monotonic() + ALERT
                        break
                    timeout = self._next_look()
                elif _monotonic() - self._last_start < IDLE:
                    timeout = self._next_look()
                else:  # nothing to watch: a token comes when a request starts
                    self._deputy_asleep = True
                lock.release()
                try:
                    wake.get(timeout=timeout)
                except queue.Empty:
                    pass
                finally:
                    lock.acquire()
            self._leader = me
            self._clock = clock
            self._stat_fd = stat_fd
            self._since = 0.0
            if self._deputy == me:
                self._deputy = 0
                self._deputy_asleep = False
                self._wake_one()  # another follower becomes the deputy
            return True
        finally:
            self._idle -= 1
            lock.release()

    def _next_look(self) -> float:
        """When the deputy looks again (under the lock): soon at a request it has looked at
        once, or while requests have waited lately; else calmly (see the module docstring)."""
        if self._since and self._look[0] == self._since:
            return CHECK
        return CHECK if _monotonic() < self._alert_until else CALM

    def _wake_one(self) -> None:
        """Wake a follower to take the free lead (or the deputy's post); under the lock."""
        if self._waiting:
            self._waiting.popleft().put(None)
        elif self._deputy:
            self._deputy_asleep = False
            self._deputy_wake.put(None)

    def _stuck(self) -> bool:
        """The leader, serving, holds the loop for no good reason (called by the deputy).
        What the deputy saw of that request counts as one measure: with every request taken
        over this way, none runs alone to be measured at its end."""
        if not self.keep:
            return True  # it kept the lead only because no follower was idle
        now = _monotonic()
        elapsed = now - self._since
        if elapsed < CHECK:
            return False
        ran, queued = self._account()
        since, then, ran0, queued0 = self._look
        if since != self._since:  # the first look at this request: only a baseline
            self._look = (self._since, now, ran, queued)
            return elapsed >= LONG
        span = now - then
        share = (ran - ran0) / 1e9 / span
        # Neither on a CPU nor queued for one: a leader the kernel would not run anyway
        # (a busy machine) is not waiting, and taking its lead would only add a thread
        # fighting for the GIL.
        waited = span - (ran - ran0 + queued - queued0) / 1e9
        if waited < span * (1.0 - COMPUTES) and elapsed < LONG:
            return False
        self._measured(share, now)
        return True

    def _account(self):
        """(ns on a CPU, ns runnable but queued) of the leader's thread so far."""
        try:
            ran, queued = os.pread(self._stat_fd, 128, 0).split()[:2]
            return int(ran), int(queued)
        except (OSError, ValueError):  # no schedstat in this kernel: its CPU clock alone
            return int(time.clock_gettime(self._clock) * 1e9), 0
