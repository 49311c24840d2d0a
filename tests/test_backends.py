"""Table tests for the many-backends part of ollama_proxy (SPEC §3 flags of §6, and §6):
configuration of --scan/--route/--alias and friends, scan targets, the choice of a backend,
the queue's overtaking rule, sticky conversations, merged answers, versions and renaming.
Pure functions only: no sockets, no event loop."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import pytest

import ollama_proxy as op

LATEST = "llama3.2:latest"


def cfg(argv: List[str], env: Optional[Dict[str, str]] = None) -> op.Config:
    return op.build_config(argv, env or {})


def mk(name: str, port: int, healthy: Optional[bool] = True, digests: Tuple[str, ...] = (), loaded: Optional[Dict[str, int]] = None,
       in_flight: int = 0, host: str = "127.0.0.1") -> op.Backend:
    """A Backend named ``name`` at http://host:port with the given state."""
    backend = op.Backend(op.parse_backend("%s=http://%s:%d" % (name, host, port)))
    backend.healthy = healthy
    backend.digests = {m: "sha256:" + m for m in digests}
    backend.loaded = dict(loaded or {})
    backend.in_flight = in_flight
    return backend


def names(backends: List[op.Backend]) -> List[str]:
    return [b.name for b in backends]


# -- 1. configuration: --scan -----------------------------------------------------------------

@pytest.mark.parametrize(
    "value, expected",
    [
        ("127.0.0.1:11500-11599", ("127.0.0.1", 11500, 11599)),
        ("  127.0.0.1:11500-11599  ", ("127.0.0.1", 11500, 11599)),
        ("gpu.lan:11434-11434", ("gpu.lan", 11434, 11434)),
        ("127.0.0.1:11500", ("127.0.0.1", 11500, 11500)),
        ("localhost:1-1", ("localhost", 1, 1)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535, 65535)),
        ("[::1]:11500-11510", ("::1", 11500, 11510)),
        ("[::1]:11500", ("::1", 11500, 11500)),
        ("10.0.0.1:1-%d" % op.MAX_SCAN_PORTS, ("10.0.0.1", 1, op.MAX_SCAN_PORTS)),
    ],
)
def test_parse_scan_accepts(value, expected):
    """HOST:START-END and HOST:PORT parse to (host without brackets, start, end)."""
    assert op.parse_scan(value) == expected


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("11500-11599", "expected HOST:START-END"),
        ("127.0.0.1", "expected HOST:START-END"),
        (":11500-11599", "expected HOST:START-END"),
        ("127.0.0.1:", "expected HOST:START-END"),
        ("127.0.0.1:abc", "expected HOST:START-END"),
        ("127.0.0.1:a-b", "expected HOST:START-END"),
        ("127.0.0.1:11500-x", "expected HOST:START-END"),
        ("127.0.0.1:11500-", "expected HOST:START-END"),
        ("127.0.0.1:-11500", "expected HOST:START-END"),
        ("127.0.0.1:1-2-3", "expected HOST:START-END"),
        ("127.0.0.1:11599-11500", "starts after it ends"),
        ("127.0.0.1:0", "from 1 to 65535"),
        ("127.0.0.1:0-10", "from 1 to 65535"),
        ("127.0.0.1:65536", "from 1 to 65535"),
        ("127.0.0.1:65000-65536", "from 1 to 65535"),
        ("127.0.0.1:1-%d" % (op.MAX_SCAN_PORTS + 1), "more than"),
        ("127.0.0.1:1000-65535", "more than"),
        ("0.0.0.0:11500-11599", "not an address"),
        ("[::]:11500-11599", "not an address"),
    ],
)
def test_parse_scan_refuses(value, fragment):
    """A doubtful --scan value is a ConfigError naming the problem."""
    with pytest.raises(op.ConfigError, match=fragment):
        op.parse_scan(value)


# -- 1. configuration: --route and --alias --------------------------------------------------------

@pytest.mark.parametrize(
    "item, expected",
    [
        ("llama3.2=a+b", (LATEST, ("a", "b"))),
        ("Llama3.2=gpu1", (LATEST, ("gpu1",))),
        (" llama3.2 = a + b ", (LATEST, ("a", "b"))),
        ("qwen2.5:7b=a", ("qwen2.5:7b", ("a",))),
        ("qwen*=a", ("qwen*", ("a",))),
        ("llama3.?=a", ("llama3.?", ("a",))),
        ("[lm]*=a", ("[lm]*", ("a",))),
        ("hf.co/org/model=a", ("hf.co/org/model:latest", ("a",))),
        ("registry:5000/m=a", ("registry:5000/m:latest", ("a",))),
        ("llama3.2=127.0.0.1:11500+[::1]:11501", (LATEST, ("127.0.0.1:11500", "[::1]:11501"))),
    ],
)
def test_parse_route(item, expected):
    """MODEL=NAME[+NAME...]: the model normalized (:latest when untagged), a pattern kept as is."""
    assert op.parse_route(item) == expected


@pytest.mark.parametrize("item", ["llama3.2", "=a", " =a", "llama3.2=", "llama3.2=a+", "llama3.2=+a", "llama3.2=a++b", "llama3.2= "])
def test_parse_route_refuses(item):
    with pytest.raises(op.ConfigError, match="expected MODEL=NAME"):
        op.parse_route(item)


@pytest.mark.parametrize(
    "item, expected",
    [
        ("gpt-4o=llama3.2", ("gpt-4o:latest", "llama3.2")),
        ("GPT-4o=llama3.2", ("gpt-4o:latest", "llama3.2")),
        (" fast:v1 = qwen2.5:7b ", ("fast:v1", "qwen2.5:7b")),
        ("gpt-4o=Llama3.2:8B", ("gpt-4o:latest", "Llama3.2:8B")),  # the model is sent upstream as written
        ("library/gpt=llama3.2", ("gpt:latest", "llama3.2")),
        # patterns: kept as patterns (lower case, default registry dropped), matched against normalized names
        ("claude-*=qwen3-coder:30b", ("claude-*", "qwen3-coder:30b")),
        ("GPT-5*=gpt-oss:20b", ("gpt-5*", "gpt-oss:20b")),
        ("registry.ollama.ai/library/claude-?=qwen3", ("claude-?", "qwen3")),
        ("[cg]pt-*=qwen3", ("[cg]pt-*", "qwen3")),
    ],
)
def test_parse_alias(item, expected):
    assert op.parse_alias(item) == expected


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("gpt-4o", "expected ALIAS=MODEL"),
        ("=llama3.2", "expected ALIAS=MODEL"),
        ("gpt-4o=", "expected ALIAS=MODEL"),
        ("claude=qwen*", "must be a name, not a pattern"),
        ("qwen*=qwen3:8b", "matches the model it sends"),
        ("*=llama3.2", "matches the model it sends"),
        ("llama3.2=llama3.2", "same name"),
        ("llama3.2=llama3.2:latest", "same name"),
        ("LLAMA3.2:latest=llama3.2", "same name"),
    ],
)
def test_parse_alias_refuses(item, fragment):
    with pytest.raises(op.ConfigError, match=fragment):
        op.parse_alias(item)


@pytest.mark.parametrize(
    "model, expected",
    [
        ("gpt-4o:latest", "llama3.2"),  # exact
        ("claude-sonnet-4-5:latest", "qwen3-coder:30b"),  # the first pattern that matches
        ("claude-opus-4-1:latest", "qwen3-coder:30b"),
        ("claude-3-haiku:latest", "qwen3-coder:30b"),  # the later, narrower pattern loses: first wins
        ("claude-exact:latest", "llama3.2:1b"),  # an exact alias wins over a pattern
        ("gpt-5-codex:latest", "gpt-oss:20b"),
        ("gpt-4o-mini:latest", None),  # no alias
        ("llama3.2:latest", None),
    ],
)
def test_alias_target(model, expected):
    """Exact aliases before patterns; among patterns, the first in the configuration."""
    aliases = [op.parse_alias(i) for i in ["claude-*=qwen3-coder:30b", "claude-3-*=llama3.2:3b", "gpt-4o=llama3.2",
                                           "claude-exact=llama3.2:1b", "gpt-5*=gpt-oss:20b"]]
    exact = {a: m for a, m in aliases if not op.is_model_pattern(a)}
    patterns = [(a, m) for a, m in aliases if op.is_model_pattern(a)]
    assert op.alias_target(model, exact, patterns) == expected


def test_merge_tags_lists_no_pattern_alias():
    """--list-aliases lists exact aliases only: a pattern names no model."""
    tags = [{"name": "qwen3:8b", "model": "qwen3:8b", "modified_at": "2026-01-01T00:00:00Z", "size": 1, "digest": "d"}]
    models, _ = op.merge_tags([tags], aliases=[op.parse_alias("claude-*=qwen3:8b"), op.parse_alias("gpt-4o=qwen3:8b")], list_aliases=True)
    assert [m["name"] for m in models] == ["qwen3:8b", "gpt-4o"]


# -- 1. configuration: build_config for many backends --------------------------------------------

def test_several_backends_by_flag_with_default_and_given_names():
    config = cfg(["--backend", "http://10.0.0.1:11434", "--backend", "gpu2=http://10.0.0.2:11500", "--backend", "[::1]:11600"])
    assert [b.name for b in config.backends] == ["10.0.0.1:11434", "gpu2", "[::1]:11600"]
    assert [b.url for b in config.backends] == ["http://10.0.0.1:11434", "http://10.0.0.2:11500", "http://[::1]:11600"]


def test_several_backends_from_ollama_backends():
    config = cfg([], {"OLLAMA_BACKENDS": "a=http://h1:1, h2:2 ,,https://h3"})
    assert [(b.name, b.url) for b in config.backends] == [("a", "http://h1:1"), ("h2:2", "http://h2:2"), ("h3:443", "https://h3:443")]


@pytest.mark.parametrize(
    "argv, env",
    [
        (["--backend", "a=http://x:1", "--backend", "a=http://y:2"], {}),
        (["--backend", "http://x:1", "--backend", "x:1"], {}),
        ([], {"OLLAMA_BACKENDS": "gpu=http://x:1,gpu=http://y:1"}),
    ],
)
def test_duplicate_backend_names_refused(argv, env):
    with pytest.raises(op.ConfigError, match="used twice"):
        cfg(argv, env)


@pytest.mark.parametrize(
    "argv, env, routes",
    [
        (["--backend", "a=http://x:1", "--backend", "b=http://y:1", "--route", "llama3.2=a+b"], {}, ((LATEST, ("a", "b")),)),
        (["--backend", "http://x:1", "--route", "qwen*=x:1"], {}, (("qwen*", ("x:1",)),)),
        (["--scan", "127.0.0.1:11500-11510", "--route", "llama3.2=127.0.0.1:11500"], {}, ((LATEST, ("127.0.0.1:11500",)),)),
        (["--scan", "127.0.0.1:11500-11510", "--route", "llama3.2=127.0.0.1:11510"], {}, ((LATEST, ("127.0.0.1:11510",)),)),
        (["--scan", "[::1]:11500-11510", "--route", "llama3.2=[::1]:11505"], {}, ((LATEST, ("[::1]:11505",)),)),
        (["--backend", "a=http://x:1", "--scan", "127.0.0.1:11500-11510", "--route", "m=a+127.0.0.1:11501"], {}, (("m:latest", ("a", "127.0.0.1:11501")),)),
        (["--backend", "a=http://x:1", "--backend", "b=http://y:1"], {"PROXY_ROUTES": "llama3.2=a, qwen*=b+a"},
         ((LATEST, ("a",)), ("qwen*", ("b", "a")))),
        (["--backend", "a=http://x:1", "--backend", "b=http://y:1", "--route", "m=b"], {"PROXY_ROUTES": "m=a"}, (("m:latest", ("b",)),)),
    ],
)
def test_routes_accepted(argv, env, routes):
    """Route names are configured backends or host:port names inside the --scan range; the flag beats PROXY_ROUTES."""
    assert cfg(argv, env).routes == routes


@pytest.mark.parametrize(
    "argv, env",
    [
        (["--backend", "a=http://x:1", "--route", "llama3.2=b"], {}),
        (["--backend", "a=http://x:1", "--route", "llama3.2=a+b"], {}),
        (["--scan", "127.0.0.1:11500-11510", "--route", "llama3.2=127.0.0.1:11511"], {}),
        (["--scan", "127.0.0.1:11500-11510", "--route", "llama3.2=127.0.0.1:11499"], {}),
        (["--scan", "127.0.0.1:11500-11510", "--route", "llama3.2=10.0.0.1:11505"], {}),
        (["--scan", "127.0.0.1:11500-11510", "--route", "llama3.2=127.0.0.1"], {}),
        ([], {"PROXY_ROUTES": "llama3.2=nobody"}),
    ],
)
def test_route_to_unknown_backend_refused(argv, env):
    with pytest.raises(op.ConfigError, match="no backend is named"):
        cfg(argv, env)


# A route NAME inside the --scan range must be a name scan_targets() can produce (found by a
# helper's review: the own port, a configured backend's port, another case of the host).
@pytest.mark.parametrize(
    "argv",
    [
        # the proxy's own port inside the range: scan_targets skips it, so no backend ever has that name
        ["--port", "11505", "--scan", "127.0.0.1:11500-11510", "--route", "m=127.0.0.1:11505"],
        # a port of the range that is a configured backend under another name: scan_targets skips it too
        ["--backend", "gpu=http://127.0.0.1:11501", "--scan", "127.0.0.1:11500-11510", "--route", "m=127.0.0.1:11501"],
        # the range's host written in another case: the discovered names keep the --scan spelling
        ["--scan", "GPU.lan:11500-11510", "--route", "m=gpu.lan:11500"],
    ],
)
def test_route_accepted_only_if_some_backend_can_bear_that_name(argv):
    """A route NAME that no backend will ever be named would make eligible_backends() return []
    for the model for ever: refused at start instead (SPEC §3), or resolved to the discovered name."""
    try:
        config = cfg(argv)
    except op.ConfigError:
        return  # refused at start: fine
    possible = {t.name for t in op.scan_targets(config, config.port)}
    for _, route_names in config.routes:
        for name in route_names:
            assert name in possible, "route to %r accepted but no backend can be named so (possible: %s)" % (name, sorted(possible)[:3])


@pytest.mark.parametrize(
    "argv, env",
    [
        (["--scan", "127.0.0.1:11500-11510", "--scan-interval", "0"], {}),
        (["--scan", "127.0.0.1:11500-11510"], {"SCAN_INTERVAL_SECONDS": "0"}),
        ([], {"BACKEND_PORT_START": "11500", "SCAN_INTERVAL_SECONDS": "0"}),
    ],
)
def test_scan_needs_probe_rounds(argv, env):
    with pytest.raises(op.ConfigError, match="scan-interval"):
        cfg(argv, env)


@pytest.mark.parametrize(
    "env, scan",
    [
        ({"BACKEND_PORT_START": "11500"}, ("127.0.0.1", 11500, 11500)),
        ({"BACKEND_PORT_START": "11500", "BACKEND_PORT_END": "11599"}, ("127.0.0.1", 11500, 11599)),
        ({"BACKEND_PORT_START": "11500", "BACKEND_PORT_END": ""}, ("127.0.0.1", 11500, 11500)),
        ({"BACKEND_HOST": "gpu.lan", "BACKEND_PORT_START": "11500", "BACKEND_PORT_END": "11502"}, ("gpu.lan", 11500, 11502)),
        ({"BACKEND_HOST": "::1", "BACKEND_PORT_START": "11500", "BACKEND_PORT_END": "11502"}, ("::1", 11500, 11502)),
        ({"BACKEND_HOST": "", "BACKEND_PORT_START": '"11500"'}, ("127.0.0.1", 11500, 11500)),
        ({"BACKEND_HOST": "gpu.lan"}, None),
        ({}, None),
    ],
)
def test_scan_from_environment(env, scan):
    """BACKEND_PORT_START turns --scan on; BACKEND_HOST defaults to 127.0.0.1, BACKEND_PORT_END to the start."""
    assert cfg([], env).scan == scan


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"BACKEND_PORT_START": "abc"}, "expected HOST:START-END"),
        ({"BACKEND_PORT_START": "11600", "BACKEND_PORT_END": "11500"}, "starts after it ends"),
        ({"BACKEND_PORT_START": "0"}, "from 1 to 65535"),
        ({"BACKEND_HOST": "0.0.0.0", "BACKEND_PORT_START": "11500"}, "not an address"),
    ],
)
def test_scan_from_environment_refused(env, fragment):
    with pytest.raises(op.ConfigError, match=fragment):
        cfg([], env)


def test_scan_flag_beats_variables():
    env = {"BACKEND_HOST": "gpu.lan", "BACKEND_PORT_START": "11500", "BACKEND_PORT_END": "11599"}
    assert cfg(["--scan", "127.0.0.1:12000-12001"], env).scan == ("127.0.0.1", 12000, 12001)


@pytest.mark.parametrize(
    "argv, env",
    [
        (["--scan", "127.0.0.1:11500-11510"], {}),
        (["--scan", "127.0.0.1:11500-11510"], {"OLLAMA_HOST": "10.0.0.1:11434", "OLLAMA_BASE_URL": "http://b:1"}),
        ([], {"BACKEND_PORT_START": "11500", "OLLAMA_HOST": "10.0.0.1:11434"}),
    ],
)
def test_scan_alone_has_no_default_backend(argv, env):
    assert cfg(argv, env).backends == ()


def test_scan_keeps_explicit_backends():
    assert [b.name for b in cfg(["--scan", "127.0.0.1:11500-11510", "--backend", "a=http://x:1"]).backends] == ["a"]
    assert [b.name for b in cfg(["--scan", "127.0.0.1:11500-11510"], {"OLLAMA_BACKENDS": "a=http://x:1,b=http://y:2"}).backends] == ["a", "b"]


def test_many_backend_defaults():
    config = cfg([])
    assert (config.scan, config.scan_interval, config.probe_timeout) == (None, 5.0, 1.0)
    assert (config.routes, config.aliases, config.list_aliases, config.preload) == ((), (), False, ())
    assert (config.max_retries, config.max_concurrent, config.queue_timeout, config.max_queue, config.sticky) == (2, 0, 300.0, 512, True)


@pytest.mark.parametrize(
    "argv, env, attr, expected",
    [
        ([], {"PROXY_ALIASES": "gpt-4o=llama3.2, Fast=qwen2.5:7b"}, "aliases", (("gpt-4o:latest", "llama3.2"), ("fast:latest", "qwen2.5:7b"))),
        (["--alias", "a=llama3.2"], {"PROXY_ALIASES": "b=qwen"}, "aliases", (("a:latest", "llama3.2"),)),
        ([], {"PROXY_PRELOAD": "llama3.2, Qwen2.5:7B,,"}, "preload", (LATEST, "qwen2.5:7b")),
        (["--preload", "mistral"], {"PROXY_PRELOAD": "llama3.2"}, "preload", ("mistral:latest",)),
        (["--preload", "a", "--preload", "b:1"], {}, "preload", ("a:latest", "b:1")),
        ([], {"PROXY_LIST_ALIASES": "true"}, "list_aliases", True),
        ([], {"PROXY_LIST_ALIASES": "0"}, "list_aliases", False),
        (["--list-aliases"], {"PROXY_LIST_ALIASES": "false"}, "list_aliases", True),
        ([], {"PROXY_STICKY": "false"}, "sticky", False),
        ([], {"PROXY_STICKY": "no"}, "sticky", False),
        ([], {"PROXY_STICKY": "true"}, "sticky", True),
        (["--no-sticky"], {}, "sticky", False),
        (["--no-sticky"], {"PROXY_STICKY": "true"}, "sticky", False),
        (["--sticky"], {"PROXY_STICKY": "false"}, "sticky", True),
        ([], {"MAX_RETRIES": "0"}, "max_retries", 0),
        ([], {"MAX_RETRIES": "5"}, "max_retries", 5),
        (["--max-retries", "1"], {"MAX_RETRIES": "5"}, "max_retries", 1),
        ([], {"MAX_CONCURRENT_PER_BACKEND": "4"}, "max_concurrent", 4),
        (["--max-concurrent", "2"], {"MAX_CONCURRENT_PER_BACKEND": "4"}, "max_concurrent", 2),
        ([], {"QUEUE_TIMEOUT_SECONDS": "12.5"}, "queue_timeout", 12.5),
        (["--queue-timeout", "3"], {"QUEUE_TIMEOUT_SECONDS": "12.5"}, "queue_timeout", 3.0),
        ([], {"PROXY_MAX_QUEUE": "7"}, "max_queue", 7),
        (["--max-queue", "0"], {"PROXY_MAX_QUEUE": "7"}, "max_queue", 0),
        ([], {"PROBE_TIMEOUT_SECONDS": "0.25"}, "probe_timeout", 0.25),
        (["--probe-timeout", "3"], {"PROBE_TIMEOUT_SECONDS": "0.25"}, "probe_timeout", 3.0),
        ([], {"SCAN_INTERVAL_SECONDS": "2"}, "scan_interval", 2.0),
        (["--scan-interval", "0"], {"SCAN_INTERVAL_SECONDS": "2"}, "scan_interval", 0.0),
    ],
)
def test_many_backend_settings_flag_beats_variable(argv, env, attr, expected):
    assert getattr(cfg(argv, env), attr) == expected


@pytest.mark.parametrize(
    "argv, env, fragment",
    [
        (["--max-retries=-1"], {}, "max-retries"),
        ([], {"MAX_RETRIES": "-1"}, "max-retries"),
        (["--max-concurrent=-1"], {}, "max-concurrent"),
        ([], {"MAX_CONCURRENT_PER_BACKEND": "-2"}, "max-concurrent"),
        (["--queue-timeout=-1"], {}, "queue-timeout"),
        ([], {"QUEUE_TIMEOUT_SECONDS": "-5"}, "queue-timeout"),
        (["--max-queue=-1"], {}, "max-queue"),
        ([], {"PROXY_MAX_QUEUE": "-1"}, "max-queue"),
        (["--probe-timeout=-1"], {}, "probe-timeout"),
        ([], {"PROBE_TIMEOUT_SECONDS": "-0.5"}, "probe-timeout"),
        (["--scan-interval=-1"], {}, "scan-interval"),
        ([], {"MAX_RETRIES": "two"}, "not a number"),
        ([], {"PROXY_STICKY": "sometimes"}, "boolean"),
        ([], {"PROXY_LIST_ALIASES": "maybe"}, "boolean"),
        ([], {"PROXY_ALIASES": "gpt=llama*"}, "not a pattern"),
        ([], {"PROXY_ROUTES": "llama3.2"}, "expected MODEL=NAME"),
    ],
)
def test_many_backend_settings_refused(argv, env, fragment):
    with pytest.raises(op.ConfigError, match=fragment):
        cfg(argv, env)


# -- 2. scan_targets -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "argv, own_port, expected",
    [
        (["--backend", "a=http://x:1"], 11435, ["a"]),
        (["--scan", "127.0.0.1:11500-11502"], 11435, ["127.0.0.1:11500", "127.0.0.1:11501", "127.0.0.1:11502"]),
        (["--scan", "127.0.0.1:11500-11504", "--backend", "gpu=http://127.0.0.1:11501", "--backend", "far=http://10.0.0.9:11434"], 11435,
         ["gpu", "far", "127.0.0.1:11500", "127.0.0.1:11502", "127.0.0.1:11503", "127.0.0.1:11504"]),
        (["--scan", "127.0.0.1:11500-11503", "--port", "11502"], 11502, ["127.0.0.1:11500", "127.0.0.1:11501", "127.0.0.1:11503"]),
        # --port 0: the port actually bound is what counts
        (["--scan", "127.0.0.1:11500-11503", "--port", "0"], 11501, ["127.0.0.1:11500", "127.0.0.1:11502", "127.0.0.1:11503"]),
        (["--scan", "localhost:11500-11502", "--port", "11501"], 11501, ["localhost:11500", "localhost:11502"]),
        (["--scan", "127.0.0.1:11500-11502", "--host", "0.0.0.0", "--port", "11500"], 11500, ["127.0.0.1:11501", "127.0.0.1:11502"]),
        # listening on another address: the loopback port in range is someone else's
        (["--scan", "127.0.0.1:11500-11501", "--host", "10.1.2.3", "--port", "11500"], 11500, ["127.0.0.1:11500", "127.0.0.1:11501"]),
        (["--scan", "[::1]:11500-11501"], 11435, ["[::1]:11500", "[::1]:11501"]),
    ],
)
def test_scan_targets(argv, own_port, expected):
    """Configured backends first, then each port of the range not already configured and not the proxy itself."""
    targets = op.scan_targets(cfg(argv), own_port)
    got = [t.name for t in targets]
    assert got == expected
    assert len(set(got)) == len(got)


def test_scan_targets_are_plain_http_specs():
    targets = op.scan_targets(cfg(["--scan", "127.0.0.1:11500-11500"]), 11435)
    assert [(t.scheme, t.host, t.port, t.url, t.auth) for t in targets] == [("http", "127.0.0.1", 11500, "http://127.0.0.1:11500", None)]


# -- 3. eligible_backends -----------------------------------------------------------------------

def _fleet() -> List[op.Backend]:
    return [
        mk("a", 11501, healthy=True, digests=(LATEST,)),
        mk("b", 11502, healthy=None, digests=(LATEST, "qwen2.5:7b")),
        mk("c", 11503, healthy=False, digests=(LATEST, "mistral:latest")),
        mk("d", 11504, healthy=True, digests=("qwen2.5:7b",)),
    ]


@pytest.mark.parametrize(
    "model, routes, exclude, expected",
    [
        # unhealthy (False) out, never-probed (None) in; model-less: the first healthy one only
        (None, (), (), ["a"]),
        ("", (), (), ["a"]),
        (LATEST + "-nobody", (), (), ["a", "b", "d"]),
        # inventory narrowing
        (LATEST, (), (), ["a", "b"]),
        ("qwen2.5:7b", (), (), ["b", "d"]),
        # only an unhealthy backend has it: no narrowing, every healthy one
        ("mistral:latest", (), (), ["a", "b", "d"]),
        # nobody has it: every healthy one
        ("phi3:latest", (), (), ["a", "b", "d"]),
        # a route narrows, even to a backend that lacks the model
        (LATEST, ((LATEST, ("d",)),), (), ["d"]),
        (LATEST, ((LATEST, ("a", "d")),), (), ["a", "d"]),
        ("phi3:latest", (("phi3:latest", ("b",)),), (), ["b"]),
        # route to unhealthy only: nothing
        (LATEST, ((LATEST, ("c",)),), (), []),
        # route to a name no backend has (a scan port not found yet): nothing
        (LATEST, ((LATEST, ("127.0.0.1:11600",)),), (), []),
        # fnmatch patterns, first matching route wins
        ("qwen2.5:7b", (("qwen*", ("a",)),), (), ["a"]),
        ("qwen2.5:7b", (("qwen2.5:?b", ("a",)), ("qwen*", ("d",))), (), ["a"]),
        ("qwen2.5:14b", (("qwen2.5:?b", ("a",)), ("qwen*", ("d",))), (), ["d"]),
        ("qwen2.5:7b", (("llama*", ("a",)),), (), ["b", "d"]),
        # a route for another model does not apply
        (LATEST, (("qwen*", ("d",)),), (), ["a", "b"]),
        # exclude removes tried backends (after narrowing)
        (LATEST, (), ("a",), ["b"]),
        (LATEST, (), ("a", "b"), []),
        (None, (), ("a",), ["b"]),
        ("phi3:latest", (), ("a", "d"), ["b"]),
        (LATEST, ((LATEST, ("a", "d")),), ("d",), ["a"]),
    ],
)
def test_eligible_backends(model, routes, exclude, expected):
    assert names(op.eligible_backends(_fleet(), model, routes, exclude)) == expected


def test_eligible_backends_with_no_backends():
    assert op.eligible_backends([], LATEST, ()) == []


# -- 4. choose_backend ----------------------------------------------------------------------------

# (name, port, context the model is loaded with (0: not loaded), in_flight[, host])
Row = Tuple[Any, ...]


def _candidates(rows: List[Row]) -> List[op.Backend]:
    out = []
    for row in rows:
        name, port, ctx, in_flight = row[:4]
        host = row[4] if len(row) > 4 else "127.0.0.1"
        out.append(mk(name, port, loaded={LATEST: ctx, "other:latest": 99999} if ctx else {"other:latest": 99999}, in_flight=in_flight, host=host))
    return out


@pytest.mark.parametrize(
    "rows, model, sticky, need_ctx, cap, embed, expected",
    [
        # sticky wins whatever the other rules say, if it has a free slot
        ([("a", 1, 8192, 0), ("b", 2, 0, 5)], LATEST, "b", 0, 0, False, "b"),
        ([("b", 2, 0, 5), ("a", 1, 8192, 0)], LATEST, "b", 0, 0, False, "b"),
        ([("a", 1, 8192, 0), ("b", 2, 0, 1)], LATEST, "b", 0, 2, False, "b"),
        # sticky full: skipped, the usual rules apply
        ([("a", 1, 0, 0), ("b", 2, 8192, 2)], LATEST, "b", 0, 2, False, "a"),
        # sticky not among the candidates: ignored
        ([("a", 1, 0, 3), ("b", 2, 0, 1)], LATEST, "zz", 0, 0, False, "b"),
        # loaded with enough context beats loaded with less, whatever in flight and port
        ([("a", 1, 4096, 0), ("b", 2, 8192, 3)], LATEST, None, 8192, 0, False, "b"),
        ([("a", 1, 4096, 0), ("b", 2, 16384, 3)], LATEST, None, 8192, 0, False, "b"),
        # loaded with a smaller context beats not loaded
        ([("a", 1, 0, 0), ("b", 2, 2048, 3)], LATEST, None, 8192, 0, False, "b"),
        # loaded beats not loaded (need_ctx 0: any loaded context holds it)
        ([("a", 1, 0, 0), ("b", 2, 2048, 3)], LATEST, None, 0, 0, False, "b"),
        # both loaded with enough: fewer in flight
        ([("a", 1, 32768, 2), ("b", 2, 8192, 1)], LATEST, None, 8192, 0, False, "b"),
        # a model loaded is only the requested model; another loaded model does not count
        ([("a", 1, 0, 0), ("b", 2, 0, 1)], LATEST, None, 0, 0, False, "a"),
        # fewer in flight
        ([("a", 1, 0, 2), ("b", 2, 0, 1)], LATEST, None, 0, 0, False, "b"),
        # then the lower port
        ([("a", 11502, 0, 1), ("b", 11501, 0, 1)], LATEST, None, 0, 0, False, "b"),
        ([("a", 11502, 4096, 0), ("b", 11501, 4096, 0)], LATEST, None, 8192, 0, False, "b"),
        # then the earlier in the list
        ([("a", 11434, 0, 1, "h1"), ("b", 11434, 0, 1, "h2")], LATEST, None, 0, 0, False, "a"),
        ([("b", 11434, 0, 1, "h2"), ("a", 11434, 0, 1, "h1")], LATEST, None, 0, 0, False, "b"),
        # model-less: the first with a free slot, nothing else counts
        ([("a", 2, 0, 5), ("b", 1, 0, 0)], None, None, 0, 0, False, "a"),
        ([("a", 2, 0, 5), ("b", 1, 0, 0)], None, "b", 0, 0, False, "a"),
        ([("a", 1, 0, 2), ("b", 3, 0, 1), ("c", 2, 0, 0)], None, None, 0, 2, False, "b"),
        ([("a", 1, 0, 2), ("b", 3, 0, 2)], None, None, 0, 2, False, None),
        # cap: full backends skipped even if best otherwise
        ([("a", 1, 8192, 2), ("b", 2, 0, 1)], LATEST, None, 0, 2, False, "b"),
        ([("a", 1, 8192, 2), ("b", 2, 0, 3)], LATEST, None, 0, 2, False, None),
        # cap 0: no cap at all
        ([("a", 1, 0, 1000)], LATEST, None, 0, 0, False, "a"),
        # embeddings may use one extra slot: in_flight == cap allowed, cap + 1 not
        ([("a", 1, 0, 2)], LATEST, None, 0, 2, True, "a"),
        ([("a", 1, 0, 2)], LATEST, None, 0, 2, False, None),
        ([("a", 1, 0, 3)], LATEST, None, 0, 2, True, None),
        ([("a", 1, 0, 3), ("b", 2, 0, 2)], LATEST, None, 0, 2, True, "b"),
        ([("a", 1, 0, 1)], None, None, 0, 1, True, "a"),
        ([("a", 1, 0, 2)], None, None, 0, 1, True, None),
        # nothing to choose from
        ([], LATEST, None, 0, 0, False, None),
    ],
)
def test_choose_backend(rows, model, sticky, need_ctx, cap, embed, expected):
    chosen = op.choose_backend(_candidates(rows), model, sticky, need_ctx, cap, embed)
    assert (chosen.name if chosen is not None else None) == expected


@pytest.mark.parametrize("cap, in_flight, embed, expected", [
    (0, 0, False, True), (0, 50, False, True), (2, 1, False, True), (2, 2, False, False),
    (2, 2, True, True), (2, 3, True, False), (1, 0, True, True), (1, 1, True, True), (1, 2, True, False),
])
def test_has_free_slot(cap, in_flight, embed, expected):
    assert op.has_free_slot(mk("a", 1, in_flight=in_flight), cap, embed) is expected


# -- 5. pick_waiter -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "entries, expected",
    [
        ([(False, 0)], 0),
        ([(False, 0), (False, 0), (False, 0)], 0),
        ([(True, 0)], 0),
        ([(True, 0), (True, 0)], 0),
        ([(False, 0), (True, 0)], 1),
        ([(False, 0), (False, 0), (True, 0), (True, 0)], 2),
        ([(False, 2), (True, 0)], 1),
        ([(False, 2), (False, 2), (True, 0)], 2),
        ([(False, op.MAX_OVERTAKES), (True, 0)], 0),
        ([(False, op.MAX_OVERTAKES + 1), (True, 0)], 0),
        ([(False, 0), (False, op.MAX_OVERTAKES), (True, 0)], 0),
        ([(False, 0), (True, 0), (False, op.MAX_OVERTAKES), (True, 0)], 1),
        ([(True, op.MAX_OVERTAKES), (True, 0)], 0),
    ],
)
def test_pick_waiter(entries, expected):
    """FIFO, except that a waiter whose model is loaded goes first unless it would pass someone
    already overtaken MAX_OVERTAKES times."""
    assert op.pick_waiter(entries) == expected


def test_max_overtakes_is_three():
    assert op.MAX_OVERTAKES == 3


class _DoneFuture:
    """Just what ``assign`` reads of a waiter's future: whether it is done."""

    def __init__(self, done: bool = False) -> None:
        self._done = done

    def done(self) -> bool:
        return self._done


def waiter(model: Optional[str], path: str = "/api/chat", overtaken: int = 0, done: bool = False) -> op.Waiter:
    want = op.Want(lambda: "test", path, model, embed=path in op.EMBED_PATHS)
    return op.Waiter(want, model, (), _DoneFuture(done), overtaken=overtaken)  # type: ignore[arg-type]


def _run_queue(queue: List[Dict[str, Any]], arrivals: List[Dict[str, Any]]) -> List[str]:
    """Free one slot per arrival through ``assign``, then do what Scheduler.dispatch does with its answer."""
    backend = mk("a", 1, loaded={"hot:latest": 0})
    waiters = [(w, waiter("hot:latest" if w["loaded"] else "cold:latest", overtaken=w["overtaken"])) for w in queue]
    served = []
    for arrival in arrivals:
        waiters.append((arrival, waiter("hot:latest" if arrival["loaded"] else "cold:latest", overtaken=arrival["overtaken"])))
        chosen, passed = op.assign([w for _, w in waiters], backend, 0, lambda w: True)
        assert chosen is not None
        for w in passed:
            w.overtaken += 1
        index = next(i for i, (_, w) in enumerate(waiters) if w is chosen)
        entry, _ = waiters.pop(index)
        served.append(entry["id"])
        for d, w in waiters:
            d["overtaken"] = w.overtaken
        entry["overtaken"] = chosen.overtaken
    return served


@pytest.mark.parametrize(
    "queue, cap, in_flight, refused, expected, passed",
    [
        ([], 0, 0, (), None, []),
        # FIFO among the waiters that may use the backend
        ([("cold", 0), ("cold", 0)], 0, 0, (), 0, []),
        # a loaded model goes first, passing the ones before it
        ([("cold", 0), ("cold", 0), ("hot", 0)], 0, 0, (), 2, [0, 1]),
        # unless someone it would pass has been overtaken MAX_OVERTAKES times
        ([("cold", 3), ("hot", 0)], 0, 0, (), 0, []),
        ([("cold", 2), ("hot", 0)], 0, 0, (), 1, [0]),
        # a waiter that may not use this backend is skipped, neither chosen nor passed
        ([("cold", 0), ("hot", 0)], 0, 0, (0,), 1, []),
        ([("cold", 0)], 0, 0, (0,), None, []),
        # a done future (granted or cancelled) is skipped
        ([("done", 0), ("cold", 0)], 0, 0, (), 1, []),
        # no free slot: only embeddings may take the extra one
        ([("cold", 0), ("embed", 0)], 1, 1, (), 1, []),
        ([("cold", 0)], 1, 1, (), None, []),
        ([("embed", 0)], 1, 2, (), None, []),
        # model-less waiters are never "loaded"
        ([(None, 0), ("hot", 0)], 0, 0, (), 1, [0]),
    ],
)
def test_assign(queue, cap, in_flight, refused, expected, passed):
    """Scheduler.dispatch's pick, alone: who gets one free slot of a backend and whom it passes."""
    backend = mk("a", 1, loaded={"hot:latest": 4096}, in_flight=in_flight)
    waiters = []
    for kind, overtaken in queue:
        if kind == "embed":
            waiters.append(waiter("cold:latest", path="/api/embed", overtaken=overtaken))
        elif kind == "done":
            waiters.append(waiter("hot:latest", overtaken=overtaken, done=True))
        else:
            waiters.append(waiter(kind + ":latest" if kind else None, overtaken=overtaken))
    refused_ids = {id(waiters[i]) for i in refused}
    chosen, passed_waiters = op.assign(waiters, backend, cap, lambda w: id(w) not in refused_ids)
    assert (None if chosen is None else waiters.index(chosen)) == expected
    assert [waiters.index(w) for w in passed_waiters] == passed
    assert [w.overtaken for w in waiters] == [o for _, o in queue]  # assign decides; it changes nothing


def test_old_waiter_is_passed_at_most_three_times():
    old = {"id": "old", "loaded": False, "overtaken": 0}
    stream = [{"id": "L%d" % i, "loaded": True, "overtaken": 0} for i in range(10)]
    served = _run_queue([old], stream)
    assert served.index("old") == op.MAX_OVERTAKES
    assert served[: op.MAX_OVERTAKES] == ["L0", "L1", "L2"]
    assert old["overtaken"] == op.MAX_OVERTAKES


def test_two_old_waiters_each_passed_at_most_three_times():
    queue = [{"id": "old1", "loaded": False, "overtaken": 0}, {"id": "old2", "loaded": False, "overtaken": 0}]
    stream = [{"id": "L%d" % i, "loaded": True, "overtaken": 0} for i in range(10)]
    served = _run_queue(queue, stream)
    assert served[:5] == ["L0", "L1", "L2", "old1", "old2"]
    passes = {w: sum(1 for s in served[: served.index(w)] if s.startswith("L")) for w in ("old1", "old2")}
    assert max(passes.values()) <= op.MAX_OVERTAKES


# -- 6. conversation_key -------------------------------------------------------------------------

USER1 = {"role": "user", "content": "Why is the sky blue?"}
ANSWER1 = {"role": "assistant", "content": "Rayleigh scattering."}
USER2 = {"role": "user", "content": "And sunsets?"}
ANSWER2 = {"role": "assistant", "content": "Longer path."}
USER3 = {"role": "user", "content": "Thanks."}
SYSTEM = {"role": "system", "content": "Be brief."}


def test_conversation_key_same_for_every_turn():
    turn1 = op.conversation_key(LATEST, {"messages": [USER1]})
    turn2 = op.conversation_key(LATEST, {"messages": [USER1, ANSWER1, USER2]})
    turn3 = op.conversation_key(LATEST, {"messages": [USER1, ANSWER1, USER2, ANSWER2, USER3], "stream": False, "options": {"num_ctx": 8192}})
    assert isinstance(turn1, str) and turn1
    assert turn1 == turn2 == turn3


def test_conversation_key_with_system_message():
    turn1 = op.conversation_key(LATEST, {"messages": [SYSTEM, USER1]})
    turn2 = op.conversation_key(LATEST, {"messages": [SYSTEM, USER1, ANSWER1, USER2]})
    assert turn1 == turn2
    assert turn1 != op.conversation_key(LATEST, {"messages": [USER1]})
    other_system = {"role": "system", "content": "Be verbose."}
    assert turn1 != op.conversation_key(LATEST, {"messages": [other_system, USER1]})


def test_conversation_key_ignores_the_billing_hash():
    """Claude Code's per-request hash at the top of its system prompt does not split a
    conversation across backends (also under --no-stable-prefix, which sends it as it is)."""
    def system(cch: str) -> dict:
        return {"role": "system", "content": "x-anthropic-billing-header: cc_version=2.1; cch=%s;\nYou are Claude Code." % cch}
    turn1 = op.conversation_key(LATEST, {"messages": [system("1a2b3"), USER1]})
    turn2 = op.conversation_key(LATEST, {"messages": [system("ffe01"), USER1, ANSWER1, USER2]})
    assert turn1 == turn2
    assert turn1 != op.conversation_key(LATEST, {"messages": [{"role": "system", "content": "You are Claude Code."}, USER1]})


@pytest.mark.parametrize(
    "model, body",
    [
        (LATEST, {"messages": [{"role": "user", "content": "Why is grass green?"}]}),
        (LATEST, {"messages": [{"role": "user", "content": "Why is grass green?"}, ANSWER1, USER2]}),
        ("qwen2.5:7b", {"messages": [USER1]}),
        ("qwen2.5:7b", {"messages": [USER1, ANSWER1, USER2]}),
    ],
)
def test_conversation_key_differs(model, body):
    assert op.conversation_key(model, body) != op.conversation_key(LATEST, {"messages": [USER1]})


@pytest.mark.parametrize("body", [{}, {"messages": []}, {"messages": None}, {"messages": "hi"}, {"prompt": "hi"}])
def test_conversation_key_none_without_messages(body):
    assert op.conversation_key(LATEST, body) is None


# -- 7. StickyTable -----------------------------------------------------------------------------

def test_sticky_get_put_expiry():
    table = op.StickyTable(ttl=10.0)
    assert table.get("k", 0.0) is None
    table.put("k", "a", 100.0)
    assert table.get("k", 100.0) == "a"
    assert table.get("k", 109.9) == "a"
    assert table.get("k", 110.0) is None  # expired at ttl
    assert table.get("k", 100.0) is None  # and gone
    table.put("k", "a", 200.0)
    table.put("k", "b", 205.0)  # a later turn on another backend: replaced, expiry renewed
    assert table.get("k", 214.0) == "b"
    assert table.get("k", 215.0) is None


def test_sticky_default_ttl_is_ten_minutes():
    table = op.StickyTable()
    table.put("k", "a", 0.0)
    assert table.get("k", 599.0) == "a"
    assert table.get("k", 600.0) is None


def test_sticky_forget_backend():
    table = op.StickyTable(ttl=60.0)
    table.put("k1", "a", 0.0)
    table.put("k2", "b", 0.0)
    table.put("k3", "a", 1.0)
    assert table.forget_backend("a") == 2
    assert table.get("k1", 2.0) is None and table.get("k3", 2.0) is None
    assert table.get("k2", 2.0) == "b"
    assert table.forget_backend("a") == 0
    assert table.forget_backend("zz") == 0


def test_sticky_size_limit_evicts_oldest():
    table = op.StickyTable(ttl=60.0, limit=2)
    table.put("k1", "a", 0.0)
    table.put("k2", "b", 1.0)
    table.put("k3", "c", 2.0)
    assert len(table.entries) == 2
    assert table.get("k1", 3.0) is None
    assert table.get("k2", 3.0) == "b" and table.get("k3", 3.0) == "c"
    table.put("k2", "b", 4.0)  # refreshed: now the newest
    table.put("k4", "d", 5.0)
    assert table.get("k3", 6.0) is None
    assert table.get("k2", 6.0) == "b" and table.get("k4", 6.0) == "d"


def test_sticky_put_drops_expired_entries():
    table = op.StickyTable(ttl=10.0, limit=100)
    table.put("k1", "a", 0.0)
    table.put("k2", "a", 5.0)
    table.put("k3", "a", 12.0)
    assert set(table.entries) == {"k2", "k3"}


# -- 8. repair_tag_entry, merge_tags, merge_ps -------------------------------------------------------

FULL = {"name": "llama3.2:latest", "model": "llama3.2:latest", "modified_at": "2025-01-01T00:00:00Z", "size": 2019393189,
        "digest": "a80c4f17acd5", "details": {"family": "llama"}}


@pytest.mark.parametrize(
    "entry, fixed, repaired",
    [
        (FULL, FULL, None),
        ({k: v for k, v in FULL.items() if k != "model"}, FULL, "model"),
        (dict(FULL, model=""), FULL, "model"),
        (dict({k: v for k, v in FULL.items() if k != "name"}), FULL, "name"),
        (dict(FULL, name=""), FULL, "name"),
        (dict(FULL, name=None), FULL, "name"),
        ({k: v for k, v in FULL.items() if k != "size"}, dict(FULL, size=0), "size"),
        (dict(FULL, size="big"), dict(FULL, size=0), "size"),
        (dict(FULL, size=True), dict(FULL, size=0), "size"),
        ({k: v for k, v in FULL.items() if k != "digest"}, dict(FULL, digest=""), "digest"),
        ({k: v for k, v in FULL.items() if k != "modified_at"}, dict(FULL, modified_at="1970-01-01T00:00:00Z"), "modified_at"),
        ({k: v for k, v in FULL.items() if k != "details"}, dict(FULL, details={}), "details"),
        (dict(FULL, details=None), dict(FULL, details={}), "details"),
        ({"name": "x:1"}, {"name": "x:1", "model": "x:1", "modified_at": "1970-01-01T00:00:00Z", "size": 0, "digest": "", "details": {}},
         "model, modified_at, size, digest, details"),
        (dict(FULL, extra=[1]), dict(FULL, extra=[1]), None),
    ],
)
def test_repair_tag_entry(entry, fixed, repaired):
    before = json.dumps(entry, sort_keys=True)
    got, note = op.repair_tag_entry(entry)
    assert got == fixed
    assert note == repaired
    assert json.dumps(entry, sort_keys=True) == before  # the input is not changed


@pytest.mark.parametrize(
    "entry, why",
    [
        ("llama3.2", "not an object"),
        (None, "not an object"),
        (["llama3.2"], "not an object"),
        ({}, "no name"),
        ({"name": "", "model": ""}, "no name"),
        ({"name": "  ", "model": None}, "no name"),
        ({"name": 5, "size": 1}, "no name"),
    ],
)
def test_repair_tag_entry_drops(entry, why):
    assert op.repair_tag_entry(entry) == (None, why)


def _tag(name: str, digest: str = "d") -> Dict[str, Any]:
    return dict(FULL, name=name, model=name, digest=digest)


def test_merge_tags_dedups_first_wins_by_normalized_name():
    lists = [[_tag("llama3.2", "first"), _tag("qwen2.5:7b", "q1")], [_tag("llama3.2:latest", "second"), _tag("Qwen2.5:7B", "q2"), _tag("mistral:latest", "m")]]
    models, warnings = op.merge_tags(lists)
    assert [(m["name"], m["digest"]) for m in models] == [("llama3.2", "first"), ("qwen2.5:7b", "q1"), ("mistral:latest", "m")]
    assert warnings == []


def test_merge_tags_repairs_and_drops_with_warnings():
    lists = [["junk", {"model": "llama3.2:latest"}], [{"digest": "x"}, _tag("qwen2.5:7b")]]
    models, warnings = op.merge_tags(lists)
    assert [m["name"] for m in models] == ["llama3.2:latest", "qwen2.5:7b"]
    assert models[0]["size"] == 0 and models[0]["details"] == {}
    assert len(warnings) == 3
    assert any("dropped" in w and "not an object" in w for w in warnings)
    assert any("dropped" in w and "no name" in w for w in warnings)
    assert any("repaired" in w and "llama3.2:latest" in w for w in warnings)


def test_merge_tags_repaired_duplicate_of_good_entry():
    """A broken first entry that is repaired still wins over a later good one of the same name."""
    models, _ = op.merge_tags([[{"model": "llama3.2"}], [_tag("llama3.2:latest", "good")]])
    assert len(models) == 1 and models[0]["name"] == "llama3.2" and models[0]["digest"] == ""


@pytest.mark.parametrize(
    "routes, expected",
    [
        ((), ["llama3.2:latest", "qwen2.5:7b", "qwen2.5:14b", "mistral:latest"]),
        (((LATEST, ("a",)),), ["llama3.2:latest"]),
        ((("qwen*", ("a",)),), ["qwen2.5:7b", "qwen2.5:14b"]),
        (((LATEST, ("a",)), ("qwen2.5:?b", ("b",))), ["llama3.2:latest", "qwen2.5:7b"]),
        ((("phi*", ("a",)),), []),
    ],
)
def test_merge_tags_only_routed_models_when_routes(routes, expected):
    lists = [[_tag("llama3.2:latest"), _tag("qwen2.5:7b")], [_tag("qwen2.5:14b"), _tag("mistral:latest")]]
    models, _ = op.merge_tags(lists, routes=routes)
    assert [m["name"] for m in models] == expected


@pytest.mark.parametrize(
    "aliases, list_aliases, expected",
    [
        ((("gpt-4o:latest", "llama3.2"),), False, ["llama3.2:latest"]),
        ((("gpt-4o:latest", "llama3.2"),), True, ["llama3.2:latest", "gpt-4o"]),
        ((("gpt-4o:latest", "llama3.2:latest"),), True, ["llama3.2:latest", "gpt-4o"]),
        ((("fast:v1", "llama3.2"),), True, ["llama3.2:latest", "fast:v1"]),
        ((("gpt-4o:latest", "missing:7b"),), True, ["llama3.2:latest"]),
        ((("gpt-4o:latest", "llama3.2"), ("mini:latest", "missing")), True, ["llama3.2:latest", "gpt-4o"]),
        # an alias that shadows a real model is not listed twice
        ((("llama3.2:latest", "x"),), True, ["llama3.2:latest"]),
    ],
)
def test_merge_tags_aliases(aliases, list_aliases, expected):
    models, _ = op.merge_tags([[_tag("llama3.2:latest", "dl")]], aliases=aliases, list_aliases=list_aliases)
    assert [m["name"] for m in models] == expected
    for m in models[1:]:
        assert m["model"] == m["name"] and m["digest"] == "dl"


def test_merge_tags_alias_shadowing_a_listed_model_not_added():
    """An alias whose name is a model some backend has is not listed a second time."""
    models, _ = op.merge_tags([[_tag("llama3.2:latest", "dl"), _tag("qwen2.5:7b", "dq")]], aliases=(("llama3.2:latest", "qwen2.5:7b"),), list_aliases=True)
    assert [(m["name"], m["digest"]) for m in models] == [("llama3.2:latest", "dl"), ("qwen2.5:7b", "dq")]


def test_merge_tags_alias_of_unrouted_model_not_listed():
    models, _ = op.merge_tags([[_tag("llama3.2:latest"), _tag("qwen2.5:7b")]], routes=((LATEST, ("a",)),),
                              aliases=(("q:latest", "qwen2.5:7b"), ("l:latest", "llama3.2")), list_aliases=True)
    assert [m["name"] for m in models] == ["llama3.2:latest", "l"]


def test_merge_ps_dedups_first_wins():
    lists = [[{"name": "llama3.2:latest", "size_vram": 1}, "junk", {"name": 5}], [{"model": "llama3.2"}, {"name": "", "model": "qwen2.5:7b"}, {"name": "Qwen2.5:7B"}]]
    merged = op.merge_ps(lists)
    assert merged == [{"name": "llama3.2:latest", "size_vram": 1}, {"name": "", "model": "qwen2.5:7b"}]


def test_merge_ps_empty():
    assert op.merge_ps([]) == [] and op.merge_ps([[], []]) == []


# -- 9. versions -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "lower, higher",
    [
        ("0.12.9", "0.12.10"),
        ("0.12.3", "0.12.10"),
        ("0.9.9", "0.12.0"),
        ("0.12.10", "0.13.0"),
        ("0.13.0-rc1", "0.13.0"),
        ("0.12.10", "0.13.0-rc1"),
        ("0.13.0-rc1", "0.13.0-rc2"),
        ("v0.5.1", "0.5.2"),
        ("0.5.0", "v0.5.1"),
        ("0.5.1", "1.0.0"),
        ("0.5.0", "v1.0.0"),
        ("v0.9.0", "1.0.0"),
    ],
)
def test_version_key_order(lower, higher):
    assert op.version_key(lower) < op.version_key(higher)
    assert op.lowest_version([higher, lower]) == lower
    assert op.lowest_version([lower, higher]) == lower


def test_version_key_v_prefix_equal():
    assert op.version_key("v0.5.1") == op.version_key("0.5.1")


@pytest.mark.parametrize(
    "versions, expected",
    [
        (["0.12.10", "0.12.9", "0.13.0-rc1"], "0.12.9"),
        (["0.13.0", "0.13.0-rc1"], "0.13.0-rc1"),
        (["v0.6.0", "0.5.13", "0.12.1"], "0.5.13"),
        (["0.12.6"], "0.12.6"),
        ([], None),
    ],
)
def test_lowest_version(versions, expected):
    assert op.lowest_version(versions) == expected


# -- 10. rename_model ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "data, expected",
    [
        (b'{"model":"llama3.2","message":{"role":"assistant","content":"hi"},"done":false}',
         b'{"model":"gpt-4o","message":{"role":"assistant","content":"hi"},"done":false}'),
        (b'{"model": "llama3.2", "done": true}', b'{"model": "gpt-4o", "done": true}'),
        (b'{"model" : "llama3.2"}', b'{"model" : "gpt-4o"}'),
        # NDJSON lines
        (b'{"model":"llama3.2","response":"a"}\n{"model":"llama3.2","response":"b","done":true}\n',
         b'{"model":"gpt-4o","response":"a"}\n{"model":"gpt-4o","response":"b","done":true}\n'),
        # SSE events, with and without a space after data:
        (b'data: {"id":"chatcmpl-1","model":"llama3.2","choices":[]}\n\ndata: [DONE]\n\n',
         b'data: {"id":"chatcmpl-1","model":"gpt-4o","choices":[]}\n\ndata: [DONE]\n\n'),
        (b'data:{"model":"llama3.2"}\n\ndata:{"model": "llama3.2"}\n\n', b'data:{"model":"gpt-4o"}\n\ndata:{"model": "gpt-4o"}\n\n'),
        # other fields naming the model, other models, a longer name: untouched
        (b'{"parent_model":"llama3.2","content":"llama3.2","model":"llama3.2"}', b'{"parent_model":"llama3.2","content":"llama3.2","model":"gpt-4o"}'),
        (b'{"model":"llama3.2:latest"}', b'{"model":"llama3.2:latest"}'),
        (b'{"model":"xllama3.2"}', b'{"model":"xllama3.2"}'),
        (b'{"model":"qwen2.5:7b","content":"llama3.2"}', b'{"model":"qwen2.5:7b","content":"llama3.2"}'),
        # the name inside content text (escaped quotes) is not a model field
        (b'{"content":"{\\"model\\":\\"llama3.2\\"}"}', b'{"content":"{\\"model\\":\\"llama3.2\\"}"}'),
        # absent: no-op
        (b'{"done":true}', b'{"done":true}'),
        (b"", b""),
    ],
)
def test_rename_model(data, expected):
    assert op.rename_model(data, b"llama3.2", b"gpt-4o") == expected


def test_rename_model_regex_characters_in_name():
    """A model name is matched literally ('.' is not any character)."""
    assert op.rename_model(b'{"model":"llama3x2"}', b"llama3.2", b"a") == b'{"model":"llama3x2"}'
    assert op.rename_model(b'{"model":"hf.co/x/y:Q4_K_M"}', b"hf.co/x/y:Q4_K_M", b"a+b") == b'{"model":"a+b"}'


def test_rename_model_returns_same_object_when_absent():
    data = b'{"model":"qwen2.5:7b"}'
    assert op.rename_model(data, b"llama3.2", b"gpt-4o") is data
