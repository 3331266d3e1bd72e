"""Answer with wsgi.file_wrapper over a real file, so the server can use os.sendfile.

`app` returns the wrapper itself (what a server must recognise to use sendfile); `validated`
is the same app under wsgiref.validate, whose iterator wrapper hides the file wrapper, so
it exercises the plain iteration of a file wrapper. `?offset=N` seeks the file before
wrapping it; `?cl=1` declares the Content-Length; `?missing=1` wraps a file-like object
without fileno() (no sendfile possible).
"""

import io
import os
import random
import tempfile
import threading
from urllib.parse import parse_qs
from wsgiref.validate import validator

SIZE = 3 * 1024 * 1024 + 17


def data() -> bytes:
    return random.Random(20261124).randbytes(SIZE)


_lock = threading.Lock()
_path = None


def _data_file() -> str:
    """The payload written once, on first use, in the server's fixture directory."""
    global _path
    with _lock:
        if _path is None:
            directory = os.environ.get("FIXTURE_DIR") or tempfile.gettempdir()
            path = os.path.join(directory, f"payload-{os.getpid()}.bin")
            with open(path, "wb") as f:
                f.write(data())
            _path = path
        return _path


def file_app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    offset = int(query.get("offset", ["0"])[0])
    if query.get("missing"):
        f = io.BytesIO(data())
    else:
        f = open(_data_file(), "rb")  # noqa: SIM115 - closed by the server through the wrapper
    f.seek(offset)
    headers = [("Content-Type", "application/octet-stream")]
    if query.get("cl"):
        headers.append(("Content-Length", str(SIZE - offset)))
    start_response("200 OK", headers)
    return environ["wsgi.file_wrapper"](f, 65536)


app = file_app
validated = validator(file_app)
