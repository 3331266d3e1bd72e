"""HMAC-SHA256 request signatures: what is signed, and how the server checks it.

The signed message is four parts joined by newlines:

    METHOD \\n PATH \\n TIMESTAMP \\n BODY

METHOD is upper case, PATH is the request path as the app sees it (percent-decoded, without
the query string), TIMESTAMP is the `X-Timestamp` header (unix seconds, decimal) and BODY is
the raw request body bytes. The signature is the lower- or upper-case hex digest in
`X-Signature`. The timestamp must be within `MAX_SKEW` seconds of the server clock, which bounds
how long a captured request can be replayed; a replay can only repeat an update, which the
max-keeping store absorbs.
"""

from __future__ import annotations

import hashlib
import hmac
import re

TIMESTAMP_HEADER = "X-Timestamp"
SIGNATURE_HEADER = "X-Signature"
MAX_SKEW = 300  # seconds either way: generous for phone clocks, short for replays

# Used with fullmatch only (a `$` would also accept a trailing newline).
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{64}")


class SignatureError(Exception):
    """A write was refused for its signature; `code` names the reason for the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def signing_message(method: str, path: str, timestamp: str, body: bytes) -> bytes:
    return b"\n".join(
        (method.upper().encode("ascii"), path.encode("utf-8"), timestamp.encode("ascii"), body)
    )


def sign(key: bytes, method: str, path: str, timestamp: str, body: bytes) -> str:
    """The hex signature a client sends in `X-Signature`."""
    message = signing_message(method, path, timestamp, body)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(
    key: bytes,
    method: str,
    path: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
) -> None:
    """Return quietly if the request is signed with `key` and fresh; raise `SignatureError`."""
    if not timestamp or not signature:
        raise SignatureError(
            "signature_required",
            f"this server requires signed writes: send {TIMESTAMP_HEADER} and "
            f"{SIGNATURE_HEADER} (HMAC-SHA256, see docs/gameprogress.md)",
        )
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise SignatureError(
            "invalid_timestamp", f"{TIMESTAMP_HEADER} must be unix seconds as a decimal integer"
        )
    skew = abs(now - int(timestamp))
    if skew > MAX_SKEW:
        raise SignatureError(
            "stale_timestamp",
            f"{TIMESTAMP_HEADER} is {skew:.0f} s away from the server clock "
            f"(at most {MAX_SKEW} s allowed)",
        )
    if not _SIGNATURE_RE.fullmatch(signature):
        raise SignatureError(
            "bad_signature", f"{SIGNATURE_HEADER} must be 64 hex digits (HMAC-SHA256)"
        )
    expected = sign(key, method, path, timestamp, body)
    if not hmac.compare_digest(expected, signature.lower()):
        raise SignatureError(
            "bad_signature", "signature does not match the method, path, timestamp and body"
        )
