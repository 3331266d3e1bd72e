"""--logto: everything a worker writes to stderr (wsgi.errors, print, crash tracebacks) goes to
the log file, as with uWSGI's logto, and USR1 moves all of it to a fresh file."""

from __future__ import annotations

import http.client
import os
import signal
from pathlib import Path

from support import Forklift, proc_children, wait_until

APP = """
import sys

def application(environ, start_response):
    environ["wsgi.errors"].write("via-wsgi-errors\\n")
    print("via-print-stderr", file=sys.stderr, flush=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def _stderr_target(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/2")
    except OSError:
        return ""


def test_stderr_of_the_app_goes_to_the_logto_file(tmp_path: Path):
    (tmp_path / "app.py").write_text(APP)
    log = tmp_path / "error.log"
    server = Forklift(
        tmp_path / "run",
        "app:application",
        "--logto",
        str(log),
        "--disable-logging",
        chdir=tmp_path,
        error_log=log,
    )
    try:
        server.start()  # its "listening on" line is found in the log file

        def get():
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"ok"

        get()
        text = wait_until(
            lambda: "via-print-stderr" in server.log() and server.log(), 10, what="the print"
        )
        assert "via-wsgi-errors" in text
        os.rename(log, tmp_path / "error.log.1")
        server.signal(signal.SIGUSR1)
        wait_until(log.exists, 10, what="USR1 to reopen the log file")
        workers = [pid for pid, _state in proc_children(server.pid)]
        assert workers
        # the workers reopen on their own USR1: their stderr is the new file
        wait_until(
            lambda: all(_stderr_target(pid) == str(log) for pid in workers),
            10,
            what="the workers' stderr on the new file",
        )
        get()
        wait_until(lambda: "via-wsgi-errors" in server.log(), 10, what="the next request's line")
    finally:
        server.stop()
    assert "via-print-stderr" not in server.stderr()
