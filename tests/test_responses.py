"""The coding agents' OpenAI route, /v1/responses (SPEC §7.2, agents-api.md §2).

(a) The pure translators on the cases Ollama's own Go tests do not cover (those are ported in
    test_responses_go.py): the proxy's ``response.failed``, ids, the echo of the request.
(b) The real ``openai`` SDK's ``responses.create`` (streamed and not) and ``responses.stream``
    through the proxy against the fake: what reached Ollama is an /api/chat request with the
    proxy's num_ctx (model mode, /proxy-context/N/, --num-ctx), num_predict from
    max_output_tokens and --keep-alive; text, thinking, tool calls and their round trip.
(c) The deliberate differences: SSE comments while a stream waits, ``response.failed`` when it
    breaks or when the backend fails after the heartbeat sent the head; --no-translate.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import re
from typing import Any, Dict, List, Tuple

import openai
import pytest
from fake_ollama import Fault

import ollama_proxy as op

TIMEOUT = 10.0
WEATHER = {"type": "function", "name": "get_weather", "description": "Get the weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def upstream(fake) -> Dict[str, Any]:
    """The body of the last request the fake received (the proxy's native /api/chat)."""
    return json.loads(fake.received[-1].body)


def text(n: int = 5) -> str:
    return "".join("tok%d " % i for i in range(n))


def events(data: bytes) -> List[Tuple[str, Dict[str, Any]]]:
    """SSE bytes -> (event, data) pairs; comments are skipped."""
    out = []
    for chunk in data.decode().split("\n\n"):
        lines = [line for line in chunk.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), chunk
        out.append((lines[0][len("event: "):], json.loads(lines[1][len("data: "):])))
    return out


def raw_post(port: int, path: str, body: Any, timeout: float = TIMEOUT) -> Tuple[int, Dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# -- (a) the pure translators -----------------------------------------------------------------------

def test_stream_failure_after_some_text_is_response_failed_with_what_was_done():
    """fail() mid-way: one response.failed with the next sequence number, status failed, the error,
    and the items finished so far; nothing after it."""
    t = op.ResponsesStreamTranslator("gpt-5-codex", "resp_1", "msg_2", {"model": "gpt-5-codex"}, clock=lambda: 1000.0, rng=random.Random(1))
    out = t.feed({"message": {"role": "assistant", "thinking": "hmm"}, "done": False})
    out += t.feed({"message": {"role": "assistant", "content": "Hel"}, "done": False})
    out += t.fail("backend b1 closed the connection")
    got = events(out)
    assert [e for e, _ in got][-1] == "response.failed"
    assert [d["sequence_number"] for _, d in got] == list(range(len(got)))
    failed = got[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "api_error", "message": "backend b1 closed the connection"}
    assert [item["type"] for item in failed["output"]] == ["reasoning", "message"]
    assert failed["output"][1]["content"][0]["text"] == "Hel" and failed["usage"] is None
    assert t.finished and t.fail("again") == b"" and t.feed({"done": True}) == b""


def test_stream_failure_before_anything_opens_the_response_first():
    """A stream that fails before its first native object (the heartbeat sent the head, then the
    backend answered an error): created and in_progress, then failed, so a client's parser sees
    a well-formed response."""
    t = op.ResponsesStreamTranslator("m", "resp_1", "msg_2", {"model": "m"}, clock=lambda: 5.0)
    got = events(t.fail("model is loading too long", 429))
    assert [e for e, _ in got] == ["response.created", "response.in_progress", "response.failed"]
    assert got[-1][1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_native_error_line_mid_stream_becomes_response_failed():
    t = op.ResponsesStreamTranslator("m", "resp_1", "msg_2", {"model": "m"})
    t.feed({"message": {"role": "assistant", "content": "a"}, "done": False})
    got = events(t.feed({"error": "an error was encountered while running the model: unexpected EOF"}))
    assert got[-1][0] == "response.failed" and "unexpected EOF" in got[-1][1]["response"]["error"]["message"]


def test_ids_are_ollamas_random_numbers():
    rng = random.Random(7)
    assert re.fullmatch(r"resp_\d{1,6}", op.responses_id("resp", rng))
    assert all(0 <= int(op.responses_id("msg", rng)[4:]) <= 999998 for _ in range(200))


def test_whole_answer_echoes_the_request():
    """ToResponse repeats the request: instructions, tools as Go re-marshals them (unknown keys
    gone, nulls for what is absent), text.format, top_p / temperature defaults of 1, reasoning
    only with what was given, max_output_tokens, background; status completed even at length."""
    request = {"model": "gpt-5-codex", "instructions": "be terse", "max_output_tokens": 99, "background": False,
               "tools": [{"type": "function", "name": "f", "extra": 1}], "reasoning": {"effort": "low"},
               "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": True}}}
    native = {"model": "llama3.2", "created_at": "2026-12-02T10:00:00Z", "message": {"role": "assistant", "content": "{}"},
              "done": True, "done_reason": "length", "prompt_eval_count": 11, "eval_count": 99}
    out = op.native_chat_to_responses(native, "gpt-5-codex", "resp_5", "msg_6", request, now=1796205700.5)
    assert out["created_at"] == 1796205600 and out["completed_at"] == 1796205700
    assert out["status"] == "completed" and out["incomplete_details"] is None and out["model"] == "gpt-5-codex"
    assert out["instructions"] == "be terse" and out["max_output_tokens"] == 99 and out["temperature"] == 1.0 and out["top_p"] == 1.0
    assert out["tools"] == [{"type": "function", "name": "f", "description": None, "strict": None, "parameters": None}]
    assert out["reasoning"] == {"effort": "low"}
    assert out["text"] == {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": True}}
    assert out["output"] == [{"id": "msg_6", "type": "message", "status": "completed", "role": "assistant",
                              "content": [{"type": "output_text", "text": "{}", "annotations": [], "logprobs": []}]}]
    assert out["usage"] == {"input_tokens": 11, "output_tokens": 99, "total_tokens": 110,
                            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


# -- (b) the openai SDK through the proxy -----------------------------------------------------------

def client(proxy, path: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + path, api_key="anything", max_retries=0, timeout=TIMEOUT)


def test_sdk_responses_create_reaches_ollama_as_chat_with_the_context(fake, start_proxy):
    """responses.create: /api/chat upstream with the model's num_ctx, num_predict from
    max_output_tokens, --keep-alive and temperature 1.0 (Ollama's default for the route)."""
    proxy = start_proxy(fake.url, "--keep-alive", "*=30m")
    with client(proxy) as c:
        raw = c.responses.with_raw_response.create(model="llama3.2", instructions="be brief", input="hello", max_output_tokens=300)
        reply = raw.parse()
    assert reply.output_text == text() and reply.status == "completed" and reply.model == "llama3.2"
    assert re.fullmatch(r"resp_\d+", reply.id) and reply.usage.output_tokens == 5 and reply.usage.input_tokens > 0
    assert reply.instructions == "be brief" and reply.max_output_tokens == 300
    assert fake.received[-1].path == "/api/chat"
    sent = upstream(fake)
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert sent["options"]["num_predict"] == 300 and sent["options"]["temperature"] == 1.0
    assert sent["options"]["num_ctx"] == int(raw.headers["x-ollama-proxy-num-ctx"]) > 4096
    assert sent["keep_alive"] == "30m" and sent["stream"] is False
    assert raw.headers["content-type"] == "application/json"


@pytest.mark.parametrize("flags, path, num_ctx", [(("--num-ctx", "llama3.2=12288"), "/v1", 12288),
                                                 ((), "/proxy-context/6144/v1", 6144)])
def test_pinned_and_url_contexts_apply(fake, start_proxy, flags, path, num_ctx):
    """What Codex sends (no max_output_tokens, reasoning, store, tool_choice...) runs at the
    pinned context, and at a /proxy-context/N/ URL's."""
    proxy = start_proxy(fake.url, *flags)
    with client(proxy, path) as c:
        c.responses.create(model="llama3.2", input=[{"role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]}],
                           instructions="You are Codex.", store=False, tool_choice="auto", parallel_tool_calls=False,
                           prompt_cache_key="k", include=["reasoning.encrypted_content"], tools=[WEATHER])
    sent = upstream(fake)
    assert sent["options"]["num_ctx"] == num_ctx
    assert "num_predict" in sent["options"]  # the proxy's cap: Codex sends no max_output_tokens
    assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_sdk_responses_stream_text(fake, proxy):
    with client(proxy) as c:
        with c.responses.stream(model="llama3.2", input="stream") as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
    assert "".join(deltas) == text() and final.output_text == text() and final.status == "completed"
    assert final.usage.output_tokens == 5
    assert fake.received[-1].path == "/api/chat" and upstream(fake)["stream"] is True


def test_stream_event_sequence_and_headers(fake, proxy):
    status, headers, body = raw_post(proxy.port, "/v1/responses?api-version=1", {"model": "qwen3:8b", "input": "q", "stream": True,
                                                                                 "reasoning": {"effort": "high"}})
    assert status == 200 and headers["content-type"] == "text/event-stream" and headers["cache-control"] == "no-cache"
    got = events(body)
    names = [e for e, _ in got]
    assert names[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.reasoning_summary_text.delta" in names and names[-1] == "response.completed"
    assert [d["sequence_number"] for _, d in got] == list(range(len(got)))
    assert b"[DONE]" not in body
    final = got[-1][1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message"] and final["reasoning"] == {"effort": "high", "summary": None}
    assert upstream(fake)["think"] == "high"


def test_sdk_tool_call_round_trip(fake, proxy):
    """A function call, whole and streamed; its output sent back as a tool message with the call id,
    and the replayed reasoning as the assistant's thinking."""
    with client(proxy) as c:
        reply = c.responses.create(model="llama3.2", input="weather?", tools=[WEATHER])
        call = reply.output[-1]
        assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments)
        assert all(item.type != "message" for item in reply.output)
        with c.responses.stream(model="llama3.2", input="weather?", tools=[WEATHER]) as stream:
            final = stream.get_final_response()
        assert final.output[-1].type == "function_call" and final.output[-1].status == "completed"
        c.responses.create(model="llama3.2", tools=[WEATHER], input=[
            {"role": "user", "content": "weather?"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "I should call the tool"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    messages = upstream(fake)["messages"]
    assert messages[-2] == {"role": "assistant", "content": "", "thinking": "I should call the tool",
                            "tool_calls": [{"id": call.call_id, "function": {"name": "get_weather", "arguments": json.loads(call.arguments)}}]}
    assert messages[-1] == {"role": "tool", "content": "sunny", "tool_call_id": call.call_id}


def test_sdk_errors_in_openai_shape(fake, proxy):
    """Ollama's errors on the route reach the SDK as its typed exceptions: a model it lacks (404),
    a request the middleware refuses (400, Go's text), a model that cannot think (Ollama does not
    relax thinking on this route)."""
    with client(proxy) as c:
        with pytest.raises(openai.NotFoundError) as info:
            c.responses.create(model="nope", input="x")
        assert "nope" in info.value.body["message"] and info.value.body["type"] == "not_found_error"
        with pytest.raises(openai.BadRequestError) as info:
            c.responses.create(model="llama3.2", input="x", reasoning={"effort": "huge"})
        assert info.value.body["message"].startswith('invalid reasoning value: "huge"')
        with pytest.raises(openai.BadRequestError) as info:
            c.responses.create(model="llama3.2", input=[{"type": "bogus"}])
        assert info.value.body["message"] == 'input[0]: unknown input item type: "bogus"'
        with pytest.raises(openai.BadRequestError) as info:
            c.responses.create(model="llama3.2", input="x", reasoning={"effort": "low"})
        assert "does not support thinking" in info.value.body["message"]


def test_error_of_a_stream_request_keeps_the_sse_cache_header(fake, proxy):
    status, headers, body = raw_post(proxy.port, "/v1/responses", {"model": "nope", "input": "x", "stream": True})
    assert status == 404 and headers["content-type"] == "application/json" and headers["cache-control"] == "no-cache"
    assert body.endswith(b"\n") and json.loads(body)["error"]["type"] == "not_found_error"


def test_pattern_alias_answers_with_the_name_asked_for(fake, start_proxy):
    proxy = start_proxy(fake.url, "--alias", "gpt-5*=llama3.2")
    with client(proxy) as c:
        reply = c.responses.create(model="gpt-5-codex", input="hi")
    assert reply.model == "gpt-5-codex" and upstream(fake)["model"] == "llama3.2"


# -- (c) the deliberate differences -----------------------------------------------------------------

def test_stream_broken_mid_way_ends_with_response_failed(fake, proxy):
    fake.add_fault(Fault(path="/api/chat", close_after=2))
    status, _, body = raw_post(proxy.port, "/v1/responses", {"model": "llama3.2", "input": "q", "stream": True})
    got = events(body)
    assert status == 200 and got[0][0] == "response.created" and got[-1][0] == "response.failed"
    assert [d["sequence_number"] for _, d in got] == list(range(len(got)))
    assert got[-1][1]["response"]["error"]["message"]


def test_sdk_sees_the_failure(fake, proxy):
    """The SDK yields response.failed; Codex reports its error instead of 'stream closed before
    response.completed' (ollama#14600)."""
    fake.add_fault(Fault(path="/api/chat", close_after=3))
    with client(proxy) as c:
        kinds = [e.type for e in c.responses.create(model="llama3.2", input="q", stream=True)]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds


def test_cold_load_sends_sse_comments(fake, start_proxy):
    """A stream that waits longer than --heartbeat gets its head, then SSE comments, then the events."""
    proxy = start_proxy(fake.url, "--heartbeat", "0.2")
    fake.add_fault(Fault(path="/api/chat", delay_before_headers=0.7))
    status, headers, body = raw_post(proxy.port, "/v1/responses", {"model": "llama3.2", "input": "q", "stream": True})
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert body.startswith(b": ") and body.count(b"\n: ") + 1 >= 2
    names = [e for e, _ in events(body)]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    with client(proxy) as c:  # the SDK skips the comments
        fake.add_fault(Fault(path="/api/chat", delay_before_headers=0.5))
        kinds = [e.type for e in c.responses.create(model="llama3.2", input="q", stream=True)]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


def test_backend_error_after_the_heartbeat_is_response_failed(fake, start_proxy):
    """The head went out with the heartbeat, then Ollama answered 500: the error comes in-band as a
    whole failed response (created, in_progress, failed)."""
    proxy = start_proxy(fake.url, "--heartbeat", "0.2", "--max-retries", "0")
    fake.add_fault(Fault(path="/api/chat", delay_before_headers=0.5, status=500, error="llama runner process has terminated"))
    status, _, body = raw_post(proxy.port, "/v1/responses", {"model": "llama3.2", "input": "q", "stream": True})
    got = events(body)
    assert status == 200 and [e for e, _ in got] == ["response.created", "response.in_progress", "response.failed"]
    assert "llama runner process has terminated" in got[-1][1]["response"]["error"]["message"]


def test_no_translate_passes_the_route_through(fake, start_proxy):
    """--no-translate: /v1/responses goes to Ollama as it came."""
    proxy = start_proxy(fake.url, "--no-translate")
    body = {"model": "llama3.2", "input": "q"}
    status, _, answer = raw_post(proxy.port, "/v1/responses", body)
    assert fake.received[-1].target == "/v1/responses" and json.loads(fake.received[-1].body) == body
    assert status == 200 and json.loads(answer)["object"] == "response"  # answered by the fake's own Responses layer
    assert [r.path for r in fake.received if r.path not in ("/api/show",)] == ["/v1/responses"]  # nothing else upstream


def test_compressed_body_passes_through_untranslated(fake, start_proxy, caplog):
    """A zstd body (Codex can compress its requests; Ollama's /v1/responses inflates them): the
    standard library cannot read zstd before 3.14, so the proxy sends it upstream byte for byte,
    Content-Encoding kept, says so once as a warning (then at debug), and relays Ollama's answer."""
    proxy = start_proxy(fake.url)
    frame = bytes.fromhex("28b52ffd") + b"\x00 not decoded by the proxy"
    with caplog.at_level(logging.DEBUG, logger="ollama_proxy"):
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=TIMEOUT)
            try:
                conn.request("POST", "/v1/responses", frame, {"Content-Type": "application/json", "Content-Encoding": "zstd"})
                resp = conn.getresponse()
                status, answer = resp.status, resp.read()
            finally:
                conn.close()
            rec = fake.received[-1]
            assert rec.path == "/v1/responses" and rec.body == frame and rec.header("content-encoding") == "zstd"
            assert status != 400 or b"invalid JSON" not in answer  # Ollama's answer, not the proxy's refusal
            assert not any(r.path == "/api/chat" for r in fake.received)
    told = [r for r in caplog.records if "Content-Encoding zstd passed through untranslated" in r.getMessage()]
    assert [r.levelno for r in told] == [logging.WARNING, logging.DEBUG] and "POST /v1/responses" in told[0].getMessage()
