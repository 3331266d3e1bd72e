"""The worker's write half: running the app for one request and owning its answer until the
last byte is out (a mixin of `worker.Worker`, kept apart so the loop's file stays readable).

The rule of who runs app code (PEP 3333: the iterable is advanced and closed in one
consistent way): inline (threads = 1) everything runs in the worker's one thread, the loop;
with --threads, the app is called on a request thread, and its iterator is advanced on a
request thread too, but only when the loop saw the socket writable (`PUMP` items); a list
body or a file needs no app code and the loop sends it itself. A request thread is free as
soon as the socket is full: the answer waits in the loop (FLUSH), holding at most
`response_buffer` bytes plus one chunk. An answer abandoned (client gone, no progress for
--socket-timeout, worker exit) is closed by the loop (whichever thread runs it), once.

It uses the worker's `config`, `app`, `hold`, `inline`, `alive`, `slot`, `busy`,
`_track_busy`, `_note_current` (`current_start`, `current_environ`), `_record` (metrics),
`access_log`, `_log_notable`, `_poller`, `_pool`, `_conn_flags` and its
`_watch`, `_close`, `_reject`, `_linger`, `_after_request`, `_advance`, `retire`.
"""

from __future__ import annotations

import select
import threading
import time
from io import BytesIO

from .connection import BUSY, FLUSH
from .errors import PeerGone, ProtocolError
from .log import error_log, log_app_error, log_notable
from .outbox import Answer, pump
from .spool import SpoolFull
from .wsgi import AppError, body_length_known, build_environ, run_app

_ONESHOT = select.EPOLLONESHOT
PUMP = "pump"  # a pool item: advance an answer's iterator (the socket is writable)


class Answering:
    """Run the app, then send its answer as the socket takes it (see the module docstring)."""

    def _serve(self, conn, streaming: bool) -> bool:
        """Run the app for the request whose head (and maybe body) the connection holds;
        what the socket will not take now is left to the loop (FLUSH). True when the answer is
        all out and the connection carries on (as `_continue_answer`)."""
        request = conn.head
        start = time.monotonic()
        conn.requests += 1
        if conn.spool is None and not streaming and not conn.body:
            body = BytesIO()  # no body: the common case, without a call
        else:
            try:
                body = conn.body_stream(streaming)
            except SpoolFull as exc:
                self._spool_failed(conn, exc)
                return False
        environ = build_environ(request, conn.site, conn.peer, body)
        if environ is None:
            self._simple_answer(conn, 404, "no application is mounted at this path")
            return False
        if conn.spool is not None and request.content_length is None:
            body_length_known(environ, conn.spool.size)
        response = conn.site.protocol.response(request, conn.parser, conn.sink, self.alive)
        ident = 0
        if self._track_busy:  # for harakiri's report: which request each thread runs
            ident = threading.get_ident()
            uri = environ.get("REQUEST_URI") or environ["PATH_INFO"]
            self.busy[ident] = (
                start,
                environ["REQUEST_METHOD"],
                uri,
                environ["forklift.request_id"],
            )
        elif self._note_current:
            self.current_start = start
            self.current_environ = environ
        if self.slot is not None:
            self.slot.request_started()
        try:
            app_body = run_app(self.app, environ, response, self.hold)
        except PeerGone as exc:
            self._log_request(
                environ, response, start, ident, conn.site.metrics_key, conn.body_size
            )
            parser_error = conn.parser.error
            if parser_error is not None and parser_error.status and not response.head_sent:
                # Not a vanished client: its streamed body was malformed or too large.
                self._reject(conn, parser_error)
                return False
            error_log.debug("client %s went away: %s", conn.peer, exc)
            self._close(conn)
            return False
        except Exception as exc:
            self._app_failed(conn, response, environ, exc)
            self._log_request(
                environ, response, start, ident, conn.site.metrics_key, conn.body_size
            )
            return False
        if app_body is None and not conn.sink.queue:
            # The common case: the whole answer went out during the app's call.
            self._log_request(
                environ, response, start, ident, conn.site.metrics_key, conn.body_size
            )
            if response.keep_alive:
                return True
            self._close(conn)
            return False
        if ident:  # the app's call is over; the loop sends the rest
            self.busy.pop(ident, None)
        else:
            self.current_environ = None
        answer = Answer(response, environ, start, ident, conn.site.metrics_key, conn.body_size)
        answer.body = app_body
        conn.answer = answer
        return self._continue_answer(conn)

    def _continue_answer(self, conn) -> bool:
        """Send more of the connection's answer (advancing the app's iterator while the
        socket takes it). True when it is all out and the connection carries on; False when
        it waits for the socket (FLUSH) or was closed."""
        answer = conn.answer
        try:
            moved, done = pump(conn.sink, answer, self.hold)
        except PeerGone as exc:
            error_log.debug("client %s went away: %s", conn.peer, exc)
            self._close(conn)
            return False
        except Exception as exc:  # the app's iterator raised (it is closed already)
            conn.answer = None
            self._app_failed(conn, answer.response, answer.environ, exc)
            self._account(answer)
            return False
        if not done:
            if moved or conn.phase != FLUSH:
                conn.deadline = time.monotonic() + self.config.socket_timeout
            self._await_writable(conn)
            return False
        conn.answer = None
        self._account(answer)
        if not answer.response.keep_alive:
            self._close(conn)
            return False
        conn.phase = BUSY
        return True

    def _account(self, answer) -> None:
        """After every request, answered or not: the logs, the scoreboard, max-requests;
        and the app's close(), exactly once."""
        try:
            answer.close()
        finally:
            self._log_request(
                answer.environ,
                answer.response,
                answer.start,
                answer.ident,
                answer.metrics_key,
                answer.request_bytes,
            )

    def _log_request(self, environ, response, start, ident, metrics_key, request_bytes) -> None:
        """Metrics, the logs, the scoreboard, max-requests: once per request."""
        if ident:
            self.busy.pop(ident, None)
        else:
            self.current_environ = None
        if self.slot is not None:
            self.slot.request_finished(response.status[:1] == "5")
        duration = time.monotonic() - start
        record = self._record
        if record is not None:
            record(
                (
                    environ["REQUEST_METHOD"],
                    response.status,
                    metrics_key,
                    duration,
                    request_bytes,
                    response.sent,
                )
            )
        if self.access_log is not None:
            self.access_log.log(environ, response.status, response.sent, duration)
        if self._log_notable:
            log_notable(self.config, environ, response.status, duration)
        self.requests_served += 1
        if self.max_requests and self.requests_served >= self.max_requests:
            self.retire(f"served {self.requests_served} requests (max-requests)")

    def _await_writable(self, conn) -> None:
        """The socket is full: the loop continues the answer when the client reads, serving
        others meanwhile (with --threads, a request thread advances an app iterator)."""
        conn.phase = FLUSH
        flags = select.EPOLLOUT if self.inline else select.EPOLLOUT | _ONESHOT
        try:
            self._watch(conn, flags)  # an inline connection may not be in the epoll set yet
        except OSError:
            self._close(conn)

    def _on_writable(self, conn) -> None:
        if not self.inline and conn.answer is not None and conn.answer.needs_app:
            conn.phase = BUSY  # a thread owns it now: the sweep leaves it alone
            self._pool.submit((conn, PUMP))
            return
        if not self._continue_answer(conn):
            return
        if self.inline:
            try:
                self._poller.modify(conn.fd, self._conn_flags)
            except OSError:
                self._close(conn)
                return
        if self._after_request(conn):
            self._advance(conn, in_thread=False)

    def _spool_failed(self, conn, exc) -> None:
        error_log.error("request from %s: %s; answering 507", conn.peer, exc)
        self._reject(conn, ProtocolError(str(exc), 507))

    def _app_failed(self, conn, response, environ, exc) -> None:
        """The app raised (or broke PEP 3333): a 500 while nothing is sent yet, else only
        a close can tell the client; a body the client botched is answered as its fault."""
        parser_error = conn.parser.error
        if response.head_sent:
            log_app_error(environ, exc, head_sent=True, contract=False)
            self._close(conn)
            return
        if parser_error is not None and parser_error.status:
            # The body was malformed or too large while the app read it: the client's fault.
            self._reject(conn, parser_error)
            return
        log_app_error(environ, exc, head_sent=False, contract=isinstance(exc, AppError))
        response.status = "500 Internal Server Error"
        self._simple_answer(conn, 500, "Internal Server Error")

    def _simple_answer(self, conn, status: int, message: str) -> None:
        """A short plain-text answer, then close (the connection state is unknown)."""
        head_only = conn.parser.request_is_head  # RFC 9110 §9.3.2
        try:
            conn.sink.send_all(
                conn.site.protocol.error_answer(status, message, head_only=head_only)
            )
        except PeerGone:
            pass
        self._linger(conn)
