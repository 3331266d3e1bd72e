"""Exports of devices and events for a date range: CSV quoted as RFC 4180 says, JSON that
parses, only the rows of the range, streamed page by page in constant memory."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3
import tracemalloc

import psycopg
import pytest

from gameprogress import exports
from gameprogress.history import day_of

TOKEN = "export-test-admin-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# Ids that break naive CSV: a comma, quotes, a leading '=', spaces, a semicolon, a backslash.
AWKWARD_IDS = ["plain", "with,comma", 'with "quotes"', "=1+2", " lead and trail ", "a;b\\c"]


@pytest.fixture
def admin_app(make_app):
    return make_app(GAMEPROGRESS_ADMIN_TOKEN=TOKEN)


def _range(clock, days_back: int = 0, days: int = 1) -> str:
    last = day_of(int(clock())) - dt.timedelta(days=days_back)
    first = last - dt.timedelta(days=days - 1)
    return f"from={first}&to={last}"


def test_csv_exports_quote_every_awkward_id(admin_app, clock):
    client = admin_app.test_client()
    store = admin_app.extensions["gameprogress"].store
    now = int(clock())
    for i, device_id in enumerate(AWKWARD_IDS):
        store.record_level(device_id, i + 1, now + i)

    response = client.get(f"/v1/exports/devices.csv?{_range(clock)}", headers=BEARER)
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True)
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    assert '"with,comma"' in text and '"with ""quotes"""' in text
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == [
        "device_id",
        "level",
        "last_commit",
        "level_reached_at",
        "updates",
        "last_commit_utc",
    ]
    assert [r[0] for r in rows[1:]] == AWKWARD_IDS  # ordered by last update, ids verbatim
    assert rows[1][1:5] == ["1", str(now), str(now), "1"]
    assert rows[1][5] == dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )

    events = client.get(f"/v1/exports/events.csv?{_range(clock)}", headers=BEARER)
    rows = list(csv.reader(io.StringIO(events.get_data(as_text=True), newline="")))
    assert rows[0][:6] == ["id", "device_id", "level", "level_before", "level_after", "at"]
    assert [r[1] for r in rows[1:]] == AWKWARD_IDS
    assert rows[1][3] == ""  # a new device has no level before


def test_json_exports_hold_the_same_rows(admin_app, clock):
    client = admin_app.test_client()
    store = admin_app.extensions["gameprogress"].store
    now = int(clock())
    for i, device_id in enumerate(AWKWARD_IDS):
        store.record_level(device_id, 7, now + i)
    store.record_level("plain", 3, now + 10)

    devices = json.loads(
        client.get(f"/v1/exports/devices.json?{_range(clock)}", headers=BEARER).data
    )
    assert [d["device_id"] for d in devices] == AWKWARD_IDS[1:] + ["plain"]
    assert devices[-1] == {**store.get("plain").to_json()}
    events = json.loads(client.get(f"/v1/exports/events.json?{_range(clock)}", headers=BEARER).data)
    assert len(events) == len(AWKWARD_IDS) + 1
    assert events[-1]["device_id"] == "plain" and events[-1]["level"] == 3
    assert events[-1]["level_before"] == 7 and events[-1]["level_after"] == 7
    # A range with nothing in it is an empty array, not an empty body.
    empty = client.get(f"/v1/exports/events.json?{_range(clock, days_back=5)}", headers=BEARER)
    assert json.loads(empty.data) == []


def test_only_the_rows_of_the_range_are_exported(admin_app, clock):
    client = admin_app.test_client()
    store = admin_app.extensions["gameprogress"].store
    start = int(clock()) - 3 * 86_400
    for day in range(4):
        store.record_level(f"day-{day}", day, start + day * 86_400)
    middle = _range(clock, days_back=1, days=2)  # the last two days before today
    events = json.loads(client.get(f"/v1/exports/events.json?{middle}", headers=BEARER).data)
    assert [e["device_id"] for e in events] == ["day-1", "day-2"]
    devices = json.loads(client.get(f"/v1/exports/devices.json?{middle}", headers=BEARER).data)
    assert [d["device_id"] for d in devices] == ["day-1", "day-2"]


def _insert_events(database_url: str, store, count: int, at: int) -> None:
    if database_url.startswith("sqlite"):
        with sqlite3.connect(store.path) as conn:
            conn.executemany(
                "INSERT INTO events (device_id, level, level_before, level_after, at)"
                " VALUES (?, 5, 4, 5, ?)",
                ((f"device,{i % 5000}", at + i % 80_000) for i in range(count)),
            )
    else:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO events (device_id, level, level_before, level_after, at)"
                " SELECT 'device,' || (g %% 5000), 5, 4, 5, %s + g %% 80000"
                " FROM generate_series(0, %s - 1) g",
                (at, count),
            )


def _peak_while_streaming(client, url: str) -> tuple[int, int]:
    """(rows, peak traced bytes) while reading a streamed answer chunk by chunk."""
    response = client.get(url, headers=BEARER, buffered=False)
    assert response.status_code == 200 and response.is_streamed
    tracemalloc.start()
    try:
        rows = 0
        for chunk in response.response:
            rows += chunk.count(b"\r\n")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        response.close()
    return rows - 1, peak


def test_exports_stream_page_by_page_in_constant_memory(
    admin_app, database_url, clock, monkeypatch
):
    """Ten times the rows, not ten times the memory: a page is read only when the one before
    has been sent, and only one is held at once. (Pages of 100 rows here, to see many pages
    quickly; bench/gameprogress_history.py measures a million rows with the real size.)"""
    monkeypatch.setattr(exports, "EXPORT_PAGE_SIZE", 100)
    client = admin_app.test_client()
    store = admin_app.extensions["gameprogress"].store
    fetched = []
    real_page = store.events_page

    def counting_page(period, after, limit):
        page = real_page(period, after, limit)
        fetched.append(len(page))
        return page

    monkeypatch.setattr(store, "events_page", counting_page)
    day = day_of(int(clock())) - dt.timedelta(days=2)
    at = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())
    url = f"/v1/exports/events.csv?from={day}&to={day}"

    _insert_events(database_url, store, 1_000, at)
    response = client.get(url, headers=BEARER, buffered=False)
    chunks = iter(response.response)
    next(chunks)  # the header row
    next(chunks)  # the first page
    assert fetched == [100]  # the second page is not read before it is asked for
    next(chunks)
    assert fetched == [100, 100]
    response.close()

    rows_small, peak_small = _peak_while_streaming(client, url)
    _insert_events(database_url, store, 9_000, at)
    fetched.clear()
    rows_large, peak_large = _peak_while_streaming(client, url)
    assert (rows_small, rows_large) == (1_000, 10_000)
    assert max(fetched) == 100 and len(fetched) == 101
    assert peak_large < 1.5 * peak_small + 64 * 1024, (peak_small, peak_large)
