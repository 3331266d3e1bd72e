"""forklift.pool: the request threads of a worker with threads > 1.

What the loop relies on: every submitted item is served; "full" is announced before the item
that fills the pool is queued (so no thread can report room ahead of it), and room is
reported each time a thread frees up.
"""

from __future__ import annotations

import threading

from forklift.pool import Pool


def test_items_are_served_and_fullness_is_announced_before_the_item_is_queued():
    release = threading.Event()
    served, events = [], []
    lock = threading.Lock()

    def serve(item):
        release.wait(5)
        with lock:
            served.append(item)

    pool = Pool(2, serve, on_room=lambda: events.append("room"))
    pool.start()
    pool.submit("a", when_full=lambda: events.append("full"))
    assert events == [] and not pool.full
    # The second item fills the pool: "full" comes while that item is not queued yet, so
    # the thread that will serve it cannot have reported room before.
    pool.submit("b", when_full=lambda: events.append(("full", pool.occupied, len(served))))
    assert events == [("full", 2, 0)] and pool.full
    release.set()
    for _ in range(500):
        if len(served) == 2 and events.count("room") == 2:
            break
        threading.Event().wait(0.01)
    assert sorted(served) == ["a", "b"]
    assert events.count("room") == 2 and pool.occupied == 0 and not pool.full
    pool.stop()


def test_an_item_that_raises_does_not_cost_the_pool_its_thread(caplog):
    done = threading.Event()

    def serve(item):
        if item == "bad":
            raise RuntimeError("boom")
        done.set()

    pool = Pool(1, serve, on_room=lambda: None)
    pool.start()
    pool.submit("bad", when_full=lambda: None)
    pool.submit("good", when_full=lambda: None)
    assert done.wait(5)  # the one thread lived on to serve the next item
    assert "boom" in caplog.text
    pool.stop()
