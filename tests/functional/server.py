"""A real forklift in a subprocess: started with its own options, found by the port it logs.

The server's stdout (the access log) and stderr (the error log) go to files, so a test can
assert what an operator would see. It is stopped by its pid: SIGTERM, a bounded wait,
then SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .wire import Wire

APPS = Path(__file__).parent / "apps"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_LISTENING = re.compile(r"\[INFO\] listening on (\S+) \((\w+)\)")


class Forklift:
    """One forklift process serving `app`, a MODULE:CALLABLE found in tests/functional/apps."""

    def __init__(
        self,
        directory: Path,
        app: str | None,
        *options: str,
        env: dict | None = None,
        listen: tuple = ("127.0.0.1:0",),
    ):
        self.dir = directory
        self.app = app
        self.options = list(options)
        self.listen = list(listen)
        self.env = dict(env or {})
        self.stdout_path = directory / "stdout.log"
        self.stderr_path = directory / "stderr.log"
        self.proc: subprocess.Popen | None = None
        self.addresses: list = []  # (family, address) per listener, in --http order
        self.returncode: int | None = None
        self._terminated = False

    # -- life --------------------------------------------------------------------------------
    def command(self) -> list:
        cmd = [sys.executable, "-m", "forklift", "--chdir", str(APPS)]
        for addr in self.listen:
            cmd += ["--http", addr]
        return cmd + self.options + ([self.app] if self.app else [])

    def start(self) -> Forklift:
        env = dict(os.environ)
        env.update(self.env)
        env["FIXTURE_DIR"] = str(self.dir)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = _LISTENING.findall(self.stderr())
            if len(found) >= len(self.listen):
                self.addresses = [_address(text) for text, _proto in found]
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"forklift exited with {self.proc.returncode}:\n{self.stderr()}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"forklift did not start within {START_TIMEOUT}s:\n{self.stderr()}")

    def terminate(self) -> None:
        """Ask for a graceful stop without waiting (stop() then waits)."""
        if self.proc is not None and self.proc.poll() is None and not self._terminated:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self) -> int | None:
        proc = self.proc
        if proc is None:
            return self.returncode
        if proc.poll() is None:
            self.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self.returncode = proc.returncode
        self.proc = None
        self._terminated = False
        return self.returncode

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- talking to it -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        family, address = self.addresses[0]
        assert family != socket.AF_UNIX
        return address[1]

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

    # -- what it printed ---------------------------------------------------------------------
    def stderr(self) -> str:
        return self.stderr_path.read_text("utf-8", "replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text("utf-8", "replace")

    def stderr_mark(self) -> int:
        return self.stderr_path.stat().st_size

    def stderr_since(self, mark: int) -> str:
        with open(self.stderr_path, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")

    def wait_for_stderr(self, mark: int, needle: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.stderr_since(mark)
            if needle in text or time.monotonic() >= deadline:
                return text
            time.sleep(0.02)


def _address(text: str) -> tuple:
    if text.startswith("unix:"):
        return socket.AF_UNIX, text[5:]
    host, _, port = text.rpartition(":")
    if host.startswith("["):
        return socket.AF_INET6, (host[1:-1], int(port))
    return socket.AF_INET, (host, int(port))


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02):
    """Poll `predicate` until it is truthy or `timeout` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
