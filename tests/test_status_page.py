"""The status page (SPEC §8 revision 2): GET /__proxy/status (JSON) and GET /__proxy/ (one
self-contained HTML page), the bounded ring of the last requests, the per-minute series, Basic
authentication under --api-key.

First the pure parts, table-tested (what counts as a failed request, the Basic header, the
per-minute bucketing, a backend's verdict, one ring entry as JSON, the ring's bounds); then the real
proxy in front of fake Ollama servers (tests/fake_ollama.py): the JSON's shape after real traffic,
the ring bounded at 100, Basic authentication; then the page in a real headless browser (Debian's
``chromium``, installed by .ci/run): it renders the backends, a loaded model and the recent requests,
and asks no host but the proxy.  SAVE_SCREENSHOT=1 writes the screenshot the README shows to
docs/status-page.png.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from typing import Any, Dict, List

import pytest
from fake_ollama import Fault, FakeOllama
from test_many_backends import call, chat, stop_fake, wait_for

import ollama_proxy as op

LATEST = "llama3.2:latest"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def basic(password: str, user: str = "me") -> Dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}


def status_of(proxy, headers=None) -> Dict[str, Any]:
    answer = call(proxy.port, "GET", "/__proxy/status", headers=headers)
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"].startswith("application/json")
    return json.loads(answer.body)


@pytest.fixture
def fakes():
    """fakes(n) -> n fake Ollama servers, stopped at teardown."""
    made: List[FakeOllama] = []

    def make(n: int) -> List[FakeOllama]:
        new = [FakeOllama().start() for _ in range(n)]
        made.extend(new)
        return new

    yield make
    for fake in made:
        stop_fake(fake)


# ---------------------------------------------------------------------------------------------
# 1. the pure parts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, error, failed",
    [
        (200, None, False), (404, "model not found", False), (400, "bad", False), (499, "client closed the connection", False),
        (500, "boom", True), (502, "unreachable", True), (503, None, True), (0, None, True),
        (200, "the stream broke", True),  # an error after a good head
    ],
)
def test_failed_request(status, error, failed):
    assert op.is_failed_request(status, error) is failed


@pytest.mark.parametrize(
    "header, password",
    [
        (b"Basic " + base64.b64encode(b"anything:s3cret"), b"s3cret"),
        (b"basic " + base64.b64encode(b":s3cret"), b"s3cret"),  # scheme case-insensitive, empty user
        (b"Basic " + base64.b64encode(b"u:pa:ss"), b"pa:ss"),  # the password may hold a colon
        (b"Basic " + base64.b64encode(b"u:"), b""),
        (b"Basic " + base64.b64encode(b"nocolon"), None),
        (b"Basic not*base64", None),
        (b"Bearer s3cret", None),
        (b"Basic", None),
        (b"", None),
    ],
)
def test_basic_password(header, password):
    assert op.basic_password(header) == password


def bucket(minute: int, requests: int, failed: int, tokens: int, queue: int = 0, backends=None) -> list:
    return [minute, requests, failed, tokens, queue, dict(backends or {})]


@pytest.mark.parametrize(
    "buckets, now, expected",
    [
        # nothing yet: 15 minutes of zeros
        ([], 100, [(0, 0, 0, 0)] * 15),
        # the current minute is the last one; a gap is zeros
        ([bucket(98, 3, 1, 50), bucket(100, 2, 0, 10, 4)], 100, [(0, 0, 0, 0)] * 12 + [(3, 1, 50, 0), (0, 0, 0, 0), (2, 0, 10, 4)]),
        # older than 15 minutes is left out; the oldest shown is now - 14
        ([bucket(85, 9, 9, 9), bucket(86, 1, 0, 0)], 100, [(1, 0, 0, 0)] + [(0, 0, 0, 0)] * 14),
        # a minute with no request since (the page is open, nothing happens) has passed: zeros after it
        ([bucket(90, 5, 0, 0)], 104, [(5, 0, 0, 0)] + [(0, 0, 0, 0)] * 14),
        ([bucket(90, 5, 0, 0)], 105, [(0, 0, 0, 0)] * 15),
    ],
)
def test_minute_series(buckets, now, expected):
    series = op.minute_series(buckets, now, 1000.0)
    assert [(r["requests"], r["failed"], r["tokens"], r["queue_max"]) for r in series] == expected
    assert [r["start"] for r in series] == [1000.0 + 60 * m for m in range(now - 14, now + 1)]


def test_minute_series_by_backend():
    series = op.minute_series([bucket(7, 3, 1, 20, 0, {"b": [1, 1, 0], "a": [2, 0, 20]})], 7, 0.0, minutes=2)
    assert series[0]["backends"] == {}
    assert series[1]["backends"] == {"a": {"requests": 2, "failed": 0, "tokens": 20}, "b": {"requests": 1, "failed": 1, "tokens": 0}}
    assert list(series[1]["backends"]) == ["a", "b"]


REPORT = {"name": "a", "healthy": True, "probed": True, "ejected": False, "trial_in_progress": False, "consecutive_failures": 0,
          "last_request_failure": None, "last_error": None, "cool_off_seconds": None, "ejected_until": None}


@pytest.mark.parametrize(
    "changes, state, why",
    [
        ({}, "healthy", ""),
        ({"consecutive_failures": 2, "last_request_failure": "status 500"}, "failing", "2 failed requests in a row (last: status 500)"),
        ({"healthy": False, "last_error": "connection refused"}, "down", "connection refused"),
        ({"healthy": False, "probed": False}, "down", "not probed yet"),
        ({"healthy": False}, "down", "not answering its probes"),
        ({"ejected": True, "consecutive_failures": 3, "last_request_failure": "status 500", "cool_off_seconds": 10.0,
          "ejected_until": "2026-01-01T00:00:10.000Z"}, "ejected", "3 failed requests in a row (last: status 500), cool-off 10.0s until 2026-01-01T00:00:10.000Z"),
        ({"ejected": True, "trial_in_progress": True, "consecutive_failures": 3, "last_request_failure": "timeout"}, "ejected",
         "trial request in flight after 3 failed requests (last: timeout)"),
        # ejected wins over a failed probe: it is what keeps the traffic away
        ({"ejected": True, "healthy": False, "consecutive_failures": 3}, "ejected", None),
    ],
)
def test_backend_state(changes, state, why):
    got_state, got_why = op.backend_state(dict(REPORT, **changes))
    assert got_state == state
    if why is not None:
        assert got_why == why


def entry(finished: float = 130.0, **fields) -> tuple:
    """A ring entry as log_access makes it (RECENT_FIELDS), with defaults."""
    values = dict(finished=finished, duration=0.5, method=b"POST", client_path="/v1/chat/completions", path="/api/chat", model="llama3.2",
                  client_model="", rename=None, backend="a", status=200, rate=(40, 80.0), changes=(), truncated=0, error=None)
    values.update(fields)
    assert set(values) == set(op.RECENT_FIELDS)
    return tuple(values[name] for name in op.RECENT_FIELDS)


def test_recent_request_json():
    change = op.Change("num_ctx", "num_ctx", None, 8192, "auto: the prompt needs 5000")
    got = op.recent_request_json(entry(changes=[change], rename=(b"llama3.2", b"gpt-4o"), truncated=8192), 1_700_000_000.0)
    assert got == {
        "time": "2023-11-14T22:15:29.500Z",  # finished - duration, on the wall clock
        "method": "POST", "path": "/v1/chat/completions", "upstream_path": "/api/chat", "model": "llama3.2", "model_asked": "gpt-4o",
        "backend": "a", "status": 200, "duration_s": 0.5, "eval_count": 40, "tokens_per_s": 80.0,
        "changes": [{"modifier": "num_ctx", "what": "num_ctx", "old": None, "new": 8192, "reason": "auto: the prompt needs 5000"}],
        "truncated_at": 8192, "error": None, "failed": False,
    }
    bare = op.recent_request_json(entry(rate=None, backend=None, status=401, error="missing or wrong API key", model=None, client_model="x"), 0.0)
    assert (bare["eval_count"], bare["tokens_per_s"], bare["backend"], bare["model_asked"], bare["failed"]) == (None, None, None, "x", False)
    json.dumps(got)


def test_recent_is_bounded_and_buckets_by_minute():
    recent = op.Recent()
    for i in range(250):
        recent.add(entry(finished=60.0 * (i // 10) + 1, client_path="/r%d" % i, status=500 if i % 10 == 0 else 200, backend="ab"[i % 2]))
    assert len(recent.ring) == op.RECENT_REQUESTS == 100
    assert recent.ring[0][3] == "/r150" and recent.ring[-1][3] == "/r249"  # the newest 100, oldest first
    assert len(recent.minutes) == op.SERIES_MINUTES + 1  # 25 minutes of traffic, 16 kept
    last = recent.minutes[-1]
    assert last[:4] == [24, 10, 1, 400]
    assert last[5] == {"a": [5, 1, 200], "b": [5, 0, 200]}
    recent.sample_queue(3, 24 * 60 + 5)
    recent.sample_queue(1, 24 * 60 + 6)
    assert recent.minutes[-1][4] == 3
    recent.sample_queue(2, 25 * 60)  # a new minute with no request yet
    assert recent.minutes[-1][:5] == [25, 0, 0, 0, 2]
    report = op.status_report([dict(REPORT)], {"depth": 0, "max_concurrent": 0, "waiting": []}, recent, 25 * 60 + 1, 1e9, 1e9 - 10)
    assert [r["path"] for r in report["recent"]][:2] == ["/r249", "/r248"]  # newest first
    assert len(report["recent"]) == 100 and report["recent_limit"] == 100
    assert len(report["series"]) == 15 and report["series"][-1]["queue_max"] == 2
    assert report["backends"][0]["state"] == "healthy"


# ---------------------------------------------------------------------------------------------
# 2. the real proxy: the JSON after real traffic, the ring, Basic authentication
# ---------------------------------------------------------------------------------------------


STATUS_KEYS = {"version", "time", "uptime_s", "backends", "queue", "recent", "recent_limit", "series", "series_minutes"}
ENTRY_KEYS = {"time", "method", "path", "upstream_path", "model", "model_asked", "backend", "status", "duration_s", "eval_count",
              "tokens_per_s", "changes", "truncated_at", "error", "failed"}


#: c is the only backend of qwen3:8b, and answers every chat 500 (while it passes its probes); llama3.2 is on a and b.
def sick_c(a: str = "a", b: str = "b", c: str = "c") -> List[str]:
    return ["--route", "llama3.2=%s+%s" % (a, b), "--route", "nosuch=" + a, "--route", "qwen3:8b=" + c, "--max-retries", "0",
            "--eject-after", "2", "--eject-seconds", "60"]


def traffic(proxy, fakes_: List[FakeOllama]) -> None:
    """A chat on each backend (pinned), a 404 (unknown model), and the sick one's 500s."""
    for name in ("a", "b"):
        answer = call(proxy.port, "POST", "/proxy-backend/%s/api/chat" % name, chat("hello " + name))
        assert answer.status == 200, answer.body
    assert call(proxy.port, "POST", "/api/chat", chat("who?", model="nosuch")).status == 404
    assert call(proxy.port, "POST", "/v1/chat/completions", {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}).status == 200


def test_status_json_after_real_traffic(fakes, start_proxy):
    a, b, c = fakes(3)
    c.add_fault(Fault(path="/api/chat", times=0, status=500, error="runner wedged"))
    proxy = start_proxy(["a=" + a.url, "b=" + b.url, "c=" + c.url], *sick_c(), scan_interval=0.2)
    wait_for(lambda: all(s["state"] == "healthy" for s in status_of(proxy)["backends"]), what="every backend healthy")
    traffic(proxy, [a, b, c])
    for _ in range(2):
        assert call(proxy.port, "POST", "/api/chat", chat("hi c", model="qwen3:8b")).status == 500
    # the probes' /api/ps says where llama3.2 is loaded, and with which context
    st = wait_for(lambda: (lambda s: s if all(any(m["model"] == LATEST for m in x["loaded"]) for x in s["backends"][:2]) else None)(status_of(proxy)),
                  what="llama3.2 loaded on a and b")
    assert set(st) == STATUS_KEYS
    assert st["version"] == op.__version__ and st["series_minutes"] == 15 and st["recent_limit"] == 100
    report = json.loads(call(proxy.port, "GET", "/__proxy/backends").body)["backends"]
    for shown, plain in zip(st["backends"], report):  # the /__proxy/backends report, plus the verdict
        assert {k: v for k, v in shown.items() if k not in ("state", "why", "last_probe")} == {k: v for k, v in plain.items() if k != "last_probe"}
    states = {x["name"]: (x["state"], x["why"]) for x in st["backends"]}
    assert states["a"] == ("healthy", "") and states["b"] == ("healthy", "")
    assert states["c"][0] == "ejected" and "2 failed requests in a row" in states["c"][1] and "runner wedged" in states["c"][1]
    loaded = {x["name"]: {m["model"]: m["context_length"] for m in x["loaded"]} for x in st["backends"]}
    assert loaded["a"][LATEST] > 0 and loaded["b"][LATEST] > 0
    assert st["queue"] == {"depth": 0, "max_concurrent": 0, "waiting": []}

    recent = st["recent"]
    assert all(set(r) == ENTRY_KEYS for r in recent)
    assert not any(r["path"].startswith("/__proxy/") for r in recent), "the page's own requests stay out of the ring"
    assert [(r["method"], r["path"], r["backend"], r["status"]) for r in reversed(recent)] == [
        ("POST", "/proxy-backend/a/api/chat", "a", 200), ("POST", "/proxy-backend/b/api/chat", "b", 200),
        ("POST", "/api/chat", recent[-3]["backend"], 404), ("POST", "/v1/chat/completions", recent[-4]["backend"], 200),
        ("POST", "/api/chat", "c", 500), ("POST", "/api/chat", "c", 500)]
    first = recent[-1]
    assert first["upstream_path"] == "/api/chat" and first["model"] == "llama3.2" and first["eval_count"] > 0 and first["tokens_per_s"] > 0
    assert {c["modifier"] for c in first["changes"]} >= {"num_ctx", "num_predict"}  # the proxy's defaults: what it changed, and why
    num_ctx = next(c for c in first["changes"] if c["modifier"] == "num_ctx")
    assert num_ctx["old"] is None and num_ctx["new"] == 16384 and "--max-context" in num_ctx["reason"]
    translated = recent[-4]
    assert translated["upstream_path"] == "/api/chat" and translated["model_asked"] == "llama3.2" and not translated["failed"]
    assert recent[-3]["failed"] is False and recent[-3]["error"]  # a 404 is the client's error, not the backend's
    assert recent[0]["failed"] is True and "runner wedged" in (recent[0]["error"] or "")

    now = st["series"][-1]
    totals = {k: sum(r[k] for r in st["series"]) for k in ("requests", "failed", "tokens")}
    assert totals["requests"] == 6 and totals["failed"] == 2 and totals["tokens"] > 0
    per = {}
    for row in st["series"]:
        for name, counts in row["backends"].items():
            per.setdefault(name, [0, 0])
            per[name][0] += counts["requests"]
            per[name][1] += counts["failed"]
    assert per["c"] == [2, 2] and per["a"][1] == per["b"][1] == 0
    assert st["series"][-2]["start"] + 60 == pytest.approx(now["start"])


def test_ring_holds_the_last_100(fake, start_proxy):
    proxy = start_proxy(fake.url)
    for i in range(130):
        assert call(proxy.port, "GET", "/nosuch/%d" % i).status == 404  # forwarded, Ollama's 404
    st = status_of(proxy)
    assert len(st["recent"]) == 100
    assert [r["path"] for r in st["recent"]] == ["/nosuch/%d" % i for i in range(129, 29, -1)]
    assert sum(r["requests"] for r in st["series"]) == 130  # the series count them all
    assert proxy.call(lambda: len(proxy.app.metrics.recent.ring)) == 100


@pytest.mark.parametrize("path", ["/__proxy/", "/__proxy/status"])
def test_basic_authentication(fake, start_proxy, path):
    proxy = start_proxy(fake.url, "--api-key", "s3cret")
    for headers in (None, basic("wrong"), {"Authorization": "Basic ???"}):
        answer = call(proxy.port, "GET", path, headers=headers)
        assert answer.status == 401
        assert answer.headers["www-authenticate"] == 'Basic realm="ollama-proxy"'
    for headers in (basic("s3cret"), basic("s3cret", user=""), {"Authorization": "Bearer s3cret"}, {"x-api-key": "s3cret"}):
        answer = call(proxy.port, "GET", path, headers=headers)
        assert answer.status == 200, (headers, answer.body)
    assert call(proxy.port, "HEAD", path, headers=basic("s3cret")).status == 200


def test_basic_authentication_is_for_the_status_page_only(fake, start_proxy):
    proxy = start_proxy(fake.url, "--api-key", "s3cret")
    answer = call(proxy.port, "GET", "/api/tags", headers=basic("s3cret"))
    assert answer.status == 401 and "www-authenticate" not in answer.headers  # an API client is not asked for a password
    assert call(proxy.port, "GET", "/api/tags", headers={"Authorization": "Bearer s3cret"}).status == 200


def test_page_is_self_contained(proxy):
    answer = call(proxy.port, "GET", "/__proxy/")
    assert answer.status == 200 and answer.headers["content-type"] == "text/html; charset=utf-8"
    page = answer.body.decode("utf-8")
    assert answer.body == op.STATUS_PAGE
    assert re.findall(r"(?i)(?:https?:)?//[a-z0-9.-]+\.[a-z]", page) == [], "no absolute or protocol-relative URL"
    assert re.findall(r"(?i)<(?:script|link|img|iframe)[^>]*\s(?:src|href)=\"(?!data:)", page) == [], "no external script, style, icon, image"
    assert re.findall(r"(?i)@import|url\(", page) == [], "no CSS import or url()"
    assert 'location.pathname.replace(/[^\\/]*$/, "") + "status"' in page  # relative: the page works under any prefix


# ---------------------------------------------------------------------------------------------
# 3. the page in a real headless browser
# ---------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it: apt-get install -y chromium)")
#: Any host but the proxy's address fails to resolve: the page must not need one.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio",
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=5000"]


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    command = [CHROMIUM, "--user-data-dir=%s" % profile, *CHROMIUM_FLAGS, *args]
    return subprocess.run(command, capture_output=True, timeout=120, check=False)


def page_requests(path) -> List[str]:
    """The URLs a page on 127.0.0.1 asked for, from a Chromium NetLog (--log-net-log): each request
    job whose network isolation key names that page's site as the top frame (the browser's own
    background requests, its updater and clock, have another key; they fail to resolve anyway)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        log = json.load(f)
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if event["type"] == start_job and str(params.get("network_isolation_key", "")).startswith("http://127.0.0.1 "):
            urls.append(params["url"])
    return urls


@needs_chromium
def test_page_in_a_headless_browser(fakes, start_proxy, tmp_path):
    a, b, c = fakes(3)
    c.add_fault(Fault(path="/api/chat", times=0, status=500, error="runner wedged"))
    proxy = start_proxy(["gpu-a=" + a.url, "gpu-b=" + b.url, "gpu-c=" + c.url], *sick_c("gpu-a", "gpu-b", "gpu-c"), scan_interval=0.2)
    wait_for(lambda: all(s["state"] == "healthy" for s in status_of(proxy)["backends"]), what="every backend healthy")
    for i in range(4):
        name = "gpu-a" if i % 2 == 0 else "gpu-b"
        assert call(proxy.port, "POST", "/proxy-backend/%s/api/chat" % name, chat("hello %d" % i)).status == 200
    assert call(proxy.port, "POST", "/api/embed", {"model": "nomic-embed-text", "input": "one short text"}).status == 200
    for _ in range(2):
        assert call(proxy.port, "POST", "/api/chat", chat("hi", model="qwen3:8b")).status == 500
    wait_for(lambda: any(m["model"] == LATEST for m in status_of(proxy)["backends"][0]["loaded"]), what="llama3.2 loaded on gpu-a")
    url = proxy.url + "/__proxy/"

    net_log = tmp_path / "net.json"
    done = chromium(tmp_path, "--log-net-log=%s" % net_log, "--dump-dom", url)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]
    dom = done.stdout.decode("utf-8")
    for name in ("gpu-a", "gpu-b", "gpu-c"):
        assert 'data-backend="%s"' % name in dom, "backend %s not shown" % name
    assert re.search(r'class="card ejected" data-backend="gpu-c"', dom), "the sick backend is not shown ejected"
    assert "runner wedged" in dom
    assert re.search(r"llama3\.2:latest<span class=\"ctx\">ctx \d+</span>", dom), "no loaded model with its context"
    rows = [r.strip() for r in re.findall(r'<tr(?: class="failed")?><td>[^<]*</td><td class="mono">POST ([^<→]*)', dom)]
    assert "/proxy-backend/gpu-a/api/chat" in rows and "/api/embed" in rows and "/api/chat" in rows
    assert "num_ctx unset → 16384" in dom  # what the proxy changed
    assert dom.count("<svg") >= 6  # the three charts and each backend's
    assert re.search(r'<span id="problem">([^<]*)</span>', dom).group(1) == "gpu-c ejected"  # the header names the sick one

    urls = page_requests(net_log)
    assert url in urls and proxy.url + "/__proxy/status" in urls, urls
    others = [u for u in urls if not u.startswith(proxy.url + "/")]
    assert others == [], "the page asked for something besides the proxy: %s" % others

    shot = os.path.join(ROOT, "docs", "status-page.png") if os.environ.get("SAVE_SCREENSHOT") == "1" else str(tmp_path / "status-page.png")
    os.makedirs(os.path.dirname(shot), exist_ok=True)
    done = chromium(tmp_path, "--window-size=1280,900", "--hide-scrollbars", "--screenshot=%s" % shot, url)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]
    with open(shot, "rb") as png:
        head = png.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (1280, 900)


@needs_chromium
def test_page_asks_for_the_key_in_a_browser(fake, start_proxy, tmp_path):
    """Under --api-key a browser without the key gets the 401 (the page's JS never runs), and with
    it in the URL's userinfo (the browser sends Basic) the page fills in."""
    proxy = start_proxy(fake.url, "--api-key", "s3cret")
    assert call(proxy.port, "POST", "/api/chat", chat("hi"), headers={"x-api-key": "s3cret"}).status == 200
    done = chromium(tmp_path, "--dump-dom", proxy.url + "/__proxy/")
    assert done.returncode == 0
    assert 'data-backend="' not in done.stdout.decode("utf-8")
    done = chromium(tmp_path, "--dump-dom", "http://user:s3cret@127.0.0.1:%d/__proxy/" % proxy.port)
    assert done.returncode == 0
    dom = done.stdout.decode("utf-8")
    assert 'data-backend="127.0.0.1:%d"' % fake.port in dom and "/api/chat" in dom
