"""The client-side response writer alone (section 3): ``response_head`` and ServerSide's
``start``/``body``/``end``, which write the responses the proxy sends to its clients.

h11 wrote them before and is the second source: for each request (method, HTTP version,
Connection) and response (status, fields), h11's server connection is given the same request
and sends the same response; the bytes and the keep-alive decision must be the same.
"""
from __future__ import annotations

import h11
import pytest

import ollama_proxy as op

REQUESTS = {
    "GET 1.1": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "HEAD 1.1": b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET 1.1 close": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "GET 1.1 keep-alive, Close": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n",
    "GET 1.0": b"GET / HTTP/1.0\r\n\r\n",
    "HEAD 1.0": b"HEAD / HTTP/1.0\r\n\r\n",
    "GET 1.0 keep-alive": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
}

RESPONSES = [
    # (status, headers, body pieces)
    (200, [(b"content-type", b"application/json"), (b"content-length", b"2")], [b"{}"]),
    (200, [(b"content-type", b"application/x-ndjson")], [b'{"a":1}\n', b'{"b":2}\n']),
    (200, [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")], [b"data: x\n\n", b""]),
    (404, [(b"content-length", b"0")], []),
    (204, [], []),
    (304, [(b"etag", b"1")], []),
    (200, [(b"content-length", b"5"), (b"connection", b"close")], [b"hello"]),
    (503, [(b"content-length", b"3"), (b"retry-after", b"1"), (b"connection", b"close")], [b"bye"]),
    (200, [(b"transfer-encoding", b"chunked"), (b"x-a", b"b")], [b"zz"]),
    (200, [(b"connection", b"keep-alive")], [b"k"]),
]


def h11_bytes(request, status, headers, pieces, reason):
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    event = conn.next_event()
    assert type(event) is h11.Request
    assert type(conn.next_event()) is h11.EndOfMessage
    out = conn.send(h11.Response(status_code=status, headers=list(headers), reason=reason))
    for piece in pieces:
        if event.method != b"HEAD" and status not in (204, 304):
            out += conn.send(h11.Data(data=piece))
    out += conn.send(h11.EndOfMessage()) or b""
    return out, conn.our_state is h11.MUST_CLOSE, event


def ready_side(request=REQUESTS["GET 1.1"]):
    """A ServerSide with only the writer's state (no stream), its request read by h11."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    side = op.ServerSide.__new__(op.ServerSide)
    side.h11 = conn
    side.response = op.RESPONSE_NOT_STARTED
    side.must_close = True
    side._continue_sent = False
    side._buffer, side._eof, side._body, side._body_left = b"", False, None, 0
    side.begin(conn.next_event())
    assert type(conn.next_event()) is h11.EndOfMessage
    return side


@pytest.mark.parametrize("name", list(REQUESTS))
@pytest.mark.parametrize("status,headers,pieces", RESPONSES)
def test_responses_are_written_as_h11_writes_them(name, status, headers, pieces):
    expected, h11_closes, request = h11_bytes(REQUESTS[name], status, headers, pieces, b"OK" if status == 200 else b"")
    head, framing, closes = op.response_head(status, list(headers), b"OK" if status == 200 else b"", request.method,
                                             request.http_version >= b"1.1", op.client_keeps_alive(request))
    side = ready_side(REQUESTS[name])
    out = side.start(status, list(headers), b"OK" if status == 200 else b"")
    assert out == head
    for piece in pieces:
        if request.method != b"HEAD" and status not in (204, 304):
            out += side.body(piece)
    out += side.end()
    assert out == expected
    assert closes == h11_closes == side.must_close
    assert side.h11 is None and side.next_cycle() == (not closes)  # the parser is dropped once the answer starts




def test_too_much_and_too_little_for_a_content_length_are_refused():
    side = ready_side()
    side.start(200, [(b"content-length", b"3")])
    with pytest.raises(h11.LocalProtocolError, match="Too much"):
        side.body(b"four")
    side.body(b"ab")
    with pytest.raises(h11.LocalProtocolError, match="Too little"):
        side.end()


def test_no_body_bytes_after_a_head_request():
    side = ready_side(REQUESTS["HEAD 1.1"])
    side.start(200, [(b"content-length", b"10")])
    with pytest.raises(h11.LocalProtocolError):
        side.body(b"x")
    assert side.end() == b""


def test_one_response_per_request():
    side = ready_side()
    side.start(200, [(b"content-length", b"0")])
    with pytest.raises(h11.LocalProtocolError, match="already started"):
        side.start(500, [(b"content-length", b"0")])
    side.end()
    with pytest.raises(h11.LocalProtocolError, match="no response body"):
        side.end()


def test_an_empty_piece_writes_no_empty_chunk():
    """An empty chunk would end a chunked body early (it is the last-chunk marker)."""
    side = ready_side()
    side.start(200, [(b"content-type", b"application/x-ndjson")])
    assert side.body(b"") == b""
    assert side.body(b"{}\n") == b"3\r\n{}\n\r\n"
    assert side.end() == b"0\r\n\r\n"
