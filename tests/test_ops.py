"""End to end: /__proxy/metrics from the running proxy, the doctor (--check), the flash-attention check at start."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys

import ollama
from test_metrics import check_histogram, parse, values

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.path.join(ROOT, "ollama_proxy.py")


def get(port: int, path: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), data


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "PROXY_", "LOG_", "MAX_", "DEFAULT_"))}
    env.update(extra)
    return env


def test_metrics_endpoint_counts_real_traffic(fake, proxy):
    """After real requests, /__proxy/metrics parses strictly and counts requests, tokens, modifications and health."""
    with ollama.Client(host=proxy.url) as client:
        client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
        list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True))
        client.embed(model="nomic-embed-text", input="x " * 1500)  # 3000 characters: chunked
    status, headers, body = get(proxy.port, "/__proxy/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    families = parse(body.decode())
    backend = "127.0.0.1:%d" % fake.port
    requests = values(families, "ollama_proxy_requests_total")
    assert requests[(("backend", backend), ("route", "/api/chat"), ("status", "200"))] == 2
    assert requests[(("backend", backend), ("route", "/api/embed"), ("status", "200"))] == 1
    check_histogram(families["ollama_proxy_upstream_seconds"])
    assert values(families, "ollama_proxy_tokens_generated_total")[(("model", "llama3.2:latest"),)] == 10
    mods = values(families, "ollama_proxy_modifications_total")
    assert mods[(("modifier", "num_ctx"),)] == 3 and mods[(("modifier", "num_predict"),)] == 2
    assert values(families, "ollama_proxy_chunked_inputs_total")[()] == 1
    assert values(families, "ollama_proxy_backend_healthy")[(("backend", backend),)] == 1
    assert values(families, "ollama_proxy_in_flight")[(("backend", backend),)] == 0


def test_doctor_reports_models_and_exits_zero(fake):
    """--check lists the backend's version and each model with its training context and the num_ctx the proxy would send."""
    proc = subprocess.run([sys.executable, PROXY, "--check", "--backend", fake.url], capture_output=True, text=True, timeout=60,
                          env=clean_env(OLLAMA_CONTEXT_LENGTH="8192", OLLAMA_FLASH_ATTENTION="off"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "reachable: Ollama %s" % fake.version in out
    line = next(ln for ln in out.splitlines() if "llama3.2:latest" in ln)
    assert "131072" in line and "num_ctx sent: 16384" in line and "KV cache" in line
    assert "nomic-embed-text:latest" in out and "num_ctx sent: 2048" in out
    assert "OLLAMA_CONTEXT_LENGTH=8192" in out
    assert "flash attention: on" in out  # 'off' is not a boolean to Ollama: it means on


def test_doctor_exits_one_when_a_backend_is_down():
    """--check exits 1 and says which backend did not answer."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.run([sys.executable, PROXY, "--check", "--backend", "http://127.0.0.1:%d" % port], capture_output=True, text=True,
                          timeout=60, env=clean_env())
    assert proc.returncode == 1 and "NOT REACHABLE" in proc.stdout


def test_flash_attention_warning_at_start(fake):
    """Starting with OLLAMA_FLASH_ATTENTION forced off logs the one-global-switch warning."""
    proc = subprocess.Popen([sys.executable, PROXY, "--port", "0", "--backend", fake.url, "--scan-interval", "0"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=clean_env(OLLAMA_FLASH_ATTENTION="false"))
    try:
        lines = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "listening on" in line or len(lines) > 20:
                break
        for line in proc.stderr:  # the warning comes right after the listening line
            lines.append(line)
            if "OLLAMA_FLASH_ATTENTION" in line or len(lines) > 20:
                break
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    text = "".join(lines)
    assert "WARNING" in text and "OLLAMA_FLASH_ATTENTION" in text, text


def test_doctor_refuses_something_that_is_not_ollama():
    """--check exits 1 when the backend answers HTTP but /api/version is not Ollama's."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class NotOllama(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>nope</html>")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), NotOllama)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = subprocess.run([sys.executable, PROXY, "--check", "--backend", "http://127.0.0.1:%d" % server.server_address[1]],
                              capture_output=True, text=True, timeout=60, env=clean_env())
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1 and "is this Ollama" in proc.stdout and "Traceback" not in proc.stderr
