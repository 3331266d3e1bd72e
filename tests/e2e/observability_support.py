"""A forklift with 2 workers, a read-only stats port and a control socket, serving a small app
written into the test's directory; and a load generator for it."""

from __future__ import annotations

import http.client
import re
import tempfile
import threading
import time
from pathlib import Path

from nginx_support import Forklift

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # git-ignored
_STATS_LINE = re.compile(r"stats \(read-only\) on 127\.0\.0\.1:(\d+)")

APP = """
import time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or 0.05))
    if path == "/fail":
        start_response("503 Service Unavailable", [("Content-Length", "4")])
        return [b"busy"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]
"""


def start_forklift(directory: Path, *options: str) -> Forklift:
    (directory / "obsapp.py").write_text(APP)
    run = tempfile.mkdtemp(prefix="fko-")  # sun_path is short: the control socket lives here
    server = Forklift(
        [
            "--http",
            "127.0.0.1:0",
            "--stats",
            "127.0.0.1:0",
            "--pidfile",
            f"{run}/fl.pid",
            "--processes",
            "2",
            "--disable-logging",
            "--chdir",
            str(directory),
            *options,
            "obsapp:app",
        ],
        directory,
    ).start()
    server.pidfile = f"{run}/fl.pid"
    deadline = time.monotonic() + 10
    while not _STATS_LINE.search(server.log()):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    server.stats_port = int(_STATS_LINE.search(server.log())[1])
    return server


def get(port: int, path: str = "/") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


class Load:
    """Requests in a background thread until stopped: mostly fast, some slow, a few 503s."""

    def __init__(self, port: int, pause: float = 0.01):
        self.port = port
        self.pause = pause
        self.running = True
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        paths = ["/"] * 8 + ["/slow?0.03", "/fail"]
        while self.running:
            try:
                get(self.port, paths[self.sent % len(paths)])
            except OSError:
                pass
            self.sent += 1
            time.sleep(self.pause)

    def stop(self):
        self.running = False
        self.thread.join(15)
