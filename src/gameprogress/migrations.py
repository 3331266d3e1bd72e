"""The versioned schema, and applying it safely when many worker processes start at once.

Each migration has a version, a description and its statements for each database. The
versions applied are recorded in `schema_migrations`. Checking what is missing and applying it
happens under one lock per database (SQLite: a write transaction taken up front with
`BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock), so when eight workers start
together one applies and the others find nothing left to do.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import StoreError

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "devices table and leaderboard index",
        sqlite=(
            # WITHOUT ROWID: the text id is the key, so the table is one B-tree, not two.
            """CREATE TABLE devices (
                device_id TEXT PRIMARY KEY,
                level INTEGER NOT NULL CHECK (level BETWEEN 0 AND 1000000),
                last_commit INTEGER NOT NULL,
                level_reached_at INTEGER NOT NULL,
                updates INTEGER NOT NULL
            ) WITHOUT ROWID""",
            "CREATE INDEX devices_leaderboard ON devices (level DESC, level_reached_at, device_id)",
        ),
        postgres=(
            # COLLATE "C": byte order, the same as SQLite's, so both stores sort ids alike and
            # an export from one imports into the other in order.
            """CREATE TABLE devices (
                device_id TEXT COLLATE "C" PRIMARY KEY,
                level INTEGER NOT NULL CHECK (level BETWEEN 0 AND 1000000),
                last_commit BIGINT NOT NULL,
                level_reached_at BIGINT NOT NULL,
                updates BIGINT NOT NULL
            )""",
            "CREATE INDEX devices_leaderboard ON devices (level DESC, level_reached_at, device_id)",
        ),
    ),
    Migration(
        2,
        "index for counting devices updated in the last hour",
        sqlite=("CREATE INDEX devices_last_commit ON devices (last_commit)",),
        postgres=("CREATE INDEX devices_last_commit ON devices (last_commit)",),
    ),
    Migration(
        3,
        "history: events, hourly activity counts, the level before the latest update",
        sqlite=(
            # Set by every accepted update, cleared by an import: the triggers below record
            # an event only for the writes that set them.
            "ALTER TABLE devices ADD COLUMN last_sent INTEGER",
            "ALTER TABLE devices ADD COLUMN seen_at INTEGER",
            # (last_commit, device_id): the device export pages by this key.
            "DROP INDEX devices_last_commit",
            "CREATE INDEX devices_last_commit ON devices (last_commit, device_id)",
            # id is the rowid, so the index on `at` is an index on (at, id): the export's key.
            """CREATE TABLE events (
                id INTEGER PRIMARY KEY,
                device_id TEXT NOT NULL,
                level INTEGER NOT NULL,
                level_before INTEGER,
                level_after INTEGER NOT NULL,
                at INTEGER NOT NULL
            )""",
            "CREATE INDEX events_at ON events (at)",
            """CREATE TABLE activity (
                hour INTEGER NOT NULL,
                shard INTEGER NOT NULL,
                updates INTEGER NOT NULL,
                active_devices INTEGER NOT NULL,
                new_devices INTEGER NOT NULL,
                PRIMARY KEY (hour, shard)
            ) WITHOUT ROWID""",
            # Triggers run inside the upsert statement itself: the event and the hourly count
            # commit with it or not at all, see OLD (the row before) exactly, and cost no
            # extra statement from Python (a third of the CPU of doing the same in three).
            # One activity shard: SQLite has one writer at a time, nothing to spread.
            """CREATE TRIGGER devices_history_insert AFTER INSERT ON devices
            WHEN NEW.last_sent IS NOT NULL BEGIN
                INSERT INTO events (device_id, level, level_before, level_after, at)
                VALUES (NEW.device_id, NEW.last_sent, NULL, NEW.level, NEW.seen_at);
                INSERT INTO activity (hour, shard, updates, active_devices, new_devices)
                VALUES (NEW.seen_at / 3600, 0, 1, 1, 1)
                ON CONFLICT (hour, shard) DO UPDATE SET
                    updates = updates + 1,
                    active_devices = active_devices + 1,
                    new_devices = new_devices + 1;
            END""",
            # Active on a UTC day = the device's previous update lies on an earlier day.
            """CREATE TRIGGER devices_history_update AFTER UPDATE OF updates ON devices
            WHEN NEW.last_sent IS NOT NULL BEGIN
                INSERT INTO events (device_id, level, level_before, level_after, at)
                VALUES (NEW.device_id, NEW.last_sent, OLD.level, NEW.level, NEW.seen_at);
                INSERT INTO activity (hour, shard, updates, active_devices, new_devices)
                VALUES (NEW.seen_at / 3600, 0, 1,
                        OLD.last_commit / 86400 < NEW.seen_at / 86400, 0)
                ON CONFLICT (hour, shard) DO UPDATE SET
                    updates = updates + 1,
                    active_devices = active_devices + excluded.active_devices;
            END""",
        ),
        postgres=(
            "ALTER TABLE devices ADD COLUMN previous_level INTEGER",
            "ALTER TABLE devices ADD COLUMN previous_commit BIGINT",
            "DROP INDEX devices_last_commit",
            "CREATE INDEX devices_last_commit ON devices (last_commit, device_id)",
            """CREATE TABLE events (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                device_id TEXT COLLATE "C" NOT NULL,
                level INTEGER NOT NULL,
                level_before INTEGER,
                level_after INTEGER NOT NULL,
                at BIGINT NOT NULL
            )""",
            "CREATE INDEX events_at ON events (at, id)",
            """CREATE TABLE activity (
                hour INTEGER NOT NULL,
                shard SMALLINT NOT NULL,
                updates BIGINT NOT NULL,
                active_devices BIGINT NOT NULL,
                new_devices BIGINT NOT NULL,
                PRIMARY KEY (hour, shard)
            )""",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

_CREATE_LEDGER = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)"""

# Any fixed 64-bit number works as long as every process uses the same one; this is the first
# 8 bytes of sha256(b"gameprogress.migrations"), to be unlikely to collide with another app's.
POSTGRES_MIGRATION_LOCK = 6536917197381666946


def _pending(applied: set[int]) -> list[Migration]:
    newest = max(applied, default=0)
    if newest > LATEST_VERSION:
        raise StoreError(
            f"the database schema is at version {newest}, newer than this code knows "
            f"({LATEST_VERSION}): run a newer gameprogress"
        )
    return [m for m in MIGRATIONS if m.version not in applied]


def apply_sqlite(conn: sqlite3.Connection) -> list[int]:
    """Apply missing migrations on an autocommit-mode connection; return the versions applied.

    `BEGIN IMMEDIATE` takes the write lock before reading the ledger, so two processes cannot
    both see version 0 and both try to create the table; the loser waits (busy timeout) and
    then sees the work done. SQLite DDL is transactional, so a failed migration leaves nothing.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_LEDGER)
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        done = []
        for migration in _pending(applied):
            for statement in migration.sqlite:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, int(time.time())),
            )
            done.append(migration.version)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return done


def sqlite_version(conn: sqlite3.Connection) -> int:
    try:
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    return row[0] or 0


def apply_postgres(conn: psycopg.Connection) -> list[int]:
    """Apply missing migrations in one transaction holding the migration advisory lock.

    The lock is transaction-scoped (`pg_advisory_xact_lock`), so it is released by the commit or
    rollback itself and cannot leak if a process dies mid-migration.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (POSTGRES_MIGRATION_LOCK,))
        conn.execute(_CREATE_LEDGER)
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        done = []
        for migration in _pending(applied):
            for statement in migration.postgres:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) "
                "VALUES (%s, %s, %s)",
                (migration.version, migration.description, int(time.time())),
            )
            done.append(migration.version)
    return done


def postgres_version(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return (row[0] if row else None) or 0
