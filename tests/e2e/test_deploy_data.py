"""forklift deploy and the app's data: what it wrote into its release is not left behind.

One app directory, one forklift master on DIR/current, the steps in file order: the app
writes a SQLite file into its release (as the seed's sql.py does), the deploy stops naming
it and the fix, `forklift deploy share` moves it, the next deploy (pushed with git, its watch
streaming progress lines to the pusher) links it; `--allow-stray` deploys anyway, warning.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess

import pytest
from test_deploy import HOST, Server, deploy_json, forklift, git, make_origin

pytestmark = pytest.mark.requires("git")


class Story:
    def __init__(self, root):
        self.root = root
        self.origin = make_origin(root)
        self.app = root / "app"
        self.pidfile = root / "forklift.pid"
        self.server = Server(self.app, self.pidfile, root / "forklift.log")

    def current(self):
        return self.app / "releases" / os.path.basename(os.readlink(self.app / "current"))

    def remembered(self) -> dict:
        return json.loads((self.app / "deploy.json").read_text())


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    s = Story(tmp_path_factory.mktemp("deploy-data"))
    first = forklift(
        "deploy", "--app", str(s.app), "--repo", str(s.origin), "--ref", "v1",
        "--module", "app:application", "--pidfile", str(s.pidfile), "--health", "/healthz",
        "--health-host", HOST, "--pip-args=--no-index", "--watch", "3",
    )  # fmt: skip
    assert first.returncode == 3, first.stdout + first.stderr
    s.server.start()
    yield s
    s.server.stop()


def test_a_file_the_app_wrote_into_its_release_stops_the_deploy(story):
    serving = story.current()
    with sqlite3.connect(serving / "progress.db") as db:  # the app, writing beside its code
        db.execute("CREATE TABLE progress (device TEXT PRIMARY KEY, level INTEGER)")
        db.execute("INSERT INTO progress VALUES ('dev-1', 7)")
    db.close()
    pycache = serving / "__pycache__"
    if not pycache.exists():
        os.chmod(serving, 0o755)
        pycache.mkdir()
        os.chmod(serving, 0o555)
    (pycache / "extra.cpython-311.pyc").write_bytes(b"\0" * 16)  # generated: ignored
    before = sorted(os.listdir(story.app / "releases"))
    proc, steps, summary = deploy_json("deploy", "--app", str(story.app), "--ref", "v2")
    assert proc.returncode == 1, proc.stdout
    assert summary["failed_step"] == "strays"
    assert f"the serving release {serving.name} holds 1 path(s)" in summary["reason"]
    lines = steps["strays"]["lines"]
    size = (serving / "progress.db").stat().st_size
    assert re.match(rf"progress\.db  new file, {size} bytes, last written 20\d\d-", lines[0]), lines
    assert f"fix: forklift deploy share --app {story.app} progress.db  (" in lines[1], lines
    assert "fetch" not in steps, "nothing else is done"
    assert story.current() == serving and sorted(os.listdir(story.app / "releases")) == before


def test_share_moves_it_and_the_next_release_links_it(story):
    serving = story.current()
    proc = forklift("deploy", "share", "--app", str(story.app), "progress.db")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "moved progress.db" in proc.stdout
    assert story.remembered()["shared"] == ["progress.db"]
    assert os.path.islink(serving / "progress.db")
    assert get_level(story.app / "shared" / "progress.db") == 7


def test_a_pushed_deploy_streams_the_watch_progress_and_keeps_the_data(story, tmp_path):
    init = forklift("deploy", "--app", str(story.app), "--init-push")
    assert init.returncode == 0, init.stdout + init.stderr
    clone = tmp_path / "clone"
    git("clone", "-q", str(story.origin), str(clone), cwd=tmp_path)
    v2 = git("rev-parse", "v2^{commit}", cwd=clone)
    push = subprocess.run(
        ["git", "push", str(story.app / "repo.git"), f"{v2}:refs/heads/main"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert push.returncode == 0, push.stderr
    remote = [line for line in push.stderr.splitlines() if line.startswith("remote:")]
    text = "\n".join(remote)
    assert re.search(r"^remote: settings: repo=\S+repo\.git .*watch=3s", text, re.M), text
    progress = [line for line in remote if re.match(r"remote: +watch +\.\. ", line)]
    assert progress, text  # every second of a 3 s watch
    assert re.search(r"\ds of 3s: \d+ request\(s\), 5xx 0, 0 crash\(es\), \ds left", progress[0])
    assert any("remote: deployed " in line for line in remote), text
    new = story.current()
    assert new.name.endswith(v2[:7])
    assert os.readlink(new / "progress.db") == "../../shared/progress.db"
    assert get_level(new / "progress.db") == 7


def test_allow_stray_deploys_anyway_with_a_warning_and_one_off_options_stay_one_off(story):
    serving = story.current()
    os.chmod(serving, 0o755)
    (serving / "uploads").mkdir()
    (serving / "uploads" / "avatar.png").write_bytes(b"png" * 10)
    os.chmod(serving, 0o555)
    proc = forklift(
        "deploy", "--app", str(story.app), "--ref", "main", "--allow-stray", "--watch", "0"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("  strays"))
    assert "ok     WARNING (--allow-stray)" in line and "holds 1 path(s)" in line
    assert "uploads  new directory (1 file(s)), 30 bytes" in proc.stdout
    assert "this run only: watch=0s (--save keeps them)" in proc.stdout
    assert story.remembered()["watch"] == 3.0


def get_level(path) -> int:
    with sqlite3.connect(path) as db:
        (level,) = db.execute("SELECT level FROM progress WHERE device = 'dev-1'").fetchone()
    db.close()
    return level
