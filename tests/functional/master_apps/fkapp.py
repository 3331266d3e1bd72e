"""The app the master tests serve (imported by each worker after fork).

Every answer is "VERSION PID": which code generation and which worker process served it.

  /             answer at once
  /sleep?s=F    sleep F seconds first (default 0.05)
  /stuck        sleep 10 s inside stuck(), on a line the harakiri report must name
  /alloc        allocate 50 MB and keep it (reload-on-rss)
"""

import os
import time
from urllib.parse import parse_qs

import fkapp_version

_hoard = []


def stuck():
    time.sleep(10)  # STUCK-HERE


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/sleep":
        time.sleep(float(query.get("s", ["0.05"])[0]))
    elif path == "/stuck":
        stuck()
    elif path == "/alloc":
        _hoard.append(b"\x01" * (50 * 1024 * 1024))  # written, so resident (not calloc'd)
    body = f"{fkapp_version.VERSION} {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
