"""DNS discovery, ``--discover-dns NAME:PORT`` (SPEC §6 and its §3 row): the configuration, the lookups,
and end to end, the real proxy in front of fake Ollama servers found through a name.

``localhost`` is resolved for real: every address it has here gets a fake on one common port (on this
machine ``getent ahosts localhost`` gives 127.0.0.1 only, so the test has one backend there; where it
also gives ::1 it has two).  A name whose addresses change is served by the resolver seam,
``fleet.dns.resolve``: a function of (name, port) that the test sets before the proxy starts, and whose
answer it changes between probe rounds (127.0.0.1, 127.0.0.2 and ::1, all loopback, each with a fake).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading

import pytest
from conftest import ProxyThread, make_config
from fake_ollama import DEFAULT_MODELS, Fault, FakeOllama, copy_model
from test_many_backends import call, chat, chat_texts, stop_fake, wait_for

import ollama_proxy as op

PROXY = op.__file__


def cfg(argv, env=None) -> op.Config:
    return op.build_config(argv, env or {})


# -- 1. configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("ollama-headless:11434", ("ollama-headless", 11434)),
        ("  ollama-headless.ollama.svc.cluster.local:11434 ", ("ollama-headless.ollama.svc.cluster.local", 11434)),
        ("gpu_pool.lan:1", ("gpu_pool.lan", 1)),
        ("localhost:65535", ("localhost", 65535)),
        ("10.0.0.1:11434", ("10.0.0.1", 11434)),
        ("[fd00::3]:11434", ("fd00::3", 11434)),
    ],
)
def test_parse_discover_dns_accepts(value, expected):
    assert op.parse_discover_dns(value) == expected


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("ollama-headless", "expected NAME:PORT"),
        ("ollama-headless:", "expected NAME:PORT"),
        (":11434", "expected NAME:PORT"),
        ("fd00::3", "expected NAME:PORT"),  # an IPv6 literal needs brackets to have a port
        ("http://ollama-headless:11434", "expected NAME:PORT"),
        ("ollama-headless:11434/api", "expected NAME:PORT"),
        ("ollama-headless:abc", "'abc' is not a number"),
        ("ollama-headless:0", "must be at least 1"),
        ("ollama-headless:70000", "out of range"),
        ("0.0.0.0:11434", "not a name to resolve"),
        ("[::]:11434", "not a name to resolve"),
        ("ollama headless:11434", "not a DNS name"),
        ("ollama@x:11434", "not a DNS name"),
    ],
)
def test_parse_discover_dns_refuses(value, fragment):
    with pytest.raises(op.ConfigError) as info:
        op.parse_discover_dns(value)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_discover_dns_flags_and_variable():
    """Repeatable flag, or the comma list of PROXY_DISCOVER_DNS; the flag wins; no default backend then."""
    both = cfg(["--discover-dns", "a.svc:11434", "--discover-dns", "b.svc:11500"])
    assert both.discover_dns == (("a.svc", 11434), ("b.svc", 11500))
    assert cfg([], {"PROXY_DISCOVER_DNS": " a.svc:11434 , b.svc:11500 "}).discover_dns == both.discover_dns
    assert cfg(["--discover-dns", "c.svc:1"], {"PROXY_DISCOVER_DNS": "a.svc:11434"}).discover_dns == (("c.svc", 1),)
    # like --scan: with discovery alone there is no default backend, even with OLLAMA_HOST / OLLAMA_BASE_URL set
    env = {"OLLAMA_HOST": "10.0.0.1:11434", "OLLAMA_BASE_URL": "http://b:1", "PROXY_DISCOVER_DNS": "a.svc:11434"}
    assert cfg([], env).backends == ()
    assert [b.name for b in cfg(["--discover-dns", "a.svc:11434", "--backend", "gpu=http://x:1"]).backends] == ["gpu"]
    assert both.discovering and cfg(["--scan", "127.0.0.1:1-2"]).discovering and not cfg([]).discovering
    assert cfg([]).discover_dns == ()


@pytest.mark.parametrize(
    "argv, env, fragment",
    [
        (["--discover-dns", "a.svc:11434", "--scan-interval", "0"], {}, "--discover-dns needs --scan-interval above 0"),
        ([], {"PROXY_DISCOVER_DNS": "a.svc:11434", "SCAN_INTERVAL_SECONDS": "0"}, "--scan-interval above 0"),
        (["--discover-dns", "a.svc:11434", "--discover-dns", "A.svc:11434"], {}, "given twice"),
        ([], {"PROXY_DISCOVER_DNS": "a.svc"}, "expected NAME:PORT"),
    ],
)
def test_discover_dns_config_refused(argv, env, fragment):
    with pytest.raises(op.ConfigError, match=fragment):
        cfg(argv, env)


@pytest.mark.parametrize("value, message", [("ollama-headless", "expected NAME:PORT"), ("ollama-headless:99999", "out of range")])
def test_discover_dns_bad_value_exits_2_with_one_line(value, message):
    """From the command line: exit status 2, one line naming the problem, no traceback, no socket opened."""
    proc = subprocess.run([sys.executable, PROXY, "--port", "0", "--discover-dns", value], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("usage:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_help_lists_discover_dns():
    out = subprocess.run([sys.executable, PROXY, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "--discover-dns NAME:PORT" in out and "$PROXY_DISCOVER_DNS" in out


# -- 2. names, lookups, targets ------------------------------------------------------------------


def test_backend_names():
    assert op.dns_backend_name("ollama-headless", "10.1.2.3", 11434) == "ollama-headless@10.1.2.3:11434"
    assert op.dns_backend_name("ollama-headless", "fd00::3", 11434) == "ollama-headless@[fd00::3]:11434"


def test_resolve_addresses_of_localhost():
    """The real resolver: each address once, IPv4 and IPv6 as getaddrinfo gives them."""
    expected = []
    for info in socket.getaddrinfo("localhost", 11434, type=socket.SOCK_STREAM):
        if info[4][0] not in expected:
            expected.append(info[4][0])
    assert op.resolve_addresses("localhost", 11434) == expected
    assert "127.0.0.1" in expected


def test_resolve_addresses_tells_no_address_from_a_failed_lookup(monkeypatch):
    """NXDOMAIN and 'no address' are an answer (no backends); EAI_AGAIN (no DNS server) is an error."""
    def raising(errno):
        def fake(*args, **kwargs):
            raise socket.gaierror(errno, "from the test")
        return fake

    monkeypatch.setattr(socket, "getaddrinfo", raising(socket.EAI_NONAME))
    assert op.resolve_addresses("gone.svc", 11434) == []
    if hasattr(socket, "EAI_NODATA"):
        monkeypatch.setattr(socket, "getaddrinfo", raising(socket.EAI_NODATA))
        assert op.resolve_addresses("gone.svc", 11434) == []
    monkeypatch.setattr(socket, "getaddrinfo", raising(socket.EAI_AGAIN))
    with pytest.raises(OSError):
        op.resolve_addresses("flaky.svc", 11434)
    both = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 11434)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::5", 11434, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 11434))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: both)
    assert op.resolve_addresses("pods.svc", 11434) == ["10.0.0.5", "fd00::5"]


class Answers:
    """A resolver for the seam: ``answer`` is a list of addresses or an exception; calls are counted."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, name: str, port: int):
        with self.lock:
            self.calls += 1
            answer = self.answer
        if isinstance(answer, BaseException):
            raise answer
        return list(answer)

    def set(self, answer) -> None:
        with self.lock:
            self.answer = answer

    def rounds(self) -> int:
        with self.lock:
            return self.calls


def dns_messages(caplog) -> list:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("DNS name")]


def test_discovery_keeps_the_last_answer_on_a_failed_lookup_and_logs_each_change_once(caplog):
    caplog.set_level(logging.INFO, logger="ollama_proxy")
    dns = op.DnsDiscovery([("pods.svc", 11434)])
    dns.resolve = answers = Answers(["10.0.0.5", "fd00::5"])
    names = lambda: [s.name for s in dns.targets()]  # noqa: E731
    assert names() == ["pods.svc@10.0.0.5:11434", "pods.svc@[fd00::5]:11434"]
    spec = dns.targets()[0]
    assert (spec.scheme, spec.host, spec.port, spec.url) == ("http", "10.0.0.5", 11434, "http://10.0.0.5:11434")
    answers.set(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    for _ in range(3):
        assert names() == ["pods.svc@10.0.0.5:11434", "pods.svc@[fd00::5]:11434"]
    answers.set([])
    for _ in range(3):
        assert names() == []
    answers.set(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    assert names() == []  # the last answer was "no address": nothing to keep
    answers.set(["10.0.0.6"])
    assert names() == ["pods.svc@10.0.0.6:11434"]
    assert dns_messages(caplog) == [
        ("INFO", "DNS name pods.svc:11434 resolves to 10.0.0.5, fd00::5"),
        ("WARNING", "DNS name pods.svc:11434: lookup failed (Temporary failure in name resolution); keeping its last 2 address(es)"),
        ("WARNING", "DNS name pods.svc:11434 resolves to no address (no ready pod behind the Service?); its backends are forgotten"),
        ("WARNING", "DNS name pods.svc:11434: lookup failed (Temporary failure in name resolution); no backends from it yet"),
        ("INFO", "DNS name pods.svc:11434 resolves to 10.0.0.6"),
    ]


def test_round_targets_skip_known_addresses_and_the_proxy_itself():
    config = cfg(["--backend", "gpu=http://10.0.0.5:11434", "--port", "11435"])
    static = op.scan_targets(config, 11435)
    found = [op.BackendSpec(name=op.dns_backend_name(n, a, p), scheme="http", host=a, port=p) for n, a, p in [
        ("a.svc", "10.0.0.5", 11434),  # a configured backend's address: it stays that backend
        ("a.svc", "10.0.0.6", 11434),
        ("b.svc", "10.0.0.6", 11434),  # found under two names: the first keeps it
        ("b.svc", "127.0.0.1", 11435),  # the proxy's own listening address: it would loop
        ("b.svc", "fd00::7", 11434),
    ]]
    assert [t.name for t in op.round_targets(static, found, "0.0.0.0", 11435)] == ["gpu", "a.svc@10.0.0.6:11434", "b.svc@[fd00::7]:11434"]


# -- 3. end to end ---------------------------------------------------------------------------------


def fakes_on(addresses: list) -> list:
    """A started fake on each address, all on one port (what a name's addresses share)."""
    for _ in range(50):
        first = FakeOllama(host=addresses[0]).start()
        made = [first]
        try:
            for address in addresses[1:]:
                made.append(FakeOllama(host=address, port=first.port).start())
            return made
        except OSError:  # that port is taken on another address: another one
            for fake in made:
                stop_fake(fake)
    raise RuntimeError("no port free on all of %s" % addresses)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def listed(proxy) -> dict:
    answer = call(proxy.port, "GET", "/__proxy/backends")
    assert answer.status == 200, answer
    return {b["name"]: b for b in answer.json()["backends"]}


def start_discovering(names: list, resolver=None) -> ProxyThread:
    argv = ["--scan-interval", "0.2"] + [a for n in names for a in ("--discover-dns", n)]
    proxy = ProxyThread(make_config([], *argv, shutdown_grace=2.0))
    if resolver is not None:
        proxy.app.fleet.dns.resolve = resolver  # the seam: set before the scanner thread starts
    return proxy.start()


@pytest.fixture
def cleanup():
    things: list = []
    yield things
    for thing in reversed(things):
        thing.stop() if isinstance(thing, ProxyThread) else stop_fake(thing)


def test_localhost_every_address_is_a_backend(cleanup):
    addresses = op.resolve_addresses("localhost", 11434)
    fakes = fakes_on(addresses)
    cleanup.extend(fakes)
    port = fakes[0].port
    proxy = start_discovering(["localhost:%d" % port])
    cleanup.append(proxy)
    expected = {op.dns_backend_name("localhost", a, port) for a in addresses}
    wait_for(lambda: (lambda seen: set(seen) == expected and all(b["healthy"] for b in seen.values()))(listed(proxy)),
             what="every address of localhost discovered")
    seen = listed(proxy)
    for address in addresses:
        entry = seen[op.dns_backend_name("localhost", address, port)]
        assert entry["discovered"] is True and entry["url"] == "http://%s:%d" % ("[%s]" % address if ":" in address else address, port)
        assert "llama3.2:latest" in entry["models"]
    for i in range(4):
        answer = call(proxy.port, "POST", "/api/chat", chat("through localhost %d" % i))
        assert answer.status == 200 and answer.backend in expected, answer
    assert sum(len(chat_texts(f)) for f in fakes) == 4
    assert call(proxy.port, "GET", "/__proxy/health").json() == {"status": "ok", "healthy_backends": len(addresses)}


def test_a_name_whose_addresses_change(cleanup, caplog):
    """Addresses come, go (an in-flight request on a vanished one finishes), survive a failed lookup,
    all go with NXDOMAIN (503, health down), and come back."""
    caplog.set_level(logging.INFO, logger="ollama_proxy")
    third = "::1" if ipv6_loopback() else "127.0.0.3"
    a, b, c = fakes_on(["127.0.0.1", "127.0.0.2", third])
    cleanup.extend([a, b, c])
    port = a.port
    dns_name = "ollama.test"
    key = lambda fake: op.dns_backend_name(dns_name, fake.host, port)  # noqa: E731
    answers = Answers(["127.0.0.1", "127.0.0.2"])
    proxy = start_discovering(["%s:%d" % (dns_name, port)], answers)
    cleanup.append(proxy)

    def backends_are(*fakes) -> bool:
        seen = listed(proxy)
        return set(seen) == {key(f) for f in fakes} and all(e["healthy"] for e in seen.values())

    wait_for(lambda: backends_are(a, b), what="both first addresses discovered")
    for i in range(4):
        answer = call(proxy.port, "POST", "/api/chat", chat("first %d" % i))
        assert answer.status == 200 and answer.backend in (key(a), key(b)), answer

    # A request held in flight on a (the first in the list: ties go to the earlier), then a leaves DNS and c joins.
    held_fault = a.add_fault(Fault(path="/api/chat", pause_after=0))
    done: list = []
    holder = threading.Thread(target=lambda: done.append(call(proxy.port, "POST", "/api/chat", chat("held"))), daemon=True)
    holder.start()
    assert held_fault.gate.wait_reached(10)
    answers.set(["127.0.0.2", third])
    wait_for(lambda: backends_are(b, c), what="a forgotten, c discovered")
    assert any("backend %s forgotten: its DNS name no longer resolves to it" % key(a) == r.getMessage() for r in caplog.records)
    held_fault.gate.release()
    holder.join(30)
    assert done and done[0].status == 200 and done[0].backend == key(a), done  # the request in flight finished
    before = len(chat_texts(a))
    served = set()
    for i in range(6):
        answer = call(proxy.port, "POST", "/api/chat", chat("second %d" % i, history=[{"role": "system", "content": str(i)}]))
        assert answer.status == 200, answer
        served.add(answer.backend)
    assert served <= {key(b), key(c)} and len(chat_texts(a)) == before

    # A failed lookup (no DNS server answering) keeps the last answer: nothing is forgotten, one warning.
    answers.set(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    start = answers.rounds()
    wait_for(lambda: answers.rounds() >= start + 4, what="four rounds with a failing lookup")
    assert backends_are(b, c)
    assert call(proxy.port, "POST", "/api/chat", chat("during the DNS trouble")).status == 200
    failed = [m for level, m in dns_messages(caplog) if "lookup failed" in m]
    assert failed == ["DNS name %s:%d: lookup failed (Temporary failure in name resolution); keeping its last 2 address(es)" % (dns_name, port)]

    # NXDOMAIN (a headless Service with no ready pod): no backends at all.
    answers.set([])
    wait_for(lambda: listed(proxy) == {}, what="every backend forgotten")
    answer = call(proxy.port, "POST", "/api/chat", chat("nobody"))
    assert answer.status == 503 and "retry-after" in answer.headers, answer
    assert answer.json()["error"] == "no healthy backend: none found yet at the addresses of %s:%d" % (dns_name, port)
    health = call(proxy.port, "GET", "/__proxy/health")
    assert health.status == 503 and health.json() == {"status": "down", "healthy_backends": 0}

    # The pods come back.
    answers.set([third])
    wait_for(lambda: backends_are(c), what="c discovered again")
    answer = call(proxy.port, "POST", "/api/chat", chat("back again"))
    assert answer.status == 200 and answer.backend == key(c), answer


def test_the_lists_are_merged_over_the_discovered_backends(cleanup):
    """/api/tags through a proxy that only discovers: the union of what every address has."""
    extra = copy_model(DEFAULT_MODELS[0], name="only-on-the-second:latest", digest="ab" * 32)
    for _ in range(50):
        first = FakeOllama(host="127.0.0.1").start()
        try:
            second = FakeOllama(models=DEFAULT_MODELS + [extra], host="127.0.0.2", port=first.port).start()
            break
        except OSError:
            stop_fake(first)
    cleanup.extend([first, second])
    proxy = start_discovering(["ollama.test:%d" % first.port], Answers(["127.0.0.1", "127.0.0.2"]))
    cleanup.append(proxy)
    wait_for(lambda: len(listed(proxy)) == 2 and all(e["healthy"] for e in listed(proxy).values()), what="both discovered")
    names = {m["name"] for m in call(proxy.port, "GET", "/api/tags").json()["models"]}
    assert "only-on-the-second:latest" in names and "llama3.2:latest" in names
