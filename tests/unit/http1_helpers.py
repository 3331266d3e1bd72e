"""Feeding bytes to `RequestParser` the ways a socket can deliver them, and building requests.

`parse()` runs one feeding (a list of chunks) to completion and returns an `Outcome`;
`parse_every_way()` runs the whole/every-offset/byte-by-byte feedings and insists they agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from forklift.errors import ProtocolError
from forklift.events import NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage
from forklift.http1 import Limits, RequestHead, RequestParser

DEFAULT_LIMITS = Limits()
# A parser that returns this many events for one chunk without asking for data is looping.
_MAX_EVENTS_PER_CHUNK = 100_000


class Outcome(NamedTuple):
    """What one feeding produced: the events (Data merged) and the error status, if any."""

    events: list
    status: int | None  # ProtocolError.status, or None when the parser never raised

    def key(self) -> tuple:
        """A comparable form of the whole outcome (see `events_key`)."""
        return events_key(self.events), self.status

    @property
    def heads(self) -> list[RequestHead]:
        return [e for e in self.events if isinstance(e, RequestHead)]


def merge_data(events: Iterable) -> list:
    """Join consecutive Data events: how the body is cut into pieces is not behaviour."""
    merged: list = []
    for event in events:
        if isinstance(event, Data) and merged and isinstance(merged[-1], Data):
            merged[-1] = Data(merged[-1].data + event.data)
        else:
            merged.append(event)
    return [e for e in merged if not (isinstance(e, Data) and not e.data)]


def parse(
    chunks: Iterable[bytes], limits: Limits = DEFAULT_LIMITS, *, eof: bool = False
) -> Outcome:
    """Feed `chunks` to a fresh parser, draining events after each one.

    PAUSED is answered with `start_next_request()`, so pipelined requests come out too.
    `eof` feeds b"" (the peer closed) after the last chunk. Once the parser has raised, every
    later chunk is still fed and `next_event()` must raise again with the same status: nothing
    after a bad request may ever come out. Any exception but ProtocolError propagates.
    """
    parser = RequestParser(limits)
    events: list = []
    error: ProtocolError | None = None
    feed = [chunk for chunk in chunks if chunk]  # b"" would mean EOF to the parser
    if eof:
        feed.append(b"")
    for chunk in feed:
        parser.receive_data(chunk)
        if error is not None:
            try:
                event = parser.next_event()
            except ProtocolError as again:
                assert again.status == error.status, (again, error)
                continue
            raise AssertionError(f"dead parser returned {event!r} instead of raising")
        try:
            for _ in range(_MAX_EVENTS_PER_CHUNK):
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                if event is PAUSED:
                    parser.start_next_request()
                    continue
                events.append(event)
                if isinstance(event, ConnectionClosed):
                    break
            else:
                raise AssertionError("parser produced events without end")
        except ProtocolError as exc:
            error = exc
    if error is not None:
        assert isinstance(error.status, int), error
        try:
            event = parser.next_event()
        except ProtocolError as again:
            assert again.status == error.status, (again, error)
        else:
            raise AssertionError(f"dead parser returned {event!r} instead of raising")
        return Outcome(merge_data(events), error.status)
    return Outcome(merge_data(events), None)


def feedings(data: bytes, *, every_offset: bool = True) -> Iterator[tuple[str, list[bytes]]]:
    """The ways bytes can arrive: whole, split once at every offset, and one byte at a time."""
    yield "whole", [data]
    if every_offset:
        for i in range(1, len(data)):
            yield f"split at {i}", [data[:i], data[i:]]
    yield "byte by byte", [data[i : i + 1] for i in range(len(data))]


def cut(data: bytes, offsets: Iterable[int]) -> list[bytes]:
    """`data` cut at the given offsets (taken modulo its length, duplicates ignored)."""
    points = sorted({o % (len(data) + 1) for o in offsets} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def parse_every_way(
    data: bytes, limits: Limits = DEFAULT_LIMITS, *, eof: bool = False, every_offset: bool = True
) -> Outcome:
    """Parse `data` fed every way; all feedings must give the same events and status."""
    reference: Outcome | None = None
    for how, chunks in feedings(data, every_offset=every_offset):
        outcome = parse(chunks, limits, eof=eof)
        if reference is None:
            reference = outcome
        else:
            assert outcome.key() == reference.key(), f"{how} differs from whole:\n{outcome}"
    assert reference is not None
    return reference


def request(
    start: bytes | str,
    *fields: tuple[str, str] | tuple[bytes, bytes],
    body: bytes = b"",
) -> bytes:
    """Serialise a request: request line, fields, blank line, body (no framing added)."""

    def b(x: bytes | str) -> bytes:
        return x if isinstance(x, bytes) else x.encode("latin-1")

    lines = [b(start)] + [b(n) + b": " + b(v) for n, v in fields]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(*pieces: bytes, trailers: bytes = b"") -> bytes:
    """A chunked body made of `pieces`, the last chunk and `trailers` (lines with CRLF)."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailers + b"\r\n"


def head(
    method: str = "GET",
    target: bytes = b"/",
    http_version: str = "1.1",
    headers: list | None = None,
    *,
    keep_alive: bool | None = None,
    content_length: int | None = None,
    chunked: bool = False,
    expect_continue: bool = False,
) -> RequestHead:
    """The RequestHead the parser should produce, with defaults for a plain GET."""
    if keep_alive is None:
        keep_alive = http_version == "1.1"
    return RequestHead(
        method,
        target,
        http_version,
        headers if headers is not None else [(b"host", b"example.com")],
        keep_alive,
        content_length,
        chunked,
        expect_continue,
    )


def end(*trailers: tuple[bytes, bytes]) -> EndOfMessage:
    return EndOfMessage(tuple(trailers))


def events_key(events: Iterable) -> tuple:
    """Events in a comparable form that tells types apart (NamedTuples compare as tuples)."""
    return tuple((type(e).__name__, tuple(e)) for e in events)
