"""History: every accepted update is an event, the hourly counts agree with the events, the
reports answer from one indexed query each, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from collections import Counter, defaultdict

import psycopg
import pytest

from gameprogress.history import (
    SECONDS_PER_DAY,
    SECONDS_PER_HOUR,
    DateRange,
    day_of,
)
from gameprogress.reports_sql import REPORT_INDEXES
from gameprogress.store import StoreUnavailable, open_store, sqlite_path_from_url
from gameprogress.store_sqlite import SQLiteStore

TOKEN = "history-test-admin-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
WIDE = DateRange(dt.date(2023, 1, 1), dt.date(2024, 12, 31))


def all_events(store, period=WIDE):
    return store.events_page(period, None, 1_000_000)


@pytest.fixture
def store(database_url):
    opened = open_store(database_url)
    opened.migrate()
    yield opened
    opened.close()


def test_every_accepted_update_is_an_event_with_the_level_before_and_after(make_app, clock):
    app = make_app()
    client = app.test_client()
    store = app.extensions["gameprogress"].store
    start = int(clock())
    assert client.get("/update/alpha/10").status_code == 200
    clock.advance(60)
    assert client.put("/v1/devices/alpha/level", json={"level": 4}).status_code == 200
    clock.advance(60)
    assert client.put("/v1/devices/alpha/level", json={"level": 12}).status_code == 200
    # Refused updates leave no trace.
    assert client.get("/update/alpha/-1").status_code == 400
    assert client.put("/v1/devices/alpha/level", json={"level": "x"}).status_code == 400
    assert client.get("/update/beta/3").status_code == 200

    events = [
        (e.device_id, e.level, e.level_before, e.level_after, e.at) for e in all_events(store)
    ]
    assert events == [
        ("alpha", 10, None, 10, start),  # a new device: nothing before
        ("alpha", 4, 10, 10, start + 60),  # a lower level is accepted, the stored one stays
        ("alpha", 12, 10, 12, start + 120),
        ("beta", 3, None, 3, start + 120),
    ]
    assert [e.id for e in all_events(store)] == sorted(e.id for e in all_events(store))


def test_no_update_is_stored_without_its_event(store, database_url):
    """The upsert and the event share one transaction: when the event cannot be written,
    the device is left as it was."""
    store.record_level("kept", 5, 1_700_000_000)
    if database_url.startswith("sqlite"):
        with sqlite3.connect(store.path) as conn:
            conn.execute("DROP TABLE events")
        failure = StoreUnavailable
    else:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP TABLE events")
        failure = psycopg.errors.UndefinedTable
    with pytest.raises(failure):
        store.record_level("kept", 9, 1_700_000_100)
    with pytest.raises(failure):
        store.record_level("new", 1, 1_700_000_100)
    assert store.get("kept").level == 5 and store.get("kept").updates == 1
    assert store.get("new") is None


def test_hourly_counts_agree_with_the_events(store):
    """Daily active devices, new devices per day and updates per hour, as the reports read
    them from the hourly counts, equal what the events themselves say."""
    rng = random.Random(5)
    now = 1_700_000_000
    singles, batch = [], []
    for i in range(500):
        now += rng.choice([5, 60, 600, 3600, 5 * 3600])
        update = (f"device-{rng.randrange(40)}", rng.randrange(50), now)
        (singles if i < 250 else batch).append(update)
    for update in singles:
        store.record_level(*update)
    store.record_levels(batch)

    events = all_events(store)
    assert len(events) == 500
    active: dict[int, set[str]] = defaultdict(set)
    new = Counter()
    per_hour = Counter()
    for e in events:
        active[e.at // SECONDS_PER_DAY].add(e.device_id)
        new[e.at // SECONDS_PER_DAY] += e.level_before is None
        per_hour[e.at // SECONDS_PER_HOUR] += 1

    period = DateRange(day_of(events[0].at), day_of(events[-1].at))
    assert period.days > 5
    assert dict(store.daily_active_devices(period)) == {d: len(s) for d, s in active.items()}
    assert {d: n for d, n in store.new_devices_per_day(period) if n} == {
        d: n for d, n in new.items() if n
    }
    assert sum(n for _, n in store.new_devices_per_day(period)) == 40
    assert dict(store.updates_per_hour(period)) == dict(per_hour)
    # A narrower range sees only its own days.
    middle = DateRange(period.first + dt.timedelta(days=2), period.first + dt.timedelta(days=3))
    assert {d for d, _ in store.daily_active_devices(middle)} <= {
        middle.first_day,
        middle.first_day + 1,
    }


def test_funnel_report_buckets_large_level_ranges(make_app):
    app = make_app(GAMEPROGRESS_ADMIN_TOKEN=TOKEN)
    client = app.test_client()
    store = app.extensions["gameprogress"].store
    for i, level in enumerate([0, 5, 5, 999, 1000, 250_000]):
        store.record_level(f"d{i}", level, 1_700_000_000)

    body = client.get("/v1/reports/funnel?buckets=4", headers=BEARER).get_json()
    assert body["bucket_width"] == 62_501  # ceil(250001 / 4)
    assert body["max_level"] == 250_000 and body["devices"] == 6
    assert [
        (s["min_level"], s["max_level"], s["devices"], s["reached"]) for s in body["steps"]
    ] == [
        (0, 62_500, 5, 6),
        (62_501, 125_001, 0, 1),
        (125_002, 187_502, 0, 1),
        (187_503, 250_003, 1, 1),
    ]
    # Few levels: one bucket per level, every level shown, the empty ones too.
    body = client.get("/v1/reports/funnel", headers=BEARER).get_json()
    assert body["buckets"] == 20 and body["bucket_width"] == 12_501
    store_small = make_app(GAMEPROGRESS_ADMIN_TOKEN=TOKEN)  # same database, same answer
    assert store_small.test_client().get("/v1/reports/funnel", headers=BEARER).get_json() == body


def test_funnel_of_few_levels_and_of_no_devices(make_app):
    app = make_app(GAMEPROGRESS_ADMIN_TOKEN=TOKEN)
    client = app.test_client()
    empty = client.get("/v1/reports/funnel", headers=BEARER).get_json()
    assert empty["devices"] == 0 and empty["steps"] == [
        {"min_level": 0, "max_level": 0, "devices": 0, "reached": 0}
    ]
    store = app.extensions["gameprogress"].store
    for i, level in enumerate([0, 1, 3, 3]):
        store.record_level(f"d{i}", level, 1_700_000_000)
    steps = client.get("/v1/reports/funnel", headers=BEARER).get_json()["steps"]
    assert [(s["min_level"], s["devices"], s["reached"]) for s in steps] == [
        (0, 1, 4),
        (1, 1, 3),
        (2, 0, 2),
        (3, 2, 2),
    ]


def test_daily_and_hourly_reports_cover_every_day_and_hour_of_the_range(make_app, clock):
    clock.now = 1_699_920_000 + 10 * SECONDS_PER_HOUR  # 2023-11-14 10:00 UTC
    app = make_app(GAMEPROGRESS_ADMIN_TOKEN=TOKEN)
    client = app.test_client()
    today = day_of(int(clock()))
    client.get("/update/a/1")
    client.get("/update/b/1")
    clock.advance(2 * SECONDS_PER_HOUR)
    client.get("/update/a/2")

    first = (today - dt.timedelta(days=2)).isoformat()
    body = client.get(
        f"/v1/reports/daily-active-devices?from={first}&to={today}", headers=BEARER
    ).get_json()
    assert body["from"] == first and body["to"] == today.isoformat()
    assert [d["count"] for d in body["days"]] == [0, 0, 2]
    assert body["days"][-1]["date"] == today.isoformat()
    new = client.get(f"/v1/reports/new-devices?from={first}&to={today}", headers=BEARER)
    assert [d["count"] for d in new.get_json()["days"]] == [0, 0, 2]
    hours = client.get(
        f"/v1/reports/updates-per-hour?from={today}&to={today}", headers=BEARER
    ).get_json()["hours"]
    assert len(hours) == 24 and sum(h["count"] for h in hours) == 3
    hour_now = dt.datetime.fromtimestamp(int(clock()), dt.timezone.utc).hour
    assert hours[hour_now]["count"] == 1 and hours[hour_now - 2]["count"] == 2
    # Without a range: the last 30 days up to today.
    default = client.get("/v1/reports/daily-active-devices", headers=BEARER).get_json()
    assert len(default["days"]) == 30 and default["to"] == today.isoformat()


@pytest.mark.parametrize(
    "query,code",
    [
        ("from=2024-02-30", "invalid_date"),
        ("from=24-01-01", "invalid_date"),
        ("to=2024-1-1", "invalid_date"),
        ("from=1969-12-31&to=1970-01-02", "invalid_date"),
        ("from=2024-01-02&to=2024-01-01", "invalid_date_range"),
        ("from=2022-01-01&to=2024-01-01", "invalid_date_range"),
        ("to=", "invalid_date"),
    ],
)
def test_bad_date_ranges_are_refused_with_a_reason(make_app, query, code):
    client = make_app(GAMEPROGRESS_ADMIN_TOKEN=TOKEN).test_client()
    response = client.get(f"/v1/reports/new-devices?{query}", headers=BEARER)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


# ------------------------------------------------------------------ query plans


def _fill(store, database_url: str) -> None:
    """20,000 devices, 100,000 events over 30 days and their hourly rows, written directly
    (fast), then statistics gathered as a running database would have them."""
    base = 1_700_000_000
    if database_url.startswith("sqlite"):
        with sqlite3.connect(store.path) as conn:
            conn.executemany(
                "INSERT INTO devices (device_id, level, last_commit, level_reached_at, updates)"
                " VALUES (?, ?, ?, ?, 5)",
                [(f"d{i}", i % 300, base + i * 100, base) for i in range(20_000)],
            )
            conn.executemany(
                "INSERT INTO events (device_id, level, level_before, level_after, at)"
                " VALUES (?, 1, 0, 1, ?)",
                [(f"d{i % 20_000}", base + i * 26) for i in range(100_000)],
            )
            conn.executemany(
                "INSERT INTO activity VALUES (?, 0, 10, 3, 1)",
                [(base // 3600 + h,) for h in range(30 * 24)],
            )
            conn.execute("ANALYZE")
    else:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO devices (device_id, level, last_commit, level_reached_at, updates)"
                " SELECT 'd' || g, g %% 300, %s + g * 100, %s, 5"
                " FROM generate_series(0, 19999) g",
                (base, base),
            )
            conn.execute(
                "INSERT INTO events (device_id, level, level_before, level_after, at)"
                " SELECT 'd' || (g %% 20000), 1, 0, 1, %s + g * 26"
                " FROM generate_series(0, 99999) g",
                (base,),
            )
            conn.execute(
                "INSERT INTO activity SELECT %s + h, s, 10, 3, 1"
                " FROM generate_series(0, 719) h, generate_series(0, 7) s",
                (base // 3600,),
            )
            conn.execute("VACUUM ANALYZE")


def test_each_report_is_one_query_over_its_index(store, database_url):
    _fill(store, database_url)
    base = 1_700_000_000
    week = (base // 3600 + 24, base // 3600 + 8 * 24)
    params = {
        "funnel": (20, 20),
        "daily_active_devices": week,
        "new_devices_per_day": week,
        "updates_per_hour": week,
        "leaderboard": (10,),
        "events_page": (base + 86_400, 0, base + 2 * 86_400, 1000),
        "devices_page": (base + 86_400, "", base + 2 * 86_400, 1000),
    }
    sqlite = isinstance(store, SQLiteStore)
    for name, index in REPORT_INDEXES.items():
        plan = store.explain(name, params[name])
        if index == "activity":
            index = "USING PRIMARY KEY" if sqlite else "activity_pkey"
        assert index in plan, f"{name} does not use {index}:\n{plan}"
        table = {"events_page": "events", "devices_page": "devices"}.get(name, "activity")
        if name != "funnel":
            # Never a full pass over the table (the funnel reads every device by design).
            assert f"SCAN {table}\n" not in plan + "\n" and f"Seq Scan on {table}" not in plan, (
                f"{name}:\n{plan}"
            )


def test_a_database_from_before_history_upgrades_and_keeps_its_devices(database_url, monkeypatch):
    from gameprogress import migrations
    from gameprogress.model import DeviceRecord

    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
    monkeypatch.setattr(migrations, "LATEST_VERSION", 2)
    old = open_store(database_url)
    assert old.migrate() == [1, 2]
    old.close()
    monkeypatch.undo()
    # A device written by the code of that time (its SQL, on its schema).
    insert = (
        "INSERT INTO devices (device_id, level, last_commit, level_reached_at, updates) "
        "VALUES ('veteran', 40, 1699000000, 1698000000, 12)"
    )
    if database_url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path_from_url(database_url)) as conn:
            conn.execute(insert)
    else:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(insert)

    store = open_store(database_url)
    try:
        assert store.migrate() == [3]
        assert store.get("veteran") == DeviceRecord("veteran", 40, 1_699_000_000, 1_698_000_000, 12)
        store.record_level("veteran", 41, 1_700_000_000)
        [event] = all_events(store)
        assert (event.level_before, event.level_after) == (40, 41)
        day = DateRange(day_of(1_700_000_000), day_of(1_700_000_000))
        assert store.daily_active_devices(day) == [(day.first_day, 1)]
        assert store.new_devices_per_day(day) == [(day.first_day, 0)]  # known before history
    finally:
        store.close()


def test_an_import_is_not_an_update_and_leaves_no_history(store):
    from gameprogress.model import DeviceRecord

    store.record_level("known", 3, 1_700_000_000)
    store.import_records(
        [
            DeviceRecord("known", 9, 1_700_000_500, 1_700_000_500, 4),
            DeviceRecord("imported", 5, 1_700_000_600, 1_700_000_600, 2),
        ]
    )
    assert [(e.device_id, e.level) for e in all_events(store)] == [("known", 3)]
    assert sum(n for _, n in store.updates_per_hour(WIDE)) == 1
    # The next real update of an imported device is recorded, and is not "new".
    store.record_level("imported", 6, 1_700_000_700)
    assert [(e.device_id, e.level_before, e.level_after) for e in all_events(store)][-1] == (
        "imported",
        5,
        6,
    )
    assert sum(n for _, n in store.new_devices_per_day(WIDE)) == 1
