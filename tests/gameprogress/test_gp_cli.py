"""The `gameprogress` command: migrate, export and import between SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gameprogress
from gameprogress.cli import main
from gameprogress.history import DateRange
from gameprogress.model import DeviceRecord
from gameprogress.store import iter_records, open_store

RECORDS = [
    DeviceRecord("alpha", 10, 1_700_000_100, 1_700_000_050, 3),
    DeviceRecord("beta", 0, 1_700_000_200, 1_700_000_200, 1),
    DeviceRecord("gamma ~!", 1_000_000, 1_700_000_300, 1_700_000_290, 12),
]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for `python -m gameprogress`, finding the package even uninstalled."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAMEPROGRESS_")}
    src = str(Path(gameprogress.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def test_migrate_reports_what_it_did(database_url, capsys):
    assert main(["migrate", "--database-url", database_url]) == 0
    assert capsys.readouterr().out.strip() == "schema at version 3 (applied now: 1, 2, 3)"
    assert main(["migrate", "--database-url", database_url]) == 0
    assert capsys.readouterr().out.strip() == "schema at version 3 (applied now: none)"


def test_export_then_import_moves_data_between_stores(postgres_server, tmp_path, capsys):
    sqlite_url = f"sqlite:///{tmp_path}/source.db"
    source = open_store(sqlite_url)
    source.import_records(RECORDS)
    source.close()

    dump = tmp_path / "dump.jsonl"
    assert main(["export", "--database-url", sqlite_url, "--output", str(dump)]) == 0
    lines = dump.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [r.to_json() for r in RECORDS]
    assert "exported 3 records" in capsys.readouterr().err

    pg_url = postgres_server.fresh_url()
    for _ in range(2):  # importing twice changes nothing
        assert main(["import", "--database-url", pg_url, "--input", str(dump)]) == 0
        assert "imported 3 records" in capsys.readouterr().err
    target = open_store(pg_url)
    try:
        assert list(iter_records(target)) == RECORDS
    finally:
        target.close()

    # And back again, through stdout and stdin, as `export | import` would.
    exported = subprocess.run(
        [sys.executable, "-m", "gameprogress", "export"],
        env=subprocess_env(GAMEPROGRESS_DATABASE_URL=pg_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert exported.stdout.splitlines() == lines
    back_url = f"sqlite:///{tmp_path}/back.db"
    imported = subprocess.run(
        [sys.executable, "-m", "gameprogress", "import", "--database-url", back_url],
        env=subprocess_env(),
        input=exported.stdout,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "imported 3 records" in imported.stderr
    back = open_store(back_url)
    try:
        assert list(iter_records(back)) == RECORDS
    finally:
        back.close()


def test_import_merges_by_keeping_the_highest(database_url, tmp_path):
    store = open_store(database_url)
    try:
        store.import_records([DeviceRecord("alpha", 50, 1_700_000_000, 1_699_999_000, 9)])
        dump = tmp_path / "dump.jsonl"
        dump.write_text("\n".join(json.dumps(r.to_json()) for r in RECORDS) + "\n\n")
        assert main(["import", "--database-url", database_url, "--input", str(dump)]) == 0
        alpha = store.get("alpha")
        # Level 50 beats the file's 10, so its reach time stays; later commit and more updates win.
        assert alpha == DeviceRecord("alpha", 50, 1_700_000_100, 1_699_999_000, 9)
        # A tie on the level keeps the earlier time it was reached.
        store.import_records([DeviceRecord("beta", 0, 1_600_000_000, 1_600_000_000, 1)])
        assert store.get("beta").level_reached_at == 1_600_000_000
    finally:
        store.close()


def test_import_stops_at_a_bad_line_and_names_it(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/x.db"
    dump = tmp_path / "bad.jsonl"
    good = json.dumps(RECORDS[0].to_json())
    dump.write_text(f'{good}\n{{"device_id": "b/c", "level": 1}}\n')
    assert main(["import", "--database-url", url, "--input", str(dump)]) == 1
    assert "line 2" in capsys.readouterr().err
    dump.write_text(f"{good}\nnot json\n")
    assert main(["import", "--database-url", url, "--input", str(dump)]) == 1
    assert "line 2: not JSON" in capsys.readouterr().err
    bad_level = dict(RECORDS[0].to_json(), level=-3)
    dump.write_text(json.dumps(bad_level) + "\n")
    assert main(["import", "--database-url", url, "--input", str(dump)]) == 1
    assert "level must be" in capsys.readouterr().err


def test_unsupported_url_is_a_clear_error(capsys):
    assert main(["migrate", "--database-url", "mysql://somewhere/db"]) == 1
    assert "unsupported database URL" in capsys.readouterr().err


def test_default_database_is_under_var_in_the_working_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gameprogress", "migrate"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "gameprogress.db").is_file()


def test_wsgi_module_reads_the_environment(tmp_path):
    db = tmp_path / "nested" / "dir" / "wsgi.db"
    code = (
        "from gameprogress.wsgi import app\n"
        "c = app.test_client()\n"
        "assert c.get('/update/w/3').status_code == 200\n"
        "print(c.get('/healthz').get_json()['store'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(GAMEPROGRESS_DATABASE_URL=f"sqlite:///{db}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sqlite"
    assert db.is_file()


def test_seed_demo_fills_a_store_with_players_over_the_last_days(database_url, capsys):
    args = ["seed-demo", "--database-url", database_url, "--players", "60", "--days", "10"]
    assert main(args) == 0
    assert re.fullmatch(r"seeded \d+ demo players with \d+ updates\n", capsys.readouterr().err)
    store = open_store(database_url)
    try:
        devices = list(iter_records(store))
        today = dt.datetime.now(dt.timezone.utc).date()
        period = DateRange(today - dt.timedelta(days=10), today)
        active = dict(store.daily_active_devices(period))
        max_level, funnel = store.funnel(20)
    finally:
        store.close()
    assert 50 <= len(devices) <= 60 and all(d.device_id.startswith("demo-") for d in devices)
    assert sum(d.updates for d in devices) > 10 * len(devices)  # players come back
    assert len(active) >= 10  # activity on (nearly) every day of the period
    assert max_level > 10 and len(funnel) > 3  # players spread over the levels
    # Running it again with --if-empty changes nothing.
    assert main([*args, "--if-empty"]) == 0
    assert "nothing seeded" in capsys.readouterr().err
    store = open_store(database_url)
    try:
        assert [r.to_json() for r in iter_records(store)] == [r.to_json() for r in devices]
    finally:
        store.close()
