"""The master's control sockets: `PIDFILE.sock` and `--stats`, one JSON line in, one out.

A client may send one JSON command line (`{"cmd": "reload", ...}`) or nothing at all (a
status read: `nc -U`, `curl --unix-socket`). Clients are read by the master's loop, never
waited for: the master must keep reaping meanwhile. What a command does is the master's
business (`handle`); this module owns the sockets and the line protocol only.
(`control.py` is the other end: the client a deploy or `forklift status` uses.)
"""

from __future__ import annotations

import json
import os
import socket
import time

from . import sockets
from .config import PROTOCOL_HTTP, parse_address
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

    def open(self, pidfile: str | None, stats: str | None) -> None:
        """Bind PIDFILE.sock and --stats (before dropping privileges)."""
        self.opened = True
        if pidfile:
            path = pidfile + ".sock"
            try:
                if os.path.exists(path):
                    os.unlink(path)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(path)
                os.chmod(path, 0o600)
                sock.listen(16)
                sock.setblocking(False)
                self.listeners.append((sock, path))
            except OSError as exc:
                error_log.warning("cannot open the control socket %s: %s", path, exc)
        if stats:
            listener = sockets.bind(parse_address(stats, PROTOCOL_HTTP, "--stats"), 16)
            self.listeners.append((listener.sock, listener.address.path))

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
