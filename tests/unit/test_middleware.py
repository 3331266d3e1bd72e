"""forklift.middleware: several apps under URL prefixes (`mount`), headers added (`add-header`)."""

from __future__ import annotations

import sys

import pytest

from forklift.middleware import AddHeaders, MountDispatcher


def named_app(name):
    """An app that answers its name and the SCRIPT_NAME/PATH_INFO it was given."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{name} {environ.get('SCRIPT_NAME', '')!r} {environ['PATH_INFO']!r}".encode()]

    return app


def call(app, path, script_name=""):
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": script_name, "PATH_INFO": path}
    seen = []

    def start_response(status, headers, exc_info=None):
        seen.append((status, headers))
        return lambda data: None

    body = b"".join(app(environ, start_response))
    status, headers = seen[-1]
    return status, headers, body.decode()


MOUNTS = [
    ("/app", named_app("app")),
    ("/application", named_app("application")),
    ("/app/admin/", named_app("admin")),
    ("/", named_app("root")),
]


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/app", "app '/app' ''"),
        ("/app/", "app '/app' '/'"),
        ("/app/x/y", "app '/app' '/x/y'"),
        ("/application", "application '/application' ''"),
        ("/application/x", "application '/application' '/x'"),
        ("/apps", "root '' '/apps'"),
        ("/app/admin", "admin '/app/admin' ''"),
        ("/app/admin/users", "admin '/app/admin' '/users'"),
        ("/app/administrator", "app '/app' '/administrator'"),
        ("/", "root '' '/'"),
        ("/other", "root '' '/other'"),
    ],
)
def test_longest_prefix_wins_and_moves_to_script_name(path, expected):
    status, _, body = call(MountDispatcher(MOUNTS, manage_script_name=True), path)
    assert status == "200 OK"
    assert body == expected


def test_order_of_mounts_does_not_matter():
    dispatcher = MountDispatcher(list(reversed(MOUNTS)), manage_script_name=True)
    assert call(dispatcher, "/app/admin/x")[2] == "admin '/app/admin' '/x'"
    assert call(dispatcher, "/application")[2] == "application '/application' ''"


def test_script_name_from_the_server_is_kept_in_front():
    dispatcher = MountDispatcher(MOUNTS, manage_script_name=True)
    assert call(dispatcher, "/app/x", script_name="/site")[2] == "app '/site/app' '/x'"


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/app/x", "app '' '/app/x'"),
        ("/application/x", "application '' '/application/x'"),
        ("/app/admin/y", "admin '' '/app/admin/y'"),
        ("/appx", "root '' '/appx'"),
    ],
)
def test_without_manage_script_name_routing_is_the_same_and_the_environ_untouched(path, expected):
    assert call(MountDispatcher(MOUNTS, manage_script_name=False), path)[2] == expected


def test_manage_script_name_is_the_default():
    assert call(MountDispatcher([("/app", named_app("app"))]), "/app/x")[2] == "app '/app' '/x'"


@pytest.mark.parametrize("path", ["/", "/ap", "/apple", "/application", ""])
def test_unmatched_path_without_a_root_app_is_404(path):
    dispatcher = MountDispatcher([("/app", named_app("app"))])
    status, headers, body = call(dispatcher, path)
    assert status.startswith("404 ")
    assert dict(headers)["Content-Length"] == str(len(body.encode()))


def test_empty_prefix_is_the_root_app_too():
    dispatcher = MountDispatcher([("", named_app("root")), ("/a", named_app("a"))])
    assert call(dispatcher, "/b")[2] == "root '' '/b'"
    assert call(dispatcher, "/a/b")[2] == "a '/a' '/b'"


# --- AddHeaders --------------------------------------------------------------------------------


def test_add_headers_appends_to_every_response():
    extra = [("X-Frame-Options", "DENY"), ("X-Served-By", "forklift")]
    app = AddHeaders(named_app("a"), extra)
    status, headers, body = call(app, "/x")
    assert status == "200 OK"
    assert headers == [("Content-Type", "text/plain"), *extra]
    assert body == "a '' '/x'"
    # A second request gets them once, not twice.
    assert call(app, "/y")[1] == [("Content-Type", "text/plain"), *extra]


def test_add_headers_does_not_change_the_apps_list():
    own = [("Content-Type", "text/plain")]

    def app(environ, start_response):
        start_response("200 OK", own)
        return [b""]

    call(AddHeaders(app, [("X-A", "1")]), "/")
    assert own == [("Content-Type", "text/plain")]


def test_add_headers_passes_write_and_exc_info_through():
    received = []
    written = []

    def server_start_response(status, headers, exc_info=None):
        received.append((status, headers, exc_info))
        return written.append

    def app(environ, start_response):
        start_response("200 OK", [])
        try:
            raise ValueError("x")
        except ValueError:
            write = start_response("500 Internal Server Error", [], sys.exc_info())
        write(b"direct")
        return []

    AddHeaders(app, [("X-A", "1")])({"PATH_INFO": "/"}, server_start_response)
    assert received[0][:2] == ("200 OK", [("X-A", "1")])
    assert received[1][:2] == ("500 Internal Server Error", [("X-A", "1")])
    assert received[1][2][0] is ValueError
    assert written == [b"direct"]
