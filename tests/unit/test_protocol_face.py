"""The one face every protocol adapter shows the worker (`framing.ProtocolAdapter`).

The same request is sent as HTTP/1.1 bytes and as a uwsgi packet, fed whole, split at every
offset and byte by byte through `adapter.new_parser()`. The worker must get the same facts
from both (method, body size and presence, whether to wait for a 100, keep-alive), the same
body, a public `.error` on bad input, and `wsgi.build_environ` must make the same environ
from either request: the gateway knows no protocol.
"""

from __future__ import annotations

import io

import pytest

from forklift import http1, uwsgi
from forklift.errors import ProtocolError
from forklift.events import NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage
from forklift.wsgi import base_environ, build_environ

BODY = b"hello world"
HTTP_REQUEST = (
    b"POST /shop/cart?item=7 HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 11\r\nX-Trace: abc\r\n\r\n" + BODY
)
UWSGI_REQUEST = (
    uwsgi.encode_vars(
        {
            "REQUEST_METHOD": "POST",
            "REQUEST_URI": "/shop/cart?item=7",
            "PATH_INFO": "/shop/cart",
            "QUERY_STRING": "item=7",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": "text/plain",
            "CONTENT_LENGTH": "11",
            "HTTP_HOST": "example.com",
            "HTTP_X_TRACE": "abc",
            "REMOTE_ADDR": "192.0.2.1",
            "REMOTE_PORT": "40000",
            "SERVER_NAME": "example.com",
            "SERVER_PORT": "80",
            "UWSGI_SCRIPT": "evil:app",
        }
    )
    + BODY
)
ADAPTERS = {
    "http": (http1.HTTP(), HTTP_REQUEST),
    "uwsgi": (uwsgi.UWSGI(), UWSGI_REQUEST),
}


def feedings(data: bytes):
    """Whole, split at every offset, byte by byte: how a socket may deliver `data`."""
    yield "whole", [data]
    for i in range(1, len(data)):
        yield f"split at {i}", [data[:i], data[i:]]
    yield "byte by byte", [data[i : i + 1] for i in range(len(data))]


def drive(adapter, chunks):
    """(request event, body, parser) after feeding `chunks` as the worker's loop would."""
    parser = adapter.new_parser()
    assert parser.at_message_boundary and not parser.message_complete
    request, body, ended = None, b"", False
    for chunk in chunks:
        parser.receive_data(chunk)
        for _ in range(10_000):
            event = parser.next_event()
            if event is NEED_DATA or event is PAUSED:
                break
            if type(event) is Data:
                body += event.data
            elif type(event) is EndOfMessage:
                ended = True
            else:
                assert request is None, "one request, one head"
                request = event
    assert ended and parser.message_complete and parser.error is None
    return request, body, parser


@pytest.mark.parametrize("protocol", sorted(ADAPTERS))
def test_every_feeding_gives_the_same_facts_and_body(protocol):
    adapter, data = ADAPTERS[protocol]
    seen = set()
    for how, chunks in feedings(data):
        request, body, _ = drive(adapter, chunks)
        facts = (
            request.method,
            request.content_length,
            request.has_body,
            request.expect_continue,
            request.keep_alive,
            request.dropped,
            body,
        )
        seen.add(facts)
        assert len(seen) == 1, f"{protocol}, {how}: {facts} differs from {seen}"
    method, length, has_body, expect_continue, keep_alive, dropped, body = seen.pop()
    assert (method, length, has_body, expect_continue, body) == ("POST", 11, True, False, BODY)
    # HTTP/1.1 keeps the connection; nginx's uwsgi connection carries one request.
    assert keep_alive is (protocol == "http")
    assert dropped == (("UWSGI_SCRIPT",) if protocol == "uwsgi" else ())


class _Site:
    script_name = "/shop"
    forwarded_allow_ips = ()
    environ = base_environ(
        server_name="example.com",
        server_port="80",
        multithread=False,
        multiprocess=True,
        script_name="/shop",
    )


def test_the_gateway_builds_the_same_environ_from_either_protocol():
    environs = {}
    for protocol, (adapter, data) in ADAPTERS.items():
        request, body, _ = drive(adapter, [data])
        environ = build_environ(request, _Site(), ("192.0.2.1", 40000), io.BytesIO(body))
        environs[protocol] = environ
    keys = (
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "REQUEST_URI",
        "SERVER_PROTOCOL",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "HTTP_HOST",
        "HTTP_X_TRACE",
        "REMOTE_ADDR",
        "SERVER_NAME",
        "wsgi.url_scheme",
    )
    http_view = {k: environs["http"].get(k) for k in keys}
    uwsgi_view = {k: environs["uwsgi"].get(k) for k in keys}
    assert http_view == uwsgi_view
    assert http_view["SCRIPT_NAME"] == "/shop" and http_view["PATH_INFO"] == "/cart"
    assert environs["uwsgi"]["wsgi.input"].read() == BODY
    assert "UWSGI_SCRIPT" not in environs["uwsgi"]


def test_a_path_outside_the_mount_has_no_environ():
    for adapter, data in ADAPTERS.values():
        request, _, _ = drive(adapter, [data])
        site = _Site()
        site.script_name = "/elsewhere"
        assert build_environ(request, site, None, io.BytesIO()) is None


@pytest.mark.parametrize(
    "protocol, data, status",
    [
        ("http", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("http", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("uwsgi", b"\x05\x00\x00\x00", None),  # modifier1 5: not a WSGI request
        ("uwsgi", uwsgi.encode_vars({"PATH_INFO": "/"}), None),  # no REQUEST_METHOD
    ],
)
def test_bad_input_is_the_public_error_and_stays_the_error(protocol, data, status):
    adapter, _ = ADAPTERS[protocol]
    parser = adapter.new_parser()
    assert parser.error is None
    parser.receive_data(data)
    with pytest.raises(ProtocolError) as raised:
        parser.next_event()
    assert parser.error is raised.value and parser.error.status == status
    parser.receive_data(HTTP_REQUEST)  # nothing after a bad request is ever parsed
    with pytest.raises(ProtocolError):
        parser.next_event()


@pytest.mark.parametrize("protocol", sorted(ADAPTERS))
def test_a_peer_that_closes_before_sending_anything_is_a_clean_close(protocol):
    adapter, _ = ADAPTERS[protocol]
    parser = adapter.new_parser()
    parser.receive_data(b"")
    assert type(parser.next_event()) is ConnectionClosed
    assert parser.error is None


@pytest.mark.parametrize("protocol", sorted(ADAPTERS))
def test_error_answers_are_complete_http_answers_that_close(protocol):
    adapter, _ = ADAPTERS[protocol]
    answer = adapter.error_answer(413, "body larger than the limit")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 Content Too Large\r\n")
    assert b"\r\nConnection: close" in head
    assert body == b"body larger than the limit\n"
    assert f"Content-Length: {len(body)}".encode() in head


def test_only_http_answers_a_slow_head_nginx_gets_a_close():
    assert http1.HTTP().timeout_answer().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert uwsgi.UWSGI().timeout_answer() is None


def test_only_http_clients_are_sent_an_interim_100():
    assert http1.HTTP().continue_response == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert uwsgi.UWSGI().continue_response == b""


def test_the_adapters_have_the_same_face():
    names = (
        "name",
        "rejection",
        "loud_rejections",
        "continue_response",
        "dropped_warning",
        "new_parser",
        "response",
        "error_answer",
        "timeout_answer",
    )
    for adapter, _ in ADAPTERS.values():
        missing = [n for n in names if not hasattr(adapter, n)]
        assert not missing, (adapter, missing)
    assert uwsgi.UWSGI().rejection == "bad uwsgi packet"  # the log line operators grep for
