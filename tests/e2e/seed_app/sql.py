"""The seed's storage module, which its document does not show: a test stand-in on SQLite.

`manager.py` calls `sql.search(deviceId=...)` -> (found, levels, last commit in unix seconds)
and `sql.update(deviceId=..., levels=...)` -> success. The database lives next to this file
(the seed's `chdir`), so every worker of one test sees the same rows.
"""

import os
import sqlite3
import time

DB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "progress.db")


def _db():
    conn = sqlite3.connect(DB, timeout=10)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS progress"
        " (device_id TEXT PRIMARY KEY, levels INTEGER NOT NULL, last_commit INTEGER NOT NULL)"
    )
    return conn


def search(deviceId):
    with _db() as conn:
        row = conn.execute(
            "SELECT levels, last_commit FROM progress WHERE device_id = ?", (deviceId,)
        ).fetchone()
    if row is None:
        return False, None, None
    return True, row[0], row[1]


def update(deviceId, levels):
    try:
        with _db() as conn:
            conn.execute(
                "INSERT INTO progress (device_id, levels, last_commit) VALUES (?, ?, ?)"
                " ON CONFLICT(device_id) DO UPDATE SET"
                " levels = max(levels, excluded.levels), last_commit = excluded.last_commit",
                (deviceId, levels, int(time.time())),
            )
        return True
    except sqlite3.Error:
        return False
