"""A streamed download: a generator yielding many chunks of known content, no Content-Length."""

from urllib.parse import parse_qs
from wsgiref.validate import validator


def piece(i: int, size: int) -> bytes:
    head = b"%08d:" % i
    return head + bytes((i + k) % 251 for k in range(max(0, size - len(head))))


def expected(count: int, size: int) -> bytes:
    return b"".join(piece(i, size) for i in range(count))


def stream_app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    count = int(query.get("chunks", ["200"])[0])
    size = int(query.get("size", ["1000"])[0])
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    for i in range(count):
        yield piece(i, size)


app = validator(stream_app)
