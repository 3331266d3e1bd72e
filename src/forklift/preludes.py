"""What a connection goes through before its protocol parser sees a byte: the PROXY header,
then the TLS handshake. Each step is non-blocking and resumable: the worker's event loop
calls `Prelude.step()` whenever the socket is ready and waits again as told, so a slow or
silent client never stalls the others; the whole is bounded by --head-timeout.

The PROXY header is read with MSG_PEEK and only its own bytes are taken from the socket:
what follows it (a TLS ClientHello, a request) stays in the kernel for the next layer.
"""

from __future__ import annotations

import selectors
import socket

from . import proxy_protocol
from .errors import PeerGone
from .events import NEED_DATA
from .proxy_protocol import ProxyHeader

_PEEK = socket.MSG_PEEK
_V2_FIXED = proxy_protocol.V2_FIXED_LENGTH


class SilentPeer(PeerGone):
    """The peer closed without sending a byte: a load balancer's TCP health check, most
    likely. Worth a debug line, not a warning every few seconds."""


class Prelude:
    """The steps left on one connection: a PROXY header to read, a TLS handshake to run.

    `step()` answers 0 when the connection is ready for its protocol, else the selectors
    event to wait for. Afterwards `sock` is the socket to serve on (a TlsSocket for TLS)
    and `proxy` the header read, if any. Errors: proxy_protocol.ProxyHeaderError, PeerGone
    (tls.TlsHandshakeError is one); the caller closes the connection and logs one line.
    """

    __slots__ = ("sock", "proxy", "_want_proxy", "_buf", "_max_v2", "_tls_ctx", "_tls")

    def __init__(self, sock, *, proxy: bool, tls_context=None, max_v2_length: int = 0):
        self.sock = sock
        self.proxy: ProxyHeader | None = None
        self._want_proxy = proxy
        self._buf = b""
        self._max_v2 = max_v2_length or proxy_protocol.V2_DEFAULT_MAX_LENGTH
        self._tls_ctx = tls_context
        self._tls = None

    def fileno(self) -> int:
        """The connection's descriptor, the same through every step (for select/epoll)."""
        return self.sock.fileno()

    @property
    def stage(self) -> str:
        """For log lines: which step a connection that timed out was in."""
        return "PROXY header" if self._want_proxy else "TLS handshake"

    def step(self) -> int:
        if self._want_proxy:
            if not self._read_proxy():
                return selectors.EVENT_READ
            self._want_proxy = False
        if self._tls_ctx is not None:
            from . import tls  # here: a PROXY-only worker never imports ssl

            if self._tls is None and self.proxy is None and not self._has_bytes():
                return selectors.EVENT_READ
            if self._tls is None:
                self._tls = self.sock = tls.accept_tls(self._tls_ctx, _as_socket(self.sock))
            want = tls.handshake_step(self._tls)
            if want:
                return want
            self.sock = tls.TlsSocket(self._tls)
            self._tls_ctx = None
        return 0

    def _has_bytes(self) -> bool:
        """Has the client sent anything yet? SilentPeer when it closed without a byte."""
        try:
            if self.sock.recv(1, _PEEK):
                return True
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            raise PeerGone(f"connection lost before the TLS handshake: {exc.strerror}") from None
        raise SilentPeer("closed without sending a byte")

    def _read_proxy(self) -> bool:
        """True once the header is read; consumes only header bytes from the socket."""
        room = (
            proxy_protocol.V1_MAX_LENGTH if not self._buf or self._buf[:1] == b"P" else self._max_v2
        ) - len(self._buf)
        try:
            peeked = self.sock.recv(max(room, _V2_FIXED), _PEEK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            raise PeerGone(f"connection lost before the PROXY header: {exc.strerror}") from None
        if not peeked:
            if not self._buf:
                raise SilentPeer("closed without sending a byte")
            raise PeerGone("connection closed before the PROXY header was complete")
        result = proxy_protocol.parse_header(self._buf + peeked, self._max_v2)
        if result is NEED_DATA:
            # Every byte seen belongs to the header (it is not complete yet): take them,
            # so the socket is not reported readable again for the same bytes.
            self._buf += self._take(len(peeked))
            return False
        self._take(result.length - len(self._buf))
        self._buf = b""
        self.proxy = result
        return True

    def _take(self, count: int) -> bytes:
        data = b""
        for _ in range(4):  # peeked bytes are in the kernel: one recv normally gets them all
            if len(data) == count:
                break
            data += self.sock.recv(count - len(data))
        if len(data) != count:
            raise PeerGone("PROXY header bytes vanished from the socket")
        return data


def _as_socket(sock) -> socket.socket:
    """ssl wraps only socket.socket objects; the worker accepts into bare _socket objects."""
    if not isinstance(sock, socket.socket):
        sock = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    # A socket object made from a descriptor starts in blocking mode whatever the descriptor
    # says, and ssl would then wait inside do_handshake(): the event loop must never.
    sock.setblocking(False)
    return sock
