"""The OpenAPI 3.1 description of every route, built from the same constants the code checks.

Limits (id length and alphabet, level range, query bounds) are read from model.py rather than
restated, so the document cannot promise what the validators refuse. A test compares the paths
here with Flask's URL map in both directions.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from . import __version__, openapi_admin
from .model import (
    DEVICE_ID_MAX_LENGTH,
    DEVICE_ID_PATTERN,
    HISTOGRAM_DEFAULT_BUCKET,
    LEADERBOARD_DEFAULT_LIMIT,
    LEADERBOARD_MAX_LIMIT,
    LEVEL_DIGITS_PATTERN,
    MAX_LEVEL,
    MIN_LEVEL,
)
from .signing import MAX_SKEW, SIGNATURE_HEADER, TIMESTAMP_HEADER

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _legacy(description: str) -> dict[str, Any]:
    return _json(_ref("LegacyAnswer"), description)


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}
}

_DEVICE_ID_PARAM = {
    "name": "device_id",
    "in": "path",
    "required": True,
    "description": f"1-{DEVICE_ID_MAX_LENGTH} printable ASCII characters without '/'",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": DEVICE_ID_MAX_LENGTH,
        "pattern": DEVICE_ID_PATTERN,
    },
}

_INT = {"type": "integer", "minimum": 0}
_LEVEL = {"type": "integer", "minimum": MIN_LEVEL, "maximum": MAX_LEVEL}


def _schemas() -> dict[str, Any]:
    record_props = {
        "device_id": _DEVICE_ID_PARAM["schema"],
        "level": {**_LEVEL, "description": "Highest level ever reported"},
        "last_commit": {**_INT, "description": "Unix seconds of the latest accepted update"},
        "level_reached_at": {**_INT, "description": "Unix seconds when `level` was first sent"},
        "updates": {**_INT, "description": "Number of accepted updates"},
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "additionalProperties": False,
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "LegacyAnswer": {
            "type": "object",
            "description": "The seed's answer shape: error 0 on success, 1 otherwise",
            "required": ["error", "msg"],
            "additionalProperties": False,
            "properties": {"error": {"enum": [0, 1]}, "msg": {"type": "string"}},
        },
        "DeviceRecord": {
            "type": "object",
            "required": list(record_props),
            "additionalProperties": False,
            "properties": record_props,
        },
        "LevelUpdate": {
            "type": "object",
            "required": ["level"],
            "additionalProperties": False,
            "properties": {"level": _LEVEL},
        },
        "Leaderboard": {
            "type": "object",
            "required": ["limit", "entries"],
            "additionalProperties": False,
            "properties": {
                "limit": {"type": "integer", "minimum": 1, "maximum": LEADERBOARD_MAX_LIMIT},
                "entries": {
                    "type": "array",
                    "maxItems": LEADERBOARD_MAX_LIMIT,
                    "items": {
                        "type": "object",
                        "required": ["rank", *record_props],
                        "additionalProperties": False,
                        "properties": {"rank": {"type": "integer", "minimum": 1}, **record_props},
                    },
                },
            },
        },
        "Stats": {
            "type": "object",
            "required": [
                "devices",
                "devices_updated_last_hour",
                "total_updates",
                "bucket_width",
                "histogram",
                "histogram_truncated",
            ],
            "additionalProperties": False,
            "properties": {
                "devices": _INT,
                "devices_updated_last_hour": _INT,
                "total_updates": _INT,
                "bucket_width": {"type": "integer", "minimum": 1},
                "histogram": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["min_level", "max_level", "devices"],
                        "additionalProperties": False,
                        "properties": {"min_level": _LEVEL, "max_level": _LEVEL, "devices": _INT},
                    },
                },
                "histogram_truncated": {"type": "boolean"},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "store"],
            "additionalProperties": False,
            "properties": {
                "status": {"enum": ["ok", "unavailable"]},
                "store": {"enum": ["sqlite", "postgresql"]},
                "schema_version": _INT,
                "error": _error_body_schema(),
            },
        },
    }


def _error_body_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    }


def _paths() -> dict[str, Any]:
    unavailable_legacy = {**_legacy("Database unavailable"), "headers": _RETRY_AFTER}
    unavailable = {**_error("Database unavailable"), "headers": _RETRY_AFTER}
    signed_headers = [
        {
            "name": TIMESTAMP_HEADER,
            "in": "header",
            "required": False,
            "description": "Unix seconds; required when the server has a write key",
            "schema": {"type": "string"},
        },
        {
            "name": SIGNATURE_HEADER,
            "in": "header",
            "required": False,
            "description": "Hex HMAC-SHA256; required when the server has a write key",
            "schema": {"type": "string"},
        },
    ]
    return {
        "/": {
            "get": {
                "operationId": "index",
                "summary": "Short liveness text (does not ask the database)",
                "responses": {
                    "200": {
                        "description": "Alive",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/deviceId={device_id}": {
            "get": {
                "operationId": "legacySearch",
                "summary": "Legacy: a device's highest level and last commit, as a message",
                "tags": ["legacy"],
                "parameters": [_DEVICE_ID_PARAM],
                "responses": {
                    "200": _legacy("Found (error 0) or not found (error 1)"),
                    "400": _legacy("Invalid device id"),
                    "503": unavailable_legacy,
                },
            }
        },
        "/update/{device_id}/{levels}": {
            "get": {
                "operationId": "legacyUpdate",
                "summary": "Legacy: report a level (the highest one is kept)",
                "tags": ["legacy"],
                "parameters": [
                    _DEVICE_ID_PARAM,
                    {
                        "name": "levels",
                        "in": "path",
                        "required": True,
                        "description": f"Decimal digits, {MIN_LEVEL}-{MAX_LEVEL}",
                        "schema": {"type": "string", "pattern": LEVEL_DIGITS_PATTERN},
                    },
                ],
                "responses": {
                    "200": _legacy("Stored (error 0)"),
                    "400": _legacy("Invalid device id or level"),
                    "403": _legacy("Legacy writes are switched off"),
                    "503": unavailable_legacy,
                },
            }
        },
        "/v1/devices/{device_id}": {
            "get": {
                "operationId": "getDevice",
                "summary": "One device's record",
                "parameters": [_DEVICE_ID_PARAM],
                "responses": {
                    "200": _json(_ref("DeviceRecord"), "The record"),
                    "400": _error("Invalid device id"),
                    "404": _error("The device never reported"),
                    "503": unavailable,
                },
            }
        },
        "/v1/devices/{device_id}/level": {
            "put": {
                "operationId": "putLevel",
                "summary": "Report a level; the stored level is the highest ever reported",
                "description": (
                    "When the server has a write key, sign the request: HMAC-SHA256 over "
                    "METHOD\\nPATH\\nTIMESTAMP\\nBODY, hex in "
                    f"{SIGNATURE_HEADER}, unix seconds in {TIMESTAMP_HEADER} "
                    f"(within {MAX_SKEW} s)."
                ),
                "parameters": [_DEVICE_ID_PARAM, *signed_headers],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("LevelUpdate")}},
                },
                "responses": {
                    "200": _json(_ref("DeviceRecord"), "The record after this update"),
                    "400": _error("Invalid device id, malformed JSON or invalid level"),
                    "401": _error("Missing, stale or wrong signature"),
                    "413": _error("Body too large"),
                    "415": _error("Content-Type is not application/json"),
                    "503": unavailable,
                },
            }
        },
        "/v1/leaderboard": {
            "get": {
                "operationId": "leaderboard",
                "summary": "Best devices: highest level, then who reached it first",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": LEADERBOARD_MAX_LIMIT,
                            "default": LEADERBOARD_DEFAULT_LIMIT,
                        },
                    }
                ],
                "responses": {
                    "200": _json(_ref("Leaderboard"), "The leaderboard"),
                    "400": _error("Invalid limit"),
                    "503": unavailable,
                },
            }
        },
        "/v1/stats": {
            "get": {
                "operationId": "stats",
                "summary": "Device count, devices updated in the last hour, level histogram",
                "parameters": [
                    {
                        "name": "bucket_width",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LEVEL + 1,
                            "default": HISTOGRAM_DEFAULT_BUCKET,
                        },
                    }
                ],
                "responses": {
                    "200": _json(_ref("Stats"), "The statistics"),
                    "400": _error("Invalid bucket width"),
                    "503": unavailable,
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Readiness: answers 200 only if a database round trip works",
                "responses": {
                    "200": _json(_ref("Health"), "Database reachable"),
                    "503": {
                        **_json(_ref("Health"), "Database unreachable"),
                        "headers": _RETRY_AFTER,
                    },
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
            }
        },
    }


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The OpenAPI document (built once; it depends only on code)."""
    unavailable = {**_error("Database unavailable"), "headers": _RETRY_AFTER}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gameprogress",
            "version": __version__,
            "description": "Per-device game progress: highest level and last commit time.",
        },
        "paths": {**_paths(), **openapi_admin.paths(unavailable)},
        "components": {
            "schemas": {**_schemas(), **openapi_admin.schemas()},
            "securitySchemes": openapi_admin.SECURITY_SCHEMES,
        },
    }
