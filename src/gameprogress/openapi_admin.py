"""The OpenAPI description of the operator's routes: reports, exports, the dashboard pages.

Split from openapi.py only for size; `openapi.document()` merges these paths, schemas and
security schemes into the one document. Limits come from history.py, as the code checks them.
"""

from __future__ import annotations

from typing import Any

from .admin import SESSION_COOKIE
from .history import FUNNEL_DEFAULT_BUCKETS, FUNNEL_MAX_BUCKETS, REPORT_MAX_DAYS

JSON = "application/json"
HTML = "text/html"

SECURITY_SCHEMES = {
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The value of GAMEPROGRESS_ADMIN_TOKEN",
    },
    "adminSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": "Set by POST /dashboard/login",
    },
}
_ADMIN = [{"adminToken": []}, {"adminSession": []}]

_INT = {"type": "integer", "minimum": 0}
# Days from 1970 on: the stores count days and hours since the epoch.
_DATE = {
    "type": "string",
    "format": "date",
    "pattern": r"^(19[7-9][0-9]|[2-9][0-9]{3})-[0-9]{2}-[0-9]{2}$",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}


def _errors(unavailable: dict[str, Any]) -> dict[str, Any]:
    return {
        "400": _json(_ref("Error"), "Invalid query parameter"),
        "401": {
            **_json(_ref("Error"), "No admin token and no session (login_required)"),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        },
        "404": _json(_ref("Error"), "Admin routes are off: GAMEPROGRESS_ADMIN_TOKEN is not set"),
        "503": unavailable,
    }


def _range_params(max_days: int | None) -> list[dict[str, Any]]:
    span = f"; at most {max_days} days" if max_days else ""
    return [
        {
            "name": "from",
            "in": "query",
            "required": False,
            "description": f"First UTC day (default: 29 days before `to`), not after `to`{span}",
            "schema": _DATE,
        },
        {
            "name": "to",
            "in": "query",
            "required": False,
            "description": "Last UTC day, included (default: today)",
            "schema": _DATE,
        },
    ]


def schemas() -> dict[str, Any]:
    def series(key: str, label: str, label_schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["from", "to", key],
            "additionalProperties": False,
            "properties": {
                "from": {"type": "string", "format": "date"},
                "to": {"type": "string", "format": "date"},
                key: {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": [label, "count"],
                        "additionalProperties": False,
                        "properties": {label: label_schema, "count": _INT},
                    },
                },
            },
        }

    level = {"type": "integer", "minimum": 0}
    return {
        "Funnel": {
            "type": "object",
            "required": ["buckets", "bucket_width", "max_level", "devices", "steps"],
            "additionalProperties": False,
            "properties": {
                "buckets": {"type": "integer", "minimum": 1, "maximum": FUNNEL_MAX_BUCKETS},
                "bucket_width": {"type": "integer", "minimum": 1},
                "max_level": level,
                "devices": _INT,
                "steps": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": FUNNEL_MAX_BUCKETS,
                    "items": {
                        "type": "object",
                        "required": ["min_level", "max_level", "devices", "reached"],
                        "additionalProperties": False,
                        "properties": {
                            "min_level": level,
                            "max_level": level,
                            "devices": {**_INT, "description": "Highest level in this bucket"},
                            "reached": {**_INT, "description": "Highest level >= min_level"},
                        },
                    },
                },
            },
        },
        "DailySeries": series("days", "date", {"type": "string", "format": "date"}),
        "HourlySeries": series(
            "hours", "hour", {"type": "string", "pattern": r"^[0-9-]{10}T[0-9]{2}:00Z$"}
        ),
        "Event": {
            "type": "object",
            "required": ["id", "device_id", "level", "level_before", "level_after", "at"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "device_id": {"type": "string"},
                "level": {**level, "description": "The level sent"},
                "level_before": {
                    "type": ["integer", "null"],
                    "description": "Stored level before the update; null for a new device",
                },
                "level_after": {**level, "description": "Stored level after the update"},
                "at": {**_INT, "description": "Unix seconds"},
            },
        },
    }


def paths(unavailable: dict[str, Any]) -> dict[str, Any]:
    def report(operation_id: str, summary: str, schema: str, params: list) -> dict[str, Any]:
        return {
            "get": {
                "operationId": operation_id,
                "summary": summary,
                "tags": ["admin"],
                "security": _ADMIN,
                "parameters": params,
                "responses": {"200": _json(_ref(schema), summary), **_errors(unavailable)},
            }
        }

    result = {
        "/v1/reports/funnel": report(
            "reportFunnel",
            "Devices per highest level, in at most `buckets` equal buckets from level 0",
            "Funnel",
            [
                {
                    "name": "buckets",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": FUNNEL_MAX_BUCKETS,
                        "default": FUNNEL_DEFAULT_BUCKETS,
                    },
                }
            ],
        ),
        "/v1/reports/daily-active-devices": report(
            "reportDailyActiveDevices",
            "Devices with at least one update, per UTC day",
            "DailySeries",
            _range_params(REPORT_MAX_DAYS),
        ),
        "/v1/reports/new-devices": report(
            "reportNewDevices",
            "Devices whose first update fell on each UTC day",
            "DailySeries",
            _range_params(REPORT_MAX_DAYS),
        ),
        "/v1/reports/updates-per-hour": report(
            "reportUpdatesPerHour",
            "Accepted updates per UTC hour",
            "HourlySeries",
            _range_params(REPORT_MAX_DAYS),
        ),
    }
    record = _ref("DeviceRecord")
    for kind, item, what in (
        ("devices", record, "devices whose last update falls in the range"),
        ("events", _ref("Event"), "events (accepted updates) in the range"),
    ):
        for fmt in ("csv", "json"):
            content = (
                {"text/csv": {"schema": {"type": "string"}}}
                if fmt == "csv"
                else {JSON: {"schema": {"type": "array", "items": item}}}
            )
            result[f"/v1/exports/{kind}.{fmt}"] = {
                "get": {
                    "operationId": f"export{kind.title()}{fmt.upper()}",
                    "summary": f"Every one of the {what}, streamed as {fmt.upper()}",
                    "tags": ["admin"],
                    "security": _ADMIN,
                    "parameters": _range_params(None),
                    "responses": {
                        "200": {"description": "The export (streamed)", "content": content},
                        **_errors(unavailable),
                    },
                }
            }
    result.update(_dashboard_paths())
    return result


def _dashboard_paths() -> dict[str, Any]:
    not_found = _json(_ref("Error"), "Off: GAMEPROGRESS_ADMIN_TOKEN is not set")
    see_other = {
        "description": "Redirect",
        "headers": {"Location": {"schema": {"type": "string"}}},
    }
    return {
        "/dashboard": {
            "get": {
                "operationId": "dashboard",
                "summary": "The operator's dashboard (charts, leaderboard, exports)",
                "tags": ["admin"],
                "security": [{"adminSession": []}, {"adminToken": []}],
                "responses": {
                    "200": _html("The page"),
                    "303": {**see_other, "description": "Not logged in: to /dashboard/login"},
                    "404": not_found,
                },
            }
        },
        "/dashboard/login": {
            "get": {
                "operationId": "dashboardLoginForm",
                "summary": "The login form",
                "tags": ["admin"],
                "responses": {
                    "200": _html("The form"),
                    "303": {**see_other, "description": "Already logged in: to /dashboard"},
                    "404": not_found,
                },
            },
            "post": {
                "operationId": "dashboardLogin",
                "summary": "Check the admin token; on success set the session cookie",
                "tags": ["admin"],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["token"],
                                "properties": {"token": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": {
                    "303": {
                        **see_other,
                        "description": "Logged in (Set-Cookie: HttpOnly, SameSite=Strict, "
                        "Secure over HTTPS): to /dashboard",
                    },
                    "401": _html("Wrong token: the form again, with a message"),
                    "404": not_found,
                    "413": _json(_ref("Error"), "Body too large"),
                },
            },
        },
        "/dashboard/logout": {
            "post": {
                "operationId": "dashboardLogout",
                "summary": "Clear the session cookie",
                "tags": ["admin"],
                "responses": {
                    "303": {**see_other, "description": "To /dashboard/login"},
                    "404": not_found,
                },
            }
        },
        "/dashboard/static/{name}": {
            "get": {
                "operationId": "dashboardStatic",
                "summary": "The dashboard's script and style sheet",
                "tags": ["admin"],
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": ["dashboard.js", "dashboard.css", "favicon.svg"]},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                            "image/svg+xml": {"schema": {"type": "string"}},
                        },
                    },
                    "404": not_found,
                },
            }
        },
    }
