"""The Prometheus text exposition format (version 0.0.4) of a master's status and totals.

Names follow the OpenTelemetry HTTP server conventions as Prometheus spells them (dots to
underscores, the unit as a suffix): `http.server.request.duration` (s) becomes
`http_server_request_duration_seconds`. forklift's own process-management series start
with `forklift_`; the standard `process_*` series get a `pid`, `role` and, for workers, a
`generation` and `worker` label, because one scrape covers the master and all its workers.
"""

from __future__ import annotations

from .metrics import DURATION_BOUNDS, SIZE_BOUNDS, series

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value) -> str:
    # Exposition format: in label values, backslash, double quote and line feed are escaped.
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


def _number(value) -> str:
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


class _Writer:
    def __init__(self):
        self.lines: list = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels, value) -> None:
        self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, labels, bounds, buckets, total) -> None:
        """`buckets` per bound plus +Inf, not cumulative; written cumulative as required."""
        running = 0
        for bound, count in zip((*bounds, None), buckets, strict=True):
            running += count
            le = "+Inf" if bound is None else _number(float(bound))
            self.sample(f"{name}_bucket", (*labels, ("le", le)), running)
        self.sample(f"{name}_sum", labels, total)
        self.sample(f"{name}_count", labels, running)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(status: dict, rows: dict) -> str:
    """The /metrics document: `status` is the master's status document, `rows` its
    request totals (metrics.RequestTotals.snapshot)."""
    w = _Writer()
    all_series = series(rows)

    w.family(
        "http_server_request_duration_seconds",
        "histogram",
        "Duration of HTTP server requests (OpenTelemetry http.server.request.duration).",
    )
    for labels, duration, seconds, *_ in all_series:
        w.histogram(
            "http_server_request_duration_seconds",
            _request_labels(labels),
            DURATION_BOUNDS,
            duration,
            seconds,
        )
    w.family(
        "http_server_request_body_size_bytes",
        "histogram",
        "Size of HTTP server request bodies (OpenTelemetry http.server.request.body.size).",
    )
    for labels, _, _, req_buckets, req_bytes, _, _ in all_series:
        w.histogram(
            "http_server_request_body_size_bytes",
            _request_labels(labels),
            SIZE_BOUNDS,
            req_buckets,
            req_bytes,
        )
    w.family(
        "http_server_response_body_size_bytes",
        "histogram",
        "Size of HTTP server response bodies (OpenTelemetry http.server.response.body.size).",
    )
    for labels, *_, resp_buckets, resp_bytes in all_series:
        w.histogram(
            "http_server_response_body_size_bytes",
            _request_labels(labels),
            SIZE_BOUNDS,
            resp_buckets,
            resp_bytes,
        )
    w.family(
        "http_server_active_requests",
        "gauge",
        "Requests being served right now, over all workers.",
    )
    w.sample("http_server_active_requests", (), sum(wk.get("busy", 0) for wk in status["workers"]))

    w.family(
        "forklift_listen_queue_length",
        "gauge",
        "Connections waiting in the kernel's accept queue of a listener.",
    )
    for lst in status.get("listeners", ()):
        if lst.get("queued") is not None:
            w.sample(
                "forklift_listen_queue_length",
                (("listener", lst["address"]), ("network_protocol_name", lst["protocol"])),
                lst["queued"],
            )
    w.family("forklift_listen_queue_backlog", "gauge", "The accept queue's limit (listen backlog).")
    for lst in status.get("listeners", ()):
        if lst.get("backlog") is not None:
            w.sample(
                "forklift_listen_queue_backlog",
                (("listener", lst["address"]), ("network_protocol_name", lst["protocol"])),
                lst["backlog"],
            )

    states = {"booting": 0, "idle": 0, "busy": 0, "retiring": 0}
    for wk in status["workers"]:
        states[worker_state(wk)] += 1
    w.family("forklift_workers", "gauge", "Worker processes by state.")
    for state, count in states.items():
        w.sample("forklift_workers", (("state", state),), count)

    events = status.get("events", {})
    w.family("forklift_generation", "gauge", "The worker generation serving traffic.")
    w.sample("forklift_generation", (), status["generation"])
    w.family("forklift_reloads_total", "counter", "Reloads (new generations) by result.")
    for result, count in sorted(events.get("reloads", {}).items()):
        w.sample("forklift_reloads_total", (("result", result),), count)
    w.family("forklift_harakiri_kills_total", "counter", "Workers killed for harakiri.")
    w.sample("forklift_harakiri_kills_total", (), events.get("harakiri_kills", 0))
    w.family("forklift_worker_recycles_total", "counter", "Workers replaced on purpose, by reason.")
    for reason, count in sorted(events.get("recycles", {}).items()):
        w.sample("forklift_worker_recycles_total", (("reason", reason),), count)
    w.family("forklift_worker_crashes_total", "counter", "Workers that died unexpectedly.")
    w.sample("forklift_worker_crashes_total", (), events.get("crashes", 0))
    w.family("forklift_worker_boot_failures_total", "counter", "Workers that failed to boot.")
    w.sample("forklift_worker_boot_failures_total", (), events.get("boot_failures", 0))

    processes = []
    master = status.get("master")
    if master:
        processes.append(((("pid", status["pid"]), ("role", "master")), master))
    for wk in status["workers"]:
        if wk.get("process"):
            labels = (
                ("pid", wk["pid"]),
                ("role", "worker"),
                ("generation", wk["generation"]),
                ("worker", wk["number"]),
            )
            processes.append((labels, wk["process"]))
    for name, kind, key, help_text in (
        ("process_resident_memory_bytes", "gauge", "rss_bytes", "Resident memory size in bytes."),
        ("process_cpu_seconds_total", "counter", "cpu_seconds", "User and system CPU seconds."),
        ("process_open_fds", "gauge", "open_fds", "Open file descriptors."),
        (
            "process_start_time_seconds",
            "gauge",
            "start_time",
            "Start time of the process since the Unix epoch in seconds.",
        ),
    ):
        w.family(name, kind, help_text)
        for labels, stats in processes:
            if stats.get(key, -1) >= 0:
                w.sample(name, labels, stats[key])
    return w.text()


def _request_labels(labels: tuple) -> tuple:
    method, status, protocol = labels
    return (
        ("http_request_method", method),
        ("http_response_status_code", status),
        ("network_protocol_name", protocol),
    )


def worker_state(worker: dict) -> str:
    """booting, idle, busy or retiring: one word per worker for gauges and `forklift top`."""
    if worker.get("retiring"):
        return "retiring"
    if not worker.get("ready", True):
        return "booting"
    return "busy" if worker.get("busy") else "idle"
