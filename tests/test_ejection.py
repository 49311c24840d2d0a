"""Health from real traffic (SPEC §6 revision 2, the §3 rows --eject-after and --eject-seconds, and
§8's new metrics): failed requests counted per backend, ejection after --eject-after in a row, a
cool-off that doubles, one trial request at a time after it, recovery on success; recent failures
in the choice; the log lines, /__proxy/backends and the metrics.

First the pure parts, table-tested (RequestHealth and its transitions, the cool-off, the choice with
the health facts passed in, the metrics, the reloads the context modifier avoided); then end to end,
the real proxy in front of fake Ollama servers that pass their probes (/api/tags, /api/ps) while
their /api/chat fails (tests/fake_ollama.py faults).  No test asserts a wall-clock time: cool-offs
are short (--eject-seconds 0.3) or long (30) and the tests wait on conditions.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Dict, List

import pytest
from fake_ollama import DEFAULT_MODELS, Fault, FakeOllama
import test_many_backends
from test_many_backends import TEXT, Background, call, chat, chats, stop_fake, wait_for
from test_metrics import parse, values

import ollama_proxy as op

LATEST = "llama3.2:latest"
QWEN = "qwen3:8b"


# ---------------------------------------------------------------------------------------------
# 1. the pure record: RequestHealth
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first, ejections, expected",
    [
        (10.0, 1, 10.0), (10.0, 2, 20.0), (10.0, 3, 40.0), (10.0, 5, 160.0), (10.0, 6, 300.0), (10.0, 60, 300.0),
        (10.0, 10_000, 300.0),  # no overflow
        (0.3, 1, 0.3), (0.3, 2, 0.6), (0.3, 3, 1.2),
        (300.0, 1, 300.0), (300.0, 2, 300.0),
        (600.0, 1, 600.0), (600.0, 3, 600.0),  # a first cool-off above 300 is what was asked for, not cut
    ],
)
def test_cool_off_doubles_up_to_300(first, ejections, expected):
    assert op.cool_off_seconds(first, ejections) == pytest.approx(expected)


def run(events: List[tuple], eject_after: int = 3, first: float = 10.0):
    """Apply (kind, now[, trial]) events to a fresh record: kind is "fail", "ok", "none" or "take".
    Returns the record and the list of non-empty events."""
    health = op.RequestHealth()
    said = []
    for event in events:
        kind, now = event[0], event[1]
        trial = event[2] if len(event) > 2 else False
        if kind == "fail":
            health, what = health.failed(now, "boom at %g" % now, eject_after, first, trial)
        elif kind == "ok":
            health, what = health.succeeded(trial)
        elif kind == "none":
            health, what = health.unjudged(trial), ""
        else:
            assert health.trial_due(now), "take at %g: no trial due" % now
            health, what = health.trying(), "trial"
        if what:
            said.append(what)
    return health, said


@pytest.mark.parametrize(
    "events, eject_after, expected, said",
    [
        # two failures: counted, not ejected
        ([("fail", 1), ("fail", 2)], 3, dict(failures=2, ejections=0, until=0.0, trial=False, last_failure=2), []),
        # the third in a row ejects, for --eject-seconds
        ([("fail", 1), ("fail", 2), ("fail", 3)], 3, dict(failures=3, ejections=1, until=13.0, cool_off=10.0, last_failure=3), ["ejected"]),
        # a success in between resets the row (the last failure is still remembered for the choice)
        ([("fail", 1), ("fail", 2), ("ok", 3), ("fail", 4), ("fail", 5)], 3, dict(failures=2, ejections=0, until=0.0, last_failure=5), []),
        # a 4xx or a client that left in between does not (nor does it count)
        ([("fail", 1), ("none", 2), ("fail", 3), ("none", 4), ("fail", 5)], 3, dict(failures=3, ejections=1, until=15.0), ["ejected"]),
        # --eject-after 0: never ejected, the failures still counted
        ([("fail", t) for t in range(1, 20)], 0, dict(failures=19, ejections=0, until=0.0), []),
        # --eject-after 1
        ([("fail", 1)], 1, dict(failures=1, ejections=1, until=11.0), ["ejected"]),
        # requests sent before the ejection that fail or succeed during it change nothing but the counts
        ([("fail", 1), ("fail", 2), ("fail", 3), ("fail", 4), ("ok", 5), ("fail", 6)], 3,
         dict(failures=5, ejections=1, until=13.0, cool_off=10.0, trial=False), ["ejected"]),
        # after the cool-off, the trial; its failure ejects again for twice as long
        ([("fail", 1), ("fail", 2), ("fail", 3), ("take", 13), ("fail", 14, True)], 3,
         dict(failures=4, ejections=2, until=34.0, cool_off=20.0, trial=False), ["ejected", "trial", "ejected again"]),
        # and again: four times as long
        ([("fail", 1), ("fail", 2), ("fail", 3), ("take", 13), ("fail", 14, True), ("take", 34), ("fail", 35, True)], 3,
         dict(ejections=3, until=75.0, cool_off=40.0), ["ejected", "trial", "ejected again", "trial", "ejected again"]),
        # the trial's success: whole again, every counter reset
        ([("fail", 1), ("fail", 2), ("fail", 3), ("take", 13), ("ok", 14, True)], 3,
         dict(failures=0, ejections=0, until=0.0, cool_off=0.0, trial=False, last_failure=None, reason=""), ["ejected", "trial", "recovered"]),
        # a trial that ends without a verdict (4xx, client left): no longer in flight, still ejected
        ([("fail", 1), ("fail", 2), ("fail", 3), ("take", 13), ("none", 14, True)], 3,
         dict(failures=3, ejections=1, until=13.0, trial=False), ["ejected", "trial"]),
        # a success of another request while the trial is in flight: the trial decides
        ([("fail", 1), ("fail", 2), ("fail", 3), ("take", 13), ("ok", 14)], 3, dict(ejections=1, until=13.0, trial=True), ["ejected", "trial"]),
        # the failure of another request while the trial is in flight: no new ejection
        ([("fail", 1), ("fail", 2), ("fail", 3), ("take", 13), ("fail", 14)], 3,
         dict(failures=4, ejections=1, until=13.0, trial=True), ["ejected", "trial"]),
        # recovered, then failing again: a first ejection again (the doubling is for ejections in a row)
        ([("fail", 1), ("fail", 2), ("fail", 3), ("take", 13), ("fail", 14, True), ("take", 34), ("ok", 35, True),
          ("fail", 40), ("fail", 41), ("fail", 42)], 3, dict(ejections=1, until=52.0, cool_off=10.0), None),
    ],
)
def test_request_health_transitions(events, eject_after, expected, said):
    health, got = run(events, eject_after)
    for key, value in expected.items():
        assert getattr(health, key) == value, (key, health)
    if said is not None:
        assert got == said


@pytest.mark.parametrize(
    "until, trial, now, available, due",
    [
        (0.0, False, 5.0, True, False),  # not ejected
        (10.0, False, 9.99, False, False),  # cooling off
        (10.0, False, 10.0, True, True),  # over: the trial is due
        (10.0, False, 99.0, True, True),
        (10.0, True, 99.0, False, False),  # the trial in flight: nobody else
    ],
)
def test_available_and_trial_due(until, trial, now, available, due):
    health = op.RequestHealth(failures=3, ejections=1 if until else 0, until=until, cool_off=10.0, trial=trial, last_failure=0.0)
    assert health.available(now) is available
    assert health.trial_due(now) is due


@pytest.mark.parametrize("last_failure, now, expected", [(None, 100.0, False), (50.0, 100.0, True), (50.0, 109.99, True),
                                                         (50.0, 110.0, False), (50.0, 1000.0, False)])
def test_failed_recently_is_the_last_minute(last_failure, now, expected):
    assert op.RECENT_FAILURE_SECONDS == 60.0
    assert op.RequestHealth(last_failure=last_failure).failed_recently(now) is expected


# ---------------------------------------------------------------------------------------------
# 2. the choice, with the health facts passed in
# ---------------------------------------------------------------------------------------------


def mk(name: str, port: int, loaded: int = 0, in_flight: int = 0, health: Any = None) -> op.Backend:
    backend = op.Backend(op.BackendSpec(name=name, scheme="http", host="127.0.0.1", port=port), in_flight=in_flight, healthy=True)
    backend.digests = {LATEST: "x"}
    if loaded:
        backend.loaded = {LATEST: loaded}
    if health is not None:
        backend.request_health = health
    return backend


RECENT = op.RequestHealth(failures=1, last_failure=95.0, reason="boom")  # at now=100: failed 5 s ago
OLD = op.RequestHealth(failures=1, last_failure=30.0, reason="boom")  # 70 s ago
EJECTED = op.RequestHealth(failures=3, ejections=1, until=110.0, cool_off=10.0, last_failure=100.0)
DUE = op.RequestHealth(failures=3, ejections=1, until=99.0, cool_off=10.0, last_failure=89.0)
TRYING = op.RequestHealth(failures=3, ejections=1, until=99.0, cool_off=10.0, trial=True, last_failure=89.0)


@pytest.mark.parametrize(
    "rows, sticky, expected",
    [
        # a recent failure comes before the in-flight count: the fast-failing one gets nothing extra
        ([("a", 1, 0, 0, RECENT), ("b", 2, 0, 5, None)], None, "b"),
        # ... but after what is loaded (SPEC's order): loaded and failing still wins over not loaded
        ([("a", 1, 8192, 0, RECENT), ("b", 2, 0, 0, None)], None, "a"),
        ([("a", 1, 8192, 0, RECENT), ("b", 2, 8192, 3, None)], None, "b"),
        # a failure more than a minute ago no longer counts
        ([("a", 1, 0, 0, OLD), ("b", 2, 0, 5, None)], None, "a"),
        # both failed recently: the usual rules
        ([("a", 1, 0, 2, RECENT), ("b", 2, 0, 1, RECENT)], None, "b"),
        # a trial due goes first, even over where the model is loaded
        ([("a", 1, 8192, 0, None), ("b", 2, 0, 4, DUE)], None, "b"),
        # but the sticky conversation stays where it is
        ([("a", 1, 8192, 0, None), ("b", 2, 0, 4, DUE)], "a", "a"),
        # the trial in flight: (eligible_backends drops it; if given anyway) it is no trial, and it failed recently
        ([("a", 1, 0, 3, None), ("b", 2, 0, 0, TRYING)], None, "a"),
    ],
)
def test_choose_backend_with_health(rows, sticky, expected):
    candidates = [mk(n, p, loaded, fl, h) for n, p, loaded, fl, h in rows]
    chosen = op.choose_backend(candidates, LATEST, sticky, 0, 0, False, 100.0)
    assert chosen is not None and chosen.name == expected


def test_choose_backend_without_now_ignores_health():
    """The defaults of the pure function (as the table tests of test_backends.py call it): a record
    without failures changes nothing."""
    a, b = mk("a", 1, in_flight=1), mk("b", 2)
    assert op.choose_backend([a, b], LATEST).name == "b"


@pytest.mark.parametrize(
    "health, now, expected",
    [
        (None, 100.0, ["a", "b"]),
        (RECENT, 100.0, ["a", "b"]),  # a failure alone does not take it out
        (EJECTED, 100.0, ["b"]),  # cooling off: out
        (EJECTED, 110.0, ["a", "b"]),  # over: in again, for its trial
        (TRYING, 120.0, ["b"]),  # its trial in flight: out
    ],
)
def test_eligible_backends_leave_out_the_ejected(health, now, expected):
    backends = [mk("a", 1, health=health), mk("b", 2)]
    assert [b.name for b in op.eligible_backends(backends, LATEST, (), (), now)] == expected
    assert [b.name for b in op.eligible_backends(backends, None, (), (), now)] == expected[:1]  # model-less: the first that may serve


# ---------------------------------------------------------------------------------------------
# 3. configuration, metrics, the reloads avoided
# ---------------------------------------------------------------------------------------------


def test_eject_settings():
    default = op.build_config([], {})
    assert (default.eject_after, default.eject_seconds) == (3, 10.0)
    assert (lambda c: (c.eject_after, c.eject_seconds))(op.build_config(["--eject-after", "0", "--eject-seconds", "0.3"], {})) == (0, 0.3)
    env = op.build_config([], {"PROXY_EJECT_AFTER": "5", "PROXY_EJECT_SECONDS": "2.5"})
    assert (env.eject_after, env.eject_seconds) == (5, 2.5)
    assert op.build_config(["--eject-after", "2"], {"PROXY_EJECT_AFTER": "5"}).eject_after == 2  # the flag wins
    for argv in (["--eject-after", "-1"], ["--eject-after", "x"], ["--eject-seconds", "0"], ["--eject-seconds", "-3"]):
        with pytest.raises(op.ConfigError):
            op.build_config(argv, {})


def test_new_metrics_render_and_parse_strictly():
    m = op.Metrics(0.0)
    for event, backend in [("request_failure", "a"), ("request_failure", "a"), ("request_failure", "a"), ("ejection", "a"),
                           ("trial", "a"), ("request_failure", "a"), ("ejection", "a"), ("trial", "a"), ("recovery", "a"),
                           ("request_failure", 'b"\\')]:
        m.count_backend(event, backend)
    m.count_reload_avoided(LATEST)
    m.count_reload_avoided(LATEST)
    m.count_reload_avoided(QWEN)
    m.count_truncated(QWEN)
    fams = parse(m.render({"a": 0}, {"a": True}, 0, {"a": True, "c": False}))
    assert values(fams, "ollama_proxy_backend_request_failures_total") == {(("backend", "a"),): 4.0, (("backend", 'b"\\'),): 1.0}
    assert values(fams, "ollama_proxy_ejections_total") == {(("backend", "a"),): 2.0}
    assert values(fams, "ollama_proxy_ejection_trials_total") == {(("backend", "a"),): 2.0}
    assert values(fams, "ollama_proxy_ejection_recoveries_total") == {(("backend", "a"),): 1.0}
    assert values(fams, "ollama_proxy_backend_ejected") == {(("backend", "a"),): 1.0, (("backend", "c"),): 0.0}
    assert values(fams, "ollama_proxy_reloads_avoided_total") == {(("model", LATEST),): 2.0, (("model", QWEN),): 1.0}
    assert values(fams, "ollama_proxy_truncated_prompts_total") == {(("model", QWEN),): 1.0}
    empty = parse(op.Metrics(0.0).render({}, {}, 0))  # the old call: every family, no samples
    for name in ("backend_ejected", "ejections_total", "ejection_trials_total", "ejection_recoveries_total",
                 "backend_request_failures_total", "reloads_avoided_total"):
        assert empty["ollama_proxy_" + name].samples == []


def _auto_ctx(loaded: int, chars: int) -> op.ModifyContext:
    config = op.build_config(["--context-mode", "auto", "--max-context", "32768"], {})
    body = {"model": LATEST, "messages": [{"role": "user", "content": "x" * chars}]}
    info = op.ModelInfo(name=LATEST, architecture="llama", context_length=131072)
    return op.ModifyContext(path="/api/chat", body=body, model=LATEST, config=config, info=info, loaded_ctx=loaded)


@pytest.mark.parametrize(
    "loaded, chars, avoided, num_ctx",
    [
        (16384, 400, True, 16384),  # a short prompt would get 2048: it keeps the loaded 16384 (no reload)
        (2048, 400, False, None),  # loaded with what it would get anyway: nothing avoided
        (0, 400, False, None),  # not loaded: nothing to keep
        (4096, 40000, False, None),  # the loaded context does not hold it: it grows (a reload)
    ],
)
def test_context_modifier_says_when_it_kept_the_loaded_context(loaded, chars, avoided, num_ctx):
    ctx = _auto_ctx(loaded, chars)
    op.apply_modifiers(ctx)
    assert ctx.reload_avoided is avoided
    if num_ctx is not None:
        assert ctx.body["options"]["num_ctx"] == num_ctx


# ---------------------------------------------------------------------------------------------
# 4. end to end: helpers
# ---------------------------------------------------------------------------------------------

LLAMA_QWEN = [m for m in DEFAULT_MODELS if m.name in (LATEST, QWEN)]
make_fake = test_many_backends.make_fake  # the fixture: make_fake(models=None, **kwargs) -> a started FakeOllama


def report(proxy) -> Dict[str, dict]:
    answer = call(proxy.port, "GET", "/__proxy/backends")
    assert answer.status == 200, answer
    return {entry["name"]: entry for entry in answer.json()["backends"]}


def metrics(proxy) -> dict:
    answer = call(proxy.port, "GET", "/__proxy/metrics")
    assert answer.status == 200, answer
    return parse(answer.body.decode("utf-8"))


def per_backend(fams, family: str) -> Dict[str, float]:
    return {dict(labels)["backend"]: value for labels, value in values(fams, "ollama_proxy_" + family).items()}


def preloaded(make_fake, n: int, loaded: int = -1) -> List[FakeOllama]:
    """``n`` fakes, sorted by port; the first ``loaded`` of them (all: -1) with llama3.2 loaded (as a
    wedged runner stays listed in /api/ps).  A backend where the model is loaded is chosen first."""
    fakes = sorted((make_fake(LLAMA_QWEN) for _ in range(n)), key=lambda f: f.port)
    for fake in fakes[: n if loaded < 0 else loaded]:
        assert call(fake.port, "POST", "/api/generate", {"model": "llama3.2"}).status == 200
    return fakes


def start(start_proxy, fakes, *flags, **overrides):
    """The proxy in front of ``fakes`` named a, b, c, ... with probes every 0.2 s; waits until every
    backend is healthy and the proxy knows where llama3.2 is loaded."""
    names = "abcdefgh"
    proxy = start_proxy(["%s=%s" % (names[i], f.url) for i, f in enumerate(fakes)], *flags, scan_interval=0.2, **overrides)
    expected = [bool(f.loaded) for f in fakes]

    def ready():
        state = proxy.call(lambda: [(b.healthy, LATEST in b.loaded) for b in proxy.app.fleet.backends])
        return len(state) == len(fakes) and all(h is True for h, _ in state) and [loaded for _, loaded in state] == expected

    wait_for(ready, what="every backend healthy with llama3.2 loaded")
    return proxy


def health_record(proxy, backend: str) -> op.RequestHealth:
    return proxy.call(lambda: proxy.app.fleet.named(backend).request_health)


def wait_probed_healthy(proxy, backend: str) -> None:
    """A transport failure or a stall marks the backend unhealthy; its next good probe brings it back."""
    wait_for(lambda: proxy.call(lambda: proxy.app.fleet.named(backend).healthy) is True, what="%s healthy again" % backend)


def records(caplog, fragment: str) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ollama_proxy" and fragment in r.getMessage()]


# ---------------------------------------------------------------------------------------------
# 5. end to end: what counts as a failure, and what does not
# ---------------------------------------------------------------------------------------------


FAILURES = {
    "500": (dict(status=500, error="runner wedged"), {}, False, "answered 500"),
    "503": (dict(status=503, error="server busy"), {}, False, "answered 503"),
    "silence past --request-timeout": (dict(delay_before_headers=5), {"request_timeout": 0.4}, False, "sent nothing for too long"),
    "closed before the answer": (dict(close_before_response=True, times=0), {}, False, "closed"),
    "stream stalled after it started": (dict(stall_after=2), {"request_timeout": 0.4}, True, ""),
    "stream cut after it started": (dict(close_after=2), {}, True, ""),
}


@pytest.mark.parametrize("fault, overrides, stream, reason", FAILURES.values(), ids=list(FAILURES))
def test_each_kind_of_failure_is_counted(make_fake, start_proxy, fault, overrides, stream, reason):
    """A 5xx, silence past --request-timeout, a connection closed before the answer, a stream that
    broke after it started: one failed request of that backend, in /__proxy/backends and the metrics."""
    a, b = preloaded(make_fake, 2)
    proxy = start(start_proxy, [a, b], "--max-retries", "0", **overrides)
    injected = a.add_fault(Fault(path="/api/chat", **fault))
    call(proxy.port, "POST", "/api/chat", chat("fail once", stream=stream))
    assert injected.hits >= 1
    entry = wait_for(lambda: (lambda e: e if e["consecutive_failures"] else None)(report(proxy)["a"]), what="the failure counted")
    assert entry["consecutive_failures"] == 1 and entry["ejected"] is False
    assert reason.lower() in entry["last_request_failure"].lower()
    assert per_backend(metrics(proxy), "backend_request_failures_total") == {"a": 1.0}
    assert report(proxy)["b"]["consecutive_failures"] == 0


@pytest.mark.parametrize(
    "path, body, lines",
    [
        ("/api/chat", chat("x", stream=True), [b'{"model":"llama3.2","message":{"role":"assistant","content":"tok0 "},"done":false}\n']),
        ("/v1/chat/completions", {"model": "llama3.2", "stream": True, "messages": [{"role": "user", "content": "x"}]},
         [b'{"model":"llama3.2","message":{"role":"assistant","content":"tok0 "},"done":false}\n', b'{"error":"runner crashed"}\n']),
    ],
    ids=["native-no-done", "translated-error-line"],
)
def test_a_complete_stream_that_ended_in_an_error_is_a_failure(scripted, make_fake, start_proxy, path, body, lines):
    """A 200 stream that ends cleanly but without its final done message, or with Ollama's error line
    in it: the stream broke after it started, one failure of that backend."""
    from test_protocol import chunk, ndjson_head

    upstream = scripted([ndjson_head()] + [chunk(line) for line in lines] + [b"0\r\n\r\n"])
    other = make_fake(LLAMA_QWEN)
    proxy = start_proxy(["s=" + upstream.url, "f=" + other.url], "--route", "llama3.2=s", "--context-mode", "off", "--num-predict", "0")
    answer = call(proxy.port, "POST", path, body)
    assert answer.status == 200 and answer.backend == "s", answer
    health = health_record(proxy, "s")
    assert health.failures == 1 and health.reason, health
    assert health_record(proxy, "f").failures == 0


class _ClientThatLeaves:
    """A raw client that sends a chat and closes its socket once the fake has the request."""

    def __init__(self, port: int, body: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def leave(self) -> None:
        self.sock.close()


NOT_FAILURES = ["400", "404 model not found", "a client that left before the answer", "a client that left mid-stream",
                "a slow cold load that answers in time"]


@pytest.mark.parametrize("case", NOT_FAILURES)
def test_what_is_not_a_failure(make_fake, start_proxy, case):
    """A 4xx, a client that left, a slow cold load that answers within --request-timeout: the
    backend's count stays at 0 (and a success resets nothing that was not there)."""
    a, b = preloaded(make_fake, 2)
    proxy = start(start_proxy, [a, b], "--max-retries", "0", "--request-timeout", "3")
    if case == "400":
        a.add_fault(Fault(path="/api/chat", status=400, error="bad request"))
        assert call(proxy.port, "POST", "/api/chat", chat("x")).status == 400
    elif case.startswith("404"):
        # the model is listed (so the request goes to a) but a answers 404, as after a delete
        a.add_fault(Fault(path="/api/chat", status=404, error="model 'llama3.2' not found"))
        answer = call(proxy.port, "POST", "/api/chat", chat("x"))
        assert answer.status == 404 and answer.backend == "a", answer
    elif case.startswith("a client that left"):
        mid = case.endswith("mid-stream")
        fault = a.add_fault(Fault(path="/api/chat", pause_after=1) if mid else Fault(path="/api/chat", delay_before_headers=30))
        client = _ClientThatLeaves(proxy.port, b'{"model": "llama3.2", "messages": [{"role": "user", "content": "bye"}], "stream": %s}'
                                   % (b"true" if mid else b"false"))
        if mid:
            assert fault.gate.wait_reached(10)
        else:
            wait_for(lambda: fault.hits == 1, what="the request on a")
        client.leave()
        wait_for(lambda: report(proxy)["a"]["in_flight"] == 0, what="the attempt on a over")
        if fault.gate is not None:
            fault.gate.release()
    else:
        a.add_fault(Fault(path="/api/chat", delay_before_headers=0.5))  # silent, like a load, but within --request-timeout 3
        answer = call(proxy.port, "POST", "/api/chat", chat("cold"))
        assert answer.status == 200 and answer.backend == "a", answer
    entry = report(proxy)["a"]
    assert entry["consecutive_failures"] == 0 and entry["last_request_failure"] is None and entry["ejected"] is False, entry
    assert per_backend(metrics(proxy), "backend_request_failures_total") == {}
    # and so the next request still goes to a (loaded, no failure, lowest port)
    a.clear_faults()
    assert call(proxy.port, "POST", "/api/chat", chat("after")).backend == "a"


# ---------------------------------------------------------------------------------------------
# 6. end to end: ejection, cool-off, trial, doubling, recovery
# ---------------------------------------------------------------------------------------------


def test_ejected_after_n_failures_not_chosen_during_the_cool_off_and_503_with_every_candidate_ejected(make_fake, start_proxy, caplog):
    """a passes its probes while every chat answers 500, and has the model loaded (so it is chosen
    first): after --eject-after 3 failed requests it is ejected, and during the cool-off no request
    reaches it; a model routed to it alone gets 503.  One log line; the report and the metrics say so."""
    caplog.set_level(logging.INFO, logger="ollama_proxy")
    a, b = preloaded(make_fake, 2, loaded=1)
    proxy = start(start_proxy, [a, b], "--max-retries", "0", "--eject-seconds", "30", "--route", "qwen3:8b=a")
    fault = a.add_fault(Fault(path="/api/chat", status=500, error="runner wedged", times=0))
    for i in range(3):
        answer = call(proxy.port, "POST", "/api/chat", chat("failing %d" % i))
        assert answer.status == 500 and answer.backend == "a", answer
    entry = report(proxy)["a"]
    assert entry["ejected"] is True and entry["healthy"] is True  # its probes still pass
    assert entry["consecutive_failures"] == 3 and entry["cool_off_seconds"] == 30 and entry["ejections_in_a_row"] == 1
    assert entry["trial_in_progress"] is False and isinstance(entry["ejected_until"], str) and entry["ejected_until"].endswith("Z")
    assert "runner wedged" in entry["last_request_failure"]
    for i in range(5):
        answer = call(proxy.port, "POST", "/api/chat", chat("elsewhere %d" % i))
        assert answer.status == 200 and answer.backend == "b", answer
    assert fault.hits == 3
    routed = call(proxy.port, "POST", "/api/chat", chat("only a may", model=QWEN))
    assert routed.status == 503 and "ejected" in routed.json()["error"], routed
    assert fault.hits == 3
    health = call(proxy.port, "GET", "/__proxy/health").json()
    assert health == {"status": "degraded", "healthy_backends": 1}
    ejected = [m for m in records(caplog, "ejected") if m.startswith("backend ")]  # (the access log line of the 503 says it too)
    assert len(ejected) == 1 and ejected[0].startswith("backend a ejected for 30s: 3 failed requests in a row"), ejected
    assert "runner wedged" in ejected[0]
    fams = metrics(proxy)
    assert per_backend(fams, "ejections_total") == {"a": 1.0}
    assert per_backend(fams, "backend_request_failures_total") == {"a": 3.0}
    assert per_backend(fams, "backend_ejected") == {"a": 1.0, "b": 0.0}
    assert per_backend(fams, "ejection_trials_total") == {} and per_backend(fams, "ejection_recoveries_total") == {}


def _until_a_gets_one(proxy, fake: FakeOllama, gate_fault: Fault = None) -> Any:
    """Send chats one after the other until one reaches ``fake`` (the trial after the cool-off);
    every one before it is answered by another backend.  With ``gate_fault`` the trial is held at
    its gate: the Background request is returned, still running."""
    before = len(chats(fake))
    sent = [0]

    def one():
        sent[0] += 1
        job = Background(call, proxy.port, "POST", "/api/chat", chat("probe %d" % sent[0]))
        if gate_fault is not None:
            wait_for(lambda: gate_fault.gate.reached.is_set() or not job.thread.is_alive(), what="an answer or the trial at its gate")
            if gate_fault.gate.reached.is_set():
                return job
        answer = job.result()
        if len(chats(fake)) > before:
            return answer
        assert answer.status == 200 and answer.backend != "a", answer
        time.sleep(0.02)
        return None

    return wait_for(one, timeout=20, what="a request on the ejected backend after its cool-off")


def test_trial_after_the_cool_off_doubles_when_it_fails_and_recovers_on_success(make_fake, start_proxy, caplog):
    """After the cool-off one request tries a; it fails: ejected again for twice as long.  After that
    cool-off the next trial is held: meanwhile every request goes elsewhere (one trial at a time);
    it succeeds: a recovers, its counters reset, and it takes requests again.  Each ejection,
    trial and recovery is one log line, and counted."""
    caplog.set_level(logging.INFO, logger="ollama_proxy")
    a, b = preloaded(make_fake, 2, loaded=1)
    proxy = start(start_proxy, [a, b], "--max-retries", "0", "--eject-seconds", "0.3")
    fault = a.add_fault(Fault(path="/api/chat", status=500, error="runner wedged", times=0))
    for i in range(3):
        assert call(proxy.port, "POST", "/api/chat", chat("failing %d" % i)).backend == "a"
    assert report(proxy)["a"]["cool_off_seconds"] == 0.3
    trial = _until_a_gets_one(proxy, a)
    assert trial.status == 500 and trial.backend == "a", trial
    assert fault.hits == 4  # exactly one more: the trial
    entry = report(proxy)["a"]
    assert entry["ejected"] is True and entry["ejections_in_a_row"] == 2 and entry["cool_off_seconds"] == 0.6, entry
    assert entry["consecutive_failures"] == 4 and entry["trial_in_progress"] is False
    assert len(records(caplog, "ejected again for 0.6s: its trial request failed")) == 1

    a.clear_faults()
    held = a.add_fault(Fault(path="/api/chat", pause_after=0))
    job = _until_a_gets_one(proxy, a, held)
    assert isinstance(job, Background)
    try:
        assert report(proxy)["a"]["trial_in_progress"] is True
        seen = len(chats(a))
        for i in range(3):
            answer = call(proxy.port, "POST", "/api/chat", chat("during the trial %d" % i))
            assert answer.status == 200 and answer.backend == "b", answer
        assert len(chats(a)) == seen  # one trial at a time
    finally:
        held.gate.release()
    answer = job.result()
    assert answer.status == 200 and answer.backend == "a", answer
    entry = wait_for(lambda: (lambda e: e if not e["ejected"] else None)(report(proxy)["a"]), what="a recovered")
    assert entry["consecutive_failures"] == 0 and entry["ejections_in_a_row"] == 0 and entry["last_request_failure"] is None
    assert entry["cool_off_seconds"] is None and entry["ejected_until"] is None and entry["trial_in_progress"] is False
    answer = call(proxy.port, "POST", "/api/chat", chat("whole again"))
    assert answer.status == 200 and answer.backend == "a", answer  # loaded, no failure, the lower port

    assert len(records(caplog, "ejected for 0.3s: 3 failed requests in a row")) == 1
    assert len(records(caplog, "ejected again")) == 1
    assert len(records(caplog, "trying it with one request")) == 2
    recovered = records(caplog, "recovered")
    assert recovered == ["backend a recovered: its trial request succeeded (after 2 ejection(s) in a row)"], recovered
    fams = metrics(proxy)
    assert per_backend(fams, "ejections_total") == {"a": 2.0}
    assert per_backend(fams, "ejection_trials_total") == {"a": 2.0}
    assert per_backend(fams, "ejection_recoveries_total") == {"a": 1.0}
    assert per_backend(fams, "backend_request_failures_total") == {"a": 4.0}
    assert per_backend(fams, "backend_ejected") == {"a": 0.0, "b": 0.0}


def test_a_stalled_backend_is_ejected_although_its_probes_pass(make_fake, start_proxy):
    """Every chat on a is silent past --request-timeout while /api/tags answers at once: each stall
    marks it unhealthy until its next good probe, and the third stall in a row ejects it: from then
    on its good probes no longer bring requests back to it, until the cool-off is over."""
    a, b = preloaded(make_fake, 2, loaded=1)
    proxy = start(start_proxy, [a, b], "--max-retries", "0", "--request-timeout", "0.4", "--eject-seconds", "30")
    fault = a.add_fault(Fault(path="/api/chat", delay_before_headers=5, times=0))
    for i in range(3):
        wait_probed_healthy(proxy, "a")
        answer = call(proxy.port, "POST", "/api/chat", chat("stall %d" % i))
        assert answer.status == 504 and answer.backend == "a", answer
    wait_probed_healthy(proxy, "a")
    entry = report(proxy)["a"]
    assert entry["healthy"] is True and entry["ejected"] is True and entry["consecutive_failures"] == 3, entry
    for i in range(3):
        answer = call(proxy.port, "POST", "/api/chat", chat("after %d" % i))
        assert answer.status == 200 and answer.backend == "b", answer
    assert fault.hits == 3


def test_a_backend_its_probes_saw_down_and_back_is_no_longer_ejected(make_fake, start_proxy, caplog):
    """a answers every chat with 500 until it is ejected (its probes pass: it stays ejected); then
    it goes down (its probes fail) and comes back on its port, restarted: that ends the ejection at
    its first good probe, long before the 30 s cool-off, and requests reach it again."""
    caplog.set_level(logging.INFO, logger="ollama_proxy")
    a, b = preloaded(make_fake, 2, loaded=1)
    proxy = start(start_proxy, [a, b], "--max-retries", "0", "--eject-seconds", "30")
    a.add_fault(Fault(path="/api/chat", status=500, error="runner wedged", times=3))
    for i in range(3):
        assert call(proxy.port, "POST", "/api/chat", chat("failing %d" % i)).status == 500
    assert report(proxy)["a"]["ejected"] is True
    time.sleep(0.5)  # good probes meanwhile: still ejected
    assert report(proxy)["a"]["ejected"] is True
    port = a.port
    stop_fake(a)
    wait_for(lambda: proxy.call(lambda: proxy.app.fleet.named("a").healthy) is False, what="a seen down by its probes")
    assert report(proxy)["a"]["ejected"] is True
    restarted = make_fake(LLAMA_QWEN, port=port)
    assert call(restarted.port, "POST", "/api/generate", {"model": "llama3.2"}).status == 200  # loaded again: chosen first
    wait_for(lambda: report(proxy)["a"]["ejected"] is False, timeout=10, what="a no longer ejected after its restart")
    entry = report(proxy)["a"]
    assert entry["healthy"] is True and entry["consecutive_failures"] == 0
    wait_for(lambda: LATEST in proxy.call(lambda: proxy.app.fleet.named("a").loaded), what="a's loaded model known")
    answer = call(proxy.port, "POST", "/api/chat", chat("back"))
    assert answer.status == 200 and answer.backend == "a", answer
    said = records(caplog, "recovered: its probes saw it down and back up")
    assert len(said) == 1 and said[0].startswith("backend a recovered"), said
    assert per_backend(metrics(proxy), "ejection_recoveries_total") == {"a": 1.0}


def test_the_fast_failing_backend_gets_no_extra_share(make_fake, start_proxy):
    """Three backends with the model loaded; a (the lowest port) answers every chat with 500 at
    once, so its in-flight count stays 0 while b and c stream slowly.  Counting in-flight requests
    alone would send it every new request (each retried elsewhere); its recent failure puts it
    after the others, so it gets the first one only, and every client gets its answer."""
    a, b, c = preloaded(make_fake, 3)
    proxy = start(start_proxy, [a, b, c], "--eject-after", "10")  # no ejection within the 12: the choice alone keeps a out
    fault = a.add_fault(Fault(path="/api/chat", status=500, error="runner wedged", times=0))
    jobs = []
    for i in range(12):
        jobs.append(Background(call, proxy.port, "POST", "/api/chat", chat("share %d" % i, stream=True), {"X-Fake-Delay-Ms": "100"}))
        time.sleep(0.03)
    answers = [job.result() for job in jobs]
    for answer in answers:
        assert answer.status == 200 and answer.backend in ("b", "c"), answer
        assert "".join(line["message"]["content"] for line in answer.lines()) == TEXT
    assert 1 <= fault.hits <= 2, fault.hits  # (12 without the recent failure in the choice)
    retries = values(metrics(proxy), "ollama_proxy_events_total").get((("event", "retry"),), 0.0)
    assert retries == fault.hits


def test_a_lone_backend_is_never_ejected(make_fake, start_proxy):
    """With one backend there is nowhere else to send a request: its failures are counted and shown,
    but it is not ejected (each request still gets the backend's own answer, not a 503)."""
    (a,) = preloaded(make_fake, 1)
    proxy = start(start_proxy, [a], "--eject-seconds", "30")
    fault = a.add_fault(Fault(path="/api/chat", status=500, error="runner wedged", times=0))
    for i in range(5):
        answer = call(proxy.port, "POST", "/api/chat", chat("alone %d" % i))
        assert answer.status == 500 and "runner wedged" in answer.json()["error"], answer
    assert fault.hits == 5
    entry = report(proxy)["a"]
    assert entry["ejected"] is False and entry["consecutive_failures"] == 5


def test_eject_after_0_never_ejects(make_fake, start_proxy):
    a, b = preloaded(make_fake, 2)
    proxy = start(start_proxy, [a, b], "--max-retries", "0", "--eject-after", "0")
    fault = a.add_fault(Fault(path="/api/chat", status=500, times=0))
    for i in range(5):  # after its first failure a comes after b (b is loaded too): it gets few of them
        call(proxy.port, "POST", "/api/chat", chat("zero %d" % i))
    entry = report(proxy)["a"]
    assert entry["ejected"] is False and entry["consecutive_failures"] == fault.hits >= 1


def test_reloads_avoided_are_counted_end_to_end(make_fake, start_proxy):
    """Auto mode: llama3.2 is loaded with 16384; a short chat would get 2048, and is sent at 16384
    (no reload): counted in ollama_proxy_reloads_avoided_total for the model."""
    (a,) = sorted((make_fake(LLAMA_QWEN) for _ in range(1)), key=lambda f: f.port)
    assert call(a.port, "POST", "/api/generate", {"model": "llama3.2", "options": {"num_ctx": 16384}}).status == 200
    proxy = start(start_proxy, [a], "--context-mode", "auto")
    answer = call(proxy.port, "POST", "/api/chat", chat("short"))
    assert answer.status == 200 and answer.headers.get("x-ollama-proxy-num-ctx") == "16384", answer
    assert a.reload_count() == 0
    fams = metrics(proxy)
    assert values(fams, "ollama_proxy_reloads_avoided_total") == {(("model", LATEST),): 1.0}
