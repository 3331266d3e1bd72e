"""`forklift top`'s screen, from status documents: rates over 10 s, generations side by side,
the request each worker serves with its harakiri countdown, RSS trend; fits 80x24."""

from __future__ import annotations

from forklift.metrics import DURATION_BOUNDS
from forklift.top import Samples, render


def doc(requests: int, errors: int, buckets: list, workers: list, generation=2) -> dict:
    return {
        "pid": 4242,
        "uptime": 3725.0,
        "generation": generation,
        "target_workers": 2,
        "threads": 1,
        "reload": {"state": "done"},
        "listeners": [{"address": "127.0.0.1:8000", "queued": 3, "backlog": 1024}],
        "workers": workers,
        "requests": {
            "requests": requests,
            "errors_5xx": errors,
            "duration_bounds": list(DURATION_BOUNDS),
            "duration_buckets": buckets,
        },
    }


def worker(pid, gen, number, rss_mb, busy=0, current=None, retiring=False):
    return {
        "pid": pid,
        "generation": gen,
        "number": number,
        "ready": True,
        "retiring": retiring,
        "busy": busy,
        "requests": 100 * number,
        "errors_5xx": number,
        "process": {"rss_bytes": int(rss_mb * 1048576)},
        "current": current,
    }


def buckets(at_5ms: int, at_1s: int) -> list:
    b = [0] * (len(DURATION_BOUNDS) + 1)
    b[0] = at_5ms
    b[DURATION_BOUNDS.index(1.0)] = at_1s
    return b


def test_rates_quantiles_and_side_by_side_generations_fit_80x24():
    samples = Samples()
    long_path = "/api/v1/very/long/path/" + "segment/" * 20
    current = {"method": "POST", "path": long_path, "elapsed": 12.3, "harakiri_in": 17.7}
    old_gen = [worker(301, 1, 1, 80.0, retiring=True)]
    new_gen = [worker(401, 2, 2, 40.0), worker(402, 2, 3, 50.0, busy=1, current=current)]
    samples.add(doc(1000, 10, buckets(990, 10), old_gen + new_gen), now=100.0)
    new_gen2 = [worker(401, 2, 2, 40.0), worker(402, 2, 3, 60.0, busy=1, current=current)]
    samples.add(doc(3000, 30, buckets(2970, 30), old_gen + new_gen2), now=110.0)
    lines = render(samples, 80, 24, selected=1, ascii_only=True)
    assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
    screen = "\n".join(lines)
    assert "master 4242" in lines[0] and "up 1h02m" in lines[0] and "gen 2" in lines[0]
    assert "req/s 200.0" in lines[1]  # 2000 requests in 10 s
    assert "5xx/s 2.0" in lines[1]
    assert "p50 2.5ms" in lines[1]  # half of the window's requests are under 5 ms
    assert "p99 " in lines[1] and "listen queue 3" in lines[1]
    # both generations, side by side on the same rows
    header = next(line for line in lines if "generation 2 (serving)" in line)
    assert "generation 1" in header
    assert "retiring" in screen
    row = next(line for line in lines if "402" in line)
    assert ">" in row.split("|")[0]  # selected (second worker in display order)
    assert "60.0^" in row  # RSS went up by 10 MB within the window
    request = next(line for line in lines if "POST" in line)
    assert "12.3s hk 18s" in request and "~" in request  # path shortened, countdown kept
    assert lines[-1].startswith("q quit")


def test_single_generation_and_first_sample():
    samples = Samples()
    assert render(samples, 80, 24)[0].startswith("waiting")
    samples.add(doc(5, 0, buckets(5, 0), [worker(11, 2, 1, 30.0)]), now=1.0)
    lines = render(samples, 80, 24)
    assert "req/s -" in lines[1]  # one sample: no rate yet
    assert not any("|" in line for line in lines)
    assert any(line.startswith(">    11 idle") for line in lines)  # selected by default


def test_metrics_off_shows_no_rates():
    samples = Samples()
    off = doc(0, 0, [], [worker(11, 2, 1, 30.0)])
    off["requests"] = None  # --disable-metrics
    samples.add(off, now=1.0)
    samples.add(dict(off), now=2.0)
    lines = render(samples, 80, 24)
    assert "req/s -" in lines[1] and "total requests -" in lines[2]


def test_message_replaces_the_footer():
    samples = Samples()
    samples.add(doc(5, 0, buckets(5, 0), [worker(11, 2, 1, 30.0)]), now=1.0)
    lines = render(samples, 80, 24, message="stacks of worker 11 written to the error log")
    assert lines[-1] == "stacks of worker 11 written to the error log"
