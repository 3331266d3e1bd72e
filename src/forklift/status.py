"""The master's status document and its Prometheus form: what `forklift status`, the stats
port, `forklift top` and the status page read. Also the counters of process-management
events the master keeps (recycles by reason, harakiri kills, crashes, reloads).

It reads the master's state (workers, scoreboard, metrics board, listeners) and the kernel's
(/proc, socket diagnostics); it changes nothing. The master calls it when asked, so a stats
client costs the master one document, never a wait.
"""

from __future__ import annotations

import os
import time

from .metrics import summary
from .procinfo import listen_queues, process_stats
from .prometheus import render


class Events:
    """Counts of what happened to workers and generations since the master started."""

    def __init__(self):
        self.harakiri_kills = 0
        self.crashes = 0
        self.boot_failures = 0
        self.recycles: dict = {}  # reason -> count
        self.reloads: dict = {}  # done / failed -> count

    def recycled(self, reason: str) -> None:
        self.recycles[reason] = self.recycles.get(reason, 0) + 1

    def reloaded(self, result: str) -> None:
        self.reloads[result] = self.reloads.get(result, 0) + 1

    def as_dict(self) -> dict:
        return {
            "harakiri_kills": self.harakiri_kills,
            "crashes": self.crashes,
            "boot_failures": self.boot_failures,
            "recycles": dict(self.recycles),
            "reloads": dict(self.reloads),
        }


def describe_listener(listener) -> str:
    """The address a listener really has (port 0 becomes the port the kernel chose)."""
    addr = listener.address
    if addr.is_unix:
        return str(addr)
    host = addr.host or "0.0.0.0"
    port = listener.sock.getsockname()[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def request_rows(master) -> dict | None:
    """Request totals over every worker that ever ran (None when metrics are off)."""
    if master.totals is None:
        return None
    return master.totals.snapshot([w.slot for w in master.workers.values()])


def status_document(master) -> dict:
    now = time.monotonic()
    wall = time.time()
    harakiri = master.config.harakiri
    board = master.metrics_board
    workers = []
    for w in sorted(master.workers.values(), key=lambda w: w.number):
        _, _, busy, requests, _, errors = master.scoreboard.read(w.slot)
        process = process_stats(w.pid)
        current = board.current_request(w.slot) if board is not None and busy else None
        if current is not None:
            elapsed = max(0.0, wall - current[0])
            current = {
                "method": current[1],
                "path": current[2],
                "elapsed": round(elapsed, 2),
                "harakiri_in": round(harakiri - elapsed, 1) if harakiri else None,
            }
        workers.append(
            {
                "pid": w.pid,
                "number": w.number,
                "generation": w.generation,
                "age": round(now - w.started, 1),
                "ready": w.ready,
                "retiring": w.retiring,
                "requests": requests,
                "errors_5xx": errors,
                "busy": busy,
                "state": "busy" if busy else "idle",
                "rss_mb": round((process or {}).get("rss_bytes", 0) / 1048576, 1),
                "process": process,
                "current": current,
            }
        )
    rows = request_rows(master)
    return {
        "pid": os.getpid(),
        "time": round(wall, 3),
        "uptime": round(wall - master.started, 1),
        "generation": master.serving,
        "reload": master.reload_state,
        "target_workers": master.target,
        "threads": master.config.threads,
        "harakiri": harakiri,
        "stopping": master.stopping,
        "boot_failures": master.boot_failures_since_reload,
        "crashes": master.crashes_since_reload,
        "workers": workers,
        "master": process_stats(os.getpid()),
        "listeners": _listeners(master),
        "events": master.events.as_dict(),
        "requests": summary(rows) if rows is not None else None,
    }


def _listeners(master) -> list:
    out = []
    queues = listen_queues([lst.sock for lst in master.listeners])
    for listener, (_, queued, backlog) in zip(master.listeners, queues, strict=True):
        out.append(
            {
                "address": describe_listener(listener),
                "protocol": listener.address.protocol,
                "queued": queued,
                "backlog": backlog if backlog is not None else master.config.backlog,
            }
        )
    return out


def metrics_text(master) -> str:
    """The /metrics document (Prometheus text format)."""
    return render(status_document(master), request_rows(master) or {})
