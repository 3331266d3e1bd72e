"""Requests per second of the gameprogress write path, for two source trees side by side.

    .venv/bin/python bench/gameprogress_write_path.py --before /work/main/src --after src

Each tree's forklift serves `gameprogress.wsgi:app` (2 worker processes, 1 thread: bench/run's
setting) on a fresh SQLite file in /dev/shm seeded with 10,000 devices through that tree's own
store; wrk (`-t1 -c32`) drives first the write-only script (bench/gameprogress_writes.lua: every
request an update), then bench/run's mix (bench/gameprogress.lua: 90% reads, 10% updates).
Rounds alternate the trees so that a noisy neighbour hurts both alike; medians are printed.
A quick local measurement, not bench/run's full protocol.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEVICES = 10_000
SEED = """
import sys
from gameprogress.store import open_store
store = open_store(sys.argv[1])
store.migrate()
for i in range(0, 10000, 1000):
    for n in range(i, i + 1000):
        store.record_level("bench-%05d" % n, n % 1000, 1700000000)
store.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children (forklift's master and workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def run_round(src: str, script: str, seconds: int, workdir: str) -> tuple[float, float]:
    db = os.path.join(workdir, "bench.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAMEPROGRESS_")}
    env["PYTHONPATH"] = os.path.abspath(src)
    env["GAMEPROGRESS_DATABASE_URL"] = f"sqlite:///{db}"
    subprocess.run(
        [sys.executable, "-c", SEED, env["GAMEPROGRESS_DATABASE_URL"]],
        env=env,
        check=True,
        timeout=300,
    )
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forklift",
            "--http",
            f"127.0.0.1:{port}",
            "--processes",
            "2",
            "--threads",
            "1",
            "gameprogress.wsgi:app",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        wrk = [
            "wrk",
            "-t1",
            "-c32",
            "-s",
            str(BENCH / script),
            f"http://127.0.0.1:{port}",
            "--",
            str(DEVICES),
            "bench-",
        ]
        subprocess.run([*wrk[:1], "-d1s", *wrk[1:]], capture_output=True, check=True)  # warm-up
        cpu_before = tree_cpu_seconds(server.pid)
        out = subprocess.run(
            [*wrk[:1], f"-d{seconds}s", *wrk[1:]], capture_output=True, text=True, check=True
        ).stdout
        cpu = tree_cpu_seconds(server.pid) - cpu_before
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if errors:
            raise SystemExit(f"{src}: {errors.group(1)} error answers:\n{out}")
        requests_done = int(re.search(r"(\d+) requests in", out).group(1))
        rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        return rate, cpu / requests_done * 1e6
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="src/ of the tree to compare against")
    parser.add_argument("--after", default=str(BENCH.parent / "src"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    workdir = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        for script in ("gameprogress_writes.lua", "gameprogress.lua"):
            rates: dict[str, list[float]] = {"before": [], "after": []}
            cpu: dict[str, list[float]] = {"before": [], "after": []}
            for round_number in range(args.rounds):
                order = ["before", "after"] if round_number % 2 == 0 else ["after", "before"]
                for which in order:
                    rate, micros = run_round(getattr(args, which), script, args.seconds, workdir)
                    rates[which].append(rate)
                    cpu[which].append(micros)
            for label, values in (("req/s", rates), ("server CPU us/request", cpu)):
                before = statistics.median(values["before"])
                after = statistics.median(values["after"])
                rounded = {k: [round(v) for v in vs] for k, vs in values.items()}
                print(
                    f"{script} {label}: before {before:,.0f} {rounded['before']}, "
                    f"after {after:,.0f} {rounded['after']}: {100 * (after / before - 1):+.1f}%"
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
