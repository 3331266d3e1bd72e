"""The operator's routes of the v1 API: reports over history, and exports. Admin only.

Off (404, as if absent) unless an admin token is configured; then a request needs the token
as `Authorization: Bearer ...` or a dashboard session cookie (see admin.py). Each report is
one store query; this module parses the date range and shapes the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import NotFound

from . import exports
from .admin import SESSION_COOKIE
from .history import (
    FUNNEL_DEFAULT_BUCKETS,
    FUNNEL_MAX_BUCKETS,
    DateRange,
    daily_series,
    day_of,
    funnel_steps,
    funnel_width,
    hourly_series,
)
from .model import InvalidInput

T = TypeVar("T")


class LoginRequired(Exception):
    """An admin route was asked for without the token or a valid session."""


def admin_allowed() -> bool:
    """True when this request carries the admin token or a valid session; 404 when off."""
    auth = current_app.extensions["gameprogress"].auth
    if auth is None:
        raise NotFound()
    return auth.bearer_matches(request.headers.get("Authorization")) or auth.session_valid(
        request.cookies.get(SESSION_COOKIE)
    )


def _require_admin() -> None:
    if not admin_allowed():
        raise LoginRequired()


def _period(max_days: int | None = 366) -> DateRange:
    service = current_app.extensions["gameprogress"]
    return DateRange.parse(
        request.args.get("from"), request.args.get("to"), day_of(service.now()), max_days
    )


def _int_query(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not low <= int(raw) <= high:
        raise InvalidInput(f"invalid_{name}", f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _no_store(response: Response) -> Response:
    # Operator data: never kept by a shared cache or the browser's disk cache.
    response.headers["Cache-Control"] = "no-store"
    return response


def register_reports(app: Flask) -> None:
    def store():
        return current_app.extensions["gameprogress"].store

    @app.get("/v1/reports/funnel")
    def report_funnel() -> Response:
        _require_admin()
        buckets = _int_query("buckets", FUNNEL_DEFAULT_BUCKETS, 1, FUNNEL_MAX_BUCKETS)
        max_level, rows = store().funnel(buckets)
        width = funnel_width(max_level, buckets)
        steps = funnel_steps(rows, width, max_level)
        body = {
            "buckets": buckets,
            "bucket_width": width,
            "max_level": max_level,
            "devices": steps[0]["reached"],
            "steps": steps,
        }
        return _no_store(jsonify(body))

    def daily(fetch: Callable[[DateRange], list]) -> Response:
        _require_admin()
        period = _period()
        return _no_store(jsonify({**period.to_json(), "days": daily_series(fetch(period), period)}))

    @app.get("/v1/reports/daily-active-devices")
    def report_daily_active() -> Response:
        return daily(store().daily_active_devices)

    @app.get("/v1/reports/new-devices")
    def report_new_devices() -> Response:
        return daily(store().new_devices_per_day)

    @app.get("/v1/reports/updates-per-hour")
    def report_updates_per_hour() -> Response:
        _require_admin()
        period = _period()
        series = hourly_series(store().updates_per_hour(period), period)
        return _no_store(jsonify({**period.to_json(), "hours": series}))

    def export(kind: str, fmt: str) -> Response:
        _require_admin()
        period = _period(max_days=None)
        if kind == "devices":
            source = _first_page_now(exports.device_pages(store(), period))
            chunks: Iterator[str] = (
                exports.devices_csv(source) if fmt == "csv" else exports.json_chunks(source)
            )
        else:
            source = _first_page_now(exports.event_pages(store(), period))
            chunks = exports.events_csv(source) if fmt == "csv" else exports.json_chunks(source)
        mimetype = "text/csv" if fmt == "csv" else "application/json"
        response = Response((text.encode("utf-8") for text in chunks), mimetype=mimetype)
        filename = f"gameprogress-{kind}-{period.first.isoformat()}-{period.last.isoformat()}"
        response.headers["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
        return _no_store(response)

    for kind in ("devices", "events"):
        for fmt in ("csv", "json"):
            app.add_url_rule(
                f"/v1/exports/{kind}.{fmt}",
                f"export_{kind}_{fmt}",
                lambda kind=kind, fmt=fmt: export(kind, fmt),
                methods=["GET"],
            )


def _first_page_now(source: Iterator[T]) -> Iterator[T]:
    """Fetch the first page before the answer starts: a database error then becomes a 503
    answer instead of a connection cut after a 200 head. Later pages stream as sent."""
    first = next(source, None)

    def rest() -> Iterator[T]:
        if first is not None:
            yield first
        yield from source

    return rest()
