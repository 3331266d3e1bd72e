"""Coverage-guided fuzzing of the uwsgi packet decoder (forklift.uwsgi), with atheris.

Each input is one byte of settings (buffer-size, body limit, where to cut), then the bytes
nginx would send. The bytes are fed whole, one byte at a time and cut at one offset, then
EOF; a finding is an exception other than `ProtocolError`, a parser that keeps producing
events, or different events (or a different refusal) for different cuts.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["forklift"]):
    from forklift.errors import ProtocolError
    from forklift.events import NEED_DATA, PAUSED, ConnectionClosed, Data
    from forklift.uwsgi import UwsgiParser

BUFFER_SIZES = (4096, 64, 65535, 1)
BODY_LIMITS = (None, 4)
_MAX_EVENTS = 100_000  # a parser that hands out more for one chunk is looping


def feed(chunks, buffer_size: int, max_body) -> tuple:
    """(events with body bytes joined, error message or None) once `chunks` and EOF are fed."""
    parser = UwsgiParser(buffer_size, max_body)
    events: list = []
    body = b""
    try:
        for chunk in [c for c in chunks if c] + [b""]:
            parser.receive_data(chunk)
            for _ in range(_MAX_EVENTS):
                event = parser.next_event()
                if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
                    break
                if isinstance(event, Data):
                    body += event.data
                else:
                    events.append(event)
            else:
                raise AssertionError("parser produced events without end")
    except ProtocolError as exc:
        try:
            parser.next_event()
        except ProtocolError as again:
            if str(again) != str(exc):
                raise AssertionError(f"dead parser raised {again!r} after {exc!r}") from None
        else:
            raise AssertionError("dead parser returned an event instead of raising") from None
        return events, body, str(exc), exc.status
    return events, body, None, None


def check(data: bytes) -> None:
    if not data:
        return
    settings, payload = data[0], data[1:]
    buffer_size = BUFFER_SIZES[settings & 3]
    max_body = BODY_LIMITS[(settings >> 2) & 1]
    whole = feed([payload], buffer_size, max_body)
    at = (settings >> 3) * 7919 % (len(payload) + 1)
    for how, chunks in (
        ("byte by byte", [payload[i : i + 1] for i in range(len(payload))]),
        (f"cut at {at}", [payload[:at], payload[at:]]),
    ):
        other = feed(chunks, buffer_size, max_body)
        if other != whole:
            raise AssertionError(f"{how} differs from whole:\n{other}\nwhole:\n{whole}")


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
