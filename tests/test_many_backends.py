"""End to end: one proxy in front of several fake Ollama servers (SPEC §6, the flags of §3 marked 6).

Every response names the backend that served it in ``X-Ollama-Proxy-Backend``; the fakes'
``received`` records show what reached each of them. Backends without an explicit name are
called ``127.0.0.1:<port>``; ties in the choice go to the lower port, so the tests sort the
fakes by port where that matters.
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import math
import random
import socket
import threading
import time
import warnings
from collections import Counter

import ollama
import openai
import pytest
from fake_ollama import DEFAULT_MODELS, Fault, FakeOllama

TIMEOUT = 30.0
LLAMA = [m for m in DEFAULT_MODELS if m.name == "llama3.2:latest"]
QWEN = [m for m in DEFAULT_MODELS if m.name == "qwen3:8b"]
NOMIC = [m for m in DEFAULT_MODELS if m.name == "nomic-embed-text:latest"]
TEXT = "".join("tok%d " % i for i in range(5))  # what a fake answers with the default 5 chunks


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


class Answer:
    """One HTTP answer: status, lower-cased headers, raw body."""

    def __init__(self, status: int, headers: dict, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def backend(self) -> str | None:
        return self.headers.get("x-ollama-proxy-backend")

    def json(self):
        return json.loads(self.body)

    def lines(self) -> list:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]

    def __repr__(self) -> str:
        return "Answer(%d, backend=%s, %r)" % (self.status, self.backend, self.body[:200])


def call(port: int, method: str, path: str, body=None, headers=None, timeout: float = TIMEOUT) -> Answer:
    """One request over a fresh http.client connection to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode("utf-8") if isinstance(body, (dict, list)) else body
        hdrs = dict(headers or {})
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, data, hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw)
    finally:
        conn.close()


def chat(text: str, model: str = "llama3.2", stream: bool = False, history=()) -> dict:
    messages = list(history) + [{"role": "user", "content": text}]
    return {"model": model, "messages": messages, "stream": stream}


def chats(fake: FakeOllama, path: str = "/api/chat") -> list:
    """The bodies of the requests the fake received on ``path``, in order."""
    return [r.json for r in list(fake.received) if r.path == path]


def chat_texts(fake: FakeOllama) -> list:
    """The last user message of every /api/chat the fake received, in order."""
    return [body["messages"][-1]["content"] for body in chats(fake)]


def name(fake: FakeOllama) -> str:
    return "127.0.0.1:%d" % fake.port


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s (last value %r)" % (what, value))
        time.sleep(0.02)


def health_of(proxy) -> dict:
    """Backend name -> its healthy flag, read on the proxy's loop."""
    return proxy.call(lambda: {b.name: b.healthy for b in proxy.app.fleet.backends})


def wait_healthy(proxy, n: int, timeout: float = 10.0) -> None:
    wait_for(lambda: (lambda h: len(h) == n and all(v is True for v in h.values()))(health_of(proxy)),
             timeout, "%d healthy backends" % n)


def queue_depth(proxy) -> int:
    return proxy.call(lambda: len(proxy.app.scheduler.queue))


def backend_state(proxy, backend_name: str, attr: str):
    def read():
        for b in proxy.app.fleet.backends:
            if b.name == backend_name:
                value = getattr(b, attr)
                return dict(value) if isinstance(value, dict) else value
        return None

    return proxy.call(read)


class Background:
    """``fn(*args)`` in a daemon thread; ``result()`` joins and returns (or re-raises)."""

    def __init__(self, fn, *args, **kwargs) -> None:
        self.value = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, fn, args, kwargs) -> None:
        try:
            self.value = fn(*args, **kwargs)
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self, timeout: float = TIMEOUT):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "background request still running after %.0f s" % timeout
        if self.error is not None:
            raise self.error
        return self.value


def hold_slots(port: int, fakes: list) -> tuple:
    """With --max-concurrent 1: one chat per fake that stops after its response head, so that
    each backend's only slot is taken. Returns (faults, background requests)."""
    faults = [f.add_fault(Fault(path="/api/chat", pause_after=0)) for f in fakes]
    held = [Background(call, port, "POST", "/api/chat", chat("held %d" % i)) for i in range(len(fakes))]
    for fake, fault in zip(fakes, faults):
        assert fault.gate.wait_reached(10), "no held request reached %s" % name(fake)
    return faults, held


def release(faults: list) -> None:
    for fault in faults:
        if fault.gate is not None:
            fault.gate.release()


def free_port_block(n: int) -> int:
    """The first port of ``n`` consecutive free ports on 127.0.0.1 (below the ephemeral range)."""
    for _ in range(200):
        base = random.randint(20000, 30000 - n)
        socks = []
        ok = True
        try:
            for port in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            ok = False
        finally:
            for s in socks:
                s.close()
        if ok:
            return base
    raise RuntimeError("no block of %d free ports found" % n)


def _drop_transport_creation_errors(loop, context) -> None:
    if context.get("message") == "Error on transport creation for incoming connection":
        return  # see stop_fake: logging it (debug mode) would keep the half-made transport alive
    loop.default_exception_handler(context)


def stop_fake(fake: FakeOllama) -> None:
    """``fake.stop()``, without leaving the fake's own sockets behind for other tests to trip on.

    Stopping a FakeOllama while connections arrive (probes, retries) races asyncio's accept with
    the listener's close: a just-accepted connection gets no transport ("Error on transport
    creation", whose debug-mode log record would keep its socket open), or a connection task
    starts only after stop() took its list of tasks to cancel, and is left pending in the closed
    loop with its socket open. So the listener is closed first (``refuse()``), the accepts in
    progress settle, and only then does ``stop()`` cancel every connection. The ResourceWarnings
    of the fake's own transports and sockets (collected here) are dropped; any other warning
    raised meanwhile, a proxy's leak included, is raised again.
    """
    loop = fake._loop
    if loop is None or loop.is_closed():
        fake.stop()
        return
    port = fake.port
    loop.set_exception_handler(_drop_transport_creation_errors)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.disable()
        try:
            fake.refuse()
            fake._call(lambda: asyncio.sleep(0.05))  # accepted connections get their transport and task
            fake.stop()
            gc.collect()
        finally:
            gc.enable()
    for w in caught:
        if issubclass(w.category, ResourceWarning):
            if isinstance(w.source, socket.socket) and ("laddr=('127.0.0.1', %d)" % port) in str(w.message):
                continue  # the fake's end of a connection
            if getattr(w.source, "_loop", None) is loop:
                continue  # a transport of the fake's loop
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


@pytest.fixture
def make_fake():
    """make_fake(models=None, **kwargs) -> a started FakeOllama, stopped at teardown."""
    started: list = []

    def make(models=None, **kwargs) -> FakeOllama:
        fake = FakeOllama(models, **kwargs).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        stop_fake(fake)


def sorted_fakes(make_fake, n: int, models=None) -> list:
    return sorted((make_fake(models) for _ in range(n)), key=lambda f: f.port)


# ---------------------------------------------------------------------------------------------
# 1. least requests in flight
# ---------------------------------------------------------------------------------------------


def test_least_in_flight_spreads_concurrent_streams(make_fake, start_proxy):
    """Nine overlapping streamed chats over three backends: every backend gets some, none more than its share + 1."""
    fakes = sorted_fakes(make_fake, 3)
    proxy = start_proxy([f.url for f in fakes])
    n = 9
    barrier = threading.Barrier(n)

    def one(i: int) -> Answer:
        barrier.wait(10)
        return call(proxy.port, "POST", "/api/chat", chat("spread %d" % i, stream=True), {"X-Fake-Delay-Ms": "150"})

    jobs = [Background(one, i) for i in range(n)]
    answers = [job.result() for job in jobs]
    for answer in answers:
        assert answer.status == 200, answer
        lines = answer.lines()
        assert lines[-1]["done"] is True and "".join(x["message"]["content"] for x in lines) == TEXT
    per_backend = Counter(a.backend for a in answers)
    limit = math.ceil(n / len(fakes)) + 1
    for fake in fakes:
        assert 1 <= per_backend[name(fake)] <= limit, per_backend
        assert len(chats(fake)) == per_backend[name(fake)]


# ---------------------------------------------------------------------------------------------
# 2, 3. the model's inventory and what is loaded
# ---------------------------------------------------------------------------------------------


def test_model_only_one_backend_has_goes_there(make_fake, start_proxy):
    """With probes on, a model that only one backend lists goes to that backend, every time."""
    a = make_fake(LLAMA)
    b = make_fake(QWEN)
    proxy = start_proxy([a.url, b.url], scan_interval=0.2)
    wait_healthy(proxy, 2)
    for model, owner in (("qwen3:8b", b), ("llama3.2", a), ("qwen3:8b", b), ("llama3.2:latest", a)):
        answer = call(proxy.port, "POST", "/api/chat", chat("only one has %s" % model, model=model))
        assert answer.status == 200, answer
        assert answer.backend == name(owner)
    assert {body["model"] for body in chats(a)} == {"llama3.2", "llama3.2:latest"}
    assert {body["model"] for body in chats(b)} == {"qwen3:8b"}


def test_backend_with_model_loaded_wins(make_fake, start_proxy):
    """The model is loaded (seen in /api/ps) on the higher-port backend: requests for it go there;
    a model loaded nowhere goes to the lower port (the tie-break)."""
    low, high = sorted_fakes(make_fake, 2)
    assert call(high.port, "POST", "/api/generate", {"model": "llama3.2"}).status == 200  # load it
    assert "llama3.2:latest" in high.loaded
    proxy = start_proxy([low.url, high.url], scan_interval=0.2)
    wait_healthy(proxy, 2)
    wait_for(lambda: "llama3.2:latest" in backend_state(proxy, name(high), "loaded"), what="the probe seeing /api/ps")
    for i in range(3):
        answer = call(proxy.port, "POST", "/api/chat", chat("loaded %d" % i))
        assert answer.status == 200 and answer.backend == name(high), answer
    assert chats(low) == []
    answer = call(proxy.port, "POST", "/api/chat", chat("nobody has it loaded", model="qwen3:8b"))
    assert answer.status == 200 and answer.backend == name(low), answer


def test_auto_mode_prefers_loaded_context_that_holds_the_request(make_fake, start_proxy):
    """Auto mode: llama3.2 loaded with 2048 on the lower port and 8192 on the higher: a prompt that
    needs more than 2048 goes to the 8192 one, a short one to the lower port."""
    low, high = sorted_fakes(make_fake, 2)
    for fake, size in ((low, 2048), (high, 8192)):
        assert call(fake.port, "POST", "/api/generate", {"model": "llama3.2", "options": {"num_ctx": size}}).status == 200
    proxy = start_proxy([low.url, high.url], "--context-mode", "auto", scan_interval=0.2)
    wait_healthy(proxy, 2)
    wait_for(lambda: backend_state(proxy, name(low), "loaded").get("llama3.2:latest") == 2048
             and backend_state(proxy, name(high), "loaded").get("llama3.2:latest") == 8192, what="loaded contexts")
    long_answer = call(proxy.port, "POST", "/api/chat", chat("x" * 4000))  # ~1000 + 1024 + 300 tokens > 2048
    assert long_answer.status == 200 and long_answer.backend == name(high), long_answer
    short_answer = call(proxy.port, "POST", "/api/chat", chat("hi"))
    assert short_answer.status == 200 and short_answer.backend == name(low), short_answer
    assert high.reload_count("llama3.2") == 0 and low.reload_count("llama3.2") == 0


# ---------------------------------------------------------------------------------------------
# 4. sticky conversations
# ---------------------------------------------------------------------------------------------


def _conversation_with_other_traffic(proxy, fakes_by_name: dict) -> tuple:
    """Turn 1 of a conversation; then a held chat keeps its backend busy; another conversation
    and turns 2 and 3 follow. Returns (backend of each turn, backend of the other conversation)."""
    history: list = []
    turns = []
    answer = call(proxy.port, "POST", "/api/chat", chat("sticky question one", history=history))
    assert answer.status == 200, answer
    turns.append(answer.backend)
    first = answer.backend
    history += [{"role": "user", "content": "sticky question one"}, answer.json()["message"]]
    fault = fakes_by_name[first].add_fault(Fault(path="/api/chat", pause_after=0))
    held = Background(call, proxy.port, "POST", "/proxy-backend/%s/api/chat" % first, chat("another conversation, held", stream=True))
    try:
        assert fault.gate.wait_reached(10)
        other = call(proxy.port, "POST", "/api/chat", chat("a third conversation"))
        assert other.status == 200, other
        for text in ("sticky question two", "sticky question three"):
            answer = call(proxy.port, "POST", "/api/chat", chat(text, history=history))
            assert answer.status == 200, answer
            turns.append(answer.backend)
            history += [{"role": "user", "content": text}, answer.json()["message"]]
    finally:
        fault.gate.release()
    assert held.result().status == 200
    return turns, other.backend


def test_sticky_conversation_stays_on_its_backend(make_fake, start_proxy):
    """Three turns of one conversation go to the same backend even while that backend is the busier
    one and other conversations go elsewhere."""
    a, b = sorted_fakes(make_fake, 2)
    # context-mode off: the proxy learns no loaded context, so only stickiness and in-flight counts decide
    proxy = start_proxy(["a=" + a.url, "b=" + b.url], "--context-mode", "off")
    turns, other = _conversation_with_other_traffic(proxy, {"a": a, "b": b})
    assert turns[0] in ("a", "b")
    assert other != turns[0]  # least in flight sends a new conversation to the idle backend ...
    assert turns == [turns[0]] * 3  # ... but the conversation stays where it started
    assert list(proxy.call(lambda: [v[0] for v in proxy.app.fleet.sticky.entries.values()])).count(turns[0]) >= 1
    sticky_fake = {"a": a, "b": b}[turns[0]]
    texts = chat_texts(sticky_fake)
    assert texts.count("sticky question one") == 1 and "sticky question two" in texts and "sticky question three" in texts


def test_no_sticky_does_not_pin_conversations(make_fake, start_proxy):
    """--no-sticky: no sticky entries; turn 2 follows least in flight like any request."""
    a, b = sorted_fakes(make_fake, 2)
    proxy = start_proxy(["a=" + a.url, "b=" + b.url], "--context-mode", "off", "--no-sticky")
    assert proxy.config.sticky is False
    turns, other = _conversation_with_other_traffic(proxy, {"a": a, "b": b})
    assert proxy.call(lambda: dict(proxy.app.fleet.sticky.entries)) == {}
    assert turns[1] == other != turns[0]  # the first backend is busy: turn 2 went to the idle one


def test_sticky_conversation_moves_when_its_backend_dies(make_fake, start_proxy):
    """The backend of a sticky conversation goes away: its entry vanishes, the next turn is served
    by the other backend (and sticks there)."""
    fakes = sorted_fakes(make_fake, 2)
    by_name = {name(f): f for f in fakes}
    proxy = start_proxy([f.url for f in fakes], "--context-mode", "off", scan_interval=0.2)
    wait_healthy(proxy, 2)
    answer = call(proxy.port, "POST", "/api/chat", chat("moving question one"))
    assert answer.status == 200, answer
    first = answer.backend
    history = [{"role": "user", "content": "moving question one"}, answer.json()["message"]]
    assert list(proxy.call(lambda: [v[0] for v in proxy.app.fleet.sticky.entries.values()])) == [first]
    stop_fake(by_name[first])
    wait_for(lambda: health_of(proxy)[first] is False, what="the sticky backend unhealthy")
    assert proxy.call(lambda: dict(proxy.app.fleet.sticky.entries)) == {}
    answer = call(proxy.port, "POST", "/api/chat", chat("moving question two", history=history))
    assert answer.status == 200 and answer.backend != first, answer
    assert list(proxy.call(lambda: [v[0] for v in proxy.app.fleet.sticky.entries.values()])) == [answer.backend]


def test_model_less_requests_go_to_first_healthy_backend(make_fake, start_proxy):
    """A model-less request goes to the first backend of the list (here the higher port, which a
    model request would not pick), and to the next one once the first is unhealthy."""
    low, high = sorted_fakes(make_fake, 2)
    proxy = start_proxy(["first=" + high.url, "second=" + low.url], scan_interval=0.2)
    wait_healthy(proxy, 2)
    for _ in range(2):
        answer = call(proxy.port, "GET", "/api/status")
        assert answer.status == 200 and answer.backend == "first", answer
    model_answer = call(proxy.port, "POST", "/api/chat", chat("with a model", model="qwen3:8b"))
    assert model_answer.status == 200 and model_answer.backend == "second", model_answer  # the lower port
    assert len([r for r in high.received if r.path == "/api/status"]) == 2
    stop_fake(high)
    wait_for(lambda: health_of(proxy)["first"] is False, what="the first backend unhealthy")
    answer = call(proxy.port, "GET", "/api/status")
    assert answer.status == 200 and answer.backend == "second", answer
    assert [r.path for r in low.received if r.path == "/api/status"] == ["/api/status"]


# ---------------------------------------------------------------------------------------------
# 5. a backend dies under load, comes back
# ---------------------------------------------------------------------------------------------


def test_killing_a_backend_under_load_loses_no_request(make_fake, start_proxy):
    """100 concurrent non-streamed chats over three backends; the lowest-port one is stopped
    mid-way: every answer is a complete 200; it is marked unhealthy, and once a fake listens on
    its port again it is healthy and served again (its failed requests ejected it: a good probe
    after failed ones ends that, or else the next request after the cool-off is its trial)."""
    fakes = sorted_fakes(make_fake, 3)
    victim = fakes[0]
    port = victim.port
    proxy = start_proxy([f.url for f in fakes], "--eject-after", "1", "--eject-seconds", "0.3", scan_interval=0.2)
    wait_healthy(proxy, 3)
    n = 100
    jobs = [Background(call, proxy.port, "POST", "/api/chat", chat("load %d" % i), {"X-Fake-Delay-Ms": "60"})
            for i in range(n)]
    wait_for(lambda: len(chats(victim)) >= 5, what="requests on the victim")
    stop_fake(victim)
    cut = set(chat_texts(victim))
    answers = [job.result() for job in jobs]
    for answer in answers:
        assert answer.status == 200, answer
        body = answer.json()
        assert body["done"] is True and body["message"]["content"] == TEXT, answer
    retried = [a for i, a in enumerate(answers) if "load %d" % i in cut and a.backend != name(victim)]
    assert retried, "no request the victim had taken was answered elsewhere"
    wait_for(lambda: health_of(proxy)[name(victim)] is False, what="the victim marked unhealthy")
    report = call(proxy.port, "GET", "/__proxy/backends").json()
    entry = [b for b in report["backends"] if b["name"] == name(victim)][0]
    assert entry["healthy"] is False and entry["last_error"]

    reborn = make_fake(port=port)
    wait_for(lambda: health_of(proxy)[name(victim)] is True, what="the restarted backend healthy again")
    wait_for(lambda: proxy.call(lambda: proxy.app.fleet.named(name(victim)).request_health.available(time.monotonic())),
             what="the victim available again")
    # no longer ejected (its probes saw it down and back), or its trial after the cool-off: the next request goes there
    answer = call(proxy.port, "POST", "/api/chat", chat("after the restart", model="qwen3:8b"))
    assert answer.status == 200 and answer.backend == name(victim), answer
    assert chat_texts(reborn) == ["after the restart"]


# ---------------------------------------------------------------------------------------------
# 6. discovery with --scan
# ---------------------------------------------------------------------------------------------


def test_scan_discovers_and_forgets_backends(make_fake, start_proxy):
    """--scan over a free port range: nothing found gives 503; fakes started later are discovered,
    a stopped one is forgotten after a few failed rounds, and requests keep working."""
    base = free_port_block(4)
    proxy = start_proxy([], "--scan", "127.0.0.1:%d-%d" % (base, base + 3), "--scan-interval", "0.2")
    answer = call(proxy.port, "POST", "/api/chat", chat("anyone there?"))
    assert answer.status == 503, answer
    assert "no healthy backend" in answer.json()["error"]
    assert "retry-after" in answer.headers

    def listed() -> dict:
        return {b["name"]: b for b in call(proxy.port, "GET", "/__proxy/backends").json()["backends"]}

    assert listed() == {}
    one = make_fake(port=base + 1)
    two = make_fake(port=base + 2)
    wait_for(lambda: (lambda seen: {name(one), name(two)} <= set(seen) and all(b["healthy"] for b in seen.values()))(listed()),
             what="both fakes discovered")
    seen = listed()
    assert set(seen) == {name(one), name(two)}
    assert seen[name(one)]["discovered"] is True and "llama3.2:latest" in seen[name(one)]["models"]
    served = set()
    for i in range(4):
        answer = call(proxy.port, "POST", "/api/chat", chat("found %d" % i, model="qwen3:8b" if i % 2 else "llama3.2"))
        assert answer.status == 200, answer
        served.add(answer.backend)
    assert served <= {name(one), name(two)}

    stop_fake(one)
    deadline = time.monotonic() + 10
    i = 0
    while name(one) in listed():
        assert time.monotonic() < deadline, "the stopped backend was never forgotten"
        answer = call(proxy.port, "POST", "/api/chat", chat("meanwhile %d" % i))
        i += 1
        assert answer.status == 200 and answer.backend == name(two), answer
        time.sleep(0.05)
    assert set(listed()) == {name(two)}
    for j in range(3):
        answer = call(proxy.port, "POST", "/api/chat", chat("after forgetting %d" % j))
        assert answer.status == 200 and answer.backend == name(two), answer


# ---------------------------------------------------------------------------------------------
# 7. the queue
# ---------------------------------------------------------------------------------------------


def test_queue_serves_in_fifo_order(make_fake, start_proxy):
    """--max-concurrent 1, two backends, ten requests: two are served, eight queue in a known
    order; while b stays busy, a serves the eight strictly first in, first out; all succeed."""
    a, b = sorted_fakes(make_fake, 2)
    proxy = start_proxy(["a=" + a.url, "b=" + b.url], "--max-concurrent", "1")
    fa = a.add_fault(Fault(path="/api/chat", pause_after=0))
    fb = b.add_fault(Fault(path="/api/chat", pause_after=0))
    jobs = {}
    try:
        jobs[0] = Background(call, proxy.port, "POST", "/api/chat", chat("queue 0"))
        assert fa.gate.wait_reached(10)  # the lower port first
        jobs[1] = Background(call, proxy.port, "POST", "/api/chat", chat("queue 1"))
        assert fb.gate.wait_reached(10)  # a is full: b
        for i in range(2, 10):
            jobs[i] = Background(call, proxy.port, "POST", "/api/chat", chat("queue %d" % i), {"X-Fake-Delay-Ms": "10"})
            wait_for(lambda: queue_depth(proxy) == i - 1, what="request %d queued" % i)
        assert call(proxy.port, "GET", "/__proxy/backends").json()["queue_depth"] == 8
        fa.gate.release()
        wait_for(lambda: len(chats(a)) == 9, what="a serving the queue")
        assert chat_texts(a) == ["queue %d" % i for i in [0] + list(range(2, 10))]
        assert chat_texts(b) == ["queue 1"]
    finally:
        release([fa, fb])
    answers = {i: job.result() for i, job in jobs.items()}
    for i, answer in answers.items():
        assert answer.status == 200, answer
        assert answer.json()["message"]["content"] == TEXT
        assert answer.backend == ("b" if i == 1 else "a")
    assert queue_depth(proxy) == 0


def test_queue_full_gives_503_with_retry_after(make_fake, start_proxy):
    """--max-queue 1: with both slots taken and one request waiting, the next gets 503 + Retry-After at once."""
    fakes = sorted_fakes(make_fake, 2)
    proxy = start_proxy([f.url for f in fakes], "--max-concurrent", "1", "--max-queue", "1")
    faults, held = hold_slots(proxy.port, fakes)
    try:
        waiting = Background(call, proxy.port, "POST", "/api/chat", chat("waiting"))
        wait_for(lambda: queue_depth(proxy) == 1, what="one request queued")
        answer = call(proxy.port, "POST", "/api/chat", chat("one too many"))
        assert answer.status == 503, answer
        assert answer.headers.get("retry-after", "").isdigit()
        assert "queue" in answer.json()["error"]
    finally:
        release(faults)
    assert waiting.result().status == 200
    assert all(h.result().status == 200 for h in held)
    assert all("one too many" not in chat_texts(f) for f in fakes)


def test_client_leaving_the_queue_frees_its_place(make_fake, start_proxy):
    """A queued client that disconnects leaves the queue (depth back to 0, its request never sent
    upstream), so with --max-queue 1 the next request may queue and is served."""
    fakes = sorted_fakes(make_fake, 2)
    proxy = start_proxy([f.url for f in fakes], "--max-concurrent", "1", "--max-queue", "1")
    faults, held = hold_slots(proxy.port, fakes)
    try:
        body = json.dumps(chat("the leaver")).encode()
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        wait_for(lambda: queue_depth(proxy) == 1, what="the leaver queued")
        assert call(proxy.port, "GET", "/__proxy/backends").json()["queue_depth"] == 1
        sock.close()
        wait_for(lambda: queue_depth(proxy) == 0, what="the leaver out of the queue")
        assert call(proxy.port, "GET", "/__proxy/backends").json()["queue_depth"] == 0
        nxt = Background(call, proxy.port, "POST", "/api/chat", chat("the next one"))
        wait_for(lambda: queue_depth(proxy) == 1 or nxt.thread.is_alive() is False, what="the next one queued")
        assert nxt.thread.is_alive(), "the next request was answered while both slots are taken: %r" % (nxt.value,)
    finally:
        release(faults)
    answer = nxt.result()
    assert answer.status == 200, answer
    assert all(h.result().status == 200 for h in held)
    assert all("the leaver" not in chat_texts(f) for f in fakes)
    assert proxy.call(lambda: [b.in_flight for b in proxy.app.fleet.backends]) == [0, 0]


def test_queue_timeout_gives_503_with_retry_after(make_fake, start_proxy):
    """--queue-timeout 0.3: a request that finds every slot taken gets 503 + Retry-After after waiting."""
    fakes = sorted_fakes(make_fake, 2)
    proxy = start_proxy([f.url for f in fakes], "--max-concurrent", "1", "--queue-timeout", "0.3")
    faults, held = hold_slots(proxy.port, fakes)
    try:
        answer = call(proxy.port, "POST", "/api/chat", chat("too patient"))
        assert answer.status == 503, answer
        assert answer.headers.get("retry-after", "").isdigit()
        assert "error" in answer.json()
        assert queue_depth(proxy) == 0
    finally:
        release(faults)
    assert all(h.result().status == 200 for h in held)
    assert all("too patient" not in chat_texts(f) for f in fakes)


def test_embedding_not_blocked_by_generations(make_fake, start_proxy):
    """--max-concurrent 1 with each backend's slot held by a generation: /api/embed uses the extra slot."""
    fakes = sorted_fakes(make_fake, 2)
    proxy = start_proxy([f.url for f in fakes], "--max-concurrent", "1", "--queue-timeout", "5")
    faults, held = hold_slots(proxy.port, fakes)
    try:
        answer = call(proxy.port, "POST", "/api/embed", {"model": "nomic-embed-text", "input": ["hello", "world"]})
        assert answer.status == 200, answer
        assert len(answer.json()["embeddings"]) == 2
        assert all(h.thread.is_alive() for h in held)  # the generations still hold their slots
        # a generation, by contrast, has to wait (and times out here)
        waiting = Background(call, proxy.port, "POST", "/api/chat", chat("must wait"))
        wait_for(lambda: queue_depth(proxy) == 1, what="a generation queued")
    finally:
        release(faults)
    assert waiting.result().status == 200
    assert all(h.result().status == 200 for h in held)


# ---------------------------------------------------------------------------------------------
# 8. aliases
# ---------------------------------------------------------------------------------------------


def test_alias_native_answers_name_the_alias(make_fake, start_proxy):
    """--alias gpt-4o=llama3.2: upstream gets llama3.2; JSON and NDJSON answers name gpt-4o."""
    fakes = sorted_fakes(make_fake, 2)
    by_name = {name(f): f for f in fakes}
    proxy = start_proxy([f.url for f in fakes], "--alias", "gpt-4o=llama3.2")
    answer = call(proxy.port, "POST", "/api/chat", chat("alias please", model="gpt-4o"))
    assert answer.status == 200, answer
    assert answer.json()["model"] == "gpt-4o" and answer.json()["message"]["content"] == TEXT
    assert chats(by_name[answer.backend])[-1]["model"] == "llama3.2"

    answer = call(proxy.port, "POST", "/api/chat", chat("alias streamed", model="gpt-4o", stream=True))
    assert answer.status == 200, answer
    lines = answer.lines()
    assert len(lines) == 6 and lines[-1]["done"] is True
    assert [x["model"] for x in lines] == ["gpt-4o"] * 6
    assert chats(by_name[answer.backend])[-1]["model"] == "llama3.2"

    answer = call(proxy.port, "POST", "/api/generate", {"model": "gpt-4o", "prompt": "alias generate"})
    assert answer.status == 200, answer
    assert {x["model"] for x in answer.lines()} == {"gpt-4o"}
    assert chats(by_name[answer.backend], "/api/generate")[-1]["model"] == "llama3.2"


def test_alias_with_openai_client(make_fake, start_proxy):
    """The openai client asking for gpt-4o gets gpt-4o back; Ollama was asked for llama3.2."""
    fakes = sorted_fakes(make_fake, 2)
    by_name = {name(f): f for f in fakes}
    proxy = start_proxy([f.url for f in fakes], "--alias", "gpt-4o=llama3.2")
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key="anything", max_retries=0, timeout=TIMEOUT) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "hi from openai"}])
        reply = raw.parse()
        assert reply.model == "gpt-4o"
        assert reply.choices[0].message.content == TEXT
        served = by_name[raw.headers["x-ollama-proxy-backend"]]
        assert chats(served)[-1]["model"] == "llama3.2"
        stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "stream"}], stream=True)
        chunks = list(stream)
        assert chunks and {c.model for c in chunks} == {"gpt-4o"}
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT


def test_pattern_alias_reaches_the_local_model_and_answers_name_what_was_asked(make_fake, start_proxy):
    """--alias 'claude-*=llama3.2' (agents insist on their own names): any claude-* name goes up as
    llama3.2, each answer names the model the client asked for; an exact alias still wins."""
    fakes = sorted_fakes(make_fake, 2)
    by_name = {name(f): f for f in fakes}
    proxy = start_proxy([f.url for f in fakes], "--alias", "claude-*=llama3.2", "--alias", "claude-exact=qwen3:8b")
    for asked in ("claude-sonnet-4-5", "claude-opus-4-1-20250805"):
        answer = call(proxy.port, "POST", "/api/chat", chat("pattern", model=asked))
        assert answer.status == 200, answer
        assert answer.json()["model"] == asked
        assert chats(by_name[answer.backend])[-1]["model"] == "llama3.2"
    answer = call(proxy.port, "POST", "/api/chat", chat("pattern", model="claude-exact"))
    assert answer.status == 200, answer
    assert chats(by_name[answer.backend])[-1]["model"] == "qwen3:8b"
    answer = call(proxy.port, "POST", "/api/chat", chat("no alias", model="gpt-4o"))
    assert answer.status == 404 and "gpt-4o" in answer.json()["error"]


@pytest.mark.parametrize("listed", [True, False], ids=["list-aliases", "not-listed"])
def test_alias_listing(make_fake, start_proxy, listed):
    """--list-aliases adds gpt-4o to /api/tags and /v1/models; without it the alias is not listed."""
    fakes = sorted_fakes(make_fake, 2)
    flags = ["--alias", "gpt-4o=llama3.2"] + (["--list-aliases"] if listed else [])
    proxy = start_proxy([f.url for f in fakes], *flags)
    tags = call(proxy.port, "GET", "/api/tags").json()["models"]
    names = [m["name"] for m in tags]
    ids = [m["id"] for m in call(proxy.port, "GET", "/v1/models").json()["data"]]
    assert "llama3.2:latest" in names and "llama3.2:latest" in ids
    if listed:
        assert [n for n in names if n.startswith("gpt-4o")] == ["gpt-4o"]
        assert [i for i in ids if i.startswith("gpt-4o")] == ["gpt-4o"]
        entry = [m for m in tags if m["name"] == "gpt-4o"][0]
        assert entry["digest"] == [m for m in tags if m["name"] == "llama3.2:latest"][0]["digest"]
    else:
        assert not [n for n in names if n.startswith("gpt-4o")]
        assert not [i for i in ids if i.startswith("gpt-4o")]


# ---------------------------------------------------------------------------------------------
# 9. merged answers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def two_inventories(make_fake):
    """a: llama3.2 + nomic-embed-text, version 0.5.1; b: llama3.2 + qwen3:8b, version 0.12.3 (a has the lower port)."""
    base = free_port_block(2)
    first = make_fake(LLAMA + NOMIC, version="0.5.1", port=base)
    second = make_fake(LLAMA + QWEN, version="0.12.3", port=base + 1)
    return first, second


def test_merged_lists(two_inventories, start_proxy):
    """/api/tags deduplicated union, /api/ps merged, /api/version the lowest, /v1/models merged,
    GET and HEAD / from the proxy, and the ollama client's list() through the proxy."""
    a, b = two_inventories
    for fake, model in ((a, "llama3.2"), (b, "qwen3:8b")):
        assert call(fake.port, "POST", "/api/generate", {"model": model}).status == 200
    proxy = start_proxy(["a=" + a.url, "b=" + b.url])
    union = ["llama3.2:latest", "nomic-embed-text:latest", "qwen3:8b"]

    tags = call(proxy.port, "GET", "/api/tags")
    assert tags.status == 200, tags
    assert sorted(m["name"] for m in tags.json()["models"]) == union
    assert all(m.get("digest") and "details" in m for m in tags.json()["models"])

    ps = call(proxy.port, "GET", "/api/ps")
    assert ps.status == 200, ps
    assert sorted(m["name"] for m in ps.json()["models"]) == ["llama3.2:latest", "qwen3:8b"]

    version = call(proxy.port, "GET", "/api/version")
    assert version.status == 200 and version.json() == {"version": "0.5.1"}, version  # 0.5.1 < 0.12.3

    models = call(proxy.port, "GET", "/v1/models").json()
    assert models["object"] == "list"
    assert sorted(m["id"] for m in models["data"]) == union

    root = call(proxy.port, "GET", "/")
    assert root.status == 200 and root.body == b"Ollama is running"
    head = call(proxy.port, "HEAD", "/")
    assert head.status == 200 and head.body == b""
    assert not [r for f in (a, b) for r in f.received if r.path == "/"]

    with ollama.Client(host=proxy.url, timeout=TIMEOUT) as client:
        listed = client.list()
    assert sorted(m.model for m in listed.models) == union


def test_merged_tags_with_routes_lists_routed_models_only(two_inventories, start_proxy):
    """With --route, /api/tags and /v1/models list only the routed models."""
    a, b = two_inventories
    proxy = start_proxy(["a=" + a.url, "b=" + b.url], "--route", "qwen3:8b=b")
    names = sorted(m["name"] for m in call(proxy.port, "GET", "/api/tags").json()["models"])
    assert names == ["qwen3:8b"]
    assert [m["id"] for m in call(proxy.port, "GET", "/v1/models").json()["data"]] == ["qwen3:8b"]


# ---------------------------------------------------------------------------------------------
# 10. /proxy-backend/<NAME>/
# ---------------------------------------------------------------------------------------------


def test_proxy_backend_prefix_goes_to_that_backend(two_inventories, start_proxy):
    """/proxy-backend/<NAME>/api/tags is that backend's own list; an unknown name is 404."""
    a, b = two_inventories
    proxy = start_proxy(["a=" + a.url, "b=" + b.url])
    for backend, fake, other in (("a", a, b), ("b", b, a)):
        before = len([r for r in other.received if r.path == "/api/tags"])
        answer = call(proxy.port, "GET", "/proxy-backend/%s/api/tags" % backend)
        assert answer.status == 200 and answer.backend == backend, answer
        assert sorted(m["name"] for m in answer.json()["models"]) == sorted(m.name for m in fake.models)
        assert [r for r in fake.received if r.path == "/api/tags"]
        assert len([r for r in other.received if r.path == "/api/tags"]) == before
    # a request for a model both have, pinned to b (the higher port, which the choice would not pick)
    answer = call(proxy.port, "POST", "/proxy-backend/b/api/chat", chat("pinned"))
    assert answer.status == 200 and answer.backend == "b", answer
    assert chat_texts(b) == ["pinned"] and chat_texts(a) == []
    unknown = call(proxy.port, "GET", "/proxy-backend/nosuch/api/tags")
    assert unknown.status == 404, unknown
    assert "nosuch" in unknown.json()["error"]


# ---------------------------------------------------------------------------------------------
# 11. routes
# ---------------------------------------------------------------------------------------------


def test_route_pins_model_to_named_backend(make_fake, start_proxy):
    """--route llama3.2=b: llama3.2 goes only to b although a (the lower port) has it too;
    an unrouted model still goes to a."""
    a, b = sorted_fakes(make_fake, 2)
    proxy = start_proxy(["a=" + a.url, "b=" + b.url], "--route", "llama3.2=b")
    answers = [call(proxy.port, "POST", "/api/chat", chat("routed %d" % i)) for i in range(3)]
    jobs = [Background(call, proxy.port, "POST", "/api/chat", chat("routed concurrently %d" % i, stream=True),
                       {"X-Fake-Delay-Ms": "50"}) for i in range(4)]
    answers += [job.result() for job in jobs]
    answers.append(call(proxy.port, "POST", "/api/chat", chat("routed by full name", model="llama3.2:latest")))
    for answer in answers:
        assert answer.status == 200 and answer.backend == "b", answer
    assert chat_texts(a) == []
    assert len(chat_texts(b)) == len(answers)
    other = call(proxy.port, "POST", "/api/chat", chat("not routed", model="qwen3:8b"))
    assert other.status == 200 and other.backend == "a", other


# ---------------------------------------------------------------------------------------------
# 12. retries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, flags, expected_status, retried",
    [
        (dict(status=500, error="runner crashed"), (), 200, True),
        (dict(status=503, error="server busy"), (), 200, True),
        # for ever: a pooled connection closed before the answer is first retried once on a new
        # connection to the same backend (it may just have been stale)
        (dict(close_before_response=True, times=0), (), 200, True),
        (dict(status=400, error="bad request from the fault"), (), 400, False),
        (dict(status=500, error="runner crashed"), ("--max-retries", "0"), 500, False),
    ],
    ids=["500-retried", "503-retried", "closed-retried", "400-returned", "500-max-retries-0"],
)
def test_retry_on_other_backend(make_fake, start_proxy, fault, flags, expected_status, retried):
    """A 5xx or a transport failure before the answer is retried on the other backend; a 4xx is
    returned as is; --max-retries 0 returns the failure."""
    a, b = sorted_fakes(make_fake, 2)
    proxy = start_proxy(["a=" + a.url, "b=" + b.url], *flags, scan_interval=0.2)
    wait_healthy(proxy, 2)
    injected = a.add_fault(Fault(path="/api/chat", **fault))
    answer = call(proxy.port, "POST", "/api/chat", chat("retry me"))
    assert injected.hits >= 1  # the lower port was tried first
    assert answer.status == expected_status, answer
    if retried:
        assert answer.backend == "b"
        assert answer.json()["message"]["content"] == TEXT
        assert chat_texts(b) == ["retry me"]
    else:
        assert answer.backend == "a"
        assert answer.json()["error"] == fault["error"]
        assert chat_texts(b) == []
    if fault.get("status", 0) >= 500:
        assert health_of(proxy)["a"] is True  # a 5xx answer does not make a backend unhealthy


def test_model_not_found_is_not_retried(make_fake, start_proxy):
    """A 404 for a model nobody lists comes back as is, from one backend only."""
    a, b = sorted_fakes(make_fake, 2)
    proxy = start_proxy(["a=" + a.url, "b=" + b.url])
    answer = call(proxy.port, "POST", "/api/chat", chat("who has it?", model="nosuch-model"))
    assert answer.status == 404, answer
    assert "not found" in answer.json()["error"]
    assert len(chats(a)) + len(chats(b)) == 1


# ---------------------------------------------------------------------------------------------
# 13. preload
# ---------------------------------------------------------------------------------------------


def test_preload_loads_model_where_it_is_listed(make_fake, start_proxy):
    """--preload llama3.2: the backend that lists it gets an empty generate (model, num_ctx,
    keep_alive) soon after start and again when it comes back; the other gets none."""
    has = make_fake(LLAMA + NOMIC)
    lacks = make_fake(QWEN)
    port = has.port
    proxy = start_proxy([has.url, lacks.url], "--preload", "llama3.2", "--keep-alive", "llama3.2=10m", scan_interval=0.2)
    wait_for(lambda: chats(has, "/api/generate"), what="the preload request")
    body = chats(has, "/api/generate")[0]
    assert body["model"] in ("llama3.2", "llama3.2:latest")
    assert set(body) <= {"model", "options", "keep_alive"}
    assert body.get("options") == {"num_ctx": 16384}  # min(training 131072, --max-context 16384)
    assert body.get("keep_alive") == "10m"
    wait_for(lambda: "llama3.2:latest" in has.loaded, what="the model loaded")
    wait_for(lambda: len(chats(lacks, "/api/tags")) >= 3, what="probe rounds on the other backend")
    assert chats(lacks, "/api/generate") == []
    assert len(chats(has, "/api/generate")) == 1

    stop_fake(has)
    wait_for(lambda: health_of(proxy)[name(has)] is False, what="the backend marked unhealthy")
    back = make_fake(LLAMA + NOMIC, port=port)
    wait_for(lambda: chats(back, "/api/generate"), what="the preload after the comeback")
    assert chats(back, "/api/generate")[0] == body
    assert chats(lacks, "/api/generate") == []


# ---------------------------------------------------------------------------------------------
# 14. health and the backend report
# ---------------------------------------------------------------------------------------------


def test_health_ok_degraded_down(make_fake, start_proxy):
    """/__proxy/health: ok with both, degraded with one stopped, 503 down with none; then requests get 503."""
    a, b = sorted_fakes(make_fake, 2)
    proxy = start_proxy([a.url, b.url], scan_interval=0.2)
    wait_healthy(proxy, 2)
    answer = call(proxy.port, "GET", "/__proxy/health")
    assert answer.status == 200 and answer.json() == {"status": "ok", "healthy_backends": 2}, answer
    stop_fake(a)
    wait_for(lambda: call(proxy.port, "GET", "/__proxy/health").json()["status"] == "degraded", what="degraded")
    answer = call(proxy.port, "GET", "/__proxy/health")
    assert answer.status == 200 and answer.json() == {"status": "degraded", "healthy_backends": 1}, answer
    answer = call(proxy.port, "POST", "/api/chat", chat("still served"))
    assert answer.status == 200 and answer.backend == name(b), answer
    stop_fake(b)
    wait_for(lambda: call(proxy.port, "GET", "/__proxy/health").status == 503, what="down")
    answer = call(proxy.port, "GET", "/__proxy/health")
    assert answer.json() == {"status": "down", "healthy_backends": 0}, answer
    answer = call(proxy.port, "POST", "/api/chat", chat("nobody home"))
    assert answer.status == 503, answer
    assert "no healthy backend" in answer.json()["error"]


def test_health_full_has_settings_without_secrets(make_fake, start_proxy):
    """/health: the same status plus context sizes and the effective settings, never the API key
    nor a backend password."""
    a, b = sorted_fakes(make_fake, 2)
    key = "sekrit-api-key-4711"
    password = "pw-not-to-be-shown"
    proxy = start_proxy(["a=http://user:%s@127.0.0.1:%d" % (password, a.port), "b=" + b.url],
                        "--api-key", key, "--max-concurrent", "3", "--route", "qwen3:8b=b", scan_interval=0.2)
    wait_healthy(proxy, 2)
    assert call(proxy.port, "GET", "/health").status == 401
    answer = call(proxy.port, "GET", "/health", headers={"Authorization": "Bearer " + key})
    assert answer.status == 200, answer
    obj = answer.json()
    assert obj["status"] == "ok" and obj["healthy_backends"] == 2
    assert obj["context_sizes"] == [2048, 4096, 8192, 16384, 32768]
    settings = obj["settings"]
    assert isinstance(settings, dict)
    assert settings["max_concurrent"] == 3 and settings["sticky"] is True
    assert key.encode() not in answer.body and password.encode() not in answer.body
    short = call(proxy.port, "GET", "/__proxy/health", headers={"x-api-key": key})
    assert short.json() == {"status": "ok", "healthy_backends": 2}


def test_backends_report(make_fake, start_proxy):
    """/__proxy/backends: name, url, healthy, in_flight, models, loaded, last_error, last_probe per backend."""
    a = make_fake(LLAMA + NOMIC)
    b = make_fake(QWEN)
    assert call(a.port, "POST", "/api/generate", {"model": "llama3.2", "options": {"num_ctx": 4096}}).status == 200
    proxy = start_proxy(["a=" + a.url, "b=" + b.url], scan_interval=0.2)
    wait_healthy(proxy, 2)

    def report() -> dict:
        answer = call(proxy.port, "GET", "/__proxy/backends")
        assert answer.status == 200, answer
        return {entry["name"]: entry for entry in answer.json()["backends"]}

    entries = wait_for(lambda: (lambda r: r if r["a"]["loaded"] else None)(report()), what="loaded model in the report")
    for key in ("name", "url", "healthy", "in_flight", "models", "loaded", "last_error", "last_probe"):
        assert key in entries["a"] and key in entries["b"], key
    assert entries["a"]["url"] == a.url and entries["b"]["url"] == b.url
    assert entries["a"]["healthy"] is True and entries["a"]["in_flight"] == 0
    assert entries["a"]["models"] == ["llama3.2:latest", "nomic-embed-text:latest"]
    assert entries["b"]["models"] == ["qwen3:8b"]
    assert entries["a"]["loaded"] == [{"model": "llama3.2:latest", "context_length": 4096}]
    assert entries["b"]["loaded"] == []
    assert entries["a"]["last_error"] is None
    assert isinstance(entries["a"]["last_probe"], str) and entries["a"]["last_probe"]

    fault = a.add_fault(Fault(path="/api/chat", pause_after=0))
    held = Background(call, proxy.port, "POST", "/api/chat", chat("in flight", stream=True))
    try:
        assert fault.gate.wait_reached(10)
        assert report()["a"]["in_flight"] == 1
    finally:
        fault.gate.release()
    assert held.result().status == 200
    assert report()["a"]["in_flight"] == 0

    stop_fake(b)
    entries = wait_for(lambda: (lambda r: r if not r["b"]["healthy"] else None)(report()), what="b unhealthy in the report")
    assert entries["b"]["last_error"]
    assert entries["a"]["healthy"] is True


def test_stream_waiting_in_the_queue_gets_its_head_then_an_inband_error_when_the_wait_runs_out(start_proxy):
    """--heartbeat covers the wait in the queue; a wait that runs out after the head went out ends
    the stream with one error line (never a silent, truncated success)."""
    a = FakeOllama(models=LLAMA).start()
    try:
        gate = a.gate()
        a.add_fault(Fault(path="/api/chat", delay_before_headers=30))
        proxy = start_proxy([a.url], "--max-concurrent", "1", heartbeat=0.1, queue_timeout=0.6)
        holder = threading.Thread(target=call, args=(proxy.port, "POST", "/api/chat", chat("hold the slot")), daemon=True)
        holder.start()
        a.wait_for_requests(1)
        answer = call(proxy.port, "POST", "/api/chat", chat("wait in line", stream=True))
        assert answer.status == 200 and answer.headers["content-type"] == "application/x-ndjson"
        lines = answer.lines()
        assert len(lines) == 1 and "queue-timeout" in lines[0]["error"]
        assert not any(r.json["messages"][-1]["content"] == "wait in line" for r in a.received if r.path == "/api/chat")
    finally:
        a.clear_faults()
        gate.release()
        a.stop()


# ---------------------------------------------------------------------------------------------
# 15. review regressions
# ---------------------------------------------------------------------------------------------


class RawUpstream:
    """A bare TCP server on 127.0.0.1: it reads each request (head, then a Content-Length body)
    and answers ``response`` as given, then closes; with ``response=None`` it accepts and never
    answers (a hung backend). ``close()`` stops it and closes every connection it holds."""

    def __init__(self, response=None) -> None:
        self.response = response
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.held: list = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(5)
            if self.response is None:
                self.held.append(conn)
                continue
            with conn:
                try:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    head, _, rest = data.partition(b"\r\n\r\n")
                    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                    while len(rest) < (int(lengths[0]) if lengths else 0):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        rest += chunk
                    conn.sendall(self.response)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_probe_older_than_a_transport_failure_does_not_revive_the_backend(make_fake, start_proxy):
    """A good probe of a that started before a forwarded request to a failed does not mark a healthy again."""
    a = make_fake()
    hole = RawUpstream()  # never answers: every probe round lasts --probe-timeout
    try:
        proxy = start_proxy(["a=" + a.url, "hole=" + hole.url], "--scan-interval", "0.2", "--probe-timeout", "1.5",
                            "--max-retries", "0")
        wait_for(lambda: health_of(proxy)["a"] is True, what="a healthy")
        last = backend_state(proxy, "a", "last_probe")
        wait_for(lambda: backend_state(proxy, "a", "last_probe") != last, what="the next round delivered")
        time.sleep(0.5)  # the next round has started and already probed a (fine); it is delivered ~1.2 s later
        a.refuse()
        assert call(proxy.port, "POST", "/api/chat", chat("to a dead backend")).status in (502, 503)
        assert health_of(proxy)["a"] is False
        deadline = time.monotonic() + 2.5  # past the delivery of the round that probed a before it died
        while time.monotonic() < deadline:
            assert health_of(proxy)["a"] is False, "a stale probe round revived a"
            time.sleep(0.02)
    finally:
        hole.close()


def test_scanner_survives_a_port_answering_deeply_nested_json(make_fake, start_proxy):
    """A scanned port answering 100000-deep nested JSON fails its own probe only: the scanner keeps probing the others."""
    a = make_fake()
    body = b'{"models": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    bad = RawUpstream(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n" % len(body) + body)
    try:
        proxy = start_proxy([a.url], "--scan", "127.0.0.1:%d-%d" % (bad.port, bad.port), "--scan-interval", "0.2",
                            "--probe-timeout", "1")
        scanner = proxy.app.fleet.scanner.thread
        wait_for(lambda: proxy.call(lambda: proxy.app.fleet.first_round_done) or not scanner.is_alive(),
                 what="the first probe round delivered")
        gc.collect()  # the probes of a dead scanner are finalised here, not while pytest renders the failure
        assert scanner.is_alive(), "the scanner thread died: health is no longer probed"
        wait_for(lambda: health_of(proxy).get(name(a)) is True, what="a healthy")
        a.refuse()
        wait_for(lambda: health_of(proxy).get(name(a)) is False, what="a unhealthy: probes still running")
        assert scanner.is_alive()
        assert list(health_of(proxy)) == [name(a)]  # the bad port was never taken for a backend
    finally:
        bad.close()


def test_unknown_proxy_backend_name_needs_the_api_key(make_fake, start_proxy):
    """/proxy-backend/<unknown>/ without the API key is 401, not a 404 listing the backends."""
    a, b = make_fake(), make_fake()
    proxy = start_proxy(["gpu-box-1=" + a.url, "secret-lab-node=" + b.url], "--api-key", "s3cret")
    answer = call(proxy.port, "GET", "/proxy-backend/nope/api/tags")
    assert answer.status == 401, answer
    assert b"secret-lab-node" not in answer.body and b"gpu-box-1" not in answer.body


def test_preload_with_num_ctx_and_context_mode_off_needs_no_reload(make_fake, start_proxy):
    """--context-mode off with --num-ctx llama3.2=8192: --preload loads it with 8192, so the first request does not reload it."""
    a = make_fake(LLAMA)
    proxy = start_proxy([a.url], "--context-mode", "off", "--num-ctx", "llama3.2=8192", "--preload", "llama3.2",
                        "--scan-interval", "0.5")
    wait_for(lambda: "llama3.2:latest" in a.loaded, what="the preload")
    answer = call(proxy.port, "POST", "/api/chat", chat("after the preload"))
    assert answer.status == 200, answer
    assert a.loaded["llama3.2:latest"]["num_ctx"] == 8192
    assert a.reload_count("llama3.2") == 0, a.loads


def test_queued_request_gets_503_at_shutdown_and_is_never_sent(make_fake, start_proxy):
    """At shutdown a queued request gets 503 at once and is not sent upstream; the one in flight completes."""
    a = make_fake()
    proxy = start_proxy([a.url], "--max-concurrent", "1")
    a.add_fault(Fault(path="/api/chat", delay_before_headers=0.4))
    held = Background(call, proxy.port, "POST", "/api/chat", chat("held"))
    wait_for(lambda: chat_texts(a) == ["held"], what="held upstream")
    queued = Background(call, proxy.port, "POST", "/api/chat", chat("queued"))
    wait_for(lambda: queue_depth(proxy) == 1, what="queued")
    proxy.loop.call_soon_threadsafe(proxy.app.request_shutdown)
    answer = queued.result()
    assert answer.status == 503 and "shutting down" in answer.json()["error"], answer
    assert held.result().status == 200
    assert chat_texts(a) == ["held"]


def test_alias_on_api_copy_replaces_the_source(make_fake, start_proxy):
    """--alias gpt-4o=llama3.2: /api/copy with source gpt-4o reaches Ollama with source llama3.2."""
    a, b = make_fake(), make_fake()
    proxy = start_proxy([a.url, b.url], "--alias", "gpt-4o=llama3.2")
    answer = call(proxy.port, "POST", "/api/copy", {"source": "gpt-4o", "destination": "mycopy"})
    assert answer.status == 200, answer
    sent = [r.json for f in (a, b) for r in list(f.received) if r.path == "/api/copy"]
    assert sent == [{"source": "llama3.2", "destination": "mycopy"}]


def test_merged_tags_with_routes_only_from_the_routed_backend(make_fake, start_proxy):
    """With --route qwen3:8b=b, a qwen3:8b that only a lists is not in /api/tags nor /v1/models."""
    a, b = make_fake(QWEN), make_fake(LLAMA)
    proxy = start_proxy(["a=" + a.url, "b=" + b.url], "--route", "qwen3:8b=b", "--route", "llama3.2=b")
    assert [m["name"] for m in call(proxy.port, "GET", "/api/tags").json()["models"]] == ["llama3.2:latest"]
    assert [m["id"] for m in call(proxy.port, "GET", "/v1/models").json()["data"]] == ["llama3.2:latest"]


def test_alias_rename_of_a_content_length_ndjson_answer(start_proxy):
    """An NDJSON answer framed by Content-Length, renamed to an alias of another length, arrives whole and renamed."""
    lines = b"".join(b'{"model":"llama3.2","message":{"role":"assistant","content":"t%d "},"done":false}\n' % i
                     for i in range(3))
    lines += b'{"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"}\n'
    upstream = RawUpstream(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: %d\r\n"
                           b"Connection: close\r\n\r\n" % len(lines) + lines)
    try:
        proxy = start_proxy([upstream.url], "--alias", "gpt-4o=llama3.2", "--context-mode", "off")
        answer = call(proxy.port, "POST", "/api/chat", chat("hi", model="gpt-4o", stream=True))
        assert answer.status == 200, answer
        got = answer.lines()
        assert [x["model"] for x in got] == ["gpt-4o"] * 4 and got[-1]["done"] is True
        assert "".join(x["message"]["content"] for x in got) == "t0 t1 t2 "
    finally:
        upstream.close()


def test_client_error_is_not_the_backends_last_error(make_fake, start_proxy):
    """A 400 the proxy gives for the client's own input (--no-chunking, input too large) leaves last_error None."""
    a = make_fake(NOMIC)
    proxy = start_proxy(["a=" + a.url], "--no-chunking", "--max-embed-chars", "100")
    answer = call(proxy.port, "POST", "/api/embed", {"model": "nomic-embed-text", "input": "word " * 100})
    assert answer.status == 400, answer
    assert call(proxy.port, "GET", "/__proxy/backends").json()["backends"][0]["last_error"] is None


def test_queued_request_gets_503_when_its_only_backend_becomes_unhealthy(make_fake, start_proxy):
    """A queued request whose only backend turns unhealthy gets its 503 at once, not after --queue-timeout."""
    a = make_fake()
    proxy = start_proxy(["a=" + a.url], "--max-concurrent", "1", "--queue-timeout", "20", "--scan-interval", "0.2")
    wait_healthy(proxy, 1)
    fault = a.add_fault(Fault(path="/api/chat", pause_after=0))
    held = Background(call, proxy.port, "POST", "/api/chat", chat("held", stream=True))
    try:
        assert fault.gate.wait_reached(10)
        queued = Background(call, proxy.port, "POST", "/api/chat", chat("queued"))
        wait_for(lambda: queue_depth(proxy) == 1, what="queued")
        a.refuse()
        wait_for(lambda: health_of(proxy)["a"] is False, what="a unhealthy")
        started = time.monotonic()
        answer = queued.result()
        assert time.monotonic() - started < 10.0, "waited for --queue-timeout although no backend can serve it"
        assert answer.status == 503 and "no healthy backend" in answer.json()["error"], answer
    finally:
        fault.gate.release()
    assert held.result().status == 200
    assert "queued" not in chat_texts(a)


def test_create_from_goes_where_the_base_model_is(make_fake, start_proxy):
    """/api/create of a new model "from" qwen3:8b goes to the backend that has qwen3:8b, not to the first one."""
    a, b = make_fake(LLAMA), make_fake(QWEN)
    proxy = start_proxy(["a=" + a.url, "b=" + b.url], "--scan-interval", "0.2")
    wait_healthy(proxy, 2)
    answer = call(proxy.port, "POST", "/api/create", {"model": "my-qwen", "from": "qwen3:8b"})
    assert answer.status == 200 and answer.backend == "b", answer
    assert not [r for r in a.received if r.path == "/api/create"]


def test_delete_that_failed_is_not_replayed_on_another_backend(make_fake, start_proxy):
    """A DELETE /api/delete that got a 500 from a is returned as is, not replayed on b (which keeps its copy)."""
    a, b = sorted_fakes(make_fake, 2)
    proxy = start_proxy(["a=" + a.url, "b=" + b.url])
    a.add_fault(Fault(path="/api/delete", status=500, error="boom"))
    answer = call(proxy.port, "DELETE", "/api/delete", {"model": "llama3.2"})
    assert answer.status == 500 and answer.backend == "a", answer
    assert not [r for r in b.received if r.path == "/api/delete"]
    assert any(m.name == "llama3.2:latest" for m in b.models)
