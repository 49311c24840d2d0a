"""A coding agent's session replayed directly against the fake Ollama and through the proxy.

    python3 tests/perf/agent_replay.py [--turns 20] [--system-tokens 16000] [--num-ctx 65536]

What Claude Code sends, in shape: a system prompt of about 16k tokens that starts with its
per-request billing header (``x-anthropic-billing-header: ...; cch=<hex>;``, a new hash every
request), a dozen tools with JSON schemas, and a conversation that grows by one user message and
one answer a turn, each turn a ``POST /v1/messages`` with ``max_tokens`` 32000. The backend is
the faithful fake (tests/fake_ollama.py) with Ollama's automatic context of 4096 (a machine under
24 GiB of GPU memory), which truncates an over-long prompt as Ollama does, and reports how much
of each prompt its runner's prompt cache could reuse.

Rows: direct (the fake's own /v1/messages, Ollama's middleware), the proxy with
``--max-context N --num-ctx MODEL=N`` (the context pinned for the agent; --num-ctx alone is
capped at --max-context, 16384 by default), and the same with
``--no-stable-prefix``. Columns: the context the model ran with, reloads during the session,
turns whose prompt was truncated, and the share of each turn's prompt the cache reused (turns
2 on, mean).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import statistics
import sys
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from conftest import ProxyThread, make_config  # noqa: E402
from fake_ollama import FakeOllama, prompt_token_count  # noqa: E402

MODEL = "llama3.2"


def system_prompt(tokens: int) -> str:
    billing = "x-anthropic-billing-header: cc_version=2.1.42.a1b; cc_entrypoint=cli; cch=%s;\n" % secrets.token_hex(3)[:5]
    body = "You are Claude Code, an interactive CLI tool that helps users with software engineering tasks. "
    text = billing + (body * (tokens * 4 // len(body) + 1))[: tokens * 4]
    return text


TOOLS = [{"name": "Tool%d" % i, "description": "Does thing %d to the repository, carefully and with checks." % i,
          "input_schema": {"type": "object", "properties": {"path": {"type": "string", "description": "an absolute path " * 10},
                                                            "content": {"type": "string"}}, "required": ["path"]}} for i in range(12)]


def post(port: int, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise SystemExit("replay: %s answered %d: %s" % (path, resp.status, data[:300]))
        return json.loads(data)
    finally:
        conn.close()


def native_chars(native: Dict[str, Any]) -> int:
    """Prompt characters as the fake counts them: every message's content, and the tools as compact JSON."""
    tools = native.get("tools")
    return sum(len(m.get("content") or "") for m in native.get("messages") or []) + (len(json.dumps(tools, separators=(",", ":"))) if tools else 0)


def replay(fake: FakeOllama, port: int, turns: int, system_tokens: int) -> Dict[str, Any]:
    model = next(m for m in fake.models if m.name.startswith(MODEL))
    reloads_before = fake.reload_count(MODEL)
    messages: List[Dict[str, Any]] = []
    ran_with, truncated, reuse = set(), 0, []
    for turn in range(turns):
        messages.append({"role": "user", "content": "Turn %d: please look at src/module_%d.py and fix the failing test. " % (turn, turn) * 3})
        answer = post(port, "/v1/messages", {"model": MODEL, "max_tokens": 32000, "system": system_prompt(system_tokens), "tools": TOOLS,
                                             "messages": messages})
        messages.append({"role": "assistant", "content": [b for b in answer["content"] or [] if b["type"] == "text"] or "ok"})
        rec = fake.received[-1]
        native = rec.native if rec.native is not None else json.loads(rec.body)
        full = prompt_token_count(model, native_chars(native))
        if answer["usage"]["input_tokens"] < full:
            truncated += 1
        if turn:
            reuse.append(rec.cache_reuse / max(1, rec.prompt_chars))
        runners = [r for name, r in fake.loaded.items() if name.startswith(MODEL)]
        ran_with.add(runners[0]["num_ctx"] if runners else "?")
    return {"num_ctx": sorted(str(x) for x in ran_with), "reloads": fake.reload_count(MODEL) - reloads_before, "truncated": truncated,
            "reuse": statistics.mean(reuse) if reuse else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--system-tokens", type=int, default=16000)
    ap.add_argument("--num-ctx", type=int, default=65536)
    args = ap.parse_args()
    rows = []
    for label, flags in (("direct (Ollama's own /v1/messages)", None), ("proxy, --max-context %d --num-ctx %s=%d" % (args.num_ctx, MODEL, args.num_ctx), ()),
                         ("proxy, same, --no-stable-prefix", ("--no-stable-prefix",))):
        fake = FakeOllama().start()
        fake.default_num_ctx = 4096
        try:
            if flags is None:
                try:
                    rows.append((label, replay(fake, fake.port, args.turns, args.system_tokens)))
                except SystemExit as exc:  # a fake without its own /v1/messages layer
                    print("direct: %s" % exc)
                continue
            config = make_config(fake.url, "--max-context", str(args.num_ctx), "--num-ctx", "%s=%d" % (MODEL, args.num_ctx), *flags)
            proxy = ProxyThread(config).start()
            try:
                rows.append((label, replay(fake, proxy.port, args.turns, args.system_tokens)))
            finally:
                proxy.stop()
        finally:
            fake.stop()
    print("%d turns, a %d-token system prompt with %d tools, max_tokens 32000; the fake's automatic context 4096" % (
        args.turns, args.system_tokens, len(TOOLS)))
    print("| target | context it ran with | reloads | truncated turns | prompt-cache reuse (turns 2+) |")
    print("|---|---|---|---|---|")
    for label, r in rows:
        print("| %s | %s | %d | %d of %d | %.0f %% |" % (label, ", ".join(r["num_ctx"]), r["reloads"], r["truncated"], args.turns, 100 * r["reuse"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
