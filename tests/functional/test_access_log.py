"""The access log: combined format on stdout by default, off with --disable-logging, to a file
with --access-log FILE."""

from __future__ import annotations

import re

import pytest

from support import wait_until
from support.wire import request

# %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i", then forklift's request time (µs)
COMBINED = re.compile(
    r"^(?P<host>\S+) - - \[(?P<time>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>[^"]*)" '
    r'"(?P<agent>[^"]*)"(?: (?P<micros>\d+))?$'
)


def _lines(text: str, needle: str) -> list:
    return [line for line in text.splitlines() if needle in line]


def test_combined_format_on_stdout(servers, threads):
    server = servers.get("echo:app", "--threads", str(threads))
    marker = f"/logged-{threads}"
    resp = server.exchange(
        request(
            "GET",
            f"{marker}?a=1",
            [("Referer", "http://ref.example/page"), ("User-Agent", "functional-test/1.0")],
        )
    )
    lines = wait_until(lambda: _lines(server.stdout(), marker), 5, what="the access log line")
    assert len(lines) == 1, server.stdout()
    m = COMBINED.match(lines[0])
    assert m, lines[0]
    assert m["host"] == "127.0.0.1"
    assert m["request"] == f"GET {marker}?a=1 HTTP/1.1"
    assert m["status"] == "200"
    assert m["size"] == str(len(resp.body))
    assert m["referer"] == "http://ref.example/page"
    assert m["agent"] == "functional-test/1.0"
    assert "listening on" not in server.stdout()  # the error log stays on stderr


def test_errors_and_missing_headers_are_logged(servers):
    server = servers.get("failing:app", "--threads", "2")
    server.exchange(request("GET", "/before"))
    lines = wait_until(lambda: _lines(server.stdout(), "/before"), 5, what="the access log line")
    m = COMBINED.match(lines[0])
    assert m and m["status"] == "500"
    assert m["referer"] == "-" and m["agent"] == "-"


@pytest.mark.parametrize("where", ["user-agent", "referer", "target"])
def test_a_quote_from_the_client_cannot_forge_fields(servers, where):
    # nginx writes " as \x22, Apache as \": either way a log parser sees the real fields.
    server = servers.get("echo:app", "--threads", "2")
    forged = 'evil" 200 999 "x'
    tag = f"/quote-{where}"
    if where == "target":
        data = request("GET", f"{tag}?{forged.replace(' ', '+')}")
    else:
        data = request("GET", tag, [(where, forged)])
    server.exchange(data)
    lines = wait_until(lambda: _lines(server.stdout(), tag), 5, what="the access log line")
    assert len(lines) == 1
    m = COMBINED.match(lines[0])  # no field of COMBINED may hold a bare quote
    assert m is not None, f"the client's quote split a field: {lines[0]}"
    assert m["status"] == "200"


def test_disable_logging(servers, threads):
    server = servers.get("echo:app", "--threads", str(threads), "--disable-logging")
    for i in range(3):
        assert server.exchange(request("GET", f"/silent{i}")).status == 200
    assert server.exchange(request("GET", "/x", [("Connection", "close")])).status == 200
    assert server.stdout() == ""


def test_access_log_file(servers, tmp_path):
    path = tmp_path / "access.log"
    server = servers.get("echo:app", "--threads", "2", "--access-log", str(path))
    server.exchange(request("GET", "/to-file"))
    lines = wait_until(
        lambda: path.exists() and _lines(path.read_text(), "/to-file"),
        5,
        what="the access log line",
    )
    assert lines and COMBINED.match(lines[0]), lines
    assert server.stdout() == ""
