"""One large answer in a single piece (a list), and a small one: for slow-reader tests."""

BIG = bytes(range(256)) * (3 << 12)  # 3 MiB


def app(environ, start_response):
    if environ["PATH_INFO"] == "/big":
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BIG)))],
        )
        return [BIG]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"small"]
