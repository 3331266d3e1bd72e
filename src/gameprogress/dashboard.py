"""The operator's pages: `/dashboard` (charts of the reports, the leaderboard), its login.

Everything the page needs is shipped in the package (`dashboard_assets/`: HTML, CSS, the
script that fetches the reports and draws SVG charts), so it works on a closed network and
loads nothing from elsewhere; the Content-Security-Policy says so to the browser, and forbids
inline scripts and styles, so injected markup could not run even if some got in.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources

from flask import Flask, Response, current_app, redirect, request
from werkzeug.exceptions import NotFound

from .admin import SESSION_COOKIE, SESSION_LIFETIME
from .reports_api import admin_allowed

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
_STATIC = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",
}


@cache
def _asset(name: str) -> str:
    return resources.files("gameprogress").joinpath("dashboard_assets", name).read_text("utf-8")


def _page(name: str, status: int = 200, message: str = "") -> Response:
    text = _asset(name).replace("{message}", html.escape(message))
    response = Response(text, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return _secure_headers(response)


def _secure_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"  # for browsers without frame-ancestors
    return response


def _see_other(location: str) -> Response:
    return _secure_headers(redirect(location, code=303))


def register_dashboard(app: Flask) -> None:
    # The headers are set by each view rather than by an after_request hook, which would run
    # on every game client's request too.

    @app.get("/dashboard")
    def dashboard() -> Response:
        if not admin_allowed():
            return _see_other("/dashboard/login")
        return _page("dashboard.html")

    @app.get("/dashboard/login")
    def login_form() -> Response:
        if admin_allowed():
            return _see_other("/dashboard")
        return _page("login.html")

    @app.post("/dashboard/login")
    def login() -> Response:
        auth = current_app.extensions["gameprogress"].auth
        if auth is None:
            raise NotFound()
        token = request.form.get("token", "")
        if not auth.token_matches(token):
            return _page("login.html", 401, "That is not the admin token.")
        response = _see_other("/dashboard")
        response.set_cookie(
            SESSION_COOKIE,
            auth.new_session(),
            max_age=SESSION_LIFETIME,
            path="/",
            httponly=True,  # scripts never see it
            samesite="Strict",  # never sent by a request another site starts
            secure=request.is_secure,  # HTTPS (also behind a trusted proxy saying so)
        )
        return response

    @app.post("/dashboard/logout")
    def logout() -> Response:
        if current_app.extensions["gameprogress"].auth is None:
            raise NotFound()
        response = _see_other("/dashboard/login")
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=request.is_secure
        )
        return response

    @app.get("/dashboard/static/<name>")
    def dashboard_static(name: str) -> Response:
        if current_app.extensions["gameprogress"].auth is None or name not in _STATIC:
            raise NotFound()
        response = Response(_asset(name), mimetype=_STATIC[name])
        response.headers["Cache-Control"] = "no-cache"  # revalidate: a deploy changes them
        return _secure_headers(response)
