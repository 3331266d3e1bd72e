"""Bad input gets a 4xx with a clear message, and the stored data stays exactly as it was."""

from __future__ import annotations

import json

import pytest

from gameprogress.signing import sign
from gameprogress.store import iter_records

KEY = "test-write-key"


@pytest.fixture
def seeded(app, client):
    """An app with a few devices stored; returns (client, snapshot function)."""
    for device_id, level in [("alpha", 10), ("beta", 20), ("gamma", 30)]:
        assert client.put(f"/v1/devices/{device_id}/level", json={"level": level}).status_code
    store = app.extensions["gameprogress"].store

    def snapshot():
        return list(iter_records(store))

    return client, snapshot


def assert_refused(response, status: int, code: str | None = None, legacy: bool = False):
    assert response.status_code == status, response.data
    body = response.get_json()
    if legacy:
        assert body["error"] == 1
        assert len(body["msg"]) > 10
        return body["msg"]
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    if code is not None:
        assert body["error"]["code"] == code
    assert len(body["error"]["message"]) > 10
    return body["error"]["message"]


BAD_IDS = {
    "too long": "x" * 129,
    "unicode": "%C3%A9t%C3%A9",
    "emoji": "%F0%9F%98%80",
    "nul": "a%00b",
    "del": "a%7Fb",
    "tab": "a%09b",
    "newline": "a%0Ab",
    "trailing newline": "abc%0A",
}


@pytest.mark.parametrize("raw_id", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_bad_device_ids(seeded, raw_id):
    client, snapshot = seeded
    before = snapshot()
    message = assert_refused(
        client.put(f"/v1/devices/{raw_id}/level", json={"level": 1}), 400, "invalid_device_id"
    )
    assert "printable ASCII" in message
    assert_refused(client.get(f"/v1/devices/{raw_id}"), 400, "invalid_device_id")
    assert_refused(client.get(f"/deviceId={raw_id}"), 400, legacy=True)
    assert_refused(client.get(f"/update/{raw_id}/5"), 400, legacy=True)
    assert snapshot() == before


def test_slash_in_an_id_matches_no_route(seeded):
    client, snapshot = seeded
    before = snapshot()
    message = assert_refused(
        client.put("/v1/devices/a%2Fb/level", json={"level": 1}), 404, "not_found"
    )
    assert "'/'" in message
    assert_refused(client.get("/update/a%2Fb/5"), 404, legacy=True)
    assert_refused(client.get("/deviceId=a/b"), 404, legacy=True)
    assert snapshot() == before


BAD_LEVELS = [-1, 1_000_001, 10**30, 1.5, 1e300, -0.5, "5", True, False, None, [], {}]


@pytest.mark.parametrize("level", BAD_LEVELS, ids=repr)
def test_bad_levels_in_json(seeded, level):
    client, snapshot = seeded
    before = snapshot()
    message = assert_refused(
        client.put("/v1/devices/alpha/level", json={"level": level}), 400, "invalid_level"
    )
    assert "integer" in message
    assert snapshot() == before


@pytest.mark.parametrize(
    "levels",
    [
        "-1",
        "1000001",
        "9" * 30,
        "9" * 5000,
        "1.5",
        "abc",
        "%D9%A1%D9%A2",
        "0x10",
        "5%0A",
        "+5",
        "%205",
    ],
)
def test_bad_levels_in_legacy_urls(seeded, levels):
    client, snapshot = seeded
    before = snapshot()
    message = assert_refused(client.get(f"/update/alpha/{levels}"), 400, legacy=True)
    assert "level must be an integer" in message
    assert snapshot() == before


BAD_BODIES = {
    "malformed": (b"{", "malformed_json"),
    "truncated": (b'{"level": ', "malformed_json"),
    "empty": (b"", "malformed_json"),
    "nan": (b'{"level": NaN}', "malformed_json"),
    "infinity": (b'{"level": Infinity}', "malformed_json"),
    "invalid utf-8": (b'{"level": "\xff"}', "malformed_json"),
    "array": (b"[5]", "invalid_body"),
    "bare number": (b"5", "invalid_body"),
    "missing level": (b"{}", "invalid_body"),
    "extra field": (b'{"level": 5, "cheat": true}', "invalid_body"),
    "wrong field": (b'{"levels": 5}', "invalid_body"),
}


@pytest.mark.parametrize("body,code", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies(seeded, body, code):
    client, snapshot = seeded
    before = snapshot()
    response = client.put("/v1/devices/alpha/level", data=body, content_type="application/json")
    assert_refused(response, 400, code)
    assert snapshot() == before


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
def test_wrong_content_type(seeded, content_type):
    client, snapshot = seeded
    before = snapshot()
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.put("/v1/devices/alpha/level", data=b'{"level": 99}', headers=headers)
    message = assert_refused(response, 415, "unsupported_media_type")
    assert "application/json" in message
    assert snapshot() == before


def test_json_with_charset_is_fine(seeded):
    client, _ = seeded
    response = client.put(
        "/v1/devices/alpha/level",
        data=b'{"level": 99}',
        content_type="application/json; charset=utf-8",
    )
    assert response.status_code == 200


def test_body_too_large(seeded):
    client, snapshot = seeded
    before = snapshot()
    body = json.dumps({"level": 99}).encode() + b" " * 5000
    response = client.put("/v1/devices/alpha/level", data=body, content_type="application/json")
    assert_refused(response, 413)
    assert snapshot() == before


def test_wrong_method_is_405_with_allow(seeded):
    client, snapshot = seeded
    before = snapshot()
    response = client.post("/v1/devices/alpha/level", json={"level": 99})
    assert_refused(response, 405, "method_not_allowed")
    assert "PUT" in response.headers["Allow"]
    assert_refused(client.delete("/v1/devices/alpha"), 405)
    assert_refused(client.post("/update/alpha/99"), 405, legacy=True)
    assert snapshot() == before


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "limit=1e2",
        "limit=",
        "limit=%EF%BC%95",
        "limit=5%0A",
        "limit=+5",
    ],
)
def test_bad_leaderboard_limit(client, query):
    message = assert_refused(client.get(f"/v1/leaderboard?{query}"), 400, "invalid_limit")
    assert "1 to 100" in message


@pytest.mark.parametrize("query", ["bucket_width=0", "bucket_width=1000002", "bucket_width=x"])
def test_bad_bucket_width(client, query):
    assert_refused(client.get(f"/v1/stats?{query}"), 400, "invalid_bucket_width")


def test_unknown_path_is_json_404(client):
    assert_refused(client.get("/v2/anything"), 404, "not_found")
    assert_refused(client.get("/v1/devices/"), 404, "not_found")


# ------------------------------------------------------------------ signatures


def signed_put(
    client,
    path,
    body: bytes,
    *,
    now,
    key=KEY,
    timestamp=None,
    method="PUT",
    sign_path=None,
    sign_body=None,
):
    """A PUT signed as a client would sign it, with one part optionally spoiled."""
    timestamp = str(int(now)) if timestamp is None else timestamp
    signature = sign(
        key.encode(),
        method,
        sign_path or path,
        timestamp,
        body if sign_body is None else sign_body,
    )
    return client.put(
        path,
        data=body,
        content_type="application/json",
        headers={"X-Timestamp": timestamp, "X-Signature": signature},
    )


@pytest.fixture
def signed(make_app, clock):
    app = make_app(GAMEPROGRESS_WRITE_KEY=KEY)
    client = app.test_client()
    store = app.extensions["gameprogress"].store
    good = signed_put(client, "/v1/devices/alpha/level", b'{"level": 10}', now=clock.now)
    assert good.status_code == 200, good.data

    def snapshot():
        return list(iter_records(store))

    return client, snapshot


def test_signed_write_is_accepted(signed, clock):
    client, _ = signed
    response = signed_put(client, "/v1/devices/alpha/level", b'{"level": 11}', now=clock.now)
    assert response.status_code == 200
    assert response.get_json()["level"] == 11
    # Upper-case hex is the same number.
    body = b'{"level": 12}'
    timestamp = str(int(clock.now))
    signature = sign(KEY.encode(), "PUT", "/v1/devices/alpha/level", timestamp, body).upper()
    response = client.put(
        "/v1/devices/alpha/level",
        data=body,
        content_type="application/json",
        headers={"X-Timestamp": timestamp, "X-Signature": signature},
    )
    assert response.status_code == 200


def test_unsigned_write_is_refused(signed):
    client, snapshot = signed
    before = snapshot()
    response = client.put("/v1/devices/alpha/level", json={"level": 99})
    message = assert_refused(response, 401, "signature_required")
    assert "X-Signature" in message
    assert snapshot() == before


@pytest.mark.parametrize(
    "change,code",
    [
        ({"key": "wrong-key"}, "bad_signature"),
        ({"sign_path": "/v1/devices/beta/level"}, "bad_signature"),
        ({"sign_body": b'{"level": 1}'}, "bad_signature"),
        ({"method": "POST"}, "bad_signature"),
        ({"timestamp": "abc"}, "invalid_timestamp"),
        ({"timestamp": "1.5"}, "invalid_timestamp"),
        ({"timestamp": "-5"}, "invalid_timestamp"),
        ({"stale": -301}, "stale_timestamp"),
        ({"stale": 301}, "stale_timestamp"),
        ({"stale": -100_000}, "stale_timestamp"),
    ],
    ids=repr,
)
def test_bad_signatures(signed, clock, change, code):
    client, snapshot = signed
    before = snapshot()
    change = dict(change)
    now = clock.now + change.pop("stale", 0)
    response = signed_put(client, "/v1/devices/alpha/level", b'{"level": 99}', now=now, **change)
    assert_refused(response, 401, code)
    assert snapshot() == before


def test_signature_that_is_not_hex(signed, clock):
    client, snapshot = signed
    before = snapshot()
    response = client.put(
        "/v1/devices/alpha/level",
        json={"level": 99},
        headers={"X-Timestamp": str(int(clock.now)), "X-Signature": "zz" * 32},
    )
    assert_refused(response, 401, "bad_signature")
    assert snapshot() == before


def test_timestamp_within_the_window_is_accepted(signed, clock):
    client, _ = signed
    for skew in (-300, 300):
        response = signed_put(
            client, "/v1/devices/alpha/level", b'{"level": 15}', now=clock.now + skew
        )
        assert response.status_code == 200


def test_signed_but_invalid_body_is_still_400(signed, clock):
    client, snapshot = signed
    before = snapshot()
    response = signed_put(client, "/v1/devices/alpha/level", b'{"level": -1}', now=clock.now)
    assert_refused(response, 400, "invalid_level")
    assert snapshot() == before


def test_legacy_writes_can_be_switched_off(make_app):
    app = make_app(GAMEPROGRESS_WRITE_KEY=KEY, GAMEPROGRESS_LEGACY_WRITES="off")
    client = app.test_client()
    store = app.extensions["gameprogress"].store
    message = assert_refused(client.get("/update/alpha/5"), 403, legacy=True)
    assert "disabled" in message
    assert list(iter_records(store)) == []
    # Reads still work.
    assert client.get("/deviceId=alpha").get_json()["error"] == 1


def test_legacy_writes_stay_open_by_default_even_with_a_key(make_app):
    app = make_app(GAMEPROGRESS_WRITE_KEY=KEY)
    assert app.test_client().get("/update/alpha/5").get_json() == {"error": 0, "msg": "设置成功"}


def test_bad_legacy_writes_setting_stops_the_app(make_app):
    with pytest.raises(ValueError, match="GAMEPROGRESS_LEGACY_WRITES"):
        make_app(GAMEPROGRESS_LEGACY_WRITES="maybe")
