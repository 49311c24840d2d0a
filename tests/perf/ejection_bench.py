"""Benchmark of health from real traffic (issue 15, SPEC §6): one of three backends passes its
probes while every /api/chat on it fails.

Run by hand (not part of CI), once per proxy file to compare (e.g. the committed one and the
working tree)::

    git show HEAD:ollama_proxy.py > /tmp/op_before.py
    python3 tests/perf/ejection_bench.py --proxy /tmp/op_before.py --proxy ollama_proxy.py [--duration 25] [--json FILE]

Modelled on bench.py's failover section (``run_failover``), whose helpers it uses (bench.py is
imported, not changed): three normal-mode fakes (tests/fake_ollama.py's FakeOllama, in this
process), each with the model loaded (so a wedged runner still shows in ``/api/ps``), behind the
proxy with ``--scan-interval 0.5 --max-retries 2 --request-timeout 2`` and otherwise its defaults
(so ``--eject-after 3 --eject-seconds 10`` where the proxy has them); ``--clients`` keep-alive
asyncio clients send non-streamed ``POST /api/chat`` back to back for ``--duration`` seconds
(``X-Fake-Chunks: 1``, ``X-Fake-Delay-Ms`` 25-100: 50-200 ms an answer).  The victim, the
backend with the lowest port, gets a fault on /api/chat for the whole run while its probes pass:

* ``500``: every chat answers 500 at once (``Fault(status=500, times=0)``);
* ``stall``: every chat is silent (``Fault(delay_before_headers=60, times=0)``), so each request
  that reaches it waits the 2 s of ``--request-timeout``.

Reported per proxy and mode: requests sent, lost (not a complete 200), requests that reached the
victim (the fault's hits), retries (attempts in ``/__proxy/backends`` minus requests sent),
p50/p99/max latency, and from the proxy's log its ejection, trial and recovery lines.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

import bench  # noqa: E402  (its processes, clients and readers)
from fake_ollama import Fault, FakeOllama  # noqa: E402

MODES = {
    "500": dict(status=500, error="llama runner process has terminated: exit status 2", times=0),
    "stall": dict(delay_before_headers=60.0, times=0),
}


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def one_run(proxy_path, mode, logdir, clients, duration, tag):
    fakes = sorted((FakeOllama().start() for _ in range(3)), key=lambda f: f.port)
    victim = fakes[0]
    port = bench.free_port()
    cmd = [sys.executable, proxy_path, "--host", "127.0.0.1", "--port", str(port), "--scan-interval", "0.5", "--max-retries", "2",
           "--request-timeout", "2"]
    for fake in fakes:
        cmd += ["--backend", fake.url]
    proc = None
    try:
        for fake in fakes:  # the model loaded everywhere, as a wedged runner stays listed
            conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
            conn.request("POST", "/api/generate", json.dumps({"model": bench.CHAT_MODEL}), {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            conn.close()
            assert response.status == 200, response.status
        proc, logpath = bench.start_server("ejection-%s-%s" % (tag, mode), cmd, port, logdir)
        bench.wait_healthy(port, 3)
        time.sleep(1.2)  # two probe rounds: the proxy knows where the model is loaded

        async def load():
            loop = asyncio.get_running_loop()
            warm = []
            await asyncio.gather(*(bench.failover_client(port, 100000 + i, time.monotonic() + 0.5, warm, (10, 20)) for i in range(clients)))
            counters0 = await loop.run_in_executor(None, bench.backend_counters, port)
            fault = victim.add_fault(Fault(path="/api/chat", **MODES[mode]))
            records = []
            t0 = time.monotonic()
            await asyncio.gather(*(bench.failover_client(port, i, t0 + duration, records, (25, 100)) for i in range(clients)))
            counters1 = await loop.run_in_executor(None, bench.backend_counters, port)
            return records, fault.hits, counters0, counters1, [r[4] for r in warm if not r[2]]

        records, hits, counters0, counters1, warm_errors = asyncio.run(load())
        sent = len(records)
        attempts = sum(counters1.values()) - sum(counters0.values())
        latencies = [1000 * (r[1] - r[0]) for r in records]
        with open(logpath, errors="replace") as f:
            log = f.read()
        return {
            "proxy": proxy_path, "mode": mode, "sent": sent, "lost": sum(1 for r in records if not r[2]),
            "lost_examples": sorted({str(r[4])[:120] for r in records if not r[2]})[:3],
            "reached_victim": hits, "retries": attempts - sent,
            "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99), "max_ms": max(latencies) if latencies else None,
            "ejections": log.count(" ejected for ") + log.count(" ejected again for "), "trials": log.count("trying it with one request"),
            "recoveries": log.count(" recovered: "), "warm_errors": len(warm_errors), "log": logpath,
        }
    finally:
        if proc is not None:
            bench.stop_child(proc)
        for fake in fakes:
            fake.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxy", action="append", help="an ollama_proxy.py to measure (repeat; default: the working tree's)")
    parser.add_argument("--mode", action="append", choices=sorted(MODES), help="500 and/or stall (default both)")
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--duration", type=float, default=25.0, help="seconds of load per run (default 25: two cool-offs)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    bench.raise_nofile()
    proxies = args.proxy or [os.path.join(REPO, "ollama_proxy.py")]
    logdir = tempfile.mkdtemp(prefix="ejection-bench-")
    rows = []
    try:
        for mode in args.mode or ["500", "stall"]:
            for i, proxy in enumerate(proxies):
                row = one_run(proxy, mode, logdir, args.clients, args.duration, str(i + 1))
                rows.append(row)
                print("%s %s: %d sent, %d lost, %d reached the victim, %d retries" % (proxy, mode, row["sent"], row["lost"],
                                                                                    row["reached_victim"], row["retries"]), file=sys.stderr)
    finally:
        bench.kill_children()
    print("one of 3 backends fails every /api/chat while its probes pass; %d clients, %gs, proxy --scan-interval 0.5 --max-retries 2 "
          "--request-timeout 2 (defaults otherwise)" % (args.clients, args.duration))
    head = ("proxy", "mode", "sent", "lost", "reached it", "retries", "p50 ms", "p99 ms", "max ms", "ejections", "trials", "recoveries")
    lines = [(r["proxy"], r["mode"], str(r["sent"]), str(r["lost"]), str(r["reached_victim"]), str(r["retries"]),
              "%.0f" % r["p50_ms"], "%.0f" % r["p99_ms"], "%.0f" % r["max_ms"], str(r["ejections"]), str(r["trials"]), str(r["recoveries"]))
             for r in rows]
    widths = [max(len(x[i]) for x in [head] + lines) for i in range(len(head))]
    for n, row in enumerate([head] + lines):
        print("  " + "  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(row)))
        if n == 0:
            print("  " + "-" * (sum(widths) + 2 * (len(widths) - 1)))
    for r in rows:
        if r["lost"]:
            print("  %s %s lost: %s" % (r["proxy"], r["mode"], "; ".join(r["lost_examples"])))
    print("  median over all runs' p50: %.0f ms" % statistics.median(r["p50_ms"] for r in rows))
    print(json.dumps(rows, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
