"""A real forklift in a subprocess, the one way the tests start one.

It is started with its own options, found by the `listening on` lines it logs, and spoken to
over raw bytes (`connect`, `exchange`), http.client (`get`, `connection`) or, with a pidfile,
its control socket (`status`, `wait_workers`). Its stdout (the access log) and stderr (the
error log) go to files, so a test can assert what an operator would see. It is stopped by its
pid: SIGTERM, a bounded wait, then SIGKILL; any worker left behind is killed by its pid too.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from .processes import cmdline_has, pid_alive, proc_children
from .waiting import wait_until
from .wire import Wire

TESTS = Path(__file__).resolve().parent.parent
APPS = TESTS / "functional" / "apps"  # small fixture apps: echo, slow, streaming, ...
MASTER_APPS = TESTS / "functional" / "master_apps"  # fkapp: version, pid, /sleep, /stuck
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_LISTENING = re.compile(r"listening on (\S+) \((\w+)\)")
_CONTROL_ERRORS = (OSError, ValueError, KeyError)  # the master not answering (yet)


class Forklift:
    """One `python -m forklift` serving `app` (MODULE:CALLABLE, looked up in `chdir`).

    `directory` holds its logs. `listen` are its --http addresses (port 0: the kernel
    chooses; the real address is read from the log). With `pidfile`, the master gets a
    pidfile in a short temp dir, hence a control socket (`status`, `control`). `error_log`
    names the file where the `listening on` lines go when an option moves them (--logto).
    """

    def __init__(
        self,
        directory: Path,
        app: str | None,
        *options: str,
        env: dict | None = None,
        listen: tuple = ("127.0.0.1:0",),
        chdir: Path | None = APPS,
        pidfile: bool = False,
        error_log: Path | None = None,
        cwd: Path | None = None,
    ):
        self.dir = Path(directory)
        self.app = app
        self.options = list(options)
        self.listen = list(listen)
        self.chdir = chdir
        self.cwd = cwd  # where the command runs (an ini file's relative paths start there)
        self.env = dict(env or {})
        self.stdout_path = self.dir / "stdout.log"
        self.stderr_path = self.dir / "stderr.log"
        self.error_log = Path(error_log) if error_log else self.stderr_path
        # unix socket paths (the control socket beside the pidfile too) must fit in sun_path
        self.rundir = tempfile.mkdtemp(prefix="fk-") if pidfile else None
        self.pidfile = os.path.join(self.rundir, "fk.pid") if self.rundir else None
        self.proc: subprocess.Popen | None = None
        self.listeners: list = []  # (address text, protocol) per listener, in the order logged
        self.addresses: list = []  # (family, address) per listener
        self.protocols: list = []  # "http" or "uwsgi" per listener
        self.returncode: int | None = None
        self.known_workers: set[int] = set()
        self._terminated = False

    # -- life --------------------------------------------------------------------------------
    def command(self) -> list:
        cmd = [sys.executable, "-m", "forklift"]
        if self.chdir is not None:
            cmd += ["--chdir", str(self.chdir)]
        for addr in self.listen:
            cmd += ["--http", addr]
        if self.pidfile:
            cmd += ["--pidfile", self.pidfile]
        return cmd + self.options + ([self.app] if self.app else [])

    def environment(self) -> dict:
        env = dict(os.environ)
        env.update(self.env)
        env["FIXTURE_DIR"] = str(self.dir)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # a rewritten module must never hit a stale .pyc
        return env

    def spawn(self) -> Forklift:
        """Start the process and return at once (a test of a failed start waits for the exit)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env=self.environment(), cwd=self.cwd,
            )  # fmt: skip
        return self

    def start(self, workers: int | None = None, listeners: int | None = None) -> Forklift:
        """Spawn, wait for every listener's `listening on` line and, given `workers`, until
        that many workers serve (needs `pidfile`). RuntimeError with the log if it exits."""
        self.spawn()
        expected = len(self.listen) if listeners is None else listeners
        try:
            self.wait_listening(expected)
            if workers is not None:
                self.wait_workers(workers, START_TIMEOUT)
        except AssertionError:
            self.stop()
            raise RuntimeError(f"forklift did not start within {START_TIMEOUT}s:\n{self.log()}")
        except BaseException:
            self.stop()
            raise
        return self

    def wait_listening(self, expected: int, timeout: float = START_TIMEOUT) -> None:
        def listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"forklift exited with {self.proc.returncode}:\n{self.log()}")
            found = _LISTENING.findall(self.log())
            return found[:expected] if len(found) >= expected else None

        found = wait_until(listening, timeout, what="the 'listening on' line(s)")
        self.listeners = found
        self.addresses = [_address(text) for text, _protocol in found]
        self.protocols = [protocol for _text, protocol in found]

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        """Ask for a (graceful) stop without waiting (stop() then waits)."""
        if self.proc is not None and self.proc.poll() is None and not self._terminated:
            self.known_workers.update(pid for pid, _ in proc_children(self.proc.pid))
            self.proc.send_signal(sig)
            self._terminated = True

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """`sig` (TERM), bounded wait, KILL; then KILL any worker left behind, by its pid."""
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                self.terminate(sig)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_TIMEOUT)
            for pid in self.known_workers:
                if pid != proc.pid and pid_alive(pid) and cmdline_has(pid, b"forklift"):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self.returncode = proc.returncode
            self.proc = None
            self._terminated = False
        if self.rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)
        return self.returncode

    close = stop

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    # -- talking to it -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        family, address = self.addresses[0]
        assert family != socket.AF_UNIX
        return address[1]

    def port_of(self, protocol: str, index: int = 0) -> int:
        """The port of the index-th TCP listener speaking `protocol` ("http", "uwsgi")."""
        found = [a for a, p in zip(self.addresses, self.protocols, strict=True) if p == protocol]
        family, address = found[index]
        assert family != socket.AF_UNIX
        return address[1]

    def address(self, protocol: str, index: int = 0):
        """(host, port) of the index-th TCP listener of `protocol`, or a unix socket's path;
        a wildcard address is reached on the loopback."""
        family, address = [
            a for a, p in zip(self.addresses, self.protocols, strict=True) if p == protocol
        ][index]
        if family == socket.AF_UNIX:
            return address
        host = "127.0.0.1" if address[0] in ("0.0.0.0", "") else address[0]
        return host, address[1]

    @property
    def url(self) -> str:
        family, address = self.addresses[0]
        host = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
        return f"http://{host}:{address[1]}"

    def connect(self, index: int = 0, timeout: float = 5.0) -> Wire:
        family, address = self.addresses[index]
        return Wire.connect(address, family, timeout)

    def exchange(self, data: bytes, method: str = "GET"):
        """Send `data` on a fresh connection and read one response."""
        with self.connect() as wire:
            wire.send(data)
            return wire.read_response(method)

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        """An http.client connection to the first listener (TCP or unix)."""
        family, address = self.addresses[0]
        if family == socket.AF_UNIX:
            return UnixHTTPConnection(address, timeout=timeout)
        return http.client.HTTPConnection(address[0], address[1], timeout=timeout)

    def get(self, path: str = "/", timeout: float = 10.0) -> tuple[int, str]:
        """One request on a new connection (closed after): (status, body)."""
        conn = self.connection(timeout)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    # -- the master's control socket (with `pidfile`) --------------------------------------
    @property
    def control_socket(self) -> str:
        assert self.pidfile, "start the server with pidfile=True"
        return self.pidfile + ".sock"

    def status(self, timeout: float = 2.0) -> dict:
        """The master's status document, read from its control socket."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.control_socket)
            sock.shutdown(socket.SHUT_WR)  # no command: the master answers with the status
            data = read_until_eof(sock)
        finally:
            sock.close()
        status = json.loads(data)
        self.known_workers.update(w["pid"] for w in status["workers"])
        return status

    def serving_workers(self, status: dict | None = None) -> list[dict]:
        """Ready, non-retiring workers of the generation that takes traffic."""
        status = status or self.status()
        return [
            w
            for w in status["workers"]
            if w["generation"] == status["generation"] and w["ready"] and not w["retiring"]
        ]

    def wait_workers(self, count: int, timeout: float = 10.0, exact: bool = True) -> dict:
        """Wait until `count` workers serve (and, with `exact`, no other worker exists)."""

        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"forklift exited {self.proc.returncode}:\n{self.log()}")
            status = self.status()
            if len(self.serving_workers(status)) != count:
                return None
            if exact and len(status["workers"]) != count:
                return None
            return status

        return wait_until(
            check, timeout, interval=0.05, what=f"{count} serving worker(s)",
            ignoring=_CONTROL_ERRORS,
        )  # fmt: skip

    def control(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """`forklift reload|stop|status ... --pidfile F`."""
        cmd = [sys.executable, "-m", "forklift", *args, "--pidfile", self.pidfile]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=self.environment()
        )

    # -- what it printed ---------------------------------------------------------------------
    def log(self) -> str:
        """The error log: stderr, or the file named by `error_log`."""
        return _read(self.error_log)

    def stderr(self) -> str:
        return _read(self.stderr_path)

    def stdout(self) -> str:
        return _read(self.stdout_path)

    def stderr_mark(self) -> int:
        return self.stderr_path.stat().st_size

    def stderr_since(self, mark: int) -> str:
        with open(self.stderr_path, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")

    def wait_for_stderr(self, mark: int, needle: str, timeout: float = 5.0) -> str:
        """The stderr written since `mark`, once it holds `needle` (or when `timeout` passed:
        the caller's assertion then shows what came instead)."""
        try:
            return wait_until(
                lambda: needle in self.stderr_since(mark) and self.stderr_since(mark), timeout
            )
        except AssertionError:
            return self.stderr_since(mark)


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket (`--http unix:PATH`)."""

    def __init__(self, path: str, timeout: float = 10.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def read_until_eof(sock: socket.socket, max_reads: int = 10_000) -> bytes:
    """Everything the peer sends until it closes (bounded in reads; the socket's timeout
    bounds each one)."""
    chunks = []
    for _ in range(max_reads):
        data = sock.recv(65536)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _address(text: str) -> tuple:
    if text.startswith("unix:"):
        return socket.AF_UNIX, text[5:]
    host, _, port = text.rpartition(":")
    if host.startswith("["):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host, int(port))
