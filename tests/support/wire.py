"""Raw HTTP/1.x on a socket, the way the functional tests read it: strictly, with timeouts.

`Wire` wraps a connected socket with a receive buffer. `read_response()` reads exactly one
response and frames its body the way RFC 9112 §6.3 says a client must (no body for HEAD,
1xx, 204, 304; chunked; Content-Length; until close), so a server that frames wrongly shows
up as a garbled next response or a timeout, never as a silent pass.
"""

from __future__ import annotations

import socket
import time
from typing import NamedTuple

TIMEOUT = 5.0  # seconds any single wait on the server may take before the test fails
_MAX_READS = 100_000  # every read loop is bounded in count as well as in time


class Response(NamedTuple):
    version: str
    status: int
    reason: str
    headers: list  # [(lower-cased name, value)] as str, in wire order
    body: bytes
    chunked: bool
    raw_head: bytes

    def header(self, name: str, default=None):
        name = name.lower()
        values = [v for n, v in self.headers if n == name]
        if not values:
            return default
        return ", ".join(values)

    def has_header(self, name: str) -> bool:
        return any(n == name.lower() for n, _ in self.headers)

    @property
    def closes(self) -> bool:
        conn = (self.header("connection") or "").lower()
        return "close" in conn


class ServerClosed(Exception):
    """The server closed the connection where a response (or more of one) was expected."""


class Wire:
    """A client connection: send bytes, read responses or everything until EOF."""

    def __init__(self, sock: socket.socket, timeout: float = TIMEOUT):
        self.sock = sock
        self.timeout = timeout
        sock.settimeout(timeout)
        self.buf = b""
        self.eof = False

    @classmethod
    def connect(cls, address, family=socket.AF_INET, timeout: float = TIMEOUT) -> Wire:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
        return cls(sock, timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self) -> bool:
        """Receive more bytes into the buffer; False at EOF."""
        if self.eof:
            return False
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        for _ in range(_MAX_READS):
            end = self.buf.find(marker)
            if end >= 0:
                end += len(marker)
                data, self.buf = self.buf[:end], self.buf[end:]
                return data
            if len(self.buf) > limit:
                raise AssertionError(f"no {marker!r} in the first {limit} bytes")
            if not self._recv():
                raise ServerClosed(f"EOF before {marker!r}; got {self.buf[:200]!r}")
        raise AssertionError("read loop bound exceeded")

    def read_exact(self, n: int) -> bytes:
        for _ in range(_MAX_READS):
            if len(self.buf) >= n:
                data, self.buf = self.buf[:n], self.buf[n:]
                return data
            if not self._recv():
                raise ServerClosed(f"EOF after {len(self.buf)} of {n} body bytes")
        raise AssertionError("read loop bound exceeded")

    def read_until_eof(self, timeout: float = TIMEOUT) -> bytes:
        """Everything until the server closes; AssertionError if it does not within `timeout`."""
        deadline = time.monotonic() + timeout
        for _ in range(_MAX_READS):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                more = self._recv()
            except TimeoutError:
                break
            except ConnectionResetError:
                self.eof = True
                more = False
            if not more:
                self.sock.settimeout(self.timeout)
                data, self.buf = self.buf, b""
                return data
        self.sock.settimeout(self.timeout)
        raise AssertionError(f"the server did not close within {timeout}s; got {self.buf[:300]!r}")

    def nothing_within(self, seconds: float) -> bool:
        """True when no byte (and no EOF) arrives within `seconds`."""
        if self.buf:
            return False
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(self.timeout)
        if data:
            self.buf += data
        else:
            self.eof = True
        return False

    def read_head(self) -> tuple:
        head = self.read_until(b"\r\n\r\n", limit=256 * 1024)
        lines = head[:-4].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        assert version in (b"HTTP/1.1", b"HTTP/1.0"), f"bad status line {lines[0]!r}"
        assert code.isdigit() and len(code) == 3, f"bad status line {lines[0]!r}"
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            assert sep and name and name == name.strip(), f"bad header line {line!r}"
            headers.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
        return version.decode(), int(code), reason.decode("latin-1"), headers, head

    def read_response(self, method: str = "GET") -> Response:
        """One complete response; interim 1xx responses are returned like any other."""
        version, status, reason, headers, head = self.read_head()
        resp = Response(version, status, reason, headers, b"", False, head)
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")
        if method == "HEAD" or status < 200 or status in (204, 304):
            return resp
        if te:
            assert te == "chunked", f"unexpected Transfer-Encoding {te!r}"
            assert cl is None, "Content-Length together with Transfer-Encoding"
            return resp._replace(body=self.read_chunked(), chunked=True)
        if cl is not None:
            # RFC 9110 §8.6 lets a recipient accept a repeated identical value; whether the
            # server repeats it is asserted by its own test, not by every test.
            values = {v.strip() for v in cl.split(",")}
            assert len(values) == 1 and cl.split(",")[0].isdigit(), f"bad Content-Length {cl!r}"
            return resp._replace(body=self.read_exact(int(values.pop())))
        assert resp.closes or version == "HTTP/1.0", "close-delimited body without close"
        return resp._replace(body=self.read_until_eof())

    def read_chunked(self) -> bytes:
        parts = []
        for _ in range(_MAX_READS):
            line = self.read_until(b"\r\n", limit=4096)
            size = int(line[:-2].split(b";")[0], 16)
            if size == 0:
                # trailers end with an empty line
                for _ in range(100):
                    if self.read_until(b"\r\n", limit=65536) == b"\r\n":
                        return b"".join(parts)
                raise AssertionError("too many trailer lines")
            parts.append(self.read_exact(size))
            assert self.read_exact(2) == b"\r\n", "chunk not followed by CRLF"
        raise AssertionError("too many chunks")

    def read_final_response(self, method: str = "GET") -> Response:
        """Skip interim 1xx responses; return the final one."""
        for _ in range(10):
            resp = self.read_response(method)
            if resp.status >= 200:
                return resp
        raise AssertionError("more than 10 interim responses")


def count_responses(data: bytes) -> int:
    """How many status lines a close-delimited byte stream holds (for smuggling tests)."""
    return sum(
        1
        for line in data.split(b"\r\n")
        if line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) and line[9:12].isdigit()
    )


def request(
    method: str = "GET",
    target: str = "/",
    headers: list | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    host: str | None = "localhost",
) -> bytes:
    """Request bytes; Content-Length is added for a body unless a framing header is given."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    names = set()
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
        names.add(name.lower())
    if body and not names & {"content-length", "transfer-encoding"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(body: bytes, size: int = 65536) -> bytes:
    """`body` in the chunked transfer coding."""
    out = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(out) + b"0\r\n\r\n"


def stalled_client(port: int, data: bytes, timeout: float = 10.0) -> socket.socket:
    """A client with a 4 KiB receive buffer (set before the handshake, so the window stays
    small) that sends `data` and then reads nothing: the server's writes stall at once."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    sock.sendall(data)
    return sock


def resume_reading(sock: socket.socket, timeout: float = 30.0) -> bytes:
    """A stalled client reads again, with a large buffer, until the server closes (or
    `timeout`: what arrived by then is returned, and the caller's comparison fails)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    parts = []
    deadline = time.monotonic() + timeout
    for _ in range(_MAX_READS):
        if time.monotonic() >= deadline:
            break
        data = sock.recv(1 << 20)
        if not data:
            break
        parts.append(data)
    return b"".join(parts)
