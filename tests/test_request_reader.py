"""The plain-request reader (parse_simple_request) against h11, the reader of every other request.

A request the plain reader accepts must be one h11 reads the same way: the same method, target,
version, headers (lower-case names, trimmed values), body and leftover bytes.  The table tests
say which requests are plain and why the others are not; the differential test mutates real
client requests byte by byte (seeded, so a failure repeats) and holds every acceptance to h11's
reading; the end-to-end tests drive the proxy over a socket with requests that take each path.
"""

from __future__ import annotations

import json
import random
import re
import socket
import time

import h11
import pytest

import ollama_proxy as op

BODY = b'{"model":"llama3.2","prompt":"hi","stream":false}'


def request(method=b"POST", target=b"/api/generate", headers=None, body=BODY, version=b"1.1"):
    if headers is None:
        headers = [b"Host: 127.0.0.1:11435", b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    return b"%s %s HTTP/%s\r\n%s\r\n%s" % (method, target, version, b"".join(h + b"\r\n" for h in headers), body)


def h11_reading(data):
    """(head, body or None while incomplete, leftover) as h11 reads ``data``; or "error"."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=op.MAX_HEAD_BYTES)
    try:
        conn.receive_data(data)
        event = conn.next_event()
        if type(event) is not h11.Request:
            return "none"
        head = op.RequestHead(event.method, event.target, list(event.headers), event.http_version)
        parts = []
        while True:
            event = conn.next_event()
            if type(event) is h11.Data:
                parts.append(bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                return head, b"".join(parts), conn.trailing_data[0]
            elif event is h11.NEED_DATA:
                return head, None, b""
            else:
                return "other"
    except h11.RemoteProtocolError:
        return "error"


# -- which requests are plain -----------------------------------------------------------

PLAIN = [
    ("a client library's JSON POST", request()),
    ("GET without a body", request(b"GET", b"/api/tags", [b"Host: x"], b"")),
    ("HTTP/1.0 without Host", request(b"GET", b"/", [b"User-Agent: curl"], b"", b"1.0")),
    ("an empty header value", request(headers=[b"Host: x", b"X-Empty:", b"Content-Length: %d" % len(BODY)])),
    ("whitespace around a value", request(headers=[b"Host:  \tx \t", b"Content-Length: %d" % len(BODY)])),
    ("obs-text in a value", request(headers=[b"Host: x", b"X-Name: caf\xe9 au lait", b"Content-Length: %d" % len(BODY)])),
    ("mixed-case names", request(headers=[b"HOST: x", b"content-LENGTH: %d" % len(BODY)])),
    ("an absolute-form target", request(target=b"http://x/api/generate")),
    ("a query and percent-escapes", request(b"GET", b"/api/tags?x=%20&y=1", [b"Host: x"], b"")),
    ("Connection: close", request(headers=[b"Host: x", b"Connection: close", b"Content-Length: %d" % len(BODY)])),
    ("Content-Length: 0", request(headers=[b"Host: x", b"Content-Length: 0"], body=b"")),
    ("two pipelined requests", request() + request(b"GET", b"/api/ps", [b"Host: x"], b"")),
]

NOT_PLAIN = [
    ("an incomplete head", b"POST /api/generate HTTP/1.1\r\nHost: x\r\n"),
    ("chunked", request(headers=[b"Host: x", b"Transfer-Encoding: chunked"], body=b"2\r\n{}\r\n0\r\n\r\n")),
    ("Expect: 100-continue", request(headers=[b"Host: x", b"Expect: 100-continue", b"Content-Length: %d" % len(BODY)])),
    ("Upgrade", request(b"GET", b"/", [b"Host: x", b"Connection: Upgrade", b"Upgrade: websocket"], b"")),
    ("CONNECT", request(b"CONNECT", b"x:443", [b"Host: x"], b"")),
    ("HTTP/1.1 without Host", request(b"GET", b"/", [b"User-Agent: curl"], b"")),
    ("two Host headers", request(b"GET", b"/", [b"Host: x", b"Host: y"], b"")),
    ("two Content-Length headers", request(headers=[b"Host: x", b"Content-Length: 2", b"Content-Length: 2"], body=b"{}")),
    ("a Content-Length list", request(headers=[b"Host: x", b"Content-Length: 2, 2"], body=b"{}")),
    ("a signed Content-Length", request(headers=[b"Host: x", b"Content-Length: +2"], body=b"{}")),
    ("a 19-digit Content-Length", request(headers=[b"Host: x", b"Content-Length: 0000000000000000002"], body=b"{}")),
    ("HTTP/2.0", request(b"GET", b"/", [b"Host: x"], b"", b"2.0")),
    ("HTTP/1.2", request(b"GET", b"/", [b"Host: x"], b"", b"1.2")),
    ("a bare LF ending a line", b"GET / HTTP/1.1\nHost: x\r\n\r\n"),
    ("a bare LF inside the head", b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n"),
    ("a bare CR", b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  continued\r\n\r\n"),
    ("a space before the colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"),
    ("a NUL in a value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n"),
    ("a control character in a value", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x0bb\r\n\r\n"),
    ("two spaces in the request line", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("a lower-case version", b"GET / http/1.1\r\nHost: x\r\n\r\n"),
    ("a leading empty line", b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("a head over MAX_HEAD_BYTES", request(b"GET", b"/", [b"Host: x", b"X-Big: " + b"a" * op.MAX_HEAD_BYTES], b"")),
]


@pytest.mark.parametrize("name,data", PLAIN, ids=[n for n, _ in PLAIN])
def test_plain_requests_read_as_h11_reads_them(name, data):
    simple = op.parse_simple_request(data)
    assert simple is not None and simple[1] is not None, name
    head, body, end = simple
    assert h11_reading(data) == (head, body, data[end:])


@pytest.mark.parametrize("name,data", NOT_PLAIN, ids=[n for n, _ in NOT_PLAIN])
def test_other_requests_are_left_to_h11(name, data):
    assert op.parse_simple_request(data) is None, name


def test_a_body_still_arriving_is_none_with_where_it_will_end():
    data = request()
    head, body, end = op.parse_simple_request(data[:-10])
    assert body is None and end == len(data)
    assert head == op.parse_simple_request(data)[0]


def test_the_head_fields():
    head, body, end = op.parse_simple_request(request(headers=[b"Host: x", b"X-A:  b c ", b"Content-Length: 2"], body=b"{}") + b"GET")
    assert head == op.RequestHead(b"POST", b"/api/generate", [(b"host", b"x"), (b"x-a", b"b c"), (b"content-length", b"2")], b"1.1")
    assert body == b"{}" and end == len(request(headers=[b"Host: x", b"X-A:  b c ", b"Content-Length: 2"], body=b"{}"))


# -- held to h11 on mutated requests ----------------------------------------------------

SEEDS = [
    request(),
    request(b"GET", b"/api/tags", [b"Host: 127.0.0.1:11435", b"Accept: */*", b"User-Agent: ollama-python/0.4"], b""),
    request(b"POST", b"/v1/chat/completions", [b"Host: x", b"Authorization: Bearer sk-1", b"Content-Type: application/json",
                                               b"Content-Length: 2", b"Connection: keep-alive"], b"{}"),
    request(b"GET", b"/", [], b"", b"1.0"),
    request(b"HEAD", b"/api/version", [b"Host: x"], b"") + request(b"GET", b"/", [b"Host: x"], b""),
    request(headers=[b"Host: x", b"Transfer-Encoding: chunked"], body=b"2\r\n{}\r\n0\r\n\r\n"),
]
ALPHABET = b"\r\n\t :,;0123456789aAzZ-_/%\x00\x0b\x7f\x80\xff\"(){}"


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op_ = rng.random()
        pos = rng.randrange(len(data) + 1)
        if op_ < 0.35:
            data[pos:pos] = bytes([rng.choice(ALPHABET)])
        elif op_ < 0.6 and data:
            del data[min(pos, len(data) - 1)]
        elif op_ < 0.8 and data:
            data[min(pos, len(data) - 1)] = rng.choice(ALPHABET)
        else:  # a line repeated: duplicate headers, an extra empty line
            lines = bytes(data).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


def test_every_request_the_plain_reader_takes_h11_reads_the_same():
    rng = random.Random(20261203)
    accepted = declined = 0
    for case in range(20000):
        data = mutate(rng, rng.choice(SEEDS))
        simple = op.parse_simple_request(data)
        if simple is None:
            declined += 1
            continue
        accepted += 1
        head, body, end = simple
        expected = h11_reading(data)
        assert expected != "error", "case %d: h11 refuses what the plain reader took: %r" % (case, data)
        if body is None:
            assert expected[0] == head and expected[1] is None, "case %d: %r" % (case, data)
        else:
            assert expected == (head, body, data[end:]), "case %d: %r" % (case, data)
    assert accepted > 2000 and declined > 2000  # both sides of the line were tried


# -- over a socket ------------------------------------------------------------------------


def exchange(port, *writes, pause=0.0):
    """Send ``writes`` (pausing between them), then read answers until the proxy closes or goes quiet."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        for i, data in enumerate(writes):
            if i and pause:
                time.sleep(pause)
            sock.sendall(data)
        sock.settimeout(1.5)
        got = b""
        while True:
            try:
                more = sock.recv(65536)
            except socket.timeout:
                break
            if not more:
                break
            got += more
        return got
    finally:
        sock.close()


def statuses(raw):
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


@pytest.fixture
def proxy_port(proxy):
    return proxy.port


def test_a_body_sent_after_its_head_is_read_with_it(proxy_port):
    data = request(headers=[b"Host: x", b"Content-Type: application/json", b"Content-Length: %d" % len(BODY)])
    head_len = data.index(b"\r\n\r\n") + 4
    raw = exchange(proxy_port, data[:head_len], data[head_len:head_len + 7], data[head_len + 7:], pause=0.05)
    assert statuses(raw) == [200]
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["done"] is True


def test_plain_chunked_and_plain_again_on_one_connection(proxy_port):
    chunked = request(headers=[b"Host: x", b"Transfer-Encoding: chunked"], body=b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY))
    raw = exchange(proxy_port, request() + chunked + request(b"GET", b"/api/version", [b"Host: x"], b""))
    assert statuses(raw) == [200, 200, 200]


def test_a_refused_head_is_answered_before_its_body_arrives(proxy_port):
    raw = exchange(proxy_port, request(target=b"**", headers=[b"Host: x", b"Content-Length: 100"], body=b"{}"))
    assert statuses(raw) == [400]


def test_a_pipelined_plain_request_waits_its_turn(proxy_port):
    raw = exchange(proxy_port, request() + request(b"GET", b"/api/tags", [b"Host: x"], b"") + request(b"GET", b"/nope", [b"Host: x"], b""))
    assert statuses(raw) == [200, 200, 404]


def test_eof_in_a_body_still_arriving_costs_only_that_request(proxy_port):
    data = request()
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    sock.sendall(data[:-5])
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(5)
    got = b""
    while True:
        more = sock.recv(65536)
        if not more:
            break
        got += more
    sock.close()
    assert statuses(got) in ([], [400])  # closed, or told the body was cut short; never served
    assert statuses(exchange(proxy_port, request())) == [200]  # the proxy goes on


def read_answer(sock, timeout=10.0):
    """One whole response (head and Content-Length body) from ``sock``."""
    sock.settimeout(timeout)
    got = b""
    while b"\r\n\r\n" not in got:
        more = sock.recv(65536)
        if not more:
            return got
        got += more
    head, _, rest = got.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(rest) < length:
        more = sock.recv(65536)
        if not more:
            break
        rest += more
    return head + b"\r\n\r\n" + rest


def split_body(data, into=5):
    """A request cut ``into`` bytes into its body: (the head and those bytes, the rest)."""
    cut = data.index(b"\r\n\r\n") + 4 + into
    return data[:cut], data[cut:]


def test_what_cannot_start_a_request_line_is_refused_at_once(fake, start_proxy):
    # A TLS hello sent to the plain-HTTP port: h11 refuses its first byte; no wait for --header-timeout.
    proxy = start_proxy(fake.url, "--header-timeout", "60")
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    assert statuses(read_answer(sock, timeout=10)) == [400]
    sock.close()


def test_the_rest_of_a_body_has_the_header_timeout_of_its_own(fake, start_proxy):
    # The head comes late in its --header-timeout and the body late in the next one: served.
    proxy = start_proxy(fake.url, "--header-timeout", "2")
    head_and_some, rest = split_body(request())
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    time.sleep(1.2)
    sock.sendall(head_and_some)
    time.sleep(1.2)
    sock.sendall(rest)
    assert statuses(read_answer(sock)) == [200]
    sock.close()


def test_a_refusal_before_the_body_reads_its_rest_and_keeps_the_connection(fake, start_proxy):
    # --api-key refuses the request from its head; the rest of its body, still arriving, is read
    # and dropped, so the next request on the connection starts where it should.
    proxy = start_proxy(fake.url, "--api-key", "k3y")
    head_and_some, rest = split_body(request())
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(head_and_some)
    time.sleep(0.3)
    sock.sendall(rest)
    assert statuses(read_answer(sock)) == [401]
    sock.sendall(request(headers=[b"Host: x", b"Authorization: Bearer k3y", b"Content-Length: %d" % len(BODY)]))
    assert statuses(read_answer(sock)) == [200]
    sock.close()


def test_shutdown_lets_a_request_whose_body_is_arriving_finish(fake, start_proxy):
    proxy = start_proxy(fake.url)
    head_and_some, rest = split_body(request())
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(head_and_some)
    time.sleep(0.3)  # the head is read; the body's rest is awaited
    proxy.loop.call_soon_threadsafe(proxy.app.request_shutdown)
    time.sleep(0.3)
    sock.sendall(rest)
    assert statuses(read_answer(sock)) == [200]
    sock.close()
