"""Streaming exports: devices and events of a date range as CSV or JSON, in constant memory.

Rows come from the store page by page (keyset pagination: each page starts after the last row
of the one before), and each page is turned into one chunk of text that the WSGI server sends
before the next page is read. However many rows a range holds, at most one page of them is in
memory at once, and no database transaction stays open while a slow client downloads.

CSV follows RFC 4180: comma-separated, CRLF line ends, a field quoted when it holds a comma, a
double quote, CR or LF, double quotes inside doubled. Device ids are written as they are; a
spreadsheet user should import the `device_id` column as text (an id may begin with `=`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from .history import DateRange, Event
from .model import DeviceRecord

T = TypeVar("T")
K = TypeVar("K")

EXPORT_PAGE_SIZE = 1000  # rows per query and per chunk sent

DEVICE_FIELDS = ("device_id", "level", "last_commit", "level_reached_at", "updates")
EVENT_FIELDS = ("id", "device_id", "level", "level_before", "level_after", "at")


def pages(
    fetch: Callable[[K | None, int], Sequence[T]],
    key_of: Callable[[T], K],
    page_size: int | None = None,
) -> Iterator[Sequence[T]]:
    """Pages from `fetch(after, limit)` until a short one; ends because every page moves the
    key strictly forward through a finite table."""
    page_size = page_size or EXPORT_PAGE_SIZE
    after: K | None = None
    while True:
        page = fetch(after, page_size)
        if page:
            yield page
        if len(page) < page_size:
            return
        after = key_of(page[-1])


def device_pages(store, period: DateRange, page_size: int | None = None):
    return pages(
        lambda after, limit: store.devices_page(period, after, limit),
        lambda record: (record.last_commit, record.device_id),
        page_size,
    )


def event_pages(store, period: DateRange, page_size: int | None = None):
    return pages(
        lambda after, limit: store.events_page(period, after, limit),
        lambda event: (event.at, event.id),
        page_size,
    )


def _utc(unix: int) -> str:
    return dt.datetime.fromtimestamp(unix, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _device_row(record: DeviceRecord) -> list[object]:
    return [*(getattr(record, f) for f in DEVICE_FIELDS), _utc(record.last_commit)]


def _event_row(event: Event) -> list[object]:
    # None (a new device has no level before) becomes an empty field, as csv does.
    return [*(getattr(event, f) for f in EVENT_FIELDS), _utc(event.at)]


def csv_chunks(
    header: Sequence[str], rows_of: Callable[[T], list[object]], source: Iterator[Sequence[T]]
) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    yield buffer.getvalue()
    for page in source:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(rows_of(item) for item in page)
        yield buffer.getvalue()


def devices_csv(source: Iterator[Sequence[DeviceRecord]]) -> Iterator[str]:
    return csv_chunks([*DEVICE_FIELDS, "last_commit_utc"], _device_row, source)


def events_csv(source: Iterator[Sequence[Event]]) -> Iterator[str]:
    return csv_chunks([*EVENT_FIELDS, "at_utc"], _event_row, source)


def json_chunks(source: Iterator[Sequence[T]]) -> Iterator[str]:
    """One JSON array, one object per line, written page by page."""
    separator = "[\n"
    for page in source:
        text = ",\n".join(
            json.dumps(item.to_json(), sort_keys=True, separators=(",", ":"))  # type: ignore[attr-defined]
            for item in page
        )
        yield separator + text
        separator = ",\n"
    yield "[]\n" if separator == "[\n" else "\n]\n"
