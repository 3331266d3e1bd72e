"""Which peers are believed: X-Forwarded-For/-Proto from the proxies named in
--forwarded-allow-ips, and the networks a listener admits at all (--uwsgi-allow-ips).

The gateway asks here before it lets a header rewrite REMOTE_ADDR or the URL scheme; the
worker asks here before it accepts a connection on a listener whose protocol is a proxy's
word (uwsgi vars carry REMOTE_ADDR and HTTPS as facts).
"""

from __future__ import annotations

import ipaddress

_CACHE_MAX = 1024  # peers remembered per process; bounded so a scan cannot grow it
_cache: dict = {}


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
        if len(_cache) < _CACHE_MAX:
            _cache[key] = allowed
    return allowed


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
