"""The store's error types: a leaf module, so the stores and the migrations that raise them
and the app that catches them never import one another for a class."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot do what was asked for a reason that retrying will not fix."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or is too busy right now; retrying later may work.

    `retry_after` is the number of seconds the HTTP layer advertises in `Retry-After`.
    """

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
