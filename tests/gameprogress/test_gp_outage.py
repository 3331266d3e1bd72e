"""When the database is away: 503 with Retry-After at once, /healthz says so, and recovery is
automatic when it returns. PostgreSQL is really stopped and started; nothing is mocked."""

from __future__ import annotations

import time

import pytest

from gameprogress.app import create_app
from gameprogress.store_postgres import CircuitBreaker, PostgresStore

# Well under the pool wait (1 s) that a request pays when it is let through to probe, and
# generous for a loaded machine.
AT_ONCE = 0.5


def timed(call):
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def assert_unavailable(response):
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.get_json()["error"]["code"] == "database_unavailable"


def app_on_postgres(url: str, clock):
    """The app over a PostgresStore whose breaker runs on `clock`, so that no probe is let
    through while the test checks that answers come at once, however slow the machine."""
    store = PostgresStore(url, breaker=CircuitBreaker(cooldown=1.0, clock=clock))
    return create_app({"GAMEPROGRESS_STORE": store})


def test_postgres_outage_and_recovery(own_postgres_server, clock):
    app = app_on_postgres(own_postgres_server.fresh_url(), clock)
    client = app.test_client()
    try:
        assert client.put("/v1/devices/d/level", json={"level": 7}).status_code == 200

        own_postgres_server.stop()
        # The first request finds out, within the short pool wait...
        first, seconds = timed(lambda: client.get("/v1/devices/d"))
        assert_unavailable(first)
        assert seconds < 3
        # ...and the following ones are answered at once.
        for call in (
            lambda: client.get("/v1/devices/d"),
            lambda: client.put("/v1/devices/d/level", json={"level": 9}),
            lambda: client.get("/v1/leaderboard"),
        ):
            response, seconds = timed(call)
            assert_unavailable(response)
            assert seconds < AT_ONCE
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.headers["Retry-After"]
        assert health.get_json()["status"] == "unavailable"
        legacy = client.get("/update/d/9")
        assert (legacy.status_code, legacy.get_json()) == (503, {"error": 1, "msg": "更新失败"})
        assert legacy.headers["Retry-After"]
        assert client.get("/deviceId=d").status_code == 503

        own_postgres_server.start()
        deadline = time.monotonic() + 20
        while client.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, "the store did not reconnect by itself"
            time.sleep(0.2)
            clock.advance(1.5)  # past the cool-down: the next request may probe
        assert client.get("/healthz").get_json()["status"] == "ok"
        assert client.put("/v1/devices/d/level", json={"level": 9}).get_json()["level"] == 9
    finally:
        app.extensions["gameprogress"].store.close()


def test_app_starts_while_postgres_is_down(tmp_path, clock):
    # A socket directory with no server in it: connections fail at once.
    app = app_on_postgres(f"postgresql://postgres@/gameprogress?host={tmp_path}&port=5999", clock)
    client = app.test_client()
    try:
        first, seconds = timed(lambda: client.get("/v1/devices/d"))
        assert_unavailable(first)
        assert seconds < 3
        again, seconds = timed(lambda: client.get("/v1/stats"))
        assert_unavailable(again)
        assert seconds < AT_ONCE
        assert client.get("/healthz").status_code == 503
    finally:
        app.extensions["gameprogress"].store.close()


def test_sqlite_that_cannot_be_opened_is_503(tmp_path):
    directory = tmp_path / "a-directory"
    directory.mkdir()
    app = create_app({"GAMEPROGRESS_DATABASE_URL": f"sqlite:///{directory}"})
    client = app.test_client()
    try:
        assert_unavailable(client.put("/v1/devices/d/level", json={"level": 1}))
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.get_json()["store"] == "sqlite"
    finally:
        app.extensions["gameprogress"].store.close()


# ------------------------------------------------------------------ the breaker on its own


def test_breaker_fails_fast_then_lets_one_probe_through(clock):
    breaker = CircuitBreaker(cooldown=1.0, clock=clock)
    assert breaker.admit() and breaker.admit()
    breaker.failed("connection refused")
    assert breaker.is_open
    assert not breaker.admit()
    clock.advance(0.5)
    assert not breaker.admit()
    clock.advance(0.6)
    assert breaker.admit()  # the probe
    assert not breaker.admit()  # only one at a time
    breaker.failed("still refused")
    assert not breaker.admit()
    assert breaker.down_for() == pytest.approx(1.1)
    clock.advance(1.0)
    assert breaker.admit()
    breaker.succeeded()
    assert not breaker.is_open
    assert breaker.admit() and breaker.admit()


def test_breaker_probe_that_ends_without_verdict_frees_the_slot(clock):
    breaker = CircuitBreaker(cooldown=1.0, clock=clock)
    breaker.failed("down")
    clock.advance(2)
    assert breaker.admit()
    breaker.released()
    assert breaker.admit()
