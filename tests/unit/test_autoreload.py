"""forklift.autoreload: which files are watched, and that an edit is reported exactly once."""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading

import pytest

from forklift.autoreload import Autoreloader, FileWatcher, module_files, watch_after_ready


@pytest.fixture
def app_package(tmp_path, monkeypatch):
    """A two-module app importable from tmp_path; removed from sys.modules afterwards."""
    pkg = tmp_path / "reloadme"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "views.py").write_text("ANSWER = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [n for n in sys.modules if n == "reloadme" or n.startswith("reloadme.")]:
        del sys.modules[name]


def bump(path, text: str) -> None:
    """Rewrite a file and move its mtime forward: no sleeping for a coarse clock."""
    st = os.stat(path)
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_module_files_are_the_apps_not_the_stdlib_nor_what_was_there_before(app_package):
    before = set(sys.modules)
    importlib.import_module("reloadme.views")
    files = module_files(sys.modules, skip=before)
    assert files == sorted(
        [os.path.realpath(app_package / "__init__.py"), os.path.realpath(app_package / "views.py")]
    )
    everything = module_files(sys.modules)
    assert os.path.realpath(json.__file__) not in everything  # stdlib: never watched
    assert os.path.realpath(pytest.__file__) in everything  # site-packages: watched


def test_an_edit_is_reported_once_and_a_deletion_too(app_package):
    views = app_package / "views.py"
    watcher = FileWatcher([str(views)])
    assert watcher.changed() is None
    bump(views, "ANSWER = 2\n")
    assert watcher.changed() == str(views)
    assert watcher.changed() is None  # the new content is the baseline: no reload loop
    os.unlink(views)
    assert watcher.changed() == str(views)
    assert watcher.changed() is None


def test_same_mtime_but_different_size_is_a_change(app_package):
    views = app_package / "views.py"
    watcher = FileWatcher([str(views)])
    st = os.stat(views)
    views.write_text("ANSWER = 12345\n")
    os.utime(views, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert watcher.changed() == str(views)


def test_autoreloader_picks_up_lazily_imported_modules_and_calls_back(app_package):
    seen = []
    before = set(sys.modules)
    importlib.import_module("reloadme")
    reloader = Autoreloader(0.01, seen.append, skip=before)
    assert list(reloader.watcher.stamps) == [os.path.realpath(app_package / "__init__.py")]
    importlib.import_module("reloadme.views")  # the app imports it on its first request
    assert reloader.check() is None
    views = os.path.realpath(app_package / "views.py")
    assert views in reloader.watcher.stamps
    bump(app_package / "views.py", "ANSWER = 3\n")
    assert reloader.check() == views
    assert seen == [views]


def test_the_thread_reports_a_change(app_package):
    before = set(sys.modules)
    importlib.import_module("reloadme.views")
    changed = threading.Event()
    reloader = Autoreloader(0.01, lambda path: changed.set(), skip=before).start()
    try:
        bump(app_package / "views.py", "ANSWER = 4\n")
        assert changed.wait(5), "no change reported within 5 s"
    finally:
        reloader.stop()


def test_watch_after_ready_starts_watching_once_the_worker_is_ready(app_package):
    lines = []
    changed = threading.Event()

    def notify(line: str) -> None:
        lines.append(line)
        if line.startswith("changed "):
            changed.set()

    wrapped = watch_after_ready(notify, 0.01, set(sys.modules))
    importlib.import_module("reloadme.views")  # the worker imports its app...
    wrapped("ready 4242")  # ...then says so
    try:
        bump(app_package / "views.py", "ANSWER = 5\n")
        assert changed.wait(5), lines
    finally:
        for watcher in wrapped.watchers:
            watcher.stop()
    assert lines[0] == "ready 4242"
    assert lines[1] == f"changed 4242 {os.path.realpath(app_package / 'views.py')}"
