"""forklift.pool: a worker's request threads as leader and followers.

What the worker relies on: every item its loop submits is served; an app that computes is
served with no hand-off between threads (the lead is kept while serving), an app that waits
is served by as many threads at once as there are; a leader whose request waits, or
computes for long, does not hold the loop; the loop ending ends every thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import pytest

from forklift import pool as pool_module
from forklift.pool import Pool


class Feed:
    """A stand-in for the worker's loop: each turn submits what arrived (waiting for it a
    moment, as epoll would); the turn after `close()` says the worker is done."""

    def __init__(self):
        self.arrivals = queue.SimpleQueue()
        self.closed = threading.Event()
        self.pool = None
        self.turn_threads = set()
        self.turn_log = []  # one entry per turn

    def turn(self) -> bool:
        if self.closed.is_set():
            return False
        self.turn_threads.add(threading.get_ident())
        self.turn_log.append(None)
        try:
            item = self.arrivals.get(timeout=0.005)
        except queue.Empty:
            return True
        self.pool.submit(item)
        while True:  # everything that arrived together, as one epoll round
            try:
                self.pool.submit(self.arrivals.get_nowait())
            except queue.Empty:
                return True

    def close(self) -> None:
        self.closed.set()


def make_pool(size, serve):
    feed = Feed()
    pool = Pool(size, feed.turn, serve)
    feed.pool = pool
    pool.start()
    return feed, pool


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def wait_for(condition, seconds=10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        threading.Event().wait(0.005)
    return condition()


def finish(feed, pool) -> None:
    feed.close()
    joined = threading.Thread(target=pool.join, daemon=True)
    joined.start()
    joined.join(10)
    assert not joined.is_alive(), "the pool did not end after its loop said done"


def test_an_app_that_computes_is_served_by_one_thread_without_a_hand_off(caplog):
    caplog.set_level(logging.INFO)
    served, threads = [], set()

    def serve(item):
        spin(0.0002)
        threads.add(threading.get_ident())
        served.append(item)

    feed, pool = make_pool(4, serve)
    for i in range(300):
        feed.arrivals.put(i)
    assert wait_for(lambda: len(served) == 300)
    assert sorted(served) == list(range(300))
    assert pool.keep and pool.cpu_share > pool_module.COMPUTES
    assert pool.handovers == 0 and pool.steals == 0
    assert len(threads) == 1  # the leader served every request itself
    assert caplog.text.count("request threads: the app computes") == 1
    finish(feed, pool)


def test_an_app_that_waits_is_served_by_every_thread_at_once(caplog):
    caplog.set_level(logging.INFO)
    lock = threading.Lock()
    state = {"now": 0, "most": 0, "served": 0}

    def serve(item):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        threading.Event().wait(0.004)  # a database answering
        with lock:
            state["now"] -= 1
            state["served"] += 1

    feed, pool = make_pool(4, serve)
    sent = 0
    deadline = time.monotonic() + 20
    while state["most"] < 4 and time.monotonic() < deadline and sent < 2000:
        for _ in range(8):
            feed.arrivals.put(sent)
            sent += 1
        wait_for(lambda n=sent: state["served"] >= n - 4, 5)
    assert state["most"] == 4, f"at most {state['most']} requests waited at once"
    assert not pool.keep and pool.cpu_share < pool_module.COMPUTES
    assert pool.handovers > 0
    assert "request threads: the app waits: each request gets its own thread" in caplog.text
    assert wait_for(lambda: state["served"] == sent)
    finish(feed, pool)


@pytest.mark.parametrize("first", ["waits", "computes"])
def test_a_leader_busy_with_one_request_does_not_hold_the_next(first):
    """The first request ends only once the second is served: with the lead kept while it
    runs, only the deputy taking the lead can serve the second."""
    first_started, second_served = threading.Event(), threading.Event()
    served = []

    def serve(item):
        if item == "first":
            first_started.set()
            deadline = time.monotonic() + 10
            if first == "waits":
                second_served.wait(10)
            else:  # computes, with the GIL, until the second is served
                while not second_served.is_set() and time.monotonic() < deadline:
                    spin(0.0005)
        else:
            second_served.set()
        served.append(item)

    feed, pool = make_pool(2, serve)
    assert pool.keep  # the lead is kept until requests are measured to wait
    feed.arrivals.put("first")
    assert first_started.wait(5)
    feed.arrivals.put("second")
    assert second_served.wait(5), "the second request waited for the first"
    assert wait_for(lambda: served == ["second", "first"])
    assert pool.steals >= 1
    finish(feed, pool)


def test_the_deputy_looks_calmly_until_a_request_has_waited():
    """Each look takes the GIL from the leader: while no request has waited, the deputy
    looks every CALM, sooner only at a request it has already looked at; once it has taken
    the lead from a waiting request, every CHECK for a while."""
    served = threading.Event()

    def serve(item):
        if item == "waits":
            served.wait(10)  # until the next request is served: only a steal serves it
        else:
            served.set()

    feed, pool = make_pool(2, serve)
    with pool._lock:
        pool._since = time.monotonic()  # a request the deputy has not looked at yet
        assert pool._next_look() == pool_module.CALM
        pool._look = (pool._since, time.monotonic(), 0, 0)  # looked at once
        assert pool._next_look() == pool_module.CHECK
        pool._since = 0.0
    feed.arrivals.put("waits")
    assert wait_for(lambda: pool.steals == 0 and pool._since)  # the waiting one is served
    feed.arrivals.put("quick")
    assert served.wait(5), "the deputy never took the lead from the waiting request"
    assert pool.steals >= 1
    with pool._lock:
        pool._since = time.monotonic() + 1  # a request not looked at, after the steal
        assert pool._next_look() == pool_module.CHECK
        pool._since = 0.0
    finish(feed, pool)


def test_a_request_that_raises_does_not_cost_the_pool_its_thread(caplog):
    done = threading.Event()

    def serve(item):
        if item == "bad":
            raise RuntimeError("boom")
        done.set()

    feed, pool = make_pool(1, serve)
    feed.arrivals.put("bad")
    feed.arrivals.put("good")
    assert done.wait(5)  # the one thread lived on to serve the next item
    assert "boom" in caplog.text
    finish(feed, pool)


def test_a_bug_in_the_loop_ends_the_pool_and_join_raises_it(caplog):
    def turn():
        raise ValueError("loop bug")

    pool = Pool(3, turn, lambda item: None)
    pool.start()
    with pytest.raises(ValueError, match="loop bug"):
        pool.join()
    assert "worker loop: unexpected error" in caplog.text


def test_the_loop_ending_ends_every_thread():
    feed, pool = make_pool(4, lambda item: None)
    feed.arrivals.put("x")
    finish(feed, pool)
    assert wait_for(lambda: not any(t.is_alive() for t in pool._threads))


def test_the_loop_stops_accepting_once_every_thread_has_work_this_turn():
    pool = Pool(3, lambda: False, lambda item: None)
    for item in range(3):
        assert not pool.stocked  # the accept loop goes on: a thread would be idle
        pool.submit(item)
    assert pool.stocked  # three requests for three threads: leave the rest to others


def test_with_every_thread_serving_nobody_runs_the_loop():
    """Back-pressure: a worker whose threads all have a request accepts nothing more, so new
    clients stay queued for other workers. The last free thread keeps the lead while it
    serves (there is nobody to hand it to), and no turn runs until a request ends."""
    release = threading.Event()
    started = []

    def serve(item):
        started.append(item)
        release.wait(10)

    feed, pool = make_pool(2, serve)
    pool.keep = False  # as for an app measured to wait: the lead is handed over when it can
    pool._probe_at = time.monotonic() + 60
    feed.arrivals.put("a")
    feed.arrivals.put("b")
    assert wait_for(lambda: len(started) == 2)
    assert wait_for(lambda: pool._since > 0)  # the lead is held by a thread that serves
    turns = len(feed.turn_log)
    feed.arrivals.put("c")
    assert not release.wait(0.1)  # the loop gets no turn in that time
    assert len(feed.turn_log) == turns and started == ["a", "b"]
    release.set()
    assert wait_for(lambda: started == ["a", "b", "c"])
    finish(feed, pool)
