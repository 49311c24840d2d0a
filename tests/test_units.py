"""Table tests for the pure functions of ollama_proxy (no sockets, no loop)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys

import pytest

import ollama_proxy as op

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- OLLAMA_HOST, as Ollama's envconfig.Host parses it (ollama-api.md §12) ----------------

@pytest.mark.parametrize(
    "value, expected",
    [
        ("", ("http", "127.0.0.1", 11434, "")),
        ("1.2.3.4", ("http", "1.2.3.4", 11434, "")),
        (":1234", ("http", "", 1234, "")),
        ("0.0.0.0", ("http", "0.0.0.0", 11434, "")),
        ("example.com:1234", ("http", "example.com", 1234, "")),
        ("[::1]", ("http", "::1", 11434, "")),
        ("::1", ("http", "::1", 11434, "")),
        ("[::]", ("http", "::", 11434, "")),
        ("[::1]:1337", ("http", "::1", 1337, "")),
        ("http://1.2.3.4", ("http", "1.2.3.4", 80, "")),
        ("https://1.2.3.4", ("https", "1.2.3.4", 443, "")),
        ("https://1.2.3.4:1234", ("https", "1.2.3.4", 1234, "")),
        ("https://example.com/ollama", ("https", "example.com", 443, "/ollama")),
        (":66000", ("http", "", 11434, "")),
        (":-1", ("http", "", 11434, "")),
        ("1.2.3.4:abc", ("http", "1.2.3.4", 11434, "")),
        ('"1.2.3.4"', ("http", "1.2.3.4", 11434, "")),
        ("'1.2.3.4'", ("http", "1.2.3.4", 11434, "")),
        ("  example.com  ", ("http", "example.com", 11434, "")),
        ("ollama.com", ("https", "ollama.com", 443, "")),
    ],
)
def test_parse_ollama_host_matches_ollama(value, expected):
    """Every row of Ollama's own table (plus a few) parses to the same scheme, host, port, path."""
    if value == "":
        # Ollama treats an empty value as unset: the default 127.0.0.1:11434.
        assert op.parse_ollama_host(value)[2] == 11434
        return
    assert op.parse_ollama_host(value) == expected


@pytest.mark.parametrize(
    "value, url",
    [
        ("0.0.0.0", "http://127.0.0.1:11434"),
        (":1234", "http://127.0.0.1:1234"),
        ("[::]", "http://127.0.0.1:11434"),
        ("::", "http://127.0.0.1:11434"),
        ("http://0.0.0.0", "http://127.0.0.1:80"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("https://gpu.lan/ollama", "https://gpu.lan:443/ollama"),
    ],
)
def test_default_backend_from_ollama_host(value, url):
    """An unspecified listen address in OLLAMA_HOST means connect to 127.0.0.1."""
    assert op.backend_from_ollama_host(value).url == url


# -- --backend, parsed strictly ----------------------------------------------------------

@pytest.mark.parametrize(
    "value, name, url",
    [
        ("http://127.0.0.1:11434", "127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("127.0.0.1:11500", "127.0.0.1:11500", "http://127.0.0.1:11500"),
        ("gpu1", "gpu1:11434", "http://gpu1:11434"),
        ("http://gpu1", "gpu1:80", "http://gpu1:80"),
        ("https://gpu1", "gpu1:443", "https://gpu1:443"),
        ("mac=http://10.0.0.5:11434", "mac", "http://10.0.0.5:11434"),
        ("http://[::1]:8080/", "[::1]:8080", "http://[::1]:8080"),
        ("https://example.com/ollama/", "example.com:443", "https://example.com:443/ollama"),
    ],
)
def test_parse_backend_accepts(value, name, url):
    """Valid backend values give the expected name and URL."""
    spec = op.parse_backend(value)
    assert (spec.name, spec.url) == (name, url)


def test_parse_backend_basic_auth():
    """user:password in the URL becomes a Basic Authorization header, percent-decoded."""
    spec = op.parse_backend("https://alice:s%40cret@gpu.example:8443")
    assert spec.auth == "Basic " + base64.b64encode(b"alice:s@cret").decode()
    assert "alice" not in spec.url and spec.host_header == "gpu.example:8443"


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("ftp://host:21", "scheme"),
        ("http://host:99999", "port"),
        ("http://host:0", "port"),
        ("http://host:abc", "port"),
        ("http://:11434", "host"),
        ("http://0.0.0.0:11434", "not an address"),
        ("http://host:1/?x=1", "query"),
        ("bad name=http://host:1", "name"),
        ("", "no URL"),
    ],
)
def test_parse_backend_rejects(value, fragment):
    """A doubtful --backend value is a ConfigError that says what is wrong."""
    with pytest.raises(op.ConfigError, match=fragment):
        op.parse_backend(value)


# -- build_config: flags win over variables, validation ------------------------------------

def test_flag_beats_environment():
    """A flag wins over its variable; a variable wins over the default."""
    env = {"PROXY_PORT": "12000", "REQUEST_TIMEOUT_SECONDS": "30", "LOG_LEVEL": "debug"}
    config = op.build_config(["--port", "13000"], env)
    assert config.port == 13000
    assert config.request_timeout == 30.0
    assert config.log_level == "debug"
    assert op.build_config([], {}).port == 11435


def test_default_backend_sources_in_order():
    """--backend, then OLLAMA_BACKENDS, then OLLAMA_HOST, then OLLAMA_BASE_URL, then the default."""
    assert op.build_config([], {}).backends[0].url == "http://127.0.0.1:11434"
    assert op.build_config([], {"OLLAMA_BASE_URL": "http://b:1"}).backends[0].url == "http://b:1"
    env = {"OLLAMA_HOST": "0.0.0.0:2000", "OLLAMA_BASE_URL": "http://b:1"}
    assert op.build_config([], env).backends[0].url == "http://127.0.0.1:2000"
    env["OLLAMA_BACKENDS"] = "c=http://c:3"
    assert op.build_config([], env).backends[0].name == "c"
    assert op.build_config(["--backend", "d:4"], env).backends[0].url == "http://d:4"


@pytest.mark.parametrize(
    "argv, env, fragment",
    [
        (["--port", "70000"], {}, "out of range"),
        (["--port", "x"], {}, "not a number"),
        (["--request-timeout", "-1"], {}, "at least"),
        (["--heartbeat", "nan"], {}, "at least"),
        (["--log-level", "loud"], {}, "log-level"),
        (["--log-format", "xml"], {}, "log-format"),
        ([], {"REJECT_STREAMING": "maybe"}, "boolean"),
        (["--port", "11500", "--backend", "http://127.0.0.1:11500"], {}, "own listen address"),
        (["--port", "11500", "--backend", "http://localhost:11500"], {}, "own listen address"),
        (["--host", "0.0.0.0", "--port", "11500", "--backend", "127.0.0.1:11500"], {}, "own listen address"),
        (["--backend", "a=http://x:1", "--backend", "a=http://y:2"], {}, "a"),
    ],
)
def test_bad_configuration_is_refused(argv, env, fragment):
    """Bad settings raise ConfigError with a message naming the problem."""
    with pytest.raises(op.ConfigError, match=fragment):
        op.build_config(argv, env)


def test_bad_configuration_exits_2_without_traceback():
    """The real CLI exits 2 with one clear line on stderr and no traceback, before listening."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "ollama_proxy.py"), "--backend", "http://host:99999"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "port" in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_help_lists_every_flag_with_its_variable():
    """--help names each flag's environment variable and default."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "ollama_proxy.py"), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for flag, env in [("--host", "PROXY_HOST"), ("--port", "PROXY_PORT"), ("--backend", "OLLAMA_BACKENDS"),
                      ("--connect-timeout", "BACKEND_CONNECT_TIMEOUT_SECONDS"), ("--request-timeout", "REQUEST_TIMEOUT_SECONDS"),
                      ("--header-timeout", "PROXY_HEADER_TIMEOUT_SECONDS"), ("--idle-timeout", "PROXY_IDLE_TIMEOUT_SECONDS"),
                      ("--shutdown-grace", "PROXY_SHUTDOWN_GRACE_SECONDS"), ("--reject-streaming", "REJECT_STREAMING"),
                      ("--heartbeat", "PROXY_HEARTBEAT_SECONDS"), ("--api-key", "PROXY_API_KEY"),
                      ("--log-level", "LOG_LEVEL"), ("--log-format", "LOG_FORMAT")]:
        assert flag in text and "$" + env in text, flag


# -- headers, errors, streams ---------------------------------------------------------------

def test_strip_hop_by_hop_drops_listed_and_named_headers():
    """Hop-by-hop headers and those named in Connection are dropped; others keep their order."""
    headers = [(b"connection", b"keep-alive, x-secret"), (b"x-secret", b"1"), (b"keep-alive", b"timeout=5"),
               (b"transfer-encoding", b"chunked"), (b"content-type", b"application/json"), (b"te", b"trailers"),
               (b"x-other", b"2")]
    assert op.strip_hop_by_hop(headers) == [(b"content-type", b"application/json"), (b"x-other", b"2")]


@pytest.mark.parametrize(
    "status, dialect, expected",
    [
        (502, op.NATIVE, {"error": "boom"}),
        (400, op.OPENAI, {"error": {"message": "boom", "type": "invalid_request_error", "param": None, "code": None}}),
        (404, op.OPENAI, {"error": {"message": "boom", "type": "not_found_error", "param": None, "code": None}}),
        (503, op.OPENAI, {"error": {"message": "boom", "type": "api_error", "param": None, "code": None}}),
        # anthropic.NewError: the type by status, 503 and 529 overloaded, anything else api_error
        (400, op.ANTHROPIC, {"type": "error", "error": {"type": "invalid_request_error", "message": "boom"}}),
        (401, op.ANTHROPIC, {"type": "error", "error": {"type": "authentication_error", "message": "boom"}}),
        (403, op.ANTHROPIC, {"type": "error", "error": {"type": "permission_error", "message": "boom"}}),
        (404, op.ANTHROPIC, {"type": "error", "error": {"type": "not_found_error", "message": "boom"}}),
        (429, op.ANTHROPIC, {"type": "error", "error": {"type": "rate_limit_error", "message": "boom"}}),
        (503, op.ANTHROPIC, {"type": "error", "error": {"type": "overloaded_error", "message": "boom"}}),
        (499, op.ANTHROPIC, {"type": "error", "error": {"type": "api_error", "message": "boom"}}),
        (500, op.ANTHROPIC, {"type": "error", "error": {"type": "api_error", "message": "boom"}}),
    ],
)
def test_error_body_shapes(status, dialect, expected):
    """Errors come in Ollama's shape, OpenAI's on /v1 (type by status, as ollama-api.md §6.4), or
    Anthropic's on /v1/messages with a fresh req_<24 hex> request id (agents-api.md §1.2)."""
    body = json.loads(op.error_body(status, "boom", dialect))
    if dialect == op.ANTHROPIC:
        assert re.fullmatch(r"req_[0-9a-f]{24}", body.pop("request_id"))
    assert body == expected


@pytest.mark.parametrize(
    "path, dialect",
    [("/api/chat", "native"), ("/v1/chat/completions", "openai"), ("/v1/responses", "openai"), ("/v1/models", "openai"),
     ("/v1/messages", "anthropic"), ("/v1/messages/count_tokens", "anthropic"), ("/v1", "openai"), ("/v1x", "native")],
)
def test_dialect_of(path, dialect):
    assert op.dialect_of(path) == dialect


def test_anthropic_stream_error_event():
    """A broken /v1/messages stream ends with the event the Anthropic SDKs raise on."""
    line = op.error_line(502, "backend gone", op.ANTHROPIC)
    assert line.startswith(b"event: error\ndata: ") and line.endswith(b"\n\n")
    assert json.loads(line.split(b"data: ", 1)[1]) == {"type": "error", "error": {"type": "api_error", "message": "backend gone"}}


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"error":"model \'x\' not found"}', "model 'x' not found"),
        (b'{"error":{"message":"bad","type":"api_error"}}', "bad"),
        (b"plain text", "plain text"),
        (b"", "backend error"),
    ],
)
def test_error_message_from_body(body, message):
    """The error text is found in either shape, or the raw text is used."""
    assert op.error_message_from_body(body) == message


@pytest.mark.parametrize(
    "path, body, streams",
    [
        ("/api/chat", {}, True),
        ("/api/chat", {"stream": False}, False),
        ("/api/generate", {"stream": True}, True),
        ("/api/pull", {"stream": None}, True),
        ("/api/embed", {}, False),
        ("/v1/chat/completions", {}, False),
        ("/v1/chat/completions", {"stream": True}, True),
        ("/v1/completions", {"stream": False}, False),
        ("/api/chat", [], True),
    ],
)
def test_wants_stream(path, body, streams):
    """Native generate/chat/pull stream unless stream is false; /v1 only with stream true."""
    assert op.wants_stream(path, body) is streams


@pytest.mark.parametrize(
    "tail, final",
    [
        (b'{"done":false}\n{"model":"m","done":true,"done_reason":"stop"}\n', True),
        (b'{"done": true}\n', True),
        (b'{"done":false}\n{"error":"runner died"}\n', True),
        (b'{"done":true}\n{"done":false,"message":{}}\n', False),
        (b"", False),
    ],
)
def test_has_final_line(tail, final):
    """A native stream is complete only when its last line is done:true or an error."""
    assert op.has_final_line(tail) is final


def test_tokens_per_second_from_final_stats():
    """eval_count / eval_duration of the final stats give the generation rate."""
    tail = b'"eval_count":50,"eval_duration":2000000000}\n'
    assert op.tokens_per_second(tail) == (50, 25.0)
    assert op.tokens_per_second(b'{"done":false}') is None


def test_module_docstring_maps_the_banners():
    """The section map in the module docstring lists exactly the section banners, in order."""
    with open(os.path.join(ROOT, "ollama_proxy.py"), encoding="utf-8") as f:
        source = f.read()
    banners = re.findall(r"^# (\d+)\. (.+)$", source, re.M)
    doc = op.__doc__ or ""
    mapped = re.findall(r"^\s{4}(\d+)\. (\S+(?: \S+)*?)\s{2,}", doc, re.M)
    assert [n for n, _ in banners] == [str(i) for i in range(len(banners))]
    assert [(n, t.split()[0]) for n, t in banners] == [(n, t.split()[0]) for n, t in mapped]


def test_host_bytes_are_ascii_unless_the_name_is_international():
    """The Host header sent upstream; only an international name needs the idna codec."""
    assert op.parse_backend("http://127.0.0.1:11434").host_bytes == b"127.0.0.1:11434"
    assert op.parse_backend("http://[::1]:11434").host_bytes == b"[::1]:11434"
    assert op.parse_backend("http://bücher.example:11434").host_bytes == b"xn--bcher-kva.example:11434"


URLS = [
    "http://127.0.0.1:11434", "http://localhost", "https://GPU1.Example.com:8443/ollama/", "http://[::1]:11434",
    "http://[FE80::1%25eth0]:1", "http://user:p%40ss@host:1/x", "http://user@host", "http://:pw@host", "http://@host",
    "http://host:/p", "http://host:0", "http://host?x=1#f", "http://host#f?x", "http://h/a?b#c", " \t http://h:1",
    "http://h\t:1\n2", "HTTP://h", "http://h:65535", "http://u:a:b@h", "http://a@b@h:2", "http://h/p/q/",
]
BAD_URLS = ["http://h:65536", "http://h:12a", "http://h:-1", "http://[::1", "http://::1]:2", "http://[notanaddress]:1", "http://h:١٢"]


@pytest.mark.parametrize("url", URLS)
def test_split_url_agrees_with_urlsplit(url):
    """split_url stands in for urllib.parse.urlsplit (not loaded by the proxy); urlsplit is the second source."""
    from urllib.parse import urlsplit

    theirs = urlsplit(url)
    ours = op.split_url(url)
    assert ours == op.SplitURL(theirs.scheme, theirs.username, theirs.password, theirs.hostname or "", theirs.port,
                               theirs.path, theirs.query, theirs.fragment)


#: refused by urlsplit since Python 3.11/3.12 (bracketed hosts checked, non-ASCII digits); split_url refuses them on every Python
NEWER_BAD_URLS = {"http://[notanaddress]:1", "http://h:١٢"}


@pytest.mark.parametrize("url", BAD_URLS)
def test_split_url_refuses_what_urlsplit_refuses(url):
    from urllib.parse import urlsplit

    if url not in NEWER_BAD_URLS or sys.version_info >= (3, 12):
        with pytest.raises(ValueError):
            urlsplit(url).port
    with pytest.raises(ValueError):
        op.split_url(url)


@pytest.mark.parametrize("text", ["plain", "a%20b", "%E2%82%AC", "%e2%82%ac%20x", "bad%ZZ", "%", "%C3", "caf%C3%A9%2F", "100%25"])
def test_percent_decode_agrees_with_unquote(text):
    from urllib.parse import unquote

    assert op.percent_decode(text) == unquote(text)


def test_system_random_ids_are_in_range():
    values = {op.SystemRandom.randrange(7) for _ in range(500)}
    assert values == set(range(7))
    assert op.responses_id("resp", op.SystemRandom).startswith("resp_")
