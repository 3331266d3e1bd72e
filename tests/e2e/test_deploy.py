"""forklift deploy end to end: real git, real pip, real forklift processes, counted load.

A bare origin holds the app of deploy_fixtures/ in versions v1..v6 (tags; `main` is v1):
v3 adds a dependency (a wheel inside the repository, installed by pip with --no-index), v4
fails to import, v5 answers 500 on its health path, v6's workers die a moment after boot.

One app directory lives through the story below, test after test, in file order (they
share it: run the file, not one test of the first group alone). Every deploy that happens
while the server serves runs under a load generator that counts every answer.

Speed: venvs are created `--without-pip` and filled by the test venv's own pip (see
forklift/deploy/venvs.py); v1, v2 and v4..v6 share venvs through the dependency hash.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from forklift.deploy.releases import plan_prune
from forklift.deploy.steps import judge

FIXTURES = Path(__file__).parent / "deploy_fixtures"
FORKLIFT = [sys.executable, "-m", "forklift"]  # `forklift deploy ...` is dispatched by cli.py
HOST = "app.test"  # the health check's Host: the app answers 421 to any other
COMMAND_TIMEOUT = 180
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+) \(http\)")

VERSIONS = {
    "v1": {},
    "v2": {},
    "v3": {"USES_GREET": True},
    "v4": {"USES_GREET": True, "BROKEN_IMPORT": True},
    "v5": {"USES_GREET": True, "HEALTH_STATUS": "500 Internal Server Error"},
    "v6": {"USES_GREET": True, "CRASH_AFTER": 2.5},
}


# --- helpers -------------------------------------------------------------------------------------


def forklift(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        FORKLIFT + list(args),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def deploy_json(*args: str) -> tuple:
    """Run `forklift deploy|rollback ... --json`: (process, {step: object}, summary)."""
    proc = forklift(*args, "--json")
    objects = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    steps = {o["step"]: o for o in objects if "step" in o and "output" not in o}
    summary = objects[-1] if objects and "result" in objects[-1] else {}
    return proc, steps, summary


def git(*args: str, cwd: Path) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="forklift tests",
        GIT_AUTHOR_EMAIL="tests@forklift.invalid",
        GIT_COMMITTER_NAME="forklift tests",
        GIT_COMMITTER_EMAIL="tests@forklift.invalid",
    )
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def greet_wheel() -> bytes:
    """A real wheel of deploy_fixtures/greet, built with zipfile: no build backend needed."""
    files = {
        "greet/__init__.py": (FIXTURES / "greet" / "greet" / "__init__.py").read_bytes(),
        "greet-1.0.dist-info/METADATA": (FIXTURES / "greet" / "METADATA").read_bytes(),
        "greet-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: forklift-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("greet-1.0.dist-info/RECORD,,")
    files["greet-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def make_origin(root: Path) -> Path:
    """A bare repository with one tagged commit per version; `main` points at v1."""
    work = root / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    shutil.copy(FIXTURES / "app" / "app.py", work / "app.py")
    (work / "nginx.conf").write_text(
        "server {\n    listen 127.0.0.1:8080;\n"
        "    location / { proxy_pass http://127.0.0.1:8000; }\n}\n"
    )
    for version, flags in VERSIONS.items():
        values = {
            "VERSION": version,
            "USES_GREET": False,
            "BROKEN_IMPORT": False,
            "HEALTH_STATUS": "200 OK",
            "CRASH_AFTER": 0,
            **flags,
        }
        (work / "version.py").write_text("".join(f"{k} = {v!r}\n" for k, v in values.items()))
        requirements = "# what the app needs besides the standard library\n"
        if values["USES_GREET"]:
            (work / "vendor").mkdir(exist_ok=True)
            (work / "vendor" / "greet-1.0-py3-none-any.whl").write_bytes(greet_wheel())
            requirements += "./vendor/greet-1.0-py3-none-any.whl\n"
        (work / "requirements.txt").write_text(requirements)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", f"version {version}", cwd=work)
        git("tag", version, cwd=work)
    origin = root / "origin.git"
    git("clone", "-q", "--bare", str(work), str(origin), cwd=root)
    git("update-ref", "refs/heads/main", "v1^{commit}", cwd=origin)
    return origin


def tree_digest(path: Path) -> str:
    """Names, modes, link targets and bytes of everything under `path` (links not followed)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            h.update(f"{os.path.relpath(full, path)} {st.st_mode:o}\n".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(full).encode())
            elif stat.S_ISREG(st.st_mode):
                h.update(Path(full).read_bytes())
    return h.hexdigest()


def get(port: int, path: str = "/") -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def wait_for_version(port: int, version: str, timeout: float = 10.0) -> None:
    """Until 10 answers in a row come from `version` (old workers may still finish one)."""
    deadline = time.monotonic() + timeout
    in_a_row, last = 0, None
    while time.monotonic() < deadline:
        status, body = get(port)
        last = (status, body)
        in_a_row = in_a_row + 1 if status == 200 and body.split()[0] == version else 0
        if in_a_row >= 10:
            return
        time.sleep(0.02)
    raise AssertionError(f"not serving {version} after {timeout}s; last answer {last}")


class Load:
    """Clients in threads, one connection per request, counting every answer; bounded in time."""

    def __init__(self, port: int, clients: int = 4, limit: float = 90.0):
        self.port = port
        self.clients = clients
        self.limit = limit
        self.versions: Counter = Counter()
        self.failures: list = []
        self.total = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list = []

    def __enter__(self) -> Load:
        deadline = time.monotonic() + self.limit
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, args=(deadline,), daemon=True)
            thread.start()
            self._threads.append(thread)
        time.sleep(0.3)  # traffic flows before the deploy starts
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)  # and still flows after it ended
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _client(self, deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status, body = get(self.port)
                failure = None if status == 200 else f"{status} {body[:80]}"
            except OSError as exc:
                status, body, failure = None, "", repr(exc)
            with self._lock:
                self.total += 1
                if failure:
                    self.failures.append(failure)
                else:
                    self.versions[body.split()[0]] += 1

    def assert_clean(self) -> None:
        assert self.total > 20, f"the load generator barely ran ({self.total} requests)"
        assert not self.failures, f"{len(self.failures)}/{self.total} failed: {self.failures[:5]}"


class Server:
    """`forklift` serving DIR/current with 2 workers, started and stopped by pid."""

    def __init__(self, app: Path, pidfile: Path, log: Path):
        self.app = app
        self.pidfile = pidfile
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> Server:
        cmd = FORKLIFT + [
            "--http", "127.0.0.1:0",
            "--processes", "2",
            "--pidfile", str(self.pidfile),
            "--chdir", str(self.app / "current"),
            "--virtualenv", str(self.app / "current" / ".venv"),
            "--health-check", "/healthz",
            "--health-host", HOST,
            "--disable-logging",
            "app:application",
        ]  # fmt: skip
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            found = _LISTENING.search(self.log.read_text())
            if found and self.pidfile.exists():
                self.port = int(found.group(1))
                try:
                    if get(self.port)[0] == 200:
                        return self
                except OSError:
                    pass
            assert self.proc.poll() is None, f"forklift exited:\n{self.log.read_text()}"
            time.sleep(0.05)
        raise AssertionError(f"forklift did not start:\n{self.log.read_text()}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class Site:
    """The shared state of the story: origin, app directory, server, release of each version."""

    def __init__(self, root: Path):
        self.root = root
        self.origin = make_origin(root)
        self.app = root / "app"
        self.pidfile = root / "forklift.pid"
        self.server = Server(self.app, self.pidfile, root / "forklift.log")
        self.release: dict = {}  # version -> release id

    def current(self) -> str:
        return os.path.basename(os.readlink(self.app / "current"))

    def releases(self) -> list:
        return sorted(os.listdir(self.app / "releases"))

    def history(self) -> list:
        return [json.loads(line) for line in (self.app / "deploys.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = Site(tmp_path_factory.mktemp("deploy"))
    yield site
    code = site.server.stop()
    assert code in (0, None), f"forklift exit code {code}:\n{site.server.log.read_text()}"


def _deployed_id(output: str) -> str:
    found = re.search(r"^(?:deployed|switched to) (\S+) in ", output, re.M)
    assert found, output
    return found.group(1)


# --- the story -----------------------------------------------------------------------------------


def test_first_deploy_flips_only_then_the_server_starts(site):
    proc = forklift(
        "deploy",
        "--app", str(site.app),
        "--repo", str(site.origin),  # no --ref: the origin's default branch (main = v1)
        "--module", "app:application",
        "--pidfile", str(site.pidfile),
        "--health", "/healthz",
        "--health-host", HOST,
        "--pip-args=--no-index",
        "--watch", "1",
    )  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr  # switched, not serving yet
    assert "main = " in proc.stdout
    assert "no such pidfile" in proc.stdout and "Start the server with: " in proc.stdout
    assert re.search(r"^switched to \S+ in .*not serving yet", proc.stdout, re.M), proc.stdout
    site.release["v1"] = _deployed_id(proc.stdout)
    assert site.current() == site.release["v1"]
    remembered = json.loads((site.app / "deploy.json").read_text())
    assert remembered["repo"] == str(site.origin) and remembered["pidfile"] == str(site.pidfile)

    site.server.start()
    assert get(site.server.port)[1].startswith("v1 ")


def test_deploy_v2_under_load_switches_without_a_failed_request(site):
    v1_path = site.app / "releases" / site.release["v1"]
    v1_before = tree_digest(v1_path)
    with Load(site.server.port) as load:
        proc = forklift("deploy", "--app", str(site.app), "--ref", "v2")  # the rest remembered
        assert proc.returncode == 0, proc.stdout + proc.stderr
        wait_for_version(site.server.port, "v2")
    load.assert_clean()
    assert set(load.versions) == {"v1", "v2"}, load.versions
    site.release["v2"] = _deployed_id(proc.stdout)
    assert site.current() == site.release["v2"]
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert "reused venvs/" in lines["venv"], lines["venv"]  # v1 and v2 need the same
    assert "checked before traffic (GET /healthz)" in lines["switch"], lines["switch"]
    assert re.search(r"watch +\d+\.\d\ds +ok", lines["watch"]), lines["watch"]
    assert tree_digest(v1_path) == v1_before, "v1's release changed"


def test_v3_with_a_new_dependency_builds_a_venv(site):
    with Load(site.server.port) as load:
        proc = forklift("deploy", "--app", str(site.app), "--ref", "v3")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        wait_for_version(site.server.port, "v3")
    load.assert_clean()
    site.release["v3"] = _deployed_id(proc.stdout)
    venv_line = next(line for line in proc.stdout.splitlines() if line.startswith("  venv"))
    assert "built venvs/" in venv_line and "1 requirement" in venv_line, venv_line
    assert get(site.server.port)[1].endswith(" greetings\n")
    v2_venv = os.path.realpath(site.app / "releases" / site.release["v2"] / ".venv")
    v3_venv = os.path.realpath(site.app / "releases" / site.release["v3"] / ".venv")
    assert v2_venv != v3_venv
    assert (Path(v3_venv) / ".forklift-venv.json").is_file()


def test_v4_that_fails_to_import_stops_at_preflight(site):
    before = site.releases()
    with Load(site.server.port) as load:
        proc, steps, summary = deploy_json("deploy", "--app", str(site.app), "--ref", "v4")
    load.assert_clean()
    assert proc.returncode == 1, proc.stdout
    assert summary["failed_step"] == "preflight"
    assert "module_that_does_not_exist" in summary["reason"]
    assert "switch" not in steps  # nothing else touched
    assert set(load.versions) == {"v3"}
    assert site.current() == site.release["v3"]
    assert site.releases() == before, "the failed release must be removed"


def test_v5_failing_its_health_check_never_serves_a_client(site):
    before = site.releases()
    with Load(site.server.port) as load:
        proc, steps, summary = deploy_json("deploy", "--app", str(site.app), "--ref", "v5")
    load.assert_clean()
    assert proc.returncode == 1, proc.stdout
    assert summary["failed_step"] == "switch"
    assert "GET /healthz" in summary["reason"] and "500" in summary["reason"]
    assert "flipped back" in summary["reason"]
    assert "v5" not in load.versions, load.versions  # no client answer ever came from v5
    assert set(load.versions) == {"v3"}
    assert site.current() == site.release["v3"]
    assert site.releases() == before
    assert get(site.server.port)[1].startswith("v3 ")


def test_rollback_to_the_previous_healthy_release(site):
    with Load(site.server.port) as load:
        proc, steps, summary = deploy_json("rollback", "--app", str(site.app))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        wait_for_version(site.server.port, "v2")
    load.assert_clean()
    assert summary["release"] == site.release["v2"]
    assert "fetch" not in steps and "venv" not in steps  # no fetch, no install
    assert steps["switch"]["seconds"] < 5, steps["switch"]
    assert site.current() == site.release["v2"]


def test_releases_and_history_show_all_of_it(site):
    proc = forklift("releases", "--app", str(site.app), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["id"]: row for row in json.loads(proc.stdout)}
    assert set(rows) == {site.release[v] for v in ("v1", "v2", "v3")}
    assert rows[site.release["v2"]]["current"] is True
    assert rows[site.release["v3"]]["previous_healthy"] is True
    assert all(row["health"] == "healthy" for row in rows.values())

    text = forklift("releases", "--app", str(site.app)).stdout
    assert re.search(rf"^\* {site.release['v2']} ", text, re.M), text

    history = [(r["action"], r["result"], r["failed_step"]) for r in site.history()]
    assert history == [
        ("deploy", "ok", None),
        ("deploy", "ok", None),
        ("deploy", "ok", None),
        ("deploy", "failed", "preflight"),
        ("deploy", "failed", "switch"),
        ("rollback", "ok", None),
    ]
    last = site.history()[-1]
    assert (last["from"], last["to"]) == (site.release["v3"], site.release["v2"])
    assert {s["step"] for s in last["steps"]} >= {"lock", "preflight", "switch"}
    assert all(isinstance(r["user"], str) and r["time"] for r in site.history())


def test_a_crash_looping_release_is_rolled_back_by_the_watch(site):
    started = time.monotonic()
    proc, steps, summary = deploy_json(
        "deploy", "--app", str(site.app), "--ref", "v6", "--watch", "20"
    )
    assert proc.returncode == 1, proc.stdout
    assert summary["result"] == "rolled-back", summary
    assert summary["failed_step"] == "watch"
    assert "crash loop" in summary["reason"]
    assert steps["switch"]["ok"] is True  # v6 passed its check: it dies only after boot
    assert time.monotonic() - started < 18, "the watch must act before its end"
    assert site.current() == site.release["v2"]
    wait_for_version(site.server.port, "v2")
    record = site.history()[-1]
    assert (record["result"], record["release_health"]) == ("rolled-back", "rolled back")
    site.release["v6"] = summary["release"]


def test_a_concurrent_deploy_is_refused_and_a_stale_lock_taken_over(site):
    marker = site.root / "command-pid"  # the release command writes its pid, then sleeps
    slow = subprocess.Popen(
        FORKLIFT
        + ["deploy", "--app", str(site.app), "--ref", "v3", "--watch", "1"]
        + ["--release-command", f"echo $$ > {marker}.tmp; mv {marker}.tmp {marker}; exec sleep 60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: killed with its shell and sleep
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert slow.poll() is None, slow.stdout.read().decode()
            assert time.monotonic() < deadline, "the slow deploy never reached its command"
            time.sleep(0.05)
        refused = forklift("deploy", "--app", str(site.app), "--ref", "v2")
        assert refused.returncode == 1
        assert "a deploy is in progress" in refused.stdout
        assert f"pid {slow.pid}" in refused.stdout and "ref v3" in refused.stdout
    finally:
        slow.kill()  # a killed deploy: no clean-up at all
        slow.wait(10)
        slow.stdout.close()
        if marker.exists():  # its release command (own process group) outlives it: end it
            command_pid = int(marker.read_text())
            os.kill(command_pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while os.path.exists(f"/proc/{command_pid}/cwd") and time.monotonic() < deadline:
                try:
                    os.readlink(f"/proc/{command_pid}/cwd")
                except OSError:
                    break  # gone, or a zombie waiting for init: it runs nowhere
                time.sleep(0.02)
    lock = json.loads((site.app / "deploy.lock").read_text())
    assert lock["pid"] == slow.pid
    partial = lock["release"]
    assert (site.app / "releases" / partial).is_dir()

    proc = forklift(
        "deploy", "--app", str(site.app), "--ref", "v3", "--release-command", "", "--watch", "1"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"stale lock taken over: pid {slow.pid}" in proc.stdout
    assert f"removed its partial release {partial}" in proc.stdout
    site.release["v3b"] = _deployed_id(proc.stdout)
    # (the same commit deployed within the same second may get the removed release's name)
    assert partial not in site.releases() or partial == site.release["v3b"]
    assert not (site.app / "deploy.lock").exists()
    wait_for_version(site.server.port, "v3")


def test_pruning_spares_current_previous_healthy_and_releases_in_use(site):
    v1_path = site.app / "releases" / site.release["v1"]
    holder = subprocess.Popen(["sleep", "60"], cwd=v1_path)  # a process still running there
    try:
        proc = forklift("deploy", "--app", str(site.app), "--ref", "v2", "--keep", "1")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        holder.kill()
        holder.wait()
    new = _deployed_id(proc.stdout)
    assert f"spared {site.release['v1']} (pid {holder.pid} runs from it)" in proc.stdout
    assert f"spared {site.release['v3b']} (previous healthy)" in proc.stdout
    assert site.releases() == sorted([site.release["v1"], site.release["v3b"], new])
    used = {os.path.realpath(site.app / "releases" / r / ".venv") for r in site.releases()}
    assert {str(p) for p in (site.app / "venvs").iterdir()} == used


# --- independent of the story --------------------------------------------------------------------


def test_push_to_deploy_streams_the_steps_to_the_pusher(site, tmp_path):
    app = tmp_path / "pushed"
    proc = forklift(
        "deploy", "--app", str(app), "--init-push", "--module", "app:application",
        "--pip-args=--no-index", "--watch", "0",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (app / "repo.git" / "hooks" / "post-receive").stat().st_mode & 0o111
    clone = tmp_path / "clone"
    git("clone", "-q", str(site.origin), str(clone), cwd=tmp_path)
    v2 = git("rev-parse", "v2^{commit}", cwd=clone)
    push = subprocess.run(
        ["git", "push", str(app / "repo.git"), f"{v2}:refs/heads/main"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert push.returncode == 0, push.stderr
    remote = [line for line in push.stderr.splitlines() if line.startswith("remote:")]
    for step in ("lock", "fetch", "venv", "preflight", "switch", "record"):
        assert any(re.match(rf"remote: +{step} ", line) for line in remote), push.stderr
    assert any("remote: switched to " in line for line in remote), push.stderr
    current = os.readlink(app / "current")
    assert current.endswith("-" + v2[:7])
    assert (app / current / "version.py").read_text().startswith("VERSION = 'v2'")


def _systemd_unit(site) -> str:
    proc = forklift(
        "systemd-unit", "--app", str(site.app), "--", "--http", "127.0.0.1:8000", "-w", "2"
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_systemd_unit(site):
    unit = _systemd_unit(site)
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        f"--chdir {site.app}/current",
        f"--virtualenv {site.app}/current/.venv",
        f"reload --pidfile {site.pidfile}",
        "--health-check /healthz",
    ):
        assert line in unit, unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(" -w 2 app:application"), exec_start


@pytest.mark.requires("systemd-analyze")
def test_systemd_unit_passes_systemd_analyze_verify(site, tmp_path):
    path = tmp_path / "gameprogress.service"
    path.write_text(_systemd_unit(site))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "ignoring" not in verify.stderr, verify.stderr


def test_sd_notify_messages_with_a_fake_notify_socket(tmp_path):
    short = Path(tempfile.mkdtemp(prefix="fl-"))  # sun_path holds ~107 bytes
    try:
        release = tmp_path / "release"
        release.mkdir()
        shutil.copy(FIXTURES / "app" / "app.py", release / "app.py")
        (release / "version.py").write_text(
            "VERSION = 'v1'\nUSES_GREET = False\nBROKEN_IMPORT = False\n"
            "HEALTH_STATUS = '200 OK'\nCRASH_AFTER = 0\n"
        )
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(short / "notify"))
        notify.settimeout(15)
        pidfile = short / "fl.pid"
        env = dict(os.environ, NOTIFY_SOCKET=str(short / "notify"))
        server = subprocess.Popen(
            FORKLIFT
            + ["--http", "127.0.0.1:0", "-w", "2", "--pidfile", str(pidfile)]
            + ["--chdir", str(release), "--disable-logging", "app:application"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert notify.recv(4096).decode().startswith("READY=1")
            reload = forklift("reload", "--pidfile", str(pidfile))
            assert reload.returncode == 0, reload.stderr
            assert notify.recv(4096).decode().startswith("RELOADING=1")
            assert notify.recv(4096).decode().startswith("READY=1")
            server.send_signal(signal.SIGTERM)
            assert notify.recv(4096).decode().startswith("STOPPING=1")
            assert server.wait(15) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            notify.close()
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_nginx_step_reloads_only_when_the_config_changed(site, tmp_path):
    """A stand-in `nginx` logs its arguments; its `-t` is the real `nginx -t` when installed,
    on a main config that includes the file the deploy writes."""
    app, dest = tmp_path / "app", tmp_path / "app.conf"
    calls = tmp_path / "nginx-calls"
    main_conf = tmp_path / "main.conf"
    main_conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n    access_log off;\n    include {dest};\n}}\n"
    )
    real = shutil.which("nginx")
    check = f"{real} -t -q -p {tmp_path} -c {main_conf} || exit 1" if real else "true"
    fake = tmp_path / "fake-nginx"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nif [ "$1" = -t ]; then {check}; fi\n')
    fake.chmod(0o755)
    common = ["--app", str(app), "--repo", str(site.origin), "--module", "app:application"]
    common += ["--pip-args=--no-index", "--nginx", str(dest), "--nginx-cmd", str(fake)]
    first, steps, _ = deploy_json("deploy", *common, "--ref", "v1")
    assert first.returncode == 3, first.stdout + first.stderr  # no server: not serving yet
    assert "nginx reloaded" in steps["nginx"]["detail"]
    assert calls.read_text().splitlines() == ["-t", "-s reload"]
    assert dest.read_text() == git("show", "v1:nginx.conf", cwd=site.origin) + "\n"
    assert "proxy_pass http://127.0.0.1:8000;" in dest.read_text()
    second, steps, _ = deploy_json("deploy", "--app", str(app), "--ref", "v2")
    assert second.returncode == 3, second.stdout + second.stderr
    assert "unchanged: nginx not reloaded" in steps["nginx"]["detail"]
    assert calls.read_text().splitlines() == ["-t", "-s reload"]

    # generated by forklift's nginx-config rather than taken from the release
    generated = ["--nginx-upstream", "http://127.0.0.1:8000", "--nginx-server-name", HOST]
    third, steps, _ = deploy_json("deploy", "--app", str(app), "--ref", "v2", *generated, "--save")
    assert third.returncode == 3, third.stdout + third.stderr
    assert "nginx reloaded" in steps["nginx"]["detail"]
    assert "proxy_pass http://forklift;" in dest.read_text()
    assert f"server_name {HOST};" in dest.read_text()
    fourth, steps, _ = deploy_json("deploy", "--app", str(app), "--ref", "v1")
    assert fourth.returncode == 3, fourth.stdout + fourth.stderr
    assert "unchanged" in steps["nginx"]["detail"]
    assert calls.read_text().splitlines() == ["-t", "-s reload"] * 2


def test_the_watch_judges_crash_loops_and_5xx_rates():
    assert judge((1000, 0), (10, 0), 0, 0) is None
    assert "crash loop" in judge((1000, 0), (10, 0), 2, 1)
    assert judge((1000, 0), (10, 9), 0, 0) is None  # too few answers to tell
    assert "5xx rate" in judge((1000, 0), (100, 10), 0, 0)
    assert judge((1000, 100), (100, 20), 0, 0) is None  # 20% against 10%: not clearly above
    assert "5xx rate" in judge((1000, 100), (100, 30), 0, 0)


def test_prune_plan_keeps_the_newest_and_the_protected():
    ids = ["a", "b", "c", "d", "e"]
    assert plan_prune(ids, 2, {}) == (["c", "b", "a"], {})
    remove, spared = plan_prune(ids, 2, {"a": "current", "c": "pid 1 runs from it"})
    assert remove == ["b"] and spared == {"c": "pid 1 runs from it", "a": "current"}


def test_a_failing_install_stops_the_deploy_with_pips_last_lines(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    shutil.copy(FIXTURES / "app" / "app.py", work / "app.py")
    (work / "requirements.txt").write_text("package-that-is-nowhere-zzz==1.0\n")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "a dependency pip cannot find", cwd=work)
    app = tmp_path / "app"
    proc, steps, summary = deploy_json(
        "deploy", "--app", str(app), "--repo", str(work), "--module", "app:application",
        "--pip-args=--no-index", "--watch", "0",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    assert summary["failed_step"] == "venv"
    assert "pip install failed" in summary["reason"]
    assert any("package-that-is-nowhere-zzz" in line for line in steps["venv"]["lines"])
    assert os.listdir(app / "releases") == [] and os.listdir(app / "venvs") == []
    assert not (app / "current").exists() and not (app / "deploy.lock").exists()
