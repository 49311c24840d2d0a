"""Streaming load client used by bench.py (runs as its own process).

Opens N keep-alive connections to 127.0.0.1:PORT (in batches, each warmed up with
one tiny streaming request; by default all at once, so that a pooling proxy holds as
many upstream connections as the floor relay, which opens one per client connection:
the benchmark measures relaying, not connection set-up), prints ``ready``, waits for ``go`` on stdin, then every
connection runs streaming ``POST /api/generate`` requests back to back until the
duration is over (a stream started before the deadline runs to its end). For each
stream it records the arrival time of every NDJSON line relative to the moment the
request was written. Prints one JSON object with the summary on stdout.

The HTTP parsing is deliberately minimal (status line, a few headers, chunked or
Content-Length framing, newline counting) so the client stays cheap.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time

BODY = b'{"model":"llama3.2","prompt":"hi","stream":true}'
SIZE, DATA, DATA_CRLF, TRAILER = 0, 1, 2, 3


def build_request(port, path, chunks, delay_ms):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-Fake-Chunks: {chunks}\r\nX-Fake-Delay-Ms: {delay_ms}\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


class StreamConn(asyncio.Protocol):
    """One keep-alive connection; request() returns a future resolved to True/False."""

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.closed = False
        self.waiter = None
        self.times = []
        self.error = ""
        self.in_body = False
        self.mode = ""

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.in_body and self.mode == "eof":
                self.waiter.set_result(True)
            else:
                self.error = "connection closed mid-response"
                self.waiter.set_result(False)

    def request(self, data):
        self.waiter = self.loop.create_future()
        self.times = []
        self.head = b""
        self.buf = b""
        self.in_body = False
        self.mode = ""
        self.state = SIZE
        self.remaining = 0
        self.must_close = False
        self.t0 = time.perf_counter()
        self.transport.write(data)
        return self.waiter

    def _finish(self, ok, error=""):
        if self.waiter is not None and not self.waiter.done():
            self.error = error
            self.waiter.set_result(ok)
        if self.must_close or not ok:
            self.closed = True
            self.transport.close()

    def data_received(self, data):
        t = time.perf_counter() - self.t0
        if self.waiter is None or self.waiter.done():
            return
        if not self.in_body:
            head = self.head + data
            i = head.find(b"\r\n\r\n")
            if i < 0:
                self.head = head
                return
            self.in_body = True
            data = head[i + 4:]
            lines = head[:i].split(b"\r\n")
            status = lines[0].split(None, 2)
            if len(status) < 2 or status[1] != b"200":
                self._finish(False, "status " + lines[0].decode("latin-1"))
                return
            hdrs = {}
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                hdrs[k.strip().lower()] = v.strip().lower()
            self.must_close = hdrs.get(b"connection") == b"close" or status[0] == b"HTTP/1.0"
            if b"chunked" in hdrs.get(b"transfer-encoding", b""):
                self.mode = "chunked"
            elif b"content-length" in hdrs:
                self.mode = "length"
                self.remaining = int(hdrs[b"content-length"])
            else:
                self.mode = "eof"
                self.must_close = True
            if not data:
                if self.mode == "length" and self.remaining == 0:
                    self._finish(True)
                return
        if self.mode == "chunked":
            n, done = self._chunked(data)
        else:
            n = data.count(b"\n")
            done = False
            if self.mode == "length":
                self.remaining -= len(data)
                done = self.remaining <= 0
        if n:
            self.times.extend([t] * n)
        if done:
            self._finish(True)

    def _chunked(self, data):
        buf = self.buf + data if self.buf else data
        pos, end, n = 0, len(buf), 0
        state, remaining = self.state, self.remaining
        while pos < end:
            if state == SIZE:
                j = buf.find(b"\r\n", pos)
                if j < 0:
                    break
                size = int(buf[pos:j].split(b";", 1)[0], 16)
                pos = j + 2
                if not size:
                    state = TRAILER
                elif pos + size + 2 <= end:  # fast path: whole chunk and its CRLF are here
                    n += buf.count(b"\n", pos, pos + size)
                    pos += size + 2
                else:
                    state, remaining = DATA, size
            elif state == DATA:
                take = min(remaining, end - pos)
                n += buf.count(b"\n", pos, pos + take)
                pos += take
                remaining -= take
                if not remaining:
                    state = DATA_CRLF
            elif state == DATA_CRLF:
                if end - pos < 2:
                    break
                pos += 2
                state = SIZE
            else:  # TRAILER: skip trailer lines up to the empty line
                j = buf.find(b"\r\n", pos)
                if j < 0:
                    break
                if j == pos:
                    self.buf, self.state = b"", SIZE
                    return n, True
                pos = j + 2
        self.buf, self.state, self.remaining = buf[pos:], state, remaining
        return n, False


async def within(awaitable, timeout):
    """Result of awaitable, or None after timeout seconds (no TimeoutError: it is not
    the builtin one before Python 3.11)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        return None
    return task.result()


async def open_conn(loop, port, timeout):
    pair = await within(loop.create_connection(lambda: StreamConn(loop), "127.0.0.1", port), timeout)
    if pair is None:
        raise OSError("connect timed out")
    return pair[1]


async def run(args):
    loop = asyncio.get_running_loop()
    total = args.streams + args.ref_streams
    # reference workers (direct to --ref-port) are spread evenly among the target workers,
    # so with --stagger-ms both kinds start at interleaved phases of the fake's pacing
    ref_slots = {int((k + 0.5) * total / args.ref_streams) for k in range(args.ref_streams)} if args.ref_streams else set()
    plan = []
    for i in range(total):
        port = args.ref_port if i in ref_slots else args.port
        plan.append((port, i in ref_slots, build_request(port, args.path, args.chunks, args.delay_ms)))
    conns = [None] * total
    errors = []
    sem = asyncio.Semaphore(args.batch)

    async def prepare(i):
        port = plan[i][0]
        async with sem:
            try:
                conn = await open_conn(loop, port, args.timeout)
                ok = await within(conn.request(build_request(port, args.path, 1, 0)), args.timeout)
            except OSError as exc:
                errors.append(f"warm-up: {exc!r}")
                return
            if ok:
                conns[i] = conn
            else:
                errors.append("warm-up: " + (conn.error or "timed out"))
                conn.transport.abort()

    await asyncio.gather(*(prepare(i) for i in range(total)))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if not line.startswith("go"):
        return {"error": "no go signal"}

    streams, ref_streams = [], []
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.perf_counter()
    deadline = t_start + args.duration
    hard_deadline = deadline + args.timeout
    t_last = [t_start]

    async def work(i):
        port, is_ref, req = plan[i]
        sink = ref_streams if is_ref else streams
        conn = conns[i]
        if args.stagger_ms:
            await asyncio.sleep(args.stagger_ms / 1000.0 * i / total)
        while time.perf_counter() < deadline:
            try:
                if conn is None or conn.closed:
                    conn = await open_conn(loop, port, args.timeout)
                budget = max(0.1, hard_deadline - time.perf_counter())
                ok = await within(conn.request(req), budget)
            except OSError as exc:
                errors.append(f"stream: {exc!r}")
                return
            if not ok:
                errors.append("stream: " + (conn.error or "timed out"))
                conn.transport.abort()
                return
            sink.append(conn.times)
            if not is_ref:
                t_last[0] = max(t_last[0], time.perf_counter())

    await asyncio.gather(*(work(i) for i in range(total)))
    elapsed = t_last[0] - t_start  # until the last target stream ended
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    for conn in conns:
        if conn is not None and conn.transport is not None:
            conn.transport.close()
    wall = time.perf_counter() - t_start
    out = summarize(streams, elapsed)
    out.update({
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "client_cpu_s": cpu,
        "client_util": cpu / wall if wall > 0 else 0.0,
    })
    if args.ref_streams:
        out["ref"] = summarize(ref_streams, elapsed)
    return out


def summarize(streams, elapsed):
    streams = [s for s in streams if s]
    total = sum(len(s) for s in streams)
    out = {
        "streams": len(streams),
        "elapsed_s": elapsed,
        "chunks": total,
        "chunks_per_s": total / elapsed if elapsed > 0 else 0.0,
    }
    if not streams:
        return out
    lengths = [len(s) for s in streams]
    common = max(set(lengths), key=lengths.count)
    full = [s for s in streams if len(s) == common]
    out["chunks_per_stream"] = common
    out["odd_length_streams"] = len(streams) - len(full)
    out["ttfc_ms"] = statistics.median(s[0] for s in streams) * 1000.0
    if common > 2:
        # per stream least-squares line arrival_i = a + b*i over the chunk index i:
        # a = offset shared by every chunk, b = pacing; medians over streams. Unlike
        # raw arrival times, a does not accumulate the fake's timer drift over i.
        xm = (common - 1) / 2.0
        sxx = sum((x - xm) ** 2 for x in range(common))
        fits = []
        for s in full:
            ym = sum(s) / common
            b = sum((x - xm) * (y - ym) for x, y in enumerate(s)) / sxx
            fits.append((ym - b * xm, b))
        out["fit_offset_ms"] = statistics.median(f[0] for f in fits) * 1000.0
        out["fit_gap_ms"] = statistics.median(f[1] for f in fits) * 1000.0
    # per chunk index: median over streams of the arrival time since the request
    out["chunk_median_ms"] = [
        round(statistics.median(s[i] for s in full) * 1000.0, 4) for i in range(common)
    ]
    return out


def main():
    p = argparse.ArgumentParser(description="streaming load client for bench.py")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/api/generate")
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--chunks", type=int, default=50)
    p.add_argument("--delay-ms", type=int, default=20)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--batch", type=int, default=256, help="connections opened at once")
    p.add_argument("--ref-port", type=int, default=0, help="port for the reference streams (direct)")
    p.add_argument("--ref-streams", type=int, default=0,
                   help="extra streams to --ref-port in the same run, as a paired reference")
    p.add_argument("--stagger-ms", type=float, default=0.0,
                   help="spread the first stream starts evenly over this many ms")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, (args.streams + args.ref_streams) * 2 + 256))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    result = asyncio.run(run(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
