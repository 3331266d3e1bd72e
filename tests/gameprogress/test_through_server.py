"""The service under forklift, as it runs in production: several worker processes, threads each.

- No lost update: 8 client processes x 8 threads send random levels for the same 50 devices
  over HTTP to forklift (4 worker processes x 8 threads); afterwards every stored level is the
  highest sent, on SQLite and on PostgreSQL.
- Schemathesis against /openapi.json of the live instance finds no 5xx and no mismatch.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings

import gameprogress
from gameprogress.model import MAX_LEVEL
from gameprogress.store import iter_records, open_store
from support import free_port

CLIENT_PROCESSES = 8
CLIENT_THREADS = 8
DEVICES = 50
REQUESTS_PER_THREAD = 50  # 3200 requests over real sockets: bounded in count and time
START_TIMEOUT = 30
DEADLINE = 120


class Server:
    """forklift serving gameprogress.wsgi:app on a free loopback port, stopped by its pid."""

    def __init__(
        self, database_url: str, log_path: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GAMEPROGRESS_")}
        src = str(Path(gameprogress.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        env["GAMEPROGRESS_DATABASE_URL"] = database_url
        env.update(extra_env or {})
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "forklift",
                "--http",
                f"127.0.0.1:{self.port}",
                "--processes",
                "4",
                "--threads",
                "8",
                "gameprogress.wsgi:app",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"forklift exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        pytest.fail(f"forklift did not answer /healthz within {START_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def server(database_url, tmp_path):
    # The schema is created up front, as `gameprogress migrate` would be in a deploy.
    store = open_store(database_url)
    store.migrate()
    store.close()
    running = Server(database_url, tmp_path / "forklift.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def _client(queue, barrier, base: str, seed: int) -> None:
    try:

        def thread_main(thread_seed: int) -> dict[str, int]:
            rng = random.Random(thread_seed)
            highest: dict[str, int] = {}
            with requests.Session() as http:
                for i in range(REQUESTS_PER_THREAD):
                    device = f"device-{rng.randrange(DEVICES)}"
                    level = rng.randrange(MAX_LEVEL + 1)
                    if i % 2:
                        response = http.get(f"{base}/update/{device}/{level}", timeout=30)
                        ok = response.status_code == 200 and response.json()["error"] == 0
                    else:
                        response = http.put(
                            f"{base}/v1/devices/{device}/level", json={"level": level}, timeout=30
                        )
                        ok = response.status_code == 200 and response.json()["level"] >= level
                    if not ok:
                        raise AssertionError(f"{response.status_code} {response.text!r}")
                    highest[device] = max(highest.get(device, -1), level)
            return highest

        barrier.wait(timeout=30)
        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            results = list(pool.map(thread_main, [seed * 100 + t for t in range(CLIENT_THREADS)]))
        merged: dict[str, int] = {}
        for highest in results:
            for device, level in highest.items():
                merged[device] = max(merged.get(device, -1), level)
        queue.put(("ok", merged))
    except BaseException:
        queue.put(("error", traceback.format_exc()))


def test_no_lost_update_through_forklift(server, database_url):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    barrier = ctx.Barrier(CLIENT_PROCESSES)
    clients = [
        ctx.Process(target=_client, args=(queue, barrier, server.base, i + 1))
        for i in range(CLIENT_PROCESSES)
    ]
    for process in clients:
        process.start()
    expected: dict[str, int] = {}
    try:
        for _ in clients:
            kind, value = queue.get(timeout=DEADLINE)
            if kind == "error":
                pytest.fail(f"a client process failed:\n{value}\nserver log:\n{server.log()}")
            for device, level in value.items():
                expected[device] = max(expected.get(device, -1), level)
    finally:
        for process in clients:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

    store = open_store(database_url)
    try:
        stored = {r.device_id: r for r in iter_records(store)}
    finally:
        store.close()
    assert {d: r.level for d, r in stored.items()} == expected
    sent = CLIENT_PROCESSES * CLIENT_THREADS * REQUESTS_PER_THREAD
    assert sum(r.updates for r in stored.values()) == sent


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_live_instance_conforms_to_its_document(server, mode):
    import schemathesis  # in pyproject's `test` extra

    mode = schemathesis.GenerationMode(mode)
    api = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
    for result in api.get_all_operations():
        operation = result.ok()
        declared = api.raw_schema["paths"][operation.path][operation.method.lower()]
        if mode is schemathesis.GenerationMode.NEGATIVE and not (
            declared.get("parameters") or declared.get("requestBody")
        ):
            continue

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            case.call_and_validate()

        check()
