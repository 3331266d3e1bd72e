"""uWSGI's attach-daemon: side processes the master starts, restarts when they die, and
stops with itself.

The master reaps every child with one waitpid(); a pid that is not a worker is offered here
(`exited`). Each daemon runs in its own session, so stopping it stops what its shell started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from .log import error_log

_RESTART_DELAY = 1.0  # after a daemon died
_START_RETRY = 5.0  # after a daemon could not even start (a typo in the command)
_STOP_GRACE = 5.0  # between SIGTERM and SIGKILL when the master stops
_STOP_POLL = 0.05  # how often the stop checks whether they are gone


def describe_exit(code: int) -> str:
    """A child's exit as a log line says it: 'killed by SIGTERM', 'exit code 2'."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class AttachDaemons:
    """The attach-daemon commands and their processes."""

    def __init__(self, commands):
        self.commands = list(commands)
        self.running = {}  # pid -> [command, Popen]
        self.restart_at = {}  # command -> when to start it again after it died

    def start_all(self) -> None:
        for command in self.commands:
            self._start(command)

    def _start(self, command: str) -> None:
        try:
            proc = subprocess.Popen(command, shell=True, start_new_session=True)
        except OSError as exc:
            error_log.error("attach-daemon %r could not start: %s", command, exc)
            self.restart_at[command] = time.monotonic() + _START_RETRY
            return
        self.running[proc.pid] = [command, proc]
        error_log.info("attach-daemon started (pid %d): %s", proc.pid, command)

    def exited(self, pid: int, status: int, stopping: bool) -> bool:
        """The master reaped `pid`: True when it was one of ours (restarted unless stopping)."""
        entry = self.running.pop(pid, None)
        if entry is None:
            return False
        command, proc = entry
        proc.returncode = os.waitstatus_to_exitcode(status)  # we reaped it, not Popen
        if not stopping:
            error_log.warning(
                "attach-daemon %r exited (%s); restarting in 1 s",
                command,
                describe_exit(proc.returncode),
            )
            self.restart_at[command] = time.monotonic() + _RESTART_DELAY
        return True

    def restart_due(self) -> None:
        """Start again the daemons whose restart delay has passed."""
        if not self.restart_at:
            return
        now = time.monotonic()
        for command, when in list(self.restart_at.items()):
            if now >= when:
                del self.restart_at[command]
                self._start(command)

    def stop(self, reap) -> None:
        """TERM every daemon's session, KILL what is left after the grace; `reap()` is the
        master's (it reaps daemons and workers alike)."""
        for pid in list(self.running):
            _killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE
        while self.running and time.monotonic() < deadline:
            reap()
            time.sleep(_STOP_POLL)
        for pid in list(self.running):
            _killpg(pid, signal.SIGKILL)
            reap()


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        pass
