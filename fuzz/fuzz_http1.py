"""Coverage-guided fuzzing of the HTTP/1.1 request parser (forklift.http1), with atheris.

Each input is one byte of settings, then the bytes of a connection. The settings byte picks
the limits (default or tiny, so that 413/414/431 are reachable in short inputs), whether the
peer closes after the last byte, and where the bytes are cut. The same bytes are then fed
whole, one byte at a time and cut at two offsets; a finding is any of:

- an exception other than `ProtocolError` (the parser's own error type);
- a `ProtocolError` whose status is not one the worker knows how to answer;
- a parser that loops, or a dead parser that hands out an event instead of raising again
  (both checked by `tests/unit/http1_helpers.parse`);
- different events or a different status for different cuts of the same bytes;
- an input that takes longer than libFuzzer's -timeout (a hang, or a super-linear regex).

Run through `make fuzz` (see fuzz/run.py); `python fuzz/fuzz_http1.py -help=1` lists the
libFuzzer flags.
"""

from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "unit"))

with atheris.instrument_imports(include=["forklift"]):
    from forklift.http1 import Limits

from http1_helpers import cut, parse  # noqa: E402  (needs the path set above)

LIMITS = (
    Limits(),
    Limits(max_request_line=40, max_header_bytes=80, max_header_fields=4, max_body=20),
)
STATUSES = {400, 413, 414, 431, 501, 505}


def check(data: bytes) -> None:
    if not data:
        return
    settings, payload = data[0], data[1:]
    limits = LIMITS[settings & 1]
    eof = bool(settings & 2)
    whole = parse([payload], limits, eof=eof)
    if whole.status is not None and whole.status not in STATUSES:
        raise AssertionError(f"unexpected status {whole.status}")
    n = len(payload) + 1
    offsets = ((settings >> 2) * 7919 % n, (settings >> 2) * 104729 % n)
    for how, chunks in (
        ("byte by byte", [payload[i : i + 1] for i in range(len(payload))]),
        (f"cut at {offsets}", cut(payload, offsets)),
    ):
        other = parse(chunks, limits, eof=eof)
        if other.key() != whole.key():
            raise AssertionError(f"{how} differs from whole:\n{other}\nwhole:\n{whole}")


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
