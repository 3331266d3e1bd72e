"""Request metrics: recording from any thread, binning and the shared-memory flush, the
master's totals that survive workers, and quantile estimates."""

from __future__ import annotations

import os
import threading
import time

import pytest

from forklift import metrics
from forklift.metrics import (
    DURATION_BOUNDS,
    MAX_ROWS,
    MetricsBoard,
    RequestTotals,
    quantile,
    series,
    summary,
)


def _by_labels(rows: dict) -> dict:
    return {labels: rest for labels, *rest in series(rows)}


def test_observation_lands_in_the_bucket_of_its_bound_inclusive():
    board = MetricsBoard(2)
    writer = board.writer(0)
    rec = writer
    rec.observe("GET", "200 OK", "", 0.005, 0, 13)  # exactly a bound: le="0.005" counts it
    rec.observe("GET", "200 OK", "", 0.0051, 0, 13)
    rec.observe("GET", "200 OK", "", 11.0, 0, 13)  # past the last bound: +Inf only
    writer.flush()
    (duration, seconds, req, req_bytes, resp, resp_bytes) = _by_labels(board.read(0))[
        ("GET", "200", "http")
    ]
    assert len(duration) == len(DURATION_BOUNDS) + 1
    assert duration[0] == 1 and duration[1] == 1 and duration[-1] == 1
    assert sum(duration) == 3
    assert seconds == pytest.approx(11.0101)
    assert req[0] == 3 and req_bytes == 0  # no body: the 0-byte bucket
    assert resp[1] == 3 and resp_bytes == 39  # 13 bytes: le=64


def test_labels_method_status_protocol_never_the_path():
    board = MetricsBoard(1)
    writer = board.writer(0)
    rec = writer
    rec.observe("GET", "404 Not Found", "u", 0.001, 0, 9)
    rec.observe("BREW", "500 Internal Server Error", "", 0.001, 5, 0)
    rec.observe("POST", "201 Created", "", 0.001, 300, 2)
    writer.flush()
    labels = set(_by_labels(board.read(0)))
    assert labels == {("GET", "404", "uwsgi"), ("_OTHER", "500", "http"), ("POST", "201", "http")}
    post = _by_labels(board.read(0))[("POST", "201", "http")]
    req_buckets, req_bytes = post[2], post[3]
    assert req_buckets == [0, 0, 0, 1] + [0] * 8  # 300 bytes: le=1024, not the 0-byte bucket
    assert req_bytes == 300


def test_counts_survive_the_worker_that_made_them():
    """A recycled or killed worker's counts are folded into the master's retired totals
    before its slot is reused; the next worker in that slot starts from zero."""
    board = MetricsBoard(2)
    totals = RequestTotals(board)
    first = board.writer(0)
    rec = first
    for _ in range(7):
        rec.observe("GET", "200 OK", "", 0.001, 0, 1)
    first.flush()
    other = board.writer(1)
    other.observe("GET", "200 OK", "", 0.001, 0, 1)
    other.flush()
    assert summary(totals.snapshot([0, 1]))["requests"] == 8
    totals.worker_gone(0)  # reaped
    assert board.read(0) == {}
    second = board.writer(0)  # its replacement, same slot
    rec2 = second
    rec2.observe("GET", "503 Service Unavailable", "", 0.001, 0, 1)
    second.flush()
    snap = summary(totals.snapshot([0, 1]))
    assert snap["requests"] == 9
    assert snap["errors_5xx"] == 1
    assert snap["by_status"] == {"200": 8, "503": 1}


def test_a_forked_worker_reports_through_shared_memory():
    board = MetricsBoard(4)
    totals = RequestTotals(board)
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            writer = board.writer(3)
            rec = writer
            for i in range(1000):
                rec.observe("GET", "200 OK", "", i / 10000, 0, 13)
            writer.flush()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    totals.worker_gone(3)
    result = summary(totals.snapshot([]))
    assert result["requests"] == 1000
    assert result["seconds"] == pytest.approx(sum(i / 10000 for i in range(1000)))


def test_threads_record_at_once_while_the_watchdog_flushes():
    board = MetricsBoard(1)
    writer = board.writer(0)
    per_thread = 20000

    def serve():
        rec = writer
        for _ in range(per_thread):
            rec.observe("GET", "200 OK", "", 0.002, 0, 1)

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(50):  # flushes while they count: never more than was counted
        writer.flush()
        assert summary(board.read(0))["requests"] <= 4 * per_thread
    for t in threads:
        t.join(10)
    writer.flush()
    assert summary(board.read(0))["requests"] == 4 * per_thread


def test_more_series_than_rows_fold_into_one_overflow_row():
    board = MetricsBoard(1)
    writer = board.writer(0)
    rec = writer
    statuses = range(200, 200 + MAX_ROWS + 20)
    for code in statuses:
        rec.observe("GET", f"{code} X", "", 0.001, 0, 0)
    writer.flush()
    rows = _by_labels(board.read(0))
    assert len(rows) == MAX_ROWS
    assert sum(sum(v[0]) for v in rows.values()) == len(statuses)
    overflow = rows[("_OTHER", "_OTHER", "http")]
    assert sum(overflow[0]) == len(statuses) - (MAX_ROWS - 1)


def test_current_request_is_shown_for_top():
    board = MetricsBoard(2)
    writer = board.writer(1)
    assert board.current_request(1) is None
    began = time.monotonic() - 2.0  # the worker's clock: monotonic
    writer.set_current(began, "POST", "/upload/" + "x" * 300)
    start, method, path = board.current_request(1)
    assert method == "POST"
    assert abs(time.time() - start - 2.0) < 0.5  # the master sees Unix time: 2 s ago
    assert path.startswith("/upload/xx") and len(path) <= 112
    writer.set_current(0.0, "", "")
    assert board.current_request(1) is None


def test_quantile_interpolates_like_histogram_quantile():
    bounds = (0.1, 0.2, 0.4)
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [10, 0, 0, 0]) == pytest.approx(0.05)
    assert quantile(0.5, bounds, [0, 10, 0, 0]) == pytest.approx(0.15)
    assert quantile(0.99, bounds, [50, 0, 0, 50]) == 0.4  # in +Inf: the last bound
    assert quantile(0.75, bounds, [50, 0, 50, 0]) == pytest.approx(0.3)


def test_key_round_trip():
    for method in metrics.METHODS:
        for status in (100, 200, 599):
            for protocol in metrics.PROTOCOLS:
                key = metrics.encode_key(method, status, protocol)
                assert metrics.decode_key(key) == (method, str(status), protocol)
