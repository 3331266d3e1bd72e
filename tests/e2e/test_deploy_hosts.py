"""`forklift deploy --inventory`: two real hosts over SSH, all or nothing, under load.

The hosts of the multi-host test (network namespaces, see multihost_support.py): PostgreSQL,
two app hosts each with Debian's sshd (host key, client key and known_hosts made in a temp
dir) and a forklift master serving DIR/current, nginx in front of both, and the load
generator beside nginx counting every answer. The coordinator runs on the nginx host, as an
operator's machine would: `ip netns exec NX forklift deploy --inventory hosts.toml`.

The app is gameprogress behind a small wrapper (the releases v1..v4 of a git repository):
its health check `/release-check` answers 500 on the host named by version.FAIL_ON_HOST
(v3: host b, whose master has DEPLOYTEST_HOST=b: a host-specific setting).

One cluster for the module; the tests run in file order and share the story.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from multihost_support import (
    ADDRESSES,
    APP_PORT,
    FORKLIFT,
    IP,
    NGINX_PORT,
    STATUS,
    Cluster,
    describe,
    http_in,
    summarise,
)
from test_deploy import git

pytestmark = pytest.mark.requires("sshd", "ssh", "nginx", "postgresql", "ip", "netns", "git")

HEALTH = "/release-check"
LOAD = {
    "host": ADDRESSES["nx"],
    "port": NGINX_PORT,
    "threads": 4,
    "rate_per_thread": 40,
    "write_fraction": 0.5,
    "devices": 20,
    "request_timeout": 20.0,
}
DEPLOY_TIMEOUT = 120
LOAD_LIMIT = 90  # seconds: the load generator's bound; a deploy ends it sooner

APP = '''\
"""gameprogress, with a release check that can fail on one host (version.FAIL_ON_HOST)."""
import os

import version

_service = None


def _get():
    global _service
    if _service is None:
        from gameprogress.app import create_app

        _service = create_app()
    return _service


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/release-check":
        _get()
        bad = version.FAIL_ON_HOST and os.environ.get("DEPLOYTEST_HOST") == version.FAIL_ON_HOST
        status = "500 Internal Server Error" if bad else "200 OK"
        body = f"{version.VERSION} {status}".encode()
        start_response(status, [("Content-Type", "text/plain")])
        return [body]
    return _get()(environ, start_response)
'''
VERSIONS = {"v1": "", "v2": "", "v3": "b", "v4": ""}


def make_origin(root: Path) -> Path:
    work = root / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    (work / "app.py").write_text(APP)
    (work / "requirements.txt").write_text("# gameprogress comes with the server's environment\n")
    for version, fail_on in VERSIONS.items():
        (work / "version.py").write_text(f"VERSION = {version!r}\nFAIL_ON_HOST = {fail_on!r}\n")
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", f"version {version}", cwd=work)
        git("tag", version, cwd=work)
    origin = root / "origin.git"
    git("clone", "-q", "--bare", str(work), str(origin), cwd=root)
    return origin


class Hosts:
    """The cluster, the inventory and how to run the coordinator on the nginx host."""

    def __init__(self, cluster: Cluster, keys, origin: Path):
        self.cluster = cluster
        self.origin = origin
        self.app = {role: cluster.root / role / "app" for role in ("a", "b")}
        self.pidfile = {role: cluster.root / role / "forklift.pid" for role in ("a", "b")}
        self.inventory = cluster.root / "hosts.toml"
        hosts = "".join(
            f'[hosts.{role}]\naddress = "root@{ADDRESSES[role]}"\napp = "{self.app[role]}"\n'
            f'pidfile = "{self.pidfile[role]}"\n'
            for role in ("a", "b")
        )
        self.inventory.write_text(
            f'forklift = "{FORKLIFT}"\nssh_config = "{keys.config}"\nbatch = 1\n'
            f"host_timeout = 4\n{hosts}"
        )

    def command(self, *args: str) -> list:
        return [IP, "netns", "exec", self.cluster.ns("nx"), FORKLIFT, *args]

    def deploy(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command("deploy", "--inventory", str(self.inventory), *args),
            capture_output=True,
            text=True,
            timeout=DEPLOY_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )

    def current(self, role: str) -> str:
        return os.path.basename(os.readlink(self.app[role] / "current"))

    def history(self, role: str) -> list:
        text = (self.app[role] / "deploys.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]

    def version_on(self, role: str) -> str:
        status, _, body = http_in(
            self.cluster.ns("nx"), ADDRESSES[role], APP_PORT, "GET", HEALTH, timeout=5
        )
        return body.decode().split()[0]


@pytest.fixture(scope="module")
def hosts():
    cluster = Cluster()
    try:
        cluster.start_network()
        keys = cluster.start_sshd()
        h = Hosts(cluster, keys, make_origin(cluster.root))
        # The first deploy, with no server running yet: both switched, not serving (exit 3).
        first = h.deploy(
            "--repo", str(h.origin), "--ref", "v1", "--module", "app:application",
            "--health", HEALTH, "--pip-args=--no-index", "--watch", "2",
        )  # fmt: skip
        assert first.returncode == 3, first.stdout + first.stderr
        assert "not serving yet on a, b" in first.stdout, first.stdout
        assert re.search(r"^a +switch .*Start the server with: ", first.stdout, re.M), first.stdout
        h.release = {"v1": h.current("a")}
        assert h.current("b") == h.release["v1"]
        cluster.start_apps(
            serve=lambda role: [
                "--chdir",
                str(h.app[role] / "current"),
                "--virtualenv",
                str(h.app[role] / "current" / ".venv"),
                "--health-check",
                HEALTH,
                "app:application",
            ],  # fmt: skip
            env=lambda role: {"DEPLOYTEST_HOST": role},
            ready_path=HEALTH,
        )
        cluster.start_nginx()
        yield h
    finally:
        for problem in cluster.destroy():
            print(f"teardown: {problem}")


def run_under_load(h: Hosts, name: str, action) -> tuple:
    """(action's result, load row, details): the load runs from before the action until a
    second after it (bounded by LOAD_LIMIT), counting every answer."""
    stop = h.cluster.root / f"stop-{name}"
    config = dict(LOAD, name=name, duration=LOAD_LIMIT, seed=len(name), stop_file=str(stop))
    load = h.cluster.start_load(config)
    time.sleep(1.0)  # traffic flows before the deploy starts
    try:
        result = action()
        time.sleep(1.0)  # and after it ended
    finally:
        stop.touch()
    outcome = load.result(timeout=LOAD_LIMIT + 90)
    assert outcome["stopped_by_file"], f"the load ended before the {name} did"
    row, details = summarise(name, outcome)
    return result, row, details


def assert_no_failed_request(row, details) -> None:
    failed = details["failed"]
    assert row.requests > 200, f"the load barely ran: {row}"
    assert not failed, (
        f"{len(failed)} failed requests {dict(Counter(r[STATUS] for r in failed))}:\n"
        + describe(failed, failed[0][0])
    )
    assert not details["lost"] and not details["stale"], details


# --- the story -----------------------------------------------------------------------------------


def test_two_hosts_deploy_under_load_without_a_failed_request(hosts):
    h = hosts
    deploy = lambda: h.deploy("--ref", "v2", "--watch", "1")  # noqa: E731
    proc, row, details = run_under_load(h, "deploy-v2", deploy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_failed_request(row, details)
    release = h.current("a")
    assert h.current("b") == release and release.endswith(
        git("rev-parse", "--short=7", "v2", cwd=h.origin)
    )
    assert h.version_on("a") == h.version_on("b") == "v2"
    h.release["v2"] = release
    lines = proc.stdout.splitlines()
    # one line per host per step, prefixed; every host prepared before the canary switched
    switches = [i for i, line in enumerate(lines) if re.match(r"^[ab] +switch +\d", line)]
    preflights = [i for i, line in enumerate(lines) if re.match(r"^[ab] +preflight +\d", line)]
    assert len(switches) == 2 and len(preflights) == 2, proc.stdout
    assert max(preflights) < min(switches), proc.stdout
    assert lines[switches[0]].startswith("a "), "the canary (a) switches first"
    watch_a = next(i for i, line in enumerate(lines) if re.match(r"^a +watch +\d", line))
    assert watch_a < switches[1], "the canary is watched before the next batch switches"
    ids = {h.history(role)[-1]["deploy_id"] for role in ("a", "b")}
    assert len(ids) == 1 and ids.pop() in proc.stdout


def test_a_check_failing_on_the_second_host_reverts_the_first(hosts):
    h = hosts
    deploy = lambda: h.deploy("--ref", "v3", "--watch", "1")  # noqa: E731
    proc, row, details = run_under_load(h, "deploy-v3", deploy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert "host b" in summary and HEALTH in summary and "500" in summary, summary
    assert "reverted a back on " + h.release["v2"] in summary, summary
    assert_no_failed_request(row, details)
    assert h.current("a") == h.current("b") == h.release["v2"]
    assert h.version_on("a") == h.version_on("b") == "v2"
    a, b = h.history("a")[-1], h.history("b")[-1]
    assert a["deploy_id"] == b["deploy_id"]
    assert (a["result"], b["result"], b["failed_step"]) == ("rolled-back", "failed", "switch")


def test_ssh_lost_mid_deploy_leaves_one_release_and_a_stale_lock(hosts):
    h = hosts
    out: list = []
    proc = subprocess.Popen(
        h.command("deploy", "--inventory", str(h.inventory), "--ref", "v4", "--watch", "6"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        # one lock across the hosts: while the canary is watched, a second deploy is refused
        wait_for_line(out, proc, r"^a +switch +\d.* ok ")
        second = h.deploy("--ref", "v2", "--watch", "0")
        assert second.returncode == 1, second.stdout + second.stderr
        assert "a deploy is in progress" in second.stdout, second.stdout
        assert re.search(r"deploy \S+ from root@", second.stdout), second.stdout
        # b (the second batch) switched: cut the coordinator's SSH connection to b
        wait_for_line(out, proc, r"^b +switch +\d.* ok ")
        ssh = [p for p in _children(proc.pid) if ADDRESSES["b"] in _cmdline(p)]
        assert len(ssh) == 1, ssh
        os.kill(ssh[0], signal.SIGKILL)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    reader.join(10)
    text = "".join(out)
    assert code == 1, text
    summary = text.strip().splitlines()[-1]
    assert "host b" in summary and "ssh connection lost" in summary, summary
    # b's agent noticed by itself: it went back, and left its lock saying so
    lock = h.app["b"] / "deploy.lock"
    deadline = time.monotonic() + 30
    while True:
        holder = json.loads(lock.read_text()) if lock.exists() else {}
        if holder.get("abandoned") and not os.path.exists(f"/proc/{holder['pid']}"):
            break
        assert time.monotonic() < deadline, f"b's agent still running: {holder}"
        time.sleep(0.1)
    assert h.current("a") == h.current("b") == h.release["v2"]
    assert h.version_on("a") == h.version_on("b") == "v2"
    assert not (h.app["a"] / "deploy.lock").exists()

    again = h.deploy("--ref", "v4", "--watch", "1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"^b .*stale lock taken over: pid \d+.*cut off: ", again.stdout, re.M), (
        again.stdout
    )
    assert h.current("a") == h.current("b") != h.release["v2"]
    assert h.version_on("a") == h.version_on("b") == "v4"


def test_rollback_over_the_inventory(hosts):
    h = hosts
    proc = subprocess.run(
        h.command("rollback", "--inventory", str(h.inventory)),
        capture_output=True,
        text=True,
        timeout=DEPLOY_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"rolled back to {h.release['v2']} on 2 host(s)" in proc.stdout
    assert h.current("a") == h.current("b") == h.release["v2"]
    assert h.version_on("a") == h.version_on("b") == "v2"


def test_releases_over_the_inventory(hosts):
    h = hosts
    proc = subprocess.run(
        h.command("releases", "--inventory", str(h.inventory)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    current = h.current("a")
    for role in ("a", "b"):
        assert re.search(rf"^{role} +\* {current} ", proc.stdout, re.M), proc.stdout


def wait_for_line(out: list, proc: subprocess.Popen, pattern: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(re.match(pattern, line) for line in out):
        assert proc.poll() is None, "".join(out)
        assert time.monotonic() < deadline, f"no line {pattern!r}:\n" + "".join(out)
        time.sleep(0.05)


def _children(pid: int) -> list:
    found = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in path.read_text().split()]
        except OSError:
            pass
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""
