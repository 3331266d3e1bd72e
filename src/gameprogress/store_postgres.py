"""The PostgreSQL store: psycopg 3 over a connection pool, failing fast while the database is away.

Outage behaviour, which the app turns into `503` + `Retry-After`:
- A short libpq `connect_timeout` and a short pool wait bound how long any request can hang.
- Once a request has found the database unreachable, a `CircuitBreaker` answers the following
  requests at once, without touching the pool, and lets one request at a time probe again after
  a short cool-down.
- The pool checks each connection before lending it and replaces broken ones in the background
  (psycopg_pool), and gives up a reconnection cycle after a few seconds so that the next request
  starts a fresh one: when the server comes back, the store is back within seconds by itself.
The pool is created on first use in each process, never inherited across a fork.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from . import migrations, reports_sql
from .errors import StoreUnavailable
from .history import SECONDS_PER_DAY, SECONDS_PER_HOUR, DateRange, Event
from .model import RECENT_WINDOW_SECONDS, DeviceRecord, Stats, histogram_from_rows

T = TypeVar("T")
log = logging.getLogger("gameprogress")

CONNECT_TIMEOUT = 2  # seconds; libpq's own minimum is 2
POOL_TIMEOUT = 1.0  # longest a request waits for a pooled connection, then 503
RECONNECT_TIMEOUT = 3.0  # then the pool drops a reconnect cycle; the next request starts anew
BREAKER_COOLDOWN = 1.0  # how long requests fail fast before one probes again
DEFAULT_POOL_SIZE = 10  # per worker process: at least the worker's thread count

_COLUMNS = "device_id, level, last_commit, level_reached_at, updates"

# One statement, so one round trip and one transaction: the row lock taken by ON CONFLICT
# makes concurrent updates of one device serialise inside PostgreSQL, GREATEST keeps the
# maximum whichever commits first, and the event and the hourly count are written by the same
# statement (data-modifying CTEs run even when the final SELECT does not read them).
# previous_level/previous_commit keep what the update replaced: SET sees the old row.
_RECORD_LEVEL = f"""
WITH updated AS (
    INSERT INTO devices ({_COLUMNS}, previous_level, previous_commit)
    VALUES (%(device_id)s, %(level)s, %(now)s, %(now)s, 1, NULL, NULL)
    ON CONFLICT (device_id) DO UPDATE SET
        level = GREATEST(devices.level, EXCLUDED.level),
        level_reached_at = CASE WHEN EXCLUDED.level > devices.level
                                THEN EXCLUDED.last_commit ELSE devices.level_reached_at END,
        last_commit = GREATEST(devices.last_commit, EXCLUDED.last_commit),
        updates = devices.updates + 1,
        previous_level = devices.level,
        previous_commit = devices.last_commit
    RETURNING {_COLUMNS}, previous_level, previous_commit
), event AS (
    INSERT INTO events (device_id, level, level_before, level_after, at)
    SELECT device_id, %(level)s, previous_level, level, %(now)s FROM updated
), counted AS (
    INSERT INTO activity (hour, shard, updates, active_devices, new_devices)
    SELECT %(hour)s, %(shard)s, 1,
           (previous_commit IS NULL OR previous_commit / 86400 < %(day)s)::integer,
           (previous_commit IS NULL)::integer
    FROM updated
    ON CONFLICT (hour, shard) DO UPDATE SET
        updates = activity.updates + 1,
        active_devices = activity.active_devices + EXCLUDED.active_devices,
        new_devices = activity.new_devices + EXCLUDED.new_devices
)
SELECT {_COLUMNS} FROM updated
"""
# Every write adds to the current hour's activity row, and a row lock is held until commit:
# spreading the count over a few rows (summed by the reports) keeps concurrent writers from
# queueing on one row behind each other's commits.
ACTIVITY_SHARDS = 8

# Same merge as the SQLite store's import: idempotent, field by field.
_IMPORT = f"""
INSERT INTO devices ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (device_id) DO UPDATE SET
    level = GREATEST(devices.level, EXCLUDED.level),
    level_reached_at = CASE
        WHEN EXCLUDED.level > devices.level THEN EXCLUDED.level_reached_at
        WHEN EXCLUDED.level < devices.level THEN devices.level_reached_at
        ELSE LEAST(devices.level_reached_at, EXCLUDED.level_reached_at) END,
    last_commit = GREATEST(devices.last_commit, EXCLUDED.last_commit),
    updates = GREATEST(devices.updates, EXCLUDED.updates)
"""


class CircuitBreaker:
    """Remembers that the database is down so requests need not each wait to find out.

    Closed (normal): every call is admitted. After a failure it opens: calls are refused at once
    until `cooldown` has passed, then exactly one call is admitted as a probe; its success
    closes the breaker, its failure re-opens it for another cool-down.
    """

    def __init__(
        self, cooldown: float = BREAKER_COOLDOWN, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._probing = False
        self.last_error = ""

    @property
    def is_open(self) -> bool:
        return self._down_since is not None

    def admit(self) -> bool:
        """True if the caller may use the database now (possibly as the probe)."""
        with self._lock:
            if self._down_since is None:
                return True
            if self._probing or self._clock() < self._retry_at:
                return False
            self._probing = True
            return True

    def succeeded(self) -> None:
        with self._lock:
            if self._down_since is not None:
                log.warning(
                    "PostgreSQL reachable again after %.1f s", self._clock() - self._down_since
                )
            self._down_since = None
            self._probing = False

    def failed(self, error: str) -> None:
        with self._lock:
            now = self._clock()
            if self._down_since is None:
                # Logged once per outage, not once per refused request.
                log.warning("PostgreSQL unreachable, answering 503 until it is back: %s", error)
                self._down_since = now
            self._retry_at = now + self.cooldown
            self._probing = False
            self.last_error = error

    def released(self) -> None:
        """The admitted call ended without telling whether the database works (e.g. a bug)."""
        with self._lock:
            self._probing = False

    def down_for(self) -> float:
        since = self._down_since
        return 0.0 if since is None else self._clock() - since


class PostgresStore:
    """A `Store` over PostgreSQL; see the module docstring for the outage behaviour."""

    kind = "postgresql"

    def __init__(
        self,
        url: str,
        pool_size: int = DEFAULT_POOL_SIZE,
        pool_timeout: float = POOL_TIMEOUT,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self.breaker = breaker or CircuitBreaker()
        self._connect_kwargs: dict[str, object] = {}
        if "connect_timeout" not in conninfo_to_dict(url):
            self._connect_kwargs["connect_timeout"] = CONNECT_TIMEOUT
        self._schema_ready = False
        self._pool: ConnectionPool | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def _get_pool(self) -> ConnectionPool:
        pid = os.getpid()
        if self._pool is None or self._pool_pid != pid:
            with self._pool_lock:
                if self._pool is None or self._pool_pid != pid:
                    pool = ConnectionPool(
                        self.url,
                        min_size=1,
                        max_size=self.pool_size,
                        timeout=self.pool_timeout,
                        reconnect_timeout=RECONNECT_TIMEOUT,
                        # A server restart leaves dead sockets in the pool; checking before
                        # lending costs one empty round trip and spares the request a failure.
                        check=ConnectionPool.check_connection,
                        kwargs={"autocommit": True, **self._connect_kwargs},
                        name="gameprogress",
                        open=False,
                    )
                    pool.open(wait=False)
                    self._pool, self._pool_pid = pool, pid
        return self._pool

    def _unavailable(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"PostgreSQL unavailable for {self.breaker.down_for():.0f} s: "
            f"{self.breaker.last_error}",
            retry_after=max(1, round(self.breaker.cooldown)),
        )

    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run `work` on a pooled connection (schema ensured), mapping outages to 503s."""
        if not self.breaker.admit():
            raise self._unavailable()
        try:
            with self._get_pool().connection() as conn:
                if not self._schema_ready:
                    migrations.apply_postgres(conn)
                    self._schema_ready = True
                result = work(conn)
        except PoolTimeout as exc:
            self.breaker.failed(f"no connection within {self.pool_timeout:g} s ({exc})")
            raise self._unavailable() from exc
        except psycopg.OperationalError as exc:
            # A lost connection means the server is away; other operational errors (a
            # cancelled query, say) are answered 503 without tripping the breaker.
            if exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P")):
                self.breaker.failed(str(exc).strip() or type(exc).__name__)
                raise self._unavailable() from exc
            self.breaker.released()
            raise StoreUnavailable(f"PostgreSQL: {exc}") from exc
        except BaseException:
            self.breaker.released()
            raise
        self.breaker.succeeded()
        return result

    def migrate(self) -> list[int]:
        """Apply migrations on a connection of its own, so no pool is opened before a fork."""
        try:
            with psycopg.connect(self.url, autocommit=True, **self._connect_kwargs) as conn:
                done = migrations.apply_postgres(conn)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL: {str(exc).strip()}") from exc
        self._schema_ready = True
        return done

    def health(self) -> int:
        return self._run(migrations.postgres_version)

    def get(self, device_id: str) -> DeviceRecord | None:
        def work(conn: psycopg.Connection) -> DeviceRecord | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM devices WHERE device_id = %s", (device_id,)
            ).fetchone()
            return DeviceRecord(*row) if row else None

        return self._run(work)

    def record_level(self, device_id: str, level: int, now: int) -> DeviceRecord:
        params = _write_params(device_id, level, now)

        def work(conn: psycopg.Connection) -> DeviceRecord:
            return DeviceRecord(*conn.execute(_RECORD_LEVEL, params).fetchone())

        return self._run(work)

    def record_levels(self, updates: Sequence[tuple[str, int, int]]) -> int:
        rows = [_write_params(*update) for update in updates]

        def work(conn: psycopg.Connection) -> int:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_RECORD_LEVEL, rows)
            return len(rows)

        return self._run(work)

    def leaderboard(self, limit: int) -> list[DeviceRecord]:
        def work(conn: psycopg.Connection) -> list[DeviceRecord]:
            rows = conn.execute(reports_sql.postgres("leaderboard"), (limit,)).fetchall()
            return [DeviceRecord(*row) for row in rows]

        return self._run(work)

    def stats(self, now: int, bucket_width: int, max_buckets: int) -> Stats:
        def work(conn: psycopg.Connection) -> Stats:
            with conn.transaction():
                # One snapshot for the counts and the histogram.
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                devices, total_updates, recent = conn.execute(
                    "SELECT count(*), coalesce(sum(updates), 0), "
                    "count(*) FILTER (WHERE last_commit >= %s) FROM devices",
                    (now - RECENT_WINDOW_SECONDS,),
                ).fetchone()
                rows = conn.execute(
                    "SELECT level / %s::integer AS bucket, count(*) FROM devices "
                    "GROUP BY bucket ORDER BY bucket LIMIT %s",
                    (bucket_width, max_buckets + 1),
                ).fetchall()
            histogram, truncated = histogram_from_rows(rows, bucket_width, max_buckets)
            return Stats(devices, recent, int(total_updates), bucket_width, histogram, truncated)

        return self._run(work)

    def export_page(self, after: str | None, limit: int) -> list[DeviceRecord]:
        def work(conn: psycopg.Connection) -> list[DeviceRecord]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM devices WHERE device_id > %s ORDER BY device_id LIMIT %s",
                ("" if after is None else after, limit),
            ).fetchall()
            return [DeviceRecord(*row) for row in rows]

        return self._run(work)

    def import_records(self, records: list[DeviceRecord]) -> int:
        def work(conn: psycopg.Connection) -> int:
            # Sorted by id: two imports running at once then lock rows in the same order and
            # cannot deadlock each other.
            ordered = sorted(records, key=lambda r: r.device_id)
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    _IMPORT,
                    [
                        (r.device_id, r.level, r.last_commit, r.level_reached_at, r.updates)
                        for r in ordered
                    ],
                )
            return len(records)

        return self._run(work)

    # ------------------------------------------------------------ history and reports

    def _fetch(self, name: str, params: tuple) -> list[tuple]:
        def work(conn: psycopg.Connection) -> list[tuple]:
            return conn.execute(reports_sql.postgres(name), params).fetchall()

        return self._run(work)

    def funnel(self, buckets: int) -> tuple[int, list[tuple[int, int]]]:
        rows = self._fetch("funnel", (buckets, buckets))
        return (rows[0][0] if rows else 0), [(bucket, count) for _, bucket, count in rows]

    def daily_active_devices(self, period: DateRange) -> list[tuple[int, int]]:
        return self._fetch("daily_active_devices", _hours(period))

    def new_devices_per_day(self, period: DateRange) -> list[tuple[int, int]]:
        return self._fetch("new_devices_per_day", _hours(period))

    def updates_per_hour(self, period: DateRange) -> list[tuple[int, int]]:
        return self._fetch("updates_per_hour", _hours(period))

    def explain(self, name: str, params: tuple) -> str:
        """PostgreSQL's plan for one of the report queries (for tests and operators)."""
        rows = self._fetch_explain(name, params)
        return "\n".join(row[0] for row in rows)

    def _fetch_explain(self, name: str, params: tuple) -> list[tuple]:
        def work(conn: psycopg.Connection) -> list[tuple]:
            return conn.execute("EXPLAIN " + reports_sql.postgres(name), params).fetchall()

        return self._run(work)

    def events_page(
        self, period: DateRange, after: tuple[int, int] | None, limit: int
    ) -> list[Event]:
        key = after or (period.start, 0)  # ids start at 1
        rows = self._fetch("events_page", (*key, period.end, limit))
        return [Event(*row) for row in rows]

    def devices_page(
        self, period: DateRange, after: tuple[int, str] | None, limit: int
    ) -> list[DeviceRecord]:
        key = after or (period.start, "")  # ids are never empty
        rows = self._fetch("devices_page", (*key, period.end, limit))
        return [DeviceRecord(*row) for row in rows]

    def prune_history(self, before: int, batch: int) -> int:
        """Delete up to `batch` events older than `before` (and old activity rows).

        Deleting old rows takes no lock a writer of new rows waits for."""

        def work(conn: psycopg.Connection) -> int:
            with conn.transaction():
                deleted = conn.execute(reports_sql.postgres("prune_events"), (before, batch))
                conn.execute(
                    reports_sql.postgres("prune_activity"), (before // SECONDS_PER_HOUR,)
                )
                return deleted.rowcount

        return self._run(work)

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.close()
        self._pool = None


def _write_params(device_id: str, level: int, now: int) -> dict[str, object]:
    return {
        "device_id": device_id,
        "level": level,
        "now": now,
        "hour": now // SECONDS_PER_HOUR,
        "day": now // SECONDS_PER_DAY,
        "shard": random.randrange(ACTIVITY_SHARDS),
    }


def _hours(period: DateRange) -> tuple[int, int]:
    return period.start // SECONDS_PER_HOUR, period.end // SECONDS_PER_HOUR
