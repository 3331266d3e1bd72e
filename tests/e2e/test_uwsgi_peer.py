"""Hostile and broken uwsgi peers against a real `forklift --socket` (issue 11).

Packets are built by hand here (nginx_support.uwsgi_packet), not with forklift's own codec.
Every malformed packet must close the connection without an answer (413 for a body over
--limit-post), leave one log line, and leave the worker serving: the next request on a new
connection is answered by the same worker process. `UWSGI_*` vars must select no code and
no environment. A second packet behind the body is never answered. Only the allowed TCP
peers may speak uwsgi. Peers trickling their packet are cut off at the head timeout while
others are served.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from nginx_support import (
    SEED_APP,
    Forklift,
    connect,
    json_body,
    make_dir,
    parse_response,
    read_until_close,
    request_vars,
    uwsgi_exchange,
    uwsgi_packet,
    wait_until,
)

HEAD_TIMEOUT = 3
LIMIT_POST = 1_000_000
BAD = "bad uwsgi packet"


def start_peer_server(*options: str, listeners: int = 2) -> tuple:
    directory = make_dir("fl-peer-")
    shutil.copy(SEED_APP / "probe.py", directory / "probe.py")
    shutil.copy(SEED_APP / "evil.py", directory / "evil.py")
    (directory / "fakehome" / "lib").mkdir(parents=True)
    server = Forklift(
        [
            "--socket",
            "127.0.0.1:0",
            "--socket",
            f"unix:{directory}/uwsgi.sock",
            "--chdir",
            str(directory),
            "--disable-logging",
            *options,
            "probe:application",
        ],
        directory,
        env={"PROBE_DIR": str(directory)},
        listeners=listeners,
    ).start()
    return server, directory


def _server_fixture(*options: str):
    server, directory = start_peer_server(*options)
    try:
        yield server, directory
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def peer():
    """One worker, one thread: the case where a stuck connection would hurt most."""
    yield from _server_fixture(
        "--processes", "1", "--threads", "1", "--head-timeout", str(HEAD_TIMEOUT),
        "--limit-post", str(LIMIT_POST),
    )  # fmt: skip


@pytest.fixture(scope="module")
def peer4():
    yield from _server_fixture("--processes", "1", "--threads", "4")


@pytest.fixture(params=[1, 4], ids=["threads1", "threads4"])
def any_peer(request):
    return request.getfixturevalue("peer" if request.param == 1 else "peer4")


def echo(address, path: str = "/echo", **extra) -> dict:
    """A well-formed request; the probe's JSON answer."""
    raw = uwsgi_exchange(address, uwsgi_packet(request_vars(path, **extra)))
    return json_body(raw)


def assert_marker_absent(directory: Path) -> None:
    assert not (directory / "IMPORTED").exists(), (directory / "IMPORTED").read_text()


# --- malformed packets ---------------------------------------------------------------------------


def _vars_without(name: str, **extra) -> list:
    return [(n, v) for n, v in request_vars("/echo", **extra) if n != name]


GOOD = uwsgi_packet(request_vars("/echo"))

MALFORMED = {
    "truncated-header-then-close": (GOOD[:3], True),
    "truncated-vars-then-close": (GOOD[:-9], True),
    "truncated-body-then-close": (
        uwsgi_packet(request_vars("/upload", method="POST", CONTENT_LENGTH="100")) + b"x" * 10,
        True,
    ),
    "oversized-beyond-buffer-size": (
        uwsgi_packet(request_vars("/echo", HTTP_X_BIG="b" * 5000)),
        False,
    ),
    "datasize-beyond-65535-impossible-header": (b"\x00\xff\xff\x00" + b"\x00" * 100, False),
    "modifier1-not-0": (uwsgi_packet(request_vars("/echo"), modifier1=5), False),
    "modifier1-30": (uwsgi_packet(request_vars("/echo"), modifier1=30), False),
    "missing-request-method": (uwsgi_packet(_vars_without("REQUEST_METHOD")), False),
    "content-length-abc": (
        uwsgi_packet(request_vars("/upload", method="POST", CONTENT_LENGTH="abc")) + b"abc",
        False,
    ),
    "content-length-minus-1": (
        uwsgi_packet(request_vars("/upload", method="POST", CONTENT_LENGTH="-1")) + b"x",
        False,
    ),
    "content-length-plus-5": (
        uwsgi_packet(request_vars("/upload", method="POST", CONTENT_LENGTH="+5")) + b"hello",
        False,
    ),
    "content-length-23-digits": (
        uwsgi_packet(request_vars("/upload", method="POST", CONTENT_LENGTH="1" * 23)) + b"x" * 99,
        False,
    ),
    "content-length-duplicated-same": (
        uwsgi_packet(
            request_vars("/upload", method="POST", CONTENT_LENGTH="5") + [("CONTENT_LENGTH", "5")]
        )
        + b"hello",
        False,
    ),
    "content-length-duplicated-different": (
        uwsgi_packet(
            request_vars("/upload", method="POST", CONTENT_LENGTH="5") + [("CONTENT_LENGTH", "0")]
        )
        + b"hello",
        False,
    ),
    "var-value-runs-past-the-block": (
        b"\x00\x08\x00\x00" + b"\x02\x00AB\x40\x00xy",
        False,
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_packet_closes_without_answer_and_the_next_is_served(peer, case):
    server, directory = peer
    address = server.address("uwsgi")
    worker = echo(address)["pid"]
    before = server.log().count(BAD)
    data, shut = MALFORMED[case]
    answer = uwsgi_exchange(address, data, shut=shut)
    assert answer == b"", f"a malformed packet was answered: {answer[:300]!r}"
    wait_until(lambda: server.log().count(BAD) > before, 5, what="the log line")
    after = echo(address, query="after")  # a new connection, the same worker
    assert after["environ"]["QUERY_STRING"] == "after"
    assert after["pid"] == worker, "the worker was replaced"
    lines = [line for line in server.log().splitlines() if BAD in line]
    assert len(lines) == before + 1, lines[before:]
    assert "died" not in server.log() and "Traceback" not in server.log()


def test_body_over_limit_post_is_answered_413_and_the_next_is_served(peer):
    server, _ = peer
    address = server.address("uwsgi")
    before = server.log().count(BAD)
    packet = uwsgi_packet(
        request_vars("/upload", method="POST", CONTENT_LENGTH=str(LIMIT_POST + 1))
    )
    status, _, _ = parse_response(uwsgi_exchange(address, packet + b"x" * 1000))
    assert status == 413
    wait_until(lambda: server.log().count(BAD) == before + 1, 5, what="one log line")
    assert echo(address)["environ"]["PATH_INFO"] == "/echo"


def test_empty_content_length_and_type_mean_none(peer):
    server, _ = peer
    environ = echo(server.address("uwsgi"), CONTENT_LENGTH="", CONTENT_TYPE="")["environ"]
    assert "CONTENT_LENGTH" not in environ and "CONTENT_TYPE" not in environ, environ


# --- UWSGI_* vars select nothing -----------------------------------------------------------------


def uwsgi_var_sets(directory: Path) -> dict:
    return {
        "UWSGI_FILE": [("UWSGI_FILE", f"{directory}/evil.py"), ("SCRIPT_NAME", "/evil")],
        "UWSGI_SCRIPT": [
            ("UWSGI_SCRIPT", "evil:application"),
            ("UWSGI_CHDIR", str(directory)),
            ("SCRIPT_NAME", "/evil"),
        ],
        "UWSGI_MODULE+UWSGI_CALLABLE": [
            ("UWSGI_MODULE", "evil"),
            ("UWSGI_CALLABLE", "application"),
            ("SCRIPT_NAME", "/evil"),
        ],
        "UWSGI_CHDIR": [("UWSGI_CHDIR", "/")],
        "UWSGI_APPID": [("UWSGI_APPID", "evil"), ("UWSGI_FILE", f"{directory}/evil.py")],
        "UWSGI_PYHOME": [("UWSGI_PYHOME", f"{directory}/fakehome")],
        "UWSGI_SETENV": [("UWSGI_SETENV", "E2E_EVIL=1"), ("UWSGI_SETENV", "UWSGI_EVIL=2")],
    }


def _assert_untouched(answer: dict, directory: Path) -> None:
    assert "environ" in answer, answer  # the probe answered, not evil.py
    assert not [k for k in answer["environ"] if k.startswith("UWSGI_")]
    assert answer["os_environ"] == []
    assert answer["evil_modules"] == []
    assert answer["cwd"] == str(directory)
    assert not [p for p in answer["sys_path"] if "fakehome" in p]
    assert_marker_absent(directory)


@pytest.mark.parametrize(
    "name", list(uwsgi_var_sets(Path("/x"))), ids=lambda n: n.replace("+", "-")
)
def test_uwsgi_vars_select_no_code_and_no_environment(peer, name):
    server, directory = peer
    address = server.address("uwsgi")
    pairs = request_vars("/echo", query="q=1") + uwsgi_var_sets(directory)[name]
    raw = uwsgi_exchange(address, uwsgi_packet(pairs))
    assert b"EVIL" not in raw
    _assert_untouched(json_body(raw), directory)
    # And nothing lingers for the next request, in the same worker.
    _assert_untouched(echo(address, "/evil/x"), directory)
    # A window for something that must not happen (an import in the background would have
    # written the marker by now): there is no event to wait on.
    time.sleep(0.2)
    assert_marker_absent(directory)


def test_uwsgi_vars_warning_once_per_worker_naming_them():
    server, directory = start_peer_server("--processes", "1")
    try:
        address = server.address("uwsgi")
        pairs = request_vars("/echo")
        for sets in uwsgi_var_sets(directory).values():
            pairs += [(n, v) for n, v in sets if n != "SCRIPT_NAME"]
        for _ in range(3):
            _assert_untouched(json_body(uwsgi_exchange(address, uwsgi_packet(pairs))), directory)
        _assert_untouched(echo(server.address("uwsgi", 1)), directory)  # the unix socket too
        lines = [line for line in server.log().splitlines() if "UWSGI_" in line]
        assert len(lines) == 1, lines
        for name in (
            "UWSGI_FILE",
            "UWSGI_SCRIPT",
            "UWSGI_MODULE",
            "UWSGI_CALLABLE",
            "UWSGI_CHDIR",
            "UWSGI_APPID",
            "UWSGI_PYHOME",
            "UWSGI_SETENV",
        ):
            assert name in lines[0], (name, lines[0])
        assert "WARNING" in lines[0]
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


# --- one request per connection: a smuggled second packet is never answered ----------------------


@pytest.mark.parametrize(
    "path,size",
    [("/echo", 10), ("/upload", 10), ("/upload", 200_000), ("/echo", 200_000)],
    ids=["small-unread", "small-read", "streamed-read", "streamed-unread"],
)
def test_second_packet_after_the_body_is_never_answered(any_peer, path, size):
    server, directory = any_peer
    address = server.address("uwsgi")
    tag = f"smuggled{time.monotonic_ns()}"
    body = b"b" * size
    first = uwsgi_packet(request_vars(path, method="POST", query="first", CONTENT_LENGTH=str(size)))
    second = uwsgi_packet(request_vars("/echo", query=tag))
    raw = uwsgi_exchange(address, first + body + second + second)
    status, headers, answer = parse_response(raw)
    assert status == 200
    assert "transfer-encoding" not in headers  # close-delimited or sized, never chunked
    assert len(answer) == int(headers["content-length"]), "more than one answer came back"
    assert tag.encode() not in raw
    if path == "/upload":
        assert json.loads(answer)["size"] == size
    echo(address)  # served after it
    time.sleep(0.2)  # a window for a late hit that must not come: no event to wait on
    assert tag not in (directory / "hits.log").read_text()


def test_second_packet_sent_after_the_answer_is_never_read(peer4):
    server, directory = peer4
    tag = f"late{time.monotonic_ns()}"
    with connect(server.address("uwsgi")) as sock:
        sock.sendall(uwsgi_packet(request_vars("/echo", query="first")))
        sock.settimeout(10)
        assert sock.recv(1, socket.MSG_PEEK), "no answer to the first packet"  # it has begun
        try:
            sock.sendall(uwsgi_packet(request_vars("/echo", query=tag)))
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = read_until_close(sock)
    status, headers, answer = parse_response(raw)
    assert status == 200 and len(answer) == int(headers["content-length"])
    time.sleep(0.2)  # a window for a late hit that must not come: no event to wait on
    assert tag not in (directory / "hits.log").read_text()


# --- who may speak uwsgi -------------------------------------------------------------------------


def test_tcp_peer_outside_uwsgi_allow_ips_is_refused_unix_peer_accepted():
    server, directory = start_peer_server("--uwsgi-allow-ips", "10.0.0.0/8")
    try:
        tcp, unix = server.address("uwsgi", 0), server.address("uwsgi", 1)
        assert isinstance(unix, str)
        answer = uwsgi_exchange(tcp, uwsgi_packet(request_vars("/echo", query="refused")))
        assert answer == b""
        wait_until(lambda: "refused (--uwsgi-allow-ips)" in server.log(), 5, what="the warning")
        hits = directory / "hits.log"
        assert not hits.exists() or "refused" not in hits.read_text()
        assert echo(unix, query="unix")["environ"]["QUERY_STRING"] == "unix"
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_default_allow_ips_accept_localhost(peer):
    server, _ = peer
    assert echo(server.address("uwsgi"))["environ"]["REMOTE_ADDR"] == "192.0.2.10"  # nginx's word


# --- slow peers ----------------------------------------------------------------------------------


def _trickle(address, packet: bytes, start: float, out: dict) -> None:
    """Send `packet` one byte a second until the server closes; record when and what came."""
    received = b""
    closed_at = None
    try:
        with connect(address) as sock:
            for i in range(len(packet)):
                if time.monotonic() - start > 8:  # bounded: well past the head timeout
                    break
                try:
                    sock.sendall(packet[i : i + 1])
                except OSError:
                    closed_at = time.monotonic()
                    break
                ready, _, _ = select.select([sock], [], [], 1.0)
                if ready:
                    try:
                        data = sock.recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        closed_at = time.monotonic()
                        break
                    received += data
    finally:
        out["closed_after"] = None if closed_at is None else closed_at - start
        out["received"] = received


def test_trickling_peers_do_not_stop_others_and_are_cut_at_the_head_timeout(peer):
    server, _ = peer
    address = server.address("uwsgi")
    packet = uwsgi_packet(request_vars("/echo", query="slow"))
    results = [{} for _ in range(10)]
    start = time.monotonic()
    threads = [
        threading.Thread(target=_trickle, args=(address, packet, start, out), daemon=True)
        for out in results
    ]
    for t in threads:
        t.start()
    latencies = []
    for _ in range(3):
        time.sleep(0.7)  # the behaviour under test: others are served all along the trickle
        t0 = time.monotonic()
        assert echo(address, query="normal")["environ"]["QUERY_STRING"] == "normal"
        latencies.append(time.monotonic() - t0)
    for t in threads:
        t.join(12)
    assert max(latencies) < 1.0, latencies
    for out in results:
        assert out["received"] == b"", out
        assert out["closed_after"] is not None, "a trickling peer was never cut off"
        # head timeout 3 s; the worker sweeps once a second
        assert HEAD_TIMEOUT - 0.5 <= out["closed_after"] <= HEAD_TIMEOUT + 2.5, out
    assert echo(address)["environ"]["PATH_INFO"] == "/echo"


def test_unix_socket_peer_is_served_with_nginx_vars(peer):
    server, _ = peer
    unix = server.address("uwsgi", 1)
    environ = echo(unix, "/caf\xc3\xa9", REQUEST_URI="/caf%C3%A9")["environ"]
    assert environ["PATH_INFO"] == "/caf\xc3\xa9"
    assert environ["REQUEST_URI"] == "/caf%C3%A9"
    assert environ["SERVER_NAME"] == "e2e.test"


def test_probe_sanity_nothing_from_evil_anywhere(peer, peer4):
    for server, directory in (peer, peer4):
        assert_marker_absent(directory)
        assert "EVIL" not in server.log()
