"""The HTTP face of the service: validates what comes in, shapes what goes out.

Two families of routes share one store:
- legacy routes, answer-compatible with the seed's `manager.py` that shipped game clients call
  (`{"error": 0|1, "msg": ...}`, HTTP 200 for what the seed answered);
- the JSON API v1, whose errors are `{"error": {"code": ..., "message": ...}}` and which is
  described by `/openapi.json`.
The operator's routes (reports, exports: reports_api.py; the dashboard: dashboard.py) are
registered here too and share the error handlers below.
SQL never appears here; `Store` methods do the work (see store.py).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from . import openapi, signing
from .admin import AdminAuth
from .dashboard import register_dashboard
from .model import (
    HISTOGRAM_DEFAULT_BUCKET,
    HISTOGRAM_MAX_BUCKETS,
    LEADERBOARD_DEFAULT_LIMIT,
    LEADERBOARD_MAX_LIMIT,
    MAX_LEVEL,
    InvalidInput,
    check_device_id,
    check_level,
)
from .reports_api import LoginRequired, register_reports
from .retention import Pruner
from .settings import Settings
from .store import Store, StoreUnavailable, open_store

log = logging.getLogger("gameprogress")

# A body is `{"level": 1000000}` at most; 4 KiB leaves room for whitespace and nothing else.
MAX_BODY_BYTES = 4096
# Used with fullmatch only (a `$` would also accept a trailing newline).
_DIGITS_RE = re.compile(r"[0-9]+")
_NEGATIVE_RE = re.compile(r"-[0-9]+")
_LEGACY_PREFIXES = ("/deviceId=", "/update/")

# The seed's texts, kept byte for byte: shipped clients may compare them.
LEGACY_UPDATED = "设置成功"
LEGACY_UPDATE_FAILED = "更新失败"
LEGACY_UNAVAILABLE = "查询失败: 数据库暂时不可用, 请稍后重试 (database unavailable, retry later)"


class _Service:
    """What the routes need, stored in `app.extensions` rather than in module globals."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        token = settings.admin_token
        self.auth = AdminAuth(token, settings.clock) if token else None
        self.pruner = Pruner(store, settings.retention_days, settings.clock)

    def now(self) -> int:
        return int(self.settings.clock())

    def close(self) -> None:
        """Stop this process's pruning thread and release the store's connections."""
        self.pruner.stop()
        self.store.close()


def _service() -> _Service:
    return current_app.extensions["gameprogress"]


def create_app(config: Mapping[str, object] | None = None) -> Flask:
    """Build the app; `config` overrides environment settings (see settings.py).

    The schema is migrated here so that a fresh database works on the first request. If the
    database is unreachable now, the app still starts: requests answer 503 until it is back,
    and the first one to reach it applies the migrations.
    """
    settings = Settings.load(config)
    store = settings.store or open_store(settings.database_url)
    try:
        applied = store.migrate()
        if applied:
            log.info("applied schema migrations %s", applied)
    except StoreUnavailable as exc:
        log.warning("database unavailable at start, will retry on demand: %s", exc)

    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # Flask's default, spelled out: the seed's Flask (2.x, JSON_AS_ASCII=True) escaped
    # non-ASCII as \uXXXX with sorted keys and compact separators; keeping it makes legacy
    # answers byte-identical, and every JSON client decodes it to the same text.
    app.json.ensure_ascii = True  # type: ignore[attr-defined]
    app.json.sort_keys = True  # type: ignore[attr-defined]
    app.extensions["gameprogress"] = _Service(store, settings)

    _register_legacy_routes(app)
    _register_v1_routes(app)
    register_reports(app)
    register_dashboard(app)
    _register_error_handlers(app)
    return app


# ---------------------------------------------------------------- legacy routes


def _legacy_answer(error: int, msg: str, status: int = 200, headers=None) -> Response:
    response = jsonify({"error": error, "msg": msg})
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def _legacy_invalid(exc: InvalidInput) -> Response:
    return _legacy_answer(1, f"参数错误 (invalid input): {exc.message}", 400)


def _parse_legacy_level(text: str) -> int:
    """The seed's `<int:levels>` took ASCII digits; we also say what is wrong with the rest."""
    out_of_range = InvalidInput("invalid_level", f"level must be an integer from 0 to {MAX_LEVEL}")
    if _DIGITS_RE.fullmatch(text):
        # Length first: int() of thousands of digits is slow, and CPython refuses past 4300.
        # Leading zeros were fine for the seed's int converter, so they are fine here.
        significant = text.lstrip("0") or "0"
        if len(significant) > len(str(MAX_LEVEL)):
            raise out_of_range
        return check_level(int(significant))
    if _NEGATIVE_RE.fullmatch(text):
        raise out_of_range
    raise InvalidInput("invalid_level", "level must be an integer")


def _register_legacy_routes(app: Flask) -> None:
    @app.get("/")
    def index() -> Response:
        """A short liveness text; /healthz is the check that asks the database."""
        return Response("gameprogress: ok\n", mimetype="text/plain")

    @app.get("/deviceId=<device_id>")
    def legacy_search(device_id: str) -> Response:
        try:
            check_device_id(device_id)
        except InvalidInput as exc:
            return _legacy_invalid(exc)
        try:
            record = _service().store.get(device_id)
        except StoreUnavailable as exc:
            return _legacy_answer(1, LEGACY_UNAVAILABLE, 503, {"Retry-After": str(exc.retry_after)})
        # The seed's format strings, in the seed's order.
        if record is None:
            return _legacy_answer(1, "未查找到了deviceId为%s的用户" % device_id)
        msg = "查找到了deviceId为%s的用户" % device_id
        msg += ", 最高到达%d关卡" % record.level
        msg += ", 最后提交的时间为 %d" % record.last_commit
        return _legacy_answer(0, msg)

    @app.get("/update/<device_id>/<levels>")
    def legacy_update(device_id: str, levels: str) -> Response:
        service = _service()
        if not service.settings.legacy_writes:
            return _legacy_answer(
                1,
                f"{LEGACY_UPDATE_FAILED}: 旧接口已关闭写入 (legacy writes are disabled; "
                "use PUT /v1/devices/{id}/level)",
                403,
            )
        try:
            check_device_id(device_id)
            level = _parse_legacy_level(levels)
        except InvalidInput as exc:
            return _legacy_invalid(exc)
        service.pruner.ensure_running()
        try:
            service.store.record_level(device_id, level, service.now())
        except StoreUnavailable as exc:
            # The seed's failure text, so clients show what they always showed on failure.
            return _legacy_answer(
                1, LEGACY_UPDATE_FAILED, 503, {"Retry-After": str(exc.retry_after)}
            )
        return _legacy_answer(0, LEGACY_UPDATED)


# ---------------------------------------------------------------- v1


def _api_error(status: int, code: str, message: str, headers=None) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _DIGITS_RE.fullmatch(raw) or len(raw) > 9 or not low <= int(raw) <= high:
        raise InvalidInput(f"invalid_{name}", f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _read_level_body() -> int:
    """Parse `{"level": n}` strictly: right media type, valid JSON, exactly one known field."""
    if request.mimetype != "application/json":
        raise _MediaTypeError()
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise InvalidInput("malformed_json", f"request body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        raise InvalidInput("invalid_body", 'request body must be a JSON object: {"level": n}')
    if set(body) != {"level"}:
        raise InvalidInput(
            "invalid_body", 'request body must have exactly one field, "level": {"level": n}'
        )
    return check_level(body["level"])


def _refuse_constant(name: str) -> object:
    # Python's json accepts NaN and Infinity; RFC 8259 JSON has no such values.
    raise ValueError(f"{name} is not JSON")


class _MediaTypeError(Exception):
    """The body is not declared as JSON."""


def _check_signature(service: _Service) -> None:
    key = service.settings.write_key
    if key is None:
        return
    signing.verify(
        key,
        request.method,
        request.path,
        request.headers.get(signing.TIMESTAMP_HEADER),
        request.headers.get(signing.SIGNATURE_HEADER),
        request.get_data(cache=True),
        service.settings.clock(),
    )


def _register_v1_routes(app: Flask) -> None:
    @app.get("/v1/devices/<device_id>")
    def get_device(device_id: str) -> Response:
        check_device_id(device_id)
        record = _service().store.get(device_id)
        if record is None:
            return _api_error(404, "device_not_found", f"no device {device_id!r} has reported")
        return jsonify(record.to_json())

    @app.put("/v1/devices/<device_id>/level")
    def put_level(device_id: str) -> Response:
        service = _service()
        # Authenticate before looking at the content: an unsigned request learns nothing else.
        _check_signature(service)
        check_device_id(device_id)
        level = _read_level_body()
        service.pruner.ensure_running()
        record = service.store.record_level(device_id, level, service.now())
        return jsonify(record.to_json())

    @app.get("/v1/leaderboard")
    def leaderboard() -> Response:
        limit = _int_arg("limit", LEADERBOARD_DEFAULT_LIMIT, 1, LEADERBOARD_MAX_LIMIT)
        records = _service().store.leaderboard(limit)
        entries = [{"rank": i, **r.to_json()} for i, r in enumerate(records, start=1)]
        return jsonify({"limit": limit, "entries": entries})

    @app.get("/v1/stats")
    def stats() -> Response:
        width = _int_arg("bucket_width", HISTOGRAM_DEFAULT_BUCKET, 1, MAX_LEVEL + 1)
        service = _service()
        result = service.store.stats(service.now(), width, HISTOGRAM_MAX_BUCKETS)
        return jsonify(result.to_json())

    @app.get("/healthz")
    def healthz() -> Response:
        store = _service().store
        try:
            version = store.health()
        except StoreUnavailable as exc:
            response = jsonify(
                {
                    "status": "unavailable",
                    "store": store.kind,
                    "error": {"code": "database_unavailable", "message": str(exc)},
                }
            )
            response.status_code = 503
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        return jsonify({"status": "ok", "store": store.kind, "schema_version": version})

    @app.get("/openapi.json")
    def openapi_document() -> Response:
        return jsonify(openapi.document())


# ---------------------------------------------------------------- errors


def _is_legacy_path() -> bool:
    return request.path.startswith(_LEGACY_PREFIXES)


def _register_error_handlers(app: Flask) -> None:
    """Every error leaves as JSON: legacy shape under legacy paths, v1 shape elsewhere."""

    @app.errorhandler(InvalidInput)
    def invalid_input(exc: InvalidInput) -> Response:
        if _is_legacy_path():
            return _legacy_invalid(exc)
        return _api_error(400, exc.code, exc.message)

    @app.errorhandler(_MediaTypeError)
    def wrong_media_type(exc: _MediaTypeError) -> Response:
        declared = request.content_type or "none"
        return _api_error(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, not {declared}",
        )

    @app.errorhandler(signing.SignatureError)
    def bad_signature(exc: signing.SignatureError) -> Response:
        return _api_error(401, exc.code, exc.message)

    @app.errorhandler(LoginRequired)
    def login_required(exc: LoginRequired) -> Response:
        return _api_error(
            401,
            "login_required",
            "send the admin token as 'Authorization: Bearer <token>', or log in at /dashboard",
            {"WWW-Authenticate": 'Bearer realm="gameprogress"'},
        )

    @app.errorhandler(StoreUnavailable)
    def unavailable(exc: StoreUnavailable) -> Response:
        # Debug only: during an outage this runs for every request; the stores log the
        # moments the database goes away and comes back.
        log.debug("store unavailable: %s", exc)
        headers = {"Retry-After": str(exc.retry_after)}
        if _is_legacy_path():
            return _legacy_answer(1, LEGACY_UNAVAILABLE, 503, headers)
        return _api_error(503, "database_unavailable", str(exc), headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # Also reached for unhandled exceptions, which Flask wraps in InternalServerError.
        status = exc.code or 500
        headers = {}
        allow = exc.get_response().headers.get("Allow")
        if allow:
            headers["Allow"] = allow
        message = _HTTP_MESSAGES.get(status, exc.description or exc.name)
        if status == 405:
            message = f"{request.method} is not allowed here; allowed: {allow}"
        if _is_legacy_path():
            return _legacy_answer(1, message, status, headers)
        code = re.sub(r"[^a-z0-9]+", "_", exc.name.lower()).strip("_")
        return _api_error(status, code, message, headers)


_HTTP_MESSAGES = {
    404: "no such route: see /openapi.json for the API (device ids cannot contain '/')",
    413: f"request body is larger than {MAX_BODY_BYTES} bytes",
    500: "internal error; it has been logged",
}
