"""--logto: everything a worker writes to stderr (wsgi.errors, print, crash tracebacks) goes to
the log file, as with uWSGI's logto, and USR1 moves all of it to a fresh file."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

APP = """
import sys

def application(environ, start_response):
    environ["wsgi.errors"].write("via-wsgi-errors\\n")
    print("via-print-stderr", file=sys.stderr, flush=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return None


def test_stderr_of_the_app_goes_to_the_logto_file(tmp_path: Path):
    (tmp_path / "app.py").write_text(APP)
    log = tmp_path / "error.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forklift",
            "--http",
            "127.0.0.1:0",
            "--chdir",
            str(tmp_path),
            "--logto",
            str(log),
            "--disable-logging",
            "app:application",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        match = _wait_for(
            lambda: log.exists() and re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text())
        )
        assert match, "no 'listening on' line in the log file"
        port = int(match.group(1))

        def get():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"ok"

        get()
        text = _wait_for(lambda: "via-print-stderr" in log.read_text() and log.read_text())
        assert text and "via-wsgi-errors" in text
        os.rename(log, tmp_path / "error.log.1")
        os.kill(proc.pid, signal.SIGUSR1)
        assert _wait_for(log.exists), "USR1 did not reopen the log file"
        time.sleep(0.3)  # the workers reopen on their own USR1
        get()
        assert _wait_for(lambda: "via-wsgi-errors" in log.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert b"via-print-stderr" not in err
