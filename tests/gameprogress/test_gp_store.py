"""The stores below the HTTP layer: URLs, SQLite settings, migrations, paging, fork safety,
and the signature format."""

from __future__ import annotations

import hashlib
import hmac
import multiprocessing
import sqlite3
import threading

import pytest

from gameprogress.migrations import LATEST_VERSION, MIGRATIONS
from gameprogress.model import DeviceRecord
from gameprogress.signing import sign
from gameprogress.store import (
    StoreError,
    iter_records,
    open_store,
    read_jsonl,
    sqlite_path_from_url,
)
from gameprogress.store_sqlite import SQLiteStore


@pytest.mark.parametrize(
    "url,path",
    [
        ("sqlite:///./var/gameprogress.db", "./var/gameprogress.db"),
        ("sqlite:///relative.db", "relative.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
    ],
)
def test_sqlite_urls(url, path):
    assert sqlite_path_from_url(url) == path


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:x.db"])
def test_unusable_sqlite_urls(url):
    with pytest.raises(StoreError):
        sqlite_path_from_url(url)


def test_sqlite_creates_the_parent_directory(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/a/b/c.db")
    store.migrate()
    store.close()
    assert (tmp_path / "a" / "b" / "c.db").is_file()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout_and_a_connection_per_thread(tmp_path):
    store = SQLiteStore(str(tmp_path / "x.db"), busy_timeout=7.5)
    store.migrate()
    try:
        conn = store._connection()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 7500
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        other = []
        thread = threading.Thread(target=lambda: other.append(store._connection()))
        thread.start()
        thread.join()
        assert other[0] is not conn
        assert store._connection() is conn
    finally:
        store.close()
    # WAL is a property of the file: a plain connection sees it too.
    with sqlite3.connect(tmp_path / "x.db") as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migration_ledger(database_url):
    store = open_store(database_url)
    try:
        assert store.migrate() == [m.version for m in MIGRATIONS]
        assert store.migrate() == []
        assert store.health() == LATEST_VERSION
    finally:
        store.close()


def test_a_schema_newer_than_the_code_is_refused(database_url):
    store = open_store(database_url)
    store.migrate()
    store.close()
    if database_url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path_from_url(database_url)) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    else:
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    store = open_store(database_url)
    try:
        with pytest.raises(StoreError, match="newer than this code"):
            store.migrate()
    finally:
        store.close()


def test_export_pages_through_everything_in_id_order(database_url):
    store = open_store(database_url)
    try:
        ids = [f"id-{i:03}" for i in range(25)] + ["A", "Z", "a", "z", " space", "~"]
        store.import_records([DeviceRecord(i, 1, 1, 1, 1) for i in ids])
        for page_size in (1, 7, 31, 1000):
            assert [r.device_id for r in iter_records(store, page_size)] == sorted(ids)
    finally:
        store.close()


def _use_in_child(queue, store) -> None:
    try:
        queue.put(store.record_level("child", 5, 1).level)
    except BaseException as exc:
        queue.put(repr(exc))


def test_a_store_survives_a_fork(database_url):
    """A pre-fork server may build the app (and touch the store) before forking workers."""
    store = open_store(database_url)
    try:
        store.record_level("parent", 1, 1)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_use_in_child, args=(queue, store))
        child.start()
        assert queue.get(timeout=30) == 5
        child.join(timeout=10)
        # The parent's own connections still work after the child has gone.
        assert store.record_level("parent", 2, 2).level == 2
        assert store.get("child").level == 5
    finally:
        store.close()


def test_read_jsonl_skips_blank_lines():
    line = '{"device_id":"a","last_commit":1,"level":2,"level_reached_at":1,"updates":1}'
    assert list(read_jsonl(["", line, "   \n"])) == [DeviceRecord("a", 2, 1, 1, 1)]


def test_signature_format_is_method_path_timestamp_body_joined_by_newlines():
    body = b'{"level": 12}'
    expected = hmac.new(
        b"secret", b'PUT\n/v1/devices/a b/level\n1700000000\n{"level": 12}', hashlib.sha256
    ).hexdigest()
    assert sign(b"secret", "put", "/v1/devices/a b/level", "1700000000", body) == expected
