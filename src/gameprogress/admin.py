"""Who may see the dashboard, the reports and the exports: one admin token, and sessions.

Off unless `GAMEPROGRESS_ADMIN_TOKEN` is set (the routes then answer 404, as if absent). With a
token, a request is let in by `Authorization: Bearer <token>` (scripts, curl) or by a session
cookie that the login form sets after checking the token. The cookie is signed, not stored:
`<nonce>.<expiry>.<hmac>` with a key derived from the token, so no server state is needed
across worker processes, and changing the token ends every session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Callable

SESSION_COOKIE = "gameprogress_session"
SESSION_LIFETIME = 12 * 3600  # seconds: a working day, then log in again
_SESSION_RE = re.compile(r"([A-Za-z0-9_-]{22})\.([0-9]{1,12})\.([0-9a-f]{64})")
_BEARER_RE = re.compile(r"Bearer +(\S+)", re.IGNORECASE)


class AdminAuth:
    """Checks the admin token and issues and checks session cookies."""

    def __init__(self, token: str, clock: Callable[[], float]) -> None:
        self._token_digest = hashlib.sha256(token.encode("utf-8")).digest()
        # A key of its own for sessions: a cookie never reveals anything about the token.
        self._session_key = hashlib.sha256(b"gameprogress session key\n" + token.encode()).digest()
        self._clock = clock

    def token_matches(self, candidate: str) -> bool:
        """Constant-time comparison; digests first, so not even the length leaks."""
        digest = hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self._token_digest)

    def bearer_matches(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        match = _BEARER_RE.fullmatch(authorization.strip())
        return bool(match) and self.token_matches(match.group(1))

    def new_session(self) -> str:
        nonce = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")
        expiry = str(int(self._clock()) + SESSION_LIFETIME)
        return f"{nonce}.{expiry}.{self._mac(nonce, expiry)}"

    def session_valid(self, cookie: str | None) -> bool:
        if not cookie:
            return False
        match = _SESSION_RE.fullmatch(cookie)
        if not match:
            return False
        nonce, expiry, mac = match.groups()
        if not hmac.compare_digest(mac, self._mac(nonce, expiry)):
            return False
        return self._clock() < int(expiry)

    def _mac(self, nonce: str, expiry: str) -> str:
        message = f"{nonce}.{expiry}".encode("ascii")
        return hmac.new(self._session_key, message, hashlib.sha256).hexdigest()
