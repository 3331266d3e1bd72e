"""Starting to serve, the parts an operator sees: the address logged (port 0 made real), the
pidfile (never another live master's), hooks that stop the start when they fail."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from forklift import server, sockets
from forklift.config import parse_address
from forklift.errors import ConfigError


@pytest.fixture
def exited_pid() -> int:
    """The pid of a process that has run and been reaped (a stale pidfile's pid)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait(10)


def test_describe_logs_the_port_the_kernel_chose():
    listener = sockets.bind(parse_address("127.0.0.1:0", "http"))
    try:
        assert listener.port > 0
        assert server.describe(listener) == f"127.0.0.1:{listener.port}"
    finally:
        sockets.close_all([listener])


def test_describe_brackets_ipv6_names_the_wildcard_and_unix_sockets(tmp_path):
    class Fake:  # only what describe() reads
        def __init__(self, text):
            self.address = parse_address(text, "http")
            self.port = 8080

    assert server.describe(Fake("[::1]:0")) == "[::1]:8080"
    assert server.describe(Fake(":0")) == "0.0.0.0:8080"  # uWSGI's ":port": every interface
    assert server.describe(Fake(f"unix:{tmp_path}/s.sock")) == f"unix:{tmp_path}/s.sock"


def test_the_pidfile_holds_our_pid_and_is_removed_by_us(tmp_path):
    path = str(tmp_path / "fk.pid")
    server.write_pidfile(path)
    with open(path) as f:
        assert f.read() == f"{os.getpid()}\n"
    assert os.listdir(tmp_path) == ["fk.pid"]  # written through a temp file, renamed
    server.remove_pidfile(path)
    assert not os.path.exists(path)


def test_a_live_masters_pidfile_is_not_overwritten(tmp_path, live_pid):
    path = tmp_path / "fk.pid"
    path.write_text(f"{live_pid}\n")
    with pytest.raises(ConfigError, match=f"forklift {live_pid} is already running"):
        server.write_pidfile(str(path))
    assert path.read_text() == f"{live_pid}\n"


def test_a_stale_pidfile_is_replaced(tmp_path, exited_pid):
    path = tmp_path / "fk.pid"
    path.write_text(f"{exited_pid}\n")
    server.write_pidfile(str(path))
    assert path.read_text() == f"{os.getpid()}\n"


def test_a_newer_masters_pidfile_is_left_in_place(tmp_path, live_pid):
    """An old master stopping after a new one took over must not remove the new one's file."""
    path = tmp_path / "fk.pid"
    path.write_text(f"{live_pid}\n")
    server.remove_pidfile(str(path))
    assert path.read_text() == f"{live_pid}\n"


def test_a_failing_hook_stops_the_start_with_its_exit_code(tmp_path):
    marker = tmp_path / "ran"
    server.run_hook(f"touch {marker}", "exec-asap")
    assert marker.exists()
    with pytest.raises(ConfigError, match="exec-asap command failed with exit code 3: exit 3"):
        server.run_hook("exit 3", "exec-asap")


def test_an_unknown_user_is_a_config_error():
    with pytest.raises(ConfigError, match="uid/gid: no such user or group"):
        server.drop_privileges("no-such-user-forklift", None)


def test_without_uid_or_gid_nothing_changes():
    before = (os.getuid(), os.getgid())
    server.drop_privileges(None, None)
    assert (os.getuid(), os.getgid()) == before


def test_the_descriptor_limit_is_raised_to_the_hard_limit():
    """1024 clients must not be the ceiling: the soft limit goes up to the hard one. Run in
    a child, whose limits die with it."""
    code = (
        "import resource\n"
        "from forklift import server\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))\n"
        "server.raise_fd_limit()\n"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    soft, hard = (int(n) for n in out.stdout.split())
    expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert soft == expected
