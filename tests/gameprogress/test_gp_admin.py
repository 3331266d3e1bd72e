"""Who gets in: the dashboard, reports and exports are off without a token, and with one they
need the token or a session cookie that the login sets (HttpOnly, SameSite=Strict, Secure
over HTTPS); the pages carry a strict Content-Security-Policy and load nothing from elsewhere."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from gameprogress.admin import SESSION_COOKIE, SESSION_LIFETIME
from gameprogress.app import create_app

TOKEN = "admin-test-token-0123456789"
ADMIN_PATHS = [
    "/dashboard",
    "/dashboard/login",
    "/dashboard/static/dashboard.js",
    "/v1/reports/funnel",
    "/v1/reports/daily-active-devices",
    "/v1/reports/new-devices",
    "/v1/reports/updates-per-hour",
    "/v1/exports/devices.csv",
    "/v1/exports/events.json",
]
API_PATHS = [p for p in ADMIN_PATHS if p.startswith("/v1/")]


@pytest.fixture
def sqlite_app(tmp_path, clock):
    """An app on SQLite only: what is tested here does not depend on the store."""
    apps = []

    def make(**settings):
        app = create_app(
            {
                "GAMEPROGRESS_DATABASE_URL": f"sqlite:///{tmp_path}/gp.db",
                "GAMEPROGRESS_CLOCK": clock,
                "GAMEPROGRESS_WRITE_KEY": "",
                **settings,
            }
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["gameprogress"].close()


@pytest.fixture
def client(sqlite_app):
    return sqlite_app(GAMEPROGRESS_ADMIN_TOKEN=TOKEN).test_client()


def _login(client, token=TOKEN, **kwargs):
    return client.post("/dashboard/login", data={"token": token}, **kwargs)


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_without_a_token_configured_the_admin_routes_do_not_exist(sqlite_app, path):
    client = sqlite_app(GAMEPROGRESS_ADMIN_TOKEN="").test_client()
    assert client.get(path).status_code == 404
    assert client.get(path, headers={"Authorization": "Bearer "}).status_code == 404
    assert _login(client, "").status_code == 404


def test_a_short_token_stops_the_app_at_start(sqlite_app):
    with pytest.raises(ValueError, match="at least 16 characters"):
        sqlite_app(GAMEPROGRESS_ADMIN_TOKEN="short")


@pytest.mark.parametrize("path", API_PATHS)
def test_the_api_needs_the_token_or_a_session(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "login_required"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN, f"Basic {TOKEN}"):
        assert client.get(path, headers={"Authorization": wrong}).status_code == 401
    assert client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_dashboard_sends_strangers_to_the_login(client):
    response = client.get("/dashboard")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/dashboard/login")
    form = client.get("/dashboard/login")
    assert form.status_code == 200 and b'name="token"' in form.data


def test_a_wrong_token_gets_no_session(client):
    response = _login(client, "not-the-admin-token-at-all")
    assert response.status_code == 401
    assert b"not the admin token" in response.data
    assert "Set-Cookie" not in response.headers
    assert client.get("/v1/reports/funnel").status_code == 401


def test_login_sets_a_strict_http_only_session_cookie(client):
    response = _login(client)
    assert response.status_code == 303 and response.headers["Location"].endswith("/dashboard")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "SameSite=Strict" in cookie
    assert "secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    assert TOKEN not in cookie
    # The session lets in the page, the reports and the exports.
    assert client.get("/dashboard").status_code == 200
    assert client.get("/v1/reports/funnel").status_code == 200
    assert client.get("/v1/exports/events.csv").status_code == 200


def test_over_https_the_cookie_is_secure(client):
    response = _login(client, base_url="https://localhost")
    assert "Secure" in response.headers["Set-Cookie"].split("; ")


def test_a_session_ends_by_logout_by_time_and_by_a_new_token(sqlite_app, clock):
    app = sqlite_app(GAMEPROGRESS_ADMIN_TOKEN=TOKEN)
    client = app.test_client()
    _login(client)
    cookie = client.get_cookie(SESSION_COOKIE).value

    logged_out = client.post("/dashboard/logout")
    assert logged_out.status_code == 303
    assert client.get_cookie(SESSION_COOKIE) is None
    assert client.get("/v1/reports/funnel").status_code == 401

    # The old cookie value itself stays valid until it expires (it is signed, not stored).
    client.set_cookie(SESSION_COOKIE, cookie)
    assert client.get("/v1/reports/funnel").status_code == 200
    clock.advance(SESSION_LIFETIME + 1)
    assert client.get("/v1/reports/funnel").status_code == 401

    # Another token: sessions signed under the old one are worthless.
    _login(client)
    fresh = client.get_cookie(SESSION_COOKIE).value
    other = sqlite_app(GAMEPROGRESS_ADMIN_TOKEN=TOKEN + "-rotated").test_client()
    other.set_cookie(SESSION_COOKIE, fresh)
    assert other.get("/v1/reports/funnel").status_code == 401


@pytest.mark.parametrize(
    "forged",
    [
        "x",
        "A" * 22 + ".9999999999." + "0" * 64,
        "",
    ],
)
def test_forged_or_altered_cookies_are_refused(client, forged):
    client.set_cookie(SESSION_COOKIE, forged)
    assert client.get("/v1/reports/funnel").status_code == 401


def test_an_altered_expiry_is_refused(client):
    _login(client)
    nonce, expiry, mac = client.get_cookie(SESSION_COOKIE).value.split(".")
    client.set_cookie(SESSION_COOKIE, f"{nonce}.{int(expiry) + 10**6}.{mac}")
    assert client.get("/v1/reports/funnel").status_code == 401


def test_pages_carry_a_strict_content_security_policy(client):
    _login(client)
    for path in ("/dashboard", "/dashboard/login", "/dashboard/static/dashboard.js"):
        response = client.get(path)
        policy = response.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"  # no inline script, no eval
        assert directives["style-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_assets_are_self_contained():
    """No inline script or style the policy would block, nothing loaded from elsewhere."""
    folder = resources.files("gameprogress").joinpath("dashboard_assets")
    names = sorted(entry.name for entry in folder.iterdir())
    assert {"dashboard.html", "login.html", "dashboard.js", "dashboard.css"} <= set(names)
    for name in names:
        text = folder.joinpath(name).read_text("utf-8")
        urls = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE)
        assert not [u for u in urls if "www.w3.org" not in u], (name, urls)  # SVG namespace
        assert "@import" not in text and "@font-face" not in text, name
        if name.endswith(".html"):
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"inline script in {name}"
            assert not re.search(r"\sstyle=|\son[a-z]+=", text), f"inline style/handler: {name}"
            assert "<style" not in text, name
    script = folder.joinpath("dashboard.js").read_text("utf-8")
    assert ".innerHTML" not in script and "eval(" not in script
    assert 'setAttribute("style"' not in script
