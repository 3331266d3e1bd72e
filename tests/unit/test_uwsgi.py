"""The uwsgi codec: fed whole, split at every offset and byte by byte; fuzzed; every refusal."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forklift.errors import ProtocolError
from forklift.events import NEED_DATA, PAUSED, ConnectionClosed, Data, EndOfMessage
from forklift.uwsgi import (
    FRAMING_VARS,
    UwsgiParser,
    UwsgiRequest,
    encode_vars,
    frame_response,
)

# What nginx's stock uwsgi_params sends, plus a few client headers.
NGINX_VARS = {
    "QUERY_STRING": "a=1&b=%C3%A9",
    "REQUEST_METHOD": "POST",
    "CONTENT_TYPE": "application/json",
    "CONTENT_LENGTH": "11",
    "REQUEST_URI": "/update/abc/7?a=1",
    "PATH_INFO": "/update/abc/7",
    "DOCUMENT_ROOT": "/usr/share/nginx/html",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REQUEST_SCHEME": "http",
    "REMOTE_ADDR": "203.0.113.9",
    "REMOTE_PORT": "51234",
    "SERVER_PORT": "80",
    "SERVER_NAME": "49.233.46.38",
    "HTTP_HOST": "example.test",
    "HTTP_USER_AGENT": "curl/8.0",
}
BODY = b'{"level":7}'


def pack(pairs, modifier1=0, modifier2=0, datasize=None):
    """Raw packet builder for malformed cases that encode_vars refuses to build."""
    block = b"".join(
        struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v for k, v in pairs
    )
    size = len(block) if datasize is None else datasize
    return struct.pack("<BHB", modifier1, size, modifier2) + block


def drain(parser, events):
    """Collect events until the parser needs data or is done; True once it is done."""
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            return False
        events.append(event)
        if event is PAUSED or isinstance(event, ConnectionClosed):
            return True


def run(chunks, eof=True, **kwargs):
    parser = UwsgiParser(**kwargs)
    events = []
    done = False
    for chunk in chunks:
        parser.receive_data(chunk)
        done = done or drain(parser, events)
    if eof:
        parser.receive_data(b"")
        done = done or drain(parser, events)
    return merge_data(events)


def merge_data(events):
    """Join consecutive Data events: how the body is cut depends on how bytes arrived."""
    merged = []
    for event in events:
        if isinstance(event, Data) and merged and isinstance(merged[-1], Data):
            merged[-1] = Data(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def splits(data):
    """Every way of feeding `data`: whole, in two at every offset, byte by byte."""
    yield [data]
    for offset in range(1, len(data)):
        yield [data[:offset], data[offset:]]
    yield [data[i : i + 1] for i in range(len(data))]


def expected_events(vars_, body):
    request = UwsgiRequest(vars_, len(body), ())
    events = [request]
    if body:
        events.append(Data(body))
    return [*events, EndOfMessage(), PAUSED]


# --- whole, split, byte by byte ---------------------------------------------------------------


def test_nginx_request_whole():
    events = run([encode_vars(NGINX_VARS) + BODY])
    assert events == expected_events(NGINX_VARS, BODY)


def test_every_split_gives_the_same_events():
    data = encode_vars(NGINX_VARS) + BODY
    want = expected_events(NGINX_VARS, BODY)
    for chunks in splits(data):
        assert run(chunks) == want


def test_every_split_without_eof_still_completes():
    # nginx keeps its side open while it waits for the answer.
    data = encode_vars(NGINX_VARS) + BODY
    want = expected_events(NGINX_VARS, BODY)
    for chunks in splits(data):
        assert run(chunks, eof=False) == want


def test_no_body_ends_at_once():
    vars_ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/deviceId=abc"}
    assert run([encode_vars(vars_)]) == expected_events(vars_, b"")


def test_zero_content_length_is_no_body():
    vars_ = {"REQUEST_METHOD": "GET", "CONTENT_LENGTH": "0"}
    assert run([encode_vars(vars_)]) == expected_events(vars_, b"")


def test_body_is_streamed_never_more_than_received():
    parser = UwsgiParser()
    parser.receive_data(encode_vars({"REQUEST_METHOD": "PUT", "CONTENT_LENGTH": "10"}) + b"abc")
    assert isinstance(parser.next_event(), UwsgiRequest)
    assert parser.next_event() == Data(b"abc")
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"defg")
    assert parser.next_event() == Data(b"defg")
    parser.receive_data(b"hij")
    assert parser.next_event() == Data(b"hij")
    assert parser.next_event() == EndOfMessage()
    assert parser.next_event() is PAUSED
    assert parser.next_event() is PAUSED


def test_bytes_after_the_body_are_never_read():
    # A second packet smuggled behind the first one is dropped unread.
    second = encode_vars({"REQUEST_METHOD": "DELETE", "PATH_INFO": "/admin"})
    first = encode_vars({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "3"})
    for chunks in splits(first + b"abc" + second):
        events = run(chunks, eof=False)
        assert [type(e) for e in events] == [UwsgiRequest, Data, EndOfMessage, type(PAUSED)]
        assert events[1] == Data(b"abc")
    parser = UwsgiParser()
    parser.receive_data(first + b"abc")
    drain(parser, [])
    parser.receive_data(second)
    assert parser.next_event() is PAUSED


def test_data_never_exceeds_content_length():
    parser = UwsgiParser()
    parser.receive_data(encode_vars({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "2"}))
    parser.next_event()
    parser.receive_data(b"abcdef")
    assert parser.next_event() == Data(b"ab")
    assert parser.next_event() == EndOfMessage()


def test_eof_before_any_byte_is_connection_closed():
    assert run([]) == [ConnectionClosed()]
    parser = UwsgiParser()
    parser.receive_data(b"")
    assert parser.next_event() == ConnectionClosed()
    assert parser.next_event() == ConnectionClosed()


def test_eof_after_the_message_is_quiet():
    parser = UwsgiParser()
    parser.receive_data(encode_vars({"REQUEST_METHOD": "GET"}))
    assert isinstance(parser.next_event(), UwsgiRequest)
    parser.receive_data(b"")
    assert parser.next_event() == EndOfMessage()
    assert parser.next_event() is PAUSED


def test_utf8_path_arrives_as_latin1_str():
    raw_path = "/设置/é".encode()
    events = run([encode_vars({"REQUEST_METHOD": "GET", "PATH_INFO": raw_path})])
    path = events[0].vars["PATH_INFO"]
    assert path == raw_path.decode("latin-1")
    assert path.encode("latin-1").decode("utf-8") == "/设置/é"


def test_content_length_is_normalised():
    events = run([encode_vars({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "003"}) + b"xyz"])
    assert events[0].vars["CONTENT_LENGTH"] == "3"
    assert events[0].content_length == 3
    assert events[1] == Data(b"xyz")


def test_empty_content_length_and_type_mean_none():
    vars_ = {"REQUEST_METHOD": "GET", "CONTENT_LENGTH": "", "CONTENT_TYPE": "", "X": ""}
    request = run([encode_vars(vars_)])[0]
    assert request.vars == {"REQUEST_METHOD": "GET", "X": ""}
    assert request.content_length == 0


def test_modifier2_is_ignored():
    assert isinstance(run([encode_vars({"REQUEST_METHOD": "GET"}, modifier2=9)])[0], UwsgiRequest)


def test_packet_exactly_at_buffer_size_is_accepted():
    packet = encode_vars({"REQUEST_METHOD": "GET", "HTTP_X": "a" * 100})
    datasize = len(packet) - 4
    assert isinstance(run([packet], buffer_size=datasize)[0], UwsgiRequest)


def test_buffer_size_is_clamped_and_checked():
    packet = encode_vars({"REQUEST_METHOD": "GET", "HTTP_X": "a" * 65000})
    assert isinstance(run([packet], buffer_size=1 << 20)[0], UwsgiRequest)
    with pytest.raises(ValueError):
        UwsgiParser(buffer_size=0)


# --- UWSGI_* vars -------------------------------------------------------------------------------

UWSGI_VARS = {
    "UWSGI_FILE": "/tmp/evil.py",
    "UWSGI_SCRIPT": "evil:app",
    "UWSGI_MODULE": "evil",
    "UWSGI_CALLABLE": "app",
    "UWSGI_CHDIR": "/tmp",
    "UWSGI_PYHOME": "/tmp/venv",
    "UWSGI_APPID": "evil",
    "UWSGI_SETENV": "PYTHONPATH=/tmp",
    "UWSGI_SCHEME": "https",
    "UWSGI_TOUCH_RELOAD": "/tmp/x",
    "UWSGI_CACHE_GET": "k",
}


def test_every_uwsgi_var_is_dropped_and_named():
    pairs = [("REQUEST_METHOD", "GET"), ("SCRIPT_NAME", "/evil")]
    pairs += list(UWSGI_VARS.items()) + [("UWSGI_FILE", "/tmp/again.py")]
    request = run([encode_vars(pairs)])[0]
    assert request.vars == {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/evil"}
    assert request.dropped == tuple(UWSGI_VARS)  # in order, each named once


def test_uwsgi_prefix_is_case_sensitive():
    vars_ = {"REQUEST_METHOD": "GET", "uwsgi_file": "x", "HTTP_UWSGI_X": "y"}
    request = run([encode_vars(vars_)])[0]
    assert request.vars == vars_
    assert request.dropped == ()


# --- duplicates -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FRAMING_VARS))
def test_duplicated_framing_var_is_refused(name):
    value = "5" if "LENGTH" in name else "GET" if name == "REQUEST_METHOD" else "x"
    pairs = [("REQUEST_METHOD", "GET"), (name, value), (name, value)]
    if name == "REQUEST_METHOD":
        pairs = pairs[1:]
    with pytest.raises(ProtocolError) as info:
        run([pack([(k.encode(), v.encode()) for k, v in pairs])])
    assert info.value.status is None
    assert "duplicated" in str(info.value)


def test_duplicated_http_headers_are_joined():
    pairs = [
        ("REQUEST_METHOD", "GET"),
        ("HTTP_ACCEPT", "text/html"),
        ("HTTP_COOKIE", "a=1"),
        ("HTTP_ACCEPT", "application/json"),
        ("HTTP_COOKIE", "b=2"),
    ]
    request = run([encode_vars(pairs)])[0]
    assert request.vars["HTTP_ACCEPT"] == "text/html, application/json"
    assert request.vars["HTTP_COOKIE"] == "a=1; b=2"


def test_identical_duplicate_cgi_var_is_kept_once():
    pairs = [("REQUEST_METHOD", "GET"), ("HTTPS", "on"), ("HTTPS", "on")]
    assert run([encode_vars(pairs)])[0].vars == {"REQUEST_METHOD": "GET", "HTTPS": "on"}


def test_conflicting_duplicate_cgi_var_is_refused():
    pairs = [("REQUEST_METHOD", "GET"), ("REMOTE_ADDR", "10.0.0.1"), ("REMOTE_ADDR", "10.0.0.2")]
    with pytest.raises(ProtocolError, match="REMOTE_ADDR"):
        run([encode_vars(pairs)])


# --- malformed packets: each refused with status None, the parser stays dead -------------------

GET = (b"REQUEST_METHOD", b"GET")
GOOD_BLOCK = pack([GET])[4:]


def framed(block, datasize=None):
    """A header announcing `datasize` (default: the block's size) before `block`."""
    return struct.pack("<BHB", 0, len(block) if datasize is None else datasize, 0) + block


MALFORMED = {  # name: (bytes, what the error says)
    "modifier1 not 0": (pack([GET], modifier1=5), "modifier1 5"),
    "modifier1 255": (pack([GET], modifier1=255), "modifier1 255"),
    # HTTP sent to the uwsgi port: "G" and "P" are read as modifier1, so it is never parsed.
    "an HTTP request": (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "modifier1 71"),
    "the HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "modifier1 80"),
    "datasize over buffer-size": (pack([GET, (b"HTTP_X", b"a" * 5000)]), "buffer-size"),
    "datasize past the block, eof": (pack([GET], datasize=100), "inside the vars block"),
    "dangling byte after the records": (framed(GOOD_BLOCK + b"\x05"), "inside a name size"),
    "name runs past the block": (framed(struct.pack("<H", 10) + b"AB"), "runs past"),
    "value size runs past the block": (framed(b"\x01\x00A\x01"), "runs past"),
    "value runs past the block": (
        framed(b"\x01\x00A" + struct.pack("<H", 9) + b"xyz"),
        "value runs past",
    ),
    "empty name": (pack([GET, (b"", b"x")]), "empty var name"),
    "no REQUEST_METHOD": (pack([(b"PATH_INFO", b"/")]), "no REQUEST_METHOD"),
    "empty vars block": (pack([]), "no REQUEST_METHOD"),
    "empty REQUEST_METHOD": (pack([(b"REQUEST_METHOD", b"")]), "not a token"),
    "method with space": (pack([(b"REQUEST_METHOD", b"GET /")]), "not a token"),
    "method with CR": (pack([(b"REQUEST_METHOD", b"GET\r")]), "not a token"),
    "method non-ASCII": (pack([(b"REQUEST_METHOD", b"G\xc9T")]), "not a token"),
    "CL letters": (pack([GET, (b"CONTENT_LENGTH", b"abc")]), "not a length"),
    "CL negative": (pack([GET, (b"CONTENT_LENGTH", b"-1")]), "not a length"),
    "CL plus": (pack([GET, (b"CONTENT_LENGTH", b"+5")]), "not a length"),
    "CL space": (pack([GET, (b"CONTENT_LENGTH", b" 5")]), "not a length"),
    "CL trailing space": (pack([GET, (b"CONTENT_LENGTH", b"5 ")]), "not a length"),
    "CL hex": (pack([GET, (b"CONTENT_LENGTH", b"0x10")]), "not a length"),
    "CL list": (pack([GET, (b"CONTENT_LENGTH", b"5, 5")]), "not a length"),
    "CL 19 digits": (pack([GET, (b"CONTENT_LENGTH", b"1" * 19)]), "not a length"),
    "CL 23 digits": (pack([GET, (b"CONTENT_LENGTH", b"9" * 23)]), "not a length"),
    "CL unicode digit": (pack([GET, (b"CONTENT_LENGTH", "\u0663".encode())]), "not a length"),
    "name with space": (pack([GET, (b"HTTP X", b"1")]), "not visible ASCII"),
    "name with NUL": (pack([GET, (b"HTTP\x00X", b"1")]), "not visible ASCII"),
    "name non-ASCII": (pack([GET, (b"HTTP_\xc3\xa9", b"1")]), "not visible ASCII"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_packet_is_refused(name):
    data, reason = MALFORMED[name]
    for chunks in splits(data):
        parser = UwsgiParser()
        with pytest.raises(ProtocolError) as info:
            for chunk in chunks:
                parser.receive_data(chunk)
                drain(parser, [])
            parser.receive_data(b"")
            drain(parser, [])
        assert info.value.status is None
        assert reason in str(info.value)
        # Dead for good: the same error again, whatever arrives.
        parser.receive_data(encode_vars({"REQUEST_METHOD": "GET"}))
        with pytest.raises(ProtocolError) as again:
            parser.next_event()
        assert again.value is info.value


def test_body_over_limit_is_413():
    data = encode_vars({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "101"}) + b"x" * 101
    with pytest.raises(ProtocolError) as info:
        run([data], max_body_size=100)
    assert info.value.status == 413
    events = run(
        [encode_vars({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "100"}) + b"x" * 100],
        max_body_size=100,
    )
    assert events[1] == Data(b"x" * 100)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00",
        b"\x00\x10",
        b"\x00\x10\x00",
        pack([GET])[:-1],
        encode_vars({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "5"}) + b"abc",
    ],
    ids=["1 byte", "2 bytes", "3 bytes", "mid-vars", "mid-body"],
)
def test_eof_inside_a_message_is_refused(data):
    with pytest.raises(ProtocolError) as info:
        run([data])
    assert info.value.status is None


def test_incomplete_without_eof_needs_data():
    for data in (b"\x00\x10", pack([GET])[:-1]):
        parser = UwsgiParser()
        parser.receive_data(data)
        assert parser.next_event() is NEED_DATA


def test_oversized_datasize_fails_before_the_vars_arrive():
    parser = UwsgiParser(buffer_size=4096)
    parser.receive_data(struct.pack("<BHB", 0, 4097, 0))
    with pytest.raises(ProtocolError, match="buffer-size"):
        parser.next_event()


# --- response head -------------------------------------------------------------------------------


def test_response_head():
    head = frame_response(
        "GET", "200 OK", [("Content-Type", "text/plain"), ("X-É", "é")], None
    ).head
    assert head == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-\xc9: \xe9\r\n\r\n"
    assert frame_response("GET", "204 No Content", [], 0).head == b"HTTP/1.1 204 No Content\r\n\r\n"


# --- encode_vars ---------------------------------------------------------------------------------


def test_encode_vars_layout():
    packet = encode_vars({"A": "bc"}, modifier2=3)
    assert packet == b"\x00\x07\x00\x03" + b"\x01\x00A\x02\x00bc"


def test_encode_vars_refuses_what_cannot_be_framed():
    with pytest.raises(ValueError):
        encode_vars({"A": "x" * 65536})
    with pytest.raises(ValueError):
        encode_vars({"A": "x" * 40000, "B": "y" * 40000})
    with pytest.raises(UnicodeEncodeError):
        encode_vars({"PATH_INFO": "设"})


names = st.one_of(
    st.sampled_from(sorted(NGINX_VARS) + ["SCRIPT_NAME", "HTTPS", "HTTP_COOKIE"]),
    st.from_regex(r"HTTP_[A-Z0-9_]{1,20}", fullmatch=True),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30),
)
values = st.text(st.characters(max_codepoint=0xFF), max_size=60)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(names, values, max_size=20), st.binary(max_size=200))
def test_round_trip(vars_, body):
    vars_ = {k: v for k, v in vars_.items() if k != "CONTENT_LENGTH"}
    vars_["REQUEST_METHOD"] = "POST"
    vars_["CONTENT_LENGTH"] = str(len(body))
    events = run([encode_vars(vars_) + body], buffer_size=65535)
    request = events[0]
    want = {
        k: v
        for k, v in vars_.items()
        if not k.startswith("UWSGI_") and not (k == "CONTENT_TYPE" and v == "")
    }
    assert request.vars == want
    assert request.content_length == len(body)
    assert set(request.dropped) == {k for k in vars_ if k.startswith("UWSGI_")}
    assert merge_data(events[1:]) == ([Data(body)] if body else []) + [EndOfMessage(), PAUSED]
    # ... and back: the parsed vars encode to a packet that parses to the same vars.
    assert run([encode_vars(request.vars) + body], buffer_size=65535)[0].vars == request.vars


# --- fuzzing: nothing but ProtocolError, whatever arrives ---------------------------------------


def feed_all(chunks, **kwargs):
    """Events for `chunks` then EOF, or None when the parser refuses them."""
    try:
        return run([chunk for chunk in chunks if chunk], **kwargs)  # b"" would mean EOF
    except ProtocolError:
        return None


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=4096))
def test_fuzz_random_bytes(data, buffer_size):
    outcome = feed_all([data], buffer_size=buffer_size)
    if outcome is not None:
        assert outcome[-1] in (PAUSED, ConnectionClosed())


record = st.tuples(st.binary(max_size=12), st.binary(max_size=20))


@st.composite
def near_valid_packets(draw):
    """Packets close to valid: real-looking records, then mutations of sizes and bytes."""
    pairs = draw(st.lists(record, max_size=6))
    if draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), GET)
    if draw(st.booleans()):
        length = draw(st.sampled_from([b"", b"0", b"3", b"-1", b"+3", b"9" * 23, b"a"]))
        pairs.append((b"CONTENT_LENGTH", length))
    data = bytearray(pack(pairs, modifier1=draw(st.sampled_from([0, 0, 0, 1, 255]))))
    for _ in range(draw(st.integers(0, 3))):
        if data:
            index = draw(st.integers(0, len(data) - 1))
            data[index] = draw(st.integers(0, 255))
    data += draw(st.binary(max_size=10))
    if draw(st.booleans()) and data:
        del data[draw(st.integers(0, len(data) - 1)) :]
    return bytes(data)


@settings(max_examples=1000, deadline=None)
@given(near_valid_packets(), st.integers(min_value=0), st.sampled_from([None, 2]))
def test_fuzz_near_valid_packets_same_outcome_however_split(data, cut, max_body_size):
    whole = feed_all([data], max_body_size=max_body_size)
    cut %= len(data) + 1
    assert feed_all([data[:cut], data[cut:]], max_body_size=max_body_size) == whole
    byte_by_byte = [data[i : i + 1] for i in range(len(data))]
    assert feed_all(byte_by_byte, max_body_size=max_body_size) == whole


def read_vars_outcome(read, block):
    """The vars a reading makes of `block`, or the message of the error it raises."""
    try:
        return read(block, block.decode("latin-1"))
    except ProtocolError as exc:
        return str(exc)


@settings(max_examples=1000, deadline=None)
@given(st.lists(record, max_size=8), st.integers(min_value=0, max_value=200), st.booleans())
def test_fast_reading_of_vars_agrees_with_the_careful_one(pairs, cut, truncate):
    # The fast reading (no check per record) must give what the careful one gives, for
    # repeated, empty and invisible names and for blocks cut anywhere, whatever names it
    # has already learnt from earlier packets.
    block = pack(pairs)[4:]
    if truncate:
        block = block[: cut % (len(block) + 1)]
    careful = read_vars_outcome(UwsgiParser()._read_vars_carefully, block)
    assert read_vars_outcome(UwsgiParser()._read_vars, block) == careful
    assert read_vars_outcome(UwsgiParser()._read_vars, block) == careful  # names now learnt
