"""Echo the request back as JSON: method, path, query, CGI environ keys and the body's digest.

`?read=` picks how the body is read (read(n) blocks, tiny read(7)s, all at once, readline,
readlines, iteration) so every reading method of wsgi.input is exercised over a real socket.
`?status=204` or `?status=304` answers that status with no body.
"""

import hashlib
import json
from urllib.parse import parse_qs
from wsgiref.validate import validator

_WSGI_KEYS = (
    "wsgi.version",
    "wsgi.url_scheme",
    "wsgi.multithread",
    "wsgi.multiprocess",
    "wsgi.run_once",
    "wsgi.input_terminated",
)
BODY_ECHO_LIMIT = 65536  # bodies up to this size come back verbatim (latin-1), larger as digest


def read_body(environ, how="block"):
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    left = int(length) if length else None
    if left is None and not environ.get("wsgi.input_terminated"):
        return b""  # PEP 3333: no length, no terminated input -> nothing to read
    if how == "readline":
        parts = []
        while True:
            line = stream.readline()
            if not line:
                break
            parts.append(line)
        return b"".join(parts)
    if how == "all":
        return stream.read(-1) if left is None else stream.read(left)
    if how == "readlines":
        return b"".join(stream.readlines())
    if how == "iter":
        return b"".join(line for line in stream)
    size = 7 if how == "tiny" else 65536
    parts = []
    while left is None or left > 0:
        data = stream.read(size if left is None else min(size, left))
        if not data:
            break
        parts.append(data)
        if left is not None:
            left -= len(data)
    return b"".join(parts)


def echo_app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    status = query.get("status", ["200"])[0]
    if status in ("204", "304"):
        start_response(f"{status} Nothing", [("ETag", '"x"')] if status == "304" else [])
        return []
    body = read_body(environ, query.get("read", ["block"])[0])
    cgi = {k: v for k, v in environ.items() if "." not in k and isinstance(v, str)}
    answer = {
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO"),
        "query": environ.get("QUERY_STRING"),
        "environ": cgi,
        "wsgi": {k: environ[k] for k in _WSGI_KEYS if k in environ},
        "body_length": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body": body.decode("latin-1") if len(body) <= BODY_ECHO_LIMIT else None,
    }
    data = json.dumps(answer).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


app = validator(echo_app)
