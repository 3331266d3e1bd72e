"""The app directory of `forklift deploy`: which releases pruning removes and which it spares,
the deploy lock (busy, stale and taken over, never another host's), `current` and history."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from forklift.deploy.releases import (
    RELEASE_META,
    AppDir,
    DeployLock,
    LockBusy,
    make_read_only,
    plan_prune,
    prune,
)
from support import proc_state, wait_until


@pytest.fixture
def app(tmp_path) -> AppDir:
    app = AppDir(tmp_path / "app")
    app.ensure_layout()
    return app


def add_release(app: AppDir, release_id: str, venv: str | None = None) -> None:
    """A built release: its files, its meta written last, read-only, maybe a venv link."""
    path = app.release_path(release_id)
    path.mkdir()
    (path / "app.py").write_text("application = None\n")
    if venv:
        (app.venvs_dir / venv).mkdir(exist_ok=True)
        (path / ".venv").symlink_to(app.venvs_dir / venv)
    (path / RELEASE_META).write_text(json.dumps({"commit": release_id[-7:]}))
    make_read_only(path)


def record(app: AppDir, to: str, health: str = "healthy") -> None:
    app.append_history({"action": "deploy", "to": to, "release_health": health})


@pytest.fixture
def exited_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


# --- pruning ----------------------------------------------------------------------------------


def test_plan_prune_keeps_the_newest_and_spares_the_protected():
    ids = [f"2026010{i}T000000Z-abcdef{i}" for i in range(1, 7)]  # oldest first
    remove, spared = plan_prune(ids, keep=2, protected={ids[0]: "current"})
    assert remove == [ids[3], ids[2], ids[1]]
    assert spared == {ids[0]: "current"}
    assert plan_prune(ids, keep=10, protected={}) == ([], {})
    assert plan_prune(ids, keep=0, protected={})[0] == list(reversed(ids))


def test_prune_spares_current_and_the_previous_healthy_release(app):
    ids = [f"2026010{i}T000000Z-abcdef{i}" for i in range(1, 6)]
    for release_id in ids:
        add_release(app, release_id)
    record(app, ids[0])
    record(app, ids[1])
    record(app, ids[4], health="failed")
    app.flip(ids[1])  # a rollback made an old release current again
    message = prune(app, keep=1)
    left = [r.id for r in app.releases()]
    # the newest by --keep; the current; the last healthy one before it: ids[0]
    assert left == [ids[0], ids[1], ids[4]]
    assert f"spared {ids[1]} (current)" in message
    assert f"spared {ids[0]} (previous healthy)" in message
    assert f"pruned {ids[3]}, {ids[2]}" in message
    assert app.current_id() == ids[1]


def test_prune_spares_a_release_a_process_still_runs_from(app):
    ids = [f"2026010{i}T000000Z-abcdef{i}" for i in range(1, 4)]
    for release_id in ids:
        add_release(app, release_id)
    app.flip(ids[2])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], cwd=app.release_path(ids[0])
    )
    try:
        message = prune(app, keep=1)
        assert [r.id for r in app.releases()] == [ids[0], ids[2]]
        assert f"spared {ids[0]} (pid {holder.pid} runs from it)" in message
    finally:
        holder.kill()
        holder.wait(10)


def test_prune_removes_read_only_releases_and_the_venvs_nobody_uses(app):
    ids = [f"2026010{i}T000000Z-abcdef{i}" for i in range(1, 4)]
    add_release(app, ids[0], venv="aaaa")
    add_release(app, ids[1], venv="bbbb")
    add_release(app, ids[2], venv="bbbb")  # same dependencies: one venv shared
    (app.venvs_dir / "cccc").mkdir()  # an interrupted build nobody links to
    app.flip(ids[2])
    message = prune(app, keep=2)
    assert not app.release_path(ids[0]).exists()  # read-only inside, still removed
    assert sorted(os.listdir(app.venvs_dir)) == ["bbbb"]
    assert "pruned venvs aaaa, cccc" in message


# --- the lock ---------------------------------------------------------------------------------


def test_the_lock_says_who_holds_it_and_refuses_a_second_deploy(app):
    first = DeployLock(app.lock_path)
    assert first.acquire(ref="main") is None
    holder = json.loads(app.lock_path.read_text())
    assert holder["pid"] == os.getpid() and holder["ref"] == "main"
    assert holder["host"] == socket.gethostname()
    with pytest.raises(LockBusy) as err:
        DeployLock(app.lock_path).acquire(ref="other")
    assert f"a deploy is in progress (pid {os.getpid()}" in str(err.value)
    assert "ref main" in str(err.value)
    first.release()
    assert not app.lock_path.exists()


def test_a_lock_whose_process_is_gone_is_taken_over_and_said_so(app, exited_pid):
    stale = {"pid": exited_pid, "host": socket.gethostname(), "user": "ci", "ref": "v1"}
    app.lock_path.write_text(json.dumps(stale))
    lock = DeployLock(app.lock_path)
    message = lock.acquire(ref="v2")
    assert message == (
        f"stale lock taken over: pid {exited_pid}, user ci, ref v1, and that process is gone"
    )
    assert lock.stale_holder == stale
    assert json.loads(app.lock_path.read_text())["pid"] == os.getpid()
    lock.release()


def test_a_lock_held_by_a_killed_but_unreaped_deploy_is_stale(app):
    """kill -9 of a deploy whose parent has not waited for it yet: a zombie, gone all the same."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc.kill()
        # not reaped: the pid stays a zombie until proc.wait()
        wait_until(lambda: proc_state(proc.pid) == "Z", 5, what="the zombie")
        app.lock_path.write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname()}))
        assert "stale lock taken over" in DeployLock(app.lock_path).acquire()
    finally:
        proc.wait(10)


def test_another_hosts_lock_is_never_taken(app, exited_pid):
    app.lock_path.write_text(json.dumps({"pid": exited_pid, "host": "elsewhere.example"}))
    with pytest.raises(LockBusy, match="a deploy is in progress"):
        DeployLock(app.lock_path).acquire()
    assert json.loads(app.lock_path.read_text())["host"] == "elsewhere.example"


def test_an_unreadable_lock_is_taken_only_once_it_is_old(app):
    """Being written right now by another deploy (O_EXCL, then the JSON), or left empty by a
    crash: the first is waited for briefly, the second taken over."""
    app.lock_path.write_text("")
    old = time.time() - 60
    os.utime(app.lock_path, (old, old))
    lock = DeployLock(app.lock_path)
    assert lock.acquire() is not None
    assert lock.held
    lock.release()


def test_release_leaves_a_lock_that_is_no_longer_ours(app):
    lock = DeployLock(app.lock_path)
    lock.acquire()
    app.lock_path.write_text(json.dumps({"pid": 1, "host": socket.gethostname()}))
    lock.release()
    assert app.lock_path.exists()


# --- current and history ----------------------------------------------------------------------


def test_flip_points_current_at_a_release_by_a_relative_link(app):
    add_release(app, "20260101T000000Z-abcdef1")
    add_release(app, "20260102T000000Z-abcdef2")
    app.flip("20260101T000000Z-abcdef1")
    app.flip("20260102T000000Z-abcdef2")
    assert os.readlink(app.current_link) == os.path.join("releases", "20260102T000000Z-abcdef2")
    assert app.current_id() == "20260102T000000Z-abcdef2"
    assert not [p for p in os.listdir(app.root) if p.startswith(".current")]  # no temp left


def test_a_torn_last_history_line_does_not_hide_the_rest(app):
    record(app, "a")
    record(app, "b", health="failed")
    with open(app.history_path, "a") as f:
        f.write('{"to": "c", "release_he')  # power lost mid-write
    assert [r["to"] for r in app.history()] == ["a", "b"]
    assert app.health() == {"a": "healthy", "b": "failed"}


def test_two_releases_in_the_same_second_get_distinct_ids(app):
    first = app.new_release_id("abcdef1234")
    app.release_path(first).mkdir()
    second = app.new_release_id("abcdef1234")
    assert first.endswith("-abcdef1") and second != first
    assert second.startswith(first)


def test_a_release_id_cannot_reach_outside_the_releases_directory(app):
    assert app.release("../shared") is None
    assert app.release(".hidden") is None
