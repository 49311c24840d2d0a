"""Fixtures: a fake Ollama on an ephemeral port, and the real proxy App in a thread.

The proxy runs as the real ``App`` on its own event loop in a daemon thread, bound to
127.0.0.1 port 0; tests talk to it over real sockets with independent clients
(http.client, raw sockets, h11, the ollama and openai libraries).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ollama_proxy  # noqa: E402
from fake_ollama import FakeOllama  # noqa: E402


class ProxyThread:
    """The real App on its own loop in a thread; ``stop()`` runs its graceful shutdown."""

    def __init__(self, config: ollama_proxy.Config) -> None:
        self.config = config
        self.app = ollama_proxy.App(config)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="proxy", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _main(self) -> None:
        await self.app.start()
        self._ready.set()
        await self.app.serve_until_stopped()

    def start(self) -> "ProxyThread":
        self.thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    @property
    def port(self) -> int:
        return self.app.port

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.app.port

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.app.request_shutdown)
            self.thread.join(self.config.shutdown_grace + 10)

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the proxy's loop and return its result (for inspecting state)."""
        result: list = []
        done = threading.Event()

        def run() -> None:
            result.append(fn(*args))
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(5)
        return result[0]


def make_config(backend_url, *args: str, **overrides) -> ollama_proxy.Config:
    """A Config as the CLI would build it, for 127.0.0.1 port 0: one backend URL, a list of
    them (each a ``--backend`` value, ``NAME=URL`` allowed), or none; more flags in ``args``."""
    urls = [backend_url] if isinstance(backend_url, str) else list(backend_url or [])
    argv = ["--host", "127.0.0.1", "--port", "0"]
    for url in urls:
        argv += ["--backend", url]
    config = ollama_proxy.build_config(argv + list(args), {})
    return dataclasses.replace(config, **overrides)


@pytest.fixture
def scripted():
    """scripted([raw byte pieces]) -> a ScriptedUpstream (test_protocol.py) answering every request so, stopped at teardown."""
    from test_protocol import ScriptedUpstream

    made: list = []

    def make(script):
        upstream = ScriptedUpstream(script)
        made.append(upstream)
        return upstream

    yield make
    for upstream in made:
        upstream.stop()


@pytest.fixture
def fake():
    server = FakeOllama().start()
    yield server
    server.stop()


@pytest.fixture
def start_proxy():
    """start_proxy(backend_url or [urls], *flags, **config overrides) -> ProxyThread, stopped at teardown.

    Probes are off (scan_interval 0) unless the flags or overrides set --scan-interval/--scan."""
    started: list[ProxyThread] = []

    def start(backend_url, *args: str, **overrides) -> ProxyThread:
        overrides.setdefault("shutdown_grace", 2.0)
        if not any(a.startswith("--scan") for a in args):
            overrides.setdefault("scan_interval", 0.0)  # no background /api/tags, /api/ps unless a test asks
        proxy = ProxyThread(make_config(backend_url, *args, **overrides)).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(fake, start_proxy):
    """The proxy in front of the fake Ollama, default settings."""
    return start_proxy(fake.url)


@pytest.fixture(autouse=True)
def _quiet_proxy_logs():
    logging.getLogger("ollama_proxy").setLevel(logging.WARNING)
    yield
