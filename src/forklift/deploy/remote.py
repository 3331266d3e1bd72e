"""One host of a deploy to several hosts, reached with the system's OpenSSH client.

`ssh -T -o BatchMode=yes HOST forklift deploy agent ...`: keys and `known_hosts` are the
user's (or those of `--ssh-config FILE`), and a password prompt or an unknown host key fails
at once instead of waiting. The connection stays open for the whole deploy: commands go to
the agent's stdin (with a heartbeat every second), its JSON lines come back on stdout; the
step lines are printed as they arrive, prefixed with the host; phases and the summary are
queued for the coordinator. ssh's own keepalive (`ServerAliveInterval`) turns a dead link
into an exit within about --host-timeout seconds.
"""

from __future__ import annotations

import json
import queue
import shlex
import signal
import subprocess
import tempfile
import threading
import time

from .inventory import Host

HEARTBEAT = 1.0
NO_SSH = "OpenSSH's client: apt-get install openssh-client"


class HostFailed(Exception):
    """A host failed a phase (its agent said why) or was lost (ssh ended)."""

    def __init__(self, host: str, reason: str, step: str | None = None):
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason
        self.step = step


def ssh_command(host: Host, remote: list, ssh_config: str | None, timeout: float) -> list:
    interval = max(1, int(timeout / 3))
    command = ["ssh", "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(2, int(timeout))}"]
    command += ["-o", f"ServerAliveInterval={interval}", "-o", "ServerAliveCountMax=3"]
    if ssh_config:
        command += ["-F", ssh_config]
    if host.port:
        command += ["-p", str(host.port)]
    return command + [host.destination, "--", shlex.join(remote)]


def run_once(host: Host, remote: list, ssh_config: str | None, timeout: float) -> tuple:
    """(exit code, stdout, stderr) of one command on a host (no agent: `releases`)."""
    try:
        proc = subprocess.run(
            ssh_command(host, remote, ssh_config, timeout),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout * 6 + 30,
        )
    except subprocess.TimeoutExpired:
        return 255, "", f"no answer within {timeout * 6 + 30:.0f} s"
    except OSError as exc:
        return 255, "", f"cannot run ssh: {exc} ({NO_SSH})"
    return proc.returncode, proc.stdout, proc.stderr


class Remote:
    """The agent on one host: start, send commands, wait for phases, read the summary."""

    def __init__(self, host: Host, remote: list, ssh_config, timeout: float, on_line):
        self.host = host
        self.command = ssh_command(host, remote, ssh_config, timeout)
        self.on_line = on_line  # on_line(host, obj): a step, progress, output or text line
        self.events: queue.Queue = queue.Queue()
        self.summary: dict | None = None
        self.proc: subprocess.Popen | None = None
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.send_lock = threading.Lock()
        self.closed = threading.Event()
        self.ended = False
        self.heard = False  # the agent said something: it runs (and may have changed things)

    @property
    def name(self) -> str:
        return self.host.name

    def start(self) -> None:
        try:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                start_new_session=True,  # a Ctrl-C reaches the coordinator, which decides
            )
        except OSError as exc:
            self.ended = True
            raise HostFailed(self.name, f"cannot run ssh: {exc} ({NO_SSH})", "connection") from None
        threading.Thread(target=self._read, daemon=True, name=f"read-{self.name}").start()
        threading.Thread(target=self._beat, daemon=True, name=f"beat-{self.name}").start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.heard = True
            try:
                obj = json.loads(raw)
            except ValueError:
                self.on_line(self.name, {"text": raw.decode("utf-8", "replace").rstrip()})
                continue
            if "phase" in obj:
                self.events.put(obj)
            elif "result" in obj:
                self.summary = obj
                self.events.put(obj)
            else:
                self.on_line(self.name, obj)
        code = self.proc.wait()
        self.ended = True
        self.events.put({"eof": True, "code": code, "stderr": self._stderr_tail()})

    def _beat(self) -> None:
        while not self.closed.wait(HEARTBEAT):
            if not self.send({"do": "ping"}):
                return

    def _stderr_tail(self) -> str:
        try:
            self.stderr.seek(0)
            lines = [x for x in self.stderr.read().decode("utf-8", "replace").splitlines() if x]
        except (OSError, ValueError):
            return ""
        return lines[-1] if lines else ""

    def send(self, command: dict) -> bool:
        if self.proc is None or self.proc.stdin is None or self.closed.is_set():
            return False
        with self.send_lock:
            try:
                self.proc.stdin.write(json.dumps(command).encode() + b"\n")
                self.proc.stdin.flush()
                return True
            except (OSError, ValueError):
                return False

    def wait(self, phase: str, timeout: float) -> dict:
        """The phase's answer; HostFailed when the agent ended instead or was lost."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HostFailed(self.name, f"no answer to {phase!r} within {timeout:.0f} s")
            try:
                event = self.events.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if event.get("phase") == phase:
                return event
            if "result" in event:
                reason = event.get("reason") or f"ended: {event.get('result')}"
                raise HostFailed(self.name, reason, event.get("failed_step"))
            if event.get("eof"):
                raise HostFailed(self.name, self._lost_reason(event), "connection")

    def _lost_reason(self, event: dict) -> str:
        code, tail = event.get("code"), event.get("stderr") or ""
        if code == 255:
            said = tail if tail.startswith("ssh:") else f"ssh: {tail or 'exit 255'}"
            return f"ssh connection lost or refused ({said})"
        if isinstance(code, int) and code < 0:
            return f"ssh connection lost (ssh killed by {signal.Signals(-code).name})"
        return f"its forklift ended without a result (exit {code}: {tail or 'no message'})"

    def result(self, timeout: float) -> dict | None:
        """The agent's summary, once it ended (None when it was lost)."""
        deadline = time.monotonic() + timeout
        while self.summary is None and not self.ended and time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.5)
            except queue.Empty:
                continue
            if event.get("eof"):
                break
        return self.summary

    def close(self, timeout: float = 10.0) -> None:
        self.closed.set()
        if self.proc is None:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.stderr.close()
