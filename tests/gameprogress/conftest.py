"""Fixtures for the gameprogress tests: stores on SQLite files and on a throwaway PostgreSQL.

The PostgreSQL server is real (Debian's initdb and pg_ctl in a temporary directory, on a free
port, its unix socket inside that directory), started once per test session; each test that
needs it gets a fresh database. initdb refuses to run as root, so as root the directory is
handed to the `postgres` user (or `nobody`) and the tools run through `runuser`.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from gameprogress.app import create_app
from support import free_port

PG_GLOB = "/usr/lib/postgresql/*/bin"


def _postgres_bindir() -> str:
    found = [d for d in glob.glob(PG_GLOB) if os.path.exists(os.path.join(d, "initdb"))]
    if not found:
        pytest.fail(
            f"PostgreSQL server binaries not found ({PG_GLOB}/initdb): install Debian's "
            "'postgresql' package (apt-get install postgresql); .ci/run does this.",
            pytrace=False,
        )

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.split("/")[-2]))

    return max(found, key=version)


class PostgresServer:
    """One throwaway PostgreSQL cluster: initdb'd in a temp dir, started, stopped, removed."""

    def __init__(self) -> None:
        self.bindir = _postgres_bindir()
        self.root = tempfile.mkdtemp(prefix="gameprogress-pg-")
        self.data = os.path.join(self.root, "data")
        self.sockets = os.path.join(self.root, "sockets")
        self.logfile = os.path.join(self.root, "server.log")
        self.port = free_port()
        self._names = itertools.count(1)
        os.mkdir(self.sockets)
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = self._unprivileged_user()
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._tool(
            "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster needs no durability
        )

    @staticmethod
    def _unprivileged_user() -> str:
        for name in ("postgres", "nobody"):
            try:
                pwd.getpwnam(name)
            except KeyError:
                continue
            return name
        pytest.fail("running as root and neither 'postgres' nor 'nobody' exists", pytrace=False)

    def _tool(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [os.path.join(self.bindir, name), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                f"{self.log_tail()}"
            )
        return result

    def log_tail(self) -> str:
        try:
            with open(self.logfile) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.sockets}",
                "-c listen_addresses=''",
                # Speed over safety for a cluster that lives for one test run.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                # 8 worker processes x a pool of up to 10, plus the tests' own connections.
                "-c max_connections=200",
            ]
        )
        self._tool(
            "pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "-t", "60", "-o", options, "start"
        )

    def stop(self) -> None:
        result = self._tool("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)
        if result.returncode != 0 and self.pid():
            os.kill(self.pid(), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self.pid() and time.monotonic() < deadline:
                time.sleep(0.05)

    def pid(self) -> int | None:
        """The postmaster's pid from its pid file, if it is running."""
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                pid = int(f.readline())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def url(self, database: str = "postgres", **params: object) -> str:
        extra = "".join(f"&{k}={v}" for k, v in params.items())
        return f"postgresql://postgres@/{database}?host={self.sockets}&port={self.port}{extra}"

    def fresh_url(self) -> str:
        """The URL of a new, empty namespace: a schema of its own, first on the search path.

        A schema costs milliseconds where CREATE DATABASE costs a tenth of a second or more,
        and is just as isolated for a store that names no schema in its SQL.
        """
        name = f"t_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.url(options=f"-csearch_path%3D{name}")

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def own_postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL for one test alone, for tests that stop and start it."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gameprogress.db"
    return request.getfixturevalue("postgres_server").fresh_url()


class FakeClock:
    """A settable wall clock, so tests can place updates in time."""

    def __init__(self, now: float = 1_700_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_app(database_url: str, clock: FakeClock) -> Iterator[Callable[..., object]]:
    """Build apps on this test's database; their stores are closed at teardown."""
    apps = []

    def make(**settings: object):
        config = {
            "GAMEPROGRESS_DATABASE_URL": database_url,
            "GAMEPROGRESS_CLOCK": clock,
            "GAMEPROGRESS_WRITE_KEY": "",
            "GAMEPROGRESS_LEGACY_WRITES": "on",
            **settings,
        }
        app = create_app(config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["gameprogress"].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()
