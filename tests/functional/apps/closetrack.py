"""Record every result close() in a file, so a test can assert the server always called it,
also when the client went away mid-body or mid-response.

Each request names itself with `?tag=`. The log gets "begin TAG" when the app is called,
"close TAG" when the server closes the result. Routes: /ok answers at once; /read reads the
whole body inside the iteration (a client that leaves mid-body breaks the read); /stream
yields up to 64 MiB (a client that leaves mid-response breaks the send); /sleep?s=F sleeps
F seconds (at most 5) before it answers (a client may leave meanwhile).
"""

import os
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

LOG = os.path.join(os.environ.get("FIXTURE_DIR", "."), "close.log")
_CHUNK = b"z" * 65536


def _record(line: str) -> None:
    with open(LOG, "a") as f:
        f.write(line + "\n")


class Tracked:
    """An app result whose close() is recorded."""

    def __init__(self, tag, iterable):
        self.tag = tag
        self._it = iter(iterable)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def close(self):
        _record(f"close {self.tag}")


def _read_all(environ):
    stream = environ["wsgi.input"]
    left = int(environ.get("CONTENT_LENGTH") or 0)
    total = 0
    while left > 0:
        data = stream.read(min(65536, left))
        if not data:
            break
        left -= len(data)
        total += len(data)
    yield b"read %d" % total


def _stream():
    for _ in range(1024):  # 64 MiB at most: far more than any socket buffer holds
        yield _CHUNK


def closetrack_app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    tag = query.get("tag", ["-"])[0]
    _record(f"begin {tag}")
    path = environ["PATH_INFO"]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    if path == "/read":
        return Tracked(tag, _read_all(environ))
    if path == "/stream":
        return Tracked(tag, _stream())
    if path == "/sleep":
        time.sleep(min(float(query.get("s", ["0.3"])[0]), 5.0))
    return Tracked(tag, [b"ok"])


app = validator(closetrack_app)
