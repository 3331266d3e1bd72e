"""forklift.proxy_protocol: PROXY v1/v2 headers fed whole, split at every offset, byte by byte.

Every feeding must give the same answer: the same header (and the same request bytes left
behind it), or a refusal no later than the first byte that makes the header impossible.
"""

from __future__ import annotations

import struct

import pytest
from http1_helpers import feedings
from hypothesis import example, given, settings
from hypothesis import strategies as st

from forklift.events import NEED_DATA
from forklift.proxy_protocol import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    build_v1,
    build_v2,
    parse_header,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def feed(chunks, max_v2_length: int = 4096):
    """Grow a buffer chunk by chunk as the worker does; stop at the first non-NEED_DATA.

    Returns (header, the bytes after it) or (the error, how many bytes had arrived).
    """
    buf = b""
    for i, chunk in enumerate(chunks):
        buf += chunk
        try:
            result = parse_header(buf, max_v2_length)
        except ProxyHeaderError as exc:
            return exc, len(buf)
        if result is not NEED_DATA:
            assert isinstance(result, ProxyHeader)
            return result, buf[result.length :] + b"".join(chunks[i + 1 :])
    return NEED_DATA, len(buf)


def parse_every_way(data: bytes, max_v2_length: int = 4096):
    outcomes = []
    for _how, chunks in feedings(data):
        result, rest = feed(chunks, max_v2_length)
        if isinstance(result, ProxyHeaderError):
            result = ProxyHeaderError  # the message may quote more or fewer bytes
        outcomes.append((result, rest))
    whole = outcomes[0]
    for outcome in outcomes[1:]:
        if whole[0] is ProxyHeaderError:
            # Refused with the whole input at once: refused however split, and never later
            # than with every byte (the byte-by-byte feeding may stop earlier).
            assert outcome[0] is ProxyHeaderError
            assert outcome[1] <= len(data)
        else:
            assert outcome == whole
    return whole


def accepted(data: bytes, max_v2_length: int = 4096) -> ProxyHeader:
    header, rest = parse_every_way(data + REQUEST, max_v2_length)
    assert isinstance(header, ProxyHeader), header
    assert header.length == len(data)
    assert rest == REQUEST  # nothing of the header reaches the protocol behind it
    return header


def refused(data: bytes, max_v2_length: int = 4096) -> None:
    result, _ = parse_every_way(data + REQUEST, max_v2_length)
    assert result is ProxyHeaderError


# --- v1 ------------------------------------------------------------------------------------


def test_v1_tcp4():
    header = accepted(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n")
    assert header == ProxyHeader(1, ("192.0.2.7", 56324), ("198.51.100.1", 443), header.length)


def test_v1_tcp6_is_normalised():
    header = accepted(b"PROXY TCP6 2001:DB8:0:0::7 ::1 65535 0\r\n")
    assert header.source == ("2001:db8::7", 65535)
    assert header.destination == ("::1", 0)


def test_v1_longest_line_is_accepted():
    line = (
        b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
    )
    assert len(line) == 104
    assert accepted(line).source[1] == 65535


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n"])
def test_v1_unknown_means_the_real_endpoints(line):
    header = accepted(line)
    assert header.source is None and header.destination is None


def test_build_v1_round_trips():
    line = build_v1(("203.0.113.9", 1234), ("127.0.0.1", 8000))
    assert accepted(line).source == ("203.0.113.9", 1234)


@pytest.mark.parametrize(
    "bad",
    [
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n",  # bare LF
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\r\n",
        b"PROXY  TCP4 192.0.2.7 198.51.100.1 56324 443\r\n",  # two spaces
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",  # a port missing
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 65536\r\n",  # port out of range
        b"PROXY TCP4 192.0.2.7 198.51.100.1 056324 443\r\n",  # leading zero
        b"PROXY TCP4 192.0.2.256 198.51.100.1 1 443\r\n",
        b"PROXY TCP4 192.0.02.7 198.51.100.1 1 443\r\n",  # octal-looking octet
        b"PROXY TCP4 ::1 198.51.100.1 1 443\r\n",  # family and address disagree
        b"PROXY TCP6 192.0.2.7 ::1 1 443\r\n",
        b"PROXY UDP4 192.0.2.7 198.51.100.1 1 443\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"proxy TCP4 192.0.2.7 198.51.100.1 1 443\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1 443 \r\n",  # trailing space
    ],
)
def test_v1_malformed_lines_are_refused(bad):
    refused(bad)


def test_v1_without_crlf_within_107_bytes_is_refused_at_107():
    line = b"PROXY UNKNOWN " + b"x" * 200
    result, seen = feed([bytes([b]) for b in line])
    assert isinstance(result, ProxyHeaderError)
    assert seen == V1_MAX_LENGTH  # refused without reading further
    assert "107" in str(result)


def test_v1_partial_line_waits():
    assert parse_header(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r") is NEED_DATA


# --- v2 ------------------------------------------------------------------------------------


def test_v2_inet():
    header = accepted(build_v2(("192.0.2.7", 56324), ("198.51.100.1", 443)))
    assert header == ProxyHeader(2, ("192.0.2.7", 56324), ("198.51.100.1", 443), 28)


def test_v2_inet6():
    header = accepted(build_v2(("2001:db8::7", 1), ("::1", 8443)))
    assert header.source == ("2001:db8::7", 1)
    assert header.destination == ("::1", 8443)
    assert header.length == 16 + 36


def test_v2_tlvs_are_skipped():
    # PP2_TYPE_ALPN (0x01) and PP2_TYPE_AUTHORITY (0x02), as HAProxy sends them.
    tlvs = b"\x01\x00\x08http/1.1" + b"\x02\x00\x0bexample.org"
    header = accepted(build_v2(("192.0.2.7", 5), ("192.0.2.8", 6), tlvs))
    assert header.source == ("192.0.2.7", 5)
    assert header.length == 16 + 12 + len(tlvs)


def test_v2_local_uses_the_real_endpoints_and_skips_its_block():
    header = accepted(build_v2(None, tlvs=b"\x04\x00\x02ab"))
    assert header.source is None and header.length == 16 + 5


@pytest.mark.parametrize("family_transport", [0x00, 0x31, 0x10])
def test_v2_unspec_unix_or_unspecified_transport_use_the_real_endpoints(family_transport):
    body = b"\x00" * 216
    data = V2_SIGNATURE + struct.pack("!BBH", 0x21, family_transport, len(body)) + body
    assert accepted(data).source is None


def _v2(version_command=0x21, family_transport=0x11, body=b"\x7f\x00\x00\x01" * 2 + b"\0\1\0\2"):
    return V2_SIGNATURE + struct.pack("!BBH", version_command, family_transport, len(body)) + body


@pytest.mark.parametrize(
    "bad",
    [
        _v2(version_command=0x11),  # version 1 in a v2 header
        _v2(version_command=0x31),
        _v2(version_command=0x22),  # unknown command
        _v2(family_transport=0x41),  # unknown family
        _v2(family_transport=0x13),  # unknown transport
        _v2(family_transport=0x12),  # UDP over a stream
        _v2(family_transport=0x21),  # INET6 needs 36 bytes, 12 given
        V2_SIGNATURE[:5] + b"\x01" + V2_SIGNATURE[6:] + b"\x21\x11\x00\x0c",
    ],
)
def test_v2_malformed_headers_are_refused(bad):
    refused(bad)


def test_v2_oversized_is_refused_before_its_body_arrives():
    data = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 5000)
    result, seen = feed([data])
    assert isinstance(result, ProxyHeaderError)
    assert seen == 16
    assert "5016" in str(result)
    # The limit is the caller's: the same header fits a larger one.
    header = build_v2(("192.0.2.1", 1), ("192.0.2.2", 2), b"\xee\x13\x7c" + b"t" * 4988)
    assert accepted(header, max_v2_length=8192).source == ("192.0.2.1", 1)
    refused(header, max_v2_length=4096)


def test_v2_wrong_version_is_refused_at_byte_13():
    result, seen = feed([bytes([b]) for b in _v2(version_command=0x11)])
    assert isinstance(result, ProxyHeaderError)
    assert seen == 13


# --- neither -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, at",
    [
        (REQUEST, 1),  # a client that skipped the proxy: refused at its first byte
        (b"POST / HTTP/1.1\r\n\r\n", 2),
        (b"PROXZ TCP4", 5),
        (b"\r\n\r\n\x00\r\nQUIX\n", 11),
        (b"\x00\x0e\x00\x00", 1),  # a uwsgi packet without a header
    ],
)
def test_a_missing_header_is_refused_at_the_first_impossible_byte(data, at):
    result, seen = feed([bytes([b]) for b in data])
    assert isinstance(result, ProxyHeaderError)
    assert seen == at


def test_empty_buffer_waits():
    assert parse_header(b"") is NEED_DATA


# --- properties ----------------------------------------------------------------------------

_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)
_port = st.integers(0, 65535)


@given(st.one_of(st.tuples(_ipv4, _ipv4), st.tuples(_ipv6, _ipv6)), _port, _port)
@settings(max_examples=100, deadline=None)
def test_any_endpoints_round_trip_through_v1_and_v2(addresses, sport, dport):
    src, dst = addresses
    for header in (build_v1((src, sport), (dst, dport)), build_v2((src, sport), (dst, dport))):
        result = parse_header(header + REQUEST)
        assert isinstance(result, ProxyHeader)
        assert result.source == (src, sport) and result.destination == (dst, dport)
        assert result.length == len(header)


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
@example(V2_SIGNATURE + b"\x21\x11\x00\x0c" + b"\x00" * 11)
@example(b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r")
def test_any_bytes_give_a_header_need_data_or_a_typed_error(data):
    for prefix in (b"", b"PROXY ", V2_SIGNATURE):
        buf = prefix + data
        try:
            result = parse_header(buf)
        except ProxyHeaderError:
            continue
        assert result is NEED_DATA or (
            isinstance(result, ProxyHeader) and 0 < result.length <= len(buf)
        )
        if result is NEED_DATA:  # waiting is bounded: never beyond the format's maximum
            assert len(buf) < (V1_MAX_LENGTH if buf[:1] == b"P" else 4096)
