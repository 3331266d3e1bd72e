"""`forklift top`: a live terminal view of a running master, in the spirit of uwsgitop.

It reads the same status document as `forklift status` (from `--stats ADDR` or the pidfile's
control socket) once a second and keeps the last samples to show rates over 10 s: req/s,
5xx/s, p50/p99 from the duration histogram's buckets. Generations are drawn side by side
(during a reload both are alive). Keys: q quits, up/down select a worker, s asks the master
(control socket only) to write that worker's thread stacks to the error log.

`render()` is a pure function from samples to lines, so the layout is tested without a
terminal; `main()` only paints those lines with curses (standard library).
"""

from __future__ import annotations

import locale
import sys
import time
from collections import deque

from . import control
from .metrics import quantile
from .prometheus import worker_state

WINDOW = 10.0  # seconds over which rates and quantiles are computed
_KEEP = 64  # samples kept (one a second)


class Samples:
    """The last status documents with when they were read; rates come from their deltas."""

    def __init__(self):
        self.docs: deque = deque(maxlen=_KEEP)
        self.rss: dict = {}  # pid -> deque of (time, rss bytes)

    def add(self, doc: dict, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.docs.append((now, doc))
        for w in doc["workers"]:
            series = self.rss.setdefault(w["pid"], deque(maxlen=_KEEP))
            series.append((now, _rss_bytes(w)))
        alive = {w["pid"] for w in doc["workers"]}
        for pid in list(self.rss):
            if pid not in alive:
                del self.rss[pid]

    def window(self) -> tuple | None:
        """(seconds, older doc, newest doc) spanning about WINDOW seconds, or None."""
        if len(self.docs) < 2:
            return None
        newest_t, newest = self.docs[-1]
        older_t, older = self.docs[0]
        for t, doc in self.docs:
            if newest_t - t <= WINDOW:
                older_t, older = t, doc
                break
        if newest_t <= older_t:
            return None
        return newest_t - older_t, older, newest

    def rates(self) -> dict:
        """req/s, 5xx/s, p50 and p99 (seconds) over the window; None where unknown."""
        span = self.window()
        out = {"rps": None, "eps": None, "p50": None, "p99": None}
        if span is None:
            return out
        seconds, old, new = span
        a, b = old.get("requests"), new.get("requests")
        if not a or not b:
            return out
        out["rps"] = max(0, b["requests"] - a["requests"]) / seconds
        out["eps"] = max(0, b["errors_5xx"] - a["errors_5xx"]) / seconds
        delta = [
            max(0, y - x) for x, y in zip(a["duration_buckets"], b["duration_buckets"], strict=True)
        ]
        out["p50"] = quantile(0.5, b["duration_bounds"], delta)
        out["p99"] = quantile(0.99, b["duration_bounds"], delta)
        return out

    def trend(self, pid: int, ascii_only: bool) -> str:
        """Up, down or flat: RSS now against about WINDOW seconds ago (1 MiB dead band)."""
        series = self.rss.get(pid)
        if not series or len(series) < 2:
            return " "
        now_t, now_rss = series[-1]
        then = series[0][1]
        for t, rss in series:
            if now_t - t <= WINDOW:
                then = rss
                break
        change = now_rss - then
        if change > 1048576:
            return "^" if ascii_only else "↑"
        if change < -1048576:
            return "v" if ascii_only else "↓"
        return "=" if ascii_only else "→"


def _rss_bytes(worker: dict) -> int:
    process = worker.get("process")
    if process:
        return process["rss_bytes"]
    return int(worker.get("rss_mb", 0) * 1048576)


def _ms(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _rate(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def ordered_workers(doc: dict) -> list:
    """Workers in display order: generations newest first, then by worker number."""
    return sorted(doc["workers"], key=lambda w: (-w["generation"], w.get("number", 0)))


def render(
    samples: Samples,
    width: int,
    height: int,
    selected: int = 0,
    message: str = "",
    ascii_only: bool = False,
) -> list:
    """The screen as `height` lines of at most `width` characters."""
    if not samples.docs:
        return _fit([message or "waiting for the master..."], width, height)
    doc = samples.docs[-1][1]
    rates = samples.rates()
    listeners = doc.get("listeners") or []
    queue = " ".join(
        f"{lst['queued'] if lst.get('queued') is not None else '?'}" for lst in listeners
    )
    active = sum(w.get("busy", 0) for w in doc["workers"])
    lines = [
        f"forklift top - master {doc['pid']}  up {_uptime(doc['uptime'])}"
        f"  gen {doc['generation']}  workers {len(doc['workers'])}/{doc['target_workers']}"
        f" x{doc['threads']}",
        f"req/s {_rate(rates['rps'])}  p50 {_ms(rates['p50'])}  p99 {_ms(rates['p99'])}"
        f"  5xx/s {_rate(rates['eps'])}  active {active}  listen queue {queue or '-'}",
        f"(last {WINDOW:.0f} s)  total requests {(doc.get('requests') or {}).get('requests', '-')}"
        + (f"  reload: {doc['reload']['state']}" if doc["reload"]["state"] != "done" else ""),
        "",
    ]
    workers = ordered_workers(doc)
    generations = sorted({w["generation"] for w in workers}, reverse=True)
    if not generations:
        generations = [doc["generation"]]
    columns = max(1, min(len(generations), 3))
    col_width = (width - (columns - 1) * 3) // columns
    blocks = []
    pid_selected = workers[selected]["pid"] if 0 <= selected < len(workers) else None
    for gen in generations[:columns]:
        title = f"generation {gen}" + (" (serving)" if gen == doc["generation"] else "")
        block = [title, f"{'PID':>7} {'STATE':<8}{'REQS':>7}{'5XX':>5}{'RSS MB':>8}"]
        for w in (w for w in workers if w["generation"] == gen):
            mark = ">" if w["pid"] == pid_selected else " "
            rss = _rss_bytes(w) / 1048576
            block.append(
                f"{mark}{w['pid']:>6} {worker_state(w):<8}{w['requests']:>7}"
                f"{w.get('errors_5xx', 0):>5}{rss:>7.1f}{samples.trend(w['pid'], ascii_only)}"
            )
            current = w.get("current")
            if current:
                tail = f" {current['elapsed']:.1f}s"
                if current.get("harakiri_in") is not None:
                    tail += f" hk {max(0.0, current['harakiri_in']):.0f}s"
                room = col_width - 4 - len(current["method"]) - 1 - len(tail)
                path = current["path"]
                if len(path) > room:
                    path = path[: max(0, room - 1)] + "~"
                block.append(f"   {current['method']} {path}{tail}")
        blocks.append(block)
    rows = max(len(b) for b in blocks)
    for i in range(rows):
        parts = []
        for block in blocks:
            cell = block[i] if i < len(block) else ""
            parts.append(cell[:col_width].ljust(col_width))
        lines.append(" | ".join(parts).rstrip())
    footer = message or "q quit  up/down select  s stacks of the selected worker -> error log"
    body = _fit(lines, width, height - 1)
    return body + [footer[:width]]


def _fit(lines: list, width: int, height: int) -> list:
    lines = [line[:width] for line in lines[:height]]
    return lines + [""] * (height - len(lines))


# -- the terminal ------------------------------------------------------------------------------
def _fetch(args) -> dict:
    return control.fetch_status(None if args.stats else args.pidfile, args.stats, timeout=2.0)


def _loop(screen, args) -> int:
    import curses

    curses.curs_set(0)
    screen.timeout(200)  # getch waits at most this: keys stay responsive between polls
    ascii_only = "utf" not in (locale.getpreferredencoding(False) or "").lower()
    samples = Samples()
    selected = 0
    message = ""
    next_poll = 0.0
    while True:
        now = time.monotonic()
        if now >= next_poll:
            next_poll = now + args.interval
            try:
                samples.add(_fetch(args))
                if message.startswith("cannot"):
                    message = ""
            except control.ControlError as exc:
                message = f"cannot read status: {exc}"
        height, width = screen.getmaxyx()
        lines = render(samples, width - 1, height, selected, message, ascii_only)
        screen.erase()
        for y, line in enumerate(lines):
            try:
                screen.addstr(y, 0, line)
            except curses.error:
                pass  # the bottom-right cell cannot be written: harmless
        screen.refresh()
        key = screen.getch()
        if key in (ord("q"), ord("Q")):
            return 0
        count = len(samples.docs[-1][1]["workers"]) if samples.docs else 0
        if key == curses.KEY_DOWN:
            selected = min(selected + 1, max(0, count - 1))
        elif key == curses.KEY_UP:
            selected = max(0, selected - 1)
        elif key in (ord("s"), ord("S")):
            message = _ask_stacks(args, samples, selected)


def _ask_stacks(args, samples: Samples, selected: int) -> str:
    if not samples.docs:
        return "no worker yet"
    workers = ordered_workers(samples.docs[-1][1])
    if not 0 <= selected < len(workers):
        return "no worker selected"
    pid = workers[selected]["pid"]
    if not args.pidfile:
        return "s needs the control socket: start forklift top with --pidfile or --ini"
    try:
        control.stacks(args.pidfile, pid)
    except control.ControlError as exc:
        return f"stacks of {pid}: {exc}"
    return f"stacks of worker {pid} written to the error log"


def main(argv: list) -> int:
    from .argtypes import OneLineParser

    p = OneLineParser(prog="forklift top", description=__doc__.split("\n")[0])
    p.add_argument("--pidfile", metavar="FILE", help="the master's pidfile (control socket)")
    p.add_argument("--ini", metavar="FILE", help="find the pidfile and stats address here")
    p.add_argument("--stats", metavar="ADDR", help="the master's --stats address")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between reads (1)")
    args = p.parse_args(argv)
    if args.ini:
        from .errors import ConfigError
        from .ini_config import config_from_ini

        try:
            config = config_from_ini(args.ini)
        except ConfigError as exc:
            print(f"forklift top: error: {exc}", file=sys.stderr)
            return 2
        args.pidfile = args.pidfile or config.pidfile
        if not args.pidfile:
            args.stats = args.stats or config.stats
    if not args.pidfile and not args.stats:
        p.error("give --pidfile, --ini or --stats")
    try:
        _fetch(args)  # fail before taking the terminal over, with one line
    except control.ControlError as exc:
        print(f"forklift top: error: {exc}", file=sys.stderr)
        return 1
    import curses

    locale.setlocale(locale.LC_ALL, "")
    try:
        return curses.wrapper(_loop, args)
    except KeyboardInterrupt:
        return 0
