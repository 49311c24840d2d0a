"""Table tests for section 8, the OpenAI translation (ollama-api.md §6, SPEC §7): pure functions, no sockets."""

from __future__ import annotations

import base64
import json
import random
import struct

import pytest

import ollama_proxy as op

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
T0 = "2026-08-21T12:00:00.123456789Z"
T0_UNIX = 1787313600


def chat(**fields):
    """A minimal valid /v1/chat/completions body with ``fields`` added."""
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return body


def events(data: bytes) -> list:
    """Split SSE bytes into decoded events ("[DONE]" stays a string); every event must be well framed."""
    assert data.endswith(b"\n\n") or data == b""
    out = []
    for raw in data.split(b"\n\n")[:-1]:
        assert raw.startswith(b"data: ") and b"\n" not in raw
        payload = raw[len(b"data: "):].decode()
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def bad_request(fn, body) -> str:
    """The message of the BadRequest that ``fn(body)`` raises."""
    with pytest.raises(op.BadRequest) as info:
        fn(body)
    assert info.value.status == 400
    return info.value.message


# -- /v1/chat/completions -> /api/chat: the mapping table -----------------------------------

def test_chat_minimal_request_gets_ollamas_defaults():
    """A bare request: model and messages kept, temperature and top_p forced to 1.0, stream false."""
    assert op.openai_chat_to_native(chat()) == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "hi"}],
        "options": {"temperature": 1.0, "top_p": 1.0},
        "stream": False,
    }


@pytest.mark.parametrize(
    "fields, options",
    [
        ({"max_tokens": 50}, {"num_predict": 50}),
        ({"max_completion_tokens": 70}, {"num_predict": 70}),
        ({"max_tokens": 50, "max_completion_tokens": 70}, {"num_predict": 50}),
        ({"max_tokens": None}, {}),
        ({"temperature": 0.2}, {"temperature": 0.2}),
        ({"temperature": 0}, {"temperature": 0}),
        ({"temperature": None}, {"temperature": 1.0}),
        ({"top_p": 0.5}, {"top_p": 0.5}),
        ({"seed": 42}, {"seed": 42}),
        ({"frequency_penalty": 0.5}, {"frequency_penalty": 0.5}),
        ({"presence_penalty": -0.5}, {"presence_penalty": -0.5}),
        ({"stop": "END"}, {"stop": ["END"]}),
        ({"stop": ["a", 3, "b"]}, {"stop": ["a", "b"]}),
        ({"stop": 5}, {}),
    ],
)
def test_chat_option_rows(fields, options):
    """Each OpenAI sampling field lands in the native options as the §6.1 table says."""
    expected = {"temperature": 1.0, "top_p": 1.0}
    expected.update(options)
    assert op.openai_chat_to_native(chat(**fields))["options"] == expected


def test_chat_penalties_are_not_sent_when_absent():
    """Chat sends frequency/presence penalties and seed only when the client gave them."""
    options = op.openai_chat_to_native(chat())["options"]
    assert not {"seed", "frequency_penalty", "presence_penalty", "num_predict", "stop"} & set(options)


@pytest.mark.parametrize(
    "fields, top",
    [
        ({"stream": True}, {"stream": True}),
        ({"stream": None}, {"stream": False}),
        ({"response_format": {"type": "json_object"}}, {"format": "json"}),
        ({"response_format": {"type": " JSON_Object "}}, {"format": "json"}),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {"type": "object"}}}}, {"format": {"type": "object"}}),
        ({"response_format": {"type": "json_schema"}}, {}),
        ({"response_format": {"type": "text"}}, {}),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
        ({"tools": []}, {}),
        ({"logprobs": True, "top_logprobs": 3}, {"logprobs": True, "top_logprobs": 3}),
        ({"logprobs": False}, {}),
        ({"keep_alive": "10m"}, {"keep_alive": "10m"}),
        ({"keep_alive": 0}, {"keep_alive": 0}),
        ({"think": False}, {"think": False}),
        ({"stream_options": {"include_usage": True}, "tool_choice": "auto", "n": 1, "user": "u", "num_ctx": 9}, {}),
    ],
)
def test_chat_top_level_rows(fields, top):
    """stream, response_format, tools, logprobs and the extra_body fields map to native top-level fields; the rest is dropped."""
    native = op.openai_chat_to_native(chat(**fields))
    extra = {k: v for k, v in native.items() if k not in ("model", "messages", "options")}
    expected = {"stream": False}
    expected.update(top)
    assert extra == expected


@pytest.mark.parametrize(
    "fields, think",
    [
        ({"reasoning_effort": "none"}, False),
        ({"reasoning_effort": "minimal"}, "low"),
        ({"reasoning_effort": "low"}, "low"),
        ({"reasoning_effort": "medium"}, "medium"),
        ({"reasoning_effort": "high"}, "high"),
        ({"reasoning_effort": "max"}, "max"),
        ({"reasoning_effort": "xhigh"}, "max"),
        ({"reasoning_effort": "ultra"}, "max"),
        ({"reasoning": {"effort": "high"}}, "high"),
        ({"reasoning": {"effort": "low"}, "reasoning_effort": "high"}, "low"),
        ({"reasoning": {}, "reasoning_effort": "high"}, None),
        ({"reasoning_effort": ""}, None),
        ({"reasoning_effort": "high", "think": False}, False),
    ],
)
def test_chat_reasoning_effort_to_think(fields, think):
    """reasoning_effort / reasoning.effort become think (reasoning wins; an explicit extra_body think wins over both)."""
    assert op.openai_chat_to_native(chat(**fields)).get("think", None) == think


def test_chat_invalid_reasoning_effort_is_400():
    """An effort outside the table is refused with a message that names it."""
    assert bad_request(op.openai_chat_to_native, chat(reasoning_effort="huge")) == ('invalid reasoning value: "huge" (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")')


def test_chat_extra_body_options_are_merged_and_win():
    """extra_body options merge into the mapped ones, and the client's explicit values win (deliberate difference)."""
    native = op.openai_chat_to_native(chat(max_tokens=10, temperature=0.3, options={"num_ctx": 8192, "temperature": 0.7, "num_predict": 99}))
    assert native["options"] == {"num_predict": 99, "temperature": 0.7, "top_p": 1.0, "num_ctx": 8192}


def test_chat_translation_does_not_mutate_the_request():
    """The client's body is left as it was (the caller may still need it)."""
    body = chat(options={"num_ctx": 1}, stop=["x"], messages=[{"role": "user", "content": [{"type": "text", "text": "a"}]}])
    before = json.dumps(body, sort_keys=True)
    op.openai_chat_to_native(body)
    assert json.dumps(body, sort_keys=True) == before


# -- messages --------------------------------------------------------------------------------

def test_chat_content_parts_become_one_message_each():
    """Each content part is its own native message with the same role; data URLs become base64 images."""
    msgs = [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
        {"type": "image_url", "image_url": "data:;base64," + PNG},
        {"type": "text", "text": "and this"},
    ]}]
    assert op.openai_chat_to_native(chat(messages=msgs))["messages"] == [
        {"role": "user", "content": "look"},
        {"role": "user", "content": "", "images": [PNG]},
        {"role": "user", "content": "", "images": [PNG]},
        {"role": "user", "content": "and this"},
    ]


@pytest.mark.parametrize("kind", ["jpeg", "jpg", "png", "webp"])
def test_chat_image_data_url_types(kind):
    """Every image type Ollama accepts gives the bare base64 payload."""
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/%s;base64,%s" % (kind, PNG)}}]}]
    assert op.openai_chat_to_native(chat(messages=msgs))["messages"][0]["images"] == [PNG]


@pytest.mark.parametrize(
    "part, message",
    [
        ({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, "image URLs are not currently supported, please use base64 encoded data instead"),
        ({"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}, "image URLs are not currently supported, please use base64 encoded data instead"),
        ({"type": "image_url", "image_url": {"url": "data:image/gif;base64," + PNG}}, "invalid image input"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,!!notbase64"}}, "invalid image input"),
        ({"type": "image_url", "image_url": {}}, "invalid message format"),
        ({"type": "text", "text": 5}, "invalid message format"),
        ({"type": "video"}, "invalid message format"),
        ("just a string", "invalid message format"),
    ],
)
def test_chat_bad_content_parts(part, message):
    """Bad parts get Ollama's exact 400 messages (other URLs: the 'not currently supported' one)."""
    assert bad_request(op.openai_chat_to_native, chat(messages=[{"role": "user", "content": [part]}])) == message


def test_chat_tool_calls_arguments_become_objects_and_tool_names_are_found():
    """Assistant tool_calls' argument strings become objects; a tool message without name takes it from the call id."""
    msgs = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "reasoning": "need a tool", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_1", "name": "explicit", "content": "x"},
    ]
    assert op.openai_chat_to_native(chat(messages=msgs))["messages"] == [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "thinking": "need a tool",
         "tool_calls": [{"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather", "tool_call_id": "call_1"},
        {"role": "tool", "content": "x", "tool_name": "explicit", "tool_call_id": "call_1"},
    ]


def test_chat_tool_calls_on_parts_hang_on_the_last_part():
    """With content parts, the message's tool calls go on the last part's message, as Ollama does."""
    msgs = [{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
             "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}]
    out = op.openai_chat_to_native(chat(messages=msgs))["messages"]
    assert out[0] == {"role": "assistant", "content": "a"}
    assert out[1]["content"] == "b" and out[1]["tool_calls"] == [{"id": "c", "function": {"name": "f", "arguments": {}}}]


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", "", 5, {"a": 1}])
def test_chat_invalid_tool_call_arguments(arguments):
    """Arguments that are not a JSON object in a string give Ollama's 400."""
    msgs = [{"role": "assistant", "content": "", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": arguments}}]}]
    assert bad_request(op.openai_chat_to_native, chat(messages=msgs)) == "invalid tool call arguments"


@pytest.mark.parametrize(
    "message, error",
    [
        ({"role": "user", "content": None}, "invalid message content type: <nil>"),
        ({"role": "user"}, "invalid message content type: <nil>"),
        ({"role": "user", "content": 5}, "invalid message content type: float64"),
        ({"role": "user", "content": {"a": 1}}, "invalid message content type: map[string]interface {}"),
    ],
)
def test_chat_message_content_type_errors(message, error):
    """Content must be a string or parts; null is accepted only next to tool_calls."""
    assert bad_request(op.openai_chat_to_native, chat(messages=[message])) == error


@pytest.mark.parametrize("messages", [[], None])
def test_chat_empty_messages_is_400(messages):
    """messages [] (or missing) gives Ollama's JSON-schema-style message."""
    body = chat(messages=messages)
    if messages is None:
        del body["messages"]
    assert bad_request(op.openai_chat_to_native, body) == "[] is too short - 'messages'"


@pytest.mark.parametrize(
    "body, error",
    [
        ([], "json: cannot unmarshal array into Go value of type openai.ChatCompletionRequest"),
        (chat(messages="hi"), "json: cannot unmarshal string into Go struct field ChatCompletionRequest.messages of type []openai.Message"),
        (chat(max_tokens=1.5), "json: cannot unmarshal number 1.5 into Go struct field ChatCompletionRequest.max_tokens of type int"),
        (chat(temperature="hot"), "json: cannot unmarshal string into Go struct field ChatCompletionRequest.temperature of type float64"),
        (chat(stream="yes"), "json: cannot unmarshal string into Go struct field ChatCompletionRequest.stream of type bool"),
        (chat(model=5), "json: cannot unmarshal number into Go struct field ChatCompletionRequest.model of type string"),
    ],
)
def test_chat_wrong_json_types_get_the_go_decoder_message(body, error):
    """A field of the wrong type is a 400 worded as gin's binding error."""
    assert bad_request(op.openai_chat_to_native, body) == error


# -- /v1/completions -> /api/generate --------------------------------------------------------

def test_completion_defaults():
    """A bare completion: penalties always sent as 0, temperature and top_p 1.0, stream false."""
    assert op.openai_completion_to_native({"model": "m", "prompt": "Once"}) == {
        "model": "m",
        "prompt": "Once",
        "options": {"temperature": 1.0, "frequency_penalty": 0, "presence_penalty": 0, "top_p": 1.0},
        "stream": False,
    }


@pytest.mark.parametrize(
    "fields, options, top",
    [
        ({"max_tokens": 5}, {"num_predict": 5}, {}),
        ({"max_completion_tokens": 6}, {"num_predict": 6}, {}),
        ({"top_p": 0}, {"top_p": 1.0}, {}),
        ({"top_p": 0.3}, {"top_p": 0.3}, {}),
        ({"temperature": 0}, {"temperature": 0}, {}),
        ({"seed": 7}, {"seed": 7}, {}),
        ({"frequency_penalty": 0.4, "presence_penalty": 0.2}, {"frequency_penalty": 0.4, "presence_penalty": 0.2}, {}),
        ({"stop": "x"}, {"stop": ["x"]}, {}),
        ({"stop": ["x", "y"]}, {"stop": ["x", "y"]}, {}),
        ({"suffix": "end"}, {}, {"suffix": "end"}),
        ({"logprobs": 2}, {}, {"logprobs": True, "top_logprobs": 2}),
        ({"logprobs": 0}, {}, {}),
        ({"stream": True, "stream_options": {"include_usage": True}}, {}, {"stream": True}),
        ({"keep_alive": -1, "options": {"num_ctx": 4096, "top_p": 0.9}}, {"num_ctx": 4096, "top_p": 0.9}, {"keep_alive": -1}),
    ],
)
def test_completion_rows(fields, options, top):
    """Each /v1/completions field maps as §6.1 says (plus the extra_body fields)."""
    body = {"model": "m", "prompt": "p"}
    body.update(fields)
    native = op.openai_completion_to_native(body)
    expected_options = {"temperature": 1.0, "frequency_penalty": 0, "presence_penalty": 0, "top_p": 1.0}
    expected_options.update(options)
    expected_top = {"stream": False}
    expected_top.update(top)
    assert native["options"] == expected_options
    assert {k: v for k, v in native.items() if k not in ("model", "prompt", "options")} == expected_top


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"prompt": ["a", "b"]}, "json: cannot unmarshal array into Go struct field CompletionRequest.prompt of type string"),
        ({"stop": ["a", 1]}, "invalid type for 'stop' field: float64"),
        ({"stop": [None]}, "invalid type for 'stop' field: <nil>"),
    ],
)
def test_completion_errors(fields, error):
    """A non-string prompt or stop item is refused with Ollama's message."""
    body = {"model": "m", "prompt": "p"}
    body.update(fields)
    assert bad_request(op.openai_completion_to_native, body) == error


# -- /v1/embeddings -> /api/embed ------------------------------------------------------------

@pytest.mark.parametrize(
    "fields, native",
    [
        ({"input": "hello"}, {"model": "e", "input": ["hello"]}),
        ({"input": ""}, {"model": "e", "input": [""]}),
        ({"input": ["a", ""]}, {"model": "e", "input": ["a", ""]}),
        ({"input": "a", "dimensions": 256}, {"model": "e", "input": ["a"], "dimensions": 256}),
        ({"input": "a", "encoding_format": "BASE64"}, {"model": "e", "input": ["a"]}),
        ({"input": "a", "encoding_format": "float", "user": "u"}, {"model": "e", "input": ["a"]}),
        ({"input": "a", "truncate": False, "keep_alive": "1h", "options": {"num_ctx": 512}},
         {"model": "e", "input": ["a"], "truncate": False, "keep_alive": "1h", "options": {"num_ctx": 512}}),
    ],
)
def test_embeddings_rows(fields, native):
    """Inputs become a list of strings; dimensions kept; options, keep_alive and truncate honoured."""
    body = {"model": "e"}
    body.update(fields)
    assert op.openai_embeddings_to_native(body) == native


@pytest.mark.parametrize(
    "fields, error",
    [
        ({}, "invalid input"),
        ({"input": None}, "invalid input"),
        ({"input": []}, "invalid input"),
        ({"input": [1, 2, 3]}, "invalid input type"),
        ({"input": [[1, 2], [3]]}, "invalid input type"),
        ({"input": ["a", 1]}, "invalid input type"),
        ({"input": 5}, "invalid input type"),
        ({"input": "a", "encoding_format": "int8"}, "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64']."),
        ({"input": [], "encoding_format": "bad"}, "Invalid value for 'encoding_format' = bad. Supported values: ['float', 'base64']."),
    ],
)
def test_embeddings_errors(fields, error):
    """Missing or empty input, token arrays and unknown encoding formats get Ollama's exact messages."""
    body = {"model": "e"}
    body.update(fields)
    assert bad_request(op.openai_embeddings_to_native, body) == error


# -- non-streaming answers -------------------------------------------------------------------

NATIVE_CHAT = {
    "model": "llama3.2:latest",
    "created_at": T0,
    "message": {"role": "assistant", "content": "Hello!"},
    "done": True,
    "done_reason": "stop",
    "prompt_eval_count": 26,
    "eval_count": 9,
}


def test_chat_completion_shape():
    """The chat.completion object, field for field, with the client's model name and created_at in seconds."""
    assert op.native_chat_to_openai(NATIVE_CHAT, "llama3.2", "chatcmpl-123") == {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": T0_UNIX,
        "model": "llama3.2",
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 26, "completion_tokens": 9, "total_tokens": 35},
    }


def test_chat_completion_with_reasoning_and_tool_calls():
    """thinking becomes reasoning; tool calls get index, type and string arguments; stop becomes tool_calls."""
    native = dict(NATIVE_CHAT, message={"role": "assistant", "content": "", "thinking": "hmm", "tool_calls": [
        {"id": "call_ab12cd34", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}},
        {"id": "call_x", "function": {"index": 1, "name": "g", "arguments": {}}},
    ]})
    choice = op.native_chat_to_openai(native, "m", "chatcmpl-1")["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "",
        "reasoning": "hmm",
        "tool_calls": [
            {"id": "call_ab12cd34", "index": 0, "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
            {"id": "call_x", "index": 1, "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ],
    }
    assert choice["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    "done_reason, tool_calls, expected",
    [("stop", False, "stop"), ("length", False, "length"), ("length", True, "length"), ("", False, None), (None, False, None)],
)
def test_chat_completion_finish_reason(done_reason, tool_calls, expected):
    """finish_reason: the native reason, tool_calls only instead of stop, null when the reason is empty."""
    message = {"role": "assistant", "content": "x"}
    if tool_calls:
        message["tool_calls"] = [{"function": {"name": "f", "arguments": {}}}]
    native = dict(NATIVE_CHAT, message=message, done_reason=done_reason)
    assert op.native_chat_to_openai(native, "m", "chatcmpl-1")["choices"][0]["finish_reason"] == expected


def test_chat_completion_usage_with_missing_counts_and_logprobs():
    """Counts omitted by Ollama (zero) give zero usage; logprobs appear only when the answer has them."""
    native = {"created_at": T0, "message": {"role": "assistant", "content": "x"}, "done": True, "done_reason": "stop"}
    out = op.native_chat_to_openai(native, "m", "chatcmpl-1")
    assert out["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert "logprobs" not in out["choices"][0]
    lp = [{"token": "x", "logprob": -0.1, "top_logprobs": []}]
    assert op.native_chat_to_openai(dict(native, logprobs=lp), "m", "c")["choices"][0]["logprobs"] == {"content": lp}


def test_text_completion_shape():
    """The text_completion object from a non-streaming /api/generate answer."""
    native = {"model": "m", "created_at": T0, "response": "upon a time", "done": True, "done_reason": "length", "prompt_eval_count": 3, "eval_count": 4}
    assert op.native_generate_to_openai(native, "alias", "cmpl-7") == {
        "id": "cmpl-7",
        "object": "text_completion",
        "created": T0_UNIX,
        "model": "alias",
        "system_fingerprint": "fp_ollama",
        "choices": [{"text": "upon a time", "index": 0, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-08-21T12:00:00Z", T0_UNIX),
        (T0, T0_UNIX),
        ("2026-08-21T14:00:00.5+02:00", T0_UNIX),
        ("2026-08-21T10:30:00-01:30", T0_UNIX),
        ("1970-01-01T00:00:00Z", 0),
        ("yesterday", None),
        (None, None),
    ],
)
def test_rfc3339_to_unix(value, expected):
    """created_at (RFC 3339, nanoseconds, any offset) to Unix seconds; None when unparsable."""
    assert op.rfc3339_to_unix(value) == expected


def test_created_falls_back_to_now():
    """An answer without a usable created_at takes ``now``."""
    native = {"message": {"role": "assistant", "content": "x"}, "done": True}
    assert op.native_chat_to_openai(native, "m", "c", now=1234.9)["created"] == 1234


# -- embeddings and models answers -----------------------------------------------------------

def test_embedding_list_float():
    """Float vectors come back in order with their index and the usage from prompt_eval_count."""
    native = {"model": "e", "embeddings": [[0.5, -0.25], [1.0, 0.0]], "prompt_eval_count": 8}
    assert op.native_embed_to_openai(native, "alias", "float") == {
        "object": "list",
        "data": [
            {"object": "embedding", "embedding": [0.5, -0.25], "index": 0},
            {"object": "embedding", "embedding": [1.0, 0.0], "index": 1},
        ],
        "model": "alias",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }


@pytest.mark.parametrize("fmt", ["base64", "Base64"])
def test_embedding_list_base64_is_little_endian_float32(fmt):
    """With base64, each vector is the base64 of its little-endian float32 bytes."""
    vec = [0.1, -2.5, 3.0e-8]
    out = op.native_embed_to_openai({"embeddings": [vec]}, "e", fmt)
    raw = base64.b64decode(out["data"][0]["embedding"])
    assert len(raw) == 12
    assert struct.unpack("<3f", raw) == struct.unpack("<3f", struct.pack("<3f", *vec))
    assert out["usage"] == {"prompt_tokens": 0, "total_tokens": 0}


def test_embedding_list_empty():
    """No vectors give data null (a nil slice in Ollama); a missing embeddings field the empty object."""
    assert op.native_embed_to_openai({"embeddings": []}, "e", None)["data"] is None
    assert op.native_embed_to_openai({}, "e", None) == {"object": "", "data": None, "model": "", "usage": {"prompt_tokens": 0, "total_tokens": 0}}


def test_models_list():
    """/v1/models from /api/tags: id, object, created from modified_at, owned_by the namespace."""
    tags = {"models": [
        {"name": "llama3.2:latest", "modified_at": "2026-08-21T14:00:00.1+02:00"},
        {"name": "jmorgan/custom:7b", "modified_at": "2026-08-21T12:00:00Z"},
        {"name": "hf.co/bartowski/Qwen-GGUF:Q4_K_M", "modified_at": "2026-08-21T12:00:00Z"},
    ]}
    assert op.models_to_openai(tags) == {"object": "list", "data": [
        {"id": "llama3.2:latest", "object": "model", "created": T0_UNIX, "owned_by": "library"},
        {"id": "jmorgan/custom:7b", "object": "model", "created": T0_UNIX, "owned_by": "jmorgan"},
        {"id": "hf.co/bartowski/Qwen-GGUF:Q4_K_M", "object": "model", "created": T0_UNIX, "owned_by": "bartowski"},
    ]}


@pytest.mark.parametrize("tags", [{"models": []}, {}, {"models": None}])
def test_models_list_empty_is_null(tags):
    """With no models, data is null, not [] (ollama-api.md §6.6)."""
    assert op.models_to_openai(tags) == {"object": "list", "data": None}


def test_model_retrieve_uses_the_requested_name():
    """/v1/models/{model}: id and owner from the name as the client gave it."""
    assert op.model_to_openai({"name": "llama3.2:latest", "modified_at": T0}, "llama3.2") == {
        "id": "llama3.2", "object": "model", "created": T0_UNIX, "owned_by": "library",
    }


@pytest.mark.parametrize(
    "name, namespace",
    [("llama3.2", "library"), ("llama3.2:latest", "library"), ("user/m:tag", "user"), ("registry.ollama.ai/library/m:latest", "library"),
     ("host:5000/ns/m", "ns"), ("m@sha256:abc", "library")],
)
def test_model_namespace(name, namespace):
    """The owner is the name's namespace, as Ollama's model.ParseName reads it."""
    assert op.model_namespace(name) == namespace


# -- ids and errors --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["chatcmpl", "cmpl"])
def test_new_request_id(kind):
    """Ids are <kind>-<0..998> from the given generator, reproducible by seed."""
    ids = {op.new_request_id(kind, random.Random(seed)) for seed in range(300)}
    numbers = {int(i.split("-")[1]) for i in ids}
    assert all(i.startswith(kind + "-") for i in ids)
    assert min(numbers) >= 0 and max(numbers) <= 998 and len(numbers) > 100
    assert op.new_request_id(kind, random.Random(5)) == op.new_request_id(kind, random.Random(5))
    with pytest.raises(ValueError):
        op.new_request_id("chat", random.Random(0))


@pytest.mark.parametrize("status, kind", [(400, "invalid_request_error"), (404, "not_found_error"), (500, "api_error"), (503, "api_error"), (499, "api_error")])
def test_openai_error_shape(status, kind):
    """OpenAI's error object: message, type by status, param and code null."""
    assert op.error_object(status, "boom", op.OPENAI) == {"error": {"message": "boom", "type": kind, "param": None, "code": None}}


# -- chat streaming --------------------------------------------------------------------------

def native_chunk(content="", thinking="", tool_calls=None, done=False, created_at="2026-08-21T12:00:00.1Z", **final):
    message = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if tool_calls:
        message["tool_calls"] = tool_calls
    obj = {"model": "llama3.2:latest", "created_at": created_at, "message": message, "done": done}
    obj.update(final)
    return obj


FINAL = {"done_reason": "stop", "prompt_eval_count": 26, "eval_count": 9}


def run_chat(natives, include_usage=False):
    tr = op.ChatStreamTranslator("llama3.2", "chatcmpl-5", include_usage, clock=lambda: 0.0)
    out = b""
    for n in natives:
        assert not tr.finished
        out += tr.feed(n)
    return tr, out


def deltas(evts):
    return [(e["choices"][0]["delta"], e["choices"][0]["finish_reason"]) for e in evts if isinstance(e, dict) and e["choices"]]


def test_chat_stream_plain_text():
    """Text chunks (role only in the first), then a separate finish chunk with delta {}, then [DONE]."""
    tr, out = run_chat([native_chunk("Hel"), native_chunk("lo"), native_chunk(done=True, **FINAL)])
    evts = events(out)
    assert evts[-1] == "[DONE]" and tr.finished
    assert deltas(evts) == [
        ({"role": "assistant", "content": "Hel"}, None),
        ({"content": "lo"}, None),
        ({}, "stop"),
    ]
    first = evts[0]
    assert list(first) == ["id", "object", "created", "model", "system_fingerprint", "choices"]
    assert first["id"] == "chatcmpl-5" and first["object"] == "chat.completion.chunk" and first["model"] == "llama3.2"
    assert first["system_fingerprint"] == "fp_ollama" and first["choices"][0]["index"] == 0
    assert {e["created"] for e in evts[:-1]} == {T0_UNIX}
    assert all("usage" not in e for e in evts[:-1])


def test_chat_stream_created_is_pinned_to_the_first_object():
    """Every chunk has the created of the first native object, even when later ones are later."""
    _, out = run_chat([native_chunk("a"), native_chunk("b", created_at="2026-08-21T12:00:09Z"), native_chunk(done=True, created_at="2026-08-21T12:01:00Z", **FINAL)])
    assert {e["created"] for e in events(out)[:-1]} == {T0_UNIX}


def test_chat_stream_with_thinking():
    """Reasoning-only chunks carry content ""; a chunk with both is split into reasoning first, then content."""
    _, out = run_chat([native_chunk(thinking="Let me"), native_chunk(thinking=" see", content="Answer"), native_chunk("!"), native_chunk(done=True, **FINAL)])
    assert deltas(events(out)) == [
        ({"role": "assistant", "content": "", "reasoning": "Let me"}, None),
        ({"reasoning": " see"}, None),
        ({"content": "Answer"}, None),
        ({"content": "!"}, None),
        ({}, "stop"),
    ]


def test_chat_stream_split_in_the_first_chunk_puts_role_on_the_reasoning():
    """When the first native object is split, the role goes on its reasoning chunk only."""
    _, out = run_chat([native_chunk(thinking="t", content="c"), native_chunk(done=True, **FINAL)])
    assert deltas(events(out))[:2] == [({"role": "assistant", "reasoning": "t"}, None), ({"content": "c"}, None)]


def test_chat_stream_tool_calls_in_the_final_chunk():
    """Tool calls in the done object: one chunk with complete calls, then finish_reason tool_calls, usage, [DONE]."""
    calls = [{"id": "call_1", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}]
    _, out = run_chat([native_chunk(tool_calls=calls, done=True, **FINAL)], include_usage=True)
    evts = events(out)
    assert deltas(evts) == [
        ({"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "index": 0, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}, None),
        ({}, "tool_calls"),
    ]
    assert evts[-2]["choices"] == [] and evts[-2]["usage"] == {"prompt_tokens": 26, "completion_tokens": 9, "total_tokens": 35}
    assert evts[-1] == "[DONE]"


def test_chat_stream_tool_calls_mid_stream_turn_stop_into_tool_calls():
    """A tool call streamed earlier makes the final stop reason tool_calls."""
    calls = [{"id": "call_2", "function": {"index": 0, "name": "f", "arguments": {}}}]
    _, out = run_chat([native_chunk(tool_calls=calls), native_chunk(done=True, **FINAL)])
    assert deltas(events(out))[-1] == ({}, "tool_calls")


def test_chat_stream_include_usage():
    """include_usage adds one chunk with choices [] and the usage, same envelope, before [DONE]."""
    _, out = run_chat([native_chunk("x"), native_chunk(done=True, **FINAL)], include_usage=True)
    evts = events(out)
    usage = evts[-2]
    assert list(usage) == ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 26, "completion_tokens": 9, "total_tokens": 35}
    assert usage["id"] == "chatcmpl-5" and usage["created"] == T0_UNIX
    assert all("usage" not in e for e in evts[:-2])


def test_chat_stream_length_finish():
    """done_reason length is the finish reason; an empty one becomes stop."""
    _, out = run_chat([native_chunk("x"), native_chunk(done=True, done_reason="length")])
    assert deltas(events(out))[-1] == ({}, "length")
    _, out = run_chat([native_chunk("x"), native_chunk(done=True)])
    assert deltas(events(out))[-1] == ({}, "stop")


def test_chat_stream_final_text_is_kept():
    """A done object that still carries text gives a content chunk before the finish chunk."""
    _, out = run_chat([native_chunk("a"), native_chunk("b", done=True, **FINAL)])
    assert deltas(events(out)) == [({"role": "assistant", "content": "a"}, None), ({"content": "b"}, None), ({}, "stop")]


def test_chat_stream_only_a_final_object_still_sends_the_role():
    """A metrics-only first object gives a role chunk (content ""), then the finish chunk."""
    _, out = run_chat([native_chunk(done=True, **FINAL)])
    assert deltas(events(out)) == [({"role": "assistant", "content": ""}, None), ({}, "stop")]


def test_chat_stream_logprobs_only_when_present():
    """A native object with logprobs puts them in its chunk's choice; others have no logprobs key."""
    lp = [{"token": "a", "logprob": -0.5}]
    _, out = run_chat([native_chunk("a", logprobs=lp), native_chunk("b"), native_chunk(done=True, **FINAL)])
    choices = [e["choices"][0] for e in events(out)[:-1]]
    assert choices[0]["logprobs"] == {"content": lp}
    assert all("logprobs" not in c for c in choices[1:])


def test_chat_stream_error_line_ends_with_an_error_event():
    """A native error line becomes an OpenAI error event; no finish chunk, no [DONE], and nothing after it."""
    tr, out = run_chat([native_chunk("a"), {"error": "model runner has unexpectedly stopped"}])
    evts = events(out)
    assert evts[-1] == {"error": {"message": "model runner has unexpectedly stopped", "type": "api_error", "param": None, "code": None}}
    assert "[DONE]" not in evts and tr.finished
    assert tr.feed(native_chunk(done=True, **FINAL)) == b"" and tr.fail("again") == b""


def test_chat_stream_fail_after_a_cut():
    """fail() (the upstream broke) gives one error event with the given status; after [DONE] it gives nothing."""
    tr = op.ChatStreamTranslator("m", "chatcmpl-1", False)
    tr.feed(native_chunk("a"))
    assert events(tr.fail("backend closed the stream", 502)) == [
        {"error": {"message": "backend closed the stream", "type": "api_error", "param": None, "code": None}}
    ]
    done = op.ChatStreamTranslator("m", "chatcmpl-1", False)
    done.feed(native_chunk(done=True, **FINAL))
    assert done.finished and done.fail("late") == b""


# -- completions streaming -------------------------------------------------------------------

def gen_chunk(text="", done=False, **final):
    obj = {"model": "m", "created_at": T0, "response": text, "done": done}
    obj.update(final)
    return obj


def test_completion_stream_plain():
    """One chunk per native object, created from the clock each time, finish_reason on the done chunk, then [DONE]."""
    ticks = iter([100.2, 101.7, 102.0])
    tr = op.CompletionStreamTranslator("alias", "cmpl-3", False, clock=lambda: next(ticks))
    out = tr.feed(gen_chunk("Once")) + tr.feed(gen_chunk(" upon")) + tr.feed(gen_chunk(done=True, done_reason="length", prompt_eval_count=2, eval_count=2))
    evts = events(out)
    assert evts[-1] == "[DONE]" and tr.finished and len(evts) == 4
    assert [e["created"] for e in evts[:-1]] == [100, 101, 102]
    assert [e["choices"] for e in evts[:-1]] == [
        [{"text": "Once", "index": 0, "finish_reason": None}],
        [{"text": " upon", "index": 0, "finish_reason": None}],
        [{"text": "", "index": 0, "finish_reason": "length"}],
    ]
    assert list(evts[0]) == ["id", "object", "created", "choices", "model", "system_fingerprint"]
    assert evts[0]["object"] == "text_completion" and evts[0]["model"] == "alias" and evts[0]["id"] == "cmpl-3"


def test_completion_stream_include_usage():
    """include_usage: zero usage on every chunk, then a choices [] chunk with the real usage, then [DONE]."""
    tr = op.CompletionStreamTranslator("m", "cmpl-3", True, clock=lambda: 5.0)
    evts = events(tr.feed(gen_chunk("a")) + tr.feed(gen_chunk("b", done=True, done_reason="stop", prompt_eval_count=4, eval_count=6)))
    zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert [e["usage"] for e in evts[:2]] == [zero, zero]
    assert evts[1]["choices"][0] == {"text": "b", "index": 0, "finish_reason": "stop"}
    assert evts[2]["choices"] == [] and evts[2]["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    assert evts[3] == "[DONE]"


def test_completion_stream_error():
    """A native error line (or fail()) ends a completion stream with an error event and no [DONE]."""
    tr = op.CompletionStreamTranslator("m", "cmpl-3", False, clock=lambda: 5.0)
    evts = events(tr.feed(gen_chunk("a")) + tr.feed({"error": "boom"}))
    assert evts[-1]["error"]["message"] == "boom" and "[DONE]" not in evts
    assert tr.finished and tr.feed(gen_chunk(done=True)) == b""
