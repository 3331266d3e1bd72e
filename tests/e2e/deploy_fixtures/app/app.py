"""The app the deploy tests ship, in versions v1..v6 (see version.py of each commit).

/           "VERSION PID" (and greet's word from v3 on): who answered
/healthz    the health check: 2xx only with Host app.test, or version.HEALTH_STATUS
/fail       500 (a 5xx the watch can count)
"""

import os
import threading

import version

if version.BROKEN_IMPORT:
    import module_that_does_not_exist  # noqa: F401  (v4: the import fails)

if version.USES_GREET:
    import greet

    WORD = " " + greet.WORD
else:
    WORD = ""

if version.CRASH_AFTER:
    # A worker that boots, passes its check, then dies: a crash loop. A daemon thread, so
    # the deploy's preflight (which only imports) exits before it fires.
    _timer = threading.Timer(version.CRASH_AFTER, os._exit, (1,))
    _timer.daemon = True
    _timer.start()


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/healthz":
        status = version.HEALTH_STATUS
        if environ.get("HTTP_HOST", "").split(":")[0] != "app.test":
            status = "421 Misdirected Request"
        body = status.encode()
    elif path == "/fail":
        status, body = "500 Internal Server Error", b"failing on purpose"
    else:
        status = "200 OK"
        body = f"{version.VERSION} {os.getpid()}{WORD}\n".encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
