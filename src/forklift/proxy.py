"""Which peers are believed: X-Forwarded-For/-Proto and X-Request-Id from the proxies named
in --forwarded-allow-ips, and the networks a listener admits at all (--uwsgi-allow-ips).

The gateway asks here before it lets a header rewrite REMOTE_ADDR or the URL scheme; the
worker asks here before it accepts a connection on a listener whose protocol is a proxy's
word (uwsgi vars carry REMOTE_ADDR and HTTPS as facts).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re

from .memo import Memo

_cache = Memo(1024)  # (peer, networks) -> allowed; bounded, so a scan cannot grow it


def peer_in(host: str, networks) -> bool:
    """Is the address `host` (IPv4, IPv6, IPv4-mapped, with or without %zone) in `networks`?

    Answers are cached per address and network list: a keep-alive-less proxy asks on
    every connection, and parsing the address costs more than the request's environ."""
    key = (host, id(networks))  # id: hashing the networks themselves is slow
    allowed = _cache.get(key)
    if allowed is None:
        try:
            ip = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        allowed = any(ip in net for net in networks)
        _cache.remember(key, allowed)
    return allowed


# A request id from a trusted proxy is kept when it looks like one (nginx's $request_id is
# 32 hex digits; UUIDs and the like fit too); anything else is replaced by our own.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


def _id_source():
    """Our ids: a random prefix per process and a counter, unique without a system call per
    request. Built from C parts (count, map, str, str.__add__): a new id costs no Python
    frame and no formatting, which matters at one per request (a Python-level "%s%08x"
    cost 3% of a hello request)."""
    # 12 hex digits, then a decimal counter from 10**8: 21 characters for the first 900
    # million requests of a process, unique after that too (the prefix has a fixed length).
    return map(os.urandom(6).hex().__add__, map(str, itertools.count(10**8))).__next__


next_request_id: list = [_id_source()]  # next_request_id[0]() -> a new id


def _new_process() -> None:
    next_request_id[0] = _id_source()  # a forked worker: its own prefix


os.register_at_fork(after_in_child=_new_process)


def assign_request_id(environ: dict, peer, allow_ips, from_proxy: bool) -> str:
    """The request's id, in `HTTP_X_REQUEST_ID` and `forklift.request_id`: the client's
    X-Request-Id when a trusted proxy sent it (an `allow_ips` peer, a unix socket, or a
    protocol only proxies speak: `from_proxy`) and it looks like an id; else a new one."""
    given = environ.get("HTTP_X_REQUEST_ID")
    if (
        given is None
        or not (from_proxy or peer is None or peer_in(peer[0], allow_ips))
        or _REQUEST_ID.fullmatch(given) is None
    ):
        given = next_request_id[0]()
        environ["HTTP_X_REQUEST_ID"] = given
    environ["forklift.request_id"] = given
    return given


def apply_forwarded(environ: dict, peer, allow_ips) -> None:
    """X-Forwarded-For/-Proto, believed only from `allow_ips` peers (and unix sockets, which
    only a local proxy can reach). The rightmost address is the one the trusted proxy saw;
    anything to its left was written by the client."""
    if peer is not None and not peer_in(peer[0], allow_ips):
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
