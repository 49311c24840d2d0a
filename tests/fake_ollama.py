"""A faithful fake Ollama HTTP server, for the ollama-proxy tests and for trying the proxy.

One file, standard library plus h11, Python 3.9+. It answers like Ollama v0.33 as described in
shared/ollama-api.md (routes, field order, content types, error wording, NDJSON and SSE
streaming, the /v1 layer) and shared/agents-api.md §1 (the Anthropic /v1/messages layer),
with deterministic text ("tok0 ", "tok1 ", ...) and deterministic embeddings, and it can
misbehave on request (faults) so that proxy tests can script a slow, silent, crashing or
garbled upstream.

Run it by hand (one log line says where it listens and which models it has)::

    python3 tests/fake_ollama.py --port 11434 [--host 127.0.0.1] [-v]

Use it from a sync pytest test (the fake runs its own event loop in a daemon thread)::

    with FakeOllama() as fake:            # 127.0.0.1, ephemeral port
        ... talk to fake.url ...
        fake.wait_for_requests(1)
        assert fake.received[0].json["model"] == "llama3.2"

Public API
----------
``FakeModel`` (dataclass: name, arch, context_length, capabilities, embedding_length, digest,
family, parameter_size, quantization_level, size, block_count, modified_at, parameters,
template, chars_per_token (4.0), template_tokens (10), blob (the weights; the digest when
empty)) and ``DEFAULT_MODELS`` (llama3.2:latest, qwen3:8b, nomic-embed-text:latest,
all-minilm:latest).

``FakeOllama(models=None, *, host="127.0.0.1", port=0, version="0.33.0",
check_host=True)``: ``start()`` (returns self once listening), ``stop()``, context manager;
``port``, ``url``, ``models`` (the live list); records ``received``
(list of ``Received``), ``connections_accepted``, ``closed_conn_ids``;
``wait_for_requests(n, timeout)`` (raises ``TimeoutError``), ``wait_closed(conn_id, timeout)``
(-> bool); faults ``add_fault(Fault) -> Fault``, ``clear_faults()``, ``gate() -> Gate``;
``refuse()`` / ``accept()`` close and reopen the listening socket (same port); scheduler
``loaded``, ``loads``, ``load_count(model=None)``, ``reload_count(model=None)``,
``oom_above``, ``spill_above`` and ``default_num_ctx`` (settable), see below.

``Received``: conn_id, method, target, headers (lower-cased names, in order), body,
http_version, ``native`` (on /v1 chat, completions, embeddings and /v1/messages: the native
request the /v1 or Anthropic middleware made of it, see below; else None); ``header(name)``, ``path``, ``json`` (parsed
body or None).

Scheduler: loads, reloads, out of memory (ollama-api.md §7, §3.7)
-------------------------------------------------------------------
Every /api/chat, /api/generate, /api/embed and /api/embeddings request (the empty-prompt /
empty-messages / empty-input load requests included) and their /v1 forms get a runner, after
the request's own 400/404 checks, as Ollama's scheduler gives one:

* Slots are keyed by ``FakeModel.blob`` (the weights; it defaults to the digest, /api/copy
  keeps it, /api/create ``from`` keeps the base's), so two tags of the same weights share one
  slot, and alternating between tags with different options reloads each time.
* Runner options of a request: ``num_ctx`` = the request's ``options.num_ctx``, else the
  Modelfile's ``num_ctx`` PARAMETER, else ``default_num_ctx`` (4096; then it is *automatic*);
  values below 4 become 4 (2048 for a model with the ``vision`` capability), then clamped to
  the training context (``FakeModel.context_length``). Also ``num_batch`` (default 512,
  automatic; an embedding model's is min(2048, num_ctx before clamping)), ``num_gpu`` (-1),
  ``main_gpu`` (0), ``num_thread`` (0), ``use_mmap`` (unset: the scheduler picks true),
  ``draft_num_predict`` (0) and context ``shift`` (the request's ``shift``, else true except
  for family deepseek2); request value, else Modelfile PARAMETER, else default (null = unset).
* needsReload (§7.4): a loaded runner is reused when these are equal, where both-automatic
  num_ctx (and num_batch) keep the loaded value, a negative ``num_gpu`` matches anything and
  an unset ``use_mmap`` matches a scheduler-chosen one. Otherwise it is unloaded and the model
  loaded again. A reused runner takes the request's ``keep_alive`` (if given); a new one the
  request's or 5 minutes; ``expires_at`` = now + keep_alive (negative = for ever), set when a
  request takes the runner and again when the last one using it ends; only an idle runner
  expires. A request that reloads a runner still in use by another does not wait for it.
* Out of memory: a load whose effective num_ctx is above ``oom_above`` (None = never) fails
  with 500 ``{"error": "llama-server process has terminated: error:failed to allocate buffer
  of size <num_ctx x block_count x 4096> (kv cache)"}`` before any byte of the answer (also
  for streaming requests; OpenAI shape on /v1), and the model is then not loaded (a runner it
  was to replace is gone too). An *automatic* num_ctx is retried once with a smaller tier
  (> 32768 -> 32768, > 4096 -> 4096); an explicit one is never reduced.
* GPU memory: a runner whose effective num_ctx is above ``spill_above`` (None = never) loads,
  but does not fit the GPU: /api/ps reports ``size_vram`` = model size + ``spill_above`` x
  block_count x 4096 (what fits), below ``size``, as Ollama does for a model partly on the CPU.
* ``keep_alive: 0`` unloads the runner once the last request using it ended (its answer sent
  or cut off, or an error after the load; a later request without keep_alive that reused it
  keeps the 0, as in Ollama). The unload happens before the last bytes a client waits for (the
  head of a non-streamed answer, the chunked terminator of a stream), so right after reading
  the answer a test sees it gone. The empty-prompt unload answer (``done_reason: "unload"``)
  unloads the slot at once without loading. /api/delete unloads the slot. A request that (re)loaded its runner
  reports ``load_duration`` 0.5 s larger; nothing really waits.

``loads`` (a snapshot list) holds every load attempt in order, each ``{"model": display name
of the requesting tag, "path": request path, "num_ctx": effective, "automatic": bool,
"reason": "first load" | "num_ctx changed" | "num_batch changed" | ... (", "-joined when
several; also "num_gpu", "main_gpu", "num_thread", "use_mmap", "draft_num_predict", "shift")
| "oom retry", "replaced": bool (a loaded runner of that slot was unloaded for it), "ok":
bool, "error": str | None}``. ``load_count(model=None)`` counts the attempts (failed ones
included) of that model's slot (same blob, whichever tag) or of all; ``reload_count(model=None)``
counts those with ``replaced`` (a first load, also one after keep_alive 0 or expiry, is not a
reload; an OOM retry is not one either).

``loaded`` (a snapshot) maps the display name of the tag that loaded each runner to
``{"model", "digest", "num_ctx": effective, "automatic": bool, "options": {"num_batch",
"num_gpu", "main_gpu", "num_thread", "use_mmap", "draft_num_predict", "shift"}, "keep_alive":
seconds (math.inf = for ever), "expires_at": Unix seconds}``; expired runners are dropped.
``/api/ps`` lists the same runners, latest ``expires_at`` first, with ``context_length`` = the
effective num_ctx and ``size`` = ``size_vram`` = model size + num_ctx x block_count x 4096
(``size_vram`` smaller above ``spill_above``).

Token counts
------------
``prompt_eval_count`` (and /v1 ``usage.prompt_tokens``) is a pure function of the prompt text:
``max(1, ceil(C / model.chars_per_token) + model.template_tokens)`` where C counts characters
(Python ``len``): on chat the ``content`` of every message, plus the tools as compact JSON
(``json.dumps(tools, separators=(",", ":"))``) when present, as Ollama binds them (``api.Tool``:
keys it does not know dropped, ``parameters`` with its ``type`` and ``properties`` always
there); on generate ``prompt`` + ``system``
(no ``template_tokens`` when ``raw`` is true), then plus ``len(context)`` of a given context
array. A /v1 request counts as the native request it is turned into (below), so a /v1 chat
counts its text parts (and tools) exactly as the /api/chat request a translating proxy sends.
The ceiling has a 1e-9 tolerance (C / chars_per_token within 1e-9 of an integer counts as it).
Embeddings count each input alone as ``max(1, ceil(len / chars_per_token))`` (no template),
summed over inputs; inputs longer than num_ctx - 2 tokens are cut to that many tokens
(``int(tokens x chars_per_token)`` characters) or rejected with ``truncate: false``.
So with the defaults "Hello there!" in one chat message gives 3 + 10 = 13.
A chat prompt longer than the runner's num_ctx first loses whole messages from the front (system
messages and the last message stay; chatPrompt in server/prompt.go), unless ``truncate`` is false
(then a prompt over the context gets 400, llama-server's refusal; that mapping is unverified).
A chat or generate prompt still longer than num_ctx - 1 tokens is truncated as Ollama's
runner truncates it (``truncated_prompt_tokens``, ollama-api.md §7.5): the count then reported is
num_ctx - max((num_ctx - num_keep) / 2, 1) (num_keep 4 unless the request sets it), with no
error; with context shift off the request gets 400 instead; a prompt with images is never cut.

Prompt-cache reuse: on /api/chat each record carries ``prompt_chars`` (the request rendered by
``render_chat_prompt``: tools, system messages first, then the others) and ``cache_reuse``, the
common prefix with the previous prompt the same runner processed (0 on a fresh load), so that a
test can see whether a client's prompt lets Ollama's prompt cache hit.

Per-request control headers (they pass through a proxy)
-------------------------------------------------------
``X-Fake-Chunks: N``        content lines before the final stats line (default 5);
``X-Fake-Delay-Ms: D``      sleep D ms before each streamed line (a non-streamed generation
                            waits lines x D before its head, as Ollama says nothing until done);
``X-Fake-Think-Chunks: T``  thinking lines for a model with the ``thinking`` capability when
                            ``think`` is not false (default 2; they come before the content
                            lines and count in eval_count and num_predict).

Generated text is one token per line, "tok0 ", "tok1 ", ...; eval_count = tokens generated;
``options.num_predict`` smaller than the token count cuts the output, done_reason "length".

Tool calls (the GGUF-template path of ollama-api.md §3.2)
---------------------------------------------------------
A chat request with a non-empty ``tools`` on a model with the ``tools`` capability (native or
/v1; without the capability it is the usual 400) is answered with one call to the first tool
instead of content: ``{"id": "call_" + 8 lowercase base-36 characters of a sha256 over the
model name as sent, the messages' concatenated text and the tool name, "function": {"index": 0,
"name": <first tool's name>, "arguments": {<each name in the tool's parameters.required>: "x"}
or {"location": "Paris"} when it requires none}}``. No content lines are sent (thinking lines
still are); the call comes in the final ``done: true`` object (``message.content`` "",
``message.tool_calls`` [call], done_reason "stop"), and stream:false gives one object with
``message.tool_calls``. The call costs max(1, X-Fake-Chunks) tokens in eval_count; a
``num_predict`` below thinking + that cost gives the ordinary cut text (done_reason "length")
and no call. The same request always gets the same id.

The /v1 layer (ollama-api.md §6)
--------------------------------
Like Ollama's middleware, /v1/chat/completions, /v1/completions and /v1/embeddings bind the
OpenAI body, do the middleware's own checks (400 ``[] is too short - 'messages'``, image URLs:
http(s) -> 400 ``image URLs are not currently supported, please use base64 encoded data
instead``, other non-data URLs or bad base64 -> ``invalid image input``, ``invalid tool call
arguments``, ``invalid message content type: <nil>``, reasoning effort, completion ``stop``
items, embeddings ``encoding_format`` then ``invalid input``), convert the body into the native
request (``Received.native``: each content part its own message, images as base64, tool-call
arguments parsed, options with ``temperature`` and ``top_p`` 1.0 when absent, ``max_tokens`` ->
``num_predict``; completions always send frequency/presence penalties; ``options``,
``keep_alive``, ``num_ctx`` and ``max_completion_tokens`` are dropped; embeddings pass
``{model, input, dimensions}`` only), run the native handler on it (scheduler, 404s, capability
checks, tool calls) and convert its answer objects the way ChatWriter, CompleteWriter and
EmbedWriter do: non-streamed ``chat.completion`` / ``text_completion`` (``reasoning``,
``tool_calls`` with arguments as a JSON string, finish_reason ``tool_calls`` when calls came
with "stop", usage from the native counts), SSE chat chunks (``created`` pinned to the first
native object, role in the first chunk only, thinking+content split into two chunks, the
metrics-only final object skipped unless nothing was sent, a finish chunk with ``delta: {}``,
the include_usage chunk with ``choices: []``, ``data: [DONE]``), SSE completion chunks (created
per chunk, finish_reason on the last one, zero usage on each with include_usage and then the
usage chunk), embedding lists (base64 = little-endian float32). Errors from the native handler
come in OpenAI shape with ``application/json`` and a trailing newline (as json.Encoder writes
every /v1 writer body); the middleware's own 400s with gin's ``application/json;
charset=utf-8`` and no newline. /v1/models lists /api/tags (``data`` null when empty);
/v1/models/{model} answers the id as given, or 404 ``model 'x:latest' not found`` (ShowHandler's DisplayShortest).

/v1/messages: Ollama's Anthropic middleware (agents-api.md §1.1-§1.6)
----------------------------------------------------------------------
Like AnthropicMessagesMiddleware, /v1/messages binds the Anthropic body and checks, each a 400
written by the middleware (gin's ``application/json; charset=utf-8``, no newline): binding
errors, ``model is required``, ``max_tokens is required and must be positive``, ``messages is
required``, then FromMessagesRequest's own (``invalid image source``, ``invalid image source
type: X. Only base64 images are supported.``, ``invalid base64 image data: ...``, ``tool_use
block missing required 'id' field`` / ``'name' field``, ``invalid tool_result image source``,
``invalid input_schema for tool "x": ...``). The body becomes the native request
(``Received.native``: ``{model, messages, stream, tools?, options, think?}``; system string or
the text blocks joined as one system message, each message's blocks gathered into one native
message with tool_result blocks as separate ``tool`` messages (before a user message, after
others), images decoded, only the last thinking kept; options ``num_predict`` = max_tokens and
temperature / top_p / top_k / stop only when given; tools as functions with input_schema
re-marshalled as api.ToolFunctionParameters; think from ``thinking.type`` or
``output_config.effort``; no num_ctx, no keep_alive), run by the native chat handler (404s,
scheduler, tool calls) with thinking relaxed to unset for a model without the capability.
Answers: ToMessagesResponse (``application/json`` and a newline; ``msg_`` + 24 hex id, blocks
thinking, text, tool_use, ``content`` null when none, stop_reason tool_use / end_turn /
max_tokens / stop_sequence or omitted, no stop_sequence, usage from prompt_eval_count and
eval_count), or with ``stream: true`` named SSE events ``event: X\ndata: {json}\n\n``
(``text/event-stream``, ``Cache-Control: no-cache``, ``Connection: keep-alive``; each event is
one line for faults and delays) as StreamConverter.Process makes them: nothing before the first
native object, message_start with input_tokens = that object's prompt_eval_count or else
EstimateInputTokens's len/4 estimate (the input_schema counted as compact JSON, not the raw
bytes Go counts), content_block_start/_delta/_stop per block (a tool call as one
input_json_delta), message_delta with stop_reason and the final counts, message_stop; no ping,
no [DONE], no ``event: error`` (a native error mid-stream just ends the stream). Errors of the
native handler come in Anthropic shape (``{"type": "error", "error": {"type", "message"},
"request_id": "req_" + 24 hex}``, type by status: 400 invalid_request_error, 401
authentication_error, 403 permission_error, 404 not_found_error, 429 rate_limit_error, 503/529
overloaded_error, else api_error) with ``application/json`` and a newline (and the SSE
Cache-Control / Connection headers when streaming was asked); so do fault statuses on this
path. ``/v1/messages/count_tokens`` is not a route: gin's plain ``404 page not found``.
Not modelled: the cloud passthrough and the web-search loop (a web_search tool is only declared).

/v1/responses: Ollama's Responses middleware (agents-api.md §2)
-----------------------------------------------------------------
Like ResponsesMiddleware, /v1/responses inflates a ``Content-Encoding: zstd`` body (only where
Python has ``compression.zstd``, 3.14+; else 501), binds the body as Go would (a field of the
wrong type is the first such field in document order, but an error inside ``input``, which has
its own UnmarshalJSON, wins: ``input must be a string or array: ...``, ``input[i]: unknown input
item type: "x"``, ``input[i]: input item missing required 'type' field``, ``input[i]:
content[j]: unknown content type: x``, the struct type errors of each item), then
FromResponsesRequest's own 400s (``file inputs are not currently supported``, the image URL
errors, ``failed to parse function call arguments: ...``, ``invalid reasoning value: ...``,
``failed to unmarshal tool parameters: ...``), all written by the middleware (gin's
``application/json; charset=utf-8``, no newline). The native request (``Received.native``):
instructions as the first system message, a string input as a user message, message items with
their role as given and their text parts concatenated, function calls appended to the previous
assistant message (or a new one), function_call_output as a ``tool`` message, a replayed
reasoning item's ``encrypted_content`` as the next assistant message's thinking (a trailing one
its own message), an assistant message between a call and its output merged into the call's
message; options ``temperature`` (1.0 when absent), ``top_p`` and ``num_predict`` only when
given; tools flattened (a namespace's members as ``ns.name``; a web_search tool as the built-in
function, but the search loop itself is not modelled: 501); ``format`` from a json_schema text
format; ``think`` from reasoning.effort; ``stream`` false unless true. Answers: ToResponse
(``application/json`` and a newline; ``resp_<n>`` / ``msg_<n>`` ids, the reasoning item
``rs_<response id>``, function calls ``fc_<response id>_<i>`` instead of the message item, the
request's echo fields, float64s as Go writes them), or the ResponsesStreamConverter's named
events (``text/event-stream``, Cache-Control, Connection; every payload a Go map, keys sorted,
with ``type`` and ``sequence_number``; created, in_progress, the reasoning summary deltas, the
message item, function calls, completed; no [DONE]; a native error mid-stream just ends it).
Errors of the native handler come in OpenAI shape with ``application/json`` and a newline.

Faults (``Fault`` dataclass)
----------------------------
Each request that has been read completely takes the first fault, in ``add_fault`` order,
whose ``path`` (an fnmatch pattern on the path without query; None = any path) matches and
that has uses left (``times``; 0 = for ever). ``fault.hits`` counts the uses. What a fault
does, in this order:

* ``garbage``: answer bytes that are not HTTP, then close.
* ``close_before_response``: close without answering.
* ``delay_before_headers`` S: send nothing at all for S seconds ("cold load"), then answer.
* ``status``: answer that status with ``{"error": error}`` (OpenAI error shape on /v1 paths,
  Anthropic's on /v1/messages).
* Line faults, with k = the number of body lines already sent. A streamed body's lines are its
  NDJSON lines or SSE events; a non-streamed body is a single line. The checks run after the
  head and before each line, and once more after the last line (before the terminating chunk):
  ``pause_after=k`` waits on ``gate`` (created by add_fault when missing) once k lines are out,
  then goes on; ``stall_after=k`` sends nothing more and keeps the socket open until the peer
  closes; ``close_after=k`` closes the socket once k lines are out, with no terminating chunk.
  So ``close_after=2`` means two lines were sent, then the socket was closed; ``pause_after=0``
  means the head was sent and no line yet; ``close_after`` = number of lines means the whole
  body went out but the chunked terminator never does. A k beyond that never fires.
  ``delay_per_chunk`` sleeps before each line (added to X-Fake-Delay-Ms).

``Gate``: ``reached`` (threading.Event, set when the fake arrives at the pause point),
``wait_reached(timeout) -> bool``, ``release()`` (thread-safe; a released gate stays open, so
later requests pass it at once), ``released``.

Client disconnects: while a response is produced (delays, gates, stalls included) a watcher
reads the socket; EOF or a reset stops the response at once and adds the connection id to
``closed_conn_ids``, as does a peer closing an idle keep-alive connection.

The benchmark's lean "direct" baseline, with precomputed answers and no h11, is
tests/perf/fast_ollama.py; it shares this file's JSON encoding and constants.

Deliberate differences from real Ollama
---------------------------------------
No CORS handling; the loopback Host check (403, empty body) is on by default and can be turned
off with ``check_host=False``. Loads take no time, there is no scheduler queue (503) and no
model-count or memory limit besides ``oom_above`` and ``spill_above`` (num_ctx thresholds of one
runner, not memory the loaded models share; a spilled runner is no slower): models stay loaded
beside each other, and requests that would wait in Ollama for a runner to unload do not wait. Routes Ollama
registers but the fake does not model (/api/me, /api/signout, /api/user/keys/*,
/api/experimental/*, /v1/audio/transcriptions) answer 501
``{"error": "not implemented by fake_ollama"}``. Tool calls are always to the first tool, with
made-up arguments (above); ``logprobs`` are accepted but never produced; images are accepted
on any model and add no prompt tokens. ``format`` is accepted but the text is not JSON. /api/embed on a model without the ``embedding`` capability
answers 501 (llama-server's "does not support embeddings" status; unverified upstream). Times
are printed in UTC.

Sections (``grep -n '^# [0-9]*\\. '``)
-----------------------------------
0. Header, constants   1. Models   2. Records, faults, gates   3. Go-like JSON, times, binding
4. Generation and embeddings (pure)   5. The fake Ollama application (routes -> Reply)
6. HTTP on h11   7. FakeOllama (thread, records, faults)   8. CLI
Only 6 and 7 touch sockets; 1 to 5 do no I/O.
"""

# ---------------------------------------------------------------------------------------------
# 0. Header, constants
# ---------------------------------------------------------------------------------------------

from __future__ import annotations

import argparse
import asyncio
import base64
import calendar
import dataclasses
import email.utils
import fnmatch
import hashlib
import http
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple

import h11

__version__ = "1.0"

log = logging.getLogger("fake_ollama")

DEFAULT_VERSION = "0.33.0"
DEFAULT_CHUNKS = 5
DEFAULT_THINK_CHUNKS = 2
DEFAULT_NUM_CTX = 4096  # Ollama's default on a machine with less than 23 GiB of VRAM
DEFAULT_KEEP_ALIVE = 300.0  # OLLAMA_KEEP_ALIVE default, 5 minutes
FOREVER_SECONDS = 292 * 365 * 86400.0  # a negative keep_alive: Go's largest time.Duration
MAX_HEAD = (1 << 20) + 4096  # Go's http.DefaultMaxHeaderBytes plus its slack
READ_SIZE = 65536
WATCH_LIMIT = 1 << 20  # bytes a disconnect watcher buffers (pipelined requests) at most
MAX_CHUNKS = 1_000_000
LOAD_NS = 500_000_000  # load_duration a request gets on top when it (re)loaded its runner
OOM_MESSAGE = ("llama-server process has terminated: error:failed to allocate buffer of size %d "
               "(kv cache)")
BASE_MODIFIED = 1785578400.0  # 2026-08-01T10:00:00Z; default models are "modified" before it

CT_JSON = "application/json; charset=utf-8"  # gin's c.JSON
CT_OPENAI = "application/json"  # the /v1 writers
CT_NDJSON = "application/x-ndjson"
CT_SSE = "text/event-stream"
CT_TEXT = "text/plain; charset=utf-8"  # gin's c.String
CT_GIN_PLAIN = "text/plain"  # gin's own 404 / 405 bodies

GARBAGE = b"\x00\x17\x03 SSH-2.0-definitely-not-HTTP \xff\xfe\r\n\r\n"
NOT_IMPLEMENTED = "not implemented by fake_ollama"

# ---------------------------------------------------------------------------------------------
# 1. Models
# ---------------------------------------------------------------------------------------------

_FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18,
               "BF16": 32}
_BYTES_PER_PARAM = {"F32": 4.0, "F16": 2.0, "BF16": 2.0, "Q8_0": 1.07, "Q6_K": 0.82,
                    "Q5_K_M": 0.71, "Q4_K_M": 0.6, "Q4_0": 0.56}
_TENSOR_TYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16", "Q8_0": "Q8_0", "Q6_K": "Q6_K",
                 "Q5_K_M": "Q5_K", "Q4_K_M": "Q4_K", "Q4_0": "Q4_0"}

LLAMA_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n{{ if .System }}{{ .System }}{{ end }}"
    "<|eot_id|>{{ range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
QWEN_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)


def parameter_count(parameter_size: str) -> int:
    """ "8.0B" -> 8000000000, "137M" -> 137000000; 0 when unparsable."""
    m = re.match(r"^\s*([0-9]*\.?[0-9]+)\s*([KMBT]?)", parameter_size.upper())
    if not m:
        return 0
    scale = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2)]
    return int(float(m.group(1)) * scale)


@dataclass
class FakeModel:
    """One installed model, with what /api/tags, /api/show and /api/ps say about it."""

    name: str  #: display name with tag, e.g. "llama3.2:latest"
    arch: str  #: general.architecture, e.g. "llama"
    context_length: int  #: training context, model_info["<arch>.context_length"]
    capabilities: List[str]  #: e.g. ["completion", "tools"] or ["embedding"]
    embedding_length: int = 0  #: vector size (embedding models) or hidden size; 0 = unknown
    digest: str = ""  #: 64 hex chars; the sha256 of the name when empty
    family: str = ""  #: the architecture when empty
    parameter_size: str = "8.0B"
    quantization_level: str = "Q4_K_M"
    size: int = 0  #: bytes; estimated from parameter_size and quantization when 0
    block_count: int = 0  #: 32 (12 for embedding models) when 0
    modified_at: float = 0.0  #: Unix seconds; derived from the digest when 0
    parameters: List[Tuple[str, Any]] = field(default_factory=list)  #: Modelfile PARAMETERs
    template: str = "{{ .Prompt }}"
    chars_per_token: float = 4.0  #: prompt characters per token (prompt_eval_count)
    template_tokens: int = 10  #: tokens the chat template adds to a chat/generate prompt
    blob: str = ""  #: the weights blob (the scheduler's key); the digest when empty

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = hashlib.sha256(self.name.encode("utf-8")).hexdigest()
        if not self.blob:
            self.blob = self.digest
        if not self.family:
            self.family = self.arch
        if not self.size:
            per_param = _BYTES_PER_PARAM.get(self.quantization_level.upper(), 0.6)
            self.size = int(parameter_count(self.parameter_size) * per_param) or 1_000_000
        if not self.block_count:
            self.block_count = 12 if self.is_embedding_only else 32
        if not self.modified_at:
            self.modified_at = BASE_MODIFIED - int(self.digest[:8], 16) % (90 * 86400)

    @property
    def key(self) -> str:
        """The name as Ollama matches it: case-insensitive, ":latest" implied."""
        return normalize_name(self.name)

    @property
    def is_embedding_only(self) -> bool:
        return "embedding" in self.capabilities and "completion" not in self.capabilities

    @property
    def hidden_size(self) -> int:
        return self.embedding_length or (384 if self.is_embedding_only else 4096)

    def modelfile_option(self, name: str) -> Any:
        """The value of the Modelfile's first ``PARAMETER <name>``, or None."""
        for key, value in self.parameters:
            if key == name:
                return value
        return None

    def modelfile_num_ctx(self) -> Optional[int]:
        """The Modelfile's ``PARAMETER num_ctx``, if it sets one."""
        value = self.modelfile_option("num_ctx")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
        return None


DEFAULT_MODELS: List[FakeModel] = [
    FakeModel(
        "llama3.2:latest", "llama", 131072, ["completion", "tools"], embedding_length=3072,
        digest="a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        parameter_size="3.2B", quantization_level="Q4_K_M", size=2019393189, block_count=28,
        modified_at=BASE_MODIFIED - 3600,
        parameters=[("stop", "<|start_header_id|>"), ("stop", "<|end_header_id|>"),
                    ("stop", "<|eot_id|>")],
        template=LLAMA_TEMPLATE,
    ),
    FakeModel(
        "qwen3:8b", "qwen3", 40960, ["completion", "tools", "thinking"], embedding_length=4096,
        digest="500a1f067a9f782620b40bee6f7b0c89e17ae61f686b92c24933e4ca4b2b8b41",
        parameter_size="8.2B", quantization_level="Q4_K_M", size=5225388164, block_count=36,
        modified_at=BASE_MODIFIED - 2 * 3600,
        parameters=[("repeat_penalty", 1), ("stop", "<|im_start|>"), ("stop", "<|im_end|>"),
                    ("temperature", 0.6), ("top_k", 20), ("top_p", 0.95)],
        template=QWEN_TEMPLATE,
    ),
    FakeModel(
        "nomic-embed-text:latest", "nomic-bert", 2048, ["embedding"], embedding_length=768,
        digest="0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f",
        parameter_size="137M", quantization_level="F16", size=274302450, block_count=12,
        modified_at=BASE_MODIFIED - 3 * 3600,
        parameters=[("num_ctx", 8192)],  # the real Modelfile says so; clamped to 2048
    ),
    FakeModel(
        "all-minilm:latest", "bert", 512, ["embedding"], embedding_length=384,
        digest="1b226e2802dbb772b5fc32a58f103ca1804ef7501331012de126ab22f67475ef",
        parameter_size="23M", quantization_level="F16", size=45960996, block_count=6,
        modified_at=BASE_MODIFIED - 4 * 3600,
    ),
]


def copy_model(model: FakeModel, **changes: Any) -> FakeModel:
    """A copy that shares no mutable list with the original."""
    changes.setdefault("capabilities", list(model.capabilities))
    changes.setdefault("parameters", list(model.parameters))
    return dataclasses.replace(model, **changes)


def normalize_name(name: str) -> str:
    """Lower-case, registry/library prefix dropped, ":latest" added when there is no tag."""
    n = name.strip().lower()
    if n.startswith("registry.ollama.ai/"):
        n = n[len("registry.ollama.ai/"):]
    if n.startswith("library/"):
        n = n[len("library/"):]
    if n and ":" not in n.rsplit("/", 1)[-1]:
        n += ":latest"
    return n


def display_name(name: str) -> str:
    """The shortest display form Ollama prints: "x" -> "x:latest", case kept."""
    n = name.strip()
    for prefix in ("registry.ollama.ai/", "library/"):
        if n.lower().startswith(prefix):
            n = n[len(prefix):]
    if n and ":" not in n.rsplit("/", 1)[-1]:
        n += ":latest"
    return n


def full_name(model: FakeModel) -> str:
    """registry.ollama.ai/library/x:latest, as capability errors print it."""
    n = model.name
    if n.count("/") >= 2:
        return n
    if "/" not in n:
        n = "library/" + n
    return "registry.ollama.ai/" + n


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){0,2}"
                      r"(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$")


def is_valid_name(name: str) -> bool:
    return bool(name) and bool(_NAME_RE.match(name))


# ---------------------------------------------------------------------------------------------
# 2. Records, faults, gates
# ---------------------------------------------------------------------------------------------


@dataclass
class Received:
    """One complete request as the fake read it (recorded before it answers)."""

    conn_id: int  #: counter per accepted TCP connection, so keep-alive reuse is visible
    method: str
    target: str  #: raw path with query, e.g. "/api/chat"
    headers: List[Tuple[str, str]]  #: names lower-cased, in order
    body: bytes
    http_version: str  #: "1.1" or "1.0"
    #: on /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/messages: the native
    #: request that the fake's OpenAI (or Anthropic) middleware made of it (what /api/chat, /api/generate, /api/embed run), once
    #: the request got past the middleware's own checks; None otherwise
    native: Optional[dict] = None
    #: on /api/chat: characters of the rendered prompt (``render_chat_prompt``), and how many of
    #: them the runner's prompt cache reused: the common prefix with the previous prompt that
    #: runner processed (0 on a fresh load)
    prompt_chars: int = 0
    cache_reuse: int = 0

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None (empty or not JSON)."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None


class Gate:
    """A pause point: the fake sets ``reached`` and waits until a test calls ``release()``."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._waiters: List[Tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def wait_reached(self, timeout: float = 5.0) -> bool:
        """Block until the fake is at the pause point; False on timeout."""
        return self.reached.wait(timeout)

    def release(self) -> None:
        """Let the fake go on (from any thread). The gate stays open afterwards."""
        with self._lock:
            self._released.set()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass

    async def wait(self) -> None:
        """Called in the fake's loop: mark the gate reached and wait for release()."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self.reached.set()
            if self._released.is_set():
                return
            fut = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await fut
        finally:
            with self._lock:
                if (loop, fut) in self._waiters:
                    self._waiters.remove((loop, fut))


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass
class Fault:
    """A scripted misbehaviour for the next matching request(s); see the module docstring."""

    path: Optional[str] = None  #: fnmatch pattern on the path (no query); None = any
    times: int = 1  #: how many matching requests it applies to; 0 = for ever
    status: int = 0  #: answer this status with {"error": error}
    error: str = "injected failure"
    delay_before_headers: float = 0  #: seconds of total silence before the answer
    delay_per_chunk: float = 0  #: seconds before each body line
    pause_after: int = -1  #: once this many lines are sent, wait on ``gate``
    gate: Optional[Gate] = None
    stall_after: int = -1  #: once this many lines are sent, send nothing more
    close_after: int = -1  #: once this many lines are sent, close (no terminating chunk)
    close_before_response: bool = False  #: read the request, close without answering
    garbage: bool = False  #: answer bytes that are not HTTP, then close
    hits: int = field(default=0, compare=False)  #: requests this fault has been applied to

    def has_uses_left(self) -> bool:
        return self.times == 0 or self.hits < self.times

    def matches(self, path: str) -> bool:
        return self.path is None or fnmatch.fnmatchcase(path, self.path)


# ---------------------------------------------------------------------------------------------
# 3. Go-like JSON, times, binding
# ---------------------------------------------------------------------------------------------


class HTTPError(Exception):
    """An error answer: status and message (rendered in Ollama or OpenAI shape).

    ``middleware``: raised by the OpenAI middleware itself (gin's AbortWithStatusJSON:
    ``application/json; charset=utf-8``, no trailing newline) rather than by a native handler
    whose answer the /v1 writer re-encodes (``application/json``, a trailing newline).
    """

    def __init__(self, status: int, message: str, middleware: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.middleware = middleware


def go_json(obj: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it (HTML characters escaped)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if "<" in text or ">" in text or "&" in text or "\u2028" in text or "\u2029" in text:
        text = (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
                .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    if _SURROGATE_RE.search(text):  # a Go string has none: its decoder made each one U+FFFD
        text = _SURROGATE_RE.sub("\ufffd", text)
    return text.encode("utf-8")


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def ndjson_line(obj: Any) -> bytes:
    return go_json(obj) + b"\n"


def sse_event(obj: Any) -> bytes:
    return b"data: " + go_json(obj) + b"\n\n"


def rfc3339_nano(ns: int) -> str:
    """Go's RFC3339Nano in UTC: trailing zeros of the fraction dropped."""
    secs, frac = divmod(int(ns), 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if frac:
        text += "." + ("%09d" % frac).rstrip("0")
    return text + "Z"


def now_rfc3339() -> str:
    return rfc3339_nano(time.time_ns())


def http_date() -> str:
    return email.utils.formatdate(usegmt=True)


def prompt_token_count(model: FakeModel, chars: int, *, template: bool = True) -> int:
    """prompt_eval_count for ``chars`` prompt characters (see the module docstring).

    ceil(chars / model.chars_per_token), plus model.template_tokens when ``template``, at
    least 1. The division has a 1e-9 tolerance, so 33 characters at 3.3 a token are 10 tokens.
    """
    per_token = model.chars_per_token if model.chars_per_token > 0 else 4.0
    tokens = math.ceil(chars / per_token - 1e-9) if chars > 0 else 0
    if template:
        tokens += model.template_tokens
    return max(1, tokens)


PROMPT_TOO_LONG = ("the prompt is longer than the context length currently available to the model; shorten the "
                   "prompt, adjust the context length in settings, or use a model with a longer context length")


def truncated_prompt_tokens(tokens: int, num_ctx: int, num_keep: Optional[int], shift: bool = True) -> int:
    """What the runner keeps of a prompt of ``tokens`` tokens at ``num_ctx`` (ollama-api.md §7.5;
    llm/llama_server.go ``completionPromptForRequest`` and ``contextShiftPromptLimit``): a prompt
    that fits in num_ctx - 1 is kept whole; a longer one keeps its first ``num_keep`` (default 4)
    tokens and its end, num_ctx - max((num_ctx - keep) / 2, 1) tokens in all, with no error (a
    ~50k-token prompt at 32768 reports 16386).  With context shift off it is refused (400)."""
    if num_ctx <= 1 or tokens <= num_ctx - 1:
        return tokens
    if not shift:
        raise HTTPError(400, PROMPT_TOO_LONG)
    keep = 4 if num_keep is None else num_keep
    if keep < 0:
        keep = tokens
    keep = max(0, min(keep, num_ctx - 1))
    return num_ctx - max((num_ctx - keep) // 2, 1)


def _go_quote_char(ch: str) -> str:
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    if ch.isprintable():
        return "'%s'" % ch
    return "'\\x%02x'" % ord(ch) if ord(ch) < 256 else "'\\u%04x'" % ord(ch)


def go_decode_message(exc: json.JSONDecodeError) -> str:
    """Map Python's JSON decoder error onto the message Go's decoder would give."""
    doc, pos, msg = exc.doc, exc.pos, exc.msg
    if pos >= len(doc) or msg.startswith("Unterminated string"):
        return "unexpected EOF"
    ch = _go_quote_char(doc[pos])
    if msg.startswith("Expecting property name"):
        return "invalid character %s looking for beginning of object key string" % ch
    if msg.startswith("Expecting ':'"):
        return "invalid character %s after object key" % ch
    if msg.startswith("Expecting ','"):
        opener = _innermost_open(doc, pos)
        where = "array element" if opener == "[" else "object key:value pair"
        return "invalid character %s after %s" % (ch, where)
    if msg.startswith("Invalid control character"):
        return "invalid character %s in string literal" % ch
    if msg.startswith("Invalid \\escape") or msg.startswith("Invalid \\u"):
        return "invalid character %s in string escape code" % ch
    return "invalid character %s looking for beginning of value" % ch


def _innermost_open(doc: str, pos: int) -> str:
    """The innermost unclosed bracket before pos, ignoring strings."""
    stack: List[str] = []
    in_string = escaped = False
    for ch in doc[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def json_kind(value: Any) -> str:
    """The JSON kind Go names in an UnmarshalTypeError."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


_GO_TYPES = {"string": "string", "bool": "bool", "int": "int", "number": "float64",
             "array": "[]interface {}", "object": "map[string]interface {}"}
_DECODER = json.JSONDecoder()


def bind_json(body: bytes, struct: str, fields: dict, *, empty_message: str =
              "missing request body", package: str = "api") -> dict:
    """gin's ShouldBindJSON, as far as the fake needs it.

    ``fields`` maps a field name to its kind: "string", "bool", "int", "number", "array",
    "object", "any", "duration" (keep_alive), "think", optionally with ":GoType" appended for
    the error message. Unknown fields are ignored; null is the zero value; only the first JSON
    value of the body is read (Go's Decoder does not look at what follows).
    """
    text = body.decode("utf-8", "replace").lstrip(" \t\r\n")
    if not text:
        raise HTTPError(400, empty_message)
    try:
        value, _ = _DECODER.raw_decode(text)
    except json.JSONDecodeError as exc:
        raise HTTPError(400, go_decode_message(exc)) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HTTPError(400, "json: cannot unmarshal %s into Go value of type %s.%s"
                        % (json_kind(value), package, struct))
    for name, spec in fields.items():
        kind, _, gotype = spec.partition(":")
        item = value.get(name)
        if item is None or kind == "any":
            continue
        if kind == "duration":
            value[name] = parse_keep_alive(item)
            continue
        if kind == "think":
            check_think(item)
            continue
        got = json_kind(item)
        ok = {"string": got == "string", "bool": got == "bool", "array": got == "array",
              "object": got == "object", "number": got == "number",
              "int": got == "number" and _is_go_int(item)}[kind]
        if not ok:
            shown = "number %s" % item if kind == "int" and got == "number" else got
            raise HTTPError(400, "json: cannot unmarshal %s into Go struct field %s.%s of type %s"
                            % (shown, struct, name, gotype or _GO_TYPES[kind]))
    return value


_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+|[0-9]+\.)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds; ValueError carries Go's message."""
    s = text
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError('time: invalid duration "%s"' % text)
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            if re.fullmatch(r"[0-9.]+", s[pos:]):
                raise ValueError('time: missing unit in duration "%s"' % text)
            unit = re.match(r"[0-9.]*([^0-9.]*)", s[pos:])
            if unit and unit.group(1) and re.match(r"[0-9.]", s[pos:]):
                raise ValueError('time: unknown unit "%s" in duration "%s"'
                                 % (unit.group(1), text))
            raise ValueError('time: invalid duration "%s"' % text)
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_keep_alive(value: Any) -> float:
    """keep_alive as Ollama reads it, in seconds: negative means for ever (math.inf)."""
    if isinstance(value, bool):
        raise HTTPError(400, "json: cannot unmarshal bool into Go struct field of type "
                        "api.Duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_go_duration(value)
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from None
    else:
        raise HTTPError(400, "json: cannot unmarshal %s into Go struct field of type "
                        "api.Duration" % json_kind(value))
    return math.inf if seconds < 0 else seconds


def check_think(value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, str):
        if value in ("low", "medium", "high", "max"):
            return
        raise HTTPError(400, 'invalid think value: "%s" (must be "high", "medium", "low", '
                        '"max", true, or false)' % value)
    raise HTTPError(400, "think must be a boolean or string")


_INT_OPTIONS = frozenset(["num_ctx", "num_predict", "num_keep", "seed", "top_k", "repeat_last_n",
                          "num_batch", "num_gpu", "main_gpu", "num_thread", "draft_num_predict"])
_FLOAT_OPTIONS = frozenset(["temperature", "top_p", "min_p", "typical_p", "repeat_penalty",
                            "presence_penalty", "frequency_penalty"])
_BOOL_OPTIONS = frozenset(["use_mmap", "numa"])


def _is_go_int(value: Any) -> bool:
    """Would Go decode this JSON number into an int (a whole number within 64 bits)?"""
    if isinstance(value, int):
        return -(1 << 63) <= value < (1 << 63)
    return isinstance(value, float) and value.is_integer() and abs(value) < 2.0 ** 63


def _number(value: Any) -> Optional[int]:
    """An option value as an int: numbers and numeric strings; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None


def _int_or(value: Any, default: int) -> int:
    number = _number(value)
    return default if number is None else number


def check_options(options: Optional[dict]) -> dict:
    """Options.FromMap: unknown keys ignored, a wrong type is a 500."""
    options = options or {}
    for key, value in options.items():
        if value is None:
            continue
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key in _INT_OPTIONS and not is_number:
            raise HTTPError(500, 'option "%s" must be of type integer' % key)
        if key in _FLOAT_OPTIONS and not is_number:
            raise HTTPError(500, 'option "%s" must be of type float32' % key)
        if key in _BOOL_OPTIONS and not isinstance(value, bool):
            raise HTTPError(500, 'option "%s" must be of type boolean' % key)
        if key == "stop" and not (isinstance(value, list)
                                  and all(isinstance(s, str) for s in value)):
            raise HTTPError(500, 'option "stop" must be of type array of strings')
    return options


def option_int(options: dict, key: str) -> Optional[int]:
    value = options.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    return None


def host_allowed(host_header: Optional[str]) -> bool:
    """Ollama's allowedHostsMiddleware for a loopback listener (DNS-rebinding guard)."""
    if not host_header:
        return True
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.lower()
    if host in ("", "localhost") or host.endswith((".localhost", ".local", ".internal")):
        return True
    if host == socket.gethostname().lower():
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


# ---------------------------------------------------------------------------------------------
# 4. Generation and embeddings (pure)
# ---------------------------------------------------------------------------------------------


@dataclass
class RequestContext:
    """What the HTTP layer tells the application about one request."""

    chunks: int = DEFAULT_CHUNKS
    think_chunks: int = DEFAULT_THINK_CHUNKS
    delay: float = 0.0  #: seconds before each streamed line (X-Fake-Delay-Ms)
    start_ns: int = 0  #: perf_counter_ns when the request was complete
    load_ns: int = 0  #: time spent "loading" (a delay_before_headers fault)

    @classmethod
    def from_received(cls, rec: Received, start_ns: int = 0) -> "RequestContext":
        return cls(chunks=_int_header(rec.header("x-fake-chunks"), DEFAULT_CHUNKS),
                   think_chunks=_int_header(rec.header("x-fake-think-chunks"),
                                            DEFAULT_THINK_CHUNKS),
                   delay=_delay_header(rec.header("x-fake-delay-ms")),
                   start_ns=start_ns or time.perf_counter_ns())


def _int_header(value: Optional[str], default: int) -> int:
    try:
        return max(0, min(MAX_CHUNKS, int(value))) if value is not None else default
    except ValueError:
        return default


def _delay_header(value: Optional[str]) -> float:
    try:
        return max(0.0, float(value)) / 1000.0 if value is not None else 0.0
    except ValueError:
        return 0.0


class Generation:
    """The tokens one chat/generate request produces, and its timing statistics.

    Tokens are handed out lazily by ``pieces()`` so that created_at and the durations follow the
    real pace of the response (delays, gates). A tool-call answer has no content tokens: its
    ``tool_calls`` come in the final object and cost ``call_tokens`` in eval_count.
    """

    def __init__(self, model: str, thinking: List[str], content: List[str], done_reason: str,
                 prompt_tokens: int, start_ns: int, load_ns: int,
                 tool_calls: Optional[List[dict]] = None, call_tokens: int = 0) -> None:
        self.model = model  #: the name as the client sent it
        self.thinking = thinking
        self.content = content
        self.done_reason = done_reason
        self.prompt_tokens = prompt_tokens
        self.start_ns = start_ns
        self.load_ns = load_ns
        self.tool_calls = tool_calls or []
        self.call_tokens = call_tokens
        self.first_ns = 0

    @property
    def eval_count(self) -> int:
        return len(self.thinking) + len(self.content) + self.call_tokens

    @property
    def line_count(self) -> int:
        """Native lines: one per thinking or content token plus the final stats line."""
        return len(self.thinking) + len(self.content) + 1

    def pieces(self) -> Iterator[Tuple[str, str]]:
        """("thinking" | "content", token) in order."""
        self.first_ns = time.perf_counter_ns()
        for token in self.thinking:
            yield "thinking", token
        for token in self.content:
            yield "content", token

    def stats(self) -> dict:
        """The six statistics of a final object, zeros omitted, in Ollama's order."""
        now = time.perf_counter_ns()
        load = self.load_ns + 1_234_567
        prompt_ns = self.prompt_tokens * 250_000 + 1_000
        eval_ns = 0
        if self.eval_count:
            measured = now - self.first_ns if self.first_ns else 0
            eval_ns = max(measured, self.eval_count * 1_000_000)
        total = max(now - self.start_ns, load + prompt_ns + eval_ns) + 123_456
        out = {"total_duration": total, "load_duration": load,
               "prompt_eval_count": self.prompt_tokens, "prompt_eval_duration": prompt_ns,
               "eval_count": self.eval_count, "eval_duration": eval_ns}
        return {k: v for k, v in out.items() if v}

    def context_tokens(self, extra: int = 0) -> List[int]:
        """The deprecated generate ``context``: token ids of prompt and answer."""
        n = self.prompt_tokens + self.eval_count + extra
        return [(i * 7919 + 128000) % 128256 for i in range(n)]


def make_generation(model_sent: str, prompt_tokens: int, ctx: RequestContext, *,
                    thinking: bool, num_predict: Optional[int],
                    tool_call: Optional[dict] = None) -> Generation:
    think = ["think%d " % i for i in range(ctx.think_chunks if thinking else 0)]
    content = ["tok%d " % i for i in range(ctx.chunks)]
    if tool_call is not None:
        cost = max(1, len(content))  # the call is written in place of the content tokens
        if num_predict is None or not 0 < num_predict < len(think) + cost:
            return Generation(model_sent, think, [], "stop", prompt_tokens, ctx.start_ns,
                              ctx.load_ns, tool_calls=[tool_call], call_tokens=cost)
    reason = "stop"
    if num_predict is not None and 0 < num_predict < len(think) + len(content):
        think = think[:num_predict]
        content = content[:num_predict - len(think)]
        reason = "length"
    return Generation(model_sent, think, content, reason, prompt_tokens, ctx.start_ns,
                      ctx.load_ns)


_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def make_tool_call(model_sent: str, messages: List[Any], tools: List[Any]) -> dict:
    """The one tool call the fake answers a chat request with ``tools`` (see the docstring).

    A call to the first tool; arguments: "x" for each of its parameters' ``required`` names,
    else ``{"location": "Paris"}``; id "call_" + 8 base-36 characters of a sha256 over the
    model name as sent, the messages' text and the tool name.
    """
    first = tools[0] if tools and isinstance(tools[0], dict) else {}
    function = first.get("function") if isinstance(first.get("function"), dict) else {}
    name = function.get("name") if isinstance(function.get("name"), str) else ""
    params = function.get("parameters") if isinstance(function.get("parameters"), dict) else {}
    required = params.get("required") if isinstance(params.get("required"), list) else []
    names = [r for r in required if isinstance(r, str)]
    arguments: dict = {r: "x" for r in names} if names else {"location": "Paris"}
    text = "".join(m.get("content") or "" for m in messages
                   if isinstance(m, dict) and isinstance(m.get("content"), str))
    seed = int.from_bytes(hashlib.sha256(go_json([model_sent, text, name])).digest()[:8], "big")
    chars = []
    for _ in range(8):
        seed, digit = divmod(seed, 36)
        chars.append(_BASE36[digit])
    return {"id": "call_" + "".join(chars),
            "function": {"index": 0, "name": name, "arguments": arguments}}


# Native answers as dicts (the lines of a stream, or the one object of stream:false); the
# native routes encode them, and the /v1 writers below convert them as Ollama's middleware does.

def native_chat_responses(gen: Generation) -> Iterator[dict]:
    for kind, token in gen.pieces():
        message = {"role": "assistant", "content": token if kind == "content" else ""}
        if kind == "thinking":
            message["thinking"] = token
        yield {"model": gen.model, "created_at": now_rfc3339(), "message": message,
               "done": False}
    message = {"role": "assistant", "content": ""}
    if gen.tool_calls:
        message["tool_calls"] = gen.tool_calls
    final = {"model": gen.model, "created_at": now_rfc3339(), "message": message, "done": True,
             "done_reason": gen.done_reason}
    final.update(gen.stats())
    yield final


def native_chat_response(gen: Generation) -> dict:
    list(gen.pieces())
    message = {"role": "assistant", "content": "".join(gen.content)}
    if gen.thinking:
        message["thinking"] = "".join(gen.thinking)
    if gen.tool_calls:
        message["tool_calls"] = gen.tool_calls
    obj = {"model": gen.model, "created_at": now_rfc3339(), "message": message, "done": True,
           "done_reason": gen.done_reason}
    obj.update(gen.stats())
    return obj


def native_generate_responses(gen: Generation,
                              context: Optional[List[int]]) -> Iterator[dict]:
    for kind, token in gen.pieces():
        obj = {"model": gen.model, "created_at": now_rfc3339(),
               "response": token if kind == "content" else ""}
        if kind == "thinking":
            obj["thinking"] = token
        obj["done"] = False
        yield obj
    yield _generate_final(gen, context, "", "")


def native_generate_response(gen: Generation, context: Optional[List[int]]) -> dict:
    list(gen.pieces())
    return _generate_final(gen, context, "".join(gen.content), "".join(gen.thinking))


def _generate_final(gen: Generation, context: Optional[List[int]], response: str,
                    thinking: str) -> dict:
    obj = {"model": gen.model, "created_at": now_rfc3339(), "response": response}
    if thinking:
        obj["thinking"] = thinking
    obj.update(done=True, done_reason=gen.done_reason)
    if context is not None:
        obj["context"] = context
    obj.update(gen.stats())
    return obj


# The /v1 writers (ollama-api.md §6.2, §6.3): ChatWriter, CompleteWriter, EmbedWriter.

SSE_DONE = b"data: [DONE]\n\n"


def writer_body(obj: Any) -> bytes:
    """What a /v1 writer's json.NewEncoder(w).Encode writes: compact JSON and a newline."""
    return go_json(obj) + b"\n"


def unix_seconds(created_at: Any) -> int:
    """An RFC 3339 UTC time ("2026-08-21T12:00:00.1Z") as Unix seconds; now when unparsable."""
    try:
        return calendar.timegm(time.strptime(str(created_at)[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return int(time.time())


def v1_usage(r: dict) -> dict:
    prompt, completion = r.get("prompt_eval_count") or 0, r.get("eval_count") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def v1_tool_calls(calls: List[Any]) -> List[dict]:
    """openai.ToToolCalls: type "function", arguments as a JSON string, index moved up."""
    out = []
    for call in calls:
        function = call.get("function") or {}
        out.append({"id": call.get("id", ""), "index": function.get("index", 0),
                    "type": "function",
                    "function": {"name": function.get("name", ""),
                                 "arguments": go_json(function.get("arguments") or {}).decode()}})
    return out


def v1_chat_completion(r: dict, cid: str) -> dict:
    """openai.ToChatCompletion of a whole native chat answer."""
    msg = r.get("message") or {}
    tool_calls = v1_tool_calls(msg.get("tool_calls") or [])
    message = {"role": msg.get("role", ""), "content": msg.get("content", "")}
    if msg.get("thinking"):
        message["reasoning"] = msg["thinking"]
    if tool_calls:
        message["tool_calls"] = tool_calls
    reason = r.get("done_reason") or ""
    if reason == "stop" and tool_calls:
        reason = "tool_calls"
    return {"id": cid, "object": "chat.completion", "created": unix_seconds(r.get("created_at")),
            "model": r.get("model", ""), "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "message": message, "finish_reason": reason or None}],
            "usage": v1_usage(r)}


def _chat_chunk(cid: str, created: int, model: str, choices: list) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_ollama", "choices": choices}


def v1_stream_chunks(cid: str, r: dict, created: int, include_role: bool) -> List[dict]:
    """openai.ToStreamChunks: one chunk, or two when thinking comes with content/tool calls."""
    msg = r.get("message") or {}
    content, thinking = msg.get("content") or "", msg.get("thinking") or ""
    tool_calls = v1_tool_calls(msg.get("tool_calls") or [])
    model = r.get("model", "")

    def chunk(delta: dict) -> dict:
        return _chat_chunk(cid, created, model,
                           [{"index": 0, "delta": delta, "finish_reason": None}])

    role = {"role": "assistant"} if include_role else {}
    if thinking and (content or tool_calls):
        rest: dict = {"content": content}
        if tool_calls:
            rest["tool_calls"] = tool_calls
        return [chunk(dict(role, reasoning=thinking)), chunk(rest)]
    delta = dict(role, content=content)
    if thinking:
        delta["reasoning"] = thinking
    if tool_calls:
        delta["tool_calls"] = tool_calls
    return [chunk(delta)]


def v1_chat_events(responses: Iterable[dict], cid: str, include_usage: bool) -> Iterator[bytes]:
    """ChatWriter on a stream: created pinned to the first native answer, role in the first
    chunk only, the metrics-only final object skipped (unless nothing was sent yet), then a
    finish chunk with delta {}, the usage chunk when asked, and [DONE]."""
    created: Optional[int] = None
    first_sent = tool_sent = False
    for r in responses:
        if created is None:
            created = unix_seconds(r.get("created_at"))
        msg = r.get("message") or {}
        done = bool(r.get("done"))
        trailer = (done and first_sent and not msg.get("content") and not msg.get("thinking")
                   and not msg.get("tool_calls"))
        if not trailer:
            for chunk in v1_stream_chunks(cid, r, created, not first_sent):
                tool_sent = tool_sent or bool(chunk["choices"][0]["delta"].get("tool_calls"))
                yield sse_event(chunk)
            first_sent = True
        if done:
            reason = r.get("done_reason") or "stop"
            if reason == "stop" and tool_sent:
                reason = "tool_calls"
            finish = _chat_chunk(cid, created, r.get("model", ""),
                                 [{"index": 0, "delta": {}, "finish_reason": reason}])
            yield sse_event(finish)
            if include_usage:
                finish["choices"] = []
                finish["usage"] = v1_usage(r)
                yield sse_event(finish)
            yield SSE_DONE


def v1_completion(r: dict, cid: str) -> dict:
    """openai.ToCompletion of a whole native generate answer."""
    return {"id": cid, "object": "text_completion", "created": unix_seconds(r.get("created_at")),
            "model": r.get("model", ""), "system_fingerprint": "fp_ollama",
            "choices": [{"text": r.get("response", ""), "index": 0,
                         "finish_reason": r.get("done_reason") or None}],
            "usage": v1_usage(r)}


def v1_completion_events(responses: Iterable[dict], cid: str,
                         include_usage: bool) -> Iterator[bytes]:
    """CompleteWriter on a stream: one chunk per native line (created = now, the last one with
    finish_reason); with include_usage zero usage on each and a final usage chunk."""
    for r in responses:
        chunk = {"id": cid, "object": "text_completion", "created": int(time.time()),
                 "choices": [{"text": r.get("response", ""), "index": 0,
                              "finish_reason": r.get("done_reason") or None}],
                 "model": r.get("model", ""), "system_fingerprint": "fp_ollama"}
        if include_usage:
            chunk["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        yield sse_event(chunk)
        if r.get("done"):
            if include_usage:
                chunk["choices"] = []
                chunk["usage"] = v1_usage(r)
                yield sse_event(chunk)
            yield SSE_DONE


def v1_embedding_list(model_sent: str, r: dict, encoding_format: str) -> dict:
    """openai.ToEmbeddingList: base64 = little-endian float32 bytes."""
    data = []
    for index, vec in enumerate(r.get("embeddings") or []):
        embedding: Any = vec
        if encoding_format.lower() == "base64":
            embedding = base64.b64encode(struct.pack("<%df" % len(vec), *vec)).decode()
        data.append({"object": "embedding", "embedding": embedding, "index": index})
    tokens = r.get("prompt_eval_count") or 0
    return {"object": "list", "data": data or None, "model": model_sent,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def embedding_direction(text: str, dim: int, salt: str = "") -> List[float]:
    """A deterministic unit vector of ``dim`` floats for ``text`` (seeded from sha256)."""
    seed = int.from_bytes(hashlib.sha256((salt + "\x00" + text).encode("utf-8")).digest()[:8],
                          "big")
    rng = random.Random(seed)
    vec = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    return l2_normalize(vec)


def l2_normalize(vec: List[float]) -> List[float]:
    norm = math.sqrt(sum(x * x for x in vec))
    return [x / norm for x in vec] if norm else list(vec)


def as_float32(vec: List[float]) -> List[float]:
    """Round to float32 and print with at most 9 significant digits, as Go's []float32."""
    packed = struct.unpack("<%df" % len(vec), struct.pack("<%df" % len(vec), *vec))
    return [float("%.9g" % x) for x in packed]


def raw_embedding_scale(text: str, salt: str = "") -> float:
    """The length of an un-normalised (legacy nomic-bert) vector: between 5 and 15."""
    digest = hashlib.sha256(("scale\x00" + salt + "\x00" + text).encode("utf-8")).digest()
    return 5.0 + int.from_bytes(digest[:2], "big") / 6553.5


# ---------------------------------------------------------------------------------------------
# 5. The fake Ollama application (routes -> Reply)
# ---------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """An answer, before it meets HTTP: head, then a body or a stream of lines."""

    status: int
    content_type: Optional[str] = CT_JSON
    body: bytes = b""
    body_fn: Optional[Callable[[], bytes]] = None  #: computes the body after pre_delay
    lines: Optional[Iterable[bytes]] = None  #: a streamed body (chunked), one item per line
    line_delay: float = 0.0  #: seconds before each streamed line
    pre_delay: float = 0.0  #: seconds of silence before the head
    headers: List[Tuple[str, str]] = field(default_factory=list)
    on_done: Optional[Callable[[], None]] = None  #: runs once the answer ended (or was cut)


def json_reply(obj: Any, status: int = 200, content_type: str = CT_JSON) -> Reply:
    return Reply(status, content_type, go_json(obj))


def ollama_error(status: int, message: str) -> Reply:
    return json_reply({"error": message}, status)


def openai_error(status: int, message: str, middleware: bool = False) -> Reply:
    """openai.NewError: through the /v1 writer (``application/json``, a newline after the
    JSON), or written by the middleware itself (gin's c.JSON)."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    obj = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    if middleware:
        return json_reply(obj, status, CT_JSON)
    return Reply(status, CT_OPENAI, writer_body(obj))


_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                          403: "permission_error", 404: "not_found_error",
                          429: "rate_limit_error", 503: "overloaded_error",
                          529: "overloaded_error"}


def anthropic_error(status: int, message: str, middleware: bool = False) -> Reply:
    """anthropic.NewError: the type follows the status, a fresh ``req_`` + 24 hex request id;
    through AnthropicWriter.writeError (``application/json``, a newline after the JSON), or
    written by the middleware itself (gin's c.AbortWithStatusJSON)."""
    obj = {"type": "error",
           "error": {"type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message},
           "request_id": "req_" + os.urandom(12).hex()}
    if middleware:
        return json_reply(obj, status, CT_JSON)
    return Reply(status, CT_OPENAI, writer_body(obj))


def error_reply(path: str, status: int, message: str, middleware: bool = False) -> Reply:
    """Ollama's shape, Anthropic's on /v1/messages, or OpenAI's on other /v1 paths."""
    if path == "/v1/messages":
        return anthropic_error(status, message, middleware)
    if path.startswith("/v1/"):
        return openai_error(status, message, middleware)
    return ollama_error(status, message)


def empty_reply(status: int = 200) -> Reply:
    return Reply(status, None, b"")


def stream_reply(lines: Iterable[bytes], content_type: str = CT_NDJSON, delay: float = 0.0,
                 on_done: Optional[Callable[[], None]] = None) -> Reply:
    return Reply(200, content_type, lines=lines, line_delay=delay, on_done=on_done)


_CHAT_FIELDS = {"model": "string", "messages": "array:[]api.Message", "stream": "bool:*bool",
                "format": "any", "keep_alive": "duration", "tools": "array:api.Tools",
                "options": "object", "think": "think", "truncate": "bool:*bool",
                "shift": "bool:*bool", "logprobs": "bool", "top_logprobs": "int"}
_GENERATE_FIELDS = {"model": "string", "prompt": "string", "suffix": "string",
                    "system": "string", "template": "string", "context": "array:[]int",
                    "stream": "bool:*bool", "raw": "bool", "format": "any",
                    "keep_alive": "duration", "images": "array:[]api.ImageData",
                    "options": "object", "think": "think", "truncate": "bool:*bool",
                    "shift": "bool:*bool", "logprobs": "bool", "top_logprobs": "int"}
_EMBED_FIELDS = {"model": "string", "input": "any", "truncate": "bool:*bool",
                 "dimensions": "int", "keep_alive": "duration", "options": "object"}
_EMBEDDINGS_FIELDS = {"model": "string", "prompt": "string", "keep_alive": "duration",
                      "options": "object"}
_NAME_FIELDS = {"model": "string", "name": "string", "verbose": "bool", "stream": "bool:*bool",
                "insecure": "bool", "system": "string", "options": "object"}
_CREATE_FIELDS = {"model": "string", "name": "string", "from": "string",
                  "files": "object:map[string]string", "parameters": "object",
                  "template": "string", "system": "string", "stream": "bool:*bool",
                  "quantize": "string"}
_COPY_FIELDS = {"source": "string", "destination": "string"}
_V1_CHAT_FIELDS = {"model": "string", "messages": "array:[]openai.Message",
                   "stream": "bool", "stream_options": "object:openai.StreamOptions",
                   "max_tokens": "int:int", "seed": "int:int", "stop": "any",
                   "temperature": "number:float64", "frequency_penalty": "number:float64",
                   "presence_penalty": "number:float64", "top_p": "number:float64",
                   "response_format": "object:openai.ResponseFormat",
                   "tools": "array:[]api.Tool", "reasoning": "object:openai.Reasoning",
                   "reasoning_effort": "string:*string", "logprobs": "bool:bool",
                   "top_logprobs": "int"}
_V1_COMPLETION_FIELDS = {"model": "string", "prompt": "string",
                         "frequency_penalty": "number:float32", "max_tokens": "int:int",
                         "presence_penalty": "number:float32", "seed": "int:int", "stop": "any",
                         "stream": "bool", "stream_options": "object:openai.StreamOptions",
                         "temperature": "number:float32", "top_p": "number:float32",
                         "suffix": "string", "logprobs": "int:int"}
_V1_EMBED_FIELDS = {"model": "string", "input": "any", "encoding_format": "string",
                    "dimensions": "int"}

_GO_TYPE_NAMES = {"null": "<nil>", "number": "float64", "bool": "bool", "string": "string",
                  "array": "[]interface {}", "object": "map[string]interface {}"}
_IMAGE_PREFIXES = ("data:image/jpeg;base64,", "data:image/jpg;base64,", "data:image/png;base64,",
                   "data:image/webp;base64,")
_REASONING_EFFORTS = {"none": False, "minimal": "low", "low": "low", "medium": "medium",
                      "high": "high", "max": "max", "xhigh": "max", "ultra": "max"}


def _middleware_error(message: str) -> HTTPError:
    return HTTPError(400, message, middleware=True)


def name_namespace(name: str) -> str:
    """model.ParseName(name).Namespace: "library" unless the name carries one."""
    parts = name.split(":", 1)[0].split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2] else "library"


def decode_image_url(url: str) -> str:
    """openai decodeImageURL: a data URL's bytes, returned as native base64."""
    if url.startswith(("http://", "https://")):
        raise _middleware_error("image URLs are not currently supported, please use base64 "
                                "encoded data instead")
    if url.startswith("data:;base64,"):
        data = url[len("data:;base64,"):]
    else:
        prefix = next((p for p in _IMAGE_PREFIXES if url.startswith(p)), None)
        if prefix is None:
            raise _middleware_error("invalid image input")
        data = url[len(prefix):]
    try:
        raw = base64.b64decode(data.replace("\r", "").replace("\n", ""), validate=True)
    except ValueError:
        raise _middleware_error("invalid image input") from None
    return base64.b64encode(raw).decode("ascii")


def native_tool_calls(calls: Any) -> List[dict]:
    """openai.FromCompletionToolCall: arguments strings parsed into (ordered) objects."""
    out = []
    for call in calls or []:
        call = call if isinstance(call, dict) else {}
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        arguments = function.get("arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise _middleware_error("invalid tool call arguments")
        item: dict = {}
        if call.get("id"):
            item["id"] = call["id"]
        item["function"] = {"index": 0, "name": function.get("name") or "", "arguments": parsed}
        out.append(item)
    return out


def _native_message(role: str, content: str = "", *, thinking: Any = "", images: Any = None,
                    tool_calls: Any = None, tool_name: str = "", tool_call_id: Any = "") -> dict:
    """An api.Message as JSON: empty fields omitted, except content."""
    message: dict = {"role": role, "content": content}
    for key, value in (("thinking", thinking), ("images", images), ("tool_calls", tool_calls),
                       ("tool_name", tool_name), ("tool_call_id", tool_call_id)):
        if value:
            message[key] = value
    return message


def _tool_name_from_id(messages: list, call_id: str) -> str:
    for message in reversed(messages):
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            if isinstance(call, dict) and call.get("id") == call_id:
                function = call.get("function")
                return (function.get("name") or "") if isinstance(function, dict) else ""
    return ""


def _check_v1_message(message: Any) -> dict:
    """Binding of one openai.Message (null is the zero message)."""
    if message is None:
        return {}
    if not isinstance(message, dict):
        raise _middleware_error("json: cannot unmarshal %s into Go struct field "
                                "ChatCompletionRequest.messages of type openai.Message"
                                % json_kind(message))
    for key in ("role", "reasoning", "name", "tool_call_id"):
        if message.get(key) is not None and not isinstance(message[key], str):
            raise _middleware_error("json: cannot unmarshal %s into Go struct field "
                                    "Message.messages.%s of type string"
                                    % (json_kind(message[key]), key))
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise _middleware_error("json: cannot unmarshal %s into Go struct field "
                                "Message.messages.tool_calls of type []openai.ToolCall"
                                % json_kind(calls))
    return message


def openai_think(body: dict) -> Any:
    """reasoning.effort (first) or reasoning_effort -> think; None when not given."""
    if isinstance(body.get("reasoning"), dict):
        effort = body["reasoning"].get("effort")
    else:
        effort = body.get("reasoning_effort")
    if not effort:
        return None
    if effort not in _REASONING_EFFORTS:
        raise _middleware_error("invalid reasoning value: %s (must be \"minimal\", \"low\", "
                                "\"medium\", \"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")"
                                % json.dumps(effort, ensure_ascii=False))
    return _REASONING_EFFORTS[effort]


def openai_chat_to_native(body: dict) -> dict:
    """openai.FromChatRequest (ollama-api.md §6.1): the /api/chat request a /v1 chat becomes.

    Each content part becomes its own message; options get temperature and top_p 1.0 when
    absent; options, keep_alive, num_ctx and max_completion_tokens are not carried over.
    """
    raw_messages = [_check_v1_message(m) for m in body.get("messages") or []]
    messages: List[dict] = []
    for msg in raw_messages:
        role = msg.get("role") or ""
        tool_name = ""
        if role.lower() == "tool":
            tool_name = msg.get("name") or ""
            if not tool_name and msg.get("tool_call_id"):
                tool_name = _tool_name_from_id(raw_messages, msg["tool_call_id"])
        content = msg.get("content")
        if isinstance(content, str):
            messages.append(_native_message(
                role, content, thinking=msg.get("reasoning"),
                tool_calls=native_tool_calls(msg.get("tool_calls")), tool_name=tool_name,
                tool_call_id=msg.get("tool_call_id")))
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    raise _middleware_error("invalid message format")
                kind = part.get("type")
                if kind == "text":
                    if not isinstance(part.get("text"), str):
                        raise _middleware_error("invalid message format")
                    messages.append(_native_message(role, part["text"]))
                elif kind == "image_url":
                    url = part.get("image_url")
                    if isinstance(url, dict):
                        url = url.get("url")
                    if not isinstance(url, str):
                        raise _middleware_error("invalid message format")
                    messages.append(_native_message(role, images=[decode_image_url(url)]))
                elif kind == "input_audio":
                    audio = part.get("input_audio")
                    if not isinstance(audio, dict):
                        raise _middleware_error("invalid input_audio format")
                    if not isinstance(audio.get("data"), str):
                        raise _middleware_error("invalid input_audio format: missing data")
                    try:
                        raw = base64.b64decode(audio["data"], validate=True)
                    except ValueError as exc:
                        raise _middleware_error("invalid input_audio base64 data: %s"
                                                % exc) from None
                    messages.append(_native_message(
                        role, images=[base64.b64encode(raw).decode("ascii")]))
                else:
                    raise _middleware_error("invalid message format")
            if messages and msg.get("tool_calls"):
                last = messages[-1]
                extra = _native_message(role, thinking=msg.get("reasoning"),
                                        tool_calls=native_tool_calls(msg["tool_calls"]),
                                        tool_name=tool_name,
                                        tool_call_id=msg.get("tool_call_id"))
                for key in ("thinking", "tool_calls", "tool_name", "tool_call_id"):
                    last.pop(key, None)
                    if key in extra:
                        last[key] = extra[key]
        else:
            if msg.get("tool_calls") is None:
                raise _middleware_error("invalid message content type: %s"
                                        % _GO_TYPE_NAMES[json_kind(content)])
            messages.append(_native_message(
                role, thinking=msg.get("reasoning"),
                tool_calls=native_tool_calls(msg["tool_calls"]),
                tool_call_id=msg.get("tool_call_id")))

    options: dict = {}
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        options["stop"] = [s for s in stop if isinstance(s, str)] or None
    if body.get("max_tokens") is not None:
        options["num_predict"] = int(body["max_tokens"])
    options["temperature"] = body["temperature"] if body.get("temperature") is not None else 1.0
    for key in ("seed", "frequency_penalty", "presence_penalty"):
        if body.get(key) is not None:
            options[key] = body[key]
    options["top_p"] = body["top_p"] if body.get("top_p") is not None else 1.0

    native: dict = {"model": body.get("model") or "", "messages": messages,
                    "stream": bool(body.get("stream"))}
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = str(response_format.get("type") or "").strip().lower()
        schema = response_format.get("json_schema")
        if kind == "json_object":
            native["format"] = "json"
        elif kind == "json_schema" and isinstance(schema, dict) and schema.get("schema"):
            native["format"] = schema["schema"]
    if body.get("tools"):
        native["tools"] = body["tools"]
    native["options"] = dict(sorted(options.items()))  # a Go map: sorted keys
    think = openai_think(body)
    if think is not None:
        native["think"] = think
    if body.get("logprobs"):
        native["logprobs"] = True
    if body.get("top_logprobs"):
        native["top_logprobs"] = body["top_logprobs"]
    return native


def openai_completion_to_native(body: dict) -> dict:
    """openai.FromCompleteRequest: the /api/generate request a /v1 completion becomes."""
    options: dict = {}
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        for item in stop:
            if not isinstance(item, str):
                raise _middleware_error("invalid type for 'stop' field: %s"
                                        % _GO_TYPE_NAMES[json_kind(item)])
        options["stop"] = list(stop) or None
    if body.get("max_tokens") is not None:
        options["num_predict"] = int(body["max_tokens"])
    options["temperature"] = body["temperature"] if body.get("temperature") is not None else 1.0
    if body.get("seed") is not None:
        options["seed"] = body["seed"]
    options["frequency_penalty"] = body.get("frequency_penalty") or 0.0
    options["presence_penalty"] = body.get("presence_penalty") or 0.0
    options["top_p"] = body.get("top_p") or 1.0
    native: dict = {"model": body.get("model") or "", "prompt": body.get("prompt") or ""}
    if body.get("suffix"):
        native["suffix"] = body["suffix"]
    native["stream"] = bool(body.get("stream"))
    native["options"] = dict(sorted(options.items()))
    logprobs = body.get("logprobs")
    if isinstance(logprobs, (int, float)) and not isinstance(logprobs, bool) and logprobs > 0:
        native["logprobs"] = True
        native["top_logprobs"] = int(logprobs)
    return native


# -- /v1/messages: Ollama's Anthropic middleware (agents-api.md §1; anthropic/anthropic.go,
# middleware/anthropic.go): FromMessagesRequest, ToMessagesResponse, StreamConverter --------

_MESSAGES_FIELDS = {"model": "string", "max_tokens": "int:int",
                    "messages": "array:[]anthropic.MessageParam", "system": "any",
                    "stream": "bool", "temperature": "number:*float64", "top_p": "number:*float64",
                    "top_k": "int:*int", "stop_sequences": "array:[]string",
                    "tools": "array:[]anthropic.Tool",
                    "tool_choice": "object:anthropic.ToolChoice",
                    "thinking": "object:anthropic.ThinkingConfig",
                    "metadata": "object:anthropic.Metadata",
                    "output_config": "object:anthropic.OutputConfig"}
#: string fields of anthropic.ContentBlock (Text and Thinking are *string, null = unset)
_BLOCK_STRINGS = ("type", "text", "id", "name", "tool_use_id", "thinking", "signature")
_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
SSE_STREAM_HEADERS = [("cache-control", "no-cache"), ("connection", "keep-alive")]


def _go_value(value: Any) -> Any:
    """A JSON value as Go's ``any`` holds and re-marshals it: object keys sorted (map[string]any),
    integral floats written as integers."""
    if isinstance(value, dict):
        return {k: _go_value(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_go_value(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def _go_arguments(arguments: Any) -> dict:
    """api.ToolCallFunctionArguments: an ordered map at the top, Go ``any`` values below."""
    if not isinstance(arguments, dict):
        return {}
    return {k: _go_value(v) for k, v in arguments.items()}


def go_base64_decode(data: str) -> bytes:
    """base64.StdEncoding.DecodeString (CR and LF skipped, padding required); ValueError with
    Go's CorruptInputError text."""
    text = data.replace("\r", "").replace("\n", "")
    for pos, ch in enumerate(text):
        if ch not in _B64_ALPHABET and ch != "=":
            raise ValueError("illegal base64 data at input byte %d" % pos)
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:  # bad padding or length: the offset is approximate here
        pad = text.find("=")
        raise ValueError("illegal base64 data at input byte %d"
                         % (pad if pad >= 0 else len(text) - len(text) % 4)) from None


def _anthropic_image(source: Any) -> str:
    """resolveImageSource: base64 only; the decoded bytes, as native base64 again."""
    kind = source.get("type") if isinstance(source.get("type"), str) else ""
    if kind != "base64":
        raise _anthropic_middleware_error("invalid image source type: %s. Only base64 images are "
                                          "supported." % kind)
    data = source.get("data") if isinstance(source.get("data"), str) else ""
    try:
        raw = go_base64_decode(data)
    except ValueError as exc:
        raise _anthropic_middleware_error("invalid base64 image data: %s" % exc) from None
    return base64.b64encode(raw).decode("ascii")


def _anthropic_middleware_error(message: str) -> HTTPError:
    return HTTPError(400, message, middleware=True)


def _anthropic_tool_result(content: Any) -> Tuple[str, List[str]]:
    """convertToolResultContent: a string, or the text parts joined and the images decoded."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        return "", []
    text, images = [], []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            text.append(part["text"])
        elif part.get("type") == "image":
            if not isinstance(part.get("source"), dict):
                raise _anthropic_middleware_error("invalid tool_result image source")
            images.append(_anthropic_image(part["source"]))
    return "".join(text), images


def _web_search_error(code: Any) -> str:
    return "web_search_tool_result_error: %s" % code if isinstance(code, str) and code else \
        "web_search_tool_result_error"


def _web_search_result_text(content: Any) -> str:
    """formatWebSearchToolResultContent: ``- <title>: <url>`` lines, or the error code."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        lines = []
        for item in content:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "web_search_result":
                title, url = item.get("title"), item.get("url")
                lines.append("- %s: %s\n" % (title if isinstance(title, str) else "",
                                             url if isinstance(url, str) else ""))
            elif item.get("type") == "web_search_tool_result_error":
                return _web_search_error(item.get("error_code"))
        return "".join(lines)
    if isinstance(content, dict) and content.get("type") == "web_search_tool_result_error":
        return _web_search_error(content.get("error_code"))
    return go_json(_go_value(content)).decode("utf-8")


def _check_content_block(block: Any) -> dict:
    """Binding of one anthropic.ContentBlock (MessageParam.UnmarshalJSON decodes the content
    on its own, so Go names the field ContentBlock.<name>)."""
    if not isinstance(block, dict):
        raise _anthropic_middleware_error("json: cannot unmarshal %s into Go value of type "
                                          "anthropic.ContentBlock" % json_kind(block))
    for key in _BLOCK_STRINGS:
        if block.get(key) is not None and not isinstance(block[key], str):
            raise _anthropic_middleware_error("json: cannot unmarshal %s into Go struct field "
                                              "ContentBlock.%s of type string"
                                              % (json_kind(block[key]), key))
    for key, gotype in (("source", "anthropic.ImageSource"),
                        ("input", "api.ToolCallFunctionArguments")):
        if block.get(key) is not None and not isinstance(block[key], dict):
            raise _anthropic_middleware_error("json: cannot unmarshal %s into Go struct field "
                                              "ContentBlock.%s of type %s"
                                              % (json_kind(block[key]), key, gotype))
    if block.get("is_error") is not None and not isinstance(block["is_error"], bool):
        raise _anthropic_middleware_error("json: cannot unmarshal %s into Go struct field "
                                          "ContentBlock.is_error of type bool"
                                          % json_kind(block["is_error"]))
    return block


def anthropic_blocks(message: dict) -> List[dict]:
    """MessageParam.UnmarshalJSON: a string content is one text block; null is an empty text."""
    if "content" not in message:
        raise _anthropic_middleware_error("unexpected end of JSON input")
    content = message["content"]
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content or ""}]
    if not isinstance(content, list):
        raise _anthropic_middleware_error("json: cannot unmarshal %s into Go value of type "
                                          "[]anthropic.ContentBlock" % json_kind(content))
    return [_check_content_block(b) for b in content]


def _bind_messages_request(body: dict) -> None:
    """The parts of binding MessagesRequest that bind_json leaves: each MessageParam."""
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            raise _anthropic_middleware_error("json: cannot unmarshal %s into Go struct field "
                                              "MessagesRequest.messages of type "
                                              "anthropic.MessageParam" % json_kind(message))
        if message.get("role") is not None and not isinstance(message["role"], str):
            raise _anthropic_middleware_error("json: cannot unmarshal %s into Go struct field "
                                              ".role of type string" % json_kind(message["role"]))
        message["content"] = anthropic_blocks(message)
    for item in body.get("stop_sequences") or []:
        if not isinstance(item, str):
            raise _anthropic_middleware_error("json: cannot unmarshal %s into Go struct field "
                                              "MessagesRequest.stop_sequences of type string"
                                              % json_kind(item))
    for tool in body.get("tools") or []:
        if tool is not None and not isinstance(tool, dict):
            raise _anthropic_middleware_error("json: cannot unmarshal %s into Go struct field "
                                              "MessagesRequest.tools of type anthropic.Tool"
                                              % json_kind(tool))
        for key in ("type", "name", "description"):
            if tool and tool.get(key) is not None and not isinstance(tool[key], str):
                raise _anthropic_middleware_error("json: cannot unmarshal %s into Go struct field "
                                                  "MessagesRequest.tools.%s of type string"
                                                  % (json_kind(tool[key]), key))


def anthropic_message_to_native(message: dict) -> List[dict]:
    """convertMessage: one native message of the blocks (text joined with no separator, images,
    tool calls, the last thinking), and tool results as separate ``tool`` messages (first for a
    user message, after it otherwise)."""
    role = (message.get("role") or "").lower()
    text: List[str] = []
    images: List[str] = []
    calls: List[dict] = []
    results: List[dict] = []
    thinking = ""
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            if isinstance(block.get("text"), str):
                text.append(block["text"])
        elif kind == "image":
            if block.get("source") is None:
                raise _anthropic_middleware_error("invalid image source")
            images.append(_anthropic_image(block["source"]))
        elif kind in ("tool_use", "server_tool_use"):
            if kind == "tool_use" and not block.get("id"):
                raise _anthropic_middleware_error("tool_use block missing required 'id' field")
            if kind == "tool_use" and not block.get("name"):
                raise _anthropic_middleware_error("tool_use block missing required 'name' field")
            call: dict = {}
            if block.get("id"):
                call["id"] = block["id"]
            call["function"] = {"index": 0, "name": block.get("name") or "",
                                "arguments": _go_arguments(block.get("input"))}
            calls.append(call)
        elif kind == "tool_result":
            content, result_images = _anthropic_tool_result(block.get("content"))
            results.append(_native_message("tool", content, images=result_images,
                                           tool_call_id=block.get("tool_use_id") or ""))
        elif kind == "thinking":
            if isinstance(block.get("thinking"), str):
                thinking = block["thinking"]
        elif kind == "web_search_tool_result":
            results.append(_native_message("tool", _web_search_result_text(block.get("content")),
                                           tool_call_id=block.get("tool_use_id") or ""))
        # anything else (redacted_thinking, document, ...) is dropped
    out: List[dict] = []
    if role == "user" and results:
        out.extend(results)
    joined = "".join(text)
    if joined or images or calls or thinking:
        out.append(_native_message(role, joined, thinking=thinking, images=images,
                                   tool_calls=calls))
    if role != "user" or not results:
        out.extend(results)
    return out


def _tool_property(prop: Any) -> dict:
    """api.ToolProperty as it re-marshals: anyOf, type (one type as a string), items,
    description, enum, properties, required; anything else dropped."""
    prop = prop if isinstance(prop, dict) else {}
    out: dict = {}
    if prop.get("anyOf"):
        out["anyOf"] = [_tool_property(p) for p in prop["anyOf"]]
    kind = prop.get("type")
    kinds = [kind] if isinstance(kind, str) else list(kind) if isinstance(kind, list) else []
    if kinds:
        out["type"] = kinds[0] if len(kinds) == 1 else kinds
    if prop.get("items") is not None:
        out["items"] = _go_value(prop["items"])
    if prop.get("description"):
        out["description"] = prop["description"]
    if prop.get("enum"):
        out["enum"] = _go_value(prop["enum"])
    if isinstance(prop.get("properties"), dict):
        out["properties"] = {k: _tool_property(v) for k, v in prop["properties"].items()}
    if prop.get("required"):
        out["required"] = prop["required"]
    return out


def _tool_parameters(schema: Any) -> dict:
    """api.ToolFunctionParameters as it re-marshals: type, $defs, items, required, properties
    (null when absent)."""
    schema = schema if isinstance(schema, dict) else {}
    out: dict = {"type": schema.get("type") if isinstance(schema.get("type"), str) else ""}
    if schema.get("$defs") is not None:
        out["$defs"] = _go_value(schema["$defs"])
    if schema.get("items") is not None:
        out["items"] = _go_value(schema["items"])
    if schema.get("required"):
        out["required"] = schema["required"]
    props = schema.get("properties")
    out["properties"] = ({k: _tool_property(v) for k, v in props.items()}
                         if isinstance(props, dict) else None)
    return out


def bound_tools(tools: Any) -> List[dict]:
    """api.Tools as the chat handler holds them after binding (what its template renders):
    type, items, and the function's name, description and parameters; other keys gone."""
    out = []
    for tool in tools if isinstance(tools, list) else []:
        tool = tool if isinstance(tool, dict) else {}
        function = tool.get("function") if isinstance(tool.get("function"), dict) else {}
        item: dict = {"type": tool.get("type") if isinstance(tool.get("type"), str) else ""}
        if tool.get("items") is not None:
            item["items"] = _go_value(tool["items"])
        fn: dict = {"name": function.get("name") if isinstance(function.get("name"), str) else ""}
        if function.get("description"):
            fn["description"] = function["description"]
        fn["parameters"] = _tool_parameters(function.get("parameters"))
        item["function"] = fn
        out.append(item)
    return out


_WEB_SEARCH_TOOL = {"type": "function", "function": {
    "name": "web_search",
    "description": "Search the web for current information. Use this to find up-to-date "
                   "information about any topic.",
    "parameters": {"type": "object", "required": ["query"], "properties": {
        "query": {"type": "string", "description": "The search query to look up on the web"}}}}}


def anthropic_tools(tools: List[Any]) -> List[dict]:
    """convertTool for each tool: a web_search* type is the built-in web_search function (a user
    tool of that name is then dropped); every other tool a plain function."""
    tools = [t for t in tools if isinstance(t, dict)]
    builtin = any((t.get("type") or "").startswith("web_search") for t in tools)
    out = []
    for tool in tools:
        kind, name = tool.get("type") or "", tool.get("name") or ""
        if kind.startswith("web_search"):
            out.append(json.loads(json.dumps(_WEB_SEARCH_TOOL)))
            continue
        if builtin and name == "web_search":
            continue
        schema = tool.get("input_schema")
        if schema is not None and not isinstance(schema, dict):
            raise _anthropic_middleware_error(
                "invalid input_schema for tool %s: json: cannot unmarshal %s into Go value of "
                "type api.ToolFunctionParameters" % (json.dumps(name, ensure_ascii=False),
                                                     json_kind(schema)))
        function: dict = {"name": name}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = _tool_parameters(schema)
        out.append({"type": "function", "function": function})
    return out


def anthropic_think(body: dict) -> Any:
    """thinking.type enabled/disabled, else output_config.effort (xhigh -> high); else None."""
    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
    if thinking.get("type") == "enabled":
        return True
    if thinking.get("type") == "disabled":
        return False
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    effort = effort.strip().lower() if isinstance(effort, str) else ""
    effort = "high" if effort == "xhigh" else effort
    return effort if effort in ("high", "medium", "low", "max") else None


def anthropic_to_native(body: dict) -> dict:
    """anthropic.FromMessagesRequest (agents-api.md §1.3): the /api/chat request a /v1/messages
    request becomes, in api.ChatRequest's field order; options only as given (num_predict
    always), no num_ctx, no keep_alive."""
    messages: List[dict] = []
    system = body.get("system")
    if isinstance(system, str):
        if system:
            messages.append(_native_message("system", system))
    elif isinstance(system, list):
        text = "".join(b["text"] for b in system if isinstance(b, dict)
                       and b.get("type") == "text" and isinstance(b.get("text"), str))
        if text:
            messages.append(_native_message("system", text))
    for message in body.get("messages") or []:
        messages.extend(anthropic_message_to_native(message))
    options: dict = {"num_predict": int(body["max_tokens"])}
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            options[key] = body[key]
    if body.get("stop_sequences"):
        options["stop"] = body["stop_sequences"]
    native: dict = {"model": body.get("model") or "", "messages": messages,
                    "stream": bool(body.get("stream"))}
    tools = anthropic_tools(body.get("tools") or [])
    if tools:
        native["tools"] = tools
    native["options"] = dict(sorted(options.items()))  # a Go map: sorted keys
    think = anthropic_think(body)
    if think is not None:
        native["think"] = think
    return native


def _go_len(text: Any) -> int:
    return len(text.encode("utf-8")) if isinstance(text, str) else 0


def _estimate_block(block: Any) -> int:
    """countContentBlock: text, thinking, and the JSON of a tool_use / tool_result block
    (anthropic.ContentBlock re-marshalled: its field order, empty fields omitted)."""
    if not isinstance(block, dict):
        return 0
    total = _go_len(block.get("text")) + _go_len(block.get("thinking"))
    if block.get("type") in ("tool_use", "tool_result"):
        out: dict = {"type": block["type"]}
        if isinstance(block.get("text"), str):
            out["text"] = block["text"]
        for key in ("citations", "source", "id", "name"):
            if block.get(key):
                out[key] = _go_value(block[key])
        if isinstance(block.get("input"), dict):
            out["input"] = _go_arguments(block["input"])
        for key in ("tool_use_id", "content", "is_error"):
            if block.get(key):
                out[key] = _go_value(block[key])
        if isinstance(block.get("thinking"), str):
            out["thinking"] = block["thinking"]
        if block.get("signature"):
            out["signature"] = block["signature"]
        total += len(go_json(out))
    return total


def anthropic_estimate_tokens(body: dict) -> int:
    """EstimateInputTokens: len/4 of system, roles, block text/thinking, tool_use/tool_result
    JSON and each tool's name + description + input_schema (at least 1); Go's len counts UTF-8
    bytes. The input_schema counts as compact JSON (Go counts the raw bytes sent)."""
    total = 0
    system = body.get("system")
    if isinstance(system, str):
        total += _go_len(system)
    elif isinstance(system, list):
        total += sum(_estimate_block(b) for b in system)
    elif system is not None:
        total += len(go_json(_go_value(system)))
    messages = body.get("messages") or []
    for message in messages:
        total += _go_len(message.get("role"))
        total += sum(_estimate_block(b) for b in message.get("content") or [])
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            total += _go_len(tool.get("name")) + _go_len(tool.get("description"))
            if tool.get("input_schema") is not None:
                total += len(go_json(tool["input_schema"]))
    tokens = total // 4
    if tokens == 0 and (messages or system is not None):
        tokens = 1
    return tokens


def anthropic_stop_reason(reason: str, tool_calls: bool) -> str:
    """mapStopReason ("" = the key is omitted)."""
    if tool_calls:
        return "tool_use"
    if reason == "stop":
        return "end_turn"
    if reason == "length":
        return "max_tokens"
    return "stop_sequence" if reason else ""


def anthropic_message(r: dict, mid: str) -> dict:
    """ToMessagesResponse of a whole native chat answer: thinking, text, tool_use blocks
    (content null when there are none), stop_reason omitted when empty, no stop_sequence."""
    msg = r.get("message") or {}
    content: List[dict] = []
    if msg.get("thinking"):
        content.append({"type": "thinking", "thinking": msg["thinking"]})
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    calls = msg.get("tool_calls") or []
    for call in calls:
        content.append(_tool_use_block(call, None))
    out: dict = {"id": mid, "type": "message", "role": "assistant", "model": r.get("model", ""),
                 "content": content or None}
    reason = anthropic_stop_reason(r.get("done_reason") or "", bool(calls))
    if reason:
        out["stop_reason"] = reason
    out["usage"] = {"input_tokens": r.get("prompt_eval_count") or 0,
                    "output_tokens": r.get("eval_count") or 0}
    return out


def _tool_use_block(call: dict, input_: Optional[dict]) -> dict:
    function = call.get("function") or {}
    block: dict = {"type": "tool_use"}
    if call.get("id"):
        block["id"] = call["id"]
    if function.get("name"):
        block["name"] = function["name"]
    arguments = function.get("arguments") if input_ is None else input_
    if arguments is not None:
        block["input"] = _go_arguments(arguments)
    return block


def anthropic_sse(event: str, data: dict) -> bytes:
    """writeSSE: ``event: <type>``, ``data: <compact JSON>``, a blank line."""
    return b"event: " + event.encode() + b"\ndata: " + go_json(data) + b"\n\n"


class AnthropicStream:
    """StreamConverter.Process: native chat objects in, named SSE events out."""

    def __init__(self, mid: str, model: str, estimate: int) -> None:
        self.mid, self.model, self.estimate = mid, model, estimate
        self.first = True
        self.index = 0
        self.thinking_started = self.thinking_done = self.text_started = False
        self.calls_sent: set = set()

    def _stop(self) -> bytes:
        return anthropic_sse("content_block_stop", {"type": "content_block_stop",
                                                    "index": self.index})

    def _start(self, block: dict) -> bytes:
        return anthropic_sse("content_block_start", {"type": "content_block_start",
                                                     "index": self.index, "content_block": block})

    def _delta(self, delta: dict) -> bytes:
        return anthropic_sse("content_block_delta", {"type": "content_block_delta",
                                                     "index": self.index, "delta": delta})

    def process(self, r: dict) -> List[bytes]:
        if "error" in r:  # streamResponse's {"error": ...} decodes as an empty ChatResponse
            r = {}
        events: List[bytes] = []
        msg = r.get("message") or {}
        if self.first:
            self.first = False
            tokens = r.get("prompt_eval_count") or 0
            if tokens == 0 and self.estimate > 0:
                tokens = self.estimate
            events.append(anthropic_sse("message_start", {"type": "message_start", "message": {
                "id": self.mid, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "usage": {"input_tokens": tokens, "output_tokens": 0}}}))
        thinking, content = msg.get("thinking") or "", msg.get("content") or ""
        if thinking and not self.thinking_done:
            if self.text_started:
                events.append(self._stop())
                self.index += 1
                self.text_started = False
            if not self.thinking_started:
                self.thinking_started = True
                events.append(self._start({"type": "thinking", "thinking": ""}))
            events.append(self._delta({"type": "thinking_delta", "thinking": thinking}))
        if content:
            if self.thinking_started and not self.thinking_done:
                self.thinking_done = True
                events.append(self._stop())
                self.index += 1
            if not self.text_started:
                self.text_started = True
                events.append(self._start({"type": "text", "text": ""}))
            events.append(self._delta({"type": "text_delta", "text": content}))
        for call in msg.get("tool_calls") or []:
            cid = call.get("id") or ""
            if cid in self.calls_sent:
                continue
            if self.thinking_started and not self.thinking_done:
                self.thinking_done = True
                events.append(self._stop())
                self.index += 1
            if self.text_started:
                events.append(self._stop())
                self.index += 1
                self.text_started = False
            arguments = (call.get("function") or {}).get("arguments")
            events.append(self._start(_tool_use_block(call, {})))
            events.append(self._delta({"type": "input_json_delta",
                                       "partial_json": go_json(_go_arguments(arguments)).decode()}))
            events.append(self._stop())
            self.calls_sent.add(cid)
            self.index += 1
        if r.get("done"):
            if self.text_started or (self.thinking_started and not self.thinking_done):
                events.append(self._stop())
            reason = anthropic_stop_reason(r.get("done_reason") or "", bool(self.calls_sent))
            events.append(anthropic_sse("message_delta", {
                "type": "message_delta", "delta": {"stop_reason": reason} if reason else {},
                "usage": {"input_tokens": r.get("prompt_eval_count") or 0,
                          "output_tokens": r.get("eval_count") or 0}}))
            events.append(anthropic_sse("message_stop", {"type": "message_stop"}))
        return events


def anthropic_events(responses: Iterable[dict], converter: AnthropicStream) -> Iterator[bytes]:
    """Each event its own line (for faults and delays); a native error object ends it all."""
    for r in responses:
        if "error" in r:
            return
        yield from converter.process(r)


# -- /v1/responses: ResponsesMiddleware, FromResponsesRequest, ToResponse and the stream converter
# (agents-api.md §2; openai/responses.go and middleware/openai.go at v0.33.0-rc2) --------------
#
# Binding follows Go's decoder: a field of the wrong type is remembered (the first one, in
# document order) and decoding goes on, but ``input`` has its own UnmarshalJSON, and an error
# there ends decoding at once and wins. Structs are described as (Go name, {field: kind}); a
# kind is a Go scalar ("string", "bool", "int", "float64", "map", "raw"), a nested struct, or
# a one-element list for a slice.

_RS_SUMMARY = ("ResponsesReasoningSummary", {"type": "string", "text": "string"})
_RS_TOOL: Tuple[str, dict] = ("ResponsesTool", {"type": "string", "name": "string",
                                                "description": "string", "strict": "bool",
                                                "parameters": "map"})
_RS_TOOL[1]["tools"] = [_RS_TOOL]
_RS_REQUEST = ("ResponsesRequest", {
    "model": "string", "background": "bool", "conversation": "raw", "include": ["string"],
    "instructions": "string", "max_output_tokens": "int",
    "reasoning": ("ResponsesReasoning", {"effort": "string", "generate_summary": "string",
                                         "summary": "string"}),
    "temperature": "float64",
    "text": ("ResponsesText", {"format": ("ResponsesTextFormat", {
        "type": "string", "name": "string", "schema": "raw", "strict": "bool"})}),
    "top_p": "float64", "truncation": "string", "tools": [_RS_TOOL], "stream": "bool"})
_RS_CONTENT = {
    "input_text": ("ResponsesTextContent", {"type": "string", "text": "string"}),
    "output_text": ("ResponsesOutputTextContent", {"type": "string", "text": "string"}),
    "input_image": ("ResponsesImageContent", {"type": "string", "detail": "string",
                                              "file_id": "string", "image_url": "string"}),
    "input_file": ("ResponsesFileContent", {"type": "string", "file_data": "string",
                                            "file_id": "string", "file_url": "string",
                                            "filename": "string"}),
}
_RS_ITEMS = {
    "function_call": ("ResponsesFunctionCall", {"id": "string", "type": "string",
                                                "call_id": "string", "name": "string",
                                                "arguments": "string"}),
    "function_call_output": ("", {"type": "string", "call_id": "string", "output": "raw"}),
    "reasoning": ("ResponsesReasoningInput", {"id": "string", "type": "string",
                                              "summary": [_RS_SUMMARY],
                                              "encrypted_content": "string"}),
    "web_search_call": ("ResponsesWebSearchCall", {
        "id": "string", "type": "string", "status": "string",
        "action": ("ResponsesWebSearchAction", {"type": "string", "query": "string"})}),
}
_PEEK_TYPE = 'struct { Type string "json:\\"type\\"" }'
_PEEK_ITEM = 'struct { Type string "json:\\"type\\""; Role string "json:\\"role\\"" }'
_MALFORMED_OBJECT = "Value looks like object, but can't find closing '}' symbol"  # jsonparser
RS_WEB_SEARCH_TOOL = {"type": "function", "function": {
    "name": "web_search", "description": "Search the web for current information.",
    "parameters": {"type": "object", "required": ["query"], "properties": {
        "query": {"type": "string", "description": "The search query."}}}}}


class RawJSON(dict):
    """A json.RawMessage object: re-encoded as it came, its keys never sorted."""


def _go_type_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return "openai." + kind[0]
    if isinstance(kind, list):
        return "[]" + _go_type_name(kind[0])
    return {"map": "map[string]interface {}"}.get(kind, kind)


def _go_field_check(value: Any, kind: Any, struct: str, field_path: str, errors: List[str]) -> None:
    """One field's value against its kind; the first mismatch is appended to ``errors``."""
    if value is None or kind == "raw" or errors:
        return
    if isinstance(kind, tuple):
        if not isinstance(value, dict):
            errors.append(_go_unmarshal_error(value, struct, field_path, _go_type_name(kind)))
            return
        go_struct_check(value, kind, field_path + ".", errors)
        return
    if isinstance(kind, list):
        if not isinstance(value, list):
            errors.append(_go_unmarshal_error(value, struct, field_path, _go_type_name(kind)))
            return
        for element in value:
            _go_field_check(element, kind[0], struct, field_path, errors)
        return
    got = json_kind(value)
    ok = {"string": got == "string", "bool": got == "bool", "map": got == "object",
          "float64": got == "number", "int": got == "number" and _is_go_int(value)}[kind]
    if not ok:
        errors.append(_go_unmarshal_error(value, struct, field_path, kind if kind != "map"
                                          else _go_type_name(kind)))


def _go_unmarshal_error(value: Any, struct: str, field_path: str, gotype: str) -> str:
    shown = json_kind(value)
    if gotype == "int" and shown == "number":
        shown = "number %s" % json.dumps(value)
    return "json: cannot unmarshal %s into Go struct field %s.%s of type %s" % (
        shown, struct, field_path, gotype)


def go_struct_check(value: dict, spec: Tuple[str, dict], prefix: str = "",
                    errors: Optional[List[str]] = None) -> List[str]:
    """Go's decoder over one struct: the type errors of its known fields, in document order."""
    errors = [] if errors is None else errors
    name, fields = spec
    for key, item in value.items():
        if key in fields:
            _go_field_check(item, fields[key], name, prefix + key, errors)
    return errors


def _rs_unmarshal(raw: Any, spec: Tuple[str, dict], peek: str) -> dict:
    """json.Unmarshal of one item into a struct: a non-object is Go's error, null the zero value."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError("json: cannot unmarshal %s into Go value of type %s" % (json_kind(raw), peek))
    errors = go_struct_check(raw, spec)
    if errors:
        raise ValueError(errors[0])
    return raw


def _rs_content(raw: Any) -> Tuple[str, dict]:
    """unmarshalResponsesContent: (type, fields)."""
    peek = _rs_unmarshal(raw, ("", {"type": "string"}), _PEEK_TYPE)
    kind = peek.get("type") or ""
    spec = _RS_CONTENT.get(kind)
    if spec is None:
        raise ValueError("unknown content type: %s" % kind)
    return kind, _rs_unmarshal(raw, spec, "openai." + spec[0])


def _rs_content_list(raw: Any, what: str) -> List[Tuple[str, dict]]:
    """A ``content`` or ``output``: a string is one input_text; else an array of content items."""
    if raw is None or isinstance(raw, str):
        return [("input_text", {"type": "input_text", "text": raw or ""})]
    if not isinstance(raw, list):
        raise ValueError("%s must be a string or array: json: cannot unmarshal %s into Go value of "
                         "type []json.RawMessage" % (what, json_kind(raw)))
    out = []
    for i, element in enumerate(raw):
        try:
            out.append(_rs_content(element))
        except ValueError as exc:
            raise ValueError("%s[%d]: %s" % (what, i, exc)) from None
    return out


def _rs_item(raw: Any) -> Tuple[str, dict]:
    """unmarshalResponsesInputItem: (kind, fields), with ``content`` / ``output_items`` parsed."""
    peek = _rs_unmarshal(raw, ("", {"type": "string", "role": "string"}), _PEEK_ITEM)
    kind = peek.get("type") or ""
    if not kind and peek.get("role"):
        kind = "message"
    if kind == "message":
        item = _rs_unmarshal(raw, ("", {"type": "string", "role": "string", "content": "raw"}),
                             _PEEK_ITEM)
        parts = _rs_content_list(item["content"], "content") if "content" in item else []
        return kind, {"role": item.get("role") or "", "content": parts}
    spec = _RS_ITEMS.get(kind)
    if spec is None:
        if not kind:
            raise ValueError("input item missing required 'type' field")
        raise ValueError("unknown input item type: %s" % json.dumps(kind, ensure_ascii=False))
    item = dict(_rs_unmarshal(raw, spec, "openai." + spec[0]))
    if kind == "function_call_output":
        output = item.get("output")
        item["output_items"] = None
        if isinstance(output, list) or (output is not None and not isinstance(output, str)):
            item["output_items"] = parts = _rs_content_list(output, "output")
            item["output"] = "".join(p.get("text") or "" for k, p in parts
                                     if k in ("input_text", "output_text"))
    return kind, item


def bind_responses_request(body: bytes) -> Tuple[dict, str, List[Tuple[str, dict]]]:
    """ShouldBindJSON into openai.ResponsesRequest: (fields, input text, input items)."""
    value = bind_json(body, _RS_REQUEST[0], {}, empty_message="EOF", package="openai")
    text, items = "", []
    raw = value.get("input")
    if isinstance(raw, str):
        text = raw
    elif isinstance(raw, list):
        for i, element in enumerate(raw):
            try:
                items.append(_rs_item(element))
            except ValueError as exc:
                raise _middleware_error("input[%d]: %s" % (i, exc)) from None
    elif raw is not None:
        raise _middleware_error("input must be a string or array: json: cannot unmarshal %s into "
                                "Go value of type []json.RawMessage" % json_kind(raw))
    errors = go_struct_check(value, _RS_REQUEST)
    if errors:
        raise _middleware_error(errors[0])
    return value, text, items


def _rs_text_and_images(parts: List[Tuple[str, dict]]) -> Tuple[str, List[str]]:
    """convertResponsesContent: texts concatenated, data-URL images decoded, files refused."""
    text, images = "", []
    for kind, part in parts:
        if kind in ("input_text", "output_text"):
            text += part.get("text") or ""
        elif kind == "input_image":
            if part.get("image_url"):
                images.append(decode_image_url(part["image_url"]))
        elif kind == "input_file":
            raise _middleware_error("file inputs are not currently supported")
    return text, images


def _rs_arguments(text: str) -> dict:
    """A replayed function call's arguments (an ordered object) or the middleware's 400."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        message = ("unexpected end of JSON input" if exc.pos >= len(text.rstrip(" \t\r\n"))
                   or exc.msg.startswith("Unterminated string") else go_decode_message(exc))
        raise _middleware_error("failed to parse function call arguments: " + message) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _middleware_error("failed to parse function call arguments: " + _MALFORMED_OBJECT)
    return _go_arguments(value)


def _rs_tool_parameters(params: Any) -> dict:
    """convertTool's round trip of ``parameters`` through api.ToolFunctionParameters."""
    if params is None:
        return _tool_parameters(None)
    for key, kind, gotype in (("type", "string", "string"), ("required", "array", "[]string"),
                              ("properties", "object", "api.ToolPropertiesMap")):
        item = params.get(key)
        if item is not None and json_kind(item) != kind:
            raise _middleware_error("failed to unmarshal tool parameters: json: cannot unmarshal %s "
                                    "into Go struct field ToolFunctionParameters.%s of type %s"
                                    % (json_kind(item), key, gotype))
    return _tool_parameters(params)


def _rs_tools(tool: dict) -> List[dict]:
    """convertTools: a namespace's members as ``<namespace>.<name>``, any other tool as itself."""
    tool = tool or {}
    if tool.get("type") != "namespace":
        function: dict = {"name": tool.get("name") or ""}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = _rs_tool_parameters(tool.get("parameters"))
        return [{"type": tool.get("type") or "", "function": function}]
    out = []
    name = tool.get("name") or ""
    for member in tool.get("tools") or []:
        for expanded in _rs_tools(member):
            if name and not expanded["function"]["name"].startswith(name + "."):
                expanded["function"]["name"] = name + "." + expanded["function"]["name"]
            out.append(expanded)
    return out


def responses_request_to_native(body: dict, text: str, items: List[Tuple[str, dict]]) -> dict:
    """FromResponsesRequest (agents-api.md §2.1-§2.2), then the middleware's ``stream``."""
    messages: List[dict] = []
    if body.get("instructions"):
        messages.append(_native_message("system", body["instructions"]))
    if text:
        messages.append(_native_message("user", text))
    pending = ""
    for i, (kind, item) in enumerate(items):
        if kind == "reasoning":
            pending = item.get("encrypted_content") or ""
        elif kind == "message":
            content, images = _rs_text_and_images(item["content"])
            msg = _native_message(item["role"], content, images=images)
            if item["role"] == "assistant" and pending:
                msg["thinking"], pending = pending, ""
            following = items[i + 1] if i + 1 < len(items) else None
            output_id = (following[1].get("call_id") or "") if following and following[0] == "function_call_output" else ""
            last = messages[-1] if messages else None
            if (item["role"] == "assistant" and output_id and last is not None
                    and last["role"] == "assistant" and last.get("tool_calls")
                    and any(c.get("id") == output_id for c in last["tool_calls"])):
                if last["content"] and msg["content"]:
                    last["content"] += "\n"
                last["content"] += msg["content"]
                if msg.get("images"):
                    last["images"] = (last.get("images") or []) + msg["images"]
                if msg.get("thinking"):
                    last["thinking"] = msg["thinking"]
                continue
            messages.append(msg)
        elif kind == "function_call":
            call: dict = {"id": item["call_id"]} if item.get("call_id") else {}
            call["function"] = {"index": 0, "name": item.get("name") or "",
                                "arguments": _rs_arguments(item.get("arguments") or "")}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
                if pending:
                    messages[-1]["thinking"], pending = pending, ""
            else:
                messages.append(_native_message("assistant", tool_calls=[call], thinking=pending))
                pending = ""
        elif kind == "function_call_output":
            content, images = item.get("output") or "", []
            if item.get("output_items"):
                content, images = _rs_text_and_images(item["output_items"])
            messages.append(_native_message("tool", content, images=images,
                                            tool_call_id=item.get("call_id") or ""))
        # web_search_call: history only
    if pending:
        messages.append(_native_message("assistant", thinking=pending))
    options: dict = {"temperature": body["temperature"] if body.get("temperature") is not None else 1.0}
    if body.get("top_p") is not None:
        options["top_p"] = body["top_p"]
    if body.get("max_output_tokens") is not None:
        options["num_predict"] = body["max_output_tokens"]
    effort = (body.get("reasoning") or {}).get("effort") or ""
    if effort and effort not in _REASONING_EFFORTS:
        raise _middleware_error("invalid reasoning value: %s (must be \"minimal\", \"low\", "
                                "\"medium\", \"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")"
                                % json.dumps(effort, ensure_ascii=False))
    tools: List[dict] = []
    declared = [t or {} for t in body.get("tools") or []]
    web_search = any(t.get("type") == "web_search" for t in declared)
    for tool in declared:
        if tool.get("type") == "web_search":
            tools.append(json.loads(json.dumps(RS_WEB_SEARCH_TOOL)))
            continue
        tools.extend(t for t in _rs_tools(tool)
                     if not (web_search and t["function"]["name"] == "web_search"))
    native: dict = {"model": body.get("model") or "", "messages": messages,
                    "stream": body.get("stream") is True, "options": options}
    if tools:
        native["tools"] = tools
    fmt = ((body.get("text") or {}).get("format") or {})
    if fmt.get("type") == "json_schema" and fmt.get("schema") is not None:
        native["format"] = fmt["schema"]
    if effort:
        native["think"] = _REASONING_EFFORTS[effort]
    return native


def _go_float(value: Any, default: float) -> Any:
    """A float64 as Go writes it (1.0 as 1)."""
    return _go_value(float(default if value is None else value))


def go_sorted(obj: Any) -> Any:
    """A value as Go marshals a map[string]any: keys sorted at every level (RawJSON kept)."""
    if isinstance(obj, RawJSON):
        return obj
    if isinstance(obj, dict):
        return {k: go_sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [go_sorted(v) for v in obj]
    return obj


def _rs_tool_echo(tool: Any) -> dict:
    """One ResponsesTool as the struct re-marshals (non-streaming ``tools``)."""
    tool = tool or {}
    out = {"type": tool.get("type") or "", "name": tool.get("name") or "",
           "description": tool.get("description"), "strict": tool.get("strict"),
           "parameters": _go_value(tool["parameters"]) if tool.get("parameters") is not None else None}
    if tool.get("tools"):
        out["tools"] = [_rs_tool_echo(t) for t in tool["tools"]]
    return out


def _rs_text_format(body: dict) -> dict:
    fmt = (body.get("text") or {}).get("format")
    if fmt is None:
        return {"type": "text"}
    out: dict = {"type": fmt.get("type") or ""}
    if fmt.get("name"):
        out["name"] = fmt["name"]
    if fmt.get("schema") is not None:
        out["schema"] = RawJSON(fmt["schema"]) if isinstance(fmt["schema"], dict) else fmt["schema"]
    if fmt.get("strict") is not None:
        out["strict"] = fmt["strict"]
    return out


def _rs_usage(r: dict) -> dict:
    prompt, completion = r.get("prompt_eval_count") or 0, r.get("eval_count") or 0
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _rs_output_text(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def responses_object(r: dict, body: dict, response_id: str, item_id: str) -> dict:
    """ToResponse of a whole native chat answer, completed_at stamped by the writer."""
    msg = r.get("message") or {}
    output: List[dict] = []
    if msg.get("thinking"):
        output.append({"id": "rs_" + response_id, "type": "reasoning",
                       "summary": [{"type": "summary_text", "text": msg["thinking"]}],
                       "encrypted_content": msg["thinking"]})
    calls = v1_tool_calls(msg.get("tool_calls") or [])
    for i, call in enumerate(calls):
        item: dict = {"id": "fc_%s_%d" % (response_id, i), "type": "function_call",
                      "status": "completed"}
        for key, value in (("call_id", call["id"]), ("name", call["function"]["name"]),
                           ("arguments", call["function"]["arguments"])):
            if value:
                item[key] = value
        output.append(item)
    if not calls:
        output.append({"id": item_id, "type": "message", "status": "completed", "role": "assistant",
                       "content": [_rs_output_text(msg.get("content") or "")]})
    reasoning = body.get("reasoning") or {}
    echo_reasoning = None
    if reasoning.get("effort") or reasoning.get("summary"):
        echo_reasoning = {}
        for key in ("effort", "summary"):
            if reasoning.get(key):
                echo_reasoning[key] = reasoning[key]
    return {"id": response_id, "object": "response", "created_at": unix_seconds(r.get("created_at")),
            "completed_at": int(time.time()), "status": "completed", "incomplete_details": None,
            "model": body.get("model") or "", "previous_response_id": None,
            "instructions": body.get("instructions") or None, "output": output, "error": None,
            "tools": [_rs_tool_echo(t) for t in body.get("tools") or []], "tool_choice": "auto",
            "truncation": body["truncation"] if body.get("truncation") is not None else "disabled",
            "parallel_tool_calls": True, "text": {"format": _rs_text_format(body)},
            "top_p": _go_float(body.get("top_p"), 1.0), "presence_penalty": 0,
            "frequency_penalty": 0, "top_logprobs": 0,
            "temperature": _go_float(body.get("temperature"), 1.0), "reasoning": echo_reasoning,
            "usage": _rs_usage(r), "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": None, "store": False, "background": body.get("background") is True,
            "service_tier": "default", "metadata": {}, "safety_identifier": None,
            "prompt_cache_key": None}


class ResponsesStream:
    """ResponsesStreamConverter.Process: native chat objects in, named SSE events out (each
    payload a Go map: keys sorted, a ``type`` and a ``sequence_number``)."""

    def __init__(self, response_id: str, item_id: str, body: dict, rng: random.Random) -> None:
        self.response_id, self.item_id, self.body, self.rng = response_id, item_id, body, rng
        self.first = True
        self.output_index = 0
        self.content_started = self.tool_calls_sent = self.reasoning_started = False
        self.text = self.thinking = self.reasoning_id = ""
        self.sequence = 0
        self.completed: List[dict] = []

    def event(self, kind: str, data: dict) -> bytes:
        data["type"] = kind
        data["sequence_number"] = self.sequence
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + go_json(go_sorted(data)) + b"\n\n"

    def response(self, status: str, output: list, usage: Optional[dict]) -> dict:
        body = self.body
        tools = [{"type": (t or {}).get("type") or "", "name": (t or {}).get("name") or "",
                  "description": (t or {}).get("description"), "strict": (t or {}).get("strict"),
                  "parameters": _go_value((t or {}).get("parameters"))} for t in body.get("tools") or []]
        reasoning = body.get("reasoning") or {}
        echo_reasoning = None
        if reasoning.get("effort") or reasoning.get("summary"):
            echo_reasoning = {"effort": reasoning.get("effort") or None,
                              "summary": reasoning.get("summary") or None}
        return {"id": self.response_id, "object": "response", "created_at": int(time.time()),
                "completed_at": None, "status": status, "incomplete_details": None,
                "model": body.get("model") or "", "previous_response_id": None,
                "instructions": body.get("instructions") or None, "output": output, "error": None,
                "tools": tools, "tool_choice": "auto",
                "truncation": body["truncation"] if body.get("truncation") is not None else "disabled",
                "parallel_tool_calls": True, "text": {"format": _rs_text_format(body)},
                "top_p": _go_float(body.get("top_p"), 1.0), "presence_penalty": 0,
                "frequency_penalty": 0, "top_logprobs": 0,
                "temperature": _go_float(body.get("temperature"), 1.0), "reasoning": echo_reasoning,
                "usage": usage, "max_output_tokens": body.get("max_output_tokens"),
                "max_tool_calls": None, "store": False, "background": body.get("background") is True,
                "service_tier": "default", "metadata": {}, "safety_identifier": None,
                "prompt_cache_key": None}

    def finish_reasoning(self) -> List[bytes]:
        if not self.reasoning_started:
            return []
        item = {"id": self.reasoning_id, "type": "reasoning",
                "summary": [{"type": "summary_text", "text": self.thinking}],
                "encrypted_content": self.thinking}
        self.completed.append(item)
        index, text, item_id = self.output_index, self.thinking, self.reasoning_id
        self.thinking = self.reasoning_id = ""
        self.reasoning_started = False
        self.output_index += 1
        return [self.event("response.reasoning_summary_text.done", {
                    "item_id": item_id, "output_index": index, "summary_index": 0, "text": text}),
                self.event("response.output_item.done", {"output_index": index, "item": item})]

    def _message(self, status: str) -> dict:
        return {"id": self.item_id, "type": "message", "status": status, "role": "assistant",
                "content": [_rs_output_text(self.text)]}

    def process(self, r: dict) -> List[bytes]:
        if "error" in r:  # a native error line decodes as an empty ChatResponse
            r = {}
        msg = r.get("message") or {}
        calls = msg.get("tool_calls") or []
        events: List[bytes] = []
        if self.first:
            self.first = False
            events.append(self.event("response.created", {"response": self.response("in_progress", [], None)}))
            events.append(self.event("response.in_progress", {"response": self.response("in_progress", [], None)}))
        if msg.get("thinking"):
            if not self.reasoning_started:
                self.reasoning_started = True
                self.reasoning_id = "rs_%d" % self.rng.randrange(999999)
                events.append(self.event("response.output_item.added", {
                    "output_index": self.output_index,
                    "item": {"id": self.reasoning_id, "type": "reasoning", "summary": []}}))
            self.thinking += msg["thinking"]
            events.append(self.event("response.reasoning_summary_text.delta", {
                "item_id": self.reasoning_id, "output_index": self.output_index,
                "summary_index": 0, "delta": msg["thinking"]}))
        if calls:
            events.extend(self.finish_reasoning())
            converted = v1_tool_calls(calls)
            for i, call in enumerate(converted):
                index = self.output_index + i
                fc_id = "fc_%d_%d" % (self.rng.randrange(999999), i)
                name, arguments = call["function"]["name"], call["function"]["arguments"]
                item = {"id": fc_id, "type": "function_call", "status": "completed",
                        "call_id": call["id"], "name": name, "arguments": arguments}
                self.completed.append(item)
                events.append(self.event("response.output_item.added", {"output_index": index, "item": dict(
                    item, status="in_progress", arguments="")}))
                events.append(self.event("response.function_call_arguments.delta", {
                    "item_id": fc_id, "output_index": index, "delta": arguments}))
                events.append(self.event("response.function_call_arguments.done", {
                    "item_id": fc_id, "output_index": index, "arguments": arguments}))
                events.append(self.event("response.output_item.done", {"output_index": index, "item": item}))
            self.output_index += len(converted)
            self.tool_calls_sent = True
        content = msg.get("content") or ""
        if not calls and not self.tool_calls_sent and content:
            events.extend(self.finish_reasoning())
            if not self.content_started:
                self.content_started = True
                events.append(self.event("response.output_item.added", {
                    "output_index": self.output_index,
                    "item": {"id": self.item_id, "type": "message", "status": "in_progress",
                             "role": "assistant", "content": []}}))
                events.append(self.event("response.content_part.added", {
                    "item_id": self.item_id, "output_index": self.output_index, "content_index": 0,
                    "part": _rs_output_text("")}))
            self.text += content
            events.append(self.event("response.output_text.delta", {
                "item_id": self.item_id, "output_index": self.output_index, "content_index": 0,
                "delta": content, "logprobs": []}))
        if r.get("done"):
            events.extend(self.finish_reasoning())
            where = {"item_id": self.item_id, "output_index": self.output_index, "content_index": 0}
            if not self.tool_calls_sent and self.content_started:
                events.append(self.event("response.output_text.done", dict(where, text=self.text, logprobs=[])))
                events.append(self.event("response.content_part.done", dict(where, part=_rs_output_text(self.text))))
                events.append(self.event("response.output_item.done", {
                    "output_index": self.output_index, "item": self._message("completed")}))
            output = list(self.completed) + ([self._message("completed")] if self.content_started else [])
            final = self.response("completed", output, _rs_usage(r))
            final["completed_at"] = int(time.time())
            events.append(self.event("response.completed", {"response": final}))
        return events


def responses_events(responses: Iterable[dict], converter: ResponsesStream) -> Iterator[bytes]:
    """Each event its own line (for faults and delays); after a native error line, nothing."""
    for r in responses:
        yield from converter.process(r)
        if "error" in r:
            return


_NOT_IMPLEMENTED_ROUTES = {"/api/me": "POST", "/api/signout": "POST",
                           "/api/experimental/web_search": "POST",
                           "/api/experimental/web_fetch": "POST",
                           "/api/experimental/model-recommendations": "GET",
                           "/v1/audio/transcriptions": "POST"}


@dataclass
class RunnerOptions:
    """What a llama-server runner is started with, as ``needsReload`` compares it (§7.4)."""

    num_ctx: int  #: effective: at least 4 (2048 with vision), clamped to the training context
    automatic: bool  #: num_ctx is the default: neither the request nor the Modelfile set it
    num_batch: int = 512
    num_batch_auto: bool = True  #: neither the request nor the Modelfile set num_batch
    num_gpu: int = -1  #: negative = auto, and a negative request matches any loaded value
    main_gpu: int = 0
    num_thread: int = 0
    use_mmap: Optional[bool] = None  #: None: not set (a loaded runner has the chosen value)
    use_mmap_auto: bool = True  #: the scheduler chose use_mmap (always True when it does)
    draft_num_predict: int = 0  #: 0: no draft model (none of the fake's models has one)
    shift: bool = True  #: context shift: the request's ``shift``, else the model default

    def as_dict(self) -> dict:
        return {"num_batch": self.num_batch, "num_gpu": self.num_gpu, "main_gpu": self.main_gpu,
                "num_thread": self.num_thread, "use_mmap": self.use_mmap,
                "draft_num_predict": self.draft_num_predict, "shift": self.shift}


@dataclass
class Runner:
    """One loaded model: a scheduler slot, keyed by ``model.blob``."""

    model: FakeModel  #: the tag whose request loaded it (/api/ps shows this name)
    options: RunnerOptions
    keep_alive: float  #: seconds; math.inf = for ever
    expires_at: float  #: Unix seconds
    refs: int = 0  #: requests using it; its timer runs (and keep_alive 0 unloads) at 0
    last_prompt: str = ""  #: the prompt it processed last (its KV cache), for prompt-cache reuse

    def describe(self) -> dict:
        return {"model": self.model.name, "digest": self.model.digest,
                "num_ctx": self.options.num_ctx, "automatic": self.options.automatic,
                "options": self.options.as_dict(), "keep_alive": self.keep_alive,
                "expires_at": self.expires_at}


def render_chat_prompt(messages: List[Any], tools: Any) -> str:
    """A chat request as the text a template would render, for measuring prompt-cache reuse: the
    tools, then the system messages moved to the front (as Ollama does), then the others."""
    parts = ["tools: " + json.dumps(tools, separators=(",", ":")) + "\n"] if tools else []
    ordered = [m for m in messages if isinstance(m, dict) and m.get("role") == "system"]
    ordered += [m for m in messages if isinstance(m, dict) and m.get("role") != "system"]
    for m in ordered:
        parts.append("%s: %s\n" % (m.get("role"), m.get("content") or ""))
    return "".join(parts)


def common_prefix_length(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def smaller_auto_num_ctx(num_ctx: int) -> Optional[int]:
    """reduceAutoNumCtxForLoadOOM: the tier an automatic num_ctx retries with, or None."""
    if num_ctx > 32768:
        return 32768
    if num_ctx > 4096:
        return 4096
    return None


@dataclass
class Run:
    """What the chat/generate handler made of a request, before a writer encodes it: the
    immediate load/unload answer, or a generation (with generate's context array)."""

    immediate: Optional[dict] = None
    gen: Optional[Generation] = None
    context: Optional[List[int]] = None
    on_done: Optional[Callable[[], None]] = None


class FakeOllamaApp:
    """The application: models, loaded runners and blobs, and one handler per route.

    ``handle(rec, ctx)`` turns a complete request into a ``Reply`` and does no I/O. It runs in
    the fake's event-loop thread only; tests read ``models`` from theirs, and the scheduler's
    state (``runners``, ``loads``) through the locked accessors of FakeOllama.
    """

    def __init__(self, models: List[FakeModel], version: str = DEFAULT_VERSION,
                 check_host: bool = False) -> None:
        self.models = models
        self.version = version
        self.check_host = check_host
        self.lock = threading.RLock()  # guards runners and loads
        self.runners: dict = {}  # model.blob -> Runner
        self.loads: List[dict] = []  # every load attempt, in order
        self.oom_above: Optional[int] = None  # a load with a larger num_ctx fails
        self.spill_above: Optional[int] = None  # a runner with a larger num_ctx is partly on the CPU
        self.blobs: dict = {}  # "sha256:<hex>" -> size in bytes
        self.default_num_ctx = DEFAULT_NUM_CTX
        self.rng = random.Random(0)
        self.routes: dict = {
            "/": {"GET": self.root, "HEAD": self.root},
            "/api/version": {"GET": self.api_version, "HEAD": self.api_version},
            "/api/status": {"GET": self.api_status},
            "/api/tags": {"GET": self.api_tags, "HEAD": self.api_tags},
            "/api/ps": {"GET": self.api_ps},
            "/api/show": {"POST": self.api_show},
            "/api/chat": {"POST": self.api_chat},
            "/api/generate": {"POST": self.api_generate},
            "/api/embed": {"POST": self.api_embed},
            "/api/embeddings": {"POST": self.api_embeddings},
            "/api/pull": {"POST": self.api_pull},
            "/api/push": {"POST": self.api_push},
            "/api/create": {"POST": self.api_create},
            "/api/copy": {"POST": self.api_copy},
            "/api/delete": {"DELETE": self.api_delete},
            "/v1/chat/completions": {"POST": self.v1_chat},
            "/v1/completions": {"POST": self.v1_completions},
            "/v1/embeddings": {"POST": self.v1_embeddings},
            "/v1/messages": {"POST": self.v1_messages},
            "/v1/responses": {"POST": self.v1_responses},
            "/v1/models": {"GET": self.v1_models},
        }
        for path, method in _NOT_IMPLEMENTED_ROUTES.items():
            self.routes[path] = {method: self.not_implemented}
        # Routes with one path parameter (a single non-empty segment), as gin matches them.
        self.param_routes: List[Tuple[str, dict]] = [
            ("/api/blobs/", {"HEAD": self.api_blob_head, "POST": self.api_blob_post}),
            ("/v1/models/", {"GET": self.v1_model}),
            ("/api/user/keys/", {"DELETE": self.not_implemented}),
        ]

    # -- dispatch -------------------------------------------------------------------------

    def handle(self, rec: Received, ctx: RequestContext) -> Reply:
        path = rec.path
        if self.check_host and not host_allowed(rec.header("host")):
            return empty_reply(403)
        methods, param = self._match(path)
        if methods is None:
            alt = path[:-1] if path.endswith("/") and len(path) > 1 else path + "/"
            if self._match(alt)[0] is not None and alt != "/":
                status = 301 if rec.method == "GET" else 307
                return Reply(status, "text/html; charset=utf-8",
                             b'<a href="%s">Moved Permanently</a>.\n\n' % alt.encode(),
                             headers=[("location", alt)])
            return Reply(404, CT_GIN_PLAIN, b"404 page not found")
        handler = methods.get(rec.method)
        if handler is None:
            return Reply(405, CT_GIN_PLAIN, b"405 method not allowed")
        try:
            if param is not None:
                return handler(rec, ctx, param)
            return handler(rec, ctx)
        except HTTPError as exc:
            return error_reply(path, exc.status, exc.message, exc.middleware)

    def _match(self, path: str) -> Tuple[Optional[dict], Optional[str]]:
        methods = self.routes.get(path)
        if methods is not None:
            return methods, None
        for prefix, methods in self.param_routes:
            if path.startswith(prefix):
                rest = path[len(prefix):]
                if rest and "/" not in rest:
                    return methods, rest
        return None, None

    # -- model bookkeeping ----------------------------------------------------------------

    def find(self, name: str) -> Optional[FakeModel]:
        key = normalize_name(name)
        for model in self.models:
            if model.key == key:
                return model
        return None

    # -- scheduler (ollama-api.md §7) -----------------------------------------------------

    def runner_options(self, model: FakeModel, options: dict,
                       shift: Optional[bool] = None) -> RunnerOptions:
        """The runner options a request asks for: request, then Modelfile, then defaults."""

        def pick(name: str) -> Any:
            value = options.get(name)
            return model.modelfile_option(name) if value is None else value

        requested = _number(pick("num_ctx"))
        automatic = requested is None
        num_ctx = max(4, self.default_num_ctx if requested is None else requested)
        if "vision" in model.capabilities:
            num_ctx = max(num_ctx, 2048)
        wanted_ctx = num_ctx
        if model.context_length > 0:
            num_ctx = min(num_ctx, model.context_length)
        num_batch = _number(pick("num_batch"))
        batch_auto = num_batch is None
        if num_batch is None:  # embedding models: min(2048, num_ctx) before clamping
            num_batch = min(2048, wanted_ctx) if "embedding" in model.capabilities else 512
        use_mmap = pick("use_mmap")
        if shift is None:
            shift = model.family != "deepseek2"
        return RunnerOptions(
            num_ctx=num_ctx, automatic=automatic, num_batch=num_batch,
            num_batch_auto=batch_auto, num_gpu=_int_or(pick("num_gpu"), -1),
            main_gpu=_int_or(pick("main_gpu"), 0), num_thread=_int_or(pick("num_thread"), 0),
            use_mmap=None if use_mmap is None else bool(use_mmap),
            use_mmap_auto=use_mmap is None,
            draft_num_predict=_int_or(pick("draft_num_predict"), 0), shift=bool(shift))

    @staticmethod
    def reload_reasons(loaded: RunnerOptions, want: RunnerOptions) -> List[str]:
        """needsReload: why a runner loaded with ``loaded`` cannot serve ``want`` ([] = reuse)."""
        changed = []
        if loaded.shift != want.shift:
            changed.append("shift")
        num_ctx = loaded.num_ctx if loaded.automatic and want.automatic else want.num_ctx
        if num_ctx != loaded.num_ctx:
            changed.append("num_ctx")
        num_batch = (loaded.num_batch if loaded.num_batch_auto and want.num_batch_auto
                     else want.num_batch)
        if num_batch != loaded.num_batch:
            changed.append("num_batch")
        if want.num_gpu >= 0 and want.num_gpu != loaded.num_gpu:
            changed.append("num_gpu")
        if want.main_gpu != loaded.main_gpu:
            changed.append("main_gpu")
        if want.num_thread != loaded.num_thread:
            changed.append("num_thread")
        use_mmap = want.use_mmap
        if use_mmap is None and loaded.use_mmap_auto:
            use_mmap = loaded.use_mmap
        if use_mmap != loaded.use_mmap:
            changed.append("use_mmap")
        if want.draft_num_predict != loaded.draft_num_predict:
            changed.append("draft_num_predict")
        return ["%s changed" % name for name in changed]

    def schedule(self, model: FakeModel, options: dict, keep_alive: Optional[float], path: str,
                 shift: Optional[bool] = None) -> Tuple[Runner, bool]:
        """Give the request a runner: (runner, True if it was loaded for this request).

        Reuses the loaded runner of the model's blob unless ``reload_reasons`` says otherwise;
        then unloads it and loads again. A load above ``oom_above`` fails (HTTPError 500, the
        model is then not loaded); an automatic num_ctx is retried once with a smaller tier.
        The caller must ``release`` the runner once the request ended.
        """
        want = self.runner_options(model, options, shift)
        with self.lock:
            self._expire()
            current = self.runners.get(model.blob)
            reason = "first load"
            if current is not None:
                reasons = self.reload_reasons(current.options, want)
                if not reasons:
                    self._restart_timer(current, keep_alive)
                    current.refs += 1
                    return current, False
                del self.runners[model.blob]
                reason = ", ".join(reasons)
            keep = DEFAULT_KEEP_ALIVE if keep_alive is None else keep_alive
            error = self._try_load(model, want, reason, current is not None, path)
            if error is not None and want.automatic:
                smaller = smaller_auto_num_ctx(want.num_ctx)
                if smaller is not None:
                    want = dataclasses.replace(want, num_ctx=smaller)
                    error = self._try_load(model, want, "oom retry", False, path)
            if error is not None:
                raise HTTPError(500, error)
            loaded = dataclasses.replace(
                want, use_mmap=True if want.use_mmap is None else want.use_mmap)
            runner = Runner(model, loaded, keep, 0.0, refs=1)
            self._restart_timer(runner, None)
            self.runners[model.blob] = runner
            return runner, True

    def _try_load(self, model: FakeModel, want: RunnerOptions, reason: str, replaced: bool,
                  path: str) -> Optional[str]:
        """Record one load attempt; the error message when it runs out of memory."""
        error = None
        if self.oom_above is not None and want.num_ctx > self.oom_above:
            error = OOM_MESSAGE % self.kv_cache_bytes(model, want.num_ctx)
        self.loads.append({"model": model.name, "path": path, "num_ctx": want.num_ctx,
                           "automatic": want.automatic, "reason": reason, "replaced": replaced,
                           "ok": error is None, "error": error})
        return error

    @staticmethod
    def kv_cache_bytes(model: FakeModel, num_ctx: int) -> int:
        return num_ctx * model.block_count * 4096

    @staticmethod
    def _restart_timer(runner: Runner, keep_alive: Optional[float]) -> None:
        """A request used the runner: take its keep_alive (if any), restart the timer."""
        if keep_alive is not None:
            runner.keep_alive = keep_alive
        span = FOREVER_SECONDS if math.isinf(runner.keep_alive) else runner.keep_alive
        runner.expires_at = time.time() + span

    def unload(self, model: FakeModel) -> None:
        """Unload the runner of the model's blob (whichever tag loaded it)."""
        with self.lock:
            self.runners.pop(model.blob, None)

    def unload_runner(self, runner: Runner) -> None:
        """Unload ``runner`` if it is still loaded (not replaced meanwhile)."""
        with self.lock:
            if self.runners.get(runner.model.blob) is runner:
                del self.runners[runner.model.blob]

    def release(self, runner: Runner) -> None:
        """A request using ``runner`` ended: when idle, restart its timer, or unload it at once
        when its keep_alive is 0 (that request's, or an earlier one's kept by a reuse)."""
        with self.lock:
            runner.refs = max(0, runner.refs - 1)
            if runner.refs:
                return
            if runner.keep_alive == 0:
                self.unload_runner(runner)
            else:
                self._restart_timer(runner, None)

    def _expire(self) -> None:
        now = time.time()
        with self.lock:
            for key in [k for k, r in self.runners.items() if not r.refs and r.expires_at < now]:
                del self.runners[key]

    def loaded_models(self) -> dict:
        """Display name of the loading tag -> Runner.describe(), expired runners dropped."""
        with self.lock:
            self._expire()
            return {r.model.name: r.describe() for r in self.runners.values()}

    def _release_after(self, runner: Runner) -> Callable[[], None]:
        return lambda: self.release(runner)

    def details(self, model: FakeModel, *, lengths: bool) -> dict:
        out = {"parent_model": "", "format": "gguf", "family": model.family,
               "families": [model.family], "parameter_size": model.parameter_size,
               "quantization_level": model.quantization_level}
        if lengths:
            if model.context_length:
                out["context_length"] = model.context_length
            if model.embedding_length:
                out["embedding_length"] = model.embedding_length
        return out

    # -- simple routes --------------------------------------------------------------------

    def root(self, rec: Received, ctx: RequestContext) -> Reply:
        return Reply(200, CT_TEXT, b"Ollama is running")

    def api_version(self, rec: Received, ctx: RequestContext) -> Reply:
        return json_reply({"version": self.version})

    def api_status(self, rec: Received, ctx: RequestContext) -> Reply:
        return json_reply({"cloud": {"disabled": False, "source": "none"}})

    def not_implemented(self, rec: Received, ctx: RequestContext, param: str = "") -> Reply:
        return error_reply(rec.path, 501, NOT_IMPLEMENTED)

    def api_tags(self, rec: Received, ctx: RequestContext) -> Reply:
        entries = []
        for model in sorted(self.models, key=lambda m: -m.modified_at):
            entry = {"name": model.name, "model": model.name,
                     "modified_at": rfc3339_nano(int(model.modified_at * 1e9)),
                     "size": model.size, "digest": model.digest,
                     "details": self.details(model, lengths=True)}
            if model.capabilities:
                entry["capabilities"] = list(model.capabilities)
            entries.append(entry)
        return json_reply({"models": entries})

    def api_ps(self, rec: Received, ctx: RequestContext) -> Reply:
        with self.lock:
            self._expire()
            runners = sorted(self.runners.values(), key=lambda r: -r.expires_at)
        entries = []
        for runner in runners:
            model, context = runner.model, runner.options.num_ctx
            in_use = model.size + self.kv_cache_bytes(model, context)
            on_gpu = in_use
            if self.spill_above is not None and context > self.spill_above:
                on_gpu = model.size + self.kv_cache_bytes(model, self.spill_above)
            entries.append({"name": model.name, "model": model.name, "size": in_use,
                            "digest": model.digest,
                            "details": self.details(model, lengths=False),
                            "expires_at": rfc3339_nano(int(runner.expires_at * 1e9)),
                            "size_vram": on_gpu, "context_length": context})
        return json_reply({"models": entries})

    # -- /api/show ------------------------------------------------------------------------

    def api_show(self, rec: Received, ctx: RequestContext) -> Reply:
        body = bind_json(rec.body, "ShowRequest", _NAME_FIELDS)
        name = body.get("model") or body.get("name") or ""
        if not name:
            raise HTTPError(400, "model is required")
        model = self.find(name)
        if model is None:
            raise HTTPError(404, "model '%s' not found" % display_name(name))
        out: dict = {"modelfile": self.modelfile(model)}
        parameters = self.parameters_text(model)
        if parameters:
            out["parameters"] = parameters
        out["template"] = model.template
        if body.get("system"):
            out["system"] = body["system"]
        out["details"] = self.details(model, lengths=False)
        out["model_info"] = self.model_info(model, verbose=bool(body.get("verbose")))
        out["tensors"] = self.tensors(model)
        out["capabilities"] = list(model.capabilities)
        out["modified_at"] = rfc3339_nano(int(model.modified_at * 1e9))
        return json_reply(out)

    @staticmethod
    def parameters_text(model: FakeModel) -> str:
        """One line per parameter: key padded to 30, then the value in Go's %#v form."""
        lines = []
        for key, value in model.parameters:
            if isinstance(value, str):
                shown = json.dumps(value, ensure_ascii=False)
            elif isinstance(value, bool):
                shown = "true" if value else "false"
            else:
                shown = repr(value)
            lines.append("%-30s %s" % (key, shown))
        return "\n".join(lines)

    @staticmethod
    def modelfile(model: FakeModel) -> str:
        lines = ['# Modelfile generated by "ollama show"',
                 "# To build a new Modelfile based on this, replace FROM with:",
                 "# FROM %s" % model.name, "",
                 "FROM /root/.ollama/models/blobs/sha256-%s" % model.digest,
                 'TEMPLATE """%s"""' % model.template]
        for key, value in model.parameters:
            lines.append("PARAMETER %s %s" % (key, value))
        return "\n".join(lines) + "\n"

    @staticmethod
    def model_info(model: FakeModel, verbose: bool) -> dict:
        a = model.arch
        params = parameter_count(model.parameter_size)
        info: dict = {
            "general.architecture": a,
            "general.file_type": _FILE_TYPES.get(model.quantization_level.upper(), 15),
            "general.parameter_count": params,
            "general.quantization_version": 2,
            a + ".block_count": model.block_count,
            a + ".context_length": model.context_length,
            a + ".embedding_length": model.hidden_size,
            a + ".attention.head_count": max(1, model.hidden_size // 128),
        }
        if model.is_embedding_only:
            info[a + ".pooling_type"] = 1
            info[a + ".attention.layer_norm_epsilon"] = 1e-12
            info["tokenizer.ggml.model"] = "bert"
        else:
            info[a + ".attention.head_count_kv"] = 8
            info[a + ".feed_forward_length"] = model.hidden_size * 4
            info["tokenizer.ggml.model"] = "gpt2"
        vocab = ["<s>", "</s>", "<unk>", "tok0", "tok1", "tok2", "think0", "think1"]
        info["tokenizer.ggml.tokens"] = vocab if verbose else []
        info["tokenizer.ggml.token_type"] = [1] * len(vocab) if verbose else []
        return dict(sorted(info.items()))  # a Go map: keys come out sorted

    @staticmethod
    def tensors(model: FakeModel) -> List[dict]:
        kind = _TENSOR_TYPES.get(model.quantization_level.upper(), "Q4_K")
        hidden = model.hidden_size
        return [{"name": "token_embd.weight", "type": kind, "shape": [hidden, 128256]},
                {"name": "blk.0.attn_q.weight", "type": kind, "shape": [hidden, hidden]},
                {"name": "output_norm.weight", "type": "F32", "shape": [hidden]}]

    # -- chat and generate ----------------------------------------------------------------

    def _resolve_for_completion(self, body: dict, model_sent: str, verb: str) -> FakeModel:
        """404 / capability checks / options, in the order Ollama's scheduleRunner has them."""
        model = self.find(model_sent)
        if model is None:
            raise HTTPError(404, "model '%s' not found" % model_sent)
        if "completion" not in model.capabilities:
            raise HTTPError(400, '"%s" does not support %s' % (model_sent, verb))
        if body.get("tools") and "tools" not in model.capabilities:
            raise HTTPError(400, "%s does not support tools" % full_name(model))
        if body.get("suffix") and "insert" not in model.capabilities:
            raise HTTPError(400, "%s does not support insert" % full_name(model))
        think = body.get("think")
        if think not in (None, False) and "thinking" not in model.capabilities:
            raise HTTPError(400, '"%s" does not support thinking' % model_sent)
        top = body.get("top_logprobs")
        if isinstance(top, int) and not 0 <= top <= 20:
            raise HTTPError(400, "top_logprobs must be between 0 and 20")
        check_options(body.get("options"))
        return model

    @staticmethod
    def _thinking_on(model: FakeModel, body: dict) -> bool:
        return "thinking" in model.capabilities and body.get("think") is not False

    def api_chat(self, rec: Received, ctx: RequestContext) -> Reply:
        body = bind_json(rec.body, "ChatRequest", _CHAT_FIELDS)
        model_sent = body.get("model") or ""
        if not model_sent:
            raise HTTPError(400, "model is required")
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                raise HTTPError(400, "json: cannot unmarshal %s into Go struct field "
                                "ChatRequest.messages of type api.Message" % json_kind(message))
            for key in ("role", "content"):
                if message.get(key) is not None and not isinstance(message[key], str):
                    raise HTTPError(400, "json: cannot unmarshal %s into Go struct field "
                                    "Message.messages.%s of type string"
                                    % (json_kind(message[key]), key))
        run = self._run_chat(body, rec, ctx)
        if run.gen is None:
            return json_reply(run.immediate)
        gen = run.gen
        if body.get("stream") is False:
            return Reply(200, CT_JSON, body_fn=lambda: go_json(native_chat_response(gen)),
                         pre_delay=ctx.delay * gen.line_count, on_done=run.on_done)
        return stream_reply((ndjson_line(r) for r in native_chat_responses(gen)), CT_NDJSON,
                            ctx.delay, run.on_done)

    def _run_chat(self, body: dict, rec: Received, ctx: RequestContext) -> "Run":
        """ChatHandler after binding: checks, the load/unload answer, or a generation
        (with a tool call when ``tools`` are given; the model has the capability by then)."""
        model_sent = body.get("model") or ""
        if not model_sent:
            raise HTTPError(400, "model is required")
        model = self._resolve_for_completion(body, model_sent, "chat")
        options = body.get("options") or {}
        keep_alive = body.get("keep_alive")
        messages = body.get("messages") or []
        if not messages:
            reason = "unload" if keep_alive == 0 else "load"
            if reason == "unload":
                self.unload(model)
            else:
                self.release(self.schedule(model, options, keep_alive, rec.path,
                                           body.get("shift"))[0])
            return Run(immediate={"model": model_sent, "created_at": now_rfc3339(),
                                  "message": {"role": "assistant", "content": ""},
                                  "done": True, "done_reason": reason})
        runner, loaded = self.schedule(model, options, keep_alive, rec.path, body.get("shift"))
        if loaded:
            ctx.load_ns += LOAD_NS
        tools = bound_tools(body.get("tools"))
        prompt = render_chat_prompt(messages, tools)
        rec.prompt_chars = len(prompt)
        rec.cache_reuse = 0 if loaded else common_prefix_length(runner.last_prompt, prompt)
        runner.last_prompt = prompt
        tool_chars = len(json.dumps(tools, separators=(",", ":"))) if tools else 0

        def chars_from(first: int) -> int:  # the system messages before ``first``, then every message from it
            kept = [m for m in messages[:first] if m.get("role") == "system"] + messages[first:]
            return sum(len(m.get("content") or "") for m in kept) + tool_chars

        first = 0
        if body.get("truncate") is not False:
            # chatPrompt (server/prompt.go): drop whole messages from the front, system messages
            # kept, until the prompt fits in num_ctx; the last message always stays.
            while first < len(messages) - 1 and prompt_token_count(model, chars_from(first)) > runner.options.num_ctx:
                first += 1
        media = any(m.get("images") for m in messages[first:])
        tokens = self._kept_tokens(runner, prompt_token_count(model, chars_from(first)), options, media, body.get("truncate") is not False)
        gen = make_generation(model_sent, tokens, ctx,
                              thinking=self._thinking_on(model, body),
                              num_predict=option_int(options, "num_predict"),
                              tool_call=make_tool_call(model_sent, messages, tools)
                              if tools else None)
        return Run(gen=gen, on_done=self._release_after(runner))

    def _kept_tokens(self, runner: "Runner", tokens: int, options: dict, media: bool, truncate: bool = True) -> int:
        """The prompt tokens the runner evaluates (and reports): truncated to its context, as
        Ollama truncates without an error; a prompt with images is never truncated.  With
        ``truncate: false`` a prompt over the context is refused by llama-server (400; the
        wording is llama-server's, and how Ollama maps it is not verified)."""
        if media:
            return tokens
        if not truncate and tokens > runner.options.num_ctx - 1:
            self.release(runner)
            raise HTTPError(400, "request (%d tokens) exceeds the available context size (%d tokens), try increasing it"
                            % (tokens, runner.options.num_ctx))
        try:
            return truncated_prompt_tokens(tokens, runner.options.num_ctx, option_int(options, "num_keep"), runner.options.shift)
        except HTTPError:
            self.release(runner)
            raise

    def api_generate(self, rec: Received, ctx: RequestContext) -> Reply:
        body = bind_json(rec.body, "GenerateRequest", _GENERATE_FIELDS)
        run = self._run_generate(body, rec, ctx)
        if run.gen is None:
            return json_reply(run.immediate)
        gen, context = run.gen, run.context
        if body.get("stream") is False:
            return Reply(200, CT_JSON,
                         body_fn=lambda: go_json(native_generate_response(gen, context)),
                         pre_delay=ctx.delay * gen.line_count, on_done=run.on_done)
        return stream_reply((ndjson_line(r) for r in native_generate_responses(gen, context)),
                            CT_NDJSON, ctx.delay, run.on_done)

    def _run_generate(self, body: dict, rec: Received, ctx: RequestContext) -> "Run":
        """GenerateHandler after binding: checks, the load/unload answer, or a generation."""
        model_sent = body.get("model") or ""
        if not model_sent:
            raise HTTPError(404, "model '' not found")
        if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
            raise HTTPError(400, "raw mode does not support template, system, or context")
        model = self._resolve_for_completion(body, model_sent, "generate")
        options = body.get("options") or {}
        keep_alive = body.get("keep_alive")
        prompt = body.get("prompt") or ""
        if not prompt:
            reason = "unload" if keep_alive == 0 else "load"
            if reason == "unload":
                self.unload(model)
            else:
                self.release(self.schedule(model, options, keep_alive, rec.path,
                                           body.get("shift"))[0])
            return Run(immediate={"model": model_sent, "created_at": now_rfc3339(),
                                  "response": "", "done": True, "done_reason": reason})
        runner, loaded = self.schedule(model, options, keep_alive, rec.path, body.get("shift"))
        if loaded:
            ctx.load_ns += LOAD_NS
        raw = bool(body.get("raw"))
        previous = body.get("context") or []
        chars = len(prompt) + len(body.get("system") or "")
        tokens = self._kept_tokens(runner, prompt_token_count(model, chars, template=not raw) + len(previous), options,
                                   bool(body.get("images")), body.get("truncate") is not False)
        gen = make_generation(model_sent, tokens,
                              ctx, thinking=self._thinking_on(model, body),
                              num_predict=option_int(options, "num_predict"))
        return Run(gen=gen, on_done=self._release_after(runner),
                   context=None if raw else gen.context_tokens())

    # -- embeddings -----------------------------------------------------------------------

    def _embed_vectors(self, model: FakeModel, inputs: List[str], num_ctx: int,
                       truncate: bool, dimensions: Optional[int]) -> Tuple[List[List[float]], int]:
        """Unit vectors (float32) per input, and the token count summed over inputs.

        ``num_ctx`` is the loaded runner's; an input may have num_ctx - 2 tokens (BOS, EOS).
        """
        if "embedding" not in model.capabilities:
            raise HTTPError(501, "This server does not support embeddings. Start it with "
                            "`--embeddings`")
        limit = num_ctx - 2
        vectors, tokens = [], 0
        for text in inputs:
            n = prompt_token_count(model, len(text), template=False)
            if n > limit:
                if not truncate:
                    raise HTTPError(400, "the input length exceeds the context length")
                text, n = text[:int(limit * model.chars_per_token)], limit
            tokens += n
            vec = embedding_direction(text, model.hidden_size, model.digest)
            if dimensions and 0 < dimensions < len(vec):
                vec = l2_normalize(vec[:dimensions])
            vectors.append(as_float32(vec))
        return vectors, tokens

    def api_embed(self, rec: Received, ctx: RequestContext) -> Reply:
        body = bind_json(rec.body, "EmbedRequest", _EMBED_FIELDS)
        return json_reply(self._run_embed(body, rec, ctx))

    def _run_embed(self, body: dict, rec: Received, ctx: RequestContext) -> dict:
        """EmbedHandler after binding: the answer object (errors raise HTTPError)."""
        raw_input = body.get("input")
        if raw_input is None or raw_input == "":
            inputs: List[str] = []
        elif isinstance(raw_input, str):
            inputs = [raw_input]
        elif isinstance(raw_input, list) and all(isinstance(x, str) for x in raw_input):
            inputs = list(raw_input)
        else:
            raise HTTPError(400, "invalid input type")
        model_sent = body.get("model") or ""
        if not model_sent:
            raise HTTPError(404, "model '' not found")
        model = self.find(model_sent)
        if model is None:
            raise HTTPError(404, 'model "%s" not found, try pulling it first' % model_sent)
        options = check_options(body.get("options"))
        keep_alive = body.get("keep_alive")
        runner, loaded = self.schedule(model, options, keep_alive, rec.path)
        try:
            if not inputs:
                return {"model": model_sent, "embeddings": []}
            vectors, tokens = self._embed_vectors(model, inputs, runner.options.num_ctx,
                                                  body.get("truncate") is not False,
                                                  body.get("dimensions"))
        finally:
            self.release(runner)
        load = ctx.load_ns + 1_234_567 + (LOAD_NS if loaded else 0)
        total = max(time.perf_counter_ns() - ctx.start_ns, load) + tokens * 100_000
        return {"model": model_sent, "embeddings": vectors, "total_duration": total,
                "load_duration": load, "prompt_eval_count": tokens}

    def api_embeddings(self, rec: Received, ctx: RequestContext) -> Reply:
        body = bind_json(rec.body, "EmbeddingRequest", _EMBEDDINGS_FIELDS)
        model_sent = body.get("model") or ""
        if not model_sent:
            raise HTTPError(400, "model is required")
        model = self.find(model_sent)
        if model is None:
            raise HTTPError(404, 'model "%s" not found, try pulling it first' % model_sent)
        options = check_options(body.get("options"))
        runner, _ = self.schedule(model, options, body.get("keep_alive"), rec.path)
        try:
            prompt = body.get("prompt") or ""
            if not prompt:
                return json_reply({"embedding": []})
            if "embedding" not in model.capabilities:
                raise HTTPError(500, "this model does not support embeddings")
            vec = embedding_direction(prompt, model.hidden_size, model.digest)
            if model.arch in ("nomic-bert", "nomic-bert-moe"):  # legacyEmbeddingsWereRaw
                scale = raw_embedding_scale(prompt, model.digest)
                vec = [x * scale for x in vec]
            return json_reply({"embedding": vec})
        finally:
            self.release(runner)

    # -- model management -----------------------------------------------------------------

    def _progress(self, ctx: RequestContext, body: dict, lines: List[dict],
                  error: Optional[str] = None) -> Reply:
        """Streamed status lines (an error as a last line), or one object when stream:false."""
        if body.get("stream") is False:
            if error is not None:
                return ollama_error(500, error)
            return json_reply(lines[-1], content_type=CT_OPENAI)
        objs = list(lines) + ([{"error": error}] if error is not None else [])
        return stream_reply([ndjson_line(o) for o in objs], CT_NDJSON, ctx.delay)

    def api_pull(self, rec: Received, ctx: RequestContext) -> Reply:
        body = bind_json(rec.body, "PullRequest", _NAME_FIELDS)
        name = body.get("model") or body.get("name") or ""
        if not name:
            raise HTTPError(400, "model is required")
        model = self.find(name)
        if model is None:
            return self._progress(ctx, body, [{"status": "pulling manifest"}],
                                  "pull model manifest: file does not exist")
        layer = "sha256:" + model.digest
        return self._progress(ctx, body, [
            {"status": "pulling manifest"},
            {"status": "pulling %s" % model.digest[:12], "digest": layer, "total": model.size},
            {"status": "pulling %s" % model.digest[:12], "digest": layer, "total": model.size,
             "completed": model.size},
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "success"}])

    def api_push(self, rec: Received, ctx: RequestContext) -> Reply:
        body = bind_json(rec.body, "PushRequest", _NAME_FIELDS)
        name = body.get("model") or body.get("name") or ""
        if not name:
            raise HTTPError(400, "model is required")
        model = self.find(name)
        if model is None:
            return self._progress(ctx, body, [{"status": "retrieving manifest"}],
                                  'model "%s" not found' % display_name(name))
        return self._progress(ctx, body, [
            {"status": "retrieving manifest"},
            {"status": "pushing %s" % model.digest[:12], "digest": "sha256:" + model.digest,
             "total": model.size, "completed": model.size},
            {"status": "pushing manifest"},
            {"status": "success"}])

    def api_create(self, rec: Received, ctx: RequestContext) -> Reply:
        body = bind_json(rec.body, "CreateRequest", _CREATE_FIELDS)
        name = body.get("model") or body.get("name") or ""
        if not is_valid_name(name):
            raise HTTPError(400, "invalid model name")
        source = body.get("from") or ""
        files = body.get("files") or {}
        if source:
            base = self.find(source)
            if base is None:
                return self._progress(ctx, body, [{"status": "pulling manifest"}],
                                      "pull model manifest: file does not exist")
        elif files:
            for digest in files.values():
                if digest not in self.blobs:
                    raise HTTPError(400, "file %s not found" % digest)
            weights = str(next(iter(files.values()))).split(":")[-1]
            base = FakeModel(display_name(name), "llama", DEFAULT_NUM_CTX, ["completion"],
                             blob=weights)
        else:
            raise HTTPError(400, "neither 'from' or 'files' was specified")
        new_params = body.get("parameters") or {}
        params = [(k, v) for k, v in base.parameters if k not in new_params]
        for key, value in new_params.items():
            for item in value if isinstance(value, list) else [value]:
                params.append((key, item))
        digest = hashlib.sha256(go_json([display_name(name), base.digest, params])).hexdigest()
        model = copy_model(base, name=display_name(name), digest=digest,
                           modified_at=time.time(), parameters=params,
                           template=body.get("template") or base.template)
        self._install(model)
        return self._progress(ctx, body, [
            {"status": "using existing layer sha256:%s" % base.digest},
            {"status": "writing manifest"},
            {"status": "success"}])

    def _install(self, model: FakeModel) -> None:
        self.models[:] = [m for m in self.models if m.key != model.key] + [model]

    def api_copy(self, rec: Received, ctx: RequestContext) -> Reply:
        body = bind_json(rec.body, "CopyRequest", _COPY_FIELDS)
        source, destination = body.get("source") or "", body.get("destination") or ""
        if not is_valid_name(source):
            raise HTTPError(400, 'source "%s" is invalid' % source)
        if not is_valid_name(destination):
            raise HTTPError(400, 'destination "%s" is invalid' % destination)
        base = self.find(source)
        if base is None:
            raise HTTPError(404, 'model "%s" not found' % source)
        self._install(copy_model(base, name=display_name(destination), modified_at=time.time()))
        return empty_reply(200)

    def api_delete(self, rec: Received, ctx: RequestContext) -> Reply:
        body = bind_json(rec.body, "DeleteRequest", _NAME_FIELDS)
        name = body.get("model") or body.get("name") or ""
        model = self.find(name) if name else None
        if model is None:
            raise HTTPError(404, "model '%s' not found" % display_name(name))
        self.models[:] = [m for m in self.models if m.key != model.key]
        self.unload(model)
        return empty_reply(200)

    _DIGEST_RE = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")

    def _blob_digest(self, param: str) -> str:
        m = self._DIGEST_RE.match(param)
        if not m:
            raise HTTPError(400, "invalid digest format")
        return "sha256:" + m.group(1).lower()

    def api_blob_head(self, rec: Received, ctx: RequestContext, param: str) -> Reply:
        try:
            digest = self._blob_digest(param)
        except HTTPError:
            return empty_reply(400)
        return empty_reply(200 if digest in self.blobs else 404)

    def api_blob_post(self, rec: Received, ctx: RequestContext, param: str) -> Reply:
        digest = self._blob_digest(param)
        if digest in self.blobs:
            return empty_reply(200)
        got = "sha256:" + hashlib.sha256(rec.body).hexdigest()
        if got != digest:
            raise HTTPError(400, 'digest mismatch, expected "%s", got "%s"' % (digest, got))
        self.blobs[digest] = len(rec.body)
        return empty_reply(201)

    # -- /v1: Ollama's OpenAI middleware, converting to and from the native handlers ---------

    def _v1_body(self, rec: Received, struct: str, fields: dict) -> dict:
        try:
            return bind_json(rec.body, struct, fields, empty_message="EOF", package="openai")
        except HTTPError as exc:
            raise HTTPError(exc.status, exc.message, middleware=True) from None

    def v1_chat(self, rec: Received, ctx: RequestContext) -> Reply:
        body = self._v1_body(rec, "ChatCompletionRequest", _V1_CHAT_FIELDS)
        if not body.get("messages"):
            raise HTTPError(400, "[] is too short - 'messages'", middleware=True)
        rec.native = native = openai_chat_to_native(body)
        run = self._run_chat(native, rec, ctx)
        cid = "chatcmpl-%d" % self.rng.randint(0, 998)
        gen = run.gen
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            responses = native_chat_responses(gen) if gen is not None else iter([run.immediate])
            return stream_reply(v1_chat_events(responses, cid, usage), CT_SSE, ctx.delay,
                                run.on_done)
        if gen is None:
            return Reply(200, CT_OPENAI, writer_body(v1_chat_completion(run.immediate, cid)))
        return Reply(200, CT_OPENAI,
                     body_fn=lambda: writer_body(v1_chat_completion(native_chat_response(gen),
                                                                    cid)),
                     pre_delay=ctx.delay * gen.line_count, on_done=run.on_done)

    def v1_completions(self, rec: Received, ctx: RequestContext) -> Reply:
        body = self._v1_body(rec, "CompletionRequest", _V1_COMPLETION_FIELDS)
        rec.native = native = openai_completion_to_native(body)
        run = self._run_generate(native, rec, ctx)
        cid = "cmpl-%d" % self.rng.randint(0, 998)
        gen, context = run.gen, run.context
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            responses = (native_generate_responses(gen, context) if gen is not None
                         else iter([run.immediate]))
            return stream_reply(v1_completion_events(responses, cid, usage), CT_SSE, ctx.delay,
                                run.on_done)
        if gen is None:
            return Reply(200, CT_OPENAI, writer_body(v1_completion(run.immediate, cid)))
        return Reply(200, CT_OPENAI,
                     body_fn=lambda: writer_body(v1_completion(
                         native_generate_response(gen, context), cid)),
                     pre_delay=ctx.delay * gen.line_count, on_done=run.on_done)

    def v1_embeddings(self, rec: Received, ctx: RequestContext) -> Reply:
        body = self._v1_body(rec, "EmbedRequest", _V1_EMBED_FIELDS)
        encoding = body.get("encoding_format") or ""
        if encoding and encoding.lower() not in ("float", "base64"):
            raise HTTPError(400, "Invalid value for 'encoding_format' = %s. Supported values: "
                            "['float', 'base64']." % encoding, middleware=True)
        raw_input = body.get("input")
        if raw_input == "":
            raw_input = [""]
        if raw_input is None or raw_input == []:
            raise HTTPError(400, "invalid input", middleware=True)
        native = {"model": body.get("model") or "", "input": raw_input}
        if body.get("dimensions"):
            native["dimensions"] = body["dimensions"]
        rec.native = native
        answer = self._run_embed(native, rec, ctx)
        return Reply(200, CT_OPENAI,
                     writer_body(v1_embedding_list(native["model"], answer, encoding)))

    def v1_messages(self, rec: Received, ctx: RequestContext) -> Reply:
        """AnthropicMessagesMiddleware over ChatHandler (agents-api.md §1): bind and check,
        FromMessagesRequest (``Received.native``), then the native chat handler with thinking
        relaxed, its answer converted by ToMessagesResponse or the StreamConverter."""
        try:
            body = bind_json(rec.body, "MessagesRequest", _MESSAGES_FIELDS, empty_message="EOF",
                             package="anthropic")
        except HTTPError as exc:
            raise _anthropic_middleware_error(exc.message) from None
        _bind_messages_request(body)
        if not body.get("model"):
            raise _anthropic_middleware_error("model is required")
        if (body.get("max_tokens") or 0) <= 0:
            raise _anthropic_middleware_error("max_tokens is required and must be positive")
        if not body.get("messages"):
            raise _anthropic_middleware_error("messages is required")
        rec.native = native = anthropic_to_native(body)
        estimate = anthropic_estimate_tokens(body)
        stream = bool(body.get("stream"))
        mid = "msg_%024x" % self.rng.getrandbits(96)
        run_body = native
        model = self.find(native["model"])
        if (native.get("think") not in (None, False) and model is not None
                and "thinking" not in model.capabilities):
            run_body = {k: v for k, v in native.items() if k != "think"}  # relax_thinking
        return self._agent_writer(
            run_body, rec, ctx, stream, anthropic_error,
            lambda responses: anthropic_events(responses, AnthropicStream(mid, native["model"], estimate)),
            lambda r: anthropic_message(r, mid))

    def _agent_writer(self, body: dict, rec: Received, ctx: RequestContext, stream: bool,
                      error: Callable[[int, str], Reply],
                      events: Callable[[Iterator[dict]], Iterator[bytes]],
                      whole: Callable[[dict], dict]) -> Reply:
        """The native chat handler under an agent route's writer (AnthropicWriter,
        ResponsesWriter): its errors in the route's shape (with the SSE headers, set before the
        handler ran, when streaming), its stream as the route's events, or its one answer."""
        try:
            run = self._run_chat(body, rec, ctx)
        except HTTPError as exc:
            reply = error(exc.status, exc.message)
            if stream:
                reply.headers.extend(SSE_STREAM_HEADERS)
            return reply
        gen = run.gen
        if stream:
            responses = native_chat_responses(gen) if gen is not None else iter([run.immediate])
            return Reply(200, CT_SSE, lines=events(responses), line_delay=ctx.delay,
                         headers=list(SSE_STREAM_HEADERS), on_done=run.on_done)
        if gen is None:
            return Reply(200, CT_OPENAI, writer_body(whole(run.immediate)))
        return Reply(200, CT_OPENAI, body_fn=lambda: writer_body(whole(native_chat_response(gen))),
                     pre_delay=ctx.delay * gen.line_count, on_done=run.on_done)

    def v1_responses(self, rec: Received, ctx: RequestContext) -> Reply:
        """ResponsesMiddleware over ChatHandler (agents-api.md §2): a zstd body inflated, bind,
        FromResponsesRequest (``Received.native``), then the native chat handler, its answer
        converted by ToResponse or the ResponsesStreamConverter. The built-in web_search loop
        (which calls ollama.com) is not modelled: such a request answers 501."""
        raw = rec.body
        if (rec.header("content-encoding") or "") == "zstd":
            try:
                from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
            except ImportError:
                raise HTTPError(501, NOT_IMPLEMENTED + ": zstd bodies need Python 3.14") from None
            try:
                raw = zstd.decompress(raw)
            except zstd.ZstdError as exc:
                raise _middleware_error("zstd: %s" % exc) from None
        body, text, items = bind_responses_request(raw)
        rec.native = native = responses_request_to_native(body, text, items)
        if any((t or {}).get("type") == "web_search" for t in body.get("tools") or []):
            raise HTTPError(501, NOT_IMPLEMENTED + ": the built-in web_search tool")
        stream = native["stream"]
        response_id = "resp_%d" % self.rng.randrange(999999)
        item_id = "msg_%d" % self.rng.randrange(999999)
        return self._agent_writer(
            native, rec, ctx, stream, openai_error,
            lambda responses: responses_events(responses, ResponsesStream(response_id, item_id, body, self.rng)),
            lambda r: responses_object(r, body, response_id, item_id))

    def v1_models(self, rec: Received, ctx: RequestContext) -> Reply:
        data = [{"id": m.name, "object": "model", "created": int(m.modified_at),
                 "owned_by": name_namespace(m.name)}
                for m in sorted(self.models, key=lambda m: -m.modified_at)]
        return Reply(200, CT_OPENAI, writer_body({"object": "list", "data": data or None}))

    def v1_model(self, rec: Received, ctx: RequestContext, param: str) -> Reply:
        model = self.find(param)
        if model is None:  # RetrieveMiddleware -> ShowHandler, which names it DisplayShortest()
            raise HTTPError(404, "model '%s' not found" % display_name(param))
        return Reply(200, CT_OPENAI, writer_body({
            "id": param, "object": "model", "created": int(model.modified_at),
            "owned_by": name_namespace(param)}))


# ---------------------------------------------------------------------------------------------
# 6. HTTP on h11
# ---------------------------------------------------------------------------------------------
#
# One task per connection pulls h11 events: a Request and its body are read completely and
# recorded, then the answer is produced by a worker task while a watcher task reads the socket.
# The watcher is what notices a client that goes away while the fake is silent (cold load,
# gate, stall): EOF or a reset cancels the worker at once. Bytes the watcher reads (a pipelined
# request) are kept and fed to h11 after the answer. Every write is followed by drain(), so
# each streamed line leaves immediately and a slow reader slows the fake down.


class _PeerGone(Exception):
    """The client closed or reset the connection."""


class H11Connection:
    """One accepted connection in normal mode."""

    def __init__(self, fake: "FakeOllama", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, conn_id: int) -> None:
        self.fake = fake
        self.reader = reader
        self.writer = writer
        self.conn_id = conn_id
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.pending = bytearray()  # read by the watcher, not yet given to h11
        self.eof = False
        self.abort = False

    async def serve(self) -> None:
        try:
            while True:
                event = await self.next_event()
                if isinstance(event, h11.ConnectionClosed):
                    self.fake._note_peer_closed(self.conn_id)
                    return
                if not isinstance(event, h11.Request):
                    return
                rec = await self.read_request(event)
                self.fake._record(rec)
                if not await self.respond(rec):
                    return
                if self.conn.our_state is h11.MUST_CLOSE:
                    await self.linger()
                    return
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                else:
                    return
        except h11.RemoteProtocolError as exc:
            if self.eof:
                self.fake._note_peer_closed(self.conn_id)
            else:
                await self.send_protocol_error(exc)
        except (_PeerGone, ConnectionError, OSError):
            self.fake._note_peer_closed(self.conn_id)
        finally:
            self.close()

    # -- reading --------------------------------------------------------------------------

    async def next_event(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                if self.conn.they_are_waiting_for_100_continue:
                    await self.send(h11.InformationalResponse(status_code=100, headers=[]))
                await self.feed()
                continue
            return event

    async def feed(self) -> None:
        if self.pending:
            data = bytes(self.pending)
            self.pending.clear()
        elif self.eof:
            data = b""
        else:
            data = await self.reader.read(READ_SIZE)
            if not data:
                self.eof = True
        self.conn.receive_data(data)

    async def read_request(self, request: h11.Request) -> Received:
        body = bytearray()
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        return Received(
            conn_id=self.conn_id,
            method=request.method.decode("ascii", "replace"),
            target=request.target.decode("latin-1"),
            headers=[(k.decode("latin-1").lower(), v.decode("latin-1"))
                     for k, v in request.headers],
            body=bytes(body),
            http_version=request.http_version.decode("ascii", "replace"),
        )

    async def watch(self) -> None:
        """Read the socket while an answer is produced; return at EOF or reset."""
        try:
            while len(self.pending) < WATCH_LIMIT:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    self.eof = True
                    return
                self.pending += data
            await asyncio.Event().wait()  # buffer full: stop reading, let the worker finish
        except (ConnectionError, OSError):
            self.eof = True

    # -- answering ------------------------------------------------------------------------

    async def respond(self, rec: Received) -> bool:
        """Answer one request; False when the connection must not be reused."""
        fault = self.fake._take_fault(rec.path)
        watcher = asyncio.ensure_future(self.watch())
        worker = asyncio.ensure_future(self.produce(rec, fault))
        try:
            await asyncio.wait({watcher, worker}, return_when=asyncio.FIRST_COMPLETED)
            if not worker.done():  # the watcher saw EOF or a reset: the client is gone
                raise _PeerGone()
            return worker.result()
        finally:
            for task in (watcher, worker):
                if not task.done():
                    task.cancel()
            await asyncio.gather(watcher, worker, return_exceptions=True)

    async def produce(self, rec: Received, fault: Optional[Fault]) -> bool:
        ctx = RequestContext.from_received(rec)
        if fault is not None:
            if fault.garbage:
                self.writer.write(GARBAGE)
                await self.writer.drain()
                return False
            if fault.close_before_response:
                return False
            if fault.delay_before_headers > 0:
                started = time.perf_counter_ns()
                await asyncio.sleep(fault.delay_before_headers)
                ctx.load_ns = time.perf_counter_ns() - started
        if fault is not None and fault.status:
            reply = error_reply(rec.path, fault.status, fault.error)
        else:
            try:
                reply = self.fake.app.handle(rec, ctx)
            except Exception as exc:  # a bug in the fake: say so loudly, as a 500
                log.exception("fake_ollama handler failed for %s %s", rec.method, rec.target)
                reply = error_reply(rec.path, 500, "fake_ollama internal error: %r" % (exc,))
        return await self.send_reply(rec, reply, fault)

    async def send_reply(self, rec: Received, reply: Reply, fault: Optional[Fault]) -> bool:
        """Send ``reply``. Its on_done runs once: before the last bytes a client waits for (the
        head of a body with a length, the chunked terminator), or when the answer is cut off."""
        try:
            return await self._send_reply(rec, reply, fault)
        finally:
            _finish(reply)

    async def _send_reply(self, rec: Received, reply: Reply, fault: Optional[Fault]) -> bool:
        if reply.pre_delay > 0:
            await asyncio.sleep(reply.pre_delay)
        headers: List[Tuple[str, str]] = []
        if reply.content_type:
            headers.append(("content-type", reply.content_type))
        headers.append(("date", http_date()))
        headers.extend(reply.headers)
        lines: Iterable[bytes]
        delay = fault.delay_per_chunk if fault is not None else 0.0
        if reply.lines is not None:
            lines = reply.lines
            delay += reply.line_delay
        else:
            body = reply.body_fn() if reply.body_fn is not None else reply.body
            headers.append(("content-length", str(len(body))))
            lines = [body] if body else []
            _finish(reply)  # the answer is complete: a client may read it all at once
        await self.send(h11.Response(status_code=reply.status, headers=headers,
                                     reason=_reason(reply.status)))
        if rec.method == "HEAD":
            lines = []
        sent = 0
        for line in lines:
            if not await self.checkpoint(fault, sent):
                return False
            if delay > 0:
                await asyncio.sleep(delay)
            await self.send(h11.Data(data=line))
            sent += 1
        if not await self.checkpoint(fault, sent):
            return False
        _finish(reply)
        await self.send(h11.EndOfMessage())
        return True

    async def checkpoint(self, fault: Optional[Fault], sent: int) -> bool:
        """Apply the line faults once ``sent`` lines are out; False means: close now."""
        if fault is None:
            return True
        if fault.pause_after == sent and fault.gate is not None:
            await fault.gate.wait()
        if fault.stall_after == sent:
            await asyncio.Event().wait()  # until the watcher sees EOF, or stop()
        if fault.close_after == sent:
            self.abort = True
            return False
        return True

    async def send(self, event: Any) -> None:
        data = self.conn.send(event)
        if not data:
            return
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.conn.send_failed()
            raise _PeerGone() from None

    async def send_protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        status = exc.error_status_hint
        body = ("%d %s" % (status, _reason(status).decode())).encode()
        try:
            await self.send(h11.Response(status_code=status, reason=_reason(status), headers=[
                ("content-type", CT_TEXT), ("connection", "close"),
                ("content-length", str(len(body)))]))
            await self.send(h11.Data(data=body))
            await self.send(h11.EndOfMessage())
        except (_PeerGone, h11.LocalProtocolError):
            return
        await self.linger()  # so the client reads the error instead of a reset

    async def linger(self) -> None:
        """Half-close, then read briefly to EOF so the kernel does not reset unread data."""
        try:
            if self.writer.can_write_eof():
                self.writer.write_eof()
            deadline = time.monotonic() + 1.0
            while not self.eof and time.monotonic() < deadline:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE),
                                              deadline - time.monotonic())
                if not data:
                    break
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass

    def close(self) -> None:
        transport = self.writer.transport
        if self.abort or self.fake._stopping:
            transport.abort()
        else:
            transport.close()


def _finish(reply: Reply) -> None:
    """Run the reply's on_done, once."""
    done, reply.on_done = reply.on_done, None
    if done is not None:
        done()


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


# ---------------------------------------------------------------------------------------------
# 7. FakeOllama (thread, records, faults)
# ---------------------------------------------------------------------------------------------


class FakeOllama:
    """The fake server: an event loop in a daemon thread, records and faults for tests."""

    def __init__(self, models: Optional[List[FakeModel]] = None, *, host: str = "127.0.0.1",
                 port: int = 0, version: str = DEFAULT_VERSION,
                 check_host: bool = True) -> None:
        self.host = host
        self.port = port
        self.version = version
        self.models: List[FakeModel] = [copy_model(m) for m in
                                        (DEFAULT_MODELS if models is None else models)]
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        self.app = FakeOllamaApp(self.models, version, check_host=check_host and loopback)
        #: records, readable from any thread
        self.received: List[Received] = []
        self.connections_accepted = 0
        self.closed_conn_ids: set = set()
        self._cond = threading.Condition()
        self._faults: List[Fault] = []
        self._conn_ids = itertools.count(1)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._tasks: set = set()
        self._stopping = False
        self._started = threading.Event()
        self._start_error: Optional[BaseException] = None

    # -- properties -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "http://%s:%d" % (host, self.port)

    @property
    def loaded(self) -> dict:
        """A snapshot: display name of the loading tag -> runner state (see the docstring)."""
        return self.app.loaded_models()

    @property
    def loads(self) -> List[dict]:
        """A snapshot of every load attempt, in order (see the docstring)."""
        with self.app.lock:
            return [dict(entry) for entry in self.app.loads]

    def _loads_of(self, model: Optional[str]) -> List[dict]:
        entries = self.loads
        if model is None:
            return entries
        key = normalize_name(model)
        found = self.app.find(model)
        same_blob = {m.name for m in self.models if found is not None and m.blob == found.blob}
        return [e for e in entries if normalize_name(e["model"]) == key or e["model"] in same_blob]

    def load_count(self, model: Optional[str] = None) -> int:
        """Load attempts (first loads, reloads, OOM retries; failed ones too), of ``model``'s
        scheduler slot (its blob, whichever tag) or of all models."""
        return len(self._loads_of(model))

    def reload_count(self, model: Optional[str] = None) -> int:
        """Load attempts that replaced a loaded runner of that slot (a first load is not one)."""
        return sum(1 for e in self._loads_of(model) if e["replaced"])

    @property
    def oom_above(self) -> Optional[int]:
        """A (re)load with an effective num_ctx above this fails as out of memory (None: never)."""
        return self.app.oom_above

    @oom_above.setter
    def oom_above(self, value: Optional[int]) -> None:
        self.app.oom_above = value

    @property
    def spill_above(self) -> Optional[int]:
        """A runner with an effective num_ctx above this is partly on the CPU: /api/ps size_vram < size (None: never)."""
        return self.app.spill_above

    @spill_above.setter
    def spill_above(self, value: Optional[int]) -> None:
        self.app.spill_above = value

    @property
    def default_num_ctx(self) -> int:
        """The automatic num_ctx (Ollama's VRAM-based default; 4096 here)."""
        return self.app.default_num_ctx

    @default_num_ctx.setter
    def default_num_ctx(self, value: int) -> None:
        self.app.default_num_ctx = value

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> "FakeOllama":
        """Start the loop thread and listen; return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("FakeOllama already started")
        self._thread = threading.Thread(target=self._run, name="fake-ollama", daemon=True)
        self._thread.start()
        if not self._started.wait(10.0):
            raise RuntimeError("fake ollama did not start within 10 s")
        if self._start_error is not None:
            self._thread.join(5.0)
            self._thread = None
            raise self._start_error
        return self

    def stop(self) -> None:
        """Close the listener and every open connection, then join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10.0)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10.0)

    def __enter__(self) -> "FakeOllama":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # reported to start()
            self._start_error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._on_client, self.host, self.port,
                                                  reuse_address=True, limit=READ_SIZE)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._server is not None:
            await self._close_listener()
            await asyncio.sleep(0.05)  # connections being accepted get their transport and task, then are cancelled below
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await H11Connection(self, reader, writer, self._new_connection()).serve()
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio's stream callback chokes on a cancelled task)
        finally:
            self._tasks.discard(task)

    def _call(self, coro_fn: Callable[[], Any]) -> Any:
        if self._loop is None:
            raise RuntimeError("FakeOllama is not started")
        return asyncio.run_coroutine_threadsafe(coro_fn(), self._loop).result(10.0)

    def refuse(self) -> None:
        """Close the listening socket: new connections are refused, open ones stay."""

        async def close() -> None:
            if self._server is not None:
                await self._close_listener()

        self._call(close)

    async def _close_listener(self) -> None:
        """Stop accepting, let the accepts in flight get their transports, then close the
        listener: a server closed under them (Python 3.12+) refuses to attach their transports,
        which are then left open."""
        server = self._server
        if server is None:
            return
        loop = asyncio.get_running_loop()
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
        for _ in range(3):
            await asyncio.sleep(0)
        server.close()
        self._server = None

    def accept(self) -> None:
        """Listen again, on the same port."""

        async def reopen() -> None:
            if self._server is None:
                await self._listen()

        self._call(reopen)

    # -- records (called in the loop thread) ----------------------------------------------

    def _new_connection(self) -> int:
        with self._cond:
            self.connections_accepted += 1
            return next(self._conn_ids)

    def _record(self, rec: Received) -> None:
        log.debug("conn %d %s %s (%d bytes)", rec.conn_id, rec.method, rec.target, len(rec.body))
        with self._cond:
            self.received.append(rec)
            self._cond.notify_all()

    def _note_peer_closed(self, conn_id: int) -> None:
        if self._stopping:
            return
        with self._cond:
            self.closed_conn_ids.add(conn_id)
            self._cond.notify_all()

    def _take_fault(self, path: str) -> Optional[Fault]:
        with self._cond:
            for fault in self._faults:
                if fault.has_uses_left() and fault.matches(path):
                    fault.hits += 1
                    return fault
        return None

    # -- test API -------------------------------------------------------------------------

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:
        """Block until at least ``n`` requests were received; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= n, timeout):
                raise TimeoutError("fake ollama received %d of %d requests within %.1f s"
                                   % (len(self.received), n, timeout))

    def wait_closed(self, conn_id: int, timeout: float = 5.0) -> bool:
        """True once the peer closed or reset connection ``conn_id``."""
        with self._cond:
            return self._cond.wait_for(lambda: conn_id in self.closed_conn_ids, timeout)

    def add_fault(self, fault: Fault) -> Fault:
        """Queue a fault (a Gate is created when pause_after is set without one)."""
        if fault.pause_after >= 0 and fault.gate is None:
            fault.gate = Gate()
        with self._cond:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    def gate(self) -> Gate:
        """A new pause point for ``Fault(pause_after=k, gate=...)``."""
        return Gate()


# ---------------------------------------------------------------------------------------------
# 8. CLI
# ---------------------------------------------------------------------------------------------


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fake_ollama.py",
        description="A fake Ollama server (no models, no GPU) for trying ollama-proxy.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=11434, help="port (0 = any free port)")
    parser.add_argument("--ollama-version", default=DEFAULT_VERSION,
                        help="version /api/version reports")
    parser.add_argument("--num-ctx", type=int, default=DEFAULT_NUM_CTX,
                        help="the automatic num_ctx (Ollama's VRAM-based default)")
    parser.add_argument("--oom-above", type=int, default=None, metavar="N",
                        help="a model load with num_ctx above N fails as out of memory")
    parser.add_argument("--spill-above", type=int, default=None, metavar="N",
                        help="a model loaded with num_ctx above N is partly on the CPU (/api/ps size_vram below size)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")
    fake = FakeOllama(host=args.host, port=args.port,
                      version=args.ollama_version)
    fake.default_num_ctx = args.num_ctx
    fake.oom_above = args.oom_above
    fake.spill_above = args.spill_above
    try:
        fake.start()
    except OSError as exc:
        print("fake_ollama: cannot listen on %s:%d: %s" % (args.host, args.port, exc),
              file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("fake ollama %s listening on %s (%s mode); models: %s", fake.version, fake.url,
             "h11", ", ".join(m.name for m in fake.models))
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
