"""What the steps do to files and processes, one function each; `pipeline.py` orders them.

Each function raises DeployError with the reason (and the lines that show it) or returns
the detail its step line prints.
"""

from __future__ import annotations

import compileall
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

from . import venvs
from .releases import RELEASE_META, AppDir, DeployError, make_read_only, remove_tree
from .strays import write_manifest

PREFLIGHT_TIMEOUT = 120.0
COMMAND_TIMEOUT = 1800.0
CRASH_LOOP = 3  # unexpected worker deaths (or boot failures) within the watch: a crash loop
MIN_REQUESTS = 20  # fewer answers than this say nothing about a 5xx rate
_OK_MARK = "FORKLIFT-PREFLIGHT-OK"
_ERROR_MARK = "FORKLIFT-PREFLIGHT-ERROR "

# Runs in a fresh `python -c` of forklift's own interpreter, with the release as the working
# directory and its venv put on sys.path by the same function the workers use.
_PREFLIGHT = f"""
import json, sys
spec = json.loads(sys.argv[1])
from forklift.appload import load_app
from forklift.config import Config
from forklift.errors import ForkliftError
config = Config(app=spec["module"], wsgi_file=spec["wsgi_file"], chdir=spec["chdir"])
if spec["callable"]:
    config.callable = spec["callable"]
if spec["virtualenv"]:
    config.virtualenv = spec["virtualenv"]
try:
    config.validate()
    app = load_app(config)
except ForkliftError as exc:
    print({_ERROR_MARK!r} + str(exc), flush=True)
    sys.exit(3)
print({_OK_MARK!r}, type(app).__name__, flush=True)
"""


# --- building a release --------------------------------------------------------------------------


def compile_release(release: Path) -> None:
    """Byte-compile now, so that importing never writes __pycache__ into a built release."""
    compileall.compile_dir(str(release), quiet=2, workers=1)


def link_shared(app: AppDir, release: Path, names: list) -> list:
    """Link the shared paths into the release, each at its own name (shared wins).

    Every declared name (`--shared`, `deploy share`) is linked, shared/NAME made a directory
    first when nothing is there; every other top-level entry of shared/ is linked too.
    """
    declared = []
    for name in names:
        rel = os.path.normpath(name.rstrip("/"))
        path = app.shared_dir / rel
        if not (path.exists() or path.is_symlink()):
            path.mkdir(parents=True, exist_ok=True)
        declared.append(rel)
    parents = {Path(rel).parts[0] for rel in declared if len(Path(rel).parts) > 1}
    for name in sorted(os.listdir(app.shared_dir)):
        if name not in declared and name not in parents:
            declared.append(name)
    linked = []
    for rel in declared:
        target = release / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove(target)  # shared wins over what the commit holds at that path
        depth = len(Path(rel).parts) - 1
        target.symlink_to(os.path.join(*([".."] * (depth + 2)), "shared", rel))
        linked.append(rel)
    return linked


def attach_venv(app: AppDir, release: Path, release_id: str, pip_args: list) -> tuple:
    """Build or reuse the release's venv and link it as `.venv`: (venv name or None, detail)."""
    deps = venvs.read_dependencies(release)
    if deps is None:
        return None, "none: the release has no requirements.txt or pyproject.toml"
    venv = app.venvs_dir / deps.digest
    if venvs.is_complete(venv):
        venvs.check_python(venv)
        real = os.path.realpath(venv)
        users = [
            r.id
            for r in app.releases()
            if r.id != release_id and os.path.realpath(r.path / ".venv") == real
        ]
        detail = f"reused venvs/{venv.name}: {deps.file} unchanged"
        if users:
            detail += f" since {users[-1]}"
    else:
        detail = venvs.build(venv, deps, release, pip_args)
    link = release / ".venv"
    _remove(link)
    link.symlink_to(os.path.join("..", "..", "venvs", venv.name))
    return venv.name, detail


def seal(release: Path, meta: dict) -> None:
    """The last touch of a release: its description, then no write bit anywhere."""
    (release / RELEASE_META).write_text(json.dumps(meta, indent=2) + "\n")
    write_manifest(release)  # what was built: anything else found later, the app wrote
    make_read_only(release)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        remove_tree(path)


# --- checking it ---------------------------------------------------------------------------------


def preflight(release: Path, settings) -> str:
    """Import the app from `release` with its venv in a fresh Python: the workers' view."""
    venv = release / ".venv"
    has_venv = venv.is_symlink() or venv.exists()
    if has_venv:
        venvs.check_python(venv)
    spec = {
        "module": settings.module,
        "wsgi_file": settings.wsgi_file,
        "callable": settings.callable,
        "chdir": str(release),
        "virtualenv": str(venv) if has_venv else None,
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PREFLIGHT, json.dumps(spec)],
            cwd=release,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=PREFLIGHT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise DeployError(f"importing the app took more than {PREFLIGHT_TIMEOUT:.0f} s") from None
    lines = proc.stdout.splitlines()
    what = settings.wsgi_file or settings.module
    for line in lines:
        if line.startswith(_ERROR_MARK):
            raise DeployError(line[len(_ERROR_MARK) :])
    if proc.returncode != 0 or not any(line.startswith(_OK_MARK) for line in lines):
        tail = [line for line in lines if line.strip()][-10:]
        raise DeployError(f"importing {what} failed (exit {proc.returncode})", tail)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"{what} imports in a fresh Python {version}" + (" with its venv" * has_venv)


def run_release_command(command: str, app: AppDir, release: Path, on_line) -> str:
    """Run the release command once, its output passed line by line to `on_line`."""
    env = dict(os.environ)
    env.update(
        FORKLIFT_APP_DIR=str(app.root),
        FORKLIFT_RELEASE=str(release),
        FORKLIFT_RELEASE_ID=release.name,
    )
    venv = release / ".venv"
    if venv.exists():
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen(
        command,
        shell=True,
        cwd=release,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: stopped as a whole on Ctrl-C
    )
    tail: list = []

    def pump():  # a thread, so that a silent command still meets its timeout
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail[:] = (tail + [line])[-10:]
            on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        try:
            code = proc.wait(COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DeployError(f"{command!r} ran longer than {COMMAND_TIMEOUT:.0f} s") from None
    finally:
        if proc.poll() is None:
            _kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
                proc.wait()
        reader.join(5.0)
        proc.stdout.close()
    if code != 0:
        raise DeployError(f"{command!r} failed (exit {code})", tail)
    return f"{command!r} done"


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


# --- watching it ---------------------------------------------------------------------------------


def judge(baseline: tuple, now: tuple, crashes: int, boot_failures: int) -> str | None:
    """Why the new generation must be rolled back, or None while it looks fine.

    `baseline` and `now` are (requests, 5xx answers) of the previous and the new generation.
    A crash loop: CRASH_LOOP unexpected worker deaths or boot failures since the reload.
    A 5xx rate "clearly above" the previous release's: more than twice it plus 5 points,
    measured once the new generation has answered MIN_REQUESTS requests.
    """
    if crashes + boot_failures >= CRASH_LOOP:
        return (
            f"crash loop: {crashes} worker crash(es) and {boot_failures} boot failure(s) "
            f"since the switch"
        )
    requests, errors = now
    if requests >= MIN_REQUESTS:
        before = baseline[1] / baseline[0] if baseline[0] else 0.0
        rate = errors / requests
        if rate > 2 * before + 0.05:
            return (
                f"5xx rate {rate:.0%} ({errors}/{requests}) against {before:.0%} "
                f"({baseline[1]}/{baseline[0]}) for the previous release"
            )
    return None


def generation_counts(status: dict, generation: int | None = None) -> tuple:
    """(requests, 5xx answers) of a generation's live workers (default: the serving one)."""
    generation = status["generation"] if generation is None else generation
    workers = [w for w in status["workers"] if w["generation"] == generation]
    return (
        sum(w.get("requests", 0) for w in workers),
        sum(w.get("errors_5xx", 0) for w in workers),
    )


def workers_elsewhere(workers: list, release: Path) -> list:
    """(pid, cwd) of workers whose working directory is not inside `release`."""
    real = os.path.realpath(release)
    strays = []
    for w in workers:
        try:
            cwd = os.readlink(f"/proc/{w['pid']}/cwd")
        except OSError:
            continue
        if cwd != real and not cwd.startswith(real + os.sep):
            strays.append((w["pid"], cwd))
    return strays


# --- nginx ---------------------------------------------------------------------------------------


def nginx_text(settings, release: Path) -> str:
    """Generated by forklift's nginx-config for --nginx-upstream, else the release's file."""
    if settings.nginx_upstream:
        from ..config import PROTOCOL_HTTP, PROTOCOL_UWSGI, parse_address
        from ..errors import ConfigError
        from ..nginx import render

        upstreams = []
        try:
            for item in settings.nginx_upstream:
                if item.startswith("http://"):
                    upstreams.append(parse_address(item[7:], PROTOCOL_HTTP, "--nginx-upstream"))
                else:
                    upstreams.append(parse_address(item, PROTOCOL_UWSGI, "--nginx-upstream"))
            return render(
                upstreams,
                server_name=settings.nginx_server_name or "_",
                listen=settings.nginx_listen or "80",
            )
        except ConfigError as exc:
            raise DeployError(str(exc)) from None
    source = release / settings.nginx_source
    if not source.is_file():
        raise DeployError(f"--nginx: the release has no {settings.nginx_source}")
    return source.read_text()


def install_nginx(settings, release: Path) -> str:
    """Install the nginx config when it changed; `nginx -t`, then reload."""
    text = nginx_text(settings, release)
    dest = Path(settings.nginx)
    try:
        old = dest.read_text()
    except FileNotFoundError:
        old = None
    if old == text:
        return f"{dest} unchanged: nginx not reloaded"
    _write_atomic(dest, text)
    nginx = shlex.split(settings.nginx_cmd)
    problem = _run_quiet(nginx + ["-t"])
    if problem:
        if old is None:
            dest.unlink()
        else:
            _write_atomic(dest, old)
        raise DeployError(f"nginx -t: {problem}; {dest} restored, the app stays on {release.name}")
    problem = _run_quiet(nginx + ["-s", "reload"])
    if problem:
        raise DeployError(f"nginx -s reload: {problem}")
    return f"{dest} changed: nginx -t passed, nginx reloaded"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _run_quiet(cmd: list) -> str | None:
    """None when `cmd` succeeds, else its last line of output."""
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "[emerg]" in line or "[error]" in line]  # nginx's
    return (errors or lines or [f"exit {proc.returncode}"])[-1]
