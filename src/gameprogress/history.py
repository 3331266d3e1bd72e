"""What the service remembers over time: events, hourly activity counts, date ranges, reports.

Every accepted update is kept as an `Event`, and counted in the hourly `activity` rows of the
store (updates, devices active for the first time that UTC day, new devices). The reports read
those counts rather than the events: a daily count of distinct devices over a million events
cannot be answered in tens of milliseconds, a sum over 24 rows per day can. The events are the
record of what happened (exports, audits) and the ground truth the counts are tested against.

Pure values and arithmetic only: the stores run the SQL, the app parses the requests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from .model import MAX_LEVEL, InvalidInput

SECONDS_PER_HOUR = 3600
SECONDS_PER_DAY = 86400
HOURS_PER_DAY = 24

# How long events and activity counts are kept; 90 days covers a quarter's comparisons.
DEFAULT_RETENTION_DAYS = 90
# Rows deleted per pruning transaction: on SQLite a batch holds the write lock, so it must be
# short enough (a few milliseconds) that writers queued behind it do not notice.
PRUNE_BATCH = 1000

# A report over a year has 8784 hourly points: the most a chart (or a client) should draw.
REPORT_MAX_DAYS = 366
REPORT_DEFAULT_DAYS = 30
FUNNEL_DEFAULT_BUCKETS = 20
FUNNEL_MAX_BUCKETS = 100

_DATE_FORMAT = "%Y-%m-%d"


@dataclass(frozen=True, slots=True)
class Event:
    """One accepted update: `level` as sent, the stored level before (None for a new device)
    and after, and when (unix seconds)."""

    id: int
    device_id: str
    level: int
    level_before: int | None
    level_after: int
    at: int

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DateRange:
    """Whole UTC days from `first` to `last`, both included."""

    first: dt.date
    last: dt.date

    @property
    def start(self) -> int:
        """Unix seconds at the start of `first`."""
        return self.first.toordinal() * SECONDS_PER_DAY - _EPOCH_ORDINAL * SECONDS_PER_DAY

    @property
    def end(self) -> int:
        """Unix seconds at the end of `last` (exclusive)."""
        return self.start + self.days * SECONDS_PER_DAY

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def first_day(self) -> int:
        """Days since 1970-01-01 of `first` (the stores' day number)."""
        return self.start // SECONDS_PER_DAY

    def to_json(self) -> dict[str, str]:
        return {"from": self.first.isoformat(), "to": self.last.isoformat()}

    @classmethod
    def parse(
        cls,
        first: str | None,
        last: str | None,
        today: dt.date,
        max_days: int | None = REPORT_MAX_DAYS,
        default_days: int = REPORT_DEFAULT_DAYS,
    ) -> DateRange:
        """`from`/`to` query values (YYYY-MM-DD, UTC); missing ones default to the last
        `default_days` days up to `today`."""
        last_date = _parse_date("to", last) if last is not None else today
        if first is not None:
            first_date = _parse_date("from", first)
        else:
            first_date = last_date - dt.timedelta(days=default_days - 1)
        if first_date > last_date:
            raise InvalidInput("invalid_date_range", "from must not be after to")
        period = cls(first_date, last_date)
        if max_days is not None and period.days > max_days:
            raise InvalidInput("invalid_date_range", f"a date range covers at most {max_days} days")
        return period


_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def _parse_date(name: str, text: str) -> dt.date:
    # fromisoformat alone would also take "20261203" on newer Pythons; the format is fixed.
    try:
        value = dt.datetime.strptime(text, _DATE_FORMAT).date()
    except ValueError:
        raise InvalidInput("invalid_date", f"{name} must be a date as YYYY-MM-DD")
    if value.isoformat() != text or value.year < 1970:
        raise InvalidInput("invalid_date", f"{name} must be a date as YYYY-MM-DD from 1970")
    return value


def day_of(unix: int) -> dt.date:
    return dt.date.fromordinal(_EPOCH_ORDINAL + unix // SECONDS_PER_DAY)


def daily_series(rows: list[tuple[int, int]], period: DateRange) -> list[dict[str, object]]:
    """One point per day of `period` from `(day number, count)` rows; missing days are 0."""
    counts = {int(day): int(count) for day, count in rows}
    return [
        {
            "date": (period.first + dt.timedelta(days=i)).isoformat(),
            "count": counts.get(period.first_day + i, 0),
        }
        for i in range(period.days)
    ]


def hourly_series(rows: list[tuple[int, int]], period: DateRange) -> list[dict[str, object]]:
    """One point per hour of `period` from `(hour number, count)` rows; missing hours are 0."""
    counts = {int(hour): int(count) for hour, count in rows}
    first_hour = period.start // SECONDS_PER_HOUR
    return [
        {
            "hour": _hour_text(first_hour + i),
            "count": counts.get(first_hour + i, 0),
        }
        for i in range(period.days * HOURS_PER_DAY)
    ]


def _hour_text(hour: int) -> str:
    moment = dt.datetime.fromtimestamp(hour * SECONDS_PER_HOUR, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:00Z")


def funnel_width(max_level: int, buckets: int) -> int:
    """Levels per bucket so that 0..max_level fits in at most `buckets` buckets."""
    return max(1, (max_level + buckets) // buckets)


def funnel_steps(rows: list[tuple[int, int]], width: int, max_level: int) -> list[dict[str, int]]:
    """Every bucket from level 0 to `max_level`, from `(bucket, devices)` rows.

    `devices` have their highest level in the bucket (where they stopped, so far); `reached`
    counts the devices whose highest level is at least the bucket's first level, the funnel
    proper. The stores' SQL returns only non-empty buckets; the empty ones are filled here.
    """
    counts = {int(bucket): int(devices) for bucket, devices in rows}
    last_bucket = max_level // width
    steps = []
    reached = sum(counts.values())
    for bucket in range(last_bucket + 1):
        devices = counts.get(bucket, 0)
        steps.append(
            {
                "min_level": bucket * width,
                "max_level": min(bucket * width + width - 1, MAX_LEVEL),
                "devices": devices,
                "reached": reached,
            }
        )
        reached -= devices
    return steps
