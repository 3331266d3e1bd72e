"""One worker process: an epoll loop over inherited listeners and their connections, the app
called inline (threads = 1) or on a small thread pool, keep-alive, timeouts, graceful exit.

The worker speaks no protocol itself: each listener has a protocol adapter (`http1.HTTP`,
`uwsgi.UWSGI`, one face: `framing.ProtocolAdapter`) that makes its parsers and frames its
answers. A request goes one way: socket read → parser → `wsgi.build_environ` → the app
(`wsgi.run_app`) → the adapter's response → the connection's `sink.Sink` → socket.

Why this shape: with threads = 1 the loop parses, calls the app and answers in one pass with
no thread hand-off (the hand-off costs more than parsing). With threads > 1 the request
threads take turns at the same loop (`pool.Pool`, leader and followers): the thread that
finds a request serves it, and another runs the loop meanwhile only when the app's requests
wait. The loop owns every connection between requests (an idle keep-alive client never
holds a thread); a thread owns a connection only while a request on it runs. Heads and
whole bodies are read by the loop (`spool.Spool`), and what the kernel will not take of an
answer is left to the loop (`outbox.pump`), so a slow client never ties up a thread or the
worker.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
import traceback

from .accepting import BALANCE_RECHECK, AcceptSide
from .answering import PUMP, Answering
from .connection import BODY, BUSY, FLUSH, HEAD, IDLE, LINGER, Site, limits_of
from .errors import PeerGone, ProtocolError
from .events import NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage
from .log import AccessLog, error_log, setup_error_log
from .pool import Pool
from .sink import RECV_SIZE
from .spool import Spool, SpoolFull
from .watchdog import Watchdog, log_thread_stacks

_EPOLLIN = select.EPOLLIN
_ONESHOT = select.EPOLLONESHOT
_LINGER_SECONDS = 2.0  # after an error answer, read and discard what the client still sends


class Worker(AcceptSide, Answering):
    """Serve the app on the given listeners until told to stop."""

    def __init__(
        self,
        config,
        app,
        listeners,
        *,
        access_log=None,
        slot=None,
        notify=None,
        master_pid=0,
        metrics=None,
    ):
        self.config = config
        self.metrics = metrics  # metrics.WorkerMetrics, when the master counts requests
        # One tuple appended per answered request; the watchdog bins them (metrics.py).
        self._record = metrics.record if metrics is not None else None
        self.slot = slot  # scoreboard.WorkerSlot, when a master watches this worker
        self.notify = notify  # callable(str) sending one line to the master
        self.master_pid = master_pid  # the parent to outlive no longer than a moment
        self.app = app
        self.listeners = listeners
        self.access_log = access_log if access_log is not None else AccessLog(None)
        if config.access_log is None:
            self.access_log = None
        self.limits = limits_of(config)
        self.inline = config.threads <= 1
        self.hold = config.response_buffer  # answer bytes held per connection, at most
        # uWSGI: post-buffering 0 means the app reads the body from the socket as it comes.
        self.stream_bodies = config.stream_request_body or config.post_buffering <= 0
        self._log_notable = bool(config.log_4xx or config.log_5xx or config.log_slow)
        # Which request each thread runs: for harakiri's report and `forklift top`. An inline
        # worker without harakiri only notes its one request (two stores, no dict, no tuple).
        self._track_busy = config.harakiri > 0 or (metrics is not None and not self.inline)
        self._note_current = metrics is not None and not self._track_busy
        self.current_environ = None  # the inline request running now (for the watchdog)
        self.current_start = 0.0
        self.alive = True
        self.graceful_deadline = None
        self.requests_served = 0
        self.max_requests = 0  # set by the master for recycling; 0 = never
        self.busy = {}  # thread ident -> (start, method, path, request id): harakiri, top
        self._conns = {}
        self._poller = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller.register(self._wake_r, _EPOLLIN)
        self._sites = {}
        self._paused = False  # listeners unregistered: every thread has work, or over share
        self._over_share = False  # paused because this worker holds more than its share
        # This worker's open-connection count in the scoreboard, written without a call.
        self._counts = slot.counts if slot is not None else None
        self._slot_index = slot.index if slot is not None else 0
        # In the share from now, before "ready": the master may send traffic at once, and a
        # worker not yet counted would let the others take every client meanwhile.
        self._report_connections()
        self._accepting = True  # until stopping: then the listeners are closed to us
        self._next_sweep = time.monotonic() + 1.0  # idle and slow connections' deadlines
        self._next_balance = 0.0  # over the fair share: when to look again
        self._accept_again_at = 0.0  # after EMFILE: when to try accepting again
        self._drop_idle = False  # stopping with no successor: idle keep-alive clients too
        self._warned_dropped = set()
        self._pool = (
            None if self.inline else Pool(config.threads, self._turn, self._serve_in_thread)
        )
        for index, listener in enumerate(listeners):
            site = Site(listener, config, self.limits, multithread=not self.inline, index=index)
            self._sites[listener.sock.fileno()] = site
        self._conn_flags = _EPOLLIN if self.inline else _EPOLLIN | _ONESHOT

    # -- control -----------------------------------------------------------------------------
    def retire(self, reason: str, key: str = "max_requests") -> None:
        """Past a limit (max-requests, memory): tell the master, then stop gracefully.

        The master starts a replacement as soon as it hears, so service has no gap."""
        if not self.alive:
            return
        error_log.info("worker %d retiring: %s", os.getpid(), reason)
        if self.notify is not None:
            self.notify(f"retiring {os.getpid()} {key}")  # key: recycles by reason
        self.stop(graceful=True)

    def stop(self, graceful: bool = True) -> None:
        """Stop accepting; with `graceful`, let in-flight requests finish (signal-safe)."""
        if graceful and self.alive:
            self.graceful_deadline = time.monotonic() + self.config.graceful_timeout
        elif not graceful:
            self.graceful_deadline = time.monotonic()
        self.alive = False
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def install_signal_handlers(self) -> None:
        """TERM: graceful exit; INT and QUIT: fast exit. Only for the worker's own process."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop(graceful=True))
        signal.signal(signal.SIGINT, lambda *_: self.stop(graceful=False))
        signal.signal(signal.SIGQUIT, lambda *_: self.stop(graceful=False))
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, lambda *_: self._reopen_logs())
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reload is the master's business
        # The master's "stacks" command (`forklift top`'s s key).
        signal.signal(signal.SIGUSR2, lambda *_: log_thread_stacks(self.busy))

    def _reopen_logs(self) -> None:
        if self.access_log is not None:
            self.access_log.reopen()
        setup_error_log(self.config.error_log, self.config.log_level)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        """The event loop; returns when stopped and every connection is done. With
        --threads the request threads take turns at it (`pool.Pool`) and this thread waits,
        free for the signal handlers."""
        if self.slot is not None or self.config.harakiri or self.metrics is not None:
            Watchdog(
                self,
                self.slot,
                self.notify,
                self.master_pid,
                self.config.harakiri,
                self.metrics,
            ).start()
        self._listen(True)
        try:
            if self._pool is None:
                turn = self._turn
                while turn():
                    pass
            else:
                self._pool.start()
                self._pool.join()
        finally:
            self._shutdown()

    def _turn(self) -> bool:
        """One round of the loop: wait for events (at most a second), handle them, then
        the timers. False when the worker is done."""
        if not self.alive:
            if self._accepting:
                self._stop_accepting()
                self._accepting = False
            if self._finished_draining():
                return False
        try:
            events = self._poller.poll(BALANCE_RECHECK if self._over_share else 1.0)
        except InterruptedError:
            return True
        conns = self._conns
        for fd, _ev in events:
            conn = conns.get(fd)
            if conn is not None:
                try:
                    if conn.phase == FLUSH:
                        self._on_writable(conn)
                    else:
                        self._on_readable(conn)
                except Exception:
                    self._internal_error(conn)
            elif fd in self._sites:
                if self._accepting:
                    self._accept(self._sites[fd])
            elif fd == self._wake_r:
                self._drain_wakeups()
        now = time.monotonic()
        if self._over_share and now >= self._next_balance and self._accepting:
            self._next_balance = now + BALANCE_RECHECK
            self._resume_accepting()
        if self._accept_again_at and now >= self._accept_again_at:
            self._accept_again_at = 0.0
            if self._accepting:
                self._resume_accepting()
        if now >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = now + 1.0
        return True

    def orphaned(self) -> None:
        """The master died (the watchdog noticed): no successor will take our clients, so
        idle keep-alive ones are closed too; what is in flight finishes."""
        self._drop_idle = True
        self.stop(graceful=True)

    def _stop_accepting(self) -> None:
        self._listen(False)
        self._over_share = False
        self._report_connections()  # draining: out of everybody's fair share
        # Idle keep-alive connections are not cut: a client may be sending on one right now.
        # A request that arrives is answered with "Connection: close"; the others end at
        # their keep-alive deadline, as they would have anyway.
        fast = self.graceful_deadline is not None and time.monotonic() >= self.graceful_deadline
        if fast or self._drop_idle:
            for conn in list(self._conns.values()):
                if conn.phase == IDLE or (fast and conn.phase != BUSY):
                    self._close(conn)

    def _finished_draining(self) -> bool:
        if not self._conns:
            return True
        return self.graceful_deadline is not None and time.monotonic() >= self.graceful_deadline

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _on_readable(self, conn) -> None:
        if conn.prelude is not None:  # the PROXY header and/or TLS handshake come first
            want = conn.advance_prelude(self.config.head_timeout)  # None: failed, logged
            if want is None:
                self._close(conn)
                return
            self._poller.modify(conn.fd, (want or _EPOLLIN) | (self._conn_flags & _ONESHOT))
            if want:
                return  # else read now: OpenSSL may hold decrypted bytes epoll cannot see
        if conn.phase == BUSY:
            return
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            self._hand_back(conn, in_thread=False)
            return
        except OSError as exc:
            error_log.debug("recv from %s failed: %s", conn.peer, exc)
            self._close(conn)
            return
        if conn.phase == LINGER:
            if data:
                self._hand_back(conn, in_thread=False)
            else:
                self._close(conn)
            return
        conn.parser.receive_data(data)
        self._advance(conn, in_thread=False)

    # -- requests ----------------------------------------------------------------------------
    def _advance(self, conn, in_thread: bool) -> None:
        """Parse what the connection has; run every complete request; then wait for bytes.

        Called by the loop after a read, and by a pool thread after an answer (pipelining).
        """
        parser = conn.parser
        config = self.config
        while True:
            try:
                event = parser.next_event()
            except ProtocolError as exc:
                self._reject(conn, exc)
                return
            if event is NEED_DATA:
                phase = conn.phase
                if phase == IDLE:
                    if not parser.at_message_boundary:
                        conn.phase = HEAD
                        conn.deadline = time.monotonic() + config.head_timeout
                elif phase == BODY:
                    conn.deadline = time.monotonic() + config.socket_timeout
                if in_thread or not self.inline:  # else the loop watches it already
                    self._hand_back(conn, in_thread)
                return
            kind = type(event)
            if kind is Data:
                if conn.spool is not None:
                    if not self._spool(conn, event.data):
                        return
                    continue
                conn.body.append(event.data)
                conn.body_size += len(event.data)
                if conn.body_size > config.post_buffering:
                    if self._run_request(conn, in_thread, streaming=True):
                        continue
                    return
            elif kind is EndOfMessage:
                if self._run_request(conn, in_thread, streaming=False):
                    continue
                return
            elif kind is ConnectionClosed or event is PAUSED:
                # PAUSED cannot happen here (_after_request restarts the parser): close.
                self._close(conn)
                return
            else:  # a request: its head (HTTP) or its vars (uwsgi)
                conn.head = event
                conn.body = []
                conn.body_size = 0
                if event.dropped:
                    self._warn_dropped(conn.site.protocol, event.dropped)
                if not event.has_body:
                    # Complete already: run it without asking for the EndOfMessage event
                    # (the parser counts the message complete, and the next request starts
                    # after the answer as after any other).
                    if self._run_request(conn, in_thread, streaming=False):
                        continue
                    return
                if not self.stream_bodies:
                    self._start_spool(conn, event)
                elif event.expect_continue or (
                    event.content_length is not None
                    and event.content_length > config.post_buffering
                ):
                    # Stream it: the app's reads pull the body (and send the 100 first).
                    if self._run_request(conn, in_thread, streaming=True):
                        continue
                    return
                conn.phase = BODY
                conn.deadline = time.monotonic() + config.socket_timeout

    def _start_spool(self, conn, request) -> None:
        """The loop reads this body whole before the app runs (answering 100 first)."""
        conn.spool = Spool(self.config.post_buffering, self.config.body_temp_dir)
        if request.expect_continue and conn.site.protocol.continue_response:
            try:
                conn.sink.send(conn.site.protocol.continue_response)
            except PeerGone:
                pass  # the next read sees the closed connection

    def _spool(self, conn, data: bytes) -> bool:
        """Keep a piece of the body; False (after a 507 and close) when the disk is full."""
        conn.body_size += len(data)
        try:
            conn.spool.write(data)
        except SpoolFull as exc:
            self._spool_failed(conn, exc)
            return False
        return True

    def _run_request(self, conn, in_thread: bool, streaming: bool) -> bool:
        """Run (or queue) the request; True when the caller goes on with the next one.
        False: queued, closed, or its answer handed to the loop (then the connection is
        no longer the caller's to touch)."""
        conn.phase = BUSY
        if self.inline or in_thread:
            return self._serve(conn, streaming) and self._after_request(conn)
        self._pool.submit((conn, streaming))  # the leading thread serves it after this turn
        return False

    def _serve_in_thread(self, item) -> None:
        """A pool thread owns the connection: this request, then any pipelined after it."""
        conn, streaming = item
        try:
            if streaming is PUMP:
                carry_on = self._continue_answer(conn)
            else:
                carry_on = self._serve(conn, streaming)
            if carry_on and self._after_request(conn):
                self._advance(conn, in_thread=True)
        except Exception:
            self._internal_error(conn)

    def _internal_error(self, conn) -> None:
        """A bug of ours on one connection: log it, drop that connection, keep serving."""
        error_log.error(
            "internal error on a connection from %s; closing it\n%s",
            conn.peer,
            traceback.format_exc().rstrip(),
        )
        self._close(conn)

    def _hand_back(self, conn, in_thread: bool) -> None:
        """The connection waits for bytes: give it (back) to the loop."""
        if conn.fd < 0:
            return
        if in_thread or not self.inline:
            try:
                self._watch(conn, self._conn_flags)  # its first wait adds it to the set
            except OSError:
                self._close(conn)

    def _after_request(self, conn) -> bool:
        """After an answer: True when the connection stays open for the next request."""
        if conn.fd < 0:
            return False
        parser = conn.parser
        # While stopping, a connection whose answer promised keep-alive stays open until its
        # idle deadline: a request that arrives on it is answered with "Connection: close".
        if conn.phase == FLUSH:
            return False  # the loop continues this connection once its answer is out
        if conn.phase != BUSY or not parser.message_complete:
            if conn.phase != LINGER:
                self._close(conn)
            return False
        parser.start_next_request()
        conn.phase = IDLE
        conn.head = None
        conn.body = None
        if conn.spool is not None:
            conn.end_body()
        conn.deadline = time.monotonic() + self.config.keepalive_timeout
        return True

    def _warn_dropped(self, protocol, names) -> None:
        """Fields a peer sent that the parser refused to pass on: one warning per new name."""
        new = set(names) - self._warned_dropped
        if new:
            self._warned_dropped |= new
            error_log.warning(protocol.dropped_warning, ", ".join(sorted(new)))

    def _reject(self, conn, exc: ProtocolError) -> None:
        """A protocol error: answer its status (if any) and close, never parse further."""
        protocol = conn.site.protocol
        level = logging.WARNING if protocol.loud_rejections else logging.DEBUG
        error_log.log(level, "%s from %s: %s", protocol.rejection, conn.peer or "unix peer", exc)
        if exc.status:
            head_only = conn.parser.request_is_head  # RFC 9110 §9.3.2
            body = protocol.error_answer(exc.status, str(exc), head_only=head_only)
            try:
                conn.sock.send(body)  # once, without waiting: a hostile peer gets no more
            except OSError:
                pass
        self._linger(conn)

    def _linger(self, conn) -> None:
        """Close our side, then discard what the peer still sends for a moment, so the
        kernel does not answer its in-flight bytes with a reset that destroys our answer."""
        if conn.fd < 0:
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.phase = LINGER
        conn.deadline = time.monotonic() + _LINGER_SECONDS
        try:
            self._watch(conn, self._conn_flags)
        except OSError:
            self._close(conn)

    def _close(self, conn) -> None:
        fd = conn.fd
        if fd < 0:
            return
        conn.fd = -1
        self._conns.pop(fd, None)
        if self._counts is not None and self.alive:  # a draining worker's count stays 0
            self._counts[self._slot_index] = len(self._conns)
        if conn.sink.queue:
            conn.sink.discard()  # views of the app's buffers, file spans
        if conn.spool is not None:
            conn.end_body()
        answer = conn.answer
        if answer is not None:  # abandoned mid-answer: the app's close() all the same
            conn.answer = None
            try:
                self._account(answer)
            except Exception:
                error_log.exception("closing the answer to %s", conn.peer)
        # No epoll unregister: closing the only descriptor of a socket removes it from the
        # epoll set, and it saves a system call on every connection.
        try:
            conn.sock.close()
        except OSError:
            pass

    def _sweep(self, now: float) -> None:
        """Close connections past their deadline: idle keep-alive, slow heads and bodies."""
        for conn in list(self._conns.values()):
            phase = conn.phase
            if phase == BUSY or now < conn.deadline:
                continue
            if phase == FLUSH:
                if conn.sink.kernel_queue_shrank():
                    # The client reads, slowly: the kernel wakes us only when a third of its
                    # buffer is free, so progress is measured in its queue, not our sends.
                    conn.deadline = now + self.config.socket_timeout
                    continue
                error_log.info(
                    "client %s read nothing of its answer for %.0f s; closing",
                    conn.peer or "unix peer",
                    self.config.socket_timeout,
                )
            conn.time_out()  # says so: a log line, a 408 for a slow head or body
            self._close(conn)

    def _shutdown(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn)
        if self.metrics is not None:
            self.metrics.flush()  # the last counts, before the master reaps us
        if self._pool is not None:
            self._pool.stop()
        self._poller.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
