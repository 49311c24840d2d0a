"""Ollama's own Go unit tests for its Anthropic /v1/messages layer, ported to the proxy's translators.

Sources (Ollama v0.33.0-rc2): ``anthropic/anthropic_test.go`` and the request-conversion and
error-text cases of ``middleware/anthropic_test.go``.  Every case names the Go test it comes
from.  Go structs are written as the JSON they marshal to or from:

* a Go ``MessagesRequest`` / request body -> the dict given to ``anthropic_messages_to_native``;
* a Go ``api.ChatRequest`` -> the native /api/chat dict it returns (``Options`` -> ``options``,
  ``Stream`` -> ``stream``, ``Think`` -> ``think``); Go's ``ToolCallFunction`` also marshals its
  zero ``"index": 0``, which Ollama reads back the same as absent, so it is left out here;
* a Go ``api.ChatResponse`` -> the native JSON Ollama sends (``Metrics`` inlined);
* a Go ``MessagesResponse`` / ``StreamEvent`` -> the dict / SSE event the proxy writes.

Where a Go test only checks a bound or a few fields, the expected value here is the exact one
Go's code computes for that input (the arithmetic is given in a comment).

Not ported, on purpose (the proxy differs by design, or the case needs what a pure function
cannot have): web search (the builtin tool, its results, citations, the search loop, cloud
gating), tracing, gin/HTTP plumbing, and Go-only values (channels as tool arguments).
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Tuple

import pytest

import ollama_proxy as op

# testImage in anthropic_test.go (a 1x1 PNG).  Go decodes it to bytes; api.ImageData marshals
# back to this same base64 text, which is what the proxy keeps.
TEST_IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk+A8AAQUBAScY42YAAAAASUVORK5CYII="

WEATHER_SCHEMA = {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}


def request(messages: List[Dict[str, Any]], **extra: Any) -> Dict[str, Any]:
    """A MessagesRequest with Go tests' usual Model and MaxTokens."""
    body: Dict[str, Any] = {"model": "test-model", "max_tokens": 1024, "messages": messages}
    body.update(extra)
    return body


def native(messages: List[Dict[str, Any]], num_predict: int = 1024, stream: bool = False, **extra: Any) -> Dict[str, Any]:
    """The api.ChatRequest FromMessagesRequest builds, as JSON."""
    out: Dict[str, Any] = {"model": "test-model", "messages": messages, "options": {"num_predict": num_predict}, "stream": stream}
    out.update(extra)
    return out


HELLO = [{"role": "user", "content": "Hello"}]
HELLO_BLOCKS = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]  # textContent("Hello")


def _effort_request(**extra: Any) -> Dict[str, Any]:
    return {"model": "gemma4", "max_tokens": 32000, "messages": [{"role": "user", "content": [{"type": "text", "text": "Describe the image."}]}], **extra}


def _effort_native(think: Any) -> Dict[str, Any]:
    return {"model": "gemma4", "messages": [{"role": "user", "content": "Describe the image."}], "options": {"num_predict": 32000},
            "stream": False, "think": think}


# ---------------------------------------------------------------------------
# Request conversion: FromMessagesRequest / AnthropicMessagesMiddleware
# ---------------------------------------------------------------------------

REQUEST_CASES = [
    # TestFromMessagesRequest_Basic
    pytest.param(request(HELLO_BLOCKS), native(HELLO), id="FromMessagesRequest_Basic"),
    # TestFromMessagesRequest_WithSystemPrompt
    pytest.param(request(HELLO_BLOCKS, system="You are a helpful assistant."),
                 native([{"role": "system", "content": "You are a helpful assistant."}] + HELLO), id="FromMessagesRequest_WithSystemPrompt"),
    # TestFromMessagesRequest_WithSystemPromptArray
    pytest.param(request(HELLO_BLOCKS, system=[{"type": "text", "text": "You are helpful."}, {"type": "text", "text": " Be concise."}]),
                 native([{"role": "system", "content": "You are helpful. Be concise."}] + HELLO), id="FromMessagesRequest_WithSystemPromptArray"),
    # TestFromMessagesRequest_WithOptions
    pytest.param(request(HELLO_BLOCKS, max_tokens=2048, temperature=0.7, top_p=0.9, top_k=40, stop_sequences=["\n", "END"]),
                 native(HELLO, options={"num_predict": 2048, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "stop": ["\n", "END"]}),
                 id="FromMessagesRequest_WithOptions"),
    # TestFromMessagesRequest_WithImage
    pytest.param(request([{"role": "user", "content": [
        {"type": "text", "text": "What's in this image?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": TEST_IMAGE}},
    ]}]), native([{"role": "user", "content": "What's in this image?", "images": [TEST_IMAGE]}]), id="FromMessagesRequest_WithImage"),
    # TestFromMessagesRequest_WithToolUse
    pytest.param(request([
        {"role": "user", "content": [{"type": "text", "text": "What's the weather in Paris?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_123", "name": "get_weather", "input": {"location": "Paris"}}]},
    ]), native([
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_123", "function": {"name": "get_weather", "arguments": {"location": "Paris"}}}]},
    ]), id="FromMessagesRequest_WithToolUse"),
    # TestFromMessagesRequest_WithToolResult
    pytest.param(request([{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_123", "content": "The weather in Paris is sunny, 22°C"},
    ]}]), native([{"role": "tool", "content": "The weather in Paris is sunny, 22°C", "tool_call_id": "call_123"}]),
        id="FromMessagesRequest_WithToolResult"),
    # TestFromMessagesRequest_WithToolResultImage
    pytest.param(request([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_img", "content": [
        {"type": "text", "text": "Attached image"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": TEST_IMAGE}},
    ]}]}]), native([{"role": "tool", "content": "Attached image", "images": [TEST_IMAGE], "tool_call_id": "call_img"}]),
        id="FromMessagesRequest_WithToolResultImage"),
    # TestFromMessagesRequest_WithToolResultFollowedByUserText
    pytest.param(request([
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_read", "name": "Read", "input": {"file_path": "/Users/hoyyeva/Desktop/aaa.png"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_read", "content": "Read image (311.5KB)"},
            {"type": "text", "text": "Please describe it."},
        ]},
    ]), native([
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_read", "function": {"name": "Read", "arguments": {"file_path": "/Users/hoyyeva/Desktop/aaa.png"}}}]},
        {"role": "tool", "content": "Read image (311.5KB)", "tool_call_id": "call_read"},
        {"role": "user", "content": "Please describe it."},
    ]), id="FromMessagesRequest_WithToolResultFollowedByUserText"),
    # TestFromMessagesRequest_WithOutputConfigEffort
    pytest.param(_effort_request(output_config={"effort": "high"}), _effort_native("high"), id="FromMessagesRequest_WithOutputConfigEffort"),
    # TestFromMessagesRequest_WithOutputConfigEffortXHighMapsToHigh
    pytest.param(_effort_request(output_config={"effort": "xhigh"}), _effort_native("high"), id="FromMessagesRequest_WithOutputConfigEffortXHighMapsToHigh"),
    # TestFromMessagesRequest_ThinkingDisabledOverridesOutputConfigEffort
    pytest.param(_effort_request(thinking={"type": "disabled"}, output_config={"effort": "high"}), _effort_native(False),
                 id="FromMessagesRequest_ThinkingDisabledOverridesOutputConfigEffort"),
    # TestFromMessagesRequest_ThinkingAdaptiveUsesOutputConfigEffort
    pytest.param(_effort_request(thinking={"type": "adaptive"}, output_config={"effort": "high"}), _effort_native("high"),
                 id="FromMessagesRequest_ThinkingAdaptiveUsesOutputConfigEffort"),
    # TestFromMessagesRequest_WithTools
    pytest.param(request(HELLO_BLOCKS, tools=[{"name": "get_weather", "description": "Get current weather", "input_schema": WEATHER_SCHEMA}]),
                 native(HELLO, tools=[{"type": "function", "function": {"name": "get_weather", "description": "Get current weather", "parameters": WEATHER_SCHEMA}}]),
                 id="FromMessagesRequest_WithTools"),
    # TestFromMessagesRequest_DropsCustomWebSearchWhenBuiltinPresent: not ported (web search: the proxy drops the builtin web_search tool).
    # TestFromMessagesRequest_KeepsCustomWebSearchWhenBuiltinAbsent (a custom tool that merely is named web_search)
    pytest.param(request(HELLO_BLOCKS, tools=[{"type": "custom", "name": "web_search", "description": "User-defined web search",
                                               "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}]),
                 native(HELLO, tools=[{"type": "function", "function": {"name": "web_search", "description": "User-defined web search", "parameters": {
                     "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]),
                 id="FromMessagesRequest_KeepsCustomWebSearchWhenBuiltinAbsent"),
    # TestFromMessagesRequest_WithThinking
    pytest.param(request(HELLO_BLOCKS, thinking={"type": "enabled", "budget_tokens": 1000}), native(HELLO, think=True), id="FromMessagesRequest_WithThinking"),
    # TestFromMessagesRequest_ThinkingOnlyBlock
    pytest.param(request(HELLO_BLOCKS + [{"role": "assistant", "content": [{"type": "thinking", "thinking": "Let me think about this..."}]}]),
                 native(HELLO + [{"role": "assistant", "content": "", "thinking": "Let me think about this..."}]), id="FromMessagesRequest_ThinkingOnlyBlock"),
    # TestConvertTool_RegularTool (convertTool, seen through FromMessagesRequest)
    pytest.param(request(HELLO_BLOCKS, tools=[{"type": "custom", "name": "get_weather", "description": "Get the weather",
                                               "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]),
                 native(HELLO, tools=[{"type": "function", "function": {"name": "get_weather", "description": "Get the weather",
                                                                        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]),
                 id="ConvertTool_RegularTool"),
    # TestConvertTool_WebSearch: not ported (web search: the proxy drops the builtin tool instead of defining a web_search function).
    # TestConvertMessage_ServerToolUse (convertMessage, seen through FromMessagesRequest)
    pytest.param(request([{"role": "assistant", "content": [{"type": "server_tool_use", "id": "srvtoolu_123", "name": "web_search", "input": {"query": "test query"}}]}]),
                 native([{"role": "assistant", "content": "", "tool_calls": [{"id": "srvtoolu_123", "function": {"name": "web_search", "arguments": {"query": "test query"}}}]}]),
                 id="ConvertMessage_ServerToolUse"),
    # TestConvertMessage_WebSearchToolResult, ..._WebSearchToolResultEmptyStillCreatesToolMessage,
    # ..._WebSearchToolResultErrorStillCreatesToolMessage: not ported (web search results; the proxy drops those blocks).
    # TestAnthropicMessagesMiddleware "basic message"
    pytest.param(request(HELLO), native(HELLO), id="Middleware_basic_message"),
    # TestAnthropicMessagesMiddleware "with system prompt"
    pytest.param(request(HELLO, system="You are helpful."), native([{"role": "system", "content": "You are helpful."}] + HELLO), id="Middleware_with_system_prompt"),
    # TestAnthropicMessagesMiddleware "with options"
    pytest.param(request(HELLO, max_tokens=2048, temperature=0.7, top_p=0.9, top_k=40, stop_sequences=["\n", "END"]),
                 native(HELLO, options={"num_predict": 2048, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "stop": ["\n", "END"]}),
                 id="Middleware_with_options"),
    # TestAnthropicMessagesMiddleware "streaming"
    pytest.param(request(HELLO, stream=True), native(HELLO, stream=True), id="Middleware_streaming"),
    # TestAnthropicMessagesMiddleware "with tools"
    pytest.param(request([{"role": "user", "content": "What's the weather?"}],
                         tools=[{"name": "get_weather", "description": "Get current weather", "input_schema": WEATHER_SCHEMA}]),
                 native([{"role": "user", "content": "What's the weather?"}],
                        tools=[{"type": "function", "function": {"name": "get_weather", "description": "Get current weather", "parameters": WEATHER_SCHEMA}}]),
                 id="Middleware_with_tools"),
    # TestAnthropicMessagesMiddleware "with tool result"
    pytest.param(request([
        {"role": "user", "content": "What's the weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_123", "name": "get_weather", "input": {"location": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_123", "content": "Sunny, 22°C"}]},
    ]), native([
        {"role": "user", "content": "What's the weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call_123", "function": {"name": "get_weather", "arguments": {"location": "Paris"}}}]},
        {"role": "tool", "content": "Sunny, 22°C", "tool_call_id": "call_123"},
    ]), id="Middleware_with_tool_result"),
    # TestAnthropicMessagesMiddleware "with thinking enabled"
    pytest.param(request(HELLO, thinking={"type": "enabled", "budget_tokens": 1000}), native(HELLO, think=True), id="Middleware_with_thinking_enabled"),
]


@pytest.mark.parametrize("body, expected", REQUEST_CASES)
def test_request_to_native(body, expected):
    assert op.anthropic_messages_to_native(body) == expected


REQUEST_ERROR_CASES = [
    # TestFromMessagesRequest_ToolUseMissingID
    pytest.param(request([{"role": "assistant", "content": [{"type": "tool_use", "name": "get_weather"}]}]),
                 "tool_use block missing required 'id' field", id="FromMessagesRequest_ToolUseMissingID"),
    # TestFromMessagesRequest_ToolUseMissingName
    pytest.param(request([{"role": "assistant", "content": [{"type": "tool_use", "id": "call_123"}]}]),
                 "tool_use block missing required 'name' field", id="FromMessagesRequest_ToolUseMissingName"),
    # TestFromMessagesRequest_InvalidToolSchema: Go's raw `{invalid json` cannot sit inside a JSON body; the nearest
    # body is a schema that is not an object, whose error text is Go's json.Unmarshal of a string into the struct.
    pytest.param(request(HELLO_BLOCKS, tools=[{"name": "bad_tool", "input_schema": "{invalid json"}]),
                 'invalid input_schema for tool "bad_tool": json: cannot unmarshal string into Go value of type api.ToolFunctionParameters',
                 id="FromMessagesRequest_InvalidToolSchema"),
    # TestAnthropicMessagesMiddleware "missing model error"
    pytest.param({"max_tokens": 1024, "messages": HELLO}, "model is required", id="Middleware_missing_model_error"),
    # TestAnthropicMessagesMiddleware "missing max_tokens error"
    pytest.param({"model": "test-model", "messages": HELLO}, "max_tokens is required and must be positive", id="Middleware_missing_max_tokens_error"),
    # TestAnthropicMessagesMiddleware "missing messages error"
    pytest.param({"model": "test-model", "max_tokens": 1024}, "messages is required", id="Middleware_missing_messages_error"),
    # TestAnthropicMessagesMiddleware "tool_use missing id error"
    pytest.param(request([{"role": "assistant", "content": [{"type": "tool_use", "name": "test"}]}]),
                 "tool_use block missing required 'id' field", id="Middleware_tool_use_missing_id_error"),
]


@pytest.mark.parametrize("body, message", REQUEST_ERROR_CASES)
def test_request_refused(body, message):
    with pytest.raises(op.BadRequest) as info:
        op.anthropic_messages_to_native(body)
    assert info.value.message == message
    # The middleware answers these with NewError(400, ...): an invalid_request_error.
    err = op.error_object(400, info.value.message, op.ANTHROPIC)
    assert (err["type"], err["error"]) == ("error", {"type": "invalid_request_error", "message": message})


# TestAnthropicMessagesMiddleware_InvalidJSON (the pure part: the body does not parse, and a 400 is an invalid_request_error)
def test_invalid_json_is_invalid_request_error():
    with pytest.raises(ValueError):
        op.parse_json(b"{invalid json")
    assert op.error_object(400, "invalid JSON body", op.ANTHROPIC)["error"]["type"] == "invalid_request_error"


# TestAnthropicMessagesMiddleware_Headers: not ported (HTTP headers need a server).
# TestAnthropicMessagesMiddleware_SetsRelaxThinkingFlag: not ported (a gin context flag, a Go internal).
# TestHasWebSearchTool and every TestWebSearch*: not ported (web search, cloud gating).


# ---------------------------------------------------------------------------
# Whole responses: ToMessagesResponse / AnthropicWriter (non-streaming)
# ---------------------------------------------------------------------------

CREATED = "0001-01-01T00:00:00Z"  # api.ChatResponse's zero CreatedAt, as Go marshals it

RESPONSE_CASES = [
    # TestToMessagesResponse_Basic
    pytest.param(
        {"model": "test-model", "created_at": CREATED, "message": {"role": "assistant", "content": "Hello there!"},
         "done": True, "done_reason": "stop", "prompt_eval_count": 10, "eval_count": 5},
        {"id": "msg_123", "type": "message", "role": "assistant", "model": "test-model", "content": [{"type": "text", "text": "Hello there!"}],
         "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 5}},
        id="ToMessagesResponse_Basic"),
    # TestToMessagesResponse_WithToolCalls
    pytest.param(
        {"model": "test-model", "created_at": CREATED, "message": {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_123", "function": {"index": 0, "name": "get_weather", "arguments": {"location": "Paris"}}}]},
         "done": True, "done_reason": "stop"},
        {"id": "msg_123", "type": "message", "role": "assistant", "model": "test-model",
         "content": [{"type": "tool_use", "id": "call_123", "name": "get_weather", "input": {"location": "Paris"}}],
         "stop_reason": "tool_use", "usage": {"input_tokens": 0, "output_tokens": 0}},
        id="ToMessagesResponse_WithToolCalls"),
    # TestToMessagesResponse_WithThinking
    pytest.param(
        {"model": "test-model", "created_at": CREATED, "message": {"role": "assistant", "content": "The answer is 42.", "thinking": "Let me think about this..."},
         "done": True, "done_reason": "stop"},
        {"id": "msg_123", "type": "message", "role": "assistant", "model": "test-model",
         "content": [{"type": "thinking", "thinking": "Let me think about this..."}, {"type": "text", "text": "The answer is 42."}],
         "stop_reason": "end_turn", "usage": {"input_tokens": 0, "output_tokens": 0}},
        id="ToMessagesResponse_WithThinking"),
    # TestAnthropicWriter_NonStreaming (the ChatResponse the handler writes, through ToMessagesResponse)
    pytest.param(
        {"model": "test-model", "created_at": CREATED, "message": {"role": "assistant", "content": "Hello there!"},
         "done": True, "done_reason": "stop", "prompt_eval_count": 10, "eval_count": 5},
        {"id": "msg_123", "type": "message", "role": "assistant", "model": "test-model", "content": [{"type": "text", "text": "Hello there!"}],
         "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 5}},
        id="AnthropicWriter_NonStreaming"),
]


@pytest.mark.parametrize("answer, expected", RESPONSE_CASES)
def test_native_chat_to_anthropic(answer, expected):
    assert op.native_chat_to_anthropic(answer, "test-model", "msg_123") == expected


# TestContentBlockJSON_EmptyFieldsPresent, TestContentBlockJSON_NonToolBlocksDoNotIncludeInput: not ported as such
# (Go struct-marshalling tests); the key sets they check are covered by the exact dicts above and in the stream tables.


# TestMapStopReason (Go's "" is the omitted stop_reason: None here; num_predict left 0, so no deliberate difference)
@pytest.mark.parametrize("reason, tool_calls, want", [
    ("stop", False, "end_turn"),
    ("length", False, "max_tokens"),
    ("stop", True, "tool_use"),
    ("other", False, "stop_sequence"),
    ("", False, None),
])
def test_map_stop_reason(reason, tool_calls, want):
    assert op.anthropic_stop_reason({"done_reason": reason}, tool_calls) == want


# TestNewError
@pytest.mark.parametrize("code, want", [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"), (404, "not_found_error"),
    (429, "rate_limit_error"), (500, "api_error"), (503, "overloaded_error"), (529, "overloaded_error"),
])
def test_new_error(code, want):
    err = op.error_object(code, "test message", op.ANTHROPIC)
    assert err["type"] == "error"
    assert err["error"] == {"type": want, "message": "test message"}
    assert re.fullmatch(r"req_[0-9a-f]{24}", err["request_id"])  # generateID("req"): 12 random bytes in hex


# TestAnthropicWriter_ErrorFromRoutes (the error body Ollama's routes write, and the HTTP status)
@pytest.mark.parametrize("status, payload, want_type, want_message", [
    (404, {"error": "model 'nonexistent' not found"}, "not_found_error", "model 'nonexistent' not found"),
    (400, {"error": "model is required"}, "invalid_request_error", "model is required"),
    (500, {"error": "something went wrong"}, "api_error", "something went wrong"),
    # api.StatusError marshals its untagged fields by name and ErrorMessage as "error"
    (404, {"StatusCode": 404, "Status": "", "error": "model not found via StatusError"}, "not_found_error", "model not found via StatusError"),
])
def test_error_from_routes(status, payload, want_type, want_message):
    message = op.error_message_from_body(json.dumps(payload).encode())
    err = op.error_object(status, message, op.ANTHROPIC)
    assert (err["type"], err["error"]) == ("error", {"type": want_type, "message": want_message})


# TestGenerateMessageID
def test_generate_message_id():
    id1, id2 = op.anthropic_message_id(), op.anthropic_message_id()
    assert id1 and id1 != id2 and len(id1) >= 10 and id1[:4] == "msg_"


# ---------------------------------------------------------------------------
# Streams: StreamConverter.Process
# ---------------------------------------------------------------------------

def events(data: bytes) -> List[Tuple[str, Dict[str, Any]]]:
    """SSE bytes as (event, data) pairs, checking writeSSE's framing: ``event: X\\ndata: {json}\\n\\n``."""
    out = []
    text = data.decode("utf-8")
    assert text == "" or text.endswith("\n\n")
    for frame in text.split("\n\n")[:-1]:
        head, _, body = frame.partition("\n")
        assert head.startswith("event: ") and body.startswith("data: ") and "\n" not in body, frame
        out.append((head[len("event: "):], json.loads(body[len("data: "):])))
    return out


def message_start(input_tokens: int) -> Tuple[str, Dict[str, Any]]:
    return ("message_start", {"type": "message_start", "message": {
        "id": "msg_123", "type": "message", "role": "assistant", "model": "test-model", "content": [],
        "usage": {"input_tokens": input_tokens, "output_tokens": 0}}})


def block_start(index: int, block: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    return ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def block_delta(index: int, delta: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> Tuple[str, Dict[str, Any]]:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_end(stop_reason: str, input_tokens: int, output_tokens: int) -> List[Tuple[str, Dict[str, Any]]]:
    return [("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason},
                               "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}),
            ("message_stop", {"type": "message_stop"})]


TEXT = {"type": "text", "text": ""}
THINKING = {"type": "thinking", "thinking": ""}


def tool_call(call_id: str, name: str, arguments: Dict[str, Any]) -> Dict[str, Any]:
    return {"id": call_id, "function": {"index": 0, "name": name, "arguments": arguments}}


def tool_start(index: int, call_id: str, name: str) -> Tuple[str, Dict[str, Any]]:
    return block_start(index, {"type": "tool_use", "id": call_id, "name": name, "input": {}})


STREAM_CASES = [
    # TestStreamConverter_Basic
    pytest.param([
        ({"model": "test-model", "created_at": CREATED, "message": {"role": "assistant", "content": "Hello"}, "done": False, "prompt_eval_count": 10},
         [message_start(10), block_start(0, TEXT), block_delta(0, {"type": "text_delta", "text": "Hello"})]),
        ({"model": "test-model", "created_at": CREATED, "message": {"role": "assistant", "content": " world!"}, "done": True, "done_reason": "stop",
          "prompt_eval_count": 10, "eval_count": 5},
         [block_delta(0, {"type": "text_delta", "text": " world!"}), block_stop(0)] + message_end("end_turn", 10, 5)),
    ], id="StreamConverter_Basic"),
    # TestStreamConverter_WithToolCalls
    pytest.param([
        ({"model": "test-model", "created_at": CREATED, "message": {"role": "assistant", "content": "", "tool_calls": [tool_call("call_123", "get_weather", {"location": "Paris"})]},
          "done": True, "done_reason": "stop", "prompt_eval_count": 10, "eval_count": 5},
         [message_start(10), tool_start(0, "call_123", "get_weather"),
          block_delta(0, {"type": "input_json_delta", "partial_json": '{"location":"Paris"}'}), block_stop(0)] + message_end("tool_use", 10, 5)),
    ], id="StreamConverter_WithToolCalls"),
    # TestStreamConverter_ThinkingDirectlyFollowedByToolCall
    pytest.param([
        ({"model": "test-model", "created_at": CREATED, "message": {"role": "assistant", "content": "", "thinking": "I should call the tool."}, "done": False},
         [message_start(0), block_start(0, THINKING), block_delta(0, {"type": "thinking_delta", "thinking": "I should call the tool."})]),
        ({"model": "test-model", "created_at": CREATED, "message": {"role": "assistant", "content": "", "tool_calls": [tool_call("call_abc", "ask_user", {"question": "cats or dogs?"})]},
          "done": True, "done_reason": "stop", "prompt_eval_count": 10, "eval_count": 5},
         [block_stop(0), tool_start(1, "call_abc", "ask_user"),
          block_delta(1, {"type": "input_json_delta", "partial_json": '{"question":"cats or dogs?"}'}), block_stop(1)] + message_end("tool_use", 10, 5)),
    ], id="StreamConverter_ThinkingDirectlyFollowedByToolCall"),
    # TestStreamConverter_TextBeforeThinking
    pytest.param([
        ({"model": "", "created_at": CREATED, "message": {"role": "assistant", "content": "---\n"}, "done": False},
         [message_start(0), block_start(0, TEXT), block_delta(0, {"type": "text_delta", "text": "---\n"})]),
        ({"model": "", "created_at": CREATED, "message": {"role": "assistant", "content": "", "thinking": "Let me think."}, "done": False},
         [block_stop(0), block_start(1, THINKING), block_delta(1, {"type": "thinking_delta", "thinking": "Let me think."})]),
        ({"model": "", "created_at": CREATED, "message": {"role": "assistant", "content": "The answer."}, "done": True, "done_reason": "stop",
          "prompt_eval_count": 10, "eval_count": 5},
         [block_stop(1), block_start(2, TEXT), block_delta(2, {"type": "text_delta", "text": "The answer."}), block_stop(2)] + message_end("end_turn", 10, 5)),
    ], id="StreamConverter_TextBeforeThinking"),
    # TestStreamConverter_ToolCallWithUnmarshalableArgs, TestStreamConverter_MultipleToolCallsWithMixedValidity:
    # not ported (a Go channel as a tool argument cannot be JSON; no native answer can carry one).
    # TestStreamConverter_ContentBlockStartIncludesEmptyFields "text block start includes empty text"
    pytest.param([
        ({"model": "test-model", "created_at": CREATED, "message": {"role": "assistant", "content": "hello"}, "done": False},
         [message_start(0), block_start(0, TEXT), block_delta(0, {"type": "text_delta", "text": "hello"})]),
    ], id="StreamConverter_ContentBlockStartIncludesEmptyFields_text"),
    # TestStreamConverter_ContentBlockStartIncludesEmptyFields "thinking block start includes empty thinking"
    pytest.param([
        ({"model": "test-model", "created_at": CREATED, "message": {"role": "assistant", "content": "", "thinking": "let me think..."}, "done": False},
         [message_start(0), block_start(0, THINKING), block_delta(0, {"type": "thinking_delta", "thinking": "let me think..."})]),
    ], id="StreamConverter_ContentBlockStartIncludesEmptyFields_thinking"),
    # TestStreamConverter_ContentBlockStartIncludesEmptyFields "tool_use block start includes empty input object"
    pytest.param([
        ({"model": "test-model", "created_at": CREATED, "message": {"role": "assistant", "content": "", "tool_calls": [tool_call("call_123", "get_weather", {"location": "Paris"})]},
          "done": False},
         [message_start(0), tool_start(0, "call_123", "get_weather"),
          block_delta(0, {"type": "input_json_delta", "partial_json": '{"location":"Paris"}'}), block_stop(0)]),
    ], id="StreamConverter_ContentBlockStartIncludesEmptyFields_tool_use"),
]


@pytest.mark.parametrize("steps", STREAM_CASES)
def test_stream_converter(steps):
    # NewStreamConverter("msg_123", "test-model", 0)
    translator = op.AnthropicStreamTranslator("test-model", "msg_123", 0)
    for chunk, expected in steps:
        data = translator.feed(chunk)
        assert events(data) == expected
        # byte for byte as writeSSE writes them: the dicts above list their keys in the Go structs' field order
        assert data == b"".join(b"event: %s\ndata: %s\n\n" % (name.encode(), op.json_bytes(obj)) for name, obj in expected)


# ---------------------------------------------------------------------------
# Estimates: EstimateCountTokens / EstimateInputTokens (len/4, at least 1 when there is anything)
# ---------------------------------------------------------------------------

ESTIMATE_CASES = [
    # TestEstimateTokens_SimpleMessage: "user" 4 + "Hello, world!" 13 = 17 -> 4 (Go checks 1..10)
    pytest.param({"model": "test-model", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello, world!"}]}]}, 4,
                 id="EstimateTokens_SimpleMessage"),
    # TestEstimateTokens_WithSystemPrompt: 28 + "user" 4 + "Hello" 5 = 37 -> 9 (Go checks >= 5)
    pytest.param({"model": "test-model", "system": "You are a helpful assistant.", "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]}, 9,
                 id="EstimateTokens_WithSystemPrompt"),
    # TestEstimateTokens_WithTools: 4 + 19 + "get_weather" 11 + description 38 + raw schema 61 = 133 -> 33 (Go checks >= 10)
    pytest.param({"model": "test-model", "messages": [{"role": "user", "content": [{"type": "text", "text": "What's the weather?"}]}],
                  "tools": [{"name": "get_weather", "description": "Get the current weather for a location",
                             "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]}, 33,
                 id="EstimateTokens_WithTools"),
    # TestEstimateTokens_WithThinking: 4 + 5 + "assistant" 9 + thinking 36 + text 20 = 74 -> 18 (Go checks >= 10)
    pytest.param({"model": "test-model", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "Let me think about this carefully..."}, {"type": "text", "text": "Here is my response."}]},
    ]}, 18, id="EstimateTokens_WithThinking"),
    # TestEstimateTokens_EmptyContent
    pytest.param({"model": "test-model", "messages": []}, 0, id="EstimateTokens_EmptyContent"),
]


@pytest.mark.parametrize("body, tokens", ESTIMATE_CASES)
def test_estimate_tokens(body, tokens):
    assert op.anthropic_estimate_tokens(body) == tokens


# TestConvertOllamaToAnthropicResults, TestWebSearchTypes, TestCitation: not ported (web search).
