"""Retention: history older than the setting is deleted in bounded batches, the rest and the
devices are untouched, and writes go on while a large backlog is pruned."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time

import pytest

from gameprogress.history import SECONDS_PER_DAY, SECONDS_PER_HOUR, DateRange
from gameprogress.retention import Pruner
from gameprogress.settings import Settings
from gameprogress.store import open_store

NOW = 1_700_000_000
WIDE = DateRange(dt.date(2023, 1, 1), dt.date(2024, 12, 31))


@pytest.fixture
def store(database_url):
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


class CountingStore:
    """Passes prune_history through, remembering what each batch deleted and when."""

    def __init__(self, store) -> None:
        self.store = store
        self.batches: list[tuple[int, float]] = []

    def prune_history(self, before: int, batch: int) -> int:
        deleted = self.store.prune_history(before, batch)
        self.batches.append((deleted, time.monotonic()))
        return deleted


def test_old_history_goes_in_bounded_batches_and_nothing_else_does(store):
    old = [(f"old-{i % 9}", i, NOW - 40 * SECONDS_PER_DAY + i * 60) for i in range(95)]
    recent = [(f"new-{i % 4}", i, NOW - 2 * SECONDS_PER_DAY + i * 60) for i in range(30)]
    store.record_levels(old + recent)
    devices_before = {d: store.get(d) for d in {u[0] for u in old + recent}}

    counting = CountingStore(store)
    pruner = Pruner(counting, retention_days=30, clock=lambda: NOW, batch=10, pause=0)
    assert pruner.prune_round() == 95
    assert [deleted for deleted, _ in counting.batches] == [10] * 9 + [5]

    left = store.events_page(WIDE, None, 10_000)
    assert len(left) == 30 and all(e.at >= pruner.cutoff() for e in left)
    # The hourly counts of the old days went too; the recent ones stayed.
    old_days = DateRange(dt.date(2023, 10, 1), dt.date(2023, 10, 10))
    assert store.updates_per_hour(old_days) == []
    assert sum(n for _, n in store.updates_per_hour(WIDE)) == 30
    # Devices are the current state, not history: all still there, unchanged.
    assert {d: store.get(d) for d in devices_before} == devices_before
    # Nothing left to do.
    assert pruner.prune_round() == 0


def test_retention_zero_keeps_everything(store):
    store.record_level("a", 1, NOW - 1000 * SECONDS_PER_DAY)
    assert Pruner(store, retention_days=0, clock=lambda: NOW).prune_round() == 0
    assert len(store.events_page(DateRange(dt.date(2020, 1, 1), dt.date(2024, 1, 1)), None, 9)) == 1


@pytest.mark.parametrize("value", ["-1", "ninety", "1.5", "36501", "٣"])
def test_a_bad_retention_setting_stops_the_app_at_start(value):
    with pytest.raises(ValueError, match="GAMEPROGRESS_RETENTION_DAYS"):
        Settings.load({"GAMEPROGRESS_RETENTION_DAYS": value}, environ={})


def test_retention_defaults_to_90_days():
    assert Settings.load({}, environ={}).retention_days == 90
    assert Settings.load({}, environ={"GAMEPROGRESS_RETENTION_DAYS": "7"}).retention_days == 7


def test_writes_go_on_while_a_large_backlog_is_pruned(tmp_path):
    """60,000 old events on SQLite (one writer at a time): pruning them takes many short
    transactions, and a writer's updates are accepted between them, each within far less
    than the busy timeout."""
    url = f"sqlite:///{tmp_path}/gp.db"
    store = open_store(url)
    store.migrate()
    with sqlite3.connect(store.path) as conn:
        conn.executemany(
            "INSERT INTO events (device_id, level, level_before, level_after, at)"
            " VALUES ('old', 1, 1, 1, ?)",
            ((NOW - 200 * SECONDS_PER_DAY + i,) for i in range(60_000)),
        )
    counting = CountingStore(store)
    pruner = Pruner(counting, retention_days=90, clock=lambda: NOW, batch=1000, pause=0.005)
    pruning = threading.Thread(target=pruner.prune_round)
    writes: list[tuple[float, float]] = []
    try:
        pruning.start()
        deadline = time.monotonic() + 60
        level = 0
        while pruning.is_alive() and time.monotonic() < deadline and level < 100_000:
            started = time.monotonic()
            store.record_level("live", level, NOW + level)
            writes.append((started, time.monotonic()))
            level += 1
        pruning.join(timeout=60)
    finally:
        store.close()
    assert not pruning.is_alive()
    assert sum(deleted for deleted, _ in counting.batches) == 60_000
    first_batch, last_batch = counting.batches[0][1], counting.batches[-1][1]
    during = [w for w in writes if first_batch < w[1] < last_batch]
    assert len(during) >= 10, f"only {len(during)} writes while {len(counting.batches)} batches ran"
    assert max(end - start for start, end in writes) < 2.0
    assert store.get("live").updates == len(writes)


def test_the_app_starts_one_pruning_thread_per_process_on_first_write(make_app):
    app = make_app(GAMEPROGRESS_RETENTION_DAYS="30")
    service = app.extensions["gameprogress"]
    assert service.pruner._thread is None  # nothing started by merely building the app
    client = app.test_client()
    client.get("/update/a/1")
    thread = service.pruner._thread
    assert thread is not None and thread.is_alive() and thread.daemon
    client.put("/v1/devices/a/level", json={"level": 2})
    assert service.pruner._thread is thread
    service.pruner.stop()
    assert not thread.is_alive()


def test_the_prune_command(tmp_path, capsys):
    from gameprogress.cli import main

    url = f"sqlite:///{tmp_path}/gp.db"
    store = open_store(url)
    now = int(time.time())
    store.record_levels(
        [("a", 1, now - 100 * SECONDS_PER_DAY), ("a", 2, now - 5 * SECONDS_PER_HOUR)]
    )
    store.close()
    assert main(["prune", "--database-url", url, "--retention-days", "30"]) == 0
    assert "pruned 1 events older than 30 days" in capsys.readouterr().err
    store = open_store(url)
    try:
        assert [
            e.level
            for e in store.events_page(
                DateRange.parse(None, None, dt.date.today(), None, 400), None, 9
            )
        ] == [2]
    finally:
        store.close()
