"""Metrics (SPEC §8, GET /__proxy/metrics): Prometheus text format 0.0.4, checked by a strict parser.

No proxy, no sockets: ``Metrics`` is plain state and ``render`` a pure function of it.
"""

from __future__ import annotations

import math
import re
from typing import Dict, List, Optional, Tuple

import pytest

from ollama_proxy import LATENCY_BUCKETS, Metrics

# ---------------------------------------------------------------------------
# A strict parser for the text exposition format 0.0.4
# ---------------------------------------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
VALUE = r"[+-]?(?:Inf|NaN|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)"
HELP_RE = re.compile(r"# HELP (%s) (.*)" % NAME)
TYPE_RE = re.compile(r"# TYPE (%s) (counter|gauge|histogram|summary|untyped)" % NAME)
SAMPLE_RE = re.compile(r"(%s)(?:\{(.*)\})? (%s)" % (NAME, VALUE))
LABEL_RE = re.compile(r'(%s)="((?:[^"\\\n]|\\[\\"n])*)"' % LABEL_NAME)
HIST_SUFFIXES = ("_bucket", "_sum", "_count")

Sample = Tuple[str, Dict[str, str], float]


class Family:
    def __init__(self, name: str) -> None:
        self.name = name
        self.help: Optional[str] = None
        self.type: Optional[str] = None
        self.samples: List[Sample] = []


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"\\": "\\", '"': '"', "n": "\n"}[m.group(1)], value)


def parse_labels(text: str) -> Dict[str, str]:
    labels: Dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, "bad label at %r" % text[pos:]
        assert m.group(1) not in labels, "duplicate label %s" % m.group(1)
        labels[m.group(1)] = unescape(m.group(2))
        pos = m.end()
        if pos < len(text):
            assert text[pos] == ",", "expected a comma at %r" % text[pos:]
            pos += 1
            assert pos < len(text), "trailing comma"
    return labels


def parse(text: str) -> Dict[str, Family]:
    """Families by name, in order; asserts every rule of the format this proxy relies on."""
    assert text.endswith("\n"), "output must end with a newline"
    families: Dict[str, Family] = {}
    finished: set = set()
    current: Optional[str] = None
    for line in text[:-1].split("\n"):
        assert line, "blank line"
        assert line == line.strip(), "stray whitespace in %r" % line
        if line.startswith("#"):
            m = HELP_RE.fullmatch(line) or TYPE_RE.fullmatch(line)
            assert m, "bad comment line %r" % line
            name = m.group(1)
            fam = families.setdefault(name, Family(name))
            assert not fam.samples, "HELP/TYPE of %s after its samples" % name
            if line.startswith("# HELP"):
                assert fam.help is None, "HELP twice for %s" % name
                fam.help = m.group(2)
            else:
                assert fam.type is None, "TYPE twice for %s" % name
                fam.type = m.group(2)
            continue
        m = SAMPLE_RE.fullmatch(line)
        assert m, "bad sample line %r" % line
        name, labels_text, value = m.group(1), m.group(2), m.group(3)
        fam_name = name
        if fam_name not in families or families[fam_name].type is None:
            for suffix in HIST_SUFFIXES:
                if name.endswith(suffix) and name[: -len(suffix)] in families:
                    fam_name = name[: -len(suffix)]
                    assert families[fam_name].type == "histogram", "%s is not a histogram sample" % name
                    break
        assert fam_name in families, "sample %s without HELP/TYPE" % name
        fam = families[fam_name]
        assert fam.help is not None and fam.type is not None, "sample %s before HELP and TYPE" % name
        if fam.type == "counter":
            assert name.endswith("_total"), "counter %s must end with _total" % name
        if current != fam_name:
            assert fam_name not in finished, "samples of %s are not contiguous" % fam_name
            if current is not None:
                finished.add(current)
            current = fam_name
        labels = parse_labels(labels_text) if labels_text is not None else {}
        fam.samples.append((name, labels, float(value)))
    for fam in families.values():
        assert fam.help is not None and fam.type is not None, "%s lacks HELP or TYPE" % fam.name
        if fam.type == "counter":
            assert fam.name.endswith("_total")
            assert all(v >= 0 for _, _, v in fam.samples)
        if fam.type == "histogram":
            check_histogram(fam)
    return families


def check_histogram(fam: Family) -> None:
    series: Dict[Tuple[Tuple[str, str], ...], Dict[str, List[Tuple[float, float]]]] = {}
    for name, labels, value in fam.samples:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        parts = series.setdefault(key, {"_bucket": [], "_sum": [], "_count": []})
        suffix = name[len(fam.name) :]
        if suffix == "_bucket":
            assert "le" in labels, "bucket without le"
            parts[suffix].append((float(labels["le"]), value))
        else:
            assert "le" not in labels
            parts[suffix].append((0.0, value))
    for key, parts in series.items():
        buckets = parts["_bucket"]
        assert buckets and len(parts["_sum"]) == 1 and len(parts["_count"]) == 1, key
        bounds = [b for b, _ in buckets]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), "le not increasing in %s" % (key,)
        assert bounds[-1] == math.inf, "last bucket must be +Inf"
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), "buckets not cumulative in %s" % (key,)
        assert counts[-1] == parts["_count"][0][1], "+Inf bucket != _count in %s" % (key,)


def values(families: Dict[str, Family], name: str) -> Dict[Tuple[Tuple[str, str], ...], float]:
    """Samples of one exact sample name, keyed by their sorted label pairs."""
    fam_name = name
    for suffix in HIST_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            fam_name = name[: -len(suffix)]
    return {tuple(sorted(labels.items())): v for n, labels, v in families[fam_name].samples if n == name}


def bucket_counts(families: Dict[str, Family], route: str) -> Dict[float, float]:
    return {float(labels["le"]): v for n, labels, v in families["ollama_proxy_upstream_seconds"].samples if n.endswith("_bucket") and labels["route"] == route}


EXPECTED_TYPES = {
    "ollama_proxy_up": "gauge",
    "ollama_proxy_start_time_seconds": "gauge",
    "ollama_proxy_requests_total": "counter",
    "ollama_proxy_in_flight": "gauge",
    "ollama_proxy_upstream_seconds": "histogram",
    "ollama_proxy_tokens_generated_total": "counter",
    "ollama_proxy_tokens_per_second": "gauge",
    "ollama_proxy_truncated_prompts_total": "counter",
    "ollama_proxy_reloads_avoided_total": "counter",
    "ollama_proxy_modifications_total": "counter",
    "ollama_proxy_oom_fallbacks_total": "counter",
    "ollama_proxy_chunked_inputs_total": "counter",
    "ollama_proxy_chunk_pieces_total": "counter",
    "ollama_proxy_metadata_lookups_total": "counter",
    "ollama_proxy_events_total": "counter",
    "ollama_proxy_queue_depth": "gauge",
    "ollama_proxy_backend_healthy": "gauge",
    "ollama_proxy_backend_ejected": "gauge",
    "ollama_proxy_backend_request_failures_total": "counter",
    "ollama_proxy_ejections_total": "counter",
    "ollama_proxy_ejection_trials_total": "counter",
    "ollama_proxy_ejection_recoveries_total": "counter",
}

# ---------------------------------------------------------------------------
# The parser itself is strict
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "x_total 1\n",  # no HELP/TYPE
        "# HELP x_total h\nx_total 1\n",  # no TYPE
        "# HELP x_total h\n# TYPE x_total counter\n# TYPE x_total counter\nx_total 1\n",  # TYPE twice
        "# HELP x h\n# TYPE x counter\nx 1\n",  # counter without _total
        "# HELP x h\n# TYPE x gauge\nx 1",  # no final newline
        "# HELP x h\n# TYPE x gauge\nx 1e\n",  # bad value
        "# HELP x h\n# TYPE x gauge\nx 1_0\n",  # float() would take it, the format does not
        '# HELP x h\n# TYPE x gauge\nx{a="b"c"} 1\n',  # unescaped quote
        '# HELP x h\n# TYPE x gauge\nx{a="b\\q"} 1\n',  # bad escape
        '# HELP x h\n# TYPE x gauge\nx{1a="b"} 1\n',  # bad label name
        '# HELP x h\n# TYPE x gauge\nx{a="b",} 1\n',  # trailing comma
        "# HELP x h\n# TYPE x gauge\n9x 1\n",  # bad metric name
        "# HELP x h\n# TYPE x gauge\n# HELP y h\n# TYPE y gauge\nx 1\ny 1\nx 2\n",  # not contiguous
        '# HELP h h\n# TYPE h histogram\nh_bucket{le="1.0"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1.0\nh_count 1\n',  # not cumulative
        '# HELP h h\n# TYPE h histogram\nh_bucket{le="1.0"} 1\nh_bucket{le="+Inf"} 1\nh_sum 1.0\nh_count 2\n',  # +Inf != _count
        '# HELP h h\n# TYPE h histogram\nh_bucket{le="1.0"} 1\nh_sum 1.0\nh_count 1\n',  # no +Inf
    ],
)
def test_parser_rejects(text: str) -> None:
    with pytest.raises(AssertionError):
        parse(text)


def test_parser_accepts_escapes_and_specials() -> None:
    fams = parse('# HELP x h\n# TYPE x gauge\nx{a="q\\"b\\\\s\\nn",b=""} +Inf\nx{a="z"} NaN\nx -1.5e-3\n')
    samples = fams["x"].samples
    assert samples[0][1] == {"a": 'q"b\\s\nn', "b": ""} and samples[0][2] == math.inf
    assert math.isnan(samples[1][2]) and samples[2][2] == -0.0015


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def test_empty_metrics_render_every_family() -> None:
    text = Metrics(1700000000.25).render({}, {}, 0)
    fams = parse(text)
    assert {name: fam.type for name, fam in fams.items()} == EXPECTED_TYPES
    assert values(fams, "ollama_proxy_up") == {(): 1.0}
    assert values(fams, "ollama_proxy_start_time_seconds") == {(): 1700000000.25}
    assert values(fams, "ollama_proxy_queue_depth") == {(): 0.0}
    assert fams["ollama_proxy_requests_total"].samples == []
    assert fams["ollama_proxy_upstream_seconds"].samples == []
    for name in ("oom_fallbacks_total", "chunked_inputs_total", "chunk_pieces_total"):
        assert values(fams, "ollama_proxy_" + name) == {(): 0.0}
    assert values(fams, "ollama_proxy_metadata_lookups_total") == {
        (("result", "hit"),): 0.0,
        (("result", "fetch"),): 0.0,
        (("result", "shared"),): 0.0,
    }


def test_start_time_keeps_full_precision() -> None:
    fams = parse(Metrics(1712345678.123456).render({}, {}, 0))
    assert values(fams, "ollama_proxy_start_time_seconds") == {(): 1712345678.123456}


def test_two_requests_counted_by_route_status_backend() -> None:
    m = Metrics(0.0)
    m.observe_request("/api/chat", 200, "http://a:11434", 0.3)
    m.observe_request("/api/chat", 200, "http://a:11434", 1.5)
    m.observe_request("/api/chat", 502, "http://b:11434", 0.01)
    m.observe_request("/api/tags", 200, "http://a:11434", 0.02)
    fams = parse(m.render({}, {}, 0))
    assert values(fams, "ollama_proxy_requests_total") == {
        (("backend", "http://a:11434"), ("route", "/api/chat"), ("status", "200")): 2.0,
        (("backend", "http://b:11434"), ("route", "/api/chat"), ("status", "502")): 1.0,
        (("backend", "http://a:11434"), ("route", "/api/tags"), ("status", "200")): 1.0,
    }
    assert values(fams, "ollama_proxy_upstream_seconds_count") == {
        (("route", "/api/chat"),): 3.0,
        (("route", "/api/tags"),): 1.0,
    }
    (chat_sum,) = [v for k, v in values(fams, "ollama_proxy_upstream_seconds_sum").items() if k == (("route", "/api/chat"),)]
    assert chat_sum == pytest.approx(1.81)


def test_histogram_bucket_edges() -> None:
    m = Metrics(0.0)
    observations = [0.0, 0.005, 0.0050001, 1, 1.0000001, 300, 300.5, 1e6]
    for seconds in observations:
        m.observe_request("/api/generate", 200, "b", seconds)
    fams = parse(m.render({}, {}, 0))
    counts = bucket_counts(fams, "/api/generate")
    assert list(counts) == [float(b) for b in LATENCY_BUCKETS] + [math.inf]
    for bound, count in counts.items():
        assert count == sum(1 for s in observations if s <= bound), bound  # le means <=
    assert counts[0.005] == 2 and counts[0.01] == 3 and counts[1.0] == 4 and counts[2.5] == 5
    assert counts[300.0] == 6 and counts[math.inf] == 8
    assert values(fams, "ollama_proxy_upstream_seconds_count") == {(("route", "/api/generate"),): 8.0}
    (total,) = values(fams, "ollama_proxy_upstream_seconds_sum").values()
    assert total == pytest.approx(sum(observations))


def test_le_labels_render_as_floats() -> None:
    m = Metrics(0.0)
    m.observe_request("/r", 200, "b", 0.1)
    text = m.render({}, {}, 0)
    les = re.findall(r'ollama_proxy_upstream_seconds_bucket\{route="/r",le="([^"]*)"\}', text)
    assert les[-1] == "+Inf"
    assert [float(x) for x in les[:-1]] == [float(b) for b in LATENCY_BUCKETS]


def test_request_without_upstream_time_is_counted_not_observed() -> None:
    m = Metrics(0.0)
    m.observe_request("/api/chat", 503, "", -1.0)
    m.observe_request("/api/chat", 503, "", float("nan"))
    fams = parse(m.render({}, {}, 0))
    assert values(fams, "ollama_proxy_requests_total") == {(("backend", ""), ("route", "/api/chat"), ("status", "503")): 2.0}
    assert fams["ollama_proxy_upstream_seconds"].samples == []


def test_tokens_summed_and_last_rate_kept_per_model() -> None:
    m = Metrics(0.0)
    m.observe_request("/api/chat", 200, "b", 2.0, eval_count=100, tokens_per_s=50.0, model="llama3:8b")
    m.observe_request("/api/generate", 200, "b", 3.0, eval_count=30, tokens_per_s=12.5, model="llama3:8b")
    m.observe_request("/api/chat", 200, "b", 1.0, eval_count=7, tokens_per_s=70.25, model="qwen")
    m.observe_request("/api/chat", 200, "b", 1.0, model="qwen")  # no final stats: rate unchanged
    m.observe_request("/api/tags", 200, "b", 0.01)  # no model, no tokens: no series
    fams = parse(m.render({}, {}, 0))
    assert values(fams, "ollama_proxy_tokens_generated_total") == {
        (("model", "llama3:8b"),): 130.0,
        (("model", "qwen"),): 7.0,
    }
    assert values(fams, "ollama_proxy_tokens_per_second") == {
        (("model", "llama3:8b"),): 12.5,
        (("model", "qwen"),): 70.25,
    }


def test_events_rendered_by_kind() -> None:
    m = Metrics(0.0)
    m.count("modified_num_ctx")
    m.count("modified_num_ctx")
    m.count("modified_num_predict")
    m.count("modified_keep_alive", 3)
    m.count("oom_fallback")
    m.count("chunked_inputs", 2)
    m.count("chunk_pieces", 9)
    m.count("metadata_hit", 5)
    m.count("metadata_fetch")
    m.count("metadata_shared", 2)
    m.count('weird "event"')
    fams = parse(m.render({}, {}, 0))
    assert values(fams, "ollama_proxy_modifications_total") == {
        (("modifier", "keep_alive"),): 3.0,
        (("modifier", "num_ctx"),): 2.0,
        (("modifier", "num_predict"),): 1.0,
    }
    assert values(fams, "ollama_proxy_oom_fallbacks_total") == {(): 1.0}
    assert values(fams, "ollama_proxy_chunked_inputs_total") == {(): 2.0}
    assert values(fams, "ollama_proxy_chunk_pieces_total") == {(): 9.0}
    assert values(fams, "ollama_proxy_metadata_lookups_total") == {
        (("result", "hit"),): 5.0,
        (("result", "fetch"),): 1.0,
        (("result", "shared"),): 2.0,
    }
    assert values(fams, "ollama_proxy_events_total") == {(("event", 'weird "event"'),): 1.0}


def test_gauges_from_live_state() -> None:
    m = Metrics(0.0)
    fams = parse(m.render({"http://a": 3, "http://b": 0}, {"http://a": True, "http://b": False}, 7))
    assert values(fams, "ollama_proxy_in_flight") == {
        (("backend", "http://a"),): 3.0,
        (("backend", "http://b"),): 0.0,
    }
    assert values(fams, "ollama_proxy_backend_healthy") == {
        (("backend", "http://a"),): 1.0,
        (("backend", "http://b"),): 0.0,
    }
    assert values(fams, "ollama_proxy_queue_depth") == {(): 7.0}


def test_label_values_escaped() -> None:
    nasty = 'we"ird\\back\nend'
    m = Metrics(0.0)
    m.observe_request('/api/"x"', 200, nasty, 0.5, eval_count=1, model="m\\1")
    text = m.render({nasty: 1}, {nasty: True}, 0)
    assert 'backend="we\\"ird\\\\back\\nend"' in text
    assert "\nend" not in text.replace("\\nend", "")  # no raw newline inside a label value
    fams = parse(text)
    ((labels, _),) = values(fams, "ollama_proxy_requests_total").items()
    assert dict(labels) == {"route": '/api/"x"', "status": "200", "backend": nasty}
    assert values(fams, "ollama_proxy_in_flight") == {(("backend", nasty),): 1.0}
    assert values(fams, "ollama_proxy_backend_healthy") == {(("backend", nasty),): 1.0}
    assert values(fams, "ollama_proxy_tokens_generated_total") == {(("model", "m\\1"),): 1.0}


def test_render_is_deterministic_and_pure() -> None:
    m = Metrics(5.0)
    m.observe_request("/b", 200, "y", 0.2, eval_count=3, tokens_per_s=9.0, model="z")
    m.observe_request("/a", 404, "x", 0.2)
    m.count("modified_num_ctx")
    first = m.render({"y": 1, "x": 0}, {"x": True, "y": True}, 2)
    second = m.render({"x": 0, "y": 1}, {"y": True, "x": True}, 2)
    assert first == second
    parse(first)
