"""What the kernel says about our processes and listeners: RSS, CPU time, open descriptors and
start time of a pid (/proc), and the accept queue of each listening socket.

Listen queues. For a listening TCP socket, /proc/net/tcp and tcp6 show the accept queue's
current length in the rx_queue column and the backlog in tx_queue; we find our socket's row by
its inode (fstat of the descriptor), so two listeners on one port cannot be confused. For unix
sockets /proc/net/unix has no queue column, so we ask the kernel the way `ss -xl` does: a
NETLINK_SOCK_DIAG dump of listening unix sockets with UDIAG_SHOW_RQLEN, matched by inode.
"""

from __future__ import annotations

import os
import socket
import struct
import time

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")
_BOOT_TIME: float | None = None


def _boot_time() -> float:
    global _BOOT_TIME
    if _BOOT_TIME is None:
        try:
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        _BOOT_TIME = float(line.split()[1])
                        break
        except OSError:
            pass
        if _BOOT_TIME is None:
            _BOOT_TIME = time.time() - time.monotonic()
    return _BOOT_TIME


def process_stats(pid: int) -> dict | None:
    """{rss_bytes, cpu_seconds, open_fds, start_time} of `pid`, or None once it is gone.

    The same quantities as the Prometheus client libraries' standard process_* metrics."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/statm", "rb") as f:
            resident = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    # The command name may hold spaces and parentheses: fields start after the last ")".
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        utime, stime = int(fields[11]), int(fields[12])
        started = int(fields[19])
    except (IndexError, ValueError):
        return None
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = -1  # another user's process: not ours to count
    return {
        "rss_bytes": resident * _PAGE,
        "cpu_seconds": (utime + stime) / _TICKS,
        "open_fds": fds,
        "start_time": round(_boot_time() + started / _TICKS, 2),
    }


def _tcp_queues() -> dict:
    """{inode: (queued, None)} of every listening TCP socket visible to us."""
    found = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name, "rb") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    # sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode
                    if len(parts) < 10 or parts[3] != b"0A":  # 0A = TCP_LISTEN
                        continue
                    # For a listener rx_queue is the accept queue's length; the backlog
                    # is not shown here (tx_queue stays 0): the caller knows it.
                    rx = parts[4].partition(b":")[2]
                    found[int(parts[9])] = (int(rx, 16), None)
        except OSError:
            continue
    return found


# linux/sock_diag.h, linux/unix_diag.h
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_DONE, _NLMSG_ERROR = 3, 2
_UDIAG_SHOW_RQLEN = 0x10
_UNIX_DIAG_RQLEN = 4
_TCP_LISTEN = 10
_NLMSG = struct.Struct("=IHHII")
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")  # family, type, state, pad, ino, cookie


def _unix_queues() -> dict:
    """{inode: (queued, backlog)} of listening unix sockets, from NETLINK_SOCK_DIAG."""
    found = {}
    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    except OSError:
        return found
    with nl:
        nl.settimeout(1.0)
        body = _UNIX_DIAG_REQ.pack(
            socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, 0, _UDIAG_SHOW_RQLEN, 0xFFFFFFFF, 0xFFFFFFFF
        )
        header = _NLMSG.pack(
            _NLMSG.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0
        )
        try:
            nl.send(header + body)
            for _ in range(10000):  # bounded: a dump ends with NLMSG_DONE
                data = nl.recv(65536)
                if not data or not _parse_unix_dump(data, found):
                    break
        except OSError:
            pass
    return found


def _parse_unix_dump(data: bytes, found: dict) -> bool:
    """Parse one netlink datagram into `found`; False once the dump is over."""
    at = 0
    while at + _NLMSG.size <= len(data):
        length, kind, _, _, _ = _NLMSG.unpack_from(data, at)
        if length < _NLMSG.size:
            return False
        if kind in (_NLMSG_DONE, _NLMSG_ERROR):
            return False
        msg_at = at + _NLMSG.size
        _, _, _, _, inode, _, _ = _UNIX_DIAG_MSG.unpack_from(data, msg_at)
        attr = msg_at + _UNIX_DIAG_MSG.size
        end = at + length
        while attr + 4 <= end:
            alen, atype = struct.unpack_from("=HH", data, attr)
            if alen < 4:
                break
            if atype == _UNIX_DIAG_RQLEN and alen >= 12:
                queued, backlog = struct.unpack_from("=II", data, attr + 4)
                found[inode] = (queued, backlog)
            attr += (alen + 3) & ~3
        at += (length + 3) & ~3
    return True


def listen_queues(sockets) -> list:
    """[(sock, queued, backlog)] for the given listening sockets (None when unknown)."""
    inodes = []
    want_tcp = want_unix = False
    for sock in sockets:
        try:
            inode = os.fstat(sock.fileno()).st_ino
        except OSError:
            inode = None
        inodes.append(inode)
        if sock.family == socket.AF_UNIX:
            want_unix = True
        else:
            want_tcp = True
    known = {}
    if want_tcp:
        known.update(_tcp_queues())
    if want_unix:
        known.update(_unix_queues())
    out = []
    for sock, inode in zip(sockets, inodes, strict=True):
        queued, backlog = known.get(inode, (None, None))
        out.append((sock, queued, backlog))
    return out
