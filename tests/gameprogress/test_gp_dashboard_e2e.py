"""The dashboard in a real browser: Debian's headless Chromium against forklift serving the app.

A store is seeded with synthetic players over 30 days, the service runs under forklift with an
admin token, and Chromium (driven over the DevTools protocol, see gp_chromium.py) logs in, waits
for the four charts and the leaderboard, checks that what each chart drew adds up to what the
API answers for the same range, changes the date range and checks that the charts follow, and
looks at the page at phone width. No console error, exception or CSP violation may appear.
Screenshots are kept in tests/artifacts/gameprogress/ (the path is printed).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
import requests
from gp_chromium import Chromium
from test_through_server import Server

from gameprogress.seed import DemoPlan, seed_demo
from gameprogress.store import open_store

pytestmark = pytest.mark.requires("chromium")

TOKEN = "e2e-admin-token-0123456789"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "gameprogress"
CHARTS = {
    "chart-funnel": "/v1/reports/funnel?buckets=20",
    "chart-daily-active": "/v1/reports/daily-active-devices",
    "chart-updates": "/v1/reports/updates-per-hour",
    "chart-new-devices": "/v1/reports/new-devices",
}


@pytest.fixture
def seeded_server(tmp_path):
    url = f"sqlite:///{tmp_path}/gameprogress.db"
    store = open_store(url)
    try:
        store.migrate()
        seed_demo(store, DemoPlan(players=150, days=30, seed=7), int(time.time()))
    finally:
        store.close()
    server = Server(url, tmp_path / "forklift.log", {"GAMEPROGRESS_ADMIN_TOKEN": TOKEN})
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser():
    chromium = Chromium()
    try:
        yield chromium
    finally:
        chromium.close()


def _api_totals(base: str, first: str, last: str) -> dict[str, int]:
    """What each chart should add up to, asked of the API directly with the token."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    totals = {}
    for chart, path in CHARTS.items():
        sep = "&" if "?" in path else "?"
        body = requests.get(f"{base}{path}{sep}from={first}&to={last}", headers=headers, timeout=10)
        body.raise_for_status()
        data = body.json()
        if "steps" in data:
            totals[chart] = sum(step["reached"] for step in data["steps"])
        else:
            totals[chart] = sum(point["count"] for point in data.get("days", data.get("hours", [])))
    return totals


def _drawn(browser) -> dict[str, dict]:
    return browser.evaluate(
        """Object.fromEntries([...document.querySelectorAll('svg.chart')].map(svg => [svg.id, {
            points: Number(svg.dataset.points), total: Number(svg.dataset.total),
            range: svg.dataset.range, marks: svg.querySelectorAll('rect.bar, path.line').length,
            width: svg.getBoundingClientRect().width }]))"""
    )


def test_log_in_see_four_charts_change_the_range(seeded_server, browser):
    base = seeded_server.base
    browser.navigate(f"{base}/dashboard")
    browser.wait_for(
        "location.pathname === '/dashboard/login' && document.readyState === 'complete'",
        what="the login form",
    )
    browser.evaluate(
        f"document.getElementById('token').value = {json.dumps(TOKEN)};"
        "document.getElementById('login').click(); true"
    )
    browser.wait_for(
        "location.pathname === '/dashboard' && Number(document.body.dataset.loaded) >= 1",
        what="the dashboard's first load",
    )
    # The session cookie exists but scripts cannot read it (HttpOnly).
    assert "gameprogress_session" not in browser.evaluate("document.cookie")

    first, last = browser.evaluate(
        "[document.getElementById('from').value, document.getElementById('to').value]"
    )
    drawn = _drawn(browser)
    expected = _api_totals(base, first, last)
    assert set(drawn) == set(CHARTS)
    for chart, seen in drawn.items():
        assert seen["range"] == f"{first}..{last}", chart
        assert seen["points"] > 0 and seen["marks"] > 0, (chart, seen)
        assert seen["total"] == expected[chart] > 0, (chart, seen, expected[chart])
    rows = browser.evaluate("document.querySelectorAll('#leaderboard tbody tr').length")
    assert rows == 10
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.screenshot(ARTIFACTS / "dashboard-desktop.png")

    # Three days, three weeks ago: fewer points, other totals, same agreement with the API.
    today = dt.date.fromisoformat(last)
    new_first = (today - dt.timedelta(days=23)).isoformat()
    new_last = (today - dt.timedelta(days=21)).isoformat()
    browser.evaluate(
        f"document.getElementById('from').value = '{new_first}';"
        f"document.getElementById('to').value = '{new_last}';"
        "document.getElementById('to').dispatchEvent(new Event('change')); true"
    )
    browser.wait_for(
        "[...document.querySelectorAll('svg.chart')].every(s => s.dataset.range === "
        f"'{new_first}..{new_last}')",
        what="the charts to redraw for the new range",
    )
    redrawn = _drawn(browser)
    expected_then = _api_totals(base, new_first, new_last)
    assert redrawn["chart-daily-active"]["points"] == 3
    assert redrawn["chart-new-devices"]["points"] == 3
    assert redrawn["chart-updates"]["points"] == 72
    for chart in ("chart-daily-active", "chart-updates", "chart-new-devices"):
        assert redrawn[chart]["total"] == expected_then[chart], chart
        assert redrawn[chart]["total"] != drawn[chart]["total"], chart
    browser.screenshot(ARTIFACTS / "dashboard-range-changed.png")

    # Auto-refresh: with a one-second period (an option added for the test; the page offers
    # 30 s and up), a new update shows up in the charts without any click.
    loads = browser.evaluate("Number(document.body.dataset.loaded)")
    requests.get(f"{base}/update/newcomer-from-the-test/1", timeout=10).raise_for_status()
    browser.evaluate(
        f"document.getElementById('from').value = '{first}';"
        f"document.getElementById('to').value = '{last}';"
        "(() => { const s = document.getElementById('refresh'); s.add(new Option('1 s', '1'));"
        "s.value = '1'; s.dispatchEvent(new Event('change')); })(); true"
    )
    browser.wait_for(
        f"Number(document.body.dataset.loaded) >= {loads + 2}", what="two automatic refreshes"
    )
    refreshed = _drawn(browser)
    assert refreshed["chart-updates"]["total"] == drawn["chart-updates"]["total"] + 1
    assert refreshed["chart-new-devices"]["total"] == drawn["chart-new-devices"]["total"] + 1
    browser.evaluate(
        "(() => { const r = document.getElementById('refresh'); r.value = '0';"
        "r.dispatchEvent(new Event('change')); })(); true"
    )

    # Phone width: charts shrink to the screen, nothing scrolls sideways.
    browser.set_viewport(390, 844, mobile=True)
    browser.wait_for(
        "[...document.querySelectorAll('svg.chart')].every(s => "
        "s.viewBox.baseVal.width <= 390 && s.getBoundingClientRect().width <= 390)",
        what="the charts to redraw at phone width",
    )
    assert browser.evaluate("document.documentElement.scrollWidth") <= 390
    browser.screenshot(ARTIFACTS / "dashboard-phone.png")

    assert browser.errors() == []

    # The policy is enforced by the browser (an injected inline script does not run), and a
    # violation would have been caught above: the check of no errors is not vacuous.
    browser.evaluate(
        "(() => { const tag = document.createElement('script');"
        "tag.textContent = 'window.injected = 1'; document.body.appendChild(tag); })(); true"
    )
    assert browser.evaluate("typeof window.injected") == "undefined"
    browser.wait_for_error("Content Security Policy")
    print(f"\nscreenshots: {ARTIFACTS}")
