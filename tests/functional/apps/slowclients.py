"""Answers for slow-client tests: a 10 MiB list, a 100 x 1 MiB generator whose close() is
recorded (one line per call), an upload digest, a hello; and git over HTTP (dulwich).

Routes: /list, /stream?tag=T (close() writes "close T"), /upload (sha256 and length of the
body), /hello; /git/... is dulwich's smart-HTTP server for the bare repo FIXTURE_DIR/repo.git.
"""

import hashlib
import os

LIST_BODY = bytes(range(256)) * (40 * 1024)  # 10 MiB
CHUNK = 1 << 20
CHUNKS = 100
LOG = os.path.join(os.environ.get("FIXTURE_DIR", "."), "close.log")


def stream_chunk(i: int) -> bytes:
    """Chunk i of /stream: a fresh 1 MiB buffer, different for each i."""
    return bytes([i % 251]) * CHUNK


class Stream:
    def __init__(self, tag):
        self.tag = tag
        self.i = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.i >= CHUNKS:
            raise StopIteration
        self.i += 1
        return stream_chunk(self.i - 1)

    def close(self):
        with open(LOG, "a") as f:
            f.write(f"close {self.tag}\n")


_git = None


def _git_app():
    global _git
    if _git is None:
        from dulwich.repo import Repo
        from dulwich.server import DictBackend
        from dulwich.web import make_wsgi_chain

        path = os.path.join(os.environ["FIXTURE_DIR"], "repo.git")
        if not os.path.exists(path):
            os.makedirs(path)
            Repo.init_bare(path)
        _git = make_wsgi_chain(DictBackend({"/": Repo(path)}))
    return _git


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/git"):
        environ["SCRIPT_NAME"] = "/git"
        environ["PATH_INFO"] = path[4:] or "/"
        return _git_app()(environ, start_response)
    if path == "/list":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [LIST_BODY]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Stream(environ["QUERY_STRING"].partition("tag=")[2])
    if path == "/upload":
        digest = hashlib.sha256()
        size = 0
        while True:
            data = environ["wsgi.input"].read(65536)
            if not data:
                break
            digest.update(data)
            size += len(data)
        body = f"{size} {digest.hexdigest()}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
