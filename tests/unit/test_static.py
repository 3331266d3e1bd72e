"""forklift.static: files under URL prefixes, answered before the app (uWSGI's static-map).

`StaticMap` is called as the worker calls any WSGI app, with environ dicts, on files in
tmp_path. Anything that does not name a regular file inside the mapped directory must reach
the app, and nothing outside the directory may ever be read.

Regression tests for bugs found in `static.py` (since fixed) are grouped at the end.
"""

from __future__ import annotations

import os
from email.utils import formatdate

import pytest

from forklift.static import StaticMap, parse_range
from forklift.wsgi import FileWrapper, decode_path

# --- parse_range -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, size, expected",
    [
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=0-0", 100, (0, 0)),
        ("bytes=5-", 100, (5, 99)),
        ("bytes=-5", 100, (95, 99)),
        ("bytes=-500", 100, (0, 99)),  # a suffix longer than the file is the whole file
        ("bytes=90-200", 100, (90, 99)),  # the end is clipped to the file
        ("bytes=99-99", 100, (99, 99)),
        ("Bytes = 1-2", 100, (1, 2)),
        ("bytes=100-", 100, "unsatisfiable"),  # a resume of a finished download
        ("bytes=150-", 100, "unsatisfiable"),
        ("bytes=100-200", 100, "unsatisfiable"),
        ("bytes=-0", 100, "unsatisfiable"),
        ("bytes=0-", 0, "unsatisfiable"),
        ("bytes=-5", 0, "unsatisfiable"),
        ("bytes=0-9,20-29", 100, None),  # several ranges: the whole file
        ("bytes=0-9, -5", 100, None),
        ("bytes=9-0", 100, None),
        ("bytes=", 100, None),
        ("bytes=-", 100, None),
        ("bytes=abc", 100, None),
        ("bytes=a-b", 100, None),
        ("bytes=1-b", 100, None),
        ("bytes=-x", 100, None),
        ("bytes=+1-2", 100, None),
        ("items=0-9", 100, None),
        ("0-9", 100, None),
        ("", 100, None),
    ],
)
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


# --- StaticMap ---------------------------------------------------------------------------------

CONTENT = b"0123456789" * 10


class Fallback:
    """The app behind the static map: records what reached it."""

    def __init__(self):
        self.paths: list = []

    def __call__(self, environ, start_response):
        self.paths.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "1")])
        return [b"from the app"]


class Answer:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def code(self) -> int:
        return int(self.status[:3])

    def header(self, name):
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, (name, values)
        return values[0] if values else None


def call(app, path, method="GET", script_name="", **headers) -> Answer:
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path,
        "wsgi.file_wrapper": FileWrapper,
    }
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    seen = []

    def start_response(status, response_headers, exc_info=None):
        seen.append((status, response_headers))

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    status, response_headers = seen[-1]
    return Answer(status, response_headers, body)


@pytest.fixture
def site(tmp_path):
    """static/ (served) next to secret.txt (must never be served), and the map."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "data.txt").write_bytes(CONTENT)
    (static / "page.html").write_text("<p>hi</p>")
    (static / "style.css").write_text("p{}")
    (static / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (static / "blob.forkliftunknown").write_bytes(b"\x00\x01")
    (static / "caf\u00e9.txt").write_text("utf-8 name")
    (static / "sub").mkdir()
    (static / "sub" / "index.html").write_text("<h1>index</h1>")
    (static / "empty").mkdir()
    (tmp_path / "secret.txt").write_text("do not serve")
    fallback = Fallback()
    app = StaticMap(fallback, [("/static", str(static))])
    return app, fallback, static


def test_file_is_served_with_type_length_and_validators(site):
    app, fallback, static = site
    answer = call(app, "/static/data.txt")
    mtime = int(os.stat(static / "data.txt").st_mtime)
    assert answer.code == 200
    assert answer.body == CONTENT
    assert answer.header("Content-Type") == "text/plain; charset=utf-8"
    assert answer.header("Content-Length") == str(len(CONTENT))
    assert answer.header("Last-Modified") == formatdate(mtime, usegmt=True)
    assert answer.header("Accept-Ranges") == "bytes"
    etag = answer.header("ETag")
    assert etag.startswith('"') and etag.endswith('"')
    assert fallback.paths == []


@pytest.mark.parametrize(
    "name, ctype",
    [
        ("page.html", "text/html; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("logo.png", "image/png"),
        ("blob.forkliftunknown", "application/octet-stream"),
    ],
)
def test_content_type_follows_the_extension(site, name, ctype):
    app, _, _ = site
    assert call(app, f"/static/{name}").header("Content-Type") == ctype


def test_etag_is_stable_and_changes_with_the_file(site):
    app, _, static = site
    first = call(app, "/static/data.txt").header("ETag")
    assert call(app, "/static/data.txt").header("ETag") == first
    (static / "data.txt").write_bytes(CONTENT + b"more")
    assert call(app, "/static/data.txt").header("ETag") != first


def test_full_file_goes_through_the_file_wrapper_so_the_worker_can_sendfile(site):
    app, _, static = site
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/static/data.txt",
        "wsgi.file_wrapper": FileWrapper,
    }
    result = app(environ, lambda status, headers, exc_info=None: None)
    try:
        assert type(result) is FileWrapper
        fd, offset, count = result.sendfile_span()
        assert (offset, count) == (0, len(CONTENT))
    finally:
        result.close()


def test_served_without_a_file_wrapper_in_the_environ(site):
    app, _, _ = site
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/static/data.txt"}
    result = app(environ, lambda status, headers, exc_info=None: None)
    try:
        assert b"".join(result) == CONTENT
    finally:
        result.close()


def test_utf8_file_name_arrives_as_latin1_path_info(site):
    app, _, _ = site
    path = decode_path(b"/static/caf%C3%A9.txt")
    assert call(app, path).body == b"utf-8 name"


# --- conditional requests ---------------------------------------------------------------------


def test_if_none_match_with_the_etag_is_304(site):
    app, _, _ = site
    etag = call(app, "/static/data.txt").header("ETag")
    for value in (etag, f'"other", {etag}', "W/" + etag, "*"):
        answer = call(app, "/static/data.txt", if_none_match=value)
        assert answer.code == 304, value
        assert answer.body == b""
        assert answer.header("ETag") == etag
        assert answer.header("Last-Modified") is not None


def test_if_none_match_with_another_etag_is_200(site):
    app, _, _ = site
    assert call(app, "/static/data.txt", if_none_match='"nope"').code == 200


def test_if_modified_since_the_last_modification_is_304(site):
    app, _, _ = site
    last_modified = call(app, "/static/data.txt").header("Last-Modified")
    assert call(app, "/static/data.txt", if_modified_since=last_modified).code == 304
    later = formatdate(os.stat(site[2] / "data.txt").st_mtime + 3600, usegmt=True)
    assert call(app, "/static/data.txt", if_modified_since=later).code == 304


def test_if_modified_since_before_the_last_modification_is_200(site):
    app, _, static = site
    earlier = formatdate(os.stat(static / "data.txt").st_mtime - 3600, usegmt=True)
    answer = call(app, "/static/data.txt", if_modified_since=earlier)
    assert answer.code == 200
    assert answer.body == CONTENT


def test_unreadable_if_modified_since_is_ignored(site):
    app, _, _ = site
    assert call(app, "/static/data.txt", if_modified_since="yesterday").code == 200


def test_if_none_match_wins_over_if_modified_since(site):
    # RFC 9110 §13.1.3: If-Modified-Since is ignored when If-None-Match is present.
    app, _, _ = site
    last_modified = call(app, "/static/data.txt").header("Last-Modified")
    answer = call(
        app, "/static/data.txt", if_none_match='"changed"', if_modified_since=last_modified
    )
    assert answer.code == 200


# --- ranges -------------------------------------------------------------------------------------


def test_range_is_206_with_content_range(site):
    app, _, _ = site
    answer = call(app, "/static/data.txt", range="bytes=10-19")
    assert answer.code == 206
    assert answer.body == CONTENT[10:20]
    assert answer.header("Content-Range") == f"bytes 10-19/{len(CONTENT)}"
    assert answer.header("Content-Length") == "10"


def test_suffix_range(site):
    app, _, _ = site
    answer = call(app, "/static/data.txt", range="bytes=-7")
    assert answer.code == 206
    assert answer.body == CONTENT[-7:]
    assert answer.header("Content-Range") == f"bytes 93-99/{len(CONTENT)}"


def test_open_range_from_the_middle(site):
    app, _, _ = site
    answer = call(app, "/static/data.txt", range="bytes=95-")
    assert (answer.code, answer.body) == (206, CONTENT[95:])


def test_range_past_the_end_is_416(site):
    app, _, _ = site
    for value in ("bytes=100-", "bytes=500-600"):
        answer = call(app, "/static/data.txt", range=value)
        assert answer.code == 416, value
        assert answer.header("Content-Range") == f"bytes */{len(CONTENT)}"
        assert answer.body == b""


def test_several_ranges_get_the_whole_file(site):
    app, _, _ = site
    answer = call(app, "/static/data.txt", range="bytes=0-1,5-6")
    assert (answer.code, answer.body) == (200, CONTENT)


def test_if_range_with_the_current_etag_honours_the_range(site):
    app, _, _ = site
    etag = call(app, "/static/data.txt").header("ETag")
    answer = call(app, "/static/data.txt", range="bytes=0-3", if_range=etag)
    assert (answer.code, answer.body) == (206, CONTENT[:4])


def test_if_range_with_an_old_validator_sends_the_whole_file(site):
    app, _, static = site
    answer = call(app, "/static/data.txt", range="bytes=0-3", if_range='"old"')
    assert (answer.code, answer.body) == (200, CONTENT)
    earlier = formatdate(os.stat(static / "data.txt").st_mtime - 3600, usegmt=True)
    answer = call(app, "/static/data.txt", range="bytes=0-3", if_range=earlier)
    assert (answer.code, answer.body) == (200, CONTENT)


# --- methods ----------------------------------------------------------------------------------


def test_head_has_the_headers_and_no_body(site):
    app, _, _ = site
    get = call(app, "/static/data.txt")
    head = call(app, "/static/data.txt", method="HEAD")
    assert head.code == 200
    assert head.body == b""
    assert head.header("Content-Length") == str(len(CONTENT))
    assert head.header("ETag") == get.header("ETag")


def test_head_of_a_range(site):
    app, _, _ = site
    answer = call(app, "/static/data.txt", method="HEAD", range="bytes=0-4")
    assert (answer.code, answer.body, answer.header("Content-Length")) == (206, b"", "5")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_writes_to_a_static_file_are_405(site, method):
    app, fallback, _ = site
    answer = call(app, "/static/data.txt", method=method)
    assert answer.code == 405
    assert answer.header("Allow") == "GET, HEAD"
    assert answer.header("Content-Length") == str(len(answer.body))
    assert fallback.paths == []


def test_post_to_a_path_that_is_not_a_file_reaches_the_app(site):
    app, fallback, _ = site
    assert call(app, "/static/form", method="POST").header("X-App") == "1"
    assert fallback.paths == ["/static/form"]


# --- what falls through to the app --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/static/missing.txt",
        "/static/../secret.txt",
        "/static/sub/../../secret.txt",
        "/static/../../../../etc/passwd",
        "/static/data.txt\x00.png",
        "/static/\x00",
        "/static/empty",  # a directory without index.html
        "/static/\u00ff",  # bytes that are not UTF-8 cannot name a file
        "/statics/data.txt",
        "/data.txt",
        "/",
    ],
)
def test_falls_through_to_the_app(site, path):
    app, fallback, _ = site
    answer = call(app, path)
    assert answer.header("X-App") == "1"
    assert answer.body == b"from the app"
    assert fallback.paths == [path]


@pytest.mark.parametrize("raw", [b"/static/%2e%2e/secret.txt", b"/static/..%2fsecret.txt"])
def test_percent_encoded_traversal_falls_through(site, raw):
    app, fallback, _ = site
    path = decode_path(raw)  # as the worker builds PATH_INFO
    assert call(app, path).body == b"from the app"
    assert fallback.paths == [path]


def test_dot_dot_that_stays_inside_the_directory_is_served(site):
    app, _, _ = site
    assert call(app, "/static/sub/../data.txt").body == CONTENT


def test_symlink_out_of_the_directory_falls_through(site, tmp_path):
    app, fallback, static = site
    (static / "link.txt").symlink_to(tmp_path / "secret.txt")
    (static / "linkdir").symlink_to(tmp_path)
    assert call(app, "/static/link.txt").body == b"from the app"
    assert call(app, "/static/linkdir/secret.txt").body == b"from the app"
    assert fallback.paths == ["/static/link.txt", "/static/linkdir/secret.txt"]


def test_symlink_inside_the_directory_is_served(site):
    app, _, static = site
    (static / "alias.txt").symlink_to(static / "data.txt")
    assert call(app, "/static/alias.txt").body == CONTENT


def test_directory_serves_its_index_html(site):
    app, _, _ = site
    for path in ("/static/sub", "/static/sub/"):
        answer = call(app, path)
        assert answer.body == b"<h1>index</h1>", path
        assert answer.header("Content-Type") == "text/html; charset=utf-8"


# --- several maps -------------------------------------------------------------------------------


def test_longest_prefix_wins(tmp_path):
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    outer.mkdir()
    inner.mkdir()
    (outer / "a.txt").write_text("outer a")
    (outer / "img").mkdir()
    (outer / "img" / "b.txt").write_text("outer b")
    (inner / "b.txt").write_text("inner b")
    app = StaticMap(Fallback(), [("/s", str(outer)), ("/s/img/", str(inner))])
    assert call(app, "/s/img/b.txt").body == b"inner b"
    assert call(app, "/s/a.txt").body == b"outer a"


def test_root_prefix_serves_files_and_leaves_the_rest_to_the_app(site):
    _, _, static = site
    fallback = Fallback()
    app = StaticMap(fallback, [("/", str(static))])
    assert call(app, "/data.txt").body == CONTENT
    assert call(app, "/api/users").body == b"from the app"
    assert fallback.paths == ["/api/users"]


def test_script_name_is_part_of_the_matched_url(site):
    app, _, _ = site
    assert call(app, "/data.txt", script_name="/static").body == CONTENT


# =============================================================================================
# Regressions: bugs once found in static.py, fixed; each test below failed before its fix
# =============================================================================================


def test_range_with_a_superscript_digit_is_ignored_not_a_crash():
    # A client may send obs-text in a field value; `Range: bytes=\xb2-` arrives as "²", for
    # which str.isdigit() is True and int() raises ValueError: the app answers 500.
    for header in ("bytes=\u00b2-", "bytes=0-\u00b2", "bytes=-\u00b2"):
        assert parse_range(header, 100) is None, header


def test_static_file_with_a_garbage_range_is_still_served(site):
    app, _, _ = site
    answer = call(app, "/static/data.txt", range="bytes=\u00b2-")
    assert (answer.code, answer.body) == (200, CONTENT)
