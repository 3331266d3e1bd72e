"""Reload on code change (uWSGI's `py-autoreload = N`): watch the files of the app's modules.

Standard-library polling, no inotify binding: every N seconds the worker stats the source
file of each module it imported for the app, and on a change tells the master, which does
the same graceful reload as HUP. Only modules the worker imported itself are watched: those
the master had imported before fork (forklift, most of the standard library) are not
re-imported by a reload, so a change to them could not take effect anyway.

Cost, for development only: one stat() per watched file per interval (gameprogress, a
Flask app, brings 115 files: about 1.5 ms per poll).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterable

# The interpreter's own library never changes under a running server.
_STDLIB = tuple(
    os.path.realpath(sysconfig.get_paths()[name]) + os.sep for name in ("stdlib", "platstdlib")
)


def module_files(modules: dict, skip: Iterable[str] = ()) -> list[str]:
    """Source files of `modules` (a sys.modules mapping), minus the names in `skip` and the
    standard library. Built-in and namespace modules have no file and are left out."""
    skip = set(skip)
    files = set()
    for name, module in list(modules.items()):
        if name in skip or module is None:
            continue
        path = getattr(module, "__file__", None)
        if not path or not isinstance(path, str):
            continue
        if path.endswith(".pyc"):
            path = path[:-1]  # a sourceless import: watch the .py next to it if it exists
        path = os.path.realpath(path)
        if path.startswith(_STDLIB) and not ("site-packages" in path or "dist-packages" in path):
            continue
        files.add(path)
    return sorted(files)


def _stamp(path: str) -> tuple | None:
    """What tells a change: mtime and size (an editor that keeps mtime still changes size)."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # deleted (or renamed away in an atomic save): a change, too
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class FileWatcher:
    """Remembers each file's stamp; `changed()` names the first file that differs since."""

    def __init__(self, paths: Iterable[str] = ()):
        self.stamps: dict[str, tuple | None] = {}
        self.add(paths)

    def add(self, paths: Iterable[str]) -> None:
        for path in paths:
            if path not in self.stamps:
                self.stamps[path] = _stamp(path)

    def changed(self) -> str | None:
        """A changed file, or None. Every change seen is taken as the new baseline, so one
        edit is reported once (a reload that fails does not loop)."""
        found = None
        for path, old in self.stamps.items():
            new = _stamp(path)
            if new != old:
                self.stamps[path] = new
                found = found or path
        return found


class Autoreloader:
    """A daemon thread in a worker: every `interval` seconds, look for a changed module file
    and call `on_change(path)`; modules imported later (lazily by the app) join the watch."""

    def __init__(
        self,
        interval: float,
        on_change: Callable[[str], None],
        skip: Iterable[str] = (),
        modules: dict | None = None,
    ):
        self.interval = interval
        self.on_change = on_change
        self.skip = frozenset(skip)
        self.modules = sys.modules if modules is None else modules
        self.watcher = FileWatcher(module_files(self.modules, self.skip))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> str | None:
        """One poll: the changed file (after telling `on_change`), or None."""
        path = self.watcher.changed()
        if path is not None:
            self.on_change(path)
        self.watcher.add(module_files(self.modules, self.skip))
        return path

    def start(self) -> Autoreloader:
        self._thread = threading.Thread(target=self._run, name="py-autoreload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()


def watch_after_ready(notify: Callable[[str], None], interval: float, skip: Iterable[str]):
    """Wrap a worker's `notify` (lines to the master): once the worker says "ready PID",
    its app is imported, and a watcher starts over the modules not in `skip`; a change is
    told to the master as "changed PID PATH"."""
    skip = frozenset(skip)
    watchers: list[Autoreloader] = []

    def notify_and_watch(line: str) -> None:
        notify(line)
        kind, _, pid = line.partition(" ")
        if kind == "ready" and not watchers:
            reloader = Autoreloader(interval, lambda path: notify(f"changed {pid} {path}"), skip)
            watchers.append(reloader.start())

    notify_and_watch.watchers = watchers  # type: ignore[attr-defined]  (to stop them)
    return notify_and_watch
