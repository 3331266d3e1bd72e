"""The events protocol parsers (http1, uwsgi) hand to the worker: small immutable values.

They are NamedTuples rather than frozen dataclasses because one of each is built per request
on the hot path, and tuple construction is several times cheaper.
"""

from typing import NamedTuple


class Data(NamedTuple):
    """A piece of the request body, already de-chunked."""

    data: bytes


class EndOfMessage(NamedTuple):
    """The request body is complete; `trailers` are the chunked trailer fields, if any."""

    trailers: tuple = ()


class ConnectionClosed(NamedTuple):
    """The peer closed its side cleanly between requests."""


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: The parser needs more bytes before it can produce the next event.
NEED_DATA = _Sentinel("NEED_DATA")
#: The current message is complete; the parser waits for `start_next_request()`.
PAUSED = _Sentinel("PAUSED")
