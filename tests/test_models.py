"""Unit tables for model names, context sizing and the request modifiers (pure functions, no I/O)."""

from __future__ import annotations

import dataclasses

import pytest

import ollama_proxy as op

BASE = op.build_config(["--backend", "http://127.0.0.1:1"], {})
LLAMA = op.ModelInfo(name="llama3.2:latest", architecture="llama", context_length=131072, capabilities=("completion", "tools"))
NOMIC = op.ModelInfo(name="nomic-embed-text:latest", architecture="nomic-bert", context_length=2048, capabilities=("embedding",))


def config(**overrides) -> op.Config:
    return dataclasses.replace(BASE, **overrides)


def ctx(path="/api/chat", body=None, model="llama3.2:latest", info=LLAMA, **kw) -> op.ModifyContext:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]} if body is None else body
    kw.setdefault("config", BASE)
    return op.ModifyContext(path=path, body=body, model=model, info=info, **kw)


# -- names, durations, MODEL=VALUE -----------------------------------------------------------

@pytest.mark.parametrize(
    "name, normal",
    [("llama3.2", "llama3.2:latest"), ("Llama3.2:8B", "llama3.2:8b"), ("user/model", "user/model:latest"),
     ("registry.ollama.ai/library/qwen3:8b", "qwen3:8b"), ("library/llama3.2", "llama3.2:latest"),
     ("registry.ollama.ai/user/m:1b", "user/m:1b"), ("host:5000/m", "host:5000/m:latest")],
)
def test_normalize_model(name, normal):
    """Names get Ollama's display form: lower-case, :latest when untagged."""
    assert op.normalize_model(name) == normal


@pytest.mark.parametrize("text, value", [("300", 300), ("-1", -1), ("0", 0), ("10m", "10m"), ("1h30m", "1h30m"), ("-1m", "-1m"), ("1.5h", "1.5h"), ("250ms", "250ms")])
def test_parse_duration_accepts(text, value):
    """A bare integer is seconds (a JSON number); a Go duration stays a string."""
    assert op.parse_duration(text) == value


@pytest.mark.parametrize("text", ["5 minutes", "m", "10x", "", "1h-"])
def test_parse_duration_rejects(text):
    """Anything Ollama would refuse is refused at start."""
    with pytest.raises(op.ConfigError):
        op.parse_duration(text)


def test_model_values_and_patterns():
    """MODEL=VALUE pairs: bare names get :latest, patterns match with fnmatch, first match wins."""
    pairs = op.parse_model_values("--num-ctx", ["llama3.2=8192", "qwen3*=4096", "*embed*=2048"], int)
    assert op.lookup_model_value(pairs, "llama3.2:latest") == 8192
    assert op.lookup_model_value(pairs, "qwen3:8b") == 4096
    assert op.lookup_model_value(pairs, "nomic-embed-text:latest") == 2048
    assert op.lookup_model_value(pairs, "mistral:latest") is None
    with pytest.raises(op.ConfigError):
        op.parse_model_values("--num-ctx", ["llama3.2"], int)


def test_config_flags_and_variables():
    """The §5 flags and their variables parse, validate and reach Config."""
    env = {"PROXY_NUM_CTX": "llama3.2=8192,qwen3*=4096", "PROXY_KEEP_ALIVE": "llama3.2=-1,*=10m", "PROXY_CONTEXT_MODE": "auto"}
    c = op.build_config(["--max-context", "0", "--context-sizes", "8192,2048", "--num-predict", "0"], env)
    assert c.max_context == 0 and c.context_sizes == (2048, 8192) and c.num_predict == 0 and c.context_mode == "auto"
    assert c.num_ctx == (("llama3.2:latest", 8192), ("qwen3*", 4096))
    assert c.keep_alive == (("llama3.2:latest", -1), ("*", "10m"))
    for argv in (["--context-mode", "huge"], ["--keep-alive", "m=5 minutes"], ["--num-ctx", "m=0"], ["--context-sizes", "a,b"], ["--max-context", "-5"]):
        with pytest.raises(op.ConfigError):
            op.build_config(argv, {})


# -- metadata and estimates ------------------------------------------------------------------

def test_model_info_from_show():
    """The training context is model_info["<general.architecture>.context_length"]."""
    show = {"model_info": {"general.architecture": "qwen3", "qwen3.context_length": 40960, "llama.context_length": 1}, "capabilities": ["completion", "thinking"]}
    info = op.model_info_from_show("qwen3:8b", show, "abc")
    assert (info.architecture, info.context_length, info.capabilities, info.digest) == ("qwen3", 40960, ("completion", "thinking"), "abc")
    assert op.model_info_from_show("x", {"model_info": {}}).context_length == 0
    assert NOMIC.is_embedding and not LLAMA.is_embedding


@pytest.mark.parametrize(
    "path, body, chars, images",
    [
        ("/api/chat", {"messages": [{"role": "system", "content": "abcd"}, {"role": "user", "content": "hello", "images": ["x", "y"]}]}, 9, 2),
        ("/api/chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": "abc"}]}], "tools": [{"a": 1}]}, 3 + len('[{"a": 1}]'), 0),
        ("/api/generate", {"prompt": "hello", "system": "sys", "images": ["i"]}, 8, 1),
        ("/api/embed", {"input": ["a", "abcdef", "abc"]}, 6, 0),
        ("/api/embeddings", {"prompt": "abcd"}, 4, 0),
    ],
)
def test_prompt_size(path, body, chars, images):
    """All message, system, prompt and tool text counts; embeddings count their longest input."""
    assert op.prompt_size(path, body) == (chars, images)


@pytest.mark.parametrize(
    "path, body, budget",
    [("/api/chat", {}, 1024), ("/api/chat", {"options": {"num_predict": 50}}, 50), ("/api/generate", {"max_tokens": 300}, 300),
     ("/api/chat", {"options": {"num_predict": -1}}, 1024), ("/api/embed", {}, 0)],
)
def test_response_budget(path, body, budget):
    """The request's own limit, else 1024; embeddings need none."""
    assert op.response_budget(path, body) == budget


def test_estimate_and_needed():
    """Tokens = ceil(chars / ratio) + 768 per image; needed adds the budget, 100 template and 200 margin."""
    assert op.estimate_tokens(401, 0, 4.0) == 101
    assert op.estimate_tokens(0, 2, 4.0) == 1536
    assert op.needed_context(1000, 1024) == 2324


@pytest.mark.parametrize(
    "needed, loaded, cap, size",
    [
        (1500, 0, 16384, 2048),     # smallest that holds it
        (2049, 0, 16384, 4096),
        (5000, 8192, 16384, 8192),  # loaded and holds it: no reload
        (9000, 8192, 16384, 16384),  # loaded too small: grow
        (1500, 4096, 16384, 4096),  # never shrink while loaded
        (40000, 0, 16384, 16384),   # none holds it: the cap
        (3000, 0, 2048, 2048),      # capped by the training context
        (1000, 65536, 16384, 2048),  # loaded above the cap (another client): ignored
    ],
)
def test_choose_auto_size(needed, loaded, cap, size):
    """Auto sizing picks the smallest size that holds the request, reload-aware, capped."""
    assert op.choose_auto_size(needed, (2048, 4096, 8192, 16384, 32768), cap, loaded)[0] == size


def test_context_cap_and_next_smaller():
    """The cap is min(training, --max-context) with 0 meaning none; the OOM fallback steps down one size."""
    assert op.context_cap(131072, 16384) == 16384 and op.context_cap(2048, 16384) == 2048
    assert op.context_cap(0, 16384) == 16384 and op.context_cap(8192, 0) == 8192 and op.context_cap(0, 0) == 0
    assert op.next_smaller_size(16384, (2048, 4096, 8192, 16384)) == 8192 and op.next_smaller_size(2048, (2048,)) == 0


@pytest.mark.parametrize(
    "old, chars, count, num_ctx, expected, marked",
    [
        # denser: the count is a lower bound, so chars / count is an upper bound on the ratio: taken at once
        (4.0, 3000, 1000, 8192, 3.0, False),
        (4.0, 3000, 1000, 0, 3.0, False),  # even when the context is unknown
        (4.0, 3000, 6000, 8192, 1.0, False),  # bounded below
        # sparser: smoothed, and only when the count is under half the context (nothing was cut)
        (2.0, 3000, 1000, 8192, 2.0 + 0.3 * (3.0 - 2.0), False),
        (2.0, 30000, 5000, 8192, 2.0, False),  # 5000 >= 8192 / 2: the count may have been cut
        (2.0, 30000, 1000, 0, 2.0, False),  # context unknown: never sparser
        (4.0, 100000, 10, 8192, 4.0 + 0.3 * 4.0, False),  # bounded above at 8
        # truncation's mark: at most chars / context, at once
        (4.0, 12000, 2051, 4096, 12000 / 4096, True),  # what Ollama keeps of 4096 with num_keep 4: 4096 - 2046 = 2050
        (4.0, 12000, 4090, 4096, 12000 / 4096, True),  # within a few tokens of the context (old runner)
        (2.0, 12000, 2050, 4096, 2.0, True),  # already denser than chars / context: kept
        (4.0, 60000, 16386, 32768, 60000 / 32768, True),  # little-coder#128: ~50k tokens at 32768 reported 16386
        # nothing to learn
        (4.0, 0, 10, 4096, 4.0, False),
        (4.0, 25, 16, 4096, 4.0, False),  # template-dominated
        (4.0, 3000, 0, 4096, 4.0, False),
    ],
)
def test_calibrate(old, chars, count, num_ctx, expected, marked):
    """SPEC §5: a count is a lower bound; denser always, sparser only under half the context, the mark caps the ratio."""
    ratio, truncated = op.calibrate(old, chars, count, num_ctx)
    assert ratio == pytest.approx(expected) and truncated is marked


@pytest.mark.parametrize(
    "count, num_ctx, num_keep, marked",
    [(2050, 4096, 4, True), (2051, 4096, 5, True), (2040, 4096, 4, True), (2000, 4096, 4, False), (4096, 4096, 4, True),
     (4079, 4096, 4, False), (16386, 32768, 4, True), (3000, 4096, 4, False), (100, 0, 4, False), (1030, 2048, 4, True),
     (2050, 4096, 1000, False), (2548, 4096, 1000, True)],
)
def test_truncation_mark(count, num_ctx, num_keep, marked):
    assert op.bears_truncation_mark(count, num_ctx, num_keep) is marked


def test_truncation_keeps_matches_ollama():
    """contextShiftPromptLimit: num_ctx - max((num_ctx - keep) / 2, 1)."""
    assert op.truncation_keeps(4096) == 2050 and op.truncation_keeps(32768) == 16386 and op.truncation_keeps(4096, 5) == 2051
    assert op.truncation_keeps(2, 4) == 1 and op.truncation_keeps(8, 0) == 4


def test_context_modifier_log_line():
    """The change reads like: num_ctx 131072 -> 2048 (nomic-embed-text:latest: trained 2048)."""
    c = ctx(path="/api/embed", info=NOMIC, model="nomic-embed-text:latest", body={"model": "nomic-embed-text", "input": "x", "options": {"num_ctx": 131072}})
    (change,) = op.ContextModifier().modify(c)
    assert change.describe("nomic-embed-text:latest") == "num_ctx 131072 -> 2048 (nomic-embed-text:latest: trained 2048)"


@pytest.mark.parametrize(
    "body, cfg, expected",
    [
        ({}, {}, 4096),
        ({"options": {"num_predict": 10}}, {}, 10),          # explicit: never changed
        ({"options": {"num_predict": -1}}, {}, -1),
        ({"max_tokens": 77}, {}, 77),
        ({"max_completion_tokens": 88}, {}, 88),
        ({}, {"num_predict": 0}, None),                      # 0 = never inject
    ],
)
def test_num_predict_modifier(body, cfg, expected):
    """num_predict: explicit values stay; max_tokens or max_completion_tokens, else --num-predict."""
    c = ctx(body=dict(body, model="m", messages=[]), config=config(**cfg))
    op.NumPredictModifier().modify(c)
    assert (c.body.get("options") or {}).get("num_predict") == expected


@pytest.mark.parametrize(
    "body, expected",
    [({}, -1), ({"keep_alive": "5m"}, "5m"), ({"keep_alive": 0}, 0)],
)
def test_keep_alive_modifier(body, expected):
    """--keep-alive fills keep_alive only when the request has none."""
    c = ctx(body=dict(body, model="m"), config=config(keep_alive=(("llama3.2:latest", -1),)))
    op.KeepAliveModifier().modify(c)
    assert c.body["keep_alive"] == expected


def test_apply_modifiers_skips_what_needs_metadata():
    """Without /api/show data the context modifier is skipped; the others still run."""
    c = ctx(info=None)
    changes = op.apply_modifiers(c)
    assert [ch.modifier for ch in changes] == ["num_predict"]
    assert "num_ctx" not in c.body["options"]


def test_embeddings_get_no_num_predict():
    """Embedding requests get num_ctx but never num_predict."""
    c = ctx(path="/api/embed", info=NOMIC, model="nomic-embed-text:latest", body={"model": "nomic-embed-text", "input": "x"})
    assert [ch.modifier for ch in op.apply_modifiers(c)] == ["num_ctx"]


@pytest.mark.parametrize(
    "status, message, failure",
    [(500, "llama-server process has terminated: error:failed to allocate buffer", True), (500, "model requires more system memory (10 GiB)", True),
     (500, "an error was encountered while running the model", False), (404, "out of memory", False),
     # Ollama's outOfMemorySubstrings (llm/status.go), case-insensitive
     (500, "llama-server process has terminated: exit status 1: ggml_vulkan: vk::Queue::submit: ErrorOutOfMemory", True),
     (500, "llama-server process has terminated: exit status 2: CUDA error: out of memory", True),
     (500, "llama-server process has terminated: error: cudaMalloc failed: out of memory", True),
     (500, "llama-server reported out-of-memory during startup: hipMalloc failed", True),
     (500, "llama-server process has terminated: exit status 1: ggml_metal: not enough memory", True),
     (500, "llama-server process has terminated: error: allocation failed", True),
     (500, "llama-server process has terminated: VK_ERROR_OUT_OF_DEVICE_MEMORY", True),
     # a crash that is not out of memory: no smaller retry
     (500, "llama-server process has terminated: exit status 2", False),
     (500, "llama-server process has terminated: signal: segmentation fault", False),
     (500, "llama-server process has terminated: exit status 1: error loading model: unable to allocate backend", False),
     (500, "timed out waiting for llama-server to start - ", False)],
)
def test_is_load_failure(status, message, failure):
    """Only a 5xx that ran out of memory, as Ollama's IsOutOfMemoryMessage reads it, counts as a failed load."""
    assert op.is_load_failure(status, message) is failure


@pytest.mark.parametrize(
    "target, forced, rest",
    [(b"/proxy-context/8192/api/chat", 8192, b"/api/chat"), (b"/proxy-context/auto/v1/chat/completions?x=1", "auto", b"/v1/chat/completions?x=1")],
)
def test_parse_context_url(target, forced, rest):
    """/proxy-context/<N|auto>/<path> gives the size and the real target."""
    assert op.parse_context_url(target) == (forced, rest)


@pytest.mark.parametrize("target", [b"/proxy-context/0/api/chat", b"/proxy-context/big/api/chat", b"/proxy-context/-5/api/chat"])
def test_parse_context_url_rejects(target):
    """A size that is not a positive number or 'auto' is a 400."""
    with pytest.raises(op.BadRequest):
        op.parse_context_url(target)


def test_auto_sizing_of_chunked_embeddings_uses_the_piece_length():
    """With chunking, a 100,000-character input is sized by its 2000-character pieces, not by its whole length."""
    big = op.ModelInfo(name="e:latest", architecture="bert", context_length=32768, capabilities=("embedding",))
    c = ctx(path="/api/embed", info=big, model="e:latest", body={"model": "e", "input": "x " * 50000},
            config=config(context_mode="auto"), embed_limit=2000)
    op.ContextModifier().modify(c)
    assert c.body["options"]["num_ctx"] == 2048


def test_ceiling_after_out_of_memory_caps_the_context():
    """A size known to fail on this backend is not asked for again."""
    c = ctx(ceiling=8192)
    op.ContextModifier().modify(c)
    assert c.body["options"]["num_ctx"] == 8192


@pytest.mark.parametrize(
    "argv, client, forced, expected",
    [
        ([], None, None, ("model", None)),
        ([], 4096, None, ("client", 4096)),
        (["--num-ctx", "llama3.2=8192"], 4096, None, ("fixed", 8192)),
        (["--num-ctx", "llama3*=8192"], None, None, ("fixed", 8192)),
        (["--num-ctx", "qwen*=8192"], None, None, ("model", None)),
        (["--num-ctx", "llama3.2=8192"], 4096, 2048, ("url", 2048)),
        (["--num-ctx", "llama3.2=8192"], 4096, "auto", ("auto", None)),
        (["--context-mode", "auto"], None, None, ("auto", None)),
        (["--context-mode", "auto"], 1024, None, ("client", 1024)),
        (["--context-mode", "off"], None, None, ("off", None)),
        (["--context-mode", "off"], 2048, None, ("client", 2048)),
        (["--context-mode", "off"], None, 4096, ("url", 4096)),
    ],
)
def test_context_source_is_the_one_precedence(argv, client, forced, expected):
    """SPEC §5: the URL, then --num-ctx, then the client's num_ctx, then --context-mode."""
    config = op.build_config(argv, {})
    assert op.context_source(config, "llama3.2:latest", client, forced) == expected


@pytest.mark.parametrize("options, expected", [(None, None), ({}, None), ({"num_ctx": 8192}, 8192), ({"num_ctx": 0}, None), ({"num_ctx": True}, None),
                                               ({"num_ctx": "8192"}, None), ({"num_ctx": -1}, None), ([1], None)])
def test_client_num_ctx(options, expected):
    body = {"model": "m"} if options is None else {"model": "m", "options": options}
    assert op.client_num_ctx(body) == expected


# -- an attempt's body: the modifiers never reach the request's own ------------------------------------

@pytest.mark.parametrize(
    "path, body, overrides",
    [
        ("/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": "x" * 9000}], "options": {"temperature": 0.2}},
         {"context_mode": "auto", "num_predict": 500, "keep_alive": (("*", "10m"),)}),
        ("/api/generate", {"model": "llama3.2", "prompt": "hi", "options": {"num_ctx": 500000, "num_predict": -1}}, {"num_predict": 200}),
        ("/api/embed", {"model": "nomic-embed-text", "input": ["a" * 50, "b"], "truncate": True}, {"max_embed_chars": 10}),
        ("/api/chat", {"model": "llama3.2", "messages": [], "options": None}, {}),
    ],
)
def test_attempt_body_leaves_the_request_untouched(path, body, overrides):
    """Each attempt starts from ``attempt_body(request)``: whatever the modifiers set (num_ctx,
    num_predict, keep_alive, in options or at the top), the request a retry starts from again is
    unchanged, so there is nothing to restore."""
    import copy
    import json

    before = json.dumps(body, sort_keys=True)
    original = copy.deepcopy(body)
    attempt = op.attempt_body(body)
    info = NOMIC if "embed" in path else LLAMA
    changes = op.apply_modifiers(ctx(path=path, body=attempt, model=op.normalize_model(body["model"]), info=info,
                                     config=config(**overrides), prompt=op.prompt_size(path, attempt) if path != "/api/embed" else None))
    if overrides:
        assert changes  # the case does exercise the modifiers
    assert json.dumps(body, sort_keys=True) == before and body == original
