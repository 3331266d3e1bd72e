"""The `forklift` command as an operator meets it: --help, bad options, apps that fail to load,
and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from forklift.options import OPTIONS
from support import APPS, Forklift
from support.processes import run_forklift
from support.wire import request

_INFO_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \[\d+\] \[INFO\] ")


def _one_line(text: str) -> str:
    """The one line an operator reads about the failure; informational log lines aside."""
    assert "Traceback" not in text, text
    lines = [line for line in text.strip().splitlines() if not _INFO_LINE.match(line)]
    assert len(lines) == 1, f"expected one error line, got:\n{text}"
    assert lines[0].startswith("forklift: error:"), text
    return lines[0]


def test_help_lists_every_option():
    result = run_forklift("--help")
    assert result.returncode == 0
    names = [f"--{option.name}" for option in OPTIONS if option.help]
    assert len(names) > 40
    missing = [name for name in names if name not in result.stdout]
    assert not missing, f"--help does not mention {missing}"
    assert "MODULE:CALLABLE" in result.stdout
    # the uWSGI keys that work, and those accepted without effect, are listed by name
    for key in ("--socket", "--chmod-socket", "--vacuum", "--wsgi-file", "enable-threads"):
        assert key in result.stdout


def test_console_script_and_version():
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "forklift"), "--version"], capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0
    assert result.stdout.startswith("forklift ")


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-option", "echo:app"],
        ["--threads", "many", "echo:app"],
        ["--threads", "-1", "echo:app"],
        ["--head-timeout", "soon", "echo:app"],
        ["--http", "localhost:http", "echo:app"],
        ["--http", "[::1", "echo:app"],
        ["--limit-post", "10q", "echo:app"],
        ["--mount", "noslash", "echo:app"],
        ["--threads", "0", "echo:app"],
        [],
    ],
    ids=lambda a: " ".join(a) or "no-app",
)
def test_bad_option_exits_2_with_one_line(args):
    result = run_forklift("--chdir", str(APPS), *args)
    assert result.returncode == 2, result
    _one_line(result.stderr)


def test_address_in_use_is_one_line(servers):
    server = servers.get("echo:app")
    result = run_forklift("--chdir", str(APPS), "--http", f"127.0.0.1:{server.port}", "echo:app")
    assert result.returncode in (1, 2)
    assert "cannot listen" in _one_line(result.stderr)


@pytest.mark.parametrize(
    "app, needle",
    [
        ("no_such_module:app", "no_such_module"),
        ("echo:no_such_name", "no_such_name"),
        ("echo:BODY_ECHO_LIMIT", "not callable"),
        ("echo:bad-name", "bad-name"),
    ],
)
def test_app_that_cannot_be_loaded_exits_1_with_one_line(app, needle):
    result = run_forklift("--http", "127.0.0.1:0", "--chdir", str(APPS), app)
    assert result.returncode == 1, result
    assert needle in _one_line(result.stderr)


def test_app_raising_at_import_names_file_and_line(tmp_path):
    (tmp_path / "raiser.py").write_text("import os\n\nraise RuntimeError('no database')\n")
    result = run_forklift("--http", "127.0.0.1:0", "--chdir", str(tmp_path), "raiser:app")
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert "RuntimeError: no database" in line
    assert "raiser.py" in line and "line 3" in line


def test_app_with_a_syntax_error_names_file_and_line(tmp_path):
    (tmp_path / "broken.py").write_text(
        "def app(environ, start_response):\n    return [\n\nx = (\n"
    )
    result = run_forklift("--http", "127.0.0.1:0", "--chdir", str(tmp_path), "broken:app")
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert "SyntaxError" in line
    assert "broken.py" in line and "line " in line


def test_wsgi_file_with_a_syntax_error(tmp_path):
    path = tmp_path / "site_app.py"
    path.write_text("application = lambda e, s: [\n  1 +\n")
    result = run_forklift("--http", "127.0.0.1:0", "--wsgi-file", str(path))
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert "SyntaxError" in line and "site_app.py" in line and "line " in line


def test_wsgi_file_with_the_mod_wsgi_extension(tmp_path):
    # uWSGI and mod_wsgi deployments name the file `something.wsgi`; it is Python all the same.
    path = tmp_path / "site.wsgi"
    path.write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'from a .wsgi file']\n"
    )
    server = Forklift(tmp_path, None, "--wsgi-file", str(path)).start()
    try:
        resp = server.exchange(request("GET", "/"))
    except OSError as exc:
        server.stop()
        pytest.fail(f"{exc!r}; the server said:\n{server.stderr()}")
    try:
        assert resp.body == b"from a .wsgi file"
    finally:
        assert server.stop() == 0


def test_missing_wsgi_file(tmp_path):
    result = run_forklift("--http", "127.0.0.1:0", "--wsgi-file", str(tmp_path / "nope.py"))
    assert result.returncode == 1
    assert "nope.py" in _one_line(result.stderr)


def test_wsgi_file_and_callable_serve(tmp_path):
    path = tmp_path / "hello_app.py"
    path.write_text(
        "def site(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'hello from a wsgi-file']\n"
    )
    server = Forklift(tmp_path, None, "--wsgi-file", str(path), "--callable", "site").start()
    try:
        assert server.exchange(request("GET", "/")).body == b"hello from a wsgi-file"
    finally:
        assert server.stop() == 0


def test_sigterm_stops_cleanly_and_removes_the_unix_socket(tmp_path):
    short = tempfile.mkdtemp(prefix="fl-")
    sock_path = f"{short}/term.sock"
    server = Forklift(
        tmp_path, "echo:app", "--keepalive-timeout", "1", listen=(f"unix:{sock_path}",)
    ).start()
    try:
        assert server.exchange(request("GET", "/")).status == 200
        # An idle keep-alive connection may live out its keep-alive deadline, no longer.
        idle = server.connect()
        idle.send(request("GET", "/"))
        idle.read_response()
        proc = server.proc
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert idle.read_until_eof(timeout=4) == b""
        assert proc.wait(5) == 0
        assert time.monotonic() - start < 4
        idle.close()
        assert not os.path.exists(sock_path)
        assert "Traceback" not in server.stderr()
    finally:
        server.stop()
        shutil.rmtree(short, ignore_errors=True)


def test_sigterm_lets_an_inflight_request_finish(tmp_path):
    server = Forklift(tmp_path, "slow:app", "--threads", "2").start()
    try:
        wire = server.connect()
        wire.send(request("GET", "/?s=1"))
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        resp = wire.read_response()
        assert resp.status == 200
        wire.close()
        assert server.proc.wait(5) == 0
    finally:
        server.stop()
