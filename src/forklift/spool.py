"""A request body as the event loop reads it before the app is called: in memory up to a
threshold (uWSGI's `post-buffering`), in an anonymous temporary file beyond it.

Why: an app that reads `wsgi.input` from the socket waits on the client; a client sending
one byte a second would hold the app's thread (or, inline, the whole worker). Reading the
body first, in the loop, makes a slow sender cost a little memory or disk and nothing else.

The temporary file has no name (O_TMPFILE where the kernel has it, else unlinked at once),
so it disappears when closed: at the request's end, on an error, and when the worker exits
or is killed. A full disk is `SpoolFull`, which the worker answers with 507.
"""

from __future__ import annotations

import io
import tempfile

from .errors import ForkliftError


class SpoolFull(ForkliftError):
    """The body could not be written to the temporary directory (disk full, quota, ...)."""


class Spool:
    """The body of one request: `write()` pieces as they arrive, then `stream()` it."""

    __slots__ = ("threshold", "directory", "pieces", "size", "file")

    def __init__(self, threshold: int, directory: str | None):
        self.threshold = threshold  # bytes kept in memory; beyond it, a temporary file
        self.directory = directory  # None: the system's ($TMPDIR, /tmp)
        self.pieces = []
        self.size = 0
        self.file = None

    def write(self, data: bytes) -> None:
        """Keep `data`; past the threshold everything moves to a temporary file."""
        self.size += len(data)
        try:
            if self.file is not None:
                self.file.write(data)
                return
            self.pieces.append(data)
            if self.size > self.threshold:
                self.file = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115 (closed by close())
                for piece in self.pieces:
                    self.file.write(piece)
                self.pieces = []
        except OSError as exc:
            self.close()
            raise SpoolFull(f"request body spool: {exc.strerror or exc}") from None

    def stream(self):
        """`wsgi.input`: the whole body, from its start."""
        if self.file is not None:
            try:
                self.file.flush()
            except OSError as exc:
                self.close()
                raise SpoolFull(f"request body spool: {exc.strerror or exc}") from None
            self.file.seek(0)
            return self.file
        pieces = self.pieces
        return io.BytesIO(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def close(self) -> None:
        """Drop the body (the temporary file goes with its descriptor)."""
        self.pieces = []
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None
