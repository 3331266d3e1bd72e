"""The /metrics document: OpenTelemetry names and labels, cumulative buckets, escaping, and
a document promtool accepts."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from forklift.metrics import DURATION_BOUNDS, MetricsBoard, RequestTotals
from forklift.prometheus import render

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict:
    """{(name, frozenset(labels)): value} and the TYPE of each family."""
    samples, types = {}, {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name, labels, value = match.groups()
        pairs = frozenset(_LABEL.findall(labels or ""))
        samples[(name, pairs)] = float(value)
    return {"samples": samples, "types": types}


def status_doc(**extra) -> dict:
    doc = {
        "pid": 100,
        "generation": 3,
        "workers": [
            {
                "pid": 201,
                "number": 1,
                "generation": 3,
                "ready": True,
                "retiring": False,
                "busy": 1,
                "process": {
                    "rss_bytes": 5_000_000,
                    "cpu_seconds": 1.5,
                    "open_fds": 12,
                    "start_time": 1700000000.5,
                },
            },
            {
                "pid": 202,
                "number": 2,
                "generation": 2,
                "ready": True,
                "retiring": True,
                "busy": 0,
                "process": None,
            },
            {
                "pid": 203,
                "number": 3,
                "generation": 3,
                "ready": False,
                "retiring": False,
                "busy": 0,
            },
        ],
        "master": {
            "rss_bytes": 1_000_000,
            "cpu_seconds": 0.25,
            "open_fds": 9,
            "start_time": 1699999999.0,
        },
        "listeners": [{"address": 'x"y\\z\n', "protocol": "http", "queued": 4, "backlog": 1024}],
        "events": {
            "harakiri_kills": 2,
            "crashes": 1,
            "boot_failures": 0,
            "recycles": {"max_requests": 5, "reload": 2},
            "reloads": {"done": 2},
        },
    }
    doc.update(extra)
    return doc


def rows_with(observations) -> dict:
    board = MetricsBoard(1)
    writer = board.writer(0)
    for obs in observations:
        writer.observe(*obs)
    writer.flush()
    return RequestTotals(board).snapshot([0])


def test_histogram_is_cumulative_with_otel_names_and_labels():
    rows = rows_with(
        [("GET", "200 OK", "", 0.003, 0, 13)] * 3
        + [("GET", "200 OK", "", 0.2, 0, 13)]
        + [("PURGE", "502 Bad Gateway", "u", 20.0, 10, 0)]
    )
    doc = parse(render(status_doc(), rows))
    s = doc["samples"]
    assert doc["types"]["http_server_request_duration_seconds"] == "histogram"
    get = {
        ("http_request_method", "GET"),
        ("http_response_status_code", "200"),
        ("network_protocol_name", "http"),
    }

    def bucket(le, labels=get):
        return s[("http_server_request_duration_seconds_bucket", frozenset(labels | {("le", le)}))]

    assert bucket("0.005") == 3
    assert bucket("0.1") == 3
    assert bucket("0.25") == 4
    assert bucket("+Inf") == 4
    assert s[("http_server_request_duration_seconds_count", frozenset(get))] == 4
    assert s[("http_server_request_duration_seconds_sum", frozenset(get))] == pytest.approx(0.209)
    other = {
        ("http_request_method", "_OTHER"),
        ("http_response_status_code", "502"),
        ("network_protocol_name", "uwsgi"),
    }
    assert bucket("10", other) == 0 and bucket("+Inf", other) == 1
    les = [
        dict(k[1])["le"]
        for k in s
        if k[0] == "http_server_request_duration_seconds_bucket" and frozenset(get) <= k[1]
    ]
    assert len(les) == len(DURATION_BOUNDS) + 1
    assert s[("http_server_response_body_size_bytes_sum", frozenset(get))] == 52
    assert s[("http_server_request_body_size_bytes_sum", frozenset(other))] == 10


def test_process_state_and_event_series():
    s = parse(render(status_doc(), {}))["samples"]
    assert s[("http_server_active_requests", frozenset())] == 1
    assert s[("forklift_workers", frozenset({("state", "busy")}))] == 1
    assert s[("forklift_workers", frozenset({("state", "retiring")}))] == 1
    assert s[("forklift_workers", frozenset({("state", "booting")}))] == 1
    assert s[("forklift_workers", frozenset({("state", "idle")}))] == 0
    assert s[("forklift_generation", frozenset())] == 3
    assert s[("forklift_harakiri_kills_total", frozenset())] == 2
    assert s[("forklift_worker_recycles_total", frozenset({("reason", "max_requests")}))] == 5
    assert s[("forklift_reloads_total", frozenset({("result", "done")}))] == 2
    worker = frozenset({("pid", "201"), ("role", "worker"), ("generation", "3"), ("worker", "1")})
    assert s[("process_resident_memory_bytes", worker)] == 5_000_000
    assert s[("process_cpu_seconds_total", worker)] == 1.5
    assert s[("process_start_time_seconds", worker)] == 1700000000.5
    master = frozenset({("pid", "100"), ("role", "master")})
    assert s[("process_open_fds", master)] == 9


def test_label_values_are_escaped():
    text = render(status_doc(), {})
    assert 'listener="x\\"y\\\\z\\n"' in text
    assert "\nforklift_listen_queue_length{" in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) absent")
def test_promtool_accepts_the_document():
    rows = rows_with([("GET", "200 OK", "", 0.003, 0, 13), ("POST", "500 X", "u", 1.0, 99, 7)])
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=render(status_doc(), rows),
        capture_output=True,
        text=True,
        timeout=30,
    )
    # promtool exits 0 when the document parses; lint remarks (if any) are printed too.
    assert result.returncode == 0, result.stdout + result.stderr
