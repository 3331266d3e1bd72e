"""Detaching (uWSGI's `daemonize`, `-d`) without hiding a failed start.

Everything that can be checked is checked in the foreground first (`server.check_paths`, the
listeners bound, `check_app_in_child`). Then `detach` double-forks; the foreground process
stays until the daemon's master says its first worker serves ("ready" on a pipe), and exits
0. When the daemon dies first, the foreground exits 1 with the daemon's first error line,
read from its log; when the boot window passes, it exits 1 saying so. `forklift -d` in a
deploy script therefore fails the script when the app does not start, which `uwsgi -d` does
not do.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from .errors import AppImportError

BOOT_WINDOW = 70.0  # seconds: a worker's own boot timeout (60 s) plus the master's start
_IMPORT_CHECK_TIMEOUT = 60.0
_ERROR_MARKS = ("error:", "[ERROR]", "[CRITICAL]", "Traceback", "Error:")


def check_app_in_child(config, become_user) -> None:
    """Import the app the way a worker will (chdir, env, virtualenv, as the user that
    `become_user()` switches to), in a child process, so that nothing of the app stays in
    the master. AppImportError when it fails."""
    from .appload import load_app

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        code = 0
        try:
            become_user()
            load_app(config)
        except BaseException as exc:  # the child's whole job is to report it
            message = str(exc) if str(exc) else type(exc).__name__
            os.write(write_end, message.encode("utf-8", "replace")[:4000])
            code = 1
        os._exit(code)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + _IMPORT_CHECK_TIMEOUT
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AppImportError(
                    f"the app did not import within {_IMPORT_CHECK_TIMEOUT:.0f} s "
                    "(checked before detaching)"
                )
            ready, _, _ = select.select([read_end], [], [], left)
            if ready:
                data = os.read(read_end, 4096)
                if not data:
                    break
                chunks.append(data)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        reason = b"".join(chunks).decode("utf-8", "replace").replace("\n", " ").strip()
        raise AppImportError(reason or "the app could not be imported (checked before detaching)")


class Readiness:
    """The daemon's end of the pipe: `ready()` once the first worker serves."""

    def __init__(self, fd: int):
        self.fd = fd

    def ready(self) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, b"ready\n")
        except OSError:
            pass  # the foreground is gone (killed): serving goes on
        os.close(self.fd)
        self.fd = -1


def detach(config, addresses: list) -> Readiness:
    """Double fork. Returns in the daemon only; the foreground process exits in here.

    `addresses` (the bound listeners, as text) are named in the foreground's last line."""
    logfile = config.daemonize
    log_fd = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    logs = {path for path in (logfile, config.error_log) if path}
    offsets = {path: _size(path) for path in logs}
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        os.close(log_fd)
        os.waitpid(pid, 0)  # the intermediate process exits at once
        code = _wait_for_daemon(read_end, offsets, config, addresses)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # not `return`: the listeners and the pidfile belong to the daemon
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(null)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    os.write(write_end, f"pid {os.getpid()}\n".encode())
    return Readiness(write_end)


def _wait_for_daemon(fd: int, offsets: dict, config, addresses: list) -> int:
    daemon_pid = None
    buffer = b""
    deadline = time.monotonic() + BOOT_WINDOW
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            where = f"pid {daemon_pid}" if daemon_pid else "the daemon"
            print(
                f"forklift: error: {where} does not serve after {BOOT_WINDOW:.0f} s "
                f"and keeps trying; see {config.daemonize}",
                file=sys.stderr,
            )
            return 1
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 4096)
        buffer += data
        for line in buffer.split(b"\n")[:-1]:
            if line.startswith(b"pid "):
                daemon_pid = int(line[4:])
            elif line == b"ready":
                where = ", ".join(addresses)
                print(
                    f"forklift: serving {where} in the background, pid {daemon_pid}; "
                    f"log: {config.daemonize}",
                    file=sys.stderr,
                )
                return 0
        if not data:  # the daemon exited before its workers served
            reason = first_error_line(offsets) or f"the daemon exited; see {config.daemonize}"
            print(f"forklift: error: {reason}", file=sys.stderr)
            return 1


def first_error_line(offsets: dict) -> str | None:
    """The first error the daemon wrote to its log(s) since `offsets` (path -> size)."""
    for path, offset in offsets.items():
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                text = handle.read(1 << 20).decode("utf-8", "replace")
        except OSError:
            continue
        for line in text.splitlines():
            if any(mark in line for mark in _ERROR_MARKS):
                return line.split("forklift: error: ", 1)[-1].strip()
    return None


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
