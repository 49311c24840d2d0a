"""Self-test of tests/fake_ollama.py against shared/ollama-api.md.

Driven by independent peers: http.client, raw sockets with an h11 client, and the real
``ollama`` and ``openai`` client libraries.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import socket
import sys
import time
from pathlib import Path

import h11
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_ollama import (  # noqa: E402
    DEFAULT_MODELS,
    FakeModel,
    FakeOllama,
    Fault,
    go_decode_message,
    parse_go_duration,
)


@pytest.fixture
def fake():
    with FakeOllama() as server:
        yield server


# -- helpers ----------------------------------------------------------------------------------


def request(fake, method, path, body=None, headers=None, timeout=5.0):
    """One request on a fresh http.client connection: (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def ndjson(data):
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def sse(data):
    events = [e for e in data.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: "):] for e in events]


class H11Client:
    """A raw-socket HTTP client on h11, for byte-level and timing checks."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.conn = h11.Connection(h11.CLIENT)

    def send(self, method, target, body=b"", headers=()):
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        hdrs = [("host", "127.0.0.1"), ("content-length", str(len(body)))] + list(headers)
        self.sock.sendall(self.conn.send(h11.Request(method=method, target=target,
                                                     headers=hdrs)))
        if body:
            self.sock.sendall(self.conn.send(h11.Data(data=body)))
        self.sock.sendall(self.conn.send(h11.EndOfMessage()))

    def next_event(self, timeout=5.0):
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.sock.settimeout(timeout)
            self.conn.receive_data(self.sock.recv(65536))

    def response(self):
        event = self.next_event()
        assert isinstance(event, h11.Response), event
        return event

    def read_lines(self, n, timeout=5.0):
        """Read body data until at least n complete lines arrived."""
        buf = b""
        while buf.count(b"\n") < n:
            event = self.next_event(timeout)
            assert isinstance(event, h11.Data), event
            buf += event.data
        return buf.splitlines()

    def read_rest(self):
        buf = b""
        while True:
            event = self.next_event()
            if isinstance(event, h11.EndOfMessage):
                return buf
            buf += event.data

    def close(self):
        self.sock.close()


# -- basics -----------------------------------------------------------------------------------


def test_root_version_and_head(fake):
    """GET / says "Ollama is running" as text/plain; HEAD has no body; /api/version answers."""
    status, headers, body = request(fake, "GET", "/")
    assert (status, body) == (200, b"Ollama is running")
    assert headers["content-type"].startswith("text/plain")
    status, headers, body = request(fake, "HEAD", "/")
    assert (status, body, headers["content-length"]) == (200, b"", "17")
    status, headers, body = request(fake, "GET", "/api/version")
    assert status == 200 and json.loads(body) == {"version": "0.33.0"}
    assert headers["content-type"] == "application/json; charset=utf-8"


def test_unknown_path_404_wrong_method_405(fake):
    """Unknown paths get gin's plain 404, known paths with a wrong method 405 (HEAD /api/ps)."""
    assert request(fake, "GET", "/nope")[::2] == (404, b"404 page not found")
    assert request(fake, "GET", "/api/chat")[::2] == (405, b"405 method not allowed")
    assert request(fake, "HEAD", "/api/ps")[0] == 405
    assert request(fake, "GET", "/api/tags/")[0] == 301


def test_host_check_on_loopback(fake):
    """A loopback fake rejects an unknown Host with an empty 403, accepts localhost."""
    status, _, body = request(fake, "GET", "/api/version", headers={"Host": "api.example.com"})
    assert (status, body) == (403, b"")
    assert request(fake, "GET", "/api/version", headers={"Host": "localhost:11434"})[0] == 200


def test_tags_shape(fake):
    """/api/tags lists every model with a bare 64-hex digest, details and capabilities."""
    models = json.loads(request(fake, "GET", "/api/tags")[2])["models"]
    by_name = {m["name"]: m for m in models}
    assert set(by_name) >= {"llama3.2:latest", "qwen3:8b", "nomic-embed-text:latest",
                            "all-minilm:latest"}
    llama = by_name["llama3.2:latest"]
    assert llama["model"] == "llama3.2:latest"
    assert len(llama["digest"]) == 64 and not llama["digest"].startswith("sha256:")
    assert llama["details"]["context_length"] == 131072
    assert llama["capabilities"] == ["completion", "tools"]
    assert by_name["nomic-embed-text:latest"]["details"]["embedding_length"] == 768
    assert llama["modified_at"].endswith("Z")


def test_show_model_info_and_not_found(fake):
    """/api/show has the architecture key, <arch>.context_length and the 404 wording."""
    status, _, body = request(fake, "POST", "/api/show", {"model": "qwen3:8b"})
    show = json.loads(body)
    assert status == 200
    info = show["model_info"]
    assert info["general.architecture"] == "qwen3"
    assert info["qwen3.context_length"] == 40960
    assert info["qwen3.block_count"] == 36
    assert show["capabilities"] == ["completion", "tools", "thinking"]
    for key in ("modelfile", "parameters", "template", "details", "tensors", "modified_at"):
        assert key in show
    legacy = json.loads(request(fake, "POST", "/api/show", {"name": "nomic-embed-text"})[2])
    assert legacy["model_info"]["nomic-bert.embedding_length"] == 768
    assert legacy["model_info"]["nomic-bert.pooling_type"] == 1
    assert legacy["capabilities"] == ["embedding"]
    status, _, body = request(fake, "POST", "/api/show", {"model": "missing"})
    assert (status, json.loads(body)) == (404, {"error": "model 'missing:latest' not found"})
    status, _, body = request(fake, "POST", "/api/show", {})
    assert (status, json.loads(body)) == (400, {"error": "model is required"})


# -- chat and generate ------------------------------------------------------------------------


def test_chat_stream_ndjson(fake):
    """Chat streams NDJSON by default: partial lines done:false, then one final stats line."""
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hello there!"}]}
    status, headers, data = request(fake, "POST", "/api/chat", body)
    assert status == 200 and headers["content-type"] == "application/x-ndjson"
    assert headers["transfer-encoding"] == "chunked"
    lines = ndjson(data)
    assert len(lines) == 6
    assert [x["message"]["content"] for x in lines[:5]] == ["tok%d " % i for i in range(5)]
    assert all(x["done"] is False and x["model"] == "llama3.2" for x in lines[:5])
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["eval_count"] == 5 and final["prompt_eval_count"] == 3 + 10  # 12 chars + template
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int) and final[key] > 0
    assert final["created_at"].endswith("Z") and "." in final["created_at"]
    rec = fake.received[-1]
    assert rec.method == "POST" and rec.target == "/api/chat" and rec.json == body
    assert rec.header("Content-Length") == str(len(rec.body))


def test_chat_non_stream_and_num_predict(fake):
    """stream:false gives one JSON object; num_predict below the chunk count means "length"."""
    body = {"model": "llama3.2", "stream": False, "options": {"num_predict": 2},
            "messages": [{"role": "user", "content": "hi"}]}
    status, headers, data = request(fake, "POST", "/api/chat", body)
    assert headers["content-type"] == "application/json; charset=utf-8"
    obj = json.loads(data)
    assert obj["message"]["content"] == "tok0 tok1 "
    assert (obj["done"], obj["done_reason"], obj["eval_count"]) == (True, "length", 2)


def test_thinking_model_and_chunk_headers(fake):
    """qwen3 thinks by default (thinking lines first); X-Fake-Chunks sets the content lines."""
    body = {"model": "qwen3:8b", "messages": [{"role": "user", "content": "hi"}]}
    lines = ndjson(request(fake, "POST", "/api/chat", body, {"X-Fake-Chunks": "3"})[2])
    assert [x["message"].get("thinking") for x in lines[:2]] == ["think0 ", "think1 "]
    assert [x["message"]["content"] for x in lines[2:5]] == ["tok0 ", "tok1 ", "tok2 "]
    assert lines[-1]["eval_count"] == 5 and len(lines) == 6
    body["think"] = False
    lines = ndjson(request(fake, "POST", "/api/chat", body, {"X-Fake-Chunks": "0"})[2])
    assert len(lines) == 1 and "eval_count" not in lines[0]


def test_generate_context_load_unload(fake):
    """Generate carries context on the final object; an empty prompt loads or unloads."""
    lines = ndjson(request(fake, "POST", "/api/generate", {"model": "llama3.2", "prompt": "x"})[2])
    assert [x["response"] for x in lines] == ["tok0 ", "tok1 ", "tok2 ", "tok3 ", "tok4 ", ""]
    assert isinstance(lines[-1]["context"], list) and "context" not in lines[0]
    status, headers, data = request(fake, "POST", "/api/generate", {"model": "llama3.2"})
    obj = json.loads(data)
    assert (obj["done"], obj["done_reason"], obj["response"]) == (True, "load", "")
    assert "llama3.2:latest" in fake.loaded
    obj = json.loads(request(fake, "POST", "/api/generate",
                             {"model": "llama3.2", "keep_alive": 0})[2])
    assert obj["done_reason"] == "unload" and "llama3.2:latest" not in fake.loaded
    obj = json.loads(request(fake, "POST", "/api/chat", {"model": "qwen3:8b", "messages": []})[2])
    assert obj["done_reason"] == "load" and obj["message"] == {"role": "assistant", "content": ""}


def test_chat_and_generate_errors(fake):
    """The error catalogue: body, JSON, model, capability and keep_alive errors."""
    def err(path, body):
        status, headers, data = request(fake, "POST", path, body)
        assert headers["content-type"].startswith("application/json")
        return status, json.loads(data)["error"]

    assert err("/api/chat", b"") == (400, "missing request body")
    assert err("/api/chat", b"{x") == (
        400, "invalid character 'x' looking for beginning of object key string")
    assert err("/api/chat", b'{"model": "a",}')[0] == 400
    assert err("/api/chat", b"[1]") == (
        400, "json: cannot unmarshal array into Go value of type api.ChatRequest")
    assert err("/api/chat", {"messages": []}) == (400, "model is required")
    assert err("/api/generate", {"prompt": "x"}) == (404, "model '' not found")
    assert err("/api/chat", {"model": "nope", "messages": []}) == (404, "model 'nope' not found")
    assert err("/api/chat", {"model": "all-minilm", "messages": [{"role": "user"}]}) == (
        400, '"all-minilm" does not support chat')
    assert err("/api/generate", {"model": "all-minilm", "prompt": "x"}) == (
        400, '"all-minilm" does not support generate')
    assert err("/api/chat", {"model": "llama3.2", "think": True, "messages": []}) == (
        400, '"llama3.2" does not support thinking')
    assert err("/api/chat", {"model": "llama3.2", "keep_alive": "5", "messages": []}) == (
        400, 'time: missing unit in duration "5"')
    assert err("/api/chat", {"model": "llama3.2", "options": {"num_ctx": "8192"},
                             "messages": []}) == (500, 'option "num_ctx" must be of type integer')
    assert err("/api/chat", {"model": 5}) == (
        400, "json: cannot unmarshal number into Go struct field ChatRequest.model of type string")


def test_tools_on_model_without_tools():
    """tools on a model without the tools capability is a 400 with the full model name."""
    gemma = FakeModel("gemma2:2b", "gemma2", 8192, ["completion"])
    with FakeOllama(models=DEFAULT_MODELS + [gemma]) as fake:
        status, _, data = request(fake, "POST", "/api/chat", {
            "model": "gemma2:2b", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]})
        assert status == 400
        assert json.loads(data)["error"] == (
            "registry.ollama.ai/library/gemma2:2b does not support tools")


def test_ps_context_length_clamped(fake):
    """/api/ps shows loaded models with num_ctx (default 4096) clamped to the training context."""
    assert json.loads(request(fake, "GET", "/api/ps")[2]) == {"models": []}
    request(fake, "POST", "/api/chat", {"model": "llama3.2", "options": {"num_ctx": 8192},
                                        "messages": [{"role": "user", "content": "x"}]})
    request(fake, "POST", "/api/embed", {"model": "all-minilm", "input": "x",
                                         "options": {"num_ctx": 8192}})
    request(fake, "POST", "/v1/chat/completions", {
        "model": "qwen3:8b", "messages": [{"role": "user", "content": "x"}]})
    ps = {m["name"]: m for m in json.loads(request(fake, "GET", "/api/ps")[2])["models"]}
    assert ps["llama3.2:latest"]["context_length"] == 8192
    assert ps["all-minilm:latest"]["context_length"] == 512
    assert ps["qwen3:8b"]["context_length"] == 4096
    assert fake.loaded["llama3.2:latest"]["num_ctx"] == 8192
    assert fake.loaded["llama3.2:latest"]["automatic"] is False
    assert fake.loaded["qwen3:8b"]["num_ctx"] == 4096
    assert fake.loaded["qwen3:8b"]["automatic"] is True
    for entry in ps.values():
        assert entry["size_vram"] > 0 and entry["expires_at"].endswith("Z")


# -- scheduler: loads, reloads, out of memory ------------------------------------------------


def chat(fake, model="llama3.2", num_ctx=None, headers=None, **extra):
    """A streamed /api/chat with one message; options.num_ctx only when given."""
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    if num_ctx is not None:
        body["options"] = {"num_ctx": num_ctx}
    body.update(extra)
    return request(fake, "POST", "/api/chat", body, headers)


def load_summary(fake):
    return [(e["model"], e["num_ctx"], e["automatic"], e["reason"], e["ok"]) for e in fake.loads]


def ps_contexts(fake):
    return {m["name"]: m["context_length"]
            for m in json.loads(request(fake, "GET", "/api/ps")[2])["models"]}


def test_first_load_then_same_num_ctx_reuses(fake):
    """The first request loads; the same num_ctx again reuses the runner."""
    assert chat(fake, num_ctx=8192)[0] == 200
    assert load_summary(fake) == [("llama3.2:latest", 8192, False, "first load", True)]
    assert fake.load_count() == 1 and fake.reload_count() == 0
    assert fake.loads[0]["path"] == "/api/chat" and fake.loads[0]["replaced"] is False
    for _ in range(2):
        chat(fake, num_ctx=8192)
    request(fake, "POST", "/api/generate", {"model": "llama3.2", "prompt": "x",
                                            "options": {"num_ctx": 8192}})
    assert fake.load_count("llama3.2") == 1 and fake.reload_count("llama3.2:latest") == 0
    assert fake.loaded["llama3.2:latest"]["num_ctx"] == 8192


def test_different_num_ctx_reloads(fake):
    """A different explicit num_ctx reloads the runner; load_duration shows who loaded."""
    first = ndjson(chat(fake, num_ctx=8192)[2])[-1]
    again = ndjson(chat(fake, num_ctx=8192)[2])[-1]
    assert first["load_duration"] >= 500_000_000 > again["load_duration"]
    chat(fake, num_ctx=16384)
    assert load_summary(fake)[-1] == ("llama3.2:latest", 16384, False, "num_ctx changed", True)
    assert fake.loads[-1]["replaced"] is True
    assert fake.reload_count() == 1 and fake.load_count() == 2
    assert ps_contexts(fake) == {"llama3.2:latest": 16384}


def test_explicit_then_omitted_num_ctx_thrashes(fake):
    """Explicit 8192, then none (automatic 4096), then 8192 again: two reloads (#18129)."""
    chat(fake, num_ctx=8192)
    chat(fake)
    assert fake.loaded["llama3.2:latest"]["num_ctx"] == 4096
    assert fake.loaded["llama3.2:latest"]["automatic"] is True
    chat(fake, num_ctx=8192)
    assert load_summary(fake) == [
        ("llama3.2:latest", 8192, False, "first load", True),
        ("llama3.2:latest", 4096, True, "num_ctx changed", True),
        ("llama3.2:latest", 8192, False, "num_ctx changed", True)]
    assert fake.reload_count("llama3.2") == 2
    # /v1 is always automatic: it fights with the explicit native request too
    request(fake, "POST", "/v1/chat/completions", {
        "model": "llama3.2", "messages": [{"role": "user", "content": "x"}]})
    assert fake.reload_count() == 3 and fake.loads[-1]["path"] == "/v1/chat/completions"


def test_both_automatic_keep_loaded_value(fake):
    """Two requests without num_ctx never reload, even when the default changed meanwhile;
    an explicit num_ctx equal to the automatic value does not reload either."""
    chat(fake)
    fake.default_num_ctx = 8192
    chat(fake)
    request(fake, "POST", "/api/generate", {"model": "llama3.2"})  # a preload, automatic
    assert fake.load_count() == 1 and fake.loaded["llama3.2:latest"]["num_ctx"] == 4096
    chat(fake, num_ctx=4096)
    assert fake.load_count() == 1
    chat(fake)  # now automatic 8192 against an automatic runner: still no reload
    assert fake.load_count() == 1 and ps_contexts(fake) == {"llama3.2:latest": 4096}


def test_clamping_to_training_context_avoids_reload(fake):
    """num_ctx above the training context is clamped before comparing: no reload."""
    chat(fake, num_ctx=200000)
    chat(fake, num_ctx=131072)
    chat(fake, num_ctx=1 << 20)
    assert load_summary(fake) == [("llama3.2:latest", 131072, False, "first load", True)]
    request(fake, "POST", "/api/embed", {"model": "all-minilm", "input": "x",
                                         "options": {"num_ctx": 1024}})
    request(fake, "POST", "/api/embed", {"model": "all-minilm", "input": "x",
                                         "options": {"num_ctx": 4096}})
    request(fake, "POST", "/api/embed", {"model": "all-minilm", "input": "x"})  # auto 4096 -> 512
    assert load_summary(fake)[-1] == ("all-minilm:latest", 512, False, "first load", True)
    assert fake.load_count("all-minilm") == 1 and fake.loaded["all-minilm:latest"]["num_ctx"] == 512
    chat(fake, num_ctx=2)  # below 4 becomes 4
    assert fake.loaded["llama3.2:latest"]["num_ctx"] == 4


def test_modelfile_num_ctx(fake):
    """A Modelfile num_ctx is explicit; the request's num_ctx overrides it."""
    request(fake, "POST", "/api/embed", {"model": "nomic-embed-text", "input": "x"})
    assert load_summary(fake) == [("nomic-embed-text:latest", 2048, False, "first load", True)]
    assert fake.loaded["nomic-embed-text:latest"]["options"]["num_batch"] == 2048
    status, _, data = request(fake, "POST", "/api/create", {
        "model": "llama3.2-8k", "from": "llama3.2", "parameters": {"num_ctx": 8192},
        "stream": False})
    assert status == 200
    request(fake, "POST", "/api/generate", {"model": "llama3.2-8k", "prompt": "x"})
    assert load_summary(fake)[-1] == ("llama3.2-8k:latest", 8192, False, "first load", True)
    request(fake, "POST", "/api/generate", {"model": "llama3.2-8k", "prompt": "x",
                                            "options": {"num_ctx": 2048}})
    assert fake.loaded["llama3.2-8k:latest"]["num_ctx"] == 2048
    # created from llama3.2, so the same weights and slot: an equal num_ctx reuses the 8k tag's
    # runner, the automatic 4096 then replaces it
    chat(fake, num_ctx=2048)
    assert fake.reload_count("llama3.2") == 1 and "llama3.2-8k:latest" in fake.loaded
    chat(fake)
    assert list(ps_contexts(fake).items()) == [("llama3.2:latest", 4096),
                                               ("nomic-embed-text:latest", 2048)]
    assert fake.reload_count("llama3.2-8k") == 2


def test_two_tags_same_digest_share_a_slot():
    """Tags with the same digest share one runner: equal options reuse it, the Modelfile's
    num_ctx of one of them reloads on every switch."""
    base = next(m for m in DEFAULT_MODELS if m.name == "llama3.2:latest")
    alias = FakeModel("my-llama:latest", "llama", base.context_length, ["completion"],
                      digest=base.digest, block_count=base.block_count)
    big = FakeModel("llama-8k:latest", "llama", base.context_length, ["completion"],
                    digest=base.digest, parameters=[("num_ctx", 8192)])
    with FakeOllama(models=DEFAULT_MODELS + [alias, big]) as fake:
        chat(fake, "llama3.2")
        chat(fake, "my-llama")
        assert fake.load_count() == 1 and list(fake.loaded) == ["llama3.2:latest"]
        for name in ("llama-8k", "llama3.2", "llama-8k"):
            chat(fake, name)
        assert load_summary(fake)[1:] == [
            ("llama-8k:latest", 8192, False, "num_ctx changed", True),
            ("llama3.2:latest", 4096, True, "num_ctx changed", True),
            ("llama-8k:latest", 8192, False, "num_ctx changed", True)]
        assert fake.reload_count("my-llama") == 3 and fake.load_count("llama-8k") == 4
        assert ps_contexts(fake) == {"llama-8k:latest": 8192}
        obj = json.loads(request(fake, "POST", "/api/generate",
                                 {"model": "my-llama", "keep_alive": 0})[2])
        assert obj["done_reason"] == "unload" and fake.loaded == {}


def test_other_runner_options_reload(fake):
    """num_batch, num_gpu (not -1), use_mmap and shift changes reload; num_gpu -1 never does."""
    def last_reason(shift=None, **options):
        """Chat with these options; the reason of the last load and the load count."""
        body = {"model": "llama3.2", "messages": [{"role": "user", "content": "x"}],
                "options": options}
        if shift is not None:
            body["shift"] = shift
        assert request(fake, "POST", "/api/chat", body)[0] == 200
        return fake.loads[-1]["reason"], fake.load_count()

    assert last_reason(num_gpu=20) == ("first load", 1)
    assert last_reason(num_gpu=-1) == ("first load", 1)  # -1 (auto) matches any loaded value
    assert last_reason(num_gpu=99) == ("num_gpu changed", 2)
    assert last_reason(num_batch=512) == ("num_gpu changed", 2)  # equals the automatic 512
    assert last_reason(num_batch=1024) == ("num_batch changed", 3)
    assert last_reason() == ("num_batch changed", 4)  # automatic 512 vs explicit 1024
    assert last_reason(use_mmap=True) == ("num_batch changed", 4)  # the scheduler chose true
    assert last_reason(use_mmap=False) == ("use_mmap changed", 5)
    assert last_reason(num_thread=4, main_gpu=1) == (  # unset use_mmap vs an explicit one
        "main_gpu changed, num_thread changed, use_mmap changed", 6)
    assert last_reason(num_thread=4, main_gpu=1, shift=False) == ("shift changed", 7)
    assert fake.loaded["llama3.2:latest"]["options"] == {
        "num_batch": 512, "num_gpu": -1, "main_gpu": 1, "num_thread": 4, "use_mmap": True,
        "draft_num_predict": 0, "shift": False}


def test_oom_explicit_num_ctx_fails(fake):
    """Above oom_above an explicit num_ctx fails with 500 before any byte, even streaming; the
    model is then not loaded, and the runner it was to replace is gone."""
    fake.oom_above = 8192
    chat(fake, num_ctx=8192)
    status, headers, data = chat(fake, num_ctx=16384)
    assert status == 500 and headers["content-type"] == "application/json; charset=utf-8"
    error = json.loads(data)["error"]
    assert error.startswith("llama-server process has terminated: error:failed to allocate "
                            "buffer of size ") and error.endswith(" (kv cache)")
    assert fake.loaded == {} and ps_contexts(fake) == {}
    assert load_summary(fake) == [
        ("llama3.2:latest", 8192, False, "first load", True),
        ("llama3.2:latest", 16384, False, "num_ctx changed", False)]
    assert fake.loads[-1]["error"] == error and fake.reload_count() == 1
    chat(fake, num_ctx=8192)  # the proxy's retry: a first load again
    assert load_summary(fake)[-1] == ("llama3.2:latest", 8192, False, "first load", True)
    status, _, data = request(fake, "POST", "/api/generate", {"model": "llama3.2", "prompt": "",
                                                              "options": {"num_ctx": 10000}})
    assert status == 500 and "kv cache" in json.loads(data)["error"]
    status, _, data = request(fake, "POST", "/api/embed", {
        "model": "nomic-embed-text", "input": "x", "options": {"num_ctx": 8193}})
    assert status == 200  # clamped to 2048 first


def test_oom_automatic_num_ctx_retries_smaller_tier(fake):
    """An automatic num_ctx that runs out of memory is retried once with a smaller tier."""
    fake.default_num_ctx = 65536
    fake.oom_above = 40000
    assert chat(fake)[0] == 200
    assert load_summary(fake) == [("llama3.2:latest", 65536, True, "first load", False),
                                  ("llama3.2:latest", 32768, True, "oom retry", True)]
    assert ps_contexts(fake) == {"llama3.2:latest": 32768}
    chat(fake)  # both automatic: the 32768 runner stays
    assert fake.load_count() == 2 and fake.reload_count() == 0
    fake.default_num_ctx = 8192
    fake.oom_above = 6000
    request(fake, "POST", "/v1/chat/completions", {
        "model": "qwen3:8b", "messages": [{"role": "user", "content": "x"}]})
    assert load_summary(fake)[-2:] == [("qwen3:8b", 8192, True, "first load", False),
                                       ("qwen3:8b", 4096, True, "oom retry", True)]
    fake.default_num_ctx = 65536
    fake.oom_above = 20000  # a reload (num_gpu changed) at 40960, retried at 32768: both fail
    status, _, data = request(fake, "POST", "/api/generate", {
        "model": "qwen3:8b", "prompt": "x", "options": {"num_gpu": 1}})
    assert status == 500 and "kv cache" in json.loads(data)["error"]
    assert load_summary(fake)[-2:] == [("qwen3:8b", 40960, True, "num_gpu changed", False),
                                       ("qwen3:8b", 32768, True, "oom retry", False)]
    assert "qwen3:8b" not in fake.loaded and fake.reload_count("qwen3:8b") == 1
    fake.default_num_ctx = 4096
    fake.oom_above = 2048  # 4096 has no smaller tier
    status, _, data = request(fake, "POST", "/v1/chat/completions", {
        "model": "qwen3:8b", "messages": [{"role": "user", "content": "x"}], "stream": True})
    assert status == 500 and json.loads(data)["error"]["type"] == "api_error"
    assert fake.loads[-1]["num_ctx"] == 4096 and fake.loads[-1]["reason"] == "first load"


def test_ps_reports_effective_num_ctx(fake):
    """/api/ps: one entry per runner, context_length = effective num_ctx, expires_at order."""
    chat(fake, num_ctx=8192, keep_alive="1h")
    request(fake, "POST", "/api/embed", {"model": "all-minilm", "input": "x", "keep_alive": 60})
    request(fake, "POST", "/api/chat", {"model": "qwen3:8b", "messages": [], "keep_alive": -1})
    models = json.loads(request(fake, "GET", "/api/ps")[2])["models"]
    assert [(m["name"], m["context_length"]) for m in models] == [
        ("qwen3:8b", 4096), ("llama3.2:latest", 8192), ("all-minilm:latest", 512)]
    llama = models[1]
    assert llama["size"] == llama["size_vram"] == 2019393189 + 8192 * 28 * 4096
    assert llama["digest"] == DEFAULT_MODELS[0].digest
    assert abs(fake.loaded["llama3.2:latest"]["expires_at"] - time.time() - 3600) < 60
    assert math.isinf(fake.loaded["qwen3:8b"]["keep_alive"])
    chat(fake, num_ctx=8192)  # no keep_alive: the runner keeps its 1 h
    assert fake.loaded["llama3.2:latest"]["keep_alive"] == 3600


def test_keep_alive_zero_unloads(fake):
    """keep_alive 0 unloads after the answer; the next request is a first load, not a reload."""
    chat(fake, num_ctx=8192, keep_alive=0)
    assert fake.loaded == {}
    chat(fake, num_ctx=8192)
    assert "llama3.2:latest" in fake.loaded
    request(fake, "POST", "/api/chat", {"model": "llama3.2", "stream": False, "keep_alive": 0,
                                        "options": {"num_ctx": 8192},
                                        "messages": [{"role": "user", "content": "x"}]})
    assert fake.loaded == {}
    request(fake, "POST", "/api/embed", {"model": "all-minilm", "input": "x", "keep_alive": 0})
    request(fake, "POST", "/api/embeddings", {"model": "all-minilm", "prompt": "x",
                                              "keep_alive": "0s"})
    assert fake.loaded == {}
    assert [e["reason"] for e in fake.loads] == ["first load"] * 4 and fake.reload_count() == 0
    chat(fake)
    obj = json.loads(request(fake, "POST", "/api/chat", {"model": "llama3.2", "messages": [],
                                                         "keep_alive": 0})[2])
    assert obj["done_reason"] == "unload" and fake.loaded == {} and fake.load_count() == 5


def test_keep_alive_zero_unloads_when_client_leaves(fake):
    """A streamed answer cut off by the client still unloads a keep_alive 0 runner."""
    fault = fake.add_fault(Fault(path="/api/chat", pause_after=1))
    client = H11Client(fake.port)
    try:
        client.send("POST", "/api/chat", {"model": "llama3.2", "keep_alive": 0,
                                          "messages": [{"role": "user", "content": "x"}]})
        assert fault.gate.wait_reached(5.0)
        assert "llama3.2:latest" in fake.loaded
    finally:
        client.close()
    deadline = time.time() + 5
    while fake.loaded and time.time() < deadline:
        time.sleep(0.01)
    assert fake.loaded == {}


def test_prompt_eval_count_formula():
    """prompt_eval_count = ceil(chars / chars_per_token) + template_tokens, at least 1."""
    dense = FakeModel("dense:latest", "llama", 8192, ["completion"], chars_per_token=2.5,
                      template_tokens=3)
    embed = FakeModel("emb:latest", "bert", 64, ["embedding"], chars_per_token=2.0)
    with FakeOllama(models=DEFAULT_MODELS + [dense, embed]) as fake:
        body = {"model": "dense", "stream": False, "messages": [
            {"role": "system", "content": "abcde"}, {"role": "user", "content": "x" * 20}]}
        assert json.loads(request(fake, "POST", "/api/chat", body)[2])[
            "prompt_eval_count"] == 10 + 3
        tools = [{"type": "function", "function": {"name": "f", "strict": True}, "x": 1}]
        body["model"], body["tools"] = "llama3.2", tools
        bound = [{"type": "function", "function": {"name": "f", "parameters": {"type": "", "properties": None}}}]
        chars = 25 + len(json.dumps(bound, separators=(",", ":")))  # as api.Tools re-marshals them
        assert json.loads(request(fake, "POST", "/api/chat", body)[2])[
            "prompt_eval_count"] == -(-chars // 4) + 10
        gen = {"model": "dense", "prompt": "y" * 11, "system": "zz", "stream": False}
        assert json.loads(request(fake, "POST", "/api/generate", gen)[2])[
            "prompt_eval_count"] == 6 + 3
        gen.update(raw=True, system="")
        assert json.loads(request(fake, "POST", "/api/generate", gen)[2])[
            "prompt_eval_count"] == 5
        gen.update(raw=False, context=[1, 2, 3])
        assert json.loads(request(fake, "POST", "/api/generate", gen)[2])[
            "prompt_eval_count"] == 5 + 3 + 3
        done = json.loads(request(fake, "POST", "/v1/chat/completions", {
            "model": "dense", "messages": [{"role": "user", "content": "q" * 7}]})[2])
        assert done["usage"]["prompt_tokens"] == 3 + 3
        emb = json.loads(request(fake, "POST", "/api/embed", {
            "model": "emb", "input": ["abc", "", "d" * 200]})[2])
        assert emb["prompt_eval_count"] == 2 + 1 + 62  # the last one cut to 64 - 2 tokens


# -- embeddings -------------------------------------------------------------------------------


def test_embed_normalised_and_legacy_same_direction(fake):
    """/api/embed vectors are unit length; legacy nomic-bert is raw but points the same way."""
    status, _, data = request(fake, "POST", "/api/embed",
                              {"model": "nomic-embed-text", "input": ["hello", "world"]})
    embed = json.loads(data)
    assert status == 200 and embed["model"] == "nomic-embed-text"
    assert len(embed["embeddings"]) == 2 and len(embed["embeddings"][0]) == 768
    assert embed["prompt_eval_count"] == 4
    v = embed["embeddings"][0]
    assert abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5
    legacy = json.loads(request(fake, "POST", "/api/embeddings",
                                {"model": "nomic-embed-text", "prompt": "hello"})[2])["embedding"]
    norm = math.sqrt(sum(x * x for x in legacy))
    assert abs(norm - 1) > 0.5
    cosine = sum(a * b for a, b in zip(v, legacy)) / norm
    assert cosine > 0.9999
    minilm = json.loads(request(fake, "POST", "/api/embeddings",
                                {"model": "all-minilm", "prompt": "hello"})[2])["embedding"]
    assert abs(math.sqrt(sum(x * x for x in minilm)) - 1) < 1e-9
    again = json.loads(request(fake, "POST", "/api/embed",
                               {"model": "nomic-embed-text", "input": "hello"})[2])
    assert again["embeddings"][0] == v


def test_embed_edge_cases(fake):
    """Empty input loads; a bad input type is 400; an unknown model uses the embed wording."""
    assert json.loads(request(fake, "POST", "/api/embed", {"model": "all-minilm", "input": []})[2]
                      ) == {"model": "all-minilm", "embeddings": []}
    assert request(fake, "POST", "/api/embed", {"model": "all-minilm", "input": [1, 2]})[::2] == (
        400, b'{"error":"invalid input type"}')
    status, _, data = request(fake, "POST", "/api/embed", {"model": "zzz", "input": "x"})
    assert (status, json.loads(data)["error"]) == (
        404, 'model "zzz" not found, try pulling it first')
    dims = json.loads(request(fake, "POST", "/api/embed",
                              {"model": "all-minilm", "input": "x", "dimensions": 16})[2])
    assert len(dims["embeddings"][0]) == 16
    status, _, data = request(fake, "POST", "/api/embed", {
        "model": "all-minilm", "input": "word " * 1000, "truncate": False})
    assert (status, json.loads(data)["error"]) == (
        400, "the input length exceeds the context length")


# -- model management -------------------------------------------------------------------------


def test_blobs_copy_delete_pull_create(fake):
    """Blob upload checks the digest; copy/delete/create change /api/tags; pull streams."""
    import hashlib

    blob = b"gguf bytes"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    assert request(fake, "HEAD", "/api/blobs/" + digest)[0] == 404
    status, _, data = request(fake, "POST", "/api/blobs/sha256:" + "0" * 64, blob)
    assert status == 400 and json.loads(data)["error"].startswith("digest mismatch, expected")
    assert request(fake, "POST", "/api/blobs/" + digest, blob)[0] == 201
    assert request(fake, "HEAD", "/api/blobs/" + digest)[0] == 200
    assert request(fake, "POST", "/api/copy", {"source": "llama3.2", "destination": "mine"}
                   )[::2] == (200, b"")
    assert request(fake, "POST", "/api/copy", {"source": "nope", "destination": "x"})[0] == 404
    names = [m["name"] for m in json.loads(request(fake, "GET", "/api/tags")[2])["models"]]
    assert "mine:latest" in names
    assert request(fake, "DELETE", "/api/delete", {"model": "mine"})[::2] == (200, b"")
    assert request(fake, "DELETE", "/api/delete", {"model": "mine"})[2] == (
        b'{"error":"model \'mine:latest\' not found"}')
    pull = ndjson(request(fake, "POST", "/api/pull", {"model": "llama3.2"})[2])
    assert pull[0] == {"status": "pulling manifest"} and pull[-1] == {"status": "success"}
    failed = ndjson(request(fake, "POST", "/api/pull", {"model": "nope"})[2])
    assert "error" in failed[-1]
    create = ndjson(request(fake, "POST", "/api/create", {
        "model": "llama-8k", "from": "llama3.2", "parameters": {"num_ctx": 8192}})[2])
    assert create[-1] == {"status": "success"}
    show = json.loads(request(fake, "POST", "/api/show", {"model": "llama-8k"})[2])
    assert "num_ctx                        8192" in show["parameters"]
    request(fake, "POST", "/api/generate", {"model": "llama-8k"})
    ps = json.loads(request(fake, "GET", "/api/ps")[2])["models"]
    assert ps[0]["name"] == "llama-8k:latest" and ps[0]["context_length"] == 8192


# -- /v1 --------------------------------------------------------------------------------------


def test_v1_sse_shape(fake):
    """/v1 streaming: role first, a finish chunk with delta {}, the usage chunk, then [DONE]."""
    status, headers, data = request(fake, "POST", "/v1/chat/completions", {
        "model": "llama3.2", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}]}, {"X-Fake-Chunks": "2"})
    assert status == 200 and headers["content-type"] == "text/event-stream"
    events = sse(data)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "tok0 "}
    assert chunks[1]["choices"][0]["delta"] == {"content": "tok1 "}
    assert chunks[2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["completion_tokens"] == 2
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["created"] for c in chunks}) == 1 and "usage" not in chunks[0]


def test_v1_errors_openai_shape(fake):
    """/v1 errors use {"error": {message, type, param, code}}; fault statuses too."""
    status, _, data = request(fake, "POST", "/v1/chat/completions", {
        "model": "x", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 404 and json.loads(data) == {"error": {
        "message": "model 'x' not found", "type": "not_found_error", "param": None,
        "code": None}}
    status, _, data = request(fake, "POST", "/v1/chat/completions", {"model": "x",
                                                                     "messages": []})
    assert status == 400 and json.loads(data)["error"]["type"] == "invalid_request_error"
    fake.add_fault(Fault(path="/v1/*", status=503, error="busy"))
    status, _, data = request(fake, "GET", "/v1/models")
    assert status == 503 and json.loads(data)["error"]["type"] == "api_error"


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "d",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
PLAIN_TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {}}}}


def test_native_tool_call(fake):
    """tools on a tools model: one call to the first tool in the final done object."""
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "weather?"}],
            "tools": [WEATHER_TOOL, PLAIN_TOOL]}
    lines = ndjson(request(fake, "POST", "/api/chat", body)[2])
    assert len(lines) == 1 and lines[0]["done"] is True and lines[0]["done_reason"] == "stop"
    message = lines[0]["message"]
    assert message["content"] == "" and list(message) == ["role", "content", "tool_calls"]
    (call,) = message["tool_calls"]
    assert call["function"] == {"index": 0, "name": "get_weather",
                                "arguments": {"city": "x"}}
    assert len(call["id"]) == 13 and call["id"].startswith("call_")
    assert call["id"][5:].isalnum() and call["id"][5:] == call["id"][5:].lower()
    assert lines[0]["eval_count"] == 5
    whole = json.loads(request(fake, "POST", "/api/chat", dict(body, stream=False))[2])
    assert whole["message"]["tool_calls"] == [call]  # same request, same id
    other = json.loads(request(fake, "POST", "/api/chat", dict(
        body, stream=False, tools=[PLAIN_TOOL]))[2])
    assert other["message"]["tool_calls"][0]["function"]["arguments"] == {"location": "Paris"}
    assert other["message"]["tool_calls"][0]["id"] != call["id"]
    # a thinking model thinks first; num_predict below the call's cost gives plain cut text
    think = ndjson(request(fake, "POST", "/api/chat", dict(body, model="qwen3:8b"))[2])
    assert [bool(x["message"].get("thinking")) for x in think] == [True, True, False]
    assert think[-1]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    cut = json.loads(request(fake, "POST", "/api/chat", dict(
        body, stream=False, options={"num_predict": 3}))[2])
    assert cut["done_reason"] == "length" and cut["message"] == {
        "role": "assistant", "content": "tok0 tok1 tok2 "}


def test_v1_tool_call_and_mapping(fake):
    """/v1 tool calls: arguments as a JSON string, finish_reason tool_calls; the same call as
    /api/chat gives, since /v1 runs the native handler on the converted request."""
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "weather?"}],
            "tools": [WEATHER_TOOL]}
    native = json.loads(request(fake, "POST", "/api/chat", dict(body, stream=False))[2])
    status, headers, data = request(fake, "POST", "/v1/chat/completions", body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert data.endswith(b"}\n")  # json.Encoder's newline
    choice = json.loads(data)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {"role": "assistant", "content": "", "tool_calls": [{
        "id": native["message"]["tool_calls"][0]["id"], "index": 0, "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"x"}'}}]}
    assert json.loads(data)["usage"]["prompt_tokens"] == native["prompt_eval_count"]
    assert fake.received[-1].native["options"] == {"temperature": 1.0, "top_p": 1.0}
    status, _, data = request(fake, "POST", "/v1/chat/completions", dict(
        body, model="all-minilm"))
    assert status == 400 and json.loads(data)["error"]["message"] == (
        '"all-minilm" does not support chat')


def test_v1_middleware_errors(fake):
    """The middleware's own 400s (gin JSON) versus the native handler's (writer JSON)."""
    def chat(messages, **extra):
        return request(fake, "POST", "/v1/chat/completions",
                       dict({"model": "llama3.2", "messages": messages}, **extra))

    cases = [
        (chat([{"role": "user", "content": [{"type": "image_url",
                                             "image_url": "http://x/a.png"}]}]),
         "image URLs are not currently supported, please use base64 encoded data instead"),
        (chat([{"role": "user", "content": [{"type": "image_url",
                                             "image_url": {"url": "data:image/gif;base64,AA=="}}]}]),
         "invalid image input"),
        (chat([{"role": "user", "content": [{"type": "image_url",
                                             "image_url": {"url": "data:;base64,!!"}}]}]),
         "invalid image input"),
        (chat([{"role": "user"}]), "invalid message content type: <nil>"),
        (chat([{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}]}]),
         "invalid tool call arguments"),
        (chat([{"role": "user", "content": [{"type": "audio"}]}]), "invalid message format"),
        (chat([{"role": "user", "content": "x"}], reasoning_effort="extreme"),
         "invalid reasoning value: \"extreme\" (must be \"minimal\", \"low\", \"medium\", "
         "\"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")"),
        (chat([]), "[] is too short - 'messages'"),
        (request(fake, "POST", "/v1/completions", {"model": "llama3.2", "prompt": "x",
                                                   "stop": ["a", 1]}),
         "invalid type for 'stop' field: float64"),
        (request(fake, "POST", "/v1/completions", {"model": "llama3.2", "prompt": ["x"]}),
         "json: cannot unmarshal array into Go struct field CompletionRequest.prompt of type "
         "string"),
        (request(fake, "POST", "/v1/embeddings", {"model": "all-minilm", "input": [],
                                                  "encoding_format": "int8"}),
         "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64']."),
        (request(fake, "POST", "/v1/embeddings", {"model": "all-minilm", "input": []}),
         "invalid input"),
    ]
    for (status, headers, data), message in cases:
        assert status == 400, data
        assert headers["content-type"] == "application/json; charset=utf-8"
        assert json.loads(data) == {"error": {"message": message, "type": "invalid_request_error",
                                              "param": None, "code": None}}
    status, headers, data = request(fake, "POST", "/v1/embeddings", {"model": "all-minilm",
                                                                    "input": [1, 2]})
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(data)["error"]["message"] == "invalid input type"
    # a data URL with no mime type is accepted; each part becomes its own message
    status, _, _ = chat([{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "image_url", "image_url": "data:;base64,AAAA"}]}])
    assert status == 200 and fake.received[-1].native["messages"] == [
        {"role": "user", "content": "hi"}, {"role": "user", "content": "", "images": ["AAAA"]}]


def test_v1_models_null_when_empty():
    """/v1/models with no models: data null; retrieve answers the id as given."""
    with FakeOllama(models=[]) as empty:
        status, headers, data = request(empty, "GET", "/v1/models")
        assert status == 200 and json.loads(data) == {"object": "list", "data": None}
    with FakeOllama() as fake:
        entry = json.loads(request(fake, "GET", "/v1/models/LLAMA3.2")[2])
        assert entry["id"] == "LLAMA3.2" and entry["owned_by"] == "library"


def test_ollama_client(fake):
    """The real ollama client: chat, generate (streaming and not), embed, list, show."""
    ollama = pytest.importorskip("ollama")

    with ollama.Client(host=fake.url) as client:
        check_ollama_client(client, ollama)


def check_ollama_client(client, ollama):
    """The checks of test_ollama_client."""
    reply = client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content == "tok0 tok1 tok2 tok3 tok4 " and reply.done_reason == "stop"
    parts = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}],
                             stream=True))
    assert "".join(p.message.content for p in parts) == "tok0 tok1 tok2 tok3 tok4 "
    gen = client.generate(model="llama3.2", prompt="hi")
    assert gen.response == "tok0 tok1 tok2 tok3 tok4 " and gen.eval_count == 5
    pieces = list(client.generate(model="llama3.2", prompt="hi", stream=True))
    assert pieces[-1].done and "".join(p.response for p in pieces).startswith("tok0")
    emb = client.embed(model="all-minilm", input=["a", "b"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 384
    names = [m.model for m in client.list().models]
    assert "qwen3:8b" in names
    show = client.show("llama3.2")
    assert show.modelinfo["llama.context_length"] == 131072
    assert "tools" in show.capabilities
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404


def test_openai_client(fake):
    """The real openai client: chat with and without stream, embeddings, models.list."""
    OpenAI = pytest.importorskip("openai").OpenAI

    with OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0) as client:
        check_openai_client(client)


def check_openai_client(client):
    """The checks of test_openai_client."""
    done = client.chat.completions.create(model="llama3.2",
                                          messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    assert done.choices[0].finish_reason == "stop" and done.usage.completion_tokens == 5
    stream = client.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 " and chunks[-1].usage.total_tokens > 5
    emb = client.embeddings.create(model="nomic-embed-text", input=["a", "b"])
    assert [d.index for d in emb.data] == [0, 1] and len(emb.data[0].embedding) == 768
    assert emb.usage.prompt_tokens == 2
    ids = [m.id for m in client.models.list()]
    assert "llama3.2:latest" in ids
    b64 = client.embeddings.create(model="all-minilm", input="a", encoding_format="base64")
    assert len(base64.b64decode(b64.data[0].embedding)) == 384 * 4


# -- faults -----------------------------------------------------------------------------------


def test_gate_pause_and_release(fake):
    """pause_after=2: two lines arrive, then nothing until the gate is released."""
    fault = fake.add_fault(Fault(path="/api/chat", pause_after=2))
    client = H11Client(fake.port)
    try:
        client.send("POST", "/api/chat", {"model": "llama3.2",
                                          "messages": [{"role": "user", "content": "x"}]})
        assert client.response().status_code == 200
        assert len(client.read_lines(2)) == 2
        assert fault.gate.wait_reached(2.0)
        with pytest.raises(socket.timeout):
            client.next_event(timeout=0.2)
        fault.gate.release()
        rest = client.read_rest()
        assert len(rest.splitlines()) == 4 and json.loads(rest.splitlines()[-1])["done"]
    finally:
        client.close()
    assert fault.hits == 1


def test_close_after(fake):
    """close_after=2: exactly two lines, then the socket closes with no terminating chunk."""
    fake.add_fault(Fault(path="/api/generate", close_after=2))
    client = H11Client(fake.port)
    try:
        client.send("POST", "/api/generate", {"model": "llama3.2", "prompt": "x"})
        client.response()
        lines = client.read_lines(2)
        assert len(lines) == 2
        with pytest.raises(h11.RemoteProtocolError):
            client.read_rest()
    finally:
        client.close()
    assert request(fake, "POST", "/api/generate", {"model": "llama3.2", "prompt": "x"})[0] == 200


def test_status_fault_once_then_normal(fake):
    """A status fault answers the Ollama error body once (times=1), then normal answers."""
    fake.add_fault(Fault(path="/api/version", status=500, error="boom"))
    assert request(fake, "GET", "/api/version")[::2] == (500, b'{"error":"boom"}')
    assert request(fake, "GET", "/api/version")[0] == 200


def test_garbage_and_close_before_response(fake):
    """garbage answers non-HTTP bytes; close_before_response closes without a byte."""
    fake.add_fault(Fault(garbage=True))
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        request(fake, "GET", "/api/version")
    fake.add_fault(Fault(close_before_response=True))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        request(fake, "GET", "/api/version")
    fake.wait_for_requests(2)


def test_refuse_and_accept(fake):
    """refuse() refuses new connections but keeps open ones; accept() listens again."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    conn.request("GET", "/api/version")
    conn.getresponse().read()
    fake.refuse()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", fake.port), timeout=2).close()
    conn.request("GET", "/api/version")
    assert conn.getresponse().status == 200
    conn.close()
    fake.accept()
    assert request(fake, "GET", "/api/version")[0] == 200


def test_delay_before_headers(fake):
    """delay_before_headers keeps the fake silent, then it answers; load_duration includes it."""
    fake.add_fault(Fault(path="/api/chat", delay_before_headers=0.3))
    started = time.monotonic()
    status, _, data = request(fake, "POST", "/api/chat", {
        "model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "x"}]})
    assert time.monotonic() - started >= 0.3 and status == 200
    assert json.loads(data)["load_duration"] >= 300_000_000


def test_client_disconnect_recorded(fake):
    """A client that leaves mid-stream (or during a stall) is recorded in closed_conn_ids."""
    client = H11Client(fake.port)
    client.send("POST", "/api/chat", {"model": "llama3.2",
                                      "messages": [{"role": "user", "content": "x"}]},
                headers=[("x-fake-delay-ms", "200")])
    client.response()
    client.read_lines(1)
    client.close()
    fake.wait_for_requests(1)
    assert fake.wait_closed(fake.received[-1].conn_id, 2.0)
    fake.add_fault(Fault(stall_after=0))
    client = H11Client(fake.port)
    client.send("GET", "/api/tags")
    client.response()
    client.close()
    fake.wait_for_requests(2)
    assert fake.wait_closed(fake.received[-1].conn_id, 2.0)


def test_keep_alive_same_connection(fake):
    """Two requests on one http.client connection share a conn_id; a new one gets another."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    for _ in range(2):
        conn.request("POST", "/api/chat", json.dumps({
            "model": "llama3.2", "messages": [{"role": "user", "content": "x"}]}))
        conn.getresponse().read()
    conn.close()
    request(fake, "GET", "/")
    ids = [r.conn_id for r in fake.received]
    assert ids[0] == ids[1] != ids[2]
    assert fake.connections_accepted == 2


def test_http10_pipelining_chunked_and_100_continue(fake):
    """HTTP/1.0 gets a close-delimited stream; pipelined and chunked requests both work."""
    sock = socket.create_connection(("127.0.0.1", fake.port), timeout=5)
    body = b'{"model":"llama3.2","prompt":"x"}'
    sock.sendall(b"POST /api/generate HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body),
                                                                                     body))
    data = b""
    while True:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    sock.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower() and len(ndjson(rest)) == 6

    sock = socket.create_connection(("127.0.0.1", fake.port), timeout=5)
    chunked = (b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
               b"Expect: 100-continue\r\n\r\n5\r\n{\"mod\r\n11\r\nel\":\"all-minilm\"}\r\n0\r\n\r\n")
    sock.sendall(chunked + b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    statuses = []
    while len(statuses) < 2:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            statuses.append(event.status_code)
        elif isinstance(event, h11.EndOfMessage):
            conn.start_next_cycle()
            conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
            conn.send(h11.EndOfMessage())
    sock.close()
    assert statuses == [200, 200]
    assert fake.received[-2].json == {"model": "all-minilm"}
    assert fake.received[-1].target == "/api/version"


# -- pure helpers -----------------------------------------------------------------------------


def test_go_duration_and_decoder_messages():
    """Go duration parsing and decoder-like messages match Go's wording."""
    assert parse_go_duration("5m") == 300 and parse_go_duration("1h30m") == 5400
    assert parse_go_duration("-1m") == -60 and parse_go_duration("0") == 0
    with pytest.raises(ValueError, match="missing unit"):
        parse_go_duration("-1")
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads('{"a":1 "b"}')
    assert go_decode_message(info.value) == (
        "invalid character '\"' after object key:value pair")
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads('{"a":')
    assert go_decode_message(info.value) == "unexpected EOF"


# -- truncation as Ollama truncates (ollama-api.md §7.5) ----------------------------------------


@pytest.mark.parametrize(
    "tokens, num_ctx, num_keep, kept",
    [(100, 4096, None, 100), (4095, 4096, None, 4095), (4096, 4096, None, 2050), (50000, 32768, None, 16386),
     (9000, 4096, 5, 2051), (9000, 4096, -1, 4095), (9000, 2, None, 1)],
)
def test_truncated_prompt_tokens(tokens, num_ctx, num_keep, kept):
    """contextShiftPromptLimit: num_ctx - max((num_ctx - keep) / 2, 1); a prompt of num_ctx - 1 fits."""
    from fake_ollama import truncated_prompt_tokens

    assert truncated_prompt_tokens(tokens, num_ctx, num_keep) == kept


def test_truncation_without_context_shift_is_400():
    from fake_ollama import PROMPT_TOO_LONG, HTTPError, truncated_prompt_tokens

    with pytest.raises(HTTPError) as info:
        truncated_prompt_tokens(5000, 4096, None, shift=False)
    assert info.value.status == 400 and info.value.message == PROMPT_TOO_LONG


def _chat_count(fake, messages, **extra):
    body = dict({"model": "llama3.2", "stream": False, "messages": messages, "options": {"num_ctx": 4096}}, **extra)
    status, _, data = request(fake, "POST", "/api/chat", body)
    assert status == 200, data
    return json.loads(data)["prompt_eval_count"]


def test_long_single_prompt_is_cut_to_half_the_context(fake):
    """One message of 20,000 characters (5000 tokens + 10) at 4096: Ollama keeps 2050 tokens, no error."""
    assert _chat_count(fake, [{"role": "user", "content": "x" * 20000}]) == 2050
    generate = {"model": "llama3.2", "stream": False, "prompt": "x" * 20000, "options": {"num_ctx": 4096}}
    assert json.loads(request(fake, "POST", "/api/generate", generate)[2])["prompt_eval_count"] == 2050


def test_chat_drops_old_messages_first_keeping_system_ones(fake):
    """chatPrompt: whole messages go from the front until the prompt fits; system messages stay."""
    system = {"role": "system", "content": "s" * 400}  # 100 tokens
    old = [{"role": "user", "content": "u" * 8000}, {"role": "assistant", "content": "a" * 8000}]  # 2000 tokens each
    last = {"role": "user", "content": "q" * 4000}  # 1000 tokens
    # all: 100 + 4000 + 1000 + 10 = 5110 > 4096; without the first user turn: 3110 fits
    assert _chat_count(fake, [system] + old + [last]) == 100 + 2000 + 1000 + 10
    # truncate false: nothing dropped, and llama-server refuses the prompt
    body = {"model": "llama3.2", "stream": False, "messages": [system] + old + [last], "options": {"num_ctx": 4096}, "truncate": False}
    status, _, data = request(fake, "POST", "/api/chat", body)
    assert status == 400 and b"exceeds the available context size" in data


def test_images_are_never_truncated(fake):
    image = base64.b64encode(b"\x89PNG fake").decode()
    assert _chat_count(fake, [{"role": "user", "content": "x" * 20000, "images": [image]}]) == 5010
