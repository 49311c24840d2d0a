"""The OpenAI-compatible layer: golden transcripts, fidelity of the proxy's translation, clients.

(a) The fake Ollama's own ``/v1`` answers match the golden transcripts in ``tests/golden/``,
    written from ollama-api.md §6: same keys in the same order, same types and values, except
    ``id`` (checked for its prefix), ``created`` (an integer) and vector values (same length,
    unit norm).
(b) Fidelity (SPEC §7): for the same request, the proxy's translated answer (``/v1`` ->
    ``/api/chat``, ``/api/generate``, ``/api/embed`` -> back) and the fake's own ``/v1`` answer
    agree recursively: status, media type, keys, types and values, except the response ``id`` and
    ``created``; a stream has the same events in the same order. Also the native request the
    proxy sends equals the one Ollama's middleware would make, apart from the proxy's own
    modifiers (num_ctx, num_predict).
(c) The real ``openai`` client through the proxy, and what the fake received upstream (the
    deliberate differences: ``extra_body`` options and keep_alive, ``max_completion_tokens``).
(d) ``--no-translate``: ``/v1`` passes through untouched.
(e) A translated stream that breaks ends with an SSE error event, never a silent stop.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import re
import struct
from pathlib import Path
from typing import Any, List, Optional, Tuple

import openai
import pytest
from fake_ollama import Fault

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
GOLDEN = sorted(p.stem for p in GOLDEN_DIR.glob("*.json"))
TIMEOUT = 10.0
HELLO = [{"role": "user", "content": "Hello there!"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
# A tiny PNG (1x1, transparent) as a data URL.
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA"
       "60e6kgAAAABJRU5ErkJggg==")


def fake_text(n: int = 5) -> str:
    return "".join("tok%d " % i for i in range(n))


def load_golden(name: str) -> dict:
    with open(GOLDEN_DIR / (name + ".json"), encoding="utf-8") as f:
        return json.load(f)


# -- HTTP and SSE ---------------------------------------------------------------------------


def send(port: int, request: dict, timeout: float = TIMEOUT) -> Tuple[int, str, bytes]:
    """One request on a fresh connection: (status, content type, raw body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        body = request.get("body")
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(request.get("headers") or {})
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn.request(request.get("method", "POST"), request["path"], body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read()
    finally:
        conn.close()


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def sse_events(data: bytes) -> List[Any]:
    """The data payloads of an SSE body, JSON-decoded ("[DONE]" stays a string)."""
    events: List[Any] = []
    for block in data.decode("utf-8").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        assert all(line.startswith("data: ") for line in lines), "not an SSE data event: %r" % block
        payload = "\n".join(line[len("data: "):] for line in lines)
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def decode(content_type: str, data: bytes) -> Any:
    if media_type(content_type) == "text/event-stream":
        return sse_events(data)
    return json.loads(data) if data else None


# -- structural comparison ------------------------------------------------------------------

_ID_PREFIX = re.compile(r"^(chatcmpl-|cmpl-|call_)")  #: generated ids; model ids are exact


def _check_id(expected: Any, actual: Any, where: str) -> List[str]:
    """Ids are placeholders: same prefix ("chatcmpl-", "cmpl-", "call_"), then [a-z0-9]."""
    if not isinstance(actual, str):
        return ["%s: id %r is not a string" % (where, actual)]
    prefix = _ID_PREFIX.match(expected).group(1)
    tail = "[a-z0-9]{8}" if prefix == "call_" else "[a-z0-9]+"
    if not re.fullmatch(re.escape(prefix) + tail, actual):
        return ["%s: id %r does not look like %r" % (where, actual, expected)]
    return []


def _unit_floats(value: Any) -> Optional[List[float]]:
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack("<%df" % (len(raw) // 4), raw)) if len(raw) % 4 == 0 else None
    if isinstance(value, list) and all(isinstance(x, float) for x in value):
        return value
    return None


def _check_vector(expected: Any, actual: Any, where: str) -> List[str]:
    """Vector values are placeholders: same encoding and length, and a unit vector."""
    if type(expected) is not type(actual):
        return ["%s: embedding is %s, expected %s" % (where, type(actual).__name__,
                                                       type(expected).__name__)]
    want, got = _unit_floats(expected), _unit_floats(actual)
    if got is None or want is None or len(got) != len(want):
        return ["%s: embedding of %s values, expected %s" % (
            where, None if got is None else len(got), len(want or []))]
    norm = math.sqrt(sum(x * x for x in got))
    return [] if abs(norm - 1.0) < 1e-3 else ["%s: embedding norm %.6f" % (where, norm)]


def differences(expected: Any, actual: Any, *, golden: bool, path: Tuple[Any, ...] = ()
                ) -> List[str]:
    """Where ``actual`` differs from ``expected``, as readable lines (empty: they agree).

    Golden mode: key order too, generated ids (chatcmpl-, cmpl-, call_) by prefix, vectors by
    shape. Fidelity mode: the ``id`` of the response object (or SSE event) by prefix only;
    everything else exact, tool-call ids and vectors included. ``created`` is an integer in both modes.
    """
    where = "$" + "".join("[%r]" % p for p in path)
    key = path[-1] if path else None
    top_level = all(isinstance(p, int) for p in path[:-1])
    if key == "created":
        return [] if type(actual) is int else ["%s: created %r is not an integer" % (where, actual)]
    if key == "id" and isinstance(expected, str) and _ID_PREFIX.match(expected) and \
            (golden or top_level):
        return _check_id(expected, actual, where)
    if key == "embedding" and golden:
        return _check_vector(expected, actual, where)
    if type(expected) is not type(actual):
        return ["%s: %s %r, expected %s %r" % (where, type(actual).__name__, actual,
                                              type(expected).__name__, expected)]
    if isinstance(expected, dict):
        out: List[str] = []
        if golden and list(expected) != list(actual) and set(expected) == set(actual):
            out.append("%s: key order %s, expected %s" % (where, list(actual), list(expected)))
        missing, extra = set(expected) - set(actual), set(actual) - set(expected)
        if missing:
            out.append("%s: missing keys %s" % (where, sorted(missing)))
        if extra:
            out.append("%s: unexpected keys %s (%s)" % (
                where, sorted(extra), {k: actual[k] for k in sorted(extra)}))
        for k in expected:
            if k in actual:
                out += differences(expected[k], actual[k], golden=golden, path=path + (k,))
        return out
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return ["%s: %d items, expected %d: %s" % (where, len(actual), len(expected),
                                                       json.dumps(actual)[:2000])]
        out = []
        for i, (e, a) in enumerate(zip(expected, actual)):
            out += differences(e, a, golden=golden, path=path + (i,))
        return out
    return [] if expected == actual else ["%s: %r, expected %r" % (where, actual, expected)]


def assert_agree(expected: Any, actual: Any, *, golden: bool, what: str) -> None:
    found = differences(expected, actual, golden=golden)
    assert not found, "%s:\n  %s\nexpected: %s\nactual:   %s" % (
        what, "\n  ".join(found), json.dumps(expected)[:3000], json.dumps(actual)[:3000])


# -- (a) golden transcripts -----------------------------------------------------------------


def test_golden_files_well_formed():
    """Each golden file has request, response and notes; streams end with [DONE]."""
    assert len(GOLDEN) >= 8
    for name in GOLDEN:
        data = load_golden(name)
        assert set(data) == {"request", "response", "notes"}, name
        response = data["response"]
        assert ("events" in response) != ("body" in response), name
        if "events" in response:
            assert response["events"][-1] == "[DONE]", name


@pytest.mark.parametrize("name", GOLDEN)
def test_fake_v1_matches_golden(fake, name):
    """The fake's own /v1 answer has the golden transcript's structure and values."""
    golden = load_golden(name)
    status, ctype, data = send(fake.port, golden["request"])
    want = golden["response"]
    assert status == want["status"], data
    assert media_type(ctype) == want["content_type"]
    actual = decode(ctype, data)
    expected = want["events"] if "events" in want else want["body"]
    assert_agree(expected, actual, golden=True, what="golden %s" % name)


def test_fake_v1_request_mapping(fake):
    """The native request the fake's middleware makes (ollama-api.md §6.1)."""
    send(fake.port, {"path": "/v1/chat/completions", "body": {
        "model": "llama3.2", "stop": ["a", 1], "max_tokens": 7, "seed": 3,
        "options": {"num_ctx": 8192}, "keep_alive": "10m", "max_completion_tokens": 9,
        "response_format": {"type": "json_object"}, "reasoning_effort": "none",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}}]}]}})
    native = fake.received[-1].native
    assert native == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "look"},
                     {"role": "user", "content": "", "images": [PNG]}],
        "stream": False, "format": "json",
        "options": {"num_predict": 7, "seed": 3, "stop": ["a"], "temperature": 1.0,
                    "top_p": 1.0},
        "think": False}
    send(fake.port, {"path": "/v1/completions", "body": {
        "model": "llama3.2", "prompt": "x", "top_p": 0, "temperature": 0.2}})
    assert fake.received[-1].native["options"] == {
        "frequency_penalty": 0.0, "presence_penalty": 0.0, "temperature": 0.2, "top_p": 1.0}
    send(fake.port, {"path": "/v1/embeddings", "body": {
        "model": "all-minilm", "input": "", "encoding_format": "FLOAT"}})
    assert fake.received[-1].native == {"model": "all-minilm", "input": [""]}


# -- (b) fidelity: the proxy's translation against the fake's own /v1 -----------------------

IMAGE_MESSAGES = [{"role": "user", "content": [
    {"type": "text", "text": "What is in this picture?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}}]}]

FIDELITY = {name: load_golden(name)["request"] for name in GOLDEN}
FIDELITY.update({
    "chat_stream_usage_plain": {"path": "/v1/chat/completions", "body": {
        "model": "llama3.2", "messages": HELLO, "stream": True,
        "stream_options": {"include_usage": True}}},
    "chat_stream_reasoning": {"path": "/v1/chat/completions", "body": {
        "model": "qwen3:8b", "messages": HELLO, "stream": True}},
    "chat_nonstream_reasoning": {"path": "/v1/chat/completions", "body": {
        "model": "qwen3:8b", "messages": HELLO}},
    "chat_tools_reasoning_stream": {"path": "/v1/chat/completions", "body": {
        "model": "qwen3:8b", "messages": HELLO, "tools": TOOLS, "stream": True,
        "stream_options": {"include_usage": True}}},
    "chat_max_tokens_length": {"path": "/v1/chat/completions", "body": {
        "model": "llama3.2", "messages": HELLO, "max_tokens": 2}},
    "chat_image_data_url": {"path": "/v1/chat/completions", "body": {
        "model": "llama3.2", "messages": IMAGE_MESSAGES}},
    "chat_image_data_url_stream": {"path": "/v1/chat/completions", "body": {
        "model": "llama3.2", "messages": IMAGE_MESSAGES, "stream": True}},
    "chat_messages_empty": {"path": "/v1/chat/completions", "body": {
        "model": "llama3.2", "messages": []}},
    "chat_tools_unsupported": {"path": "/v1/chat/completions", "body": {
        "model": "all-minilm", "messages": HELLO, "tools": TOOLS}},
    "completion_stream": {"path": "/v1/completions", "body": {
        "model": "llama3.2", "prompt": "Say hi", "stream": True}},
    "completion_unknown_model": {"path": "/v1/completions", "body": {
        "model": "no-such-model", "prompt": "Say hi"}},
    "embeddings_full_float": {"path": "/v1/embeddings", "body": {
        "model": "nomic-embed-text", "input": ["first text", "second text"]}},
    "embeddings_full_base64": {"path": "/v1/embeddings", "body": {
        "model": "nomic-embed-text", "input": ["first text"], "encoding_format": "base64"}},
    "embeddings_bad_encoding": {"path": "/v1/embeddings", "body": {
        "model": "all-minilm", "input": "x", "encoding_format": "int8"}},
    "embeddings_unknown_model": {"path": "/v1/embeddings", "body": {
        "model": "no-such-model", "input": "x"}},
    "model_retrieve_missing": {"method": "GET", "path": "/v1/models/no-such-model"},
    "chat_zero_tokens_stream": {"path": "/v1/chat/completions", "headers": {
        "X-Fake-Chunks": "0"}, "body": {"model": "llama3.2", "messages": HELLO, "stream": True}},
    "chat_zero_tokens": {"path": "/v1/chat/completions", "headers": {"X-Fake-Chunks": "0"},
                         "body": {"model": "llama3.2", "messages": HELLO}},
    "chat_reasoning_none": {"path": "/v1/chat/completions", "body": {
        "model": "qwen3:8b", "messages": HELLO, "reasoning_effort": "none", "stream": True}},
    "chat_reasoning_on_llama": {"path": "/v1/chat/completions", "body": {
        "model": "llama3.2", "messages": HELLO, "reasoning": {"effort": "high"}}},
    "completion_reasoning_model_stream": {"path": "/v1/completions", "body": {
        "model": "qwen3:8b", "prompt": "x", "stream": True,
        "stream_options": {"include_usage": True}}},
    "completion_prompt_array": {"path": "/v1/completions", "body": {
        "model": "llama3.2", "prompt": ["x"]}},
    "chat_max_tokens_float": {"path": "/v1/chat/completions", "body": {
        "model": "llama3.2", "messages": HELLO, "max_tokens": 2.5}},
    "chat_content_null": {"path": "/v1/chat/completions", "body": {
        "model": "llama3.2", "messages": [{"role": "user"}]}},
    "chat_null_message": {"path": "/v1/chat/completions", "body": {
        "model": "llama3.2", "messages": [None]}},
    "chat_content_parts_empty": {"path": "/v1/chat/completions", "body": {
        "model": "llama3.2", "messages": [{"role": "user", "content": []}]}},
})
#: Cases where the proxy is known to answer differently from Ollama's /v1 (none at present).
PROXY_BUGS: dict = {}


NATIVE_PATH = {"/v1/chat/completions": "/api/chat", "/v1/completions": "/api/generate",
               "/v1/embeddings": "/api/embed"}


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.xfail(strict=True, reason="proxy bug: " + PROXY_BUGS[c]))
    if c in PROXY_BUGS else c for c in sorted(FIDELITY)])
def test_translation_fidelity(fake, start_proxy, case):
    """Same request to the fake's own /v1 and through the translating proxy: same answer."""
    request = FIDELITY[case]  # X-Fake-* headers pass through the proxy (fake_ollama docstring)
    proxy = start_proxy(fake.url)
    want_status, want_ctype, want_data = send(fake.port, request)
    before = len(fake.received)
    got_status, got_ctype, got_data = send(proxy.port, request)
    upstream = [r.path for r in fake.received[before:]]
    assert not any(p.startswith("/v1/") for p in upstream), "not translated: %s" % upstream
    if request["path"] in NATIVE_PATH and want_status == 200:
        assert NATIVE_PATH[request["path"]] in upstream, upstream
    assert got_status == want_status, "proxy %s %s, Ollama's /v1 %s %s" % (
        got_status, got_data[:500], want_status, want_data[:500])
    assert media_type(got_ctype) == media_type(want_ctype)
    got = decode(got_ctype, got_data)
    assert_agree(decode(want_ctype, want_data), got, golden=False,
                 what="%s: proxy vs Ollama's /v1" % case)
    if isinstance(got, list):  # one id per stream; chat chunks share one created
        chunks = [e for e in got if isinstance(e, dict)]
        assert len({e["id"] for e in chunks}) == 1
        if chunks[0]["object"] == "chat.completion.chunk":
            assert len({e["created"] for e in chunks}) == 1


def _go_equivalent(native: dict) -> dict:
    """A native request as Ollama reads it: whole floats as integers (Go writes float 1.0 as
    1), and ``"index": 0`` dropped from the tool calls of its messages (Go writes it and reads
    its absence as 0)."""
    native = json.loads(json.dumps(native),
                        parse_float=lambda text: int(float(text)) if float(text).is_integer()
                        else float(text))
    for message in native.get("messages") or []:
        for call in message.get("tool_calls") or []:
            if call.get("function", {}).get("index") == 0:
                del call["function"]["index"]
    return native


def _native_sent(fake, path: str):
    matching = [r for r in fake.received if r.path == path]
    assert matching, "nothing on %s (got %s)" % (path, [r.target for r in fake.received])
    return matching[-1].json


@pytest.mark.parametrize("path,native_path,body", [
    ("/v1/chat/completions", "/api/chat", {
        "model": "llama3.2", "messages": IMAGE_MESSAGES + [
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
        "tools": TOOLS, "stop": "END", "seed": 1, "top_p": 0.5, "max_tokens": 300,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object"}}},
        "reasoning_effort": "none"}),
    ("/v1/chat/completions", "/api/chat", {"model": "llama3.2", "messages": HELLO,
                                           "stream": True}),
    ("/v1/completions", "/api/generate", {"model": "llama3.2", "prompt": "Say hi",
                                          "suffix": "", "stop": ["a", "b"], "max_tokens": 300}),
    ("/v1/embeddings", "/api/embed", {"model": "all-minilm", "input": ["a", "b"],
                                      "dimensions": 8, "encoding_format": "base64"}),
])
def test_translated_request_matches_ollama_middleware(fake, start_proxy, path, native_path, body):
    """The native request the proxy sends is what Ollama's middleware makes of the /v1 request
    (the fake records that as ``Received.native``), plus only the proxy's num_ctx/num_predict."""
    send(fake.port, {"path": path, "body": body})
    want = fake.received[-1].native
    proxy = start_proxy(fake.url)
    status, _, data = send(proxy.port, {"path": path, "body": body})
    assert status == 200, data
    got = dict(_native_sent(fake, native_path))
    if "options" in got:
        got["options"] = {k: v for k, v in got["options"].items()
                          if k not in ("num_ctx", "num_predict") or k in want.get("options", {})}
        if not got["options"] and "options" not in want:
            del got["options"]
    assert_agree(_go_equivalent(want), _go_equivalent(got), golden=False,
                 what="native request for %s" % path)


# -- (c) the openai client through the proxy ------------------------------------------------


@pytest.fixture
def aclient(proxy):
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0,
                       timeout=TIMEOUT) as client:
        yield client


def test_openai_chat(fake, aclient):
    """chat.completions.create reaches /api/chat with the proxy's num_ctx and num_predict."""
    done = aclient.chat.completions.create(model="llama3.2", messages=HELLO)
    assert done.choices[0].message.content == fake_text()
    assert done.choices[0].finish_reason == "stop" and done.object == "chat.completion"
    assert done.usage.prompt_tokens == 13 and done.usage.completion_tokens == 5
    assert done.system_fingerprint == "fp_ollama"
    sent = _native_sent(fake, "/api/chat")
    assert sent["messages"] == HELLO and sent["stream"] is False
    assert sent["options"]["num_ctx"] == min(131072, 16384)
    assert sent["options"]["num_predict"] == 4096
    assert sent["options"]["temperature"] == 1.0 and sent["options"]["top_p"] == 1.0
    assert not any(r.path.startswith("/v1/") for r in fake.received)


def test_openai_chat_stream(fake, aclient):
    """stream=True: the deltas join to the text; the finish chunk says stop; usage when asked."""
    chunks = list(aclient.chat.completions.create(
        model="llama3.2", messages=HELLO, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == fake_text()
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and all(f is None for f in finish[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert _native_sent(fake, "/api/chat")["stream"] is True
    plain = list(aclient.chat.completions.create(model="llama3.2", messages=HELLO, stream=True))
    assert all(c.usage is None for c in plain) and plain[-1].choices[0].finish_reason == "stop"


def test_openai_chat_tools(fake, aclient):
    """A tool call comes back parsed: id, name, JSON arguments, finish_reason tool_calls."""
    done = aclient.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == ""
    (call,) = choice.message.tool_calls
    assert re.fullmatch(r"call_[a-z0-9]{8}", call.id) and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "x"}
    assert _native_sent(fake, "/api/chat")["tools"] == TOOLS
    chunks = list(aclient.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=TOOLS, stream=True))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [(tc.id, tc.function.name, tc.function.arguments) for tc in calls] == [
        (call.id, "get_weather", "{\"city\":\"x\"}")]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_completions(fake, aclient):
    """completions.create, plain and streamed, through /api/generate."""
    done = aclient.completions.create(model="llama3.2", prompt="Say hi")
    assert done.choices[0].text == fake_text() and done.choices[0].finish_reason == "stop"
    assert done.usage.prompt_tokens == 12
    sent = _native_sent(fake, "/api/generate")
    assert sent["prompt"] == "Say hi" and sent["options"]["num_predict"] == 4096
    pieces = list(aclient.completions.create(model="llama3.2", prompt="Say hi", stream=True))
    assert "".join(p.choices[0].text for p in pieces) == fake_text()
    assert pieces[-1].choices[0].finish_reason == "stop"


def test_openai_embeddings(fake, aclient):
    """embeddings.create with a list (the SDK asks for base64 and decodes it) and with an
    explicit encoding_format="base64" (the SDK hands back the string)."""
    emb = aclient.embeddings.create(model="nomic-embed-text", input=["first", "second"])
    assert [d.index for d in emb.data] == [0, 1] and len(emb.data[0].embedding) == 768
    assert abs(math.sqrt(sum(x * x for x in emb.data[1].embedding)) - 1.0) < 1e-4
    assert emb.usage.prompt_tokens == 4 and emb.model == "nomic-embed-text"
    assert _native_sent(fake, "/api/embed")["input"] == ["first", "second"]
    b64 = aclient.embeddings.create(model="all-minilm", input="a", encoding_format="base64")
    raw = base64.b64decode(b64.data[0].embedding)
    vec = struct.unpack("<384f", raw)
    assert abs(math.sqrt(sum(x * x for x in vec)) - 1.0) < 1e-4
    native = send(fake.port, {"path": "/api/embed", "body": {"model": "all-minilm",
                                                             "input": "a"}})
    assert list(vec) == pytest.approx(json.loads(native[2])["embeddings"][0], abs=1e-7)


def test_openai_extra_body_options_and_keep_alive(fake, aclient):
    """extra_body options and keep_alive are honoured (a deliberate difference from Ollama's
    /v1); the client's num_ctx stays when under the cap."""
    aclient.chat.completions.create(
        model="llama3.2", messages=HELLO,
        extra_body={"options": {"num_ctx": 4096, "temperature": 0.1}, "keep_alive": "10m"})
    sent = _native_sent(fake, "/api/chat")
    assert sent["options"]["num_ctx"] == 4096
    assert sent["options"]["temperature"] == 0.1
    assert sent["keep_alive"] == "10m"
    assert fake.loaded["llama3.2:latest"]["num_ctx"] == 4096


def test_openai_max_completion_tokens(fake, aclient):
    """max_completion_tokens becomes num_predict (Ollama's /v1 ignores it)."""
    done = aclient.chat.completions.create(model="llama3.2", messages=HELLO,
                                           max_completion_tokens=50)
    assert _native_sent(fake, "/api/chat")["options"]["num_predict"] == 50
    assert done.choices[0].finish_reason == "stop"
    cut = aclient.chat.completions.create(model="llama3.2", messages=HELLO,
                                          max_completion_tokens=2)
    assert cut.choices[0].message.content == fake_text(2)
    assert cut.choices[0].finish_reason == "length"


def test_openai_errors(fake, aclient):
    """Errors reach the client as the SDK's typed exceptions with Ollama's messages."""
    with pytest.raises(openai.NotFoundError) as info:
        aclient.chat.completions.create(model="no-such-model", messages=HELLO)
    assert info.value.body["message"] == "model 'no-such-model' not found"
    with pytest.raises(openai.BadRequestError) as info:
        aclient.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}])
    assert info.value.body["message"] == ("image URLs are not currently supported, please use "
                                          "base64 encoded data instead")
    with pytest.raises(openai.BadRequestError) as info:
        aclient.chat.completions.create(model="llama3.2", messages=[])
    assert info.value.body["message"] == "[] is too short - 'messages'"


def test_openai_models(fake, aclient):
    """models.list and models.retrieve are answered from /api/tags."""
    ids = [m.id for m in aclient.models.list()]
    own = json.loads(send(fake.port, {"method": "GET", "path": "/v1/models"})[2])
    assert ids == [m["id"] for m in own["data"]] == [m.name for m in fake.models]
    model = aclient.models.retrieve("llama3.2")
    assert model.id == "llama3.2" and model.owned_by == "library"
    with pytest.raises(openai.NotFoundError):
        aclient.models.retrieve("no-such-model")


# -- (d) --no-translate ---------------------------------------------------------------------


def test_no_translate_passes_v1_through(fake, start_proxy):
    """With translation off, /v1 goes upstream untouched and the answer is Ollama's own."""
    proxy = start_proxy(fake.url, translate=False)
    body = json.dumps({"model": "llama3.2", "messages": HELLO,
                       "options": {"num_ctx": 4096}}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200
    rec = fake.received[-1]
    assert rec.path == "/v1/chat/completions" and rec.body == body
    assert not any(r.path == "/api/chat" for r in fake.received)
    assert answer["choices"][0]["message"]["content"] == fake_text()
    # Ollama's own /v1 dropped options.num_ctx: the runner got the automatic default
    assert fake.loaded["llama3.2:latest"]["automatic"] is True
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0,
                       timeout=TIMEOUT) as client:
        chunks = list(client.chat.completions.create(model="llama3.2", messages=HELLO,
                                                     stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == fake_text()
    assert fake.received[-1].path == "/v1/chat/completions"


# -- (e) a broken translated stream ---------------------------------------------------------


def test_broken_stream_ends_with_error_event(fake, proxy):
    """The native stream is cut after two lines: the SSE stream ends with an error event
    (no [DONE]), and the openai client raises APIError instead of ending quietly."""
    fake.add_fault(Fault(path="/api/chat", close_after=2))
    status, ctype, data = send(proxy.port, {"path": "/v1/chat/completions", "body": {
        "model": "llama3.2", "messages": HELLO, "stream": True}})
    assert status == 200 and media_type(ctype) == "text/event-stream"
    events = sse_events(data)
    assert "[DONE]" not in events
    assert [e["choices"][0]["delta"].get("content") for e in events[:2]] == ["tok0 ", "tok1 "]
    last = events[-1]
    assert set(last) == {"error"} and set(last["error"]) >= {"message", "type"}
    assert last["error"]["message"]
    fake.add_fault(Fault(path="/api/chat", close_after=2))
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0,
                       timeout=TIMEOUT) as client:
        stream = client.chat.completions.create(model="llama3.2", messages=HELLO, stream=True)
        got = []
        with pytest.raises(openai.APIError):
            for chunk in stream:
                got.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in got) == fake_text(2)


# -- found while testing: a 5xx upstream answer must not poison the pooled connection -------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_upstream_5xx_does_not_poison_next_request(fake, proxy, path):
    """A 500 from Ollama reaches the client as is, and the next request is answered normally."""
    fake.add_fault(Fault(path="/api/chat", status=500, error="boom"))
    body = {"model": "llama3.2", "messages": HELLO, "stream": False}
    status, _, data = send(proxy.port, {"path": path, "body": body})
    assert status == 500 and b"boom" in data
    status, _, data = send(proxy.port, {"path": path, "body": body})
    assert status == 200, data
    answer = json.loads(data)
    text = (answer["choices"][0]["message"]["content"] if path.startswith("/v1/")
            else answer["message"]["content"])
    assert text == fake_text()
