"""The floor: the least a pure-Python WSGI server can do per request, as a yardstick.

    python python_floor.py HOST PORT MODULE:CALLABLE WORKERS http|uwsgi

Not a server to use: it checks nothing, has no limit, no timeout, no pipelining, no graceful
anything, and takes a request to be whatever one `recv` returned. What it does do is what no
pure-Python server can skip: one epoll loop per process (level-triggered, the listener shared
by WORKERS forked children), `accept`, `recv`, cutting the head into a PEP 3333 environ (HTTP:
request line and fields; uwsgi: the vars block), calling the app, joining its body, one
`send` of head and body, and keep-alive unless the client says `Connection: close` (a uwsgi
connection carries one request). bench/run serves hello and gameprogress with it beside the
real servers: a target that even this floor misses cannot be met by interpreted Python on this
machine, whatever forklift does above the floor.
"""

import io
import os
import select
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prefork import load_app, run_forked  # noqa: E402


def http_environ(head: bytes, base: dict):
    """The environ of an HTTP/1.x head (the bytes before CRLF CRLF); keep-alive or not."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    path, _, query = target.partition("?")
    env = dict(base)
    env["REQUEST_METHOD"] = method
    env["PATH_INFO"] = path
    env["QUERY_STRING"] = query
    env["SERVER_PROTOCOL"] = version
    keep_alive = version == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = "HTTP_" + name.upper().replace("-", "_")
        value = value.strip()
        env[key] = value
        if key == "HTTP_CONNECTION":
            keep_alive = value.lower() != "close"
    env["CONTENT_TYPE"] = env.pop("HTTP_CONTENT_TYPE", "")
    env["CONTENT_LENGTH"] = env.pop("HTTP_CONTENT_LENGTH", "")
    return env, keep_alive


def uwsgi_environ(packet: bytes, base: dict):
    """The environ of a uwsgi packet (4-byte header, then size-prefixed names and values)."""
    env = dict(base)
    end = 4 + int.from_bytes(packet[1:3], "little")
    pos = 4
    while pos < end:
        size = int.from_bytes(packet[pos : pos + 2], "little")
        name = packet[pos + 2 : pos + 2 + size].decode("latin-1")
        pos += 2 + size
        size = int.from_bytes(packet[pos : pos + 2], "little")
        env[name] = packet[pos + 2 : pos + 2 + size].decode("latin-1")
        pos += 2 + size
    return env, False


def call_app(app, env: dict):
    """(status, headers, the whole body) of one call of the app."""
    answer = []

    def start_response(status, headers, exc_info=None):
        answer[:] = [status, headers]

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return answer[0], answer[1], body


def serve(listener: socket.socket, app, proto: str) -> None:
    host, port = listener.getsockname()[:2]
    base = {
        "SCRIPT_NAME": "",
        "SERVER_NAME": host,
        "SERVER_PORT": str(port),
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    parse = uwsgi_environ if proto == "uwsgi" else http_environ
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    conns = {}
    lfd = listener.fileno()
    while True:
        for fd, _ in poller.poll():
            if fd == lfd:
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    conns[sock.fileno()] = sock
                    poller.register(sock.fileno(), select.EPOLLIN)
                continue
            sock = conns[fd]
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:  # reset by the peer
                data = b""
            if not data:
                poller.unregister(fd)
                del conns[fd]
                sock.close()
                continue
            head = data if proto == "uwsgi" else data.partition(b"\r\n\r\n")[0]
            env, keep_alive = parse(head, base)
            env["wsgi.input"] = io.BytesIO(b"")
            status, headers, body = call_app(app, env)
            out = "HTTP/1.1 " + status + "\r\n"
            if not any(n.lower() == "content-length" for n, _ in headers):
                out += f"Content-Length: {len(body)}\r\n"
            out += "".join(f"{n}: {v}\r\n" for n, v in headers)
            if not keep_alive and proto == "http":
                out += "Connection: close\r\n"
            try:
                sock.send(out.encode("latin-1") + b"\r\n" + body)
            except OSError:  # reset by the peer
                keep_alive = False
            if not keep_alive:
                poller.unregister(fd)
                del conns[fd]
                sock.close()


def main() -> int:
    host, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    workers, proto = int(sys.argv[4]), sys.argv[5]
    app = load_app(target)
    listener = socket.create_server((host, port), backlog=1024)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted ones inherit it
    listener.setblocking(False)
    return run_forked(lambda: serve(listener, app, proto), workers)


if __name__ == "__main__":
    sys.exit(main())
