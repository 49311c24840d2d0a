"""Fidelity of the proxy's /v1/responses translation against the fake's own Responses layer.

The proxy turns /v1/responses into a native /api/chat request and the native answer back with
its own translators (ollama_proxy.py). The fake answers /v1/responses by itself, with an
independent port of Ollama's ResponsesMiddleware over the same native handler (fake_ollama.py,
"/v1/responses"). For the same request the two must agree: status, content type, the JSON
recursively (keys in order, types, values) and, for streams, the same named events in the same
order with equal data. Only what Ollama makes at random or from the clock differs: the ids
(``resp_<n>``, ``msg_<n>``, ``rs_...``, ``fc_...``, checked for their shape) and the times
(``created_at``, ``completed_at``: integers).
"""

from __future__ import annotations

import http.client
import json
import re
from typing import Any, Optional, Tuple

import pytest
from fake_ollama import FakeOllamaApp
from test_agents_fidelity import Answer, events  # the same answer holder and exact SSE framing check

# The fake's own Responses layer is being written (issue 13); until it lands there is nothing
# independent to compare with, and these tests say so instead of passing.
pytestmark = pytest.mark.skipif(not hasattr(FakeOllamaApp, "v1_responses"),
                                reason="the fake Ollama has no /v1/responses layer yet (issue 13, next step)")

TIMEOUT = 10.0
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
WEATHER = {"type": "function", "name": "get_weather", "description": "Get the weather", "strict": False,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
IDS = re.compile(r"^(resp_\d+|msg_\d+(_\d+)?|rs_(resp_)?\d+|fc_(resp_)?\d+_\d+)$")
TIMES = {"created_at", "completed_at"}


def post(port: int, body: Any, path: str = "/v1/responses", headers: Optional[dict] = None) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("POST", path, json.dumps(body), dict({"content-type": "application/json"}, **(headers or {})))
        resp = conn.getresponse()
        return Answer(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def agree(proxy: Any, fake: Any, where: str = "$") -> None:
    """Recursively equal, keys in order; ids by shape, times as integers."""
    assert type(proxy) is type(fake), "%s: %r (proxy) vs %r (fake)" % (where, proxy, fake)
    if isinstance(proxy, dict):
        assert list(proxy) == list(fake), "%s: keys %s (proxy) vs %s (fake)" % (where, list(proxy), list(fake))
        for key in proxy:
            if key in ("id", "item_id") and isinstance(fake[key], str) and IDS.match(fake[key]):
                assert isinstance(proxy[key], str) and IDS.match(proxy[key]) and proxy[key].split("_")[0] == fake[key].split("_")[0], \
                    "%s.%s: %r vs %r" % (where, key, proxy[key], fake[key])
            elif key in TIMES and isinstance(fake[key], int):
                assert isinstance(proxy[key], int) and abs(proxy[key] - fake[key]) <= 2, (where, key, proxy[key], fake[key])
            else:
                agree(proxy[key], fake[key], "%s.%s" % (where, key))
    elif isinstance(proxy, list):
        assert len(proxy) == len(fake), "%s: %d items (proxy) vs %d (fake): %r vs %r" % (where, len(proxy), len(fake), proxy, fake)
        for i, (a, b) in enumerate(zip(proxy, fake)):
            agree(a, b, "%s[%d]" % (where, i))
    else:
        assert proxy == fake, "%s: %r (proxy) vs %r (fake)" % (where, proxy, fake)


def compare(fake, proxy, body: Any, headers: Optional[dict] = None) -> Tuple[Answer, Answer]:
    via = post(proxy.port, body, headers=headers)
    direct = post(fake.port, body, headers=headers)
    assert via.status == direct.status, (via.status, via.body, direct.status, direct.body)
    assert via.header("content-type") == direct.header("content-type"), (via.headers, direct.headers)
    assert via.header("cache-control") == direct.header("cache-control"), (via.headers, direct.headers)
    if direct.header("content-type") == "text/event-stream":
        got, want = events(via.body), events(direct.body)
        assert [e for e, _ in got] == [e for e, _ in want], ([e for e, _ in got], [e for e, _ in want])
        for i, ((name, a), (_, b)) in enumerate(zip(got, want)):
            agree(a, b, "event %d %s" % (i, name))
        # and byte for byte the same framing and key order, once ids and times are masked
        assert mask(via.body) == mask(direct.body)
    else:
        agree(json.loads(via.body), json.loads(direct.body))
        assert via.body.endswith(b"\n") == direct.body.endswith(b"\n")
    return via, direct


_MASK = re.compile(rb'"(id|item_id)":"(resp|msg|rs|fc)_[0-9_resp]+"|"(created_at|completed_at)":\d+')


def mask(body: bytes) -> bytes:
    return _MASK.sub(lambda m: b'"' + (m.group(1) or m.group(3)) + b'":*', body)


def upstream_chat(fake) -> dict:
    return json.loads([r for r in fake.received if r.path == "/api/chat"][-1].body)


USER = {"role": "user", "content": "Hello there!"}
CASES = {
    "string input": ({"model": "llama3.2", "input": "Hello there!"}, None),
    "instructions": ({"model": "llama3.2", "instructions": "You are terse.", "input": "Hello there!"}, None),
    "message items": ({"model": "llama3.2", "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be kind. "}, {"type": "input_text", "text": "Always."}]},
        USER, {"role": "assistant", "content": [{"type": "output_text", "text": "Hi!"}]}, {"role": "user", "content": "Tell me a joke."}]}, None),
    "tools": ({"model": "llama3.2", "tools": [WEATHER], "input": "Weather in Paris?"}, None),
    "tool round trip": ({"model": "llama3.2", "tools": [WEATHER], "input": [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21C"}]}, None),
    "namespace tools": ({"model": "llama3.2", "input": "List files", "tools": [
        {"type": "namespace", "name": "fs", "tools": [dict(WEATHER, name="ls")]}]}, None),
    "image": ({"model": "llama3.2", "input": [{"role": "user", "content": [
        {"type": "input_image", "detail": "auto", "image_url": "data:image/png;base64," + PNG}, {"type": "input_text", "text": "What is this?"}]}]}, None),
    "reasoning": ({"model": "qwen3:8b", "input": "Hello there!", "reasoning": {"effort": "high", "summary": "auto"}},
                  {"X-Fake-Think-Chunks": "2"}),
    "reasoning replayed": ({"model": "qwen3:8b", "input": [
        USER, {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "greet back"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]}, {"role": "user", "content": "Again"}]},
        {"X-Fake-Think-Chunks": "2"}),
    "reasoning and tools": ({"model": "qwen3:8b", "tools": [WEATHER], "input": "Weather?"}, {"X-Fake-Think-Chunks": "2"}),
    "sampling and echo": ({"model": "llama3.2", "input": "Hello there!", "temperature": 0.2, "top_p": 0.9, "max_output_tokens": 50,
                           "truncation": "auto", "store": False, "tool_choice": "auto", "parallel_tool_calls": False,
                           "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}}}, None),
    "max_output_tokens cut": ({"model": "llama3.2", "input": "Hello there!", "max_output_tokens": 2}, None),
    "what Codex sends": ({"model": "llama3.2", "instructions": "You are Codex.", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix it"}]}], "tools": [WEATHER],
        "tool_choice": "auto", "parallel_tool_calls": False, "reasoning": {"effort": "none"}, "store": False,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "k", "client_metadata": {"x": "y"}}, None),
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", list(CASES))
def test_same_answer(fake, start_proxy, case, stream):
    body, headers = CASES[case]
    body = dict(body, stream=True) if stream else body
    proxy = start_proxy(fake.url)
    via, direct = compare(fake, proxy, body, headers)
    assert direct.status == 200, direct.body
    if stream:
        names = [e for e, _ in events(direct.body)]
        assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.completed"
    native_direct = fake.received[-1].native
    native_via = upstream_chat(fake)
    strip = json.loads(json.dumps(native_via["messages"]))
    want = json.loads(json.dumps(native_direct["messages"]))
    for message in strip + want:
        for call in message.get("tool_calls") or []:
            call["function"].pop("index", None)
    assert strip == want
    options = dict(native_via["options"])
    assert options.pop("num_ctx") > 0 and options.pop("num_predict", None) is not None  # the proxy's additions
    assert options == {k: v for k, v in native_direct["options"].items() if k != "num_predict"}
    assert native_via.get("think") == native_direct.get("think")
    assert native_via.get("format") == native_direct.get("format")
    assert [t["function"]["name"] for t in native_via.get("tools") or []] == [t["function"]["name"] for t in native_direct.get("tools") or []]


REFUSED = {
    "unknown item": {"model": "llama3.2", "input": [{"type": "bogus"}]},
    "missing type": {"model": "llama3.2", "input": [{"content": "x"}]},
    "unknown content": {"model": "llama3.2", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
    "file input": {"model": "llama3.2", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
    "image url": {"model": "llama3.2", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
    "bad arguments": {"model": "llama3.2", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]},
    "bad effort": {"model": "llama3.2", "input": "x", "reasoning": {"effort": "huge"}},
    "input a number": {"model": "llama3.2", "input": 5},
    "model a number": {"model": 5, "input": "x"},
    "unknown model": {"model": "nope", "input": "x"},
    "thinking on a model without it": {"model": "llama3.2", "input": "x", "reasoning": {"effort": "low"}},
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", list(REFUSED))
def test_same_error(fake, start_proxy, case, stream):
    """A request Ollama refuses gets the same status, error body and head through the proxy."""
    proxy = start_proxy(fake.url)
    via, direct = compare(fake, proxy, dict(REFUSED[case], stream=stream))
    assert direct.status in (400, 404), direct.body
    assert set(json.loads(direct.body)["error"]) == {"message", "type", "param", "code"}
