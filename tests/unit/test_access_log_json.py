"""--access-log-format json: OpenTelemetry field names, one object per line, every value
escaped so no client text can break the line or forge a field."""

from __future__ import annotations

import json

import pytest

from forklift.log import AccessLog


def environ(**extra) -> dict:
    env = {
        "REQUEST_METHOD": "GET",
        "REQUEST_URI": "/a/b?x=1",
        "PATH_INFO": "/a/b",
        "QUERY_STRING": "x=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "192.0.2.7",
        "wsgi.url_scheme": "https",
        "HTTP_USER_AGENT": "curl/8",
        "forklift.request_id": "abc123",
    }
    env.update(extra)
    return env


def logged(tmp_path, env, status="200 OK", size=13, duration=0.0123) -> list:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), fmt="json")
    log.log(env, status, size, duration)
    text = path.read_text("ascii")  # ensure_ascii: the file is pure ASCII
    assert text.endswith("\n") and text.count("\n") == 1
    return json.loads(text)


def test_fields_are_named_after_opentelemetry(tmp_path):
    record = logged(tmp_path, environ(CONTENT_LENGTH="42", HTTP_REFERER="http://r/"))
    assert record["http.request.method"] == "GET"
    assert record["url.path"] == "/a/b"
    assert record["url.query"] == "x=1"
    assert record["url.scheme"] == "https"
    assert record["http.response.status_code"] == 200
    assert record["http.response.body.size"] == 13
    assert record["http.request.body.size"] == 42
    assert record["http.server.request.duration"] == 0.0123
    assert record["client.address"] == "192.0.2.7"
    assert record["network.protocol.name"] == "http"
    assert record["network.protocol.version"] == "1.1"
    assert record["user_agent.original"] == "curl/8"
    assert record["http.request.header.referer"] == "http://r/"
    assert record["http.request.id"] == "abc123"
    assert record["timestamp"].endswith("Z") and "T" in record["timestamp"]


@pytest.mark.parametrize(
    "hostile",
    [
        'a"b',
        "a\\b",
        "line\nbreak",
        "cr\rlf",
        "nul\x00",
        "esc\x1b[31mred",
        "del\x7f",
        "c1\x9b2J",  # a C1 CSI: some terminals act on it
        '", "http.response.status_code": 999, "x": "',
    ],
)
def test_every_value_is_escaped(tmp_path, hostile):
    # WSGI strings are bytes as latin-1: a client byte 0x9b arrives as "\x9b".
    env = environ(HTTP_USER_AGENT=hostile, REQUEST_URI="/p" + hostile, HTTP_REFERER=hostile)
    path = tmp_path / "access.log"
    AccessLog(str(path), fmt="json").log(env, "200 OK", 1, 0.001)
    raw = path.read_bytes()
    assert raw.count(b"\n") == 1 and raw.endswith(b"\n")
    assert all(0x20 <= byte < 0x7F for byte in raw[:-1])  # printable ASCII only
    record = json.loads(raw)
    assert record["http.response.status_code"] == 200
    assert record["user_agent.original"] == _as_text(hostile)
    assert record["http.request.header.referer"] == _as_text(hostile)


def _as_text(wsgi: str) -> str:
    return wsgi.encode("latin-1").decode("utf-8", "backslashreplace")


def test_utf8_paths_read_as_text_and_bad_bytes_as_escapes(tmp_path):
    utf8 = "/caf\u00e9".encode().decode("latin-1")  # how WSGI carries /café
    record = logged(tmp_path, environ(REQUEST_URI=utf8 + "?q", PATH_INFO=utf8))
    assert record["url.path"] == "/café"
    (tmp_path / "2").mkdir()
    record = logged(tmp_path / "2", environ(REQUEST_URI="/\xff\xfe"))
    assert record["url.path"] == "/\\xff\\xfe"


def test_unknown_format_is_refused():
    with pytest.raises(ValueError):
        AccessLog(None, fmt="xml")
