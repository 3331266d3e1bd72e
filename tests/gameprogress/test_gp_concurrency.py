"""No lost update under real concurrency, and migrations that many processes may start at once.

Each worker is a real process (forked) with its own app and store, running threads that send
requests through the app: the same shape as a pre-fork server with threaded workers. The
through-the-server version of this test lives next to it and runs under forklift.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest

from gameprogress.app import create_app
from gameprogress.history import DateRange, day_of
from gameprogress.migrations import LATEST_VERSION, MIGRATIONS
from gameprogress.model import MAX_LEVEL
from gameprogress.store import iter_records, open_store

PROCESSES = 8
THREADS = 8
DEVICES = 50
REQUESTS_PER_THREAD = 50  # 8 x 8 x 50 = 3200 updates: bounded, and a few seconds at most
DEADLINE = 90  # seconds for all workers together; a hang fails instead of blocking the run


def _run_in_processes(target, args_for, count: int) -> list:
    """Start `count` forked processes on `target(queue, barrier, *args_for(i))`; gather results."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    barrier = ctx.Barrier(count)
    processes = [
        ctx.Process(target=target, args=(queue, barrier, *args_for(i))) for i in range(count)
    ]
    for process in processes:
        process.start()
    results = []
    try:
        for _ in processes:
            kind, value = queue.get(timeout=DEADLINE)
            if kind == "error":
                pytest.fail(f"a worker process failed:\n{value}")
            results.append(value)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    return results


def _hammer(queue, barrier, url: str, seed: int) -> None:
    """One worker process: THREADS threads sending random levels, half legacy, half v1."""
    try:
        app = create_app({"GAMEPROGRESS_DATABASE_URL": url, "GAMEPROGRESS_WRITE_KEY": ""})

        def thread_main(thread_seed: int) -> tuple[dict[str, int], int]:
            rng = random.Random(thread_seed)
            client = app.test_client()
            highest: dict[str, int] = {}
            for i in range(REQUESTS_PER_THREAD):
                device = f"device-{rng.randrange(DEVICES)}"
                level = rng.randrange(MAX_LEVEL + 1)
                # A 503 means "not applied, retry" (the store's answer to a connection burst
                # or an outage): a game client retries it, so does this one, boundedly. What
                # is checked is that no acknowledged update is lost.
                for _attempt in range(50):
                    if i % 2:
                        response = client.get(f"/update/{device}/{level}")
                    else:
                        response = client.put(f"/v1/devices/{device}/level", json={"level": level})
                    if response.status_code != 503:
                        break
                    time.sleep(0.05)
                if i % 2:
                    ok = response.status_code == 200 and response.get_json()["error"] == 0
                else:
                    ok = response.status_code == 200 and response.get_json()["level"] >= level
                if not ok:
                    raise AssertionError(f"{response.status_code} {response.data!r}")
                highest[device] = max(highest.get(device, -1), level)
            return highest, REQUESTS_PER_THREAD

        barrier.wait(timeout=30)  # all processes start writing together
        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(thread_main, [seed * 100 + t for t in range(THREADS)]))
        app.extensions["gameprogress"].store.close()
        merged: dict[str, int] = {}
        for highest, _ in results:
            for device, level in highest.items():
                merged[device] = max(merged.get(device, -1), level)
        queue.put(("ok", (merged, sum(count for _, count in results))))
    except BaseException:
        queue.put(("error", traceback.format_exc()))


def test_no_lost_update(database_url):
    # Create the schema first, as a server's master (or `gameprogress migrate`) would.
    store = open_store(database_url)
    store.migrate()
    results = _run_in_processes(_hammer, lambda i: (database_url, i + 1), PROCESSES)

    expected: dict[str, int] = {}
    for highest, _ in results:
        for device, level in highest.items():
            expected[device] = max(expected.get(device, -1), level)
    sent = sum(count for _, count in results)
    assert sent == PROCESSES * THREADS * REQUESTS_PER_THREAD

    try:
        stored = {r.device_id: r for r in iter_records(store)}
        events = store.events_page(
            DateRange(dt.date(1970, 1, 1), dt.date(9999, 1, 1)), None, sent + 1
        )
        period = DateRange(day_of(min(e.at for e in events)), day_of(max(e.at for e in events)))
        counted = sum(n for _, n in store.updates_per_hour(period))
        new_devices = sum(n for _, n in store.new_devices_per_day(period))
    finally:
        store.close()
    assert {d: r.level for d, r in stored.items()} == expected
    # Every accepted update was counted exactly once, too, and has exactly one event.
    assert sum(r.updates for r in stored.values()) == sent
    assert len(events) == counted == sent
    assert new_devices == len(stored) == sum(e.level_before is None for e in events)
    # Per device, events in id order are the order the updates were applied (the device's
    # row lock, or SQLite's single writer, serialises them): each saw exactly the level the
    # one before it left, even with 64 writers racing.
    chains: dict[str, list] = {}
    for event in sorted(events, key=lambda e: e.id):
        chains.setdefault(event.device_id, []).append(event)
    for device, chain in chains.items():
        before = None
        for event in chain:
            assert event.level_before == before, (device, event)
            assert event.level_after == max(event.level, before if before is not None else -1)
            before = event.level_after
        assert before == expected[device]


def _migrate(queue, barrier, url: str) -> None:
    try:
        store = open_store(url)
        barrier.wait(timeout=30)
        applied = store.migrate()
        version = store.health()
        store.close()
        queue.put(("ok", (applied, version)))
    except BaseException:
        queue.put(("error", traceback.format_exc()))


def test_migrations_from_many_processes_at_once(database_url):
    results = _run_in_processes(_migrate, lambda i: (database_url,), PROCESSES)
    applied = sorted(a for a, _ in results)
    # Exactly one process did the work; the others found it done.
    assert applied == [[]] * (PROCESSES - 1) + [[m.version for m in MIGRATIONS]]
    assert {v for _, v in results} == {LATEST_VERSION}
