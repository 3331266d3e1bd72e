"""systemd socket activation: adopt the listening sockets systemd passed in `LISTEN_FDS`.

With a `.socket` unit, systemd binds the address and holds it while the service restarts, so
a restart of the master never refuses a connection (the kernel queues them). The protocol
is sd_listen_fds(3): descriptors 3..3+N-1, `LISTEN_PID` naming the process they are for, and
optional `LISTEN_FDNAMES` (FileDescriptorName=), colon-separated.

Passed sockets are matched to the configured addresses; when none was configured they are
served as given, the name `uwsgi` choosing the uwsgi protocol. The master holds them for its
whole life, so HUP reloads keep them like any other listener.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from .config import PROTOCOL_HTTP, PROTOCOL_UWSGI, ListenAddress
from .errors import ConfigError
from .sockets import Listener

SD_LISTEN_FDS_START = 3  # sd-daemon.h: the first passed descriptor
_ENV = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def passed_fds(environ=None, pid: int | None = None) -> list[tuple[int, str]]:
    """The (fd, name) pairs systemd passed to this process, and unset the variables.

    Unsetting follows sd_listen_fds(unset_environment=1): workers, attach-daemons and the
    app's own subprocesses must not believe the sockets are theirs.
    """
    environ = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    listen_pid, count, names = (environ.get(name) for name in _ENV)
    for name in _ENV:
        environ.pop(name, None)
    if not count:
        return []
    if listen_pid is None or not listen_pid.isdecimal() or int(listen_pid) != pid:
        return []  # meant for another process (a shell wrapper that did not exec)
    if count == "0":
        return []
    if not count.isdecimal() or not 0 < int(count) <= 1024:
        raise ConfigError(f"LISTEN_FDS: expected a number of sockets, got {count!r}")
    n = int(count)
    labels = names.split(":") if names else []
    labels += [""] * (n - len(labels))
    return [(SD_LISTEN_FDS_START + i, labels[i]) for i in range(n)]


def _sock_address(sock: socket.socket) -> ListenAddress:
    """The ListenAddress a passed socket is bound to (protocol filled in later)."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if isinstance(name, bytes):  # abstract namespace
            return ListenAddress(PROTOCOL_HTTP, path="@" + name[1:].decode("utf-8", "replace"))
        return ListenAddress(PROTOCOL_HTTP, path=name)
    host = name[0]
    if ipaddress.ip_address(host).is_unspecified:
        host = "" if sock.family == socket.AF_INET else "::"
    return ListenAddress(PROTOCOL_HTTP, host=host, port=name[1])


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "*")


def _matches(configured: ListenAddress, passed: ListenAddress) -> bool:
    if configured.is_unix or passed.is_unix:
        return configured.path == passed.path
    if configured.port != passed.port:
        return False
    if _is_wildcard(configured.host) and _is_wildcard(passed.host):
        return True  # systemd's ListenStream=8000 is [::]:8000, dual-stack
    host = "127.0.0.1" if configured.host == "localhost" else configured.host
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(passed.host)
    except ValueError:
        return False


def _adopt(fd: int, label: str) -> tuple[socket.socket, ListenAddress]:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError(f"LISTEN_FDS: descriptor {fd} is not a socket: {exc.strerror}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        sock.detach()
        raise ConfigError(
            f"LISTEN_FDS: descriptor {fd} ({label or 'unnamed'}) is not a listening stream "
            f"socket (the .socket unit needs ListenStream= and Accept=no)"
        )
    sock.setblocking(False)
    sock.set_inheritable(False)  # workers get it by fork(), exec'd programs never
    return sock, _sock_address(sock)


def adopt_listeners(
    fds: list[tuple[int, str]], configured: list[ListenAddress], defaulted: bool
) -> tuple[list[Listener], list[ListenAddress]]:
    """Listeners made of the passed sockets, and the configured addresses none of them covers.

    `defaulted`: no address was configured (the 127.0.0.1:8000 default stands in), so every
    passed socket is served as given and the default is not bound; HTTP ones get the
    default's TLS files (--certfile/--keyfile), if any.
    """
    adopted: list[Listener] = []
    remaining = [] if defaulted else list(configured)
    default_tls = configured[0].tls if defaulted and configured else None
    for fd, label in fds:
        sock, address = _adopt(fd, label)
        if defaulted:
            protocol = PROTOCOL_UWSGI if label == PROTOCOL_UWSGI else PROTOCOL_HTTP
            tls = default_tls if protocol == PROTOCOL_HTTP else None
            address = ListenAddress(protocol, address.host, address.port, address.path, tls)
            adopted.append(Listener(sock, address, inherited=True))
            continue
        match = next((c for c in remaining if _matches(c, address)), None)
        if match is None:
            sock.detach()  # systemd keeps it; closing ours would not help anyone
            wanted = ", ".join(str(c) for c in configured) or "nothing"
            raise ConfigError(
                f"LISTEN_FDS: systemd passed a socket on {address} but the configuration "
                f"listens on {wanted}"
            )
        remaining.remove(match)
        # The configured address carries the protocol (and TLS, PROXY settings) to serve.
        adopted.append(Listener(sock, match, inherited=True))
    return adopted, remaining
