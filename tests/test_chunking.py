"""Embedding chunking (SPEC §7, ollama-api.md §9): splitting, planning, combining, limits."""

from __future__ import annotations

import math
import random

import pytest

from ollama_proxy import (
    CUT_WINDOW,
    chunk_limit_error,
    combine_embeddings,
    derive_embed_limit,
    l2_normalize,
    plan_chunks,
    runner_batch_tokens,
    split_spans,
    split_text,
    weighted_mean,
)

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SEPARATORS = [" ", " ", " ", " ", "\n", "\n\n", "\t", "  ", "\r\n"]
UNICODE_WORD_CHARS = "éüßøłçñ" + "αβγδλ" + "жзий" + "🙂🚀" + "中文字漢語日本"
UNICODE_SEPARATORS = [" ", "\u3000", "\xa0", "\n", "\u2003"]  # all str.isspace()


def _word(rng: random.Random, alphabet: str, lo: int, hi: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _joined(rng: random.Random, n: int, alphabet: str, lo: int, hi: int, seps) -> str:
    parts = []
    size = 0
    while size < n:
        w = _word(rng, alphabet, lo, hi) + rng.choice(seps)
        parts.append(w)
        size += len(w)
    return "".join(parts)[:n]


def random_text(rng: random.Random, kind: str, n: int) -> str:
    """A random text of ``n`` characters of one kind."""
    if kind == "prose":
        return _joined(rng, n, LETTERS, 1, 12, SEPARATORS)
    if kind == "nospace":
        return _word(rng, LETTERS, n, n)
    if kind == "longwords":
        return _joined(rng, n, LETTERS, 30, 3000, SEPARATORS)
    if kind == "cjk":
        return _joined(rng, n, "".join(chr(c) for c in range(0x4E00, 0x4E00 + 500)), 50, 400, ["。", "\n", "、"])
    if kind == "unicode":
        return _joined(rng, n, UNICODE_WORD_CHARS, 1, 20, UNICODE_SEPARATORS)
    if kind == "newlines":
        return _joined(rng, n, LETTERS, 0, 80, ["\n", "\n\n\n", "\n    "])
    if kind == "spaces":
        return " " * n
    raise AssertionError(kind)


KINDS = ["prose", "nospace", "longwords", "cjk", "unicode", "newlines", "spaces"]
LIMITS = [1, 2, 3, 7, 10, 11, 37, 100, 333, 1000, 2000]


def random_cases(seed: int, count: int):
    """(kind, text, limit) triples from a seeded generator."""
    rng = random.Random(seed)
    for _ in range(count):
        kind = rng.choice(KINDS)
        limit = rng.choice(LIMITS)
        n = rng.choice([0, 1, limit, limit + 1] + [rng.randint(0, 12000)] * 4)
        if limit <= 3:
            n = min(n, 3000)  # one piece per character or so: keep it quick
        yield kind, random_text(rng, kind, n), limit


CASES = list(random_cases(20240601, 400))


def _overlap(limit: int) -> int:
    return int(limit * 0.1)


def _slack(limit: int) -> int:
    return max(1, int(limit * CUT_WINDOW))


def merge_pieces(pieces) -> str:
    """Rebuild a text from its pieces by dropping, from each piece, the longest head the text so far ends with."""
    merged = pieces[0]
    for prev, piece in zip(pieces, pieces[1:]):
        k = next(k for k in range(min(len(prev), len(piece)) - 1, 0, -1) if prev.endswith(piece[:k]))
        merged += piece[k:]
    return merged


# -- split_text: properties over random texts -------------------------------------------------


def test_random_cases_cover_every_kind():
    """The seeded cases include every kind of text and texts longer than their limit."""
    assert {kind for kind, _, _ in CASES} == set(KINDS)
    assert sum(1 for _, text, limit in CASES if len(text) > 5 * limit) > 100


def test_every_piece_within_limit_and_equal_to_its_span():
    """Every piece has at most ``limit`` characters and is the text between its span's offsets."""
    for kind, text, limit in CASES:
        spans = split_spans(text, limit)
        pieces = split_text(text, limit)
        assert pieces == [text[a:b] for a, b in spans], kind
        assert all(len(p) <= limit for p in pieces), (kind, limit)
        assert all(p for p in pieces) or text == "", kind


def test_pieces_cover_the_text_in_order():
    """The first piece starts at 0, the last ends at the end, starts and ends strictly grow, no gap."""
    for kind, text, limit in CASES:
        spans = split_spans(text, limit)
        assert spans[0][0] == 0 and spans[-1][1] == len(text), kind
        for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
            assert s0 < s1 <= e0 < e1, (kind, limit, (s0, e0), (s1, e1))


def test_consecutive_pieces_overlap_by_about_ten_percent():
    """With a limit of 10 or more, each piece starts 10 % of the limit (± half that) before the previous end."""
    checked = 0
    for kind, text, limit in CASES:
        if limit < 10:
            continue
        ov = _overlap(limit)
        spans = split_spans(text, limit)
        for (_, e0), (s1, _) in zip(spans, spans[1:]):
            assert ov - ov // 2 <= e0 - s1 <= ov + ov // 2, (kind, limit, e0, s1)
            checked += 1
    assert checked > 200


def test_merging_overlaps_rebuilds_the_text():
    """Merging consecutive pieces over their overlap gives back the whole text, for every kind of text."""
    merged = 0
    for kind, text, limit in CASES:
        if limit < 100 or kind == "spaces":  # a short overlap, or an all-blank text, is ambiguous to merge
            continue
        pieces = split_text(text, limit)
        assert merge_pieces(pieces) == text, (kind, limit)
        merged += len(pieces) > 1
    assert merged > 50


def test_cuts_land_after_whitespace_when_there_is_whitespace_near_the_limit():
    """A piece ends just after the last whitespace in its last CUT_WINDOW of the limit, else exactly at the limit."""
    soft = hard = 0
    for kind, text, limit in CASES:
        spans = split_spans(text, limit)
        for s, e in spans[:-1]:
            window_lo = max(s, s + limit - _slack(limit) - 1)
            blanks = [i for i in range(window_lo, s + limit) if text[i].isspace()]
            if blanks:
                assert e == blanks[-1] + 1, (kind, limit, s, e)
                soft += 1
            else:
                assert e == s + limit, (kind, limit, s, e)
                hard += 1
    assert soft > 100 and hard > 100


def test_starts_land_after_whitespace_when_there_is_whitespace_near_the_overlap():
    """The next piece starts just after the whitespace nearest the 10 % overlap point, when one is near."""
    moved = 0
    for kind, text, limit in CASES:
        ov = _overlap(limit)
        if ov < 4:
            continue
        spans = split_spans(text, limit)
        for (_, e0), (s1, _) in zip(spans, spans[1:]):
            target = e0 - ov
            near = [p for p in range(target - ov // 2, target + ov // 2 + 1) if text[p - 1].isspace()]
            if near:
                best = min(near, key=lambda p: (abs(p - target), p))
                assert s1 == best, (kind, limit, target, s1)
                moved += 1
            else:
                assert s1 == target, (kind, limit, target, s1)
    assert moved > 100


def test_words_are_not_cut_in_prose():
    """In prose of short words every piece but the first begins a word and every piece but the last ends with whitespace."""
    rng = random.Random(7)
    for _ in range(30):
        text = _joined(rng, rng.randint(3000, 20000), LETTERS, 1, 12, [" ", "\n"])
        pieces = split_text(text, rng.choice([200, 500, 2000]))
        assert len(pieces) > 1
        assert all(p[-1].isspace() for p in pieces[:-1])
        assert all(not p[0].isspace() for p in pieces[1:])


# -- split_text: fixed cases ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "a", "hello world", "x" * 2000, "中" * 2000, " " * 2000])
def test_text_within_limit_is_one_unchanged_piece(text):
    """A text of at most ``limit`` characters, the empty one included, comes back whole."""
    assert split_text(text, 2000) == [text]


def test_ten_thousand_characters_with_limit_2000_give_six_pieces():
    """10,000 characters at limit 2000 give 6 pieces starting 1800 apart, with or without whitespace."""
    expected = [(0, 2000), (1800, 3800), (3600, 5600), (5400, 7400), (7200, 9200), (9000, 10000)]
    assert split_spans("x" * 10000, 2000) == expected
    assert split_spans("abcdefghi " * 1000, 2000) == expected
    assert len(split_text("中" * 10000, 2000)) == 6
    assert len(split_text(random_text(random.Random(3), "prose", 10000), 2000)) == 6


def test_one_character_past_the_limit_gives_two_pieces():
    """limit + 1 characters give two pieces, the second ending at the end of the text."""
    pieces = split_text("y" * 2001, 2000)
    assert [len(p) for p in pieces] == [2000, 201]


@pytest.mark.parametrize("text", ["abcdef", "a b c d", "     ", "中文\n字"])
def test_limit_one_gives_one_piece_per_character(text):
    """The smallest limit still makes progress: one character per piece, in order."""
    assert split_text(text, 1) == list(text)


def test_no_overlap_pieces_concatenate_to_the_text():
    """With overlap_ratio 0 the pieces are disjoint and join back to the text exactly."""
    text = random_text(random.Random(11), "prose", 5000)
    pieces = split_text(text, 300, overlap_ratio=0.0)
    assert len(pieces) > 1 and "".join(pieces) == text


@pytest.mark.parametrize("ratio", [0.5, 0.9, 5.0, -1.0])
def test_extreme_overlap_ratios_still_terminate_and_cover(ratio):
    """An overlap ratio outside 0..0.5 is clamped, so the split still ends and covers the text."""
    text = "z" * 5000
    spans = split_spans(text, 100, overlap_ratio=ratio)
    assert spans[0][0] == 0 and spans[-1][1] == 5000
    assert all(s0 < s1 <= e0 < e1 for (s0, e0), (s1, e1) in zip(spans, spans[1:]))
    assert len(spans) <= 5000 // 40


@pytest.mark.parametrize("limit", [0, -5])
def test_limit_below_one_is_refused(limit):
    """A limit below 1 raises instead of looping."""
    with pytest.raises(ValueError):
        split_text("abc", limit)


# -- plan_chunks ------------------------------------------------------------------------------


def test_plan_chunks_flattens_and_records_slices():
    """Short inputs (empty included) are one unchanged piece; a long one is split; slices point at each input's pieces."""
    long_text = random_text(random.Random(5), "prose", 5000)
    inputs = ["", "short", long_text, "x" * 100]
    pieces, spans = plan_chunks(inputs, 100)
    n_long = len(split_text(long_text, 100))
    assert spans == [(0, 1), (1, 2), (2, 2 + n_long), (2 + n_long, 3 + n_long)]
    assert pieces[0] == "" and pieces[1] == "short" and pieces[-1] == "x" * 100
    assert pieces[2 : 2 + n_long] == split_text(long_text, 100)
    assert plan_chunks([], 100) == ([], [])


# -- weighted_mean and l2_normalize -----------------------------------------------------------


def test_weighted_mean_table():
    """Known weighted means, and equal weights when the weights sum to zero."""
    assert weighted_mean([[1.0, 2.0], [3.0, 4.0]], [1.0, 3.0]) == pytest.approx([2.5, 3.5], abs=1e-12)
    assert weighted_mean([[1.0, -1.0]], [7.0]) == pytest.approx([1.0, -1.0], abs=1e-12)
    assert weighted_mean([[0.0, 2.0], [4.0, 0.0]], [0.0, 0.0]) == pytest.approx([2.0, 1.0], abs=1e-12)


def test_weighted_mean_random_matches_direct_sum():
    """On random vectors the weighted mean equals Σ wᵢvᵢ / Σ wᵢ to 1e-9."""
    rng = random.Random(42)
    for _ in range(50):
        k, dim = rng.randint(1, 6), rng.randint(1, 64)
        vecs = [[rng.uniform(-1, 1) for _ in range(dim)] for _ in range(k)]
        weights = [float(rng.randint(1, 3000)) for _ in range(k)]
        got = weighted_mean(vecs, weights)
        total = sum(weights)
        for i in range(dim):
            assert abs(got[i] - sum(w * v[i] for v, w in zip(vecs, weights)) / total) < 1e-9


@pytest.mark.parametrize("vecs, weights", [([], []), ([[1.0]], [1.0, 2.0]), ([[1.0], [1.0, 2.0]], [1.0, 1.0])])
def test_weighted_mean_refuses_bad_shapes(vecs, weights):
    """No vectors, a weight count that differs, or vectors of different lengths raise ValueError."""
    with pytest.raises(ValueError):
        weighted_mean(vecs, weights)


def test_l2_normalize_table():
    """3-4-5, a zero vector that stays zero, and tiny and huge vectors without under- or overflow."""
    assert l2_normalize([3.0, 4.0]) == pytest.approx([0.6, 0.8], abs=1e-12)
    assert l2_normalize([0.0, 0.0, 0.0]) == [0.0, 0.0, 0.0]
    assert l2_normalize([]) == []
    assert l2_normalize([1e-200, 1e-200]) == pytest.approx([math.sqrt(0.5)] * 2, abs=1e-12)
    assert l2_normalize([1e200, -1e200]) == pytest.approx([math.sqrt(0.5), -math.sqrt(0.5)], abs=1e-12)


def test_l2_normalize_random_is_unit_length_and_parallel():
    """Random vectors come out with norm 1 to 1e-9 and pointing the same way."""
    rng = random.Random(9)
    for _ in range(50):
        v = [rng.gauss(0, 3) for _ in range(rng.randint(1, 1024))]
        u = l2_normalize(v)
        assert abs(math.sqrt(sum(x * x for x in u)) - 1.0) < 1e-9
        norm = math.sqrt(sum(x * x for x in v))
        assert all(abs(a * norm - b) < 1e-9 for a, b in zip(u, v))


# -- combine_embeddings -----------------------------------------------------------------------


def _fake_vectors(pieces, dim=8, seed=1):
    rng = random.Random(seed)
    return [[rng.uniform(-1, 1) for _ in range(dim)] for _ in pieces]


def test_combine_keeps_count_and_order():
    """One vector per input, in input order: a one-piece input gets its own vector back exactly."""
    rng = random.Random(4)
    inputs = [random_text(rng, rng.choice(KINDS), rng.randint(0, 900)) for _ in range(40)]
    pieces, spans = plan_chunks(inputs, 150)
    vectors = _fake_vectors(pieces)
    for normalize in (True, False):
        out = combine_embeddings(vectors, pieces, spans, normalize)
        assert len(out) == len(inputs)
        for (a, b), vec in zip(spans, out):
            if b - a == 1:
                assert vec == vectors[a]


def test_combine_split_input_is_length_weighted_mean_normalized_or_not():
    """A split input gets the character-weighted mean of its pieces, L2-normalised only when asked."""
    text = random_text(random.Random(8), "prose", 1000)
    pieces, spans = plan_chunks(["short", text, "end"], 200)
    vectors = _fake_vectors(pieces, dim=16)
    a, b = spans[1]
    assert b - a > 2
    lengths = [len(p) for p in pieces[a:b]]
    assert len(set(lengths)) > 1  # the weights really differ
    mean = [sum(n * v[i] for n, v in zip(lengths, vectors[a:b])) / sum(lengths) for i in range(16)]
    norm = math.sqrt(sum(x * x for x in mean))
    plain = combine_embeddings(vectors, pieces, spans, False)
    unit = combine_embeddings(vectors, pieces, spans, True)
    assert all(abs(x - y) < 1e-9 for x, y in zip(plain[1], mean))
    assert all(abs(x - y / norm) < 1e-9 for x, y in zip(unit[1], mean))
    assert abs(math.sqrt(sum(x * x for x in unit[1])) - 1.0) < 1e-9
    assert unit[0] == vectors[0] and unit[2] == vectors[-1]


def test_combine_leaves_single_piece_vectors_as_returned():
    """A one-piece input's vector is not renormalised, even with normalize on."""
    out = combine_embeddings([[2.0, 0.0]], ["hi"], [(0, 1)], True)
    assert out == [[2.0, 0.0]]


@pytest.mark.parametrize(
    "vectors, pieces, spans",
    [([[1.0]], ["a", "b"], [(0, 2)]), ([[1.0]], ["a"], [(0, 0)]), ([[1.0]], ["a"], [(0, 2)])],
)
def test_combine_refuses_inconsistent_plans(vectors, pieces, spans):
    """A vector count that differs from the piece count, or an empty or out-of-range span, raises."""
    with pytest.raises(ValueError):
        combine_embeddings(vectors, pieces, spans, True)


# -- limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_ctx, training, expected",
    [
        (0, 0, 2048),
        (0, 512, 512),
        (0, 8192, 2048),
        (1024, 8192, 1024),
        (4096, 8192, 2048),
        (8192, 512, 512),
        (1024, 0, 1024),
        (4096, 0, 2048),
        (2048, 2048, 2048),
    ],
)
def test_runner_batch_tokens_table(num_ctx, training, expected):
    """min(2048, num_ctx, training context), with 0 meaning unknown (ollama-api.md §9)."""
    assert runner_batch_tokens(num_ctx, training) == expected


@pytest.mark.parametrize(
    "tokens, cpt, margin, expected",
    [
        (2048, 4.0, 0.1, 7372),
        (512, 4.0, 0.1, 1843),
        (2048, 1.0, 0.1, 1843),
        (1000, 1.0, 0.1, 900),
        (1000, 3.0, 0.1, 2700),
        (2048, 4.0, 0.0, 8192),
        (1, 1.0, 0.1, 1),
        (0, 4.0, 0.1, 1),
        (2048, 2.5, 0.2, 4096),
        (10, 7.0, 0.9, 7),  # 6.999999999999998 in floating point
    ],
)
def test_derive_embed_limit_table(tokens, cpt, margin, expected):
    """tokens × characters per token × (1 - margin), rounded down, at least 1."""
    assert derive_embed_limit(tokens, cpt, margin) == expected


def test_derive_embed_limit_default_margin_is_ten_percent():
    """Without a margin argument 10 % is taken off."""
    assert derive_embed_limit(2000, 4.0) == 7200


def test_chunk_limit_error_text():
    """The exact 400 message of SPEC §7."""
    assert chunk_limit_error(12345, 7372) == "Input too large (12345 characters). Maximum is 7372 characters."
