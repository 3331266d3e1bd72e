"""The grammar of HTTP messages, written once: RFC 9110/9112 rules as patterns compiled once,
and the split of a request-target into path, query and authority.

A leaf module: the protocol parsers (`http1`, `uwsgi`) and the gateway (`wsgi`) all read the
same rules here, so a rule that changes in the RFC changes in one line. Nothing here holds
state, does I/O or imports another forklift module.
"""

from __future__ import annotations

import re

# RFC 9110 §5.6.2: token = 1*tchar. Methods and field names are tokens.
TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
token = re.compile(TOKEN)
#: The same rule for text (a uwsgi peer's REQUEST_METHOD, an app's header names).
token_text = re.compile(TOKEN.decode("ascii"))

# RFC 9110 §5.5: a field value holds no CTL but HTAB; PEP 3333 adds "latin-1 only".
field_value_forbidden_text = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")

# RFC 9112 §4: status-code SP reason-phrase, as a WSGI status string ("200 OK").
status_text = re.compile(r"[1-9][0-9][0-9] [^\x00-\x1f\x7f]*")


def split_target(target: bytes) -> tuple:
    """(path bytes, query bytes, authority or None) of a request-target (RFC 9112 §3.2)."""
    authority = None
    if target[:1] != b"/":
        if target == b"*":
            return b"*", b"", None
        scheme, sep, rest = target.partition(b"://")
        if sep and scheme.lower() in (b"http", b"https"):
            # The authority ends at the first "/", "?" or "#" (RFC 3986 §3.2).
            end = len(rest)
            for delimiter in (b"/", b"?", b"#"):
                i = rest.find(delimiter)
                if 0 <= i < end:
                    end = i
            authority, rest = rest[:end], rest[end:]
            target = rest if rest[:1] == b"/" else b"/" + rest
            if b"@" in authority:  # userinfo is not part of the host (RFC 9110 §4.2.4)
                authority = authority.rpartition(b"@")[2]
    path, _, query = target.partition(b"?")
    if b"#" in query:
        query = query.partition(b"#")[0]
    elif b"#" in path:
        path = path.partition(b"#")[0]
    return path, query, authority
