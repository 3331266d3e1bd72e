"""The error log and the access log: formats, destinations, reopening after logrotate.

The error log is the stdlib `logging` logger "forklift" (rare, human-facing lines). The access
log is written by hand because it runs once per request: one formatted line per response,
the timestamp cached per second.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback

error_log = logging.getLogger("forklift")

_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
_handler: logging.Handler | None = None


def setup_error_log(path: str | None, level: str = "info") -> None:
    """Send the error log to `path` (append) or stderr; calling it again reopens the file.

    With a path, file descriptor 2 itself is pointed at the file (as uWSGI's logto does):
    what the app or a library writes to stderr, `wsgi.errors` and tracebacks of crashes
    land in the same log, and a reopen after logrotate moves all of it at once."""
    global _handler
    new: logging.Handler
    if path:
        sys.stderr.flush()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
    new = logging.StreamHandler(sys.stderr)
    new.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S %z"))
    if _handler is not None:
        error_log.removeHandler(_handler)
        _handler.close()
    _handler = new
    error_log.addHandler(new)
    error_log.setLevel(getattr(logging, level.upper(), logging.INFO))
    error_log.propagate = False


# Client-controlled text must not be able to forge fields of the log line: quotes,
# backslashes and control characters are written as \xHH, as nginx does.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x22, 0x5C, 0x7F)}


def _clean(text: str) -> str:
    return text.translate(_ESCAPES)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


ACCESS_LOG_FORMATS = ("combined", "json")


class AccessLog:
    """One line per answered request, to stdout ("-") or a file opened in append mode:
    the combined format (default) or JSON (`fmt="json"`, see `log_json`)."""

    def __init__(self, path: str | None, fmt: str = "combined"):
        self.path = path
        self._lock = threading.Lock()
        self._second = -1
        self._stamp = ""
        self._fd = -1
        if fmt == "json":
            self.log = self.log_json  # chosen once: no per-request branch
        elif fmt != "combined":
            raise ValueError(f"unknown access log format {fmt!r}")
        self.reopen()

    def reopen(self) -> None:
        """Open (again) the destination: after logrotate moved the file, USR1 lands here."""
        if self.path in (None, "-"):
            self._fd = 1
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        old, self._fd = self._fd, fd
        if old > 2:
            os.close(old)

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            t = time.localtime(second)
            off = t.tm_gmtoff
            sign = "+" if off >= 0 else "-"
            off = abs(off) // 60
            self._stamp = "%02d/%s/%04d:%02d:%02d:%02d %s%02d%02d" % (
                t.tm_mday,
                _MONTHS[t.tm_mon - 1],
                t.tm_year,
                t.tm_hour,
                t.tm_min,
                t.tm_sec,
                sign,
                off // 60,
                off % 60,
            )
            self._second = second
        return self._stamp

    def log(self, environ: dict, status: str, size: int, duration: float) -> None:
        """One combined-format line, plus the request time in microseconds."""
        now = time.time()
        method = environ.get("REQUEST_METHOD", "-")
        line = '%s - - [%s] "%s %s %s" %s %s "%s" "%s" %d\n' % (
            environ.get("REMOTE_ADDR") or "-",
            self._timestamp(now),
            _clean(method),
            _clean(environ.get("REQUEST_URI", "-")),
            environ.get("SERVER_PROTOCOL", "-"),
            status[:3] if status else "-",
            size if size else "-",
            _clean(environ.get("HTTP_REFERER", "-")),
            _clean(environ.get("HTTP_USER_AGENT", "-")),
            int(duration * 1e6),
        )
        self._write(line.encode("utf-8", "backslashreplace"))

    def log_json(self, environ: dict, status: str, size: int, duration: float) -> None:
        """One JSON object per line, fields named after the OpenTelemetry HTTP semantic
        conventions. json.dumps with ensure_ascii escapes every value: quotes, backslashes,
        control characters (C0, DEL and C1) and non-ASCII, so no client text can end a line,
        forge a field or reach a terminal as a control sequence."""
        now = time.time()
        protocol = environ.get("SERVER_PROTOCOL", "")
        record = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
            + ".%03dZ" % (now % 1 * 1000),
            "http.request.method": _text(environ.get("REQUEST_METHOD", "")),
            "url.path": _text(_path_of(environ)),
            "url.query": _text(environ.get("QUERY_STRING", "")),
            "url.scheme": environ.get("wsgi.url_scheme", "http"),
            "http.response.status_code": int(status[:3]) if status[:3].isdigit() else None,
            "http.response.body.size": size,
            "http.server.request.duration": round(duration, 6),
            "client.address": environ.get("REMOTE_ADDR") or None,
            "network.protocol.name": environ.get("forklift.protocol", "http"),
            "network.protocol.version": protocol.partition("/")[2] or None,
            "user_agent.original": _text(environ.get("HTTP_USER_AGENT")),
            "http.request.header.referer": _text(environ.get("HTTP_REFERER")),
            "http.request.id": environ.get("forklift.request_id"),
        }
        length = environ.get("CONTENT_LENGTH")
        if length and length.isdigit():
            record["http.request.body.size"] = int(length)
        line = json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"
        self._write(line.encode("ascii"))

    def _write(self, data: bytes) -> None:
        with self._lock:
            try:
                os.write(self._fd, data)
            except OSError:
                pass  # a full disk or closed stdout must never break serving


def _text(value: str | None) -> str | None:
    """A WSGI "bytes as latin-1" string back to the text the client sent (UTF-8 when it is,
    otherwise each undecodable byte as \\xHH)."""
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return value


def _path_of(environ: dict) -> str:
    uri = environ.get("REQUEST_URI")
    if uri:
        return uri.partition("?")[0]
    return environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")


def log_notable(config, environ: dict, status: str, duration: float) -> None:
    """uWSGI's log-4xx, log-5xx and log-slow: such requests reach the error log even when
    the access log is off."""
    kind = status[:1]
    slow = config.log_slow and duration * 1000 >= config.log_slow
    if (kind == "4" and config.log_4xx) or (kind == "5" and config.log_5xx) or slow:
        error_log.warning(
            "%s %s -> %s in %.0f ms from %s [request %s]",
            environ.get("REQUEST_METHOD"),
            environ.get("REQUEST_URI") or environ.get("PATH_INFO"),
            status or "(no answer)",
            duration * 1000,
            environ.get("REMOTE_ADDR") or "-",
            environ.get("forklift.request_id", "-"),
        )


def log_app_error(environ: dict, exc: BaseException, *, head_sent: bool, contract: bool) -> None:
    """An app's failure on one request. A broken PEP 3333 contract (`contract`) is said in
    one line; an exception gets the traceback being handled. `head_sent`: the client only
    learns of it by the close."""
    method, uri = environ.get("REQUEST_METHOD"), environ.get("REQUEST_URI")
    request_id = environ.get("forklift.request_id", "-")  # the request's lines share it
    if head_sent:
        error_log.error(
            "error after the response head was sent for %s %s [request %s]; "
            "closing the connection\n%s",
            method,
            uri,
            request_id,
            traceback.format_exc().rstrip(),
        )
    elif contract:
        error_log.error("%s %s [request %s]: %s", method, uri, request_id, exc)
    else:
        error_log.error(
            "exception in the app for %s %s [request %s]\n%s",
            method,
            uri,
            request_id,
            traceback.format_exc().rstrip(),
        )
