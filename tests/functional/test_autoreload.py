"""py-autoreload: editing the app's code under load reloads it, with no failed request; an
edit that does not import keeps the old generation serving and the log says why.

Uses the master tests' harness: a copy of master_apps/ whose fkapp_version.py is rewritten.
"""

from __future__ import annotations

from .test_master import (
    Load,
    Server,
    describe_failures,
    version_of,
    wait_until,
    write_version,
)


def test_editing_the_app_under_load_reloads_it_without_a_failed_request(tmp_path):
    server = Server(tmp_path, "--processes", "2", "--threads", "4", "--py-autoreload", "0.2")
    try:
        check_reloads_under_load(server.start(2))
    finally:
        server.close()


def check_reloads_under_load(server) -> None:
    assert "module files are polled every 0.2 s" in server.log()
    load = Load(server, "/sleep?s=0.01", threads=8, duration=20.0, keepalive=True).start()
    wait_until(lambda: len(load.results) >= 50, 10, "50 answers from v1 first")

    write_version(server, 'VERSION = "v2"\n')
    wait_until(lambda: server.status()["generation"] == 2, 10, "a reload after the edit")
    server.wait_workers(2, 10.0)
    assert "fkapp_version.py changed; reloading" in server.log()

    # An edit that cannot import: the reload fails, v2 keeps serving, the log says why.
    write_version(server, 'VERSION = "v3"\nif True\n')
    wait_until(lambda: "reload failed, old workers keep serving" in server.log(), 10, "the failure")
    assert "SyntaxError" in server.log()
    status = server.status()
    assert status["generation"] == 2 and len(server.serving_workers(status)) == 2

    # The fix is picked up: no restart needed after a broken edit.
    write_version(server, 'VERSION = "v3"\n')
    wait_until(lambda: server.status()["generation"] >= 3, 10, "a reload after the fix")
    server.wait_workers(2, 10.0)
    settled = len(load.results)
    wait_until(lambda: len(load.results) >= settled + 50, 10, "50 answers after the fix")
    results = load.stop()
    failed = [r for r in results if not r.ok]
    assert not failed, f"{len(failed)} of {len(results)} failed: {describe_failures(failed)}"
    assert len(results) > 100, len(results)
    assert [v for v in ("v1", "v2", "v3") if v in {version_of(r) for r in results}] == [
        "v1",
        "v2",
        "v3",
    ]
    assert server.get("/")[1].startswith("v3 ")
