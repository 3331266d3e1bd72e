"""How fast the history reports answer on a million events, and what an export of them costs.

    .venv/bin/python bench/gameprogress_history.py                       # SQLite in /dev/shm
    .venv/bin/python bench/gameprogress_history.py --postgres            # + a throwaway PostgreSQL
    .venv/bin/python bench/gameprogress_history.py --events 200000       # a quicker look

The store is filled through its own write path (`record_levels`, the same SQL as a request's
update) with synthetic players from `gameprogress.seed` until it holds the events asked for;
then each report query runs 30 times (median and 95th percentile, milliseconds) over the last
30 days, and the events of those 30 days are exported as CSV through the streaming exporter
while the process's peak RSS is watched. Not part of `make test`: a measurement, not a check.
The target (issue 22): every report under 50 ms on 1,000,000 events.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gameprogress import exports
from gameprogress.history import DateRange, day_of
from gameprogress.seed import DemoPlan, demo_updates
from gameprogress.store import open_store

ROOT = Path(__file__).resolve().parent.parent
RUNS = 30
BATCH = 5000


def fill(store, events: int) -> float:
    """Write synthetic players' updates until `events` are stored; return seconds taken."""
    now = int(time.time())
    written, seed, started = 0, 1, time.perf_counter()
    while written < events:
        updates = demo_updates(DemoPlan(players=2000, days=30, seed=seed), now)
        updates = [(f"{d}-{seed}", level, at) for d, level, at in updates][: events - written]
        for i in range(0, len(updates), BATCH):
            store.record_levels(updates[i : i + BATCH])
        written += len(updates)
        seed += 1
        print(f"  {written:,} events", end="\r", file=sys.stderr)
    print(file=sys.stderr)
    return time.perf_counter() - started


def timed(call) -> tuple[float, float]:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(url: str, events: int) -> None:
    store = open_store(url)
    store.migrate()
    seconds = fill(store, events)
    today = day_of(int(time.time()))
    month = DateRange(today - dt.timedelta(days=29), today)
    everything = DateRange(dt.date(1970, 1, 1), today)
    devices = sum(len(page) for page in exports.device_pages(store, everything))
    print(
        f"\n## {store.kind}: {events:,} events from {devices:,} devices, written in "
        f"{seconds:.0f} s ({events / seconds:,.0f} updates/s through record_levels)\n"
    )
    print("| query | median ms | p95 ms |")
    print("|---|---|---|")
    reports = {
        "funnel (20 buckets)": lambda: store.funnel(20),
        "daily active devices, 30 days": lambda: store.daily_active_devices(month),
        "new devices per day, 30 days": lambda: store.new_devices_per_day(month),
        "updates per hour, 30 days": lambda: store.updates_per_hour(month),
        "leaderboard (10)": lambda: store.leaderboard(10),
    }
    for name, call in reports.items():
        median, p95 = timed(call)
        print(f"| {name} | {median:.2f} | {p95:.2f} |")

    before = max_rss_mib()
    started = time.perf_counter()
    rows = size = 0
    for chunk in exports.events_csv(exports.event_pages(store, month)):
        rows += chunk.count("\r\n")
        size += len(chunk)
    took = time.perf_counter() - started
    print(
        f"\nCSV export of {rows - 1:,} events ({size / 2**20:.0f} MiB) in {took:.1f} s "
        f"({(rows - 1) / took:,.0f} rows/s); peak RSS {before:.0f} MiB before, "
        f"{max_rss_mib():.0f} MiB after"
    )
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL")
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()
    print(f"# gameprogress history bench, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        measure(f"sqlite:///{tmp}/bench.db", args.events)
    if args.postgres:
        sys.path.insert(0, str(ROOT / "tests" / "gameprogress"))
        from conftest import PostgresServer  # the tests' throwaway cluster

        server = PostgresServer()
        try:
            server.start()
            measure(server.fresh_url(), args.events)
        finally:
            server.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
