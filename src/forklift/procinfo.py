"""What the kernel says about our processes and listeners: RSS, CPU time, open descriptors and
start time of a pid (/proc), and the accept queue of each listening socket.

Listen queues: we ask the kernel the way `ss -l` does, with a NETLINK_SOCK_DIAG dump of
listening sockets only (the kernel filters by state): inet_diag for TCP over IPv4 and IPv6,
whose rqueue/wqueue are the accept queue's length and its backlog, and unix_diag with
UDIAG_SHOW_RQLEN for unix sockets. Our sockets are found by inode (fstat of the descriptor),
so two listeners on one port cannot be confused. /proc/net/tcp has the same numbers, but on a
busy host it lists every TIME_WAIT connection too: reading 17,000 lines took 160 ms, too long
for the master's loop; it is only the fallback when netlink is unavailable.
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


def _diag_dump(body: bytes, parse, found: dict) -> bool:
    """Send one SOCK_DIAG_BY_FAMILY dump request; `parse(datagram, found)` reads the answers.
    False when netlink could not be used."""
    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    except OSError:
        return False
    with nl:
        nl.settimeout(1.0)
        header = _NLMSG.pack(
            _NLMSG.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0
        )
        try:
            nl.send(header + body)
            for _ in range(10000):  # bounded: a dump ends with NLMSG_DONE
                data = nl.recv(65536)
                if not data or not parse(data, found):
                    break
        except OSError:
            return False
    return True


def _unix_queues() -> dict:
    """{inode: (queued, backlog)} of listening unix sockets, from NETLINK_SOCK_DIAG."""
    found: dict = {}
    body = _UNIX_DIAG_REQ.pack(
        socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, 0, _UDIAG_SHOW_RQLEN, 0xFFFFFFFF, 0xFFFFFFFF
    )
    _diag_dump(body, _parse_unix_dump, found)
    return found


def _inet_queues() -> dict:
    """{inode: (queued, backlog)} of listening TCP sockets (IPv4 and IPv6), from inet_diag;
    /proc/net/tcp{,6} when netlink is not available."""
    found: dict = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        # inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid
        body = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
        body += bytes(48)
        if not _diag_dump(body, _parse_inet_dump, found):
            return _tcp_queues()
    return found


# inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue,
# uid, inode
_INET_DIAG_MSG = struct.Struct("=BBBB48sIIIII")


def _parse_inet_dump(data: bytes, found: dict) -> bool:
    at = 0
    while at + _NLMSG.size <= len(data):
        length, kind, _, _, _ = _NLMSG.unpack_from(data, at)
        if length < _NLMSG.size or kind in (_NLMSG_DONE, _NLMSG_ERROR):
            return False
        if length >= _NLMSG.size + _INET_DIAG_MSG.size:
            fields = _INET_DIAG_MSG.unpack_from(data, at + _NLMSG.size)
            queued, backlog, inode = fields[6], fields[7], fields[9]
            found[inode] = (queued, backlog)
        at += (length + 3) & ~3
    return True


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
        known.update(_inet_queues())
    if want_unix:
        known.update(_unix_queues())
    out = []
    for sock, inode in zip(sockets, inodes, strict=True):
        queued, backlog = known.get(inode, (None, None))
        out.append((sock, queued, backlog))
    return out
