"""The control socket is created 0600 by the kernel itself (no chmod window), and the master
knows which uid is at the other end (SO_PEERCRED)."""

from __future__ import annotations

import os
import socket
import stat
import tempfile

from forklift import control_server
from forklift.control_server import bind_private_unix, peer_uid


def test_bound_0600_from_the_first_instant_whatever_the_umask(monkeypatch):
    directory = tempfile.mkdtemp(prefix="fl-")
    path = f"{directory}/ctl.sock"
    old = os.umask(0)  # the most permissive process umask
    try:
        # No chmod may be involved: the file must be born 0600.
        monkeypatch.setattr(control_server.os, "chmod", None)
        sock = bind_private_unix(path)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert os.umask(0) == 0  # ours is back
    finally:
        os.umask(old)
    try:
        assert mode == 0o600
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        sock.listen(1)
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)  # the owner can connect
        client.close()
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)


def test_a_stale_socket_file_is_replaced():
    directory = tempfile.mkdtemp(prefix="fl-")
    path = f"{directory}/ctl.sock"
    with open(path, "w"):
        pass
    sock = bind_private_unix(path)
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)


def test_peer_uid_is_the_kernels_word():
    a, b = socket.socketpair(socket.AF_UNIX)
    try:
        assert peer_uid(a) == os.geteuid()
    finally:
        a.close()
        b.close()
    tcp = socket.socket()
    try:
        assert peer_uid(tcp) is None  # not a unix socket: no credentials
    finally:
        tcp.close()
