"""A scripted 30-request workload for reload counting (used by tests/test_context.py and the benchmark).

A conversation with llama3.2 that grows by ~1900 characters a turn (10 turns), interleaved with
short one-shot prompts to the same model and with embedding requests to nomic-embed-text.
Three ways to send it:

* ``client``: as a typical client does: the conversation with its own ``num_ctx`` 8192, the
  one-shots and embeddings without one (Ollama's automatic context);
* ``naive``: every request carries the smallest of the context sizes that holds it, sized per
  request with no regard for what is loaded (a naive per-request sizer);
* ``proxy``: no ``num_ctx`` at all, through ollama-proxy in auto mode.
"""

from __future__ import annotations

import copy
import math

SIZES = (2048, 4096, 8192, 16384, 32768)
TURN_CHARS = 1900


def requests(style: str = "proxy") -> list:
    """The 30 (path, body) pairs of the workload in the given style."""
    out = []
    messages: list = []
    for turn in range(10):
        messages.append({"role": "user", "content": ("turn %d " % turn + "lorem ipsum dolor sit amet " * 80)[:TURN_CHARS]})
        chat = {"model": "llama3.2", "messages": copy.deepcopy(messages), "stream": False}
        messages.append({"role": "assistant", "content": "tok0 tok1 tok2 tok3 tok4 "})
        one_shot = {"model": "llama3.2", "prompt": "Say hello to visitor %d." % turn, "stream": False}
        embed = {"model": "nomic-embed-text", "input": "a short passage number %d about retrieval" % turn}
        for path, body in (("/api/chat", chat), ("/api/generate", one_shot), ("/api/embed", embed)):
            if style == "client" and path == "/api/chat":
                body["options"] = {"num_ctx": 8192}
            elif style == "naive":
                body["options"] = {"num_ctx": naive_size(path, body)}
            out.append((path, body))
    return out


def naive_size(path: str, body: dict) -> int:
    """The smallest size that holds the request by the same estimate the proxy starts with."""
    if path == "/api/chat":
        chars = sum(len(m["content"]) for m in body["messages"])
    elif path == "/api/generate":
        chars = len(body["prompt"])
    else:
        chars = len(body["input"])
    budget = 1024 if path != "/api/embed" else 0
    needed = math.ceil(chars / 4.0) + budget + 300
    return next((s for s in SIZES if s >= needed), SIZES[-1])
