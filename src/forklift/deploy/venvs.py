"""The venv of a release: its dependency file, the hash that names it, build or reuse.

`venvs/<hash>/` is built at its final path (a venv cannot be moved) and marked complete by
`.forklift-venv.json` only once pip succeeded; a venv without the mark is an interrupted
build and is built again. Releases whose dependency files are identical share one venv.

The hash covers the Python version, the dependency file's bytes and the bytes of what its
requirement lines name inside the release (`./vendor/pkg.whl`, `-r base.txt`, `./libs/x/`),
so a changed local package is a new venv too.

Speed: the venv is created `--without-pip` (milliseconds, not seconds) and pip runs from
forklift's own environment with `pip --python VENV/bin/python`. Without a usable pip there
(pip < 22.3 or none), the venv gets its own pip from `ensurepip`, as `python -m venv` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .releases import DeployError, remove_tree, utc_now

VENV_MARK = ".forklift-venv.json"
DEPENDENCY_FILES = ("requirements.txt", "pyproject.toml")
_PIP_TIMEOUT = 1800.0
_HASH_VERSION = b"forklift-venv-1\n"
_include = re.compile(r"^(-r|--requirement|-c|--constraint)\s*=?\s*(\S+)")


@dataclass
class Dependencies:
    """What a release needs installed: from which file, as requirement lines, and its hash."""

    file: str
    requirements: list
    digest: str


def python_tag() -> str:
    return f"{sys.implementation.name}-{sys.version_info.major}.{sys.version_info.minor}"


def read_dependencies(release: Path) -> Dependencies | None:
    """The release's dependencies, or None when it has no dependency file."""
    h = hashlib.sha256(_HASH_VERSION + python_tag().encode() + b"\n")
    req = release / "requirements.txt"
    if req.is_file():
        data = req.read_bytes()
        h.update(b"requirements.txt\n" + data)
        lines = _requirement_lines(data.decode("utf-8", "replace"))
        for line in lines:
            _hash_local(h, release, req.parent, line)
        return Dependencies("requirements.txt", lines, h.hexdigest()[:16])
    pyproject = release / "pyproject.toml"
    if pyproject.is_file():
        deps = _pyproject_dependencies(pyproject)
        # only the dependency list counts: a version bump is not a new venv
        h.update(b"pyproject.toml\n" + "\n".join(deps).encode())
        for line in deps:
            _hash_local(h, release, release, line)
        return Dependencies("pyproject.toml", deps, h.hexdigest()[:16])
    return None


def _requirement_lines(text: str) -> list:
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _pyproject_dependencies(path: Path) -> list:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise DeployError(
                "pyproject.toml: reading it needs Python 3.11 (or tomli); use requirements.txt"
            ) from None
    try:
        data = tomllib.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise DeployError(f"pyproject.toml: {exc}") from None
    deps = data.get("project", {}).get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise DeployError("pyproject.toml: [project] dependencies is not a list of strings")
    return [d.strip() for d in deps if d.strip()]


def _hash_local(h, release: Path, base: Path, line: str) -> None:
    """Mix in the bytes of files a requirement line names inside the release."""
    match = _include.match(line)
    if match:
        target = match.group(2)
    else:
        target = shlex.split(line)[0] if line and not line.startswith("-") else ""
        target = target.removeprefix("file:").split("#", 1)[0]
        if not target.startswith(("./", "../", "/")) and not target.endswith(".whl"):
            return
    path = (base / target).resolve()
    if path.is_file():
        h.update(b"\nfile " + target.encode() + b"\n" + path.read_bytes())
        if match:
            for sub in _requirement_lines(path.read_text("utf-8", "replace")):
                _hash_local(h, release, path.parent, sub)
    elif path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", ".git"))
            for name in sorted(filenames):
                full = Path(dirpath, name)
                h.update(b"\nfile " + str(full.relative_to(path)).encode() + b"\n")
                h.update(full.read_bytes())


def venv_python(venv: Path) -> tuple | None:
    """(major, minor) of the Python a venv was made for, from its pyvenv.cfg."""
    try:
        text = (venv / "pyvenv.cfg").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version_info", "version"):
            parts = value.strip().split(".")
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                return int(parts[0]), int(parts[1])
    return None


def check_python(venv: Path) -> None:
    """Refuse a venv made for another Python than the one forklift (and its workers) run."""
    version = venv_python(venv)
    ours = sys.version_info[:2]
    if version is None:
        raise DeployError(f"{venv}: no pyvenv.cfg with a Python version: not a venv")
    if version != ours:
        raise DeployError(
            f"{venv}: made for Python {version[0]}.{version[1]}, but forklift runs "
            f"{ours[0]}.{ours[1]}: its packages cannot be loaded by the workers"
        )


def is_complete(venv: Path) -> bool:
    return (venv / VENV_MARK).is_file()


def build(venv: Path, deps: Dependencies, release: Path, pip_args: list) -> str:
    """Build `venv` for `deps`; return a short description. DeployError with pip's last lines."""
    if venv.exists():
        remove_tree(venv)  # an interrupted build: never trust half a venv
    started = time.monotonic()
    external_pip = _forklift_pip_usable()
    venv_cmd = [sys.executable, "-m", "venv"]
    if external_pip:
        venv_cmd.append("--without-pip")
    _run(venv_cmd + [str(venv)], release, "python -m venv", 300.0)
    try:
        requirements = venv / "forklift-requirements.txt"
        requirements.write_text("".join(line + "\n" for line in deps.requirements))
        if deps.requirements:
            python = venv / "bin" / "python"
            if external_pip:
                pip = [sys.executable, "-m", "pip", "--python", str(python)]
            else:
                pip = [str(python), "-m", "pip"]
            pip += ["install", "--disable-pip-version-check", "--no-input"]
            # requirements.txt as written (its -r/-c includes are relative to it); for
            # pyproject.toml, the dependency list copied into the venv
            source = release / deps.file if deps.file == "requirements.txt" else requirements
            _run(pip + list(pip_args) + ["-r", str(source)], release, "pip install", _PIP_TIMEOUT)
        mark = {
            "built": utc_now(),
            "dependency_file": deps.file,
            "python": python_tag(),
            "requirements": deps.requirements,
        }
        (venv / VENV_MARK).write_text(json.dumps(mark, indent=2) + "\n")
    except BaseException:
        remove_tree(venv)
        raise
    count = len(deps.requirements)
    return (
        f"built venvs/{venv.name} from {deps.file} ({count} requirement"
        f"{'' if count == 1 else 's'}) in {time.monotonic() - started:.1f}s"
    )


def _forklift_pip_usable() -> bool:
    """pip >= 22.3 in forklift's environment can install into another venv (--python)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:
        return False
    try:
        parts = version("pip").split(".")
    except PackageNotFoundError:
        return False
    try:
        return (int(parts[0]), int(parts[1])) >= (22, 3)
    except (ValueError, IndexError):
        return False


def _run(cmd: list, cwd: Path, what: str, timeout: float) -> None:
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")},
        )
    except subprocess.TimeoutExpired:
        raise DeployError(f"{what} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [line.rstrip() for line in proc.stdout.splitlines() if line.strip()][-10:]
        last = lines[-1].strip() if lines else ""
        raise DeployError(f"{what} failed (exit {proc.returncode}): {last}", lines)
