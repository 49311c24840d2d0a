"""The real process: ``python ollama_proxy.py ...`` as a subprocess in front of the fake Ollama.

Covers what only the whole program shows: the listening line and ``--port 0``, the access log in
text and JSON, SIGTERM/SIGINT with in-flight responses, configuration from environment variables
(a flag wins), OLLAMA_HOST as the default backend, bad configuration, and Python 3.9.

stderr is read by a thread into a list of lines, so a chatty process can never block on a full
pipe; every process is killed at teardown.
"""

from __future__ import annotations

import glob
import http.client as http_client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Callable, Dict, List, Optional

import httpx
import pytest
from fake_ollama import Fault

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.path.join(ROOT, "ollama_proxy.py")
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
TIMEOUT = 15.0  # generous: only there so that a broken proxy fails the test instead of hanging it
LISTENING_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
#: Variables the proxy reads; the tests start from an environment without any of them.
ENV_PREFIXES = ("PROXY_", "OLLAMA_", "LOG_", "BACKEND_", "REQUEST_TIMEOUT", "REJECT_STREAMING", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                "GOLLAMAS_", "RUST_LOG")


def clean_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env["SCAN_INTERVAL_SECONDS"] = "0"  # no background /api/tags, /api/ps in what the fake records
    env.update(extra)
    return env


class ProxyProcess:
    """One ``ollama_proxy.py`` process; stderr lines are collected by a reader thread."""

    def __init__(self, args: List[str], env: Dict[str, str], python: str = sys.executable) -> None:
        self.proc = subprocess.Popen(
            [python, PROXY] + list(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        self.lines: List[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, name="proxy-stderr", daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, predicate: Callable[[str], bool], timeout: float = TIMEOUT, start: int = 0) -> str:
        """The first stderr line (from index ``start``) that satisfies ``predicate``; fails on timeout or EOF."""
        found: List[str] = []

        def ready() -> bool:
            found[:] = [line for line in self.lines[start:] if predicate(line)][:1]
            return bool(found) or self._eof

        with self._cond:
            self._cond.wait_for(ready, timeout)
        assert found, "no matching stderr line; the process said:\n%s" % self.stderr()
        return found[0]

    def wait_listening(self) -> int:
        line = self.wait_line(lambda text: LISTENING_RE.search(text) is not None)
        match = LISTENING_RE.search(line)
        assert match is not None
        self.port = int(match.group(1))
        return self.port

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = TIMEOUT) -> int:
        """The exit status; the process is killed (and the test fails) if it does not exit in time."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("the proxy did not exit within %.0fs; it said:\n%s" % (timeout, self.stderr()))
            raise  # unreachable

    def finish(self) -> str:
        """Wait for stderr EOF (the process has exited) and return everything it wrote."""
        self._reader.join(TIMEOUT)
        return self.stderr()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def run_proxy():
    """run_proxy(*args, env=None, python=sys.executable, wait=True) -> a started ProxyProcess."""
    started: List[ProxyProcess] = []

    def run(*args: str, env: Optional[Dict[str, str]] = None, python: str = sys.executable, wait: bool = True) -> ProxyProcess:
        proc = ProxyProcess(list(args), clean_env() if env is None else env, python)
        started.append(proc)
        if wait:
            proc.wait_listening()
        return proc

    yield run
    for proc in started:
        proc.kill()


@pytest.fixture
def http():
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
        yield client


def request_lines(proc: ProxyProcess, text: str) -> List[str]:
    """The access-log lines (one per request: they carry the status) that contain ``text``."""
    return [line for line in proc.lines if text in line and " status=" in line]


# -- start-up and serving --------------------------------------------------------------------


def test_port_zero_listens_and_serves(fake, run_proxy, http):
    """--port 0 picks a free port, announced on stderr; a request there reaches the backend."""
    proc = run_proxy("--port", "0", "--backend", fake.url)
    assert proc.port not in (0, 11435)
    resp = http.get(proc.url + "/api/version")
    assert resp.status_code == 200 and resp.json() == {"version": fake.version}
    assert fake.received[-1].path == "/api/version"
    assert "forwarding to 127.0.0.1:%d" % fake.port in proc.wait_line(lambda t: "listening on" in t)


def test_text_access_log_one_line_per_request(fake, run_proxy, http):
    """Text log: one line per request with method, path, model, backend, status, duration, and tok/s from eval stats."""
    proc = run_proxy("--port", "0", "--backend", fake.url)
    backend = "127.0.0.1:%d" % fake.port
    assert http.post(proc.url + "/api/chat", json=dict(CHAT, stream=False)).status_code == 200
    assert http.get(proc.url + "/api/version").status_code == 200  # same keep-alive connection: logged after the chat
    proc.wait_line(lambda t: "GET /api/version" in t)
    chat_lines = request_lines(proc, "POST /api/chat")
    assert len(chat_lines) == 1, proc.stderr()
    line = chat_lines[0]
    assert " model=llama3.2 " in line
    assert " backend=%s " % backend in line
    assert " status=200 " in line
    assert re.search(r" \d+\.\d{3}s", line)
    assert re.search(r" 5 tokens [0-9.]+ tok/s", line)
    version_lines = request_lines(proc, "GET /api/version")
    assert len(version_lines) == 1
    assert "status=200" in version_lines[0] and "tok/s" not in version_lines[0] and "model=" not in version_lines[0]


def test_text_access_log_error_status(fake, run_proxy, http):
    """A backend's 404 is logged with status=404 and the requested model."""
    proc = run_proxy("--port", "0", "--backend", fake.url)
    assert http.post(proc.url + "/api/chat", json=dict(CHAT, model="no-such-model")).status_code == 404
    line = proc.wait_line(lambda t: "POST /api/chat" in t and " status=" in t)
    assert "model=no-such-model" in line and "status=404" in line


def test_json_log_format(fake, run_proxy, http):
    """--log-format json: every stderr line is a JSON object; the request line carries the access-log fields."""
    proc = run_proxy("--port", "0", "--backend", fake.url, "--log-format", "json")
    assert http.post(proc.url + "/api/chat", json=dict(CHAT, stream=False)).status_code == 200
    proc.wait_line(lambda t: '"path": "/api/chat"' in t or '"path":"/api/chat"' in t)
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    text = proc.finish()
    objs = []
    for line in text.splitlines():
        obj = json.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(obj, dict) and {"time", "level", "message"} <= set(obj)
        objs.append(obj)
    requests = [o for o in objs if o.get("path") == "/api/chat"]
    assert len(requests) == 1
    req = requests[0]
    assert req["method"] == "POST"
    assert req["model"] == "llama3.2"
    assert req["backend"] == "127.0.0.1:%d" % fake.port
    assert req["status"] == 200
    assert isinstance(req["duration_s"], (int, float)) and req["duration_s"] >= 0
    assert isinstance(req["tokens_per_s"], (int, float)) and req["tokens_per_s"] > 0
    assert req["eval_count"] == 5
    assert any("listening on" in o["message"] for o in objs)


# -- signals -----------------------------------------------------------------------------------


def _connection_refused_or_closed(port: int) -> bool:
    """True if a new connection to ``port`` is refused, or accepted and then closed without an answer."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    except (ConnectionRefusedError, ConnectionResetError):  # reset: the listener closed with us in its backlog
        return True
    try:
        sock.sendall(b"GET /api/version HTTP/1.1\r\nhost: x\r\n\r\n")
        return sock.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        sock.close()


def test_sigterm_finishes_in_flight_stream(fake, run_proxy, http):
    """SIGTERM: no new connections, idle keep-alive closed, the in-flight stream completes, then exit 0."""
    fault = fake.add_fault(Fault(path="/api/chat", pause_after=1))
    proc = run_proxy("--port", "0", "--backend", fake.url, "--shutdown-grace", "30")
    idle = http_client.HTTPConnection("127.0.0.1", proc.port, timeout=TIMEOUT)
    try:
        idle.request("GET", "/api/version")
        answer = idle.getresponse()
        assert answer.status == 200 and answer.read() and not answer.will_close  # now idle, kept alive
        with http.stream("POST", proc.url + "/api/chat", json=CHAT) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            first = json.loads(next(lines))
            assert first["message"]["content"] == "tok0 " and first["done"] is False
            assert fault.gate.wait_reached(TIMEOUT)
            mark = len(proc.lines)
            proc.signal(signal.SIGTERM)
            proc.wait_line(lambda t: "shutting down" in t, start=mark)
            assert _connection_refused_or_closed(proc.port)
            idle.sock.settimeout(5.0)
            assert idle.sock.recv(65536) == b""  # the idle keep-alive connection was closed
            assert proc.proc.poll() is None  # still serving the stream
            fault.gate.release()
            rest = [json.loads(line) for line in lines if line]
        assert [o["message"]["content"] for o in rest[:-1]] == ["tok1 ", "tok2 ", "tok3 ", "tok4 "]
        assert rest[-1]["done"] is True and rest[-1]["done_reason"] == "stop"
    finally:
        idle.close()
    assert proc.wait() == 0
    assert "cut off" not in proc.finish()


def test_sigterm_grace_cuts_a_stalled_stream(fake, run_proxy, http):
    """--shutdown-grace 0.5 with a stream that never ends: exit 0, an in-band error line, the backend connection closed."""
    fake.add_fault(Fault(path="/api/chat", stall_after=1))
    proc = run_proxy("--port", "0", "--backend", fake.url, "--shutdown-grace", "0.5")
    with http.stream("POST", proc.url + "/api/chat", json=CHAT) as resp:
        lines = resp.iter_lines()
        assert json.loads(next(lines))["done"] is False
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
        rest: List[str] = []
        try:
            rest.extend(line for line in lines if line)
            cut = False
        except httpx.HTTPError:
            cut = True
    # The client sees a cut stream (or a last in-band error line), never a clean end.
    assert not any(json.loads(line).get("done") for line in rest)
    assert not cut and "shutting down" in json.loads(rest[-1])["error"]  # an in-band error line, then a clean end
    assert fake.wait_closed(fake.received[-1].conn_id, TIMEOUT)  # the backend stopped generating
    log = proc.finish()
    assert "cut off" in log
    request_line = [line for line in log.splitlines() if "POST /api/chat" in line][-1]
    assert "error=" in request_line and "shutting down" in request_line  # logged as cut off, not as a success


def test_sigint_exits_zero(fake, run_proxy, http):
    """SIGINT (Ctrl-C) shuts down like SIGTERM: exit status 0, no traceback."""
    proc = run_proxy("--port", "0", "--backend", fake.url)
    assert http.get(proc.url + "/api/version").status_code == 200
    proc.signal(signal.SIGINT)
    assert proc.wait() == 0
    text = proc.finish()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert "stopped" in text


# -- configuration from the environment ---------------------------------------------------------


def test_ollama_host_unspecified_address_is_the_default_backend(fake, run_proxy, http):
    """OLLAMA_HOST=0.0.0.0:PORT and no --backend: the proxy forwards to 127.0.0.1:PORT with that Host."""
    proc = run_proxy("--port", "0", env=clean_env(OLLAMA_HOST="0.0.0.0:%d" % fake.port))
    resp = http.get(proc.url + "/api/tags")
    assert resp.status_code == 200
    assert resp.headers["x-ollama-proxy-backend"] == "127.0.0.1:%d" % fake.port
    rec = fake.received[-1]
    assert rec.path == "/api/tags" and rec.header("host") == "127.0.0.1:%d" % fake.port


def test_environment_variables_configure_the_proxy(fake, run_proxy, http):
    """PROXY_PORT, LOG_FORMAT and OLLAMA_BACKENDS are used when no flag is given."""
    env = clean_env(PROXY_PORT="0", LOG_FORMAT="json", OLLAMA_BACKENDS="env-backend=%s" % fake.url)
    proc = run_proxy(env=env)
    assert proc.port not in (0, 11435)
    resp = http.get(proc.url + "/api/version")
    assert resp.status_code == 200 and resp.headers["x-ollama-proxy-backend"] == "env-backend"
    line = proc.wait_line(lambda t: "/api/version" in t)
    assert json.loads(line)["backend"] == "env-backend"
    assert all(json.loads(text) for text in proc.lines)


def test_flags_win_over_environment_variables(fake, run_proxy, http):
    """A flag wins over its variable: an unusable PROXY_PORT, LOG_FORMAT=json and a dead OLLAMA_BACKENDS are ignored."""
    env = clean_env(PROXY_PORT="not-a-port", LOG_FORMAT="json", OLLAMA_BACKENDS="http://127.0.0.1:1", OLLAMA_HOST="127.0.0.1:1")
    proc = run_proxy("--port", "0", "--log-format", "text", "--backend", "flag-backend=" + fake.url, env=env)
    resp = http.get(proc.url + "/api/version")
    assert resp.status_code == 200 and resp.headers["x-ollama-proxy-backend"] == "flag-backend"
    line = proc.wait_line(lambda t: "GET /api/version" in t)
    assert not line.startswith("{") and "backend=flag-backend" in line


def test_environment_variable_is_read_when_no_flag(run_proxy):
    """Without --port, PROXY_PORT is parsed: an unusable value stops the start with exit 2 naming --port."""
    proc = run_proxy(env=clean_env(PROXY_PORT="not-a-port", OLLAMA_HOST="127.0.0.1:1"), wait=False)
    assert proc.wait() == 2
    text = proc.finish()
    assert "--port" in text and "not-a-port" in text and "Traceback" not in text


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "70000"],
        ["--backend", "ftp://127.0.0.1:1"],
        ["--shutdown-grace", "-1"],
        ["--log-format", "xml"],
        ["--port", "0", "--backend", "a=http://127.0.0.1:1", "--backend", "a=http://127.0.0.1:2"],
    ],
    ids=["port-range", "scheme", "negative", "log-format", "duplicate-name"],
)
def test_bad_configuration_exits_2_with_one_message(run_proxy, args):
    """Bad configuration: exit status 2 and one 'ollama-proxy: error:' line on stderr, never a traceback, no listening."""
    proc = run_proxy(*args, wait=False)
    assert proc.wait() == 2
    text = proc.finish()
    assert "Traceback" not in text and "listening on" not in text
    errors = [line for line in text.splitlines() if line.startswith("ollama-proxy: error:")]
    assert len(errors) == 1, text


# -- Python 3.9 --------------------------------------------------------------------------------


def _python39() -> Optional[str]:
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9.*/bin/python3")))
    pyenv = shutil.which("pyenv")
    if not candidates and pyenv:
        try:
            root = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            root = ""
        if root:
            candidates = sorted(glob.glob(os.path.join(root, "versions", "3.9.*", "bin", "python3")))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="module")
def py39_env():
    """(interpreter, environment) for CPython 3.9 with h11 importable, or skip.

    When 3.9 has no h11 of its own, this interpreter's h11 (pure Python) is offered to it through
    PYTHONPATH (a directory holding only a link to the package, without writing bytecode there).
    """
    python = _python39()
    if python is None:
        pytest.skip("no CPython 3.9 found under ~/.pyenv/versions or `pyenv root`")
    env = clean_env(PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    tmp = None
    check = [python, "-c", "import h11"]
    if subprocess.run(check, env=env, capture_output=True, timeout=30).returncode != 0:
        import h11

        tmp = tempfile.mkdtemp(prefix="h11-for-py39-")
        os.symlink(os.path.dirname(h11.__file__), os.path.join(tmp, "h11"))
        env["PYTHONPATH"] = tmp
        if subprocess.run(check, env=env, capture_output=True, timeout=30).returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.skip("h11 is not importable by %s" % python)
    yield python, env
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def test_python39_help(py39_env):
    """Under CPython 3.9, --help exits 0 and lists the flags with their variables."""
    python, env = py39_env
    done = subprocess.run([python, PROXY, "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "--backend" in done.stdout and "$PROXY_PORT" in done.stdout and "--shutdown-grace" in done.stdout


def test_python39_serves_and_stops(fake, run_proxy, py39_env, http):
    """Under CPython 3.9 the proxy serves a streamed chat and exits 0 on SIGTERM."""
    python, env = py39_env
    proc = run_proxy("--port", "0", "--backend", fake.url, env=env, python=python)
    resp = http.post(proc.url + "/api/chat", json=CHAT)
    objs = [json.loads(line) for line in resp.text.splitlines()]
    assert resp.status_code == 200 and objs[-1]["done"] is True and len(objs) == 6
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    assert "Traceback" not in proc.finish()


# -- logs that can be followed (issue 11) --------------------------------------------------------


def test_text_log_follows_a_v1_request(fake, run_proxy, http):
    """Every line of a /v1 request names the path the client used, its conn and its model; a refused one too."""
    proc = run_proxy("--port", "0", "--backend", fake.url)
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
    assert http.post(proc.url + "/v1/chat/completions", json=body).status_code == 200
    assert http.post(proc.url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    proc.wait_line(lambda t: "status=400" in t)
    (served,) = request_lines(proc, "status=200")
    assert re.search(r"INFO conn (\d+): POST /v1/chat/completions -> /api/chat model=llama3.2 backend=\S+ status=200 ", served), served
    conn = re.search(r"conn (\d+):", served).group(1)
    changes = [line for line in proc.lines if "-> " in line and "status=" not in line and "conn %s:" % conn in line]
    assert len(changes) == 2, proc.stderr()
    assert all("POST /v1/chat/completions: " in line and "(llama3.2:latest: " in line for line in changes), changes
    assert any("num_ctx unset -> 16384 (llama3.2:latest: --max-context 16384)" in line for line in changes)
    assert any("num_predict unset -> 4096 (llama3.2:latest: --num-predict default)" in line for line in changes)
    (refused,) = request_lines(proc, "status=400")
    assert re.search(r"conn \d+: POST /v1/chat/completions backend=- status=400 ", refused), refused


def test_json_log_follows_a_v1_request(fake, run_proxy, http):
    proc = run_proxy("--port", "0", "--backend", fake.url, "--log-format", "json")
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
    assert http.post(proc.url + "/v1/chat/completions", json=body).status_code == 200
    proc.wait_line(lambda t: '"event": "request"' in t)
    objs = [json.loads(line) for line in proc.lines]
    (req,) = [o for o in objs if o.get("event") == "request"]
    assert req["path"] == "/v1/chat/completions" and req["upstream_path"] == "/api/chat" and req["model"] == "llama3.2"
    mods = [o for o in objs if o.get("event") == "modification"]
    assert {m["modifier"] for m in mods} == {"num_ctx", "num_predict"}
    assert all(m["conn"] == req["conn"] and m["model"] == "llama3.2:latest" for m in mods)
    assert all("POST /v1/chat/completions" in m["message"] for m in mods)


def test_no_size_holds_the_request_is_a_warning(fake, run_proxy, http):
    """Auto mode: when no --context-sizes entry holds the request, the cap is used, with a WARNING line."""
    proc = run_proxy("--port", "0", "--backend", fake.url, "--context-mode", "auto", "--context-sizes", "2048,4096", "--max-context", "4096")
    body = {"model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "word " * 8000}]}
    assert http.post(proc.url + "/api/chat", json=body).status_code == 200
    line = proc.wait_line(lambda t: "num_ctx unset ->" in t)
    assert " WARNING conn " in line and "more than any size allows: capped" in line and "llama3.2:latest" in line, line
    small = {"model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
    assert http.post(proc.url + "/api/chat", json=small).status_code == 200
    line = proc.wait_line(lambda t: "loaded with 4096" in t)
    assert " INFO conn " in line
    truncated = proc.wait_line(lambda t: "Ollama truncated the prompt" in t)
    assert "context of 4096" in truncated and "raise --max-context (--num-ctx is capped by it too)" in truncated, truncated
