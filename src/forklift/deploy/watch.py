"""The watch after a switch: the new generation's answers and crashes, read from the master.

For `--watch` seconds the master's status (its control socket) is read every WATCH_POLL
seconds; `steps.judge` decides whether the new release misbehaves (a crash loop, a 5xx rate
clearly above the previous release's). Every few seconds a progress line says how it goes:
a deploy streamed to `git push` or over SSH shows it as it happens.
"""

from __future__ import annotations

import time

from .. import control
from .steps import judge

WATCH_POLL = 0.25
PROGRESS_EVERY = 5.0  # seconds between progress lines (a third of a shorter watch, >= 1 s)


class Misbehaving(Exception):
    """The new release must be rolled back; `reason` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def watch_release(pidfile: str, seconds: float, generation: int, baseline: tuple, report) -> str:
    """Watch `generation` for `seconds`; the step's detail, or Misbehaving."""
    started = time.monotonic()
    deadline = started + seconds
    seen: dict = {}  # pid -> (requests, 5xx): dead workers keep counting
    status = None
    every = max(1.0, min(PROGRESS_EVERY, seconds / 3))
    next_progress = started + every
    while time.monotonic() < deadline:
        time.sleep(WATCH_POLL)
        if time.monotonic() >= next_progress and status is not None:
            next_progress += every
            _progress(report, started, seconds, seen, status)
        try:
            status = control.fetch_status(pidfile)
        except control.ControlError as exc:
            raise Misbehaving(f"the master went away during the watch: {exc}") from None
        if status["generation"] != generation:
            return (
                f"stopped after {time.monotonic() - started:.1f}s: generation "
                f"{status['generation']} replaced ours (another reload)"
            )
        for w in status["workers"]:
            if w["generation"] == generation:
                seen[w["pid"]] = (w.get("requests", 0), w.get("errors_5xx", 0))
        requests, errors = _totals(seen)
        verdict = judge(
            baseline, (requests, errors), status.get("crashes", 0), status.get("boot_failures", 0)
        )
        if verdict:
            raise Misbehaving(verdict)
    requests, errors = _totals(seen)
    crashes = status.get("crashes", 0) if status else 0
    return (
        f"{seconds:g}s: {crashes} crash(es), 5xx {errors}/{requests}"
        f" (before: {baseline[1]}/{baseline[0]})"
    )


def _totals(seen: dict) -> tuple:
    return sum(r for r, _ in seen.values()), sum(e for _, e in seen.values())


def _progress(report, started: float, seconds: float, seen: dict, status: dict) -> None:
    requests, errors = _totals(seen)
    crashes = status.get("crashes", 0) + status.get("boot_failures", 0)
    elapsed = time.monotonic() - started
    fields = {
        "elapsed": round(elapsed, 1),
        "seconds": seconds,
        "requests": requests,
        "errors_5xx": errors,
        "crashes": crashes,
        "left": round(max(0.0, seconds - elapsed), 1),
    }
    report.progress(
        "watch",
        fields,
        f"{elapsed:.0f}s of {seconds:g}s: {requests} request(s), 5xx {errors}, "
        f"{crashes} crash(es), {fields['left']:.0f}s left",
    )
