"""What the worker's loop keeps per listener (`Site`) and per client connection
(`Connection`): the protocol adapter, the parser, the sink, the phase and its deadline, and
the request body as the app will read it.

The one place a listener's protocol is chosen (`Site`); past it the worker knows only the
adapter's face (`framing.ProtocolAdapter`).
"""

from __future__ import annotations

import io
import logging
import select
import selectors
import time

from . import http1, uwsgi
from .config import PROTOCOL_UWSGI, tls_of
from .errors import PeerGone, ProtocolError
from .events import NEED_DATA, Data
from .log import error_log
from .preludes import Prelude, SilentPeer
from .proxy import peer_in
from .wsgi import BodyReader, base_environ

# Connection phases, for the loop and its timeout sweep. PRELUDE: the PROXY header or the
# TLS handshake (preludes.Prelude), before the protocol's parser sees a byte.
IDLE, HEAD, BODY, BUSY, LINGER, FLUSH, PRELUDE = range(7)


def limits_of(config) -> http1.Limits:
    """The parser limits a config sets (`max_body` None: unlimited)."""
    return http1.Limits(
        config.max_request_line,
        config.max_header_bytes,
        config.max_header_fields,
        config.max_body_size or None,
    )


class Site:
    """What a listener serves, and how: its protocol adapter, the peers it admits, and what
    `wsgi.build_environ` needs (`environ`: the base environ, `script_name`: the mount,
    `forwarded_allow_ips`: the proxies whose X-Forwarded-* are believed)."""

    __slots__ = (
        "listener",
        "family",
        "environ",
        "is_unix",
        "protocol",
        "admits",
        "admits_option",
        "script_name",
        "forwarded_allow_ips",
        "tls_context",
        "proxy_admits",
        "metrics_key",
    )

    def __init__(self, listener, config, limits, *, multithread: bool, index: int = 0):
        self.listener = listener
        self.family = listener.sock.family  # once: the property converts to an enum per call
        addr = listener.address
        self.is_unix = addr.is_unix
        if addr.is_unix:
            name, port = "localhost", "80"
        else:
            host, port = listener.sock.getsockname()[:2]
            name, port = addr.host or host, str(port)
        self.tls_context = None
        tls_files = tls_of(index, addr, config.listeners)  # this generation's (a HUP renews)
        if tls_files is not None:
            # Built by each worker from the files as they are now: a HUP reload's new
            # generation serves renewed certificates.
            from .tls import build_context  # ssl is imported only where TLS is served

            self.tls_context = build_context(tls_files)
        # The peers allowed to name the client in a PROXY header; None: no header expected.
        self.proxy_admits = config.proxy_allow_ips if config.proxy_protocol else None
        self.environ = base_environ(
            server_name=name,
            server_port=port,
            url_scheme="http" if self.tls_context is None else "https",
            multithread=multithread,
            multiprocess=config.processes > 1,
            script_name=config.script_name,
        )
        if self.tls_context is not None:
            self.environ["HTTPS"] = "on"
        self.script_name = config.script_name
        self.forwarded_allow_ips = config.forwarded_allow_ips
        # For the access log and metrics: which protocol delivered the request.
        self.environ["forklift.protocol"] = addr.protocol
        self.metrics_key = "u" if addr.protocol == PROTOCOL_UWSGI else ""  # metrics.Recorder
        if addr.protocol == PROTOCOL_UWSGI:
            self.protocol = uwsgi.UWSGI(config.buffer_size, limits.max_body)
            # uwsgi vars are trusted as a proxy's word (REMOTE_ADDR, HTTPS...): only the
            # configured proxies may speak it.
            self.admits, self.admits_option = config.uwsgi_allow_ips, "--uwsgi-allow-ips"
        else:
            self.protocol = http1.HTTP(limits)
            self.admits, self.admits_option = None, ""

    def refuses(self, host: str) -> bool:
        """True, with one log line, when this TCP peer may not talk to this listener."""
        if self.admits is not None and not peer_in(host, self.admits):
            why = f"{self.protocol.name} connection from {host} refused ({self.admits_option})"
        elif self.proxy_admits is not None and not peer_in(host, self.proxy_admits):
            # A PROXY header rewrites REMOTE_ADDR: only the configured proxies may send one.
            why = f"connection from {host} refused: it may not send a PROXY header"
            why += " (--proxy-allow-ips)"
        else:
            return False
        error_log.warning("%s", why)
        return True


class Connection:
    """One client connection and its parser; owned by the loop or by one thread at a time."""

    __slots__ = (
        "sock",
        "fd",
        "parser",
        "peer",
        "site",
        "phase",
        "deadline",
        "head",
        "body",
        "body_size",
        "requests",
        "sink",
        "watched",
        "spool",
        "answer",
        "prelude",
    )

    def __init__(self, sock, fd, peer, site, sink, deadline):
        self.sock = sock
        self.fd = fd  # what accept() returned: no fileno() call
        self.parser = site.protocol.new_parser()
        self.sink = sink  # where answers go; what it holds back, the loop sends (FLUSH)
        self.peer = peer  # (addr, port), or None on a unix socket
        self.site = site
        self.phase = IDLE
        self.deadline = deadline
        self.head = None  # the request being read or served (a protocol's request event)
        self.body = None  # body pieces the loop read before streaming the rest to the app
        self.body_size = 0
        self.spool = None  # the whole body, read by the loop before the app runs (spool.py)
        self.requests = 0
        self.watched = False  # in the loop's epoll set (not before its first wait for bytes)
        self.answer = None  # the answer the loop still sends (outbox.Answer), FLUSH phase
        self.prelude = None
        if site.tls_context is not None or site.proxy_admits is not None:
            self.phase = PRELUDE
            self.prelude = Prelude(
                sock, proxy=site.proxy_admits is not None, tls_context=site.tls_context
            )

    def advance_prelude(self, head_timeout: float) -> int | None:
        """One step of the PROXY header / TLS handshake: 0 once the protocol may start (the
        connection then reads from the TLS socket, its peer is the client the header named),
        else the epoll event to wait for; None when it failed (logged: the caller closes)."""
        prelude = self.prelude
        try:
            want = prelude.step()
        except (OSError, ProtocolError) as exc:  # PeerGone is an OSError
            self.sock = prelude.sock  # after a TLS wrap, only the wrapper may close it
            self.log_closed(exc)
            return None
        self.sock = prelude.sock
        if want:
            return select.EPOLLOUT if want == selectors.EVENT_WRITE else select.EPOLLIN
        self.prelude = None
        self.sink.use(self.sock)
        header = prelude.proxy
        if header is not None and header.source is not None:
            self.peer = header.source
        self.phase = IDLE
        self.deadline = time.monotonic() + head_timeout  # now for the request's head
        return 0

    def time_out(self) -> None:
        """Its deadline passed: say so (one log line before the protocol began; a 408, or
        what the protocol answers, to a slow head or body) before the loop closes it."""
        if self.prelude is not None:
            self.log_closed(f"{self.prelude.stage} not within --head-timeout")
        elif self.phase in (HEAD, BODY):
            error_log.debug("request from %s timed out; closing", self.peer)
            answer = self.site.protocol.timeout_answer(head_only=self.parser.request_is_head)
            try:
                if answer:
                    self.sock.send(answer)
            except OSError:
                pass

    def log_closed(self, why) -> None:
        """One log line for a connection closed before its protocol began (debug only for
        a peer that sent nothing: a load balancer's TCP check comes every few seconds)."""
        peer = self.peer[0] if self.peer else f"a unix peer on {self.site.listener.address}"
        level = logging.DEBUG if isinstance(why, SilentPeer) else logging.WARNING
        error_log.log(level, "connection from %s closed: %s", peer, why)

    def body_stream(self, streaming: bool):
        """`wsgi.input` for the current request: the body the loop read (spooled), or, when
        `streaming`, a reader that pulls the rest from the socket as the app reads (after
        sending the interim 100 when the client waits for it). SpoolFull: the disk is."""
        body = self.body
        if self.spool is not None:
            return self.spool.stream()
        if streaming:
            send_continue = self._send_continue if self.head.expect_continue else None
            return BodyReader(self._body_puller(body), send_continue)
        if body:
            return io.BytesIO(body[0] if len(body) == 1 else b"".join(body))
        return io.BytesIO()

    def end_body(self) -> None:
        """The request is over: drop its spooled body (and its temporary file)."""
        spool = self.spool
        if spool is not None:
            self.spool = None
            spool.close()

    def _body_puller(self, buffered):
        parser = self.parser
        pending = list(buffered)
        recv = self.sink.recv

        def pull() -> bytes:
            if pending:
                return pending.pop(0)
            while True:
                try:
                    event = parser.next_event()
                except ProtocolError as exc:
                    raise PeerGone(f"bad request body: {exc}") from None
                if type(event) is Data:
                    self.body_size += len(event.data)  # the body-size metric counts it
                    return event.data
                if event is NEED_DATA:
                    parser.receive_data(recv())
                    continue
                return b""  # EndOfMessage (or PAUSED after it)

        return pull

    def _send_continue(self) -> None:
        if not self.parser.message_complete:
            self.sink.send_all(self.site.protocol.continue_response)
