"""The storage interface the app talks to, and how a database URL becomes a store.

`app.py` knows only the `Store` protocol below; the SQL for each database lives in
`store_sqlite.py` and `store_postgres.py`. Export and import as JSON lines are written once
here, on top of the protocol, so moving data between stores cannot depend on which is which.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Protocol

from .errors import StoreError, StoreUnavailable  # noqa: F401 (re-exported)
from .history import DateRange, Event
from .model import DeviceRecord, InvalidInput, Stats

DEFAULT_DATABASE_URL = "sqlite:///./var/gameprogress.db"
DATABASE_URL_ENV = "GAMEPROGRESS_DATABASE_URL"
# Rows fetched per round trip when exporting: big enough to be quick, small enough that a
# million devices never sit in memory at once.
EXPORT_PAGE_SIZE = 1000
IMPORT_BATCH_SIZE = 1000


class Store(Protocol):
    """What the app needs from a database. Every method may raise `StoreUnavailable`."""

    kind: str

    def migrate(self) -> list[int]:
        """Bring the schema up to date; return the versions applied now (often none)."""

    def get(self, device_id: str) -> DeviceRecord | None:
        """The record of one device, or None when it never reported."""

    def record_level(self, device_id: str, level: int, now: int) -> DeviceRecord:
        """Accept one update at unix time `now`, keeping the highest level; return the record.

        Must be one atomic statement so that concurrent updates never lose the maximum.
        """

    def leaderboard(self, limit: int) -> list[DeviceRecord]:
        """The `limit` best devices: highest level first, earlier `level_reached_at`, then id."""

    def stats(self, now: int, bucket_width: int, max_buckets: int) -> Stats:
        """Counts and a level histogram; "last hour" is measured back from `now`."""

    def health(self) -> int:
        """Make a query round trip and return the schema version; raise when it fails."""

    def export_page(self, after: str | None, limit: int) -> list[DeviceRecord]:
        """Up to `limit` records ordered by device id, all with ids greater than `after`."""

    def import_records(self, records: list[DeviceRecord]) -> int:
        """Merge records (max of each field, so importing twice changes nothing); count them."""

    def record_levels(self, updates: Sequence[tuple[str, int, int]]) -> int:
        """Accept `(device_id, level, now)` updates in order, in one transaction (seeding)."""

    # History (see history.py). Each report is one SQL query over an index (reports_sql.py).

    def funnel(self, buckets: int) -> tuple[int, list[tuple[int, int]]]:
        """The top level, and `(bucket, devices)` rows of devices per highest-level bucket."""

    def daily_active_devices(self, period: DateRange) -> list[tuple[int, int]]:
        """`(day number, devices)` for the days of `period` that had any update."""

    def new_devices_per_day(self, period: DateRange) -> list[tuple[int, int]]:
        """`(day number, devices)` whose first update fell on that day."""

    def updates_per_hour(self, period: DateRange) -> list[tuple[int, int]]:
        """`(hour number, updates)` for the hours of `period` that had any."""

    def events_page(
        self, period: DateRange, after: tuple[int, int] | None, limit: int
    ) -> list[Event]:
        """Up to `limit` events of `period` ordered by (at, id), after the key `after`."""

    def devices_page(
        self, period: DateRange, after: tuple[int, str] | None, limit: int
    ) -> list[DeviceRecord]:
        """Up to `limit` devices last updated in `period`, by (last_commit, id), after `after`."""

    def prune_history(self, before: int, batch: int) -> int:
        """Delete at most `batch` events older than `before` (and old hourly rows)."""

    def explain(self, name: str, params: tuple) -> str:
        """The database's plan for the named query of reports_sql.py."""

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""


def sqlite_path_from_url(url: str) -> str:
    """`sqlite:///relative/path`, `sqlite:///./relative`, `sqlite:////absolute/path` → a path.

    The three-slash form is the common convention (SQLAlchemy's): what follows `sqlite:///` is
    the path, so a fourth slash makes it absolute.
    """
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StoreError(f"not a SQLite URL with a path: {url!r} (expected sqlite:///PATH)")
    path = url[len(prefix) :]
    if path == ":memory:" or path.startswith("file:"):
        # Each thread has its own connection, so an in-memory database would be one database
        # per thread: surely not what was meant.
        raise StoreError("in-memory SQLite is not supported: give a file path")
    return path


def open_store(url: str | None = None) -> Store:
    """Open the store a URL names; with no URL, the one in the environment or the default."""
    if url is None:
        url = os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL
    if url.startswith("sqlite:"):
        from .store_sqlite import SQLiteStore

        return SQLiteStore(sqlite_path_from_url(url))
    if url.startswith(("postgresql://", "postgres://")):
        from .store_postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


def iter_records(store: Store, page_size: int = EXPORT_PAGE_SIZE) -> Iterator[DeviceRecord]:
    """Every record in device-id order, fetched page by page (keyset pagination).

    Pages are keyed by the last id seen rather than an offset so that each page is an index
    range scan and no long transaction is held open while a large export is written.
    """
    after: str | None = None
    while True:
        page = store.export_page(after, page_size)
        yield from page
        if len(page) < page_size:
            return
        after = page[-1].device_id


def export_jsonl(store: Store, out: IO[str]) -> int:
    """Write every record as one JSON object per line; return how many were written."""
    count = 0
    for record in iter_records(store):
        out.write(json.dumps(record.to_json(), sort_keys=True, separators=(",", ":")))
        out.write("\n")
        count += 1
    return count


def read_jsonl(lines: Iterable[str]) -> Iterator[DeviceRecord]:
    """Parse JSON lines into records; blank lines are skipped, a bad line stops with its number."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield DeviceRecord.from_json(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InvalidInput("invalid_record", f"line {number}: not JSON ({exc.msg})")
        except InvalidInput as exc:
            raise InvalidInput(exc.code, f"line {number}: {exc.message}")


def import_jsonl(store: Store, lines: Iterable[str]) -> int:
    """Merge JSON-lines records into the store in batches; return how many were read.

    A bad line stops the import; batches before it stay merged, which is harmless because the
    merge is idempotent: fix the line and run the import again.
    """
    total = 0
    batch: list[DeviceRecord] = []
    for record in read_jsonl(lines):
        batch.append(record)
        if len(batch) >= IMPORT_BATCH_SIZE:
            total += store.import_records(batch)
            batch = []
    if batch:
        total += store.import_records(batch)
    return total
