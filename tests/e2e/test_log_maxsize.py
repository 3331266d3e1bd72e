"""uWSGI's log-maxsize and log-date from an ini file take effect."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

APP = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


def test_log_maxsize_rotates_the_logto_file(tmp_path: Path):
    (tmp_path / "app.py").write_text(APP)
    log = tmp_path / "fk.log"
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(
        "[uwsgi]\nhttp-socket = 127.0.0.1:0\nchdir = %d\nwsgi-file = app.py\n"
        f"logto = {log}\nlog-maxsize = 20000\nlog-date = true\npidfile = %d/fk.pid\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "forklift", "--ini", str(ini)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 10
        while port is None and time.monotonic() < deadline:
            time.sleep(0.05)
            if log.exists():
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read_text())
                port = int(m.group(1)) if m else None
        assert port, "server did not start"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(400):  # ~100 bytes of access log each: 40 kB, twice the limit
            conn.request("GET", "/" + "x" * 20)
            assert conn.getresponse().read() == b"ok"
        deadline = time.monotonic() + 5
        rotated = []
        while not rotated and time.monotonic() < deadline:
            time.sleep(0.1)
            rotated = [p for p in tmp_path.iterdir() if p.name.startswith("fk.log.")]
        assert rotated, "the log file was not rotated"
        conn.request("GET", "/after")
        assert conn.getresponse().read() == b"ok"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "/after" not in log.read_text():
            time.sleep(0.05)
        assert "/after" in log.read_text(), "the new log file is not written to"
        assert os.path.getsize(rotated[0]) > 20000
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert "log-date" not in err and "log-maxsize" not in err  # honoured, not warned about
