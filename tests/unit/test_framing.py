"""forklift.framing: the one body-framing decision, and `Response`, the answer `run_app` drives.

The decision is tested as a table (RFC 9110 §6.4.1, §8.6, §9.3.2, §15.4.5), then through both
protocols: whatever http1 and uwsgi add around it, a response to the same request gets the
same body mode when the HTTP client cannot take chunks. `Response` is driven as `run_app`
drives it, with a sink that records what would go to the socket.
"""

from __future__ import annotations

import pytest

from forklift import http1, uwsgi
from forklift.framing import (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    BODY_UNTIL_CLOSE,
    LAST_CHUNK,
    app_fields,
    body_framing,
    reason,
)
from forklift.memo import Memo
from forklift.wsgi import run_app


class RecordingSink:
    """A sink that keeps every send (and sendfile span) instead of touching a socket."""

    can_sendfile = True

    def __init__(self, file_bytes: bytes = b""):
        self.sends = []
        self.file_bytes = file_bytes

    def send(self, data):
        self.sends.append(bytes(data))

    def send_all(self, data):
        self.sends.append(bytes(data))

    def flush(self):
        pass

    queued = 0  # bytes held back: none, this sink takes everything

    def queue_file(self, fd, offset, count):
        self.sends.append(self.file_bytes[offset : offset + count])

    @property
    def wire(self) -> bytes:
        return b"".join(self.sends)


def head_of(raw: bytes):
    parser = http1.RequestParser()
    parser.receive_data(raw)
    return parser, parser.next_event()


GET11 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
HEAD11 = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
GET10 = b"GET / HTTP/1.0\r\n\r\n"


# --- the decision ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "code, is_head, content_length, known, can_chunk, expected",
    [
        (100, False, None, 5, True, (BODY_NONE, None)),
        (204, False, 7, 5, True, (BODY_NONE, None)),  # §8.6: no Content-Length in a 204
        (304, False, 7, 0, True, (BODY_NONE, 7)),  # §15.4.5: the app's length, as a 200's
        (304, False, None, 0, True, (BODY_NONE, None)),  # not the empty body's 0
        (200, True, None, 12, True, (BODY_NONE, 12)),  # §9.3.2: HEAD announces, sends none
        (200, True, 40, 0, True, (BODY_NONE, 40)),
        (200, False, 7, 99, True, (BODY_LENGTH, 7)),  # the app's header wins
        (200, False, None, 12, True, (BODY_LENGTH, 12)),
        (200, False, None, None, True, (BODY_CHUNKED, None)),
        (200, False, None, None, False, (BODY_UNTIL_CLOSE, None)),
        (404, False, None, None, False, (BODY_UNTIL_CLOSE, None)),
    ],
)
def test_body_framing_decides_each_case_once(
    code, is_head, content_length, known, can_chunk, expected
):
    assert body_framing(code, is_head, content_length, known, can_chunk) == expected


def test_app_fields_drop_what_the_server_owns_and_keep_the_rest_in_order():
    fields, length = app_fields(
        [
            ("Content-Type", "text/plain"),
            ("Connection", "close"),
            ("Transfer-Encoding", "chunked"),
            ("Keep-Alive", "timeout=5"),
            ("Content-Length", "5"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ]
    )
    assert fields == "Content-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
    assert length == 5


@pytest.mark.parametrize("value", ["-1", "5 ", "five", "٣"])
def test_app_fields_refuse_a_content_length_that_is_not_a_number(value):
    with pytest.raises(ValueError, match="Content-Length"):
        app_fields([("Content-Length", value)])


def test_reason_phrases_for_the_statuses_the_server_answers():
    assert reason(413) == "Content Too Large"
    assert reason(505) == "HTTP Version Not Supported"
    assert reason(418) == "Bad Request"  # an unlisted client error still reads as one


@pytest.mark.parametrize("status", ["100 Continue", "200 OK", "204 No Content", "304 NM"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST"])
@pytest.mark.parametrize("app_length", [None, "3"])
@pytest.mark.parametrize("known", [None, 0, 3])
def test_http_and_uwsgi_answers_follow_the_same_body_rules(status, method, app_length, known):
    # An HTTP/1.0 client cannot take chunks, like nginx reading a uwsgi answer: what is left
    # is the one decision, and both protocols must make it the same way.
    headers = [("Content-Type", "text/plain")]
    if app_length is not None:
        headers.append(("Content-Length", app_length))
    request = head_of(f"{method} / HTTP/1.0\r\n\r\n".encode())[1]
    by_http = http1.frame_response(request, status, headers, known_length=known)
    by_uwsgi = uwsgi.frame_response(method, status, headers, known)
    assert by_http.body_mode == by_uwsgi.body_mode
    assert by_http.content_length == by_uwsgi.content_length
    assert not by_uwsgi.keep_alive


def test_a_uwsgi_answer_is_an_http_head_nginx_reads_and_never_chunked():
    frame = uwsgi.frame_response(
        "GET", "200 OK", [("X-A", "1"), ("Transfer-Encoding", "chunked")], None
    )
    assert frame.head == b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n"
    assert frame.body_mode == BODY_UNTIL_CLOSE
    frame = uwsgi.frame_response("GET", "200 OK", [("X-A", "1")], 12)
    assert frame.head == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 12\r\n\r\n"


def every_frame(heads, fresh: bool):
    """Frames of both protocols for a spread of requests, keep-alive flags and answers;
    `fresh`: each made with empty memos, so none comes from an earlier one."""
    frames = []
    for version in ("1.0", "1.1"):
        for method in ("GET", "HEAD"):
            request = head_of(f"{method} / HTTP/{version}\r\nHost: x\r\n\r\n".encode())[1]
            for keep_alive in (True, False):
                for status, headers, known in heads:
                    if fresh:
                        http1._heads.clear()
                        uwsgi._heads.clear()
                    frames.append(
                        http1.frame_response(
                            request, status, list(headers), known, keep_alive, b"Date: d\r\n"
                        )
                    )
                    frames.append(uwsgi.frame_response(method, status, list(headers), known))
    return frames


def test_a_remembered_head_is_the_head_made_afresh():
    # Heads are made once and looked up after (memo.Memo): every input that decides a
    # head must be part of what it is remembered by, so a later answer never gets another
    # request's framing.
    heads = [
        (status, headers, known)
        for status in ("200 OK", "204 No Content", "304 Not Modified", "404 Not Found")
        for headers in ([], [("X-A", "1")], [("X-A", "1"), ("Content-Length", "3")])
        for known in (None, 0, 3)
    ]
    made = every_frame(heads, fresh=True)
    assert len(set(made)) > len(heads)  # the flags and versions made different heads
    every_frame(heads, fresh=False)  # fills the memos
    assert every_frame(heads, fresh=False) == made  # all from the memos


def test_the_head_memo_stays_within_its_bound():
    memo = Memo(limit=8)
    for n in range(100):
        memo.remember(n, n)
        assert len(memo) <= 8
    assert memo[99] == 99


def test_a_remembered_head_carries_this_answers_date():
    request = head_of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")[1]
    first = http1.frame_response(request, "200 OK", [("X-A", "1")], 2, True, b"Date: one\r\n")
    again = http1.frame_response(request, "200 OK", [("X-A", "1")], 2, True, b"Date: two\r\n")
    assert first.head.replace(b"one", b"two") == again.head


# --- Response, as run_app drives it ---------------------------------------------------------
def answer(raw: bytes, app, keep_alive: bool = True, sink=None):
    parser, request = head_of(raw)
    sink = sink or RecordingSink()
    response = http1.HTTP().response(request, parser, sink, keep_alive)
    run_app(app, {"REQUEST_METHOD": request.method}, response)
    return response, sink


def app_returning(*pieces, headers=(), status="200 OK"):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain"), *headers])
        return list(pieces)

    return app


def generator_app(*pieces, headers=()):
    def app(environ, start_response):
        start_response("200 OK", list(headers))
        yield from pieces

    return app


def test_a_small_answer_is_one_send_head_and_body_together():
    response, sink = answer(GET11, app_returning(b"hello"))
    assert len(sink.sends) == 1
    assert sink.wire.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")
    assert b"Content-Length: 5\r\n" in sink.wire and sink.wire.endswith(b"\r\n\r\nhello")
    assert (response.keep_alive, response.sent, response.status) == (True, 5, "200 OK")


def test_a_large_first_piece_is_not_copied_behind_the_head():
    big = b"x" * 100_000
    _, sink = answer(GET11, app_returning(big))
    assert len(sink.sends) == 2 and sink.sends[1] == big


def test_an_unknown_length_is_chunked_for_an_http11_client_and_ended():
    response, sink = answer(GET11, generator_app(b"ab", b"", b"cde"))
    body = sink.wire.split(b"\r\n\r\n", 1)[1]
    assert b"Transfer-Encoding: chunked" in sink.wire
    assert body == b"2\r\nab\r\n3\r\ncde\r\n" + LAST_CHUNK
    assert response.keep_alive


def test_an_unknown_length_to_an_http10_client_is_delimited_by_closing():
    response, sink = answer(GET10, generator_app(b"ab", b"cde"))
    assert sink.wire.endswith(b"\r\n\r\nabcde")
    assert b"Connection: close" in sink.wire and not response.keep_alive


def test_bytes_past_the_apps_content_length_are_cut_and_the_connection_closes():
    response, sink = answer(
        GET11, generator_app(b"hello", b"world", headers=[("Content-Length", "7")])
    )
    assert sink.wire.endswith(b"\r\n\r\nhellowo")
    assert not response.keep_alive


def test_fewer_bytes_than_the_apps_content_length_close_the_connection():
    response, sink = answer(GET11, generator_app(b"hel", headers=[("Content-Length", "7")]))
    assert sink.wire.endswith(b"\r\n\r\nhel")
    assert not response.keep_alive  # only the close tells the client the body is short


def test_a_head_request_gets_the_length_and_no_body():
    response, sink = answer(HEAD11, app_returning(b"hello"))
    assert b"Content-Length: 5\r\n" in sink.wire and sink.wire.endswith(b"\r\n\r\n")
    assert response.keep_alive and response.sent == 0


def test_a_file_answer_is_queued_after_its_head():
    sink = RecordingSink(file_bytes=b"0123456789")
    parser, request = head_of(GET11)
    response = http1.HTTP().response(request, parser, sink, True)
    response.send_head("200 OK", [], 10)
    response.sendfile(3, 0, 10)
    response.finish()
    assert sink.sends[0].startswith(b"HTTP/1.1 200 OK") and sink.sends[1] == b"0123456789"
    assert response.keep_alive and response.sent == 10
    # A file that shrinks before it is sent ends the connection: tests/unit/test_sink.py.


def test_a_request_body_the_app_left_unread_is_drained_when_it_is_all_here():
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    response, _ = answer(raw, app_returning(b"ok"))
    assert response.keep_alive


def test_a_request_body_still_arriving_when_the_app_answers_closes_the_connection():
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nhello"
    response, sink = answer(raw, app_returning(b"ok"))
    # Its unread rest would be parsed as the next request (RFC 9112 §9.3): close instead.
    assert not response.keep_alive and b"Connection: close" in sink.wire
