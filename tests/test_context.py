"""End to end: the model-aware modifiers through the real proxy to the fake Ollama (SPEC §5)."""

from __future__ import annotations

import http.client
import json
import threading

import ollama
import pytest
import workload
from fake_ollama import Fault

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def post(port: int, path: str, body: dict, headers=None):
    """(status, headers dict, parsed body) of one POST over http.client."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = data
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed


def received(fake, path: str) -> list:
    return [r for r in fake.received if r.path == path]


def test_ollama_client_gets_model_context_and_num_predict(fake, proxy):
    """With defaults, a chat from the ollama client reaches Ollama with num_ctx min(131072, 16384) and num_predict 4096."""
    with ollama.Client(host=proxy.url) as client:
        reply = client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert reply.done
    sent = received(fake, "/api/chat")[-1].json
    assert sent["options"] == {"num_ctx": 16384, "num_predict": 4096}
    assert received(fake, "/api/show")[0].json == {"model": "llama3.2:latest"}


def test_embedding_context_capped_at_training(fake, proxy):
    """An embedding model asked for 131072 gets its training context (2048 for nomic-embed-text)."""
    with ollama.Client(host=proxy.url) as client:
        result = client.embed(model="nomic-embed-text", input=["a", "b"], options={"num_ctx": 131072})
    assert len(result.embeddings) == 2
    sent = received(fake, "/api/embed")[-1].json
    assert sent["options"] == {"num_ctx": 2048}


def test_explicit_values_kept_and_header(fake, proxy):
    """A client num_ctx within the cap and an explicit num_predict are not touched; the header says when num_ctx was set."""
    status, headers, _ = post(proxy.port, "/api/chat", dict(CHAT, options={"num_ctx": 4096, "num_predict": 7}))
    assert status == 200 and "x-ollama-proxy-num-ctx" not in headers
    assert received(fake, "/api/chat")[-1].json["options"] == {"num_ctx": 4096, "num_predict": 7}
    status, headers, _ = post(proxy.port, "/api/chat", CHAT)
    assert headers["x-ollama-proxy-num-ctx"] == "16384"


def test_streamed_chat_through_modifiers(fake, proxy):
    """A streamed chat is modified too and still streams every line."""
    with ollama.Client(host=proxy.url) as client:
        parts = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert parts[-1].done and len(parts) == 6
    assert received(fake, "/api/chat")[-1].json["options"]["num_ctx"] == 16384


def test_show_fetched_once_for_concurrent_requests(fake, proxy):
    """Twenty concurrent requests for a model the proxy has not seen cause one /api/show."""
    fake.add_fault(Fault(path="/api/show", delay_before_headers=0.3))
    results: list = []

    def one() -> None:
        results.append(post(proxy.port, "/api/chat", CHAT)[0])

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 20
    assert len(received(fake, "/api/show")) == 1
    assert all(r.json["options"]["num_ctx"] == 16384 for r in received(fake, "/api/chat"))


def test_failing_show_never_fails_the_request(fake, proxy):
    """When /api/show fails, the request still goes through, without num_ctx but with num_predict."""
    fake.add_fault(Fault(path="/api/show", status=500, error="boom"))
    status, _, body = post(proxy.port, "/api/chat", CHAT)
    assert status == 200 and body["done"] is True
    assert received(fake, "/api/chat")[-1].json["options"] == {"num_predict": 4096}


def test_context_mode_off_and_byte_for_byte(fake, start_proxy):
    """--context-mode off and --num-predict 0: the body goes through unchanged, byte for byte."""
    proxy = start_proxy(fake.url, context_mode="off", num_predict=0)
    raw = json.dumps(CHAT, indent=2)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("POST", "/api/chat", raw)
    assert conn.getresponse().status == 200
    conn.close()
    assert received(fake, "/api/chat")[-1].body == raw.encode()


def test_url_forms(fake, start_proxy):
    """/proxy-context/<N>/ forces num_ctx (capped); /proxy-context/auto/ sizes to the prompt."""
    proxy = start_proxy(fake.url)
    with ollama.Client(host=proxy.url + "/proxy-context/8192") as client:
        client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], options={"num_ctx": 32768})
    assert received(fake, "/api/chat")[-1].json["options"]["num_ctx"] == 8192
    with ollama.Client(host=proxy.url + "/proxy-context/auto") as client:
        client.generate(model="qwen3:8b", prompt="hello")  # a short prompt: the smallest size
        client.generate(model="llama3.2", prompt="hello")  # loaded with 8192 just now: kept, no reload
    sizes = [r.json["options"]["num_ctx"] for r in received(fake, "/api/generate")]
    assert sizes == [2048, 8192]
    status, _, body = post(proxy.port, "/proxy-context/99999999/api/chat", CHAT)
    assert status == 200 and received(fake, "/api/chat")[-1].json["options"]["num_ctx"] == 16384
    status, _, body = post(proxy.port, "/proxy-context/lots/api/chat", CHAT)
    assert status == 400 and "positive number" in body["error"]
    status, _, body = post(proxy.port, "/proxy-context/4096/api/show", {"model": "llama3.2"})
    assert status == 200 and "model_info" in body


def test_num_ctx_and_keep_alive_flags(fake, start_proxy):
    """--num-ctx MODEL=N beats the client's value; --keep-alive fills keep_alive as a number or a duration."""
    proxy = start_proxy(fake.url, num_ctx=(("llama3.2:latest", 6144),), keep_alive=(("llama3.2:latest", -1), ("nomic*", "10m")))
    post(proxy.port, "/api/chat", dict(CHAT, options={"num_ctx": 2048}))
    sent = received(fake, "/api/chat")[-1].json
    assert sent["options"]["num_ctx"] == 6144 and sent["keep_alive"] == -1
    post(proxy.port, "/api/embed", {"model": "nomic-embed-text", "input": "x"})
    assert received(fake, "/api/embed")[-1].json["keep_alive"] == "10m"
    post(proxy.port, "/api/chat", dict(CHAT, keep_alive="1m"))
    assert received(fake, "/api/chat")[-1].json["keep_alive"] == "1m"


def test_out_of_memory_falls_back_to_the_next_smaller_size(fake, start_proxy):
    """A load that runs out of memory at the size the proxy chose is retried once, one size smaller."""
    proxy = start_proxy(fake.url, max_context=32768, context_mode="auto")
    fake.oom_above = 8192
    big = {"model": "llama3.2", "messages": [{"role": "user", "content": "x " * 20000}], "stream": False}
    status, headers, body = post(proxy.port, "/api/chat", big)
    assert status == 200 and body["done"] is True
    sizes = [r.json["options"]["num_ctx"] for r in received(fake, "/api/chat")]
    assert sizes == [16384, 8192]
    assert headers["x-ollama-proxy-num-ctx"] == "8192"


def test_out_of_memory_without_a_smaller_size_is_reported(fake, start_proxy):
    """When there is no smaller size, Ollama's own error reaches the client."""
    proxy = start_proxy(fake.url, context_sizes=(2048,), context_mode="auto")
    fake.oom_above = 1024
    status, _, body = post(proxy.port, "/api/chat", CHAT)
    assert status == 500 and "llama-server" in body["error"]
    assert len(received(fake, "/api/chat")) == 1


def test_calibration_learns_characters_per_token(fake, proxy):
    """The proxy's characters-per-token for a model moves toward what Ollama's prompt_eval_count says."""
    post(proxy.port, "/api/chat", dict(CHAT, messages=[{"role": "user", "content": "word " * 400}]))  # 2000 characters
    ratio = proxy.call(lambda: proxy.app.models.chars_per_token.get("llama3.2:latest"))
    assert ratio is not None and ratio != 4.0


def test_digest_change_refreshes_metadata(fake, start_proxy):
    """When a model's digest in /api/tags changes, its /api/show is read again."""
    proxy = start_proxy(fake.url, scan_interval=0.2)
    post(proxy.port, "/api/chat", CHAT)
    assert len(received(fake, "/api/show")) == 1
    model = next(m for m in fake.models if m.name == "llama3.2:latest")
    model.digest = "f" * 64
    deadline = threading.Event()
    for _ in range(50):
        if proxy.call(lambda: proxy.app.models.cached(proxy.app.fleet.backends[0], "llama3.2:latest") is None):
            break
        deadline.wait(0.1)
    post(proxy.port, "/api/chat", CHAT)
    assert len(received(fake, "/api/show")) == 2


def test_loaded_context_from_ps_is_reused(fake, start_proxy):
    """Auto mode: a model another client loaded with 8192 (seen in /api/ps) keeps 8192 for a small prompt."""
    post(fake.port, "/api/chat", dict(CHAT, options={"num_ctx": 8192}))  # straight to the fake
    proxy = start_proxy(fake.url, scan_interval=0.2, context_mode="auto")
    for _ in range(50):
        if proxy.call(lambda: proxy.app.fleet.backends[0].loaded.get("llama3.2:latest")):
            break
        threading.Event().wait(0.1)
    post(proxy.port, "/api/chat", CHAT)
    assert received(fake, "/api/chat")[-1].json["options"]["num_ctx"] == 8192
    assert fake.reload_count("llama3.2:latest") == 0


@pytest.mark.parametrize("style, expected", [("client", None), ("naive", None), ("proxy", 2)])
def test_reload_workload(fake, start_proxy, style, expected):
    """The 30-request workload: through the proxy in auto mode llama3.2 reloads exactly twice (2048 -> 4096 -> 8192)
    and the embedding model never; sent directly or with a naive sizer it reloads far more."""
    proxy = start_proxy(fake.url, context_mode="auto")
    port = proxy.port if style == "proxy" else fake.port
    for path, body in workload.requests(style):
        status, _, _ = post(port, path, body)
        assert status == 200
    llama = fake.reload_count("llama3.2:latest")
    if expected is not None:
        assert llama == expected
        assert fake.reload_count("nomic-embed-text:latest") == 0
        sizes = [r.json["options"]["num_ctx"] for r in received(fake, "/api/chat")]
        assert sizes == sorted(sizes) and set(sizes) == {2048, 4096, 8192}
    else:
        assert llama >= 8


# -- regressions from the second review -------------------------------------------------------

def test_wrong_type_messages_reach_ollama(fake, proxy):
    """A chat whose messages is not a list gets Ollama's own 400, not a dropped connection."""
    status, _, body = post(proxy.port, "/api/chat", {"model": "llama3.2", "messages": 5, "stream": False})
    assert status == 400 and "cannot unmarshal" in body["error"]


def test_out_of_memory_size_is_remembered(fake, start_proxy):
    """After a failed load at 16384 and a fallback to 8192, later requests ask for 8192 at once: no reload loop."""
    proxy = start_proxy(fake.url, max_context=32768, context_mode="auto")
    fake.oom_above = 8192
    big = {"model": "llama3.2", "messages": [{"role": "user", "content": "x " * 20000}], "stream": False}
    for _ in range(3):
        assert post(proxy.port, "/api/chat", big)[0] == 200
    assert [r.json["options"]["num_ctx"] for r in received(fake, "/api/chat")] == [16384, 8192, 8192, 8192]


def test_only_post_bodies_are_modified(fake, proxy):
    """GET with a body on a model path goes to Ollama as sent (which answers 405), unmodified."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", "/api/embeddings", json.dumps({"model": "nomic-embed-text", "prompt": "x" * 5000}))
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 405
    assert "options" not in received(fake, "/api/embeddings")[-1].json


def test_blob_upload_behind_proxy_context_still_streams(fake, proxy):
    """/proxy-context/auto/api/blobs/... is still a streamed upload (chunked upstream), not a buffered body."""
    import hashlib

    data = b"GGUF" + b"\x01" * 5000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("POST", "/proxy-context/auto/api/blobs/" + digest, body=iter([data[:100], data[100:]]), encode_chunked=True)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 201
    assert received(fake, "/api/blobs/" + digest)[-1].header("transfer-encoding") == "chunked"


def test_v1_models_prefix_is_exact(fake, proxy):
    """/v1/modelsfoo is not /v1/models: it goes to Ollama (404 page not found)."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", "/v1/modelsfoo")
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert resp.status == 404 and b"page not found" in data
