"""Listen-queue depth read from the kernel, and the process_* figures of a pid."""

from __future__ import annotations

import mmap
import os
import socket
import tempfile
import time

from forklift.procinfo import _tcp_queues, listen_queues, process_stats


def test_tcp_and_unix_accept_queues_are_counted():
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    tcp6 = socket.socket(socket.AF_INET6)
    tcp6.bind(("::1", 0))
    tcp6.listen(16)
    directory = tempfile.mkdtemp(prefix="fl-")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(f"{directory}/q.sock")
    unix.listen(9)
    idle = socket.socket()  # a second listener nobody connects to: not confused with the first
    idle.bind(("127.0.0.1", 0))
    idle.listen(4)
    clients = [socket.create_connection(tcp.getsockname()) for _ in range(3)]
    clients += [socket.create_connection(tcp6.getsockname()[:2]) for _ in range(2)]
    for _ in range(5):
        c = socket.socket(socket.AF_UNIX)
        c.connect(f"{directory}/q.sock")
        clients.append(c)
    try:
        found = {id(s): (q, b) for s, q, b in listen_queues([tcp, tcp6, unix, idle])}
        assert found[id(tcp)] == (3, 16)  # queued, and the backlog given to listen()
        assert found[id(tcp6)] == (2, 16)
        assert found[id(unix)] == (5, 9)  # unix sockets also report the backlog
        assert found[id(idle)][0] == 0
        conn, _ = tcp.accept()  # accepting empties the queue by one
        conn.close()
        assert {id(s): q for s, q, _ in listen_queues([tcp])}[id(tcp)] == 2
        # the /proc/net/tcp fallback (no netlink) reads the same queue
        assert _tcp_queues()[os.fstat(tcp.fileno()).st_ino][0] == 2
    finally:
        for s in (*clients, tcp, tcp6, unix, idle):
            s.close()
        os.unlink(f"{directory}/q.sock")
        os.rmdir(directory)


def test_process_stats_of_ourselves_and_of_a_gone_pid():
    before = process_stats(os.getpid())
    # A fresh anonymous mapping, each page touched: new resident memory for sure (a
    # bytearray may come from heap pages this long-lived process already holds).
    blob = mmap.mmap(-1, 32 * 1024 * 1024)
    for i in range(0, len(blob), mmap.PAGESIZE):
        blob[i] = 1
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    r, w = os.pipe()
    after = process_stats(os.getpid())
    os.close(r)
    os.close(w)
    assert after["rss_bytes"] >= before["rss_bytes"] + 30 * 1024 * 1024
    assert after["cpu_seconds"] >= before["cpu_seconds"]
    assert after["open_fds"] == before["open_fds"] + 2
    assert abs(after["start_time"] - before["start_time"]) < 0.02
    assert time.time() - 3600 < after["start_time"] <= time.time()
    blob.close()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert process_stats(pid) is None
