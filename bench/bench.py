"""forklift's benchmark harness; `bench/run` sets up the venv and tools, then runs this.

Every server gets the same 2 worker processes and the same apps, is started and stopped by this
script (by pid), and is measured with wrk -t1 -c64 after a warm-up, interleaved with the others
over several rounds; the medians go to bench/results/<date>.md with a PNG chart. See
bench/README.md for what is measured and why.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
APPS_DIR = BENCH / "apps"
LUA = BENCH / "gameprogress.lua"
VBIN = Path(sys.executable).parent  # bench/.venv/bin: bench/run starts us with its python

HOST = "127.0.0.1"
WORKERS = 2
CONNECTIONS = 64
DEVICES = 10_000
ID_PREFIX = "bench-"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

APP_TARGETS = {"hello": "hello:app", "gameprogress": "gameprogress.wsgi:app"}
MODES = ("keepalive", "close", "nginx")
MODE_TITLES = {
    "keepalive": "direct HTTP, keep-alive",
    "close": "direct HTTP, `Connection: close`",
    "nginx": "behind nginx (uwsgi_pass or proxy_pass)",
}

START_TIMEOUT = 30.0  # a server must answer within this after it is started
STOP_TIMEOUT = 10.0  # then SIGKILL, pid by pid
LISTEN_BACKLOG = min(1024, int(Path("/proc/sys/net/core/somaxconn").read_text()))


# ------------------------------------------------------------------------------ servers
# Each server's command for one instance. `proto` is what the instance is for:
#   "http"  direct HTTP, keep-alive clients (and nginx proxy_pass, which keeps upstream
#           connections alive);
#   "close" direct HTTP, clients that send `Connection: close`;
#   "uwsgi" the uwsgi protocol, behind nginx uwsgi_pass.
# A server whose "close" command equals its "http" one runs both cells on one instance.

UWSGI_KEEPALIVE_THREADS = 32  # a uWSGI thread holds a keep-alive connection until it closes
GUNICORN_THREADS = 4
GRANIAN_BLOCKING_THREADS = 1
WAITRESS_THREADS = 4


@dataclass
class Server:
    name: str
    settings: str  # stated in the results
    argv: object  # (target, port, proto) -> list[str]
    # "uwsgi": uwsgi_pass to a "uwsgi" instance over TCP; "uwsgi-unix": the same over a unix
    # socket (unix_socket_path(port)); "http": proxy_pass with upstream keep-alive to "http"
    nginx: str
    apps: tuple = ("hello", "gameprogress")
    stop_signal: int = signal.SIGINT
    modes: tuple = ("keepalive", "close", "nginx")  # a row only about nginx has ("nginx",)


def unix_socket_path(port: int) -> str:
    """Where a server behind nginx listens when nginx reaches it over a unix socket."""
    return os.path.join(tempfile.gettempdir(), f"forklift-bench-{port}.sock")


BEFORE_SRC: list = []  # --before: the src/ directory of an older forklift checkout


def _forklift(threads: int, unix: bool = False, extra: tuple = (), before: bool = False):
    def argv(target, port, proto):
        listener = "--socket" if proto == "uwsgi" else "--http"
        address = f"{HOST}:{port}"
        prefix = []
        if unix and proto == "uwsgi":
            address = f"unix:{unix_socket_path(port)}"
            # nginx's workers run as another user: they need write permission on the socket
            # (umask 000 for the exec'd server, which keeps the shell's pid).
            prefix = ["/bin/sh", "-c", 'umask 000 && exec "$0" "$@"']
        program = [str(VBIN / "forklift")]
        if before:
            # the older checkout's package first on the path, the same interpreter and venv
            program = ["/usr/bin/env", f"PYTHONPATH={BEFORE_SRC[0]}", str(VBIN / "python")]
            program += ["-m", "forklift"]
        return [
            *prefix,
            *program,
            listener,
            address,
            "--processes",
            str(WORKERS),
            "--threads",
            str(threads),
            "--listen",
            str(LISTEN_BACKLOG),
            "--disable-logging",
            *extra,
            "--chdir",
            str(APPS_DIR),
            target,
        ]

    return argv


def _uwsgi(target, port, proto):
    # --http11-socket keeps connections alive but ignores a client's `Connection: close`, and a
    # sync worker (thread) serves one keep-alive connection until the client closes it; so:
    # keep-alive clients get --http11-socket with enough threads for all 64 connections,
    # closing clients get --http-socket (one request per connection), nginx gets --socket.
    listener, threads = {
        "http": ("--http11-socket", UWSGI_KEEPALIVE_THREADS),
        "close": ("--http-socket", 1),
        "uwsgi": ("--socket", 1),
    }[proto]
    return [
        str(VBIN / "uwsgi"),
        listener,
        f"{HOST}:{port}",
        "--master",
        "--processes",
        str(WORKERS),
        "--threads",
        str(threads),
        "--listen",
        str(LISTEN_BACKLOG),
        "--disable-logging",
        "--die-on-term",
        "--need-app",
        "--single-interpreter",
        "--thunder-lock",
        "--chdir",
        str(APPS_DIR),
        "--module",
        target,
    ]


def _gunicorn(target, port, proto):
    # gthread parks idle keep-alive connections in a poller, so its threads serve all 64; with
    # one request per connection (close, uwsgi) the plain sync worker costs less.
    if proto == "http":
        workers = [
            "--worker-class",
            "gthread",
            "--threads",
            str(GUNICORN_THREADS),
            "--keep-alive",
            "5",
        ]
    else:
        workers = ["--worker-class", "sync"]
    argv = [
        str(VBIN / "gunicorn"),
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(WORKERS),
        *workers,
        "--backlog",
        str(LISTEN_BACKLOG),
        "--no-control-socket",
        "--chdir",
        str(APPS_DIR),
        target,
    ]
    if proto == "uwsgi":
        # gunicorn 27 reads for a second request on every uwsgi connection and logs an
        # InvalidUWSGIHeader traceback when nginx closes it, i.e. once per request.
        argv[1:1] = ["--protocol", "uwsgi", "--log-level", "critical"]
    return argv


def _granian(target, port, proto):
    return [
        str(VBIN / "granian"),
        "--interface",
        "wsgi",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
        "--runtime-threads",
        "1",
        "--blocking-threads",
        str(GRANIAN_BLOCKING_THREADS),
        "--http",
        "1",
        "--no-ws",
        "--backlog",
        str(LISTEN_BACKLOG),
        "--log-level",
        "warning",
        "--working-dir",
        str(APPS_DIR),
        target,
    ]


def _launcher(script: str, tail=lambda proto: ()):
    """The argv of a bench/servers script: `SCRIPT HOST PORT TARGET WORKERS [TAIL...]`
    (the launchers of servers without a process manager, and the python-floor yardstick)."""

    def argv(target, port, proto):
        return [
            str(VBIN / "python"),
            str(BENCH / "servers" / script),
            HOST,
            str(port),
            target,
            str(WORKERS),
            *tail(proto),
        ]

    return argv


_waitress = _launcher("waitress_prefork.py", lambda proto: (str(WAITRESS_THREADS),))
_python_floor = _launcher(
    "python_floor.py", lambda proto: ("uwsgi" if proto == "uwsgi" else "http",)
)
_bjoern = _launcher("bjoern_prefork.py")


SERVERS = [
    Server(
        "forklift",
        "`--processes 2 --threads 1` (the event loop calls the app inline), `--disable-logging`; "
        "behind nginx: `--socket` (uwsgi protocol)",
        _forklift(1),
        "uwsgi",
    ),
    Server(
        "forklift-unix",
        "as forklift; behind nginx only: `--socket unix:PATH` (uwsgi_pass over a unix socket)",
        _forklift(1, unix=True),
        "uwsgi-unix",
        modes=("nginx",),
    ),
    Server(
        "forklift-proxy",
        "as forklift; behind nginx only: `--http` with nginx proxy_pass and upstream keep-alive "
        "(a pool of long-lived connections instead of one connection per request)",
        _forklift(1),
        "http",
        modes=("nginx",),
    ),
    Server(
        "forklift-before",
        "as forklift, but the code of an older checkout (`--before SRC`, e.g. the commit before "
        "a change); only with --before",
        _forklift(1, before=True),
        "uwsgi",
    ),
    Server(
        "forklift-nometrics",
        "as forklift with `--disable-metrics` (request counters and latency histograms off); "
        "hello only: what the metrics cost",
        _forklift(1, extra=("--disable-metrics",)),
        "uwsgi",
        apps=("hello",),
    ),
    Server(
        "forklift-t4",
        "`--processes 2 --threads 4` (4 request threads per worker, taking turns at its "
        "loop), otherwise as forklift; gameprogress only",
        _forklift(4),
        "uwsgi",
        apps=("gameprogress",),
    ),
    Server(
        "uwsgi",
        "pyuwsgi, `--master --processes 2 --thunder-lock --single-interpreter --disable-logging`; "
        f"keep-alive: `--http11-socket --threads {UWSGI_KEEPALIVE_THREADS}` (a uWSGI thread "
        "serves one keep-alive connection until the client closes it: with `--threads 1` only 2 of "
        "the 64 connections are ever served); `Connection: close`: `--http-socket --threads 1` "
        "(`--http11-socket` ignores the client's `Connection: close` and keeps the connection "
        "open); behind nginx: `--socket --threads 1`",
        _uwsgi,
        "uwsgi",
    ),
    Server(
        "gunicorn",
        "`--workers 2 --no-control-socket` (no access log by default); keep-alive: "
        f"`--worker-class gthread --threads {GUNICORN_THREADS} --keep-alive 5`; `Connection: "
        "close`: `--worker-class sync`; behind nginx: `--worker-class sync --protocol uwsgi "
        "--log-level critical` (gunicorn 27 logs an `InvalidUWSGIHeader: incomplete header` "
        "traceback each time nginx closes a uwsgi connection, i.e. once per request)",
        _gunicorn,
        "uwsgi",
    ),
    Server(
        "granian",
        "`--interface wsgi --workers 2 --runtime-threads 1 "
        f"--blocking-threads {GRANIAN_BLOCKING_THREADS} --http 1 --no-ws` (access log off by "
        "default); behind nginx: proxy_pass with upstream keep-alive",
        _granian,
        "http",
    ),
    Server(
        "bjoern",
        "bench/servers/bjoern_prefork.py: `bjoern.listen` then 2 forked `bjoern.run()` loops "
        "(no access log); behind nginx: proxy_pass with upstream keep-alive",
        _bjoern,
        "http",
        stop_signal=signal.SIGTERM,
    ),
    Server(
        "python-floor",
        "bench/servers/python_floor.py: not a server to use but a yardstick, the least a "
        "pure-Python server does per request (an epoll loop per forked process, accept, one "
        "recv taken as the request, a PEP 3333 environ, the app, one send; no check, limit or "
        "timeout); behind nginx: uwsgi_pass over TCP",
        _python_floor,
        "uwsgi",
        stop_signal=signal.SIGTERM,
    ),
    Server(
        "waitress",
        "bench/servers/waitress_prefork.py: one socket, 2 forked "
        f"`waitress.serve(threads={WAITRESS_THREADS})` (no access log); behind nginx: proxy_pass "
        "with upstream keep-alive",
        _waitress,
        "http",
        stop_signal=signal.SIGTERM,
    ),
]
SERVER_BY_NAME = {s.name: s for s in SERVERS}
FLOOR = "python-floor"  # the yardstick row: see bench/servers/python_floor.py


# ------------------------------------------------------------------------------ processes


def proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, utime ticks, stime ticks) for every process, read from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rindex(b")") + 2 :].split()
        table[int(entry)] = (int(rest[1]), int(rest[11]), int(rest[12]))
    return table


def process_tree(root: int, table=None) -> dict[int, tuple[int, int, int]]:
    table = proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out[pid] = table[pid]
            todo.extend(children.get(pid, ()))
    return out


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_KIB
    except OSError:
        return None


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class Started:
    """Every process this script started, so that each is stopped by its own pid."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, argv, *, log_path, env=None, cwd=None) -> subprocess.Popen:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig=signal.SIGTERM, timeout=STOP_TIMEOUT) -> str:
        """Signal the root; SIGKILL whatever of its tree is still there after `timeout`."""
        tree = list(process_tree(proc.pid)) if proc.poll() is None else []
        note = ""
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                note = f"did not stop within {timeout:.0f}s of {signal.Signals(sig).name}: killed"
        deadline = time.monotonic() + 3.0
        for pid in tree:  # the workers it forked, if the root left any behind
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    note = note or "left processes behind: killed"
                except ProcessLookupError:
                    pass
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
        if proc in self.procs:
            self.procs.remove(proc)
        return note

    def stop_all(self):
        for proc in list(self.procs):
            self.stop(proc, signal.SIGKILL, timeout=3)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except OSError:
        return False


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def http_get(port: int, path: str, timeout=5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_answer(port: int, path: str, check, proc: subprocess.Popen, timeout=START_TIMEOUT):
    """Until GET path on port passes `check(status, body)`; raise with the reason if not."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before answering")
        try:
            status, body = http_get(port, path, timeout=2.0)
            if check(status, body):
                return
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise RuntimeError(f"no good answer within {timeout:.0f}s ({last})")


def settle(proc: subprocess.Popen, timeout=10.0, quiet=0.5):
    """Wait (bounded) until the server's process tree has stopped changing: all workers up."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline and proc.poll() is None:
        pids = set(process_tree(proc.pid))
        if pids != last:
            last, since = pids, time.monotonic()
        elif len(pids) > WORKERS and time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


def closes_after_request(port: int, path: str, timeout=3.0) -> tuple[bool, bool]:
    """After answering a `Connection: close` request, does the server close the connection,
    and does its answer say `Connection: close`? (wrk counts an unannounced close as a read
    error even though the answer was complete.)"""
    data = b""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    head = data.split(b"\r\n\r\n", 1)[0].lower()
                    return True, b"\r\nconnection: close" in head
                data += chunk
    except OSError:
        pass
    return False, False


def head_problems(port: int, path: str, timeout=5.0) -> list[str]:
    """What a strict client (wrk's http-parser) would reject in one keep-alive answer's head:
    http.client, used for the start-up check, tolerates repeated Content-Length fields."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        return [f"strict check of the answer failed: {exc}"]
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    names = [line.split(b":", 1)[0].strip().lower() for line in head[1:]]
    problems = []
    for name in (b"content-length", b"transfer-encoding", b"date", b"connection"):
        if names.count(name) > 1:
            problems.append(f"answer head repeats {name.decode()} ({names.count(name)} times)")
    if b"content-length" in names and b"transfer-encoding" in names:
        problems.append("answer has both Content-Length and Transfer-Encoding")
    return problems


def check_hello(status, body):
    return status == 200 and body == b"Hello, world!"


def check_gameprogress(status, body):
    if status != 200:
        return False
    try:
        return json.loads(body).get("error") == 0
    except ValueError:
        return False


SANITY = {
    "hello": ("/", check_hello),
    "gameprogress": (f"/deviceId={ID_PREFIX}00000", check_gameprogress),
}


# ------------------------------------------------------------------------------ nginx

UWSGI_PARAMS = """
    uwsgi_param QUERY_STRING $query_string;
    uwsgi_param REQUEST_METHOD $request_method;
    uwsgi_param CONTENT_TYPE $content_type;
    uwsgi_param CONTENT_LENGTH $content_length;
    uwsgi_param REQUEST_URI $request_uri;
    uwsgi_param PATH_INFO $document_uri;
    uwsgi_param DOCUMENT_ROOT $document_root;
    uwsgi_param SERVER_PROTOCOL $server_protocol;
    uwsgi_param REQUEST_SCHEME $scheme;
    uwsgi_param HTTPS $https if_not_empty;
    uwsgi_param REMOTE_ADDR $remote_addr;
    uwsgi_param REMOTE_PORT $remote_port;
    uwsgi_param SERVER_PORT $server_port;
    uwsgi_param SERVER_NAME $server_name;"""


def nginx_conf(prefix: Path, routes: dict[str, tuple[int, str, int]]) -> str:
    """routes: server name -> (nginx port, 'uwsgi'|'http', backend port)."""
    blocks = []
    for name, (port, kind, backend) in routes.items():
        up = "up_" + re.sub(r"\W", "_", name)
        if kind in ("uwsgi", "uwsgi-unix"):
            # The uwsgi protocol has no keep-alive: nginx opens one connection per request.
            where = f"{HOST}:{backend}"
            if kind == "uwsgi-unix":
                where = f"unix:{unix_socket_path(backend)}"
            blocks.append(
                f"""
    upstream {up} {{ server {where}; }}
    server {{
        listen {HOST}:{port} backlog={LISTEN_BACKLOG};
        location / {{{UWSGI_PARAMS}
            uwsgi_pass {up};
        }}
    }}"""
            )
        else:
            blocks.append(
                f"""
    upstream {up} {{ server {HOST}:{backend}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen {HOST}:{port} backlog={LISTEN_BACKLOG};
        location / {{
            proxy_pass http://{up};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}"""
            )
    return f"""# generated by bench/bench.py
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{"".join(blocks)}
}}
"""


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


# ------------------------------------------------------------------------------ wrk


def wrk_argv(url: str, duration: float, app: str, close: bool) -> list[str]:
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{duration:g}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    if app == "gameprogress":
        argv += ["-s", str(LUA), url, "--", str(DEVICES), ID_PREFIX]
    else:
        argv.append(url)
    return argv


_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def _to_us(value: str, unit: str) -> float:
    return float(value) * _UNITS_US[unit]


def parse_wrk(text: str) -> dict:
    out = {"rps": None, "requests": 0, "p50_us": None, "p99_us": None, "errors": 0, "non2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    if m:
        out["requests"] = int(m.group(1))
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
        if m:
            out[key] = _to_us(m.group(1), m.group(2))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["errors"] = sum(int(x) for x in m.groups())
        out["error_detail"] = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    return out


def run_wrk(argv: list[str], duration: float, probe_port: int | None = None):
    """Run wrk (bounded); with probe_port, also count mid-run how many of wrk's connections to
    that port have received any bytes: a server that serves a keep-alive connection until it
    closes, with fewer threads than connections, leaves the others waiting unseen by wrk."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    served = None
    if probe_port is not None:
        time.sleep(duration / 2)
        served = connections_served(probe_port)
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        return f"wrk did not finish within {duration + 30:.0f}s\n{out}", -1, served
    return out, proc.returncode, served


def connections_served(port: int) -> tuple[int, int] | None:
    """(client sockets to HOST:port that received bytes, all of them), from `ss -tni`."""
    try:
        done = subprocess.run(
            ["ss", "-tniH", "state", "established", "dst", f"{HOST}:{port}"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    total = served = 0
    for line in done.stdout.splitlines():
        if not line[:1].isspace():  # a socket line; its details follow, indented
            total += 1
        elif re.search(r"\bbytes_received:[1-9]", line):
            served += 1
    return served, total


# ------------------------------------------------------------------------------ gameprogress


def seed_database(path: Path, workdir: Path, started: Started, log) -> str:
    """10,000 devices through the app's own store; through HTTP /update if that API moved."""
    url = f"sqlite:///{path}"
    code = f"""
import random, time
from gameprogress.store import open_store
from gameprogress.model import DeviceRecord
store = open_store({url!r})
store.migrate()
rng = random.Random(1)
now = int(time.time())
records = []
for i in range({DEVICES}):
    t = now - rng.randrange(86400 * 30)
    records.append(DeviceRecord({ID_PREFIX!r} + "%05d" % i, rng.randrange(1001), t, t, 1))
print(store.import_records(records))
store.close()
"""
    done = subprocess.run(
        [str(VBIN / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workdir,
    )
    how = "the app's store (`Store.import_records`)"
    if done.returncode != 0:
        log(f"seeding through the store failed, seeding over HTTP instead:\n{done.stderr[-800:]}")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        _seed_over_http(path, workdir, started)
        how = "HTTP (`GET /update/<id>/<level>` on a forklift started for it)"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return how


def _seed_over_http(path: Path, workdir: Path, started: Started):
    import random

    port = free_ports(1)[0]
    env = dict(os.environ, GAMEPROGRESS_DATABASE_URL=f"sqlite:///{path}")
    argv = _forklift(1)(APP_TARGETS["gameprogress"], port, False)
    proc = started.start(argv, log_path=workdir / "seed-server.log", env=env, cwd=APPS_DIR)
    try:
        wait_answer(port, "/", lambda s, b: s < 500, proc)
        rng = random.Random(1)
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        for i in range(DEVICES):
            conn.request("GET", f"/update/{ID_PREFIX}{i:05d}/{rng.randrange(1001)}")
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"seeding over HTTP: /update answered {resp.status}")
        conn.close()
    finally:
        started.stop(proc, signal.SIGINT)


# ------------------------------------------------------------------------------ the run


@dataclass
class Cell:
    server: str
    app: str
    mode: str
    round: int
    rps: float | None = None
    requests: int = 0
    p50_us: float | None = None
    p99_us: float | None = None
    errors: int = 0
    non2xx: int = 0
    error_detail: dict = field(default_factory=dict)
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    cpu_us_per_req: float | None = None
    rss_kib_per_worker: list = field(default_factory=list)
    served: tuple | None = None  # (connections that got bytes, connections) mid-run
    nginx_cpu_s: float | None = None
    note: str = ""
    wrk: str = ""


class Bench:
    def __init__(self, args):
        self.args = args
        self.started = Started()
        self.work = Path(tempfile.mkdtemp(prefix="forklift-bench-"))
        # SQLite files on tmpfs by default: the disk here is shared with other jobs, and its
        # fsync stalls (at WAL checkpoints) would be noise, not a property of any server.
        self.db_dir = Path(tempfile.mkdtemp(prefix="forklift-bench-db-", dir=args.db_dir))
        self.cells: list[Cell] = []
        self.logs: list[str] = []
        self.commands: dict[str, dict] = {}
        self.servers = [s for s in SERVERS if s.name in args.servers]
        self.apps = args.apps
        self.modes = args.modes
        names = [s.name for s in self.servers]
        ports = free_ports(3 * len(names))
        self.http_port = dict(zip(names, ports[0::3], strict=True))
        self.uwsgi_port = dict(zip(names, ports[1::3], strict=True))
        self.nginx_port = dict(zip(names, ports[2::3], strict=True))
        self.nginx = None
        self.raw = []

    def log(self, text: str):
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {text}", flush=True)
        self.logs.append(text)

    # -- nginx
    def start_nginx(self):
        prefix = self.work / "nginx"
        prefix.mkdir()
        routes = {}
        for s in self.servers:
            uses_uwsgi = s.nginx.startswith("uwsgi")
            backend = self.uwsgi_port[s.name] if uses_uwsgi else self.http_port[s.name]
            routes[s.name] = (self.nginx_port[s.name], s.nginx, backend)
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, routes))
        self.nginx_conf_text = conf.read_text()
        argv = [nginx_binary(), "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
        self.nginx_argv = argv
        self.nginx = self.started.start(argv, log_path=prefix / "stdout.log")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.nginx.poll() is not None:
                err = prefix / "error.log"
                text = (prefix / "stdout.log").read_text()[-1000:]
                if err.exists():
                    text += err.read_text()[-1000:]
                raise RuntimeError("nginx exited: " + text)
            try:
                socket.create_connection((HOST, self.nginx_port[self.servers[0].name]), 1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not listen within 15s")

    # -- one server instance, one or more cells
    def instance(self, server: Server, app: str, rnd: int, proto: str, modes: list[str]):
        port = self.uwsgi_port[server.name] if proto == "uwsgi" else self.http_port[server.name]
        argv = server.argv(APP_TARGETS[app], port, proto)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if app == "gameprogress":
            db = self.db_dir / f"gp-{server.name}-r{rnd}-{proto}.db"
            for old in self.db_dir.glob("gp-*"):  # one copy at a time
                old.unlink()
            shutil.copyfile(self.template_db, db)
            env["GAMEPROGRESS_DATABASE_URL"] = f"sqlite:///{db}"
        self.commands.setdefault(f"{server.name} / {app} / {'+'.join(modes)}", argv)
        log_path = self.work / f"{server.name}-{app}-r{rnd}-{proto}.log"
        proc = self.started.start(argv, log_path=log_path, env=env, cwd=APPS_DIR)
        path, check = SANITY[app]
        check_port = self.nginx_port[server.name] if proto == "uwsgi" else port
        try:
            wait_answer(check_port, path, check, proc)
        except RuntimeError as exc:
            tail = log_path.read_text(errors="replace")[-1500:]
            self.log(f"!! {server.name} {app} ({proto}) failed to start: {exc}\n{tail}")
            self.started.stop(proc, server.stop_signal)
            for mode in modes:
                self.cells.append(Cell(server.name, app, mode, rnd, note=f"did not start: {exc}"))
            return
        settle(proc)
        problems = [] if proto == "uwsgi" else head_problems(port, path)
        try:
            for mode in modes:
                self.cell(server, app, mode, rnd, proc, log_path)
                if problems:
                    self.cells[-1].note = "; ".join([*problems, self.cells[-1].note]).strip("; ")
        finally:
            note = self.started.stop(proc, server.stop_signal)
            if note:
                self.log(f"!! {server.name} {app}: {note}")
                self.cells[-1].note = (self.cells[-1].note + "; " + note).strip("; ")

    def cell(self, server, app, mode, rnd, proc, log_path):
        a = self.args
        port = self.nginx_port[server.name] if mode == "nginx" else self.http_port[server.name]
        url = f"http://{HOST}:{port}/"
        close = mode == "close"
        c = Cell(server.name, app, mode, rnd)
        log_size = log_path.stat().st_size
        if close:
            closed, announced = closes_after_request(port, SANITY[app][0])
            if not closed:
                c.note = "kept the connection open after answering `Connection: close`"
            elif not announced:
                c.note = (
                    "closes after each answer without sending `Connection: close`: wrk "
                    "counts each such close as a read error, though the answer was whole"
                )
        if a.warmup > 0:
            run_wrk(wrk_argv(url, a.warmup, app, close), a.warmup)
        argv = wrk_argv(url, a.duration, app, close)
        nginx_pid = self.nginx.pid if mode == "nginx" and self.nginx is not None else None
        before = process_tree(proc.pid)
        nginx_before = process_tree(nginx_pid) if nginx_pid else {}
        text, rc, served = run_wrk(argv, a.duration, None if close else port)
        after = process_tree(proc.pid)
        if nginx_pid:
            nginx_after = process_tree(nginx_pid)
            ticks = sum(
                nginx_after[p][1] + nginx_after[p][2] - nginx_before[p][1] - nginx_before[p][2]
                for p in nginx_after
                if p in nginx_before
            )
            c.nginx_cpu_s = ticks / CLK_TCK
        c.served = served
        if served and served[0] < served[1]:
            c.note = (
                c.note + f"; only {served[0]} of {served[1]} connections had been served "
                f"{a.duration / 2:g}s into the run"
            ).strip("; ")
        c.wrk = text
        c.__dict__.update({k: v for k, v in parse_wrk(text).items()})
        if rc != 0 or c.rps is None:
            c.note = f"wrk failed (exit {rc})"
        gone = set(before) - set(after)
        new = set(after) - set(before)
        ut = sum(after[p][1] - before[p][1] for p in after if p in before)
        st = sum(after[p][2] - before[p][2] for p in after if p in before)
        ut += sum(after[p][1] for p in new)
        st += sum(after[p][2] for p in new)
        c.cpu_user_s, c.cpu_sys_s = ut / CLK_TCK, st / CLK_TCK
        if c.requests:
            c.cpu_us_per_req = (ut + st) / CLK_TCK / c.requests * 1e6
        if gone or new:
            c.note = (
                c.note + f"; processes changed during the run: gone {sorted(gone)}, "
                f"new {sorted(new)} (a worker died?)"
            ).strip("; ")
        workers = [p for p in after if p != proc.pid and after[p][0] == proc.pid]
        c.rss_kib_per_worker = [r for r in (rss_kib(p) for p in workers) if r]
        if proc.poll() is not None:
            c.note = (c.note + f"; server exited with {proc.returncode}").strip("; ")
        new_log = log_path.read_bytes()[log_size:].decode(errors="replace")
        if re.search(r"Traceback|Error|error|CRITICAL|Exception", new_log):
            c.note = (
                c.note + "; server log: " + new_log.strip()[-300:].replace("\n", " | ")
            ).strip("; ")
        self.cells.append(c)
        self.raw.append({"cell": c.__dict__, "wrk_argv": argv, "server_log_tail": new_log[-2000:]})
        cpu = f"{c.cpu_us_per_req:.1f}" if c.cpu_us_per_req else "-"
        rps = f"{c.rps:.0f}" if c.rps else "-"
        conns = f"{served[0]}/{served[1]}" if served else "-"
        self.log(
            f"r{rnd} {app:12} {mode:9} {server.name:12} {rps:>7} req/s  {cpu:>6} µs/req CPU  "
            f"p50 {_lat(c.p50_us):>8} p99 {_lat(c.p99_us):>8}  conns {conns:>5}  "
            f"err {c.errors} non2xx {c.non2xx} {c.note}"
        )

    def plan(self, server: Server, app: str) -> list[tuple[str, list[str]]]:
        """The instances to start for one server and app, each with the cells it serves."""
        groups: dict[tuple, tuple[str, list[str]]] = {}
        for mode in (m for m in MODES if m in self.modes and m in server.modes):
            behind = "uwsgi" if server.nginx.startswith("uwsgi") else server.nginx
            proto = {"keepalive": "http", "close": "close", "nginx": behind}[mode]
            port = self.uwsgi_port[server.name] if proto == "uwsgi" else self.http_port[server.name]
            key = tuple(server.argv(APP_TARGETS[app], port, proto))
            groups.setdefault(key, (proto, []))[1].append(mode)
        return list(groups.values())

    def run(self):
        a = self.args
        t0 = time.monotonic()
        self.log(
            f"work dir {self.work}; ports http {self.http_port} uwsgi {self.uwsgi_port} "
            f"nginx {self.nginx_port}"
        )
        if "gameprogress" in self.apps:
            self.template_db = self.db_dir / "template.db"
            self.seeded_via = seed_database(self.template_db, self.work, self.started, self.log)
            self.log(f"seeded {DEVICES} devices via {self.seeded_via}")
        if "nginx" in self.modes:
            self.start_nginx()
        for rnd in range(1, a.rounds + 1):
            for app in self.apps:
                order = [s for s in self.servers if app in s.apps]
                shift = (rnd - 1) % len(order) if order else 0
                order = order[shift:] + order[:shift]  # each round starts with another server
                for server in order:
                    for proto, modes in self.plan(server, app):
                        self.instance(server, app, rnd, proto, modes)
            self.log(f"round {rnd} done after {time.monotonic() - t0:.0f}s")
        self.elapsed = time.monotonic() - t0

    def close(self):
        if self.nginx is not None:
            self.started.stop(self.nginx, signal.SIGQUIT)
        self.started.stop_all()
        shutil.rmtree(self.db_dir, ignore_errors=True)


# ------------------------------------------------------------------------------ report


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(cells: list[Cell]):
    """(server, app, mode) -> medians over rounds."""
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.server, c.app, c.mode), []).append(c)
    out = {}
    for key, cs in groups.items():
        ok = [c for c in cs if c.rps]
        rss = [statistics.mean(c.rss_kib_per_worker) / 1024 for c in ok if c.rss_kib_per_worker]
        out[key] = {
            "rounds": len(ok),
            "of": len(cs),
            "rps": median([c.rps for c in ok]),
            "p50_us": median([c.p50_us for c in ok]),
            "p99_us": median([c.p99_us for c in ok]),
            "errors": sum(c.errors for c in cs),
            "non2xx": sum(c.non2xx for c in cs),
            "requests": sum(c.requests for c in cs),
            "cpu": median([c.cpu_us_per_req for c in ok]),
            "cpu_sys_share": median(
                [
                    c.cpu_sys_s / (c.cpu_user_s + c.cpu_sys_s)
                    for c in ok
                    if c.cpu_user_s + c.cpu_sys_s
                ]
            ),
            "rss": median(rss),
            "nginx_cpu": median(
                [
                    c.nginx_cpu_s / c.requests * 1e6
                    for c in ok
                    if c.nginx_cpu_s is not None and c.requests
                ]
            ),
            "served": min(
                (c.served for c in ok if c.served),
                default=None,
                key=lambda x: x[0] / x[1] if x[1] else 1,
            ),
            "notes": sorted({c.note for c in cs if c.note}),
        }
    return out


def _fmt(v, spec, none="—"):
    return none if v is None else format(v, spec)


def _ratio(v, ref):
    if v is None or not ref:
        return "—"
    return f"{v / ref:.2f}×"


def _lat(us):
    if us is None:
        return "—"
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def versions() -> dict[str, str]:
    out = {
        "python": f"{platform.python_version()} ({os.path.realpath(sys.executable)})",
        "kernel": platform.release(),
    }
    for dist in (
        "forklift",
        "gunicorn",
        "pyuwsgi",
        "granian",
        "bjoern",
        "waitress",
        "flask",
        "werkzeug",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    for tool, argv in (("wrk", ["wrk", "-v"]), ("nginx", [nginx_binary(), "-v"])):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            text = (done.stdout + done.stderr).strip().splitlines()
            out[tool] = text[0] if text else "?"
        except OSError as exc:
            out[tool] = f"not found ({exc})"
    out["sqlite"] = sqlite3.sqlite_version
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        out["repo"] = rev + (" (uncommitted changes under src/)" if dirty else "")
    except OSError:
        pass
    try:
        out["cpu"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    out["cores"] = str(os.cpu_count())
    return out


def targets(summary) -> list[tuple[str, str, str, str]]:
    """The issue's targets, checked against this run's medians: (target, measured, verdict,
    what the python-floor row reaches on the same comparison, or "—")."""
    rows = []

    def get(server, app, mode, key):
        return summary.get((server, app, mode), {}).get(key)

    def check(label, value, ref, factor, higher_is_better, what, floor=None):
        def meets(ratio):
            return ratio >= factor if higher_is_better else ratio <= factor

        if value is None or ref is None:
            rows.append((label, "not measured", "—", "—"))
            return
        ratio = value / ref
        if meets(ratio):
            verdict = "met"
        elif higher_is_better:
            verdict = f"missed: {(1 - ratio / factor) * 100:.0f}% short"
        else:
            verdict = f"missed: {(ratio / factor - 1) * 100:.0f}% over"
        at_floor = "—"
        if floor is not None:
            at_floor = f"{floor / ref:.2f}×, " + ("meets it" if meets(floor / ref) else "misses")
        rows.append((label, f"{what} {ratio:.2f}×", verdict, at_floor))

    h, g = "hello", "gameprogress"
    for other, factor in (("bjoern", 1.4), ("uwsgi", 0.5), ("granian", 0.7)):
        check(
            f"hello keep-alive: CPU/req ≤ {factor} × {other}",
            get("forklift", h, "keepalive", "cpu"),
            get(other, h, "keepalive", "cpu"),
            factor,
            False,
            "forklift/" + other,
            floor=get(FLOOR, h, "keepalive", "cpu"),
        )
    check(
        "hello keep-alive: req/s ≥ 0.7 × bjoern",
        get("forklift", h, "keepalive", "rps"),
        get("bjoern", h, "keepalive", "rps"),
        0.7,
        True,
        "forklift/bjoern",
        floor=get(FLOOR, h, "keepalive", "rps"),
    )
    check(
        "hello Connection: close: req/s ≥ uWSGI",
        get("forklift", h, "close", "rps"),
        get("uwsgi", h, "close", "rps"),
        1.0,
        True,
        "forklift/uwsgi",
        floor=get(FLOOR, h, "close", "rps"),
    )
    for other, factor in (("uwsgi", 1.0), ("granian", 1.0), ("bjoern", 0.9)):
        check(
            f"gameprogress direct keep-alive: req/s ≥ {factor} × {other}",
            get("forklift", g, "keepalive", "rps"),
            get(other, g, "keepalive", "rps"),
            factor,
            True,
            "forklift/" + other,
            floor=get(FLOOR, g, "keepalive", "rps"),
        )
    check(
        "gameprogress direct keep-alive: p99 ≤ uWSGI",
        get("forklift", g, "keepalive", "p99_us"),
        get("uwsgi", g, "keepalive", "p99_us"),
        1.0,
        False,
        "forklift/uwsgi",
        floor=get(FLOOR, g, "keepalive", "p99_us"),
    )
    for app in (h, g):
        for other in ("uwsgi", "gunicorn"):
            check(
                f"{app} behind nginx (uwsgi protocol): req/s ≥ {other}",
                get("forklift", app, "nginx", "rps"),
                get(other, app, "nginx", "rps"),
                1.0,
                True,
                "forklift/" + other,
                floor=get(FLOOR, app, "nginx", "rps"),
            )
    # issue 17: nginx in front, direct per-connection cost, threads
    for app in (h, g):
        for row, how in (
            ("forklift", "uwsgi_pass TCP"),
            ("forklift-unix", "uwsgi_pass unix"),
            ("forklift-proxy", "proxy_pass keep-alive"),
        ):
            check(
                f"{app} behind nginx, forklift {how}: req/s ≥ 1.0 × uWSGI uwsgi_pass",
                get(row, app, "nginx", "rps"),
                get("uwsgi", app, "nginx", "rps"),
                1.0,
                True,
                f"{row}/uwsgi",
                floor=get(FLOOR, app, "nginx", "rps") if row == "forklift" else None,
            )
            check(
                f"{app} behind nginx, forklift {how}: server CPU/req ≤ uWSGI's",
                get(row, app, "nginx", "cpu"),
                get("uwsgi", app, "nginx", "cpu"),
                1.0,
                False,
                f"{row}/uwsgi",
                floor=get(FLOOR, app, "nginx", "cpu") if row == "forklift" else None,
            )
    check(
        "hello Connection: close: CPU/req ≤ 1.5 × uWSGI",
        get("forklift", h, "close", "cpu"),
        get("uwsgi", h, "close", "cpu"),
        1.5,
        False,
        "forklift/uwsgi",
        floor=get(FLOOR, h, "close", "cpu"),
    )
    check(
        "hello keep-alive: CPU/req ≤ 1.6 × bjoern",
        get("forklift", h, "keepalive", "cpu"),
        get("bjoern", h, "keepalive", "cpu"),
        1.6,
        False,
        "forklift/bjoern",
        floor=get(FLOOR, h, "keepalive", "cpu"),
    )
    check(
        "hello keep-alive: req/s ≥ 1.2 × granian",
        get("forklift", h, "keepalive", "rps"),
        get("granian", h, "keepalive", "rps"),
        1.2,
        True,
        "forklift/granian",
        floor=get(FLOOR, h, "keepalive", "rps"),
    )
    check(
        "gameprogress --threads 4 nginx: req/s ≥ 0.95 × --threads 1",
        get("forklift-t4", g, "nginx", "rps"),
        get("forklift", g, "nginx", "rps"),
        0.95,
        True,
        "t4/t1",
    )
    # Ratios between two forklift rows of the same run, in every mode:
    # (what, apps, row, reference row, factor, ratio's name).
    same_run = (
        # issue 10: threads cost little on the mix
        ("--threads 4 req/s ≥ 0.9 × --threads 1", (g,), "forklift-t4", "forklift", 0.9, "t4/t1"),
        # issue 15: a change of structure costs no speed (within 5% of the code before it)
        ("req/s ≥ 0.95 × the code before (--before)", (h, g), "forklift", "forklift-before",
         0.95, "now/before"),
        # issue 19: metrics are on by default; they may cost at most 3% of req/s
        ("metrics on req/s ≥ 0.97 × metrics off", (h,), "forklift", "forklift-nometrics",
         0.97, "on/off"),
    )  # fmt: skip
    for what, apps, row, reference, factor, name in same_run:
        for app in apps:
            for mode in MODES:
                rps, ref_rps = get(row, app, mode, "rps"), get(reference, app, mode, "rps")
                check(f"{app} {mode}: {what}", rps, ref_rps, factor, True, name)
    for app in (h, g):
        check(
            f"{app}: RSS per worker ≤ gunicorn",
            get("forklift", app, "keepalive", "rss"),
            get("gunicorn", app, "keepalive", "rss"),
            1.0,
            False,
            "forklift/gunicorn",
            floor=get(FLOOR, app, "keepalive", "rss"),
        )
    return rows


def write_chart(summary, bench: Bench, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    apps = [a for a in bench.apps]
    modes = [m for m in MODES if m in bench.modes]
    servers = [s.name for s in bench.servers]
    fig, axes = plt.subplots(2, len(apps), figsize=(7 * len(apps), 8), squeeze=False)
    width = 0.8 / max(1, len(servers))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, app in enumerate(apps):
        for row, (key, ylabel) in enumerate(
            (("rps", "requests/s"), ("cpu", "server CPU µs per request"))
        ):
            ax = axes[row][col]
            for i, server in enumerate(servers):
                xs, ys = [], []
                for j, mode in enumerate(modes):
                    v = summary.get((server, app, mode), {}).get(key)
                    if v is not None:
                        xs.append(j + (i - (len(servers) - 1) / 2) * width)
                        ys.append(v)
                if xs:
                    ax.bar(xs, ys, width, label=server, color=colors[i % len(colors)])
            ax.set_xticks(range(len(modes)))
            ax.set_xticklabels(modes)
            ax.set_ylabel(ylabel)
            ax.set_title(
                f"{app}: {ylabel}"
                + (" (higher is better)" if key == "rps" else " (lower is better)")
            )
            ax.grid(axis="y", alpha=0.3)

    from matplotlib.patches import Patch

    fig.legend(
        handles=[Patch(color=colors[i % len(colors)], label=s) for i, s in enumerate(servers)],
        loc="upper right",
        ncol=len(servers),
        fontsize=9,
        bbox_to_anchor=(0.99, 0.955),
    )
    fig.suptitle(
        f"forklift bench {datetime.date.today()}: {WORKERS} processes each, "
        f"wrk -t1 -c{CONNECTIONS}, "
        f"medians of {bench.args.rounds} round(s)"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(bench: Bench, out_dir: Path, command: str):
    a = bench.args
    summary = summarize(bench.cells)
    stem = a.name or datetime.date.today().isoformat()
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, png_path, raw_path = (out_dir / f"{stem}{ext}" for ext in (".md", ".png", ".raw"))
    try:
        write_chart(summary, bench, png_path)
        chart = f"![requests/s and CPU per request]({png_path.name})"
    except Exception as exc:  # noqa: BLE001 - the table matters more than the chart
        chart = f"(chart failed: {exc})"
    v = versions()
    L = []
    L.append(f"# forklift bench — {datetime.date.today().isoformat()}\n")
    L.append(
        f"`{command}` — {a.rounds} round(s), wrk warm-up {a.warmup:g}s then "
        f"{a.duration:g}s per cell, "
        f"servers interleaved (each round starts with another server); medians over rounds. "
        f"Run took {bench.elapsed / 60:.1f} min on {v.get('cores')} cores ({v.get('cpu', '?')}).\n"
    )
    L.append(
        "Columns: **req/s** and latency from `wrk -t1 -c64 --latency`; **errors** = wrk socket "
        "errors (connect+read+write+timeout, summed over rounds); **non-2xx** = wrk's non-2xx/3xx "
        "count (summed); "
        "**CPU/req** = utime+stime of the server's whole process tree (master and workers, from "
        "/proc/PID/stat before and after the run) divided by the requests wrk completed — wrk, and "
        "nginx in the nginx rows, share the 2 cores and are not counted; **sys** = kernel share of "
        "that CPU; **RSS/worker** = mean VmRSS of the worker processes right after the run; "
        "**conns served** = how many of wrk's connections had received any answer halfway "
        "through the run (from `ss -tni`; a server that holds one keep-alive connection per "
        "thread can leave the rest waiting, which wrk does not report); **nginx CPU/req** = "
        "nginx's own CPU per request in the nginx rows, not included in CPU/req. "
        "Ratios are to forklift (`--threads 1`) in the same cell: for req/s higher is better, "
        "for CPU/req, latency and RSS lower is better.\n"
    )
    L.append(chart + "\n")
    for app in bench.apps:
        for mode in bench.modes:
            rows = [s for s in bench.servers if app in s.apps and (s.name, app, mode) in summary]
            if not rows:
                continue
            ref = summary.get(("forklift", app, mode), {})
            L.append(f"## {app} — {MODE_TITLES[mode]}\n")
            extra = (" nginx CPU/req |", "---:|") if mode == "nginx" else ("", "")
            L.append(
                "| server | req/s | × fk | p50 | p99 | × fk | errors | non-2xx | CPU/req | × fk "
                "| sys | RSS/worker | × fk | conns served |" + extra[0]
            )
            L.append(
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + extra[1]
            )
            for s in rows:
                d = summary[(s.name, app, mode)]
                name = s.name + (
                    f" ({d['rounds']}/{d['of']} rounds)" if d["rounds"] != d["of"] else ""
                )
                L.append(
                    f"| {name} | {_fmt(d['rps'], ',.0f')} | {_ratio(d['rps'], ref.get('rps'))} "
                    f"| {_lat(d['p50_us'])} | {_lat(d['p99_us'])} "
                    f"| {_ratio(d['p99_us'], ref.get('p99_us'))} "
                    f"| {d['errors']} | {d['non2xx']} "
                    f"| {_fmt(d['cpu'], '.1f')} µs | {_ratio(d['cpu'], ref.get('cpu'))} "
                    f"| {_fmt(d['cpu_sys_share'] and d['cpu_sys_share'] * 100, '.0f')}% "
                    f"| {_fmt(d['rss'], '.1f')} MiB | {_ratio(d['rss'], ref.get('rss'))} "
                    f"| {'%d/%d' % tuple(d['served']) if d['served'] else '—'} |"
                    + (f" {_fmt(d['nginx_cpu'], '.1f')} µs |" if mode == "nginx" else "")
                )
            L.append("")
    notes = [(k, d["notes"]) for k, d in sorted(summary.items()) if d["notes"]]
    if notes:
        L.append("## Problems seen during the run\n")
        for (server, app, mode), ns in notes:
            for n in ns:
                L.append(f"- **{server}**, {app}, {mode}: {n}")
        L.append("")
    L.append("## Targets of issue 10 (this run's medians)\n")
    L.append(
        f"The last column: the same ratio for the `{FLOOR}` row (bench/servers/python_floor.py), "
        "the least any pure-Python server does per request. Where it misses too, the target is "
        "below what interpreted Python reaches on this machine.\n"
    )
    L.append(f"| target | measured | verdict | {FLOOR} |")
    L.append("|---|---|---|---|")
    for label, measured, verdict, at_floor in targets(summary):
        L.append(f"| {label} | {measured} | {verdict} | {at_floor} |")
    L.append("")
    L.append("## Settings (2 worker processes everywhere; access logs off everywhere)\n")
    for s in bench.servers:
        L.append(f"- **{s.name}**: {s.settings}")
    L.append(
        f"- **gameprogress**: `gameprogress.wsgi:app`, SQLite (WAL) with {DEVICES:,} devices "
        f"`{ID_PREFIX}00000`…, seeded once through {getattr(bench, 'seeded_via', '—')}, the file "
        f"copied afresh for every server start, in {bench.args.db_dir or 'the temp dir'}; load "
        "from `bench/gameprogress.lua`: 90% `GET /deviceId=<id>`, "
        "10% `GET /update/<id>/<0..1000>`, ids uniform at random."
    )
    L.append(
        "- **nginx**: started by the run with its own prefix and config (below), "
        "`worker_processes 2`, access log off; uwsgi_pass opens one backend connection per "
        "request (the uwsgi protocol has "
        "no keep-alive), proxy_pass keeps up to 64 idle upstream connections.\n"
    )
    L.append("## Exact commands\n")
    L.append("Ports are picked free at start; here as they were in this run.\n")
    L.append("```")
    for key, argv in bench.commands.items():
        L.append(f"# {key}")
        L.append(" ".join(_shell_quote(x) for x in argv).replace(str(REPO) + "/", ""))
    L.append("# wrk, per cell (after a warm-up run of the same command with -d%gs)" % a.warmup)
    L.append(
        " ".join(
            _shell_quote(x) for x in wrk_argv(f"http://{HOST}:PORT/", a.duration, "hello", False)
        )
    )
    L.append(
        " ".join(
            _shell_quote(x) for x in wrk_argv(f"http://{HOST}:PORT/", a.duration, "hello", True)
        )
    )
    L.append(
        " ".join(
            _shell_quote(x)
            for x in wrk_argv(f"http://{HOST}:PORT/", a.duration, "gameprogress", False)
        ).replace(str(REPO) + "/", "")
    )
    if bench.nginx is not None or getattr(bench, "nginx_argv", None):
        L.append("# nginx")
        L.append(" ".join(_shell_quote(x) for x in bench.nginx_argv))
    L.append("```\n")
    if getattr(bench, "nginx_conf_text", None):
        L.append("<details><summary>nginx.conf</summary>\n\n```nginx")
        L.append(bench.nginx_conf_text.strip())
        L.append("```\n</details>\n")
    L.append("## Versions\n")
    for k, val in v.items():
        L.append(f"- {k}: {val}")
    L.append("")
    md_path.write_text("\n".join(L))
    raw_path.write_text(
        json.dumps(
            {
                "summary": {"|".join(k): d for k, d in summary.items()},
                "cells": bench.raw,
                "log": bench.logs,
            },
            indent=1,
            default=str,
        )
    )
    return md_path, png_path


def _shell_quote(s: str) -> str:
    import shlex

    return shlex.quote(str(s))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="1 round, 2s runs, 0.5s warm-ups")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per measured wrk run")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of wrk before each run")
    p.add_argument("--servers", help="comma-separated subset (default: all)")
    p.add_argument(
        "--before",
        metavar="SRC",
        help="also run the forklift-before row: the src/ directory of an older checkout "
        "(git worktree add /tmp/before COMMIT; --before /tmp/before/src)",
    )
    p.add_argument("--apps", default="hello,gameprogress")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--out", default=str(BENCH / "results"), help="results directory")
    p.add_argument("--name", help="results file stem (default: today's date)")
    p.add_argument(
        "--db-dir",
        default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
        help="where the gameprogress SQLite files go (default: /dev/shm, a tmpfs)",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.duration, a.warmup = 1, 2.0, 0.5
    if a.before:
        # Only the older forklift package: the apps (gameprogress and its database schema)
        # stay this checkout's, so the row compares servers, not apps.
        only = Path(tempfile.mkdtemp(prefix="forklift-before-"))
        (only / "forklift").symlink_to(Path(os.path.abspath(a.before)) / "forklift")
        BEFORE_SRC.append(str(only))
    default = [n for n in SERVER_BY_NAME if a.before or n != "forklift-before"]
    a.servers = [s for s in a.servers.split(",") if s] if a.servers else default
    if "forklift-before" in a.servers and not a.before:
        p.error("the forklift-before row needs --before SRC")
    a.apps = [x for x in a.apps.split(",") if x]
    a.modes = [x for x in a.modes.split(",") if x]
    for name in a.servers:
        if name not in SERVER_BY_NAME:
            p.error(f"unknown server {name!r}; known: {', '.join(SERVER_BY_NAME)}")
    for x in a.apps:
        if x not in APP_TARGETS:
            p.error(f"unknown app {x!r}")
    for x in a.modes:
        if x not in MODES:
            p.error(f"unknown mode {x!r}")
    command = "bench/run " + " ".join(
        _shell_quote(x) for x in (argv if argv is not None else sys.argv[1:])
    )
    bench = Bench(a)
    cells = sum(len(a.modes) for s in bench.servers for app in a.apps if app in s.apps)
    bench.log(
        f"{cells} cells × {a.rounds} rounds, about "
        f"{cells * a.rounds * (a.duration + a.warmup + 1.2) / 60:.1f} min"
    )

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.log("interrupted: writing what was measured")
        bench.elapsed = 0.0
    finally:
        bench.close()
    md, png = write_report(bench, Path(a.out), command.strip())
    print(f"\nresults: {md}\nchart:   {png}\nserver logs and nginx config: {bench.work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
