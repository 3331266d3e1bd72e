"""What `--threads 4` costs against `--threads 1` on the gameprogress mix: requests/s, CPU and
context switches per request, counted from /proc, for each setting in turn.

    bench/.venv/bin/python bench/thread_handoffs.py [--processes 1] [--connections 16] [--close]

forklift serves gameprogress (SQLite in /dev/shm, seeded as bench/run seeds it) to wrk with
bench/gameprogress.lua; after a warm-up, the CPU time and the context switches (voluntary and
not, summed over every thread of the master and its workers) over a measured run are divided
by the requests wrk completed. A switch is a thread handing the GIL or the CPU to another:
the sqlite3 module and the sockets release the GIL on every call, and any other runnable
thread takes it; the request threads keep one at work while the app computes (pool.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

import bench as b


def switches(pids) -> int:
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                text = (task / "status").read_text()
            except OSError:
                continue  # a thread that ended meanwhile
            for line in text.splitlines():
                if "ctxt_switches:" in line:  # voluntary and nonvoluntary
                    total += int(line.split()[1])
    return total


def cpu_ticks(pids, table) -> int:
    return sum(table[pid][1] + table[pid][2] for pid in pids if pid in table)


def measure(threads, args, db, workdir, started) -> str:
    port = b.free_ports(1)[0]
    env = dict(os.environ, GAMEPROGRESS_DATABASE_URL=f"sqlite:///{db}")
    argv = [str(b.VBIN / "forklift"), "--http", f"{b.HOST}:{port}"]
    argv += ["--processes", str(args.processes), "--threads", str(threads)]
    argv += ["--disable-logging", "--chdir", str(b.APPS_DIR), b.APP_TARGETS["gameprogress"]]
    proc = started.start(argv, log_path=workdir / f"t{threads}.log", env=env, cwd=b.APPS_DIR)
    try:
        b.wait_answer(port, f"/deviceId={b.ID_PREFIX}00000", b.check_gameprogress, proc)
        url = f"http://{b.HOST}:{port}/"
        wrk = ["wrk", "-t1", f"-c{args.connections}", "-s", str(b.LUA), url]
        if args.close:  # one request per connection, as nginx's uwsgi_pass makes them
            wrk[3:3] = ["-H", "Connection: close"]
        wrk += ["--", str(b.DEVICES), b.ID_PREFIX]
        b.run_wrk([*wrk[:3], "-d1s", *wrk[3:]], 1)  # warm-up
        pids = list(b.process_tree(proc.pid))
        ticks, sw = cpu_ticks(pids, b.proc_table()), switches(pids)
        out, code, _ = b.run_wrk([*wrk[:3], f"-d{args.duration:g}s", *wrk[3:]], args.duration)
        if code != 0:
            raise SystemExit(f"wrk failed:\n{out}")
        ticks = cpu_ticks(pids, b.proc_table()) - ticks
        sw = switches(pids) - sw
        n = b.parse_wrk(out)["requests"] or 1
        rps = b.parse_wrk(out)["rps"] or 0
        cpu_us = ticks / b.CLK_TCK / n * 1e6
        return f"| {threads} | {rps:,.0f} | {cpu_us:.0f} µs | {sw / n:.2f} |"
    finally:
        started.stop(proc, signal.SIGINT)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--threads", default="1,4")
    p.add_argument("--close", action="store_true", help="send Connection: close")
    args = p.parse_args()
    started = b.Started()
    with tempfile.TemporaryDirectory(prefix="forklift-handoffs-", dir="/dev/shm") as tmp:
        workdir = Path(tmp)
        db = workdir / "gameprogress.db"
        b.seed_database(db, workdir, started, lambda line: print(line, file=sys.stderr))
        close = ", `Connection: close`" if args.close else ""
        wrk = f"wrk -c{args.connections}{close}, {args.duration:g} s"
        print(f"`--processes {args.processes}`, {wrk}")
        print()
        print("| --threads | req/s | CPU per request | context switches per request |")
        print("|---:|---:|---:|---:|")
        try:
            for threads in map(int, args.threads.split(",")):
                print(measure(threads, args, db, workdir, started), flush=True)
        finally:
            started.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
