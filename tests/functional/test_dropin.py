"""forklift where `uwsgi` was: uWSGI's command lines, control by pidfile, checks before start,
and a systemd unit for an existing ini. Each test runs the real command in a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support import APPS, Forklift, wait_until
from support.processes import run_forklift
from support.wire import request

_APP = """\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wrapper" if "wsgi.file_wrapper" in environ else b"no wrapper"]
"""


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("forklift: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_uwsgi_command_line_with_a_unix_socket_and_its_mode(tmp_path):
    # `uwsgi --socket app.sock --chmod-socket 666 --master --vacuum -p 2` as typed.
    short = tempfile.mkdtemp(prefix="fl-dropin-")
    sock_path = f"{short}/app.sock"
    server = Forklift(
        tmp_path,
        "echo:app",
        "--socket",
        sock_path,
        "--chmod-socket",
        "666",
        "--master",
        "--vacuum",
        "-p",
        "2",
    ).start()
    try:
        wait_until(lambda: os.path.exists(sock_path), 5, what="the unix socket")
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o666
        assert server.exchange(request("GET", "/")).status == 200
        assert "accepted but without effect: --master" in server.stderr()
    finally:
        assert server.stop() == 0
        shutil.rmtree(short, ignore_errors=True)
    assert not os.path.exists(sock_path)


@pytest.mark.parametrize("disabled", [False, True])
def test_wsgi_disable_file_wrapper(tmp_path, disabled):
    (tmp_path / "site.py").write_text(_APP)
    line = "wsgi-disable-file-wrapper = true\n" if disabled else ""
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(f"[uwsgi]\nwsgi-file = {tmp_path}/site.py\n{line}")
    server = Forklift(tmp_path, None, "--ini", str(ini)).start()
    try:
        body = server.exchange(request("GET", "/")).body
        assert body == (b"no wrapper" if disabled else b"wrapper")
    finally:
        server.stop()


def test_reload_stop_and_status_by_pidfile_or_ini(tmp_path):
    pidfile = tmp_path / "uwsgi.pid"
    ini = tmp_path / "control.ini"
    ini.write_text("[uwsgi]\npidfile = uwsgi.pid\n")  # relative: to where forklift runs
    server = Forklift(tmp_path, "echo:app", "--pidfile", str(pidfile)).start()
    try:
        wait_until(pidfile.exists, 5, what="the pidfile")
        # `--reload` is uWSGI's option, not an abbreviation of --reload-on-rss
        reloaded = run_forklift("--reload", str(pidfile))
        assert reloaded.returncode == 0, reloaded.stderr
        assert "generation 2 is serving" in reloaded.stdout
        status = run_forklift("status", "--ini", str(ini), cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert f"master {server.proc.pid}" in status.stdout
        again = run_forklift("reload", "--ini", str(ini), cwd=tmp_path)
        assert again.returncode == 0 and "generation 3" in again.stdout, again.stderr
        stopped = run_forklift("--stop", str(pidfile))
        assert stopped.returncode == 0, stopped.stderr
        assert server.proc.wait(10) == 0
    finally:
        server.stop()


def test_control_without_a_pidfile_anywhere_is_one_line(tmp_path):
    ini = tmp_path / "nopid.ini"
    ini.write_text("[uwsgi]\nmodule = app\n")
    result = run_forklift("stop", "--ini", str(ini))
    assert result.returncode == 1
    assert "names no pidfile" in result.stderr and "Traceback" not in result.stderr
    result = run_forklift("--stop", str(tmp_path / "missing.pid"))
    assert result.returncode == 1 and "no such pidfile" in result.stderr


def test_missing_log_directory_is_created_and_the_daemon_serves(tmp_path):
    (tmp_path / "site.py").write_text(_APP)
    log = tmp_path / "var" / "log" / "site.log"
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(
        f"[uwsgi]\nchdir = {tmp_path}\nwsgi-file = site.py\nhttp-socket = 127.0.0.1:0\n"
        f"logto = {log}\npidfile = {tmp_path}/run/site.pid\n"
    )
    result = run_forklift("-d", "--ini", str(ini), cwd=tmp_path)
    pidfile = tmp_path / "run" / "site.pid"
    try:
        assert result.returncode == 0, result.stderr
        assert f"created the directory {log.parent}" in result.stderr
        assert f"created the directory {pidfile.parent}" in result.stderr
        assert "serving 127.0.0.1:" in result.stderr.splitlines()[-1]
        assert "listening on" in log.read_text()
    finally:
        stopped = run_forklift("--stop", str(pidfile))
        assert stopped.returncode == 0, stopped.stderr


@pytest.mark.parametrize(
    "line, needle",
    [
        ("pidfile = /proc/forklift-test/app.pid", "pidfile = /proc/forklift-test/app.pid: cannot"),
        ("logto = {tmp}/afile/app.log", "logto = {tmp}/afile/app.log: cannot create"),
        ("chdir = {tmp}/nowhere", "chdir = {tmp}/nowhere: no such directory"),
        ("body-temp-dir = {tmp}/nowhere", "body-temp-dir = {tmp}/nowhere: no such directory"),
        ("processes = two", "processes = two: expected worker processes (>= 1)"),
        ("socket = :http", "socket = :http: bad port"),
    ],
)
def test_config_errors_are_one_line_with_file_line_key_and_value(tmp_path, line, needle):
    (tmp_path / "afile").write_text("not a directory\n")
    ini = tmp_path / "bad.ini"
    line = line.format(tmp=tmp_path)
    ini.write_text(f"[uwsgi]\nmodule = echo:app\n{line}\n")
    result = run_forklift("--ini", str(ini), "--http", "127.0.0.1:0", cwd=APPS)
    assert result.returncode == 2, result.stderr
    error = _one_error_line(result)
    assert f"{ini}:3: {needle.format(tmp=tmp_path)}" in error


def test_missing_wsgi_file_says_where_it_was_looked_for(tmp_path):
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(f"[uwsgi]\nchdir = {tmp_path}\nwsgi-file = manage.py\n")
    result = run_forklift("--ini", str(ini), "--http", "127.0.0.1:0")
    assert result.returncode == 1
    error = _one_error_line(result)
    assert f"{ini}:3: wsgi-file = manage.py: no such file in {tmp_path} (chdir)" in error


@pytest.mark.requires("systemd-analyze")
def test_systemd_unit_for_an_ini(tmp_path):
    ini = tmp_path / "uwsgi.ini"
    ini.write_text("[uwsgi]\nsocket = :6000\nmodule = app:app\npidfile = ./uwsgi.pid\n")
    result = run_forklift(
        "systemd-unit", "--ini", "uwsgi.ini", "--", "--processes", "2", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(f" --ini {ini} --processes 2")
    assert "--http" not in text and "--socket" not in text  # the ini's socket holds
    assert f"WorkingDirectory={tmp_path}\n" in text
    assert f"reload --pidfile {tmp_path}/uwsgi.pid" in text
    unit = tmp_path / "seed-forklift.service"
    unit.write_text(text)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
    assert str(unit) not in verify.stderr, verify.stderr  # nothing said about our unit


def test_systemd_unit_refuses_an_ini_that_daemonizes(tmp_path):
    ini = tmp_path / "uwsgi.ini"
    ini.write_text("[uwsgi]\nmodule = app:app\ndaemonize = /tmp/x.log\n")
    result = run_forklift("systemd-unit", "--ini", str(ini))
    assert result.returncode == 2
    assert f"{ini}:3: daemonize = /tmp/x.log: systemd keeps the master" in result.stderr


def test_stop_signal_is_graceful(tmp_path):
    # `--stop` lets an in-flight request finish (TERM), unlike a kill -9 in the seed's script.
    pidfile = tmp_path / "app.pid"
    server = Forklift(tmp_path, "slow:app", "--threads", "2", "--pidfile", str(pidfile)).start()
    try:
        wait_until(pidfile.exists, 5, what="the pidfile")
        wire = server.connect()
        wire.send(request("GET", "/?s=1"))
        stopper = subprocess.Popen(
            [sys.executable, "-m", "forklift", "--stop", str(pidfile)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert wire.read_response().status == 200
        wire.close()  # an idle keep-alive connection would be waited for (keepalive-timeout)
        assert stopper.wait(20) == 0
    finally:
        if server.alive:
            server.proc.send_signal(signal.SIGKILL)
        server.stop()


def test_positional_ini_is_read_as_uwsgi_does(tmp_path):
    ini = Path(tmp_path) / "uwsgi.ini"
    ini.write_text(f"[uwsgi]\nchdir = {APPS}\nmodule = echo:app\nhttp-socket = 127.0.0.1:0\n")
    server = Forklift(tmp_path, str(ini)).start()
    try:
        assert server.exchange(request("GET", "/")).status == 200
    finally:
        server.stop()


def test_rsyslog_logger_sends_the_error_log_to_syslog(tmp_path):
    # `logger = rsyslog:HOST:PORT,IDENT` (uWSGI's rsyslog plugin): a UDP syslog peer we own.
    import socket as socket_module

    peer = socket_module.socket(socket_module.AF_INET, socket_module.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(10)
    port = peer.getsockname()[1]
    ini = tmp_path / "syslog.ini"
    ini.write_text(f"[uwsgi]\nmodule = echo:app\nlogger = rsyslog:127.0.0.1:{port},fltest\n")
    server = Forklift(tmp_path, None, "--ini", str(ini)).start()
    try:
        datagram = peer.recv(65536).decode()
        assert datagram.startswith("<14>fltest[") and "listening on" in datagram, datagram
    finally:
        server.stop()
        peer.close()
