"""The worker's accept side: its listeners in the epoll set, the fair share of connections,
accepting a batch and setting each connection up. Part of `worker.Worker` (a mixin, split
from `worker.py` by concern); it uses the worker's poller, connection table and scoreboard
slot, and hands each new connection to the worker's `_on_readable`.

Why a fair share: with one listener shared by every worker, the worker that wakes first
would take a whole burst of keep-alive clients and keep them (64/0 on 2 workers). Each
worker writes its open-connection count into the scoreboard; one holding `_SLACK` or more
above the share (open connections / accepting workers) stops watching the listeners until
the others catch up, rechecking every `BALANCE_RECHECK` seconds.
"""

from __future__ import annotations

import _socket
import errno
import select
import socket
import time

from .connection import BUSY, Connection
from .log import error_log
from .sink import Sink

_EPOLLIN = select.EPOLLIN
_SLACK = 4
BALANCE_RECHECK = 0.005


class AcceptSide:
    """Accepting for `worker.Worker` (which sets every attribute used here)."""

    def _listen(self, on: bool) -> None:
        """Watch the listeners (or stop watching them) in the loop's epoll set.

        Level-triggered and not EPOLLEXCLUSIVE: the kernel hands an exclusive wake-up to the
        first idle waiter, always the same one, and a worker that then stops accepting (its
        share is full) would leave the queued clients to waiters nobody wakes. Every worker
        watching sees a non-empty queue; the fair-share rule decides who takes from it."""
        for fd in self._sites:
            try:
                if on:
                    self._poller.register(fd, _EPOLLIN)
                else:
                    self._poller.unregister(fd)
            except (OSError, KeyError):
                pass

    def _pause_accepting(self) -> None:
        """Over the fair share (or no descriptor is left): leave clients in the queue."""
        if self._paused or not self.alive:
            return
        self._paused = True
        self._listen(False)

    def _resume_accepting(self) -> None:
        if not self._paused:
            return
        self._over_share = self._holds_too_many()
        if self._over_share:
            return
        self._paused = False
        self._listen(True)

    def _holds_too_many(self) -> bool:
        """More open connections than the workers' fair share plus `_SLACK`: leave new
        clients to the others (keep-alive clients stay where they land, so balance is
        decided at accept time). A worker alone, or without a master, never is."""
        mine = len(self._conns)
        if mine < _SLACK or self.slot is None:
            return False
        return mine >= self.slot.fair_share() + _SLACK

    def _report_connections(self) -> None:
        if self.slot is not None:
            self.slot.connections(len(self._conns), self.alive)

    def _accept(self, site) -> None:
        lsock = site.listener.sock
        raw_accept = lsock._accept  # (fd, address): skips socket.accept's Python wrapper
        family = site.family
        now = time.monotonic()
        deadline = now + self.config.head_timeout
        counts, slot_index = self._counts, self._slot_index
        pool = self._pool
        for _ in range(64):  # bounded, so one busy listener cannot starve the others
            if not self.alive or self._paused or (pool is not None and pool.stocked):
                return  # retired or full during this batch: leave the rest to others
            if len(self._conns) >= _SLACK and self._holds_too_many():
                self._over_share = True
                self._pause_accepting()
                return
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
                if site.refuses(peer[0]):  # logged
                    sock.close()
                    continue
                # TCP_NODELAY comes from the listener (sockets.py): Linux copies it on accept.
            sock.setblocking(False)
            sink = Sink(sock, self.config.socket_timeout, fd)
            conn = Connection(sock, fd, peer, site, sink, deadline)
            self._conns[conn.fd] = conn
            if counts is not None:
                counts[slot_index] = len(self._conns)  # the fair share's input, no call
            if conn.prelude is not None:
                try:
                    self._watch(conn, self._conn_flags)
                except OSError:
                    self._close(conn)
                    continue
            # Read now: what the client sends first often arrives with the connection (nginx
            # and most clients send at once). A plain connection enters the epoll set only
            # when it waits: for bytes, or for its answer to leave, or after its first answer.
            # A request queued for this turn's thread (--threads, BUSY) is handed back by it.
            try:
                self._on_readable(conn)
            except Exception:
                self._internal_error(conn)
            if conn.fd >= 0 and not conn.watched and conn.phase != BUSY:
                try:
                    self._watch(conn, self._conn_flags)
                except OSError:
                    self._close(conn)

    def _watch(self, conn, events: int) -> None:
        """What the loop waits for on a connection; the first call adds it to the epoll set.
        Raises OSError (the caller closes)."""
        if conn.watched:
            self._poller.modify(conn.fd, events)
        else:
            self._poller.register(conn.fd, events)
            conn.watched = True
