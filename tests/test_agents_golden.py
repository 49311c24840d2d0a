"""Golden transcripts for the coding agents' routes, /v1/messages and /v1/responses.

Each file in ``tests/golden/agents/`` is written by hand from agents-api.md (§1.5, §1.6, §2.3,
§2.4), with the fake's documented generation (``tok0 ``, ``tok1 ``, one call to the first tool)
and token formula; its ``notes`` say which rule each value comes from. Both the fake Ollama's
own layers and the proxy's translation (through /api/chat) must produce it: status, content
type, keys in order, types and values, and for a stream the same named events in order with
the exact ``event: X\\ndata: {json}\\n\\n`` framing. Only what Ollama draws at random or from
the clock is free: an id needs the golden id's shape (``msg_`` + 24 hex, ``req_`` + 24 hex,
``resp_<n>``, ``msg_<n>``, ``fc_<response id>_<i>``, ``call_`` + 8 base-36), and one golden id
stands for one id throughout a transcript; ``created_at`` / ``completed_at`` are integers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict

import pytest
from test_agents_fidelity import events, post

GOLDEN_DIR = Path(__file__).resolve().parent / "golden" / "agents"
GOLDEN = sorted(p.stem for p in GOLDEN_DIR.glob("*.json"))
SHAPES = [re.compile(p) for p in (r"msg_[0-9a-f]{24}", r"req_[0-9a-f]{24}", r"resp_\d{1,6}", r"msg_\d{1,6}",
                                  r"fc_resp_\d{1,6}_\d+", r"call_[a-z0-9]{8}")]
TIMES = ("created_at", "completed_at")


def load(name: str) -> Dict[str, Any]:
    with open(GOLDEN_DIR / (name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def shape(value: str):
    return next((s for s in SHAPES if s.fullmatch(value)), None)


def match(expected: Any, actual: Any, ids: Dict[str, str], where: str = "$") -> None:
    assert type(actual) is type(expected), "%s: %r, expected %r" % (where, actual, expected)
    if isinstance(expected, dict):
        assert list(actual) == list(expected), "%s: keys %s, expected %s" % (where, list(actual), list(expected))
        for key, want in expected.items():
            got, here = actual[key], "%s.%s" % (where, key)
            if key in TIMES and isinstance(want, int):
                assert isinstance(got, int) and got > 0, (here, got)
            elif isinstance(want, str) and shape(want) is not None:
                assert isinstance(got, str) and shape(want).fullmatch(got), "%s: %r does not look like %r" % (here, got, want)
                if want.startswith("fc_resp_"):  # fc_<the response id>_<i>
                    assert got.startswith("fc_" + ids.get("resp_123", got[3:].rsplit("_", 1)[0]) + "_"), (here, got, ids)
                assert ids.setdefault(want, got) == got, "%s: %r stands for %r elsewhere" % (here, want, ids[want])
            else:
                match(want, got, ids, here)
    elif isinstance(expected, list):
        assert len(actual) == len(expected), "%s: %d items, expected %d: %r" % (where, len(actual), len(expected), actual)
        for i, (want, got) in enumerate(zip(expected, actual)):
            match(want, got, ids, "%s[%d]" % (where, i))
    else:
        assert actual == expected, "%s: %r, expected %r" % (where, actual, expected)


def check(golden: Dict[str, Any], answer) -> None:
    want = golden["response"]
    assert answer.status == want["status"], answer.body
    assert answer.header("content-type") == want["content_type"]
    ids: Dict[str, str] = {}
    if "events" in want:
        got = [{"event": name, "data": data} for name, data in events(answer.body)]
        assert [e["event"] for e in got] == [e["event"] for e in want["events"]]
        match(want["events"], got, ids)
    else:
        match(want["body"], json.loads(answer.body), ids)


def test_golden_files_well_formed():
    assert len(GOLDEN) >= 8
    for name in GOLDEN:
        data = load(name)
        assert set(data) == {"request", "response", "notes"} and data["notes"], name
        assert data["request"]["path"] in ("/v1/messages", "/v1/responses"), name
        response = data["response"]
        assert ("events" in response) != ("body" in response), name
        for event in response.get("events", []):  # named events only, no [DONE]
            assert set(event) == {"event", "data"} and event["data"]["type"] == event["event"], name


@pytest.mark.parametrize("name", GOLDEN)
def test_fake_answers_the_golden(fake, name):
    """The fake's own Anthropic / Responses layer (agents-api.md, read from Ollama's source)."""
    golden = load(name)
    request = golden["request"]
    check(golden, post(fake.port, request["body"], request["path"], request["headers"]))
    assert fake.received[-1].path == request["path"]


@pytest.mark.parametrize("name", GOLDEN)
def test_proxy_answers_the_golden(fake, start_proxy, name):
    """The proxy's translation to /api/chat and back gives the same transcript."""
    golden = load(name)
    request = golden["request"]
    proxy = start_proxy(fake.url)
    check(golden, post(proxy.port, request["body"], request["path"], request["headers"]))
    upstream = [r.path for r in fake.received if r.path != "/api/show"]
    assert upstream == ([] if golden["response"]["status"] == 400 else ["/api/chat"]), upstream
