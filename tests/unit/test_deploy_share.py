"""What the app wrote into its release: found before a switch, moved to shared/ losing nothing.

A release is built here by hand the way the deploy seals one (files, `.forklift-files`, no
write bits), `current` points at it, and a writer process plays the seed's `sql.py`: SQLite
in the working directory, one connection per write and one kept open, writing all along.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forklift.deploy.releases import AppDir, DeployError, make_read_only
from forklift.deploy.steps import link_shared
from forklift.deploy.strays import find_strays, report, share, write_manifest

WRITER = r"""
import os, sqlite3, sys, time
# one connection kept open for the whole run, another opened per write: the two ways apps do it
kept = sqlite3.connect("progress.db", timeout=30)
kept.execute("PRAGMA synchronous=OFF")  # speed only: nothing here survives a crash anyway
kept.execute("CREATE TABLE IF NOT EXISTS w (id INTEGER PRIMARY KEY, how TEXT)")
kept.commit()
print("READY", flush=True)
n = 0
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    n += 1
    if n % 2:
        kept.execute("INSERT INTO w (id, how) VALUES (?, 'kept')", (n,))
        kept.commit()
    else:
        with sqlite3.connect("progress.db", timeout=30) as each:
            each.execute("PRAGMA synchronous=OFF")
            each.execute("INSERT INTO w (id, how) VALUES (?, 'each')", (n,))
        each.close()
    print(n, flush=True)  # acknowledged: committed
    time.sleep(0.001)
"""


def make_app(tmp_path: Path, files: dict) -> AppDir:
    """An app directory whose current release holds `files`, sealed like a deploy seals it."""
    app = AppDir(tmp_path / "app")
    app.ensure_layout()
    release = app.release_path("20260101T000000Z-abcdef0")
    release.mkdir()
    for name, text in files.items():
        (release / name).parent.mkdir(parents=True, exist_ok=True)
        (release / name).write_text(text)
    (release / ".forklift-release.json").write_text(json.dumps({"commit": "abcdef0" * 5}))
    write_manifest(release)
    make_read_only(release)
    app.flip(release.name)
    return app


def test_a_clean_release_has_no_strays_and_generated_files_are_ignored(tmp_path):
    app = make_app(tmp_path, {"app.py": "x = 1\n", "pkg/mod.py": ""})
    release = app.release_path(app.current_id())
    os.chmod(release / "pkg", 0o755)
    (release / "pkg" / "__pycache__").mkdir()
    (release / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0" * 10)
    (release / "pkg" / "old.pyc").write_bytes(b"\0")
    assert find_strays(app, app.current_id()) == []


def test_new_and_changed_files_are_named_with_size_and_time(tmp_path):
    app = make_app(tmp_path, {"app.py": "x = 1\n", "data.json": "{}"})
    release = app.release_path(app.current_id())
    os.chmod(release, 0o755)
    os.chmod(release / "data.json", 0o644)
    (release / "progress.db").write_bytes(b"x" * 4096)
    (release / "progress.db-journal").write_bytes(b"j" * 512)
    (release / "uploads").mkdir()
    (release / "uploads" / "a.png").write_bytes(b"p" * 100)
    (release / "uploads" / "b.png").write_bytes(b"p" * 50)
    time.sleep(0.01)
    (release / "data.json").write_text('{"changed": true}')
    strays = {s.path: s for s in find_strays(app, app.current_id())}
    assert set(strays) == {"data.json", "progress.db", "progress.db-journal", "uploads"}
    assert strays["progress.db"].size == 4096 and strays["progress.db"].kind == "new file"
    assert strays["uploads"].size == 150 and "2 file(s)" in strays["uploads"].kind
    assert strays["data.json"].kind == "changed since the build"
    assert abs(strays["progress.db"].mtime - time.time()) < 60
    reason, lines = report(app, app.current_id(), list(strays.values()))
    assert "holds 4 path(s)" in reason and app.current_id() in reason
    assert any(
        line.startswith("progress.db  new file, 4096 bytes, last written 20") for line in lines
    )
    fix = next(line for line in lines if line.startswith("fix: "))
    # the journal goes with its database: named once
    assert fix.split("  (")[0].endswith(
        "share --app " + str(app.root) + " data.json progress.db uploads"
    )
    assert lines[-1].startswith("or deploy anyway with --allow-stray")


def test_share_moves_a_live_sqlite_file_without_losing_a_write(tmp_path):
    app = make_app(tmp_path, {"sql.py": "# the seed's storage\n"})
    release = app.release_path(app.current_id())
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(stop)],
        cwd=release,  # root writes into the read-only release, as the seed's app did
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "READY", writer.stderr.read()
        before = _read_until(writer, 200)  # writing well before the move
        detail = share(app, "progress.db")
        moved_at = _read_until(writer, 200)  # and well after it
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    acknowledged = before + moved_at + [int(x) for x in out.split()]
    assert "moved progress.db" in detail and "hard link" in detail
    shared = app.shared_dir / "progress.db"
    assert shared.is_file() and not shared.is_symlink()
    assert os.readlink(release / "progress.db") == "../../shared/progress.db"
    with sqlite3.connect(shared) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM w")}
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged writes lost: {sorted(missing)[:10]}"
    assert len(acknowledged) >= 400
    # the next release links it; the serving one shows nothing stray any more
    assert find_strays(app, app.current_id()) == []
    new = app.release_path("20260102T000000Z-1234567")
    new.mkdir()
    assert "progress.db" in link_shared(app, new, ["progress.db"])
    assert (new / "progress.db").resolve() == shared.resolve()


def _read_until(writer: subprocess.Popen, count: int) -> list:
    """The next `count` acknowledged write ids (bounded: the writer stops within 60 s)."""
    seen = []
    for _ in range(count):
        line = writer.stdout.readline()
        if not line:
            break
        seen.append(int(line))
    return seen


def test_share_a_directory_and_a_path_not_written_yet(tmp_path):
    app = make_app(tmp_path, {"app.py": ""})
    release = app.release_path(app.current_id())
    os.chmod(release, 0o755)
    (release / "uploads").mkdir()
    (release / "uploads" / "a.png").write_bytes(b"png")
    os.chmod(release, 0o555)
    assert "moved the directory uploads" in share(app, "uploads/")
    assert (app.shared_dir / "uploads" / "a.png").read_bytes() == b"png"
    assert (release / "uploads").is_symlink()
    assert stat_mode(release) == 0o555  # sealed again
    assert "created the empty file shared/.env" in share(app, ".env")
    assert (release / ".env").is_symlink() and (app.shared_dir / ".env").is_file()
    assert find_strays(app, app.current_id()) == []
    with pytest.raises(DeployError, match="a path inside the release"):
        share(app, "../elsewhere")


def test_link_shared_links_nested_names_and_every_top_level_entry(tmp_path):
    app = make_app(tmp_path, {"app.py": ""})
    (app.shared_dir / "var").mkdir()
    (app.shared_dir / "var" / "app.db").write_bytes(b"")
    (app.shared_dir / "logs").mkdir()
    release = app.release_path("20260102T000000Z-1234567")
    release.mkdir()
    (release / "var").mkdir()
    (release / "var" / "seed.json").write_text("{}")  # from the commit: stays
    linked = link_shared(app, release, ["var/app.db"])
    assert sorted(linked) == ["logs", "var/app.db"]
    assert os.readlink(release / "var" / "app.db") == "../../../shared/var/app.db"
    assert (release / "var" / "app.db").exists() and (release / "var" / "seed.json").exists()
    assert os.readlink(release / "logs") == "../../shared/logs"


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


@pytest.mark.requires("git")
def test_a_release_built_before_manifests_is_compared_with_its_commit(tmp_path):
    """Releases from an older forklift have no .forklift-files: cache.git's tree is the truth."""
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid")
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=work, env=env, check=True)
    (work / "pkg").mkdir()
    (work / "pkg" / "mod.py").write_text("")
    (work / "app.py").write_text("")
    subprocess.run(["git", "add", "-A"], cwd=work, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "1"], cwd=work, env=env, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True, check=True
    ).stdout.strip()
    app = AppDir(tmp_path / "app")
    app.ensure_layout()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(app.cache_git)], check=True)
    release = app.release_path("20250101T000000Z-" + commit[:7])
    (release / "pkg").mkdir(parents=True)
    (release / "pkg" / "mod.py").write_text("")
    (release / "app.py").write_text("")
    (release / ".forklift-release.json").write_text(json.dumps({"commit": commit}))
    (release / ".venv").symlink_to("../../venvs/x")
    (release / "pkg" / "cache.db").write_bytes(b"d" * 7)
    app.flip(release.name)
    assert [(s.path, s.size) for s in find_strays(app, release.name)] == [("pkg/cache.db", 7)]
