"""HTTPS served by forklift itself, against real clients: curl, http.client, a raw TLS socket
for pipelining, git (through dulwich's WSGI app). The CA and certificates are made by the
test with the `openssl` CLI (certs.py); clients trust only that CA.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .certs import issue, shared_pki
from .server import Forklift, wait_for
from .wire import Wire

pytestmark = pytest.mark.requires("openssl")

GET = b"GET /%d HTTP/1.1\r\nHost: localhost\r\n\r\n"


class TlsForklift(Forklift):
    """A forklift whose listeners are `--https ADDR,CERT,KEY`."""

    def __init__(self, directory, app, *options, cert, key, **kwargs):
        super().__init__(directory, app, *options, **kwargs)
        self.cert, self.key = cert, key

    def command(self) -> list:
        cmd = [sys.executable, "-m", "forklift", "--chdir", str(Path(__file__).parent / "apps")]
        for addr in self.listen:
            cmd += ["--https", f"{addr},{self.cert},{self.key}"]
        return cmd + self.options + ([self.app] if self.app else [])


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return shared_pki(tmp_path_factory)


@pytest.fixture(scope="module")
def https(pki, tmp_path_factory):
    """One inline worker (--threads 1) serving echo over TLS: a client that stalls in the
    handshake would block everything if the handshake were not in the event loop."""
    server = TlsForklift(
        tmp_path_factory.mktemp("tls"),
        "echo:app",
        "--head-timeout",
        "1",
        cert=pki.cert,
        key=pki.key,
    ).start()
    yield server
    server.stop()


def client_context(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


def tls_connect_port(port: int, pki, timeout: float = 5.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return client_context(pki).wrap_socket(raw, server_hostname="localhost")


def tls_connect(server, pki, timeout: float = 5.0) -> ssl.SSLSocket:
    return tls_connect_port(server.port, pki, timeout)


def test_http_client_keep_alive_sees_https_environ(https, pki):
    conn = http.client.HTTPSConnection(
        "localhost", https.port, context=client_context(pki), timeout=5
    )
    try:
        answers = []
        for i in range(3):
            conn.request("GET", f"/ka/{i}")
            response = conn.getresponse()
            assert response.status == 200
            answers.append(json.loads(response.read()))
        assert [a["path"] for a in answers] == ["/ka/0", "/ka/1", "/ka/2"]
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert conn.sock.selected_alpn_protocol() in (None, "http/1.1")
    finally:
        conn.close()
    first = answers[0]
    assert first["wsgi"]["wsgi.url_scheme"] == "https"
    assert first["environ"]["HTTPS"] == "on"
    assert first["environ"]["SERVER_PORT"] == str(https.port)


@pytest.mark.requires("curl")
def test_curl_with_the_test_ca(https, pki):
    proc = subprocess.run(
        ["curl", "-sS", "--fail", "--cacert", str(pki.ca), "--http1.1",
         f"https://localhost:{https.port}/curl?x=1"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["query"] == "x=1" and answer["wsgi"]["wsgi.url_scheme"] == "https"
    # curl refuses a server its CA store does not vouch for: the certificate is really used
    proc = subprocess.run(
        ["curl", "-sS", "--cacert", "/dev/null", f"https://localhost:{https.port}/"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert proc.returncode != 0


def test_pipelined_requests_over_tls(https, pki):
    with tls_connect(https, pki) as tls:
        wire = Wire(tls)
        wire.send(b"".join(GET % i for i in range(5)))  # one TLS write, five requests
        paths = [json.loads(wire.read_response().body)["path"] for _ in range(5)]
    assert paths == [f"/{i}" for i in range(5)]


def test_pipelined_requests_in_separate_tls_records(https, pki):
    with tls_connect(https, pki) as tls:
        wire = Wire(tls)
        for i in range(3):
            tls.sendall(GET % i)  # each its own record
        paths = [json.loads(wire.read_response().body)["path"] for _ in range(3)]
    assert paths == ["/0", "/1", "/2"]


def test_a_client_stalled_in_the_handshake_is_dropped_while_others_are_served(https, pki):
    mark = https.stderr_mark()
    stalled = socket.create_connection(("127.0.0.1", https.port), timeout=5)
    half = socket.create_connection(("127.0.0.1", https.port), timeout=5)
    try:
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
        started = time.monotonic()
        # Meanwhile, with one inline worker, other clients are served at once.
        for i in range(3):
            with tls_connect(https, pki) as tls:
                wire = Wire(tls)
                wire.send(GET % i)
                assert wire.read_response().status == 200
        assert time.monotonic() - started < 0.9, "served only after the stalled handshakes"
        # The stalled ones are closed at --head-timeout (1 s), not kept forever.
        for sock in (stalled, half):
            sock.settimeout(5)
            assert sock.recv(100) == b""
        assert 0.8 < time.monotonic() - started < 4.0
    finally:
        stalled.close()
        half.close()
    log = https.wait_for_stderr(mark, "TLS handshake")
    assert "TLS handshake" in log and "head-timeout" in log, log


def test_a_tcp_health_check_leaves_no_warning(https, pki):
    mark = https.stderr_mark()
    socket.create_connection(("127.0.0.1", https.port), timeout=5).close()  # connect, close
    with tls_connect(https, pki) as tls:  # and a real client right after, as a marker
        wire = Wire(tls)
        wire.send(GET % 1)
        assert wire.read_response().status == 200
    assert "WARNING" not in https.stderr_since(mark), https.stderr_since(mark)


def test_plain_http_on_the_tls_port_is_closed_with_a_log_line(https):
    mark = https.stderr_mark()
    with socket.create_connection(("127.0.0.1", https.port), timeout=5) as sock:
        sock.sendall(GET % 0)
        sock.settimeout(5)
        data = b""
        for _ in range(100):
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:  # closed with our request unread: a reset
                break
            if not chunk:
                break
            data += chunk
    assert b"HTTP/1.1 200" not in data
    assert "TLS handshake failed" in https.wait_for_stderr(mark, "TLS handshake failed")


def start_expecting_failure(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "forklift", *args, "echo:app"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).parent / "apps",
    )


def test_a_bad_certificate_is_refused_at_start_with_one_line(pki, tmp_path):
    proc = start_expecting_failure(tmp_path, "--https", f"127.0.0.1:0,{pki.cert},{pki.other_key}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"forklift: error: --https: key file {pki.other_key} does not match certificate {pki.cert}"
    ], proc.stderr
    proc = start_expecting_failure(
        tmp_path, "--http", "127.0.0.1:0", "--certfile", str(tmp_path / "gone.pem"),
        "--keyfile", str(pki.key),
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"forklift: error: --certfile: certificate file {tmp_path / 'gone.pem'}: "
        "No such file or directory"
    ), proc.stderr


def peer_organization(port: int, pki) -> str:
    with tls_connect_port(port, pki) as tls:
        subject = dict(item[0] for item in tls.getpeercert()["subject"])
    return subject["organizationName"]


def test_hup_loads_renewed_certificates_and_a_bad_one_keeps_the_old(pki, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "site.crt", live / "site.key"
    shutil.copy(pki.cert, cert)
    shutil.copy(pki.key, key)
    server = TlsForklift(tmp_path, "echo:app", "--processes", "2", cert=cert, key=key).start()
    try:
        assert peer_organization(server.port, pki) == "server"
        renewed_cert, renewed_key = issue(
            pki.directory, "renewed", pki.ca, pki.directory / "ca.key"
        )
        shutil.copy(renewed_key, key)  # what certbot's deploy hook does: files replaced in place
        shutil.copy(renewed_cert, cert)
        mark = server.stderr_mark()
        os.kill(server.proc.pid, signal.SIGHUP)
        server.wait_for_stderr(mark, "is serving", timeout=15)
        assert wait_for(lambda: peer_organization(server.port, pki) == "renewed", 10)

        # A broken renewal: the reload is refused, the renewed certificate keeps serving.
        key.write_text(pki.other_key.read_text())
        mark = server.stderr_mark()
        os.kill(server.proc.pid, signal.SIGHUP)
        log = server.wait_for_stderr(mark, "does not match", timeout=15)
        assert f"key file {key} does not match certificate {cert}" in log, log
        assert "old workers keep serving" in log, log
        for _ in range(5):
            assert peer_organization(server.port, pki) == "renewed"
        assert server.alive
    finally:
        server.stop()


def git(*args: str, cwd: Path, env: dict) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"git {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.requires("git")
def test_git_push_and_clone_over_https_against_dulwich(pki, tmp_path):
    pytest.importorskip("dulwich", reason="dulwich is in the test extra")
    from dulwich.repo import Repo

    bare = tmp_path / "served.git"
    Repo.init_bare(str(bare), mkdir=True)
    server = TlsForklift(
        tmp_path, "gitserve:app", "--threads", "2", cert=pki.cert, key=pki.key,
        env={"GIT_REPO": str(bare)},
    ).start()  # fmt: skip
    try:
        env = dict(os.environ, GIT_SSL_CAINFO=str(pki.ca), GIT_TERMINAL_PROMPT="0",
                   HOME=str(tmp_path), GIT_CONFIG_NOSYSTEM="1")  # fmt: skip
        work = tmp_path / "work"
        work.mkdir()
        git("init", "-q", "-b", "main", cwd=work, env=env)
        (work / "small.txt").write_text("hello over TLS\n")
        blob = os.urandom(3 << 20)  # several TLS records and many sends each way
        (work / "blob.bin").write_bytes(blob)
        git("add", ".", cwd=work, env=env)
        git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "one",
            cwd=work, env=env)  # fmt: skip
        url = f"https://localhost:{server.port}/"
        # postBuffer above the pack size: git sends a Content-Length. (A chunked push body
        # is de-chunked by forklift, while dulwich's app de-chunks again whenever
        # Transfer-Encoding says chunked: a dulwich/WSGI disagreement, not a TLS matter.)
        git("-c", "http.postBuffer=16777216", "push", "-q", url, "main", cwd=work, env=env)
        clone = tmp_path / "clone"
        git("clone", "-q", "-b", "main", url, str(clone), cwd=tmp_path, env=env)
        assert (clone / "small.txt").read_text() == "hello over TLS\n"
        assert (clone / "blob.bin").read_bytes() == blob
        head = git("rev-parse", "HEAD", cwd=work, env=env)
        assert git("rev-parse", "HEAD", cwd=clone, env=env) == head
    finally:
        server.stop()
        assert "Traceback" not in server.stderr(), server.stderr()[-3000:]


def test_ini_file_with_https_serves_both_listeners(pki, tmp_path):
    shutil.copy(pki.cert, tmp_path / "uwsgi-ssl.crt")
    shutil.copy(pki.key, tmp_path / "uwsgi-ssl.key")
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(
        "[uwsgi]\n"
        "http = 127.0.0.1:0\n"
        "https = 127.0.0.1:0,%d/uwsgi-ssl.crt,%d/uwsgi-ssl.key,HIGH\n"
        f"chdir = {Path(__file__).parent / 'apps'}\n"
        "module = echo:app\nmaster = true\nprocesses = 1\n"
    )
    server = Forklift(tmp_path, None, "--ini", str(ini), listen=()).start()
    try:
        found = wait_for(lambda: server.stderr().count("listening on") >= 2, 10)
        assert found, server.stderr()
        lines = [x for x in server.stderr().splitlines() if "listening on" in x]
        assert "(http)" in lines[0] and "(https)" in lines[1], lines
        https_port = int(lines[1].split("listening on ")[1].split()[0].rpartition(":")[2])
        with tls_connect_port(https_port, pki) as tls:
            wire = Wire(tls)
            wire.send(GET % 7)
            answer = json.loads(wire.read_response().body)
        assert answer["wsgi"]["wsgi.url_scheme"] == "https"
    finally:
        server.stop()


def test_an_answer_read_to_eof_ends_with_close_notify(pki, https):
    """HTTP/1.0 and a body without Content-Length: the client reads to EOF, and a TLS EOF
    without close_notify would be a possible truncation (strict clients reject it)."""
    raw = socket.create_connection(("127.0.0.1", https.port), timeout=5)
    tls = client_context(pki).wrap_socket(
        raw, server_hostname="localhost", suppress_ragged_eofs=False
    )
    with tls:
        tls.sendall(b"GET /eof HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        for _ in range(1000):
            chunk = tls.recv(65536)  # SSLEOFError here if the server just closed
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"}")


def test_keep_alive_and_pipelining_over_tls_with_a_thread_pool(pki, tmp_path):
    """With --threads the loop hands a TLS connection to a thread and takes it back
    between requests, as it does plain ones."""
    server = TlsForklift(tmp_path, "echo:app", "--threads", "4", cert=pki.cert, key=pki.key)
    server.start()
    try:
        with tls_connect(server, pki) as tls:
            wire = Wire(tls)
            wire.send(b"".join(GET % i for i in range(4)))
            paths = [json.loads(wire.read_response().body)["path"] for _ in range(4)]
            wire.send(GET % 9)  # after the answers: from the loop's hands again
            paths.append(json.loads(wire.read_response().body)["path"])
        assert paths == ["/0", "/1", "/2", "/3", "/9"]
    finally:
        server.stop()


def test_hup_rereads_the_ini_and_serves_the_certificate_it_now_names(pki, tmp_path):
    renewed_cert, renewed_key = issue(pki.directory, "moved", pki.ca, pki.directory / "ca.key")
    ini = tmp_path / "uwsgi.ini"

    def write_ini(cert, key):
        ini.write_text(
            "[uwsgi]\n"
            f"https = 127.0.0.1:0,{cert},{key}\n"
            f"chdir = {Path(__file__).parent / 'apps'}\n"
            "module = echo:app\n"
        )

    write_ini(pki.cert, pki.key)
    server = Forklift(tmp_path, None, "--ini", str(ini), listen=()).start()
    try:
        assert wait_for(lambda: "(https)" in server.stderr(), 10), server.stderr()
        line = next(x for x in server.stderr().splitlines() if "(https)" in x)
        port = int(line.split("listening on ")[1].split()[0].rpartition(":")[2])
        assert peer_organization(port, pki) == "server"

        write_ini(renewed_cert, renewed_key)  # the new certificate lives elsewhere
        mark = server.stderr_mark()
        os.kill(server.proc.pid, signal.SIGHUP)
        server.wait_for_stderr(mark, "is serving", timeout=15)
        assert wait_for(lambda: peer_organization(port, pki) == "moved", 10)

        write_ini(renewed_cert, pki.other_key)  # a key of another certificate
        mark = server.stderr_mark()
        os.kill(server.proc.pid, signal.SIGHUP)
        log = server.wait_for_stderr(mark, "does not match", timeout=15)
        assert f"{ini}:2: https: key file {pki.other_key} does not match" in log, log
        assert peer_organization(port, pki) == "moved" and server.alive
    finally:
        server.stop()
