"""A slow app: sleeps `?s=` seconds (bounded), then reads its body and answers.

Used to show concurrency (several sleeps overlap with --threads > 1), that the interim
100 Continue waits for the app's first read, and that other clients are served meanwhile.
"""

import json
import threading
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator


def slow_app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    seconds = min(float(query.get("s", ["0.5"])[0]), 5.0)
    started = time.monotonic()
    time.sleep(seconds)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    data = json.dumps(
        {
            "slept": seconds,
            "body_length": len(body),
            "thread": threading.get_ident(),
            "started": started,
        }
    ).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


app = validator(slow_app)
