"""systemd socket activation: LISTEN_FDS parsing and adopting passed sockets.

The sockets here are real listening sockets made by the test, handed over by descriptor as
systemd would hand them over.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from forklift.activation import adopt_listeners, passed_fds
from forklift.config import PROTOCOL_HTTP, PROTOCOL_UWSGI, ListenAddress, parse_address
from forklift.errors import ConfigError

from .test_master import Load, Server, describe_failures, version_of, wait_until, write_version


def test_passed_fds_reads_and_unsets_the_environment():
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "3", "LISTEN_FDNAMES": "web:uwsgi", "PATH": "/bin"}
    assert passed_fds(env, pid=42) == [(3, "web"), (4, "uwsgi"), (5, "")]
    assert env == {"PATH": "/bin"}  # children must not think the sockets are theirs


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"LISTEN_FDS": "1"},  # no LISTEN_PID: not for us
        {"LISTEN_PID": "41", "LISTEN_FDS": "1"},  # for a process that did not exec us
        {"LISTEN_PID": "42", "LISTEN_FDS": "0"},
    ],
)
def test_passed_fds_for_someone_else_or_none(env):
    env = dict(env)
    assert passed_fds(env, pid=42) == []
    assert "LISTEN_FDS" not in env


def test_passed_fds_garbage_is_one_line():
    with pytest.raises(ConfigError, match="LISTEN_FDS: expected a number"):
        passed_fds({"LISTEN_PID": "42", "LISTEN_FDS": "lots"}, pid=42)


def listening(host="127.0.0.1", family=socket.AF_INET):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(8)
    return sock


def test_unconfigured_sockets_are_served_as_given_and_named_uwsgi_picks_the_protocol():
    a, b = listening(), listening()
    port_a, port_b = a.getsockname()[1], b.getsockname()[1]
    fds = [(a.detach(), "web"), (b.detach(), "uwsgi")]
    listeners, missing = adopt_listeners(
        fds, [ListenAddress(PROTOCOL_HTTP, "127.0.0.1", 8000)], True
    )
    try:
        assert missing == []  # the default 127.0.0.1:8000 is not bound as well
        assert [(lst.address.protocol, lst.port) for lst in listeners] == [
            (PROTOCOL_HTTP, port_a),
            (PROTOCOL_UWSGI, port_b),
        ]
        assert all(lst.inherited and not lst.sock.getblocking() for lst in listeners)
        assert not listeners[0].sock.get_inheritable()
        # still listening: a client connects and is accepted
        with socket.create_connection(("127.0.0.1", port_a), timeout=2):
            listeners[0].sock.settimeout(2)
            conn, _ = listeners[0].sock.accept()
            conn.close()
    finally:
        for lst in listeners:
            lst.sock.close()


def test_configured_addresses_are_matched_and_keep_their_protocol():
    a = listening()
    port = a.getsockname()[1]
    wild = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    wild.bind(("::", 0))
    wild.listen(8)
    wild_port = wild.getsockname()[1]
    configured = [
        parse_address(f":{wild_port}", PROTOCOL_HTTP),  # every interface matches [::]
        parse_address(f"localhost:{port}", PROTOCOL_UWSGI, "--socket"),
        parse_address("127.0.0.1:1", PROTOCOL_HTTP),  # not passed: forklift binds it itself
    ]
    listeners, missing = adopt_listeners([(a.detach(), ""), (wild.detach(), "")], configured, False)
    try:
        assert [lst.address for lst in listeners] == [configured[1], configured[0]]
        assert missing == [configured[2]]
    finally:
        for lst in listeners:
            lst.sock.close()


def test_a_passed_socket_nobody_configured_stops_the_start():
    a = listening()
    fd = a.detach()
    try:
        with pytest.raises(ConfigError, match=r"passed a socket on 127\.0\.0\.1:\d+ but"):
            adopt_listeners([(fd, "")], [parse_address("127.0.0.1:1", PROTOCOL_HTTP)], False)
    finally:
        socket.socket(fileno=fd).close()


def test_a_socket_that_is_not_listening_is_refused(tmp_path):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    fd = udp.detach()
    try:
        with pytest.raises(ConfigError, match="not a listening stream socket"):
            adopt_listeners([(fd, "dns")], [], True)
    finally:
        socket.socket(fileno=fd).close()
    not_socket = open(tmp_path / "f", "w")  # noqa: SIM115
    try:
        with pytest.raises(ConfigError, match="is not a socket"):
            adopt_listeners([(not_socket.fileno(), "")], [], True)
    finally:
        not_socket.close()


def test_unix_sockets_match_by_path(tmp_path):
    path = str(tmp_path / "app.sock")
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.bind(path)
    u.listen(4)
    configured = [parse_address(f"unix:{path}", PROTOCOL_UWSGI)]
    listeners, missing = adopt_listeners([(u.detach(), "")], configured, False)
    try:
        assert missing == [] and listeners[0].address == configured[0]
    finally:
        listeners[0].sock.close()


@pytest.mark.requires("systemd-analyze")
def test_systemd_unit_socket_activation_pair_passes_systemd_analyze(tmp_path):
    app = tmp_path / "myapp"
    (app / "current").mkdir(parents=True)
    units = tmp_path / "units"
    proc = subprocess.run(
        [sys.executable, "-m", "forklift", "systemd-unit", "--app", str(app),
         "--pidfile", str(tmp_path / "m.pid"), "--no-virtualenv",
         "--socket-activation", str(units), "--",
         "--http", ":8000", "--socket", "unix:/run/myapp/uwsgi.sock", "app:app"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    socket_unit, service_unit = units / "forklift-myapp.socket", units / "forklift-myapp.service"
    assert proc.stdout.split() == [str(socket_unit), str(service_unit)]
    socket_text, service_text = socket_unit.read_text(), service_unit.read_text()
    assert "ListenStream=8000\n" in socket_text  # :8000 is every interface, as systemd's 8000
    assert "ListenStream=/run/myapp/uwsgi.sock\n" in socket_text
    assert "Service=forklift-myapp.service" in socket_text
    assert "Requires=forklift-myapp.socket" in service_text
    exec_start = next(x for x in service_text.splitlines() if x.startswith("ExecStart="))
    assert "--http :8000" in exec_start and "--socket unix:/run/myapp/uwsgi.sock" in exec_start
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(socket_unit), str(service_unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "ignoring" not in verify.stderr.lower(), verify.stderr


# --- systemd-socket-activate: the real handover ---------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ActivatedServer(Server):
    """A forklift exec'd by `systemd-socket-activate`, which binds the port and passes it as
    fd 3 with LISTEN_FDS/LISTEN_PID, as systemd does for a .socket unit. forklift is started
    without --http: the passed socket is served as given."""

    def __init__(self, tmp_path, *options, port: int, **kwargs):
        super().__init__(tmp_path, *options, **kwargs)
        self.activation_port = port

    def command(self) -> list:
        cmd = super().command()
        at = cmd.index("--http")
        del cmd[at : at + 2]
        tool = shutil.which("systemd-socket-activate")
        return [tool, "-l", f"127.0.0.1:{self.activation_port}", *cmd]


@pytest.mark.requires("systemd-socket-activate")
def test_socket_activation_serves_the_passed_socket_and_hup_under_load_drops_nothing(tmp_path):
    port = free_port()
    server = ActivatedServer(tmp_path, "--processes", "2", "--threads", "4", port=port)
    try:
        server.spawn()
        # systemd-socket-activate holds the socket and execs forklift on the first
        # connection: that request waits in the kernel's queue and is answered.
        server.port = port
        wait_until(lambda: "Listening on" in server.log(), 10, "systemd-socket-activate")
        status, body = server.get("/")
        assert status == 200 and body.startswith("v1 ")
        assert f"listening on 127.0.0.1:{port} (http) from systemd" in server.log()
        assert server.proc.pid == int(Path(server.pidfile).read_text())  # exec'd: same pid
        server.wait_workers(2)

        load = Load(server, "/sleep?s=0.01", threads=8, duration=10.0, keepalive=True).start()
        wait_until(lambda: len(load.results) >= 50, 10, "50 answers from generation 1")
        write_version(server, 'VERSION = "v2"\n')
        server.signal(signal.SIGHUP)
        wait_until(
            lambda: server.status()["generation"] == 2 and server.wait_workers(2, 5.0),
            10,
            "generation 2 serving after HUP",
        )
        settled = len(load.results)
        wait_until(lambda: len(load.results) >= settled + 50, 10, "50 answers after the reload")
        results = load.stop()
        failed = [r for r in results if not r.ok]
        assert len(results) > 100, len(results)
        assert not failed, f"{len(failed)} failed: {describe_failures(failed)}"
        assert {version_of(r) for r in results if r.ok} == {"v1", "v2"}
        # the passed socket is still the one served, not a new bind
        assert server.log().count("listening on") == 1
    finally:
        server.close()


def test_vacuum_never_removes_a_socket_file_systemd_owns(tmp_path):
    from forklift.sockets import Listener, close_all

    path = tmp_path / "held.sock"
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.bind(str(path))
    u.listen(1)
    (listener,), _ = adopt_listeners(
        [(u.detach(), "")], [parse_address(f"unix:{path}", PROTOCOL_HTTP)], False
    )
    close_all([listener], unlink=True)
    assert path.exists()  # systemd keeps listening on it for the next start
    own = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    own.bind(str(tmp_path / "own.sock"))
    close_all([Listener(own, parse_address(f"unix:{tmp_path}/own.sock", PROTOCOL_HTTP))], True)
    assert not (tmp_path / "own.sock").exists()


def test_certfile_applies_to_sockets_served_as_given():
    from forklift.config import TlsFiles

    files = TlsFiles("/c.pem", "/k.pem", key="--certfile")
    default = ListenAddress(PROTOCOL_HTTP, "127.0.0.1", 8000, tls=files)
    a, b = listening(), listening()
    listeners, _ = adopt_listeners([(a.detach(), ""), (b.detach(), "uwsgi")], [default], True)
    try:
        assert [lst.address.tls for lst in listeners] == [files, None]
    finally:
        for lst in listeners:
            lst.sock.close()
