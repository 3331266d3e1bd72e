"""Code a hostile uwsgi peer names (UWSGI_FILE, UWSGI_SCRIPT, UWSGI_MODULE...).

Importing it writes a marker file next to it; it must never be imported by forklift.
"""

import os

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "IMPORTED"), "w") as f:
    f.write(f"imported by pid {os.getpid()}\n")


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"EVIL CODE RAN\n"]


app = application
