"""Coding agents' sessions replayed directly against the fake Ollama and through the proxy.

    python3 tests/perf/agent_replay.py [--turns 20] [--system-tokens 16000] [--num-ctx 65536]

What Claude Code sends, in shape: a system prompt of about 16k tokens that starts with its
per-request billing header (``x-anthropic-billing-header: ...; cch=<hex>;``, a new hash every
request), a dozen tools with JSON schemas, and a conversation that grows by one user message and
one answer a turn, each turn a ``POST /v1/messages`` with ``max_tokens`` 32000. What Codex sends
(webai-at-home#214): the same size of ``instructions`` and tools on ``POST /v1/responses``, the
whole history as input items every turn (``store`` false), ``reasoning``, ``tool_choice``,
``parallel_tool_calls``, ``prompt_cache_key``, ``include``, and no ``max_output_tokens``. Each
agent also runs a second time with native traffic mixed in: before every turn another client
(an editor plugin, say) sends ``/api/chat`` with its own ``num_ctx`` of 8192 for the same model,
which through Ollama alone reloads the model at every switch (ollama#18129). The backend is
the faithful fake (tests/fake_ollama.py) with Ollama's automatic context of 4096 (a machine under
24 GiB of GPU memory), which truncates an over-long prompt as Ollama does, and reports how much
of each prompt its runner's prompt cache could reuse.

Rows: direct (the fake's own /v1/messages or /v1/responses, Ollama's middleware), the proxy with
``--max-context N --num-ctx MODEL=N`` (the context pinned for the agent; --num-ctx alone is
capped at --max-context, 16384 by default), and the same with
``--no-stable-prefix`` (Claude Code only: Codex has no billing hash). Columns: the context the model ran with, reloads during the session,
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


class ClaudeCode:
    """One Claude Code session: /v1/messages, the history as Anthropic messages."""

    path = "/v1/messages"

    def __init__(self, system_tokens: int) -> None:
        self.system_tokens = system_tokens
        self.messages: List[Dict[str, Any]] = []

    def request(self, turn: int) -> Dict[str, Any]:
        self.messages.append({"role": "user", "content": USER_TURN % (turn, turn) * 3})
        return {"model": MODEL, "max_tokens": 32000, "system": system_prompt(self.system_tokens), "tools": TOOLS, "messages": self.messages}

    def absorb(self, answer: Dict[str, Any]) -> int:
        """Keep the answer in the history; the input tokens Ollama counted."""
        self.messages.append({"role": "assistant", "content": [b for b in answer["content"] or [] if b["type"] == "text"] or "ok"})
        return answer["usage"]["input_tokens"]


class Codex:
    """One Codex session: /v1/responses, the whole history as input items every turn."""

    path = "/v1/responses"

    def __init__(self, system_tokens: int) -> None:
        body = "You are Codex, a coding agent running in the Codex CLI, a terminal-based coding assistant. "
        self.instructions = (body * (system_tokens * 4 // len(body) + 1))[: system_tokens * 4]
        self.tools = [{"type": "function", "name": t["name"], "description": t["description"], "strict": False,
                       "parameters": t["input_schema"]} for t in TOOLS]
        self.input: List[Dict[str, Any]] = []

    def request(self, turn: int) -> Dict[str, Any]:
        self.input.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": USER_TURN % (turn, turn) * 3}]})
        return {"model": MODEL, "instructions": self.instructions, "input": self.input, "tools": self.tools, "tool_choice": "auto",
                "parallel_tool_calls": False, "reasoning": {"effort": "none"}, "store": False, "stream": False,
                "include": ["reasoning.encrypted_content"], "prompt_cache_key": "019a-session", "client_metadata": {}}

    def absorb(self, answer: Dict[str, Any]) -> int:
        for item in answer["output"]:
            if item["type"] == "message":
                self.input.append({"type": "message", "role": "assistant", "content": item["content"]})
        return answer["usage"]["input_tokens"]


USER_TURN = "Turn %d: please look at src/module_%d.py and fix the failing test. "
AGENTS = {"claude": ClaudeCode, "codex": Codex}


def replay(fake: FakeOllama, port: int, agent: Any, turns: int, mixed: bool) -> Dict[str, Any]:
    model = next(m for m in fake.models if m.name.startswith(MODEL))
    reloads_before = fake.reload_count(MODEL)
    ran_with, truncated, reuse = set(), 0, []
    for turn in range(turns):
        if mixed:  # another client on the native API, with its own num_ctx
            post(port, "/api/chat", {"model": MODEL, "stream": False, "options": {"num_ctx": 8192},
                                     "messages": [{"role": "user", "content": "complete this line of code"}]})
        input_tokens = agent.absorb(post(port, agent.path, agent.request(turn)))
        rec = fake.received[-1]
        native = rec.native if rec.native is not None else json.loads(rec.body)
        if input_tokens < prompt_token_count(model, native_chars(native)):
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
    ap.add_argument("--agent", choices=sorted(AGENTS) + ["both"], default="both")
    args = ap.parse_args()
    pinned = "proxy, --max-context %d --num-ctx %s=%d" % (args.num_ctx, MODEL, args.num_ctx)
    rows = []
    for name in sorted(AGENTS) if args.agent == "both" else [args.agent]:
        for mixed in (False, True):
            runs = [("direct (Ollama's own %s)" % AGENTS[name].path, None), (pinned, ())]
            if name == "claude" and not mixed:
                runs.append(("proxy, same, --no-stable-prefix", ("--no-stable-prefix",)))
            for label, flags in runs:
                fake = FakeOllama().start()
                fake.default_num_ctx = 4096
                try:
                    agent = AGENTS[name](args.system_tokens)
                    if flags is None:
                        result = replay(fake, fake.port, agent, args.turns, mixed)
                    else:
                        config = make_config(fake.url, "--max-context", str(args.num_ctx), "--num-ctx", "%s=%d" % (MODEL, args.num_ctx), *flags)
                        proxy = ProxyThread(config).start()
                        try:
                            result = replay(fake, proxy.port, agent, args.turns, mixed)
                        finally:
                            proxy.stop()
                    rows.append((name + (" + native traffic" if mixed else ""), label, result))
                finally:
                    fake.stop()
    print("%d turns, a %d-token system prompt with %d tools (Claude Code: max_tokens 32000; Codex: no max_output_tokens); "
          "the fake's automatic context 4096" % (args.turns, args.system_tokens, len(TOOLS)))
    print("| agent | target | context it ran with | reloads | truncated turns | prompt-cache reuse (turns 2+) |")
    print("|---|---|---|---|---|---|")
    for agent_name, label, r in rows:
        print("| %s | %s | %s | %d | %d of %d | %.0f %% |" % (agent_name, label, ", ".join(r["num_ctx"]), r["reloads"], r["truncated"], args.turns,
                                                           100 * r["reuse"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
