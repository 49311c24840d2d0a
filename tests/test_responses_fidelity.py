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
from test_agents_fidelity import Answer, events  # the same answer holder and exact SSE framing check

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
    "tool output as content items": ({"model": "llama3.2", "tools": [WEATHER], "input": [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": [
            {"type": "input_text", "text": "sunny, "}, {"type": "output_text", "text": "21C"},
            {"type": "input_image", "detail": "auto", "image_url": "data:image/png;base64," + PNG}]}]}, None),
    "assistant text between a call and its output": ({"model": "llama3.2", "tools": [WEATHER], "input": [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "s"}], "encrypted_content": "look it up"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\",\"n\":{\"b\":1,\"a\":2}}"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "q"}},
        {"type": "reasoning", "encrypted_content": "trailing thought"}]}, None),
    "empty input loads the model": ({"model": "llama3.2", "input": ""}, None),
    "tool echo with numbers and unknown keys": ({"model": "llama3.2", "input": "x", "tools": [
        {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {"n": {"type": "number", "minimum": 1.0, "maximum": 2.5}}},
         "extra": True}]}, None),
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
    "arguments an array": {"model": "llama3.2", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]},
    "arguments a bad character": {"model": "llama3.2", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{x}"}]},
    "content a number": {"model": "llama3.2", "input": [{"role": "user", "content": 5}]},
    "content item a string": {"model": "llama3.2", "input": [{"role": "user", "content": ["hi"]}]},
    "item a string": {"model": "llama3.2", "input": ["hi"]},
    "item null": {"model": "llama3.2", "input": [None]},
    "item type a number": {"model": "llama3.2", "input": [{"type": 5}]},
    "call_id a number": {"model": "llama3.2", "input": [{"type": "function_call", "call_id": 5, "name": "f"}]},
    "output an object": {"model": "llama3.2", "input": [{"type": "function_call_output", "call_id": "c", "output": {}}]},
    "output item unknown": {"model": "llama3.2", "input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "x"}]}]},
    "file in a tool output": {"model": "llama3.2", "input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_file", "file_id": "f"}]}]},
    "a type error before a bad input": {"temperature": "hot", "model": "llama3.2", "input": [{"type": "bogus"}]},
    "two type errors": {"model": "llama3.2", "top_p": "high", "temperature": "hot", "input": "x"},
    "max_output_tokens a fraction": {"model": "llama3.2", "input": "x", "max_output_tokens": 1.5},
    "reasoning a string": {"model": "llama3.2", "input": "x", "reasoning": "high"},
    "nested type error": {"model": "llama3.2", "input": "x", "text": {"format": {"type": 5}}},
    "tool name a number": {"model": "llama3.2", "input": "x", "tools": [{"type": "function", "name": 5}]},
    "namespace member name a number": {"model": "llama3.2", "input": "x", "tools": [{"type": "namespace", "name": "n", "tools": [{"type": "function", "name": 5}]}]},
    "tools an object": {"model": "llama3.2", "input": "x", "tools": {}},
    "body an array": [],
    "image bad prefix": {"model": "llama3.2", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:text/plain;base64,aGk="}]}]},
    "thinking on a model without it": {"model": "llama3.2", "input": "x", "reasoning": {"effort": "low"}},
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("case", list(REFUSED))
def test_same_error(fake, start_proxy, case, stream):
    """A request Ollama refuses gets the same status, error body and head through the proxy."""
    proxy = start_proxy(fake.url)
    body = REFUSED[case]
    via, direct = compare(fake, proxy, dict(body, stream=stream) if isinstance(body, dict) else body)
    assert direct.status in (400, 404), direct.body
    assert set(json.loads(direct.body)["error"]) == {"message", "type", "param", "code"}


def test_proxy_and_fake_are_independent_paths(fake, start_proxy):
    """The fake answers /v1/responses from its own layer (recording the native twin it made),
    the proxy through /api/chat: each comparison above checks two separate translations."""
    proxy = start_proxy(fake.url)
    compare(fake, proxy, {"model": "llama3.2", "instructions": "Be brief.", "input": "Hello there!", "max_output_tokens": 40})
    assert [r.path for r in fake.received if r.path != "/api/show"] == ["/api/chat", "/v1/responses"]
    assert fake.received[-1].native == {
        "model": "llama3.2", "stream": False, "options": {"temperature": 1.0, "num_predict": 40},
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there!"}]}
    sent = upstream_chat(fake)
    assert sent["messages"] == fake.received[-1].native["messages"] and sent["options"]["num_predict"] == 40
    assert "num_ctx" in sent["options"]  # the proxy's deliberate addition, invisible in answers


def test_fake_web_search_tool_is_not_modelled(fake):
    """The built-in web_search loop calls ollama.com; the fake says so instead of pretending."""
    answer = post(fake.port, {"model": "llama3.2", "input": "news?", "tools": [{"type": "web_search"}]})
    assert answer.status == 501 and "web_search" in json.loads(answer.body)["error"]["message"]


def test_fake_stream_framing_and_sequence(fake):
    """The fake's own stream: writeEvent framing, sequence numbers 0, 1, 2, ... and no [DONE]."""
    answer = post(fake.port, {"model": "qwen3:8b", "input": "hi", "stream": True, "reasoning": {"effort": "low"}},
                  headers={"X-Fake-Think-Chunks": "2"})
    assert answer.status == 200 and answer.header("content-type") == "text/event-stream"
    assert answer.header("cache-control") == "no-cache" and b"[DONE]" not in answer.body
    got = events(answer.body)
    assert [data["sequence_number"] for _, data in got] == list(range(len(got)))
    names = [name for name, _ in got]
    assert names[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert names.count("response.reasoning_summary_text.delta") == 2 and names[-1] == "response.completed"
    final = got[-1][1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert list(final) == sorted(final)  # a Go map: keys sorted
