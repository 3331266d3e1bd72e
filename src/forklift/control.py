"""Talk to a running master: signal it by pidfile, wait for a reload to finish, read status.

The master answers status as one JSON document on its control socket (`PIDFILE.sock`) or
on `--stats ADDR`; `forklift reload` uses it to wait until the new generation serves.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

from .errors import ForkliftError


class ControlError(ForkliftError):
    """The master could not be reached or refused; the message says why in one line."""


def read_pid(pidfile: str) -> int:
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except FileNotFoundError:
        raise ControlError(f"{pidfile}: no such pidfile (is forklift running?)") from None
    except (OSError, ValueError) as exc:
        raise ControlError(f"{pidfile}: cannot read a pid: {exc}") from None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise ControlError(f"{pidfile}: process {pid} is not running (stale pidfile)") from None
    except PermissionError:
        pass
    return pid


def _control_address(pidfile: str | None, stats: str | None):
    if stats:
        if stats.startswith("unix:") or "/" in stats:
            return socket.AF_UNIX, stats.removeprefix("unix:")
        host, _, port = stats.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, int(port))
    if pidfile:
        return socket.AF_UNIX, pidfile + ".sock"
    raise ControlError("give --pidfile or --stats")


def _ask(pidfile: str | None, stats: str | None, command: dict | None, timeout: float) -> dict:
    """One exchange with the master: send a command line (or nothing), read one JSON answer."""
    family, address = _control_address(pidfile, stats)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
        if command is not None:
            sock.sendall(json.dumps(command).encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)  # "nothing more": the master answers at once
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except OSError as exc:
        raise ControlError(f"cannot reach the master at {address}: {exc}") from None
    finally:
        sock.close()
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"{address}: not a forklift answer") from None


def fetch_status(pidfile: str | None = None, stats: str | None = None, timeout=2.0) -> dict:
    """The master's status document, from `--stats ADDR` or the pidfile's control socket."""
    return _ask(pidfile, stats, None, timeout)


def reload(
    pidfile: str,
    timeout: float = 120.0,
    health_path: str | None = None,
    health_host: str | None = None,
) -> dict:
    """Start a graceful reload and wait until the new generation serves.

    With `health_path`, every new worker must answer `GET health_path` with a 2xx, called
    in-process before it accepts a connection. Raises ControlError naming the failure;
    the old generation then keeps serving.
    """
    read_pid(pidfile)
    command = {"cmd": "reload", "health_path": health_path, "health_host": health_host}
    answer = _ask(pidfile, None, command, 5.0)
    if not answer.get("accepted"):
        raise ControlError(f"reload refused: {answer.get('error')}")
    generation = answer["reload"]["generation"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        status = fetch_status(pidfile)
        state = status["reload"]
        if state["generation"] == generation and state["state"] != "pending":
            if state["state"] == "done":
                return status
            raise ControlError(f"reload failed, the old workers keep serving: {state['error']}")
    raise ControlError(f"reload did not finish within {timeout:.0f} s")


def stacks(pidfile: str, pid: int) -> dict:
    """Ask the master (control socket only) to have worker `pid` write the stacks of all its
    threads to the error log."""
    answer = _ask(pidfile, None, {"cmd": "stacks", "pid": pid}, 5.0)
    if not answer.get("accepted"):
        raise ControlError(str(answer.get("error") or "refused"))
    return answer


def stop(pidfile: str, graceful: bool = True, timeout: float = 60.0) -> None:
    """TERM (graceful) or INT (fast), then wait for the master to exit."""
    pid = read_pid(pidfile)
    os.kill(pid, signal.SIGTERM if graceful else signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    raise ControlError(f"master {pid} still running after {timeout:.0f} s")


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent to reap it (it has exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def format_status(status: dict) -> str:
    lines = [
        f"master {status['pid']}  uptime {status['uptime']:.0f}s  generation {status['generation']}"
        f"  workers {len(status['workers'])}/{status['target_workers']}"
        f" x {status['threads']} thread(s)",
    ]
    reload_state = status["reload"]
    if reload_state["state"] != "done":
        lines.append(f"last reload: {reload_state['state']} {reload_state.get('error') or ''}")
    lines.append(f"{'pid':>8} {'gen':>4} {'age':>8} {'requests':>9} {'state':>8} {'rss MB':>8}")
    for w in status["workers"]:
        state = w["state"] if w["ready"] else "booting"
        if w["retiring"]:
            state = "retiring"
        lines.append(
            f"{w['pid']:>8} {w['generation']:>4} {w['age']:>7.0f}s {w['requests']:>9}"
            f" {state:>8} {w['rss_mb']:>8.1f}"
        )
    return "\n".join(lines)
