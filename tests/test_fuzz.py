"""Fuzzing the real proxy over real sockets: generated request heads and JSON bodies (issue 10).

Two seeded, time-bounded runs, each against one proxy in front of one fake Ollama:

* ``test_fuzz_request_heads``: request heads made from valid ones by mutation (methods, targets,
  versions, header lines, Content-Length and Transfer-Encoding, chunked framing, line endings,
  pipelining, byte flips);
* ``test_fuzz_json_bodies``: well-framed requests to the model endpoints whose JSON bodies are
  made from valid ones by mutation (wrong types, nesting, NaN, truncation, bad UTF-8, ...).

What each case must get is decided by an *oracle*: the same bytes fed to a local h11 server
(the parser the proxy uses) plus the head rules the proxy adds on top (RFC 9112 and Go's
net/http: 505 for a major version other than 1, 400 for ``PRI``, 405 for CONNECT, 400 for
Transfer-Encoding with Content-Length, 400 for a target that is not a path, 431 for a head over
64 KiB).  Every complete request must be answered with a well-formed HTTP/1.1 response before
any close; a refused or malformed one with exactly its status and then a close; a request the
client did not finish may be answered with a 4xx or dropped silently, but only once
--header-timeout has passed.  A 5xx is a failure unless it is 505 for a version refusal, or a
500/501 relayed from the fake (X-Ollama-Proxy-Backend set), as Ollama itself answers those.
A 4xx has a message (JSON ``{"error": ...}`` from the proxy; OpenAI's shape on /v1 paths in the
body fuzz).  Body text that is not JSON even to Go's lenient decoder must get a 400.  A 2xx
NDJSON or SSE stream must not end in an error line (the fake, without faults, never sends one).
A connection left open gets a normal request next, which must work; every so often a fresh
connection checks ``GET /api/version`` and a ``/api/chat``; at the end the proxy thread lives,
nothing is in flight, and no log record of the proxy has a traceback or is at ERROR.

The fake is faithful, not perfect: where it breaks on what it is sent (its own 500 "fake_ollama
internal error", or a dropped connection that it also drops when sent the same bytes directly),
the answer is counted and printed as the fake's failure, not the proxy's.

Reproduce: ``FUZZ_SEED=<seed> FUZZ_ONLY=<case index> pytest tests/test_fuzz.py``; a failure
message names its seed, case index and the exact bytes sent.  ``FUZZ_BUDGET`` (seconds per
test) and ``FUZZ_CASES`` (a multiplier of the case counts) make longer runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import h11
import pytest
from test_protocol import Client

import ollama_proxy

SEED = int(os.environ.get("FUZZ_SEED", "20240610"))
ONLY = os.environ.get("FUZZ_ONLY")  # one case index, to reproduce a failure
SCALE = float(os.environ.get("FUZZ_CASES", "1"))
BUDGET = float(os.environ.get("FUZZ_BUDGET", "0"))  # seconds per test; 0 = the defaults below
HEAD_CASES, HEAD_BUDGET, HEAD_MINIMUM = int(2000 * SCALE), BUDGET or 22.0, 300
BODY_CASES, BODY_BUDGET, BODY_MINIMUM = int(1500 * SCALE), BUDGET or 20.0, 200
SHOW = int(os.environ.get("FUZZ_SHOW", "2"))  #: failures shown in full, of each kind
WORKERS = 8  #: cases run at once (each on its own connections)
SANITY_EVERY = 150  #: a fresh-connection check of normal requests after this many cases
HEADER_TIMEOUT = 1.0  #: the proxy's --header-timeout: what an unfinished request may wait at most
CASE_TIMEOUT = 10.0  #: no answer within this is a hang
MAX_HEAD = ollama_proxy.MAX_HEAD_BYTES
NEAR_HEAD_LIMIT = MAX_HEAD - 4096  #: heads this large may get 431 or 400 depending on how reads split

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}


# -- the oracle: what the proxy must answer to these bytes -------------------------------------

@dataclasses.dataclass
class Step:
    """One answer the client is owed, in order."""

    kind: str  #: served, refused, too-large, malformed (head), malformed-body, unfinished (head or body)
    method: bytes = b"GET"  #: how to parse the answer (HEAD: no body)
    statuses: Optional[frozenset] = None  #: the allowed statuses (None: any that the general rules allow)
    must_close: bool = False  #: RFC 9112 says the connection ends after this answer
    target: bytes = b""
    note: str = ""


def refusal(request: h11.Request) -> int:
    """The status the proxy answers a head h11 accepted but the proxy does not serve; 0 if it serves
    it; 200 for ``OPTIONS *`` (kept alive).  Written from the rules, not from the proxy's code."""
    if not request.http_version.startswith(b"1."):
        return 400 if request.method == b"PRI" else 505  # Go: 505 for major != 1; h2c preface 400
    if request.method == b"CONNECT":
        return 405
    names = {name for name, _ in request.headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        return 400  # RFC 9112 §6.1
    target = request.target
    if target.startswith(b"/") or re.match(rb"(?i)https?://", target):
        return 0
    if target == b"*":
        return 200 if request.method == b"OPTIONS" else 400
    return 400


def plan_for(data: bytes) -> Tuple[List[Step], bool]:
    """The answers owed for ``data`` sent in one go, and whether the connection is then left open
    (idle, between requests: a normal request must work on it next)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(data)
    steps: List[Step] = []
    current: Optional[h11.Request] = None
    while True:
        before = len(conn.trailing_data[0])
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if current is not None and refusal(current) == 200:
                steps.append(Step("served", current.method, frozenset({200}), True, b"*", note="answered from its head; its body is malformed"))
            elif current is not None:
                # Bad framing inside a body: the proxy may have answered from the head already (a 404
                # for an unknown /proxy-backend/ name, say) and then found the body bad: a 4xx and a close.
                steps.append(Step("malformed-body", current.method, None, True, current.target, note=str(exc)))
            elif before > NEAR_HEAD_LIMIT:
                steps.append(Step("malformed", b"GET", frozenset({400, 431}), True, note=str(exc)))
            else:
                steps.append(Step("malformed", b"GET", frozenset({431 if exc.error_status_hint == 431 else 400}), True, note=str(exc)))
            return steps, False
        if event is h11.NEED_DATA:
            if current is not None and refusal(current) == 200:
                steps.append(Step("served", current.method, frozenset({200}), True, b"*", note="answered from its head; its body is unfinished"))
                return steps, False
            if current is not None:
                steps.append(Step("unfinished", current.method, None, True, current.target, note="body not finished"))
                return steps, False
            if conn.trailing_data[0]:
                steps.append(Step("unfinished", b"GET", None, True, note="head not finished"))
                return steps, False
            return steps, True
        kind = type(event)
        if kind is h11.Request:
            head_size = before - len(conn.trailing_data[0])
            if head_size > MAX_HEAD:
                steps.append(Step("too-large", event.method, frozenset({431}), True, event.target))
                return steps, False
            status = refusal(event)
            if status and status != 200:
                steps.append(Step("refused", event.method, frozenset({status}), True, event.target))
                return steps, False
            current = event
        elif kind is h11.EndOfMessage:
            assert current is not None
            status = refusal(current)
            conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
            conn.send(h11.EndOfMessage())
            close = conn.our_state is h11.MUST_CLOSE
            steps.append(Step("served", current.method, frozenset({status}) if status else None, close, current.target))
            if close:
                return steps, False
            conn.start_next_cycle()
            current = None
        elif event is h11.PAUSED or kind is h11.ConnectionClosed:
            return steps, False


# -- the client side: read and judge the answers ------------------------------------------------

@dataclasses.dataclass
class Answer:
    status: int
    headers: Dict[bytes, bytes]
    body: bytes
    informational: List[int]

    def header(self, name: bytes) -> Optional[bytes]:
        return self.headers.get(name)

    @property
    def says_close(self) -> bool:
        return b"close" in (self.header(b"connection") or b"").lower()


class Reader:
    """The proxy's answers on one socket, parsed by an h11 client one response at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.raw = b""
        self.leftover = b""
        self.eof = False

    def _recv(self, deadline: float) -> Optional[bytes]:
        """Bytes, b"" at EOF (or a reset), None when the deadline passed."""
        if self.eof:
            return b""
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        except OSError:  # a reset: the peer is gone all the same
            data = b""
        if not data:
            self.eof = True
        self.raw += data
        return data

    def response(self, method: bytes, deadline: float):
        """An Answer; "closed" if the connection ended before any byte of one (1xx aside);
        "timeout"; or a string saying why the bytes are not a valid response."""
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=b"HEAD" if method == b"HEAD" else b"GET", target=b"/", headers=[(b"host", b"x")]))
        conn.send(h11.EndOfMessage())
        informational: List[int] = []
        head: Optional[h11.Response] = None
        body = b""
        pending, self.leftover = self.leftover, b""
        started = bool(pending)
        if pending:
            conn.receive_data(pending)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                return "not a valid HTTP/1.1 response (%s)" % exc
            if event is h11.NEED_DATA:
                data = self._recv(deadline)
                if data is None:
                    return "timeout"
                if not data and not started:
                    return "closed"
                started = started or bool(data)
                conn.receive_data(data)
                continue
            kind = type(event)
            if kind is h11.InformationalResponse:
                informational.append(event.status_code)
                started = bool(conn.trailing_data[0])
            elif kind is h11.Response:
                head = event
            elif kind is h11.Data:
                body += bytes(event.data)
            elif kind is h11.EndOfMessage:
                assert head is not None
                self.leftover = bytes(conn.trailing_data[0])
                headers: Dict[bytes, bytes] = {}
                for name, value in head.headers:
                    headers[bytes(name)] = headers[bytes(name)] + b", " + bytes(value) if name in headers else bytes(value)
                return Answer(head.status_code, headers, body, informational)
            else:
                return "connection closed before a response (%r)" % (event,)

    def closes(self, within: float) -> Optional[str]:
        """None if the proxy closes the connection within ``within`` seconds sending nothing more."""
        if self.leftover:
            return "bytes after the last answer: %r" % self.leftover[:300]
        deadline = time.monotonic() + within
        while True:
            data = self._recv(deadline)
            if data is None:
                return "connection not closed %.1fs after the answer" % within
            if not data:
                return None
            return "bytes after the last answer: %r" % data[:300]


def error_message(body: bytes) -> Optional[str]:
    """The message of a JSON error body, Ollama's {"error": "..."} or OpenAI's {"error": {"message": ...}}."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict):
        err = err.get("message")
    return err if isinstance(err, str) and err.strip() else None


def inband_error(answer: Answer) -> Optional[bytes]:
    """The first error line of an NDJSON or SSE body.  The fake (without faults) never sends one
    after a 2xx head: an error line there is one the proxy wrote."""
    content_type = answer.header(b"content-type") or b""
    if not (content_type.startswith(b"application/x-ndjson") or content_type.startswith(b"text/event-stream")):
        return None
    for line in answer.body.split(b"\n"):
        text = line[6:] if line.startswith(b"data: ") else line
        if b'"error"' in text:
            try:
                obj = json.loads(text)
            except ValueError:
                continue
            if isinstance(obj, dict) and "error" in obj:
                return line
    return None


def judge(answer: Answer, step: Step, openai: Optional[bool] = None) -> List[str]:
    """What is wrong with ``answer`` to ``step`` (empty: nothing)."""
    problems = []
    status = answer.status
    from_backend = answer.header(b"x-ollama-proxy-backend") is not None
    if step.statuses is not None and status not in step.statuses:
        problems.append("%s request: status %d, expected %s" % (step.kind, status, sorted(step.statuses)))
    elif step.statuses is None and status >= 500 and not (from_backend and status in (500, 501)):
        problems.append("a 5xx for client input: %d %r" % (status, answer.body[:300]))
    if 200 <= status < 300:
        error = inband_error(answer)
        if error is not None:
            problems.append("a %d stream ends with an error line: %r" % (status, error[:300]))
    if 400 <= status < 500 and step.method != b"HEAD":
        content_type = answer.header(b"content-type") or b""
        if b"json" in content_type:
            message = error_message(answer.body)
            if message is None:
                problems.append("a %d without an error message: %r" % (status, answer.body[:300]))
            elif openai is not None and isinstance(json.loads(answer.body).get("error"), dict) is not openai:
                problems.append("a %d in the wrong error shape for the path: %r" % (status, answer.body[:300]))
        elif not from_backend:
            problems.append("the proxy's own %d is not JSON: %r" % (status, answer.body[:300]))
        elif not answer.body.strip():
            problems.append("a %d with an empty body" % status)
    return problems


FOLLOW_UP = b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


FAKE_BUG = b"fake_ollama internal error"


def fake_fails_on(fake_port: int, data: bytes) -> Optional[str]:
    """Send ``data`` (its proxy prefixes taken off) straight to the fake: how the fake itself
    breaks on it (its own 500 "internal error", or no answer), or None if it answers."""
    data = re.sub(rb"^(\S+ )/proxy-context/[^/ ]*", rb"\1", data)
    data = re.sub(rb"^(\S+ )/proxy-backend/[^/ ]*", rb"\1", data)
    with socket.create_connection(("127.0.0.1", fake_port), timeout=CASE_TIMEOUT) as sock:
        sock.sendall(data)
        answer = Reader(sock).response(b"GET", time.monotonic() + CASE_TIMEOUT)
    if not isinstance(answer, Answer):
        return "fake_ollama gives no answer (%s)" % answer
    if FAKE_BUG in answer.body:
        return answer.body[:200].decode("utf-8", "replace")
    return None


def run_case(port: int, data: bytes, openai: Optional[bool] = None, statuses: Optional[frozenset] = None,
             fake_port: int = 0) -> Tuple[List[str], bytes, Dict[str, Any]]:
    """Send ``data`` on a new connection; (problems, bytes received, facts for the statistics).
    ``statuses``: what a single served request must be answered (None: the general rules).
    An answer that is the fake's own crash (a 500 saying so, or a 502 for a fake that dropped the
    connection, when the fake fails the same way without the proxy) is no failure of the proxy:
    it is counted in ``facts["fake_bug"]``."""
    steps, open_after = plan_for(data)
    if statuses is not None and len(steps) == 1 and steps[0].kind == "served":
        steps[0].statuses = statuses
    facts: Dict[str, Any] = {"steps": [s.kind for s in steps], "statuses": []}
    problems: List[str] = []
    sock = socket.create_connection(("127.0.0.1", port), timeout=CASE_TIMEOUT)
    reader = Reader(sock)
    sent = time.monotonic()
    try:
        try:
            sock.sendall(data)
        except OSError:
            pass  # answered and closed while we were still sending: the answer is still there to read
        deadline = sent + CASE_TIMEOUT
        for index, step in enumerate(steps):
            if step.kind == "unfinished":
                deadline = max(deadline, time.monotonic() + HEADER_TIMEOUT + CASE_TIMEOUT)
            answer = reader.response(step.method, deadline)
            if answer == "closed":
                waited = time.monotonic() - sent
                if step.kind != "unfinished":
                    problems.append("silent close: no answer to the %s request %d (%s)" % (step.kind, index, step.note or "complete"))
                elif waited < 0.8 * HEADER_TIMEOUT:
                    problems.append("an unfinished request dropped after %.2fs, before --header-timeout (%.1fs)" % (waited, HEADER_TIMEOUT))
                facts["statuses"].append("closed")
                return problems, reader.raw, facts
            if answer == "timeout":
                problems.append("hang: no answer to the %s request %d within %.0fs" % (step.kind, index, CASE_TIMEOUT))
                return problems, reader.raw, facts
            if isinstance(answer, str):
                problems.append("request %d: %s" % (index, answer))
                return problems, reader.raw, facts
            facts["statuses"].append(answer.status)
            found = judge(answer, step, openai)
            if answer.header(b"x-ollama-proxy-backend") is not None and answer.status >= 500:
                bug = answer.body[:200].decode("utf-8", "replace") if FAKE_BUG in answer.body else None
                if bug is None and answer.status == 502 and fake_port:
                    bug = fake_fails_on(fake_port, data)
                if bug is not None:
                    facts["fake_bug"] = bug
                    found = [p for p in found if not p.startswith("a 5xx for client input")]
            problems += ["request %d: %s" % (index, p) for p in found]
            if step.kind in ("unfinished", "malformed-body") and not 400 <= answer.status < 500:
                problems.append("request %d: a request with an unfinished or malformed body answered %d (only a 4xx can be)" % (index, answer.status))
            if step.must_close or answer.says_close:
                why = reader.closes(3.0 + ollama_proxy.LINGER_SECONDS)
                if why is not None:
                    problems.append("request %d (%s, %d): %s" % (index, step.kind, answer.status, why))
                return problems, reader.raw, facts
        if reader.leftover:
            problems.append("bytes after the last answer: %r" % reader.leftover[:300])
            return problems, reader.raw, facts
        if open_after:
            try:
                sock.sendall(FOLLOW_UP)
            except OSError as exc:
                problems.append("the connection kept alive is gone: %s" % exc)
                return problems, reader.raw, facts
            answer = reader.response(b"GET", time.monotonic() + CASE_TIMEOUT)
            if not isinstance(answer, Answer) or answer.status != 200 or b'"version"' not in answer.body:
                problems.append("a normal request on the connection kept alive got %s" % (
                    answer if not isinstance(answer, Answer) else "%d %r" % (answer.status, answer.body[:200])))
            facts["follow_up"] = True
        return problems, reader.raw, facts
    finally:
        sock.close()


def normal_requests_work(port: int) -> List[str]:
    """GET /api/version and a non-streamed /api/chat on a fresh connection."""
    problems = []
    c = Client(port)
    try:
        c.request("GET", "/api/version")
        head, body = c.response()
        if head.status_code != 200 or b'"version"' not in body:
            problems.append("GET /api/version: %d %r" % (head.status_code, body[:200]))
        c.next_cycle()
        c.request("POST", "/api/chat", json.dumps(CHAT).encode(), headers=[("x-fake-chunks", "2")])
        head, body = c.response()
        if head.status_code != 200 or json.loads(body).get("done") is not True:
            problems.append("POST /api/chat: %d %r" % (head.status_code, body[:200]))
    except (OSError, h11.ProtocolError, ValueError) as exc:
        problems.append("normal requests failed: %r" % exc)
    finally:
        c.close()
    return problems


# -- running many cases over one proxy -----------------------------------------------------------

@dataclasses.dataclass
class Run:
    ran: int = 0
    failures: List[str] = dataclasses.field(default_factory=list)  #: up to SHOW examples of each kind of failure
    failed_cases: int = 0
    kind_counts: Dict[str, int] = dataclasses.field(default_factory=dict)  #: failed cases by kind of failure
    statuses: Dict[Any, int] = dataclasses.field(default_factory=dict)
    kinds: Dict[str, int] = dataclasses.field(default_factory=dict)
    follow_ups: int = 0
    fake_bugs: List[str] = dataclasses.field(default_factory=list)
    elapsed: float = 0.0


def fuzz(port: int, fake_port: int, name: str, total: int, budget: float,
         make: Callable[[int], Tuple[bytes, Optional[bool], Optional[frozenset]]]) -> Run:
    """Run cases 0..total-1 (``make(i)`` -> the bytes, the error shape and the statuses owed) on WORKERS threads
    until done or ``budget`` seconds passed; every SANITY_EVERY cases, normal requests must work."""
    run = Run()
    lock = threading.Lock()
    indices = iter([int(ONLY)] if ONLY is not None else range(total))
    started = time.monotonic()

    def note(index: int, data: bytes, problems: List[str], raw: bytes) -> None:
        run.failed_cases += 1
        kind = re.sub(r"\d+", "N", re.sub(r"b'.*|b\".*", "", problems[0]))[:100]  # the same fault with other bytes, ports, numbers
        run.kind_counts[kind] = run.kind_counts.get(kind, 0) + 1
        if run.kind_counts[kind] <= SHOW:
            run.failures.append("%s case %d (FUZZ_SEED=%d FUZZ_ONLY=%d): %s\n    sent %d bytes: %s\n    received: %s" % (
                name, index, SEED, index, "; ".join(problems), len(data), _shorten(data), _shorten(raw)))

    def worker() -> None:
        while True:
            with lock:
                if time.monotonic() - started > budget:
                    return
                index = next(indices, None)
                if index is None:
                    return
            data = b"(not made)"
            try:
                data, openai, statuses = make(index)
                problems, raw, facts = run_case(port, data, openai, statuses, fake_port)
            except Exception as exc:  # the test's own failure: report it with the bytes all the same
                problems, raw, facts = ["the test itself failed: %r" % exc], b"", {"steps": [], "statuses": []}
            sanity = normal_requests_work(port) if index % SANITY_EVERY == SANITY_EVERY - 1 else []
            with lock:
                run.ran += 1
                for status in facts["statuses"]:
                    run.statuses[status] = run.statuses.get(status, 0) + 1
                for kind in facts["steps"]:
                    run.kinds[kind] = run.kinds.get(kind, 0) + 1
                run.follow_ups += bool(facts.get("follow_up"))
                if facts.get("fake_bug"):
                    run.fake_bugs.append("case %d: %s" % (index, facts["fake_bug"]))
                if problems:
                    note(index, data, problems, raw)
                if sanity:
                    note(index, b"(normal requests after this case)", sanity, b"")

    threads = [threading.Thread(target=worker, name="fuzz-%d" % i, daemon=True) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(budget + 4 * CASE_TIMEOUT)
    run.elapsed = time.monotonic() - started
    assert not any(t.is_alive() for t in threads), "a fuzz worker is stuck: the proxy hangs"
    return run


def _shorten(data: bytes, limit: int = 1500) -> str:
    text = repr(data)
    return text if len(text) <= limit else text[: limit - 200] + " ... " + text[-200:]


def check_run(run: Run, minimum: int, name: str, proxy, caplog) -> None:
    """Everything that must hold after a run, reported together."""
    print("\n%s: seed %d, %d cases in %.1fs; answers %s; steps %s; %d connections reused after a case" % (
        name, SEED, run.ran, run.elapsed, dict(sorted(run.statuses.items(), key=str)), run.kinds, run.follow_ups))
    if run.fake_bugs:  # not the proxy's: the fake Ollama broke on what it was sent (Ollama answers a 400 there)
        print("%d answers were fake_ollama's own failures, e.g. %s" % (len(run.fake_bugs), "; ".join(run.fake_bugs[:3])))
    errors = []
    if run.ran < (1 if ONLY is not None else minimum):
        errors.append("only %d %s cases ran in the time budget (at least %d must)" % (run.ran, name, minimum))
    if not proxy.thread.is_alive():
        errors.append("the proxy thread died")
    else:
        errors += normal_requests_work(proxy.port)
        in_flight: Any = None
        for _ in range(60):
            try:
                in_flight = proxy.call(lambda: [b.in_flight for b in proxy.app.fleet.backends])
            except IndexError:  # ProxyThread.call gave up waiting: the event loop does not run
                in_flight = "the proxy's event loop does not answer"
                break
            if not any(in_flight):
                break
            time.sleep(0.05)
        if in_flight is None or isinstance(in_flight, str) or any(in_flight):
            errors.append("requests still in flight at the backend after the run: %s" % (in_flight,))
    # The proxy's records, and asyncio's from the proxy's thread (the fake's event loop has its own thread).
    mine = [r for r in caplog.records if r.name.startswith("ollama_proxy") or (r.name.startswith("asyncio") and r.threadName == proxy.thread.name)]
    bad = [r for r in mine if r.exc_info or r.levelno >= logging.ERROR]
    if bad:
        errors.append("%d log records with a traceback or at ERROR; the first: %s\n%s" % (
            len(bad), bad[0].getMessage(), logging.Formatter().formatException(bad[0].exc_info) if bad[0].exc_info else ""))
    if run.failures:
        kinds = "\n".join("  %5d  %s" % (n, k) for k, n in sorted(run.kind_counts.items(), key=lambda kv: -kv[1]))
        errors.append("%d of %d %s cases failed (seed %d), by kind:\n%s\nexamples:\n%s" % (run.failed_cases, run.ran, name, SEED, kinds, "\n".join(run.failures)))
    assert not errors, "\n".join(errors)


@pytest.fixture
def fuzz_proxy(fake, start_proxy, caplog):
    logging.getLogger("ollama_proxy").setLevel(logging.INFO)  # conftest quiets it to WARNING
    caplog.set_level(logging.INFO, logger="ollama_proxy")
    return start_proxy(fake.url, header_timeout=HEADER_TIMEOUT, idle_timeout=30.0)


# -- generating request heads ----------------------------------------------------------------

PATHS = [
    b"/", b"/api/version", b"/api/tags", b"/api/ps", b"/api/chat", b"/api/generate", b"/api/embed", b"/api/embeddings", b"/api/show",
    b"/v1/models", b"/v1/models/llama3.2", b"/v1/chat/completions", b"/v1/completions", b"/v1/embeddings", b"/__proxy/health",
    b"/__proxy/metrics", b"/__proxy/backends", b"/health", b"/nosuch", b"/api/", b"/v1", b"/api/version/", b"/API/VERSION",
    b"/api/blobs/sha256:" + b"0" * 64, b"/api/blobs/sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",  # streamed uploads
]
METHODS = [b"GET"] * 10 + [b"POST"] * 8 + [b"HEAD"] * 3 + [b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE"]
ODD_METHODS = [b"CONNECT", b"PRI", b"get", b"post", b"Head", b"M-SEARCH", b"PROPFIND", b"BREW", b"G", b"GET\x00", b"GE T", b"", b"\xc3\x89T",
               b"X" * 300, b"*", b"1", b"GE(T", b"\tGET", b"GET/", b"POST\r"]
VERSIONS = [b"HTTP/1.1"] * 12 + [b"HTTP/1.0"]
ODD_VERSIONS = [b"HTTP/1.2", b"HTTP/2.0", b"HTTP/9.9", b"HTTP/0.9", b"HTTP/3.0", b"http/1.1", b"HTTP/1", b"HTTP/1.1.1", b"HTTP/11", b"HTTP/1.x",
                b"", b"HTTP/1.1 ", b"HTTPS/1.1", b" HTTP/1.1", b"HTTP/1.1\x00", b"HTTP/\xff"]
CONTENT_LENGTHS = [b"-1", b"abc", b"", b"1.0", b"0x10", b"+3", b"99999999999999999999", b"1, 2", b"\x00", b"100000000", b"1 2"]
TRANSFER_ENCODINGS = [b"gzip", b"gzip, chunked", b"chunked, gzip", b"identity", b"", b" chunked", b"chunked;q=1", b"CHUNKED", b"chunked\x00",
                      b"x", b"chunked, chunked", b"chunked ,", b"deflate"]
SMALL_BODIES = {
    b"/api/chat": json.dumps(CHAT).encode(),
    b"/api/generate": b'{"model":"llama3.2","prompt":"hi","stream":false}',
    b"/api/embed": b'{"model":"nomic-embed-text","input":"hi"}',
    b"/api/embeddings": b'{"model":"nomic-embed-text","prompt":"hi"}',
    b"/api/show": b'{"model":"llama3.2"}',
    b"/v1/chat/completions": json.dumps(CHAT).encode(),
    b"/v1/completions": b'{"model":"llama3.2","prompt":"hi","max_tokens":2}',
    b"/v1/embeddings": b'{"model":"nomic-embed-text","input":"hi"}',
}


def gen_target(rng: random.Random, backend: bytes) -> bytes:
    r = rng.random()
    path = rng.choice(PATHS)
    if r < 0.5:
        return path
    if r < 0.58:
        return path + b"?" + rng.choice([b"x=1", b"", b"a=%zz", b"q=\xc3\xa9", b"a&b&&c", b"?", b"x=" + b"y" * 500])
    if r < 0.65:
        return rng.choice([b"http://127.0.0.1:1", b"HTTP://x", b"https://h", b"http://user:pw@h:99", b"http://", b"http://[::1]"]) + path
    if r < 0.68:
        return b"*"
    if r < 0.74:
        return rng.choice([b"api/version", b"ftp://x/", b"x:1", b"//", b"?", b"#", b"\\api\\version", b"%2Fapi%2Fversion", b"http:/x",
                           b"mailto:a@b", b"example.com:443", b"http:", b"*/api/version", b"**"])
    if r < 0.82:
        escape = rng.choice([b"%00", b"%zz", b"%2e%2e", b"%ff", b"%", b"%c3%a9", b"%2F", b"%0d%0a", b"%25", b"%u0041"])
        at = rng.randint(1, len(path))
        return path[:at] + escape + path[at:]
    if r < 0.86:
        return b"/" + b"a" * rng.choice([100, 2000, 8000, 30000])
    if r < 0.95:
        return rng.choice([
            b"/proxy-backend/" + backend + b"/api/version", b"/proxy-backend/" + backend + b"/api/chat", b"/proxy-backend/nosuch/api/tags",
            b"/proxy-backend//", b"/proxy-backend/", b"/proxy-backend/" + backend, b"/proxy-context/8192/api/chat",
            b"/proxy-context/0/api/chat", b"/proxy-context/auto/api/generate", b"/proxy-context/-1/api/chat", b"/proxy-context/8192",
            b"/proxy-context/99999999999999999999/api/chat", b"/proxy-context/", b"/proxy-context/x/v1/chat/completions",
            b"/proxy-context/4096/proxy-backend/" + backend + b"/api/chat", b"/proxy-backend/" + backend + b"/proxy-context/2048/api/chat",
            b"/proxy-context/1e3/api/embed", b"/proxy-context/8192/v1/embeddings",
        ])
    return path + rng.choice([b"\x7f", b" b", b"\xff", b"\"<>", b"{}|^`", b"\x00", b"\t", b"/../..", b"//", b";a=b"])


def gen_header_lines(rng: random.Random, eol: bytes) -> List[bytes]:
    """Zero to a few header lines, valid and not."""
    out: List[bytes] = []
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        r = rng.randrange(22)
        if r == 0:
            out.append(b"Connection: " + rng.choice([b"close", b"keep-alive", b"Upgrade", b"close, te", b"te", b"", b"\x01", b"Content-Length",
                                                     b"Host", b"Transfer-Encoding", b"CLOSE", b"keep-alive, close"]))
        elif r == 1:
            out.append(b"Expect: " + rng.choice([b"100-continue", b"100-Continue", b"200-ok", b"", b"\xff"]))
        elif r == 2:
            out += [b"Upgrade: " + rng.choice([b"h2c", b"websocket", b"HTTP/2.0"]), b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"]
        elif r == 3:
            out.append(b"X-Folded: a" + eol + rng.choice([b" b", b"\tb", b" ", b"  Host: y"]))
        elif r == 4:
            out.append(b"X-Ctl: a" + rng.choice([b"\x00", b"\x01", b"\x7f", b"\x1b", b"\r", b"\x0b", b"\x0c"]) + b"b")
        elif r == 5:
            out.append(rng.choice([b"NoColonHere", b": v", b"Host : x", b" Leading: space", b"X(Y): z", b"X Y: z", b"\xffX: y", b"X:", b"::"]))
        elif r == 6:
            out.append(b"X-Big: " + b"a" * rng.choice([1000, 8000, 8000, 100000]))
        elif r == 7:
            out.append(b"X-U: \xc3\xa9\xff\x80 \xe2\x80\xae")
        elif r == 8:
            out += [b"X-Many-%d: %d" % (i, i) for i in range(rng.choice([50, 200]))]
        elif r == 9:
            out.append(b"Host: " + rng.choice([b"y", b"", b"a b", b"x:99999", b"[::1]:1"]))
        elif r == 10:
            out.append(b"Via: " + rng.choice([b"1.1 other", b"", b"1.0 a, 1.1 b", b"\xff"]))
        elif r == 11:
            out.append(rng.choice([b"Authorization: Bearer k", b"Cookie: a=b", b"X-Api-Key: k", b"Authorization: Basic \x00"]))
        elif r == 12:
            out.append(b"Content-Type: " + rng.choice([b"application/json", b"text/plain", b"", b"multipart/form-data; boundary=x",
                                                       b"application/json; charset=utf-16"]))
        elif r == 13:
            out.append(b"Accept-Encoding: " + rng.choice([b"gzip", b"br, gzip;q=0", b"*"]))
        elif r == 14:
            out.append(b"Trailer: X-T")
        elif r == 15:
            out.append(b"Keep-Alive: timeout=" + rng.choice([b"5", b"-1", b"x"]))
        elif r == 16:
            out.append(b"X-Forwarded-For: 1.2.3.4")
        elif r == 17:
            out.append(b"Accept: " + rng.choice([b"text/event-stream", b"application/x-ndjson", b"*/*"]))
        elif r == 18:
            out.append(b"Te: trailers")
        elif r == 19:
            out.append(b"Origin: " + rng.choice([b"http://localhost:3000", b"null", b"\xff"]))
        elif r == 20:
            out.append(b"X-" + bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&'*+-.^_`|~0123456789") for _ in range(rng.randint(1, 30))) + b": v")
        else:
            out.append(b"Proxy-Connection: keep-alive")
    return out


def gen_chunked(rng: random.Random, body: bytes) -> bytes:
    """A chunked body: well framed mostly, else one of the ways to get chunk framing wrong."""
    pieces = []
    rest = body
    while rest:
        n = rng.randint(1, max(1, len(rest)))
        pieces.append(rest[:n])
        rest = rest[n:]
    out = b""
    for piece in pieces:
        size = rng.choice([b"%x", b"%X", b"000%x"]) % len(piece)
        ext = rng.choice([b""] * 6 + [b";a=b", b';name="q"', b";x", b"; a = b"])
        out += size + ext + b"\r\n" + piece + b"\r\n"
    end = rng.choice([b"0\r\n\r\n"] * 4 + [b"0\r\nX-T: 1\r\n\r\n", b"00\r\n\r\n"])
    if rng.random() < 0.6:
        return out + end
    bad = rng.randrange(16)
    if bad == 0:
        return b"zz\r\nabc\r\n0\r\n\r\n"
    if bad == 1:
        return b"-3\r\nabc\r\n0\r\n\r\n"
    if bad == 2:
        return b"0x3\r\nabc\r\n0\r\n\r\n"
    if bad == 3:
        return b"2\r\nabcd\r\n0\r\n\r\n"  # more data than announced
    if bad == 4:
        return b"3\r\nabc0\r\n\r\n"  # no CRLF after the data
    if bad == 5:
        return b"3\nabc\n0\n\n"  # bare LF framing: refused at once
    if bad == 6:
        return b"fffffffffff\r\n{"  # a chunk over the body limit: refused at once
    if bad == 7:
        return b"3;\x00\r\nabc\r\n0\r\n\r\n"
    if bad == 8:
        return out + b"0\r\nbad trailer\r\n\r\n"
    if bad == 9:
        return b"00000000000000000000003\r\nabc\r\n0\r\n\r\n"
    if bad == 10:
        return b" 3\r\nabc\r\n0\r\n\r\n"
    if bad == 11:
        return b"3 \r\nabc\r\n0\r\n\r\n"
    if bad == 12:
        return out + b"0\r\n\r\n\r\n"  # an empty line where the next request line would be
    if bad == 13:
        return b"\r\n" + out + end
    if bad == 14:
        return out[:-2] + b"\n" + end if out else b"3\r\nabc\n0\r\n\r\n"
    return out + b"0\r\nX-T: a\r\n b\r\n\r\n"  # a folded trailer


def gen_unfinished(rng: random.Random, head: bytes) -> bytes:
    """The rare cases that leave the proxy waiting for more (each costs --header-timeout)."""
    return rng.choice([
        head + b"Content-Length: 50\r\n\r\n{}",
        head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nab",
        head + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",
        head + b"Transfer-Encoding: chunked\r\n\r\n0\r\n",
        head,  # no blank line: the head never ends
        head + b"Expect: 100-continue\r\nContent-Length: 10\r\n\r\n",
    ])


def gen_head_case(rng: random.Random, backend: bytes) -> bytes:
    r = rng.random()
    if r < 0.02:
        return rng.choice([
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello, made to end like a head
            b"\r\n\r\n",
            b"\x00" * 64 + b"\r\n\r\n",
            bytes(rng.randrange(256) for _ in range(200)) + b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",  # no Host
        ])
    method = rng.choice(ODD_METHODS if rng.random() < 0.12 else METHODS)
    target = gen_target(rng, backend)
    version = rng.choice(ODD_VERSIONS if rng.random() < 0.12 else VERSIONS)
    eol = rng.choice([b"\r\n"] * 18 + [b"\n", b"mixed"])
    lines = [b" ".join((method, target, version))]
    headers = [b"Host: 127.0.0.1"] if rng.random() < 0.93 else []
    headers += gen_header_lines(rng, b"\r\n" if eol == b"mixed" else eol)
    rng.shuffle(headers)
    path = target.split(b"?")[0]
    body = b""
    if method in (b"POST", b"PUT", b"post") or rng.random() < 0.15:
        body = SMALL_BODIES.get(path) or rng.choice([b"{}", b"", b"x", b'{"model":"llama3.2","stream":false}', b"{" * 20, b"\xff\xfe"])
    framing = rng.random()
    if framing < 0.33:
        # A body without framing: its bytes are the next "request" (a whole "head" mostly: else the proxy waits).
        tail = (body + (b"\r\n\r\n" if rng.random() < 0.9 else b"")) if body and rng.random() < 0.2 else b""
    elif framing < 0.70:
        headers.append(b"Content-Length: %d" % len(body))
        if rng.random() < 0.05:
            headers.append(rng.choice([b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1), b"content-length: %d" % len(body)]))
        tail = body
    elif framing < 0.82:
        headers.append(b"Transfer-Encoding: " + rng.choice([b"chunked"] * 5 + [b"Chunked", b"chunked "]))
        tail = gen_chunked(rng, body)
    elif framing < 0.90:
        n = len(body)
        headers.append(b"Content-Length: " + rng.choice(CONTENT_LENGTHS + [b"%d" % max(0, n - 1), b"%d, %d" % (n, n), b" %d" % n, b"%d " % n, b"0%d" % n]))
        tail = body
    elif framing < 0.96:
        headers.append(b"Transfer-Encoding: " + rng.choice(TRANSFER_ENCODINGS))
        if rng.random() < 0.5:
            headers.append(b"Content-Length: %d" % len(body))
        if rng.random() < 0.2:
            headers.append(b"Transfer-Encoding: chunked")
        tail = b"0\r\n\r\n"
    elif framing < 0.985:
        headers += [b"Transfer-Encoding: chunked", b"Content-Length: %d" % len(body)]
        rng.shuffle(headers)
        tail = b"0\r\n\r\nGET /api/tags HTTP/1.1\r\nHost: x\r\n\r\n"  # the smuggled request must not be answered
    else:
        return gen_unfinished(rng, b"\r\n".join(lines + headers) + b"\r\n")
    rng.shuffle(headers)
    all_lines = lines + headers
    if eol == b"mixed":
        head = b"".join(line + rng.choice([b"\r\n", b"\n"]) for line in all_lines) + b"\r\n"
    else:
        head = b"".join(line + eol for line in all_lines) + eol
    if rng.random() < 0.12:
        head = mutate_bytes(rng, head)
    data = head + tail
    if rng.random() < 0.05:  # pipelined with a normal request, before or after
        normal = b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n"
        data = normal + data if rng.random() < 0.5 else data + normal
    return data


def mutate_bytes(rng: random.Random, head: bytes) -> bytes:
    """One or two byte-level changes inside a head, never in its final blank line."""
    data = bytearray(head)
    end = len(data) - 4
    for _ in range(rng.choice([1, 1, 2])):
        if end <= 1:
            break
        at = rng.randrange(1, end)
        r = rng.randrange(4)
        if r == 0:
            data[at] = rng.randrange(256)
        elif r == 1:
            data[at:at] = rng.choice([b"\x00", b"\r", b"\n", b" ", b":", b"\xff", b"\t", b"\r\n", b"\r\n\r\n"])
        elif r == 2:
            del data[at]
        else:
            start = data.rfind(b"\n", 0, at) + 1
            stop = data.find(b"\n", at)
            if 0 < stop < end:
                data[stop + 1:stop + 1] = data[start:stop + 1]
    return bytes(data)


def test_fuzz_request_heads(fake, fuzz_proxy, caplog):
    proxy = fuzz_proxy
    backend = proxy.app.fleet.backends[0].name.encode()

    def make(index: int) -> Tuple[bytes, Optional[bool], Optional[frozenset]]:
        return gen_head_case(random.Random("heads-%d-%d" % (SEED, index)), backend), None, None

    run = fuzz(proxy.port, fake.port, "head", HEAD_CASES, HEAD_BUDGET, make)
    check_run(run, HEAD_MINIMUM, "head", proxy, caplog)


# -- generating JSON bodies ---------------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
BODIES: List[Tuple[str, Dict[str, Any]]] = [
    ("/api/chat", {"model": "llama3.2", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi", "images": []}],
                   "stream": False, "options": {"temperature": 0.5, "num_ctx": 2048, "num_predict": 3, "stop": ["x"], "seed": 1},
                   "keep_alive": "5m", "format": "json", "tools": [TOOL], "think": False}),
    ("/api/generate", {"model": "llama3.2", "prompt": "hi", "stream": False, "system": "s", "template": "{{ .Prompt }}", "raw": False,
                       "context": [1, 2, 3], "images": [], "options": {"num_predict": 3, "top_k": 4}, "suffix": "", "keep_alive": 0}),
    ("/api/generate", {"model": "llama3.2", "prompt": "a longer prompt " * 150, "options": {"num_predict": 2}}),  # streamed: a long final line
    ("/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 2}}),  # streamed
    ("/api/embed", {"model": "nomic-embed-text", "input": ["a", "b"], "truncate": True, "options": {"num_ctx": 512}, "dimensions": 8,
                    "keep_alive": "1m"}),
    ("/api/embeddings", {"model": "nomic-embed-text", "prompt": "hi", "options": {}}),
    ("/api/show", {"model": "llama3.2", "verbose": False}),
    ("/v1/chat/completions", {"model": "llama3.2", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "stream": False,
                              "max_tokens": 3, "temperature": 0.2, "top_p": 0.9, "stop": ["x"], "tools": [TOOL], "seed": 1,
                              "stream_options": {"include_usage": True}, "response_format": {"type": "json_object"}, "reasoning_effort": "low",
                              "frequency_penalty": 0, "n": 1, "user": "u"}),
    ("/v1/completions", {"model": "llama3.2", "prompt": "hi", "max_tokens": 3, "stream": False, "stop": "x", "suffix": "s", "temperature": 1,
                         "echo": False, "seed": 2}),
    ("/v1/embeddings", {"model": "nomic-embed-text", "input": ["hi", "there"], "encoding_format": "float", "dimensions": 4, "user": "u"}),
]
MODELS = ["llama3.2", "llama3.2:latest", "nomic-embed-text", "qwen3:8b", "nosuch", "", "LLAMA3.2", "llama3.2:nosuch", "../etc/passwd",
          "x" * 300, "library/llama3.2", "registry.ollama.ai/library/llama3.2:latest", "llama3.2\u0000", " llama3.2"]


def nested(depth: int, rng: random.Random) -> Any:
    value: Any = rng.choice([1, "x", None, [], {}])
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"a": value}
    return value


def weird_value(rng: random.Random) -> Any:
    r = rng.randrange(12)
    if r == 0:
        return rng.choice([None, True, False])
    if r == 1:
        return rng.choice([0, -1, 1, 2 ** 31, 2 ** 63, -(2 ** 63) - 1, 10 ** 30, -(10 ** 400)])
    if r == 2:
        return rng.choice([1.5, -0.0, 1e308, 5e-324, -1e-10, 0.1])
    if r == 3:
        return rng.choice(["", " ", "x", "llama3.2", "5m", "-1", "true", "null", "{}", "\u0000", "\u202e", "\U0001f600", "\ud800", "\udfff",
                           "é" * 10])
    if r == 4:
        return "a" * rng.choice([1000, 5000, 100000])
    if r == 5:
        return rng.choice([[], [None], [1, "a", {}], [[]], ["x"] * 50, [""]])
    if r == 6:
        return rng.choice([{}, {"a": {"b": []}}, {"role": "user"}, {"content": None}, {"type": "image_url", "image_url": {"url": "data:x"}}])
    if r == 7:
        return nested(rng.choice([10, 50, 150]), rng)  # deeper: as text, in mutate_text
    if r == 8:
        return rng.choice(MODELS)
    if r == 9:
        return [{"role": rng.choice(["user", "assistant", "tool", "system", "x", "", None, 1]), "content": weird_scalar(rng)}]
    if r == 10:
        return {"num_ctx": weird_scalar(rng), "num_predict": weird_scalar(rng), "temperature": weird_scalar(rng)}
    return [{"type": rng.choice(["text", "image_url", "input_audio", "x", None]), "text": weird_scalar(rng),
             "image_url": rng.choice([{"url": "data:image/png;base64,AAAA"}, {"url": "http://x/y.png"}, "data:image/jpeg;base64,%%%", None])}]


def weird_scalar(rng: random.Random) -> Any:
    return rng.choice([None, True, 0, -1, 2 ** 64, 1.5, "", "x", "4096", [], {}])


def all_paths(obj: Any, prefix: Tuple = ()) -> List[Tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += all_paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out += all_paths(value, prefix + (index,))
    return out


def mutate_json(rng: random.Random, obj: Any) -> Any:
    paths = all_paths(obj)
    path = rng.choice(paths)
    r = rng.randrange(10)
    if not path:
        return weird_value(rng) if r < 2 else obj
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if r < 6:
        parent[last] = weird_value(rng)
    elif r < 7 and isinstance(parent, dict):
        del parent[last]
    elif r < 8 and isinstance(parent, list):
        parent.append(weird_value(rng))
    elif isinstance(parent, dict):
        parent[rng.choice(["extra", "x" * 100, "", "model", "stream", "options", "\u00e9", "num_ctx"])] = weird_value(rng)
    else:
        parent[last] = weird_value(rng)
    return obj


def mutate_text(rng: random.Random, data: bytes) -> bytes:
    """Byte-level damage to a serialized body."""
    r = rng.randrange(14)
    if r == 0:
        return data[: rng.randrange(len(data) + 1)]
    if r == 1:
        numbers = list(re.finditer(rb"(?<![\w.\"])-?\d+(\.\d+)?([eE][+-]?\d+)?", data))
        if numbers:
            m = rng.choice(numbers)
            return data[: m.start()] + rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"01", b"1.", b".5", b"+1",
                                                   b"0x10", b"1" * 400, b"-0", b"1E400"]) + data[m.end():]
        return data + b"NaN"
    if r == 2:
        strings = list(re.finditer(rb'"[^"\\]*"', data))
        bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\x80", b"\x80", b"\xe2\x82", b"\x00", b"\t", b"\n",
                          b"\\x41", b"\\ud800", b"\\udc00\\ud800", b"\\u00", b"\\"])
        if strings:
            m = rng.choice(strings)
            at = rng.randint(m.start() + 1, m.end() - 1)
            return data[:at] + bad + data[at:]
        return data + bad
    if r == 3:
        return b"\xef\xbb\xbf" + data
    if r == 4:
        return data.decode("utf-8", "surrogatepass").encode(rng.choice(["utf-16", "utf-16-le", "utf-32-be"]), "surrogatepass")
    if r == 5:
        return data + rng.choice([b"x", b",}", b"\x00", b" {}", b"]", b"\n\n", b"null"])
    if r == 6:
        return data.replace(b"{", b'{"model":"nosuch",', 1) if rng.random() < 0.5 else data.replace(b"{", b'{"stream":true,', 1)
    if r == 7:
        return rng.choice([b"", b"null", b"[]", b"1", b'"s"', b"{}", b"{" * 10, b"\x00", b" ", b"\n{}\n", b"1e999", b"true", b"[{}]"])
    if r == 8:
        return b" \t\r\n" + data + b" \n"
    if r == 9:
        return data.replace(b":", b": ", 3).replace(b",", b" , ", 3)
    if r == 10:
        return data.replace(b'"', b"'", 2)
    if r == 11:
        at = rng.randrange(len(data) + 1)
        return data[:at] + b"[" * 3000 + b"]" * 3000 + data[at:]
    if r == 12:
        return b'{"model":"llama3.2","stream":false,"options":{"num_ctx":' + rng.choice([b"1e400", b"-1e999", b"1e19", b"18446744073709551616",
                                                                                          b"4096.5", b"-0", b'"8192"', b"true"]) + b'},"prompt":"hi"}'
    return data.replace(b"}", b',"a":1,"a":2}', 1)


def gen_body_case(rng: random.Random) -> Tuple[bytes, str]:
    path, base = rng.choice(BODIES)
    obj = json.loads(json.dumps(base))
    for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3])):
        obj = mutate_json(rng, obj)
    if isinstance(obj, dict) and rng.random() < 0.08:
        obj["stream"] = True
    # A lone surrogate becomes a \ud800 escape, or (not ASCII) the bytes ED A0 80 that are not UTF-8.
    data = json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    if rng.random() < 0.3:
        data = mutate_text(rng, data)
    return data, path


def _no_constant(name: str) -> Any:
    raise ValueError("%s is not JSON" % name)


def is_json(body: bytes) -> Optional[bool]:
    """Is ``body`` JSON as Go's encoding/json (Ollama's decoder) reads it?  No NaN or Infinity;
    bad UTF-8 inside a string is no error there (it becomes U+FFFD), outside one it is.  None when
    not sure: a BOM or a UTF-16/32 encoding (Go refuses them, the proxy's parse_json decodes them:
    a difference, but no crash) and nesting too deep for Python to tell."""
    if body[:3] == b"\xef\xbb\xbf" or b"\x00" in body:
        return None
    try:
        json.loads(body.decode("utf-8", "replace"), parse_constant=_no_constant)
    except RecursionError:
        return None
    except ValueError:
        return False
    return True


def body_request(rng: random.Random, path: str, body: bytes, backend: bytes) -> bytes:
    target = path.encode()
    r = rng.random()
    if r < 0.04:
        target = b"/proxy-context/" + rng.choice([b"8192", b"auto", b"2048"]) + target
    elif r < 0.07:
        target = b"/proxy-backend/" + backend + target
    head = [b"POST " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"X-Fake-Chunks: 1",
            b"Content-Type: application/json" if rng.random() < 0.8 else b"Content-Type: text/plain"]
    if rng.random() < 0.1:
        head.append(b"Connection: close")
    if rng.random() < 0.12:
        framed = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 500]), body[i:i + 500]) for i in range(0, len(body), 500)) + b"0\r\n\r\n"
        head.append(b"Transfer-Encoding: chunked")
    else:
        framed = body
        head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + framed


def test_fuzz_json_bodies(fake, fuzz_proxy, caplog):
    proxy = fuzz_proxy
    backend = proxy.app.fleet.backends[0].name.encode()

    def make(index: int) -> Tuple[bytes, Optional[bool], Optional[frozenset]]:
        rng = random.Random("bodies-%d-%d" % (SEED, index))
        body, path = gen_body_case(rng)
        return body_request(rng, path, body, backend), path.startswith("/v1/"), frozenset({400}) if is_json(body) is False else None

    run = fuzz(proxy.port, fake.port, "body", BODY_CASES, BODY_BUDGET, make)
    check_run(run, BODY_MINIMUM, "body", proxy, caplog)
