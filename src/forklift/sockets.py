"""Listening sockets: bind TCP (IPv4, IPv6) and unix sockets, or adopt inherited ones.

The master binds once and every worker inherits the same sockets across fork(), so a reload
or a crashed worker never closes the door: the kernel keeps queueing connections.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import NamedTuple

from .config import ListenAddress
from .errors import ConfigError


class Listener(NamedTuple):
    """A bound, listening socket and the address it was asked for.

    `inherited`: passed by systemd (LISTEN_FDS); its unix socket file is systemd's to remove.
    """

    sock: socket.socket
    address: ListenAddress
    inherited: bool = False

    @property
    def port(self) -> int:
        if self.address.is_unix:
            return 0
        return self.sock.getsockname()[1]


def bind(address: ListenAddress, backlog: int = 1024, mode: int | None = None) -> Listener:
    """Bind and listen; ConfigError with one line when the address cannot be used."""
    try:
        if address.is_unix:
            sock = _bind_unix(address.path, mode)
        else:
            sock = _bind_tcp(address.host, address.port)
        sock.listen(backlog)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return Listener(sock, address)


def _bind_tcp(host: str, port: int) -> socket.socket:
    if host == "localhost":
        host = "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host or "0.0.0.0", port))
    except OSError:
        sock.close()
        raise
    return sock


def _bind_unix(path: str, mode: int | None) -> socket.socket:
    if path.startswith("@"):  # Linux abstract namespace: no file, nothing to clean up
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("\0" + path[1:])
        return sock
    # A stale socket file from a crashed run would make bind() fail; remove it only if it is
    # a socket nobody answers on, never a regular file or a live server's socket.
    try:
        st = os.stat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        if mode is not None:
            os.chmod(path, mode)
    except OSError:
        sock.close()
        raise
    return sock


def close_all(listeners: list, unlink: bool = False) -> None:
    """Close listeners; with `unlink`, remove unix socket files too (--vacuum)."""
    for listener in listeners:
        listener.sock.close()
        if (
            unlink
            and listener.address.is_unix
            and not listener.inherited
            and not listener.address.path.startswith("@")
        ):
            try:
                os.unlink(listener.address.path)
            except FileNotFoundError:
                pass
