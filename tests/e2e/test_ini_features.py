"""Tricky uwsgi.ini files, written the way real projects write them, run by `forklift --ini`.

Each test writes one ini file (with the dialect's quirks: `%d`, `%(name)` user variables,
bare keys, trailing `; comments`, atoi numbers) into a temp dir, starts `forklift --ini FILE`
from that dir as an operator would, and checks what the feature does from the outside:
static files over HTTP, mounted apps, added headers, a supervised daemon, a reload on touch,
the 5xx log, the start-up refusals and warnings, the uid/gid drop, the socket mode.
"""

from __future__ import annotations

import grp
import http.client
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from nginx_support import (
    FORKLIFT,
    SEED_APP,
    Forklift,
    json_body,
    make_dir,
    pid_alive,
    request_vars,
    stop_process,
    uwsgi_exchange,
    uwsgi_packet,
    wait_until,
)


@pytest.fixture
def workdir():
    directory = make_dir("fl-ini-")
    shutil.copy(SEED_APP / "probe.py", directory / "probe.py")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def write_ini(directory: Path, text: str, name: str = "uwsgi.ini") -> Path:
    path = directory / name
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def serve(directory: Path, ini: str = "uwsgi.ini", *, listeners: int = 1, **kw) -> Forklift:
    return Forklift(["--ini", ini], directory, listeners=listeners, **kw).start()


def run_to_exit(directory: Path, *args: str, timeout: float = 6.0) -> tuple:
    """forklift ARGS, which must stop by itself (a refused config): (exit code, stderr).

    If it starts serving instead, it is stopped by its pid (TERM, so its workers go too)
    and the test fails saying so.
    """
    err_path = directory / "refused.err"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [FORKLIFT, *args],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        pytest.fail(f"forklift {' '.join(args)} kept running:\n{err_path.read_text()}")
    return proc.returncode, err_path.read_text()


class Client:
    """HTTP/1.1 to a forklift --http listener, one connection per request."""

    def __init__(self, server: Forklift):
        self.host, self.port = server.address("http")

    def request(self, method: str, path: str, headers: dict | None = None) -> tuple:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def get(self, path: str, **headers) -> tuple:
        return self.request("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})


# --- static-map ----------------------------------------------------------------------------------


STATIC_INI = """
[uwsgi]
; a Django-style file: user variables, %d, bare keys, comments after values
project = probe
base = %d
http-socket = 127.0.0.1:0
chdir = %(base)
module = %(project):application
static-map = /static=%(base)static
static-map = /static/img=%(base)images
processes = 2 ; two workers, atoi keeps the 2
master
disable-logging = true
"""


@pytest.fixture
def static_site(workdir):
    static = workdir / "static"
    (static / "css").mkdir(parents=True)
    (workdir / "images").mkdir()
    (static / "css" / "site.css").write_text("body { margin: 0 }\n")
    (static / "app.js").write_text("console.log('hi');\n")
    (static / "data.json").write_text('{"a": 1}\n')
    (static / "index.html").write_text("<h1>index</h1>\n")
    (static / "café.txt").write_text("unicode name\n")
    (workdir / "images" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    big = bytes(i % 251 for i in range(100_000))
    (static / "big.bin").write_bytes(big)
    (workdir / "secret.txt").write_text("TOP-SECRET\n")
    os.symlink(workdir / "secret.txt", static / "link.txt")  # points out of the directory
    write_ini(workdir, STATIC_INI)
    server = serve(workdir)
    try:
        yield Client(server), big, server
    finally:
        server.stop()


def test_static_map_types(static_site):
    client, big, _ = static_site
    expected = {
        "/static/css/site.css": "text/css",
        "/static/app.js": ("application/javascript", "text/javascript"),
        "/static/data.json": "application/json",
        "/static/index.html": "text/html",
        "/static/img/logo.png": "image/png",
        "/static/big.bin": "application/octet-stream",
        "/static/caf%C3%A9.txt": "text/plain",
    }
    for path, ctype in expected.items():
        status, headers, body = client.get(path)
        assert status == 200, (path, status, body[:200])
        assert headers["Content-Type"].split(";")[0] in (
            ctype if isinstance(ctype, tuple) else (ctype,)
        ), (path, headers["Content-Type"])
        assert int(headers["Content-Length"]) == len(body)
    assert client.get("/static/big.bin")[2] == big
    assert client.get("/static/img/logo.png")[2].startswith(b"\x89PNG")
    assert client.get("/static/")[2] == b"<h1>index</h1>\n"  # a directory serves index.html
    # Not a file under the map: the request goes on to the app, as in uWSGI.
    status, _, body = client.get("/static/missing.css")
    assert status == 200 and json.loads(body)["environ"]["PATH_INFO"] == "/static/missing.css"


def test_static_map_ranges_and_conditional_gets(static_site):
    client, big, _ = static_site
    status, headers, body = client.get("/static/big.bin", Range="bytes=10-19")
    assert (status, body) == (206, big[10:20])
    assert headers["Content-Range"] == "bytes 10-19/100000"
    status, headers, body = client.get("/static/big.bin", Range="bytes=-5")
    assert (status, body) == (206, big[-5:])
    status, headers, body = client.get("/static/big.bin", Range="bytes=99990-")
    assert (status, body) == (206, big[99990:])
    status, headers, _ = client.get("/static/big.bin", Range="bytes=200000-300000")
    assert status == 416 and headers["Content-Range"] == "bytes */100000"

    status, headers, _ = client.get("/static/css/site.css")
    etag, modified = headers["ETag"], headers["Last-Modified"]
    status, headers, body = client.get("/static/css/site.css", If_None_Match=etag)
    assert (status, body) == (304, b"")
    assert headers["ETag"] == etag
    status, _, body = client.get("/static/css/site.css", If_None_Match=f'"x", {etag}')
    assert (status, body) == (304, b"")
    status, _, body = client.get("/static/css/site.css", If_Modified_Since=modified)
    assert (status, body) == (304, b"")
    old = formatdate(time.time() - 86400 * 365, usegmt=True)
    assert client.get("/static/css/site.css", If_Modified_Since=old)[0] == 200
    assert client.get("/static/css/site.css", If_None_Match='"other"')[0] == 200
    # If-Range with a stale validator: the whole file.
    status, _, body = client.get("/static/big.bin", Range="bytes=0-9", If_Range='"stale"')
    assert (status, len(body)) == (200, len(big))
    status, headers, body = client.request("HEAD", "/static/big.bin")
    assert (status, body) == (200, b"") and headers["Content-Length"] == "100000"


def test_static_map_open_range_past_the_end_is_416(static_site):
    """Regression (fixed): an open range starting at or past the end (what `curl -C -` sends to
    resume a download that is already complete) gets 200 and the whole file, not 416 as
    `bytes=200000-300000` does: static.parse_range tests `end < start` before
    `start >= size`, and for an open range `end` is size - 1."""
    client, _, _ = static_site
    for spec in ("bytes=100000-", "bytes=200000-"):
        status, headers, body = client.get("/static/big.bin", Range=spec)
        assert status == 416, (spec, status, len(body))
        assert headers["Content-Range"] == "bytes */100000"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/..%2fsecret.txt",
        "/static/%2e%2e%2fsecret.txt",
        "/static/css/../../secret.txt",
        "/static/css/%2e%2e/%2e%2e/secret.txt",
        "/static/link.txt",
        "/static//../secret.txt",
        "/static/%00../secret.txt",
        "/static/..%5csecret.txt",
    ],
)
def test_static_map_never_serves_outside_its_directory(static_site, path):
    client, _, server = static_site
    status, _, body = client.get(path)
    assert b"TOP-SECRET" not in body, (path, status)
    assert server.proc.poll() is None


# --- mount + manage-script-name, add-header ------------------------------------------------------

APP_TEMPLATE = """
def application(environ, start_response):
    body = "{name} SCRIPT_NAME=%r PATH_INFO=%r" % (environ.get("SCRIPT_NAME"), environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode("utf-8")]
"""

MOUNT_INI = """
[uwsgi]
http-socket = 127.0.0.1:0
chdir = %d
; two apps under prefixes: one a file, one a module:callable
mount = /app1=%dapp1.py
mount = /api/v2=app2:application
manage-script-name = true
add-header = X-Frame-Options: DENY
; uWSGI keeps what follows ';' in a value: this header relies on it
add-header = Strict-Transport-Security: max-age=31536000; includeSubDomains
disable-logging
"""


def test_mount_with_manage_script_name_and_add_header(workdir):
    (workdir / "app1.py").write_text(APP_TEMPLATE.format(name="one"))
    (workdir / "app2.py").write_text(APP_TEMPLATE.format(name="two"))
    write_ini(workdir, MOUNT_INI)
    server = serve(workdir)
    try:
        client = Client(server)
        cases = {
            "/app1/hello": b"one SCRIPT_NAME='/app1' PATH_INFO='/hello'",
            "/app1": b"one SCRIPT_NAME='/app1' PATH_INFO=''",
            "/api/v2/items/7?x=1": b"two SCRIPT_NAME='/api/v2' PATH_INFO='/items/7'",
            "/app1/caf%C3%A9": "one SCRIPT_NAME='/app1' PATH_INFO='/caf\xc3\xa9'".encode(),
        }
        for path, expected in cases.items():
            status, headers, body = client.get(path)
            assert (status, body) == (200, expected), path
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
        for path in ("/app10", "/api/v20/x", "/", "/other"):
            status, headers, _ = client.get(path)
            assert status == 404, path
            assert headers["X-Frame-Options"] == "DENY"
    finally:
        server.stop()


# --- attach-daemon -------------------------------------------------------------------------------

DAEMON = """
import os, sys, time
path = sys.argv[1]
with open(path + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(path + ".tmp", path)
deadline = time.monotonic() + 60  # bounded, whatever happens to the test
while time.monotonic() < deadline:
    time.sleep(0.1)
"""


def _daemon_pid(path: Path, not_this: int | None = None):
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return None
    return pid if pid != not_this and pid_alive(pid) else None


def test_attach_daemon_runs_is_restarted_and_stops_with_the_master(workdir):
    (workdir / "daemon.py").write_text(DAEMON)
    write_ini(
        workdir,
        f"""
[uwsgi]
python = {sys.executable}
http-socket = 127.0.0.1:0
chdir = %d
module = probe:application
attach-daemon = %(python) %ddaemon.py %ddaemon.pid
""",
    )
    server = serve(workdir)
    pidfile = workdir / "daemon.pid"
    second = None
    try:
        first = wait_until(lambda: _daemon_pid(pidfile), 10, what="the daemon")
        os.kill(first, signal.SIGKILL)
        second = wait_until(lambda: _daemon_pid(pidfile, first), 10, what="a restarted daemon")
        assert "attach-daemon" in server.log()
        assert server.stop() == 0
        wait_until(lambda: not pid_alive(second), 10, what="the daemon to stop with the master")
    finally:
        server.stop()
        for pid in filter(None, (second, _daemon_pid(pidfile))):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _children(pid: int) -> list:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def test_workers_do_not_outlive_a_killed_master(workdir):
    """Regression (fixed): when the master is SIGKILLed (the OOM killer, `kill -9` of the pid in
    the pidfile), its workers keep running as orphans, holding the listening socket and
    serving the old code, so a new master cannot bind the port. uWSGI's and gunicorn's
    workers exit when their master goes away."""
    write_ini(workdir, BASE_INI + "processes = 2\n")
    server = serve(workdir)
    workers: list = []
    try:
        assert Client(server).get("/echo")[0] == 200
        workers = wait_until(
            lambda: (lambda c: c if len(c) == 2 else None)(_children(server.pid)), 10
        )
        server.stop(signal.SIGKILL)
        wait_until(
            lambda: not any(pid_alive(p) for p in workers),
            5.0,
            what=f"workers {workers} to exit after their master was killed",
        )
    finally:
        server.stop()  # when something failed before the kill
        for pid in workers:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


# --- touch-reload --------------------------------------------------------------------------------


def test_touch_reload_starts_new_workers(workdir):
    trigger = workdir / "reload.trigger"
    trigger.write_text("")
    write_ini(
        workdir,
        """
[uwsgi]
http-socket = 127.0.0.1:0
chdir = %d
module = probe:application
processes = 1
touch-reload = %dreload.trigger
""",
    )
    server = serve(workdir)
    try:
        client = Client(server)
        old = json.loads(client.get("/pid")[2])["pid"]
        later = time.time() + 5
        os.utime(trigger, (later, later))

        def new_pid():
            status, _, body = client.get("/pid")
            assert status == 200
            pid = json.loads(body)["pid"]
            return pid if pid != old else None

        wait_until(new_pid, 15, interval=0.1, what="a new worker after touch-reload")
        assert "was touched" in server.log()
        assert not pid_alive(old) or wait_until(lambda: not pid_alive(old), 10, what="old exit")
    finally:
        server.stop()


# --- log-5xx -------------------------------------------------------------------------------------


def test_log_5xx_logs_server_errors_only(workdir):
    write_ini(
        workdir,
        """
[uwsgi]
http-socket = 127.0.0.1:0
chdir = %d
module = probe:application
logto = %dforklift.log
log-5xx = true
disable-logging = true
""",
    )
    server = serve(workdir, log_path=workdir / "forklift.log")
    try:
        client = Client(server)
        assert client.get("/status/503")[0] == 503
        assert client.get("/status/404")[0] == 404
        assert client.get("/echo")[0] == 200
        # one worker, one thread: once the last request's line is written, any line the two
        # before it would have had is written too
        assert client.get("/status/500")[0] == 500
        wait_until(lambda: "/status/500" in server.log(), 5, what="the last 5xx line")
        line = [x for x in server.log().splitlines() if "/status/503" in x]
        assert len(line) == 1 and "503" in line[0] and "GET" in line[0]
        log = server.log()
        assert "/status/404" not in log and "/echo" not in log
    finally:
        server.stop()


# --- start-up refusals and warnings --------------------------------------------------------------

BASE_INI = """
[uwsgi]
http-socket = 127.0.0.1:0
chdir = %d
module = probe:application
"""


def test_strict_with_a_typo_stops_with_one_line(workdir):
    path = write_ini(workdir, BASE_INI + "strict = true\nvaccum = true\n")
    code, stderr = run_to_exit(workdir, "--ini", "uwsgi.ini")
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "vaccum" in lines[0] and str(path) in lines[0] and "'vacuum'" in lines[0]


def test_strict_option_on_the_command_line(workdir):
    write_ini(workdir, BASE_INI + "maximum-requests = 1000\n")
    # Regression (fixed): --strict does not make unknown ini keys errors; only `strict = true`
    # in the file does (read_with_warnings looks at the entries, not at the option).
    code, stderr = run_to_exit(workdir, "--ini", "uwsgi.ini", "--strict")
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "maximum-requests" in lines[0] and "'max-requests'" in lines[0]


def test_guid_typo_is_one_warning_with_did_you_mean(workdir):
    path = write_ini(workdir, BASE_INI + "guid = nogroup\n")
    server = serve(workdir)
    try:
        assert Client(server).get("/echo")[0] == 200
        lines = [x for x in server.stderr().splitlines() if "guid" in x]
        assert len(lines) == 1, server.stderr()
        assert "warning" in lines[0].lower() and "did you mean 'gid'" in lines[0]
        assert str(path) in lines[0]
    finally:
        server.stop()


@pytest.mark.parametrize(
    "line",
    [
        "emperor = /etc/uwsgi/vassals",
        "gevent = 100",
        "spooler = %dspool",
        "route = ^/old redirect:/new",
        "plugins = php",
        "fastrouter = 127.0.0.1:3017",
    ],
)
def test_refused_key_stops_with_key_file_and_line(workdir, line):
    path = write_ini(workdir, BASE_INI + "processes = 2\n" + line + "\n")
    lineno = len((BASE_INI + "processes = 2\n").lstrip("\n").splitlines()) + 1
    key = line.split(" = ")[0]
    code, stderr = run_to_exit(workdir, "--ini", "uwsgi.ini")
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{path}:{lineno}" in lines[0] and key in lines[0], lines[0]


def test_accepted_noop_keys_are_one_warning_listing_them(workdir):
    noop = [
        "master",
        "enable-threads",
        "thunder-lock",
        "single-interpreter",
        "harakiri-verbose",
        "memory-report",
        "offload-threads",
        "cheaper",
        "auto-procname",
        "die-on-term",
    ]
    text = BASE_INI + "master = true\nenable-threads\nthunder-lock = 1\nsingle-interpreter = true\n"
    text += "harakiri-verbose\nmemory-report\noffload-threads = 2\ncheaper = 1\n"
    text += "auto-procname\ndie-on-term = true ; systemd\n"
    write_ini(workdir, text)
    server = serve(workdir)
    try:
        assert Client(server).get("/echo")[0] == 200
        warnings = [x for x in server.stderr().splitlines() if "warning" in x.lower()]
        assert len(warnings) == 1, warnings
        for key in noop:
            assert key in warnings[0], (key, warnings[0])
    finally:
        server.stop()


# --- uid/gid, chmod-socket -----------------------------------------------------------------------


def _status_ids(pid: int) -> dict:
    ids = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("Uid", "Gid", "Groups"):
                ids[name] = [int(v) for v in value.split()]
    return ids


# The app of the uid test imports only `os`, which the server has already loaded: the test
# venv's interpreter may live where `nobody` cannot read (here /root/.pyenv, under a 0700
# /root), and the app is imported after the drop, as it must be.
IDS_APP = """
import os


def application(environ, start_response):
    body = ("%d %d %d" % (os.getpid(), os.getuid(), os.getgid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
"""


@pytest.fixture
def dropped(workdir):
    """forklift started as root with `uid = nobody`, `gid = nogroup` and a pidfile."""
    (workdir / "ids.py").write_text(IDS_APP)
    write_ini(
        workdir,
        """
[uwsgi]
http-socket = 127.0.0.1:0
chdir = %d
module = ids:application
pidfile = %dforklift.pid
uid = nobody
gid = nogroup
""",
    )
    server = serve(workdir)
    try:
        yield server, workdir
    finally:
        server.stop()


@pytest.mark.requires("root")
def test_uid_gid_drop_as_root(dropped):
    server, workdir = dropped
    nobody = pwd.getpwnam("nobody").pw_uid
    nogroup = grp.getgrnam("nogroup").gr_gid
    status, _, body = Client(server).get("/")
    assert status == 200, (body, server.log())
    worker, uid, gid = (int(x) for x in body.split())
    assert (uid, gid) == (nobody, nogroup)
    ids = _status_ids(worker)
    assert ids["Uid"] == [nobody] * 4, ids
    assert ids["Gid"] == [nogroup] * 4, ids
    assert ids["Groups"] in ([], [nogroup]), ids
    assert _status_ids(server.pid)["Uid"] == [nobody] * 4  # the master dropped too
    # The pidfile was written before the drop (as root), with the master's pid.
    assert (workdir / "forklift.pid").read_text().strip() == str(server.pid)


@pytest.mark.requires("root")
def test_control_socket_after_uid_drop(dropped):
    """Regression (fixed): the control socket PIDFILE.sock is bound after the drop, so in a
    directory only root may write (/run; here the 0755 temp dir) it is never created and
    `forklift status|reload --pidfile` cannot reach the master."""
    server, workdir = dropped
    result = subprocess.run(
        [FORKLIFT, "status", "--pidfile", str(workdir / "forklift.pid"), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr + server.log()
    assert json.loads(result.stdout)["pid"] == server.pid


@pytest.mark.parametrize("value,mode", [("660", 0o660), ("", 0o666)], ids=["660", "bare"])
def test_chmod_socket_on_a_unix_socket(workdir, value, mode):
    line = f"chmod-socket = {value}" if value else "chmod-socket"
    write_ini(
        workdir,
        f"""
[uwsgi]
socket = %duwsgi.sock
{line}
chdir = %d
module = probe:application
""",
    )
    server = serve(workdir)
    try:
        path = server.address("uwsgi")
        assert path == str(workdir / "uwsgi.sock")
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == mode, oct(st.st_mode)
        answer = json_body(uwsgi_exchange(path, uwsgi_packet(request_vars("/echo"))))
        assert answer["environ"]["PATH_INFO"] == "/echo"
    finally:
        server.stop()
