"""Where the service's knobs come from: a config mapping first, then the environment, then defaults.

One reader for all of them, so that `create_app(config)` in a test and `wsgi.py` under a server
resolve settings the same way, and a bad value stops the app at start with a clear message
instead of surfacing on the first request.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .history import DEFAULT_RETENTION_DAYS
from .store import DATABASE_URL_ENV, DEFAULT_DATABASE_URL, Store

WRITE_KEY_ENV = "GAMEPROGRESS_WRITE_KEY"
LEGACY_WRITES_ENV = "GAMEPROGRESS_LEGACY_WRITES"
ADMIN_TOKEN_ENV = "GAMEPROGRESS_ADMIN_TOKEN"
RETENTION_DAYS_ENV = "GAMEPROGRESS_RETENTION_DAYS"
# A shorter token could be guessed through the login form; 16 random characters cannot.
ADMIN_TOKEN_MIN_LENGTH = 16
RETENTION_MAX_DAYS = 36500
# Not environment variables: objects a caller embedding the app (or a test) may hand in.
STORE_KEY = "GAMEPROGRESS_STORE"
CLOCK_KEY = "GAMEPROGRESS_CLOCK"

_ON = {"on", "1", "true", "yes"}
_OFF = {"off", "0", "false", "no"}


@dataclass(frozen=True)
class Settings:
    database_url: str
    write_key: bytes | None
    legacy_writes: bool
    store: Store | None
    clock: Callable[[], float]
    admin_token: str | None = None
    retention_days: int = DEFAULT_RETENTION_DAYS

    @classmethod
    def load(
        cls, config: Mapping[str, object] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        config = config or {}
        environ = os.environ if environ is None else environ

        def pick(name: str) -> object:
            return config[name] if name in config else environ.get(name)

        database_url = str(pick(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL)
        key = pick(WRITE_KEY_ENV)
        if isinstance(key, str):
            key = key.encode("utf-8")
        legacy = pick(LEGACY_WRITES_ENV)
        if legacy is None or isinstance(legacy, bool):
            legacy_writes = True if legacy is None else legacy
        elif str(legacy).strip().lower() in _ON:
            legacy_writes = True
        elif str(legacy).strip().lower() in _OFF:
            legacy_writes = False
        else:
            raise ValueError(f"{LEGACY_WRITES_ENV} must be 'on' or 'off', not {legacy!r}")
        token = pick(ADMIN_TOKEN_ENV)
        admin_token = str(token) if token else None  # empty means "not set": dashboard off
        if admin_token is not None and len(admin_token) < ADMIN_TOKEN_MIN_LENGTH:
            raise ValueError(
                f"{ADMIN_TOKEN_ENV} must be at least {ADMIN_TOKEN_MIN_LENGTH} characters "
                f"(it guards the dashboard and the exports), not {len(admin_token)}"
            )
        retention = pick(RETENTION_DAYS_ENV)
        if retention is None or retention == "":
            retention_days = DEFAULT_RETENTION_DAYS
        else:
            text = str(retention).strip()
            if not re.fullmatch(r"[0-9]{1,6}", text) or int(text) > RETENTION_MAX_DAYS:
                raise ValueError(
                    f"{RETENTION_DAYS_ENV} must be a whole number of days from 0 (keep "
                    f"forever) to {RETENTION_MAX_DAYS}, not {retention!r}"
                )
            retention_days = int(text)
        return cls(
            admin_token=admin_token,
            retention_days=retention_days,
            database_url=database_url,
            write_key=key or None,  # an empty key means "not set", never "sign with nothing"
            legacy_writes=legacy_writes,
            store=config.get(STORE_KEY),  # type: ignore[arg-type]
            clock=config.get(CLOCK_KEY) or time.time,  # type: ignore[arg-type]
        )
