"""Answers the event loop owns after the app returned: what is left to send, and the app's
iterable to advance when the socket takes more.

Why: a client that reads slowly (or not at all) must cost a little memory, never a worker
or a thread. The app's call ends as soon as it returned its iterable; from then on the
connection's owner (the loop, or a request thread the loop wakes when the socket is
writable) calls `pump` each time the socket can take more. At most `hold` bytes of the
answer (plus the chunk that crossed it) wait in memory per connection; a list body is the
app's own buffers, queued without a copy; a file goes out with sendfile.
"""

from __future__ import annotations

_ROUNDS = 16  # drain/advance rounds per pump: one fast client cannot starve the loop


class Answer:
    """One request's answer in flight: the `framing.Response`, the app's `wsgi.AppBody`
    (None once nothing of the app is left to run or close), and what the access log, the
    metrics and the scoreboard need when it ends (`environ`, `start`, `ident` for
    harakiri, the listener's `metrics_key`, the `request_bytes` of its body)."""

    __slots__ = ("response", "body", "environ", "start", "ident", "metrics_key", "request_bytes")

    def __init__(
        self, response, environ: dict, start: float, ident: int, metrics_key, request_bytes: int
    ):
        self.response = response
        self.body = None
        self.environ = environ
        self.start = start
        self.ident = ident
        self.metrics_key = metrics_key
        self.request_bytes = request_bytes

    @property
    def needs_app(self) -> bool:
        """Is the app's iterator still to be advanced (app code to run)?"""
        body = self.body
        return body is not None and body.iterator is not None

    def close(self) -> None:
        """The answer ends (sent, failed or abandoned): the app's close(), exactly once."""
        body = self.body
        if body is not None:
            self.body = None
            body.close()


def pump(sink, answer: Answer, hold: int) -> tuple:
    """Send what the sink holds and advance the app while the socket takes it, never
    waiting. Returns (progress, done): progress when bytes went out or the app's iterator
    moved on (a HEAD answer sends nothing and still progresses); done when the answer is
    all out. Raises PeerGone (the client left) or what the app's iterator raised (after its
    close())."""
    moved = 0
    for _ in range(_ROUNDS):
        moved += sink.drain()
        if sink.pending:
            return moved, False  # the kernel is full: wait until the socket is writable
        body = answer.body
        if body is None or body.iterator is None:
            return moved, True
        body.advance(hold)
        moved += 1
    return moved, False
