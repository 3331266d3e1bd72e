"""One worker process: an epoll loop over inherited listeners and their connections, the app
called inline (threads = 1) or on a small thread pool, keep-alive, timeouts, graceful exit.

Why this shape: with threads = 1 the loop parses, calls the app and answers in one pass with
no thread hand-off (the hand-off costs more than parsing). With threads > 1 the loop still
owns every connection between requests (an idle keep-alive client never holds a thread);
a thread owns a connection only while a request on it runs. Heads, and bodies up to
`post_buffering`, are read by the loop, so a slow client never ties up a thread either.
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import io
import ipaddress
import os
import queue
import select
import signal
import socket
import sys
import termios
import threading
import time
import traceback

from . import http1, uwsgi
from .config import PROTOCOL_UWSGI
from .errors import PeerGone, ProtocolError
from .events import NEED_DATA, ConnectionClosed, Data, EndOfMessage
from .log import AccessLog, error_log, setup_error_log
from .responses import RECV_SIZE, HttpResponse, UwsgiResponse, date_cache, recv_wait, send_all
from .wsgi import (
    AppError,
    BodyReader,
    base_environ,
    decode_path,
    http_environ,
    mount_split,
    run_app,
    split_target,
    uwsgi_environ,
)

_EPOLLIN = select.EPOLLIN
_ONESHOT = select.EPOLLONESHOT
_LINGER_SECONDS = 2.0  # after an error answer, read and discard what the client still sends
_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}

# Connection phases, for the timeout sweep.
_IDLE, _HEAD, _BODY, _BUSY, _LINGER, _FLUSH = range(6)


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
        "out",
        "flush_keep_alive",
        "unsent",
    )

    def __init__(self, sock, peer, site, parser, deadline):
        self.sock = sock
        self.fd = sock.fileno()
        self.parser = parser
        self.peer = peer
        self.site = site
        self.phase = _IDLE
        self.deadline = deadline
        self.head = None  # a request head whose body the loop is still buffering
        self.body = None
        self.body_size = 0
        self.requests = 0
        self.out = bytearray()  # answer bytes the loop still has to send (inline worker)
        self.flush_keep_alive = False
        self.unsent = -1  # kernel send queue at the last timeout check (TIOCOUTQ)


def _unsent_shrank(conn) -> bool:
    """Did the kernel's send queue for this socket shrink since the last look?"""
    try:
        raw = fcntl.ioctl(conn.fd, termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return False
    unsent = int.from_bytes(raw, sys.byteorder, signed=True)
    shrank = conn.unsent < 0 or unsent < conn.unsent
    conn.unsent = unsent
    return shrank and unsent > 0


class Site:
    """What a listener serves: its base environ (SERVER_NAME/PORT, scheme, multithread...)."""

    __slots__ = ("listener", "environ", "is_unix", "is_uwsgi")

    def __init__(self, listener, environ, is_unix):
        self.listener = listener
        self.environ = environ
        self.is_unix = is_unix
        self.is_uwsgi = listener.address.protocol == PROTOCOL_UWSGI


class Worker:
    """Serve the app on the given listeners until told to stop."""

    def __init__(
        self, config, app, listeners, *, access_log=None, slot=None, notify=None, master_pid=0
    ):
        self.config = config
        self.slot = slot  # scoreboard.WorkerSlot, when a master watches this worker
        self.notify = notify  # callable(str) sending one line to the master
        self.master_pid = master_pid  # the parent to outlive no longer than a moment
        self.app = app
        self.listeners = listeners
        self.access_log = access_log if access_log is not None else AccessLog(None)
        if config.access_log is None:
            self.access_log = None
        self.limits = http1.Limits(
            config.max_request_line,
            config.max_header_bytes,
            config.max_header_fields,
            config.max_body_size or None,
        )
        self.inline = config.threads <= 1
        self._log_notable = bool(config.log_4xx or config.log_5xx or config.log_slow)
        self._track_busy = config.harakiri > 0
        self.alive = True
        self.graceful_deadline = None
        self.requests_served = 0
        self.max_requests = 0  # set by the master for recycling; 0 = never
        self.busy = {}  # thread ident -> (start, method, path): for harakiri reports
        self._conns = {}
        self._lock = threading.Lock()
        self._poller = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller.register(self._wake_r, _EPOLLIN)
        self._sites = {}
        self._occupied = 0  # requests queued for or running on the pool
        self._paused = False  # listeners unregistered because every thread has work
        self._resume_wanted = False
        self._accept_again_at = 0.0  # after EMFILE: when to try accepting again
        self._drop_idle = False  # stopping with no successor: idle keep-alive clients too
        self._allowed_cache = {}
        self._warned_uwsgi_vars = set()
        self._queue = None
        self._threads = []
        multiprocess = config.processes > 1
        for listener in listeners:
            addr = listener.address
            if addr.is_unix:
                name, port = "localhost", "80"
            else:
                host = listener.sock.getsockname()[0]
                name = addr.host or host
                port = str(listener.sock.getsockname()[1])
            environ = base_environ(
                server_name=name,
                server_port=port,
                multithread=not self.inline,
                multiprocess=multiprocess,
                script_name=config.script_name,
            )
            self._sites[listener.sock.fileno()] = Site(listener, environ, addr.is_unix)
        self._conn_flags = _EPOLLIN if self.inline else _EPOLLIN | _ONESHOT

    # -- control -----------------------------------------------------------------------------
    def retire(self, reason: str) -> None:
        """Past a limit (max-requests, memory): tell the master, then stop gracefully.

        The master starts a replacement as soon as it hears, so service has no gap."""
        if not self.alive:
            return
        error_log.info("worker %d retiring: %s", os.getpid(), reason)
        if self.notify is not None:
            self.notify(f"retiring {os.getpid()}")
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

    def _reopen_logs(self) -> None:
        if self.access_log is not None:
            self.access_log.reopen()
        setup_error_log(self.config.error_log, self.config.log_level)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        """The event loop; returns when stopped and every connection is done."""
        if not self.inline:
            self._queue = queue.SimpleQueue()
            for i in range(self.config.threads):
                t = threading.Thread(target=self._thread_main, name=f"forklift-{i}", daemon=True)
                t.start()
                self._threads.append(t)
        if self.slot is not None or self.config.harakiri:
            threading.Thread(target=self._watchdog, name="forklift-watchdog", daemon=True).start()
        for fd in self._sites:
            # EPOLLEXCLUSIVE: with several workers on one socket, wake one, not all.
            flags = _EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0)
            self._poller.register(fd, flags)
        poll = self._poller.poll
        sites = self._sites
        conns = self._conns
        wake_r = self._wake_r
        next_sweep = time.monotonic() + 1.0
        accepting = True
        try:
            while True:
                if not self.alive:
                    if accepting:
                        self._stop_accepting()
                        accepting = False
                    if self._finished_draining():
                        return
                try:
                    events = poll(1.0)
                except InterruptedError:
                    continue
                for fd, _ev in events:
                    conn = conns.get(fd)
                    if conn is not None:
                        try:
                            if conn.phase == _FLUSH:
                                self._on_writable(conn)
                            else:
                                self._on_readable(conn)
                        except Exception:
                            self._internal_error(conn)
                    elif fd in sites:
                        if accepting:
                            self._accept(sites[fd])
                    elif fd == wake_r:
                        self._drain_wakeups()
                        if self._resume_wanted:
                            self._resume_wanted = False
                            if accepting:
                                self._resume_accepting()
                now = time.monotonic()
                if self._accept_again_at and now >= self._accept_again_at:
                    self._accept_again_at = 0.0
                    if accepting:
                        self._resume_accepting()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + 1.0
        finally:
            self._shutdown()

    def _watchdog(self) -> None:
        """Heartbeat for the master; harakiri: a request past the limit gets its stack
        logged and the worker killed (the master replaces it)."""
        harakiri = self.config.harakiri
        parent = self.master_pid
        while True:
            if self.slot is not None:
                self.slot.heartbeat()
                # Compared with the pid the master gave before fork(): a master killed while
                # this worker was still importing the app is noticed too.
                if parent and os.getppid() != parent and self.alive:
                    # The master is gone (killed -9): nobody would reap, replace or stop
                    # us, and a new master could not bind. Finish what is in flight, exit.
                    error_log.error("worker %d: the master died; stopping", os.getpid())
                    self._drop_idle = True  # no successor to hand clients to: close them
                    self.stop(graceful=True)
            time.sleep(0.25)
            if not harakiri:
                continue
            now = time.monotonic()
            for ident, (start, method, uri) in list(self.busy.items()):
                if now - start > harakiri:
                    self._harakiri(ident, method, uri, now - start)

    def _harakiri(self, ident: int, method: str, uri: str, elapsed: float) -> None:
        frame = sys._current_frames().get(ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
        error_log.error(
            "harakiri: %s %s has run %.1f s (limit %s s); worker %d killed. Stuck at:\n%s",
            method,
            uri,
            elapsed,
            self.config.harakiri,
            os.getpid(),
            stack.rstrip(),
        )
        for handler in error_log.handlers:
            handler.flush()
        if self.notify is not None:
            self.notify(f"harakiri {os.getpid()}")
        os.kill(os.getpid(), signal.SIGKILL)

    def _pause_accepting(self) -> None:
        if self._paused or not self.alive:
            return
        self._paused = True
        for fd in self._sites:
            try:
                self._poller.unregister(fd)
            except (OSError, KeyError):
                pass

    def _resume_accepting(self) -> None:
        with self._lock:
            if not self._paused or self._occupied >= self.config.threads:
                return
            self._paused = False
        flags = _EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0)
        for fd in self._sites:
            try:
                self._poller.register(fd, flags)
            except (OSError, FileExistsError):
                pass

    def _stop_accepting(self) -> None:
        for fd in list(self._sites):
            try:
                self._poller.unregister(fd)
            except (OSError, KeyError):
                pass
        # Idle keep-alive connections are not cut: a client may be sending on one right now.
        # A request that arrives is answered with "Connection: close"; the others end at
        # their keep-alive deadline, as they would have anyway.
        fast = self.graceful_deadline is not None and time.monotonic() >= self.graceful_deadline
        if fast or self._drop_idle:
            for conn in list(self._conns.values()):
                if conn.phase == _IDLE or (fast and conn.phase != _BUSY):
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

    def _accept(self, site) -> None:
        lsock = site.listener.sock
        raw_accept = lsock._accept  # (fd, address): skips socket.accept's Python wrapper
        family = lsock.family
        now = time.monotonic()
        deadline = now + self.config.head_timeout
        for _ in range(64):  # bounded, so one busy listener cannot starve the others
            if not self.alive or self._paused:
                return  # retired or full during this batch: leave the rest to others
            try:
                fd, addr = raw_accept()
                sock = _socket.socket(family, socket.SOCK_STREAM, 0, fd)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: stop accepting for a moment rather than
                    # spin on a listener that stays readable. Waiting clients stay queued.
                    error_log.error("accept failed: %s; pausing accepts for 0.5 s", exc)
                    self._pause_accepting()
                    self._accept_again_at = time.monotonic() + 0.5
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            if site.is_unix:
                peer = None
            else:
                peer = addr[:2]
                if site.is_uwsgi and not self._uwsgi_peer_allowed(peer[0]):
                    # uwsgi vars are trusted as a proxy's word (REMOTE_ADDR, HTTPS...):
                    # only the configured proxies may speak it.
                    error_log.warning(
                        "uwsgi connection from %s refused (--uwsgi-allow-ips)", peer[0]
                    )
                    sock.close()
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            if site.is_uwsgi:
                parser = uwsgi.UwsgiParser(self.config.buffer_size, self.limits.max_body)
            else:
                parser = http1.RequestParser(self.limits)
            conn = Connection(sock, peer, site, parser, deadline)
            self._conns[conn.fd] = conn
            self._poller.register(conn.fd, self._conn_flags)
            if self.inline:
                # The request often arrived with the connection (nginx and most clients
                # send at once): read it now rather than after another epoll round.
                try:
                    self._on_readable(conn)
                except Exception:
                    self._internal_error(conn)

    def _uwsgi_peer_allowed(self, host: str) -> bool:
        return self._peer_in(host, self.config.uwsgi_allow_ips)

    def _peer_in(self, host: str, networks) -> bool:
        key = (host, id(networks))  # id: hashing the networks themselves is slow
        allowed = self._allowed_cache.get(key)
        if allowed is None:
            try:
                ip = ipaddress.ip_address(host.partition("%")[0])
            except ValueError:
                return False
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            allowed = any(ip in net for net in networks)
            if len(self._allowed_cache) < 1024:
                self._allowed_cache[key] = allowed
        return allowed

    def _on_readable(self, conn) -> None:
        if conn.phase == _BUSY:
            return
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            self._rearm(conn)
            return
        except OSError as exc:
            error_log.debug("recv from %s failed: %s", conn.peer, exc)
            self._close(conn)
            return
        if conn.phase == _LINGER:
            if data:
                self._rearm(conn)
            else:
                self._close(conn)
            return
        conn.parser.receive_data(data)
        self._advance(conn, in_thread=False)

    def _rearm(self, conn) -> None:
        if not self.inline:
            try:
                self._poller.modify(conn.fd, self._conn_flags)
            except OSError:
                pass

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
                now = time.monotonic()
                if (
                    conn.phase == _IDLE
                    and not conn.site.is_uwsgi
                    and not parser.at_message_boundary
                ):
                    conn.phase = _HEAD
                    conn.deadline = now + config.head_timeout
                elif conn.phase == _BODY:
                    conn.deadline = now + config.socket_timeout
                self._hand_back(conn, in_thread)
                return
            kind = type(event)
            if kind is http1.RequestHead or kind is uwsgi.UwsgiRequest:
                conn.head = event
                conn.body = []
                conn.body_size = 0
                if kind is uwsgi.UwsgiRequest:
                    if event.dropped:
                        self._warn_uwsgi_vars(event.dropped)
                    if not event.content_length:
                        continue
                    expect_continue = False
                elif not event.has_body:
                    continue  # the EndOfMessage follows at once
                else:
                    expect_continue = event.expect_continue
                if expect_continue or (
                    event.content_length is not None
                    and event.content_length > config.post_buffering
                ):
                    # Stream it: the app's reads pull the body (and send the 100 first).
                    if self._run_request(conn, in_thread, streaming=True):
                        continue
                    return
                conn.phase = _BODY
                conn.deadline = time.monotonic() + config.socket_timeout
            elif kind is Data:
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
            elif kind is ConnectionClosed:
                self._close(conn)
                return
            else:  # PAUSED cannot happen here: _after_request restarts the parser
                self._close(conn)
                return

    def _run_request(self, conn, in_thread: bool, streaming: bool) -> bool:
        """Run (or queue) the request; True when the caller goes on with the next one."""
        self._dispatch(conn, in_thread, streaming)
        if in_thread or self.inline:
            return self._after_request(conn)
        return False  # queued: the pool thread continues this connection

    def _dispatch(self, conn, in_thread: bool, streaming: bool) -> None:
        conn.phase = _BUSY
        if self.inline or in_thread:
            self._serve(conn, streaming)
        else:
            with self._lock:
                self._occupied += 1
                full = self._occupied >= self.config.threads
            if full:
                # Every thread has work: leave new connections in the shared queue for a
                # worker that can serve them now (and that is not the one that may crash).
                self._pause_accepting()
            self._queue.put((conn, streaming))

    def _thread_main(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            conn, streaming = item
            try:
                self._serve(conn, streaming)
                if self._after_request(conn):
                    self._advance(conn, in_thread=True)
            except Exception:
                self._internal_error(conn)
            finally:
                with self._lock:
                    self._occupied -= 1
                    resume = self._paused and self._occupied < self.config.threads
                if resume:
                    self._resume_wanted = True
                    self._wake()

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
                self._poller.modify(conn.fd, self._conn_flags)
            except OSError:
                self._close(conn)

    def _after_request(self, conn) -> bool:
        """After an answer: True when the connection stays open for the next request."""
        if conn.fd < 0:
            return False
        parser = conn.parser
        # While stopping, a connection whose answer promised keep-alive stays open until its
        # idle deadline: a request that arrives on it is answered with "Connection: close".
        if conn.phase == _FLUSH:
            return False  # the loop continues this connection once its answer is out
        if conn.phase != _BUSY or conn.site.is_uwsgi or not parser.message_complete:
            if conn.phase != _LINGER:
                self._close(conn)
            return False
        parser.start_next_request()
        conn.phase = _IDLE
        conn.head = None
        conn.body = None
        conn.deadline = time.monotonic() + self.config.keepalive_timeout
        return True

    def _serve(self, conn, streaming: bool) -> None:
        """Run the app for the request whose head (and maybe body) the connection holds."""
        head = conn.head
        config = self.config
        start = time.monotonic()
        conn.requests += 1
        site = conn.site
        if site.is_uwsgi:
            environ = uwsgi_environ(site.environ, head.vars, conn.peer)
            path_info = environ["PATH_INFO"]
            expect_continue = False
        else:
            path, query, authority = split_target(head.target)
            path_info = decode_path(path)
            environ = None
            expect_continue = head.expect_continue
        split = mount_split(path_info, config.script_name)
        if split is None:
            self._simple_answer(conn, 404, "Not Found", "no application is mounted at this path")
            return
        if environ is None:
            environ = http_environ(site.environ, head, split[1], query, authority, conn.peer)
        else:
            environ["PATH_INFO"] = split[1]
        if split[0]:
            environ["SCRIPT_NAME"] = split[0]
        body = conn.body
        if streaming:
            stream = BodyReader(
                self._body_puller(conn, body),
                self._continue_sender(conn) if expect_continue else None,
            )
        elif body:
            stream = io.BytesIO(body[0] if len(body) == 1 else b"".join(body))
        else:
            stream = io.BytesIO()
        environ["wsgi.input"] = stream
        if not site.is_uwsgi and (
            "HTTP_X_FORWARDED_FOR" in environ or "HTTP_X_FORWARDED_PROTO" in environ
        ):
            self._apply_forwarded(environ, conn.peer)
        if site.is_uwsgi:
            response = UwsgiResponse(conn, environ["REQUEST_METHOD"], config.socket_timeout)
            response.defer = self.inline
        else:
            response = HttpResponse(conn, head, config.socket_timeout, self.alive, self.inline)
        ident = 0
        if self._track_busy:  # for harakiri's report: which request each thread runs
            ident = threading.get_ident()
            self.busy[ident] = (
                start,
                environ["REQUEST_METHOD"],
                environ.get("REQUEST_URI") or environ["PATH_INFO"],
            )
        slot = self.slot
        if slot is not None:
            slot.request_started()
        try:
            run_app(self.app, environ, response)
        except PeerGone as exc:
            parser_error = getattr(conn.parser, "_error", None)
            if parser_error is not None and parser_error.status and not response.head_sent:
                # Not a vanished client: its streamed body was malformed or too large.
                self._reject(conn, parser_error)
                return
            error_log.debug("client %s went away: %s", conn.peer, exc)
            self._close(conn)
            return
        except Exception as exc:
            self._app_failed(conn, response, environ, exc)
            return
        finally:
            if ident:
                self.busy.pop(ident, None)
            if slot is not None:
                slot.request_finished(response.status[:1] == "5")
            if self.access_log is not None:
                self.access_log.log(
                    environ, response.status, response.sent, time.monotonic() - start
                )
            if self._log_notable:
                self._log_notable_request(environ, response.status, time.monotonic() - start)
            self.requests_served += 1
            if self.max_requests and self.requests_served >= self.max_requests:
                self.retire(f"served {self.requests_served} requests (max-requests)")
        if conn.out and conn.fd >= 0:
            self._await_flush(conn, response.keep_alive)
        elif not response.keep_alive:
            self._close(conn)

    def _await_flush(self, conn, keep_alive: bool) -> None:
        """The answer is not all out yet: the loop sends the rest when the client reads,
        serving others meanwhile; the connection continues (or closes) after that."""
        conn.phase = _FLUSH
        conn.flush_keep_alive = keep_alive
        conn.deadline = time.monotonic() + self.config.socket_timeout
        try:
            self._poller.modify(conn.fd, select.EPOLLOUT)
        except OSError:
            self._close(conn)

    def _on_writable(self, conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            error_log.debug("client %s went away: %s", conn.peer, exc)
            self._close(conn)
            return
        del conn.out[:sent]
        conn.deadline = time.monotonic() + self.config.socket_timeout
        if conn.out:
            return
        if not conn.flush_keep_alive:
            self._close(conn)
            return
        try:
            self._poller.modify(conn.fd, self._conn_flags)
        except OSError:
            self._close(conn)
            return
        conn.phase = _BUSY
        if self._after_request(conn):
            self._advance(conn, in_thread=False)

    def _log_notable_request(self, environ: dict, status: str, duration: float) -> None:
        """uWSGI's log-4xx, log-5xx and log-slow: such requests reach the error log even
        when the access log is off."""
        config = self.config
        kind = status[:1]
        slow = config.log_slow and duration * 1000 >= config.log_slow
        if (kind == "4" and config.log_4xx) or (kind == "5" and config.log_5xx) or slow:
            error_log.warning(
                "%s %s -> %s in %.0f ms from %s",
                environ.get("REQUEST_METHOD"),
                environ.get("REQUEST_URI") or environ.get("PATH_INFO"),
                status or "(no answer)",
                duration * 1000,
                environ.get("REMOTE_ADDR") or "-",
            )

    def _apply_forwarded(self, environ: dict, peer) -> None:
        """X-Forwarded-For/-Proto, believed only from --forwarded-allow-ips peers (and unix
        sockets, which only a local proxy can reach). The rightmost address is the one the
        trusted proxy saw; anything to its left was written by the client."""
        if peer is not None and not self._peer_in(peer[0], self.config.forwarded_allow_ips):
            return
        forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded_for:
            addr = forwarded_for.rpartition(",")[2].strip()
            if addr:
                environ["REMOTE_ADDR"] = addr
                environ["REMOTE_PORT"] = "0"
        proto = environ.get("HTTP_X_FORWARDED_PROTO", "").rpartition(",")[2].strip().lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto

    def _warn_uwsgi_vars(self, names) -> None:
        new = set(names) - self._warned_uwsgi_vars
        if new:
            self._warned_uwsgi_vars |= new
            error_log.warning(
                "ignored uwsgi vars from the peer (they never select code or environment): %s",
                ", ".join(sorted(new)),
            )

    def _body_puller(self, conn, buffered):
        parser = conn.parser
        pending = list(buffered)
        timeout = self.config.socket_timeout

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
                    parser.receive_data(recv_wait(conn.sock, timeout))
                    continue
                return b""  # EndOfMessage (or PAUSED after it)

        return pull

    def _continue_sender(self, conn):
        def send_continue() -> None:
            if not conn.parser.message_complete:
                send_all(conn.sock, http1.CONTINUE_RESPONSE, self.config.socket_timeout)

        return send_continue

    def _app_failed(self, conn, response, environ, exc) -> None:
        parser_error = getattr(conn.parser, "_error", None)
        if response.head_sent:
            error_log.error(
                "error after the response head was sent for %s %s; closing the connection\n%s",
                environ.get("REQUEST_METHOD"),
                environ.get("REQUEST_URI"),
                traceback.format_exc().rstrip(),
            )
            self._close(conn)
            return
        if parser_error is not None and parser_error.status:
            # The body was malformed or too large while the app read it: the client's fault.
            self._reject(conn, parser_error)
            return
        if isinstance(exc, AppError):
            error_log.error(
                "%s %s: %s", environ.get("REQUEST_METHOD"), environ.get("REQUEST_URI"), exc
            )
        else:
            error_log.error(
                "exception in the app for %s %s\n%s",
                environ.get("REQUEST_METHOD"),
                environ.get("REQUEST_URI"),
                traceback.format_exc().rstrip(),
            )
        response.status = "500 Internal Server Error"
        self._simple_answer(conn, 500, "Internal Server Error", "Internal Server Error")

    def _simple_answer(self, conn, status: int, reason: str, message: str) -> None:
        """A short plain-text answer, then close (the connection state is unknown)."""
        head_only = getattr(conn.parser, "request_is_head", False)  # RFC 9110 §9.3.2
        try:
            send_all(
                conn.sock,
                http1.error_response(
                    status, reason, message, date_cache.get(), head_only=head_only
                ),
                self.config.socket_timeout,
            )
        except PeerGone:
            pass
        self._linger(conn)

    def _reject(self, conn, exc: ProtocolError) -> None:
        """A protocol error: answer its status (if any) and close, never parse further."""
        if conn.site.is_uwsgi:
            error_log.warning("bad uwsgi packet from %s: %s", conn.peer or "unix peer", exc)
        else:
            error_log.debug("bad request from %s: %s", conn.peer, exc)
        if exc.status:
            head_only = getattr(conn.parser, "request_is_head", False)  # RFC 9110 §9.3.2
            body = http1.error_response(
                exc.status,
                _REASONS.get(exc.status, "Bad Request"),
                str(exc),
                date_cache.get(),
                head_only=head_only,
            )
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
        conn.phase = _LINGER
        conn.deadline = time.monotonic() + _LINGER_SECONDS
        try:
            self._poller.modify(conn.fd, self._conn_flags)
        except OSError:
            self._close(conn)

    def _close(self, conn) -> None:
        fd = conn.fd
        if fd < 0:
            return
        conn.fd = -1
        self._conns.pop(fd, None)
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
            if phase == _BUSY or now < conn.deadline:
                continue
            if phase == _FLUSH and _unsent_shrank(conn):
                # The client reads, slowly: the kernel wakes us only when a third of its
                # buffer is free, so progress is measured in its queue, not our sends.
                conn.deadline = now + self.config.socket_timeout
                continue
            if phase in (_HEAD, _BODY):
                error_log.debug("request from %s timed out; closing", conn.peer)
                try:
                    head_only = getattr(conn.parser, "request_is_head", False)
                    conn.sock.send(
                        http1.error_response(
                            408, "Request Timeout", extra=date_cache.get(), head_only=head_only
                        )
                    )
                except OSError:
                    pass
            self._close(conn)

    def _shutdown(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn)
        if self._queue is not None:
            for _ in self._threads:
                self._queue.put(None)
        self._poller.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
