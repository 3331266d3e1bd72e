"""An app that never reads its request body: the server must not take the body for the next
request, and must not send 100 Continue for it."""

from wsgiref.validate import validator


def noread_app(environ, start_response):
    data = b"did not read " + environ.get("CONTENT_LENGTH", "-").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]


app = validator(noread_app)
