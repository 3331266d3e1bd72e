"""Four hosts in network namespaces for tests/e2e/test_multihost.py, and its load generator.

Topology (all addresses on one bridge that lives in a namespace of its own; no other route):

    10.77.0.1  db   PostgreSQL (Debian's binaries, run as `postgres` through runuser)
    10.77.0.2  a    forklift + gameprogress (2 workers)
    10.77.0.3  b    forklift + gameprogress (2 workers)
    10.77.0.4  nx   nginx with `forklift nginx-config --full`, and the load generator

Every namespace is named `flmh<PID>-<role>`, so a run that was killed outright (no teardown)
is recognised and removed by the next one. `Cluster.destroy` stops every process this module
started (by pid), then every process still inside one of its namespaces (by pid), then
removes the namespaces; the veth pairs and the bridge go with them.

The load generator runs as `ip netns exec NX python multihost_support.py loadgen CONFIG OUT`:
standard library only, fixed rate, bounded in time, and it writes one JSON result.
"""

from __future__ import annotations

import ctypes
import glob
import http.client
import json
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from support import pid_alive, wait_until

SUBNET = "10.77.0"
PREFIX_LEN = 24
ADDRESSES = {"db": f"{SUBNET}.1", "a": f"{SUBNET}.2", "b": f"{SUBNET}.3", "nx": f"{SUBNET}.4"}
APP_PORT = 8000
NGINX_PORT = 8080
PG_PORT = 5432
NS_PREFIX = "flmh"
TEMP_PREFIX = "forklift-multihost-"
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
FORKLIFT = str(VENV_BIN / "forklift")
IP = shutil.which("ip") or "/usr/sbin/ip"
_HTTP_ERRORS = (OSError, http.client.HTTPException, TimeoutError)  # not answering yet
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
SSH_PORT = 22
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
CLONE_NEWNET = 0x40000000


class NetnsUnavailable(Exception):
    """`ip netns add` (or the veth/bridge set-up) is not permitted here."""


def run(*command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}): "
            f"{result.stdout.strip()} {result.stderr.strip()}"
        )
    return result


def _with_tests_on_path(environ) -> dict:
    env = dict(environ)
    tests = str(REPO / "tests")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, env.get("PYTHONPATH")]))
    return env


def _netns_pids(ns: str) -> list[int]:
    result = run(IP, "netns", "pids", ns, check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def _kill_netns_processes(ns: str) -> None:
    """End the processes inside one of our namespaces (all started by this module), by pid."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        pids = _netns_pids(ns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.05)


def remove_stale_namespaces() -> list[str]:
    """Namespaces (and temp dirs) left by an earlier run whose pytest process is gone."""
    removed = []
    listing = run(IP, "netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{NS_PREFIX}(\d+)-\w+", name)
        if not m or pid_alive(int(m.group(1))):
            continue
        _kill_netns_processes(name)
        run(IP, "netns", "del", name, check=False)
        removed.append(name)
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{TEMP_PREFIX}*")):
        m = re.match(rf"{TEMP_PREFIX}(\d+)-", os.path.basename(path))
        if m and not pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# --- running code inside a namespace -----------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(ns: str, fn, *args, timeout: float = 30.0):
    """Call fn(*args) in a thread that has joined namespace `ns` (setns is per thread)."""
    box: dict = {}

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"call inside {ns} still running after {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _http(host: str, port: int, method: str, path: str, body: bytes | None, timeout: float):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def http_in(ns: str, host: str, port: int, method: str, path: str, body=None, timeout=5.0):
    """(status, headers, body) of one request made from inside namespace `ns`."""
    return in_netns(ns, _http, host, port, method, path, body, timeout, timeout=timeout + 5)


# --- the hosts ---------------------------------------------------------------------------------


@dataclass
class Topology:
    """The namespaces, the bridge (in namespace `br`) and one veth pair per host."""

    tag: str = field(default_factory=lambda: f"{NS_PREFIX}{os.getpid()}")
    created: list = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"{self.tag}-{role}"

    @property
    def bridge_ns(self) -> str:
        return self.ns("br")

    def bridge_port(self, role: str) -> str:
        return f"v{role}"

    def create(self) -> None:
        remove_stale_namespaces()
        first = self.ns("br")
        result = run(IP, "netns", "add", first, check=False)
        if result.returncode != 0:
            raise NetnsUnavailable(
                f"`ip netns add {first}` is not permitted here "
                f"(exit {result.returncode}: {result.stderr.strip()})"
            )
        self.created.append(first)
        br = self.bridge_ns
        try:
            run(IP, "-n", br, "link", "add", "br0", "type", "bridge", "stp_state", "0")
        except RuntimeError as exc:
            raise NetnsUnavailable(f"cannot create a bridge in a namespace: {exc}") from None
        run(IP, "-n", br, "link", "set", "br0", "up")
        for role, address in ADDRESSES.items():
            ns = self.ns(role)
            run(IP, "netns", "add", ns)
            self.created.append(ns)
            port = self.bridge_port(role)
            run(
                IP,
                "-n",
                br,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            run(IP, "-n", br, "link", "set", port, "master", "br0")
            run(IP, "-n", br, "link", "set", port, "up")
            run(IP, "-n", ns, "link", "set", "lo", "up")
            run(IP, "-n", ns, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", "eth0")
            run(IP, "-n", ns, "link", "set", "eth0", "up")

    def link(self, role: str, up: bool) -> None:
        """Cut (or restore) a host's cable: the bridge's side of its veth pair."""
        run(IP, "-n", self.bridge_ns, "link", "set", self.bridge_port(role), "up" if up else "down")

    def routes(self, role: str) -> str:
        return run(IP, "-n", self.ns(role), "route", "show", "table", "all").stdout

    def destroy(self) -> list[str]:
        problems = []
        for ns in reversed(self.created):
            _kill_netns_processes(ns)
            result = run(IP, "netns", "del", ns, check=False)
            if result.returncode != 0:
                problems.append(f"ip netns del {ns}: {result.stderr.strip()}")
        self.created.clear()
        return problems


def _postgres_bindir() -> str:
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(d + "/initdb")]
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            "apt-get install postgresql (.ci/run does this)"
        )
    return max(found, key=lambda p: [int(x) for x in re.findall(r"\d+", p.split("/")[-2])])


class Postgres:
    """A throwaway cluster listening on the db host's bridge address, trust for the subnet."""

    def __init__(self, ns: str, root: Path) -> None:
        self.ns = ns
        self.bindir = _postgres_bindir()
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.logfile = root / "server.log"
        self.user = "postgres"
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            self.user = "nobody"
        self.sockets.mkdir(parents=True)
        entry = pwd.getpwnam(self.user)
        for path in (root, self.sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self.tool(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        with open(self.data / "pg_hba.conf", "a") as f:
            f.write(f"host all all {SUBNET}.0/{PREFIX_LEN} trust\n")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{ADDRESSES['db']}:{PG_PORT}/postgres"

    def tool(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [
            IP,
            "netns",
            "exec",
            self.ns,
            RUNUSER,
            "-u",
            self.user,
            "--",
            f"{self.bindir}/{name}",
            *args,
        ]
        result = run(*command, check=False, timeout=90)
        if check and result.returncode != 0:
            raise RuntimeError(f"{name} failed: {result.stdout}\n{result.stderr}\n{self.log()}")
        return result

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        options = (
            f"-p {PG_PORT} -k {self.sockets} -c listen_addresses={ADDRESSES['db']} "
            "-c fsync=off -c full_page_writes=off -c max_connections=200"
        )
        self.tool(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def restart(self) -> subprocess.CompletedProcess:
        # -l again: without it pg_ctl hands the new postmaster its own stdout, and we would
        # wait for that pipe forever.
        return self.tool(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "restart",
        )

    def stop(self) -> None:
        self.tool("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)


class AppHost:
    """forklift + gameprogress on one host: start, kill (SIGKILL by pid), reload, stop."""

    def __init__(
        self,
        role: str,
        ns: str,
        probe_ns: str,
        root: Path,
        database_url: str,
        serve: list[str] | None = None,
        env: dict | None = None,
        ready_path: str = "/healthz",
    ) -> None:
        self.role = role
        # what to serve (default: gameprogress from the test venv, in `root`)
        self.serve = serve or ["--chdir", str(root), "gameprogress.wsgi:app"]
        self.env = dict(env or {})
        self.ready_path = ready_path
        self.ns = ns
        self.probe_ns = probe_ns  # where the readiness probe comes from: the nginx host
        self.address = ADDRESSES[role]
        self.root = root
        self.database_url = database_url
        self.pidfile = root / "forklift.pid"
        self.logfile = root / "forklift.log"
        self.access_log = root / "access.log"
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            IP,
            "netns",
            "exec",
            self.ns,
            FORKLIFT,
            "--http",
            f"{self.address}:{APP_PORT}",
            "--processes",
            "2",
            "--threads",
            "4",
            "--pidfile",
            str(self.pidfile),
            "--forwarded-allow-ips",
            ADDRESSES["nx"],
            "--access-log",
            str(self.access_log),
            *self.serve,
        ]

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ, GAMEPROGRESS_DATABASE_URL=self.database_url, **self.env)
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        with open(self.logfile, "ab") as log:
            log.write(f"\n--- start at monotonic {time.monotonic():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """/healthz answers 200 from the nginx host, and the master has both workers."""

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"forklift on {self.role} exited ({self.proc.returncode}):\n{self.log()}"
                )
            status, _, _ = http_in(self.probe_ns, self.address, APP_PORT, "GET", self.ready_path)
            return status == 200 and len(self.worker_pids()) >= 2

        try:
            wait_until(ready, timeout, interval=0.1, what=self.ready_path, ignoring=_HTTP_ERRORS)
        except AssertionError as exc:
            raise RuntimeError(f"forklift on {self.role} not ready: {exc}\n{self.log()}") from None

    def master_pid(self) -> int:
        return int(self.pidfile.read_text().strip())

    def worker_pids(self) -> list[int]:
        try:
            return _children(self.master_pid())
        except (OSError, ValueError):
            return []

    def kill(self) -> list[int]:
        """SIGKILL the master and every worker, by pid, as fast as possible."""
        master = self.master_pid()
        pids = [master, *_children(master)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(10)
        wait_until(lambda: not any(pid_alive(p) for p in pids), 5, what="the killed processes")
        return pids

    def reload(self) -> subprocess.CompletedProcess:
        return run(
            IP,
            "netns",
            "exec",
            self.ns,
            FORKLIFT,
            "reload",
            "--pidfile",
            str(self.pidfile),
            "--timeout",
            "30",
            check=False,
            timeout=60,
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pids = [self.proc.pid, *_children(self.proc.pid)]
        self.proc.send_signal(signal.SIGINT)  # fast stop
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(5)

    def log(self, since: int = 0) -> str:
        try:
            with open(self.logfile, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")[-6000:]
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.logfile.stat().st_size
        except OSError:
            return 0


class SshKeys:
    """A client key, one host key for every sshd of the test, known_hosts and an ssh_config.

    All in a temp dir of the test: nothing is read from or written to ~/.ssh.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        self.client_key = root / "client_key"
        self.host_key = root / "host_key"
        for key in (self.client_key, self.host_key):
            run(SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "forklift-test", "-f", str(key))
        self.authorized_keys = root / "authorized_keys"
        shutil.copy(f"{self.client_key}.pub", self.authorized_keys)
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text("")
        self.config = root / "ssh_config"
        self.config.write_text(
            "Host *\n"
            "    User root\n"
            f"    IdentityFile {self.client_key}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
            "    LogLevel ERROR\n"
        )

    def trust(self, address: str, port: int = SSH_PORT) -> None:
        """The host key is known for this address: a strict client accepts it, nothing else."""
        public = Path(f"{self.host_key}.pub").read_text().split()
        name = address if port == 22 else f"[{address}]:{port}"
        with open(self.known_hosts, "a") as f:
            f.write(f"{name} {public[0]} {public[1]}\n")


class Sshd:
    """Debian's sshd (openssh-server) in a namespace, in the foreground, stopped by pid."""

    def __init__(self, ns: str, root: Path, address: str, keys: SshKeys) -> None:
        self.ns = ns
        self.root = root
        self.address = address
        self.keys = keys
        self.log = root / "sshd.log"
        self.config = root / "sshd_config"
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"Port {SSH_PORT}\n"
            f"ListenAddress {address}\n"
            f"HostKey {keys.host_key}\n"
            f"PidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {keys.authorized_keys}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "X11Forwarding no\n"
            "PrintMotd no\n"
            "LogLevel ERROR\n"
        )

    def start(self, timeout: float = 15.0) -> None:
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} not found: apt-get install openssh-server")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation dir
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [IP, "netns", "exec", self.ns, SSHD, "-D", "-e", "-f", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited ({self.proc.returncode}): {self.log.read_text()}")
            try:
                in_netns(self.ns, _connects, self.address, SSH_PORT)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd on {self.address} not listening in {timeout} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _connects(host: str, port: int) -> None:
    import socket

    with socket.create_connection((host, port), timeout=1.0):
        pass


def _children(pid: int) -> list[int]:
    found = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return found


class Nginx:
    """nginx with `forklift nginx-config --full`, its own prefix, pid, temp paths and logs."""

    def __init__(self, ns: str, root: Path, upstreams: list[str]) -> None:
        self.ns = ns
        self.root = root
        self.conf = root / "nginx.conf"
        self.pidfile = root / "nginx.pid"
        self.startup_log = root / "startup.log"  # nginx -e: before the config is read
        self.error_log = root / "stderr.log"  # the generated config says `error_log stderr;`
        self.access_log = root / "access.log"
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)  # nginx's workers run as nobody and use the temp dirs below
        args = [
            FORKLIFT,
            "nginx-config",
            "--protocol",
            "http",
            "--idempotent-writes",
            "--full",
            "--listen",
            f"{ADDRESSES['nx']}:{NGINX_PORT}",
        ]
        for upstream in upstreams:
            args += ["--http", upstream]
        self.generated = run(*args).stdout
        self.text = self.localise(self.generated)
        self.conf.write_text(self.text)

    def localise(self, text: str) -> str:
        """The generated nginx.conf made to run beside others: pid and temp paths of its own.

        `forklift nginx-config` has no option for the pid path (it writes
        /run/nginx-forklift.pid), so it is replaced here; the access log is turned on (with
        the upstream's address, status and times) so a failure can be traced.
        """
        text, n = re.subn(r"(?m)^pid [^;]+;", f"pid {self.pidfile};", text)
        assert n == 1, f"no pid line in the generated config:\n{text}"
        temp = "\n".join(
            f"    {kind}_temp_path {self.root}/{kind}_temp;"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        log = (
            '    log_format upstream \'$msec $request_time "$request" $status '
            "up=$upstream_addr ups=$upstream_status upt=$upstream_response_time "
            "uct=$upstream_connect_time';\n"
            f"    access_log {self.access_log} upstream;"
        )
        text, n = re.subn(r"(?m)^    access_log off;", temp + "\n" + log, text)
        assert n == 1, f"no 'access_log off;' in the generated config:\n{text}"
        return text

    def nginx(self, *args: str) -> list[str]:
        return [
            IP,
            "netns",
            "exec",
            self.ns,
            NGINX,
            "-p",
            str(self.root),
            "-c",
            str(self.conf),
            "-e",
            str(self.startup_log),
            *args,
        ]

    def test_config(self) -> subprocess.CompletedProcess:
        return run(*self.nginx("-t"), check=False)

    def start(self) -> None:
        with open(self.error_log, "ab") as out:
            self.proc = subprocess.Popen(
                self.nginx("-g", "daemon off;"),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

        def answering() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited ({self.proc.returncode}):\n{self.errors()}")
            status, _, _ = http_in(self.ns, ADDRESSES["nx"], NGINX_PORT, "GET", "/healthz")
            return status == 200

        try:
            wait_until(answering, 15, interval=0.1, what="nginx", ignoring=_HTTP_ERRORS)
        except AssertionError:
            raise RuntimeError(f"nginx did not answer in 15 s:\n{self.errors()}") from None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def errors(self, since: int = 0) -> str:
        return _read_from(self.error_log, since)

    def accesses(self, since: int = 0) -> str:
        return _read_from(self.access_log, since, limit=None)


def _read_from(path: Path, since: int, limit: int | None = 8000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return text if limit is None else text[-limit:]


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class Cluster:
    """The four hosts, started in order; `destroy` undoes everything, whatever failed."""

    def __init__(self) -> None:
        self.topology = Topology()
        self.root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
        os.chmod(self.root, 0o755)  # PostgreSQL (as postgres) and nginx's workers go through it
        self.postgres: Postgres | None = None
        self.apps: dict[str, AppHost] = {}
        self.nginx: Nginx | None = None
        self.loadgens: list[subprocess.Popen] = []
        self.sshds: list[Sshd] = []

    def start_sshd(self, roles: tuple = ("a", "b")) -> SshKeys:
        """sshd on each app host, one client key and a known_hosts for them."""
        keys = SshKeys(self.root / "ssh")
        for role in roles:
            sshd = Sshd(self.ns(role), self.root / f"sshd-{role}", ADDRESSES[role], keys)
            self.sshds.append(sshd)
            sshd.start()
            keys.trust(ADDRESSES[role])
        return keys

    def ns(self, role: str) -> str:
        return self.topology.ns(role)

    def start(self) -> None:
        self.start_network()
        self.start_apps()
        self.start_nginx()

    def start_network(self) -> None:
        """The namespaces and PostgreSQL."""
        self.topology.create()
        self.postgres = Postgres(self.ns("db"), self.root / "pg")
        self.postgres.start()

    def start_apps(self, **options) -> None:
        """forklift on both app hosts (`options`: AppHost's serve, env, ready_path)."""
        assert self.postgres is not None
        for role in ("a", "b"):
            self.apps[role] = AppHost(
                role,
                self.ns(role),
                self.ns("nx"),
                self.root / role,
                self.postgres.url,
                **{k: (v(role) if callable(v) else v) for k, v in options.items()},
            )
        # Both hosts at once: the migrations must be safe when several hosts start together.
        starters = [
            threading.Thread(target=self._start_app, args=(app,)) for app in self.apps.values()
        ]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        for app in self.apps.values():
            if app.proc is None or app.proc.poll() is not None or not app.worker_pids():
                raise RuntimeError(f"app host {app.role} did not start:\n{app.log()}")

    def start_nginx(self) -> None:
        upstreams = [f"{ADDRESSES[r]}:{APP_PORT}" for r in self.apps]
        self.nginx = Nginx(self.ns("nx"), self.root / "nginx", upstreams)
        checked = self.nginx.test_config()
        if checked.returncode != 0:
            raise RuntimeError(
                f"nginx -t refused the generated config: {checked.stderr}\n{self.nginx.text}"
            )
        self.nginx.start()

    @staticmethod
    def _start_app(app: AppHost) -> None:
        try:
            app.start()
        except Exception as exc:  # reported by start() through the checks after join
            with open(app.logfile, "a") as f:
                f.write(f"\n[test] start failed: {exc}\n")

    def start_load(self, config: dict) -> LoadRun:
        run_dir = Path(tempfile.mkdtemp(prefix=f"load-{config['name']}-", dir=self.root))
        config_path = run_dir / "config.json"
        config_path.write_text(json.dumps(config))
        out = run_dir / "result.json"
        with open(run_dir / "stderr.log", "wb") as err:
            proc = subprocess.Popen(
                [
                    IP,
                    "netns",
                    "exec",
                    self.ns("nx"),
                    sys.executable,
                    __file__,
                    "loadgen",
                    str(config_path),
                    str(out),
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=_with_tests_on_path(os.environ),  # the script imports `support` too
            )
        self.loadgens.append(proc)
        load = LoadRun(proc, out, run_dir / "stderr.log")
        load.wait_started(30)
        return load

    def destroy(self) -> list[str]:
        problems = []
        for proc in self.loadgens:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        for stopper in [self.nginx, *self.apps.values(), *self.sshds]:
            if stopper is None:
                continue
            try:
                stopper.stop()
            except Exception as exc:
                problems.append(f"stopping {stopper}: {exc}")
        if self.postgres is not None:
            try:
                self.postgres.stop()
            except Exception as exc:
                problems.append(f"stopping PostgreSQL: {exc}")
        problems += self.topology.destroy()
        if os.environ.get("FORKLIFT_MULTIHOST_KEEP"):
            problems.append(f"kept {self.root} (FORKLIFT_MULTIHOST_KEEP)")
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        return problems


class LoadRun:
    """A running load generator: its start time (monotonic) and, at the end, its result."""

    def __init__(self, proc: subprocess.Popen, out: Path, stderr: Path) -> None:
        self.proc = proc
        self.out = out
        self.stderr = stderr
        self.t0 = 0.0

    def wait_started(self, timeout: float) -> None:
        import select

        deadline = time.monotonic() + timeout
        buf = b""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
                m = re.search(rb"READY ([\d.]+)\n", buf)
                if m:
                    self.t0 = float(m.group(1))
                    return
        self.proc.kill()
        raise RuntimeError(f"load generator did not start: {buf!r}\n{_read_from(self.stderr, 0)}")

    def result(self, timeout: float) -> dict:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise RuntimeError(f"load generator still running after {timeout} s") from None
        if self.proc.returncode != 0 or not self.out.exists():
            raise RuntimeError(
                f"load generator failed ({self.proc.returncode}):\n{_read_from(self.stderr, 0)}"
            )
        return json.loads(self.out.read_text())


# --- the load generator (runs inside the nginx namespace) ---------------------------------------

_LEGACY_LEVEL = re.compile("最高到达(\\d+)关卡")


class _Client:
    """One keep-alive connection to nginx, remade after any error."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
            if response.will_close:
                self.close()
            return response.status, response.getheader("Retry-After"), data
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _Book:
    """Client-side truth: per device, what was sent and what was acknowledged."""

    def __init__(self, devices: list[str]) -> None:
        self.lock = threading.Lock()
        self.next_level = {d: 0 for d in devices}
        self.max_sent = {d: -1 for d in devices}
        self.max_acked = {d: -1 for d in devices}
        self.acked_levels = {d: [] for d in devices}
        self.sent = {d: 0 for d in devices}
        self.acked = {d: 0 for d in devices}

    def level_to_send(self, device: str, rng: random.Random) -> int:
        with self.lock:
            if rng.random() < 0.1 and self.next_level[device] > 3:
                level = self.next_level[device] - rng.randint(1, 3)  # a lower one: max kept
            else:
                self.next_level[device] += 1
                level = self.next_level[device]
            self.max_sent[device] = max(self.max_sent[device], level)
            self.sent[device] += 1
            return level

    def ack(self, device: str, level: int) -> None:
        with self.lock:
            self.max_acked[device] = max(self.max_acked[device], level)
            self.acked_levels[device].append(level)
            self.acked[device] += 1

    def acked_now(self, device: str) -> int:
        with self.lock:
            return self.max_acked[device]


def _quote(device: str) -> str:
    return urllib.parse.quote(device, safe="")


def _write(client: _Client, device: str, level: int, kind: str):
    """(status, retry_after, level seen in the answer or None, error text)."""
    if kind == "legacy":
        status, retry, data = client.request("GET", f"/update/{_quote(device)}/{level}")
        ok = status == 200 and json.loads(data).get("error") == 0
        error = "" if ok else data[:200].decode("utf-8", "replace")
        return status, retry, (level if ok else None), error
    body = json.dumps({"level": level}).encode()
    status, retry, data = client.request("PUT", f"/v1/devices/{_quote(device)}/level", body)
    if status == 200:
        return status, retry, int(json.loads(data)["level"]), ""
    return status, retry, None, data[:200].decode("utf-8", "replace")


def _read(client: _Client, device: str, kind: str):
    if kind == "legacy":
        status, retry, data = client.request("GET", f"/deviceId={_quote(device)}")
        if status == 200:
            m = _LEGACY_LEVEL.search(json.loads(data).get("msg", ""))
            return status, retry, (int(m.group(1)) if m else None), ""
        return status, retry, None, data[:200].decode("utf-8", "replace")
    status, retry, data = client.request("GET", f"/v1/devices/{_quote(device)}")
    if status == 200:
        return status, retry, int(json.loads(data)["level"]), ""
    return status, retry, None, data[:200].decode("utf-8", "replace")


def loadgen(config: dict) -> dict:
    host, port = config["host"], config["port"]
    devices = [f"{config['name']}-{i:03d}" for i in range(config["devices"])]
    book = _Book(devices)
    timeout = config["request_timeout"]

    # Seed every device (not measured), so that reads of a device always find it.
    seeder = _Client(host, port, timeout)
    deadline = time.monotonic() + 20
    for device in devices:
        while True:
            level = book.level_to_send(device, random.Random(0))
            try:
                status, _, seen, _ = _write(seeder, device, level, "v1")
            except (OSError, http.client.HTTPException, ValueError):
                status, seen = 0, None
            if status == 200 and seen is not None:
                book.ack(device, level)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot seed {device}: {status}")
            time.sleep(0.1)
    seeder.close()

    records: list = []
    records_lock = threading.Lock()
    threads = config["threads"]
    interval = 1.0 / config["rate_per_thread"]
    start = time.monotonic() + 0.05
    end = start + config["duration"]
    stop_file = config.get("stop_file")  # optional: its creation ends the run early
    stopped = threading.Event()
    print(f"READY {start:.6f}", flush=True)

    def worker(index: int) -> None:
        rng = random.Random(config.get("seed", 1) * 1000 + index)
        client = _Client(host, port, timeout)
        mine = []
        next_t = start + index * interval / threads
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if stop_file and os.path.exists(stop_file):
                stopped.set()  # the scenario said it is done: stop before the time limit
                break
            if now < next_t:
                time.sleep(next_t - now)
            device = rng.choice(devices)
            kind = "legacy" if rng.random() < 0.5 else "v1"
            is_write = rng.random() < config["write_fraction"]
            level = expected = None
            if is_write:
                level = book.level_to_send(device, rng)
            else:
                expected = book.acked_now(device)
            t0 = time.monotonic()
            try:
                if is_write:
                    status, retry, seen, error = _write(client, device, level, kind)
                else:
                    status, retry, seen, error = _read(client, device, kind)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                status, retry, seen, error = 0, None, None, f"{type(exc).__name__}: {exc}"
            t1 = time.monotonic()
            if is_write and status == 200 and seen is not None:
                book.ack(device, level)
                expected = level  # the stored record must show at least the level written
            mine.append(
                [
                    t0,
                    t1,
                    "write" if is_write else "read",
                    kind,
                    device,
                    level,
                    status,
                    retry,
                    seen,
                    expected,
                    error,
                ]
            )
            next_t += interval
            if next_t < time.monotonic() - interval:
                next_t = time.monotonic()  # behind after a stall: no burst to catch up
        client.close()
        with records_lock:
            records.extend(mine)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    finished = time.monotonic()

    # What the service holds now, read through nginx (retried: the scenario may just be ending).
    final = {}
    reader = _Client(host, port, timeout)
    deadline = time.monotonic() + 30
    for device in devices:
        while True:
            try:
                status, _, data = reader.request("GET", f"/v1/devices/{_quote(device)}")
            except (OSError, http.client.HTTPException) as exc:
                status, data = 0, repr(exc).encode()
            if status == 200:
                record = json.loads(data)
                final[device] = {"level": record["level"], "updates": record["updates"]}
                break
            if time.monotonic() > deadline:
                final[device] = {"level": None, "updates": None, "error": f"{status} {data[:200]}"}
                break
            time.sleep(0.2)
    reader.close()

    return {
        "start": start,
        "end": end,
        "finished": finished,
        "stopped_by_file": stopped.is_set(),
        "records": sorted(records),
        "devices": {
            d: {
                "max_sent": book.max_sent[d],
                "max_acked": book.max_acked[d],
                "acked_levels": book.acked_levels[d],
                "sent": book.sent[d],
                "acked": book.acked[d],
                **final[d],
            }
            for d in devices
        },
    }


# --- reading a result ---------------------------------------------------------------------------

# Indexes into a record.
T0, T1, OP, KIND, DEVICE, LEVEL, STATUS, RETRY, SEEN, EXPECTED, ERROR = range(11)


@dataclass
class Row:
    scenario: str
    requests: int = 0
    ok: int = 0
    failed: int = 0
    lost: int = 0
    stale: int = 0
    dup: int = 0
    over: int = 0
    p99: float = 0.0
    max: float = 0.0
    note: str = ""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(name: str, result: dict) -> tuple[Row, dict]:
    """The matrix row, and the details behind each number (for assertion messages)."""
    records = result["records"]
    failed = [r for r in records if r[STATUS] != 200]
    stale = [
        r
        for r in records
        if r[STATUS] == 200
        and r[EXPECTED] is not None
        and (r[SEEN] is None or r[SEEN] < r[EXPECTED])
    ]
    lost, dup, over, unreadable = [], [], [], []
    for device, d in result["devices"].items():
        if d["level"] is None:
            unreadable.append((device, d.get("error")))
            continue
        lost += [(device, level, d["level"]) for level in d["acked_levels"] if level > d["level"]]
        if d["level"] > d["max_sent"]:
            over.append((device, d["level"], d["max_sent"]))
        if d["updates"] > d["sent"]:
            dup.append((device, d["updates"], d["sent"]))
        elif d["updates"] < d["acked"]:
            lost.append((device, f"updates {d['updates']} < acknowledged writes {d['acked']}"))
    latencies = [r[T1] - r[T0] for r in records]
    row = Row(
        scenario=name,
        requests=len(records),
        ok=len(records) - len(failed),
        failed=len(failed),
        lost=len(lost) + len(unreadable),
        stale=len(stale),
        dup=sum(u - s for _, u, s in dup),
        over=len(over),
        p99=percentile(latencies, 0.99),
        max=max(latencies, default=0.0),
    )
    details = {
        "failed": failed,
        "stale": stale,
        "lost": lost,
        "unreadable": unreadable,
        "dup": dup,
        "over": over,
    }
    return row, details


def format_matrix(rows: list[Row]) -> str:
    head = (
        f"{'scenario':<12} {'requests':>8} {'ok':>6} {'failed':>6} {'lost':>5} {'stale':>5} "
        f"{'dup':>4} {'p99 ms':>8} {'max ms':>8}  note"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.scenario:<12} {r.requests:>8} {r.ok:>6} {r.failed:>6} {r.lost:>5} {r.stale:>5} "
            f"{r.dup:>4} {r.p99 * 1000:>8.1f} {r.max * 1000:>8.1f}  {r.note}"
        )
    return "\n".join(lines)


def describe(records: list, origin: float, limit: int = 15) -> str:
    """Requests as lines: time from the scenario's start, what, status, latency, error."""
    lines = []
    for r in records[:limit]:
        lines.append(
            f"  t={r[T0] - origin:7.3f}s {r[OP]:<5} {r[KIND]:<6} {r[DEVICE]} level={r[LEVEL]} "
            f"-> {r[STATUS]} in {(r[T1] - r[T0]) * 1000:.0f} ms seen={r[SEEN]} "
            f"expected>={r[EXPECTED]} retry-after={r[RETRY]} {_one_line(r[ERROR])}"
        )
    if len(records) > limit:
        lines.append(f"  ... and {len(records) - limit} more")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 100) -> str:
    """An error body as one short line (nginx's HTML pages reduced to their title)."""
    title = re.search(r"<title>(.*?)</title>", text)
    text = title.group(1) if title else " ".join(text.split())
    return text[:limit]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "loadgen":
        with open(sys.argv[2]) as f:
            cfg = json.load(f)
        outcome = loadgen(cfg)
        tmp = sys.argv[3] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(outcome, f)
        os.replace(tmp, sys.argv[3])
        print("DONE", flush=True)
    else:
        sys.exit("usage: multihost_support.py loadgen CONFIG.json OUT.json")
