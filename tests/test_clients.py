"""End to end with the real client libraries: ``ollama`` and ``openai`` -> the proxy -> the fake Ollama.

Each test drives the proxy with an official client exactly as an application would, checks what
the client returns (text, vectors, model lists, error types), and checks what the fake Ollama
received: the path, the body's model, a ``Via`` naming this proxy, and a ``Host`` header equal to
the backend's own host:port (ollama-api.md: Ollama on 127.0.0.1 rejects other Hosts).
"""

from __future__ import annotations

import http.client
import json
import math
from typing import List, Optional

import ollama
import openai
import pytest
from fake_ollama import Fault

MESSAGES = [{"role": "user", "content": "hi"}]
TIMEOUT = 10.0  # generous: only there so that a broken proxy fails the test instead of hanging it


def fake_text(n: int = 5) -> str:
    """The content the fake generates for ``n`` chunks: "tok0 tok1 ... "."""
    return "".join("tok%d " % i for i in range(n))


def last_request(fake, path: str):
    """The last request the fake received on ``path`` (it records before it answers)."""
    matching = [r for r in fake.received if r.path == path]
    assert matching, "the fake received nothing on %s (it got %s)" % (path, [r.target for r in fake.received])
    return matching[-1]


def assert_forwarded(fake, path: str, model: Optional[str] = None, method: str = "POST"):
    """The fake got ``method path`` (with ``model`` in the body) through this proxy, with its own Host."""
    rec = last_request(fake, path)
    assert rec.method == method
    if model is not None:
        assert rec.json is not None and rec.json.get("model") == model
    via = rec.header("via")
    assert via is not None and "ollama-proxy-" in via
    assert rec.header("host") == "127.0.0.1:%d" % fake.port
    return rec


def norm(vec: List[float]) -> float:
    return math.sqrt(sum(x * x for x in vec))


@pytest.fixture
def oclient(proxy):
    with ollama.Client(host=proxy.url, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture
def aclient(proxy):
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0, timeout=TIMEOUT) as client:
        yield client


# -- the ollama library ---------------------------------------------------------------------


def test_ollama_chat(fake, oclient):
    """ollama chat(stream=False) through the proxy returns the fake's whole answer with done_reason."""
    resp = oclient.chat(model="llama3.2", messages=MESSAGES, stream=False)
    assert resp.message.role == "assistant"
    assert resp.message.content == fake_text()
    assert resp.done is True and resp.done_reason == "stop"
    assert resp.eval_count == 5
    rec = assert_forwarded(fake, "/api/chat", "llama3.2")
    assert rec.json["stream"] is False and rec.json["messages"] == MESSAGES


def test_ollama_chat_stream(fake, proxy):
    """ollama chat(stream=True) yields every chunk; joined they equal the fake's text; the last is done."""
    with ollama.Client(host=proxy.url, timeout=TIMEOUT, headers={"X-Fake-Chunks": "7"}) as client:
        chunks = list(client.chat(model="llama3.2", messages=MESSAGES, stream=True))
    assert len(chunks) == 8  # 7 content lines and the final stats line
    assert all(not c.done for c in chunks[:-1])
    assert chunks[-1].done is True and chunks[-1].done_reason == "stop"
    assert "".join(c.message.content or "" for c in chunks) == fake_text(7)
    assert chunks[-1].eval_count == 7
    rec = assert_forwarded(fake, "/api/chat", "llama3.2")
    assert rec.json["stream"] is True
    assert rec.header("x-fake-chunks") == "7"


def test_ollama_generate(fake, oclient):
    """ollama generate(stream=False) returns the fake's whole response text."""
    resp = oclient.generate(model="llama3.2", prompt="why is the sky blue?", stream=False)
    assert resp.response == fake_text()
    assert resp.done is True and resp.done_reason == "stop"
    rec = assert_forwarded(fake, "/api/generate", "llama3.2")
    assert rec.json["prompt"] == "why is the sky blue?"


def test_ollama_generate_stream(fake, oclient):
    """ollama generate(stream=True) yields every chunk; joined they equal the fake's text."""
    chunks = list(oclient.generate(model="llama3.2", prompt="why?", stream=True))
    assert len(chunks) == 6
    assert chunks[-1].done is True and chunks[-1].done_reason == "stop"
    assert "".join(c.response for c in chunks) == fake_text()
    assert_forwarded(fake, "/api/generate", "llama3.2")


def test_ollama_embed(fake, oclient):
    """ollama embed with a list input returns one normalised vector per input, in order."""
    inputs = ["first text", "second text", "third text"]
    resp = oclient.embed(model="nomic-embed-text", input=inputs)
    assert len(resp.embeddings) == len(inputs)
    for vec in resp.embeddings:
        assert len(vec) == 768
        assert norm(vec) == pytest.approx(1.0, abs=1e-3)
    assert resp.embeddings[0] != resp.embeddings[1] != resp.embeddings[2]
    # The same input gives the same vector: the order of inputs was kept.
    again = oclient.embed(model="nomic-embed-text", input=["second text"])
    assert again.embeddings[0] == resp.embeddings[1]
    rec = assert_forwarded(fake, "/api/embed", "nomic-embed-text")
    assert rec.json["input"] == ["second text"]


def test_ollama_list(fake, oclient):
    """ollama list returns the fake's models, with sizes and digests unchanged."""
    resp = oclient.list()
    got = {m.model: (m.size, m.digest) for m in resp.models}
    assert got == {m.name: (m.size, m.digest) for m in fake.models}
    assert_forwarded(fake, "/api/tags", method="GET")


def test_ollama_show(fake, oclient):
    """ollama show returns model_info with <arch>.context_length and the model's capabilities."""
    resp = oclient.show("llama3.2")
    assert resp.modelinfo is not None
    assert resp.modelinfo["general.architecture"] == "llama"
    assert resp.modelinfo["llama.context_length"] == 131072
    assert "completion" in (resp.capabilities or [])
    assert_forwarded(fake, "/api/show", "llama3.2")


def test_ollama_unknown_model_raises_404(fake, oclient):
    """ollama chat with an unknown model raises ResponseError 404 carrying Ollama's message."""
    with pytest.raises(ollama.ResponseError) as info:
        oclient.chat(model="no-such-model", messages=MESSAGES)
    assert info.value.status_code == 404
    assert "no-such-model" in info.value.error and "not found" in info.value.error
    assert_forwarded(fake, "/api/chat", "no-such-model")


def test_ollama_broken_stream_raises(fake, oclient):
    """A backend dying mid-stream: the client gets the first chunks, then ResponseError, never a clean end."""
    fake.add_fault(Fault(path="/api/chat", close_after=2))
    got = []
    with pytest.raises(ollama.ResponseError) as info:
        for chunk in oclient.chat(model="llama3.2", messages=MESSAGES, stream=True):
            got.append(chunk)
    assert [c.message.content for c in got] == ["tok0 ", "tok1 "]
    assert not any(c.done for c in got)
    assert info.value.error  # the proxy's in-band message, not an empty one
    assert_forwarded(fake, "/api/chat", "llama3.2")


def test_ollama_broken_generate_stream_raises(fake, oclient):
    """A generate stream cut before its final line also raises ResponseError after the lines sent."""
    fake.add_fault(Fault(path="/api/generate", close_after=5))  # every token out, the done line never
    got = []
    with pytest.raises(ollama.ResponseError):
        for chunk in oclient.generate(model="llama3.2", prompt="x", stream=True):
            got.append(chunk)
    assert "".join(c.response for c in got) == fake_text()
    assert not any(c.done for c in got)


# -- the openai library ---------------------------------------------------------------------


def test_openai_chat(fake, aclient):
    """openai chat.completions.create returns the fake's text and finish_reason."""
    resp = aclient.chat.completions.create(model="llama3.2", messages=MESSAGES)
    assert len(resp.choices) == 1
    assert resp.choices[0].message.content == fake_text()
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens == 5
    rec = assert_forwarded(fake, "/api/chat", "llama3.2")  # translated to the native API
    assert rec.header("authorization") == "Bearer x"  # no --api-key: the client's key goes through
    assert rec.json["options"]["num_ctx"] == 16384 and rec.json["stream"] is False


def test_openai_chat_stream(fake, aclient):
    """openai streaming chat: the deltas joined equal the fake's text; the last choice has finish_reason."""
    with aclient.chat.completions.create(model="llama3.2", messages=MESSAGES, stream=True) as stream:
        chunks = list(stream)
    with_choices = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == fake_text()
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    rec = assert_forwarded(fake, "/api/chat", "llama3.2")
    assert rec.json["stream"] is True


def test_openai_embeddings(fake, aclient):
    """openai embeddings.create with a list input returns one unit vector per input, indexed in order."""
    inputs = ["alpha", "beta"]
    resp = aclient.embeddings.create(model="nomic-embed-text", input=inputs)
    assert [d.index for d in resp.data] == [0, 1]
    for item in resp.data:
        assert len(item.embedding) == 768
        assert norm(item.embedding) == pytest.approx(1.0, abs=1e-3)
    assert resp.data[0].embedding != resp.data[1].embedding
    rec = assert_forwarded(fake, "/api/embed", "nomic-embed-text")
    assert rec.json["input"] == inputs


def test_openai_models_list(fake, aclient):
    """openai models.list returns the fake's models by id."""
    ids = sorted(m.id for m in aclient.models.list())
    assert ids == sorted(m.name for m in fake.models)
    assert_forwarded(fake, "/api/tags", method="GET")  # answered by the proxy from the tag list


def test_openai_unknown_model_raises_not_found(fake, aclient):
    """openai with an unknown model raises NotFoundError (status 404, OpenAI error shape)."""
    with pytest.raises(openai.NotFoundError) as info:
        aclient.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert info.value.status_code == 404
    assert "no-such-model" in str(info.value)
    assert_forwarded(fake, "/api/chat", "no-such-model")


def test_openai_broken_stream_raises(fake, aclient):
    """A backend dying mid-SSE-stream: the openai client gets the first deltas, then APIError, not a clean end."""
    fake.add_fault(Fault(path="/api/chat", close_after=2))
    got = []
    with pytest.raises(openai.APIError):
        with aclient.chat.completions.create(model="llama3.2", messages=MESSAGES, stream=True) as stream:
            for chunk in stream:
                got.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == "tok0 tok1 "
    assert not any(c.choices and c.choices[0].finish_reason for c in got)


# -- the proxy's own response headers ------------------------------------------------------


def _request(port: int, method: str, path: str, body: Optional[dict] = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload, headers={"content-type": "application/json"} if payload else {})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "method,path,body,status",
    [
        ("GET", "/api/tags", None, 200),
        ("POST", "/api/chat", {"model": "llama3.2", "messages": MESSAGES}, 200),  # a stream
        ("POST", "/api/chat", {"model": "no-such-model", "messages": MESSAGES}, 404),
        ("POST", "/v1/chat/completions", {"model": "llama3.2", "messages": MESSAGES}, 200),
    ],
    ids=["tags", "chat-stream", "404", "v1"],
)
def test_response_headers_name_proxy_and_backend(fake, proxy, method, path, body, status):
    """Every response carries Via with this process's token and X-Ollama-Proxy-Backend with the backend's name."""
    got_status, headers, _ = _request(proxy.port, method, path, body)
    assert got_status == status
    vias = [v for k, v in headers if k.lower() == "via"]
    assert len(vias) == 1 and proxy.app.token in vias[0]
    backends = [v for k, v in headers if k.lower() == "x-ollama-proxy-backend"]
    assert backends == [proxy.app.fleet.backends[0].name] == ["127.0.0.1:%d" % fake.port]
