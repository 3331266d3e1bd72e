"""Connections are shared across workers: 64 keep-alive clients arriving at once do not all
land on the worker that woke first.

Counted from the kernel's side, not the server's word: the sockets each worker process holds
(/proc/PID/fd) that are established TCP connections on the server's port (/proc/net/tcp).
A count, not a timing: it holds on a loaded machine.
"""

from __future__ import annotations

import os
import socket

import pytest

from support import wait_until

CLIENTS = 64
REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


def _established_inodes(port: int) -> set[str]:
    """Inodes of established TCP sockets whose local port is `port` (IPv4)."""
    found = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "01" and int(local.rpartition(":")[2], 16) == port:
                found.add(inode)
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def connections_per_worker(port: int, pids: list[int]) -> list[int]:
    established = _established_inodes(port)
    return [len(_socket_inodes(pid) & established) for pid in pids]


def _answered(sock: socket.socket) -> bool:
    """Read one small response (the test app answers in one segment)."""
    data = b""
    for _ in range(100):
        chunk = sock.recv(65536)
        if not chunk:
            return False
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(body) >= length:
                return True
    return False


def _trial(port: int, pids: list[int]) -> list[int]:
    """64 clients connect at once, each is answered once on its connection (which stays
    open); then count where they are."""
    clients = []
    try:
        for _ in range(CLIENTS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            clients.append(sock)
        for sock in clients:
            sock.sendall(REQUEST)
        for sock in clients:
            assert _answered(sock)
        counts = wait_until(
            lambda: (c := connections_per_worker(port, pids)) and sum(c) == CLIENTS and c,
            5,
            what="every client counted on a worker",
        )
    finally:
        for sock in clients:
            sock.close()
    wait_until(
        lambda: sum(connections_per_worker(port, pids)) == 0, 10, what="the clients to be closed"
    )
    return counts


@pytest.mark.parametrize(
    "processes, low, high, trials", [(2, 22, 42, 10), (4, 0, 24, 5)], ids=["p2", "p4"]
)
def test_keepalive_clients_spread_over_workers(master, processes, low, high, trials):  # noqa: F811
    server = master("--processes", str(processes), workers=processes)
    pids = sorted(w["pid"] for w in server.serving_workers())
    spreads = [_trial(server.port, pids) for _ in range(trials)]
    bad = [s for s in spreads if min(s) < low or max(s) > high]
    assert not bad, f"per-worker connections outside {low}-{high}: {bad} (all: {spreads})"
    # The status reports the same counts (from the scoreboard).
    assert all(w["connections"] == 0 for w in server.status()["workers"])
