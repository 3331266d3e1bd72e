"""What the app wrote into its release, found before a switch leaves it behind; and the move of
such a file to `shared/` without losing a write.

A release is one commit, built and sealed; the app must write to `shared/` (linked into
every release). An app that writes next to its code (the seed's `sql.py` opens `progress.db`
beside itself) writes into the serving release, which a deploy then leaves behind: the next
release starts empty, a rollback brings the old data back, pruning deletes it. So, before a
switch, the serving release is compared with what was built (`.forklift-files`, written when
the release was sealed): a file that is new or changed since is named, with the fix.

Generated files that are safe to leave are ignored: `__pycache__/` and `*.pyc` (Python
rebuilds them; a release is byte-compiled when built).

The move (`forklift deploy share --app DIR NAME`) gives the live file a second name in
`shared/` with a hard link — the same inode, so a write made through a descriptor opened
before, during or after the move lands in the one file, and nothing is copied — then renames a
symlink over the old name. SQLite's companions (`-wal`, `-shm`, `-journal`) present at that
moment are linked the same way, so connections opened before and after the move share them.
A directory is moved with one rename (its files keep their inodes), then linked.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from .releases import AppDir, DeployError, read_json

MANIFEST = ".forklift-files"  # path -> [size, mtime_ns] of everything the sealed release holds
IGNORED_DIRS = ("__pycache__",)
IGNORED_SUFFIXES = (".pyc",)
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
_LISTED = 12  # strays named one by one; the rest are counted


@dataclass
class Stray:
    """A path the app wrote into a release: new (not built there) or changed since the build."""

    path: str  # relative to the release
    size: int
    mtime: float
    kind: str  # "new file", "changed", "new directory (N files)", "new link"

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.mtime))
        return f"{self.path}  {self.kind}, {self.size} bytes, last written {when}"


# --- the manifest, written when a release is sealed ----------------------------------------------


def write_manifest(release: Path) -> None:
    """Record what the release holds now (called last, before the write bits go)."""
    entries = {}
    for rel, st in _walk(release):
        entries[rel] = [st.st_size if stat.S_ISREG(st.st_mode) else 0, st.st_mtime_ns]
    entries[MANIFEST] = [0, 0]
    with open(release / MANIFEST, "w") as f:
        json.dump(entries, f, separators=(",", ":"), sort_keys=True)


def _walk(root: Path):
    """(relative path, lstat) of every entry under root, links not followed, ignored ones out."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in IGNORED_DIRS]
        for name in dirnames + filenames:
            if name.endswith(IGNORED_SUFFIXES):
                continue
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue  # removed while we looked
            yield os.path.relpath(full, root), st


# --- finding strays ------------------------------------------------------------------------------


def find_strays(app: AppDir, release_id: str) -> list:
    """What the app wrote into `release_id` since it was built, oldest path first.

    Without a manifest (a release built by an older forklift), the commit's file list from
    `cache.git` is used, and only new paths are found (not changed ones).
    """
    release = app.release_path(release_id)
    built = read_json(release / MANIFEST)
    check_changes = built is not None
    if built is None:
        built = _from_commit(app, release)
        if built is None:
            return []
    strays = []
    new_dirs: list = []
    for rel, st in sorted(_walk(release)):
        if rel == MANIFEST or any(rel.startswith(d + os.sep) for d in new_dirs):
            continue  # counted with its new directory
        known = built.get(rel)
        if known is None:
            if stat.S_ISDIR(st.st_mode):
                new_dirs.append(rel)
                strays.append(_directory_stray(release, rel))
            elif stat.S_ISLNK(st.st_mode):
                if not _into_shared(app, release / rel):  # `share` links into shared/
                    strays.append(Stray(rel, 0, st.st_mtime, "new link"))
            else:
                strays.append(Stray(rel, st.st_size, st.st_mtime, "new file"))
        elif check_changes and stat.S_ISREG(st.st_mode) and _changed(known, st):
            strays.append(Stray(rel, st.st_size, st.st_mtime, "changed since the build"))
    return strays


def _changed(known: list, st: os.stat_result) -> bool:
    return list(known) != [st.st_size, st.st_mtime_ns]


def _into_shared(app: AppDir, link: Path) -> bool:
    target = os.path.normpath(os.path.join(link.parent, os.readlink(link)))
    return target.startswith(str(app.shared_dir) + os.sep)


def _directory_stray(release: Path, rel: str) -> Stray:
    size, count, newest = 0, 0, os.lstat(release / rel).st_mtime
    for _, st in _walk(release / rel):
        if stat.S_ISREG(st.st_mode):
            size += st.st_size
            count += 1
        newest = max(newest, st.st_mtime)
    return Stray(rel, size, newest, f"new directory ({count} file(s))")


def _from_commit(app: AppDir, release: Path) -> dict | None:
    from .source import git

    meta = read_json(release / ".forklift-release.json") or {}
    commit = meta.get("commit")
    if not commit or not (app.cache_git / "HEAD").exists():
        return None
    listing = git("ls-tree", "-r", "-t", "--name-only", commit, git_dir=app.cache_git, check=False)
    if not listing:
        return None
    built = {name: [0, 0] for name in listing.splitlines()}
    for extra in (".venv", ".forklift-release.json", *os.listdir(app.shared_dir)):
        built[extra] = [0, 0]
    return built


def report(app: AppDir, release_id: str, strays: list) -> tuple:
    """(one-line reason, lines naming each stray and the fix) for a deploy that stops."""
    reason = (
        f"the serving release {release_id} holds {len(strays)} path(s) the app wrote there; "
        f"a switch would leave them behind"
    )
    lines = [s.describe() for s in strays[:_LISTED]]
    if len(strays) > _LISTED:
        lines.append(f"... and {len(strays) - _LISTED} more")
    names = " ".join(_top_names(strays))
    lines.append(
        f"fix: forklift deploy share --app {app.root} {names}"
        "  (moves them to shared/ losing no write, and links them into every release)"
    )
    lines.append("or deploy anyway with --allow-stray (they stay in the old release)")
    return reason, lines


def _top_names(strays: list) -> list:
    """What to share: SQLite companions go with their database, nothing named twice."""
    names = []
    for s in strays:
        name = s.path
        for suffix in SQLITE_COMPANIONS:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        if name not in names:
            names.append(name)
    return names


def check_serving(app: AppDir, serving: str | None, allow: bool) -> tuple:
    """The strays step: (detail, lines); DeployError naming them unless `allow`."""
    if not serving or app.release(serving) is None:
        return "no serving release", []
    found = find_strays(app, serving)
    if not found:
        return f"nothing written into {serving} since it was built", []
    reason, lines = report(app, serving, found)
    if not allow:
        raise DeployError(reason, lines)
    return f"WARNING (--allow-stray): {reason}", lines[:-2]


# --- the move to shared/ -------------------------------------------------------------------------


def share(app: AppDir, name: str) -> str:
    """Make `name` a shared path: moved from the serving release if it is there, else created.

    Returns what was done, in one line. Raises DeployError when it cannot be done safely.
    """
    rel = _clean_name(name)
    is_dir_name = name.endswith("/")
    app.ensure_layout()
    target = app.shared_dir / rel
    current = app.current_id()
    source = app.release_path(current) / rel if current else None
    if target.exists() or target.is_symlink():
        if source is not None and _is_plain(source):
            raise DeployError(
                f"shared/{rel} exists and the serving release holds its own {rel}: "
                "which one is right is yours to decide (move one away, then run this again)"
            )
        what = f"shared/{rel} already exists"
        if source is not None and not source.is_symlink():
            _link_into(app, source, rel)
            what += f"; linked into {current}"
        return what
    target.parent.mkdir(parents=True, exist_ok=True)
    if source is None or not (source.exists() or source.is_symlink()):
        if is_dir_name:
            target.mkdir()
            made = "created the directory"
        else:
            target.touch()
            made = "created the empty file"
        if source is not None:
            _link_into(app, source, rel)
        return f"{made} shared/{rel}" + (f"; linked into {current}" if source else "")
    if source.is_symlink():
        raise DeployError(f"{source} is a link already ({os.readlink(source)}): nothing to move")
    if source.is_dir():
        with _writable(source.parent):
            os.rename(source, target)  # same filesystem: the directory and its inodes move
            _symlink_over(source, _link_text(rel))
        return f"moved the directory {rel} of {current} to shared/{rel} and linked it there"
    moved = [rel]
    try:
        os.link(source, target)  # a second name for the live file: every write reaches it
    except OSError as exc:
        raise DeployError(
            f"cannot link {source} into {app.shared_dir}: {exc.strerror} "
            "(shared/ must be on the same filesystem as releases/)"
        ) from None
    for suffix in SQLITE_COMPANIONS:
        companion = source.with_name(source.name + suffix)
        if companion.is_file() and not companion.is_symlink():
            try:
                os.link(companion, target.with_name(target.name + suffix))
                moved.append(rel + suffix)
            except FileNotFoundError:
                pass  # a journal that ended meanwhile: nothing to keep
    with _writable(source.parent):
        _symlink_over(source, _link_text(rel))
        for extra in moved[1:]:
            companion = source.parent / Path(extra).name
            _symlink_over(companion, _link_text(extra))
    others = _other_copies(app, rel, current)
    detail = f"moved {', '.join(moved)} of {current} to shared/ (hard link, no copy) and linked it"
    if others:
        detail += f"; older releases still hold their own {rel}: {', '.join(others)} (left as is)"
    return detail


def _clean_name(name: str) -> str:
    rel = os.path.normpath(name.strip().rstrip("/"))
    if not rel or rel == "." or rel.startswith("..") or os.path.isabs(rel):
        raise DeployError(f"--shared {name!r}: give a path inside the release, like var/app.db")
    return rel


def _is_plain(path: Path | None) -> bool:
    return path is not None and not path.is_symlink() and path.exists()


def _link_text(rel: str) -> str:
    """The symlink a release holds at `rel`: up to the app directory, then into shared/."""
    depth = len(Path(rel).parts) - 1
    return os.path.join(*([".."] * (depth + 2)), "shared", rel)


def _link_into(app: AppDir, source: Path, rel: str) -> None:
    if not source.parent.is_dir():
        return
    with _writable(source.parent):
        _symlink_over(source, _link_text(rel))


def _symlink_over(path: Path, text: str) -> None:
    """Replace `path` by a symlink in one rename: there is always something at that name."""
    tmp = path.with_name(f".{path.name}.forklift-link")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(text, tmp)
    os.replace(tmp, path)


class _writable:
    """A sealed release directory opened for one change, then sealed again."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.mode = 0

    def __enter__(self):
        self.mode = stat.S_IMODE(os.stat(self.directory).st_mode)
        os.chmod(self.directory, self.mode | stat.S_IWUSR)
        return self

    def __exit__(self, *exc):
        os.chmod(self.directory, self.mode)


def _other_copies(app: AppDir, rel: str, current: str | None) -> list:
    found = []
    for release in app.releases():
        if release.id == current:
            continue
        path = release.path / rel
        if _is_plain(path):
            found.append(release.id)
    return found
