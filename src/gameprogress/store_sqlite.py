"""The SQLite store: the default, one file, safe under many threads and worker processes.

Choices and their reasons:
- WAL journal: readers never block the writer and the writer never blocks readers, which is
  what several worker processes sharing one file need.
- `synchronous=NORMAL`: in WAL mode this cannot corrupt the database; a power cut may lose the
  last few commits, an accepted trade for game progress (clients report again).
- A busy timeout: writers queue for the lock instead of failing at once with "database is
  locked"; only a wait longer than the timeout becomes a 503.
- One connection per thread (and per process: a connection must never cross a fork), opened on
  first use, in autocommit mode so every statement is its own short transaction unless a method
  says `BEGIN` itself.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from . import migrations, reports_sql
from .errors import StoreUnavailable
from .history import SECONDS_PER_HOUR, DateRange, Event
from .model import RECENT_WINDOW_SECONDS, DeviceRecord, Stats, histogram_from_rows

log = logging.getLogger("gameprogress")

DEFAULT_BUSY_TIMEOUT = 5.0

_COLUMNS = "device_id, level, last_commit, level_reached_at, updates"

# One statement, so concurrent updates of one device cannot interleave between a read and a
# write: the max is taken inside the database under its write lock. SET expressions all see
# the row as it was before this update, so the CASE compares against the old level.
# last_sent and seen_at (the level sent, the server time) make the history triggers of
# migration 3 record this update's event and hourly count, within this same statement.
_UPSERT = f"""
INSERT INTO devices ({_COLUMNS}, last_sent, seen_at) VALUES (?, ?, ?, ?, 1, ?, ?)
ON CONFLICT (device_id) DO UPDATE SET
    level = max(devices.level, excluded.level),
    level_reached_at = CASE WHEN excluded.level > devices.level
                            THEN excluded.last_commit ELSE devices.level_reached_at END,
    last_commit = max(devices.last_commit, excluded.last_commit),
    updates = devices.updates + 1,
    last_sent = excluded.last_sent,
    seen_at = excluded.seen_at
"""
_RECORD_LEVEL = _UPSERT + f"RETURNING {_COLUMNS}"

# Import merges field by field with max (min for the time a tied level was reached), so that
# importing the same file twice, or into a store that already has newer data, changes nothing.
_IMPORT = f"""
INSERT INTO devices ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (device_id) DO UPDATE SET
    level = max(devices.level, excluded.level),
    level_reached_at = CASE
        WHEN excluded.level > devices.level THEN excluded.level_reached_at
        WHEN excluded.level < devices.level THEN devices.level_reached_at
        ELSE min(devices.level_reached_at, excluded.level_reached_at) END,
    last_commit = max(devices.last_commit, excluded.last_commit),
    updates = max(devices.updates, excluded.updates),
    last_sent = NULL  -- an import is not an update: no event (see the history triggers)
"""


def _ensure_wal(conn: sqlite3.Connection) -> None:
    """WAL is a property of the database file: set it once, not on every connection.

    Switching the journal mode needs the database to itself, so when several worker
    processes open a new file at once all but one wait; asking first avoids that wait for
    every later connection, and a few retries cover the first moments."""
    for attempt in range(5):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))


class _Connection(sqlite3.Connection):
    """A plain connection that can be weakly referenced, so `close()` can find them all."""


class SQLiteStore:
    """A `Store` over one SQLite file; see the module docstring for the settings and why."""

    kind = "sqlite"

    def __init__(self, path: str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self._schema_ready = False
        self._reset_connections()

    def _reset_connections(self) -> None:
        # After a fork the inherited connections belong to the parent: drop them unclosed
        # (closing could release the parent's locks) and start afresh in this process.
        self._pid = os.getpid()
        self._local = threading.local()
        self._all: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._all_lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self._reset_connections()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,  # only so that close() may close it from elsewhere
                factory=_Connection,
            )
            _ensure_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._all_lock:
                self._all.add(conn)
        return conn

    @contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """A connection with the schema in place; SQLite's operational errors become 503s."""
        try:
            conn = self._connection()
            if not self._schema_ready:
                self._migrate(conn)
            yield conn
        except sqlite3.OperationalError as exc:
            # "database is locked" past the busy timeout, "unable to open database file",
            # a full disk: all conditions an operator fixes and a client retries.
            log.warning("SQLite %s: %s", self.path, exc)
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    def _migrate(self, conn: sqlite3.Connection) -> list[int]:
        done = migrations.apply_sqlite(conn)
        self._schema_ready = True
        return done

    def migrate(self) -> list[int]:
        try:
            return self._migrate(self._connection())
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    def health(self) -> int:
        with self._session() as conn:
            return migrations.sqlite_version(conn)

    def get(self, device_id: str) -> DeviceRecord | None:
        with self._session() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM devices WHERE device_id = ?", (device_id,)
            ).fetchone()
        return DeviceRecord(*row) if row else None

    def record_level(self, device_id: str, level: int, now: int) -> DeviceRecord:
        with self._session() as conn:
            # fetchall, not fetchone: the statement (its write lock, its triggers) ends only
            # when it has been stepped to completion.
            rows = conn.execute(
                _RECORD_LEVEL, (device_id, level, now, now, level, now)
            ).fetchall()
        return DeviceRecord(*rows[0])

    def record_levels(self, updates: Sequence[tuple[str, int, int]]) -> int:
        with self._session() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    _UPSERT, [(d, level, now, now, level, now) for d, level, now in updates]
                )
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return len(updates)

    def leaderboard(self, limit: int) -> list[DeviceRecord]:
        with self._session() as conn:
            rows = conn.execute(reports_sql.sqlite("leaderboard"), (limit,)).fetchall()
        return [DeviceRecord(*row) for row in rows]

    def stats(self, now: int, bucket_width: int, max_buckets: int) -> Stats:
        with self._session() as conn:
            # One read transaction: the counts and the histogram come from the same snapshot.
            conn.execute("BEGIN")
            try:
                devices, total_updates, recent = conn.execute(
                    "SELECT count(*), coalesce(sum(updates), 0), "
                    "(SELECT count(*) FROM devices WHERE last_commit >= ?) FROM devices",
                    (now - RECENT_WINDOW_SECONDS,),
                ).fetchone()
                rows = conn.execute(
                    "SELECT level / ? AS bucket, count(*) FROM devices "
                    "GROUP BY bucket ORDER BY bucket LIMIT ?",
                    (bucket_width, max_buckets + 1),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        histogram, truncated = histogram_from_rows(rows, bucket_width, max_buckets)
        return Stats(devices, recent, total_updates, bucket_width, histogram, truncated)

    def export_page(self, after: str | None, limit: int) -> list[DeviceRecord]:
        with self._session() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM devices WHERE device_id > ? ORDER BY device_id LIMIT ?",
                ("" if after is None else after, limit),
            ).fetchall()
        return [DeviceRecord(*row) for row in rows]

    def import_records(self, records: list[DeviceRecord]) -> int:
        with self._session() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    _IMPORT,
                    [
                        (r.device_id, r.level, r.last_commit, r.level_reached_at, r.updates)
                        for r in records
                    ],
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return len(records)

    # ------------------------------------------------------------ history and reports

    def funnel(self, buckets: int) -> tuple[int, list[tuple[int, int]]]:
        with self._session() as conn:
            rows = conn.execute(reports_sql.sqlite("funnel"), (buckets, buckets)).fetchall()
        return (rows[0][0] if rows else 0), [(bucket, count) for _, bucket, count in rows]

    def daily_active_devices(self, period: DateRange) -> list[tuple[int, int]]:
        return self._hourly_report("daily_active_devices", period)

    def new_devices_per_day(self, period: DateRange) -> list[tuple[int, int]]:
        return self._hourly_report("new_devices_per_day", period)

    def updates_per_hour(self, period: DateRange) -> list[tuple[int, int]]:
        return self._hourly_report("updates_per_hour", period)

    def _hourly_report(self, name: str, period: DateRange) -> list[tuple[int, int]]:
        hours = (period.start // SECONDS_PER_HOUR, period.end // SECONDS_PER_HOUR)
        with self._session() as conn:
            return conn.execute(reports_sql.sqlite(name), hours).fetchall()

    def explain(self, name: str, params: tuple) -> str:
        """SQLite's query plan for one of the report queries (for tests and operators)."""
        with self._session() as conn:
            rows = conn.execute("EXPLAIN QUERY PLAN " + reports_sql.sqlite(name), params)
            return "\n".join(row[-1] for row in rows)

    def events_page(
        self, period: DateRange, after: tuple[int, int] | None, limit: int
    ) -> list[Event]:
        key = after or (period.start, 0)  # ids start at 1
        with self._session() as conn:
            rows = conn.execute(
                reports_sql.sqlite("events_page"), (*key, period.end, limit)
            ).fetchall()
        return [Event(*row) for row in rows]

    def devices_page(
        self, period: DateRange, after: tuple[int, str] | None, limit: int
    ) -> list[DeviceRecord]:
        key = after or (period.start, "")  # ids are never empty
        with self._session() as conn:
            rows = conn.execute(
                reports_sql.sqlite("devices_page"), (*key, period.end, limit)
            ).fetchall()
        return [DeviceRecord(*row) for row in rows]

    def prune_history(self, before: int, batch: int) -> int:
        """Delete up to `batch` events older than `before` (and old activity rows) in one
        short transaction; return how many events went."""
        with self._session() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = conn.execute(
                    reports_sql.sqlite("prune_events"), (before, batch)
                ).rowcount
                conn.execute(reports_sql.sqlite("prune_activity"), (before // SECONDS_PER_HOUR,))
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return deleted

    def close(self) -> None:
        if self._pid != os.getpid():
            return
        with self._all_lock:
            connections = list(self._all)
            self._all = weakref.WeakSet()
        for conn in connections:
            conn.close()
        self._local = threading.local()
