"""Process and port facts a test checks: is this pid alive, whose children are these, which
port is free; and stopping a process we started, by its pid, in bounded time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

STOP_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (bind port 0, read it, close)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def proc_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, T, Z...), or "" once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return ""
    # the command name in parentheses may hold spaces and ")": split after the last one
    fields = data[data.rfind(")") + 2 :].split()
    return fields[0] if fields else ""


def pid_alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie waiting to be reaped has exited)."""
    return proc_state(pid) not in ("", "Z", "X")


def proc_children(pid: int) -> list[tuple[int, str]]:
    """(pid, state letter) of every process whose parent is `pid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                data = f.read()
        except OSError:
            continue  # exited while we looked
        fields = data[data.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found


def cmdline_has(pid: int, word: bytes) -> bool:
    """Whether /proc/PID/cmdline contains `word`: a pid we remembered may have been reused."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return word in f.read()
    except OSError:
        return False


def stop_process(
    proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT
) -> int | None:
    """Send `sig` to the process we started, wait (bounded), then KILL it. Its exit code."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def run_forklift(*args: str, cwd=None, timeout: float = 30) -> subprocess.CompletedProcess:
    """`python -m forklift ARGS` to its end (a command, or a start that must fail), no stdin."""
    return subprocess.run(
        [sys.executable, "-m", "forklift", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
