"""Listening sockets as an operator relies on them: TCP on IPv4 and IPv6, unix sockets with
their mode, a stale socket file replaced but never a live server's or a regular file, the
file removed on the way out, and a listener that a child process inherits and serves."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from forklift import sockets
from forklift.config import ListenAddress, parse_address
from forklift.errors import ConfigError


@pytest.fixture
def short_dir():
    """unix socket paths must fit in sun_path (~107 bytes): pytest's tmp_path may not."""
    directory = tempfile.mkdtemp(prefix="fks-")
    yield directory
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)


def _connect(address, family) -> bytes:
    """A connected client: the kernel queues it until the listener accepts."""
    client = socket.socket(family, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(address)
    return client


def test_tcp_port_0_gets_a_real_port_that_accepts_connections():
    listener = sockets.bind(parse_address("127.0.0.1:0", "http"))
    try:
        assert listener.port > 0
        assert listener.sock.getblocking() is False  # the event loop never blocks in accept
        client = _connect(("127.0.0.1", listener.port), socket.AF_INET)
        listener.sock.settimeout(5)
        conn, _ = listener.sock.accept()
        conn.close()
        client.close()
    finally:
        sockets.close_all([listener])


def test_localhost_means_the_ipv4_loopback():
    listener = sockets.bind(ListenAddress("http", host="localhost", port=0))
    try:
        assert listener.sock.family == socket.AF_INET
        assert listener.sock.getsockname()[0] == "127.0.0.1"
    finally:
        sockets.close_all([listener])


@pytest.mark.requires("ipv6-loopback")
def test_ipv6_listener_is_v6_only_so_v4_can_be_bound_beside_it():
    v6 = sockets.bind(parse_address("[::1]:0", "http"))
    try:
        assert v6.sock.family == socket.AF_INET6
        assert v6.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        v4 = sockets.bind(ListenAddress("http", host="127.0.0.1", port=v6.port))
        sockets.close_all([v4])
        _connect(("::1", v6.port), socket.AF_INET6).close()
    finally:
        sockets.close_all([v6])


def test_a_port_in_use_is_a_one_line_config_error():
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ConfigError) as err:
            sockets.bind(parse_address(f"127.0.0.1:{port}", "http"))
        assert str(err.value).startswith(f"cannot listen on 127.0.0.1:{port}: ")
        assert "in use" in str(err.value).lower()
        assert "\n" not in str(err.value)
    finally:
        taken.close()


def test_unix_socket_gets_the_mode_asked_for(short_dir):
    path = os.path.join(short_dir, "http.sock")
    listener = sockets.bind(parse_address(f"unix:{path}", "http"), mode=0o660)
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        _connect(path, socket.AF_UNIX).close()
    finally:
        sockets.close_all([listener], unlink=True)


def test_a_stale_socket_file_from_a_crashed_run_is_replaced(short_dir):
    path = os.path.join(short_dir, "http.sock")
    crashed = socket.socket(socket.AF_UNIX)
    crashed.bind(path)
    crashed.close()  # the file stays, nobody answers on it
    listener = sockets.bind(parse_address(f"unix:{path}", "http"))
    try:
        _connect(path, socket.AF_UNIX).close()
    finally:
        sockets.close_all([listener], unlink=True)


def test_a_live_servers_socket_is_never_taken_over(short_dir):
    path = os.path.join(short_dir, "http.sock")
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen(1)
    try:
        with pytest.raises(ConfigError, match="another server is listening on"):
            sockets.bind(parse_address(f"unix:{path}", "http"))
        _connect(path, socket.AF_UNIX).close()  # the live server still gets its clients
    finally:
        live.close()


def test_a_regular_file_in_the_way_is_left_alone(short_dir):
    path = os.path.join(short_dir, "http.sock")
    with open(path, "w") as f:
        f.write("precious")
    with pytest.raises(ConfigError, match="exists and is not a socket"):
        sockets.bind(parse_address(f"unix:{path}", "http"))
    with open(path) as f:
        assert f.read() == "precious"


def test_close_all_removes_the_socket_file_only_when_asked(short_dir):
    kept = os.path.join(short_dir, "kept.sock")
    removed = os.path.join(short_dir, "removed.sock")
    sockets.close_all([sockets.bind(parse_address(f"unix:{kept}", "http"))])
    sockets.close_all([sockets.bind(parse_address(f"unix:{removed}", "http"))], unlink=True)
    assert os.path.exists(kept)
    assert not os.path.exists(removed)


def test_an_abstract_socket_leaves_no_file(short_dir):
    name = f"@forklift-test-{os.getpid()}"
    listener = sockets.bind(parse_address(f"unix:{name}", "http"))
    try:
        assert os.listdir(short_dir) == []
        _connect("\0" + name[1:], socket.AF_UNIX).close()
    finally:
        sockets.close_all([listener], unlink=True)


def test_a_child_serves_on_the_listener_it_inherited():
    """The master binds once, workers inherit the socket: a connection made before the child
    exists waits in the kernel's queue and is answered by the child."""
    listener = sockets.bind(parse_address("127.0.0.1:0", "http"))
    client = _connect(("127.0.0.1", listener.port), socket.AF_INET)  # queued, no child yet
    fd = listener.sock.fileno()
    child_code = (
        "import socket, sys\n"
        f"sock = socket.socket(fileno={fd})\n"
        "sock.setblocking(True)\n"
        "conn, _ = sock.accept()\n"
        "conn.sendall(b'served by %d' % __import__('os').getpid())\n"
        "conn.close()\n"
    )
    try:
        child = subprocess.Popen([sys.executable, "-c", child_code], pass_fds=[fd])
        data = client.recv(100)
        assert child.wait(10) == 0
        assert data == b"served by %d" % child.pid
    finally:
        client.close()
        sockets.close_all([listener])


def test_accepted_tcp_connections_have_nodelay_from_the_listener():
    # The worker does not set TCP_NODELAY per connection (one system call each): the
    # listener's setting must reach every accepted socket, or small answers wait for Nagle.
    listener = sockets.bind(parse_address("127.0.0.1:0", "http"))
    try:
        listener.sock.setblocking(True)
        client = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
        server_side, _ = listener.sock.accept()
        with client, server_side:
            assert server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sockets.close_all([listener])
