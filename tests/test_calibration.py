"""Learning that cannot get stuck and truncation that is never silent (SPEC §5, issue 11), end to end.

The fake Ollama truncates as Ollama does (ollama-api.md §7.5): a prompt longer than the context
loses whole chat messages from the front, then the runner keeps about half the context, with no
error, and ``prompt_eval_count`` is taken after that.  Its models' tokenizers are set per test
(``FakeModel.chars_per_token``), so the proxy must learn the real ratio from what Ollama reports.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request

import pytest
from fake_ollama import FakeModel, FakeOllama, prompt_token_count

PROMPT_CHARS = 12000


def words(n_chars: int, seed: int = 0) -> str:
    text = " ".join("w%d" % ((i * 7 + seed) % 1000) for i in range(n_chars))
    return text[:n_chars]


def post(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def dense_model(chars_per_token: float, name: str = "dense:latest", capabilities=None, context_length: int = 131072) -> FakeModel:
    return FakeModel(name=name, arch="llama", context_length=context_length, capabilities=capabilities or ["completion"],
                     embedding_length=64 if capabilities == ["embedding"] else 3072, chars_per_token=chars_per_token)


def truncation_warnings(caplog, timeout: float = 5.0) -> list:
    """The truncation warnings logged so far, once there is one: the proxy learns from an answer after
    the client has it, so the line may come a moment after the response."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "truncated" in r.getMessage()]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


@pytest.fixture
def fake_with():
    started = []

    def make(*models: FakeModel) -> FakeOllama:
        fake = FakeOllama(models=list(models)).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


def run_session(fake: FakeOllama, proxy, model: FakeModel, requests: int, chars: int = PROMPT_CHARS) -> list:
    """The same long prompt ``requests`` times: per request (num_ctx sent, tokens Ollama evaluated, the prompt's real tokens)."""
    content = words(chars)
    full = prompt_token_count(model, len(content))
    rows = []
    for _ in range(requests):
        answer = post(proxy.url, "/api/chat", {"model": "dense", "stream": False, "options": {"num_predict": 256},
                                               "messages": [{"role": "user", "content": content}]})
        rows.append((fake.received[-1].json["options"]["num_ctx"], answer["prompt_eval_count"], full))
    return rows


def requests_until_held(rows: list) -> int:
    """1-based index of the first request whose whole prompt was evaluated (and every later one too)."""
    for i in range(len(rows)):
        if all(evaluated == full for _, evaluated, full in rows[i:]):
            return i + 1
    return len(rows) + 1


@pytest.mark.parametrize("chars_per_token", [1.5, 2.5, 4.0, 6.0])
def test_auto_sizing_converges(fake_with, start_proxy, chars_per_token):
    """Against a fake that truncates like Ollama, the size holds the prompt by the second request at the latest, and stays."""
    model = dense_model(chars_per_token)
    fake = fake_with(model)
    proxy = start_proxy(fake.url, "--context-mode", "auto", "--max-context", "65536", "--context-sizes", "2048,4096,8192,16384,32768,65536")
    rows = run_session(fake, proxy, model, 8)
    assert requests_until_held(rows) <= 2, rows
    sizes = [num_ctx for num_ctx, _, _ in rows]
    assert sizes == sorted(sizes), rows  # the size only grows while the model stays loaded (no reload back and forth)
    assert len(set(sizes[2:])) == 1, rows  # and then settles


def test_auto_sizing_stuck_case_of_the_report(fake_with, start_proxy):
    """The reported case: 2.5 characters a token, 12,000 characters, first sized at 4 a token (4096): truncated once, then held."""
    model = dense_model(2.5)
    fake = fake_with(model)
    proxy = start_proxy(fake.url, "--context-mode", "auto")
    rows = run_session(fake, proxy, model, 40)
    assert rows[0][0] == 4096 and rows[0][1] < rows[0][2]  # truncated, about half the context kept, no error
    assert all(evaluated == full for _, evaluated, full in rows[1:]), rows[:3]
    assert proxy.call(lambda: proxy.app.models.chars_per_token["dense:latest"]) == pytest.approx(PROMPT_CHARS / rows[1][2], rel=0.01)


def test_truncation_is_warned_counted_and_the_next_request_holds_it(fake_with, start_proxy, caplog):
    model = dense_model(2.5)
    fake = fake_with(model)
    proxy = start_proxy(fake.url, "--context-mode", "auto")
    logging.getLogger("ollama_proxy").setLevel(logging.INFO)
    with caplog.at_level(logging.INFO, logger="ollama_proxy"):
        rows = run_session(fake, proxy, model, 2)
    warnings = truncation_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "model=dense" in warnings[0] and "POST /api/chat" in warnings[0] and "context of 4096" in warnings[0]
    assert "next request gets a larger context" in warnings[0]
    assert rows[1][0] > 4096 and rows[1][1] == rows[1][2]
    metrics = urllib.request.urlopen(proxy.url + "/__proxy/metrics", timeout=10).read().decode()
    assert 'ollama_proxy_truncated_prompts_total{model="dense:latest"} 1' in metrics


def test_model_mode_cap_truncating_is_warned(fake_with, start_proxy, caplog):
    """Model mode with a cap below the prompt: Ollama cuts it, and the proxy says so (with what to do)."""
    model = dense_model(4.0)
    fake = fake_with(model)
    proxy = start_proxy(fake.url, "--max-context", "4096")
    logging.getLogger("ollama_proxy").setLevel(logging.INFO)
    with caplog.at_level(logging.WARNING, logger="ollama_proxy"):
        post(proxy.url, "/api/chat", {"model": "dense", "stream": False, "messages": [{"role": "user", "content": words(30000)}]})
    (warning,) = truncation_warnings(caplog)
    assert "context of 4096" in warning and "about 7500 tokens" in warning and "--max-context" in warning


def test_growing_conversation_whose_old_turns_ollama_drops(fake_with, start_proxy, caplog):
    """Chat truncation drops whole old messages (no mark in the count): the calibrated estimate still sees it."""
    model = dense_model(3.0)
    fake = fake_with(model)
    proxy = start_proxy(fake.url, "--context-mode", "auto", "--context-sizes", "2048,4096,8192,16384,32768")
    messages = [{"role": "system", "content": words(2000)}]
    logging.getLogger("ollama_proxy").setLevel(logging.INFO)
    truncated_turns = 0
    sent = []
    with caplog.at_level(logging.WARNING, logger="ollama_proxy"):
        for turn in range(20):
            messages.append({"role": "user", "content": words(1500, seed=turn)})
            answer = post(proxy.url, "/api/chat", {"model": "dense", "stream": False, "messages": messages, "options": {"num_predict": 128}})
            chars = sum(len(m["content"]) for m in messages)
            sent.append(fake.received[-1].json["options"]["num_ctx"])
            if answer["prompt_eval_count"] < prompt_token_count(model, chars):
                truncated_turns += 1
            messages.append({"role": "assistant", "content": words(300, seed=turn + 100)})
    assert truncated_turns == 0, sent
    assert sent == sorted(sent)


def test_dense_embeddings_are_cut_shorter_after_calibration(fake_with, start_proxy):
    """--max-embed-chars 0: the limit is the runner batch x the model's measured ratio, learned from /api/embed's count."""
    model = dense_model(1.5, name="dense-embed:latest", capabilities=["embedding"], context_length=8192)
    fake = fake_with(model)
    proxy = start_proxy(fake.url, "--max-embed-chars", "0")
    text = words(20000)
    post(proxy.url, "/api/embed", {"model": "dense-embed", "input": text})
    first = max(len(p) for p in fake.received[-1].json["input"])
    post(proxy.url, "/api/embed", {"model": "dense-embed", "input": text})
    second = max(len(p) for p in fake.received[-1].json["input"])
    assert first <= int(2048 * 4.0 * 0.9)  # the batch (2048 tokens) at the starting 4 characters a token, less 10 %
    assert second <= int(2048 * 1.5 * 0.9) + 1 < first  # at the learned 1.5: each piece fits the batch
    assert proxy.call(lambda: proxy.app.models.chars_per_token["dense-embed:latest"]) == pytest.approx(1.5, rel=0.02)


def test_embeddings_calibrate_without_chunks(fake_with, start_proxy):
    model = dense_model(2.0, name="dense-embed:latest", capabilities=["embedding"], context_length=8192)
    fake = fake_with(model)
    proxy = start_proxy(fake.url)
    post(proxy.url, "/api/embed", {"model": "dense-embed", "input": [words(1500), words(1800, seed=3)]})
    deadline = time.monotonic() + 5  # learned just after the answer went out
    while proxy.call(lambda: proxy.app.models.chars_per_token.get("dense-embed:latest")) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proxy.call(lambda: proxy.app.models.chars_per_token["dense-embed:latest"]) == pytest.approx(2.0, rel=0.01)
