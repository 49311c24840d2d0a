"""--check --limits MODEL (SPEC §8): the pure pieces as tables, then the real process against the fake Ollama."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import urllib.request

import pytest
from conftest import make_config
from fake_ollama import Fault, FakeOllama

import ollama_proxy as op

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.path.join(ROOT, "ollama_proxy.py")
SIZES = [2048, 4096, 8192, 16384, 32768]


# -- the ladder and the prompt ---------------------------------------------------------------

@pytest.mark.parametrize(
    "sizes, training, ladder",
    [(SIZES, 131072, SIZES), (SIZES, 32768, SIZES), (SIZES, 8192, [2048, 4096, 8192]), (SIZES, 10000, [2048, 4096, 8192]),
     (SIZES, 0, SIZES), (SIZES, 1024, [1024]), ([8192, 2048, 2048, 4096], 131072, [2048, 4096, 8192]), ([4096], 2048, [2048])],
)
def test_limits_ladder(sizes, training, ladder):
    """The --context-sizes up to the training context, smallest first; all when unknown; the training context when all are above."""
    assert op.limits_ladder(sizes, training) == ladder


@pytest.mark.parametrize("num_ctx", [2048, 8192, 131072])
@pytest.mark.parametrize("chars_per_token", [2.5, 4.0, 6.0])
def test_limits_prompt_fills_most_of_the_context(num_ctx, chars_per_token):
    """At the ratio given, the prompt is 80-90 % of the context in the proxy's own token estimate, and ends with a question."""
    prompt = op.limits_prompt(num_ctx, chars_per_token)
    tokens = op.estimate_tokens(len(prompt), 0, chars_per_token)
    assert 0.80 * num_ctx <= tokens <= 0.90 * num_ctx
    assert prompt.endswith("?") and prompt.startswith(op.LIMITS_FILLER[:40])


# -- one answer: failure, measurements, verdict ----------------------------------------------

FINAL = {"done": True, "done_reason": "length", "load_duration": 2_500_000_000, "prompt_eval_count": 6963,
         "prompt_eval_duration": 3_481_500_000, "eval_count": 16, "eval_duration": 400_000_000}


@pytest.mark.parametrize(
    "status, objects, failure",
    [(200, [{"done": False}, FINAL], ""),
     (500, [{"error": "llama-server process has terminated: boom"}], "status 500: llama-server process has terminated: boom"),
     (200, [{"done": False}, {"error": "model runner has unexpectedly stopped"}], "model runner has unexpectedly stopped"),
     (200, [{"done": False}], "the answer ended without done:true"),
     (200, [], "the answer ended without done:true"),
     (200, [{"done": False}, None], "the answer ended without done:true"),
     (404, [], "status 404"),
     (502, [None], "status 502")],
)
def test_stream_failure(status, objects, failure):
    """An error line (before the stream with its status, or mid-stream with 200), another status, or no done:true."""
    assert op.stream_failure(status, objects) == failure


def test_limit_probe_measures_the_final_stats_and_ps():
    """Load seconds, prompt and generation rates from the final object; size and size_vram from /api/ps."""
    probe = op.limit_probe(8192, FINAL, 7.25, {"name": "llama3.2:latest", "size": 4_000_000_000, "size_vram": 3_000_000_000})
    assert probe == op.LimitProbe(8192, seconds=7.25, prompt_tokens=6963, load_seconds=2.5, prompt_rate=2000.0, eval_rate=40.0,
                                  size=4_000_000_000, size_vram=3_000_000_000)
    assert probe.answered and probe.gpu_share == 0.75


def test_limit_probe_without_stats_or_ps():
    """Stats Ollama omitted (zero) or not integers give 0, never a division by zero; no /api/ps entry: share unknown."""
    probe = op.limit_probe(2048, {"done": True, "eval_count": 3, "prompt_eval_count": True, "load_duration": "1s"}, 0.5, None)
    assert (probe.prompt_tokens, probe.load_seconds, probe.prompt_rate, probe.eval_rate, probe.gpu_share) == (0, 0.0, 0.0, 0.0, None)


@pytest.mark.parametrize(
    "probe, passed, why",
    [(op.LimitProbe(8192, size=100, size_vram=100), True, "ok"),
     (op.LimitProbe(8192), True, "ok"),  # /api/ps did not list it: nothing says it spilled
     (op.LimitProbe(8192, size=100, size_vram=62), False, "spills to the CPU: 62% in GPU memory"),
     (op.LimitProbe(8192, size=1000, size_vram=999), False, "spills to the CPU: 99% in GPU memory"),
     (op.LimitProbe(8192, size=100, size_vram=0), False, "spills to the CPU: 0% in GPU memory"),
     (op.LimitProbe(8192, error="status 500: out of memory"), False, "failed: status 500: out of memory"),
     (op.LimitProbe(8192, error="no answer for 600s (--request-timeout)", stalled=True), False, "stalled: no answer for 600s (--request-timeout)")],
)
def test_limit_verdict(probe, passed, why):
    """Passes only when it answered in time with all of the model in GPU memory."""
    assert op.limit_verdict(probe) == (passed, why)


# -- advice, table, progress -----------------------------------------------------------------

OK = [op.LimitProbe(n, prompt_tokens=int(n * 0.85), size=10, size_vram=10) for n in (2048, 4096, 8192)]
OOM = op.LimitProbe(16384, error="status 500: out of memory")


@pytest.mark.parametrize(
    "probes, training, sends, lines",
    [(OK + [OOM], 131072, 16384,
      ["largest size that passed: 8192; 16384 failed: status 500: out of memory",
       "use --max-context 8192 (a cap for every model), or --num-ctx m:latest=8192 (this model only)",
       "as set up now the proxy may send m:latest num_ctx 16384, more than passed here"]),
     (OK + [OOM], 131072, 8192,
      ["largest size that passed: 8192; 16384 failed: status 500: out of memory",
       "use --max-context 8192 (a cap for every model), or --num-ctx m:latest=8192 (this model only)"]),
     (OK + [OOM], 131072, 0,
      ["largest size that passed: 8192; 16384 failed: status 500: out of memory",
       "use --max-context 8192 (a cap for every model), or --num-ctx m:latest=8192 (this model only)",
       "as set up now the proxy may send m:latest num_ctx without a cap, more than passed here"]),
     (OK, 8192, 8192,
      ["every size passed, up to the model's training context, 8192",
       "use --max-context 8192 (a cap for every model), or --num-ctx m:latest=8192 (this model only)"]),
     (OK, 131072, 16384,
      ["every size tried passed, up to 8192; larger ones were not tried (the training context is 131072): add them to --context-sizes to go on",
       "use --max-context 8192 (a cap for every model), or --num-ctx m:latest=8192 (this model only)"]),
     ([op.LimitProbe(2048, size=10, size_vram=5)], 131072, 16384,
      ["no size passed: the smallest, 2048, spills to the CPU: 50% in GPU memory",
       "this machine cannot run m:latest with 2048 tokens of context as it is set up: try a smaller model or quantization, "
       "or fewer models loaded beside it"]),
     ([], 131072, 16384, ["no size was tried"])],
)
def test_limits_advice(probes, training, sends, lines):
    """The largest size that passed as --max-context N or --num-ctx MODEL=N, what stopped, and a too-large current setting."""
    assert op.limits_advice("m:latest", probes, training, sends) == lines


@pytest.mark.parametrize(
    "args, training, sends",
    [((), 131072, 16384), ((), 8192, 8192), (("--max-context", "0"), 131072, 131072), (("--max-context", "0"), 0, 0),
     (("--num-ctx", "m=4096"), 131072, 4096), (("--num-ctx", "m=65536"), 131072, 16384), (("--num-ctx", "other=4096"), 131072, 16384),
     (("--context-mode", "auto"), 131072, 16384)],
)
def test_limits_sends(args, training, sends):
    """The most the proxy as configured sends the model: --num-ctx for it, capped by --max-context and the training context."""
    assert op.limits_sends(make_config(None, *args), "m:latest", training) == sends


def test_format_limits_table():
    """A header, then one row per load: numbers right-aligned, '-' where a load measured nothing, the result last."""
    probes = [op.LimitProbe(2048, prompt_tokens=1751, load_seconds=0.5, prompt_rate=4000.0, eval_rate=1000.0, size=10, size_vram=10),
              op.LimitProbe(16384, prompt_tokens=13941, load_seconds=12.25, prompt_rate=812.4, eval_rate=31.25),
              op.LimitProbe(32768, error="x" * 100),
              op.LimitProbe(65536, error="no answer", stalled=True)]
    assert op.format_limits_table(probes) == (
        "num_ctx  prompt  load s  prompt tok/s  gen tok/s  in GPU  in time  result\n"
        "   2048    1751    0.50          4000     1000.0    100%      yes  ok\n"
        "  16384   13941   12.25           812       31.2       ?      yes  ok\n"
        "  32768       -       -             -          -       -      yes  failed: " + "x" * 61 + "...\n"
        "  65536       -       -             -          -       -       no  stalled: no answer\n")


def test_limits_progress_line():
    """A finished load's line: size, position, verdict, and what it measured when it answered."""
    probe = op.LimitProbe(4096, seconds=2.0, prompt_tokens=3471, load_seconds=0.5, prompt_rate=4000.0, eval_rate=1000.0, size=4, size_vram=3)
    assert op.limits_progress(probe, 2, 5) == ("num_ctx 4096 (2/5): spills to the CPU: 75% in GPU memory (load 0.50 s, prompt 3471 tokens "
                                               "at 4000 tokens/s, generation 1000.0 tokens/s, 75% in GPU, 2.0 s in all)")
    assert op.limits_progress(OOM, 4, 5) == "num_ctx 16384 (4/5): failed: status 500: out of memory"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("out, text", [(Terminal(), "\rloading a long line\rdone" + " " * 15 + "\n"), (io.StringIO(), "done\n")])
def test_limits_progress_rewrites_on_a_terminal_only(out, text):
    """On a terminal the pending line shows and is overwritten with \\r (padded to cover it); elsewhere only the result."""
    progress = op.LimitsProgress(out)
    progress.pending("loading a long line")
    progress.done("done")
    assert out.getvalue() == text


def test_ps_entry():
    """The model's /api/ps entry by name or model, compared normalized; None when absent or the answer is odd."""
    ps = {"models": [{"name": "qwen3:8b", "model": "qwen3:8b"}, {"name": "Llama3.2:latest", "model": "llama3.2:latest", "size": 1}]}
    assert op.ps_entry(ps, "llama3.2:latest") == ps["models"][1]
    assert op.ps_entry(ps, "all-minilm:latest") is None
    assert op.ps_entry({"models": None}, "qwen3:8b") is None and op.ps_entry(None, "qwen3:8b") is None


# -- the flag --------------------------------------------------------------------------------

def test_limits_flag_and_variable():
    """--limits MODEL with --check; $PROXY_LIMITS read only with --check (a service's environment does not turn it on)."""
    assert op.build_config(["--check", "--limits", " llama3.2 "], {}).limits == "llama3.2"
    assert op.build_config(["--check"], {"PROXY_LIMITS": "qwen3:8b"}).limits == "qwen3:8b"
    assert op.build_config(["--check", "--limits", "llama3.2"], {"PROXY_LIMITS": "qwen3:8b"}).limits == "llama3.2"
    assert op.build_config([], {"PROXY_LIMITS": "qwen3:8b"}).limits is None
    assert op.build_config(["--check"], {}).limits is None
    for argv in (["--limits", "llama3.2"], ["--check", "--limits", " "]):
        with pytest.raises(op.ConfigError):
            op.build_config(argv, {})


# -- the real process against the fake -------------------------------------------------------

def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "PROXY_", "LOG_", "MAX_", "DEFAULT_", "REQUEST_"))}
    env.update(extra)
    return env


def run_limits(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, PROXY, "--check", *args], capture_output=True, text=True, timeout=60, env=clean_env(**env))


def chat_loads(fake) -> list:
    """The limits probe's loads as the fake received them: /api/chat requests with a message."""
    return [r.json for r in fake.received if r.path == "/api/chat" and r.json.get("messages")]


def test_limits_stops_at_the_first_failure_and_advises_the_last_size_that_passed(fake):
    """Against a fake that fails above 8192: 2048, 4096, 8192, 16384 tried in this order, no more; 8192 advised; unloaded."""
    fake.oom_above = 8192
    proc = run_limits("--limits", "llama3.2", "--backend", fake.url)
    assert proc.returncode == 0, proc.stderr
    loads = chat_loads(fake)
    assert [b["options"]["num_ctx"] for b in loads] == [2048, 4096, 8192, 16384]
    for body in loads:
        assert body["stream"] is True and body["options"]["num_predict"] == op.LIMITS_NUM_PREDICT and body["model"] == "llama3.2:latest"
    assert [(e["num_ctx"], e["ok"]) for e in fake.loads] == [(2048, True), (4096, True), (8192, True), (16384, False)]
    last = [r.json for r in fake.received if r.path == "/api/chat"][-1]
    assert last == {"model": "llama3.2:latest", "messages": [], "keep_alive": 0, "stream": False}
    assert fake.loaded == {}
    out = proc.stdout
    assert "num_ctx 16384 (4/5): failed: status 500: llama-server process has terminated" in out and "\r" not in out
    assert "num_ctx  prompt  load s  prompt tok/s  gen tok/s  in GPU  in time  result" in out
    assert "   8192    6933    0.50          4000     1000.0    100%      yes  ok" in out
    assert "  largest size that passed: 8192; 16384 failed: " in out
    assert "  use --max-context 8192 (a cap for every model), or --num-ctx llama3.2:latest=8192 (this model only)" in out
    assert "  unloaded llama3.2:latest" in out
    assert "32768 " not in out.split("\n\n", 1)[1]  # the table has no row for a size never tried


def test_limits_prompts_fill_most_of_each_context(fake):
    """Each load's prompt_eval_count, as the fake counts it, is 80-90 % of that load's num_ctx."""
    fake.oom_above = 8192
    proc = run_limits("--limits", "llama3.2", "--backend", fake.url)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip().split(" ")[0] in ("2048", "4096", "8192")]
    assert len(rows) == 3
    for row in rows:
        assert 0.80 * int(row[0]) <= int(row[1]) <= 0.90 * int(row[0])


def test_limits_stops_where_the_model_spills_to_the_cpu(fake):
    """Above spill_above /api/ps says size_vram < size: 8192 is the last size tried, 4096 advised."""
    fake.spill_above = 4096
    proc = run_limits("--limits", "llama3.2", "--backend", fake.url)
    assert proc.returncode == 0, proc.stderr
    assert [b["options"]["num_ctx"] for b in chat_loads(fake)] == [2048, 4096, 8192]
    assert "num_ctx 8192 (3/5): spills to the CPU: 84% in GPU memory" in proc.stdout
    assert "--max-context 4096" in proc.stdout and fake.loaded == {}


def test_limits_stops_where_the_backend_stalls(fake):
    """A load that sends nothing for --request-timeout stalls: the ladder stops there, 4096 advised, the model unloaded."""
    fake.add_fault(Fault(path="/api/chat", times=2))  # the first two loads go through untouched
    fake.add_fault(Fault(path="/api/chat", delay_before_headers=5))
    proc = run_limits("--limits", "llama3.2", "--backend", fake.url, "--request-timeout", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert [b["options"]["num_ctx"] for b in chat_loads(fake)] == [2048, 4096, 8192]
    assert "num_ctx 8192 (3/5): stalled: no answer for 0.5s (--request-timeout)" in proc.stdout
    assert "       no  stalled" in proc.stdout and "--max-context 4096" in proc.stdout and fake.loaded == {}


def test_limits_leaves_a_model_loaded_before_as_it_was(fake):
    """A model already loaded (at 8192) is not unloaded: after the probe it is loaded again at 8192."""
    fake.oom_above = 8192
    body = json.dumps({"model": "llama3.2", "messages": [], "options": {"num_ctx": 8192}, "stream": False}).encode()
    urllib.request.urlopen(urllib.request.Request(fake.url + "/api/chat", data=body), timeout=10).read()
    assert fake.loaded["llama3.2:latest"]["num_ctx"] == 8192
    proc = run_limits("--limits", "llama3.2", "--backend", fake.url)
    assert proc.returncode == 0, proc.stderr
    assert not [r for r in fake.received if r.path == "/api/chat" and r.json.get("keep_alive") == 0]
    assert fake.loaded["llama3.2:latest"]["num_ctx"] == 8192
    assert "loaded before at 8192" in proc.stdout and "llama3.2:latest was loaded before: loaded again at num_ctx 8192" in proc.stdout


def test_limits_unknown_model(fake):
    """A model no backend has: one clear line on stderr, exit 1, nothing loaded."""
    proc = run_limits("--limits", "nosuch", "--backend", fake.url)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["ollama-proxy: error: --limits: model 'nosuch:latest' is not on backend 127.0.0.1:%d; "
                                                "check the name or pull it" % fake.port]
    assert proc.stdout == "" and not [r for r in fake.received if r.path == "/api/chat"]


def test_limits_no_backend_reachable():
    """No backend answers: one line naming it, exit 1."""
    proc = run_limits("--limits", "llama3.2", "--backend", "http://127.0.0.1:1")
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("ollama-proxy: error: --limits: no backend reachable (127.0.0.1:1: cannot connect")


def test_limits_needs_check():
    """--limits without --check is a usage error: exit 2, one line."""
    proc = subprocess.run([sys.executable, PROXY, "--limits", "llama3.2"], capture_output=True, text=True, timeout=60, env=clean_env())
    assert proc.returncode == 2 and proc.stderr == "ollama-proxy: error: --limits needs --check: run it as --check --limits MODEL\n"


def test_limits_follows_the_route_of_the_model(fake):
    """With --route pinning the model to the second backend, the probe loads it there, not on the first that has it."""
    with FakeOllama() as second:
        proc = run_limits("--limits", "llama3.2", "--backend", "a=" + fake.url, "--backend", "b=" + second.url, "--route", "llama3.2=b",
                          "--context-sizes", "2048")
        assert proc.returncode == 0, proc.stderr
        assert not chat_loads(fake) and [b["options"]["num_ctx"] for b in chat_loads(second)] == [2048]
    assert "on backend b (" in proc.stdout


def test_limits_on_a_terminal_rewrites_the_progress_line(fake):
    """Run in-process with a terminal as output: each size's pending line is rewritten with \\r by its result."""
    fake.oom_above = 2048
    out = Terminal()
    config = make_config(fake.url, "--check", "--limits", "llama3.2")
    assert asyncio.run(op.run_limits(config, "llama3.2", out=out)) == 0
    text = out.getvalue()
    assert "\rnum_ctx 2048 (1/5): loading with a prompt of about 1740 tokens...\rnum_ctx 2048 (1/5): ok (" in text
    assert "\rnum_ctx 4096 (2/5): failed: " in text and fake.loaded == {}


def test_limits_follows_an_alias(fake):
    """--limits ALIAS measures the model the alias sends upstream."""
    proc = run_limits("--limits", "fast", "--backend", fake.url, "--alias", "fast=qwen3:8b", "--context-sizes", "2048")
    assert proc.returncode == 0, proc.stderr
    assert [(b["model"], b["options"]["num_ctx"]) for b in chat_loads(fake)] == [("qwen3:8b", 2048)]
    assert proc.stdout.startswith("limits of qwen3:8b on backend ")
