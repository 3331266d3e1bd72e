"""Sans-IO PROXY protocol (HAProxy's v1 text and v2 binary headers), receiver side.

A load balancer that speaks the PROXY protocol sends one header before the client's first
byte, saying who the client is. `parse_header(buf)` is given what arrived so far and answers
`NEED_DATA`, a `ProxyHeader` (its `length` says how many bytes of `buf` it took; the rest
belongs to the protocol behind it), or raises `ProxyHeaderError`. Bytes that cannot start a
header are refused at once, so a peer that sends no header is not waited for.

Section numbers refer to HAProxy's doc/proxy-protocol.txt (2020/03/05 revision).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from typing import NamedTuple

from .errors import ProtocolError
from .events import NEED_DATA

# §2.1: "the maximum line length is 107 characters including the CRLF"; a receiver must not
# look for the CRLF further than that.
V1_MAX_LENGTH = 107
V1_PREFIX = b"PROXY "
# §2.2: the 12-byte signature; its NUL and CRLFs make it impossible as the start of HTTP.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_LENGTH = 16  # signature, version/command, family/transport, 16-bit length
# §2.2 lets TLVs grow the header to 16 + 65535 bytes. The address block is at most 216 bytes
# (two unix paths); what load balancers add in TLVs (AWS VPC endpoint id, TLS facts) fits in
# a few hundred. A peer announcing more than this is refused rather than buffered.
V2_DEFAULT_MAX_LENGTH = 4096

# §2.2, 13th byte: high nibble the version (must be 2), low nibble the command.
_V2_VERSION = 0x2
_CMD_LOCAL = 0x0  # the proxy's own connection (health check): use the real endpoints
_CMD_PROXY = 0x1
# 14th byte: high nibble the address family, low nibble the transport.
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_TRANSPORT_UNSPEC, _TRANSPORT_STREAM = 0x0, 0x1
# Length of the address block per family (§2.2): two addresses, then two 16-bit ports.
_V2_ADDRESS_LENGTH = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}

# §2.1: "PROXY" SP protocol SP src SP dst SP srcport SP dstport CRLF, exactly one space each.
# Addresses are checked by `ipaddress` afterwards; ports are 0..65535 without leading zeroes.
_PORT = rb"(0|[1-9][0-9]{0,4})"
_v1_inet = re.compile(
    rb"PROXY (TCP4|TCP6) ([0-9A-Fa-f.:]{2,45}) ([0-9A-Fa-f.:]{2,45}) " + _PORT + b" " + _PORT
)


class ProxyHeaderError(ProtocolError):
    """The PROXY header is missing, malformed or too long; the connection must be closed.

    There is no status to send: the peer is a proxy that does not expect an HTTP answer
    before it has sent its header, and a half-parsed stream cannot be answered safely.
    """

    def __init__(self, message: str):
        super().__init__(message, status=None)


class ProxyHeader(NamedTuple):
    """What the proxy said about the connection it relays.

    `source`/`destination` are (host, port) of the client and of the address it connected
    to, or None when the header says to use the real connection's endpoints (a v2 LOCAL
    command, a v1 UNKNOWN line, an unspecified or unix family).
    """

    version: int  # 1 or 2
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int  # bytes of the buffer the header occupied


def parse_header(buf: bytes, max_v2_length: int = V2_DEFAULT_MAX_LENGTH):
    """The PROXY header at the start of `buf`: a ProxyHeader, or NEED_DATA.

    Raises ProxyHeaderError as soon as the bytes seen cannot begin a valid header.
    """
    if not buf:
        return NEED_DATA
    if buf[0] == V1_PREFIX[0]:
        return _parse_v1(buf)
    if buf[0] == V2_SIGNATURE[0]:
        return _parse_v2(buf, max_v2_length)
    raise ProxyHeaderError(f"no PROXY header: the peer began with {bytes(buf[:16])!r}")


def _parse_v1(buf: bytes):
    prefix = bytes(buf[: len(V1_PREFIX)])
    if not V1_PREFIX.startswith(prefix):
        raise ProxyHeaderError(f"no PROXY header: the peer began with {bytes(buf[:16])!r}")
    end = buf.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(buf) >= V1_MAX_LENGTH:
            raise ProxyHeaderError(f"PROXY v1 line longer than {V1_MAX_LENGTH} bytes")
        # A CR or LF anywhere but at the end of the line can never become valid.
        bad = buf.find(b"\n")
        cr = buf.find(b"\r")
        if bad >= 0 or 0 <= cr < len(buf) - 1:
            raise ProxyHeaderError("PROXY v1 line with a stray CR or LF")
        return NEED_DATA
    line = bytes(buf[:end])
    length = end + 2
    if line.startswith(b"PROXY UNKNOWN"):
        # §2.1: with UNKNOWN the receiver ignores the rest of the line and uses the real
        # connection's endpoints (a proxy's health check, or a family it cannot express).
        if len(line) > 13 and line[13:14] != b" ":
            raise ProxyHeaderError(f"malformed PROXY v1 line {line!r}")
        return ProxyHeader(1, None, None, length)
    match = _v1_inet.fullmatch(line)
    if match is None:
        raise ProxyHeaderError(f"malformed PROXY v1 line {line!r}")
    family, src, dst, sport, dport = match.groups()
    version = 4 if family == b"TCP4" else 6
    source = (_v1_address(src, version, line), _v1_port(sport, line))
    destination = (_v1_address(dst, version, line), _v1_port(dport, line))
    return ProxyHeader(1, source, destination, length)


def _v1_address(text: bytes, version: int, line: bytes) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except ValueError:
        raise ProxyHeaderError(f"bad address {text!r} in PROXY v1 line {line!r}") from None
    if address.version != version:
        raise ProxyHeaderError(f"address {text!r} is not IPv{version} in {line!r}")
    if version == 4 and text.decode() != str(address):
        # ipaddress tolerates nothing odd for IPv4, but keep the check explicit: the spec's
        # dotted-quad form only (no leading zeroes, which some parsers read as octal).
        raise ProxyHeaderError(f"bad address {text!r} in PROXY v1 line {line!r}")
    return str(address)


def _v1_port(text: bytes, line: bytes) -> int:
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"bad port {text!r} in PROXY v1 line {line!r}")
    return port


def _parse_v2(buf: bytes, max_length: int):
    head = bytes(buf[:V2_FIXED_LENGTH])
    if not V2_SIGNATURE.startswith(head[:12]):
        raise ProxyHeaderError(f"no PROXY header: the peer began with {head!r}")
    if len(head) < V2_FIXED_LENGTH:
        if len(head) > 12 and head[12] >> 4 != _V2_VERSION:
            raise ProxyHeaderError(f"PROXY v2 header with version {head[12] >> 4}, not 2")
        return NEED_DATA
    version_command, family_transport, body_length = struct.unpack("!BBH", head[12:])
    if version_command >> 4 != _V2_VERSION:
        raise ProxyHeaderError(f"PROXY v2 header with version {version_command >> 4}, not 2")
    command = version_command & 0x0F
    if command not in (_CMD_LOCAL, _CMD_PROXY):
        # §2.2: "The receiver must drop connections presenting unexpected values here."
        raise ProxyHeaderError(f"PROXY v2 header with unknown command {command:#x}")
    length = V2_FIXED_LENGTH + body_length
    if length > max_length:
        raise ProxyHeaderError(f"PROXY v2 header of {length} bytes, more than {max_length}")
    if len(buf) < length:
        return NEED_DATA
    if command == _CMD_LOCAL:
        # §2.2: LOCAL is the proxy speaking for itself; the block is skipped, family and all.
        return ProxyHeader(2, None, None, length)
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family not in (_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX) or transport > 2:
        raise ProxyHeaderError(f"PROXY v2 header with unknown family {family_transport:#04x}")
    if family in (_AF_UNSPEC, _AF_UNIX) or transport == _TRANSPORT_UNSPEC:
        # §2.2: the receiver may accept these and use the real endpoints; a unix path is no
        # REMOTE_ADDR anyway. TLVs (§2.2.1 onwards) carry nothing the server acts on.
        return ProxyHeader(2, None, None, length)
    if transport != _TRANSPORT_STREAM:
        raise ProxyHeaderError("PROXY v2 header for a datagram transport on a stream socket")
    needed = _V2_ADDRESS_LENGTH[family]
    if body_length < needed:
        raise ProxyHeaderError(
            f"PROXY v2 address block of {body_length} bytes, the family needs {needed}"
        )
    block = bytes(buf[V2_FIXED_LENGTH : V2_FIXED_LENGTH + needed])
    if family == _AF_INET:
        src, dst, sport, dport = struct.unpack("!4s4sHH", block)
        source = (str(ipaddress.IPv4Address(src)), sport)
        destination = (str(ipaddress.IPv4Address(dst)), dport)
    else:
        src, dst, sport, dport = struct.unpack("!16s16sHH", block)
        source = (str(ipaddress.IPv6Address(src)), sport)
        destination = (str(ipaddress.IPv6Address(dst)), dport)
    return ProxyHeader(2, source, destination, length)


def build_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v1 line for these endpoints (what a proxy sends; used by tests and health checks)."""
    family = "TCP6" if ":" in source[0] else "TCP4"
    line = f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n"
    return line.encode("ascii")


def build_v2(
    source: tuple[str, int] | None,
    destination: tuple[str, int] | None = None,
    tlvs: bytes = b"",
) -> bytes:
    """A v2 header: PROXY with these endpoints, or LOCAL when `source` is None."""
    if source is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, len(tlvs)) + tlvs
    assert destination is not None
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        raise ValueError("a PROXY header's two addresses are of one family")
    family = _AF_INET if src.version == 4 else _AF_INET6
    block = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1]) + tlvs
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family << 4 | 1, len(block)) + block
