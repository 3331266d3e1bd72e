"""uWSGI's log-maxsize and log-date from an ini file take effect."""

from __future__ import annotations

import http.client
import os
from pathlib import Path

from support import Forklift, wait_until

APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


def test_log_maxsize_rotates_the_logto_file(tmp_path: Path):
    (tmp_path / "app.py").write_text(APP)
    log = tmp_path / "fk.log"
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(
        "[uwsgi]\nhttp-socket = 127.0.0.1:0\nchdir = %d\nwsgi-file = app.py\n"
        f"logto = {log}\nlog-maxsize = 20000\nlog-date = true\npidfile = %d/fk.pid\n"
    )
    server = Forklift(
        tmp_path / "run", None, "--ini", str(ini), listen=(), chdir=None, error_log=log
    )
    try:
        server.start(listeners=1)  # the "listening on" line is in the logto file
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        for _ in range(100):  # ~500 bytes of access log each: 50 kB, more than twice the limit
            conn.request("GET", "/" + "x" * 400)
            assert conn.getresponse().read() == b"ok"
        rotated = wait_until(
            lambda: [p for p in tmp_path.iterdir() if p.name.startswith("fk.log.")],
            5,
            what="the log file to be rotated",
        )
        conn.request("GET", "/after")
        assert conn.getresponse().read() == b"ok"
        wait_until(lambda: "/after" in log.read_text(), 5, what="a line in the new log file")
        assert os.path.getsize(rotated[0]) > 20000
        conn.close()  # else the graceful stop waits out its keep-alive deadline
    finally:
        server.stop()
    err = server.stderr()
    assert "log-date" not in err and "log-maxsize" not in err  # honoured, not warned about
