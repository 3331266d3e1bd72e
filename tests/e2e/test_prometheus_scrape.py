"""A real Prometheus scrapes forklift (2 workers, one recycled meanwhile): a PromQL query
through its HTTP API counts exactly the requests sent (issue 19, part 6)."""

from __future__ import annotations

import time

import pytest
from nginx_support import stop_process
from observability_support import get, start_forklift
from prometheus_support import Prometheus

SENT = 150


@pytest.mark.requires("prometheus")
def test_prometheus_counts_every_request_across_a_recycle(tmp_path):
    # --max-requests 60: each of the 2 workers is recycled after about 60 of the 150 requests
    server = start_forklift(tmp_path, "--max-requests", "60")
    prometheus = None
    try:
        prometheus = Prometheus(f"127.0.0.1:{server.stats_port}", interval="1s")
        port = server.port("http")
        for _ in range(SENT):
            assert get(port) == 200

        def counted():
            result = prometheus.query("sum(http_server_request_duration_seconds_count)")
            return result[0][1] if result else None

        deadline = time.monotonic() + 30
        while counted() != SENT:
            assert time.monotonic() < deadline, (counted(), prometheus.targets())
            time.sleep(0.25)
        by_status = prometheus.query(
            "sum by (http_request_method, http_response_status_code, network_protocol_name)"
            " (http_server_request_duration_seconds_count)"
        )
        assert by_status == [
            (
                {
                    "http_request_method": "GET",
                    "http_response_status_code": "200",
                    "network_protocol_name": "http",
                },
                float(SENT),
            )
        ]
        recycled = prometheus.query('forklift_worker_recycles_total{reason="max_requests"}')
        assert recycled and recycled[0][1] >= 1
        quantile = prometheus.query(
            "histogram_quantile(0.99, sum by (le) (http_server_request_duration_seconds_bucket))"
        )
        assert 0 < quantile[0][1] <= 0.25
        assert prometheus.query('up{job="forklift"}')[0][1] == 1
    finally:
        if prometheus is not None:
            prometheus.stop()
        stop_process(server.proc)
