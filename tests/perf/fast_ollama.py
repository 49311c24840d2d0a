"""A lean fake Ollama for the benchmark's "direct" baseline: precomputed answers, no h11.

    python3 tests/perf/fast_ollama.py --port 11434 [--host 127.0.0.1] [--model llama3.2]

A plain asyncio.Protocol server with its own small parser: request line, headers and a
Content-Length body; keep-alive, pipelined or not; answers from precomputed bytes:
``GET|HEAD /``, ``GET|HEAD /api/version``, ``POST /api/generate`` and ``POST /api/chat``
(NDJSON stream by default, one JSON object when the body contains ``"stream": false`` or
``"stream":false``), and what a proxy's probes and metadata lookups ask (``GET /api/tags``,
``GET /api/ps`` with nothing loaded, ``POST /api/show`` of any name: the one model), those
bodies made once at start by the faithful fake's own handlers; everything else 404.  No faults, no JSON parsing, nothing recorded (only
connections are counted), so memory does not grow with the request count.  The
``X-Fake-Chunks`` and ``X-Fake-Delay-Ms`` request headers work as in tests/fake_ollama.py,
whose JSON encoding and constants it shares.  Only the benchmark uses it; the tests use the
faithful fake.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import sys
import threading
import time
from typing import List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fake_ollama import (  # noqa: E402
    DEFAULT_MODELS, FakeOllamaApp, Received, RequestContext, copy_model,
    CT_GIN_PLAIN, CT_JSON, CT_NDJSON, CT_TEXT, DEFAULT_CHUNKS, DEFAULT_VERSION, MAX_CHUNKS, MAX_HEAD, _reason, go_json, ndjson_line,
    now_rfc3339,
)

# A plain asyncio.Protocol with its own small parser. Answers are precomputed bytes, cached per
# chunk count; with no delay every line is its own write. Requests that arrive while a delayed
# answer is being sent wait in a queue, in order.


class FastResponder:
    """Precomputed answers for fast mode."""

    def __init__(self, model: str, version: str) -> None:
        self.model = model
        created = now_rfc3339()
        self.created = created
        self.root = self.whole(200, CT_TEXT, b"Ollama is running")
        self.version = self.whole(200, CT_JSON, go_json({"version": version}))
        self.not_found = self.whole(404, CT_GIN_PLAIN, b"404 page not found")
        template = next(m for m in DEFAULT_MODELS if m.name == "llama3.2:latest")
        name = model if ":" in model else model + ":latest"
        app = FakeOllamaApp([copy_model(template, name=name)], version=version)

        def answer(method: str, path: str, body: bytes = b"") -> Tuple[bytes, bytes]:
            reply = app.handle(Received(0, method, path, [], body, "1.1"), RequestContext())
            return self.whole(reply.status, reply.content_type, reply.body)

        self.tags = answer("GET", "/api/tags")
        self.ps = answer("GET", "/api/ps")
        self.show = answer("POST", "/api/show", go_json({"model": name}))
        self._cache: dict = {}

    @staticmethod
    def whole(status: int, content_type: str, body: bytes) -> Tuple[bytes, bytes]:
        """(head, body) with Content-Length."""
        head = ("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                % (status, _reason(status).decode(), content_type, len(body))).encode()
        return head, body

    def _lines(self, chat: bool, n: int) -> List[bytes]:
        out = []
        for i in range(n):
            if chat:
                obj = {"model": self.model, "created_at": self.created,
                       "message": {"role": "assistant", "content": "tok%d " % i}, "done": False}
            else:
                obj = {"model": self.model, "created_at": self.created, "response": "tok%d " % i,
                       "done": False}
            out.append(ndjson_line(obj))
        final: dict = {"model": self.model, "created_at": self.created}
        if chat:
            final["message"] = {"role": "assistant", "content": ""}
        else:
            final["response"] = ""
        final.update(done=True, done_reason="stop")
        if not chat:
            final["context"] = [1, 2, 3]
        final.update(total_duration=12_345_678, load_duration=1_234_567, prompt_eval_count=8,
                     prompt_eval_duration=2_000_000)
        if n:
            final.update(eval_count=n, eval_duration=n * 1_000_000)
        out.append(ndjson_line(final))
        return out

    def stream(self, chat: bool, n: int, chunked: bool) -> List[bytes]:
        """Writes for a streamed answer: head, one per line, then the terminator."""
        key = ("s", chat, n, chunked)
        cached = self._cache.get(key)
        if cached is None:
            lines = self._lines(chat, n)
            if chunked:
                head = (b"HTTP/1.1 200 OK\r\nContent-Type: " + CT_NDJSON.encode()
                        + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
                writes = [head] + [b"%x\r\n%s\r\n" % (len(x), x) for x in lines]
                writes[-1] += b"0\r\n\r\n"
            else:  # HTTP/1.0: close-delimited
                writes = [b"HTTP/1.0 200 OK\r\nContent-Type: " + CT_NDJSON.encode()
                          + b"\r\nConnection: close\r\n\r\n"] + lines
            cached = self._cache[key] = writes
        return cached

    def single(self, chat: bool, n: int) -> List[bytes]:
        key = ("1", chat, n)
        cached = self._cache.get(key)
        if cached is None:
            lines = self._lines(chat, n)
            final = json.loads(lines[-1])
            text = "".join("tok%d " % i for i in range(n))
            if chat:
                final["message"]["content"] = text
            else:
                final["response"] = text
            head, body = self.whole(200, CT_JSON, go_json(final))
            cached = self._cache[key] = [head + body]
        return cached


class FastProtocol(asyncio.Protocol):
    """One connection in fast mode."""

    def __init__(self, fake: "FastOllama") -> None:
        self.fake = fake
        self.responder: FastResponder = fake.responder
        self.transport: Optional[asyncio.Transport] = None
        self.buf = bytearray()
        self.queue: collections.deque = collections.deque()
        self.task: Optional[asyncio.Task] = None
        self.conn_id = 0
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn_id = self.fake.new_connection()
        self.fake.conns.add(self)

    def eof_received(self) -> Optional[bool]:
        if not self.closing:
            self.fake.peer_closed += 1
        self.closing = True
        return None  # close the transport

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if exc is not None and not self.closing:
            self.fake.peer_closed += 1
        self.closing = True
        self.fake.conns.discard(self)
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while not self.closing:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._fail(431)
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                self._fail(400)
                return
            method, target, version = parts
            keep = version == b"HTTP/1.1"
            length, chunks, delay = 0, DEFAULT_CHUNKS, 0.0
            try:
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection":
                        token = value.strip().lower()
                        keep = token != b"close" and (keep or token == b"keep-alive")
                    elif name == b"transfer-encoding":
                        self._fail(501)
                        return
                    elif name == b"x-fake-chunks":
                        chunks = max(0, min(MAX_CHUNKS, int(value)))
                    elif name == b"x-fake-delay-ms":
                        delay = max(0.0, float(value)) / 1000.0
            except ValueError:
                self._fail(400)
                return
            total = end + 4 + length
            if len(buf) < total:
                return
            body = bytes(buf[end + 4:total])
            del buf[:total]
            request = (method, target.split(b"?", 1)[0], version == b"HTTP/1.1", keep, chunks,
                       delay, body)
            self._dispatch(request)

    def _plan(self, request: tuple) -> Tuple[List[bytes], float, bool]:
        """(writes, delay between writes, pre-delay flag) for one request."""
        method, path, is11, keep, chunks, delay, body = request
        r = self.responder
        if path in (b"/api/chat", b"/api/generate") and method == b"POST":
            chat = path == b"/api/chat"
            if b'"stream": false' in body or b'"stream":false' in body:
                return r.single(chat, chunks), delay * (chunks + 1), True
            return r.stream(chat, chunks, is11), delay, False
        if path == b"/" and method in (b"GET", b"HEAD"):
            head, data = r.root
        elif path == b"/api/version" and method in (b"GET", b"HEAD"):
            head, data = r.version
        elif path == b"/api/tags" and method in (b"GET", b"HEAD"):
            head, data = r.tags
        elif path == b"/api/ps" and method == b"GET":
            head, data = r.ps
        elif path == b"/api/show" and method == b"POST":
            head, data = r.show
        else:
            head, data = r.not_found
        return [head if method == b"HEAD" else head + data], 0.0, False

    def _dispatch(self, request: tuple) -> None:
        """Answer at once when nothing is queued and no delay is asked; else queue it."""
        if self.task is None and not self.queue:
            writes, delay, pre = self._plan(request)
            if delay <= 0:
                write = self.transport.write
                for chunk in writes:
                    write(chunk)
                if not (request[2] and request[3]):
                    self.closing = True
                    self.transport.close()
                return
        self.queue.append(request)
        if self.task is None:
            self.task = asyncio.ensure_future(self._drain_queue())

    async def _drain_queue(self) -> None:
        """Answer queued requests in order, sleeping where a delay was asked."""
        try:
            while self.queue and not self.closing:
                request = self.queue.popleft()
                writes, delay, pre = self._plan(request)
                if pre:
                    await asyncio.sleep(delay)
                self.transport.write(writes[0])  # the head (and the whole body when not streamed)
                for chunk in writes[1:]:
                    if delay > 0:
                        await asyncio.sleep(delay)
                    self.transport.write(chunk)
                if not (request[2] and request[3]):
                    self.closing = True
                    self.transport.close()
        finally:
            self.task = None

    def _fail(self, status: int) -> None:
        head, body = FastResponder.whole(status, CT_TEXT,
                                         ("%d %s" % (status, _reason(status).decode())).encode())
        self.transport.write(head + body)
        self.closing = True
        self.transport.close()


class FastOllama:
    """The server, on an event loop in a daemon thread: ``start()``, ``port``, ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, model: str = "llama3.2", version: str = DEFAULT_VERSION) -> None:
        self.host = host
        self.port = port
        self.responder = FastResponder(model, version)
        self.conns: set = set()
        self.connections_accepted = 0
        self.peer_closed = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._thread: Optional[threading.Thread] = None
        self._started = threading.Event()
        self._error: Optional[BaseException] = None

    def new_connection(self) -> int:
        self.connections_accepted += 1
        return self.connections_accepted

    def start(self) -> "FastOllama":
        self._thread = threading.Thread(target=self._run, name="fast-ollama", daemon=True)
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(
                loop.create_server(lambda: FastProtocol(self), self.host, self.port, reuse_address=True))
            self.port = self._server.sockets[0].getsockname()[1]
        except OSError as exc:
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for proto in list(self.conns):
            if proto.transport is not None:
                proto.transport.abort()
        await asyncio.sleep(0.01)  # the aborted transports close their sockets

    def __enter__(self) -> "FastOllama":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="fast_ollama.py", description="A lean fake Ollama for benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--model", default="llama3.2", help="the model name the answers carry")
    parser.add_argument("--ollama-version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    fake = FastOllama(args.host, args.port, args.model, args.ollama_version)
    try:
        fake.start()
    except OSError as exc:
        print("fast_ollama: cannot listen on %s:%d: %s" % (args.host, args.port, exc), file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("fast ollama listening on http://%s:%d" % (args.host, fake.port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
