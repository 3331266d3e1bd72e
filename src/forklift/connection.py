"""What the worker's loop keeps per listener (`Site`) and per client connection
(`Connection`): the protocol adapter, the parser, the sink, the phase and its deadline, and
the request body as the app will read it.

The one place a listener's protocol is chosen (`Site`); past it the worker knows only the
adapter's face (`framing.ProtocolAdapter`).
"""

from __future__ import annotations

import io

from . import http1, uwsgi
from .config import PROTOCOL_UWSGI
from .errors import PeerGone, ProtocolError
from .events import NEED_DATA, Data
from .wsgi import BodyReader, base_environ

# Connection phases, for the loop and its timeout sweep.
IDLE, HEAD, BODY, BUSY, LINGER, FLUSH = range(6)


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
        "environ",
        "is_unix",
        "protocol",
        "admits",
        "admits_option",
        "script_name",
        "forwarded_allow_ips",
    )

    def __init__(self, listener, config, limits, *, multithread: bool):
        self.listener = listener
        addr = listener.address
        self.is_unix = addr.is_unix
        if addr.is_unix:
            name, port = "localhost", "80"
        else:
            host, port = listener.sock.getsockname()[:2]
            name, port = addr.host or host, str(port)
        self.environ = base_environ(
            server_name=name,
            server_port=port,
            multithread=multithread,
            multiprocess=config.processes > 1,
            script_name=config.script_name,
        )
        self.script_name = config.script_name
        self.forwarded_allow_ips = config.forwarded_allow_ips
        if addr.protocol == PROTOCOL_UWSGI:
            self.protocol = uwsgi.UWSGI(config.buffer_size, limits.max_body)
            # uwsgi vars are trusted as a proxy's word (REMOTE_ADDR, HTTPS...): only the
            # configured proxies may speak it.
            self.admits, self.admits_option = config.uwsgi_allow_ips, "--uwsgi-allow-ips"
        else:
            self.protocol = http1.HTTP(limits)
            self.admits, self.admits_option = None, ""


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
        "spool",
        "answer",
    )

    def __init__(self, sock, peer, site, sink, deadline):
        self.sock = sock
        self.fd = sock.fileno()
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
        self.answer = None  # the answer the loop still sends (outbox.Answer), FLUSH phase

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
                    return event.data
                if event is NEED_DATA:
                    parser.receive_data(recv())
                    continue
                return b""  # EndOfMessage (or PAUSED after it)

        return pull

    def _send_continue(self) -> None:
        if not self.parser.message_complete:
            self.sink.send_all(self.site.protocol.continue_response)
