"""forklift.control_server: the master's control socket, one JSON line in, one out.

A client that sends a command gets the handler's answer to it; one that sends nothing gets
the status after a short silence; garbage is answered (as an unknown command), never a
crash; and the master's loop is never blocked by a client that says nothing.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time

import pytest

from forklift.control_server import SILENCE, ControlServer


@pytest.fixture
def served(tmp_path):
    commands = []

    def handle(command):
        commands.append(command)
        return {"status": "ok"} if command is None else {"echo": command}

    server = ControlServer(handle)
    server.open(str(tmp_path / "app.pid"))
    yield server, str(tmp_path / "app.pid.sock"), commands
    server.close()


def run_loop(server, until, seconds: float = 5.0) -> None:
    """The master's loop, as far as the control server is concerned, until `until()`."""
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        ready, _, _ = select.select(server.readers(), [], [], 0.01)
        for sock in ready:
            server.on_readable(sock)
        server.answer_silent()


def ask(path: str, line: bytes | None):
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(path)
    if line is not None:
        client.sendall(line)
    return client


def answer_of(client) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    client.close()
    return json.loads(data)


def test_the_socket_is_private_to_the_masters_user(served):
    _, path, _ = served
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_command_line_gets_the_handlers_answer(served):
    server, path, commands = served
    client = ask(path, b'{"cmd": "reload", "health_path": "/up"}\n')
    run_loop(server, lambda: commands)
    assert answer_of(client) == {"echo": {"cmd": "reload", "health_path": "/up"}}


def test_a_client_that_sends_nothing_reads_the_status(served):
    server, path, commands = served
    client = ask(path, None)
    started = time.monotonic()
    run_loop(server, lambda: commands)
    assert commands == [None]
    assert time.monotonic() - started >= SILENCE
    assert answer_of(client) == {"status": "ok"}


@pytest.mark.parametrize("line", [b"not json\n", b"[1, 2]\n"])
def test_garbage_is_an_unknown_command_not_a_crash(served, line):
    server, path, commands = served
    client = ask(path, line)
    run_loop(server, lambda: commands)
    assert answer_of(client) == {"echo": {"cmd": None}}


def test_close_removes_the_socket_file_but_a_forked_worker_leaves_it(tmp_path):
    server = ControlServer(lambda command: {})
    server.open(str(tmp_path / "a.pid"))
    server.close(unlink=False)  # what a worker does with the master's sockets after fork
    assert (tmp_path / "a.pid.sock").exists()
    server = ControlServer(lambda command: {})
    server.open(str(tmp_path / "a.pid"))  # a stale file is replaced
    server.close()
    assert not (tmp_path / "a.pid.sock").exists()
