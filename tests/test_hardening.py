"""Hardening: what fuzzing, faulty upstreams and an attacker found (issue 10), each with its exact bytes.

Every test talks to the real proxy over real sockets; the upstream faults come from a raw-socket
scripted backend (``ScriptedUpstream``) or the fake Ollama.  ``exchange`` sends raw bytes and reads
until the proxy closes the connection (or a short quiet period passes), so a test can see both what
was answered and whether the connection was closed.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import h11
import pytest
from test_protocol import Client, chunk, hdr, ndjson_head

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}


def exchange(port: int, data: bytes, quiet: float = 1.0, limit: float = 10.0):
    """Send ``data``; read until the peer closes (closed=True) or nothing came for ``quiet`` seconds."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=limit)
    sock.sendall(data)
    got = b""
    closed = False
    deadline = time.monotonic() + limit
    sock.settimeout(quiet)
    try:
        while time.monotonic() < deadline:
            try:
                part = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not part:
                closed = True
                break
            got += part
    finally:
        sock.close()
    return got, closed


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1."), raw[:200]
    return int(raw.split(b" ", 2)[1])


def body_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


def sse_events(body: bytes) -> list:
    return [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]


def upstream_requests(upstream) -> list:
    return [r.split(b"\r\n", 1)[0] for r in upstream.received]


# -- 1. a translated stream whose backend breaks after its head ---------------------------------

OPENAI_STREAM = json.dumps({"model": "llama3.2", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.mark.parametrize(
    "after_head",
    [
        [None],  # closes
        [b"zz\r\nnot a chunk\r\n"],  # a bad chunk
        [b"5\r\n{\"a\":\r\n", None],  # half a line, then closes
    ],
    ids=["close", "bad-chunk", "half-line"],
)
def test_translated_stream_broken_before_first_line_has_a_status_line(scripted, start_proxy, after_head):
    """The 200 head goes out before the first upstream read, so the in-band error follows a real head."""
    upstream = scripted([ndjson_head()] + after_head)
    proxy = start_proxy(upstream.url, "--context-mode", "off", "--num-predict", "0")
    c = Client(proxy.port)
    c.request("POST", "/v1/chat/completions", OPENAI_STREAM)
    head, body = c.response()
    assert head.status_code == 200
    assert hdr(head, "content-type") == "text/event-stream"
    events = sse_events(body)
    assert events and "error" in events[-1], body
    assert b"data: [DONE]" not in body
    c.close()


def test_translated_stream_stalled_before_first_line_ends_in_band(scripted, start_proxy):
    """A backend that sends its head and then nothing: 200, then the error event after --request-timeout."""
    stall = threading.Event()
    upstream = scripted([ndjson_head(), stall])
    proxy = start_proxy(upstream.url, "--context-mode", "off", "--num-predict", "0", request_timeout=0.5)
    c = Client(proxy.port)
    c.request("POST", "/v1/chat/completions", OPENAI_STREAM)
    head, body = c.response()
    stall.set()
    assert head.status_code == 200
    assert "error" in sse_events(body)[-1]
    c.close()


# -- 2. a malformed upload never counts against the backend --------------------------------------

def test_chunked_upload_with_content_length_is_refused_and_backend_stays_healthy(fake, start_proxy):
    """Content-Length and Transfer-Encoding together: 400 and close, nothing sent upstream, backend healthy."""
    proxy = start_proxy(fake.url, "--scan-interval", "30")
    time.sleep(0.3)  # the first probe round
    before = len(fake.received)
    raw, closed = exchange(proxy.port, b"POST /api/blobs/sha256:" + b"0" * 64 + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert status_of(raw) == 400 and closed
    assert [r for r in fake.received[before:] if r.path.startswith("/api/blobs")] == []
    assert proxy.call(lambda: proxy.app.fleet.backends[0].healthy) is True
    c = Client(proxy.port)
    c.request("GET", "/api/tags")
    assert c.response()[0].status_code == 200
    c.close()


def test_upload_body_shorter_than_declared_is_the_clients_fault(fake, start_proxy):
    """A client that declares 40 bytes and leaves after 10: the backend is not marked unhealthy."""
    proxy = start_proxy(fake.url, "--scan-interval", "30")
    time.sleep(0.3)
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    sock.sendall(b"POST /api/blobs/sha256:" + b"1" * 64 + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n0123456789")
    time.sleep(0.2)
    sock.close()
    time.sleep(0.3)
    assert proxy.call(lambda: proxy.app.fleet.backends[0].healthy) is True


# -- 3. request smuggling and chunked framing -----------------------------------------------------

SMUGGLE_BODY = b"0\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n",
        b"Content-Length: 5\r\nTransfer-Encoding:\tchunked\r\n",
    ],
    ids=["cl-te", "te-cl", "te-folded", "te-tab"],
)
def test_both_framings_refused_and_connection_closed(scripted, start_proxy, framing):
    """RFC 9112 §6.1: Transfer-Encoding with Content-Length is answered 400 and the connection closed."""
    upstream = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    proxy = start_proxy(upstream.url)
    raw, closed = exchange(proxy.port, b"POST /api/version HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + SMUGGLE_BODY)
    assert status_of(raw) == 400 and closed
    assert raw.count(b"HTTP/1.1 ") == 1
    assert upstream.received == []


def test_chunk_size_over_the_body_limit_refused_at_once(fake, start_proxy):
    """A chunk announcing more than the JSON body limit: 413 at once, not after --header-timeout."""
    proxy = start_proxy(fake.url, header_timeout=30)
    started = time.monotonic()
    raw, closed = exchange(proxy.port, b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n{", quiet=5)
    assert status_of(raw) == 413 and closed
    assert time.monotonic() - started < 5
    assert b"too large" in body_of(raw)


def test_bare_lf_chunk_framing_gets_400(fake, proxy):
    raw, closed = exchange(proxy.port, b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\n{}\n0\n\n")
    assert status_of(raw) == 400 and closed
    assert b"malformed" in body_of(raw)


@pytest.mark.parametrize("value", [b"gzip", b"gzip, chunked", b"chunked, chunked", b"identity", b"x"])
def test_transfer_encoding_other_than_chunked_gets_400(fake, proxy, value):
    raw, closed = exchange(proxy.port, b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + value + b"\r\n\r\n0\r\n\r\n")
    assert status_of(raw) == 400 and closed


# -- 4. deeply nested JSON ---------------------------------------------------------------------

NESTED_BODIES = {
    "/api/chat": b'{"model":"llama3.2","stream":false,"messages":[{"role":"user","content":"hi"}],"options":{"x":%s}}',
    "/api/generate": b'{"model":"llama3.2","stream":false,"prompt":"hi","options":{"x":%s}}',
    "/api/embed": b'{"model":"nomic-embed-text","input":"hi","options":{"x":%s}}',
    "/v1/chat/completions": b'{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"x":%s}',
    "/api/show": b'{"model":"llama3.2","x":%s}',
}


@pytest.mark.parametrize("path", sorted(NESTED_BODIES))
@pytest.mark.parametrize("depth", [900, 5000, 100000])
def test_deeply_nested_json_gets_an_answer(fake, proxy, path, depth):
    """However deep: an answer (Ollama's, or the proxy's 400 when it cannot follow the nesting), the
    connection kept, and no traceback in the log.  Python cannot follow 100,000 levels: always 400."""
    body = NESTED_BODIES[path] % (b"[" * depth + b"]" * depth)
    c = Client(proxy.port)
    c.request("POST", path, body)
    head, answer = c.response()
    assert head.status_code in (200, 400), answer[:300]
    if head.status_code == 400:
        message = json.loads(answer)["error"]
        assert message and (depth < 100000 or "nested too deeply" in json.dumps(message))
    else:
        assert depth < 100000
    c.next_cycle()  # the connection is still good
    c.request("GET", "/api/version")
    assert c.response()[0].status_code == 200
    c.close()


def test_deeply_nested_json_never_logs_a_traceback(fake, proxy, caplog):
    with caplog.at_level(logging.INFO, logger="ollama_proxy"):
        for path, template in NESTED_BODIES.items():
            for depth in (900, 3000, 20000):
                c = Client(proxy.port)
                c.request("POST", path, template % (b"[" * depth + b"]" * depth))
                assert c.response()[0].status_code < 500
                c.close()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_refused_like_ollama(fake, proxy, constant):
    c = Client(proxy.port)
    c.request("POST", "/api/chat", b'{"model":"llama3.2","messages":[],"options":{"temperature":' + constant + b"}}")
    head, answer = c.response()
    assert head.status_code == 400
    assert b"invalid JSON" in answer
    c.close()


# -- 5. secrets never reach a log line ------------------------------------------------------

def test_authorization_with_illegal_byte_not_logged(fake, start_proxy, caplog):
    proxy = start_proxy(fake.url)
    logging.getLogger("ollama_proxy").setLevel(logging.DEBUG)
    with caplog.at_level(logging.DEBUG, logger="ollama_proxy"):
        raw, closed = exchange(proxy.port, b"GET /api/tags HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer S3cr3t-k3y\x00zz\r\n\r\n")
        raw2, _ = exchange(proxy.port, b"GET /api/tags HTTP/1.1\r\nHost: x\r\nx-api-key: S3cr3t-k3y\r\n Folded\x00\r\n\r\n")
        time.sleep(0.2)
    assert status_of(raw) == 400 and closed
    assert status_of(raw2) == 400
    assert b"S3cr3t" not in raw and b"S3cr3t" not in raw2
    assert caplog.records
    assert all("S3cr3t" not in r.getMessage() for r in caplog.records)


def test_backend_password_never_logged(start_proxy, caplog):
    """A backend URL's password is not in any line, even when the backend cannot be reached."""
    dead = socket.socket()  # bound, never listening: connections are refused, and no other test can take the port
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    proxy = start_proxy("http://user:hunter2pass@127.0.0.1:%d" % port)
    logging.getLogger("ollama_proxy").setLevel(logging.DEBUG)
    with caplog.at_level(logging.DEBUG, logger="ollama_proxy"):
        c = Client(proxy.port)
        c.request("GET", "/api/tags")
        head, body = c.response()
        c.close()
        time.sleep(0.2)
    assert head.status_code == 502
    assert b"hunter2" not in body
    assert all("hunter2" not in r.getMessage() for r in caplog.records)
    dead.close()


def test_config_error_does_not_echo_a_password(capsys):
    import ollama_proxy

    assert ollama_proxy.main(["--backend", "ftp://me:hunter2pass@host:1"]) == 2
    err = capsys.readouterr().err
    assert "scheme" in err and "hunter2" not in err


# -- 6. the API key is checked first, on the path the client sent ---------------------------------

@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /proxy-backend/%s/ HTTP/1.1",
        b"HEAD /proxy-backend/%s/ HTTP/1.1",
        b"GET /proxy-backend/nosuch/ HTTP/1.1",
        b"POST /proxy-context/bad/api/chat HTTP/1.1",
        b"GET /proxy-context/8192/ HTTP/1.1",
    ],
)
def test_api_key_checked_before_any_prefix(fake, start_proxy, request_line):
    proxy = start_proxy(fake.url, "--api-key", "k3y")
    if b"%s" in request_line:
        request_line = request_line % proxy.app.fleet.backends[0].name.encode()
    before = len(fake.received)
    raw, _ = exchange(proxy.port, request_line + b"\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert status_of(raw) == 401
    assert len(fake.received) == before


def test_api_key_root_still_open(fake, start_proxy):
    proxy = start_proxy(fake.url, "--api-key", "k3y")
    raw, _ = exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", quiet=0.3)
    assert status_of(raw) == 200


# -- 7. lenient parsing ------------------------------------------------------------------------

@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/9.9", b"HTTP/0.9", b"HTTP/3.0"])
def test_other_http_versions_get_505_and_close(scripted, start_proxy, version):
    """Go's net/http (Ollama's server) answers a major version other than 1 with 505 and closes."""
    upstream = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    proxy = start_proxy(upstream.url)
    raw, closed = exchange(proxy.port, b"GET /api/version " + version + b"\r\nHost: x\r\n\r\n")
    assert status_of(raw) == 505 and closed
    assert json.loads(body_of(raw)) == {"error": "unsupported protocol version"}
    assert upstream.received == []


def test_http_1_2_is_served_as_1_1_like_go(fake, proxy):
    """Go's http1ServerSupportsRequest takes any HTTP/1.x (ProtoMajor == 1): so does the proxy."""
    raw, _ = exchange(proxy.port, b"GET /api/version HTTP/1.2\r\nHost: x\r\n\r\n", quiet=0.3)
    assert raw.startswith(b"HTTP/1.1 200 ")


def test_http2_preface_refused(scripted, start_proxy):
    """``PRI * HTTP/2.0`` (an h2c preface): Go's server answers 400 and closes; never forwarded."""
    upstream = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    proxy = start_proxy(upstream.url)
    raw, closed = exchange(proxy.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert status_of(raw) == 400 and closed
    assert upstream.received == []


def test_connect_refused(scripted, start_proxy):
    upstream = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    proxy = start_proxy(upstream.url)
    raw, closed = exchange(proxy.port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert status_of(raw) == 405 and closed
    assert upstream.received == []


@pytest.mark.parametrize("target", [b"*", b"api/version", b"ftp://x/api/version", b"x:1"])
def test_odd_targets_refused(scripted, start_proxy, target):
    upstream = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    proxy = start_proxy(upstream.url)
    raw, _ = exchange(proxy.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n", quiet=0.3)
    assert status_of(raw) == 400
    assert upstream.received == []


def test_options_asterisk_answered_like_go(fake, proxy):
    raw, _ = exchange(proxy.port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", quiet=0.3)
    assert status_of(raw) == 200


def test_absolute_form_target_served_as_its_path(fake, proxy):
    """``POST http://x/api/chat`` is the same request as ``POST /api/chat``: the modifiers apply."""
    body = json.dumps(CHAT | {"stream": False}).encode()
    raw, _ = exchange(proxy.port, b"POST http://elsewhere:1/api/chat HTTP/1.1\r\nHost: elsewhere:1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
                      quiet=0.5)
    assert status_of(raw) == 200
    sent = fake.received[-1]
    assert sent.path == "/api/chat"
    assert sent.json["options"]["num_ctx"] > 0


# -- 8. a pooled connection poisoned by a lying backend ------------------------------------------

def test_bytes_arriving_after_a_complete_answer_poison_nothing(scripted, start_proxy):
    """Extra bytes that arrive a little after a complete Content-Length answer: that socket is not reused."""
    later = threading.Event()
    upstream = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", later,
                         b"HTTP/1.1 418 Teapot\r\nContent-Length: 5\r\n\r\nstale"])
    proxy = start_proxy(upstream.url)
    c = Client(proxy.port)
    c.request("GET", "/api/version")
    assert c.response() [0].status_code == 200
    later.set()
    time.sleep(0.3)
    c.next_cycle()
    c.request("GET", "/api/version")
    head, body = c.response()
    assert (head.status_code, body) == (200, b"ok")
    c.close()
    assert upstream.connections == 2


# -- 9. a native stream cut after its head by a bad chunk ------------------------------------------

def test_native_stream_bad_chunk_keeps_received_line_and_ends_in_band(scripted, start_proxy):
    line = b'{"model":"llama3.2","message":{"role":"assistant","content":"Hel"},"done":false}\n'
    upstream = scripted([ndjson_head() + chunk(line) + b"zz\r\nbroken\r\n"])
    proxy = start_proxy(upstream.url, "--context-mode", "off", "--num-predict", "0")
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps(CHAT).encode())
    head, body = c.response()
    assert head.status_code == 200
    got = [json.loads(x) for x in body.splitlines() if x.strip()]
    assert got[0]["message"]["content"] == "Hel"
    assert "error" in got[-1] and len(got) == 2
    c.close()


def test_native_stream_bad_chunk_after_head_in_a_later_read(scripted, start_proxy):
    line = b'{"model":"llama3.2","message":{"role":"assistant","content":"Hel"},"done":false}\n'
    pause = threading.Event()
    upstream = scripted([ndjson_head(), pause, chunk(line) + b"zz\r\nbroken\r\n"])
    proxy = start_proxy(upstream.url, "--context-mode", "off", "--num-predict", "0")
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps(CHAT).encode())
    head = c.head()
    pause.set()
    body = c.body()
    assert head.status_code == 200
    got = [json.loads(x) for x in body.splitlines() if x.strip()]
    assert got[0]["message"]["content"] == "Hel" and "error" in got[-1]
    c.close()


def test_h11_state_is_not_reached_by_any_of_these(fake, proxy):
    """After all that, a plain request on the same proxy still works."""
    c = Client(proxy.port)
    c.request("GET", "/api/version")
    assert c.response()[0].status_code == 200
    c.close()
    assert h11  # imported for the Client


# -- the pure pieces, table-tested alone ----------------------------------------------------------

import ollama_proxy as op  # noqa: E402


def _req(method: bytes = b"GET", target: bytes = b"/", version: bytes = b"1.1", headers=((b"host", b"x"),)) -> h11.Request:
    headers = list(headers)
    if not any(n == b"host" for n, _ in headers):
        headers.insert(0, (b"host", b"x"))
    return h11.Request(method=method, target=target, http_version=version, headers=headers, _parsed=True)


@pytest.mark.parametrize(
    "request_, expected",
    [
        (_req(), (b"/", 0, "")),
        (_req(version=b"1.0"), (b"/", 0, "")),
        (_req(version=b"1.2"), (b"/", 0, "")),  # Go: any HTTP/1.x
        (_req(version=b"2.0"), (b"", 505, "unsupported protocol version")),
        (_req(version=b"9.9"), (b"", 505, "unsupported protocol version")),
        (_req(version=b"0.9"), (b"", 505, "unsupported protocol version")),
        (_req(b"PRI", b"*", b"2.0"), (b"", 400, "HTTP/2 is not served here: this proxy speaks HTTP/1.1")),
        (_req(b"CONNECT", b"example.com:443"), (b"", 405, "CONNECT is not supported: this is not a tunnelling proxy")),
        (_req(b"POST", b"/api/chat", headers=[(b"content-length", b"5"), (b"transfer-encoding", b"chunked")]),
         (b"", 400, "a request with both Transfer-Encoding and Content-Length is refused (RFC 9112 §6.1)")),
        (_req(b"POST", b"/api/chat", headers=[(b"transfer-encoding", b"chunked")]), (b"/api/chat", 0, "")),
        (_req(target=b"http://host:1/api/chat?x=1"), (b"/api/chat?x=1", 0, "")),
        (_req(target=b"HTTPS://host"), (b"/", 0, "")),
        (_req(target=b"http://host?q"), (b"/?q", 0, "")),
        (_req(b"OPTIONS", b"*"), (b"", 200, "")),
        (_req(target=b"*"), (b"", 400, "the target * is only for OPTIONS")),
        (_req(target=b"api/chat"), (b"", 400, "the request target must be a path starting with /")),
        (_req(target=b"ftp://x/api/chat"), (b"", 400, "the request target must be a path starting with /")),
    ],
)
def test_check_request_head(request_, expected):
    assert op.check_request_head(request_) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("illegal header line: bytearray(b'Authorization: Bearer S3cr3t\\x00')", "illegal header line: bytearray(b'Authorization: <redacted>')"),
        ("bytearray(b'x-api-key:k3y')", "bytearray(b'x-api-key:<redacted>')"),
        ("Proxy-Authorization: Basic abc", "Proxy-Authorization: <redacted>"),
        ("backend 'http://me:pw@host:1/x': no", "backend 'http://me:<redacted>@host:1/x': no"),
        ("http://me@host:1/x", "http://me@host:1/x"),  # no password: nothing to hide
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_redact_secrets(text, expected):
    assert op.redact_secrets(text) == expected


@pytest.mark.parametrize(
    "data, expected",
    [(b'{"a": 1}', {"a": 1}), (b"\xef\xbb\xbf[1]", [1]), ('{"x": "\u00e9"}'.encode("utf-16"), {"x": "\u00e9"}), ("[2]", [2])],
)
def test_parse_json(data, expected):
    assert op.parse_json(data) == expected


@pytest.mark.parametrize("data", [b"NaN", b"[Infinity]", b'{"a": -Infinity}', b"[" * 200000 + b"]" * 200000, b"\xff", b"{"])
def test_parse_json_refuses_with_value_error(data):
    with pytest.raises(ValueError):
        op.parse_json(data)


def _chunked(data: bytes) -> h11.Connection:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + data)
    while conn.next_event() is not h11.NEED_DATA:
        pass
    return conn


@pytest.mark.parametrize(
    "data, budget, problem",
    [
        (b"5\r\nab", 100, None),
        (b"fffffff\r\nab", 100, 413),
        (b"5\r\nab", 2, 413),
        (b"2\n{}", 100, 400),
        (b"2\r\n{}\r\n", 100, None),
        (b"2\r\n{}\r\n0\r\nX-Trailer: a\n", 100, None),  # trailers may end in a bare LF (h11 takes them)
    ],
)
def test_chunk_framing_problem(data, budget, problem):
    found = op.chunk_framing_problem(_chunked(data), budget)
    assert (found.status if found is not None else None) == problem


# -- found by the fuzz test (tests/test_fuzz.py) ---------------------------------------------------

@pytest.mark.parametrize(
    "data, status",
    [
        (b"HEAD / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"HEAD * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"HEAD /api/tags HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"HEAD /api/tags HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 8000 + b"\r\n" * 1 + (b"X-More: " + b"b" * 8000 + b"\r\n") * 8 + b"\r\n", 431),
    ],
)
def test_head_refusals_get_their_status_without_a_body(fake, proxy, data, status):
    """A refused HEAD gets its status line and headers (no body, as HEAD wants), never a silent close."""
    raw, closed = exchange(proxy.port, data)
    assert status_of(raw) == status and closed
    assert body_of(raw) == b""


@pytest.mark.parametrize("body", [b'{"model":"llama3.2","prompt":"hi","stream":false,"context":["\\ud800",2,3]}',
                                  b'{"model":"llama3.2","prompt":"hi \xed\xa0\x80","stream":false}'])
def test_lone_surrogate_in_a_rewritten_body_is_sent_escaped(fake, proxy, body):
    """A body the proxy re-encodes that carries a lone surrogate goes up ASCII-escaped (Go reads U+FFFD)."""
    c = Client(proxy.port)
    c.request("POST", "/api/generate", body)
    head, answer = c.response()
    c.close()
    assert head.status_code in (200, 400), answer
    sent = fake.received[-1]
    assert sent.path == "/api/generate" and b"\\ud800" in sent.body and sent.body.isascii()


def test_options_asterisk_keeps_the_connection_for_a_pipelined_request(fake, proxy):
    raw, closed = exchange(proxy.port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nGET /api/version HTTP/1.1\r\nHost: x\r\n\r\n", quiet=0.5)
    assert raw.count(b"HTTP/1.1 200 ") == 2 and b'"version"' in raw


def test_generate_stream_with_a_long_context_array_is_not_called_broken(fake, proxy):
    """The final line of /api/generate carries ``context`` between ``done`` and the stats: kilobytes
    for a long prompt, so ``"done": true`` is far from the end of the body; no false error line."""
    c = Client(proxy.port)
    c.request("POST", "/api/generate", json.dumps({"model": "llama3.2", "prompt": "word " * 3000}).encode())
    head, body = c.response()
    c.close()
    got = [json.loads(x) for x in body.splitlines() if x.strip()]
    assert head.status_code == 200 and got[-1]["done"] is True and len(json.dumps(got[-1]["context"])) > 4096
    assert not any("error" in line for line in got)
