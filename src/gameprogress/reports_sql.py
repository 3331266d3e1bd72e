"""The SQL of the history reports, exports and pruning, for SQLite and PostgreSQL side by side.

Kept in one table so that the two dialects of each query are read (and changed) together, and
so that a test can EXPLAIN exactly the text the stores run. Each report is one statement over
an index: the hourly `activity` primary key (hour, shard), the leaderboard index on
devices (level DESC, ...), events (at, id) and devices (last_commit, device_id).
"""

from __future__ import annotations

_DEVICE_COLUMNS = "device_id, level, last_commit, level_reached_at, updates"
_EVENT_COLUMNS = "id, device_id, level, level_before, level_after, at"

# name → (SQLite, PostgreSQL). Parameters are positional, in the same order in both.
QUERIES: dict[str, tuple[str, str]] = {
    # Devices per bucket of highest level; the bucket width is ceil((max + 1) / buckets),
    # computed in the query from the top level (one probe of the leaderboard index) and
    # returned with each row. Counting per level first lets SQLite walk the leaderboard index
    # in order, without a temporary B-tree; PostgreSQL hashes the levels of a full scan.
    # Either way every device is read once: the cost grows with devices, not with events.
    "funnel": (
        """WITH top AS (SELECT coalesce(max(level), 0) AS max_level FROM devices),
        per_level AS (SELECT level, count(*) AS devices FROM devices GROUP BY level)
        SELECT top.max_level, per_level.level / ((top.max_level + ?) / ?) AS bucket,
               sum(per_level.devices)
        FROM per_level CROSS JOIN top
        GROUP BY top.max_level, bucket ORDER BY bucket""",
        """WITH top AS (SELECT coalesce(max(level), 0) AS max_level FROM devices),
        per_level AS (SELECT level, count(*) AS devices FROM devices GROUP BY level)
        SELECT top.max_level, per_level.level / ((top.max_level + %s::integer) / %s::integer)
               AS bucket, sum(per_level.devices)::bigint
        FROM per_level CROSS JOIN top
        GROUP BY top.max_level, bucket ORDER BY bucket""",
    ),
    "daily_active_devices": (
        """SELECT hour / 24 AS day, sum(active_devices) FROM activity
        WHERE hour >= ? AND hour < ? GROUP BY day ORDER BY day""",
        """SELECT hour / 24 AS day, sum(active_devices)::bigint FROM activity
        WHERE hour >= %s AND hour < %s GROUP BY day ORDER BY day""",
    ),
    "new_devices_per_day": (
        """SELECT hour / 24 AS day, sum(new_devices) FROM activity
        WHERE hour >= ? AND hour < ? GROUP BY day ORDER BY day""",
        """SELECT hour / 24 AS day, sum(new_devices)::bigint FROM activity
        WHERE hour >= %s AND hour < %s GROUP BY day ORDER BY day""",
    ),
    "updates_per_hour": (
        """SELECT hour, sum(updates) FROM activity
        WHERE hour >= ? AND hour < ? GROUP BY hour ORDER BY hour""",
        """SELECT hour, sum(updates)::bigint FROM activity
        WHERE hour >= %s AND hour < %s GROUP BY hour ORDER BY hour""",
    ),
    "leaderboard": (
        f"""SELECT {_DEVICE_COLUMNS} FROM devices
        ORDER BY level DESC, level_reached_at, device_id LIMIT ?""",
        f"""SELECT {_DEVICE_COLUMNS} FROM devices
        ORDER BY level DESC, level_reached_at, device_id LIMIT %s""",
    ),
    # Keyset pages: each page starts strictly after the last row of the one before, so every
    # page is one index range scan and no transaction stays open while a client downloads.
    "events_page": (
        f"""SELECT {_EVENT_COLUMNS} FROM events
        WHERE (at, id) > (?, ?) AND at < ? ORDER BY at, id LIMIT ?""",
        f"""SELECT {_EVENT_COLUMNS} FROM events
        WHERE (at, id) > (%s, %s) AND at < %s ORDER BY at, id LIMIT %s""",
    ),
    "devices_page": (
        f"""SELECT {_DEVICE_COLUMNS} FROM devices
        WHERE (last_commit, device_id) > (?, ?) AND last_commit < ?
        ORDER BY last_commit, device_id LIMIT ?""",
        f"""SELECT {_DEVICE_COLUMNS} FROM devices
        WHERE (last_commit, device_id) > (%s, %s) AND last_commit < %s
        ORDER BY last_commit, device_id LIMIT %s""",
    ),
    # The oldest events first, a bounded batch per statement (see history.PRUNE_BATCH).
    "prune_events": (
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ? ORDER BY at LIMIT ?)",
        # = ANY(ARRAY(...)): the ids become a list probed through the primary key; with
        # IN (SELECT ...) the planner may hash-join against a scan of the whole table.
        """DELETE FROM events WHERE id = ANY(ARRAY(
            SELECT id FROM events WHERE at < %s ORDER BY at LIMIT %s))""",
    ),
    # At most a week of hourly rows per statement (168 x shards rows), oldest first.
    "prune_activity": (
        """DELETE FROM activity
        WHERE hour < ? AND hour < (SELECT min(hour) FROM activity) + 168""",
        """DELETE FROM activity
        WHERE hour < %s AND hour < (SELECT min(hour) FROM activity) + 168""",
    ),
}

# The queries EXPLAIN tests look at, with the index each must use.
REPORT_INDEXES: dict[str, str] = {
    "funnel": "devices_leaderboard",
    "daily_active_devices": "activity",
    "new_devices_per_day": "activity",
    "updates_per_hour": "activity",
    "leaderboard": "devices_leaderboard",
    "events_page": "events_at",
    "devices_page": "devices_last_commit",
}


def sqlite(name: str) -> str:
    return QUERIES[name][0]


def postgres(name: str) -> str:
    return QUERIES[name][1]
