"""An app that answers through the write() callable that start_response returns.

`?cl=1` declares the Content-Length up front; `?mix=1` writes some pieces and returns the
rest as the iterable (PEP 3333 allows both on one response).
"""

from urllib.parse import parse_qs
from wsgiref.validate import validator

PIECES = [b"alpha-", b"beta-", b"", b"gamma-" * 1000, b"delta"]
BODY = b"".join(PIECES)


def write_app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    headers = [("Content-Type", "text/plain")]
    if query.get("cl"):
        headers.append(("Content-Length", str(len(BODY))))
    write = start_response("200 OK", headers)
    if query.get("mix"):
        for data in PIECES[:2]:
            write(data)
        return PIECES[2:]
    for data in PIECES:
        write(data)
    return []


app = validator(write_app)
