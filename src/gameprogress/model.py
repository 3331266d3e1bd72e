"""The domain's values and rules: what a device id and a level may be, and what a record holds.

Kept apart from both the HTTP layer and the stores so that the same rule guards a request, an
imported JSON line and the OpenAPI document, and cannot drift between them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

# Ids travel in URL paths, so '/' would split them; 128 is far above any id shipped clients
# send (UUIDs, vendor ids) and keeps index keys small.
DEVICE_ID_MAX_LENGTH = 128
# Printable ASCII is 0x20-0x7E; '/' (0x2F) is cut out of that range.
DEVICE_ID_PATTERN = r"^[\x20-\x2E\x30-\x7E]{1,128}$"
# Always used with fullmatch: Python's `$` also matches before a final newline, so `.match`
# would let "id\n" through.
_DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)

MIN_LEVEL = 0
# A ceiling well above any real game's level count: a bigger number is a client bug or abuse,
# and rejecting it keeps the leaderboard meaningful.
MAX_LEVEL = 1_000_000
# The same range as decimal digits in a legacy URL (leading zeros allowed, as the seed's
# `<int:levels>` allowed them); kept next to MAX_LEVEL so the two change together.
LEVEL_DIGITS_PATTERN = r"^0*([0-9]{1,6}|1000000)$"

LEADERBOARD_DEFAULT_LIMIT = 10
LEADERBOARD_MAX_LIMIT = 100
HISTOGRAM_DEFAULT_BUCKET = 10
# The histogram lists only non-empty buckets, but a width of 1 over a million levels could
# still be huge; past this many buckets the answer says it was truncated.
HISTOGRAM_MAX_BUCKETS = 1000
RECENT_WINDOW_SECONDS = 3600


class InvalidInput(ValueError):
    """A value from outside (URL, body, import line) breaks a domain rule.

    `code` is the stable machine-readable name the HTTP layer sends back; the message is for
    people.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_device_id(device_id: str) -> str:
    """Return `device_id` if it obeys the id rule, else raise `InvalidInput` saying why."""
    if not isinstance(device_id, str) or not _DEVICE_ID_RE.fullmatch(device_id):
        if isinstance(device_id, str) and "/" in device_id:
            reason = "must not contain '/'"
        elif isinstance(device_id, str) and len(device_id) > DEVICE_ID_MAX_LENGTH:
            reason = f"is longer than {DEVICE_ID_MAX_LENGTH} characters"
        elif isinstance(device_id, str) and not device_id:
            reason = "is empty"
        else:
            reason = "must be printable ASCII characters"
        raise InvalidInput(
            "invalid_device_id",
            f"device id {reason}: expected 1-{DEVICE_ID_MAX_LENGTH} printable ASCII "
            "characters without '/'",
        )
    return device_id


def check_level(level: object) -> int:
    """Return `level` as an int if it is an integer in range, else raise `InvalidInput`.

    `5.0` counts as the integer 5, as JSON Schema's "integer" says (some JSON encoders write
    whole numbers that way). Booleans are refused even though Python treats them as ints:
    `{"level": true}` is a client bug, not level 1.
    """
    if isinstance(level, float) and level.is_integer():
        level = int(level)
    if isinstance(level, bool) or not isinstance(level, int):
        raise InvalidInput("invalid_level", "level must be an integer")
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise InvalidInput(
            "invalid_level", f"level must be an integer from {MIN_LEVEL} to {MAX_LEVEL}"
        )
    return level


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What is known about one device.

    `level` is the highest level ever reported; `level_reached_at` is when that level was
    first reported (it orders ties on the leaderboard); `last_commit` is the time of the latest
    accepted update; `updates` counts accepted updates. Times are unix seconds.
    """

    device_id: str
    level: int
    last_commit: int
    level_reached_at: int
    updates: int

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> DeviceRecord:
        """Build a record from a decoded JSON object, checking every field (used by import)."""
        if not isinstance(data, dict):
            raise InvalidInput("invalid_record", "a record must be a JSON object")
        expected = {"device_id", "level", "last_commit", "level_reached_at", "updates"}
        if set(data) != expected:
            raise InvalidInput(
                "invalid_record", f"a record needs exactly the fields {sorted(expected)}"
            )
        numbers = {}
        for name in ("last_commit", "level_reached_at", "updates"):
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput("invalid_record", f"{name} must be a non-negative integer")
            numbers[name] = value
        return cls(
            device_id=check_device_id(data["device_id"]),
            level=check_level(data["level"]),
            **numbers,
        )


@dataclass(frozen=True, slots=True)
class HistogramBucket:
    """Devices whose level lies in [min_level, max_level]."""

    min_level: int
    max_level: int
    devices: int


@dataclass(frozen=True, slots=True)
class Stats:
    """A summary for operators and game designers; see docs/gameprogress.md for each field."""

    devices: int
    devices_updated_last_hour: int
    total_updates: int
    bucket_width: int
    histogram: tuple[HistogramBucket, ...]
    histogram_truncated: bool

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def histogram_from_rows(
    rows: list[tuple[int, int]], bucket_width: int, max_buckets: int
) -> tuple[tuple[HistogramBucket, ...], bool]:
    """Turn `(bucket_index, count)` rows (at most max_buckets + 1) into buckets.

    Both stores fetch one row more than allowed so that truncation is known without a second
    query.
    """
    truncated = len(rows) > max_buckets
    buckets = tuple(
        HistogramBucket(
            min_level=index * bucket_width,
            max_level=min(index * bucket_width + bucket_width - 1, MAX_LEVEL),
            devices=count,
        )
        for index, count in rows[:max_buckets]
    )
    return buckets, truncated
