"""`Memo`: results remembered by the inputs that decide them, for the request path's pure
functions (a response head from a status and header list, a field block's parse, its
environ entries, a checked header list).

Why: a server answers the same few clients and an app the same few heads again and again,
so work that depends only on bytes or strings seen before is done once and looked up after.
Only pure results are remembered (same input, same output), so a hit is always what the
work would have made. A memo is bounded and emptied when full: inputs that differ on every
request (cookies, ETags, a hostile peer's junk) cannot grow it, and cost one failed lookup
and one store each.
"""

from __future__ import annotations


class Memo(dict):
    """A dict of remembered results with at most `limit` entries. `get` to look up,
    `remember(key, value)` to store (emptying it first when full). Lookups and stores are
    single dict operations: safe from several threads."""

    __slots__ = ("limit",)

    def __init__(self, limit: int = 512):
        super().__init__()
        self.limit = limit

    def remember(self, key, value):
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value
