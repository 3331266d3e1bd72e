"""Real processes for the end-to-end tests: forklift, Debian's nginx, raw uwsgi peers.

Everything runs in temp dirs on 127.0.0.1 (or unix sockets), is found by what it logs or by
a connect, and is stopped by its pid (TERM, a bounded wait, then KILL). Every wait is bounded.

nginx is started as the brief of issue 11 says: its own prefix, config, pid file, error log
and temp paths inside a temp dir, `daemon off`, on a free port; never the system service.
Temp dirs are made world-readable (0755): nginx's workers run as `nobody` when the tests run
as root, and so do forklift workers after `uid = nobody`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import support
from support import free_port, pid_alive, stop_process, wait_until

__all__ = ["free_port", "pid_alive", "stop_process", "wait_until"]  # for the e2e tests

HERE = Path(__file__).resolve().parent
SEED_APP = HERE / "seed_app"
VENV_BIN = Path(sys.executable).parent
FORKLIFT = str(VENV_BIN / "forklift") if (VENV_BIN / "forklift").exists() else "forklift"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
UWSGI_PARAMS_FILE = "/etc/nginx/uwsgi_params"  # Debian's, as the seed's `include` expects

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


# --- small things --------------------------------------------------------------------------------


def make_dir(prefix: str) -> Path:
    """A short temp dir (unix socket paths must fit ~107 bytes), readable by `nobody`."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


# --- forklift ------------------------------------------------------------------------------------


class Forklift(support.Forklift):
    """`forklift ARGS` in a subprocess, started from `cwd`; its listeners found in its error log.

    The error log is its stderr, or `log_path` when the config sends it elsewhere (`logto`).
    The shared harness with the e2e tests' way of naming things: the whole command line in
    `args` (an ini file usually), run from `cwd`, several servers in one directory.
    """

    def __init__(
        self,
        args: list,
        cwd: Path,
        *,
        env: dict | None = None,
        log_path: Path | None = None,
        listeners: int = 1,
    ):
        super().__init__(
            Path(cwd), None, *args, env=env, listen=(), chdir=None, error_log=log_path, cwd=cwd
        )
        self.stdout_path = self.dir / f"forklift-{id(self)}.out"
        self.stderr_path = self.dir / f"forklift-{id(self)}.err"
        if log_path is None:
            self.error_log = self.stderr_path
        self.expected = listeners

    def start(self) -> Forklift:
        # Listeners are bound before the workers fork: a request made now waits in the
        # backlog until a worker has imported the app.
        super().start(listeners=self.expected)
        return self

    def port(self, protocol: str, index: int = 0) -> int:
        return self.address(protocol, index)[1]


# --- nginx ---------------------------------------------------------------------------------------

_TEMP_PATHS = ("client_body", "proxy", "uwsgi", "fastcgi", "scgi")


def temp_path_lines(directory: Path) -> str:
    """nginx's temp paths inside `directory` (Debian compiles /var/lib/nginx/* in)."""
    return "".join(f"    {name}_temp_path {directory}/{name}_temp;\n" for name in _TEMP_PATHS)


def nginx_conf(directory: Path, servers: str) -> str:
    """A whole nginx.conf around `servers` (server/upstream blocks), everything in `directory`."""
    return (
        "worker_processes 2;\n"
        f"pid {directory}/nginx.pid;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        "    access_log off;\n"
        "    default_type application/octet-stream;\n"
        f"{temp_path_lines(directory)}"
        f"{servers}\n"
        "}\n"
    )


def generated_conf(args: list, directory: Path, *, temp_paths: bool = True) -> str:
    """`forklift nginx-config ARGS --full`, post-processed only where a test must:

    - the `pid` line points into `directory` (the generated one is /run/nginx-forklift.pid,
      the system's; `forklift nginx-config` has no option for it);
    - with `temp_paths`, nginx's temp paths are added at the top of `http {` so uploads are
      buffered inside the temp dir rather than in Debian's /var/lib/nginx.

    `listen` is never edited: the tests pass `--listen 127.0.0.1:PORT` to nginx-config.
    """
    text = subprocess.run(
        [FORKLIFT, "nginx-config", *args, "--full"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    text, count = re.subn(r"(?m)^pid .*;$", f"pid {directory}/nginx.pid;", text)
    assert count == 1, f"expected one pid line in the generated config:\n{text}"
    if temp_paths:
        text = text.replace("http {\n", "http {\n" + temp_path_lines(directory), 1)
    return text


class Nginx:
    """Debian's nginx with `-p DIR -c DIR/nginx.conf`, in the foreground, stopped by its pid."""

    def __init__(self, directory: Path, conf: str, port: int):
        self.dir = Path(directory)
        self.conf = conf
        self.port = port
        self.conf_path = self.dir / "nginx.conf"
        self.error_log = self.dir / "error.log"
        self.proc: subprocess.Popen | None = None

    def command(self, *extra: str) -> list:
        return [
            NGINX,
            "-p",
            f"{self.dir}/",
            "-c",
            str(self.conf_path),
            "-g",
            f"daemon off; error_log {self.error_log} info;",
            *extra,
        ]

    def check(self) -> subprocess.CompletedProcess:
        """`nginx -t` on the config."""
        self.conf_path.write_text(self.conf)
        return subprocess.run(
            self.command("-t"), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )

    def start(self) -> Nginx:
        result = self.check()
        assert result.returncode == 0, f"nginx -t failed:\n{result.stderr}\n{self.conf}"
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "nginx.stderr", "wb"),  # noqa: SIM115 - the child keeps it
        )

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.errors()}")
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True

        try:
            wait_until(listening, START_TIMEOUT, what="nginx to listen", ignoring=(OSError,))
        except AssertionError:
            self.stop()
            raise RuntimeError(f"nginx did not listen on {self.port}:\n{self.errors()}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGQUIT)  # graceful: workers finish, then exit
            self.proc = None

    def errors(self) -> str:
        text = ""
        for name in ("error.log", "nginx.stderr"):
            try:
                text += (self.dir / name).read_text(errors="replace")
            except OSError:
                pass
        return text

    def connection(self, timeout: float = 20.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path: str, headers: dict | None = None) -> tuple:
        """One GET on a new connection: (status, headers, body bytes)."""
        conn = self.connection()
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()


def start_nginx(directory: Path, make_conf, attempts: int = 3) -> Nginx:
    """Start nginx with `make_conf(port)` on a free port, retrying if the port got taken."""
    last = None
    for _ in range(attempts):
        port = free_port()
        server = Nginx(directory, make_conf(port), port)
        try:
            return server.start()
        except (RuntimeError, AssertionError) as exc:
            last = exc
            server.stop()
            if "Address already in use" not in server.errors():
                raise
    raise RuntimeError(f"nginx could not get a free port: {last}")


# --- the uwsgi protocol by hand (independent of forklift.uwsgi) ----------------------------------


def _b(value) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


def uwsgi_vars(pairs) -> bytes:
    """The vars block for (name, value) pairs (str as latin-1, or bytes)."""
    out = bytearray()
    for name, value in pairs:
        name_b, value_b = _b(name), _b(value)
        out += struct.pack("<H", len(name_b)) + name_b + struct.pack("<H", len(value_b)) + value_b
    return bytes(out)


def uwsgi_packet(pairs, *, modifier1: int = 0, modifier2: int = 0, datasize: int | None = None):
    """Header + vars block; `datasize` overrides the size field (to lie about it)."""
    block = uwsgi_vars(pairs)
    size = len(block) if datasize is None else datasize
    return struct.pack("<BHB", modifier1, size, modifier2) + block


def request_vars(path: str = "/", method: str = "GET", query: str = "", **extra) -> list:
    """What nginx's uwsgi_params would send for a simple request."""
    uri = path + ("?" + query if query else "")
    pairs = [
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", method),
        ("CONTENT_TYPE", ""),
        ("CONTENT_LENGTH", ""),
        ("REQUEST_URI", uri),
        ("PATH_INFO", path),
        ("DOCUMENT_ROOT", "/nonexistent"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "192.0.2.10"),
        ("REMOTE_PORT", "40000"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "e2e.test"),
        ("HTTP_HOST", "e2e.test"),
    ]
    for name, value in extra.items():
        pairs = [(n, v) for n, v in pairs if n != name] + [(name, value)]
    return pairs


def connect(address, timeout: float = 10.0) -> socket.socket:
    """A client socket to (host, port) or a unix path."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
        return sock
    sock = socket.create_connection(address, timeout=timeout)
    return sock


def read_until_close(sock: socket.socket, timeout: float = 10.0, limit: int = 64 << 20) -> bytes:
    """Everything the peer sends until it closes; a reset counts as a close."""
    sock.settimeout(timeout)
    chunks = []
    size = 0
    deadline = time.monotonic() + timeout
    while size < limit and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            raise AssertionError(f"the peer did not close within {timeout}s") from None
        if not data:
            break
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)


def uwsgi_exchange(address, data: bytes, *, shut: bool = False, timeout: float = 10.0) -> bytes:
    """Send `data` on a new connection (optionally close our side) and read until close."""
    with connect(address, timeout) as sock:
        try:
            sock.sendall(data)
            if shut:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_close(sock, timeout)


def parse_response(raw: bytes) -> tuple:
    """(status, {lowercase name: value}, body) of a close-delimited HTTP/1.x response."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {raw[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def json_body(raw: bytes) -> dict:
    status, _headers, body = parse_response(raw)
    assert status == 200, raw[:500]
    return json.loads(body)


# --- HTTP by hand (raw bytes in the request line, streaming) -------------------------------------


def dechunk(data: bytes) -> bytes:
    """The payload of a chunked body (trailers ignored); AssertionError if malformed."""
    out = bytearray()
    pos = 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        pos = end + 2
        if size == 0:
            return bytes(out)
        out += data[pos : pos + size]
        assert data[pos + size : pos + size + 2] == b"\r\n", "bad chunk framing"
        pos += size + 2


def http_exchange(port: int, request: bytes, timeout: float = 15.0) -> tuple:
    """Send a raw HTTP request (which should say `Connection: close`) to 127.0.0.1:port;
    (status, headers, body) with the body de-chunked when it was chunked."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        raw = read_until_close(sock, timeout)
    status, headers, body = parse_response(raw)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = dechunk(body)
    return status, headers, body
