"""Fidelity of the proxy's /v1/messages translation against the fake's own Anthropic layer.

The proxy turns /v1/messages into a native /api/chat request and the native answer back into a
Messages answer with its own translators (ollama_proxy.py). The fake answers /v1/messages by
itself, with an independent port of Ollama's Anthropic middleware over the same native handler
(fake_ollama.py, "/v1/messages: Ollama's Anthropic middleware"). For the same request the two
must agree: status, content type, the JSON recursively (keys in order, types, values) and, for
streams, the same named events in the same order with equal data. Only the random ids differ
(``msg_`` + 24 hex, ``req_`` + 24 hex).

What the proxy changes on purpose does not show here: its upstream request carries
``options.num_ctx`` and ``keep_alive`` (the fake reloads the runner for it, which is not in any
answer), and it sends the same messages and tools that Ollama's middleware would, so the
prompt_eval_count the fake reports (usage.input_tokens of a whole answer and of message_delta)
is the same on both paths; message_start's input_tokens is Ollama's len/4 estimate of the
Anthropic request on both (the fake's first native object has no prompt_eval_count).
"""

from __future__ import annotations

import http.client
import json
import re
from typing import Any, List, Optional, Tuple

import pytest

TIMEOUT = 10.0
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
WEATHER = {"name": "get_weather", "description": "Get the weather", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"]}}
MSG_ID = re.compile(r"^msg_[0-9a-f]{24}$")
REQ_ID = re.compile(r"^req_[0-9a-f]{24}$")
USER = {"role": "user", "content": "Hello there!"}
WRITER_JSON = "application/json"  # what AnthropicWriter (json.Encoder) answers with, a newline after


class Answer:
    def __init__(self, status: int, headers: List[Tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def post(port: int, body: Any, path: str = "/v1/messages", headers: Optional[dict] = None) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        raw = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        conn.request("POST", path, raw, dict({"content-type": "application/json",
                                              "anthropic-version": "2023-06-01"}, **(headers or {})))
        resp = conn.getresponse()
        return Answer(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def events(body: bytes) -> List[Tuple[str, Any]]:
    """Named SSE events, checking the exact framing: ``event: X\\ndata: {json}\\n\\n`` only."""
    text = body.decode("utf-8")
    assert text.endswith("\n\n"), text[-200:]
    out = []
    for chunk in text[:-2].split("\n\n"):
        lines = chunk.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), chunk
        out.append((lines[0][len("event: "):], json.loads(lines[1][len("data: "):])))
    return out


def agree(proxy: Any, fake: Any, where: str = "$") -> None:
    """Recursively equal: same types, dict keys in the same order, equal values; a message id
    and a request id only need the right shape on both sides."""
    assert type(proxy) is type(fake), "%s: type %s (proxy) vs %s (fake): %r vs %r" % (
        where, type(proxy).__name__, type(fake).__name__, proxy, fake)
    if isinstance(proxy, dict):
        assert list(proxy) == list(fake), "%s: keys %s (proxy) vs %s (fake)" % (where, list(proxy), list(fake))
        for key in proxy:
            if key == "id" and isinstance(fake[key], str) and MSG_ID.match(fake[key]):
                assert MSG_ID.match(proxy[key]), "%s.id: %r" % (where, proxy[key])
            elif key == "request_id":
                assert REQ_ID.match(proxy[key]) and REQ_ID.match(fake[key]), (proxy[key], fake[key])
            else:
                agree(proxy[key], fake[key], "%s.%s" % (where, key))
    elif isinstance(proxy, list):
        assert len(proxy) == len(fake), "%s: %d items (proxy) vs %d (fake): %r vs %r" % (
            where, len(proxy), len(fake), proxy, fake)
        for i, (a, b) in enumerate(zip(proxy, fake)):
            agree(a, b, "%s[%d]" % (where, i))
    else:
        assert proxy == fake, "%s: %r (proxy) vs %r (fake)" % (where, proxy, fake)


def compare(fake, proxy, body: Any, headers: Optional[dict] = None) -> Tuple[Answer, Answer]:
    """The same request to the proxy and straight to the fake; both answers must agree."""
    via = post(proxy.port, body, headers=headers)
    direct = post(fake.port, body, headers=headers)
    assert via.status == direct.status, (via.status, via.body, direct.status, direct.body)
    if direct.header("content-type") != WRITER_JSON:  # that head: test_writer_json_head
        assert via.header("content-type") == direct.header("content-type"), (via.headers, direct.headers)
    if direct.header("content-type") == "text/event-stream":
        assert via.header("cache-control") == direct.header("cache-control") == "no-cache"
        got, want = events(via.body), events(direct.body)
        assert [e for e, _ in got] == [e for e, _ in want], ([e for e, _ in got], [e for e, _ in want])
        for i, ((name, a), (_, b)) in enumerate(zip(got, want)):
            agree(a, b, "event %d %s" % (i, name))
    else:
        agree(json.loads(via.body), json.loads(direct.body))
    return via, direct


def upstream_chat(fake) -> dict:
    """The proxy's last native /api/chat request to the fake."""
    return json.loads([r for r in fake.received if r.path == "/api/chat"][-1].body)


def without_call_index(messages: List[dict]) -> List[dict]:
    """Messages with ``tool_calls[].function.index`` dropped: Go's encoder writes ``"index": 0``
    (no omitempty), the proxy leaves it out; /api/chat reads both the same."""
    out = json.loads(json.dumps(messages))
    for message in out:
        for call in message.get("tool_calls") or []:
            call["function"].pop("index", None)
    return out


def test_proxy_and_fake_are_independent_paths(fake, start_proxy):
    """The fake's answer comes from its own layer (recorded with its native twin), the proxy's
    from /api/chat: so each comparison below checks two separate translations."""
    proxy = start_proxy(fake.url)
    body = {"model": "llama3.2", "max_tokens": 50, "messages": [USER]}
    compare(fake, proxy, body)
    paths = [r.path for r in fake.received if r.path != "/api/show"]  # the proxy asks /api/show first
    assert paths == ["/api/chat", "/v1/messages"], paths
    assert fake.received[-1].native == {"model": "llama3.2", "messages": [USER], "stream": False,
                                        "options": {"num_predict": 50}}
    sent = upstream_chat(fake)
    assert sent["messages"] == [USER] and sent["options"]["num_predict"] == 50
    assert "num_ctx" in sent["options"]  # the proxy's deliberate addition, invisible in answers


CASES = {
    "plain": ({"model": "llama3.2", "max_tokens": 100, "messages": [USER]}, None),
    "system string": ({"model": "llama3.2", "max_tokens": 100, "system": "You are terse.",
                       "messages": [USER]}, None),
    "system blocks": ({"model": "llama3.2", "max_tokens": 100, "system": [
        {"type": "text", "text": "You are "}, {"type": "text", "text": "terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [USER]}, None),
    "multi-turn": ({"model": "llama3.2", "max_tokens": 100, "messages": [
        USER, {"role": "assistant", "content": [{"type": "text", "text": "Hi! "}, {"type": "text", "text": "How can I help?"}]},
        {"role": "user", "content": [{"type": "text", "text": "Tell me a joke."}]}]}, None),
    "tools": ({"model": "llama3.2", "max_tokens": 100, "tools": [WEATHER],
               "messages": [{"role": "user", "content": "Weather in Paris?"}]}, None),
    "tool round trip": ({"model": "llama3.2", "max_tokens": 100, "tools": [WEATHER], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                                          {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "sunny, 21C"}]},
                                     {"type": "text", "text": "And tomorrow?"}]}]}, None),
    "image": ({"model": "llama3.2", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "What is this?"}]}]}, None),
    "thinking": ({"model": "qwen3:8b", "max_tokens": 100, "thinking": {"type": "enabled", "budget_tokens": 1024},
                  "messages": [USER]}, {"X-Fake-Think-Chunks": "2"}),
    "thinking history": ({"model": "qwen3:8b", "max_tokens": 100, "messages": [
        USER, {"role": "assistant", "content": [{"type": "thinking", "thinking": "greet back", "signature": "sig"},
                                                {"type": "text", "text": "Hello!"}]},
        {"role": "user", "content": "Again"}]}, {"X-Fake-Think-Chunks": "2"}),
    "thinking and tools": ({"model": "qwen3:8b", "max_tokens": 100, "tools": [WEATHER],
                            "messages": [{"role": "user", "content": "Weather?"}]}, {"X-Fake-Think-Chunks": "2"}),
    "thinking on a model without it": ({"model": "llama3.2", "max_tokens": 100, "thinking": {"type": "enabled"},
                                        "messages": [USER]}, None),
    "stop and sampling": ({"model": "llama3.2", "max_tokens": 100, "stop_sequences": ["END", "STOP"],
                           "temperature": 0.2, "top_p": 0.9, "top_k": 40, "metadata": {"user_id": "u1"},
                           "tool_choice": {"type": "auto"}, "messages": [USER]}, None),
    "max_tokens cut": ({"model": "llama3.2", "max_tokens": 2, "messages": [USER]}, None),
    "max_tokens cut in thinking": ({"model": "qwen3:8b", "max_tokens": 1, "messages": [USER]},
                                   {"X-Fake-Think-Chunks": "2"}),
    "max_tokens cut after thinking": ({"model": "qwen3:8b", "max_tokens": 3, "messages": [USER]},
                                      {"X-Fake-Think-Chunks": "2"}),
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", list(CASES))
def test_same_answer(fake, start_proxy, case, stream):
    body, headers = CASES[case]
    body = dict(body, stream=True) if stream else body
    proxy = start_proxy(fake.url)
    via, direct = compare(fake, proxy, body, headers)
    assert direct.status == 200
    if stream:
        names = [e for e, _ in events(direct.body)]
        assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
        assert "ping" not in names
    # the native request each side ran: the fake's layer and the proxy carry the same messages
    native_direct = fake.received[-1].native
    native_via = upstream_chat(fake)
    assert without_call_index(native_via["messages"]) == without_call_index(native_direct["messages"])
    options = dict(native_via["options"])
    assert options.pop("num_ctx") > 0  # the proxy's deliberate addition
    assert options == native_direct["options"]
    if case == "thinking on a model without it":  # the proxy relaxes think itself, the fake's handler does
        assert "think" not in native_via and native_direct["think"] is True
    else:
        assert native_via.get("think") == native_direct.get("think")
    if case == "tool round trip":
        assert native_direct["messages"][1]["tool_calls"][0]["function"]["index"] == 0
        assert "index" not in native_via["messages"][1]["tool_calls"][0]["function"]
    assert native_via.get("tools") == native_direct.get("tools")


def test_max_tokens_cut_is_max_tokens_on_both(fake, start_proxy):
    """done_reason length -> stop_reason max_tokens. The proxy says
    model_context_window_exceeded only when eval_count < num_predict (the context, not
    max_tokens, stopped it), which a max_tokens cut cannot give."""
    proxy = start_proxy(fake.url)
    via, direct = compare(fake, proxy, CASES["max_tokens cut"][0])
    assert json.loads(via.body)["stop_reason"] == json.loads(direct.body)["stop_reason"] == "max_tokens"
    assert json.loads(direct.body)["usage"]["output_tokens"] == 2


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_missing_max_tokens(fake, start_proxy, stream):
    proxy = start_proxy(fake.url)
    body = {"model": "llama3.2", "messages": [USER], "stream": stream}
    via, direct = compare(fake, proxy, body)
    assert direct.status == 400
    assert json.loads(direct.body)["error"] == {"type": "invalid_request_error",
                                                "message": "max_tokens is required and must be positive"}
    assert via.body.endswith(b"}") and direct.body.endswith(b"}")  # gin's c.JSON: no newline


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_unknown_model(fake, start_proxy, stream):
    proxy = start_proxy(fake.url)
    body = {"model": "nope", "max_tokens": 10, "messages": [USER], "stream": stream}
    via, direct = compare(fake, proxy, body)
    assert direct.status == 404
    assert json.loads(direct.body)["error"] == {"type": "not_found_error", "message": "model 'nope' not found"}


def test_fake_count_tokens_is_not_a_route(fake):
    answer = post(fake.port, {"model": "llama3.2", "messages": [USER]}, path="/v1/messages/count_tokens")
    assert (answer.status, answer.header("content-type"), answer.body) == (404, "text/plain", b"404 page not found")


def test_fake_stream_error_before_first_byte_and_framing(fake):
    """An error before the first native object is a plain Anthropic error (no event); a stream
    has nothing but named events, no ping, no [DONE]."""
    answer = post(fake.port, {"model": "nope", "max_tokens": 5, "stream": True, "messages": [USER]})
    assert answer.status == 404 and answer.header("content-type") == "application/json"
    assert answer.body.endswith(b"}\n")
    answer = post(fake.port, {"model": "llama3.2", "max_tokens": 5, "stream": True, "messages": [USER]})
    assert b"[DONE]" not in answer.body and b"ping" not in answer.body
    assert answer.header("connection") == "keep-alive"
    evs = events(answer.body)
    assert evs[0][1]["message"]["usage"] == {"input_tokens": 4, "output_tokens": 0}  # (4 + 12) // 4
    assert evs[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                          "usage": {"input_tokens": 13, "output_tokens": 5}}


@pytest.mark.parametrize("body", [
    {"model": "llama3.2", "max_tokens": 10, "messages": [USER]},
    {"model": "nope", "max_tokens": 10, "messages": [USER]},
], ids=["answer", "native error"])
def test_writer_json_head(fake, start_proxy, body):
    proxy = start_proxy(fake.url)
    via, direct = compare(fake, proxy, body)
    assert direct.header("content-type") == WRITER_JSON and direct.body.endswith(b"}\n")
    assert (via.header("content-type"), via.body[-1:]) == (WRITER_JSON, b"\n")


def test_stream_native_error_head(fake, start_proxy):
    proxy = start_proxy(fake.url)
    via, direct = compare(fake, proxy, {"model": "nope", "max_tokens": 10, "stream": True, "messages": [USER]})
    assert (direct.header("content-type"), direct.header("cache-control")) == (WRITER_JSON, "no-cache")
    assert (via.header("content-type"), via.header("cache-control")) == (WRITER_JSON, "no-cache")
