"""Ollama's own Go unit tests for its OpenAI /v1/responses layer, ported to the proxy's translators.

Sources (Ollama v0.33.0-rc2): ``openai/responses_test.go`` and the Responses case of
``middleware/openai_test.go``, read against ``openai/responses.go`` and ``middleware/openai.go``.
Every case names the Go test it comes from (and its subtest, where there is one).  Go structs
are written as the JSON they marshal to or from:

* a Go ``ResponsesRequest`` (or a request JSON, kept as the Go test writes it) -> the dict given
  to ``responses_to_native``; a test that only decodes an input item or a message
  (``unmarshalResponsesInputItem``, ``ResponsesInputMessage.UnmarshalJSON``) is seen through a
  request whose ``input`` holds that one item;
* a Go ``api.ChatRequest`` -> the native /api/chat dict it returns (``Options`` -> ``options``,
  ``Stream`` -> ``stream``, ``Think`` -> ``think``, ``Format`` -> ``format``).  Three Go
  marshalling details that Ollama reads back the same either way are left out: a nil
  ``Messages`` is ``null`` in Go and ``[]`` here; a function's ``parameters`` are the client's
  JSON object (Go re-marshals them as ``api.ToolFunctionParameters``, which adds
  ``"properties": null`` when there are none); ``ToolCallFunction``'s zero ``"index": 0``;
* a Go ``api.ChatResponse`` -> the native JSON Ollama sends (zero ``Role`` is ``""``, zero
  ``CreatedAt`` is ``0001-01-01T00:00:00Z``);
* a Go ``ResponsesResponse`` / ``ResponsesStreamEvent`` -> the dict / SSE event the proxy writes
  (compared as parsed JSON: Go marshals the event maps with sorted keys and HTML escaping).

Where a Go test only checks a count, a type or a few fields, the expected value here is the whole
one Go's code computes for that input.  Stream ids that Go draws from math/rand (``rs_<n>``,
``fc_<n>_<i>``) are compared by pattern: each distinct one becomes ``rs_#k`` / ``fc_#k_<i>`` in
order of first appearance, so an item keeps one id from its ``added`` to its ``done`` event.
``created_at`` in streamed response objects comes from the translator's clock (Go: time.Now()).

Not ported, on purpose:

* web search in the stream: ``TestResponsesStreamConverter_WebSearchCall`` and
  ``TestResponsesStreamConverter_FinishMessageItem`` (``StartWebSearchCall``,
  ``FinishWebSearchCall``, ``FinishMessageItem`` belong to Ollama's search loop, which the proxy
  does not run); ``TestResponsesStreamConverter_FinalOutputKeepsStreamedItemOrder`` is ported
  without its web-search legs (what stays is the invariant it checks).  The request side of web
  search is ported as far as ``FromResponsesRequest`` goes;
* ``TestDecodeImageURL`` is ported only through a responses ``input_image``;
* ``TestResponsesMiddlewareZstd`` "zstd compressed" and "zstd over max decompressed size": the
  proxy does not decompress request bodies (the standard library has no zstd before Python
  3.14). A body with a ``Content-Encoding`` goes upstream untranslated, byte for byte, and Ollama
  inflates it (test_responses.py, ``test_compressed_body_passes_through_untranslated``). The
  "plain JSON" case is ported.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any, Dict, List, Optional, Tuple

import pytest

import ollama_proxy as op

# pngBase64 in responses_test.go (a 1x1 red PNG).  Go decodes it to bytes; api.ImageData marshals
# back to this same base64 text, which is what the proxy keeps.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="

# WebSearchFunctionTool(), as api.Tool marshals it: the function a local model sees for the built-in tool.
WEB_SEARCH_FUNCTION = {"type": "function", "function": {
    "name": "web_search", "description": "Search the web for current information.",
    "parameters": {"type": "object", "required": ["query"], "properties": {"query": {"type": "string", "description": "The search query."}}}}}


def go_json(text: str) -> Any:
    """A Go test's request JSON (a Go raw string: its ``\\"`` are JSON escapes, kept as written)."""
    return json.loads(text)


def native(model: str, messages: List[Dict[str, Any]], options: Optional[Dict[str, Any]] = None, **extra: Any) -> Dict[str, Any]:
    """The api.ChatRequest FromResponsesRequest builds and the middleware sends on, as JSON
    (temperature 1.0 when the request has none; ``stream`` false unless asked)."""
    out: Dict[str, Any] = {"model": model, "messages": messages, "options": options or {"temperature": 1.0}, "stream": False}
    out.update(extra)
    return out


def msg(role: str, content: str = "", **extra: Any) -> Dict[str, Any]:
    """An api.Message as JSON (``content`` always there, the rest omitempty)."""
    return {"role": role, "content": content, **extra}


def call(call_id: str, name: str, arguments: Dict[str, Any]) -> Dict[str, Any]:
    """An api.ToolCall as JSON."""
    return {"id": call_id, "function": {"name": name, "arguments": arguments}}


def one_item(item: Any, model: str = "test-model") -> Dict[str, Any]:
    """A request whose input is the one item a Go decoding test unmarshals."""
    return {"model": model, "input": [item]}


def image_request(url: str) -> Dict[str, Any]:
    """TestDecodeImageURL's URL as a responses input_image."""
    return {"model": "llava", "input": [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "What is in this image?"}, {"type": "input_image", "detail": "auto", "image_url": url}]}]}


def effort_request(effort: Optional[str]) -> Dict[str, Any]:
    """TestFromResponsesRequest_ReasoningEffort's request: Reasoning.Effort set only when not empty."""
    body: Dict[str, Any] = {"model": "deepseek-v4-flash", "input": "hi"}
    if effort:
        body["reasoning"] = {"effort": effort}
    return body


def effort_native(**think: Any) -> Dict[str, Any]:
    return native("deepseek-v4-flash", [msg("user", "hi")], **think)


NAMESPACE_TOOLS = go_json("""{
    "model": "gpt-oss:20b",
    "input": "hello",
    "tools": [
        {
            "type": "namespace",
            "name": "muse",
            "description": "Muse Code tool set.",
            "tools": [
                {
                    "type": "function",
                    "name": "bash",
                    "description": "Runs a shell command",
                    "strict": true,
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "command": {"type": "string"}
                        },
                        "required": ["command"]
                    }
                },
                {
                    "type": "function",
                    "name": "muse.read_file",
                    "description": "Reads a file",
                    "strict": true,
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "string"}
                        },
                        "required": ["path"]
                    }
                }
            ]
        },
        {
            "type": "function",
            "name": "plain",
            "description": "A non-namespaced tool",
            "strict": false,
            "parameters": {"type": "object"}
        }
    ]
}""")

SHELL_PARAMETERS = {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}, "description": "The command to execute"}},
                    "required": ["command"]}

PERSON_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}

# ---------------------------------------------------------------------------
# Request conversion: ResponsesMiddleware's binding, then FromResponsesRequest
# ---------------------------------------------------------------------------

REQUEST_CASES = [
    # TestResponsesInputMessage_UnmarshalJSON "text content"
    pytest.param(one_item(go_json('{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}')),
                 native("test-model", [msg("user", "hello")]), id="ResponsesInputMessage_UnmarshalJSON_text_content"),
    # TestResponsesInputMessage_UnmarshalJSON "image content": not a conversion; its https URL is refused (REQUEST_ERROR_CASES).
    # TestResponsesInputMessage_UnmarshalJSON "multiple content items" (convertResponsesContent concatenates the texts)
    pytest.param(one_item(go_json('{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}, {"type": "input_text", "text": "world"}]}')),
                 native("test-model", [msg("user", "helloworld")]), id="ResponsesInputMessage_UnmarshalJSON_multiple_content_items"),
    # TestResponsesInput_UnmarshalJSON "plain string"
    pytest.param({"model": "test-model", "input": go_json('"hello world"')}, native("test-model", [msg("user", "hello world")]),
                 id="ResponsesInput_UnmarshalJSON_plain_string"),
    # TestResponsesInput_UnmarshalJSON "array with one message"
    pytest.param({"model": "test-model", "input": go_json('[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}]')},
                 native("test-model", [msg("user", "hello")]), id="ResponsesInput_UnmarshalJSON_array_with_one_message"),
    # TestResponsesInput_UnmarshalJSON "array with multiple messages"
    pytest.param({"model": "test-model", "input": go_json(
        '[{"type": "message", "role": "system", "content": [{"type": "input_text", "text": "you are helpful"}]},'
        ' {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}]')},
                 native("test-model", [msg("system", "you are helpful"), msg("user", "hello")]), id="ResponsesInput_UnmarshalJSON_array_with_multiple_messages"),
    # TestUnmarshalResponsesInputItem "message item"
    pytest.param(one_item(go_json('{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}')),
                 native("test-model", [msg("user", "hello")]), id="UnmarshalResponsesInputItem_message_item"),
    # TestUnmarshalResponsesInputItem "function_call item"
    pytest.param(one_item(go_json(r'{"type": "function_call", "call_id": "call_abc123", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}')),
                 native("test-model", [msg("assistant", tool_calls=[call("call_abc123", "get_weather", {"city": "Paris"})])]),
                 id="UnmarshalResponsesInputItem_function_call_item"),
    # TestUnmarshalResponsesInputItem "function_call_output item"
    pytest.param(one_item(go_json('{"type": "function_call_output", "call_id": "call_abc123", "output": "the result"}')),
                 native("test-model", [msg("tool", "the result", tool_call_id="call_abc123")]), id="UnmarshalResponsesInputItem_function_call_output_item"),
    # TestUnmarshalResponsesInputItem "function_call_output item with content array"
    pytest.param(one_item(go_json('{"type": "function_call_output", "call_id": "call_abc123", "output": [{"type": "input_text", "text": "the result"}]}')),
                 native("test-model", [msg("tool", "the result", tool_call_id="call_abc123")]),
                 id="UnmarshalResponsesInputItem_function_call_output_item_with_content_array"),
    # TestUnmarshalResponsesInputItem "web_search_call item" (decoded, then history only: no message; Go's nil Messages)
    pytest.param(one_item(go_json('{"type":"web_search_call","id":"ws_123","status":"completed","action":{"type":"search","query":"Parth Sareen"}}')),
                 native("test-model", []), id="UnmarshalResponsesInputItem_web_search_call_item"),
    # TestFromResponsesRequestIgnoresReplayedWebSearchCall
    pytest.param({"model": "test", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Who is Parth Sareen?"}]},
        {"id": "ws_123", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "Parth Sareen"}},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "He works at Ollama."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What do you think of him?"}]},
    ]}, native("test", [msg("user", "Who is Parth Sareen?"), msg("assistant", "He works at Ollama."), msg("user", "What do you think of him?")]),
        id="FromResponsesRequestIgnoresReplayedWebSearchCall"),
    # TestFromResponsesRequestMergesMessageAfterFunctionCall
    pytest.param(go_json(r"""{
        "model": "kimi-k3:cloud",
        "input": [
            {"role": "user", "content": "Find Ollama and inspect the current directory."},
            {"type": "web_search_call", "id": "ws_test", "status": "completed", "action": {"type": "search", "query": "Ollama"}},
            {"type": "function_call", "call_id": "call_test", "name": "exec_command", "arguments": "{\"cmd\":\"pwd\"}"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "I found Ollama and will inspect the directory."}]},
            {"type": "function_call_output", "call_id": "call_test", "output": "/tmp"}
        ]
    }"""), native("kimi-k3:cloud", [
        msg("user", "Find Ollama and inspect the current directory."),
        msg("assistant", "I found Ollama and will inspect the directory.", tool_calls=[call("call_test", "exec_command", {"cmd": "pwd"})]),
        msg("tool", "/tmp", tool_call_id="call_test"),
    ]), id="FromResponsesRequestMergesMessageAfterFunctionCall"),
    # TestResponsesRequest_UnmarshalJSON "simple string input"
    pytest.param(go_json('{"model": "gpt-oss:20b", "input": "hello"}'), native("gpt-oss:20b", [msg("user", "hello")]),
                 id="ResponsesRequest_UnmarshalJSON_simple_string_input"),
    # TestResponsesRequest_UnmarshalJSON "array input with messages"
    pytest.param(go_json('{"model": "gpt-oss:20b", "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}]}'),
                 native("gpt-oss:20b", [msg("user", "hello")]), id="ResponsesRequest_UnmarshalJSON_array_input_with_messages"),
    # TestResponsesRequest_UnmarshalJSON "with temperature"
    pytest.param(go_json('{"model": "gpt-oss:20b", "input": "hello", "temperature": 0.5}'),
                 native("gpt-oss:20b", [msg("user", "hello")], {"temperature": 0.5}), id="ResponsesRequest_UnmarshalJSON_with_temperature"),
    # TestFromResponsesRequest_Tools ("strict" is parsed and dropped)
    pytest.param({"model": "gpt-oss:20b", "input": "hello", "tools": [
        {"type": "function", "name": "shell", "description": "Runs a shell command", "strict": False, "parameters": SHELL_PARAMETERS}]},
        native("gpt-oss:20b", [msg("user", "hello")], tools=[
            {"type": "function", "function": {"name": "shell", "description": "Runs a shell command", "parameters": SHELL_PARAMETERS}}]),
        id="FromResponsesRequest_Tools"),
    # TestFromResponsesRequest_WebSearchTool (the builtin becomes WebSearchFunctionTool; the client's own web_search is dropped)
    pytest.param(go_json("""{
        "model":"gpt-oss:20b", "input":"latest news",
        "tools":[
            {"type":"web_search"},
            {"type":"function", "name":"web_search", "description":"client collision", "parameters":{"type":"object"}},
            {"type":"function", "name":"weather", "description":"weather", "parameters":{"type":"object"}}
        ]
    }"""), native("gpt-oss:20b", [msg("user", "latest news")], tools=[
        WEB_SEARCH_FUNCTION, {"type": "function", "function": {"name": "weather", "description": "weather", "parameters": {"type": "object"}}}]),
        id="FromResponsesRequest_WebSearchTool"),
    # TestFromResponsesRequest_WebSearchIgnoresUnknownControls (three declarations)
    *[pytest.param({"model": "test", "input": "hi", "tools": [go_json(declaration)]}, native("test", [msg("user", "hi")], tools=[WEB_SEARCH_FUNCTION]),
                   id="FromResponsesRequest_WebSearchIgnoresUnknownControls_" + name)
      for name, declaration in (("filters", '{"type":"web_search","filters":{"allowed_domains":["example.com"]}}'),
                                ("user_location", '{"type":"web_search","user_location":{"type":"approximate"}}'),
                                ("search_context_size", '{"type":"web_search","search_context_size":"high"}'))],
    # TestFromResponsesRequest_NamespaceTools (members qualified once, the namespace's own description dropped)
    pytest.param(NAMESPACE_TOOLS, native("gpt-oss:20b", [msg("user", "hello")], tools=[
        {"type": "function", "function": {"name": "muse.bash", "description": "Runs a shell command", "parameters": {
            "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}},
        {"type": "function", "function": {"name": "muse.read_file", "description": "Reads a file", "parameters": {
            "type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}},
        {"type": "function", "function": {"name": "plain", "description": "A non-namespaced tool", "parameters": {"type": "object"}}},
    ]), id="FromResponsesRequest_NamespaceTools"),
    # TestFromResponsesRequest_ReasoningEffort (thinkFromReasoningEffort; "invalid" is in REQUEST_ERROR_CASES)
    pytest.param(effort_request(None), effort_native(), id="FromResponsesRequest_ReasoningEffort_unset"),
    pytest.param(effort_request("low"), effort_native(think="low"), id="FromResponsesRequest_ReasoningEffort_low"),
    pytest.param(effort_request("medium"), effort_native(think="medium"), id="FromResponsesRequest_ReasoningEffort_medium"),
    pytest.param(effort_request("high"), effort_native(think="high"), id="FromResponsesRequest_ReasoningEffort_high"),
    pytest.param(effort_request("max"), effort_native(think="max"), id="FromResponsesRequest_ReasoningEffort_max"),
    pytest.param(effort_request("minimal"), effort_native(think="low"), id="FromResponsesRequest_ReasoningEffort_minimal_clamps_to_low"),
    pytest.param(effort_request("xhigh"), effort_native(think="max"), id="FromResponsesRequest_ReasoningEffort_xhigh_clamps_to_max"),
    pytest.param(effort_request("ultra"), effort_native(think="max"), id="FromResponsesRequest_ReasoningEffort_ultra_clamps_to_max"),
    pytest.param(effort_request("none"), effort_native(think=False), id="FromResponsesRequest_ReasoningEffort_none"),
    # TestFromResponsesRequest_FunctionCallOutput
    pytest.param(go_json(r"""{
        "model": "gpt-oss:20b",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what is the weather?"}]},
            {"type": "function_call", "call_id": "call_abc123", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_abc123", "output": "sunny, 72F"}
        ]
    }"""), native("gpt-oss:20b", [
        msg("user", "what is the weather?"),
        msg("assistant", tool_calls=[call("call_abc123", "get_weather", {"city": "Paris"})]),
        msg("tool", "sunny, 72F", tool_call_id="call_abc123"),
    ]), id="FromResponsesRequest_FunctionCallOutput"),
    # TestFromResponsesRequest_FunctionCallOutputContentArray
    pytest.param(go_json(r"""{
        "model": "gpt-oss:20b",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what is the weather?"}]},
            {"type": "function_call", "call_id": "call_abc123", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_abc123", "output": [{"type": "input_text", "text": "sunny"}, {"type": "input_text", "text": ", 72F"}]}
        ]
    }"""), native("gpt-oss:20b", [
        msg("user", "what is the weather?"),
        msg("assistant", tool_calls=[call("call_abc123", "get_weather", {"city": "Paris"})]),
        msg("tool", "sunny, 72F", tool_call_id="call_abc123"),
    ]), id="FromResponsesRequest_FunctionCallOutputContentArray"),
    # TestFromResponsesRequest_FunctionCallOutputContentArrayWithImage
    pytest.param(go_json("""{
        "model": "gpt-oss:20b",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "inspect the image"}]},
            {"type": "function_call", "call_id": "call_abc123", "name": "inspect_image", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_abc123", "output": [
                {"type": "input_text", "text": "attached image"},
                {"type": "input_image", "detail": "auto", "image_url": "data:image/png;base64,%s"}
            ]}
        ]
    }""" % PNG), native("gpt-oss:20b", [
        msg("user", "inspect the image"),
        msg("assistant", tool_calls=[call("call_abc123", "inspect_image", {})]),
        msg("tool", "attached image", images=[PNG], tool_call_id="call_abc123"),
    ]), id="FromResponsesRequest_FunctionCallOutputContentArrayWithImage"),
    # TestFromResponsesRequest_FunctionCallMerge "function call merges with preceding assistant message"
    pytest.param(go_json(r"""{
        "model": "gpt-oss:20b",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what is the weather?"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "I'll check the weather for you."}]},
            {"type": "function_call", "call_id": "call_abc123", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}
        ]
    }"""), native("gpt-oss:20b", [
        msg("user", "what is the weather?"),
        msg("assistant", "I'll check the weather for you.", tool_calls=[call("call_abc123", "get_weather", {"city": "Paris"})]),
    ]), id="FromResponsesRequest_FunctionCallMerge_function_call_merges_with_preceding_assistant_message"),
    # TestFromResponsesRequest_FunctionCallMerge "function call without preceding assistant creates new message"
    pytest.param(go_json(r"""{
        "model": "gpt-oss:20b",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what is the weather?"}]},
            {"type": "function_call", "call_id": "call_abc123", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}
        ]
    }"""), native("gpt-oss:20b", [
        msg("user", "what is the weather?"),
        msg("assistant", tool_calls=[call("call_abc123", "get_weather", {"city": "Paris"})]),
    ]), id="FromResponsesRequest_FunctionCallMerge_function_call_without_preceding_assistant_creates_new_message"),
    # TestFromResponsesRequest_FunctionCallMerge "multiple function calls merge into same assistant message"
    pytest.param(go_json(r"""{
        "model": "gpt-oss:20b",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "check weather and time"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "I'll check both."}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{\"city\":\"Paris\"}"}
        ]
    }"""), native("gpt-oss:20b", [
        msg("user", "check weather and time"),
        msg("assistant", "I'll check both.", tool_calls=[call("call_1", "get_weather", {"city": "Paris"}), call("call_2", "get_time", {"city": "Paris"})]),
    ]), id="FromResponsesRequest_FunctionCallMerge_multiple_function_calls_merge_into_same_assistant_message"),
    # TestFromResponsesRequest_FunctionCallMerge "new assistant message starts fresh tool call group"
    pytest.param(go_json("""{
        "model": "gpt-oss:20b",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "do multiple things"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "First batch."}]},
            {"type": "function_call", "call_id": "call_1", "name": "func_a", "arguments": "{}"},
            {"type": "function_call", "call_id": "call_2", "name": "func_b", "arguments": "{}"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Second batch."}]},
            {"type": "function_call", "call_id": "call_3", "name": "func_c", "arguments": "{}"}
        ]
    }"""), native("gpt-oss:20b", [
        msg("user", "do multiple things"),
        msg("assistant", "First batch.", tool_calls=[call("call_1", "func_a", {}), call("call_2", "func_b", {})]),
        msg("assistant", "Second batch.", tool_calls=[call("call_3", "func_c", {})]),
    ]), id="FromResponsesRequest_FunctionCallMerge_new_assistant_message_starts_fresh_tool_call_group"),
    # TestFromResponsesRequest_FunctionCallMerge "function call merges with assistant that has thinking"
    pytest.param(go_json("""{
        "model": "gpt-oss:20b",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "think and act"}]},
            {"type": "reasoning", "id": "rs_1", "encrypted_content": "Let me think...", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "I thought about it."}]},
            {"type": "function_call", "call_id": "call_1", "name": "do_thing", "arguments": "{}"}
        ]
    }"""), native("gpt-oss:20b", [
        msg("user", "think and act"),
        msg("assistant", "I thought about it.", thinking="Let me think...", tool_calls=[call("call_1", "do_thing", {})]),
    ]), id="FromResponsesRequest_FunctionCallMerge_function_call_merges_with_assistant_that_has_thinking"),
    # TestFromResponsesRequest_FunctionCallMerge "mixed thinking and content with multiple tool calls"
    pytest.param(go_json("""{
        "model": "gpt-oss:20b",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "complex task"}]},
            {"type": "reasoning", "id": "rs_1", "encrypted_content": "Thinking first...", "summary": []},
            {"type": "message", "role": "assistant", "content": ""},
            {"type": "function_call", "call_id": "call_1", "name": "think_action", "arguments": "{}"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Now doing more."}]},
            {"type": "function_call", "call_id": "call_2", "name": "action_a", "arguments": "{}"},
            {"type": "function_call", "call_id": "call_3", "name": "action_b", "arguments": "{}"}
        ]
    }"""), native("gpt-oss:20b", [
        msg("user", "complex task"),
        msg("assistant", thinking="Thinking first...", tool_calls=[call("call_1", "think_action", {})]),
        msg("assistant", "Now doing more.", tool_calls=[call("call_2", "action_a", {}), call("call_3", "action_b", {})]),
    ]), id="FromResponsesRequest_FunctionCallMerge_mixed_thinking_and_content_with_multiple_tool_calls"),
    # TestDecodeImageURL "valid png" (through an input_image; the refused URLs are in REQUEST_ERROR_CASES)
    pytest.param(image_request("data:image/png;base64," + PNG), native("llava", [msg("user", "What is in this image?", images=[PNG])]),
                 id="DecodeImageURL_valid_png"),
    # TestDecodeImageURL "valid jpeg"
    pytest.param(image_request("data:image/jpeg;base64,/9j/4AAQSkZJRg=="), native("llava", [msg("user", "What is in this image?", images=["/9j/4AAQSkZJRg=="])]),
                 id="DecodeImageURL_valid_jpeg"),
    # TestDecodeImageURL "blank mime type"
    pytest.param(image_request("data:;base64,dGVzdA=="), native("llava", [msg("user", "What is in this image?", images=["dGVzdA=="])]),
                 id="DecodeImageURL_blank_mime_type"),
    # TestFromResponsesRequest_Images
    pytest.param(go_json("""{
        "model": "llava",
        "input": [
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is in this image?"},
                {"type": "input_image", "detail": "auto", "image_url": "data:image/png;base64,%s"}
            ]}
        ]
    }""" % PNG), native("llava", [msg("user", "What is in this image?", images=[PNG])]), id="FromResponsesRequest_Images"),
    # TestFromResponsesRequest_ReasoningMerge "reasoning merged with following message" (the summary is not used)
    pytest.param(go_json("""{
        "model": "qwen3",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "solve 2+2"}]},
            {"type": "reasoning", "id": "rs_123", "encrypted_content": "Let me think about this math problem...", "summary": [{"type": "summary_text", "text": "Thinking about math"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "input_text", "text": "The answer is 4"}]}
        ]
    }"""), native("qwen3", [msg("user", "solve 2+2"), msg("assistant", "The answer is 4", thinking="Let me think about this math problem...")]),
        id="FromResponsesRequest_ReasoningMerge_reasoning_merged_with_following_message"),
    # TestFromResponsesRequest_ReasoningMerge "reasoning merged with following function call"
    pytest.param(go_json(r"""{
        "model": "qwen3",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what is the weather?"}]},
            {"type": "reasoning", "id": "rs_123", "encrypted_content": "I need to call a tool for this...", "summary": []},
            {"type": "function_call", "call_id": "call_abc", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}
        ]
    }"""), native("qwen3", [
        msg("user", "what is the weather?"),
        msg("assistant", thinking="I need to call a tool for this...", tool_calls=[call("call_abc", "get_weather", {"city": "Paris"})]),
    ]), id="FromResponsesRequest_ReasoningMerge_reasoning_merged_with_following_function_call"),
    # TestFromResponsesRequest_ReasoningMerge "multi-turn conversation with reasoning"
    pytest.param(go_json("""{
        "model": "qwen3",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is 2+2?"}]},
            {"type": "reasoning", "id": "rs_001", "encrypted_content": "This is a simple arithmetic problem. 2+2=4.", "summary": [{"type": "summary_text", "text": "Calculating 2+2"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "input_text", "text": "The answer is 4."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Now multiply that by 3"}]}
        ]
    }"""), native("qwen3", [
        msg("user", "What is 2+2?"),
        msg("assistant", "The answer is 4.", thinking="This is a simple arithmetic problem. 2+2=4."),
        msg("user", "Now multiply that by 3"),
    ]), id="FromResponsesRequest_ReasoningMerge_multi-turn_conversation_with_reasoning"),
    # TestFromResponsesRequest_ReasoningMerge "multi-turn with tool calls and reasoning"
    pytest.param(go_json(r"""{
        "model": "qwen3",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is the weather in Paris?"}]},
            {"type": "reasoning", "id": "rs_001", "encrypted_content": "I need to call the weather API for Paris.", "summary": []},
            {"type": "function_call", "call_id": "call_abc", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_abc", "output": "Sunny, 72°F"},
            {"type": "reasoning", "id": "rs_002", "encrypted_content": "The weather API returned sunny and 72°F. I should format this nicely.", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "input_text", "text": "It's sunny and 72°F in Paris!"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What about London?"}]}
        ]
    }"""), native("qwen3", [
        msg("user", "What is the weather in Paris?"),
        msg("assistant", thinking="I need to call the weather API for Paris.", tool_calls=[call("call_abc", "get_weather", {"city": "Paris"})]),
        msg("tool", "Sunny, 72°F", tool_call_id="call_abc"),
        msg("assistant", "It's sunny and 72°F in Paris!", thinking="The weather API returned sunny and 72°F. I should format this nicely."),
        msg("user", "What about London?"),
    ]), id="FromResponsesRequest_ReasoningMerge_multi-turn_with_tool_calls_and_reasoning"),
    # TestFromResponsesRequest_ReasoningMerge "trailing reasoning creates separate message"
    pytest.param(go_json("""{
        "model": "qwen3",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "think about this"}]},
            {"type": "reasoning", "id": "rs_123", "encrypted_content": "Still thinking...", "summary": []}
        ]
    }"""), native("qwen3", [msg("user", "think about this"), msg("assistant", thinking="Still thinking...")]),
        id="FromResponsesRequest_ReasoningMerge_trailing_reasoning_creates_separate_message"),
    # TestFromResponsesRequest_Instructions
    pytest.param(go_json("""{
        "model": "gpt-oss:20b",
        "instructions": "You are a helpful pirate. Always respond in pirate speak.",
        "input": "Hello"
    }"""), native("gpt-oss:20b", [msg("system", "You are a helpful pirate. Always respond in pirate speak."), msg("user", "Hello")]),
        id="FromResponsesRequest_Instructions"),
    # TestFromResponsesRequest_MaxOutputTokens
    pytest.param(go_json("""{
        "model": "gpt-oss:20b",
        "input": "Write a story",
        "max_output_tokens": 100
    }"""), native("gpt-oss:20b", [msg("user", "Write a story")], {"temperature": 1.0, "num_predict": 100}), id="FromResponsesRequest_MaxOutputTokens"),
    # TestFromResponsesRequest_TextFormatJsonSchema (the schema is the format; name and strict are echo-only)
    pytest.param(go_json("""{
        "model": "gpt-oss:20b",
        "input": "Give me info about John who is 30",
        "text": {
            "format": {
                "type": "json_schema",
                "name": "person",
                "strict": true,
                "schema": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "age": {"type": "integer"}
                    },
                    "required": ["name", "age"]
                }
            }
        }
    }"""), native("gpt-oss:20b", [msg("user", "Give me info about John who is 30")], format=PERSON_SCHEMA), id="FromResponsesRequest_TextFormatJsonSchema"),
    # TestFromResponsesRequest_TextFormatText (no format)
    pytest.param(go_json("""{
        "model": "gpt-oss:20b",
        "input": "Hello",
        "text": {
            "format": {
                "type": "text"
            }
        }
    }"""), native("gpt-oss:20b", [msg("user", "Hello")]), id="FromResponsesRequest_TextFormatText"),
    # TestResponsesInputMessage_ShorthandFormats "string content shorthand"
    pytest.param(one_item(go_json('{"type": "message", "role": "user", "content": "Hello world"}')), native("test-model", [msg("user", "Hello world")]),
                 id="ResponsesInputMessage_ShorthandFormats_string_content_shorthand"),
    # TestResponsesInputMessage_ShorthandFormats "output_text content type"
    pytest.param(one_item(go_json('{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "I am an assistant"}]}')),
                 native("test-model", [msg("assistant", "I am an assistant")]), id="ResponsesInputMessage_ShorthandFormats_output_text_content_type"),
    # TestUnmarshalResponsesInputItem_ShorthandMessage "message without type field"
    pytest.param(one_item(go_json('{"role": "user", "content": "Hello"}')), native("test-model", [msg("user", "Hello")]),
                 id="UnmarshalResponsesInputItem_ShorthandMessage_message_without_type_field"),
    # TestUnmarshalResponsesInputItem_ShorthandMessage "message with both type and role"
    pytest.param(one_item(go_json('{"type": "message", "role": "system", "content": "You are helpful"}')), native("test-model", [msg("system", "You are helpful")]),
                 id="UnmarshalResponsesInputItem_ShorthandMessage_message_with_both_type_and_role"),
    # TestFromResponsesRequest_ShorthandFormats "shorthand message without type"
    pytest.param(go_json("""{
        "model": "gpt-4.1",
        "input": [
            {"role": "user", "content": "What is the weather in Tokyo?"}
        ]
    }"""), native("gpt-4.1", [msg("user", "What is the weather in Tokyo?")]), id="FromResponsesRequest_ShorthandFormats_shorthand_message_without_type"),
    # TestFromResponsesRequest_ShorthandFormats "conversation with output_text from previous response"
    pytest.param(go_json("""{
        "model": "gpt-4.1",
        "input": [
            {"role": "user", "content": "Hello"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi there!"}]},
            {"role": "user", "content": "How are you?"}
        ]
    }"""), native("gpt-4.1", [msg("user", "Hello"), msg("assistant", "Hi there!"), msg("user", "How are you?")]),
        id="FromResponsesRequest_ShorthandFormats_conversation_with_output_text_from_previous_response"),
    # TestResponsesMiddlewareZstd "plain JSON" (the middleware's Stream is false when the request has none)
    pytest.param(go_json('{"model": "test-model", "input": "Hello"}'), native("test-model", [msg("user", "Hello")]), id="ResponsesMiddlewareZstd_plain_JSON"),
]


@pytest.mark.parametrize("body, expected", REQUEST_CASES)
def test_request_to_native(body, expected):
    assert op.responses_to_native(body) == expected


REQUEST_ERROR_CASES = [
    # TestResponsesInputMessage_UnmarshalJSON "image content": Go checks the decoding only; FromResponsesRequest then
    # refuses the https URL (decodeImageURL), which is what the middleware answers with.
    pytest.param(one_item(go_json('{"type": "message", "role": "user", "content": [{"type": "input_image", "detail": "auto", "image_url": "https://example.com/img.png"}]}')),
                 "image URLs are not currently supported, please use base64 encoded data instead", id="ResponsesInputMessage_UnmarshalJSON_image_content"),
    # TestResponsesInputMessage_UnmarshalJSON "unknown content type" (wrapped by the item decoder, then by ResponsesInput's)
    pytest.param(one_item(go_json('{"type": "message", "role": "user", "content": [{"type": "unknown"}]}')),
                 "input[0]: content[0]: unknown content type: unknown", id="ResponsesInputMessage_UnmarshalJSON_unknown_content_type"),
    # TestResponsesInput_UnmarshalJSON "invalid input" (json.Unmarshal of 123 into []json.RawMessage, wrapped)
    pytest.param({"model": "test-model", "input": go_json("123")},
                 "input must be a string or array: json: cannot unmarshal number into Go value of type []json.RawMessage", id="ResponsesInput_UnmarshalJSON_invalid_input"),
    # TestUnmarshalResponsesInputItem "unknown item type"
    pytest.param(one_item(go_json('{"type": "unknown_type"}')), 'input[0]: unknown input item type: "unknown_type"', id="UnmarshalResponsesInputItem_unknown_item_type"),
    # TestUnmarshalResponsesInputItem "missing type field"
    pytest.param(one_item(go_json('{"content": "hello"}')), "input[0]: input item missing required 'type' field", id="UnmarshalResponsesInputItem_missing_type_field"),
    # TestUnmarshalResponsesInputItem "empty type field"
    pytest.param(one_item(go_json('{"type": ""}')), "input[0]: input item missing required 'type' field", id="UnmarshalResponsesInputItem_empty_type_field"),
    # TestFromResponsesRequest_ReasoningEffort "invalid"
    pytest.param(effort_request("extreme"),
                 'invalid reasoning value: "extreme" (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")',
                 id="FromResponsesRequest_ReasoningEffort_invalid"),
    # TestDecodeImageURL "invalid mime type"
    pytest.param(image_request("data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"), "invalid image input",
                 id="DecodeImageURL_invalid_mime_type"),
    # TestDecodeImageURL "invalid base64"
    pytest.param(image_request("data:image/png;base64,not-valid-base64!"), "invalid image input", id="DecodeImageURL_invalid_base64"),
    # TestDecodeImageURL "not a data url"
    pytest.param(image_request("https://example.com/image.png"), "image URLs are not currently supported, please use base64 encoded data instead",
                 id="DecodeImageURL_not_a_data_url"),
]


@pytest.mark.parametrize("body, message", REQUEST_ERROR_CASES)
def test_request_refused(body, message):
    with pytest.raises(op.BadRequest) as info:
        op.responses_to_native(body)
    assert info.value.message == message
    # The middleware answers these with openai.NewError(400, err.Error()): an invalid_request_error.
    assert op.error_object(400, info.value.message, op.OPENAI) == {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}


# ---------------------------------------------------------------------------
# Whole responses: ToResponse / ResponsesWriter (non-streaming)
# ---------------------------------------------------------------------------

NOW = 1787313600  # 2026-08-21T12:00:00Z: the clock of every translator here (Go: time.Now())

# The fields a response object repeats from ResponsesRequest{} (no instructions, tools, text, reasoning, ...).
EMPTY_REQUEST_ECHO = {
    "instructions": None, "tools": [], "tool_choice": "auto", "truncation": "disabled", "parallel_tool_calls": True,
    "text": {"format": {"type": "text"}}, "top_p": 1.0, "presence_penalty": 0, "frequency_penalty": 0, "top_logprobs": 0,
    "temperature": 1.0, "reasoning": None,
}


def response_object(response_id: str, model: str, status: str, output: List[Any], usage: Optional[Dict[str, Any]],
                    created_at: int = NOW, completed_at: Optional[int] = None) -> Dict[str, Any]:
    """A response object for ResponsesRequest{}, in ResponsesResponse's field order (buildResponseObject has the same keys)."""
    out: Dict[str, Any] = {"id": response_id, "object": "response", "created_at": created_at, "completed_at": completed_at,
                           "status": status, "incomplete_details": None, "model": model, "previous_response_id": None,
                           "instructions": None, "output": output, "error": None}
    out.update((k, v) for k, v in EMPTY_REQUEST_ECHO.items() if k != "instructions")
    out.update({"usage": usage, "max_output_tokens": None, "max_tool_calls": None, "store": False, "background": False,
                "service_tier": "default", "metadata": {}, "safety_identifier": None, "prompt_cache_key": None})
    return out


def usage(prompt: int = 0, count: int = 0) -> Dict[str, Any]:
    return {"input_tokens": prompt, "output_tokens": count, "total_tokens": prompt + count,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


def output_text(text: str) -> Dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, status: str, content: List[Any]) -> Dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def reasoning_item(item_id: str, thinking: str) -> Dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": thinking}], "encrypted_content": thinking}


def function_call_item(item_id: str, status: str, call_id: str, name: str, arguments: str) -> Dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments}


# TestToResponse_WithReasoning (CreatedAt: a fixed time for Go's time.Now(); completed_at is the writer's time.Now())
def test_to_response_with_reasoning():
    answer = {"model": "", "created_at": "2026-08-21T12:00:00Z",
              "message": {"role": "", "content": "The answer is 42", "thinking": "Analyzing the question..."}, "done": True}
    got = op.native_chat_to_responses(answer, "gpt-oss:20b", "resp_123", "msg_456", {}, now=NOW + 3.7)
    expected = response_object("resp_123", "gpt-oss:20b", "completed", [
        reasoning_item("rs_resp_123", "Analyzing the question..."),  # fmt.Sprintf("rs_%s", responseID)
        message_item("msg_456", "completed", [output_text("The answer is 42")]),
    ], usage(), created_at=NOW, completed_at=NOW + 3)
    assert got == expected
    assert list(got) == list(expected)  # json.NewEncoder(w).Encode(response): the struct's field order


# ---------------------------------------------------------------------------
# Streams: ResponsesStreamConverter.Process
# ---------------------------------------------------------------------------

CREATED = "0001-01-01T00:00:00Z"  # api.ChatResponse's zero CreatedAt, as Go marshals it
RANDOM_ID = re.compile(r"(rs|fc)_(\d{1,6})(_\d+)?")


def events(data: bytes) -> List[Tuple[str, Dict[str, Any]]]:
    """SSE bytes as (event, data) pairs, checking writeEvent's framing: ``event: X\\ndata: {json}\\n\\n``."""
    out = []
    text = data.decode("utf-8")
    assert text == "" or text.endswith("\n\n")
    for frame in text.split("\n\n")[:-1]:
        head, _, body = frame.partition("\n")
        assert head.startswith("event: ") and body.startswith("data: ") and "\n" not in body, frame
        name, obj = head[len("event: "):], json.loads(body[len("data: "):])
        assert obj["type"] == name  # newEvent puts the event type into the data too
        out.append((name, obj))
    return out


def pattern_ids(obj: Any, seen: Dict[str, str]) -> Any:
    """``obj`` with each math/rand id (``rs_<n>``, ``fc_<n>_<i>``, n in 0..999998) replaced by
    ``rs_#k`` / ``fc_#k_<i>``, k counting the distinct ids in order of first appearance."""
    if isinstance(obj, dict):
        return {k: pattern_ids(v, seen) for k, v in obj.items()}
    if isinstance(obj, list):
        return [pattern_ids(v, seen) for v in obj]
    if isinstance(obj, tuple):
        return tuple(pattern_ids(v, seen) for v in obj)
    if isinstance(obj, str):
        m = RANDOM_ID.fullmatch(obj)
        if m and (m.group(1) == "fc") == (m.group(3) is not None) and int(m.group(2)) < 999999:
            if obj not in seen:
                seen[obj] = "%s_#%d%s" % (m.group(1), len(seen), m.group(3) or "")
            return seen[obj]
    return obj


def chunk(content: str = "", thinking: str = "", tool_calls: Optional[List[Any]] = None, done: bool = False, **extra: Any) -> Dict[str, Any]:
    """An api.ChatResponse as the native JSON Ollama sends (zero Model, CreatedAt and Role)."""
    message: Dict[str, Any] = {"role": "", "content": content}
    if thinking:
        message["thinking"] = thinking
    if tool_calls:
        message["tool_calls"] = tool_calls
    out: Dict[str, Any] = {"model": "", "created_at": CREATED, "message": message, "done": done}
    out.update(extra)
    return out


def go_tool_call(call_id: str, name: str, arguments: Dict[str, Any]) -> Dict[str, Any]:
    """An api.ToolCall as Ollama marshals it (with its zero index)."""
    return {"id": call_id, "function": {"index": 0, "name": name, "arguments": arguments}}


class Stream:
    """Builds the events one ResponsesStreamConverter emits, numbering them as newEvent does."""

    def __init__(self, response_id: str = "resp_123", item_id: str = "msg_456", model: str = "gpt-oss:20b") -> None:
        self.response_id, self.item_id, self.model = response_id, item_id, model
        self.seq = 0

    def ev(self, kind: str, **data: Any) -> Tuple[str, Dict[str, Any]]:
        data.update(type=kind, sequence_number=self.seq)
        self.seq += 1
        return kind, data

    def start(self) -> List[Tuple[str, Dict[str, Any]]]:
        return [self.ev("response.created", response=response_object(self.response_id, self.model, "in_progress", [], None)),
                self.ev("response.in_progress", response=response_object(self.response_id, self.model, "in_progress", [], None))]

    def text_start(self, index: int, delta: str) -> List[Tuple[str, Dict[str, Any]]]:
        return [self.ev("response.output_item.added", output_index=index, item=message_item(self.item_id, "in_progress", [])),
                self.ev("response.content_part.added", item_id=self.item_id, output_index=index, content_index=0, part=output_text("")),
                self.text_delta(index, delta)]

    def text_delta(self, index: int, delta: str) -> Tuple[str, Dict[str, Any]]:
        return self.ev("response.output_text.delta", item_id=self.item_id, output_index=index, content_index=0, delta=delta, logprobs=[])

    def text_done(self, index: int, text: str) -> List[Tuple[str, Dict[str, Any]]]:
        return [self.ev("response.output_text.done", item_id=self.item_id, output_index=index, content_index=0, text=text, logprobs=[]),
                self.ev("response.content_part.done", item_id=self.item_id, output_index=index, content_index=0, part=output_text(text)),
                self.ev("response.output_item.done", output_index=index, item=message_item(self.item_id, "completed", [output_text(text)]))]

    def reasoning_start(self, item_id: str, index: int, delta: str) -> List[Tuple[str, Dict[str, Any]]]:
        return [self.ev("response.output_item.added", output_index=index, item={"id": item_id, "type": "reasoning", "summary": []}),
                self.reasoning_delta(item_id, index, delta)]

    def reasoning_delta(self, item_id: str, index: int, delta: str) -> Tuple[str, Dict[str, Any]]:
        return self.ev("response.reasoning_summary_text.delta", item_id=item_id, output_index=index, summary_index=0, delta=delta)

    def reasoning_done(self, item_id: str, index: int, text: str) -> List[Tuple[str, Dict[str, Any]]]:
        return [self.ev("response.reasoning_summary_text.done", item_id=item_id, output_index=index, summary_index=0, text=text),
                self.ev("response.output_item.done", output_index=index, item=reasoning_item(item_id, text))]

    def function_call(self, item_id: str, index: int, call_id: str, name: str, arguments: str) -> List[Tuple[str, Dict[str, Any]]]:
        return [self.ev("response.output_item.added", output_index=index, item=function_call_item(item_id, "in_progress", call_id, name, "")),
                self.ev("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=arguments),
                self.ev("response.function_call_arguments.done", item_id=item_id, output_index=index, arguments=arguments),
                self.ev("response.output_item.done", output_index=index, item=function_call_item(item_id, "completed", call_id, name, arguments))]

    def completed(self, output: List[Any], prompt: int = 0, count: int = 0) -> Tuple[str, Dict[str, Any]]:
        return self.ev("response.completed", response=response_object(self.response_id, self.model, "completed", output, usage(prompt, count),
                                                                      completed_at=NOW))


def _text_only() -> List[Tuple[Dict[str, Any], List[Any]]]:
    s = Stream()
    return [
        (chunk("Hello"), s.start() + s.text_start(0, "Hello")),
        (chunk(" World"), [s.text_delta(0, " World")]),
        (chunk(done=True), s.text_done(0, "Hello World") + [s.completed([message_item("msg_456", "completed", [output_text("Hello World")])])]),
    ]


def _tool_calls() -> List[Tuple[Dict[str, Any], List[Any]]]:
    s = Stream()
    return [(chunk(tool_calls=[go_tool_call("call_abc", "get_weather", {"city": "Paris"})]),
             s.start() + s.function_call("fc_#0_0", 0, "call_abc", "get_weather", '{"city":"Paris"}'))]


def _reasoning() -> List[Tuple[Dict[str, Any], List[Any]]]:
    s = Stream()
    return [
        (chunk(thinking="Let me think..."), s.start() + s.reasoning_start("rs_#0", 0, "Let me think...")),
        (chunk("The answer is 42"), s.reasoning_done("rs_#0", 0, "Let me think...") + s.text_start(1, "The answer is 42")),
    ]


def _text_then_done(text: str) -> List[Tuple[Dict[str, Any], List[Any]]]:
    s = Stream()
    return [
        (chunk(text), s.start() + s.text_start(0, text)),
        (chunk(done=True), s.text_done(0, text) + [s.completed([message_item("msg_456", "completed", [output_text(text)])])]),
    ]


def _hello_world_sequence() -> List[Tuple[Dict[str, Any], List[Any]]]:
    s = Stream()
    return [(chunk("Hello"), s.start() + s.text_start(0, "Hello")), (chunk(" World"), [s.text_delta(0, " World")])]


def _final_output_order() -> List[Tuple[Dict[str, Any], List[Any]]]:
    s = Stream("resp_order", "msg_order", "test-model")
    return [
        (chunk(thinking="before search"), s.start() + s.reasoning_start("rs_#0", 0, "before search")),
        # (Go's web_search_call item would close the reasoning here and take output index 1)
        (chunk(thinking="after search"), [s.reasoning_delta("rs_#0", 0, "after search")]),
        (chunk("answer", done=True), s.reasoning_done("rs_#0", 0, "before searchafter search") + s.text_start(1, "answer") + s.text_done(1, "answer")
         + [s.completed([reasoning_item("rs_#0", "before searchafter search"), message_item("msg_order", "completed", [output_text("answer")])])]),
    ]


STREAM_CASES = [
    # TestResponsesStreamConverter_TextOnly
    pytest.param("resp_123", "msg_456", "gpt-oss:20b", _text_only(), id="ResponsesStreamConverter_TextOnly"),
    # TestResponsesStreamConverter_ToolCalls
    pytest.param("resp_123", "msg_456", "gpt-oss:20b", _tool_calls(), id="ResponsesStreamConverter_ToolCalls"),
    # TestResponsesStreamConverter_Reasoning
    pytest.param("resp_123", "msg_456", "gpt-oss:20b", _reasoning(), id="ResponsesStreamConverter_Reasoning"),
    # TestResponsesStreamConverter_OutputIncludesContent
    pytest.param("resp_123", "msg_456", "gpt-oss:20b", _text_then_done("Hello World"), id="ResponsesStreamConverter_OutputIncludesContent"),
    # TestResponsesStreamConverter_ResponseCompletedIncludesOutput
    pytest.param("resp_123", "msg_456", "gpt-oss:20b", _text_then_done("Test response"), id="ResponsesStreamConverter_ResponseCompletedIncludesOutput"),
    # TestResponsesStreamConverter_ResponseCreatedIncludesOutput
    pytest.param("resp_123", "msg_456", "gpt-oss:20b", [(chunk("Hi"), (lambda s: s.start() + s.text_start(0, "Hi"))(Stream()))],
                 id="ResponsesStreamConverter_ResponseCreatedIncludesOutput"),
    # TestResponsesStreamConverter_SequenceNumbers
    pytest.param("resp_123", "msg_456", "gpt-oss:20b", _hello_world_sequence(), id="ResponsesStreamConverter_SequenceNumbers"),
    # TestResponsesStreamConverter_FunctionCallStatus
    pytest.param("resp_123", "msg_456", "gpt-oss:20b", _tool_calls(), id="ResponsesStreamConverter_FunctionCallStatus"),
    # TestResponsesStreamConverter_FinalOutputKeepsStreamedItemOrder, without its web-search legs
    pytest.param("resp_order", "msg_order", "test-model", _final_output_order(), id="ResponsesStreamConverter_FinalOutputKeepsStreamedItemOrder"),
    # TestResponsesStreamConverter_WebSearchCall, TestResponsesStreamConverter_FinishMessageItem: not ported (web search).
]


@pytest.mark.parametrize("response_id, item_id, model, steps", STREAM_CASES)
def test_stream_converter(response_id, item_id, model, steps):
    # NewResponsesStreamConverter(responseID, itemID, model, ResponsesRequest{})
    translator = op.ResponsesStreamTranslator(model, response_id, item_id, {}, clock=lambda: NOW + 0.25, rng=random.Random(20260821))
    seen: Dict[str, str] = {}
    done_items: Dict[int, Any] = {}
    for native_chunk, expected in steps:
        got = pattern_ids(events(translator.feed(native_chunk)), seen)
        assert got == expected
        for name, data in got:
            if name == "response.output_item.done":
                done_items[data["output_index"]] = data["item"]
            if name == "response.completed":
                # FinalOutputKeepsStreamedItemOrder's invariant: output[i] is the item streamed done at index i.
                assert {i: item for i, item in enumerate(data["response"]["output"])} == done_items
    assert translator.finished == bool(steps[-1][0]["done"])


# ---------------------------------------------------------------------------
# The same request cases through the fake's own Responses layer (tests/fake_ollama.py): a second,
# independent port that the fidelity tests compare the proxy with, checked here against Go's tests.
# ---------------------------------------------------------------------------


def _fake_native(body: Any) -> Dict[str, Any]:
    import fake_ollama as fo
    fields, text, items = fo.bind_responses_request(json.dumps(body).encode())
    return fo.responses_request_to_native(fields, text, items)


def _comparable(native: Dict[str, Any]) -> Dict[str, Any]:
    """The fields the Go tests pin, without the marshalling details the docstring lists."""
    out = json.loads(json.dumps(native))
    out.pop("stream", None)
    for message in out.get("messages") or []:
        for call in message.get("tool_calls") or []:
            call["function"].pop("index", None)
    for tool in out.get("tools") or []:
        if tool["function"].get("parameters", {}).get("properties", 0) is None:
            del tool["function"]["parameters"]["properties"]
    return out


@pytest.mark.parametrize("body, expected", REQUEST_CASES)
def test_fake_request_to_native(body, expected):
    assert _comparable(_fake_native(body)) == _comparable(expected)


@pytest.mark.parametrize("body, message", REQUEST_ERROR_CASES)
def test_fake_request_refused(body, message):
    import fake_ollama as fo
    with pytest.raises(fo.HTTPError) as info:
        _fake_native(body)
    assert info.value.message == message and info.value.status == 400 and info.value.middleware


@pytest.mark.parametrize("response_id, item_id, model, steps", STREAM_CASES)
def test_fake_stream_converter(response_id, item_id, model, steps, monkeypatch):
    import fake_ollama as fo
    monkeypatch.setattr(fo.time, "time", lambda: NOW + 0.25)  # Go: time.Now() in buildResponseObject
    converter = fo.ResponsesStream(response_id, item_id, {"model": model}, random.Random(20260821))
    seen: Dict[str, str] = {}
    for native_chunk, expected in steps:
        assert pattern_ids(events(b"".join(converter.process(native_chunk))), seen) == expected
