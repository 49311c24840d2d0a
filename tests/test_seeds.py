"""The seed projects' own flags and variables (SPEC §3, "Seed users switch without edits").

Each seed's command line, as its README writes it, starts the real proxy process in front of fake
Ollamas on ephemeral ports (only the URLs and ports are substituted) and serves requests through
the backend that seed would have used: gollamas' ``--listen``, ``--connection``, ``--proxy``,
``--alias`` and its ``GOLLAMAS_*`` variables, ollama-context-proxy's ``--ollama-host``,
``--ollama-port``, ``--proxy-port``, arosboro's ``RUST_LOG``.  Also: a seed's name beside ours (ours
wins, one start line says so), ``--help``, bad values (exit 2, one line), case-insensitive levels.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

import httpx
import pytest
from fake_ollama import FakeModel, FakeOllama
from test_cli import PROXY, TIMEOUT, ProxyProcess, clean_env

import ollama_proxy as op

LISTENING_RE = re.compile(r"listening on http://[^ ]*:(\d+),")
NAMED_TWICE = "settings named twice"


def chat(model: str) -> Dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}


def fake_model(name: str) -> FakeModel:
    return FakeModel(name, "llama", 8192, ["completion"])


@pytest.fixture
def servers():
    """servers(*model names) -> a started FakeOllama with just those models, stopped at teardown."""
    started: List[FakeOllama] = []

    def start(*names: str) -> FakeOllama:
        server = FakeOllama([fake_model(n) for n in names]).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def seed_proxy():
    """seed_proxy(*args, env=None, port=None) -> a started ProxyProcess, killed at teardown.

    With ``port`` the proxy is awaited by connecting there (for a command line whose log level hides
    the listening line); else by its listening line, whatever address it names."""
    started: List[ProxyProcess] = []

    def run(*args: str, env: Optional[Dict[str, str]] = None, port: Optional[int] = None) -> ProxyProcess:
        proc = ProxyProcess(list(args), clean_env() if env is None else env)
        started.append(proc)
        if port is None:
            line = proc.wait_line(lambda text: LISTENING_RE.search(text) is not None)
            proc.port = int(LISTENING_RE.search(line).group(1))  # type: ignore[union-attr]
            return proc
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert proc.proc.poll() is None, "the proxy exited; it said:\n%s" % proc.stderr()
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the proxy did not listen on %d; it said:\n%s" % (port, proc.stderr())
                time.sleep(0.05)
        proc.port = port
        return proc

    yield run
    for proc in started:
        proc.kill()


@pytest.fixture
def http():
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
        yield client


def served_by(http: httpx.Client, proc: ProxyProcess, model: str) -> str:
    """Send a chat for ``model``; return the backend that answered (the proxy's header), after a 200."""
    resp = http.post(proc.url + "/api/chat", json=chat(model))
    assert resp.status_code == 200, resp.text
    return resp.headers["x-ollama-proxy-backend"]


def chat_models(server: FakeOllama) -> List[str]:
    return [r.json["model"] for r in server.received if r.path == "/api/chat"]


def sub(url: str, server: FakeOllama) -> str:
    """A README's backend URL with only its host:port replaced by the fake's (http://server-01:11434 -> fake)."""
    return re.sub(r"^(https?://)[^/]+", lambda m: m.group(1) + "127.0.0.1:%d" % server.port, url)


# -- gollamas ---------------------------------------------------------------------------------


def test_gollamas_run_binary_example(servers, seed_proxy, http):
    """gollamas' README "run binary" line: --level=warn, --listen, three --proxy=MODEL=URL to two servers.

    One backend per server (two routes name server-01), each model answered there; --level=warn
    holds back the info-level listening line, as gollamas' level would."""
    server1, server2 = servers("tinyllama:latest", "llama3.2-vision:latest"), servers("deepseek-r1:14b")
    port = free_port()
    proc = seed_proxy("--level=warn",
                      "--listen", "0.0.0.0:%d" % port,
                      "--proxy=tinyllama=" + sub("http://server-01:11434", server1),
                      "--proxy=llama3.2-vision=" + sub("http://server-01:11434", server1),
                      "--proxy=deepseek-r1:14b=" + sub("http://server-02:11434", server2),
                      port=port)
    for model, server in [("tinyllama", server1), ("llama3.2-vision", server1), ("deepseek-r1:14b", server2)]:
        assert served_by(http, proc, model) == "127.0.0.1:%d" % server.port
    assert chat_models(server1) == ["tinyllama", "llama3.2-vision"] and chat_models(server2) == ["deepseek-r1:14b"]
    assert not any("listening on" in line for line in proc.lines)  # info is below --level=warn


def test_gollamas_three_servers_connections_routes_and_an_alias(servers, seed_proxy, http):
    """gollamas' README pieces together: two named connections (its "connections" section), routes to
    them by ID, a route to a third server by URL (its flags table), an alias and --list-aliases."""
    main_ai, mini_ai = servers("deepseek-r1:70b"), servers("tinyllama:latest")
    server = servers("llama3.2-vision:latest", "llama3.2:latest")
    proc = seed_proxy("--listen", "0.0.0.0:0",
                      "--connection", "CID1=" + sub("http://main-ai:11434", main_ai),
                      "--connection", "CID2=" + sub("http://mini-ai-01:11434", mini_ai),
                      "--proxy", "deepseek-r1:70b=CID1", "--proxy", "tinyllama=CID2",
                      "--proxy", "llama3.2-vision=" + sub("http://server:11434", server),
                      "--proxy", "llama3.2=" + sub("http://server:11434", server),
                      "--alias", "gpt-3.5-turbo=llama3.2", "--list-aliases")
    assert served_by(http, proc, "deepseek-r1:70b") == "CID1"  # the ID names the backend, as in gollamas' logs
    assert served_by(http, proc, "tinyllama") == "CID2"
    third = "127.0.0.1:%d" % server.port
    assert served_by(http, proc, "llama3.2-vision") == third
    resp = http.post(proc.url + "/api/chat", json=chat("gpt-3.5-turbo"))
    assert resp.status_code == 200 and resp.headers["x-ollama-proxy-backend"] == third
    assert chat_models(server) == ["llama3.2-vision", "llama3.2"]  # the alias reached the third server as llama3.2
    assert chat_models(main_ai) == ["deepseek-r1:70b"] and chat_models(mini_ai) == ["tinyllama"]
    listed = [m["name"] for m in http.get(proc.url + "/api/tags").json()["models"]]
    assert "gpt-3.5-turbo" in listed  # --list-aliases
    started = proc.wait_line(lambda text: "listening on" in text)
    assert "listening on http://0.0.0.0:" in started
    assert started.count("(http://%s)" % third) == 1  # two routes to one URL: one backend


def test_gollamas_kubernetes_variables_alone(servers, seed_proxy, http):
    """gollamas' README Kubernetes env, no flag at all: GOLLAMAS_LISTEN, GOLLAMAS_PROXIES to three
    servers, GOLLAMAS_ALIASES "" and GOLLAMAS_LIST_ALIASES "true"."""
    s1, s2, s3 = servers("qwen2.5-coder:14b"), servers("gemma3:12b"), servers("llama3.2-vision:latest")
    proxies = ",".join(["qwen2.5-coder:14b=" + sub("http://ollama.ai.svc.cluster.local", s1),
                        "gemma3:12b=" + sub("http://f-01-ai.example.com:11434", s2),
                        "llama3.2-vision=" + sub("http://f-02-ai.example.com:11434", s3)])
    env = clean_env(GOLLAMAS_LISTEN="0.0.0.0:0", GOLLAMAS_PROXIES=proxies, GOLLAMAS_ALIASES="", GOLLAMAS_LIST_ALIASES="true")
    proc = seed_proxy(env=env)
    for model, server in [("qwen2.5-coder:14b", s1), ("gemma3:12b", s2), ("llama3.2-vision", s3)]:
        assert served_by(http, proc, model) == "127.0.0.1:%d" % server.port
        assert chat_models(server) == [model]
    assert "listening on http://0.0.0.0:" in proc.wait_line(lambda text: "listening on" in text)


def test_gollamas_connections_and_aliases_variables(servers, seed_proxy, http):
    """GOLLAMAS_CONNECTIONS names the backends GOLLAMAS_PROXIES routes to; GOLLAMAS_ALIASES and
    GOLLAMAS_LIST_ALIASES act as --alias and --list-aliases."""
    s1, s2 = servers("llama3.2:latest"), servers("deepseek-r1:14b")
    env = clean_env(GOLLAMAS_LISTEN="127.0.0.1:0",
                    GOLLAMAS_CONNECTIONS="c1=%s,c2=%s" % (s1.url, s2.url),
                    GOLLAMAS_PROXIES="llama3.2=c1,deepseek-r1:14b=c2",
                    GOLLAMAS_ALIASES="gpt-3.5-turbo=llama3.2,deepseek=deepseek-r1:14b",
                    GOLLAMAS_LIST_ALIASES="true")
    proc = seed_proxy(env=env)
    assert served_by(http, proc, "deepseek") == "c2" and chat_models(s2) == ["deepseek-r1:14b"]
    assert served_by(http, proc, "gpt-3.5-turbo") == "c1" and chat_models(s1) == ["llama3.2"]
    listed = {m["name"] for m in http.get(proc.url + "/api/tags").json()["models"]}
    assert {"gpt-3.5-turbo", "deepseek"} <= listed


# -- ollama-context-proxy ------------------------------------------------------------------------


def test_ollama_context_proxy_flags(servers, seed_proxy, http):
    """--ollama-host HOST --ollama-port PORT is the backend, --proxy-port the listen port."""
    server = servers("llama3.2:latest")
    port = free_port()
    proc = seed_proxy("--ollama-host", "localhost", "--ollama-port", str(server.port), "--proxy-port", str(port))
    assert proc.port == port
    assert served_by(http, proc, "llama3.2") == "localhost:%d" % server.port
    assert chat_models(server) == ["llama3.2"]


# -- a seed's name beside ours -------------------------------------------------------------------


def test_seed_flags_beside_ours_ours_win_and_one_line_says_so(servers, seed_proxy, http):
    """--port beside --proxy-port, --backend beside --ollama-host/--ollama-port, --log-level beside
    --level: ours are used, and exactly one start line names what was ignored."""
    server = servers("llama3.2:latest")
    decoy = free_port()  # nothing listens there: a request forwarded to it would fail
    proc = seed_proxy("--port", "0", "--proxy-port", str(decoy), "--backend", "ours=" + server.url,
                      "--ollama-host", "127.0.0.1", "--ollama-port", str(decoy), "--log-level", "info", "--level", "error")
    assert proc.port != decoy
    assert served_by(http, proc, "llama3.2") == "ours"
    lines = [line for line in proc.lines if NAMED_TWICE in line]
    assert len(lines) == 1, proc.stderr()
    for text in ("listen port from --port (--proxy-port ignored)", "backends from --backend (--ollama-host/--ollama-port ignored)",
                 "log level from --log-level (--level ignored)"):
        assert text in lines[0]
    assert any("listening on" in line for line in proc.lines)  # info, not --level error


def test_no_line_when_only_seed_names_are_given(servers, seed_proxy, http):
    server = servers("llama3.2:latest")
    proc = seed_proxy("--proxy-port", "0", "--ollama-host", "127.0.0.1", "--ollama-port", str(server.port))
    assert served_by(http, proc, "llama3.2") == "127.0.0.1:%d" % server.port
    assert not [line for line in proc.lines if NAMED_TWICE in line]


@pytest.mark.parametrize(
    "argv, env, expected, note",
    [
        (["--listen", "10.0.0.1:9000"], {}, ("10.0.0.1", 9000), None),
        (["--listen", ":9000"], {}, ("0.0.0.0", 9000), None),
        (["--listen", "[::1]:9000"], {}, ("::1", 9000), None),
        (["--listen", "10.0.0.1:9000", "--port", "9001"], {}, ("10.0.0.1", 9001), "listen port from --port (--listen ignored)"),
        (["--listen", "10.0.0.1:9000", "--host", "127.0.0.2"], {}, ("127.0.0.2", 9000), "listen address from --host (--listen ignored)"),
        (["--proxy-port", "9000"], {"PROXY_PORT": "9001"}, ("127.0.0.1", 9000), "listen port from --proxy-port (PROXY_PORT ignored)"),
        ([], {"GOLLAMAS_LISTEN": "10.0.0.1:9000", "PROXY_PORT": "9001"}, ("10.0.0.1", 9001), "listen port from PROXY_PORT (GOLLAMAS_LISTEN ignored)"),
        (["--listen", "10.0.0.1:9000"], {"GOLLAMAS_LISTEN": "10.0.0.2:9001"}, ("10.0.0.1", 9000), None),  # a flag wins over a variable
    ],
)
def test_listen_address_precedence(argv, env, expected, note):
    """Our flag, a seed's flag, our variable, a seed's variable; a note only where ours and a seed's meet."""
    config = op.build_config(argv, env)
    assert (config.host, config.port) == expected
    assert config.notes == ((note,) if note else ())


def test_proxy_url_reuses_a_connection_with_that_url_and_merges_with_ours():
    """A --proxy URL that a connection already has routes to that connection (gollamas 0.4.1); gollamas'
    connections, routes and aliases are added to ours, ours first (so ours apply on a clash)."""
    config = op.build_config(["--backend", "gpu=http://10.0.0.9:11434", "--route", "llama3.2=gpu", "--alias", "a=qwen3:8b",
                              "--connection", "c1=http://10.0.0.1:11434", "--proxy", "llama3.2=c1",
                              "--proxy", "qwen3:8b=http://10.0.0.1:11434", "--aliases", "a=llama3.2,b=llama3.2"], {})
    assert [b.name for b in config.backends] == ["gpu", "c1"]
    assert config.routes == (("llama3.2:latest", ("gpu",)), ("llama3.2:latest", ("c1",)), ("qwen3:8b", ("c1",)))
    assert op.route_for("llama3.2:latest", config.routes) == ("gpu",)
    assert config.aliases == (("a:latest", "qwen3:8b"), ("b:latest", "llama3.2"))


def test_ollama_host_forms():
    """--ollama-host is a host or a URL; the port is --ollama-port, else the URL's, else 11434."""
    def url(*argv: str) -> str:
        (backend,) = op.build_config(list(argv), {}).backends
        return backend.url
    assert url("--ollama-host", "ollama") == "http://ollama:11434"
    assert url("--ollama-port", "11500") == "http://127.0.0.1:11500"
    assert url("--ollama-host", "http://localhost") == "http://localhost:11434"
    assert url("--ollama-host", "https://gpu.example:8443") == "https://gpu.example:8443"
    assert url("--ollama-host", "https://gpu.example:8443", "--ollama-port", "9443") == "https://gpu.example:9443"
    # The flag wins over the variables that name the default backend, silently (they are Ollama's own).
    assert op.build_config(["--ollama-host", "ollama"], {"OLLAMA_HOST": "0.0.0.0"}).backends[0].url == "http://ollama:11434"


# -- --help ----------------------------------------------------------------------------------------


def test_help_lists_seed_flags_under_their_own_heading():
    out = subprocess.run([sys.executable, PROXY, "--help"], capture_output=True, text=True, timeout=30, check=True).stdout
    heading = out.find("\ncompatibility with other proxies:")
    assert heading > 0, out
    before, after = out[:heading], out[heading:]
    for flag in ("--ollama-host", "--ollama-port", "--proxy-port", "--listen", "--connection", "--connections",
                 "--proxy", "--proxies", "--aliases", "--level"):
        assert re.search(r"^\s+%s " % re.escape(flag), after, re.M), flag
        assert not re.search(r"^\s+%s[ ,]" % re.escape(flag), before, re.M), flag
    for name in ("GOLLAMAS_LISTEN", "GOLLAMAS_CONNECTIONS", "GOLLAMAS_PROXIES", "GOLLAMAS_ALIASES", "GOLLAMAS_LIST_ALIASES", "RUST_LOG"):
        assert "$" + name in after, name
    assert "--alias ALIAS=MODEL" in before  # ours (and gollamas' singular flag) stays with ours


# -- bad values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, env, named",
    [
        (["--listen", "localhost"], {}, "--listen"),
        (["--listen", "127.0.0.1:70000"], {}, "--listen"),
        (["--listen"], {}, "--listen"),  # argparse's own error: usage, then one error line
        (["--proxy-port", "eleven"], {}, "--proxy-port"),
        (["--ollama-port", "0"], {}, "--ollama-port"),
        (["--ollama-host", "ftp://server"], {}, "ftp"),
        (["--level", "loud"], {}, "--level"),
        (["--connection", "http://server:11434"], {}, "--connection"),
        (["--proxy", "llama3.2"], {}, "--proxy"),
        (["--proxy", "llama3.2=c9"], {}, "'c9'"),
        (["--proxies", "llama3.2=http://127.0.0.1:1,qwen3"], {}, "--proxies"),
        ([], {"GOLLAMAS_LISTEN": "nowhere"}, "GOLLAMAS_LISTEN"),
        ([], {"GOLLAMAS_CONNECTIONS": "c1"}, "GOLLAMAS_CONNECTIONS"),
        ([], {"GOLLAMAS_LIST_ALIASES": "maybe"}, "GOLLAMAS_LIST_ALIASES"),
    ],
)
def test_bad_seed_values_exit_2_with_one_line(args, env, named):
    proc = ProxyProcess(args, clean_env(**env))
    try:
        assert proc.wait() == 2
        text = proc.finish()
    finally:
        proc.kill()
    assert "Traceback" not in text and "listening on" not in text
    errors = [line for line in text.splitlines() if line.startswith("ollama-proxy: error:")]
    assert len(errors) == 1 and named in errors[0], text


# -- log levels: RUST_LOG, --level, any case --------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("info", "info"), ("trace", "debug"), ("TRACE", "debug"), ("warn", "warning"), ("error", "error"), ("off", "error"),
        ("ollama_proxy=debug,info", "debug"), ("info,ollama_proxy=debug", "debug"), ("ollama_proxy_rs=warn", "warning"),
        ("ollama_proxy::proxy=trace", "debug"), ("ollama_proxy", "debug"), ("hyper=warn,info", "info"),
        ("debug/foo", "debug"), ("tokio=trace", None), ("verbose", None), ("ollama_proxy=loud", None), ("", None),
    ],
)
def test_rust_log_level(value, expected):
    assert op.rust_log_level(value) == expected


@pytest.mark.parametrize(
    "argv, env, expected, noted",
    [
        ([], {"RUST_LOG": "trace"}, "debug", False),
        ([], {"RUST_LOG": "tokio=trace"}, "info", False),  # nothing for this proxy: the default
        ([], {"RUST_LOG": "trace", "LOG_LEVEL": "error"}, "error", True),  # RUST_LOG only when LOG_LEVEL is unset
        (["--level", "trace"], {"RUST_LOG": "error"}, "debug", False),
        (["--level=WARN"], {}, "warning", False),
        (["--log-level", "DEBUG"], {}, "debug", False),
        (["--log-level", "Warning"], {"LOG_LEVEL": "x"}, "warning", False),
        ([], {"LOG_LEVEL": "ERROR"}, "error", False),
        ([], {"LOG_LEVEL": "warn"}, "warning", False),
        (["--log-level", "info", "--level", "debug"], {}, "info", True),
    ],
)
def test_log_level_sources(argv, env, expected, noted):
    config = op.build_config(argv, env)
    assert config.log_level == expected
    assert [n.startswith("log level from ") for n in config.notes] == ([True] if noted else [])


def test_rust_log_trace_logs_at_debug(servers, seed_proxy, http):
    """arosboro's README line OLLAMA_HOST=... PROXY_PORT=... RUST_LOG=...: with trace the proxy logs at debug."""
    server = servers("llama3.2:latest")
    proc = seed_proxy(env=clean_env(OLLAMA_HOST="http://127.0.0.1:%d" % server.port, PROXY_PORT="0", RUST_LOG="trace"))
    assert served_by(http, proc, "llama3.2") == "127.0.0.1:%d" % server.port
    assert proc.wait_line(lambda text: " DEBUG " in text and "request body" in text)


def test_rust_log_warn_holds_back_info(servers, seed_proxy, http):
    server = servers("llama3.2:latest")
    port = free_port()
    proc = seed_proxy(env=clean_env(OLLAMA_HOST="http://127.0.0.1:%d" % server.port, PROXY_PORT=str(port), RUST_LOG="warn"), port=port)
    assert served_by(http, proc, "llama3.2") == "127.0.0.1:%d" % server.port
    time.sleep(0.2)
    assert not any(" INFO " in line for line in proc.lines), proc.stderr()


def test_uppercase_log_level_flag_starts(servers, seed_proxy, http):
    server = servers("llama3.2:latest")
    proc = seed_proxy("--port", "0", "--backend", server.url, "--log-level", "DEBUG")
    served_by(http, proc, "llama3.2")
    assert proc.wait_line(lambda text: " DEBUG " in text)

