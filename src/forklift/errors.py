"""Typed errors shared by every layer; a protocol error carries the status it maps to."""


class ForkliftError(Exception):
    """Base class of every error forklift raises on purpose."""


class ProtocolError(ForkliftError):
    """The peer broke the protocol; answer `status` (when there is a status to send) and close.

    `status` is the HTTP status the worker sends before closing, or None when the peer
    cannot be answered meaningfully (a broken uwsgi packet: nginx gets a closed connection).
    """

    def __init__(self, message: str, status: int | None = 400):
        super().__init__(message)
        self.status = status


class PeerGone(ForkliftError, OSError):
    """The client closed or reset the connection before the exchange was complete.

    It subclasses OSError so that an app reading `wsgi.input` sees the usual I/O error.
    """


class ConfigError(ForkliftError):
    """A bad option or config value; the message is one line naming the key (and the file)."""


class AppImportError(ForkliftError):
    """The WSGI application could not be imported or found; the message says why in one line."""
