"""Static files under URL prefixes (uWSGI's `static-map`), as a WSGI middleware.

A request under a mapped prefix whose file exists is answered here: the right
Content-Type, Last-Modified and ETag, conditional GETs (304), single byte ranges (206/416),
HEAD, through `wsgi.file_wrapper` so the worker can `sendfile`. A path that does not name a
regular file inside the directory goes on to the app, as in uWSGI. `..`, symlinks out of
the directory and NUL bytes never reach the filesystem outside it.
"""

from __future__ import annotations

import mimetypes
import os
import posixpath
from email.utils import formatdate, parsedate_to_datetime


class StaticMap:
    """Serve files for `maps` [(url prefix, directory)], else call `app`."""

    def __init__(self, app, maps):
        self.app = app
        self.maps = []
        for prefix, directory in maps:
            prefix = "/" + prefix.strip("/")
            self.maps.append((prefix.rstrip("/") or "/", os.path.realpath(directory)))
        # Longest prefix first, so /static/img wins over /static.
        self.maps.sort(key=lambda item: len(item[0]), reverse=True)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        full = environ.get("SCRIPT_NAME", "") + path
        for prefix, directory in self.maps:
            if full == prefix or full.startswith(prefix + "/") or prefix == "/":
                filename = self._resolve(directory, full[len(prefix) :] if prefix != "/" else full)
                if filename is not None:
                    return self._serve(environ, start_response, filename)
        return self.app(environ, start_response)

    @staticmethod
    def _resolve(directory: str, rest: str) -> str | None:
        if "\x00" in rest:
            return None
        # PATH_INFO is bytes-as-latin-1 (PEP 3333); file names on disk are UTF-8.
        try:
            rest = rest.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return None
        rest = posixpath.normpath("/" + rest).lstrip("/")
        candidate = os.path.realpath(os.path.join(directory, rest))
        if candidate != directory and not candidate.startswith(directory + os.sep):
            return None  # escaped the directory (.. or a symlink pointing out)
        if os.path.isdir(candidate):
            candidate = os.path.join(candidate, "index.html")
        return candidate if os.path.isfile(candidate) else None

    def _serve(self, environ, start_response, filename):
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response(
                "405 Method Not Allowed",
                [("Allow", "GET, HEAD"), ("Content-Type", "text/plain"), ("Content-Length", "19")],
            )
            return [b"method not allowed\n"]
        try:
            f = open(filename, "rb")  # noqa: SIM115 - closed by the file wrapper
        except OSError:
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"forbidden\n"]
        st = os.fstat(f.fileno())
        size = st.st_size
        mtime = int(st.st_mtime)
        etag = f'"{mtime:x}-{size:x}"'
        ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        headers = [
            ("Content-Type", ctype),
            ("Last-Modified", formatdate(mtime, usegmt=True)),
            ("ETag", etag),
            ("Accept-Ranges", "bytes"),
        ]
        if _not_modified(environ, etag, mtime):
            f.close()
            start_response("304 Not Modified", headers[1:3])
            return []
        status, start, length = "200 OK", 0, size
        range_header = environ.get("HTTP_RANGE")
        if range_header and _if_range_ok(environ, etag, mtime):
            span = parse_range(range_header, size)
            if span == "unsatisfiable":
                f.close()
                start_response(
                    "416 Range Not Satisfiable",
                    [("Content-Range", f"bytes */{size}"), ("Content-Length", "0")],
                )
                return []
            if span is not None:
                start, end = span
                length = end - start + 1
                status = "206 Partial Content"
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        headers.append(("Content-Length", str(length)))
        start_response(status, headers)
        if method == "HEAD":
            f.close()
            return []
        f.seek(start)
        if length == size:
            wrapper = environ.get("wsgi.file_wrapper")
            if wrapper is not None:
                return wrapper(f, 65536)
        return _read_span(f, length)


def _read_span(f, length: int):
    try:
        while length > 0:
            data = f.read(min(65536, length))
            if not data:
                return
            length -= len(data)
            yield data
    finally:
        f.close()


def _not_modified(environ, etag: str, mtime: int) -> bool:
    """RFC 9110 §13.1.2 then §13.1.3: If-None-Match wins over If-Modified-Since."""
    inm = environ.get("HTTP_IF_NONE_MATCH")
    if inm is not None:
        tags = [t.strip() for t in inm.split(",")]
        return "*" in tags or etag in tags or ("W/" + etag) in tags
    ims = environ.get("HTTP_IF_MODIFIED_SINCE")
    if ims:
        try:
            return mtime <= parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
    return False


def _if_range_ok(environ, etag: str, mtime: int) -> bool:
    value = environ.get("HTTP_IF_RANGE")
    if not value:
        return True
    if value.startswith('"') or value.startswith("W/"):
        return value == etag
    try:
        return mtime <= parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts "²", which int() refuses."""
    return text.isascii() and text.isdigit()


def parse_range(header: str, size: int):
    """(start, end) of a single `bytes=` range, "unsatisfiable", or None to send it all.

    Several ranges are answered with the whole file (allowed by RFC 9110 §14.2).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not first:
        if not _digits(last):
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    if not _digits(first) or (last and not _digits(last)):
        return None
    start = int(first)
    if start >= size:
        return "unsatisfiable"  # also `bytes=N-` at or past the end (a finished resume)
    end = int(last) if last else size - 1
    if end < start:
        return None
    return start, min(end, size - 1)
