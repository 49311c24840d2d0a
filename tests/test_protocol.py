"""Protocol tests over real sockets: the proxy between a byte-exact client and the fake Ollama.

The client side is h11 in client role over a plain socket (reading 10 bytes at a time where
partial parses matter) or raw bytes; the upstream is the fake Ollama, or a scripted upstream
for byte-exact failure cases.  Timeouts come from Config (tiny values), never from patching.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time

import h11
import pytest
from fake_ollama import Fault

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}


# -- a byte-exact client ------------------------------------------------------------------

class Client:
    """An h11 client connection over a real socket."""

    def __init__(self, port: int, recv_size: int = 65536, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = h11.Connection(h11.CLIENT)
        self.recv_size = recv_size

    def close(self) -> None:
        self.sock.close()

    def send(self, *events) -> None:
        self.sock.sendall(b"".join(self.conn.send(e) for e in events))

    def request(self, method: str, target: str, body: bytes | None = None, headers=None, chunked: bool = False) -> None:
        hdrs = [("host", "127.0.0.1")] + list(headers or [])
        if body is not None:
            hdrs.append(("transfer-encoding", "chunked") if chunked else ("content-length", str(len(body))))
        events = [h11.Request(method=method, target=target, headers=hdrs)]
        if body:
            if chunked:
                events += [h11.Data(data=body[i : i + 7]) for i in range(0, len(body), 7)]
            else:
                events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        self.send(*events)

    def next_event(self):
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(self.sock.recv(self.recv_size))

    def head(self) -> h11.Response:
        while True:
            event = self.next_event()
            if type(event) is h11.Response:
                return event
            assert type(event) is h11.InformationalResponse, event

    def body(self) -> bytes:
        data = b""
        while True:
            event = self.next_event()
            if type(event) is h11.EndOfMessage:
                return data
            data += event.data

    def response(self):
        """(Response, body) of the next response, skipping 1xx."""
        head = self.head()
        return head, self.body()

    def next_cycle(self) -> None:
        self.conn.start_next_cycle()


def hdr(response: h11.Response, name: str) -> str | None:
    for n, v in response.headers:
        if n == name.encode():
            return v.decode()
    return None


def recv_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            part = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return data
        if not part:
            return data
        data += part


def lines(body: bytes) -> list:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


# -- a scripted upstream for byte-exact failures -----------------------------------------------

class ScriptedUpstream:
    """Accepts connections and answers each request with a script of raw byte pieces.

    A piece that is a threading.Event is waited on (a pause the test releases); ``None``
    closes the connection.  ``received`` collects raw request bytes; ``closed`` is set when
    the peer closes a connection.
    """

    def __init__(self, script) -> None:
        self.script = script
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.received: list = []
        self.closed = threading.Event()
        self.connections = 0
        self._threads: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            data = b""
            while b"\r\n\r\n" not in data:
                part = sock.recv(65536)
                if not part:
                    return
                data += part
            self.received.append(data)
            for piece in self.script:
                if piece is None:
                    return
                if isinstance(piece, threading.Event):
                    if not self._wait(piece, sock):
                        return
                    continue
                try:
                    sock.sendall(piece)
                except OSError:  # the proxy closed it (e.g. gave up on an endless line)
                    self.closed.set()
                    return
            sock.settimeout(10)
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
            self.closed.set()

    def _wait(self, event: threading.Event, sock: socket.socket) -> bool:
        """Wait for ``event`` while draining the socket; False (and ``closed`` set) if the peer leaves."""
        deadline = time.monotonic() + 10
        while not event.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.closed.set()
                    return False
        return True

    def stop(self) -> None:
        self.listener.close()


def ndjson_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# -- pass-through ---------------------------------------------------------------------------

def test_passthrough_matches_direct(fake, proxy):
    """GET /api/tags through the proxy gives the same status and body as the fake directly."""
    direct = Client(fake.port)
    direct.request("GET", "/api/tags")
    d_head, d_body = direct.response()
    c = Client(proxy.port)
    c.request("GET", "/api/tags")
    head, body = c.response()
    assert head.status_code == d_head.status_code == 200
    assert json.loads(body) == json.loads(d_body)
    assert hdr(head, "content-type") == hdr(d_head, "content-type")
    assert proxy.app.token in hdr(head, "via")
    assert hdr(head, "x-ollama-proxy-backend") == "127.0.0.1:%d" % fake.port
    direct.close()
    c.close()


def test_upstream_request_headers(fake, proxy):
    """Host becomes the backend's host:port, Origin passes as is, Via is appended, hop-by-hop dropped."""
    c = Client(proxy.port)
    c.request("GET", "/api/version?x=1", headers=[("origin", "http://localhost:3000"), ("via", "1.1 other"),
                                                   ("connection", "keep-alive, x-hop"), ("x-hop", "1"), ("x-keep", "2")])
    head, _ = c.response()
    assert head.status_code == 200
    got = fake.received[-1]
    assert got.target == "/api/version?x=1"
    assert got.header("host") == "127.0.0.1:%d" % fake.port
    assert got.header("origin") == "http://localhost:3000"
    assert got.header("via").startswith("1.1 other, 1.1 ollama-proxy-" + proxy.app.token)
    assert got.header("x-hop") is None and got.header("x-keep") == "2"
    c.close()


def test_json_body_forwarded_byte_for_byte(fake, start_proxy):
    """A request the proxy does not need to change reaches the backend byte for byte."""
    proxy = start_proxy(fake.url, context_mode="off", num_predict=0)
    body = b'{"model":"llama3.2",  "prompt":"hi", "stream":false, "x":[1,2.50]}'
    c = Client(proxy.port)
    c.request("POST", "/api/generate", body)
    head, _ = c.response()
    assert head.status_code == 200
    assert fake.received[-1].body == body
    c.close()


def test_keepalive_reuses_both_sides(fake, proxy):
    """Three requests on one client connection use one upstream connection."""
    c = Client(proxy.port)
    for _ in range(3):
        c.request("GET", "/api/version")
        head, _ = c.response()
        assert head.status_code == 200
        c.next_cycle()
    ids = {r.conn_id for r in fake.received}
    assert len(fake.received) == 3 and len(ids) == 1
    c.close()


def test_pipelined_requests_answered_in_order(fake, proxy):
    """Two requests sent in one write get two responses, in order."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    req = b"POST /api/show HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
    a = json.dumps({"model": "llama3.2"}).encode()
    b = json.dumps({"model": "nomic-embed-text"}).encode()
    sock.sendall(req % (len(a), a) + req % (len(b), b))
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")]))
    conn.send(h11.EndOfMessage())
    archs = []
    for _ in range(2):
        body = b""
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(sock.recv(10))
                continue
            if type(ev) is h11.Data:
                body += ev.data
            if type(ev) is h11.EndOfMessage:
                break
        archs.append(json.loads(body)["model_info"]["general.architecture"])
        conn.start_next_cycle()
        conn.send(h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")]))
        conn.send(h11.EndOfMessage())
    assert archs == ["llama", "nomic-bert"]
    sock.close()


def test_chunked_request_body(fake, proxy):
    """A chunked request body arrives upstream whole, with a Content-Length."""
    body = json.dumps(dict(CHAT, stream=False)).encode()
    c = Client(proxy.port)
    c.request("POST", "/api/chat", body, chunked=True)
    head, resp = c.response()
    assert head.status_code == 200 and json.loads(resp)["done"] is True
    got = fake.received[-1]
    assert got.json["messages"] == CHAT["messages"] and got.header("content-length") == str(len(got.body))
    c.close()


def test_head_has_no_body_and_keeps_alive(fake, proxy):
    """HEAD / gets headers and no body, and the connection serves another request."""
    c = Client(proxy.port, recv_size=10)
    c.request("HEAD", "/")
    head, body = c.response()
    assert head.status_code == 200 and body == b""
    c.next_cycle()
    c.request("GET", "/")
    head, body = c.response()
    assert body == b"Ollama is running"
    c.close()


def test_upgrade_offer_is_ignored_and_keeps_alive(fake, proxy):
    """A request offering an Upgrade (h2c) is served as HTTP/1.1, and the connection then serves
    the next request: the proxy never switches protocols (found by the head fuzzer)."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
                 b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"Ollama is running"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    assert b"101" not in data.split(b"\r\n")[0]
    sock.close()


def test_http10_client(fake, proxy):
    """An HTTP/1.0 client gets a complete answer, and the connection is closed after it."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"GET /api/version HTTP/1.0\r\n\r\n")
    data = recv_all(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["version"]
    sock.close()


def test_http10_client_gets_stream(fake, proxy):
    """An HTTP/1.0 client gets a streamed answer close-delimited, every line intact."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    body = json.dumps(CHAT).encode()
    sock.sendall(b"POST /api/chat HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    data = recv_all(sock)
    head, _, payload = data.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    objs = lines(payload)
    assert objs[-1]["done"] is True and len(objs) == 6
    sock.close()


def test_expect_100_continue(fake, proxy):
    """A client that waits for 100 Continue gets it, then the final response."""
    body = json.dumps({"model": "llama3.2"}).encode()
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"POST /api/show HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 100")
    sock.sendall(body)
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")]))
    conn.send(h11.EndOfMessage())
    rest = first.split(b"\r\n\r\n", 1)[1]
    if rest:
        conn.receive_data(rest)
    status = None
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif type(ev) is h11.Response:
            status = ev.status_code
        elif type(ev) is h11.EndOfMessage:
            break
    assert status == 200
    assert fake.received[-1].header("expect") is None
    sock.close()


# -- bad input -------------------------------------------------------------------------------

def test_malformed_http_gets_400_and_close(fake, proxy):
    """Garbage instead of a request line gets 400 and the connection is closed."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"\x00\x01NOT HTTP\r\n\r\n")
    data = recv_all(sock)
    assert data.startswith(b"HTTP/1.1 400")
    assert b"connection: close" in data.lower()
    assert len(fake.received) == 0
    sock.close()


def test_huge_headers_get_431(fake, proxy):
    """A request head over 64 KiB gets 431."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n")
    data = recv_all(sock)
    assert data.startswith(b"HTTP/1.1 431")
    sock.close()


def test_oversized_json_body_gets_413(fake, proxy):
    """A declared body over 64 MiB gets 413 without being read, and nothing goes upstream."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{" % (64 * 1024 * 1024 + 1))
    data = recv_all(sock)
    assert data.startswith(b"HTTP/1.1 413")
    assert len(fake.received) == 0
    sock.close()


def test_oversized_chunked_body_gets_413(fake, start_proxy, monkeypatch):
    """A chunked body that grows past the limit gets 413 once it crosses it."""
    import ollama_proxy

    monkeypatch.setattr(ollama_proxy, "MAX_JSON_BODY", 1000)
    proxy = start_proxy(fake.url)
    c = Client(proxy.port)
    c.request("POST", "/api/chat", b"x" * 2000, chunked=True)
    head = c.head()
    assert head.status_code == 413
    assert len(fake.received) == 0
    c.close()


def test_invalid_json_gets_400_with_parser_message(fake, proxy):
    """A body that must be JSON and is not gets 400 with the parser's message, in Ollama's shape."""
    c = Client(proxy.port)
    c.request("POST", "/api/chat", b'{"model": ')
    head, body = c.response()
    assert head.status_code == 400
    assert "invalid JSON body" in json.loads(body)["error"] and "Expecting value" in json.loads(body)["error"]
    c.next_cycle()
    c.request("POST", "/v1/chat/completions", b"{nope")
    head, body = c.response()
    assert head.status_code == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
    c.close()


def test_header_timeout_drops_slow_client(fake, start_proxy):
    """A client that does not finish its head within --header-timeout is dropped."""
    proxy = start_proxy(fake.url, header_timeout=0.3)
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert recv_all(sock) == b""
    sock.close()


def test_idle_keepalive_connection_closed(fake, start_proxy):
    """An idle keep-alive connection is closed after --idle-timeout."""
    proxy = start_proxy(fake.url, idle_timeout=0.3)
    c = Client(proxy.port)
    c.request("GET", "/api/version")
    head, _ = c.response()
    assert head.status_code == 200
    assert recv_all(c.sock) == b""
    c.close()


# -- loops -----------------------------------------------------------------------------------

def test_own_token_in_via_gets_508(fake, proxy):
    """A request that already passed through this proxy gets 508 and never reaches the backend."""
    c = Client(proxy.port)
    c.request("GET", "/api/tags", headers=[("via", "1.1 ollama-proxy-" + proxy.app.token)])
    head, body = c.response()
    assert head.status_code == 508 and "loop" in json.loads(body)["error"]
    assert len(fake.received) == 0
    c.close()


def test_two_proxies_chain(fake, start_proxy):
    """Two different proxies can be chained: the answer comes through both, Via names both."""
    inner = start_proxy(fake.url)
    outer = start_proxy(inner.url)
    c = Client(outer.port)
    c.request("GET", "/api/version")
    head, _ = c.response()
    assert head.status_code == 200
    via = fake.received[-1].header("via")
    assert outer.app.token in via and inner.app.token in via
    c.close()


def test_proxy_pointing_at_itself_cannot_loop(fake, start_proxy):
    """A proxy whose backend reaches itself (through a second name) answers 508, not a hang."""
    import ollama_proxy

    proxy = start_proxy(fake.url)
    # Point the running proxy's backend at its own port, as a misconfigured tunnel would.
    spec = ollama_proxy.parse_backend("self=http://localhost:%d" % proxy.port)
    backend = proxy.app.fleet.backends[0]
    proxy.call(lambda: (setattr(backend, "spec", spec), setattr(backend, "pool", ollama_proxy.Pool(backend, 2.0))))
    c = Client(proxy.port)
    c.request("GET", "/api/tags")
    head, _ = c.response()
    assert head.status_code == 508
    c.close()


# -- upstream failures -----------------------------------------------------------------------

def test_connect_failure_502(start_proxy):
    """A backend that refuses connections gives 502 in Ollama's shape (OpenAI's on /v1)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proxy = start_proxy("http://127.0.0.1:%d" % port)
    c = Client(proxy.port)
    c.request("GET", "/api/tags")
    head, body = c.response()
    assert head.status_code == 502 and "cannot connect" in json.loads(body)["error"]
    c.next_cycle()
    c.request("POST", "/v1/chat/completions", json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}).encode())
    head, body = c.response()
    err = json.loads(body)["error"]
    assert head.status_code == 502 and err["type"] == "api_error" and "cannot connect" in err["message"]
    c.close()


def test_silent_backend_504(fake, start_proxy):
    """A backend that sends nothing for --request-timeout gives 504."""
    proxy = start_proxy(fake.url, request_timeout=0.3)
    fake.add_fault(Fault(path="/api/chat", delay_before_headers=5))
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps(dict(CHAT, stream=False)).encode())
    head, body = c.response()
    assert head.status_code == 504 and "sent nothing" in json.loads(body)["error"]
    c.close()


def test_backend_closing_before_response_502(fake, proxy):
    """A backend that closes without answering gives 502."""
    fake.add_fault(Fault(path="/api/tags", close_before_response=True))
    c = Client(proxy.port)
    c.request("GET", "/api/tags")
    head, body = c.response()
    assert head.status_code == 502 and "closed the connection" in json.loads(body)["error"]
    c.close()


def test_backend_garbage_502(fake, proxy):
    """A backend that answers with bytes that are not HTTP gives 502."""
    fake.add_fault(Fault(path="/api/tags", garbage=True))
    c = Client(proxy.port)
    c.request("GET", "/api/tags")
    head, _ = c.response()
    assert head.status_code == 502
    c.close()


def test_backend_error_status_passes_through(fake, proxy):
    """A 500 or 503 from the backend reaches the client unchanged (one backend: nothing to retry)."""
    fake.add_fault(Fault(path="/api/chat", status=503, error="server busy, please try again.  maximum pending requests exceeded"))
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps(CHAT).encode())
    head, body = c.response()
    assert head.status_code == 503 and json.loads(body)["error"].startswith("server busy")
    c.close()


def test_stream_broken_mid_way_ends_with_error_line(fake, proxy):
    """A backend that dies mid-stream: the client gets the lines sent, then one {"error"} line."""
    fake.add_fault(Fault(path="/api/chat", close_after=2))
    c = Client(proxy.port, recv_size=10)
    c.request("POST", "/api/chat", json.dumps(CHAT).encode())
    head, body = c.response()
    assert head.status_code == 200
    objs = lines(body)
    assert len(objs) == 3 and all("message" in o for o in objs[:2])
    assert "error" in objs[-1]
    c.close()


def test_stream_cut_mid_line_ends_on_a_line_boundary(scripted, start_proxy):
    """A backend that dies in the middle of a line: the partial line is dropped, the error is its own line."""
    upstream = scripted([ndjson_head(), chunk(b'{"done":false,"response":"a"}\n{"done":fa'), None])
    proxy = start_proxy(upstream.url, context_mode="off", num_predict=0)
    c = Client(proxy.port)
    c.request("POST", "/api/generate", json.dumps({"model": "m", "prompt": "x"}).encode())
    head, body = c.response()
    assert head.status_code == 200
    assert body.endswith(b"\n")
    objs = lines(body)
    assert objs[0] == {"done": False, "response": "a"} and "error" in objs[1] and len(objs) == 2
    c.close()


def test_stream_ending_without_done_is_a_failure(scripted, start_proxy):
    """A native stream that ends cleanly but without done:true gets an error line, not a fake success."""
    upstream = scripted([ndjson_head(), chunk(b'{"done":false,"response":"a"}\n'), b"0\r\n\r\n"])
    proxy = start_proxy(upstream.url, context_mode="off", num_predict=0)
    c = Client(proxy.port)
    c.request("POST", "/api/generate", json.dumps({"model": "m", "prompt": "x"}).encode())
    _, body = c.response()
    objs = lines(body)
    assert len(objs) == 2 and "without a final done" in objs[-1]["error"]
    c.close()


def test_sse_stream_broken_ends_with_error_event(scripted, start_proxy):
    """A /v1 stream that breaks ends with one SSE data event carrying an OpenAI-style error."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    upstream = scripted([head, chunk(b'data: {"id":"1","choices":[]}\n\ndata: {"id"'), None])
    proxy = start_proxy(upstream.url, context_mode="off", num_predict=0, translate=False)
    c = Client(proxy.port)
    c.request("POST", "/v1/chat/completions", json.dumps({"model": "m", "messages": [], "stream": True}).encode())
    _, body = c.response()
    events = [e for e in body.split(b"\n\n") if e]
    assert events[0] == b'data: {"id":"1","choices":[]}'
    err = json.loads(events[-1][len(b"data: "):])
    assert err["error"]["type"] == "api_error" and len(events) == 2
    c.close()


def test_stale_pooled_connection_is_replaced(scripted, start_proxy):
    """A pooled upstream socket that the backend closed is not used: the next request still succeeds."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    upstream = scripted([reply, None])  # answers, then closes without saying Connection: close
    proxy = start_proxy(upstream.url)
    for _ in range(3):
        c = Client(proxy.port)
        c.request("GET", "/api/version")
        head, body = c.response()
        assert head.status_code == 200 and body == b"ok"
        c.close()
    assert upstream.connections == 3


# -- streaming ---------------------------------------------------------------------------------

def test_each_line_reaches_client_before_the_next_is_produced(fake, proxy):
    """With the fake paused after k lines (k = 1, 2, 3), the client already holds all k lines."""
    for k in (1, 2, 3):
        gate = fake.gate()
        fake.add_fault(Fault(path="/api/chat", pause_after=k, gate=gate))
        c = Client(proxy.port, recv_size=10)
        c.request("POST", "/api/chat", json.dumps(CHAT).encode())
        assert c.head().status_code == 200
        assert gate.wait_reached(5)
        got = b""
        while got.count(b"\n") < k:  # would time out if the proxy held a line back
            event = c.next_event()
            assert type(event) is h11.Data
            got += event.data
        assert len(lines(got)) == k
        gate.release()
        rest = c.body()
        assert lines(got + rest)[-1]["done"] is True
        c.close()


def test_client_leaving_mid_stream_closes_upstream(fake, proxy):
    """When the client disconnects mid-stream, the proxy closes the upstream connection at once."""
    gate = fake.gate()
    fake.add_fault(Fault(path="/api/chat", pause_after=0, gate=gate))
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps(CHAT).encode())
    assert c.head().status_code == 200
    assert gate.wait_reached(5)
    c.close()
    fake.wait_for_requests(1)
    assert fake.wait_closed(fake.received[-1].conn_id, timeout=5)
    gate.release()


def test_client_leaving_during_cold_load_closes_upstream(fake, proxy):
    """A client that gives up while Ollama is still silent (loading) cancels the upstream request."""
    fake.add_fault(Fault(path="/api/chat", delay_before_headers=30))
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps(dict(CHAT, stream=False)).encode())
    deadline = time.monotonic() + 5
    while not any(r.path == "/api/chat" for r in fake.received) and time.monotonic() < deadline:
        time.sleep(0.01)  # the proxy reads /api/show first
    chat = [r for r in fake.received if r.path == "/api/chat"][-1]
    c.close()
    assert fake.wait_closed(chat.conn_id, timeout=5)


def test_heartbeat_sends_head_for_waiting_ndjson_stream(fake, start_proxy):
    """A stream still waiting after --heartbeat gets its 200 head early, and no filler bytes."""
    proxy = start_proxy(fake.url, heartbeat=0.2)
    gate = fake.gate()
    fake.add_fault(Fault(path="/api/chat", delay_before_headers=30))
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps(CHAT).encode())
    head = c.head()  # arrives while the fake is still silent
    assert head.status_code == 200 and hdr(head, "content-type") == "application/x-ndjson"
    assert hdr(head, "x-ollama-proxy-num-ctx") == "16384"  # the size the proxy chose is told early too
    fake.clear_faults()
    gate.release()
    c.close()


def test_heartbeat_then_answer_is_streamed(fake, start_proxy):
    """After an early head the backend's lines are relayed as usual, ending with done."""
    proxy = start_proxy(fake.url, heartbeat=0.2)
    fake.add_fault(Fault(path="/api/chat", delay_before_headers=0.8))
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps(CHAT).encode())
    head, body = c.response()
    objs = lines(body)
    assert head.status_code == 200 and objs[-1]["done"] is True and len(objs) == 6
    c.close()


def test_heartbeat_then_error_goes_in_band(fake, start_proxy):
    """When the backend fails after the early head, the error comes as the one NDJSON line."""
    proxy = start_proxy(fake.url, heartbeat=0.2)
    fake.add_fault(Fault(path="/api/chat", delay_before_headers=0.8, status=500, error="an error was encountered while running the model"))
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps(CHAT).encode())
    head, body = c.response()
    assert head.status_code == 200
    assert lines(body) == [{"error": "an error was encountered while running the model"}]
    c.close()


def test_heartbeat_sse_comments(fake, start_proxy):
    """A /v1 stream waiting for the model gets the SSE head and comment lines, then the events."""
    proxy = start_proxy(fake.url, heartbeat=0.2)
    fake.add_fault(Fault(path="/api/chat", delay_before_headers=1.0))  # the /v1 request reaches Ollama as /api/chat
    c = Client(proxy.port)
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    c.request("POST", "/v1/chat/completions", json.dumps(body).encode())
    head, data = c.response()
    assert head.status_code == 200 and hdr(head, "content-type") == "text/event-stream"
    assert data.startswith(b": ")
    assert data.rstrip().endswith(b"data: [DONE]")
    c.close()


def test_no_heartbeat_for_non_streaming(fake, start_proxy):
    """A non-streaming request gets no early head: the backend's real status comes through."""
    proxy = start_proxy(fake.url, heartbeat=0.2)
    fake.add_fault(Fault(path="/api/chat", delay_before_headers=0.6, status=404, error="model 'x' not found"))
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps(dict(CHAT, stream=False)).encode())
    head, _ = c.response()
    assert head.status_code == 404
    c.close()


# -- access control and options ------------------------------------------------------------------

def test_api_key(fake, start_proxy):
    """--api-key: 401 without the key; Bearer or x-api-key pass; the key is not forwarded; / is open."""
    proxy = start_proxy(fake.url, api_key="s3cret")
    c = Client(proxy.port)
    c.request("GET", "/api/tags")
    head, body = c.response()
    assert head.status_code == 401 and "API key" in json.loads(body)["error"]
    c.next_cycle()
    c.request("GET", "/api/tags", headers=[("authorization", "Bearer wrong")])
    assert c.response()[0].status_code == 401
    c.next_cycle()
    c.request("GET", "/api/tags", headers=[("authorization", "Bearer s3cret")])
    assert c.response()[0].status_code == 200
    assert fake.received[-1].header("authorization") is None
    c.next_cycle()
    c.request("GET", "/api/tags", headers=[("x-api-key", "s3cret")])
    assert c.response()[0].status_code == 200
    assert fake.received[-1].header("x-api-key") is None
    c.next_cycle()
    c.request("GET", "/")
    assert c.response()[0].status_code == 200
    c.next_cycle()
    c.request("OPTIONS", "/api/chat", headers=[("origin", "http://localhost"), ("access-control-request-method", "POST")])
    assert c.response()[0].status_code != 401
    c.next_cycle()
    c.request("POST", "/v1/chat/completions", b"{}")
    head, body = c.response()
    assert head.status_code == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    c.close()


def test_reject_streaming(fake, start_proxy):
    """--reject-streaming: a request that would stream gets 400; stream:false passes."""
    proxy = start_proxy(fake.url, reject_streaming=True)
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps(CHAT).encode())
    head, body = c.response()
    assert head.status_code == 400 and "stream" in json.loads(body)["error"]
    c.next_cycle()
    c.request("POST", "/api/chat", json.dumps(dict(CHAT, stream=False)).encode())
    assert c.response()[0].status_code == 200
    c.next_cycle()
    c.request("POST", "/v1/chat/completions", json.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]}).encode())
    assert c.response()[0].status_code == 200
    assert len([r for r in fake.received if r.path != "/api/show"]) == 2
    c.close()


def test_blob_upload_streams_upstream(fake, proxy):
    """POST /api/blobs/<digest> streams the body upstream (chunked) and the backend verifies it."""
    import hashlib

    data = b"GGUF" + bytes(range(256)) * 400
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    c = Client(proxy.port)
    c.request("POST", "/api/blobs/" + digest, data, chunked=True)
    head, _ = c.response()
    assert head.status_code == 201
    got = fake.received[-1]
    assert got.body == data and got.header("transfer-encoding") == "chunked"
    c.next_cycle()
    c.request("HEAD", "/api/blobs/" + digest)
    assert c.response()[0].status_code == 200
    c.close()


def test_basic_auth_toward_backend(fake, start_proxy):
    """user:password in the backend URL becomes Basic auth on every upstream request."""
    proxy = start_proxy("http://user:pa%%3Ass@127.0.0.1:%d" % fake.port)
    c = Client(proxy.port)
    c.request("GET", "/api/version", headers=[("authorization", "Bearer client-token")])
    assert c.response()[0].status_code == 200
    import base64

    assert fake.received[-1].header("authorization") == "Basic " + base64.b64encode(b"user:pa:ss").decode()
    c.close()


def test_many_concurrent_streams(fake, proxy):
    """Fifty concurrent streams all complete with every line."""
    results: list = []

    def one() -> None:
        c = Client(proxy.port)
        c.request("POST", "/api/chat", json.dumps(CHAT).encode(), headers=[("x-fake-chunks", "20")])
        _, body = c.response()
        results.append(len(lines(body)))
        c.close()

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [21] * 50


# -- regressions from review ---------------------------------------------------------------------

def test_cut_json_body_is_not_a_complete_200(scripted, start_proxy):
    """A chunked JSON (not NDJSON) answer cut mid-way reaches the client as a broken message, not a complete one."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n"
    upstream = scripted([head, chunk(b'{"model":"m","message":{"content":"' + b"x" * 5000), None])
    proxy = start_proxy(upstream.url, context_mode="off", num_predict=0)
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps(dict(CHAT, stream=False)).encode())
    assert c.head().status_code == 200
    with pytest.raises(h11.RemoteProtocolError):
        c.body()
    c.close()


def test_client_leaving_after_blob_upload_closes_upstream(scripted, start_proxy):
    """A client that leaves while the backend still works on its upload makes the proxy close the upstream."""
    hold = threading.Event()
    upstream = scripted([hold, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"])
    proxy = start_proxy(upstream.url)
    c = Client(proxy.port)
    c.request("POST", "/api/blobs/sha256:" + "0" * 64, b"z" * 1000, chunked=True)
    for _ in range(100):
        if upstream.received:
            break
        threading.Event().wait(0.05)
    c.close()
    assert upstream.closed.wait(5)
    hold.set()
    assert proxy.call(lambda: proxy.app.fleet.backends[0].in_flight) == 0


def test_backend_that_stops_reading_gives_504(start_proxy):
    """A backend that accepts but never reads a large body: 504 after --request-timeout, not a hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted: list = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    proxy = start_proxy("http://127.0.0.1:%d" % listener.getsockname()[1], request_timeout=0.5)
    c = Client(proxy.port)
    c.request("POST", "/api/embed", b"[" + b"1," * (10 * 1024 * 1024) + b"1]")
    head, _ = c.response()
    assert head.status_code == 504
    c.close()
    listener.close()
    for sock, _ in accepted:
        sock.close()


def test_client_that_stops_reading_is_dropped(fake, start_proxy):
    """A client that stops reading a long stream is dropped after --request-timeout; the backend is freed."""
    proxy = start_proxy(fake.url, request_timeout=0.5, num_predict=0)  # num_predict would end the stream early
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", proxy.port))
    body = json.dumps(dict(CHAT, messages=[{"role": "user", "content": "x"}])).encode()
    sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nX-Fake-Chunks: 200000\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    fake.wait_for_requests(2)
    chat = [r for r in fake.received if r.path == "/api/chat"][0]
    assert fake.wait_closed(chat.conn_id, timeout=10)
    for _ in range(100):
        if proxy.call(lambda: proxy.app.fleet.backends[0].in_flight) == 0:
            break
        threading.Event().wait(0.05)
    assert proxy.call(lambda: proxy.app.fleet.backends[0].in_flight) == 0
    sock.close()


def test_keepalive_head_bounded_by_header_timeout(fake, start_proxy):
    """On a kept-alive connection, a head that trickles in is dropped after --header-timeout, not --idle-timeout."""
    proxy = start_proxy(fake.url, header_timeout=0.3, idle_timeout=30)
    c = Client(proxy.port)
    c.request("GET", "/api/version")
    assert c.response()[0].status_code == 200
    c.sock.sendall(b"GET /api/version HTTP/1.1\r\n")
    c.sock.settimeout(5)
    assert c.sock.recv(100) == b""  # closed (a timeout here would raise): long before the 30 s idle timeout
    c.close()


def test_extra_bytes_after_a_response_are_not_served_to_the_next_request(scripted, start_proxy):
    """A backend that sends more than its Content-Length: that socket is not reused, so no answer is mixed up."""
    upstream = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 418 Teapot\r\nContent-Length: 5\r\n\r\nstale"])
    proxy = start_proxy(upstream.url)
    for _ in range(2):
        c = Client(proxy.port)
        c.request("GET", "/api/version")
        head, body = c.response()
        assert (head.status_code, body) == (200, b"ok")
        c.close()
    assert upstream.connections == 2


def test_via_in_any_header_line_is_checked(fake, proxy):
    """Our token in a second Via line still gives 508; several Via lines are all kept upstream."""
    c = Client(proxy.port)
    c.request("GET", "/api/tags", headers=[("via", "1.1 other"), ("via", "1.1 ollama-proxy-" + proxy.app.token)])
    assert c.response()[0].status_code == 508
    c.close()
    c = Client(proxy.port)
    c.request("GET", "/api/version", headers=[("via", "1.1 a"), ("via", "1.1 b")])
    assert c.response()[0].status_code == 200
    assert fake.received[-1].header("via").startswith("1.1 a, 1.1 b, 1.1 ollama-proxy-")
    c.close()


def test_reject_streaming_covers_create(fake, start_proxy):
    """--reject-streaming also refuses /api/create without stream:false (its small JSON body is read)."""
    proxy = start_proxy(fake.url, reject_streaming=True)
    c = Client(proxy.port)
    c.request("POST", "/api/create", json.dumps({"model": "mine", "from": "llama3.2"}).encode())
    assert c.response()[0].status_code == 400
    c.close()


def test_idle_pool_is_bounded(fake, proxy, monkeypatch):
    """A burst of concurrent requests leaves at most POOL_MAX_IDLE idle upstream sockets."""
    import ollama_proxy

    monkeypatch.setattr(ollama_proxy, "POOL_MAX_IDLE", 8)

    def one() -> None:
        c = Client(proxy.port)
        c.request("POST", "/api/chat", json.dumps(CHAT).encode(), headers=[("x-fake-delay-ms", "20")])
        c.response()
        c.close()

    threads = [threading.Thread(target=one) for _ in range(ollama_proxy.POOL_MAX_IDLE + 16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert 0 < proxy.call(lambda: len(proxy.app.fleet.backends[0].pool.idle)) <= ollama_proxy.POOL_MAX_IDLE
