"""The benchmark's lean fake Ollama (tests/perf/fast_ollama.py): what the "direct" baseline answers."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time

import h11
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "perf"))

from fast_ollama import FastOllama  # noqa: E402


@pytest.fixture
def fast():
    with FastOllama() as server:
        yield server


def request(fake, method, path, body=None, headers=None, timeout=5.0):
    """One request on a fresh http.client connection: (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def ndjson(data):
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def test_fast_fake_basic(fast):
    """The benchmark's lean fake answers /, /api/version, chat/generate (streamed and not) and 404s."""
    assert request(fast, "GET", "/")[::2] == (200, b"Ollama is running")
    assert json.loads(request(fast, "GET", "/api/version")[2]) == {"version": "0.33.0"}
    status, headers, data = request(fast, "POST", "/api/chat", b'{"model":"llama3.2"}',
                                    {"X-Fake-Chunks": "3"})
    lines = ndjson(data)
    assert headers["content-type"] == "application/x-ndjson" and len(lines) == 4
    assert lines[-1]["done"] is True and lines[0]["message"]["content"] == "tok0 "
    status, headers, data = request(fast, "POST", "/api/generate",
                                    b'{"model":"llama3.2","stream": false}')
    assert json.loads(data)["response"] == "tok0 tok1 tok2 tok3 tok4 "
    assert request(fast, "GET", "/api/pull")[0] == 404
    assert fast.connections_accepted == 5


def test_fast_fake_answers_probes_and_show_as_the_faithful_fake_does(fast):
    """What a proxy's probes and metadata lookups ask, so the benchmark can run it with probes on."""
    from fake_ollama import FakeOllama
    with FakeOllama() as faithful:
        for method, path, body in (("GET", "/api/tags", None), ("GET", "/api/ps", None),
                                   ("POST", "/api/show", b'{"model":"llama3.2"}')):
            got, want = request(fast, method, path, body), request(faithful, method, path, body)
            assert got[0] == want[0] == 200 and got[1]["content-type"] == want[1]["content-type"]
            mine, theirs = json.loads(got[2]), json.loads(want[2])
            if path == "/api/tags":
                mine = [m for m in mine["models"] if m["name"] == "llama3.2:latest"]
                theirs = [m for m in theirs["models"] if m["name"] == "llama3.2:latest"]
            assert mine == theirs, path


def test_fast_fake_keep_alive_pipelined_and_delay(fast):
    """It keeps connections alive, answers pipelined requests in order, honours delays."""
    sock = socket.create_connection(("127.0.0.1", fast.port), timeout=5)
    req = (b"POST /api/chat HTTP/1.1\r\nHost: x\r\nX-Fake-Delay-Ms: 30\r\nX-Fake-Chunks: 2\r\n"
           b"Content-Length: 2\r\n\r\n{}")
    started = time.monotonic()
    sock.sendall(req + b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n")
    conn = h11.Connection(h11.CLIENT)
    for target in ("/api/chat", "/api/version"):
        conn.send(h11.Request(method="GET", target=target, headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                conn.start_next_cycle()
                break
        if target == "/api/chat":
            assert len(ndjson(body)) == 3 and time.monotonic() - started >= 0.09
        else:
            assert json.loads(body) == {"version": "0.33.0"}
    sock.close()
    assert fast.connections_accepted == 1
