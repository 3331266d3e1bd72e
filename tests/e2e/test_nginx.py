"""forklift behind Debian's real nginx (issue 11): the seed's stack, then uwsgi_pass and
proxy_pass as `forklift nginx-config` writes them.

What is changed from the seed, and only that (see seed_app/README.md):
- uwsgi.ini: `chdir` and `logto` point into the temp dir; `socket = :6000` becomes
  `socket = :PORT` (a free port). forklift is started exactly as `forklift --ini uwsgi.ini`
  from the temp dir. `manager.py` is copied as `manage.py`, the name the ini gives.
- the nginx `location /` block: only the port of `uwsgi_pass localhost:6000`. Its
  `include uwsgi_params` is relative, so Debian's /etc/nginx/uwsgi_params is copied next to
  the temp nginx.conf, where nginx looks for it.

Generated nginx configs (`forklift nginx-config ... --full`) are post-processed in two ways,
both said where they happen (nginx_support.generated_conf): the `pid` line is pointed into
the temp dir, and (except in the "as generated" tests) nginx's temp paths are added so
bodies are buffered in the temp dir. `listen` is set with nginx-config's own `--listen`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from nginx_support import (
    FORKLIFT,
    SEED_APP,
    UWSGI_PARAMS_FILE,
    Forklift,
    dechunk,
    free_port,
    generated_conf,
    http_exchange,
    make_dir,
    nginx_conf,
    parse_response,
    pid_alive,
    read_until_close,
    start_nginx,
    wait_until,
)

pytestmark = pytest.mark.requires("nginx")

MODES = ("uwsgi", "http")


def _cleanup(*dirs: Path) -> None:
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)


# --- the seed, as written ------------------------------------------------------------------------


def write_seed(directory: Path, port: int) -> Path:
    """The seed's files in `directory`, with only chdir, logto and the socket port changed."""
    ini = (SEED_APP / "uwsgi.ini").read_text(encoding="utf-8")
    for old, new in (
        ("chdir = /root/longpf/myflask\n", f"chdir = {directory}\n"),
        ("logto = /root/longpf/myflask/log.log\n", f"logto = {directory}/log.log\n"),
        ("socket = :6000\n", f"socket = :{port}\n"),
    ):
        assert ini.count(old) == 1, old
        ini = ini.replace(old, new)
    (directory / "uwsgi.ini").write_text(ini, encoding="utf-8")
    shutil.copy(SEED_APP / "manager.py", directory / "manage.py")  # the ini's wsgi-file
    shutil.copy(SEED_APP / "sql.py", directory / "sql.py")
    return directory / "uwsgi.ini"


def seed_nginx_conf(nginx_dir: Path, upstream_port: int):
    """nginx.conf with the seed's server block around its verbatim `location /` block."""
    location = (SEED_APP / "nginx_location.conf").read_text()
    assert location.count("localhost:6000;") == 1
    location = location.replace("localhost:6000;", f"localhost:{upstream_port};")
    shutil.copy(UWSGI_PARAMS_FILE, nginx_dir / "uwsgi_params")

    def make(port: int) -> str:
        server = (
            "    server {\n"
            f"        listen       127.0.0.1:{port};\n"
            "        server_name  49.233.46.38;\n"
            "\n"
            "        charset      utf-8; \n"
            f"{location}"
            "    }\n"
        )
        return nginx_conf(nginx_dir, server)

    return make


@pytest.fixture(scope="module")
def seed():
    app_dir = make_dir("fl-seed-")
    nginx_dir = make_dir("fl-seed-ngx-")
    server = None
    front = None
    try:
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = free_port("0.0.0.0")
            write_seed(app_dir, port)
            server = Forklift(["--ini", "uwsgi.ini"], app_dir, log_path=app_dir / "log.log")
            try:
                server.start()
                break
            except RuntimeError as exc:
                if "in use" not in str(exc):
                    raise
        assert server is not None and server.listeners, "forklift --ini uwsgi.ini did not start"
        assert server.listeners[0] == (f"0.0.0.0:{port}", "uwsgi")
        front = start_nginx(nginx_dir, seed_nginx_conf(nginx_dir, port))
        yield {"dir": app_dir, "forklift": server, "nginx": front, "port": port}
    finally:
        if front is not None:
            front.stop()
        if server is not None:
            server.stop()
        _cleanup(app_dir, nginx_dir)


def _seed_json(front, path: str) -> dict:
    status, headers, body = front.get(path)
    assert status == 200, (path, status, body[:300], front.errors()[-2000:])
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


def test_seed_search_and_update_through_nginx(seed):
    front = seed["nginx"]
    assert _seed_json(front, "/deviceId=abc") == {
        "error": 1,
        "msg": "未查找到了deviceId为abc的用户",
    }
    assert _seed_json(front, "/update/abc/7") == {"error": 0, "msg": "设置成功"}
    before = int(time.time())
    found = _seed_json(front, "/deviceId=abc")
    assert found["error"] == 0
    match = re.fullmatch(
        r"查找到了deviceId为abc的用户, 最高到达7关卡, 最后提交的时间为 (\d+)", found["msg"]
    )
    assert match, found
    assert abs(int(match.group(1)) - before) <= 5
    # The seed's other routes, and a path its int converter refuses.
    assert front.get("/")[::2] == (200, b"Hello longpf")
    assert front.get("/longpf")[::2] == (200, b"Hello longpf123")
    assert front.get("/update/abc/seven")[0] == 404


def test_seed_runs_as_uwsgi_would(seed):
    """`forklift --ini uwsgi.ini`: the log went to `logto`, the pidfile where the ini said,
    no warning about the seed's keys (they are all known), nothing on stderr but startup."""
    app_dir = seed["dir"]
    server = seed["forklift"]
    pidfile = app_dir / "uwsgi.pid"
    assert pidfile.read_text().strip() == str(server.pid)
    log = server.log()
    assert f"listening on 0.0.0.0:{seed['port']} (uwsgi)" in log
    assert "unknown option" not in log + server.stderr()
    assert "Traceback" not in log + server.stderr()
    # uWSGI's logto carries the request lines too.
    seed["nginx"].get("/longpf")
    wait_until(lambda: "/longpf" in server.log(), 5, what="the request line in logto")


def test_seed_nginx_config_from_its_ini_passes_t_and_serves(seed):
    """`forklift nginx-config --ini uwsgi.ini` on the seed's own file."""
    nginx_dir = make_dir("fl-seed-gen-")
    front = None
    try:
        front = start_nginx(
            nginx_dir,
            lambda port: generated_conf(
                ["--ini", str(seed["dir"] / "uwsgi.ini"), "--listen", f"127.0.0.1:{port}"],
                nginx_dir,
                temp_paths=False,
            ),
        )
        assert f"server 127.0.0.1:{seed['port']};" in front.conf
        assert _seed_json(front, "/update/gen/3") == {"error": 0, "msg": "设置成功"}
        assert _seed_json(front, "/deviceId=gen")["error"] == 0
    finally:
        if front is not None:
            front.stop()
        _cleanup(nginx_dir)


# --- uwsgi_pass and proxy_pass, as generated -----------------------------------------------------


@pytest.fixture(scope="module")
def backend():
    """One forklift serving probe.py on a uwsgi socket and an HTTP port at once."""
    directory = make_dir("fl-probe-")
    shutil.copy(SEED_APP / "probe.py", directory / "probe.py")
    server = Forklift(
        [
            "--socket",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--processes",
            "2",
            "--threads",
            "4",
            "--pidfile",
            str(directory / "forklift.pid"),
            "--chdir",
            str(directory),
            "--disable-logging",
            "probe:application",
        ],
        directory,
        env={"PROBE_DIR": str(directory)},
        listeners=2,
    ).start()
    try:
        yield server, directory
    finally:
        server.stop()
        _cleanup(directory)


@pytest.fixture(scope="module")
def fronts(backend):
    """nginx for each mode, from `forklift nginx-config --socket|--http ADDR`."""
    server, _ = backend
    started = {}
    dirs = []
    try:
        for mode in MODES:
            host, port = server.address(mode)
            nginx_dir = make_dir(f"fl-ngx-{mode}-")
            dirs.append(nginx_dir)
            started[mode] = start_nginx(
                nginx_dir,
                lambda p, mode=mode, host=host, port=port, d=nginx_dir: generated_conf(
                    [
                        f"--{'socket' if mode == 'uwsgi' else 'http'}",
                        f"{host}:{port}",
                        "--server-name",
                        "e2e.test",
                        "--listen",
                        f"127.0.0.1:{p}",
                    ],
                    d,
                ),
            )
        yield started
    finally:
        for front in started.values():
            front.stop()
        _cleanup(*dirs)


@pytest.fixture(params=MODES)
def front(request, fronts):
    return fronts[request.param]


def _post(front, path: str, body, headers: dict) -> dict:
    conn = front.connection(timeout=60)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, (resp.status, data[:300], front.errors()[-2000:])
    return json.loads(data)


def test_upload_of_10_mb(front):
    body = random.Random(11).randbytes(10_000_000)  # under the generated 10m limit
    got = _post(front, "/upload", body, {"Content-Type": "application/octet-stream"})
    assert got["size"] == len(body)
    assert got["sha256"] == hashlib.sha256(body).hexdigest()
    assert got["CONTENT_LENGTH"] == str(len(body))


def test_chunked_upload_is_reframed_by_nginx(front):
    rng = random.Random(12)
    chunks = [rng.randbytes(rng.randint(1, 70_000)) for _ in range(40)]
    whole = b"".join(chunks)
    # An iterator and no Content-Length: http.client sends Transfer-Encoding: chunked.
    got = _post(front, "/upload", iter(chunks), {"Content-Type": "application/octet-stream"})
    assert got["size"] == len(whole)
    assert got["sha256"] == hashlib.sha256(whole).hexdigest()
    # nginx buffered the chunked body and sends its length. Regression (fixed) in uwsgi mode:
    # nginx also passes the client's Transfer-Encoding as HTTP_TRANSFER_ENCODING, and forklift
    # hands it to the app with CONTENT_LENGTH and no wsgi.input_terminated; in HTTP mode the
    # app sees Content-Length only. Werkzeug then reads the body as empty (next test).
    assert got["CONTENT_LENGTH"] == str(len(whole))
    assert got["HTTP_TRANSFER_ENCODING"] is None


def test_flask_sees_a_chunked_upload_through_nginx(front):
    """What the seed's stack (Flask) makes of a chunked upload: request.get_data()."""
    rng = random.Random(13)
    chunks = [rng.randbytes(rng.randint(1, 20_000)) for _ in range(20)]
    whole = b"".join(chunks)
    got = _post(front, "/flask-upload", iter(chunks), {"Content-Type": "application/octet-stream"})
    assert got == {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    got = _post(front, "/flask-upload", whole, {"Content-Type": "application/octet-stream"})
    assert got == {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}


def test_streamed_response_reaches_the_client_before_it_ends(front, backend):
    flag = f"flag-{front.port}-{time.monotonic_ns()}"
    _, directory = backend
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:
        request = f"GET /stream?flag={flag} HTTP/1.1\r\nHost: e2e.test\r\nConnection: close\r\n"
        sock.sendall(request.encode() + b"\r\n")
        received = b""
        deadline = time.monotonic() + 4.0  # the app waits 5 s for the flag
        while b"first\n" not in received and time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            received += data
        assert b"first\n" in received, f"the first piece was not streamed: {received[:300]!r}"
        (directory / flag).write_bytes(b"")
        sock.settimeout(10)
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    payload = dechunk(body)
    assert payload.startswith(b"first\nreleased\n"), payload[:100]
    assert payload.endswith(b"end\n") and len(payload) == 6 + 9 + 100_000 + 4


def test_client_keep_alive_to_nginx(front):
    conn = front.connection()
    try:
        conn.request("GET", "/echo?n=0")
        resp = conn.getresponse()
        resp.read()
        sock = conn.sock
        for n in range(1, 60):
            conn.request("GET", f"/echo?n={n}")
            resp = conn.getresponse()
            data = json.loads(resp.read())
            assert resp.status == 200 and not resp.will_close
            assert data["environ"]["QUERY_STRING"] == f"n={n}"
            assert conn.sock is sock, "the client connection to nginx was not kept"
    finally:
        conn.close()


# (request target as sent, PATH_INFO as PEP 3333 wants it: the UTF-8 bytes as latin-1)
PATHS = [
    ("/echo/caf%C3%A9", "/echo/café".encode().decode("latin-1")),
    ("/echo/café".encode().decode("latin-1"), "/echo/café".encode().decode("latin-1")),
    ("/echo/%E2%82%AC%20x", "/echo/€ x".encode().decode("latin-1")),
    ("/echo/a%2Fb", "/echo/a/b"),
    ("/echo/100%25+1", "/echo/100%+1"),
    ("/echo/%FF%FE", "/echo/\xff\xfe"),
    ("/echo/%E6%97%A5%E6%9C%AC", "/echo/日本".encode().decode("latin-1")),
]


@pytest.mark.parametrize("target,path_info", PATHS, ids=[str(i) for i in range(len(PATHS))])
def test_unicode_and_percent_encoded_paths(front, target, path_info):
    query = "q=caf%C3%A9&x=%2F+y"
    raw_target = f"{target}?{query}".encode("latin-1")
    status, _, body = http_exchange(
        front.port,
        b"GET " + raw_target + b" HTTP/1.1\r\nHost: e2e.test\r\nConnection: close\r\n\r\n",
    )
    assert status == 200, body[:300]
    environ = json.loads(body)["environ"]
    assert environ["PATH_INFO"] == path_info
    assert environ["REQUEST_URI"] == raw_target.decode("latin-1")  # kept raw
    assert environ["QUERY_STRING"] == query
    assert environ.get("SCRIPT_NAME", "") == ""


def test_repeated_header_fields_are_joined(front):
    """nginx passes each repeated field on (as one uwsgi var each, or as HTTP lines): the app
    sees them joined, cookies with "; ", others with ", " (RFC 9110 §5.3, RFC 6265 §5.4)."""
    status, _, body = http_exchange(
        front.port,
        b"GET /echo HTTP/1.1\r\nHost: e2e.test\r\nCookie: a=1\r\nCookie: b=2\r\n"
        b"X-Tag: one\r\nX-Tag: two\r\nConnection: close\r\n\r\n",
    )
    assert status == 200, body[:300]
    environ = json.loads(body)["environ"]
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert environ["HTTP_X_TAG"] == "one, two"


def test_nginx_vars_reach_the_app_in_uwsgi_mode(fronts):
    """REMOTE_ADDR/REMOTE_PORT, SERVER_NAME/SERVER_PORT are nginx's, not the socket's."""
    front = fronts["uwsgi"]
    with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: client.example\r\nConnection: close\r\n\r\n")
        status, _, body = parse_response(read_until_close(sock))
    assert status == 200
    environ = json.loads(body)["environ"]
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REMOTE_PORT"] == str(client_port)  # the client's, not nginx's upstream side
    assert environ["SERVER_NAME"] == "e2e.test"  # $server_name
    assert environ["SERVER_PORT"] == str(front.port)  # nginx's port, not forklift's
    assert environ["HTTP_HOST"] == "client.example"
    assert environ["REQUEST_SCHEME"] == "http" and environ["wsgi.url_scheme"] == "http"
    assert not any(name.startswith("UWSGI_") for name in environ)


def test_forwarded_vars_reach_the_app_in_http_mode(fronts):
    front = fronts["http"]
    status, _, body = http_exchange(
        front.port,
        b"GET /echo HTTP/1.1\r\nHost: client.example\r\nX-Forwarded-For: 203.0.113.9\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert status == 200
    environ = json.loads(body)["environ"]
    # nginx appends the client's address; forklift believes the rightmost from nginx only.
    assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.9, 127.0.0.1"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["SERVER_NAME"] == "client.example"  # Host: $host


# --- a reload under load -------------------------------------------------------------------------


def _load(front, stop: threading.Event, results: list, errors: list) -> None:
    conn = front.connection(timeout=10)
    n = 0
    try:
        while not stop.is_set():
            n += 1
            try:
                conn.request("GET", f"/echo?load={n}")
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    errors.append(f"status {resp.status}: {data[:200]!r}")
                else:
                    results.append(json.loads(data)["pid"])
            except Exception as exc:  # every failure counts, whatever it is
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = front.connection(timeout=10)
    finally:
        conn.close()


@pytest.mark.parametrize("mode", MODES)
def test_reload_under_load_behind_nginx_loses_nothing(fronts, backend, mode):
    front = fronts[mode]
    server, directory = backend
    stop = threading.Event()
    results: list = []
    errors: list = []
    threads = [
        threading.Thread(target=_load, args=(front, stop, results, errors), daemon=True)
        for _ in range(4)
    ]
    errors_before = front.errors().count("[error]")
    for t in threads:
        t.start()
    try:
        # counted answers, not seconds: the same test on a fast and a slow machine
        wait_until(lambda: len(results) >= 100 or errors, 30, what="100 answers before")
        before = set(results)
        reload = subprocess.run(
            [FORKLIFT, "reload", "--pidfile", str(directory / "forklift.pid"), "--timeout", "30"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        reloaded_at = len(results)
        wait_until(
            lambda: len(results) >= reloaded_at + 100 or errors, 30, what="100 answers after"
        )
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert not errors, errors[:10]
    # The new generation answers. An old worker may still answer a request that reaches it
    # on a connection it accepted (or, over HTTP, an upstream keep-alive connection) before
    # it was told to stop: it finishes those, then exits.
    assert set(results[reloaded_at:]) - before, "no new worker answered after the reload"
    wait_until(
        lambda: not any(pid_alive(pid) for pid in before), 15, what="the old workers to exit"
    )
    for _ in range(10):
        status, _, body = front.get("/echo?after")
        assert status == 200 and json.loads(body)["pid"] not in before
    upstream_errors = front.errors().count("[error]") - errors_before
    assert upstream_errors == 0, front.errors()[-3000:]
    assert server.proc.poll() is None


# --- forklift nginx-config, as generated ---------------------------------------------------------


@pytest.fixture(params=MODES)
def as_generated(request, backend):
    """nginx from `forklift nginx-config ... --static /assets=DIR --full`, only the pid line
    changed (see generated_conf): no temp paths added, workers as nginx's default user."""
    mode = request.param
    server, _ = backend
    host, port = server.address(mode)
    nginx_dir = make_dir("fl-ngx-asis-")
    static_dir = make_dir("fl-static-")
    front = None
    try:
        (static_dir / "hello.txt").write_text("static hello\n")
        (static_dir / "style.css").write_text("p { color: red }\n")
        (static_dir / "sub").mkdir()
        (static_dir / "sub" / "page.html").write_text("<p>hi</p>\n")
        front = start_nginx(
            nginx_dir,
            lambda p: generated_conf(
                [
                    f"--{'socket' if mode == 'uwsgi' else 'http'}",
                    f"{host}:{port}",
                    "--listen",
                    f"127.0.0.1:{p}",
                    "--static",
                    f"/assets={static_dir}",
                ],
                nginx_dir,
                temp_paths=False,
            ),
        )
        yield front
    finally:
        if front is not None:
            front.stop()
        _cleanup(nginx_dir, static_dir)


def test_nginx_config_as_generated_passes_t_and_serves(as_generated):
    front = as_generated
    assert "temp_path" not in front.conf
    assert front.check().returncode == 0  # nginx -t (start_nginx ran it too)
    status, _, body = front.get("/echo/generated")
    assert status == 200
    assert json.loads(body)["environ"]["PATH_INFO"] == "/echo/generated"
    status, headers, body = front.get("/assets/hello.txt")
    assert (status, body) == (200, b"static hello\n")
    assert "Expires" in headers
    assert front.get("/assets/style.css")[::2] == (200, b"p { color: red }\n")
    assert front.get("/assets/sub/page.html")[::2] == (200, b"<p>hi</p>\n")
    assert front.get("/assets/missing.txt")[0] == 404
    # A body over the generated client_max_body_size is refused by nginx itself.
    conn = front.connection()
    conn.request("POST", "/upload", body=b"x" * (11 << 20))
    assert conn.getresponse().status == 413
    conn.close()


def test_nginx_config_static_files_get_their_types(as_generated):
    """Regression (fixed): the --full config has `default_type application/octet-stream` and no
    MIME types (no `include mime.types`, no `types {}`), so every --static file is served as
    application/octet-stream; a browser refuses such a stylesheet or script under
    `X-Content-Type-Options: nosniff`, and shows .html/.txt as downloads."""
    front = as_generated
    for path, ctype in (
        ("/assets/hello.txt", "text/plain"),
        ("/assets/style.css", "text/css"),
        ("/assets/sub/page.html", "text/html"),
    ):
        status, headers, _ = front.get(path)
        assert status == 200
        assert headers["Content-Type"].split(";")[0] == ctype, (path, headers["Content-Type"])


@pytest.mark.parametrize("mode", MODES)
def test_nginx_config_with_two_upstreams_spreads_and_survives_one_down(mode):
    dirs = [make_dir("fl-two-a-"), make_dir("fl-two-b-")]
    servers = []
    nginx_dir = make_dir("fl-ngx-two-")
    front = None
    try:
        for name, directory in zip("AB", dirs, strict=True):
            shutil.copy(SEED_APP / "probe.py", directory / "probe.py")
            servers.append(
                Forklift(
                    ["--socket", "127.0.0.1:0", "--http", "127.0.0.1:0", "--chdir", str(directory)]
                    + ["--disable-logging", "probe:application"],
                    directory,
                    env={"PROBE_NAME": name, "PROBE_DIR": str(directory)},
                    listeners=2,
                ).start()
            )
        flag = "--socket" if mode == "uwsgi" else "--http"
        upstreams = []
        for server in servers:
            host, port = server.address(mode)
            upstreams += [flag, f"{host}:{port}"]
        front = start_nginx(
            nginx_dir,
            lambda p: generated_conf(
                [*upstreams, "--listen", f"127.0.0.1:{p}"], nginx_dir, temp_paths=False
            ),
        )
        assert front.conf.count("max_fails=1 fail_timeout=5s;") == 2
        names = Counter()
        for _ in range(12):
            status, _, body = front.get("/echo")
            assert status == 200
            names[json.loads(body)["name"]] += 1
        assert set(names) == {"A", "B"}, names
        servers[1].stop()
        for _ in range(12):
            status, _, body = front.get("/echo")
            assert status == 200, body[:300]
            assert json.loads(body)["name"] == "A"
    finally:
        if front is not None:
            front.stop()
        for server in servers:
            server.stop()
        _cleanup(nginx_dir, *dirs)
