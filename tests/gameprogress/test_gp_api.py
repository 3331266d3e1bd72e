"""The JSON API v1 and the legacy routes on both stores: what a well-formed client sees."""

from __future__ import annotations

from urllib.parse import quote

from gameprogress.app import create_app
from gameprogress.migrations import LATEST_VERSION
from gameprogress.model import DeviceRecord
from gameprogress.store_sqlite import SQLiteStore


def put_level(client, device_id: str, level: int):
    return client.put(f"/v1/devices/{device_id}/level", json={"level": level})


def test_index_is_a_short_text(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True).strip() == "gameprogress: ok"


def test_unknown_device_is_404(client):
    response = client.get("/v1/devices/nobody")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "device_not_found"


def test_put_returns_and_stores_the_record(client, clock):
    response = put_level(client, "dev-1", 7)
    assert response.status_code == 200
    expected = {
        "device_id": "dev-1",
        "level": 7,
        "last_commit": int(clock.now),
        "level_reached_at": int(clock.now),
        "updates": 1,
    }
    assert response.get_json() == expected
    assert client.get("/v1/devices/dev-1").get_json() == expected


def test_level_is_the_highest_ever_reported(client, clock):
    start = int(clock.now)
    put_level(client, "d", 10)
    clock.advance(60)
    lower = put_level(client, "d", 3).get_json()
    # A lower level is accepted: the level stays, the commit time and count move on.
    assert lower == {
        "device_id": "d",
        "level": 10,
        "last_commit": start + 60,
        "level_reached_at": start,
        "updates": 2,
    }
    clock.advance(60)
    same = put_level(client, "d", 10).get_json()
    assert (same["level"], same["level_reached_at"], same["last_commit"]) == (
        10,
        start,
        start + 120,
    )
    clock.advance(60)
    higher = put_level(client, "d", 11).get_json()
    assert (higher["level"], higher["level_reached_at"], higher["updates"]) == (
        11,
        start + 180,
        4,
    )


def test_last_commit_never_goes_back(client, clock):
    put_level(client, "d", 1)
    clock.advance(-100)  # a clock step back (NTP) must not rewind the stored time
    record = put_level(client, "d", 2).get_json()
    assert record["last_commit"] == int(clock.now) + 100
    assert record["level"] == 2


def test_ids_with_unusual_printable_characters_round_trip(client):
    for device_id in ["a b", "x?y", "100%", "#hash", "~!@$^&*()_+={}[]|\\:;\"'<>,.", "."]:
        path = quote(device_id, safe="")
        assert client.put(f"/v1/devices/{path}/level", json={"level": 5}).status_code == 200
        response = client.get(f"/v1/devices/{path}")
        assert response.get_json()["device_id"] == device_id, device_id


def test_id_of_128_characters_is_accepted(client):
    device_id = "x" * 128
    assert put_level(client, device_id, 1).status_code == 200
    assert client.get(f"/deviceId={device_id}").get_json()["error"] == 0


def test_levels_at_the_bounds_are_accepted(client):
    assert put_level(client, "low", 0).get_json()["level"] == 0
    assert put_level(client, "high", 1_000_000).get_json()["level"] == 1_000_000


def test_leaderboard_orders_by_level_then_who_got_there_first(client, clock):
    put_level(client, "late", 50)
    clock.advance(-10)
    put_level(client, "early", 50)
    clock.advance(20)
    put_level(client, "top", 90)
    put_level(client, "b-tie", 20)
    put_level(client, "a-tie", 20)
    put_level(client, "last", 1)
    body = client.get("/v1/leaderboard").get_json()
    assert body["limit"] == 10
    assert [e["device_id"] for e in body["entries"]] == [
        "top",
        "early",
        "late",
        "a-tie",
        "b-tie",
        "last",
    ]
    assert [e["rank"] for e in body["entries"]] == [1, 2, 3, 4, 5, 6]
    top2 = client.get("/v1/leaderboard?limit=2").get_json()
    assert [e["device_id"] for e in top2["entries"]] == ["top", "early"]


def test_leaderboard_of_an_empty_store(client):
    assert client.get("/v1/leaderboard?limit=100").get_json() == {"limit": 100, "entries": []}


def test_stats(client, clock):
    put_level(client, "old", 5)
    clock.advance(2 * 3600)
    put_level(client, "a", 12)
    put_level(client, "a", 3)
    put_level(client, "b", 19)
    put_level(client, "c", 250)
    body = client.get("/v1/stats").get_json()
    assert body == {
        "devices": 4,
        "devices_updated_last_hour": 3,
        "total_updates": 5,
        "bucket_width": 10,
        "histogram": [
            {"min_level": 0, "max_level": 9, "devices": 1},
            {"min_level": 10, "max_level": 19, "devices": 2},
            {"min_level": 250, "max_level": 259, "devices": 1},
        ],
        "histogram_truncated": False,
    }
    wide = client.get("/v1/stats?bucket_width=1000001").get_json()
    assert wide["histogram"] == [{"min_level": 0, "max_level": 1_000_000, "devices": 4}]


def test_stats_histogram_is_truncated_past_1000_buckets(app, client, clock):
    store = app.extensions["gameprogress"].store
    now = int(clock.now)
    store.import_records([DeviceRecord(f"d{i:05}", i, now, now, 1) for i in range(1001)])
    body = client.get("/v1/stats?bucket_width=1").get_json()
    assert body["devices"] == 1001
    assert len(body["histogram"]) == 1000
    assert body["histogram_truncated"] is True
    assert body["histogram"][-1] == {"min_level": 999, "max_level": 999, "devices": 1}


def test_healthz_reports_the_store(client, database_url):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "store": "sqlite" if database_url.startswith("sqlite") else "postgresql",
        "schema_version": LATEST_VERSION,
    }


def test_legacy_and_v1_share_the_data(client, clock):
    assert client.get("/update/shared/42").get_json() == {"error": 0, "msg": "设置成功"}
    assert client.get("/v1/devices/shared").get_json()["level"] == 42
    put_level(client, "shared", 43)
    assert client.get("/deviceId=shared").get_json() == {
        "error": 0,
        "msg": f"查找到了deviceId为shared的用户, 最高到达43关卡, 最后提交的时间为 {int(clock.now)}",
    }


def test_legacy_answers_are_http_200(client):
    assert client.get("/deviceId=unknown").status_code == 200
    assert client.get("/update/x/1").status_code == 200
    assert client.get("/deviceId=x").status_code == 200


def test_head_works_on_reads(client):
    assert client.head("/healthz").status_code == 200
    assert client.head("/v1/leaderboard").status_code == 200


def test_whole_number_written_as_float_is_that_integer(client):
    # JSON Schema counts 5.0 as an integer; so do we.
    response = client.put(
        "/v1/devices/f/level", data=b'{"level": 5.0}', content_type="application/json"
    )
    assert response.status_code == 200
    assert response.get_json()["level"] == 5


def test_legacy_level_with_leading_zeros(client):
    assert client.get("/update/z/0007").get_json()["error"] == 0
    assert client.get("/v1/devices/z").get_json()["level"] == 7
    assert client.get("/update/z/" + "0" * 40 + "8").get_json()["error"] == 0
    assert client.get("/v1/devices/z").get_json()["level"] == 8


class _BrokenStore(SQLiteStore):
    """A real SQLite store with one bug planted, to see how an unexpected error leaves."""

    def get(self, device_id):
        raise RuntimeError("planted bug")


def test_an_unexpected_error_is_a_json_500(tmp_path):
    store = _BrokenStore(str(tmp_path / "x.db"))
    app = create_app({"GAMEPROGRESS_STORE": store})
    client = app.test_client()
    try:
        v1 = client.get("/v1/devices/d")
        assert v1.status_code == 500
        assert v1.get_json()["error"]["code"] == "internal_server_error"
        legacy = client.get("/deviceId=d")
        assert legacy.status_code == 500
        assert legacy.get_json()["error"] == 1
        assert client.get("/update/d/1").status_code == 200  # the rest still works
    finally:
        store.close()
