"""Fixtures: forklift servers started once per option set and shared by the tests that need them.

`threads` parametrizes a test over the two code paths of the worker: the app run inline by
the event loop (--threads 1) and on a thread pool (--threads 4).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from support import Forklift

# Printed by wsgiref.validate when a server never called the result's close().
_UNCLOSED = "garbage collected without being closed"


class ServerPool:
    """Servers keyed by (app, options, listeners); each is started on first use."""

    def __init__(self, factory):
        self._factory = factory
        self._servers: dict = {}
        self._unix_dirs: list = []

    def get(
        self,
        app: str,
        *options: str,
        env: dict | None = None,
        unix: bool = False,
        listen: tuple = ("127.0.0.1:0",),
    ) -> Forklift:
        key = (app, options, tuple(sorted((env or {}).items())), unix, listen)
        server = self._servers.get(key)
        if server is not None and server.alive:
            return server
        directory = Path(self._factory.mktemp("forklift"))
        if unix:
            # sun_path holds ~107 bytes; pytest's tmp paths can be longer.
            short = tempfile.mkdtemp(prefix="fl-")
            self._unix_dirs.append(short)
            listen = (f"unix:{short}/http.sock",)
        server = Forklift(directory, app, *options, env=env, listen=listen).start()
        self._servers[key] = server
        return server

    def close(self) -> list:
        problems = []
        alive = {id(server): server.alive for server in self._servers.values()}
        for server in self._servers.values():
            server.terminate()  # all at once: each may wait out a keep-alive deadline
        for server in self._servers.values():
            was_alive = alive[id(server)]
            code = server.stop()
            text = server.stderr()
            name = f"{server.app} {' '.join(server.options)}"
            if not was_alive:
                problems.append(f"{name}: died during the tests (exit {code})")
            elif code != 0:
                problems.append(f"{name}: exit code {code} after SIGTERM")
            if _UNCLOSED in text:
                problems.append(f"{name}: an app result was never closed:\n{text[-2000:]}")
        for directory in self._unix_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        return problems


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    pool = ServerPool(tmp_path_factory)
    yield pool
    problems = pool.close()
    assert not problems, "\n".join(problems)


@pytest.fixture(params=[1, 4], ids=lambda n: f"threads{n}")
def threads(request) -> int:
    return request.param


@pytest.fixture
def echo(servers, threads) -> Forklift:
    return servers.get("echo:app", "--threads", str(threads))
