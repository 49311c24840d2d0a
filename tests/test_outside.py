"""The defects found when the proxy was tried from outside (issue 11, items 4, 6 and 7).

Translation details are table tests built from Ollama's own unit tests and source at v0.33.0-rc2
(openai/openai_test.go, openai/openai.go, server/routes.go ShowHandler); the rest runs the real
proxy over real sockets against the fake Ollama or a raw scripted upstream.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import tracemalloc
import urllib.error
import urllib.request

import ollama_proxy as op
import pytest
from fake_ollama import Fault
from test_hardening import exchange, status_of
from test_protocol import Client, ndjson_head


def get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# -- 4. a backend is not healthy before a probe answered -----------------------------------------

def test_backend_whose_probe_hangs_is_not_reported_healthy(fake, start_proxy):
    """/api/tags hangs past the start: /__proxy/backends and /__proxy/health do not count it, as requests do not use it."""
    fake.add_fault(Fault(path="/api/tags", delay_before_headers=3.0, times=0))
    proxy = start_proxy(fake.url, "--scan-interval", "30", "--probe-timeout", "2")
    status, report = get_json(proxy.url + "/__proxy/backends")
    assert status == 200
    (backend,) = report["backends"]
    assert backend["healthy"] is False and backend["probed"] is False
    status, health = get_json(proxy.url + "/__proxy/health")
    assert (status, health) == (503, {"status": "down", "healthy_backends": 0})
    metrics = urllib.request.urlopen(proxy.url + "/__proxy/metrics", timeout=10).read().decode()
    assert 'ollama_proxy_backend_healthy{backend="%s"} 0' % backend["name"] in metrics


def test_backend_reported_healthy_once_its_probe_answered(fake, start_proxy):
    proxy = start_proxy(fake.url, "--scan-interval", "30")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not get_json(proxy.url + "/__proxy/backends")[1]["backends"][0]["healthy"]:
        time.sleep(0.05)
    assert get_json(proxy.url + "/__proxy/health") == (200, {"status": "ok", "healthy_backends": 1})


def test_without_probes_every_backend_counts_as_healthy(fake, start_proxy):
    proxy = start_proxy(fake.url)  # --scan-interval 0: nothing is probed
    assert get_json(proxy.url + "/__proxy/health") == (200, {"status": "ok", "healthy_backends": 1})


# -- 6. translation details, from Ollama's own tests ---------------------------------------------

def test_list_takes_the_id_from_model_before_name():
    """TestToListCompletionUsesModelIdentity."""
    tags = {"models": [
        {"name": "legacy-name:latest", "model": "namespace/exposed-model:latest", "modified_at": "2009-02-13T23:31:30Z"},
        {"name": "fallback-name:latest", "modified_at": "2009-02-13T23:31:30Z"},
    ]}
    assert op.models_to_openai(tags) == {"object": "list", "data": [
        {"id": "namespace/exposed-model:latest", "object": "model", "created": 1234567890, "owned_by": "namespace"},
        {"id": "fallback-name:latest", "object": "model", "created": 1234567890, "owned_by": "library"},
    ]}


def _events(data: bytes) -> list:
    return [json.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: {")]


def test_mixed_chunk_splits_thinking_then_content():
    """TestToStreamChunks_SplitsThinkingAndContent (and the finish chunk of FinishChunk)."""
    t = op.ChatStreamTranslator("m", "chatcmpl-1", False, clock=lambda: 1700000000.0)
    out = _events(t.feed({"model": "m", "created_at": "2023-11-14T22:13:20Z", "done": True, "done_reason": "stop",
                          "message": {"role": "assistant", "thinking": "step-by-step", "content": "final answer"}}))
    first, second, finish = (e["choices"][0] for e in out)
    assert first["delta"] == {"role": "assistant", "reasoning": "step-by-step"} and first["finish_reason"] is None
    assert second["delta"] == {"content": "final answer"} and second["finish_reason"] is None
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    assert {e["created"] for e in out} == {1700000000}


def test_mixed_chunk_sends_logprobs_only_on_the_first_part():
    """TestToStreamChunks_SplitSendsLogprobsOnlyOnFirstChunk."""
    t = op.ChatStreamTranslator("m", "chatcmpl-1", False)
    logprobs = [{"token": "tok", "logprob": -0.25}]
    out = _events(t.feed({"model": "m", "created_at": "2023-11-14T22:13:20Z", "done": False,
                          "message": {"role": "assistant", "thinking": "thinking", "content": "content"}, "logprobs": logprobs}))
    assert out[0]["choices"][0]["logprobs"] == {"content": logprobs}
    assert "logprobs" not in out[1]["choices"][0] or out[1]["choices"][0]["logprobs"] is None


@pytest.mark.parametrize("created_at", ["0001-01-01T00:00:00Z", None])
def test_zero_created_at_means_now(created_at):
    """toChunk / FinishChunk: a zero CreatedAt is time.Now()."""
    t = op.ChatStreamTranslator("m", "chatcmpl-1", False, clock=lambda: 1800000000.5)
    native = {"model": "m", "done": False, "message": {"role": "assistant", "content": "x"}}
    if created_at is not None:
        native["created_at"] = created_at
    (event,) = _events(t.feed(native))
    assert event["created"] == 1800000000
    assert op.native_chat_to_openai(dict(native, done=True), "m", "chatcmpl-1", now=1800000000.5)["created"] == 1800000000


def test_response_created_at_is_kept():
    """TestFinishChunk_UsesResponseCreatedAt."""
    t = op.ChatStreamTranslator("m", "chatcmpl-1", False, clock=lambda: 1900000000.0)
    out = _events(t.feed({"model": "m", "created_at": "2023-11-14T22:13:20Z", "done": True, "message": {"role": "assistant", "content": ""}}))
    assert {e["created"] for e in out} == {1700000000}


@pytest.mark.parametrize("effort", ["extreme", "HIGH", "none "])
def test_invalid_reasoning_effort_message_word_for_word(effort):
    """openai.thinkFromReasoningEffort's error, with Go's %q."""
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort}
    with pytest.raises(op.BadRequest) as info:
        op.openai_chat_to_native(body)
    assert info.value.message == ('invalid reasoning value: "%s" (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")'
                                  % effort)


@pytest.mark.parametrize("effort, think", [("none", False), ("minimal", "low"), ("low", "low"), ("medium", "medium"), ("high", "high"),
                                           ("max", "max"), ("xhigh", "max"), ("ultra", "max")])
def test_reasoning_effort_mapping(effort, think):
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "reasoning_effort": effort}
    assert op.openai_chat_to_native(body)["think"] == think


@pytest.mark.parametrize("name, shown", [("foo", "foo:latest"), ("Foo", "Foo:latest"), ("foo:7b", "foo:7b"), ("user/foo", "user/foo:latest"),
                                         ("library/foo", "foo:latest"), ("registry.ollama.ai/library/foo:1", "foo:1"),
                                         ("example.com/u/foo", "example.com/u/foo:latest")])
def test_display_model_is_ollamas_display_shortest(name, shown):
    assert op.display_model(name) == shown


def test_unknown_model_retrieve_404_as_ollama_words_it(fake, proxy):
    """/v1/models/<unknown> -> RetrieveMiddleware -> ShowHandler: ``model 'foo:latest' not found``, as the fake says."""
    for base in (proxy.url, fake.url):
        status, body = get_json(base + "/v1/models/foo")
        assert status == 404
        assert body["error"]["message"] == "model 'foo:latest' not found" and body["error"]["type"] == "not_found_error"
    assert get_json(proxy.url + "/v1/models/Llama3.2") == get_json(fake.url + "/v1/models/Llama3.2")


# -- 7. smaller ones ------------------------------------------------------------------------

BROKEN_TAGS = {"models": [
    {"name": "good:latest", "model": "good:latest", "modified_at": "2026-01-01T00:00:00Z", "size": 1, "digest": "d1", "details": {}},
    {"name": "half:latest", "model": "half:latest"},
    {"size": 3},
    "not an object",
]}


def test_one_backends_broken_tag_entries_repaired(scripted, start_proxy, caplog):
    body = json.dumps(BROKEN_TAGS).encode()
    upstream = scripted([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)])
    proxy = start_proxy(upstream.url)
    logging.getLogger("ollama_proxy").setLevel(logging.INFO)
    with caplog.at_level(logging.WARNING, logger="ollama_proxy"):
        status, tags = get_json(proxy.url + "/api/tags")
    assert status == 200
    assert [m["name"] for m in tags["models"]] == ["good:latest", "half:latest"]
    assert tags["models"][0] == BROKEN_TAGS["models"][0]
    assert tags["models"][1] == {"name": "half:latest", "model": "half:latest", "modified_at": "1970-01-01T00:00:00Z", "size": 0, "digest": "",
                                 "details": {}}
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "repaired" in warned and "dropped" in warned


def test_one_backends_good_tags_are_byte_for_byte(fake, proxy):
    direct = urllib.request.urlopen(fake.url + "/api/tags", timeout=10).read()
    through = urllib.request.urlopen(proxy.url + "/api/tags", timeout=10).read()
    assert through == direct


def _chat(proxy, num_ctx_requests: list) -> tuple:
    c = Client(proxy.port)
    c.request("POST", "/api/chat", json.dumps({"model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "hi"}]}).encode())
    head, body = c.response()
    c.close()
    return head.status_code, json.loads(body)


def test_a_crash_that_is_not_out_of_memory_is_not_retried_smaller(fake, start_proxy):
    fake.add_fault(Fault(path="/api/chat", status=500, error="llama-server process has terminated: exit status 2"))
    proxy = start_proxy(fake.url)
    status, body = _chat(proxy, [])
    assert status == 500 and body == {"error": "llama-server process has terminated: exit status 2"}
    chats = [r for r in fake.received if r.path == "/api/chat"]
    assert len(chats) == 1


def test_an_out_of_memory_load_is_retried_smaller(fake, start_proxy):
    fake.add_fault(Fault(path="/api/chat", status=500, error="llama-server process has terminated: exit status 1: CUDA error: out of memory"))
    proxy = start_proxy(fake.url)
    status, _ = _chat(proxy, [])
    assert status == 200
    sizes = [r.json["options"]["num_ctx"] for r in fake.received if r.path == "/api/chat"]
    assert sizes == [16384, 8192]


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_a_line_without_end_is_bounded(scripted, start_proxy, monkeypatch, path):
    """100 MB without a newline: the stream ends with the in-band error once the line passes the limit; memory stays bounded."""
    monkeypatch.setattr(op, "MAX_LINE_BYTES", 4 * 1024 * 1024)
    piece = b"x" * (1024 * 1024)
    script = [ndjson_head()] + [b"%x\r\n%s\r\n" % (len(piece), piece)] * 100 + [b"0\r\n\r\n"]
    upstream = scripted(script)
    proxy = start_proxy(upstream.url, "--context-mode", "off", "--num-predict", "0")
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    tracemalloc.start()
    try:
        c = Client(proxy.port)
        c.request("POST", path, json.dumps(body).encode())
        head, answer = c.response()
        c.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert head.status_code == 200
    assert len(answer) < 4096 and b"longer than" in answer, answer[:300]
    assert peak < 40 * 1024 * 1024, peak  # a few times the 4 MiB limit, never the 100 MB line


@pytest.mark.parametrize(
    "boundary, pieces, out",
    [
        (b"\n", [b"a\nb\n"], [b"a\nb\n"]),
        (b"\n", [b"a\nb", b"c\n"], [b"a\n", b"bc\n"]),
        (b"\n", [b"ab", b"cd", b"e\nf"], [b"", b"", b"abcde\n"]),
        (b"\n\n", [b"data: 1\n", b"\ndata: 2\n\n"], [b"", b"data: 1\n\ndata: 2\n\n"]),  # a boundary across two reads
        (b"\n\n", [b"data: 1\n\nda", b"ta: 2\n", b"\n"], [b"data: 1\n\n", b"", b"data: 2\n\n"]),
        (b"\n\n", [b"x\n\n\n\ny"], [b"x\n\n\n\n"]),
    ],
)
def test_line_splitter(boundary, pieces, out):
    splitter = op.LineSplitter(boundary, 1000)
    assert [splitter.feed(p) for p in pieces] == out


def test_line_splitter_bounded_and_flushed():
    splitter = op.LineSplitter(b"\n", 10)
    assert splitter.feed(b"12345") == b"" and splitter.held == 5
    assert splitter.flush() == b"12345" and splitter.held == 0
    splitter.feed(b"123456")
    with pytest.raises(op.LineTooLong):
        splitter.feed(b"789012")
    assert splitter.held == 0


def test_http_9_9_gets_505(fake, proxy):
    raw, closed = exchange(proxy.port, b"GET /api/tags HTTP/9.9\r\nHost: x\r\n\r\n")
    assert status_of(raw) == 505 and closed


def test_nothing_left_running(fake, proxy):
    """After a request the client abandons, nothing is left in flight (a guard for the tests above)."""
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n")
    sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and proxy.call(lambda: proxy.app.fleet.backends[0].in_flight):
        time.sleep(0.05)
    assert proxy.call(lambda: proxy.app.fleet.backends[0].in_flight) == 0
    assert threading.active_count() > 0


def test_own_answer_during_shutdown_says_connection_close(start_proxy):
    """Every head is built in one place, so the proxy's own answers (here a merged /api/tags that was
    waiting on a slow backend when SIGTERM came) carry ``Connection: close`` while shutting down, as
    relayed answers already did."""
    from fake_ollama import FakeOllama

    a, b = FakeOllama().start(), FakeOllama().start()
    try:
        b.add_fault(Fault(path="/api/tags", delay_before_headers=1.0))
        proxy = start_proxy([a.url, b.url], shutdown_grace=5.0)
        c = Client(proxy.port)
        c.request("GET", "/api/tags")
        time.sleep(0.3)
        proxy.loop.call_soon_threadsafe(proxy.app.request_shutdown)
        head, body = c.response()
        c.close()
        assert head.status_code == 200 and json.loads(body)["models"]
        assert (b"connection", b"close") in list(head.headers)
    finally:
        a.stop()
        b.stop()


def test_shutdown_leaves_no_client_connection_open(fake, start_proxy):
    """After shutdown, every client connection the proxy accepted is closed: kept-alive ones, and
    ones that arrive while it stops (a connection accepted in the last moments may have had no
    task yet, or no transport when the listener closed under it). A leftover socket showed up as a
    ResourceWarning, and as asyncio's Server._wakeup TypeError, in later tests."""
    import gc

    for _ in range(3):  # the race is a matter of timing: three shutdowns under a stream of connects
        proxy = start_proxy(fake.url)
        kept = []
        for _ in range(5):
            c = Client(proxy.port)
            c.request("GET", "/")
            c.response()
            kept.append(c)
        arriving: list = []

        def connect_while_stopping() -> None:
            end = time.monotonic() + 1.5
            while time.monotonic() < end:
                try:
                    arriving.append(socket.create_connection(("127.0.0.1", proxy.port), 0.2))
                except OSError:
                    return

        hammer = threading.Thread(target=connect_while_stopping)
        hammer.start()
        time.sleep(0.05)
        proxy.stop()
        hammer.join()
        assert not proxy.thread.is_alive()
        assert proxy.app.connections == set()
        for s in arriving + [c.sock for c in kept]:
            s.close()
        gc.collect()  # a leaked transport warns (an error under the test settings) when collected
