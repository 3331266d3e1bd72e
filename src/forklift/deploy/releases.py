"""The app directory on disk: releases, venvs, shared files, `current`, history, lock, pruning.

    DIR/releases/<UTC timestamp>-<sha7>/   one exported commit each, never modified once built
    DIR/venvs/<dependency hash>/           venvs built at their final path, shared by releases
    DIR/shared/                            what outlives releases (.env, var/, logs)
    DIR/current -> releases/<id>           switched with an atomic rename
    DIR/deploys.jsonl                      one JSON object per deploy or rollback
    DIR/deploy.lock                        held by the deploy in progress
    DIR/deploy.json                        the remembered options (--repo, --pidfile, ...)
    DIR/cache.git/                         a bare copy of --repo, fetched by each deploy

This module neither runs the app nor talks to the master.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ForkliftError

RELEASE_META = ".forklift-release.json"  # written last when a release is built
HEALTHY = "healthy"


# option name -> settings key; what is given is remembered in DIR/deploy.json
REMEMBERED_OPTIONS = {
    "repo": "repo",
    "pidfile": "pidfile",
    "module": "module",
    "ini": "ini",
    "wsgi_file": "wsgi_file",
    "callable": "callable",
    "health": "health",
    "health_host": "health_host",
    "release_command": "release_command",
    "shared": "shared",
    "watch": "watch",
    "keep": "keep",
    "nginx": "nginx",
    "nginx_source": "nginx_source",
    "nginx_upstream": "nginx_upstream",
    "nginx_server_name": "nginx_server_name",
    "nginx_listen": "nginx_listen",
    "nginx_cmd": "nginx_cmd",
}


class DeployError(ForkliftError):
    """A deploy cannot go on; the message says why in one line, `lines` may show more (pip's)."""

    def __init__(self, message: str, lines: list | tuple = ()):
        super().__init__(message)
        self.lines = list(lines)


class LockBusy(DeployError):
    """Another deploy holds the lock."""


@dataclass
class Release:
    id: str
    path: Path
    meta: dict

    @property
    def commit(self) -> str:
        return self.meta.get("commit", "")

    @property
    def complete(self) -> bool:
        return bool(self.meta)


class AppDir:
    """Paths and plain operations of one app directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.abspath(root))
        self.releases_dir = self.root / "releases"
        self.venvs_dir = self.root / "venvs"
        self.shared_dir = self.root / "shared"
        self.current_link = self.root / "current"
        self.history_path = self.root / "deploys.jsonl"
        self.lock_path = self.root / "deploy.lock"
        self.settings_path = self.root / "deploy.json"
        self.cache_git = self.root / "cache.git"
        self.push_repo = self.root / "repo.git"

    def ensure_layout(self) -> None:
        for path in (self.releases_dir, self.venvs_dir, self.shared_dir):
            path.mkdir(parents=True, exist_ok=True)

    # -- releases ---------------------------------------------------------------------------
    def new_release_id(self, commit: str, stamp: str | None = None) -> str:
        """`<UTC timestamp>-<sha7>`: names sort by time; a suffix only if two share a second.

        `stamp` is the timestamp part given by a deploy to several hosts (one id on all)."""
        base = (stamp or release_stamp()) + "-" + commit[:7]
        candidate, n = base, 1
        while (self.releases_dir / candidate).exists():
            n += 1
            candidate = f"{base}.{n}"
        return candidate

    def release_path(self, release_id: str) -> Path:
        return self.releases_dir / release_id

    def release(self, release_id: str) -> Release | None:
        path = self.releases_dir / release_id
        if "/" in release_id or release_id.startswith(".") or not path.is_dir():
            return None
        return Release(release_id, path, read_json(path / RELEASE_META) or {})

    def releases(self) -> list:
        """Every release directory, oldest first (complete or not: see `Release.complete`)."""
        if not self.releases_dir.is_dir():
            return []
        found = []
        for name in sorted(os.listdir(self.releases_dir)):
            release = self.release(name)
            if release is not None:
                found.append(release)
        return found

    def current_id(self) -> str | None:
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        return os.path.basename(os.path.normpath(target))

    def flip(self, release_id: str) -> None:
        """Point `current` at a release: a new symlink renamed over the old one (atomic)."""
        tmp = self.root / f".current.{os.getpid()}.tmp"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(os.path.join("releases", release_id), tmp)
        os.replace(tmp, self.current_link)
        _fsync_dir(self.root)

    # -- remembered options -----------------------------------------------------------------
    def load_settings(self) -> dict:
        return read_json(self.settings_path) or {}

    def save_settings(self, settings: dict) -> None:
        write_json_atomic(self.settings_path, settings)

    # -- history ----------------------------------------------------------------------------
    def append_history(self, record: dict) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self.history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write with O_APPEND: records never interleave
            os.fsync(fd)
        finally:
            os.close(fd)

    def history(self) -> list:
        try:
            text = self.history_path.read_text()
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a torn last line (power loss) must not hide the rest
        return records

    def health(self) -> dict:
        """release id -> 'healthy', 'failed' or 'rolled back': the last verdict about it."""
        states = {}
        for record in self.history():
            to = record.get("to")
            if to and record.get("release_health"):
                states[to] = record["release_health"]
        return states

    def previous_healthy(self, exclude: str | None = None) -> str | None:
        """The healthy release (still on disk) most recently made current, other than `exclude`."""
        states = self.health()
        for record in reversed(self.history()):
            to = record.get("to")
            if to and to != exclude and states.get(to) == HEALTHY and self.release(to) is not None:
                return to
        return None


# --- the lock ----------------------------------------------------------------------------------


class DeployLock:
    """`deploy.lock`: created with O_EXCL, holding who deploys what since when.

    A lock whose pid is gone (on this host) is stale: it is taken over, and `acquire` says so.
    """

    def __init__(self, path: Path):
        self.path = path
        self.info: dict = {}
        self.held = False
        self.stale_holder: dict | None = None  # what the taken-over lock said

    def acquire(self, **info) -> str | None:
        """Take the lock; return a message when a stale lock was taken over. LockBusy if held."""
        self.info = {
            "pid": os.getpid(),
            "user": current_user(),
            "host": socket.gethostname(),
            "started": utc_now(),
            **info,
        }
        message = None
        for _ in range(3):
            if self._create():
                self.held = True
                return message
            holder = read_json(self.path)
            if holder is None:
                try:
                    age = time.time() - self.path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age < 5.0:  # being written right now by another deploy
                    time.sleep(0.2)
                    continue
                holder = {}
            if not _is_stale(holder):
                raise LockBusy(f"{self.path}: a deploy is in progress ({describe_holder(holder)})")
            if not self._take_over(holder):
                continue
            message = f"stale lock taken over: {describe_holder(holder)}, and that process is gone"
            self.stale_holder = holder
        raise LockBusy(f"{self.path}: could not take the lock")

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.info, f)
        return True

    def _take_over(self, holder: dict) -> bool:
        """Move the stale lock aside, and only if it is still the one judged stale."""
        aside = self.path.with_name(f"{self.path.name}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # someone removed it: just try to create it again
        if (read_json(aside) or {}) != holder:
            # another deploy took it over between our read and our rename: give it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True

    def update(self, **fields) -> None:
        """Add to what the lock says (the release being built), keeping it ours."""
        if not self.held:
            return
        self.info.update(fields)
        write_json_atomic(self.path, self.info)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = read_json(self.path) or {}
        if holder.get("pid") == os.getpid():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _is_stale(holder: dict) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True  # not a lock we can read: it was never a valid lock
    if holder.get("host") not in (None, socket.gethostname()):
        return False  # another machine's deploy (shared filesystem): cannot tell, never steal
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed deploy whose parent has not reaped it yet still answers kill(pid, 0)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def describe_holder(holder: dict) -> str:
    parts = [f"pid {holder.get('pid', '?')}"]
    if holder.get("user"):
        parts.append(f"user {holder['user']}")
    if holder.get("action") == "rollback":
        parts.append(f"rollback to {holder.get('to') or 'the previous release'}")
    elif holder.get("ref"):
        parts.append(f"ref {holder['ref']}")
    if holder.get("started"):
        parts.append(f"since {holder['started']}")
    if holder.get("deploy_id"):
        parts.append(f"deploy {holder['deploy_id']} from {holder.get('coordinator', '?')}")
    if holder.get("abandoned"):
        parts.append(f"cut off: {holder['abandoned']}")
    return ", ".join(parts)


# --- pruning -----------------------------------------------------------------------------------


def processes_in(directories: list) -> dict:
    """directory -> pids of processes whose working directory is inside it (/proc/*/cwd)."""
    real = {os.path.realpath(d): d for d in directories}
    found: dict = {}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue  # gone, or not ours to look at
        for path, directory in real.items():
            if cwd == path or cwd.startswith(path + os.sep):
                found.setdefault(directory, []).append(int(pid))
    return found


def plan_prune(release_ids: list, keep: int, protected: dict) -> tuple:
    """Which releases to remove: all but the `keep` newest, never a protected one.

    `release_ids` sorts oldest first; `protected` maps an id to why it stays.
    Returns (to_remove, {id: reason} for protected releases beyond `keep`).
    """
    newest_first = sorted(release_ids, reverse=True)
    remove, spared = [], {}
    for release_id in newest_first[max(keep, 0) :]:
        if release_id in protected:
            spared[release_id] = protected[release_id]
        else:
            remove.append(release_id)
    return remove, spared


def prune(app: AppDir, keep: int) -> str:
    """Remove all but the `keep` newest releases, sparing the current one, the previous
    healthy one and any a live process runs from; then the venvs no release uses."""
    releases = app.releases()
    current = app.current_id()
    protected = {}
    if current:
        protected[current] = "current"
    previous = app.previous_healthy(exclude=current)
    if previous:
        protected[previous] = "previous healthy"
    users = processes_in([r.path for r in releases])
    for release in releases:
        if release.path in users:
            protected.setdefault(release.id, f"pid {users[release.path][0]} runs from it")
    remove, spared = plan_prune([r.id for r in releases], keep, protected)
    for release_id in remove:
        remove_tree(app.release_path(release_id))
    used = {os.path.realpath(r.path / ".venv") for r in app.releases()}
    removed_venvs = []
    for name in sorted(os.listdir(app.venvs_dir)):
        path = app.venvs_dir / name
        if os.path.realpath(path) not in used:
            remove_tree(path)
            removed_venvs.append(name)
    parts = [f"kept {len(releases) - len(remove)} release(s) (--keep {keep})"]
    if remove:
        parts.append("pruned " + ", ".join(remove))
    for release_id, why in spared.items():
        parts.append(f"spared {release_id} ({why})")
    if removed_venvs:
        parts.append("pruned venvs " + ", ".join(removed_venvs))
    return "; ".join(parts)


def remove_tree(path: Path) -> None:
    """rm -r, even through the read-only directories a built release is made of."""
    if path.is_symlink() or not path.exists():
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o755)
    os.chmod(path, 0o755)
    shutil.rmtree(path)


def make_read_only(path: Path) -> None:
    """Drop every write bit in a release (links are left alone: they point outside it)."""
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                os.chmod(full, stat.S_IMODE(st.st_mode) & ~0o222)
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                os.chmod(full, 0o555)
    os.chmod(path, 0o555)


# --- small helpers -----------------------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json_atomic(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def release_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
