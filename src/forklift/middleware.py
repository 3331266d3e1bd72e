"""Small WSGI wrappers for uWSGI features that act around the app: several apps mounted
under URL prefixes (`mount` + `manage-script-name`) and headers added to every answer
(`add-header`). Static files live in `static.py`."""

from __future__ import annotations


class MountDispatcher:
    """Route each request to the app mounted at the longest matching prefix.

    With `manage_script_name` (uWSGI's name), the prefix moves from PATH_INFO to
    SCRIPT_NAME, as PEP 3333 wants for an app that does not live at the root. Without it,
    uWSGI matches on SCRIPT_NAME sent by the proxy; we match on the path and leave the
    environ alone, which is what such setups end up seeing.
    """

    def __init__(self, mounts, manage_script_name: bool = True):
        # [(prefix, app)]; "/" or "" is the fallback app
        self.mounts = sorted(
            ((p.rstrip("/"), app) for p, app in mounts), key=lambda m: len(m[0]), reverse=True
        )
        self.manage_script_name = manage_script_name

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        for prefix, app in self.mounts:
            if not prefix or path == prefix or path.startswith(prefix + "/"):
                if prefix and self.manage_script_name:
                    environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                    environ["PATH_INFO"] = path[len(prefix) :]
                return app(environ, start_response)
        body = b"no application is mounted at this path\n"
        start_response(
            "404 Not Found",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        return [body]


class AddHeaders:
    """Append fixed headers to every response (uWSGI's `add-header`)."""

    def __init__(self, app, headers):
        self.app = app
        self.headers = list(headers)

    def __call__(self, environ, start_response):
        extra = self.headers

        def add(status, headers, exc_info=None):
            return start_response(status, list(headers) + extra, exc_info)

        return self.app(environ, add)


class WithoutFileWrapper:
    """uWSGI's `wsgi-disable-file-wrapper`: the app finds no `wsgi.file_wrapper` in the
    environ (PEP 3333 makes it optional), for apps whose file objects a wrapper mishandles."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        environ.pop("wsgi.file_wrapper", None)
        return self.app(environ, start_response)
