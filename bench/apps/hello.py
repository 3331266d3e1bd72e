"""The `hello` benchmark app: raw WSGI, 13 bytes, nothing else (no framework, no I/O)."""

BODY = b"Hello, world!"  # 13 bytes
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


application = app
