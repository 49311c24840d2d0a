"""Benchmark of ollama-proxy against the fake Ollama ("direct") and a naive relay ("floor").

Run by hand (not part of CI):

    python3 tests/perf/bench.py [--quick] [--repeats N] [--only nonstream|stream|reloads|openai|failover|choice|instructions]
        [--json FILE]
        [--ns-duration S] [--stream-duration S] [--fake PATH] [--proxy PATH] [--standin]

A default run takes about 11 minutes (failover and choice about 2 of them), ``--quick`` about 2. Needs ``wrk`` in PATH and
h11 for the Python that runs it (the fake, the relays and the client use the same one).

Processes (all on 127.0.0.1, started with the same Python as the bench, killed on exit):

* the lean fake Ollama, ``tests/perf/fast_ollama.py``      -> target "direct"
* the floor relay, ``tests/perf/floor_relay.py``            -> target "floor"
  (bare asyncio + h11 pass-through, one upstream connection per client connection)
* the proxy, ``ollama_proxy.py --backend http://fake``      -> target "proxy"
  in its default configuration, as users run it: info logging (one access line per request
  and its modification lines), probes every 5 s, the model context policy, ``num_predict``
  (if ollama_proxy.py does not exist, or with ``--standin``, a second floor relay is
  started in its place and the output says so)

Both relays point at the same fake. Within each repeat every scenario runs against
direct, floor and proxy one after the other (interleaved, so slow drifts of a noisy
machine hit all three alike); each number in the table is the median over the repeats
(default 5, ``--quick``: 2 with shorter runs).

What is measured
----------------
1. Non-streaming: ``wrk -t1 -cC -dDs --latency`` with a Lua script doing
   ``POST /api/generate`` ``{"model":"llama3.2","prompt":"hi","stream":false}`` at
   C = 1, 16, 64: Requests/sec and the 50%/99% latency. "added p50 @c1" is the p50 of
   the target minus the p50 of direct in the same repeat.
2. Streaming, with ``tests/perf/stream_client.py`` (a separate asyncio process; its
   connections are opened and warmed up before the clock starts; each connection then
   runs streams back to back for the duration):
   paced = 50 chunks 20 ms apart at 16/64/256 concurrent streams, the first starts
   spread evenly over one 20 ms period (LLM streams are not in lock-step);
   back-to-back (b2b) = 200 chunks with no delay at 16/64 streams, all starting at once.
   * ttfc p50: median over streams of the time from writing the request to the first
     NDJSON line.
   * added delay/chunk (paced only): every paced run also carries max(8, C/8) extra
     "reference" streams that go straight to the fake, interleaved in start phase with
     the target streams. For every chunk index i the median (over streams) arrival time
     since the request is taken for the target streams and for the reference streams;
     the row is the mean over i of the difference, i.e. how much later, on average, a
     chunk reaches the client through the relay. Pairing within one run matters: the
     fake's own 20 ms pacing drifts by ~0.5 ms per chunk from run to run, which swamps
     a sub-millisecond relay cost when arrival times of separate runs are compared. In
     the direct column the reference is compared with itself: that value is the noise
     of the measurement. (The JSON also has the unpaired difference against the direct
     run, "_added_unpaired", and a line fit split into a constant offset and a gap.)
   * chunks/s: NDJSON lines of the target streams / wall time of the run (the final
     stats line counts as a chunk).
3. CPU: utime+stime of the relay process (for "direct": of the fake) from
   /proc/PID/stat, read just before and after each measured run, as ms of CPU per 1000
   requests (all non-streaming runs together) and per 1000 chunks (paced runs together,
   b2b runs together).
4. Memory: VmRSS sampled every ~50 ms during the 256-stream paced run (max of the
   samples, i.e. RSS while 256 streams are open) and VmHWM (peak RSS) at the end.

5. Reloads (issue 3): the 30-request workload of tests/workload.py (a conversation that
   grows, one-shot prompts, embeddings) sent to a normal-mode fake three ways: as a client
   sends it (its own num_ctx on the conversation, none elsewhere), with a naive per-request
   sizer, and through the proxy in auto mode; the fake counts reloads as Ollama's scheduler
   would (ollama-api.md §7.4). ``--only reloads`` runs just this part.
6. OpenAI streaming (issue 4): streamed /v1/chat/completions through the proxy with
   translation (native /api/chat upstream, SSE made by the proxy) against the same through
   a --no-translate proxy (Ollama's own /v1 SSE passed through), both to the normal-mode
   fake: events/s and proxy CPU per 1000 events. ``--only openai`` runs just this part.

7. Failover (``--only failover``): three normal-mode fakes (in this process, tests/fake_ollama.py's
   FakeOllama) behind the proxy (``--scan-interval 0.5 --max-retries 2``), 100 keep-alive asyncio
   clients sending non-streamed ``POST /api/chat`` back to back (``X-Fake-Chunks: 1``,
   ``X-Fake-Delay-Ms`` 25-100, so each answer takes 50-200 ms and ~30 are in flight per backend);
   a short warm-up loads the model everywhere, then one fake is killed (``FakeOllama.stop()``:
   listener closed, open connections aborted) 2 s into the load, restarted on its port 2 s later,
   and the load goes on for 3 s (``--quick``: 1 + 1 + 1.5 s). Every request must come back 200
   with one complete JSON answer (``done: true``); anything else is "lost". The proxy's
   ``/__proxy/backends`` is polled every 10 ms (attempts and in-flight per backend, health) and
   its log is read (health changes, "trying another backend" lines). Reported per repeat (3,
   ``--quick`` 1; fresh fakes and proxy each time; the victim rotates): sent, lost, retries,
   how long until the dead backend was marked unhealthy and got its last attempt, how long until
   the restarted fake was healthy again and got a request. Run once as is and once with
   ``--max-concurrent 40`` (100 clients > 2 x 40 slots: requests queue while one backend is down).
9. Instructions (``--only instructions``, about 4 minutes; needs valgrind): instructions per
   non-streamed request, per streamed NDJSON line and per translated SSE event, counted by
   valgrind's callgrind, which does not move with the machine's noise. Each row is one process
   (floor relay, proxy in its default configuration, the proxy with one feature off) run twice
   under callgrind with a different amount of work; the difference of the totals over the extra
   requests or lines cancels start-up and shutdown. Two rows send from 16 connections at once.
   Then the floor and the proxy once more with callgrind's cache and branch simulation: level-1
   cache misses and mispredicted branches per request, which instructions alone do not show
   (they are why CPU time can differ more than instruction counts).
8. Choice (``--only choice``): the cost of choosing a backend among 100. (a) the pure functions
   ``eligible_backends`` + ``choose_backend`` on 100 Backend objects against 1, timeit median,
   with routes and with ``--max-concurrent``; (b) end to end: wrk -c16 non-streamed
   ``/api/generate`` through a proxy with 1 backend and one with 100 (the same normal-mode fake
   plus 99 idle ones hosted by tests/perf/many_fakes.py, all healthy), every request going to
   the one fake that has the model loaded; interleaved repeats (7, ``--quick`` 3), proxy CPU
   per request, paired difference. Also the proxy's idle CPU while probing 100 backends.

Reading the table
-----------------
Columns: the three targets, then proxy/direct and proxy/floor ratios (for req/s and
chunks/s higher is better, for latency, CPU and memory lower is better). The last
column holds the targets of the issue with ``ok``/``MISS``: against the floor (same
run) proxy req/s at c16/c64 >= floor, proxy CPU per 1000 requests and per 1000 chunks
<= floor, proxy added delay per chunk (paced) <= floor; against direct: added p50 at
c1 <= 0.35 ms, paced 256 streams chunks/s >= 0.99 x direct, b2b 16/64 streams
chunks/s >= 0.4 x direct, proxy RSS with 256 open streams <= 30 MB.

The machine has 2 cores: with a relay in the path three busy processes (client, relay,
fake) share them, against two for direct. The notes below the table flag runs where
the load generator itself was near one full core (then the numbers say more about the
client than about the target) and runs where both cores were saturated. Everything is
also printed as JSON at the end (``--json FILE`` writes it to a file as well), with
the per-repeat samples.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FAITHFUL_FAKE = os.path.join(REPO, "tests", "fake_ollama.py")  #: the normal-mode fake (its /v1 layer, /api/tags)
TARGETS = ("direct", "floor", "proxy")
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = '{"model":"llama3.2","prompt":"hi","stream":false}'
LUA = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""
NS_CONC = (1, 16, 64)
# name, streams, chunks, delay ms
STREAM_SCENARIOS = (
    ("paced_c16", 16, 50, 20),
    ("paced_c64", 64, 50, 20),
    ("paced_c256", 256, 50, 20),
    ("b2b_c16", 16, 200, 0),
    ("b2b_c64", 64, 200, 0),
)
CLIENT_BUSY = 0.85  # load generator CPU share (of one core) above which it may be the limit
SYSTEM_BUSY = 0.90  # share of all cores busy above which the machine is saturated

_children = []


# ----------------------------------------------------------------------------- processes


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout, logpath):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before listening; log:\n{tail(logpath)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {timeout:.0f}s; log:\n{tail(logpath)}")


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def spawn(cmd, logpath, **kw):
    with open(logpath, "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=kw.pop("stdout", log), stderr=log, cwd=REPO, **kw)
    _children.append(proc)
    return proc


def start_server(name, cmd, port, logdir, timeout=20.0, env=None):
    logpath = os.path.join(logdir, name + ".log")
    proc = spawn(cmd, logpath, stdin=subprocess.DEVNULL, env=env)
    wait_port(port, proc, timeout, logpath)
    return proc, logpath


def stop_child(proc):
    """SIGTERM one server started by ``spawn``, SIGKILL after 10 s; no longer a child to clean up."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if proc in _children:
        _children.remove(proc)


def kill_children():
    for proc in _children:
        if proc.poll() is None:
            try:
                proc.terminate()
            except OSError:
                pass
    deadline = time.monotonic() + 3.0
    for proc in _children:
        try:
            proc.wait(timeout=max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                pass
    del _children[:]


def raise_nofile(want=8192):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ----------------------------------------------------------------------------- /proc


def tree_pids(pid):
    """pid plus its descendants (a relay that forks workers is still counted whole)."""
    pids, i = [pid], 0
    while i < len(pids) and len(pids) < 256:
        p = pids[i]
        i += 1
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    return pids


def cpu_seconds(pid):
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def status_kb(pid, key):
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            pass
    return total


def system_ticks():
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals), idle


def busy_share(t0, t1):
    total, idle = t1[0] - t0[0], t1[1] - t0[1]
    return (total - idle) / total if total > 0 else 0.0


# ----------------------------------------------------------------------------- sanity


def sanity_check(name, port):
    """One non-streaming and one short streaming request; raises on failure."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/api/generate", body=BODY, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{name}: non-streaming POST -> {resp.status} {data[:200]!r}")
        json.loads(data)
        conn.request(
            "POST", "/api/generate", body='{"model":"llama3.2","prompt":"hi"}',
            headers={"Content-Type": "application/json", "X-Fake-Chunks": "3", "X-Fake-Delay-Ms": "0"},
        )
        resp = conn.getresponse()
        data = resp.read()
        lines = [x for x in data.split(b"\n") if x.strip()]
        if resp.status != 200 or len(lines) < 3:
            raise RuntimeError(f"{name}: streaming POST -> {resp.status}, {len(lines)} lines {data[:200]!r}")
        for line in lines:
            json.loads(line)
    finally:
        conn.close()


# ----------------------------------------------------------------------------- runs

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", text.strip())
    if not m:
        raise ValueError(f"bad wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out):
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", out)
    res["requests"] = int(m.group(1)) if m else 0
    for pct in ("50", "99"):
        m = re.search(r"^\s+" + pct + r"%\s+(\S+)", out, re.MULTILINE)
        res[f"p{pct}_ms"] = parse_ms(m.group(1)) if m else None
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    res["errors"] = errors
    return res


def run_wrk(port, conc, duration, lua, watch_pid, fake_pid):
    cmd = ["wrk", "-t1", f"-c{conc}", f"-d{duration}s", "--latency", "-s", lua,
           f"http://127.0.0.1:{port}/api/generate"]
    cpu0, fake0, sys0 = cpu_seconds(watch_pid), cpu_seconds(fake_pid), system_ticks()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    _children.append(proc)
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise RuntimeError("wrk did not finish") from None
    finally:
        if proc.poll() is None:  # timeout, Ctrl-C, SIGTERM
            proc.kill()
            proc.wait(timeout=5)
        _children.remove(proc)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = parse_wrk(out.decode(errors="replace"))
    res["cpu_s"] = cpu_seconds(watch_pid) - cpu0
    res["fake_cpu_s"] = cpu_seconds(fake_pid) - fake0
    res["system_busy"] = busy_share(sys0, system_ticks())
    res["loadgen_util"] = ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) / max(wall, 1e-9)
    if res["rps"] is None:
        res["raw"] = out.decode(errors="replace")[-2000:]
    return res


def run_stream(port, streams, chunks, delay_ms, duration, watch_pid, fake_pid, logdir, sample_rss,
               ref_port=0, ref_streams=0):
    cmd = [sys.executable, os.path.join(HERE, "stream_client.py"), "--port", str(port),
           "--streams", str(streams), "--chunks", str(chunks), "--delay-ms", str(delay_ms),
           "--duration", str(duration), "--timeout", "30"]
    if delay_ms:  # paced: spread the starts over one period, add paired direct reference streams
        cmd += ["--stagger-ms", str(delay_ms), "--ref-port", str(ref_port), "--ref-streams", str(ref_streams)]
    proc = spawn(cmd, os.path.join(logdir, "stream_client.log"), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = read_line(proc, 60.0)
        if line.strip() != b"ready":
            raise RuntimeError(f"stream client not ready: {line[:200]!r}")
        cpu0, fake0, sys0 = cpu_seconds(watch_pid), cpu_seconds(fake_pid), system_ticks()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        rss_max = 0
        deadline = time.monotonic() + duration + 90.0
        while time.monotonic() < deadline:
            if sample_rss:
                rss_max = max(rss_max, status_kb(watch_pid, "VmRSS"))
            if select.select([proc.stdout], [], [], 0.05)[0]:
                break
        line = read_line(proc, 5.0)
        cpu1, fake1, sys1 = cpu_seconds(watch_pid), cpu_seconds(fake_pid), system_ticks()
        res = json.loads(line)
        if "error" in res:
            raise RuntimeError("stream client: " + res["error"])
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        _children.remove(proc)
    res["cpu_s"] = cpu1 - cpu0
    res["fake_cpu_s"] = fake1 - fake0
    res["system_busy"] = busy_share(sys0, sys1)
    if sample_rss:
        res["rss_open_mb"] = rss_max / 1024.0
    return res


def read_line(proc, timeout):
    if not select.select([proc.stdout], [], [], timeout)[0]:
        raise RuntimeError("stream client timed out")
    return proc.stdout.readline()


# ----------------------------------------------------------------------------- stats


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def added_delay(target_curve, direct_curve):
    n = min(len(target_curve), len(direct_curve))
    if not n:
        return None
    return sum(target_curve[i] - direct_curve[i] for i in range(n)) / n


def per_1000(cpu, count):
    return cpu * 1e6 / count if count else None  # ms of CPU per 1000 units


def derive(raw, ns_runs, st_runs):
    """raw[rep][target][run] -> samples[metric][target] = [value per repeat]."""
    samples = {}

    def put(metric, target, value):
        samples.setdefault(metric, {t: [] for t in TARGETS})[target].append(value)

    for rep in raw:
        for t in TARGETS:
            runs = rep[t]
            for c in ns_runs:
                r = runs.get(f"ns_c{c}")
                if r is None:
                    continue
                put(f"ns_c{c}_rps", t, r["rps"])
                put(f"ns_c{c}_p50", t, r["p50_ms"])
                put(f"ns_c{c}_p99", t, r["p99_ms"])
                if c == 1 and t != "direct" and "ns_c1" in rep["direct"]:
                    d, x = rep["direct"]["ns_c1"]["p50_ms"], r["p50_ms"]
                    put("ns_c1_added_p50", t, None if d is None or x is None else x - d)
            if ns_runs:
                done = [runs[f"ns_c{c}"] for c in ns_runs if f"ns_c{c}" in runs]
                reqs = sum(r["requests"] for r in done)
                cpu = sum(r["cpu_s"] for r in done)
                put("cpu_per_1k_req", t, per_1000(cpu, reqs))
            groups = {}
            for name, _, _, _ in st_runs:
                r = runs.get(name)
                if r is None:
                    continue
                put(name + "_ttfc", t, r.get("ttfc_ms"))
                put(name + "_cps", t, r["chunks_per_s"])
                ref = r.get("ref")
                if ref:  # paired: against the direct reference streams of the same run
                    put(name + "_added", t, added_delay(r.get("chunk_median_ms", []), ref.get("chunk_median_ms", [])))
                    if "fit_offset_ms" in r and "fit_offset_ms" in ref:
                        put(name + "_added_offset", t, r["fit_offset_ms"] - ref["fit_offset_ms"])
                        put(name + "_added_gap", t, r["fit_gap_ms"] - ref["fit_gap_ms"])
                if t != "direct" and name in rep["direct"]:  # unpaired: against the direct run
                    d = rep["direct"][name].get("chunk_median_ms", [])
                    put(name + "_added_unpaired", t, added_delay(r.get("chunk_median_ms", []), d))
                if "rss_open_mb" in r:
                    put("rss_open_256", t, r["rss_open_mb"])
                g = groups.setdefault(name.split("_")[0], [0.0, 0])
                g[0] += r["cpu_s"]
                # the fake (direct column) also served the reference streams
                g[1] += r["chunks"] + (ref["chunks"] if ref and t == "direct" else 0)
            for g, (cpu, n) in groups.items():
                put("cpu_per_1k_chunks_" + g, t, per_1000(cpu, n))
    return samples


def build_rows(samples, peak, ns_runs, st_runs):
    """(key, label, unit, higher_is_better, target_spec)."""
    rows = []
    for c in ns_runs:
        spec = ("floor", ">=") if c in (16, 64) else None
        rows.append((f"ns_c{c}_rps", f"non-stream c{c} req/s", "req/s", True, spec))
        rows.append((f"ns_c{c}_p50", f"non-stream c{c} p50", "ms", False, None))
        rows.append((f"ns_c{c}_p99", f"non-stream c{c} p99", "ms", False, None))
        if c == 1:
            rows.append(("ns_c1_added_p50", "non-stream c1 added p50 vs direct", "ms", False, ("abs", "<=", 0.35)))
    for name, streams, chunks, delay in st_runs:
        kind = f"paced {chunks}x{delay}ms" if delay else f"b2b {chunks}ch"
        label = f"stream {kind} c{streams}"
        rows.append((name + "_ttfc", label + " ttfc p50", "ms", False, None))
        if delay:
            # issue 14: at 256 streams the default configuration may add up to 1.5 x the floor's delay
            spec = ("floor", "<=", 1.5) if name == "paced_c256" else ("floor", "<=")
            rows.append((name + "_added", label + " added delay/chunk", "ms", False, spec))
        if name == "paced_c256":
            spec = ("direct", ">=", 0.99)
        elif name.startswith("b2b"):
            spec = ("direct", ">=", 0.4)
        else:
            spec = None
        rows.append((name + "_cps", label + " chunks/s", "chunk/s", True, spec))
    if ns_runs:
        rows.append(("cpu_per_1k_req", "CPU per 1000 requests (non-stream)", "ms", False, ("floor", "<=", 1.15)))  # issue 14
    for g in ("paced", "b2b"):
        if any(n.startswith(g) for n, _, _, _ in st_runs):
            rows.append(("cpu_per_1k_chunks_" + g, f"CPU per 1000 chunks ({g})", "ms", False, ("floor", "<=")))
    if any(n == "paced_c256" for n, _, _, _ in st_runs):
        rows.append(("rss_open_256", "RSS with 256 streams open", "MB", False, ("abs", "<=", 30.0)))
    rows.append(("rss_peak", "peak RSS (VmHWM) at end", "MB", False, None))

    table = []
    for key, label, unit, hib, spec in rows:
        if key == "rss_peak":
            vals = dict(peak)
            smp = {t: [v] for t, v in peak.items()}
        else:
            smp = samples.get(key, {t: [] for t in TARGETS})
            vals = {t: med(smp.get(t, [])) for t in TARGETS}
        d, f, p = vals.get("direct"), vals.get("floor"), vals.get("proxy")
        entry = {
            "key": key, "label": label, "unit": unit, "higher_is_better": hib,
            "direct": d, "floor": f, "proxy": p,
            # a ratio of two small differences (that can be ~0 or negative) means nothing
            "proxy/direct": None if key.endswith("_added") else ratio(p, d),
            "proxy/floor": None if key.endswith("_added") else ratio(p, f),
            "samples": smp, "target": None, "status": None,
        }
        if spec:
            entry["target"], entry["status"] = check(spec, d, f, p)
            if entry["status"] == "MISS" and spec[0] != "floor" and check(spec, d, f, f)[1] == "MISS":
                entry["status"] = "MISS (the floor misses it too)"  # this machine, this run: no relay meets it
        table.append(entry)
    return table


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def check(spec, d, f, p):
    kind, op = spec[0], spec[1]
    if kind == "floor" and len(spec) > 2:
        desc, ref = f"proxy {op} {spec[2]:.2f} x floor", None if f is None else f * spec[2]
    elif kind == "floor":
        desc, ref = f"proxy {op} floor", f
    elif kind == "direct":
        desc, ref = f"proxy {op} {spec[2]:.2f} x direct", None if d is None else d * spec[2]
    else:
        desc, ref = f"proxy {op} {spec[2]:g}", spec[2]
    if p is None or ref is None:
        return desc, "n/a"
    good = p >= ref if op == ">=" else p <= ref
    return desc, "ok" if good else "MISS"


def rounded(v):
    return float(f"{v:.5g}") if isinstance(v, float) else v


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 10:
        return f"{v:.2f}"
    return f"{v:.3f}"


def render(table):
    head = ("metric", "unit", "direct", "floor", "proxy", "proxy/direct", "proxy/floor", "target")
    lines = []
    for e in table:
        target = f"{e['target']}: {e['status']}" if e["target"] else ""
        rdir = "-" if e["proxy/direct"] is None else f"{e['proxy/direct']:.2f}"
        rflo = "-" if e["proxy/floor"] is None else f"{e['proxy/floor']:.2f}"
        lines.append((e["label"], e["unit"], fmt(e["direct"]), fmt(e["floor"]), fmt(e["proxy"]), rdir, rflo, target))
    widths = [max(len(r[i]) for r in [head] + lines) for i in range(len(head))]
    out = []
    for n, row in enumerate([head] + lines):
        cells = []
        for i, cell in enumerate(row):
            cells.append(cell.ljust(widths[i]) if i in (0, 1, 7) else cell.rjust(widths[i]))
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def collect_notes(raw, ns_runs, st_runs):
    notes, busy_load, busy_sys, errs = [], {}, {}, []
    for rep in raw:
        for t in TARGETS:
            for name, r in rep[t].items():
                util = r.get("loadgen_util", r.get("client_util", 0.0))
                busy_load.setdefault((name, t), []).append(util)
                busy_sys.setdefault((name, t), []).append(r.get("system_busy", 0.0))
                e = r.get("errors", 0)
                if e:
                    errs.append(f"{name}/{t}: {e} errors {r.get('error_samples', '')}")
                if r.get("odd_length_streams"):
                    errs.append(f"{name}/{t}: {r['odd_length_streams']} streams with an unusual chunk count")
    loaded = [f"{n}/{t} ({100 * med(v):.0f}%)" for (n, t), v in sorted(busy_load.items())
              if med(v) >= CLIENT_BUSY]
    if loaded:
        notes.append("load generator near one full core (it may be the limit, not the target): " + ", ".join(loaded))
    sat = [f"{n}/{t} ({100 * med(v):.0f}%)" for (n, t), v in sorted(busy_sys.items())
           if med(v) >= SYSTEM_BUSY]
    if sat:
        notes.append("both cores saturated (relay runs compete with fake + client for 2 cores): " + ", ".join(sat))
    if errs:
        notes.append("errors: " + "; ".join(errs[:10]))
    return notes


# ----------------------------------------------------------------------------- many backends

CHAT_MODEL = "llama3.2"
FAILOVER_CLIENTS = 100
FAILOVER_DELAYS = (25, 100)  # X-Fake-Delay-Ms range; with X-Fake-Chunks 1 a non-streamed answer takes 2 x that
CHOICE_BACKENDS = 100


def wait_healthy(port, n, timeout=20.0):
    """Until GET /__proxy/health of the proxy on ``port`` reports ``n`` healthy backends."""
    import http.client

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/__proxy/health")
            resp = conn.getresponse()
            last = resp.read()
            if resp.status == 200 and json.loads(last).get("healthy_backends") == n:
                return
        except (OSError, ValueError):
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError(f"proxy on port {port}: not {n} healthy backends after {timeout:.0f}s (last /__proxy/health: {last!r})")


def proxy_get_json(port, path):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path} -> {resp.status} {data[:200]!r}")
        return json.loads(data)
    finally:
        conn.close()


def backend_counters(port):
    """name -> requests the proxy sent to that backend (attempts, retried ones included)."""
    return {b["name"]: b["requests"] for b in proxy_get_json(port, "/__proxy/backends")["backends"]}


async def read_http_response(reader):
    """(status, lower-cased headers, body) of one HTTP/1.1 response (Content-Length, chunked or close-delimited)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await reader.read()
    return status, headers, body


def chat_answer_error(status, body):
    """None for a complete non-streamed /api/chat answer (200, one JSON object, done true), else why not."""
    if status != 200:
        return f"status {status}: {body[:160]!r}"
    try:
        obj = json.loads(body)
    except ValueError:
        return f"200 but not one JSON object: ...{body[-160:]!r}"
    if not isinstance(obj, dict) or obj.get("done") is not True or not isinstance(obj.get("message"), dict):
        return f"200 but not a complete answer: {body[:160]!r}"
    return None


async def failover_client(port, seed, deadline, records, delays):
    """One keep-alive client: non-streamed /api/chat back to back until ``deadline``; each request
    gets its own first message (so sticky conversations do not pin the load) and a fake delay.
    ``records`` gets (t_start, t_end, ok, backend header, error) per request."""
    import asyncio
    import random

    rng = random.Random(seed)
    reader = writer = None
    n = 0
    try:
        while time.monotonic() < deadline:
            n += 1
            t0 = time.monotonic()
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError as exc:
                    records.append((t0, time.monotonic(), False, None, f"connect: {exc}"))
                    await asyncio.sleep(0.05)
                    continue
            body = json.dumps({"model": CHAT_MODEL, "messages": [{"role": "user", "content": f"question {seed}.{n}"}],
                               "stream": False}).encode()
            req = (b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\nX-Fake-Chunks: 1\r\n"
                   b"X-Fake-Delay-Ms: %d\r\nContent-Length: %d\r\n\r\n%s") % (port, rng.randint(*delays), len(body), body)
            try:
                writer.write(req)
                status, headers, data = await asyncio.wait_for(read_http_response(reader), 30.0)
            except (OSError, EOFError, ValueError, IndexError, asyncio.TimeoutError, asyncio.LimitOverrunError) as exc:
                records.append((t0, time.monotonic(), False, None, f"{type(exc).__name__}: {exc}"))
                writer.close()
                writer = None
                continue
            err = chat_answer_error(status, data)
            records.append((t0, time.monotonic(), err is None, headers.get("x-ollama-proxy-backend"), err))
            if headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


async def backends_monitor(port, stop, samples, interval=0.01):
    """GET /__proxy/backends every ``interval`` s on one connection: samples gets
    (t, {name: (healthy, requests, in_flight)})."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    req = b"GET /__proxy/backends HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
    try:
        while not stop.is_set():
            writer.write(req)
            status, _, body = await read_http_response(reader)
            if status == 200:
                samples.append((time.monotonic(), {b["name"]: (b["healthy"], b["requests"], b["in_flight"])
                                                   for b in json.loads(body)["backends"]}))
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
    finally:
        writer.close()


async def failover_load(port, fakes, victim, clients, before, down, after, delays, make_fake, restarted):
    """Warm-up, then the measured load: kill fakes[victim] ``before`` s in, restart it on its port
    ``down`` s later, load until ``after`` s after that. Returns the raw timeline."""
    import asyncio

    loop = asyncio.get_running_loop()
    warm = []  # every backend gets the model loaded (and the proxy learns it) before the clock starts
    await asyncio.gather(*(failover_client(port, 100000 + i, time.monotonic() + 0.5, warm, (10, 20)) for i in range(clients)))
    counters0 = await loop.run_in_executor(None, backend_counters, port)
    records, samples, stop = [], [], asyncio.Event()
    monitor = asyncio.ensure_future(backends_monitor(port, stop, samples))
    sys0 = system_ticks()
    t_start = time.monotonic()
    deadline = t_start + before + down + after
    tasks = [asyncio.ensure_future(failover_client(port, i, deadline, records, delays)) for i in range(clients)]
    await asyncio.sleep(before)
    fake = fakes[victim]
    t_kill, t_kill_wall = time.monotonic(), time.time()
    await loop.run_in_executor(None, fake.stop)
    t_killed = time.monotonic()
    await asyncio.sleep(max(0.0, t_kill + down - time.monotonic()))
    new = await loop.run_in_executor(None, lambda: make_fake(fake.port))
    restarted.append(new)
    t_restart, t_restart_wall = time.monotonic(), time.time()
    await asyncio.gather(*tasks)
    t_end = time.monotonic()
    busy = busy_share(sys0, system_ticks())
    await asyncio.sleep(0.05)
    stop.set()
    await monitor
    counters1 = await loop.run_in_executor(None, backend_counters, port)
    return {"records": records, "samples": samples, "warm_errors": [r[4] for r in warm if not r[2]],
            "counters0": counters0, "counters1": counters1, "t_start": t_start, "t_end": t_end,
            "t_kill": t_kill, "t_kill_wall": t_kill_wall, "t_killed": t_killed, "t_restart": t_restart,
            "t_restart_wall": t_restart_wall, "system_busy": busy}


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) (.*)$")


def log_events(path):
    """(unix time, level, message) of each line of a text-format proxy log."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = _LOG_LINE.match(line.rstrip("\n"))
                if m:
                    t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000.0
                    out.append((t, m.group(3), m.group(4)))
    except OSError:
        pass
    return out


def analyse_failover(raw, victim_name, names, logpath):
    recs = raw["records"]
    t_kill, t_restart = raw["t_kill"], raw["t_restart"]
    lost = [r for r in recs if not r[2]]
    attempts = sum(raw["counters1"].get(n, 0) - raw["counters0"].get(n, 0) for n in names)
    res = {"sent": len(recs), "lost": len(lost), "attempts": attempts, "extra_attempts": attempts - len(recs),
           "lost_samples": sorted({r[4] for r in lost})[:5], "warm_errors": raw["warm_errors"][:5],
           "system_busy": raw["system_busy"], "kill_s": raw["t_killed"] - t_kill}
    # answers per backend in the three phases (by request start)
    phases = {"before": (raw["t_start"], t_kill), "down": (t_kill, t_restart), "after": (t_restart, raw["t_end"] + 1)}
    res["answers"] = {p: {n: sum(1 for r in recs if r[2] and r[3] == n and lo <= r[0] < hi) for n in names}
                      for p, (lo, hi) in phases.items()}
    # the victim as the proxy saw it (GET /__proxy/backends every 10 ms)
    samples = raw["samples"]
    pre = [s for s in samples if s[0] <= t_kill]
    post = [s for s in samples if s[0] > t_kill]
    at_kill = pre[-1][1].get(victim_name) if pre else None
    res["in_flight_at_kill"] = at_kill[2] if at_kill else None
    down_samples = [s for s in post if s[0] < t_restart]
    if at_kill and down_samples:
        final = down_samples[-1][1][victim_name][1]
        res["attempts_on_dead"] = final - at_kill[1]
        first_final = next(s[0] for s in [pre[-1]] + down_samples if s[1][victim_name][1] == final)
        res["last_attempt_ms"] = max(0.0, (first_final - t_kill) * 1000.0) if final > at_kill[1] else 0.0
        unhealthy = next((s[0] for s in down_samples if not s[1][victim_name][0]), None)
        res["unhealthy_poll_ms"] = None if unhealthy is None else (unhealthy - t_kill) * 1000.0
    back = next((s[0] for s in samples if s[0] >= t_restart and s[1].get(victim_name, (False,))[0]), None)
    res["healthy_again_poll_ms"] = None if back is None else (back - t_restart) * 1000.0
    at_restart = [s for s in samples if s[0] <= t_restart]
    if at_restart:  # first poll after the restart that shows a new attempt on it (upper bound)
        base = at_restart[-1][1][victim_name][1]
        used = next((s[0] for s in samples if s[0] > t_restart and s[1][victim_name][1] > base), None)
        res["back_in_use_ms"] = None if used is None else (used - t_restart) * 1000.0
    # the same from the proxy's own log lines (ms resolution)
    events = log_events(logpath)
    kill_wall, restart_wall = raw["t_kill_wall"], raw["t_restart_wall"]
    marks = [t for t, lvl, msg in events if t >= kill_wall - 0.002 and msg.startswith(f"backend {victim_name} is unhealthy")]
    res["unhealthy_log_ms"] = (marks[0] - kill_wall) * 1000.0 if marks else None
    ups = [t for t, lvl, msg in events if t >= restart_wall - 0.002 and msg.startswith(f"backend {victim_name} is healthy")]
    res["healthy_again_log_ms"] = (ups[0] - restart_wall) * 1000.0 if ups else None
    res["retries_logged"] = sum(1 for t, lvl, msg in events if t >= kill_wall - 0.002 and msg.endswith("trying another backend"))
    first = [r[0] for r in recs if r[2] and r[3] == victim_name and r[0] >= t_restart]
    res["first_answer_ms"] = (min(first) - t_restart) * 1000.0 if first else None
    res["after_s"] = raw["t_end"] - t_restart
    durations = sorted(r[1] - r[0] for r in recs if r[2])
    res["p50_ms"] = durations[len(durations) // 2] * 1000.0 if durations else None
    res["max_ms"] = durations[-1] * 1000.0 if durations else None
    spanning = [r[1] - r[0] for r in recs if r[2] and r[0] < t_kill < r[1]]
    res["max_spanning_kill_ms"] = max(spanning) * 1000.0 if spanning else None
    if lost:  # the proxy's side of the story
        bad = [f"{msg}" for t, lvl, msg in events if lvl in ("WARNING", "ERROR") or ("status=" in msg and "status=200" not in msg)]
        res["log_lines"] = bad[:12]
    return res


def run_failover(proxy_path, logdir, repeats=3, clients=100, before=2.0, down=2.0, after=3.0, delays=(25, 100), extra=(), tag=""):
    """Three normal-mode fakes behind the proxy, ``clients`` concurrent non-streamed /api/chat
    clients, one fake killed (FakeOllama.stop) mid-load and restarted on its port; per repeat
    (fresh fakes and proxy each time) the dict of analyse_failover."""
    import asyncio

    sys.path.insert(0, os.path.join(REPO, "tests"))
    from fake_ollama import FakeOllama

    def make_fake(port=0):
        return FakeOllama(port=port).start()

    out = []
    for rep in range(repeats):
        fakes = [make_fake() for _ in range(3)]
        restarted = []
        names = [f"127.0.0.1:{f.port}" for f in fakes]
        victim = rep % 3
        port = free_port()
        cmd = [sys.executable, proxy_path, "--host", "127.0.0.1", "--port", str(port), "--scan-interval", "0.5", "--max-retries", "2"] + list(extra)
        for f in fakes:
            cmd += ["--backend", f.url]
        proc = None
        try:
            proc, logpath = start_server(f"failover{tag}-{rep + 1}", cmd, port, logdir)
            wait_healthy(port, 3)
            raw = asyncio.run(failover_load(port, fakes, victim, clients, before, down, after, delays, make_fake, restarted))
            res = analyse_failover(raw, names[victim], names, logpath)
            res["victim"] = victim
            res["log"] = logpath
            out.append(res)
            progress(rep, "failover" + tag, "proxy", f"{res['sent']} sent, {res['lost']} lost, {res['extra_attempts']} extra attempts")
        finally:
            if proc is not None:
                stop_child(proc)
            for f in fakes + restarted:
                f.stop()
    return out


def print_failover(rows, clients, before, down, after, delays, extra=()):
    print(f"failover{' with ' + ' '.join(extra) if extra else ''}: 3 normal-mode fakes, {clients} keep-alive clients sending POST /api/chat stream:false "
          f"({2 * delays[0]}-{2 * delays[1]} ms each); one fake killed (FakeOllama.stop) {before:g} s into the load, "
          f"restarted on its port {down:g} s later, load for {after:g} s more; proxy {' '.join(('--scan-interval', '0.5', '--max-retries', '2') + tuple(extra))}")

    def ms(v):
        return "-" if v is None else f"{v:.0f}"

    head = ("repeat", "sent", "lost", "retries", "retries logged", "in flight on it at kill", "attempts on it after kill",
            "marked unhealthy ms", "last attempt on it ms", "healthy again ms", "back in use ms", "p50 ms", "max ms")
    lines = []
    for i, r in enumerate(rows):
        back = "<=" + ms(r.get("back_in_use_ms")) if r.get("back_in_use_ms") is not None else f"not in {r['after_s']:.1f}s"
        lines.append((str(i + 1), str(r["sent"]), str(r["lost"]), str(r["extra_attempts"]), str(r["retries_logged"]),
                      ms(r.get("in_flight_at_kill")), ms(r.get("attempts_on_dead")), ms(r["unhealthy_log_ms"]),
                      "<=" + ms(r.get("last_attempt_ms")), ms(r["healthy_again_log_ms"]), back, ms(r["p50_ms"]), ms(r["max_ms"])))

    def total(key):
        return str(sum(r[key] for r in rows))

    def medcol(key):
        return ms(med([r.get(key) for r in rows]))

    backs = [r.get("back_in_use_ms") for r in rows]
    lines.append(("all/median", total("sent"), total("lost"), total("extra_attempts"), total("retries_logged"), medcol("in_flight_at_kill"),
                  medcol("attempts_on_dead"), medcol("unhealthy_log_ms"), "<=" + medcol("last_attempt_ms"), medcol("healthy_again_log_ms"),
                  "<=" + medcol("back_in_use_ms") if all(v is not None for v in backs) else f"{sum(v is None for v in backs)}/{len(rows)} never",
                  medcol("p50_ms"), medcol("max_ms")))
    widths = [max(len(x[i]) for x in [head] + lines) for i in range(len(head))]
    for n, row in enumerate([head] + lines):
        text = "  " + "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row))
        print(text)
        if n == 0:
            print("  " + "-" * (len(text) - 2))
    for i, r in enumerate(rows):
        dist = "; ".join(f"{p} " + "/".join(str(v) for v in r["answers"][p].values()) for p in ("before", "down", "after"))
        print(f"  repeat {i + 1}: answers per backend (killed one: #{r['victim'] + 1}) {dist}; "
              f"FakeOllama.stop() took {1000 * r['kill_s']:.0f} ms; slowest request spanning the kill {ms(r['max_spanning_kill_ms'])} ms; "
              f"both cores busy {100 * r['system_busy']:.0f}%")
    print("  retries = attempts the proxy made (sum of 'requests' in /__proxy/backends) minus requests sent; 'retries logged' ="
          " its 'trying another backend' log lines; 'marked unhealthy' / 'healthy again': the proxy's log line, ms after the kill /"
          " after the restarted fake listened; 'in flight', 'attempts', 'last attempt' and 'back in use' (first new attempt on the"
          " restarted fake): polling /__proxy/backends every 10 ms (so upper bounds)")
    for i, r in enumerate(rows):
        if r["lost"] or r["warm_errors"]:
            print(f"  LOST in repeat {i + 1}: {r['lost_samples']} warm-up errors {r['warm_errors']}; log {r['log']}")
            for line in r.get("log_lines", []):
                print("    " + line[:300])


def choice_backends(op, n, seed=1):
    """``n`` healthy Backend objects: varied in_flight (0-7), the model in the tag list of 4 in 5,
    loaded (with 8192) on a third of those, a few other models everywhere."""
    import random

    rng = random.Random(seed)
    model = op.normalize_model(CHAT_MODEL)
    out = []
    for i in range(n):
        spec = op.BackendSpec(name=f"127.0.0.1:{20000 + i}", scheme="http", host="127.0.0.1", port=20000 + i)
        b = op.Backend(spec, in_flight=1 if n == 1 else rng.randint(0, 7), healthy=True)
        b.digests = {f"other{j}:latest": "d%d" % j for j in range(5)}
        if n == 1 or rng.random() < 0.8:
            b.digests[model] = "a80c"
            if n == 1 or rng.random() < 0.33:
                b.loaded[model] = 8192
        out.append(b)
    return out


def load_proxy_module(proxy_path):
    """ollama_proxy.py (the one --proxy names) imported as a module."""
    import importlib.util

    name = "ollama_proxy_under_bench"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, proxy_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


def time_choice_pure(proxy_path, repeats=7, number=2000, sizes=(1, 100)):
    """µs per call of eligible_backends + choose_backend (as _acquire calls them), median of
    ``repeats`` timeit runs of ``number`` calls: {scenario: {n: µs}}."""
    import timeit

    op = load_proxy_module(proxy_path)

    model = op.normalize_model(CHAT_MODEL)
    results = {}
    for n in sizes:
        backends = choice_backends(op, n)
        names = tuple(b.name for b in backends)
        routes = (("qwen3:*", names[:10]), ("llama3.2:*", names[::2]), ("*", names))  # the model's route names half of them
        like_b = choice_backends(op, n)  # as in (b): every backend lists the model, it is loaded on the first only
        for i, b in enumerate(like_b):
            b.digests[model], b.in_flight = "a80c", 0
            b.loaded = {model: 16384} if i == 0 else {}
        scenarios = (
            ("as in (b): all list it, loaded on one", (), 0),
            ("no routes, no cap", (), 0),
            ("route naming every 2nd backend", routes, 0),
            ("--max-concurrent 4", (), 4),
            ("route + --max-concurrent 4", routes, 4),
        )
        for label, rts, cap in scenarios:
            bs = like_b if label.startswith("as in") else backends

            def call(rts=rts, cap=cap, bs=bs):
                candidates = op.eligible_backends(bs, model, rts, [])
                return op.choose_backend(candidates, model, None, 0, cap, False)

            assert call() is not None
            times = timeit.repeat(call, number=number, repeat=repeats)
            results.setdefault(label, {})[n] = statistics.median(times) / number * 1e6
    return results


def run_choice_e2e(proxy_path, fake_path, logdir, n_backends=100, conc=16, duration=4, repeats=5, scan_probe_s=3.0):
    """The proxy with 1 backend and with ``n_backends`` (the same one plus n-1 idle healthy
    normal-mode fakes, tests/perf/many_fakes.py), both sending every request to the same
    normal-mode fake (the only one with the model loaded): wrk -c``conc`` non-streamed
    /api/generate, interleaved repeats (order alternates). Returns per config the per-repeat
    (req/s, proxy CPU µs per request) and the request distribution check."""
    py = sys.executable
    lua = os.path.join(logdir, "choice.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    fake_port = free_port()
    fake, _ = start_server("choice-fake", [py, fake_path, "--host", "127.0.0.1", "--port", str(fake_port)], fake_port, logdir)
    active = f"127.0.0.1:{fake_port}"
    helper = spawn([py, os.path.join(HERE, "many_fakes.py"), "--count", str(n_backends - 1)], os.path.join(logdir, "many_fakes.log"),
                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    if not select.select([helper.stdout], [], [], 120.0)[0]:
        raise RuntimeError("many_fakes.py did not start; log:\n" + tail(os.path.join(logdir, "many_fakes.log")))
    line = helper.stdout.readline()
    try:
        idle_ports = json.loads(line)["ports"]
    except (ValueError, KeyError):
        raise RuntimeError(f"many_fakes.py: {line[:200]!r}; log:\n{tail(os.path.join(logdir, 'many_fakes.log'))}") from None
    configs = {"1 backend": [fake_port], f"{n_backends} backends": [fake_port] + idle_ports}
    proxies = {}
    for label, ports in configs.items():
        port = free_port()
        # probes at start only (and when the proxy asks for a round): no probe traffic during the runs
        cmd = [py, proxy_path, "--host", "127.0.0.1", "--port", str(port), "--scan-interval", "3600", "--probe-timeout", "5",
               "--log-level", "warning"]
        for p in ports:
            cmd += ["--backend", f"http://127.0.0.1:{p}"]
        proc, _ = start_server("choice-proxy-%d" % len(ports), cmd, port, logdir)
        wait_healthy(port, len(ports), timeout=60)
        proxies[label] = (port, proc)
    # load the model on the active fake only, through each proxy (pinned): the choice then keeps every
    # request there (loaded beats in-flight), while it still walks all backends for each request
    import http.client

    for port, _ in proxies.values():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", f"/proxy-backend/{active}/api/generate", body=BODY, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError(f"choice: pinned warm-up request answered {resp.status}")
    time.sleep(1.5)  # the probe round the first answer asked for (it reads /api/ps) has run
    for port, proc in proxies.values():
        run_wrk(port, conc, 1, lua, proc.pid, fake.pid)
    big_port = proxies[f"{n_backends} backends"][0]
    before = backend_counters(big_port)
    samples = {label: [] for label in proxies}
    labels = list(proxies)
    for rep in range(repeats):
        for label in (labels if rep % 2 == 0 else labels[::-1]):
            port, proc = proxies[label]
            r = run_wrk(port, conc, duration, lua, proc.pid, fake.pid)
            if r["rps"] is None or r["errors"]:
                raise RuntimeError(f"choice: wrk against {label}: {r.get('raw', '')[:500]} errors {r['errors']}")
            r["cpu_us_per_req"] = r["cpu_s"] * 1e6 / max(1, r["requests"])
            samples[label].append(r)
            progress(rep, "choice", label.split()[0] + "b", f"{fmt(r['rps'])} req/s, proxy {r['cpu_us_per_req']:.0f} µs CPU/request")
    after = backend_counters(big_port)
    moved = {n: after.get(n, 0) - before.get(n, 0) for n in after}
    elsewhere = sum(v for n, v in moved.items() if n != active)
    # the probe rounds themselves: the big proxy idle, probing every second
    port = free_port()
    cmd = [py, proxy_path, "--host", "127.0.0.1", "--port", str(port), "--scan-interval", "1", "--probe-timeout", "5", "--log-level", "warning"]
    for p in configs[f"{n_backends} backends"]:
        cmd += ["--backend", f"http://127.0.0.1:{p}"]
    proc, _ = start_server("choice-proxy-scan", cmd, port, logdir)
    wait_healthy(port, n_backends, timeout=60)
    time.sleep(1.0)
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(scan_probe_s)
    scan_cpu = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
    helper.stdin.close()
    return {"samples": samples, "to_active": moved.get(active, 0), "elsewhere": elsewhere, "scan_cpu_per_s": scan_cpu,
            "conc": conc, "duration": duration, "repeats": repeats, "n": n_backends}


def print_choice(pure, e2e, pure_repeats, pure_number):
    print(f"choice (a): eligible_backends + choose_backend as _acquire calls them, pure functions, µs per request "
          f"(median of {pure_repeats} x {pure_number} calls; healthy backends, in_flight 0-7, the model listed on 4 in 5, "
          f"loaded on a third of those)")
    sizes = sorted({n for v in pure.values() for n in v})
    head = ("scenario",) + tuple(f"{n} backend{'s' if n > 1 else ''}" for n in sizes) + ("per extra backend",)
    lines = []
    for label, vals in pure.items():
        lo, hi = vals[sizes[0]], vals[sizes[-1]]
        lines.append((label,) + tuple(f"{vals[n]:.2f}" for n in sizes) + (f"{(hi - lo) / (sizes[-1] - sizes[0]):.3f}",))
    render_simple(head, lines)
    if e2e is None:
        return
    n = e2e["n"]
    labels = list(e2e["samples"])
    print()
    print(f"choice (b): end to end, wrk -c{e2e['conc']} {e2e['duration']}s non-streamed POST /api/generate through the proxy, every "
          f"request to the same normal-mode fake; proxy with 1 backend vs with {n} ({n - 1} more idle, healthy fakes); "
          f"median of {e2e['repeats']} interleaved repeats")
    head = ("proxy with", "req/s", "req/s range", "proxy CPU µs/request", "per-repeat CPU µs/request")
    lines = []
    for label in labels:
        rs = e2e["samples"][label]
        lines.append((label, fmt(med([r["rps"] for r in rs])), f"{min(r['rps'] for r in rs):.0f}-{max(r['rps'] for r in rs):.0f}",
                      f"{med([r['cpu_us_per_req'] for r in rs]):.1f}", " ".join(f"{r['cpu_us_per_req']:.0f}" for r in rs)))
    a, b = (e2e["samples"][x] for x in labels)
    dcpu = [y["cpu_us_per_req"] - x["cpu_us_per_req"] for x, y in zip(a, b)]
    drps = [100.0 * (y["rps"] / x["rps"] - 1) for x, y in zip(a, b)]
    lines.append((f"difference ({n} - 1), paired", f"{med(drps):+.1f}%", f"{min(drps):+.0f}..{max(drps):+.0f}%", f"{med(dcpu):+.1f}",
                  f"range {min(dcpu):+.0f} .. {max(dcpu):+.0f}"))
    render_simple(head, lines)
    noise = [max(r["cpu_us_per_req"] for r in rs) - min(r["cpu_us_per_req"] for r in rs) for rs in (a, b)]
    busy = [r["system_busy"] for r in a + b]
    print(f"  noise: spread of CPU µs/request across repeats {noise[0]:.0f} (1 backend) and {noise[1]:.0f} ({n} backends); "
          f"CPU from /proc ticks (10 ms) over ~{med([r['requests'] for r in a]):.0f} requests per run = "
          f"{10000.0 / max(1, med([r['requests'] for r in a])):.1f} µs/request resolution; both cores {100 * min(busy):.0f}-{100 * max(busy):.0f}% "
          f"busy (wrk + proxy + fake on 2 cores: req/s follows whatever else runs; read the paired CPU difference)")
    print(f"  check: with {n} backends {e2e['to_active']} requests went to the loaded backend, {e2e['elsewhere']} elsewhere; "
          f"idle, probing {n} backends every 1 s costs the proxy {1000 * e2e['scan_cpu_per_s']:.0f} ms CPU per second "
          f"(scanner thread)")


def render_simple(head, lines):
    widths = [max(len(x[i]) for x in [head] + lines) for i in range(len(head))]
    for k, row in enumerate([head] + lines):
        text = "  " + "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row))
        print(text.rstrip())
        if k == 0:
            print("  " + "-" * (len(text) - 2))


def run_backend_section(which, args, logdir):
    """Run and print the "failover" or "choice" section; returns its results for the JSON."""
    quick = args.quick
    if which == "failover":
        reps = max(1, args.repeats or (1 if quick else 3))
        phases = dict(before=1.0, down=1.0, after=1.5) if quick else dict(before=2.0, down=2.0, after=3.0)
        out = {}
        for extra in ((), ("--max-concurrent", "40")):
            tag = "-cap" if extra else ""
            rows = run_failover(args.proxy, logdir, repeats=reps, clients=FAILOVER_CLIENTS, delays=FAILOVER_DELAYS, extra=extra, tag=tag,
                                **phases)
            print()
            print_failover(rows, FAILOVER_CLIENTS, phases["before"], phases["down"], phases["after"], FAILOVER_DELAYS, extra)
            out["failover" + tag] = rows
        return out
    pure_repeats, pure_number = (5, 500) if quick else (7, 2000)
    pure = time_choice_pure(args.proxy, pure_repeats, pure_number)
    e2e = run_choice_e2e(args.proxy, FAITHFUL_FAKE, logdir, n_backends=CHOICE_BACKENDS, conc=16, duration=2 if quick else 4,
                         repeats=max(2, args.repeats or (3 if quick else 7)), scan_probe_s=2.0 if quick else 4.0)
    print()
    print_choice(pure, e2e, pure_repeats, pure_number)
    e2e = dict(e2e, samples={k: [{x: r.get(x) for x in ("rps", "requests", "cpu_s", "cpu_us_per_req", "system_busy", "loadgen_util")}
                                  for r in v] for k, v in e2e["samples"].items()})
    return {"choice_pure_us": pure, "choice_e2e": e2e}


# ----------------------------------------------------------------------------- main


def run_reloads(proxy_path, logdir):
    """The 30-request reload workload (tests/workload.py) sent three ways to a normal-mode fake:
    as a typical client sends it, with a naive per-request sizer, and through the proxy in auto
    mode. Returns rows of (style, llama reloads, embedding reloads, /api/show calls, requests)."""
    import http.client

    sys.path.insert(0, os.path.join(REPO, "tests"))
    from fake_ollama import FakeOllama
    import workload

    rows = []
    for style in ("client", "naive", "proxy"):
        fake = FakeOllama().start()
        proc = None
        try:
            port = fake.port
            if style == "proxy":
                port = free_port()
                proc, _ = start_server("proxy-reloads", [sys.executable, proxy_path, "--host", "127.0.0.1", "--port", str(port),
                                                         "--backend", fake.url, "--context-mode", "auto", "--log-level", "warning"],
                                       port, logdir)
            reqs = workload.requests(style)
            for path, body in reqs:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status != 200:
                    raise RuntimeError(f"reload workload: {path} answered {resp.status}")
            shows = sum(1 for r in fake.received if r.path == "/api/show")
            rows.append((style, fake.reload_count("llama3.2:latest"), fake.reload_count("nomic-embed-text:latest"), shows, len(reqs)))
        finally:
            if proc is not None:
                stop_child(proc)
            fake.stop()
    return rows


def run_openai(proxy_path, fake_path, logdir, streams=16, chunks=200, duration=3.0, repeats=3):
    """Streaming /v1/chat/completions: translated by the proxy (native /api/chat upstream) against
    Ollama's own /v1 passed through (--no-translate), both against the normal-mode fake (its /v1
    layer is not in fast mode); and streaming /v1/messages (Anthropic) and /v1/responses
    translated by the same proxy. The proxy runs in its default configuration (info logging).
    Returns {mode: (events/s, proxy CPU ms per 1000 events)} medians."""
    import asyncio

    fake_port = free_port()
    start_server("fake-v1", [sys.executable, fake_path, "--host", "127.0.0.1", "--port", str(fake_port)], fake_port, logdir)
    procs = {}
    for mode, extra in (("translated", []), ("passed through", ["--no-translate"])):
        port = free_port()
        proc, _ = start_server("proxy-" + mode.replace(" ", "-"), [sys.executable, proxy_path, "--host", "127.0.0.1", "--port", str(port),
                                                                   "--backend", f"http://127.0.0.1:{fake_port}"] + extra,
                               port, logdir)
        procs[mode] = (port, proc)
    chat = json.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    messages = json.dumps({"model": "llama3.2", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    targets = {mode: (port, proc, b"/v1/chat/completions", chat) for mode, (port, proc) in procs.items()}
    responses = json.dumps({"model": "llama3.2", "input": "hi", "stream": True}).encode()
    targets["messages translated"] = procs["translated"] + (b"/v1/messages", messages)
    targets["responses translated"] = procs["translated"] + (b"/v1/responses", responses)

    async def one_connection(port, path, body, deadline, counter):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        req = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"X-Fake-Chunks: %d\r\nContent-Length: %d\r\n\r\n%s") % (path, chunks, len(body), body)
        try:
            while time.monotonic() < deadline:
                writer.write(req)
                seen = b""
                while not seen.endswith(b"0\r\n\r\n"):
                    data = await reader.read(65536)
                    if not data:
                        return
                    if not seen and not data.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError("openai bench: %r" % data[:200])
                    counter[0] += data.count(b"data: ")
                    seen = (seen + data)[-16:]
        finally:
            writer.close()

    async def run(port, path, body):
        counter = [0]
        deadline = time.monotonic() + duration
        t0 = time.monotonic()
        await asyncio.gather(*(one_connection(port, path, body, deadline, counter) for _ in range(streams)))
        return counter[0], time.monotonic() - t0

    results = {mode: [] for mode in targets}
    for _ in range(repeats):
        for mode, (port, proc, path, body) in targets.items():
            c0 = cpu_seconds(proc.pid)
            events, elapsed = asyncio.run(run(port, path, body))
            c1 = cpu_seconds(proc.pid)
            results[mode].append((events / elapsed, (c1 - c0) * 1000.0 / max(1, events) * 1000.0))
    return {mode: (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)) for mode, rows in results.items()}


# -- instructions (valgrind callgrind): deterministic counts, unmoved by the machine's noise ----------

def callgrind_total(name, cmd, port, workload, logdir, simulate=False):
    """Instructions one server process executes from start to exit (SIGTERM) under callgrind,
    while ``workload(port)`` runs against it.  With ``simulate``, callgrind's cache and branch
    simulation also runs, and the answer is every event it counted (Ir, I1mr, D1mr, Bcm, Bim...)."""
    out = os.path.join(logdir, "callgrind.%s.out" % name)
    logpath = os.path.join(logdir, "callgrind.%s.log" % name)
    # --separate-threads: the event loop's thread (the first file) apart from the proxy's scanner
    # thread, whose probe rounds come every --scan-interval of wall time, which valgrind stretches
    # OLLAMA_PROXY_NO_REEXEC: the proxy stays the process valgrind watches (it would otherwise
    # re-execute itself as a module, outside callgrind)
    sim = ["--cache-sim=yes", "--branch-sim=yes"] if simulate else []
    proc = spawn(["valgrind", "--tool=callgrind", "--separate-threads=yes"] + sim + ["--callgrind-out-file=" + out] + cmd, logpath,
                 stdin=subprocess.DEVNULL, env=dict(os.environ, OLLAMA_PROXY_NO_REEXEC="1"))
    wait_port(port, proc, 300.0, logpath)
    time.sleep(0.5)  # let start-up work (the first probe round, if any) finish before the workload
    try:
        workload(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(300)
    path = out + "-01" if os.path.exists(out + "-01") else out  # thread 1: the event loop
    events = None
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith(("summary:", "totals:")):
                counts = [int(x) for x in line.split()[1:]]
                return dict(zip(events, counts)) if simulate else counts[0]
    raise RuntimeError("no totals in %s" % path)


def http_exchange(sock, path, body, headers=b""):
    """One request on a kept-alive socket; the whole answer read (Content-Length or chunked)."""
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
                 % (path, headers, len(body), body))
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed: %r" % data[:300])
        data += chunk
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            continue
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError("bench: %r" % head[:300])
        low = head.lower()
        if b"transfer-encoding: chunked" in low:
            if rest.endswith(b"0\r\n\r\n"):
                return rest
        else:
            length = int(re.search(rb"content-length: *(\d+)", low).group(1))
            if len(rest) >= length:
                return rest


def requests_workload(path, body, count, headers=b""):
    def run(port):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for _ in range(count):
                http_exchange(sock, path, body, headers)
    return run


def concurrent_workload(path, body, count, clients=16):
    """``count`` requests from each of ``clients`` connections at once (threads)."""
    def run(port):
        threads = [threading.Thread(target=requests_workload(path, body, count), args=(port,)) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return run


def run_instructions(proxy_path, logdir, requests=(40, 240), lines=(20, 420)):
    """Instructions per non-streamed request, per streamed NDJSON line and per translated SSE
    event, each the difference of two runs of one process under callgrind (so that start-up and
    shutdown cancel out) divided by the extra requests or lines. Only the event loop's thread is
    counted: the probes run in the scanner thread every --scan-interval of wall time, a cost per
    second, not per request (and valgrind stretches the seconds). The proxy runs in its default
    configuration (info logging, probes on, the model context policy), plus rows with one feature off.
    The floor relay and the proxy run against the lean fake; the /v1 rows against the
    normal-mode fake, whose /v1 layers give the passed-through rows their upstream."""
    py = sys.executable
    fast_port = free_port()
    start_server("fake-fast", [py, os.path.join(HERE, "fast_ollama.py"), "--host", "127.0.0.1", "--port", str(fast_port)], fast_port, logdir)
    faithful_port = free_port()
    start_server("fake-v1", [py, FAITHFUL_FAKE, "--host", "127.0.0.1", "--port", str(faithful_port)], faithful_port, logdir)

    def floor(port):
        return [py, os.path.join(HERE, "floor_relay.py"), "--host", "127.0.0.1", "--upstream", "127.0.0.1:%d" % fast_port, "--port", str(port)]

    def proxy(upstream, *extra):
        return lambda port: [py, proxy_path, "--host", "127.0.0.1", "--port", str(port), "--backend", "http://127.0.0.1:%d" % upstream] + list(extra)

    generate = BODY.encode()
    ndjson = json.dumps({"model": "llama3.2", "prompt": "hi", "stream": True}).encode()
    chat = json.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    messages = json.dumps({"model": "llama3.2", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
    responses = json.dumps({"model": "llama3.2", "input": "hi", "stream": True}).encode()
    rows = [  # (row, unit, command maker, path, body, what varies: "requests", "lines" per request, or "c16" requests)
        ("floor relay", "request", floor, b"/api/generate", generate, "requests"),
        ("proxy, defaults", "request", proxy(fast_port), b"/api/generate", generate, "requests"),
        ("floor relay, 16 clients at once", "request", floor, b"/api/generate", generate, "c16"),
        ("proxy, defaults, 16 clients at once", "request", proxy(fast_port), b"/api/generate", generate, "c16"),
        ("proxy, --log-level warning", "request", proxy(fast_port, "--log-level", "warning"), b"/api/generate", generate, "requests"),
        ("proxy, --scan-interval 0 (no probes)", "request", proxy(fast_port, "--scan-interval", "0"), b"/api/generate", generate, "requests"),
        ("proxy, no modifiers", "request", proxy(fast_port, "--context-mode", "off", "--num-predict", "0"), b"/api/generate", generate, "requests"),
        ("floor relay", "NDJSON line", floor, b"/api/generate", ndjson, "lines"),
        ("proxy, defaults", "NDJSON line", proxy(fast_port), b"/api/generate", ndjson, "lines"),
        ("/v1/chat/completions passed through", "SSE event", proxy(faithful_port, "--no-translate"), b"/v1/chat/completions", chat, "lines"),
        ("/v1/chat/completions translated", "SSE event", proxy(faithful_port), b"/v1/chat/completions", chat, "lines"),
        ("/v1/messages translated", "SSE event", proxy(faithful_port), b"/v1/messages", messages, "lines"),
        ("/v1/responses translated", "SSE event", proxy(faithful_port), b"/v1/responses", responses, "lines"),
    ]
    out = []
    for i, (row, unit, make, path, body, varies) in enumerate(rows):
        totals = []
        for n in (lines if varies == "lines" else requests):
            port = free_port()
            if varies == "requests":
                work = requests_workload(path, body, n)
            elif varies == "c16":
                work = concurrent_workload(path, body, n // 8)
            else:
                work = requests_workload(path, body, 4, b"X-Fake-Chunks: %d\r\n" % n)
            totals.append(callgrind_total("%d-%d" % (i, n), make(port), port, work, logdir))
        extra = {"requests": requests[1] - requests[0], "c16": 16 * (requests[1] // 8 - requests[0] // 8),
                 "lines": 4 * (lines[1] - lines[0])}[varies]
        out.append((row, unit, (totals[1] - totals[0]) / extra))
        print("  %-40s %12.0f instructions per %s" % (row, out[-1][2], unit), flush=True)
    # Instructions are not all of the CPU time: callgrind's cache and branch simulation (the same
    # deterministic counting) shows how well they run, per non-streamed request.
    simulated = []
    for name, make in (("floor relay", floor), ("proxy, defaults", proxy(fast_port))):
        counts = []
        for n in requests:
            port = free_port()
            counts.append(callgrind_total("sim-%s-%d" % (name[:5], n), make(port), port, requests_workload(b"/api/generate", generate, n), logdir, simulate=True))
        per = {k: (counts[1][k] - counts[0][k]) / (requests[1] - requests[0]) for k in counts[0]}
        simulated.append((name, per))
        print("  %-40s %s" % (name, " ".join("%s %.0f" % kv for kv in sorted(per.items()))), flush=True)
    return out, simulated


#: issue 14: instructions of the default configuration per unit, at most this many times the floor's
INSTRUCTION_TARGETS = {"request": 1.10, "NDJSON line": 1.05}


def print_instructions(result):
    rows, simulated = result
    print("instructions (valgrind callgrind, difference of two runs; the proxy in its default configuration unless the row says):")
    concurrent = ", 16 clients at once"
    floor = {(unit, row.endswith(concurrent)): per for row, unit, per in rows if row.startswith("floor relay")}
    passthrough = next((per for row, unit, per in rows if row.endswith("passed through")), None)
    for row, unit, per in rows:
        ref = floor.get((unit, row.endswith(concurrent)), passthrough)
        rel = "" if ref in (None, 0) or row.startswith("floor relay") or row.endswith("passed through") else \
            "  %.2f x %s" % (per / ref, "the floor" if (unit, False) in floor else "passed through")
        limit = INSTRUCTION_TARGETS.get(unit) if row.startswith("proxy, defaults") and ref is not passthrough else None
        if limit is not None:  # issue 14, for the default configuration
            rel += "  (target <= %.2f: %s)" % (limit, "ok" if per <= limit * ref else "MISS")
        print("  %-40s %-12s %12.0f%s" % (row, unit, per, rel))
    if simulated:
        print("how they run, per non-streamed request (callgrind --cache-sim --branch-sim: level-1 instruction and data cache misses,")
        print("mispredicted conditional and indirect branches; each costs the CPU some 10-20 cycles where an instruction costs about one):")
        print(f"  {'':<40} {'instructions':>18} {'I1 misses':>16} {'D1 misses':>16} {'mispredicted':>16}")
        base = simulated[0][1]
        for name, per in simulated:
            values = (per["Ir"], per["I1mr"], per["D1mr"] + per["D1mw"], per["Bcm"] + per["Bim"])
            if per is base:
                print("  %-40s %18.0f %16.0f %16.0f %16.0f" % ((name,) + values))
            else:
                refs = (base["Ir"], base["I1mr"], base["D1mr"] + base["D1mw"], base["Bcm"] + base["Bim"])
                print("  %-40s %18s %16s %16s %16s" % ((name,) + tuple("%.0f (%.2fx)" % (v, v / r) for v, r in zip(values, refs))))


def print_openai(result):
    print("/v1/chat/completions, /v1/messages and /v1/responses streamed (16 streams x 200 chunks, normal-mode fake, proxy defaults):")
    print(f"  {'':<34} {'events/s':>10} {'proxy CPU ms / 1000 events':>28}")
    for mode, (eps, cpu) in result.items():
        print(f"  {mode:<34} {eps:>10.0f} {cpu:>28.1f}")


def print_reloads(rows):
    print("reload workload (30 requests: a growing conversation, one-shot prompts, embeddings):")
    print(f"  {'sent':<34} {'llama3.2 reloads':>17} {'embed reloads':>14} {'/api/show calls':>16} {'metadata hit rate':>18}")
    names = {"client": "directly (client's own num_ctx)", "naive": "directly (naive per-request sizer)",
             "proxy": "through the proxy (auto mode)"}
    for style, llama, embed, shows, n in rows:
        hit = f"{100.0 * (1 - shows / n):.0f}%" if style == "proxy" else "-"
        print(f"  {names[style]:<34} {llama:>17} {embed:>14} {shows:>16} {hit:>18}")


def main(argv=None):
    ap = argparse.ArgumentParser(description="ollama-proxy benchmark (direct vs floor relay vs proxy)")
    ap.add_argument("--quick", action="store_true", help="2 repeats, shorter runs (~2 min)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats (default 5, --quick 2)")
    ap.add_argument("--only", choices=("nonstream", "stream", "reloads", "openai", "failover", "choice", "instructions"), help="run only one section")
    ap.add_argument("--json", metavar="FILE", help="also write the JSON result to FILE")
    ap.add_argument("--ns-duration", type=int, default=None, help="seconds per wrk run (default 4, quick 2)")
    ap.add_argument("--stream-duration", type=float, default=None,
                    help="seconds per streaming run (default 3, quick 1)")
    ap.add_argument("--fake", default=os.path.join(HERE, "fast_ollama.py"))
    ap.add_argument("--proxy", default=os.path.join(REPO, "ollama_proxy.py"))
    ap.add_argument("--standin", action="store_true", help="use a floor relay in place of the proxy")
    args = ap.parse_args(argv)

    repeats = max(1, args.repeats or (2 if args.quick else 5))
    ns_dur = max(1, args.ns_duration or (2 if args.quick else 4))
    st_dur = max(0.2, args.stream_duration or (1.0 if args.quick else 3.0))
    if args.only in ("reloads", "openai", "failover", "choice", "instructions"):
        logdir = tempfile.mkdtemp(prefix="ollama-proxy-bench-")
        t_begin = time.monotonic()
        extra = None
        try:
            if args.only == "reloads":
                print_reloads(run_reloads(args.proxy, logdir))
            elif args.only == "openai":
                print_openai(run_openai(args.proxy, FAITHFUL_FAKE, logdir))
            elif args.only == "instructions":
                print_instructions(run_instructions(args.proxy, logdir))
            else:
                raise_nofile()
                print(f"ollama-proxy bench --only {args.only}: python {sys.version.split()[0]}; logs in {logdir}", flush=True)
                extra = run_backend_section(args.only, args, logdir)
        finally:
            kill_children()
        print(f"elapsed {time.monotonic() - t_begin:.0f}s")
        if extra is not None and args.json:
            with open(args.json, "w") as f:
                json.dump(extra, f, indent=1, default=str)
                f.write("\n")
        return 0
    ns_runs = () if args.only in ("stream", "reloads", "openai", "failover", "choice") else NS_CONC
    st_runs = () if args.only in ("nonstream", "reloads", "openai", "failover", "choice") else STREAM_SCENARIOS
    if ns_runs and not shutil.which("wrk"):
        ap.error("wrk not found in PATH (needed for the non-streaming section)")
    if not os.path.exists(args.fake):
        ap.error(f"fake Ollama not found: {args.fake}")
    standin = args.standin or not os.path.exists(args.proxy)

    nofile = raise_nofile()
    logdir = tempfile.mkdtemp(prefix="ollama-proxy-bench-")
    lua = os.path.join(logdir, "post.lua")
    with open(lua, "w") as f:
        f.write(LUA)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    py = sys.executable
    t_begin = time.monotonic()
    backend_results = {}
    try:
        ports = {}
        ports["direct"] = free_port()
        fake, _ = start_server("fake", [py, args.fake, "--host", "127.0.0.1", "--port", str(ports["direct"])],
                               ports["direct"], logdir)
        upstream = f"127.0.0.1:{ports['direct']}"
        floor_cmd = [py, os.path.join(HERE, "floor_relay.py"), "--host", "127.0.0.1", "--upstream", upstream, "--port"]
        ports["floor"] = free_port()
        floor, _ = start_server("floor", floor_cmd + [str(ports["floor"])], ports["floor"], logdir)
        ports["proxy"] = free_port()
        if standin:
            proxy_cmd = floor_cmd + [str(ports["proxy"])]
        else:
            # The default configuration, as users run it: info logging, probes every 5 s (the lean
            # fake answers /api/tags, /api/ps and /api/show), the model context policy, num_predict.
            proxy_cmd = [py, args.proxy, "--host", "127.0.0.1", "--port", str(ports["proxy"]),
                         "--backend", "http://" + upstream]
        # From cached bytecode, as an install runs it (pip, or compileall in the install steps): it is
        # compiled here, beside the file (a __pycache__ that git ignores). (Not PYTHONPYCACHEPREFIX:
        # the standard library's bytecode is not in such a cache, so every module would be compiled.)
        if not standin:
            subprocess.run([py, "-m", "compileall", "-q", args.proxy], check=True, stdout=subprocess.DEVNULL)
        proxy, _ = start_server("proxy", proxy_cmd, ports["proxy"], logdir)
        pids = {"direct": fake.pid, "floor": floor.pid, "proxy": proxy.pid}
        for t in TARGETS:
            try:
                sanity_check(t, ports[t])
            except (OSError, ValueError, RuntimeError) as exc:
                hint = " (try --standin to bench the floor relay in its place)" if t == "proxy" else ""
                raise SystemExit(f"sanity check of {t} failed: {exc!r}{hint}; logs in {logdir}") from None
        print(f"ollama-proxy bench: python {sys.version.split()[0]}, {repeats} repeats, wrk {ns_dur}s, "
              f"streams {st_dur:.1f}s, nofile {nofile}"
              f"{', PROXY IS A STAND-IN (floor relay)' if standin else ''}; logs in {logdir}", flush=True)
        if ns_runs:  # warm-up, not measured
            for t in TARGETS:
                run_wrk(ports[t], 16, 1, lua, pids[t], fake.pid)

        raw = []
        for rep in range(repeats):
            cur = {t: {} for t in TARGETS}
            raw.append(cur)
            for c in ns_runs:
                for t in TARGETS:
                    r = run_wrk(ports[t], c, ns_dur, lua, pids[t], fake.pid)
                    cur[t][f"ns_c{c}"] = r
                    progress(rep, f"ns_c{c}", t, f"{fmt(r['rps'])} req/s p50 {fmt(r['p50_ms'])} ms")
            for name, streams, chunks, delay in st_runs:
                for t in TARGETS:
                    r = run_stream(ports[t], streams, chunks, delay, st_dur, pids[t], fake.pid, logdir,
                                   sample_rss=(name == "paced_c256"), ref_port=ports["direct"],
                                   ref_streams=max(8, streams // 8))
                    cur[t][name] = r
                    progress(rep, name, t, f"{fmt(r['chunks_per_s'])} chunks/s ttfc {fmt(r.get('ttfc_ms'))} ms "
                                           f"({r['streams']} streams, client {100 * r['client_util']:.0f}%)")
            for name, proc in (("fake", fake), ("floor", floor), ("proxy", proxy)):
                if proc.poll() is not None:
                    log_text = tail(os.path.join(logdir, name + ".log"))
                    raise RuntimeError(f"{name} exited ({proc.returncode}); log:\n{log_text}")
        peak = {t: status_kb(pids[t], "VmHWM") / 1024.0 for t in TARGETS}
    finally:
        kill_children()

    samples = derive(raw, ns_runs, st_runs)
    table = build_rows(samples, peak, ns_runs, st_runs)
    notes = collect_notes(raw, ns_runs, st_runs)
    if standin:
        notes.insert(0, "the 'proxy' column is a second floor relay (ollama_proxy.py missing or --standin)")
    notes.append("direct column of CPU/RSS rows = the fake Ollama process itself; of 'added delay/chunk' rows ="
                 " the direct reference streams against direct target streams, i.e. the noise of that measurement")
    print()
    print(render(table))
    print()
    for n in notes:
        print("note: " + n)
    misses = [e["label"] + (" (the floor too)" if e["status"] != "MISS" else "") for e in table if (e["status"] or "").startswith("MISS")]
    n_ok = sum(1 for e in table if e["status"] == "ok")
    print(f"targets: {n_ok} ok, {len(misses)} MISS" + (" (" + "; ".join(misses) + ")" if misses else ""))
    if not args.only and not standin:
        print()
        print_reloads(run_reloads(args.proxy, logdir))
        print()
        try:
            print_openai(run_openai(args.proxy, FAITHFUL_FAKE, logdir))
        finally:
            kill_children()
        for section in ("failover", "choice"):
            print()
            try:
                backend_results[section] = run_backend_section(section, args, logdir)
            finally:
                kill_children()
    print(f"elapsed {time.monotonic() - t_begin:.0f}s")
    result = {
        "meta": {
            "python": sys.version.split()[0], "repeats": repeats, "ns_duration_s": ns_dur,
            "stream_duration_s": st_dur, "proxy_standin": standin, "cpus": os.cpu_count(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
        "metrics": table,
        "notes": notes,
        "raw": raw,
    }
    result.update(backend_results)
    keys = ("key", "unit", "direct", "floor", "proxy", "proxy/direct", "proxy/floor", "target", "status")
    rows = [json.dumps({k: rounded(e[k]) for k in keys}) for e in table]
    print()
    print('{"meta": ' + json.dumps(result["meta"]) + ',\n "metrics": [\n  ' + ",\n  ".join(rows)
          + '],\n "notes": ' + json.dumps(notes) + "}")
    if args.json:  # the file also has the per-repeat samples and the raw run results
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return 0


def progress(rep, name, target, text):
    print(f"  [rep {rep + 1}] {name:<11} {target:<6} {text}", flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        kill_children()
        sys.exit(130)
