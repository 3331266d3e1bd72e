"""TLS for listeners that serve HTTPS themselves: certificate files into an `ssl.SSLContext`,
and the non-blocking server handshake the worker's event loop drives.

Everything comes from Python's `ssl` module. A context is built once per generation (a HUP
reload reads renewed certificate files); a file that is missing, unreadable, encrypted or
does not match its partner stops the start with one line naming it.
"""

from __future__ import annotations

import selectors
import ssl

from .config import TlsFiles
from .errors import ConfigError, PeerGone

# Only HTTP/1.1 is spoken; advertising it lets clients that offer h2 settle at once.
ALPN_PROTOCOLS = ("http/1.1",)


def _no_passphrase(*_args) -> bytes:
    # Without this, OpenSSL would prompt on the terminal for an encrypted key and hang a
    # daemon; a server started unattended cannot type one.
    raise ValueError("encrypted")


def build_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context for `files`; ConfigError (one line) when one of them is unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # TLS 1.0 and 1.1 are deprecated by RFC 8996.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(list(ALPN_PROTOCOLS))
    for role, path in (("certificate", files.certfile), ("key", files.keyfile)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{files.key}: {role} file {path}: {exc.strerror}") from None
    try:
        ctx.load_cert_chain(files.certfile, files.keyfile, password=_no_passphrase)
    except ssl.SSLError as exc:
        raise ConfigError(f"{files.key}: {_explain(exc, files)}") from None
    except ValueError:
        raise ConfigError(
            f"{files.key}: key file {files.keyfile} is encrypted (forklift cannot ask for a "
            f"passphrase; decrypt it with `openssl pkey`)"
        ) from None
    if files.ciphers:
        try:
            ctx.set_ciphers(files.ciphers)
        except ssl.SSLError:
            raise ConfigError(
                f"{files.key}: no cipher matches {files.ciphers!r} (an OpenSSL cipher list)"
            ) from None
    if files.ca:
        try:
            ctx.load_verify_locations(cafile=files.ca)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise ConfigError(f"{files.key}: CA file {files.ca}: {reason}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if files.require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def check_tls_files(listeners) -> None:
    """Load every TLS listener's certificate and key once; ConfigError (one line) if one is
    unusable. Run at start and before a reload: workers then build their own contexts from
    the same files, so a broken renewal is refused while the old generation serves."""
    for address in listeners:
        if address.tls is not None:
            build_context(address.tls)


def _explain(exc: ssl.SSLError, files: TlsFiles) -> str:
    reason = exc.reason or str(exc)
    if reason == "KEY_VALUES_MISMATCH":
        return f"key file {files.keyfile} does not match certificate {files.certfile}"
    if exc.library == "PEM" or reason in ("NO_START_LINE", "PEM_LIB"):
        return (
            f"certificate {files.certfile} or key {files.keyfile} is not a PEM file "
            f"OpenSSL can read ({reason})"
        )
    return f"certificate {files.certfile} / key {files.keyfile}: {reason}"


class TlsHandshakeError(PeerGone):
    """The client broke off or botched the handshake; the connection is closed, one log line."""


def accept_tls(ctx: ssl.SSLContext, sock) -> ssl.SSLSocket:
    """Wrap a freshly accepted non-blocking socket; the handshake is then driven by
    `handshake_step` from the event loop, never here (a slow client must not stall others)."""
    return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def handshake_step(tls_sock: ssl.SSLSocket) -> int:
    """Advance the handshake as far as the bytes at hand allow.

    Returns 0 when it is complete, else the selectors event to wait for (EVENT_READ or
    EVENT_WRITE) before calling again. The caller bounds the whole by --head-timeout.
    """
    try:
        tls_sock.do_handshake()
    except ssl.SSLWantReadError:
        return selectors.EVENT_READ
    except ssl.SSLWantWriteError:
        return selectors.EVENT_WRITE
    except ssl.SSLError as exc:
        raise TlsHandshakeError(f"TLS handshake failed: {exc.reason or exc}") from None
    except OSError as exc:
        # ECONNRESET, EPIPE, or a clean EOF in the middle (SSLEOFError is an SSLError above)
        raise TlsHandshakeError(f"TLS handshake failed: {exc.strerror or exc}") from None
    return 0


def describe(tls_sock: ssl.SSLSocket) -> str:
    """`TLSv1.3 TLS_AES_256_GCM_SHA384`: for the debug log of a finished handshake."""
    cipher = tls_sock.cipher()
    return f"{tls_sock.version()} {cipher[0] if cipher else '?'}"


class TlsSocket:
    """A server-side ssl.SSLSocket that behaves like the plain non-blocking sockets the
    worker drives: "would block" is BlockingIOError whichever way TLS waits, and a read
    returns every decrypted byte OpenSSL holds (epoll cannot see those, so leaving them
    would stall a pipelined request until the client sent more)."""

    __slots__ = ("tls", "family", "_notified")
    encrypts = True  # sink.Sink: no os.sendfile() through this socket

    def __init__(self, tls_sock: ssl.SSLSocket):
        self.tls = tls_sock
        self.family = tls_sock.family
        self._notified = False

    def fileno(self) -> int:
        return self.tls.fileno()

    def recv(self, size: int) -> bytes:
        tls = self.tls
        try:
            data = tls.recv(size)
            while data and len(data) < size and tls.pending():
                data += tls.recv(min(size - len(data), tls.pending()))
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError(11, "TLS record incomplete") from None
        except ssl.SSLError as exc:
            raise ConnectionResetError(f"TLS error: {exc.reason or exc}") from None
        return data

    def send(self, data) -> int:
        try:
            return self.tls.send(data)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError(11, "TLS send would block") from None
        except ssl.SSLError as exc:
            raise BrokenPipeError(f"TLS error: {exc.reason or exc}") from None

    def setsockopt(self, *args) -> None:
        self.tls.setsockopt(*args)

    def setblocking(self, flag: bool) -> None:
        self.tls.setblocking(flag)

    def getsockname(self):
        return self.tls.getsockname()

    def _close_notify(self) -> None:
        """Send TLS close_notify once, without waiting for the client's: a client that reads
        an answer to EOF (HTTP/1.0, no Content-Length) sees a clean end, not a truncation."""
        if self._notified:
            return
        self._notified = True
        try:
            self.tls.unwrap()  # keeps the descriptor
        except (ssl.SSLError, OSError, ValueError):
            pass  # SSLWantReadError: the client's own close_notify is not awaited

    def shutdown(self, how: int) -> None:
        self._close_notify()
        self.tls.shutdown(how)

    def close(self) -> None:
        self._close_notify()
        self.tls.close()
