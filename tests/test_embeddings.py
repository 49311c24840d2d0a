"""End to end: long embedding inputs are chunked, embedded in one upstream call, and recombined (SPEC §7)."""

from __future__ import annotations

import http.client
import json
import math
import random

import ollama
import openai
import pytest

import ollama_proxy as op


def post(port: int, path: str, body: dict):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return resp.status, data


def prose(n: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    words = ["retrieval", "augmented", "generation", "vector", "index", "query", "context", "model", "a", "the", "of"]
    out = []
    while sum(len(w) + 1 for w in out) < n:
        out.append(rng.choice(words))
    return " ".join(out)[:n]


def expected_vector(fake, pieces, normalize: bool, path: str = "/api/embed"):
    """The weighted mean of the fake's own vectors for the pieces, computed independently of the proxy."""
    if path == "/api/embed":
        _, data = post(fake.port, "/api/embed", {"model": "nomic-embed-text", "input": pieces})
        vectors = data["embeddings"]
    else:
        vectors = [post(fake.port, "/api/embeddings", {"model": "nomic-embed-text", "prompt": p})[1]["embedding"] for p in pieces]
    total = sum(len(p) for p in pieces)
    mean = [sum(v[i] * len(p) for v, p in zip(vectors, pieces)) / total for i in range(len(vectors[0]))]
    if normalize:
        norm = math.sqrt(sum(x * x for x in mean))
        mean = [x / norm for x in mean]
    return mean


def embed_calls(fake, path="/api/embed"):
    return [r for r in fake.received if r.path == path]


def test_long_input_is_the_weighted_mean_of_its_pieces(fake, proxy):
    """A 10,000-character input: one upstream call with overlapping pieces; the answer is their normalised weighted mean."""
    text = prose(10000)
    status, data = post(proxy.port, "/api/embed", {"model": "nomic-embed-text", "input": text})
    assert status == 200 and len(data["embeddings"]) == 1
    calls = embed_calls(fake)
    assert len(calls) == 1
    pieces = calls[0].json["input"]
    assert len(pieces) >= 5 and all(len(p) <= 2000 for p in pieces)
    for a, b in zip(pieces, pieces[1:]):
        assert a[-50:] in text and text.index(b) < text.index(a) + len(a)  # consecutive pieces overlap
    assert pieces[0] == text[: len(pieces[0])] and text.endswith(pieces[-1])
    want = expected_vector(fake, pieces, normalize=True)
    assert data["embeddings"][0] == pytest.approx(want, abs=1e-6)
    assert math.sqrt(sum(x * x for x in data["embeddings"][0])) == pytest.approx(1.0, abs=1e-6)


def test_list_input_keeps_order_and_short_inputs_untouched(fake, proxy):
    """A list mixing short and long inputs: one vector per input, in order; short ones equal Ollama's own vector."""
    inputs = ["short one", prose(5000, seed=2), "another short", prose(4100, seed=3)]
    status, data = post(proxy.port, "/api/embed", {"model": "nomic-embed-text", "input": inputs})
    assert status == 200 and len(data["embeddings"]) == 4
    assert len(embed_calls(fake)) == 1  # every piece of every input in one call
    _, direct = post(fake.port, "/api/embed", {"model": "nomic-embed-text", "input": ["short one", "another short"]})
    assert data["embeddings"][0] == pytest.approx(direct["embeddings"][0], abs=1e-9)
    assert data["embeddings"][2] == pytest.approx(direct["embeddings"][1], abs=1e-9)
    pieces_long = op.split_text(inputs[1], 2000)
    assert data["embeddings"][1] == pytest.approx(expected_vector(fake, pieces_long, normalize=True), abs=1e-6)


def test_legacy_endpoint_gets_plain_weighted_mean(fake, proxy):
    """/api/embeddings: pieces go one by one and the answer is the plain (not normalised) weighted mean."""
    text = prose(4500, seed=4)
    status, data = post(proxy.port, "/api/embeddings", {"model": "nomic-embed-text", "prompt": text})
    assert status == 200
    pieces = [r.json["prompt"] for r in embed_calls(fake, "/api/embeddings")]
    assert len(pieces) == 3 and pieces == op.split_text(text, 2000)
    assert data["embedding"] == pytest.approx(expected_vector(fake, pieces, normalize=False, path="/api/embeddings"), abs=1e-6)


def test_openai_embeddings_are_chunked(fake, proxy):
    """/v1/embeddings through the openai client: long inputs chunked, one vector per input, unit length."""
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0) as client:
        resp = client.embeddings.create(model="nomic-embed-text", input=[prose(6000, seed=5), "tiny"])
    assert [d.index for d in resp.data] == [0, 1]
    assert math.sqrt(sum(x * x for x in resp.data[0].embedding)) == pytest.approx(1.0, abs=1e-5)
    pieces = embed_calls(fake)[0].json["input"]
    assert len(pieces) == 5 and pieces[-1] == "tiny"


def test_no_chunking_gives_400(fake, start_proxy):
    """--no-chunking: an over-long input is refused with the seed project's message, nothing goes upstream."""
    proxy = start_proxy(fake.url, chunking=False)
    status, data = post(proxy.port, "/api/embed", {"model": "nomic-embed-text", "input": ["ok", "x" * 2500]})
    assert status == 400 and data["error"] == "Input too large (2500 characters). Maximum is 2000 characters."
    assert embed_calls(fake) == []


def test_derived_limit_follows_the_runner_batch(fake, start_proxy):
    """--max-embed-chars 0: the limit is min(2048, num_ctx, training) tokens x chars per token x 0.9."""
    proxy = start_proxy(fake.url, max_embed_chars=0)
    with ollama.Client(host=proxy.url) as client:
        client.embed(model="all-minilm", input="x " * 1000)  # all-minilm: trained 512 -> 512 x 4 x 0.9 = 1843
    pieces = embed_calls(fake)[-1].json["input"]
    assert max(len(p) for p in pieces) <= 1843 and len(pieces) == 2


def test_embedding_chunking_with_backend_error(fake, proxy):
    """An unknown model's error comes back as Ollama said it."""
    status, data = post(proxy.port, "/api/embed", {"model": "nope", "input": prose(3000)})
    assert status == 404 and "not found" in data["error"]
