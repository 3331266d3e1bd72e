"""What request metrics cost: hello keep-alive with metrics on (the default) and off.

    .venv/bin/python bench/metrics_overhead.py [--rounds 5] [--duration 4]
    .venv/bin/python bench/metrics_overhead.py --valgrind

Throughput: the setup of bench/run's hello keep-alive cell (2 workers, --threads 1, no access
log, `wrk -t1 -c64`). The two servers run side by side and are measured in turns (on, off,
off, on, ...) so that load from elsewhere on the machine falls on both alike; the medians of
requests/s and of the servers' CPU time per request (utime+stime of master and workers,
from /proc) are printed as a Markdown row.

--valgrind: user-space instructions per request, exact whatever else the machine runs (on a
shared machine the throughput numbers move by more than the 3 % asked of metrics). One worker
under `valgrind --tool=cachegrind` answers N1 and then N2 keep-alive requests one at a time;
the worker's instruction count difference over N2 - N1 leaves start-up out. Kernel time
(recv, send, epoll) is not counted, so the share of the whole CPU is smaller than this ratio.

Every server is stopped by pid.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "forklift", "--http", f"127.0.0.1:{port}", "--processes", "2"]
    cmd += ["--disable-logging", "--chdir", str(BENCH / "apps"), *extra, "hello:app"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"forklift {extra} did not start")


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its children (the workers)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
                if int(fields[1]) == pid:
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / TICK


def measure(proc: subprocess.Popen, port: int, duration: float) -> tuple:
    url = f"http://127.0.0.1:{port}/"
    subprocess.run(["wrk", "-t1", "-c64", "-d1s", url], capture_output=True, timeout=60)
    cpu = tree_cpu(proc.pid)
    out = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{duration:g}s", url], capture_output=True, text=True, timeout=120
    ).stdout
    cpu = tree_cpu(proc.pid) - cpu
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return rps, cpu / requests * 1e6


def instructions(extra: tuple, requests: int) -> int:
    """User-space instructions of the worker (the busiest process) serving `requests`."""
    import glob
    import tempfile

    directory = tempfile.mkdtemp(prefix="fl-valgrind-")
    port = free_port()
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--trace-children=yes"]
    cmd += [f"--cachegrind-out-file={directory}/cg.%p", sys.executable, "-m", "forklift"]
    cmd += ["--http", f"127.0.0.1:{port}", "--processes", "1", "--disable-logging"]
    cmd += ["--chdir", str(BENCH / "apps"), *extra, "hello:app"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=120)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("forklift under valgrind did not start") from None
                time.sleep(0.5)
        with sock:
            for _ in range(requests):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while not answer.endswith(b"Hello, world!"):
                    data = sock.recv(4096)
                    if not data:
                        raise SystemExit("the connection closed")
                    answer += data
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(300)
    counts = []
    for path in glob.glob(f"{directory}/cg.*"):
        with open(path) as f:
            counts.append(int(re.search(r"^summary:\s+(\d+)", f.read(), re.M).group(1)))
    return max(counts)


def valgrind_main(n1: int = 500, n2: int = 2500) -> int:
    per = {}
    for name, extra in (("off", ("--disable-metrics",)), ("on", ())):
        per[name] = (instructions(extra, n2) - instructions(extra, n1)) / (n2 - n1)
        print(f"metrics {name}: {per[name]:.0f} instructions per request")
    print()
    print("| hello keep-alive, 1 worker | user instructions per request |")
    print("|---|---|")
    print(f"| metrics off | {per['off']:.0f} |")
    print(f"| metrics on | {per['on']:.0f} |")
    print(f"| on / off | {per['on'] / per['off']:.4f} |")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--valgrind", action="store_true", help="count instructions instead")
    args = p.parse_args()
    if args.valgrind:
        return valgrind_main()
    ports = {"on": free_port(), "off": free_port()}
    procs = {
        "on": start(ports["on"]),
        "off": start(ports["off"], "--disable-metrics"),
    }
    results = {"on": [], "off": []}
    try:
        for i in range(args.rounds):
            order = ("on", "off") if i % 2 == 0 else ("off", "on")
            for name in order:
                results[name].append(measure(procs[name], ports[name], args.duration))
                rps, us = results[name][-1]
                print(f"round {i + 1} metrics {name}: {rps:.0f} req/s, {us:.1f} µs CPU/req")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    on_rps = statistics.median(r for r, _ in results["on"])
    off_rps = statistics.median(r for r, _ in results["off"])
    on_cpu = statistics.median(c for _, c in results["on"])
    off_cpu = statistics.median(c for _, c in results["off"])
    print()
    print("| hello keep-alive (2 workers) | req/s | CPU µs/req |")
    print("|---|---|---|")
    print(f"| metrics off (`--disable-metrics`) | {off_rps:.0f} | {off_cpu:.1f} |")
    print(f"| metrics on (default) | {on_rps:.0f} | {on_cpu:.1f} |")
    print(
        f"| on / off | {on_rps / off_rps:.3f} | {on_cpu / off_cpu:.3f} |"
        f"  ({args.rounds} rounds of {args.duration:g} s, medians)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
