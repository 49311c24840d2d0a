"""The coding agents' Anthropic route, /v1/messages (SPEC §7.2, agents-api.md §1).

(a) The pure translators, table-tested: request -> native /api/chat (FromMessagesRequest's
    mapping and the middleware's checks with their texts), native answer -> Messages answer
    (ToMessagesResponse), native stream -> SSE events (StreamConverter.Process).
(b) The real ``anthropic`` SDK through the proxy against the fake: what reached Ollama is an
    /api/chat request with the proxy's num_ctx, num_predict from max_tokens and keep_alive; the
    answers, streamed and not, with text and with tool use.
(c) The deliberate differences: ping events while a stream waits, ``event: error`` when it
    breaks, ``model_context_window_exceeded`` when the context, not max_tokens, stopped it.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
from typing import Any, Dict, List, Tuple

import anthropic
import pytest
from fake_ollama import Fault

import ollama_proxy as op

TIMEOUT = 10.0
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
WEATHER = {"name": "get_weather", "description": "Get the weather", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def upstream(fake) -> Dict[str, Any]:
    """The body of the last request the fake received (the proxy's native /api/chat)."""
    return json.loads(fake.received[-1].body)


def text(n: int = 5) -> str:
    return "".join("tok%d " % i for i in range(n))


# -- (a) request translation ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "body, native",
    [
        # the minimum: max_tokens becomes num_predict; stream false unless asked
        ({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]},
         {"model": "m", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 100}, "stream": False}),
        # system as a string first; sampling only when given; stop_sequences -> stop
        ({"model": "m", "max_tokens": 5, "system": "be brief", "temperature": 0.2, "top_k": 3, "top_p": 0.9,
          "stop_sequences": ["END"], "stream": True, "messages": [{"role": "user", "content": "hi"}]},
         {"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
          "options": {"num_predict": 5, "temperature": 0.2, "top_p": 0.9, "top_k": 3, "stop": ["END"]}, "stream": True}),
        # system blocks: the text blocks concatenated with no separator, cache_control dropped
        ({"model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B", "cache_control": {"type": "ephemeral"}},
                                                    {"type": "image", "source": {}}], "messages": [{"role": "user", "content": "q"}]},
         {"model": "m", "messages": [{"role": "system", "content": "AB"}, {"role": "user", "content": "q"}], "options": {"num_predict": 5},
          "stream": False}),
        # blocks: text joined, images decoded, thinking (the last one), tool_use -> tool_calls
        ({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look "}, {"type": "text", "text": "here"},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
            {"role": "Assistant", "content": [{"type": "thinking", "thinking": "first", "signature": "s"}, {"type": "thinking", "thinking": "hmm"},
                                              {"type": "text", "text": "calling"},
                                              {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny", "is_error": True},
                                         {"type": "text", "text": "thanks"}]}]},
         {"model": "m", "messages": [
             {"role": "user", "content": "look here", "images": [PNG]},
             {"role": "assistant", "content": "calling", "tool_calls": [{"id": "toolu_1", "function": {"name": "get_weather",
                                                                                                   "arguments": {"city": "Paris", "a": 1}}}],
              "thinking": "hmm"},
             {"role": "tool", "content": "sunny", "tool_call_id": "toolu_1"},
             {"role": "user", "content": "thanks"}], "options": {"num_predict": 5}, "stream": False}),
        # a tool_result with blocks: text joined, images attached; a user message of results only
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "text", "text": "a"}, {"type": "image", "source": {"type": "base64", "data": PNG}}, {"type": "text", "text": "b"}]}]}]},
         {"model": "m", "messages": [{"role": "tool", "content": "ab", "images": [PNG], "tool_call_id": "t"}], "options": {"num_predict": 5},
          "stream": False}),
        # unknown blocks are dropped, and a message left with nothing emits nothing
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]},
                                                      {"role": "user", "content": "x"}]},
         {"model": "m", "messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 5}, "stream": False}),
        # tools: plain functions (Anthropic-defined types too); thinking enabled -> think true
        ({"model": "m", "max_tokens": 5, "tools": [WEATHER, {"type": "bash_20250124", "name": "bash"}], "thinking": {"type": "enabled",
                                                                                                                    "budget_tokens": 99},
          "messages": [{"role": "user", "content": "x"}]},
         {"model": "m", "messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 5}, "stream": False,
          "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": WEATHER["input_schema"]}},
                    {"type": "function", "function": {"name": "bash"}}], "think": True}),
        # thinking disabled -> false; adaptive takes output_config.effort (xhigh -> high)
        ({"model": "m", "max_tokens": 5, "thinking": {"type": "disabled"}, "output_config": {"effort": "high"}, "messages": [{"role": "user", "content": "x"}]},
         {"model": "m", "messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 5}, "stream": False, "think": False}),
        ({"model": "m", "max_tokens": 5, "thinking": {"type": "adaptive"}, "output_config": {"effort": " XHigh "}, "messages": [{"role": "user", "content": "x"}]},
         {"model": "m", "messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 5}, "stream": False, "think": "high"}),
        ({"model": "m", "max_tokens": 5, "output_config": {"effort": "none"}, "messages": [{"role": "user", "content": "x"}]},
         {"model": "m", "messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 5}, "stream": False}),
        # web search is Ollama's own server tool (it calls ollama.com): left out here
        ({"model": "m", "max_tokens": 5, "tools": [{"type": "web_search_20250305", "name": "web_search"}], "messages": [{"role": "user", "content": "x"}]},
         {"model": "m", "messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 5}, "stream": False}),
    ],
)
def test_anthropic_request_to_native(body, native):
    assert op.anthropic_messages_to_native(body) == native


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "json: cannot unmarshal array into Go value of type anthropic.MessagesRequest"),
        ({"model": 1}, "json: cannot unmarshal number into Go struct field MessagesRequest.model of type string"),
        ({"model": "m", "max_tokens": "9"}, "json: cannot unmarshal string into Go struct field MessagesRequest.max_tokens of type int"),
        ({"model": "m", "max_tokens": 1.5}, "json: cannot unmarshal number 1.5 into Go struct field MessagesRequest.max_tokens of type int"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model is required"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens is required and must be positive"),
        ({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens is required and must be positive"),
        ({"model": "m", "max_tokens": 5}, "messages is required"),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages is required"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image"}]}]}, "invalid image source"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x"}}]}]},
         "invalid image source type: url. Only base64 images are supported."),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "%%%"}}]}]},
         "invalid base64 image data"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f"}]}]},
         "tool_use block missing required 'id' field"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t"}]}]},
         "tool_use block missing required 'name' field"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "content": [{"type": "image", "source": "x"}]}]}]},
         "invalid tool_result image source"),
        ({"model": "m", "max_tokens": 5, "tools": [{"name": "f", "input_schema": "nope"}], "messages": [{"role": "user", "content": "x"}]},
         'invalid input_schema for tool "f"'),
    ],
)
def test_anthropic_request_refused_as_ollama_refuses_it(body, message):
    with pytest.raises(op.BadRequest) as info:
        op.anthropic_messages_to_native(body)
    assert info.value.message.startswith(message)


def test_anthropic_estimate_is_ollamas_len_over_four():
    """EstimateInputTokens: bytes of system, roles, text and thinking, tool blocks as JSON, tools; /4, at least 1."""
    body = {"system": "s" * 40, "messages": [{"role": "user", "content": "u" * 36}], "tools": [{"name": "ab", "description": "cd"}]}
    assert op.anthropic_estimate_tokens(body) == (40 + 4 + 36 + 2 + 2) // 4
    assert op.anthropic_estimate_tokens({"messages": [{"role": "u", "content": ""}]}) == 1


# -- (a) answers -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "native, num_predict, content, stop_reason",
    [
        ({"message": {"role": "assistant", "content": "hi"}, "done_reason": "stop"}, 0, [{"type": "text", "text": "hi"}], "end_turn"),
        ({"message": {"role": "assistant", "content": "hi", "thinking": "t"}, "done_reason": "length", "eval_count": 9}, 9,
         [{"type": "thinking", "thinking": "t"}, {"type": "text", "text": "hi"}], "max_tokens"),
        # the context ran out before max_tokens: the proxy says so (SPEC §7.2)
        ({"message": {"role": "assistant", "content": "hi"}, "done_reason": "length", "eval_count": 3}, 32000,
         [{"type": "text", "text": "hi"}], "model_context_window_exceeded"),
        ({"message": {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "function": {"name": "f", "arguments": {"b": 1, "a": 2}}}]},
          "done_reason": "length"}, 0, [{"type": "tool_use", "id": "call_1", "name": "f", "input": {"b": 1, "a": 2}}], "tool_use"),
        ({"message": {"role": "assistant", "content": ""}, "done_reason": "unload"}, 0, None, "stop_sequence"),
        ({"message": {"role": "assistant", "content": ""}}, 0, None, None),
    ],
)
def test_native_chat_to_anthropic(native, num_predict, content, stop_reason):
    native = dict(native, model="qwen3:8b", done=True, prompt_eval_count=7, eval_count=native.get("eval_count", 2))
    out = op.native_chat_to_anthropic(native, "claude-sonnet-4-5", "msg_x", num_predict)
    expected = {"id": "msg_x", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": content}
    if stop_reason:
        expected["stop_reason"] = stop_reason
    expected["usage"] = {"input_tokens": 7, "output_tokens": native["eval_count"]}
    assert out == expected and list(out) == list(expected)


def events(data: bytes) -> List[Tuple[str, Dict[str, Any]]]:
    out = []
    for chunk in data.decode().split("\n\n"):
        if not chunk:
            continue
        head, _, body = chunk.partition("\ndata: ")
        assert head.startswith("event: ")
        out.append((head[len("event: "):], json.loads(body)))
    return out


def test_stream_translator_thinking_text_tool_sequence():
    """The event sequence of agents-api.md §1.6: thinking, text, a whole tool call, the end."""
    t = op.AnthropicStreamTranslator("claude", "msg_1", 42)
    out = t.feed({"message": {"role": "assistant", "thinking": "Let me"}, "done": False})
    out += t.feed({"message": {"role": "assistant", "thinking": " see"}, "done": False})
    out += t.feed({"message": {"role": "assistant", "content": "Hello"}, "done": False})
    out += t.feed({"message": {"role": "assistant", "thinking": "late"}, "done": False})  # dropped once thinking is closed
    out += t.feed({"message": {"role": "assistant", "content": "", "tool_calls": [{"id": "call_a", "function": {"name": "Read", "arguments": {"file_path": "/x"}}}]},
                   "done": False})
    out += t.feed({"message": {"role": "assistant", "content": "", "tool_calls": [{"id": "call_a", "function": {"name": "Read", "arguments": {}}}]},
                   "done": True, "done_reason": "stop", "prompt_eval_count": 812, "eval_count": 64})
    got = events(out)
    assert [e for e, _ in got] == ["message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                                   "content_block_start", "content_block_delta", "content_block_stop",
                                   "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert got[0][1] == {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                                                              "content": [], "usage": {"input_tokens": 42, "output_tokens": 0}}}
    assert got[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}
    assert got[3][1]["delta"] == {"type": "thinking_delta", "thinking": " see"}
    assert got[5][1] == {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}
    assert got[8][1] == {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "call_a", "name": "Read", "input": {}}}
    assert got[9][1] == {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"file_path":"/x"}'}}
    assert got[11][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"input_tokens": 812, "output_tokens": 64}}
    assert t.finished and t.feed({"done": True}) == b""


def test_stream_translator_error_line_ends_with_error_event():
    t = op.AnthropicStreamTranslator("claude", "msg_1", 1)
    out = t.feed({"message": {"role": "assistant", "content": "a"}, "done": False}) + t.feed({"error": "model crashed"})
    got = events(out)
    assert got[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "model crashed"}})
    assert t.finished and t.fail("again") == b""


# -- (b) the anthropic SDK through the proxy -----------------------------------------------------------

def client(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key="anything", max_retries=0, timeout=TIMEOUT)


def test_sdk_messages_create_reaches_ollama_as_chat_with_the_context(fake, start_proxy):
    """messages.create: the upstream request is /api/chat with the model's num_ctx, num_predict
    from max_tokens and --keep-alive; the answer is the fake's text as one text block."""
    proxy = start_proxy(fake.url, "--keep-alive", "*=30m")
    with client(proxy) as c:
        raw = c.messages.with_raw_response.create(model="llama3.2", max_tokens=300, system="be brief",
                                                  messages=[{"role": "user", "content": "hello"}])
        reply = raw.parse()
    assert reply.content[0].type == "text" and reply.content[0].text == text()
    assert reply.stop_reason == "end_turn" and reply.model == "llama3.2" and re.fullmatch(r"msg_[0-9a-f]{24}", reply.id)
    assert reply.usage.output_tokens == 5 and reply.usage.input_tokens > 0
    assert fake.received[-1].path == "/api/chat"
    sent = upstream(fake)
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert sent["options"]["num_predict"] == 300
    assert sent["options"]["num_ctx"] == int(raw.headers["x-ollama-proxy-num-ctx"]) > 4096
    assert sent["keep_alive"] == "30m" and sent["stream"] is False


def test_sdk_messages_stream_text(fake, proxy):
    with client(proxy) as c:
        with c.messages.stream(model="llama3.2", max_tokens=100, messages=[{"role": "user", "content": "stream"}]) as stream:
            chunks = list(stream.text_stream)
            final = stream.get_final_message()
    assert "".join(chunks) == text()
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5
    assert fake.received[-1].path == "/api/chat" and upstream(fake)["stream"] is True


def test_sdk_tool_use_round_trip(fake, proxy):
    """A tool call streamed and not; its result sent back as a tool message with the call's id."""
    with client(proxy) as c:
        reply = c.messages.create(model="llama3.2", max_tokens=100, tools=[WEATHER], messages=[{"role": "user", "content": "weather?"}])
        assert reply.stop_reason == "tool_use"
        call = reply.content[-1]
        assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "x"}
        with c.messages.stream(model="llama3.2", max_tokens=100, tools=[WEATHER], messages=[{"role": "user", "content": "weather?"}]) as stream:
            final = stream.get_final_message()
        assert final.content[-1].type == "tool_use" and final.content[-1].input == {"city": "x"} and final.stop_reason == "tool_use"
        c.messages.create(model="llama3.2", max_tokens=100, tools=[WEATHER], messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}])
    messages = upstream(fake)["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == call.id
    assert messages[-1] == {"role": "tool", "content": "sunny", "tool_call_id": call.id}


def test_sdk_errors_in_anthropic_shape(fake, proxy):
    """Ollama's own errors on the route reach the SDK as its typed exceptions: a model it lacks (404)
    and a request the middleware refuses (400)."""
    with client(proxy) as c:
        with pytest.raises(anthropic.NotFoundError) as info:
            c.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
        assert info.value.body["error"]["type"] == "not_found_error" and "nope" in info.value.body["error"]["message"]
        with pytest.raises(anthropic.BadRequestError) as info:
            c.messages.create(model="llama3.2", max_tokens=0, messages=[{"role": "user", "content": "x"}])
        assert info.value.body["error"]["message"] == "max_tokens is required and must be positive"


def raw_post(port: int, path: str, body: Any, timeout: float = TIMEOUT) -> Tuple[int, Dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_query_string_accepted(fake, proxy):
    """Claude Code posts to /v1/messages?beta=true."""
    status, headers, body = raw_post(proxy.port, "/v1/messages?beta=true", {"model": "llama3.2", "max_tokens": 9, "messages": [{"role": "user", "content": "q"}]})
    assert status == 200 and json.loads(body)["type"] == "message"
    assert fake.received[-1].target.startswith("/api/chat")


# -- (c) the deliberate differences ------------------------------------------------------------------

def _chat_answer(done_reason: str, eval_count: int) -> bytes:
    body = json.dumps({"model": "qwen3-coder:30b", "created_at": "2026-01-01T00:00:00Z", "message": {"role": "assistant", "content": "one"},
                       "done": True, "done_reason": done_reason, "prompt_eval_count": 4090, "eval_count": eval_count}).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.parametrize("eval_count, stop_reason", [(6, "model_context_window_exceeded"), (32000, "max_tokens")])
def test_context_exhausted_is_not_max_tokens(scripted, start_proxy, eval_count, stop_reason):
    """Native done_reason "length" with fewer tokens than max_tokens: the context ran out, and
    /v1/messages says model_context_window_exceeded, not max_tokens (which Claude Code reads as
    its own output cap, ollama#16618); at max_tokens it stays max_tokens."""
    upstream = scripted([_chat_answer("length", eval_count)])
    proxy = start_proxy(upstream.url, "--context-mode", "off")
    status, _, body = raw_post(proxy.port, "/v1/messages", {"model": "claude-x", "max_tokens": 32000, "messages": [{"role": "user", "content": "q"}]})
    assert status == 200 and json.loads(body)["stop_reason"] == stop_reason


def test_stream_broken_mid_way_ends_with_error_event(fake, proxy):
    fake.add_fault(Fault(path="/api/chat", close_after=2))
    status, headers, body = raw_post(proxy.port, "/v1/messages", {"model": "llama3.2", "max_tokens": 50, "stream": True,
                                                                 "messages": [{"role": "user", "content": "q"}]})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    got = events(body)
    assert got[0][0] == "message_start" and got[-1][0] == "error" and got[-1][1]["error"]["type"] == "api_error"


def test_cold_load_sends_ping_events(fake, start_proxy):
    """A stream that waits longer than --heartbeat gets its head, then Anthropic ping events."""
    proxy = start_proxy(fake.url, "--heartbeat", "0.2")
    fake.add_fault(Fault(path="/api/chat", delay_before_headers=0.7))
    status, headers, body = raw_post(proxy.port, "/v1/messages", {"model": "llama3.2", "max_tokens": 50, "stream": True,
                                                                 "messages": [{"role": "user", "content": "q"}]})
    got = events(body)
    names = [e for e, _ in got]
    assert status == 200 and names[0] == "ping" and got[0][1] == {"type": "ping"}
    assert "message_start" in names and names[-1] == "message_stop"
    assert all(n == "ping" for n in names[: names.index("message_start")])


def test_images_reach_ollama_as_base64(fake, proxy):
    status, _, _ = raw_post(proxy.port, "/v1/messages", {"model": "llama3.2", "max_tokens": 9, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}, {"type": "text", "text": "what?"}]}]})
    assert status == 200
    assert upstream(fake)["messages"][-1]["images"] == [PNG]
    assert base64.b64decode(PNG).startswith(b"\x89PNG")


def test_thinking_relaxed_for_a_model_that_cannot_think(fake, proxy):
    """thinking on a model without the capability: Ollama's middleware relaxes it (no 400), and so
    does the proxy; a thinking model keeps it."""
    body = {"model": "llama3.2", "max_tokens": 20, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "q"}]}
    status, _, answer = raw_post(proxy.port, "/v1/messages", body)
    assert status == 200, answer
    assert "think" not in upstream(fake)
    status, _, answer = raw_post(proxy.port, "/v1/messages", dict(body, model="qwen3:8b"))
    assert status == 200, answer
    assert upstream(fake)["think"] is True


def test_no_translate_passes_the_route_through(fake, start_proxy):
    """--no-translate: /v1/messages goes to Ollama as it came (the fake's own Anthropic layer answers it)."""
    proxy = start_proxy(fake.url, "--no-translate")
    body = {"model": "llama3.2", "max_tokens": 20, "messages": [{"role": "user", "content": "q"}]}
    status, _, _ = raw_post(proxy.port, "/v1/messages?beta=true", body)
    assert fake.received[-1].target == "/v1/messages?beta=true" and json.loads(fake.received[-1].body) == body
    assert status == 200 and fake.received[-1].native is not None  # the fake's middleware, not the proxy, translated it


# -- count_tokens, the stable prefix, event logging ---------------------------------------------------

BILLING = "x-anthropic-billing-header: cc_version=2.1.42.a1b; cc_entrypoint=cli; cch=%s;"


@pytest.mark.parametrize(
    "system, fixed",
    [
        (BILLING % "3f9a2" + "\nYou are Claude Code.", BILLING % "00000" + "\nYou are Claude Code."),
        ([{"type": "text", "text": BILLING % "abcde"}, {"type": "text", "text": "You are Claude Code."}],
         [{"type": "text", "text": BILLING % "00000"}, {"type": "text", "text": "You are Claude Code."}]),
        ("You are Claude Code. cch=12345;", "You are Claude Code. cch=12345;"),  # only at the start, in the header
        ("x-anthropic-billing-header: cc_version=1; no hash here", "x-anthropic-billing-header: cc_version=1; no hash here"),
        (None, None),
    ],
)
def test_stable_system_prefix(system, fixed):
    body = {"model": "m", "messages": []} if system is None else {"model": "m", "system": system, "messages": []}
    before = json.dumps(body)
    out = op.stable_system_prefix(body)
    assert out.get("system") == fixed and json.dumps(body) == before  # the request itself is not changed


def test_billing_hash_is_pinned_so_the_prompt_prefix_repeats(fake, start_proxy):
    """Two turns that differ only in Claude Code's per-request hash reach Ollama with the same
    system text (its prompt cache can hit), and with different ones under --no-stable-prefix."""
    for flags, same in (((), True), (("--no-stable-prefix",), False)):
        proxy = start_proxy(fake.url, *flags)
        systems = []
        for cch in ("1a2b3", "9f8e7"):
            status, _, _ = raw_post(proxy.port, "/v1/messages", {"model": "llama3.2", "max_tokens": 9, "system": BILLING % cch + "\nBe helpful.",
                                                                 "messages": [{"role": "user", "content": "q"}]})
            assert status == 200
            systems.append(upstream(fake)["messages"][0]["content"])
        assert (systems[0] == systems[1]) is same
        assert systems[0].endswith("\nBe helpful.")
        second = fake.received[-1]
        # the fake's prompt cache: with the hash pinned, turn 2 reuses all of turn 1's system
        # prompt; without, the reuse stops at the hash (agents-api.md §3.1: 80 s -> 4 s a turn)
        if same:
            assert second.cache_reuse >= len(systems[0])
        else:
            assert second.cache_reuse < len("system: " + BILLING)


def test_count_tokens_answered_from_the_calibrated_estimate(fake, proxy):
    """Ollama answers count_tokens 404; the proxy answers the request's chat prompt in tokens at
    the model's characters per token, without asking a backend."""
    request = {"model": "llama3.2", "system": "s" * 400, "messages": [{"role": "user", "content": "u" * 800}], "tools": [WEATHER]}
    before = len(fake.received)
    with client(proxy) as c:
        counted = c.messages.count_tokens(**request)
    chars, images = op.prompt_size("/api/chat", op.anthropic_messages_to_native(dict(request, max_tokens=1)))
    ratio = proxy.call(lambda: proxy.app.models.ratio("llama3.2:latest"))
    assert counted.input_tokens == op.estimate_tokens(chars, images, ratio) and counted.input_tokens > 300
    assert len(fake.received) == before
    status, _, body = raw_post(proxy.port, "/v1/messages/count_tokens?beta=true", {"model": "llama3.2", "messages": []})
    assert status == 400 and json.loads(body)["error"] == {"type": "invalid_request_error", "message": "messages is required"}


def test_event_logging_gets_an_empty_200(fake, proxy):
    before = len(fake.received)
    status, _, body = raw_post(proxy.port, "/api/event_logging/batch", {"events": [{"event_type": "x"}]})
    assert (status, body) == (200, b"") and len(fake.received) == before


def test_web_search_history_becomes_a_tool_message():
    """A replayed web search (server_tool_use + web_search_tool_result) reaches the model as a tool
    call and its result, as Ollama's convertMessage writes them (found porting Ollama's tests)."""
    native = op.anthropic_messages_to_native({"model": "m", "max_tokens": 5, "messages": [
        {"role": "assistant", "content": [{"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {"query": "q"}},
                                          {"type": "web_search_tool_result", "tool_use_id": "srv_1", "content": [
                                              {"type": "web_search_result", "title": "A", "url": "https://a"},
                                              {"type": "web_search_result", "title": "B", "url": "https://b"}]}]},
        {"role": "user", "content": [{"type": "web_search_tool_result", "tool_use_id": "srv_2",
                                      "content": {"type": "web_search_tool_result_error", "error_code": "max_uses_exceeded"}}]}]})
    assert native["messages"] == [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "srv_1", "function": {"name": "web_search", "arguments": {"query": "q"}}}]},
        {"role": "tool", "content": "- A: https://a\n- B: https://b\n", "tool_call_id": "srv_1"},
        {"role": "tool", "content": "web_search_tool_result_error: max_uses_exceeded", "tool_call_id": "srv_2"}]
