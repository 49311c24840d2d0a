"""The upstream codec alone: request heads, and ResponseParser, the small strict reader of
the backends' HTTP/1.1 responses (section 4).  Pure: no sockets.

h11, which read the responses before, is the second source here: every well-formed response
below is also read by an h11 client connection, and both must agree on the status, the fields,
the body and whether the connection can be kept.  Each response is fed whole and byte by byte.
"""
from __future__ import annotations

import h11
import pytest

import ollama_proxy as op


def read_all(parser, data, step=None, head_request=False):
    """Feed ``data`` (then EOF) in pieces of ``step`` bytes: (head, body, done, keep_alive)."""
    parser.start(head_request)
    pieces = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    pieces.append(b"")  # EOF
    head = None
    body = []
    done = False
    for piece in pieces:
        parser.feed(piece)
        if head is None:
            head = parser.read_head()
            if head is None:
                continue
        data_now, done = parser.read_body()
        body.append(data_now)
        if done:
            break
    return head, b"".join(body), done, parser.keep_alive


def h11_read(data, head_request=False):
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=b"HEAD" if head_request else b"GET", target=b"/", headers=[(b"host", b"x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    head, body = None, []
    while True:
        event = conn.next_event()
        if type(event) is h11.Response:
            head = event
        elif type(event) is h11.Data:
            body.append(bytes(event.data))
        elif type(event) is h11.EndOfMessage:
            break
        elif type(event) is h11.InformationalResponse:
            continue
        else:
            raise AssertionError(event)
    try:
        conn.start_next_cycle()
        keep = True
    except h11.LocalProtocolError:
        keep = False
    return head, b"".join(body), keep


WELL_FORMED = [
    # (name, bytes, head request, status, body, keep-alive)
    ("Ollama JSON", b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nDate: Thu, 03 Dec 2026 11:00:00 GMT\r\n"
     b"Content-Length: 15\r\n\r\n{\"status\":\"ok\"}", False, 200, b'{"status":"ok"}', True),
    ("Ollama NDJSON stream", b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"8\r\n{\"a\":1}\n\r\n8\r\n{\"b\":2}\n\r\n0\r\n\r\n", False, 200, b'{"a":1}\n{"b":2}\n', True),
    ("chunk extensions and a trailer", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5;name=value\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n", False, 200, b"hello", True),
    ("upper-case hex", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\n\r\n", False, 200, b"z" * 26, True),
    ("no reason phrase", b"HTTP/1.1 404\r\nContent-Length: 2\r\n\r\nno", False, 404, b"no", True),
    ("empty reason phrase", b"HTTP/1.1 500 \r\nContent-Length: 0\r\n\r\n", False, 500, b"", True),
    ("read until close", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", False, 200, b"all of it", False),
    ("Connection: close", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False, 200, b"ok", False),
    ("Connection: keep-alive, Close", b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok", False, 200, b"ok", False),
    ("HTTP/1.0", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False, 200, b"ok", False),
    ("HEAD with a length", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", True, 200, b"", True),
    ("204", b"HTTP/1.1 204 No Content\r\n\r\n", False, 204, b"", True),
    ("304", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", False, 304, b"", True),
    ("100 Continue first", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", False, 201, b"x", True),
    ("103 with fields first", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ny", False, 200, b"y", True),
    ("LF-only lines", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", False, 200, b"ok", True),
    ("spaces around values", b"HTTP/1.1 200 OK\r\nX-A:   padded  \t\r\nContent-Length:2\r\n\r\nok", False, 200, b"ok", True),
    ("obs-text in a value", b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\nContent-Length: 0\r\n\r\n", False, 200, b"", True),
    ("same Content-Length twice", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", False, 200, b"ok", True),
    ("an empty value", b"HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n", False, 200, b"", True),
    ("a body with a blank line in it", b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\na\r\n\r\nb", False, 200, b"a\r\n\r\nb", True),
]


@pytest.mark.parametrize("name,data,head_request,status,body,keep", WELL_FORMED, ids=[w[0] for w in WELL_FORMED])
@pytest.mark.parametrize("step", [None, 1, 7])
def test_well_formed_responses_read_as_h11_reads_them(name, data, head_request, status, body, keep, step):
    head, got_body, done, keep_alive = read_all(op.ResponseParser(), data, step, head_request)
    assert done
    assert (head.status_code, got_body, keep_alive) == (status, body, keep)
    theirs, their_body, their_keep = h11_read(data, head_request)
    assert head.status_code == theirs.status_code and head.reason == theirs.reason
    assert head.http_version == theirs.http_version
    assert head.headers == [(n, v) for n, v in theirs.headers]
    assert got_body == their_body
    if parser_framing(data, head_request) != op.BODY_UNTIL_CLOSE:
        # (h11 would start a next cycle after a body that ended with the connection; the proxy's
        # pool found such a socket at EOF later. The parser says at once that it cannot be kept.)
        assert keep_alive == their_keep


def parser_framing(data, head_request):
    parser = op.ResponseParser()
    parser.start(head_request)
    parser.feed(data)
    parser.read_head()
    return parser.framing


def test_fields_are_lower_case_and_values_trimmed():
    head = op.parse_response_head(b"HTTP/1.1 200 OK\r\nContent-TYPE:  text/plain \r\nX-Multi: a, b\r\n")
    assert head == op.ResponseHead(200, b"OK", [(b"content-type", b"text/plain"), (b"x-multi", b"a, b")], b"1.1")


def test_obsolete_line_folding_is_unfolded():
    head = op.parse_response_head(b"HTTP/1.1 200 OK\r\nX-Long: first\r\n  second\r\n\tthird\r\nContent-Length: 0\r\n")
    assert head.headers == [(b"x-long", b"first second third"), (b"content-length", b"0")]


def test_repeated_content_length_becomes_one_field():
    head = op.parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nX: y\r\nContent-Length: 3\r\n")
    assert head.headers == [(b"content-length", b"3"), (b"x", b"y")]


MALFORMED_HEADS = [
    (b"HTTP/2 200 OK\r\n", "status line"),
    (b"HTTP/1.1 20 OK\r\n", "status line"),
    (b"ICY 200 OK\r\n", "status line"),
    (b"<html>\r\n", "status line"),
    (b"HTTP/1.1 200 OK\r\nNo colon here\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\nX: a\rb\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\n folded first\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n", "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999999\r\n", "invalid Content-Length"),
]


@pytest.mark.parametrize("block,fragment", MALFORMED_HEADS)
def test_malformed_heads_are_refused(block, fragment):
    with pytest.raises(op.ResponseError, match=fragment):
        op.parse_response_head(block)


def test_a_secret_in_a_bad_line_is_not_quoted():
    with pytest.raises(op.ResponseError) as info:
        op.parse_response_head(b"HTTP/1.1 200 OK\r\nAuthorization : Bearer sk-secret\r\n")
    assert "sk-secret" not in str(info.value)


FRAMING_FAULTS = [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", "both Transfer-Encoding and Content-Length"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "switched protocols"),
]


@pytest.mark.parametrize("data,fragment", FRAMING_FAULTS)
def test_framing_faults_are_refused_at_the_head(data, fragment):
    parser = op.ResponseParser()
    parser.feed(data)
    with pytest.raises(op.ResponseError, match=fragment):
        parser.read_head()


BODY_FAULTS = [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", b"", "does not end in CRLF"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n", b"hello", "not followed by CRLF"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", b"hel", "mid-response"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"hello", "mid-response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", b"half", "mid-response \\(4 of 10 body bytes\\)"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", b"", "mid-response \\(0 of 10"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * (op.MAX_CHUNK_LINE + 10), b"", "chunk-size line over"),
]


@pytest.mark.parametrize("data,before,fragment", BODY_FAULTS)
def test_body_faults_hand_out_the_bytes_before_them_first(data, before, fragment):
    """The bytes before a fault (lines the client should still get) come out, then the fault."""
    parser = op.ResponseParser()
    parser.feed(data)
    parser.feed(b"")
    assert parser.read_head().status_code == 200
    got = b""
    with pytest.raises(op.ResponseError, match=fragment):
        while True:
            chunk, done = parser.read_body()
            assert not done
            got += chunk
    assert got == before


@pytest.mark.parametrize("data,fragment", [
    (b"", "before responding"),
    (b"HTTP/1.1 200 OK\r\nContent-", "in the middle of the response head"),
])
def test_eof_before_the_head_ends(data, fragment):
    parser = op.ResponseParser()
    if data:
        parser.feed(data)
        assert parser.read_head() is None
    parser.feed(b"")
    with pytest.raises(op.ResponseError, match=fragment):
        parser.read_head()


def test_a_head_over_the_limit_is_refused_before_it_ends():
    parser = op.ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * op.MAX_HEAD_BYTES)
    with pytest.raises(op.ResponseError, match="head over"):
        parser.read_head()


def test_a_trailer_over_the_limit_is_refused():
    parser = op.ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
    parser.read_head()
    assert parser.read_body() == (b"", False)
    with pytest.raises(op.ResponseError, match="trailer over"):
        for _ in range(op.MAX_HEAD_BYTES // 1000 + 2):
            parser.feed(b"X: " + b"t" * 1000 + b"\r\n")
            parser.read_body()


def test_bytes_after_a_response_are_trailing_and_kept():
    parser = op.ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
    parser.read_head()
    assert parser.read_body() == (b"ok", True)
    assert parser.trailing


def test_two_responses_in_a_row_on_one_parser():
    parser = op.ResponseParser()
    for body in (b"first", b"second!"):
        parser.start(False)
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert parser.read_head().status_code == 200
        assert parser.read_body() == (body, True)
        assert parser.keep_alive and not parser.trailing


def test_a_chunked_stream_comes_out_as_it_arrives():
    """Each read hands out what it completed, across chunk boundaries; nothing waits for the end."""
    parser = op.ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab")
    parser.read_head()
    assert parser.read_body() == (b"ab", False)
    parser.feed(b"cd\r\n3\r\nef")
    assert parser.read_body() == (b"cdef", False)
    parser.feed(b"g\r\n0\r\n\r")
    assert parser.read_body() == (b"g", False)
    parser.feed(b"\n")
    assert parser.read_body() == (b"", True)


@pytest.mark.parametrize("headers,framing", [
    ([(b"host", b"x"), (b"content-length", b"12")], 12),
    ([(b"host", b"x"), (b"transfer-encoding", b"chunked")], op.CHUNKED),
    ([(b"host", b"x")], op.NO_BODY),
])
def test_request_body_framing(headers, framing):
    assert op.request_body_framing(headers) == framing


def test_encode_request_head_is_parsed_back_by_h11():
    headers = [(b"host", b"127.0.0.1:11434"), (b"content-type", b"application/json"), (b"content-length", b"2"), (b"via", b"1.1 ollama-proxy")]
    data = op.encode_request_head(b"POST", b"/api/chat?x=1", headers) + b"{}"
    server = h11.Connection(h11.SERVER)
    server.receive_data(data)
    request = server.next_event()
    assert (request.method, request.target, list(request.headers)) == (b"POST", b"/api/chat?x=1", headers)
    assert bytes(server.next_event().data) == b"{}"
    assert type(server.next_event()) is h11.EndOfMessage
