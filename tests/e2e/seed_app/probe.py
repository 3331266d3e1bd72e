"""A plain WSGI app that says what it received; the e2e tests' eyes inside the worker.

Routes (by PATH_INFO):
- `/upload`: reads wsgi.input to the end; answers its length and sha256 and the framing vars.
- `/stream?flag=NAME`: answers `first`, then waits (at most 5 s) until the file NAME appears
  in $PROBE_DIR, then `released` (or `timed-out`) and 100 kB more: a client that can create
  the file after reading `first` proves the answer was streamed, not buffered whole.
- `/flask-upload`: a Flask view answering the length and sha256 of `request.get_data()`.
- `/status/NNN`: answers that status.
- anything else: JSON with every str value of the environ, plus the worker's pid, cwd,
  $PROBE_NAME, which `UWSGI*`/`E2E_*` variables os.environ has, which modules named `evil*`
  are imported, and sys.path.

Every request appends its REQUEST_URI (or PATH_INFO) to $PROBE_DIR/hits.log, so a test can
tell that a request never reached the app.
"""

import hashlib
import json
import os
import sys
import time
from urllib.parse import parse_qs

PROBE_DIR = os.environ.get("PROBE_DIR", "")
NAME = os.environ.get("PROBE_NAME", "probe")


def _record(environ):
    if PROBE_DIR:
        line = (environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")).encode("latin-1")
        fd = os.open(os.path.join(PROBE_DIR, "hits.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line.replace(b"\n", b" ") + b"\n")
        finally:
            os.close(fd)


def _json(start_response, data, status="200 OK"):
    body = json.dumps(data).encode("ascii")
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _upload(environ, start_response):
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    size = 0
    while True:
        data = stream.read(65536)
        if not data:
            break
        digest.update(data)
        size += len(data)
    return _json(
        start_response,
        {
            "size": size,
            "sha256": digest.hexdigest(),
            "CONTENT_LENGTH": environ.get("CONTENT_LENGTH"),
            "HTTP_TRANSFER_ENCODING": environ.get("HTTP_TRANSFER_ENCODING"),
            "pid": os.getpid(),
        },
    )


def _stream(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    flag = os.path.join(PROBE_DIR, os.path.basename(query.get("flag", ["flag"])[0]))
    # nginx buffers upstream answers unless told otherwise: a streaming app says so.
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Accel-Buffering", "no")])

    def body():
        yield b"first\n"
        deadline = time.monotonic() + 5.0
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield b"released\n" if os.path.exists(flag) else b"timed-out\n"
        for _ in range(100):
            yield b"x" * 999 + b"\n"
        yield b"end\n"

    return body()


_flask_app = None


def _flask(environ, start_response):
    """A Flask view reading the body the way Flask apps do (request.get_data())."""
    global _flask_app
    if _flask_app is None:
        from flask import Flask, jsonify, request

        _flask_app = Flask("probe")

        @_flask_app.route("/flask-upload", methods=["POST"])
        def flask_upload():
            data = request.get_data()
            return jsonify(size=len(data), sha256=hashlib.sha256(data).hexdigest())

    return _flask_app(environ, start_response)


def application(environ, start_response):
    _record(environ)
    path = environ.get("PATH_INFO", "")
    if path == "/upload":
        return _upload(environ, start_response)
    if path == "/flask-upload":
        return _flask(environ, start_response)
    if path == "/stream":
        return _stream(environ, start_response)
    if path.startswith("/status/"):
        code = int(path[len("/status/") :] or 500)
        body = f"status {code}\n".encode()
        start_response(
            f"{code} Test", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]
    env = {k: v for k, v in environ.items() if isinstance(v, str)}
    env["wsgi.url_scheme"] = environ.get("wsgi.url_scheme")
    return _json(
        start_response,
        {
            "environ": env,
            "pid": os.getpid(),
            "uid": os.getuid(),
            "cwd": os.getcwd(),
            "name": NAME,
            "os_environ": sorted(k for k in os.environ if k.startswith(("UWSGI", "E2E_"))),
            "evil_modules": sorted(m for m in sys.modules if "evil" in m),
            "sys_path": sys.path,
        },
    )
