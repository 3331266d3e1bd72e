"""Hostile and unlucky clients: slowloris, clients that vanish mid-body or mid-response, and
many clients at once. The server must survive each, keep serving others, and close results."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import pytest

from support import wait_until
from support.wire import ServerClosed, Wire, request


def _json(resp) -> dict:
    assert resp.status == 200, resp
    return json.loads(resp.body)


class TestSlowloris:
    def test_slow_head_is_cut_off_while_others_are_served(self, servers, threads):
        server = servers.get("echo:app", "--threads", str(threads), "--head-timeout", "2")
        head = request("GET", "/slow", [("X-Padding", "p" * 40)])
        slow = server.connect()
        cut_off_after = None
        served = 0
        latencies = []
        try:
            start = time.monotonic()
            sent = 0
            next_byte = start
            # One byte a second (the slowloris pace) while other clients come and go.
            while sent < len(head) and time.monotonic() - start < 8:
                now = time.monotonic()
                if now >= next_byte:
                    try:
                        slow.sock.send(head[sent : sent + 1])
                    except OSError:
                        cut_off_after = now - start
                        break
                    sent += 1
                    next_byte += 1.0
                if not slow.nothing_within(0.0001) or slow.eof:
                    cut_off_after = time.monotonic() - start
                    break
                t0 = time.monotonic()
                resp = server.exchange(request("GET", f"/other/{served}"))
                latencies.append(time.monotonic() - t0)
                assert _json(resp)["path"] == f"/other/{served}"
                served += 1
                time.sleep(0.05)  # the other clients' pace: ~20 requests per slow byte
            assert cut_off_after is not None, "the slow client was never cut off"
            assert 1.5 <= cut_off_after <= 4.5, f"cut off after {cut_off_after:.2f}s"
            rest = slow.read_until_eof(timeout=2)
            assert b"200 OK" not in slow.buf + rest
            assert not rest or rest.startswith(b"HTTP/1.1 408 ")
        finally:
            slow.close()
        # between any two of the slow client's bytes (a second apart), others were served
        assert served > sent, f"{served} other requests while {sent} slow bytes dribbled"
        assert max(latencies) < 1.0, f"other clients waited up to {max(latencies):.2f}s"

    def test_idle_connection_without_a_byte_is_cut_off(self, servers, threads):
        server = servers.get("echo:app", "--threads", str(threads), "--head-timeout", "2")
        with server.connect() as silent:
            start = time.monotonic()
            silent.read_until_eof(timeout=5)
            assert time.monotonic() - start < 4.5
        assert _json(server.exchange(request("GET", "/still-up")))["path"] == "/still-up"

    def test_many_slow_clients_do_not_starve_the_pool(self, servers, threads):
        # More slow heads than threads: none of them may hold a thread.
        server = servers.get("echo:app", "--threads", str(threads), "--head-timeout", "2")
        slow = [server.connect() for _ in range(threads * 4 + 4)]
        try:
            for wire in slow:
                wire.send(b"GET /partial HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            for i in range(5):
                assert _json(server.exchange(request("GET", f"/ok{i}")))["path"] == f"/ok{i}"
            assert time.monotonic() - t0 < 2.0
        finally:
            for wire in slow:
                wire.close()


def _rst_close(wire: Wire) -> None:
    """Close with a reset (SO_LINGER 0): the harshest way a client can vanish."""
    wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wire.close()


class TestDisconnects:
    @pytest.fixture
    def tracker(self, servers, threads):
        return servers.get("closetrack:app", "--threads", str(threads))

    @staticmethod
    def _close_log(server) -> list:
        path = server.dir / "close.log"
        return path.read_text().splitlines() if path.exists() else []

    def _wait_closed(self, server, tag: str) -> list:
        return wait_until(
            lambda: f"close {tag}" in self._close_log(server) and self._close_log(server),
            5,
            what=f"close() called for {tag}",
        )

    def _still_serving(self, server) -> None:
        tag = f"after-{time.monotonic_ns()}"
        with server.connect() as wire:
            wire.send(request("GET", f"/ok?tag={tag}"))
            assert wire.read_response().body == b"ok"
        self._wait_closed(server, tag)

    def test_close_is_called_on_a_normal_answer(self, tracker):
        self._still_serving(tracker)

    @pytest.mark.parametrize("mode", ["spooled", "streamed"])
    @pytest.mark.parametrize("how", ["fin", "rst"])
    def test_client_vanishes_mid_body(self, servers, threads, mode, how):
        # Spooled (the default): the loop reads the body first, so the app is never called
        # for a body that never came. Streamed: the app was called and reads; its read
        # breaks and its result is closed all the same.
        streamed = mode == "streamed"
        extra = ["--stream-request-body"] if streamed else []
        tracker = servers.get("closetrack:app", "--threads", str(threads), *extra)
        tag = f"midbody-{mode}-{how}-{time.monotonic_ns()}"
        size = 5_000_000
        with tracker.connect() as wire:
            wire.send(request("POST", f"/read?tag={tag}", [("Content-Length", str(size))]))
            wire.send(b"b" * (size // 10))
            if streamed:
                wait_until(lambda: f"begin {tag}" in self._close_log(tracker), 5, what="app call")
            # (spooled: the client leaves while the server may still be reading the body; no
            # event to wait for, and either moment must leave the server serving)
            _rst_close(wire) if how == "rst" else wire.close()
        if streamed:
            self._wait_closed(tracker, tag)
        self._still_serving(tracker)
        assert (f"begin {tag}" in self._close_log(tracker)) == streamed

    @pytest.mark.parametrize("how", ["fin", "rst"])
    def test_client_vanishes_mid_response(self, tracker, how):
        tag = f"midresp-{how}-{time.monotonic_ns()}"
        wire = tracker.connect()
        wire.send(request("GET", f"/stream?tag={tag}"))
        wire.read_head()
        wire.read_exact(200_000)
        _rst_close(wire) if how == "rst" else wire.close()
        self._wait_closed(tracker, tag)
        self._still_serving(tracker)

    def test_vanish_is_one_debug_line_not_an_error(self, servers):
        server = servers.get("closetrack:app", "--threads", "2", "--log-level", "debug")
        mark = server.stderr_mark()
        tag = f"quiet-{time.monotonic_ns()}"
        wire = server.connect()
        wire.send(request("GET", f"/stream?tag={tag}"))
        wire.read_head()
        _rst_close(wire)
        self._wait_closed(server, tag)
        self._still_serving(server)
        text = server.stderr_since(mark)
        assert "Traceback" not in text
        assert "[ERROR]" not in text

    def test_client_vanishes_while_the_app_sleeps(self, servers, threads):
        server = servers.get("closetrack:app", "--threads", str(threads))
        tag = f"asleep-{time.monotonic_ns()}"
        wire = server.connect()
        wire.send(request("GET", f"/sleep?s=0.3&tag={tag}"))
        wait_until(lambda: f"begin {tag}" in self._close_log(server), 5, what="the app call")
        _rst_close(wire)
        self._wait_closed(server, tag)  # the app woke up to a vanished client, and was closed
        self._still_serving(server)

    def test_half_request_then_close_between_requests(self, echo):
        for data in (b"GET / HT", b"GET / HTTP/1.1\r\nHost: x\r\n", b"POST / HTTP/1.1\r\n"):
            wire = echo.connect()
            wire.send(data)
            wire.close()
        with echo.connect() as wire:
            wire.send(request("GET", "/fine"))
            assert _json(wire.read_response())["path"] == "/fine"


class TestConcurrency:
    def test_200_concurrent_connections(self, echo):
        n = 200
        barrier = threading.Barrier(n, timeout=20)
        results: list = [None] * n
        errors: list = []

        def client(i):
            try:
                with echo.connect(timeout=20) as wire:
                    barrier.wait()
                    body = b"%d" % i * (i + 1)
                    wire.send(request("POST", f"/c/{i}", body=body))
                    got = _json(wire.read_response())
                    results[i] = (got["path"], got["body"]) == (f"/c/{i}", body.decode())
            except (OSError, AssertionError, ServerClosed, threading.BrokenBarrierError) as exc:
                errors.append(f"{i}: {exc!r}")

        workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
        for t in workers:
            t.start()
        deadline = time.monotonic() + 30
        for t in workers:
            t.join(max(0.1, deadline - time.monotonic()))
        assert not errors, errors[:5]
        assert all(results), f"{results.count(None)} clients got no answer"

    def test_threads_run_the_app_concurrently(self, servers):
        server = servers.get("slow:app", "--threads", "4")
        answers: list = []

        def call():
            answers.append(_json(server.exchange(request("GET", "/?s=0.5"))))

        workers = [threading.Thread(target=call, daemon=True) for _ in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(10)
        assert len(answers) == 4
        # the app's own clock (monotonic is system-wide): the last one began before the first
        # one ended, whatever the machine's speed
        first_end = min(a["started"] + a["slept"] for a in answers)
        assert max(a["started"] for a in answers) < first_end, "the four requests did not overlap"
        assert len({a["thread"] for a in answers}) == 4

    def test_a_request_that_waits_does_not_hold_the_loop_of_an_app_that_computes(self, servers):
        # Quick requests first: the threads measure an app that computes and keep the lead
        # while serving (no hand-off). Then one request waits 3 s; another client must be
        # answered meanwhile, by the thread that takes the lead from the waiting one.
        server = servers.get("slow:app", "--threads", "2", "--processes", "1")
        for _ in range(40):
            assert _json(server.exchange(request("GET", "/?s=0")))["slept"] == 0
        slow: list = []
        waiter = threading.Thread(
            target=lambda: slow.append(_json(server.exchange(request("GET", "/?s=3")))),
            daemon=True,
        )
        waiter.start()
        quick = []  # (the app's start, when its answer came), until the slow one is answered
        for _ in range(200):
            if slow:
                break
            answer = _json(server.exchange(request("GET", "/?s=0")))
            quick.append((answer["started"], time.monotonic()))
        waiter.join(10)
        assert slow, "the slow request was not answered"
        slow_start = slow[0]["started"]
        slow_end = slow_start + slow[0]["slept"]
        during = [got for started, got in quick if slow_start < started and got < slow_end]
        assert during, "no other client was answered while one request waited"

    def test_a_client_that_stops_reading_holds_one_thread_only(self, servers):
        # With --threads 1 the inline loop is blocked while it writes to such a client (up
        # to --socket-timeout); with a pool, the others are served meanwhile.
        server = servers.get("streaming:app", "--threads", "4")
        stuck = server.connect()
        try:
            stuck.send(request("GET", "/?chunks=20000&size=4096"))  # 80 MB, never read
            # its answer has begun: a thread now writes to a client that does not read
            assert stuck.sock.recv(1, socket.MSG_PEEK), "no answer began"
            for _ in range(5):
                t0 = time.monotonic()
                resp = server.exchange(request("GET", "/?chunks=2&size=10"))
                assert resp.status == 200 and len(resp.body) == 20
                assert time.monotonic() - t0 < 1.0
        finally:
            _rst_close(stuck)

    def test_an_idle_keepalive_connection_holds_no_thread(self, servers):
        # With one thread, ten idle keep-alive connections must not block an eleventh client.
        server = servers.get("echo:app", "--threads", "1")
        idle = []
        try:
            for i in range(10):
                wire = server.connect()
                wire.send(request("GET", f"/i{i}"))
                wire.read_response()
                idle.append(wire)
            t0 = time.monotonic()
            assert _json(server.exchange(request("GET", "/eleventh")))["path"] == "/eleventh"
            assert time.monotonic() - t0 < 1.0
        finally:
            for wire in idle:
                wire.close()
