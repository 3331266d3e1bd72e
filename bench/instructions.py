"""Instructions per request of forklift's request path, exact whatever else the machine runs.

    bench/.venv/bin/python bench/instructions.py [--src SRC ...] [--mode MODE]

One `Worker` in-process (no master, no fork, metrics off, no access log: the path itself)
answers hello requests from a sequential client in another process, under
`valgrind --tool=cachegrind`; it runs twice (N1 and N2 requests) and the difference of the
instruction counts over N2 - N1 leaves start-up out. Each `--src` is the `src/` directory of
a checkout (default: this repository's), so code before and after a change are counted by
the same interpreter: `git worktree add /tmp/before COMMIT; ... --src /tmp/before/src --src
src`. User-space instructions only: system calls are the same per request (strace) and are
not counted. Run-to-run spread is about 0.5%.

Modes: `keepalive` (wrk's request, one connection), `close` (one request per connection),
`uwsgi` (the packet nginx's `uwsgi_pass` sends, one per connection), `browser` (a browser's
fifteen fields and a cookie, keep-alive).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent

# The served side: `python - PORT_FILE N MODE` with forklift from PYTHONPATH.
SERVER = r"""
import subprocess, sys
sys.path.insert(0, sys.argv[1])
from forklift import sockets
from forklift.config import Config, ListenAddress
from forklift.worker import Worker
from hello import app

n, mode = int(sys.argv[2]), sys.argv[3]
config = Config(app="hello:app", access_log=None)
config.validate()
listener = sockets.bind(ListenAddress("uwsgi" if mode == "uwsgi" else "http", "127.0.0.1", 0))
worker = Worker(config, app, [listener])
worker.max_requests = n  # the worker retires after exactly n answers
port = str(listener.sock.getsockname()[1])
client = subprocess.Popen([sys.argv[4], sys.argv[5], port, str(n), mode])
worker.run()
client.wait()
"""

# The client: n requests, one at a time (keep-alive on one connection, or one per connection).
CLIENT = r"""
import socket, sys
port, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
close = mode not in ("keepalive", "browser")
request = b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"
if mode == "browser":  # the fields a browser sends on every request of a page (keep-alive)
    request = (
        b"GET /static/app.js?v=3 HTTP/1.1\r\nHost: game.example.org\r\nConnection: keep-alive\r\n"
        b"sec-ch-ua: \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"\r\nsec-ch-ua-mobile: ?0\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        b"Chrome/131.0.0.0 Safari/537.36\r\nsec-ch-ua-platform: \"Linux\"\r\nAccept: */*\r\n"
        b"Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: script\r\n"
        b"Referer: https://game.example.org/dashboard\r\n"
        b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
        b"Accept-Language: en-GB,en;q=0.9\r\nCookie: session=8f14e45fceea167a5a36dedd4bea2543; "
        b"theme=dark\r\n\r\n"
    )
    close = False
if mode == "uwsgi":  # the vars nginx's uwsgi_params send for `GET /`, as uwsgi_pass packs them
    names = ("QUERY_STRING", "", "REQUEST_METHOD", "GET", "CONTENT_TYPE", "", "CONTENT_LENGTH", "",
             "REQUEST_URI", "/", "PATH_INFO", "/", "DOCUMENT_ROOT", "/usr/share/nginx/html",
             "SERVER_PROTOCOL", "HTTP/1.1", "REQUEST_SCHEME", "http", "REMOTE_ADDR", "127.0.0.1",
             "REMOTE_PORT", "51234", "SERVER_PORT", "8080", "SERVER_NAME", "localhost",
             "HTTP_HOST", "127.0.0.1:8080", "HTTP_USER_AGENT", "wrk", "HTTP_ACCEPT", "*/*")
    block = b""
    for i in range(0, len(names), 2):
        for item in names[i:i + 2]:
            block += len(item).to_bytes(2, "little") + item.encode()
    request = b"\0" + len(block).to_bytes(2, "little") + b"\0" + block
sock = None
for _ in range(n):
    if sock is None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(request)
    answer = b""
    while not answer.endswith(b"Hello, world!"):
        data = sock.recv(4096)
        if not data:
            raise SystemExit("the server closed early")
        answer += data
    if close:
        sock.close()
        sock = None
"""


def instructions(src: str, n: int, mode: str, client_path: Path) -> int:
    env = dict(os.environ, PYTHONPATH=src)
    run = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-c",
            SERVER,
            str(BENCH / "apps"),
            str(n),
            mode,
            sys.executable,
            str(client_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    match = re.search(r"I\s+refs:\s+([\d,]+)", run.stderr)
    if match is None:
        raise SystemExit(f"valgrind said:\n{run.stderr[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", action="append", help="a checkout's src/ (repeatable)")
    p.add_argument(
        "--mode", choices=("keepalive", "close", "uwsgi", "browser"), default="keepalive"
    )
    p.add_argument("--n1", type=int, default=200)
    p.add_argument("--n2", type=int, default=1200)
    a = p.parse_args()
    sources = a.src or [str(BENCH.parent / "src")]
    client_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"forklift-instr-client-{os.getpid()}.py"
    client_path.write_text(CLIENT)
    try:
        print(f"| src | {a.mode}: instructions per request |")
        print("|---|---:|")
        for src in sources:
            low = instructions(src, a.n1, a.mode, client_path)
            high = instructions(src, a.n2, a.mode, client_path)
            print(f"| {src} | {(high - low) / (a.n2 - a.n1):,.0f} |")
    finally:
        client_path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
