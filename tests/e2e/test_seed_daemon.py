"""The seed's deploy script, line for line: `forklift -d --ini uwsgi.ini`, then `--stop uwsgi.pid`.

The seed's `manager.py` (copied as `manage.py`, the name its ini gives) and its `uwsgi.ini`
(only `chdir`, `logto` and the port changed, as in test_nginx.py) are started exactly as the
seed's autoreload.sh starts uWSGI, from the app's directory. The daemon is not our child: it
is found by its pidfile and stopped by that pid (`forklift --stop`, then SIGKILL if needed).

Then starts that must fail, daemonized: the command must exit non-zero with the reason on
stderr, and nothing may be left running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nginx_support import SEED_APP, make_dir, request_vars, uwsgi_exchange, uwsgi_packet

from support import free_port, pid_alive, wait_until

FORKLIFT = [sys.executable, "-m", "forklift"]


def write_seed(directory: Path, port: int) -> None:
    """The seed's files, with only chdir, logto and the socket's port changed."""
    ini = (SEED_APP / "uwsgi.ini").read_text(encoding="utf-8")
    for old, new in (
        ("chdir = /root/longpf/myflask\n", f"chdir = {directory}\n"),
        ("logto = /root/longpf/myflask/log.log\n", f"logto = {directory}/log.log\n"),
        ("socket = :6000\n", f"socket = :{port}\n"),
    ):
        assert ini.count(old) == 1, old
        ini = ini.replace(old, new)
    (directory / "uwsgi.ini").write_text(ini, encoding="utf-8")
    shutil.copy(SEED_APP / "manager.py", directory / "manage.py")  # the ini's wsgi-file
    shutil.copy(SEED_APP / "sql.py", directory / "sql.py")


def _run(args: list, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FORKLIFT, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _daemon_pid(directory: Path) -> int | None:
    try:
        return int((directory / "uwsgi.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _kill_leftover(directory: Path) -> None:
    pid = _daemon_pid(directory)
    if pid and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def _get(port: int, path: str) -> bytes:
    return uwsgi_exchange(("127.0.0.1", port), uwsgi_packet(request_vars(path)))


@pytest.fixture
def seed_dir():
    directory = make_dir("fl-seedd-")
    port = free_port()
    write_seed(directory, port)
    yield directory, port
    _kill_leftover(directory)
    shutil.rmtree(directory, ignore_errors=True)


def test_seed_autoreload_lines(seed_dir):
    directory, port = seed_dir
    started = _run(["-d", "--ini", "uwsgi.ini"], directory)
    assert started.returncode == 0, started.stderr
    lines = started.stderr.strip().splitlines()
    # one line says where the log goes (never a file named `--ini`), one that it serves
    assert any("-d is followed by '--ini', not a log file" in line for line in lines), lines
    assert any(f"{directory}/log.log" in line and "logto" in line for line in lines), lines
    assert lines[-1].startswith("forklift: serving 0.0.0.0:"), lines
    assert not (directory / "--ini").exists()
    pid = _daemon_pid(directory)
    assert pid and pid_alive(pid)
    # It is detached (another session) and already serves when the command returns.
    assert os.getsid(pid) != os.getsid(0)
    answer = _get(port, "/")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"Hello longpf"), answer
    assert b'"error":1' in _get(port, "/deviceId=nobody").replace(b" ", b"")

    status = _run(["status", "--ini", "uwsgi.ini"], directory, timeout=10)
    assert status.returncode == 0 and f"master {pid}" in status.stdout, status

    stopped = _run(["--stop", "uwsgi.pid"], directory, timeout=70)
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: not pid_alive(pid), 10, what="the daemon to exit")
    assert not (directory / "uwsgi.pid").exists()
    log = (directory / "log.log").read_text()
    assert "listening on 0.0.0.0:" in log and "Traceback" not in log


def _error_line(result: subprocess.CompletedProcess) -> str:
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def _assert_nothing_runs(directory: Path, port: int) -> None:
    assert _daemon_pid(directory) is None or not pid_alive(_daemon_pid(directory))
    with pytest.raises(OSError):
        _get(port, "/")


def test_missing_chdir_fails_before_detaching(seed_dir):
    directory, port = seed_dir
    ini = directory / "uwsgi.ini"
    ini.write_text(ini.read_text().replace(f"chdir = {directory}\n", "chdir = /nonexistent/x\n"))
    result = _run(["-d", "--ini", "uwsgi.ini"], directory, timeout=20)
    assert result.returncode == 2
    line = _error_line(result)
    assert f"{ini}:5: chdir = /nonexistent/x: no such directory" in line
    _assert_nothing_runs(directory, port)


def test_import_error_fails_before_detaching(seed_dir):
    directory, port = seed_dir
    (directory / "sql.py").write_text("import no_such_database_driver\n")
    result = _run(["-d", "--ini", "uwsgi.ini"], directory, timeout=20)
    assert result.returncode == 1
    line = _error_line(result)
    assert "No module named 'no_such_database_driver'" in line
    _assert_nothing_runs(directory, port)


def test_daemon_that_fails_after_detaching_reports_its_first_error(seed_dir):
    # A hook runs before the import: the check in a child is skipped (hooks are not run
    # twice), so the failure happens in the daemon; the foreground reads it from the log.
    directory, port = seed_dir
    ini = directory / "uwsgi.ini"
    ini.write_text(ini.read_text() + "hook-pre-app = exec:true\n")
    (directory / "sql.py").write_text("raise RuntimeError('database is down')\n")
    result = _run(["-d", "--ini", "uwsgi.ini"], directory, timeout=80)
    assert result.returncode == 1
    line = _error_line(result)
    assert "RuntimeError: database is down" in line
    wait_until(
        lambda: _daemon_pid(directory) is None or not pid_alive(_daemon_pid(directory)),
        10,
        what="the failed daemon to exit",
    )
    _assert_nothing_runs(directory, port)
