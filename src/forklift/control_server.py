"""The master's control socket `PIDFILE.sock`: one JSON line in, one out.

A client may send one JSON command line (`{"cmd": "reload", ...}`) or nothing at all (a
status read: `nc -U`, `curl --unix-socket`). Clients are read by the master's loop, never
waited for: the master must keep reaping meanwhile. What a command does is the master's
business (`handle`); this module owns the socket, who may use it and the line protocol.
(`control.py` is the other end: the client a deploy or `forklift status` uses. `--stats` is
another listener, read-only: `stats_server.py`.)

Who may use it: the socket file is born 0600 (bound under umask 0177, never chmod'ed after:
no moment in which another user could connect), and a client whose uid (SO_PEERCRED, the
kernel's word) is neither root nor the server's is refused before anything is read, should
the file's mode or its directory ever be opened up.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time

from .log import error_log

SILENCE = 0.05  # a control client that sent nothing by then is reading the status
_MAX_COMMAND = 65536  # bytes of a command line; a client sending more is answered at once


class ControlServer:
    """The listening control sockets and the clients being read.

    `handle(command)` gets the decoded JSON object (None when the client sent nothing) and
    returns the JSON object to answer.
    """

    def __init__(self, handle):
        self.handle = handle
        self.listeners = []  # (socket, path to unlink or None)
        self.clients = {}  # socket -> [bytes so far, when silence means "status"]
        self.opened = False

    def open(self, pidfile: str | None) -> None:
        """Bind PIDFILE.sock (before dropping privileges)."""
        self.opened = True
        if pidfile:
            path = pidfile + ".sock"
            try:
                sock = bind_private_unix(path)
                sock.listen(16)
                sock.setblocking(False)
                self.listeners.append((sock, path))
            except OSError as exc:
                error_log.warning("cannot open the control socket %s: %s", path, exc)

    def readers(self) -> list:
        """The sockets the master's select() should watch for us."""
        return [s for s, _ in self.listeners] + list(self.clients)

    def on_readable(self, sock) -> None:
        """`sock` (one of `readers()`) is readable: accept a client or read from one."""
        if sock in self.clients:
            self._read(sock)
        else:
            self._accept(sock)

    def answer_silent(self) -> None:
        """Clients that sent nothing for `SILENCE` are reading the status: answer them."""
        now = time.monotonic()
        for conn, (_, deadline) in list(self.clients.items()):
            if now >= deadline:
                self._answer(conn)

    def close(self, unlink: bool = True) -> None:
        """Close every socket (a forked worker: without unlinking the master's paths)."""
        for sock, path in self.listeners:
            sock.close()
            if unlink and path:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        for client in self.clients:
            client.close()

    def _accept(self, sock) -> None:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        uid = peer_uid(conn)
        if uid is not None and uid not in (0, os.geteuid()):
            error_log.warning("control socket: refused a client with uid %d", uid)
            _refuse(conn, f"not allowed: uid {uid} is neither root nor the server's user")
            return
        conn.setblocking(False)
        self.clients[conn] = [b"", time.monotonic() + SILENCE]

    def _read(self, conn) -> None:
        state = self.clients[conn]
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        state[0] += data
        if not data or b"\n" in state[0] or len(state[0]) > _MAX_COMMAND:
            self._answer(conn)

    def _answer(self, conn) -> None:
        data = self.clients.pop(conn)[0].strip()
        command = None
        if data:
            try:
                command = json.loads(data.split(b"\n")[0])
            except ValueError:
                command = {"cmd": None}
            if not isinstance(command, dict):
                command = {"cmd": None}
        try:
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.sendall(json.dumps(self.handle(command)).encode() + b"\n")
        except OSError:
            pass
        finally:
            conn.close()


def bind_private_unix(path: str) -> socket.socket:
    """A unix socket at `path` that only our user (and root) can connect to, from the first
    instant: bound under umask 0177, so the kernel creates the file 0600. Binding first and
    chmod'ing after would leave a moment in which any local user could connect."""
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the master is single-threaded here: no other file is affected
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    return sock


def peer_uid(conn) -> int | None:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED), or None."""
    if conn.family != socket.AF_UNIX:
        return None
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", raw)[1]


def _refuse(conn, error: str) -> None:
    """One JSON line saying why, then close; nothing the client sent is read."""
    try:
        conn.settimeout(1.0)
        conn.sendall(json.dumps({"accepted": False, "error": error}).encode() + b"\n")
    except OSError:
        pass
    finally:
        conn.close()
