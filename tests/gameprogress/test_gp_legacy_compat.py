"""Legacy answers must equal what the seed's manager.py produces for the same data.

The seed's app is read from tests/e2e/seed_app/manager.py, as the seed document shows it (the
`sql` module it imports was never shown, so a fake one stands in, returning what the seed's
code expects: `search` → (found, levels, lastCommit), `update` → truthy on success). Both apps
are asked the same questions and must answer the same bytes.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from gameprogress.app import create_app

# The seed's manager.py, verbatim as the seed document shows it: one copy in the repository,
# shared with the e2e test that serves it through nginx and forklift.
SEED_MANAGER = (
    Path(__file__).resolve().parents[1] / "e2e" / "seed_app" / "manager.py"
).read_text(encoding="utf-8")

NOW = 1_650_000_000  # spring 2022, when the seed ran


class FakeSql(types.ModuleType):
    """The seed's storage module as its caller uses it, over a dict."""

    def __init__(self) -> None:
        super().__init__("sql")
        self.rows: dict[str, tuple[int, int]] = {}
        self.fail = False

    def search(self, deviceId):
        if deviceId in self.rows:
            level, last_commit = self.rows[deviceId]
            return True, level, last_commit
        return False, None, None

    def update(self, deviceId, levels):
        if self.fail:
            return False
        old = self.rows.get(deviceId, (levels, NOW))[0]
        self.rows[deviceId] = (max(old, levels), NOW)
        return True


@pytest.fixture
def seed(tmp_path, monkeypatch):
    fake = FakeSql()
    monkeypatch.setitem(sys.modules, "sql", fake)
    path = tmp_path / "manager.py"
    path.write_text(SEED_MANAGER, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("seed_manager", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return fake, module.app.test_client()


@pytest.fixture
def ours(tmp_path):
    app = create_app(
        {
            "GAMEPROGRESS_DATABASE_URL": f"sqlite:///{tmp_path}/ours.db",
            "GAMEPROGRESS_CLOCK": lambda: NOW,
            "GAMEPROGRESS_WRITE_KEY": "",
            "GAMEPROGRESS_LEGACY_WRITES": "on",
        }
    )
    yield app.test_client()
    app.extensions["gameprogress"].store.close()


def same_answer(seed_client, our_client, path: str):
    theirs = seed_client.get(path)
    mine = our_client.get(path)
    assert mine.get_json() == theirs.get_json()
    # Byte for byte too: same key order, separators and \\u escapes.
    assert mine.data == theirs.data
    assert mine.mimetype == theirs.mimetype == "application/json"
    return mine, theirs


@pytest.mark.parametrize("device_id", ["abc", "device-42", "UPPER_lower.123", "a b"])
def test_found(seed, ours, device_id):
    fake, seed_client = seed
    fake.rows[device_id] = (17, NOW)
    assert ours.get(f"/update/{device_id}/17").status_code == 200
    mine, theirs = same_answer(seed_client, ours, f"/deviceId={device_id}")
    assert mine.status_code == theirs.status_code == 200
    assert mine.get_json()["error"] == 0


def test_found_after_lower_update_reports_the_highest(seed, ours):
    fake, seed_client = seed
    for level in (30, 12):
        fake.update(deviceId="d", levels=level)
        ours.get(f"/update/d/{level}")
    same_answer(seed_client, ours, "/deviceId=d")


def test_not_found(seed, ours):
    _, seed_client = seed
    mine, theirs = same_answer(seed_client, ours, "/deviceId=stranger")
    assert mine.status_code == theirs.status_code == 200
    assert mine.get_json() == {"error": 1, "msg": "未查找到了deviceId为stranger的用户"}


def test_update_ok(seed, ours):
    _, seed_client = seed
    mine, theirs = same_answer(seed_client, ours, "/update/player/5")
    assert mine.status_code == theirs.status_code == 200
    assert mine.get_json() == {"error": 0, "msg": "设置成功"}


def test_update_fail(seed, tmp_path):
    """The seed said 更新失败 when its storage failed; so do we, when ours really fails.

    Our store here points at a directory, which SQLite cannot open: a genuine storage error,
    answered with the seed's JSON (and 503 + Retry-After, where the seed said 200).
    """
    fake, seed_client = seed
    fake.fail = True
    broken = tmp_path / "not-a-file"
    broken.mkdir()
    app = create_app({"GAMEPROGRESS_DATABASE_URL": f"sqlite:///{broken}"})
    try:
        mine = app.test_client().get("/update/player/5")
        theirs = seed_client.get("/update/player/5")
    finally:
        app.extensions["gameprogress"].store.close()
    assert mine.get_json() == theirs.get_json() == {"error": 1, "msg": "更新失败"}
    assert mine.data == theirs.data
    assert mine.status_code == 503
    assert mine.headers["Retry-After"].isdigit()


def test_bytes_are_what_flask_2_produced(ours):
    """Pinned independently of the installed Flask: the seed ran Flask 2.x, whose jsonify
    (JSON_AS_ASCII=True, sorted keys, compact separators, trailing newline) gave exactly this."""
    response = ours.get("/update/x/1")
    assert response.data == b'{"error":0,"msg":"\\u8bbe\\u7f6e\\u6210\\u529f"}\n'
    assert response.headers["Content-Type"] == "application/json"
