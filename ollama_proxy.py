"""ollama-proxy: an HTTP proxy that sits between AI clients and Ollama servers.

It forwards every request to an Ollama server and fixes, per model and per
request, what clients get wrong.  One file, standard library plus ``h11``,
asyncio underneath.  Runs on CPython 3.9 through 3.13.

Run it::

    python3 ollama_proxy.py --backend http://127.0.0.1:11434     # listens on 127.0.0.1:11435
    python3 ollama_proxy.py --help                                # every flag and its variable

Section map (``grep -n '^# [0-9]*\\. ' `` prints the same list):

    0. Header               constants, the logger (ProxyLog: one unbuffered write a line)
    1. Configuration        Config, pure parsers, build_config(argv, environ)
    2. Errors               ProxyError and its subclasses, error bodies (Ollama and OpenAI shape)
    3. HTTP plumbing        header helpers, parse_simple_request (plain requests; h11 reads the
                            others), IdleTimer, LineSplitter, ServerSide (the responses are
                            written by response_head and ServerSide)
    4. Upstream client      ResponseParser (the backends' HTTP/1.1 answers, sans-IO), UpstreamConnection,
                            the per-backend pool, its JSON client
    5. Backends             Backend, the probes, DNS discovery, the scanner thread, Fleet (health
                            from probes and from real traffic: ejection; inventories, reports)
    6. Routing and queue    routes, the pure choice and queue pick, StickyTable, Scheduler (slots, queue)
    7. Models               model names, /api/show metadata, prompt estimates, context sizes, Models
    8. Request modifiers    num_ctx, num_predict, keep_alive: one interface, one ordered list
    9. OpenAI translation   /v1 requests (chat, completions, embeddings, Anthropic messages,
                            responses) to the native API and the answers back, streaming too
    10. Embedding chunking  split long inputs, average the pieces' vectors
    11. Merged lists        /api/tags, /api/ps, /api/version from many backends; Metrics, and
                            Recent (the last requests and minutes for the status page)
    12. Server              Exchange, Planner (each Attempt), Relay (every answer), OwnEndpoints,
                            RequestReader, Forwarder (a request to a backend and back: attempts,
                            retries, uploads), and App: accept loop, connection loop, the wiring
    13. Doctor              --check and the flash-attention check: what Ollama sees, what the proxy sends;
                            --check --limits MODEL: the sizes this machine really runs
    14. CLI                 argument parser, logging setup, main()

Invariants: only sections 3, 4, 12, the probes of 5 and the doctor touch sockets; a
client's request is read by parse_simple_request when it is plain and whole, else by h11
(sections 3 and 12), the responses to them are written in section 3 (byte for byte as h11
wrote them), ResponseParser reads the backends' answers
(section 4 turns its errors into ours); everything else is pure data and
functions, unit-tested alone.  The scanner thread hands its results to the event loop
through call_soon_threadsafe, nothing else.  Each piece of mutable state has one owner
(Fleet the backends, Scheduler the queue, Models what is known of the models, Metrics
the counters), and ``App``, built by ``main()``, composes them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import dataclasses
import fnmatch
import functools
import itertools
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import ssl
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import h11

__version__ = "0.1.0"
_LOADED_AT = time.time()  #: when this module began to run (compiled_at_start compares its bytecode's age)

# ---------------------------------------------------------------------------
# 0. Header
# ---------------------------------------------------------------------------

class ProxyLog:
    """The proxy's log: the calls of a ``logging.Logger`` (debug, info, warning, error,
    exception, log, isEnabledFor; ``extra={"fields": {...}}`` for the JSON lines).

    Until ``write_to`` is called every call goes to the standard logger ``ollama_proxy`` (so an
    embedding program or a test sees ordinary records). ``main()`` calls it: from then on each
    line is formatted here and written to the descriptor with one ``os.write``, unbuffered, so a
    line is out before the call returns and nothing is lost when the process dies, and without
    the standard machinery's per-record cost (the caller lookup, a LogRecord, a handler lock,
    strftime for every line: the time prefix is made once a second). Text lines read
    ``2026-12-03 09:15:16,123 INFO message`` (local time), JSON lines
    ``{"time": "...Z", "level": "info", "message": ..., <fields>}``.
    """

    _NAMES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARNING", logging.ERROR: "ERROR",
              logging.CRITICAL: "CRITICAL"}

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)
        self.fd: Optional[int] = None  #: None: the standard logger does the work
        self.level = logging.INFO
        self.json = False
        self._second = -1
        self._stamp = ""

    def write_to(self, fd: int, level: int, json_lines: bool) -> None:
        self.fd, self.level, self.json = fd, level, json_lines
        self.logger.setLevel(level)  # for anything still asking the standard logger

    @property
    def fields_wanted(self) -> bool:
        """Whether ``extra={"fields": ...}`` is read (json lines, or records for the standard
        logger): a caller may skip building them otherwise."""
        return self.json or self.fd is None

    def isEnabledFor(self, level: int) -> bool:
        if self.fd is None:
            return self.logger.isEnabledFor(level)
        return level >= self.level

    def debug(self, msg: str, *args: Any, extra: Optional[Dict[str, Any]] = None, exc_info: Any = None) -> None:
        self._emit(logging.DEBUG, msg, args, extra, exc_info)

    def info(self, msg: str, *args: Any, extra: Optional[Dict[str, Any]] = None, exc_info: Any = None) -> None:
        self._emit(logging.INFO, msg, args, extra, exc_info)

    def warning(self, msg: str, *args: Any, extra: Optional[Dict[str, Any]] = None, exc_info: Any = None) -> None:
        self._emit(logging.WARNING, msg, args, extra, exc_info)

    def error(self, msg: str, *args: Any, extra: Optional[Dict[str, Any]] = None, exc_info: Any = None) -> None:
        self._emit(logging.ERROR, msg, args, extra, exc_info)

    def exception(self, msg: str, *args: Any, extra: Optional[Dict[str, Any]] = None, exc_info: Any = True) -> None:
        self._emit(logging.ERROR, msg, args, extra, exc_info)

    def log(self, level: int, msg: str, *args: Any, extra: Optional[Dict[str, Any]] = None, exc_info: Any = None) -> None:
        self._emit(level, msg, args, extra, exc_info)

    def _emit(self, level: int, msg: str, args: Tuple[Any, ...], extra: Optional[Dict[str, Any]], exc_info: Any) -> None:
        if self.fd is None:  # stacklevel 3: the record names the caller of info() / log(), not this class
            self.logger.log(level, msg, *args, extra=extra, exc_info=exc_info, stacklevel=3)
            return
        if level < self.level:
            return
        try:
            message = msg % args if args else msg
        except (TypeError, ValueError) as exc:  # a bad format must not cost the request
            message = "%s %r (log format error: %s)" % (msg, args, exc)
        trace = None
        if exc_info:
            import traceback
            trace = "".join(traceback.format_exception(*sys.exc_info())).rstrip("\n")
        now = time.time()
        if self.json:
            obj: Dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % (now % 1 * 1000),
                                   "level": self._NAMES.get(level, "LEVEL %d" % level).lower(), "message": message}
            fields = extra.get("fields") if extra else None
            if fields:
                obj.update(fields)
            if trace:
                obj["traceback"] = trace
            line = json.dumps(obj) + "\n"
        else:
            second = int(now)
            if second != self._second:
                self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            line = "%s,%03d %s %s\n" % (self._stamp, (now - second) * 1000, self._NAMES.get(level, "Level %d" % level), message)
            if trace:
                line += trace + "\n"
        data = line.encode("utf-8", "backslashreplace")
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:  # stderr closed or a broken pipe: the proxy goes on without its log
            pass


log = ProxyLog("ollama_proxy")

#: Headers that belong to one hop and are never forwarded (RFC 9110 §7.6.1),
#: plus the framing headers that h11 sets itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
MAX_HEAD_BYTES = 64 * 1024  #: a request head larger than this gets 431
MAX_JSON_BODY = 64 * 1024 * 1024  #: a buffered request body larger than this gets 413
UPLOAD_CHUNK_LIMIT = 1 << 62  #: streamed uploads (blobs) have no size limit, only sane chunk framing
READ_SIZE = 64 * 1024  #: bytes asked of a socket per read
SIMPLE_BODY_AHEAD = 1024 * 1024  #: a plain request's body still to come, up to this, is read without h11
LINGER_SECONDS = 2.0  #: how long a lingering close waits for the peer's EOF

#: Native endpoints that stream unless the body says ``"stream": false``.
STREAM_BY_DEFAULT = frozenset({"/api/chat", "/api/generate", "/api/pull", "/api/push", "/api/create"})
#: OpenAI-compatible endpoints that stream only with ``"stream": true``.
STREAM_ON_REQUEST = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"})
#: Endpoints whose JSON body names a model (read for logs, streaming decisions, later modifiers).
MODEL_PATHS = frozenset(
    {
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/api/show",
        "/api/pull",
        "/api/push",
        "/api/create",
        "/api/delete",
        "/api/copy",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
    }
)
#: Request bodies on these paths are streamed upstream, never buffered (and never retried).
#: (/api/create is small JSON that names blobs by digest: it is read like any JSON body, so
#: that --reject-streaming, the heartbeat and the log see it.)
STREAMED_UPLOAD_PREFIXES = ("/api/blobs/",)

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

# ---------------------------------------------------------------------------
# 1. Configuration
# ---------------------------------------------------------------------------


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line for the person starting the proxy."""


@dataclass(frozen=True)
class BackendSpec:
    """A parsed backend address: where to connect and how to present ourselves."""

    name: str
    scheme: str  #: "http" or "https"
    host: str  #: host name or IP literal, without brackets
    port: int
    path_prefix: str = ""  #: prepended to every forwarded path ("" for a plain server)
    auth: Optional[str] = None  #: the Authorization header value from user:password in the URL

    @property
    def host_header(self) -> str:
        """The Host header Ollama expects: its own host:port."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%d" % (host, self.port)

    @property
    def host_bytes(self) -> bytes:
        """``host_header`` as sent: ASCII, or IDNA for an international name (the idna codec, and
        the unicodedata tables it loads, cost 0.4 MB of memory: only such a name pays for them)."""
        text = self.host_header
        return text.encode("ascii") if text.isascii() else text.encode("idna")

    @property
    def url(self) -> str:
        return "%s://%s%s" % (self.scheme, self.host_header, self.path_prefix)


@dataclass(frozen=True)
class Config:
    """Every setting of the proxy; built once by ``build_config`` and never changed."""

    host: str = "127.0.0.1"
    port: int = 11435
    backends: Tuple[BackendSpec, ...] = ()
    connect_timeout: float = 2.0
    request_timeout: float = 600.0
    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    shutdown_grace: float = 30.0
    reject_streaming: bool = False
    heartbeat: float = 10.0
    api_key: Optional[str] = None
    log_level: str = "info"
    log_format: str = "text"
    max_context: int = 16384  #: cap on num_ctx whatever the model supports; 0 = no cap
    num_ctx: Tuple[Tuple[str, int], ...] = ()  #: (model pattern, fixed num_ctx)
    context_mode: str = "model"  #: model, auto or off
    context_sizes: Tuple[int, ...] = (2048, 4096, 8192, 16384, 32768)
    num_predict: int = 4096  #: injected when a generation sets none; 0 = never
    keep_alive: Tuple[Tuple[str, Any], ...] = ()  #: (model pattern, keep_alive value)
    scan_interval: float = 5.0  #: seconds between probe rounds (health, /api/tags, /api/ps); 0 = no probes
    scan: Optional[Tuple[str, int, int]] = None  #: (host, first port, last port) to discover backends on
    discover_dns: Tuple[Tuple[str, int], ...] = ()  #: (DNS name, port): a backend at every address the name resolves to
    probe_timeout: float = 1.0  #: timeout of one probe (both of its requests)
    routes: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()  #: (model pattern, backend names)
    aliases: Tuple[Tuple[str, str], ...] = ()  #: (normalized alias, the model sent upstream)
    list_aliases: bool = False  #: also list aliases in /api/tags and /v1/models
    preload: Tuple[str, ...] = ()  #: normalized models loaded on every backend that has them
    max_retries: int = 2  #: extra attempts on other backends after a failure
    eject_after: int = 3  #: failed requests in a row after which a backend is ejected (SPEC §6); 0 = never
    eject_seconds: float = 10.0  #: the first cool-off of an ejection; each one in a row doubles it, up to 300
    max_concurrent: int = 0  #: requests one backend serves at once; 0 = no cap
    queue_timeout: float = 300.0  #: longest wait in the queue
    max_queue: int = 512  #: waiting requests beyond this get 503 at once
    sticky: bool = True  #: keep a conversation on the backend that served its previous turn
    max_embed_chars: int = 2000  #: longest embedding input sent in one piece; 0 = derived per model
    chunking: bool = True  #: split over-long embedding inputs (False: 400 instead)
    translate: bool = True  #: translate /v1 chat, completions and embeddings to the native API
    stable_prefix: bool = True  #: replace Claude Code's per-request billing hash by a fixed one (SPEC §7.2)
    check: bool = False  #: run the doctor and exit
    limits: Optional[str] = None  #: with check: the model whose context limits the doctor measures (SPEC §8)
    notes: Tuple[str, ...] = ()  #: settings named twice (ours and another proxy's name): which one was used, logged at start

    @property
    def discovering(self) -> bool:
        """Are backends found while running (--scan, --discover-dns), so that the set grows and shrinks?"""
        return self.scan is not None or bool(self.discover_dns)


def _strip_env_value(value: str) -> str:
    """A variable's value as Ollama's envconfig reads it: Go's ``strings.Trim(strings.TrimSpace(v), "\"'")``
    (white space first, then every leading and trailing quote, no second white-space trim)."""
    return value.strip().strip("\"'")


def _split_host_port(hostport: str) -> Tuple[str, Optional[str]]:
    """Split like Go's net.SplitHostPort; return (hostport, None) when it has no port."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            return hostport, None
        host, rest = hostport[1:end], hostport[end + 1 :]
        if rest.startswith(":"):
            return host, rest[1:]
        return hostport, None
    if hostport.count(":") == 1:
        host, port = hostport.split(":")
        return host, port
    return hostport, None


def parse_ollama_host(value: str) -> Tuple[str, str, int, str]:
    """Parse OLLAMA_HOST exactly as Ollama does (envconfig.Host): (scheme, host, port, path).

    An unparsable or out-of-range port falls back to the scheme's default, as in Ollama.
    The host is returned without brackets; it may be empty (meaning all interfaces).
    """
    value = _strip_env_value(value)
    scheme, default_port = "http", 11434
    hostport = value
    if "://" in value:
        scheme, hostport = value.split("://", 1)
        if scheme == "http":
            default_port = 80
        elif scheme == "https":
            default_port = 443
    elif value == "ollama.com":
        return "https", "ollama.com", 443, ""
    path = ""
    if "/" in hostport:
        hostport, path = hostport.split("/", 1)
        path = "/" + path
    host, port_text = _split_host_port(hostport)
    if port_text is None:
        host = hostport
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
    port = default_port
    if port_text is not None:
        try:
            port = int(port_text)
        except ValueError:
            port = default_port
        if not 0 <= port <= 65535:
            port = default_port
    return scheme, host, port, path


#: Addresses that mean "all interfaces" when listening, and "this machine" when connecting.
UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::", "0:0:0:0:0:0:0:0"})


def backend_from_ollama_host(value: str) -> BackendSpec:
    """The default backend from OLLAMA_HOST: an unspecified address connects to 127.0.0.1."""
    scheme, host, port, path = parse_ollama_host(value)
    if host in UNSPECIFIED_HOSTS:
        host = "127.0.0.1"
    if scheme not in ("http", "https"):
        raise ConfigError("OLLAMA_HOST=%r: scheme must be http or https" % value)
    return BackendSpec(name=_default_name(host, port), scheme=scheme, host=host, port=port, path_prefix=path.rstrip("/"))


def _default_name(host: str, port: int) -> str:
    return "%s:%d" % ("[%s]" % host if ":" in host else host, port)


_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


_PERCENT_RE = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_C0_AND_SPACE = "".join(map(chr, range(33)))


def percent_decode(text: str) -> str:
    """``text`` with its %XX escapes decoded as UTF-8 (an invalid sequence becomes U+FFFD), as
    ``urllib.parse.unquote`` does.  (urllib.parse is not loaded: on Python 3.13 it brings
    ipaddress along, 0.4 MB of every proxy's memory for two functions.)"""
    if "%" not in text:
        return text
    return _PERCENT_RE.sub(lambda m: bytes.fromhex(m.group(0).replace("%", "")).decode("utf-8", "replace"), text)


class SplitURL(NamedTuple):
    """What ``split_url`` finds in ``scheme://user:password@host:port/path?query#fragment``."""

    scheme: str
    username: Optional[str]
    password: Optional[str]
    hostname: str  #: lower-case, without the brackets of an IPv6 literal
    port: Optional[int]
    path: str
    query: str
    fragment: str


def split_url(text: str) -> SplitURL:
    """A URL's parts, as ``urllib.parse.urlsplit`` gives them (``hostname``, ``port``, ``username``,
    ``password``): the scheme lower-case, ASCII tab and newlines dropped, a port that is not a
    number from 0 to 65535, or brackets around anything but an IPv6 address, refused with ValueError."""
    text = text.lstrip(_C0_AND_SPACE).translate({9: None, 10: None, 13: None})
    scheme, sep, rest = text.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        scheme, rest = "", text
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    cut = rest.find("/")
    netloc, path = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    userinfo, at, hostport = netloc.rpartition("@")
    username = password = None
    if at:
        username, colon, pw = userinfo.partition(":")
        password = pw if colon else None
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ValueError("Invalid IPv6 URL")
        host, after = hostport[1:close], hostport[close + 1 :]
        try:
            socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
        except OSError:
            raise ValueError("%r is not a valid IPv6 address" % host) from None
        port_text = after[1:] if after.startswith(":") else None
    else:
        if "[" in hostport or "]" in hostport:
            raise ValueError("Invalid IPv6 URL")
        host, colon, port_text = hostport.partition(":")
        port_text = port_text if colon else None
    port = None
    if port_text:
        if not port_text.isdigit() or not port_text.isascii():
            raise ValueError("Port could not be cast to integer value as %r" % port_text)
        port = int(port_text)
        if port > 65535:
            raise ValueError("Port out of range 0-65535")
    return SplitURL(scheme.lower(), username, password, host.lower(), port, path, query, fragment)


def parse_backend(value: str) -> BackendSpec:
    """Parse a ``--backend [NAME=]URL`` value strictly: anything doubtful is a ConfigError.

    The scheme is http or https (``host:port`` alone means http); without a port, http
    means 11434 when no scheme was written, else the scheme's own port (80 or 443), as
    Ollama's clients read OLLAMA_HOST.  user:password in the URL becomes Basic auth.
    """
    text = value.strip()
    name = None
    eq = text.find("=")
    if eq > 0 and "/" not in text[:eq] and ":" not in text[:eq]:
        name, text = text[:eq], text[eq + 1 :].strip()
        if not _NAME_RE.match(name):
            raise ConfigError("backend %r: the name may use letters, digits, '.', '_' and '-' only" % value)
    if not text:
        raise ConfigError("backend %r: no URL" % value)
    had_scheme = "://" in text
    if not had_scheme:
        text = "http://" + text
    try:
        parts = split_url(text)
    except ValueError:
        raise ConfigError("backend %r: the port must be a number from 1 to 65535" % value) from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError("backend %r: the scheme must be http or https, not %r" % (value, parts.scheme))
    if parts.query or parts.fragment:
        raise ConfigError("backend %r: a backend URL takes no query or fragment" % value)
    host, port = parts.hostname, parts.port
    if not host:
        raise ConfigError("backend %r: no host" % value)
    if host in UNSPECIFIED_HOSTS:
        raise ConfigError("backend %r: %r is not an address to connect to (use 127.0.0.1)" % (value, host))
    if port is None:
        port = 11434 if not had_scheme else (443 if parts.scheme == "https" else 80)
    if not 1 <= port <= 65535:
        raise ConfigError("backend %r: the port must be from 1 to 65535" % value)
    auth = None
    if parts.username is not None:
        pair = "%s:%s" % (percent_decode(parts.username), percent_decode(parts.password or ""))
        auth = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return BackendSpec(
        name=name or _default_name(host, port),
        scheme=parts.scheme,
        host=host,
        port=port,
        path_prefix=parts.path.rstrip("/"),
        auth=auth,
    )


def _parse_number(flag: str, text: str, kind: Callable[[str], Any], minimum: float = 0) -> Any:
    try:
        number = kind(str(text).strip())
    except ValueError:
        raise ConfigError("%s: %r is not a number" % (flag, text)) from None
    if number != number or number < minimum:  # NaN, or below the floor
        raise ConfigError("%s: %r must be at least %s" % (flag, text, minimum))
    return number


def _parse_context_value(text: str) -> int:
    return _parse_number("--num-ctx", text, int, 1)


def _parse_bool(flag: str, text: str) -> bool:
    lowered = _strip_env_value(text).lower()
    if lowered in ("1", "true", "yes", "on", "t", "y"):
        return True
    if lowered in ("0", "false", "no", "off", "f", "n", ""):
        return False
    raise ConfigError("%s: %r is not a boolean (use true or false)" % (flag, text))


def _parse_port(flag: str, text: Any, minimum: int = 0) -> int:
    port = _parse_number(flag, text, int, minimum)
    if port > 65535:
        raise ConfigError("%s: %d is out of range (%d to 65535)" % (flag, port, minimum))
    return port


#: The seeds' names for our log levels: gollamas' logrus (warn, trace, fatal, panic), arosboro's
#: tracing (warn, trace), Python's own critical.  trace is debug, the most we say.
_LEVEL_SYNONYMS = {"warn": "warning", "trace": "debug", "fatal": "error", "panic": "error", "critical": "error"}


def _level_name(text: str) -> Optional[str]:
    level = _strip_env_value(str(text)).lower()
    level = _LEVEL_SYNONYMS.get(level, level)
    return level if level in LOG_LEVELS else None


def parse_log_level(flag: str, text: str) -> str:
    """A log level in any case (``DEBUG``), ours or a seed's name for it (``warn``, ``trace``)."""
    level = _level_name(text)
    if level is None:
        raise ConfigError("%s: %r is not one of %s" % (flag, text, ", ".join(LOG_LEVELS)))
    return level


def rust_log_level(value: str) -> Optional[str]:
    """Our log level from arosboro's ``RUST_LOG``, read as Rust's env_logger and tracing read it:
    comma-separated directives, each ``LEVEL`` (every target), ``TARGET=LEVEL`` or a bare ``TARGET``
    (trace for it), then an optional ``/regex`` filter.  The seed's own target (``ollama_proxy``, later
    ``ollama_proxy_rs``) wins over the global level; ``trace`` is debug and ``off`` error.  None when
    it sets no level for the seed or an unknown one: the seed fell back to info then, and so do we."""
    found: Dict[bool, str] = {}  #: own target? -> its level, the last directive winning
    for directive in (d.strip() for d in _strip_env_value(value).split("/", 1)[0].split(",")):
        target, sep, level = directive.rpartition("=")
        if not sep and _level_name(directive) is None and directive.lower() != "off":
            target, level = directive, "trace"
        target = target.split("[", 1)[0].strip().lower()  # TARGET[span{field=value}]=LEVEL
        if directive and (not target or target.startswith("ollama_proxy")):
            found[bool(target)] = level
    for own in (True, False):
        level = found.get(own, "")
        if level.strip().lower() == "off":
            return "error"
        if _level_name(level):
            return _level_name(level)
    return None


def parse_listen(flag: str, value: str) -> Tuple[str, int]:
    """gollamas' ``--listen HOST:PORT`` (a Go listen address: ``[::1]:11434``; ``:11434`` is every address)."""
    host, port = _split_host_port(value.strip())
    if port is None:
        raise ConfigError("%s %r: expected HOST:PORT, e.g. 0.0.0.0:11434" % (flag, value))
    return host or "0.0.0.0", _parse_port(flag, port)


def backend_from_host_port(host: Optional[str], port: Optional[str]) -> BackendSpec:
    """ollama-context-proxy's ``--ollama-host HOST --ollama-port PORT``: the backend http://HOST:PORT.
    HOST may be a URL (``http://localhost``); the port is --ollama-port, else the URL's, else 11434."""
    text = (host or "").strip() or "127.0.0.1"
    spec = parse_backend(text if "://" in text else "http://" + text)
    explicit = split_url(text).port if "://" in text else None
    number = _parse_port("--ollama-port", port, 1) if port is not None else explicit or 11434
    return dataclasses.replace(spec, port=number, name=_default_name(spec.host, number))


def parse_connection(flag: str, item: str) -> BackendSpec:
    """gollamas' ``--connection ID=URL``: the backend ``--backend ID=URL``, the ID required."""
    name, sep, url = item.partition("=")
    if not sep or not name.strip() or not url.strip():
        raise ConfigError("%s %r: expected ID=URL, e.g. c1=http://server:11434" % (flag, item))
    return parse_backend(item)


def parse_proxy(flag: str, item: str) -> Tuple[str, str]:
    """gollamas' ``--proxy MODEL=URL|ID`` into (model, destination: a URL or a backend's name)."""
    model, sep, dest = item.partition("=")
    if not sep or not model.strip() or not dest.strip():
        raise ConfigError("%s %r: expected MODEL=URL or MODEL=ID, e.g. llama3.2=http://server:11434 or llama3.2=c1" % (flag, item))
    return model.strip(), dest.strip()


def _seed_items(singular: Optional[List[str]], singular_flag: str, plural: Optional[str], plural_flag: str,
                environ: Mapping[str, str], env: str) -> List[Tuple[str, str]]:
    """A gollamas list, as gollamas builds it: the repeated singular flag, then the comma-separated
    plural flag (else its variable); each item with the name it came from, for error messages."""
    items = [(singular_flag, i) for i in singular or []]
    text, where = (plural, plural_flag) if plural is not None else (environ.get(env, ""), env)
    return items + [(where, i.strip()) for i in _strip_env_value(text).split(",") if i.strip()]


def _seed_env(environ: Mapping[str, str], name: str) -> Optional[str]:
    """A seed's variable, None when unset or empty (gollamas' examples set some to "")."""
    value = _strip_env_value(environ.get(name, ""))
    return value or None


def _choose(setting: str, label: str, sources: Sequence[Tuple[str, Any, bool]], notes: List[str]) -> Tuple[str, Any]:
    """One setting that several names give: the first given of ``sources`` (name, value or None, ours?),
    listed in precedence order: our flag, a seed's flag, our variable, a seed's variable.  Returns the
    name to report a bad value under (``label`` for ours, the seed's own name) and the value (None when
    none is given).  When ours and a seed's were both given, ``notes`` gets a line saying which was used."""
    given = [(name, value, ours) for name, value, ours in sources if value is not None]
    if not given:
        return label, None
    name, value, ours = given[0]
    if len({o for _, _, o in given}) > 1:
        notes.append("%s from %s (%s ignored)" % (setting, name, ", ".join(n for n, _, _ in given[1:])))
    return (label if ours else name), value


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _is_same_address(listen_host: str, listen_port: int, backend: BackendSpec) -> bool:
    """Would connecting to ``backend`` reach this proxy's own listening socket?"""
    if backend.port != listen_port or listen_port == 0:
        return False
    target = backend.host.lower()
    if listen_host in UNSPECIFIED_HOSTS:
        return target in _LOOPBACK_NAMES or target.startswith("127.") or target == socket.gethostname().lower()
    listen = listen_host.lower()
    if listen == target:
        return True
    return listen in _LOOPBACK_NAMES and (target in _LOOPBACK_NAMES or target.startswith("127."))


_GO_DURATION_RE = re.compile(r"^[+-]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$")
_DURATION_ZERO = "0"


def display_model(name: str) -> str:
    """A model name as Ollama's ``Name.DisplayShortest`` prints it in errors: case kept, the default
    registry and namespace left out, and the tag always there (``foo`` -> ``foo:latest``)."""
    name = name.strip()
    lowered = name.lower()
    for prefix in ("registry.ollama.ai/library/", "registry.ollama.ai/", "library/"):
        if lowered.startswith(prefix):  # the default registry and namespace, as /api/tags shows names
            name = name[len(prefix) :]
            break
    if name and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


@functools.lru_cache(maxsize=4096)
def normalize_model(name: str) -> str:
    """Ollama's display form of a model name, lower-cased: the key the proxy knows models by
    (asked several times a request for the same few names, hence the cache)."""
    return display_model(name).lower()


def parse_duration(text: str) -> Any:
    """A --keep-alive value: a bare integer is seconds (sent as a JSON number, -1 = for ever),
    anything else must be a Go duration (``10m``, ``1h30m``, ``-1m``) and is sent as a string."""
    value = text.strip()
    if re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    if value == _DURATION_ZERO or _GO_DURATION_RE.match(value):
        return value
    raise ConfigError("keep-alive %r is not a number of seconds or a duration such as 5m, 1h, -1m" % text)


def parse_model_values(flag: str, items: Sequence[str], convert: Callable[[str], Any]) -> Tuple[Tuple[str, Any], ...]:
    """``MODEL=VALUE`` items (MODEL may be an fnmatch pattern) into (normalized pattern, value) pairs."""
    pairs = []
    for item in items:
        model, sep, value = item.partition("=")
        if not sep or not model.strip() or not value.strip():
            raise ConfigError("%s %r: expected MODEL=VALUE" % (flag, item))
        pairs.append((_model_pattern(model), convert(value.strip())))
    return tuple(pairs)


def lookup_model_value(pairs: Sequence[Tuple[str, Any]], model: str) -> Any:
    """The value of the first pair whose pattern matches the (normalized) model, else None."""
    for pattern, value in pairs:
        if fnmatch.fnmatchcase(model, pattern):
            return value
    return None


MAX_SCAN_PORTS = 4096  #: the widest --scan range (each port is probed every round)


def parse_scan(value: str) -> Tuple[str, int, int]:
    """``--scan HOST:START-END`` (or ``HOST:PORT``) into (host, start, end)."""
    text = value.strip()
    host, sep, ports = text.rpartition(":")
    usage = "--scan %r: expected HOST:START-END, e.g. 127.0.0.1:11500-11599" % value
    if not sep or not host.strip() or not ports.strip():
        raise ConfigError(usage)
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in UNSPECIFIED_HOSTS:
        raise ConfigError("--scan %r: %r is not an address to connect to (use 127.0.0.1)" % (value, host))
    start_text, dash, end_text = ports.partition("-")
    try:
        start = int(start_text)
        end = int(end_text) if dash else start
    except ValueError:
        raise ConfigError(usage) from None
    if not (1 <= start <= 65535 and 1 <= end <= 65535):
        raise ConfigError("--scan %r: ports must be from 1 to 65535" % value)
    if start > end:
        raise ConfigError("--scan %r: the range starts after it ends" % value)
    if end - start + 1 > MAX_SCAN_PORTS:
        raise ConfigError("--scan %r: %d ports is more than the %d one scan may probe" % (value, end - start + 1, MAX_SCAN_PORTS))
    return host, start, end


def parse_discover_dns(value: str) -> Tuple[str, int]:
    """``--discover-dns NAME:PORT`` into (name, port).  NAME is a DNS name as written (an IP
    literal works too, IPv6 in brackets); the port is required: a headless Service has none to offer."""
    text = value.strip()
    usage = "--discover-dns %r: expected NAME:PORT, e.g. ollama-headless.ollama.svc.cluster.local:11434" % value
    name, port = _split_host_port(text) if "/" not in text else (text, None)
    if port is None or not port.strip() or not name:
        raise ConfigError(usage)
    if name in UNSPECIFIED_HOSTS:
        raise ConfigError("--discover-dns %r: %r is not a name to resolve" % (value, name))
    if not (_NAME_RE.match(name) or (":" in name and re.fullmatch(r"[0-9A-Fa-f:.]+", name))):
        raise ConfigError("--discover-dns %r: %r is not a DNS name (letters, digits, '.', '_' and '-')" % (value, name))
    return name, _parse_port("--discover-dns %r" % value, port, 1)


def is_model_pattern(text: str) -> bool:
    """Is a --route or --alias model an fnmatch pattern (``claude-*``) rather than a name?"""
    return any(ch in text for ch in "*?[")


def _model_pattern(text: str) -> str:
    """A model name or fnmatch pattern as the proxy matches it: a name as ``normalize_model``
    shows it (lower case, no default registry prefix, ``:latest`` when untagged)."""
    pattern = text.strip().lower()
    if not is_model_pattern(pattern):
        return normalize_model(pattern)
    for prefix in ("registry.ollama.ai/library/", "registry.ollama.ai/", "library/"):
        if pattern.startswith(prefix):
            return pattern[len(prefix) :]
    return pattern


def parse_route(item: str) -> Tuple[str, Tuple[str, ...]]:
    """``--route MODEL=NAME[+NAME...]`` into (model pattern, backend names)."""
    model, sep, names = item.partition("=")
    parts = tuple(n.strip() for n in names.split("+"))
    if not sep or not model.strip() or not all(parts):
        raise ConfigError("--route %r: expected MODEL=NAME[+NAME...], e.g. llama3.2=gpu1+gpu2" % item)
    return _model_pattern(model), parts


def parse_alias(item: str) -> Tuple[str, str]:
    """``--alias ALIAS=MODEL`` into (the normalized alias or fnmatch pattern, the model name sent
    upstream).  A pattern (``claude-*``) matches the normalized name the client sent."""
    alias, sep, model = item.partition("=")
    alias, model = alias.strip(), model.strip()
    if not sep or not alias or not model:
        raise ConfigError("--alias %r: expected ALIAS=MODEL, e.g. gpt-4o=llama3.2 or 'claude-*=qwen3-coder:30b'" % item)
    if is_model_pattern(model):
        raise ConfigError("--alias %r: the model sent upstream must be a name, not a pattern" % item)
    pattern = _model_pattern(alias)
    if is_model_pattern(pattern):
        if fnmatch.fnmatchcase(normalize_model(model), pattern):
            raise ConfigError("--alias %r: the pattern matches the model it sends, %s" % (item, model))
    elif pattern == normalize_model(model):
        raise ConfigError("--alias %r: the alias and the model are the same name" % item)
    return pattern, model


def _list_setting(flags: Optional[List[str]], environ: Mapping[str, str], env: str) -> List[str]:
    """A repeatable flag's values, else its variable's comma-separated items."""
    if flags is not None:
        return flags
    return [i for i in _strip_env_value(environ.get(env, "")).split(",") if i.strip()]


def _scan_name(name: str, scan: Optional[Tuple[str, int, int]]) -> Optional[Tuple[str, int]]:
    """(the name a discovered backend gets, its port) if ``name`` is a host:port that --scan covers."""
    if scan is None:
        return None
    host, _, port = name.rpartition(":")
    if host.strip("[]").lower() != scan[0].lower() or not port.isdigit() or not scan[1] <= int(port) <= scan[2]:
        return None
    return _default_name(scan[0], int(port)), int(port)


#: (flag, environment variable, default, help) for the flags that take one value.
_ENV_FLAGS = (
    ("host", "PROXY_HOST", "127.0.0.1", "address to listen on"),
    ("port", "PROXY_PORT", "11435", "port to listen on (0 picks a free one)"),
    ("connect_timeout", "BACKEND_CONNECT_TIMEOUT_SECONDS", "2.0", "TCP/TLS connect timeout to a backend, seconds"),
    ("request_timeout", "REQUEST_TIMEOUT_SECONDS", "600", "longest silence from a backend before 504, seconds"),
    ("header_timeout", "PROXY_HEADER_TIMEOUT_SECONDS", "10", "a client must finish its request head within this, seconds"),
    ("idle_timeout", "PROXY_IDLE_TIMEOUT_SECONDS", "75", "an idle client keep-alive connection is closed after this, seconds"),
    ("shutdown_grace", "PROXY_SHUTDOWN_GRACE_SECONDS", "30", "how long in-flight responses may finish after SIGTERM, seconds"),
    ("heartbeat", "PROXY_HEARTBEAT_SECONDS", "10", "send the response head of a waiting stream after S seconds, then SSE comments every S; 0 = off"),
    ("api_key", "PROXY_API_KEY", None, "require 'Authorization: Bearer KEY' or 'x-api-key: KEY' (not forwarded)"),
    ("log_level", "LOG_LEVEL", "info", "debug, info, warning or error"),
    ("log_format", "LOG_FORMAT", "text", "text (one readable line per event) or json (one object per line)"),
    ("max_context", "MAX_CONTEXT_OVERRIDE", "16384", "hard cap on num_ctx whatever the model supports; 0 = no cap"),
    ("context_mode", "PROXY_CONTEXT_MODE", "model", "num_ctx for a request without one: model = min(training context, cap), auto = sized to the prompt, off = untouched"),
    ("context_sizes", "PROXY_CONTEXT_SIZES", "2048,4096,8192,16384,32768", "the sizes auto mode picks from (comma-separated)"),
    ("num_predict", "DEFAULT_NUM_PREDICT", "4096", "num_predict for a generation that sets none; 0 = never inject"),
    ("scan_interval", "SCAN_INTERVAL_SECONDS", "5", "seconds between probe rounds (health, /api/tags, /api/ps of every backend); 0 = no probes, every backend counts as healthy"),
    ("probe_timeout", "PROBE_TIMEOUT_SECONDS", "1.0", "timeout of one probe, seconds"),
    ("max_retries", "MAX_RETRIES", "2", "extra attempts on other backends after a failure before the answer started"),
    ("eject_after", "PROXY_EJECT_AFTER", "3", "failed requests in a row (5xx, transport failure, silence past --request-timeout; not 4xx) after which a backend is ejected for a cool-off; 0 = never"),
    ("eject_seconds", "PROXY_EJECT_SECONDS", "10", "the first cool-off of an ejected backend, seconds; each ejection in a row doubles it, up to 300"),
    ("max_concurrent", "MAX_CONCURRENT_PER_BACKEND", "0", "requests one backend serves at once, the rest wait in the queue; 0 = no cap"),
    ("queue_timeout", "QUEUE_TIMEOUT_SECONDS", "300", "longest wait in the queue before 503 with Retry-After, seconds"),
    ("max_queue", "PROXY_MAX_QUEUE", "512", "waiting requests beyond this get 503 with Retry-After at once"),
    ("max_embed_chars", "MAX_EMBEDDING_INPUT_LENGTH", "2000", "longest embedding input sent upstream in one piece; 0 = derive it per model"),
)
CONTEXT_MODES = ("model", "auto", "off")
#: (flag, environment variable, help) for the repeatable MODEL=VALUE flags.
_PAIR_FLAGS = (
    ("num_ctx", "PROXY_NUM_CTX", "MODEL=N", "fixed num_ctx for a model or fnmatch pattern (repeat)"),
    ("keep_alive", "PROXY_KEEP_ALIVE", "MODEL=DURATION", "keep_alive for a model or pattern when the request sets none: seconds (-1 = stay loaded) or a duration such as 10m (repeat)"),
)


def build_arg_parser() -> argparse.ArgumentParser:
    """The command line; every flag names its environment variable and default in --help."""
    parser = argparse.ArgumentParser(
        prog="ollama-proxy",
        description="A proxy in front of Ollama that sets num_ctx and num_predict per model and request.",
        epilog="A flag wins over its environment variable. Lists in variables are comma-separated.",
    )
    for dest, env, default, text in _ENV_FLAGS:
        flag = "--" + dest.replace("_", "-")
        shown = "none" if default is None else default
        parser.add_argument(flag, dest=dest, default=None, metavar=dest.split("_")[-1].upper(), help="%s [$%s, default %s]" % (text, env, shown))
    parser.add_argument(
        "--backend",
        dest="backend",
        action="append",
        default=None,
        metavar="[NAME=]URL",
        help="an Ollama server; user:password in the URL becomes Basic auth [$OLLAMA_BACKENDS, default from $OLLAMA_HOST, "
        "else $OLLAMA_BASE_URL, else http://127.0.0.1:11434]",
    )
    for dest, env, metavar, text in _PAIR_FLAGS:
        parser.add_argument("--" + dest.replace("_", "-"), dest=dest, action="append", default=None, metavar=metavar, help="%s [$%s, default none]" % (text, env))
    parser.add_argument("--no-chunking", dest="chunking", action="store_const", const="false", default=None,
                        help="reject over-long embedding inputs with 400 instead of chunking them [$ENABLE_AUTO_CHUNKING=false, default chunking on]")
    parser.add_argument("--no-translate", dest="translate", action="store_const", const="false", default=None,
                        help="pass /v1/* through to Ollama untouched [$PROXY_TRANSLATE_OPENAI=false, default translation on]")
    parser.add_argument("--no-stable-prefix", dest="stable_prefix", action="store_const", const="false", default=None,
                        help="leave Claude Code's per-request billing hash in its system prompt (by default it is replaced by a "
                             "fixed value so that Ollama's prompt cache hits) [$PROXY_STABLE_PREFIX=false, default on]")
    parser.add_argument(
        "--reject-streaming",
        dest="reject_streaming",
        action="store_const",
        const="true",
        default=None,
        help="answer 400 to a request that would stream [$REJECT_STREAMING, default off]",
    )
    parser.add_argument("--scan", dest="scan", default=None, metavar="HOST:START-END",
                        help="discover backends by probing every port in the range [$BACKEND_HOST, $BACKEND_PORT_START, $BACKEND_PORT_END, default off]")
    parser.add_argument("--discover-dns", dest="discover_dns", action="append", default=None, metavar="NAME:PORT",
                        help="a backend at every address (IPv4 and IPv6) the DNS name resolves to, such as a Kubernetes headless "
                             "Service, named NAME@ADDRESS:PORT; resolved again every --scan-interval, and an address that "
                             "disappears is forgotten (repeat) [$PROXY_DISCOVER_DNS, default none]")
    parser.add_argument("--route", dest="route", action="append", default=None, metavar="MODEL=NAME[+NAME...]",
                        help="pin a model or fnmatch pattern to named backends (repeat) [$PROXY_ROUTES, default none]")
    parser.add_argument("--alias", dest="alias", action="append", default=None, metavar="ALIAS=MODEL",
                        help="accept ALIAS (a name, or an fnmatch pattern such as 'claude-*') as a model name and send MODEL "
                             "upstream; an exact alias wins over a pattern, the first matching pattern over later ones "
                             "(repeat) [$PROXY_ALIASES, default none]")
    parser.add_argument("--list-aliases", dest="list_aliases", action="store_const", const="true", default=None,
                        help="also list aliases in /api/tags and /v1/models [$PROXY_LIST_ALIASES, default off]")
    parser.add_argument("--preload", dest="preload", action="append", default=None, metavar="MODEL",
                        help="load the model on every backend that has it, at start and when a backend comes back (repeat) [$PROXY_PRELOAD, default none]")
    parser.add_argument("--sticky", dest="sticky", action="store_const", const="true", default=None,
                        help="keep a conversation on the backend that served its previous turn [$PROXY_STICKY, default on]")
    parser.add_argument("--no-sticky", dest="sticky", action="store_const", const="false", default=None, help="turn sticky conversations off")
    parser.add_argument("--check", action="store_true", help="run the doctor: check each backend, its models and the Ollama settings, then exit")
    parser.add_argument("--limits", dest="limits", default=None, metavar="MODEL",
                        help="with --check: load MODEL at each --context-sizes entry up to its training context, smallest first, with a "
                             "prompt that fills it, measure load time, tokens/s and the share in GPU memory, stop at the first size that "
                             "fails, spills to the CPU or stalls, and advise the --max-context to use; needs --check [$PROXY_LIMITS, "
                             "read only with --check, default none]")
    parser.add_argument("--version", action="version", version="ollama-proxy " + __version__)
    seeds = parser.add_argument_group(
        "compatibility with other proxies",
        "The flags and variables of ollama-context-proxy, gollamas and arosboro's ollama-proxy, with their meaning, so "
        "that their command lines work unchanged. Where one of our names gives the same setting too, ours wins (a flag "
        "still wins over a variable) and the start logs which was used. gollamas' connections, routes and aliases are "
        "added to ours. Also read: $GOLLAMAS_LIST_ALIASES (as --list-aliases) and arosboro's $RUST_LOG (as --log-level "
        "when $LOG_LEVEL is unset: its level, or the one it sets for the ollama_proxy target; trace is debug).")
    seeds.add_argument("--ollama-host", dest="ollama_host", default=None, metavar="HOST",
                       help="ollama-context-proxy: the backend's host name or URL; with --ollama-port, --backend "
                            "http://HOST:PORT [default 127.0.0.1]")
    seeds.add_argument("--ollama-port", dest="ollama_port", default=None, metavar="PORT",
                       help="ollama-context-proxy: the backend's port [default 11434]")
    seeds.add_argument("--proxy-port", dest="proxy_port", default=None, metavar="PORT", help="ollama-context-proxy: --port")
    seeds.add_argument("--listen", dest="listen", default=None, metavar="HOST:PORT", help="gollamas: --host and --port [$GOLLAMAS_LISTEN]")
    seeds.add_argument("--connection", dest="connection", action="append", default=None, metavar="ID=URL",
                       help="gollamas: a backend named ID, as --backend ID=URL (repeat)")
    seeds.add_argument("--connections", dest="connections", default=None, metavar="ID=URL,...",
                       help="gollamas: --connection, comma-separated [$GOLLAMAS_CONNECTIONS]")
    seeds.add_argument("--proxy", dest="proxy", action="append", default=None, metavar="MODEL=URL|ID",
                       help="gollamas: --route MODEL=ID; a URL is the backend of that URL, created unless one has it (repeat)")
    seeds.add_argument("--proxies", dest="proxies", default=None, metavar="MODEL=URL|ID,...",
                       help="gollamas: --proxy, comma-separated [$GOLLAMAS_PROXIES]")
    seeds.add_argument("--aliases", dest="aliases", default=None, metavar="ALIAS=MODEL,...",
                       help="gollamas: --alias, comma-separated [$GOLLAMAS_ALIASES]")
    seeds.add_argument("--level", dest="level", default=None, metavar="LEVEL",
                       help="gollamas: --log-level (warn is warning, trace debug, fatal and panic error)")
    return parser


def build_config(argv: Optional[Sequence[str]], environ: Mapping[str, str]) -> Config:
    """Turn flags and environment variables into a Config; a flag wins over its variable.

    Raises ConfigError with one clear line for anything unusable.  Opens no socket.
    """
    args = build_arg_parser().parse_args(list(argv) if argv is not None else None)
    raw: Dict[str, Any] = {}
    for dest, env, default, _ in _ENV_FLAGS:
        if dest in ("host", "port", "log_level"):
            continue  # a seed's name may give these too: chosen below
        value = getattr(args, dest)
        if value is None:
            value = environ.get(env)
            if value is not None:
                value = _strip_env_value(value)
        raw[dest] = default if value is None else value
    flag = lambda dest: "--" + dest.replace("_", "-")  # noqa: E731 - a tiny local helper
    notes: List[str] = []  # settings given both by our name and by a seed's (SPEC §3)
    listen = parse_listen("--listen", args.listen) if args.listen is not None else (None, None)
    seed_listen = _seed_env(environ, "GOLLAMAS_LISTEN")
    env_listen = parse_listen("GOLLAMAS_LISTEN", seed_listen) if seed_listen else (None, None)
    label, value = _choose("listen port", "--port", [("--port", args.port, True), ("--proxy-port", args.proxy_port, False),
                                                     ("--listen", listen[1], False), ("PROXY_PORT", environ.get("PROXY_PORT"), True),
                                                     ("GOLLAMAS_LISTEN", env_listen[1], False)], notes)
    port = _parse_port(label, _strip_env_value(str(value)) if value is not None else "11435")
    label, value = _choose("listen address", "--host", [("--host", args.host, True), ("--listen", listen[0], False),
                                                        ("PROXY_HOST", environ.get("PROXY_HOST"), True), ("GOLLAMAS_LISTEN", env_listen[0], False)], notes)
    host = _strip_env_value(value) if value is not None else "127.0.0.1"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    rust_log = _seed_env(environ, "RUST_LOG")
    label, value = _choose("log level", "--log-level", [("--log-level", args.log_level, True), ("--level", args.level, False),
                                                        ("LOG_LEVEL", environ.get("LOG_LEVEL"), True),
                                                        ("RUST_LOG", rust_log_level(rust_log) if rust_log else None, False)], notes)
    log_level = parse_log_level(label, value if value is not None else "info")
    log_format = str(raw["log_format"]).lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError("--log-format: %r is not one of %s" % (raw["log_format"], ", ".join(LOG_FORMATS)))
    reject = args.reject_streaming
    if reject is None:
        reject = environ.get("REJECT_STREAMING", "false")
    scan = None
    if args.scan is not None:
        scan = parse_scan(args.scan)
    elif environ.get("BACKEND_PORT_START", "").strip():
        start = _strip_env_value(environ["BACKEND_PORT_START"])
        end = _strip_env_value(environ.get("BACKEND_PORT_END", "")) or start
        scan = parse_scan("%s:%s-%s" % (_strip_env_value(environ.get("BACKEND_HOST", "")) or "127.0.0.1", start, end))
    scan_interval = _parse_number(flag("scan_interval"), raw["scan_interval"], float)
    if scan is not None and scan_interval <= 0:
        raise ConfigError("--scan needs --scan-interval above 0: discovery happens in the probe rounds")
    discover_dns = tuple(parse_discover_dns(i) for i in _list_setting(args.discover_dns, environ, "PROXY_DISCOVER_DNS"))
    for i, (name, dns_port) in enumerate(discover_dns):
        if (name.lower(), dns_port) in [(n.lower(), p) for n, p in discover_dns[:i]]:
            raise ConfigError("--discover-dns %s:%d is given twice" % (name, dns_port))
    if discover_dns and scan_interval <= 0:
        raise ConfigError("--discover-dns needs --scan-interval above 0: the names are resolved in the probe rounds")
    backends, seed_routes = _build_backends(args, environ, scan is not None or bool(discover_dns), notes)
    for backend in backends:
        if _is_same_address(host, port, backend):
            raise ConfigError("backend %s (%s) is this proxy's own listen address: it would loop" % (backend.name, backend.url))
    names = [b.name for b in backends]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("backend name %r is used twice" % name)
    routes = []
    for where, pattern, route_names in [("--route",) + parse_route(i) for i in _list_setting(args.route, environ, "PROXY_ROUTES")] + seed_routes:
        resolved = []
        for name in route_names:
            scanned = _scan_name(name, scan) if name not in names else None
            if scanned is not None:
                assert scan is not None
                spec = BackendSpec(name=scanned[0], scheme="http", host=scan[0], port=scanned[1])
                named = [b.name for b in backends if (b.host.lower(), b.port) == (scan[0].lower(), scanned[1])]
                if named:
                    raise ConfigError("%s %s: %s is the backend named %r: use that name" % (where, pattern, name, named[0]))
                if _is_same_address(host, port, spec):
                    raise ConfigError("%s %s: %s is this proxy's own listen address" % (where, pattern, name))
                name = scanned[0]
            elif name not in names:
                raise ConfigError("%s %s: no backend is named %r (backends: %s%s)" % (
                    where, pattern, name, ", ".join(names) or "none", "; or a host:port of the --scan range" if scan else ""))
            resolved.append(name)
        routes.append((pattern, tuple(resolved)))
    aliases = [parse_alias(i) for i in _list_setting(args.alias, environ, "PROXY_ALIASES")]
    for _, item in _seed_items(None, "", args.aliases, "--aliases", environ, "GOLLAMAS_ALIASES"):
        alias = parse_alias(item)
        if alias[0] not in [a for a, _ in aliases]:  # ours (and gollamas' own --alias, the same flag) first
            aliases.append(alias)
    label, value = _choose("alias listing", "--list-aliases", [("--list-aliases", args.list_aliases, True),
                                                               ("PROXY_LIST_ALIASES", environ.get("PROXY_LIST_ALIASES"), True),
                                                               ("GOLLAMAS_LIST_ALIASES", _seed_env(environ, "GOLLAMAS_LIST_ALIASES"), False)], notes)
    list_aliases = _parse_bool(label, value if value is not None else "false")
    api_key = raw["api_key"] or None
    context_mode = str(raw["context_mode"]).strip().lower()
    if context_mode not in CONTEXT_MODES:
        raise ConfigError("--context-mode: %r is not one of %s" % (raw["context_mode"], ", ".join(CONTEXT_MODES)))
    sizes = tuple(sorted({_parse_number(flag("context_sizes"), s, int, 1) for s in str(raw["context_sizes"]).split(",") if s.strip()}))
    if not sizes:
        raise ConfigError("--context-sizes: give at least one size, e.g. 2048,4096,8192")
    pairs: Dict[str, Any] = {}
    for dest, env, _, _ in _PAIR_FLAGS:
        items = getattr(args, dest)
        if items is None and environ.get(env, "").strip():
            items = [i for i in _strip_env_value(environ[env]).split(",") if i.strip()]
        convert = _parse_context_value if dest == "num_ctx" else parse_duration
        pairs[dest] = parse_model_values(flag(dest), items or [], convert)
    if args.limits is not None and not args.check:
        raise ConfigError("--limits needs --check: run it as --check --limits MODEL")
    limits = args.limits if args.limits is not None else (_strip_env_value(environ.get("PROXY_LIMITS", "")) or None) if args.check else None
    if limits is not None and not limits.strip():
        raise ConfigError("--limits: give the model to measure, e.g. --check --limits llama3.2")
    return Config(
        host=host,
        port=port,
        backends=tuple(backends),
        connect_timeout=_parse_number(flag("connect_timeout"), raw["connect_timeout"], float, 0.001),
        request_timeout=_parse_number(flag("request_timeout"), raw["request_timeout"], float, 0.001),
        header_timeout=_parse_number(flag("header_timeout"), raw["header_timeout"], float, 0.001),
        idle_timeout=_parse_number(flag("idle_timeout"), raw["idle_timeout"], float, 0.001),
        shutdown_grace=_parse_number(flag("shutdown_grace"), raw["shutdown_grace"], float),
        heartbeat=_parse_number(flag("heartbeat"), raw["heartbeat"], float),
        reject_streaming=_parse_bool("--reject-streaming", reject),
        api_key=api_key,
        log_level=log_level,
        log_format=log_format,
        max_context=_parse_number(flag("max_context"), raw["max_context"], int),
        num_ctx=pairs["num_ctx"],
        context_mode=context_mode,
        context_sizes=sizes,
        num_predict=_parse_number(flag("num_predict"), raw["num_predict"], int),
        keep_alive=pairs["keep_alive"],
        scan_interval=scan_interval,
        scan=scan,
        discover_dns=discover_dns,
        probe_timeout=_parse_number(flag("probe_timeout"), raw["probe_timeout"], float, 0.001),
        routes=tuple(routes),
        aliases=tuple(aliases),
        list_aliases=list_aliases,
        preload=tuple(normalize_model(m) for m in _list_setting(args.preload, environ, "PROXY_PRELOAD") if m.strip()),
        max_retries=_parse_number(flag("max_retries"), raw["max_retries"], int),
        eject_after=_parse_number(flag("eject_after"), raw["eject_after"], int),
        eject_seconds=_parse_number(flag("eject_seconds"), raw["eject_seconds"], float, 0.001),
        max_concurrent=_parse_number(flag("max_concurrent"), raw["max_concurrent"], int),
        queue_timeout=_parse_number(flag("queue_timeout"), raw["queue_timeout"], float, 0.001),
        max_queue=_parse_number(flag("max_queue"), raw["max_queue"], int),
        sticky=_parse_bool("--sticky/PROXY_STICKY", args.sticky if args.sticky is not None else environ.get("PROXY_STICKY", "true")),
        max_embed_chars=_parse_number(flag("max_embed_chars"), raw["max_embed_chars"], int),
        chunking=_parse_bool("--no-chunking/ENABLE_AUTO_CHUNKING", args.chunking if args.chunking is not None else environ.get("ENABLE_AUTO_CHUNKING", "true")),
        translate=_parse_bool("--no-translate/PROXY_TRANSLATE_OPENAI", args.translate if args.translate is not None else environ.get("PROXY_TRANSLATE_OPENAI", "true")),
        stable_prefix=_parse_bool("--no-stable-prefix/PROXY_STABLE_PREFIX",
                                  args.stable_prefix if args.stable_prefix is not None else environ.get("PROXY_STABLE_PREFIX", "true")),
        check=bool(args.check),
        limits=limits.strip() if limits is not None else None,
        notes=tuple(notes),
    )


def _build_backends(args: argparse.Namespace, environ: Mapping[str, str], discovering: bool,
                    notes: List[str]) -> Tuple[List[BackendSpec], List[Tuple[str, str, Tuple[str, ...]]]]:
    """The backends, and gollamas' routes as (where, model pattern, backend names).

    --backend values, else ollama-context-proxy's --ollama-host/--ollama-port, else OLLAMA_BACKENDS;
    plus gollamas' connections and the backends its --proxy URLs name (one per address, as in
    gollamas).  With none of these: with --scan or --discover-dns, none; else OLLAMA_HOST,
    OLLAMA_BASE_URL, the default."""
    context_proxy = None
    if args.ollama_host is not None or args.ollama_port is not None:
        context_proxy = [backend_from_host_port(args.ollama_host, args.ollama_port)]
    env_values = [v for v in _strip_env_value(environ.get("OLLAMA_BACKENDS", "")).split(",") if v.strip()] or None
    _, values = _choose("backends", "--backend", [("--backend", args.backend, True), ("--ollama-host/--ollama-port", context_proxy, False),
                                                  ("OLLAMA_BACKENDS", env_values, True)], notes)
    backends = [v if isinstance(v, BackendSpec) else parse_backend(v) for v in values or []]
    backends += [parse_connection(where, item)
                 for where, item in _seed_items(args.connection, "--connection", args.connections, "--connections", environ, "GOLLAMAS_CONNECTIONS")]
    routes = []
    for where, item in _seed_items(args.proxy, "--proxy", args.proxies, "--proxies", environ, "GOLLAMAS_PROXIES"):
        model, dest = parse_proxy(where, item)
        if dest not in [b.name for b in backends] and "://" in dest:  # a URL, not a connection's ID
            spec = parse_backend(dest)
            address = (spec.scheme, spec.host.lower(), spec.port, spec.path_prefix, spec.auth)
            known = [b for b in backends if (b.scheme, b.host.lower(), b.port, b.path_prefix, b.auth) == address]
            if not known:
                backends.append(spec)
            dest = (known or [spec])[0].name
        routes.append((where, _model_pattern(model), (dest,)))
    if backends or discovering:
        return backends, routes
    if environ.get("OLLAMA_HOST", "").strip():
        return [backend_from_ollama_host(environ["OLLAMA_HOST"])], routes
    if environ.get("OLLAMA_BASE_URL", "").strip():
        return [parse_backend(_strip_env_value(environ["OLLAMA_BASE_URL"]))], routes
    return [parse_backend("http://127.0.0.1:11434")], routes


# ---------------------------------------------------------------------------
# 2. Errors
# ---------------------------------------------------------------------------


class ProxyError(Exception):
    """An error the proxy answers itself; ``status`` is the HTTP status (as h11's error_status_hint)."""

    status = 500

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ProxyError):
    status = 400


class Unauthorized(ProxyError):
    status = 401

    def __init__(self, message: str, challenge: bool = False) -> None:
        super().__init__(message)
        #: extra response headers: a Basic challenge, so that a browser asks for the key (the status page)
        self.headers: Headers = [(b"www-authenticate", b'Basic realm="ollama-proxy"')] if challenge else []


class NotFound(ProxyError):
    status = 404


class BodyTooLarge(ProxyError):
    status = 413


class BadGateway(ProxyError):
    """The backend could not be reached, or broke the exchange (502)."""

    status = 502


class UpstreamTimeout(ProxyError):
    """The backend was silent for longer than --request-timeout (504)."""

    status = 504


class LoopDetected(ProxyError):
    status = 508


class ServiceUnavailable(ProxyError):
    """No healthy backend, a full queue, or a wait in it that ran out (503, with Retry-After)."""

    status = 503

    def __init__(self, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: OpenAI's error "type" for a status; everything else is "api_error" (ollama-api.md §6.4).
_OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "not_found_error"}


#: The three shapes of an answer: Ollama's own, OpenAI's (/v1/*), Anthropic's (/v1/messages).
NATIVE, OPENAI, ANTHROPIC = "native", "openai", "anthropic"
_ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                          429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


def dialect_of(path: str) -> str:
    """Which API a client path speaks: Anthropic's Messages, OpenAI's (the rest of /v1), or Ollama's."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return ANTHROPIC
    return OPENAI if is_openai_path(path) else NATIVE


def anthropic_request_id() -> str:
    """``req_`` + 24 hex digits, as Ollama's anthropic.NewError makes them (12 random bytes)."""
    return "req_" + os.urandom(12).hex()


def error_object(status: int, message: str, dialect: str) -> Dict[str, Any]:
    """The error in Ollama's shape, OpenAI's on ``/v1/*`` (type by status, ollama-api.md §6.4), or
    Anthropic's on ``/v1/messages`` (agents-api.md §1.2)."""
    if dialect == NATIVE:
        return {"error": message}
    if dialect == ANTHROPIC:
        return {"type": "error", "error": {"type": _ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message},
                "request_id": anthropic_request_id()}
    return {
        "error": {
            "message": message,
            "type": _OPENAI_ERROR_TYPES.get(status, "api_error"),
            "param": None,
            "code": "invalid_api_key" if status == 401 else None,
        }
    }


def error_body(status: int, message: str, dialect: str) -> bytes:
    """The JSON error body in the client's dialect."""
    return json.dumps(error_object(status, message, dialect)).encode("ascii")  # ensure_ascii: escapes all


def error_line(status: int, message: str, dialect: str) -> bytes:
    """The one last line that ends a broken stream: an NDJSON ``{"error"}`` line; on ``/v1`` an
    SSE ``data:`` event with OpenAI's error object (what the client libraries raise on); on
    ``/v1/messages`` an Anthropic ``event: error`` (always ``api_error``, as the SDKs expect)."""
    if dialect == OPENAI:
        return b"data: " + error_body(status, message, OPENAI) + b"\n\n"
    if dialect == ANTHROPIC:
        return b"event: error\ndata: " + json_bytes({"type": "error", "error": {"type": "api_error", "message": message}}) + b"\n\n"
    return error_body(status, message, NATIVE) + b"\n"


def _no_json_constant(name: str) -> Any:
    raise ValueError("invalid character '%s' looking for beginning of value (NaN and Infinity are not JSON)" % name[:1])


_JSON_DECODER = json.JSONDecoder(parse_constant=_no_json_constant)


def parse_json(data: Any) -> Any:
    """JSON as Ollama's decoder reads it: NaN and Infinity refused, and anything nested deeper than
    Python can follow refused with a ValueError too (never a RecursionError), so that every caller's
    ``except ValueError`` covers every body a client or a backend can send."""
    if not isinstance(data, str):
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    try:
        return _JSON_DECODER.decode(data)
    except RecursionError:
        raise ValueError("nested too deeply for this proxy to read") from None


def json_bytes(obj: Any, sort_keys: bool = False) -> bytes:
    """Compact JSON in UTF-8, as the proxy sends every body it writes (``sort_keys``: as Go
    marshals a map).  A lone surrogate (JSON's ``\\ud800`` escape can carry one, and so can invalid
    UTF-8 read with surrogatepass) cannot be UTF-8: then the whole body is written ASCII-escaped,
    which Go's decoder reads as U+FFFD."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"), sort_keys=sort_keys).encode("ascii")


def error_message_from_body(body: bytes) -> str:
    """The error text of an upstream error body ({"error": "..."} or OpenAI's shape), else the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        obj = parse_json(text)
    except ValueError:
        return text or "backend error"
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, str):
            return err
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
    return text


# ---------------------------------------------------------------------------
# 3. HTTP plumbing
# ---------------------------------------------------------------------------
#
# Theory.  The client side is one asyncio stream pair per connection.  A plain
# request (HTTP/1.x, valid as h11 checks it, a Content-Length body or none, no
# chunks, 100-continue or upgrade) is read by parse_simple_request, head and body
# at once; h11 reads every other (sans-IO: we feed it bytes, b"" at EOF, and pull
# events), one h11 connection made for that request alone; so h11 decides every
# request that is bad or unusual, and its parse (a quarter of a request's cost)
# is not paid for the common one.  The responses are written here by
# ``response_head`` and ServerSide, with the framing and keep-alive h11 would
# choose and the same bytes (h11's send path was a sixth of a request's cost).
# Timeouts are *per phase* and never wrap whole handlers: an IdleTimer per
# socket holds a deadline that the hot path pushes forward with a float
# assignment; when it fires, it aborts the transport, so the pending read fails
# and the phase that was waiting decides what it means (header timeout: drop;
# upstream silence: 504).  No timer callback touches a parser's state.


Headers = List[Tuple[bytes, bytes]]


def connection_tokens(headers: Headers) -> frozenset:
    """Header names listed in Connection: they are hop-by-hop for this message only."""
    names = set()
    for name, value in headers:
        if name == b"connection":
            names.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(names)


def says_close(connection: bytes) -> bool:
    """Whether one Connection header value has the ``close`` token."""
    return b"close" in {t.strip(b" \t").lower() for t in connection.split(b",")}


def strip_hop_by_hop(headers: Headers, also: frozenset = frozenset()) -> Headers:
    """Drop hop-by-hop headers, those named in Connection, and any in ``also``."""
    extra = connection_tokens(headers)
    return [(n, v) for n, v in headers if n not in HOP_BY_HOP and n not in extra and n not in also]


def header_value(headers: Headers, name: bytes) -> Optional[bytes]:
    """The first value of a header (names are lower-case, as h11 gives them)."""
    for n, v in headers:
        if n == name:
            return v
    return None


def all_values(headers: Headers, name: bytes) -> Optional[bytes]:
    """Every value of a header that may repeat (Via), joined with ", " as RFC 9110 §5.3 allows."""
    values = [v for n, v in headers if n == name]
    if not values:
        return None
    return values[0] if len(values) == 1 else b", ".join(values)


def join_via(existing: Optional[bytes], ours: bytes) -> bytes:
    return existing + b", " + ours if existing else ours


#: Header lines whose values are secrets: h11 quotes a bad header line whole in its error text.
_SECRET_HEADER_RE = re.compile(r"((?:proxy-)?authorization|x-api-key|cookie)(\s*:\s*)[^'\"\r\n)]*", re.IGNORECASE)
_URL_PASSWORD_RE = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/@\s:'\"]*:)[^/@\s'\"]*@", re.IGNORECASE)


def redact_secrets(text: str) -> str:
    """``text`` with the values of secret headers and the passwords in URLs replaced by ``<redacted>``."""
    text = _SECRET_HEADER_RE.sub(lambda m: m.group(1) + m.group(2) + "<redacted>", text)
    return _URL_PASSWORD_RE.sub(lambda m: m.group(1) + "<redacted>@", text)


class RequestHead(NamedTuple):
    """A request head as the rest of the proxy reads it (the fields of h11's Request)."""

    method: bytes
    target: bytes
    headers: Headers  #: lower-case names, values without surrounding whitespace
    http_version: bytes  #: b"1.1" or b"1.0"


# RFC 9112's grammar as h11 applies it (token, vchar, field-content with obs-text), so that a
# request this reader accepts is one h11 reads the same way.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_SIMPLE_REQUEST_LINE_RE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(1\.[01])")
_SIMPLE_HEADER_RE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*")
#: Headers that make a request not simple: h11 reads those (chunked bodies, 100-continue, upgrades).
_NOT_SIMPLE_HEADERS = frozenset({b"transfer-encoding", b"expect", b"upgrade"})


def parse_simple_request(data: bytes) -> Optional[Tuple[RequestHead, Optional[bytes], int]]:
    """The request at the start of ``data`` when it is a plain one: (its head, its body, where it
    ends in ``data``), the body None while not all of it is in ``data``; else None, and h11 reads it.

    Plain means: HTTP/1.1 or 1.0, not CONNECT, every line ended by CRLF and valid by RFC 9112 as
    h11 checks it, no obs-fold, no Transfer-Encoding, Expect or Upgrade, at most one
    Content-Length of digits, one Host (HTTP/1.1 must have it) and
    the head within MAX_HEAD_BYTES.  Every request a client library sends for a JSON body is one
    (the fast path: h11's parse was a quarter of a request's instructions); anything else, bad
    or unusual, goes to h11, whose answer is the proxy's.  tests/test_request_reader.py holds
    this to h11's reading of the same bytes."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 > MAX_HEAD_BYTES:
        return None
    lines = data[:end].split(b"\r\n")
    match = _SIMPLE_REQUEST_LINE_RE.fullmatch(lines[0])
    if match is None or match.group(1) == b"CONNECT":
        return None
    headers = []
    length = -1
    hosts = 0
    header_re = _SIMPLE_HEADER_RE
    for line in lines[1:]:
        field = header_re.fullmatch(line)
        if field is None:
            return None
        name = field.group(1).lower()
        value = field.group(2)
        if name in _NOT_SIMPLE_HEADERS:
            return None
        if name == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 18:
                return None
            length = int(value)
        elif name == b"host":
            hosts += 1
        headers.append((name, value))
    version = match.group(3)
    if hosts > 1 or (hosts == 0 and version == b"1.1"):
        return None
    start = end + 4
    stop = start + max(length, 0)
    return RequestHead(match.group(1), match.group(2), headers, version), (data[start:stop] if len(data) >= stop else None), stop


_ABSOLUTE_FORM_RE = re.compile(rb"^https?://[^/?#]*", re.IGNORECASE)


def check_request_head(request: RequestHead) -> Tuple[bytes, int, str]:
    """Is a request head one the proxy serves?  (origin-form target, 0, "") when it is, else
    (b"", status, message) for the answer to give before the connection is closed.

    What h11 lets through and Ollama's Go server would not serve: a major version other than 1
    (505, Go's text; Go serves any HTTP/1.x as 1.1), CONNECT (no tunnels here), Transfer-Encoding
    together with Content-Length (RFC 9112 §6.1: a smuggling attempt), and targets that are not
    a path.  An absolute-form target (``http://host/api/chat``, RFC 9112 §3.2.2) is served as its
    path; ``OPTIONS *`` is answered 200 as Go answers it (status 200 here).
    """
    if request.http_version[:2] != b"1.":
        if request.method == b"PRI":
            return b"", 400, "HTTP/2 is not served here: this proxy speaks HTTP/1.1"
        return b"", 505, "unsupported protocol version"
    if request.method == b"CONNECT":
        return b"", 405, "CONNECT is not supported: this is not a tunnelling proxy"
    framings = 0
    for name, _ in request.headers:
        if name == b"transfer-encoding" or name == b"content-length":
            framings |= 1 if name == b"content-length" else 2
    if framings == 3:
        return b"", 400, "a request with both Transfer-Encoding and Content-Length is refused (RFC 9112 §6.1)"
    target = request.target
    if target[:1] == b"/":
        return target, 0, ""
    if target == b"*":
        if request.method == b"OPTIONS":
            return b"", 200, ""
        return b"", 400, "the target * is only for OPTIONS"
    match = _ABSOLUTE_FORM_RE.match(target)
    if match is None:
        return b"", 400, "the request target must be a path starting with /"
    rest = target[match.end():]
    return (rest if rest[:1] == b"/" else b"/" + rest), 0, ""


def chunk_framing_problem(conn: h11.Connection, budget: int) -> Optional[ProxyError]:
    """While a chunked request body waits for more data: a chunk that announced more than the
    ``budget`` of bytes the body may still have (413 at once, not after --header-timeout), or a chunk line ended by a bare LF
    (400 at once: h11 would wait for a CRLF that never comes).  h11 has no public view of its
    chunk reader, so this looks at its private ``_reader`` and tolerates any shape of it."""
    reader = getattr(conn, "_reader", None)
    pending = getattr(reader, "_bytes_in_chunk", None)
    if not isinstance(pending, int):
        return None
    if pending > budget:
        return BodyTooLarge("request body too large (a chunk of %d bytes; the limit is %d)" % (pending, MAX_JSON_BODY))
    if pending == 0 and not getattr(reader, "_bytes_to_discard", 0) and not getattr(reader, "_reading_trailer", False):
        if b"\n" in conn.trailing_data[0]:
            return BadRequest("malformed request body: a chunk size line ends without CRLF")
    return None


class IdleTimer:
    """Calls ``on_expire`` once after ``timeout`` seconds pass without ``touch()``.

    ``touch`` is a float assignment, cheap enough for every streamed chunk; the
    timer callback re-arms itself at the newest deadline instead of being
    cancelled and rescheduled on every touch.
    """

    __slots__ = ("_loop", "_on_expire", "_timeout", "_deadline", "_handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expire: Callable[[], None]) -> None:
        self._loop = loop
        self._on_expire = on_expire
        self._timeout = 0.0
        self._deadline: Optional[float] = None
        self._handle: Optional[asyncio.TimerHandle] = None

    def start(self, timeout: float) -> None:
        self._timeout = timeout
        self._deadline = deadline = self._loop.time() + timeout
        handle = self._handle
        if handle is not None and handle.when() > deadline:
            handle.cancel()
            handle = None
        if handle is None:
            self._handle = self._loop.call_at(deadline, self._fire)

    def touch(self) -> None:
        if self._deadline is not None:
            self._deadline = self._loop.time() + self._timeout

    def stop(self) -> None:
        self._deadline = None

    def close(self) -> None:
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None:
            return
        if self._loop.time() >= deadline:
            self._deadline = None
            self._on_expire()
        else:
            self._handle = self._loop.call_at(deadline, self._fire)


class LineTooLong(Exception):
    """A streamed line grew past the splitter's limit without its boundary."""


class LineSplitter:
    """Cuts a streamed body after its last complete line (NDJSON ``\n``, SSE ``\n\n``) and holds
    the incomplete rest, so that whatever is sent, and an in-band error after it, ends on a line
    boundary.  The held part is bounded (``LineTooLong`` past ``limit``) and grows by appending,
    never by copying it again on each read, so a line that never ends costs linear time."""

    __slots__ = ("boundary", "limit", "_held")

    def __init__(self, boundary: bytes, limit: int) -> None:
        self.boundary = boundary
        self.limit = limit
        self._held = bytearray()

    @property
    def held(self) -> int:
        return len(self._held)

    def feed(self, data: bytes) -> bytes:
        """The complete lines that ``data`` finishes (b"" when none); the rest is held."""
        boundary = self.boundary
        held = self._held
        if not held:
            if data.endswith(boundary):
                return data
            cut = data.rfind(boundary)
            if cut < 0:
                held += data
                self._check()
                return b""
            cut += len(boundary)
            held += data[cut:]
            return data[:cut]
        k = len(boundary) - 1  # a boundary may begin in the held bytes and end in the new ones
        window = bytes(held[len(held) - k :]) + data if k else data
        cut = window.rfind(boundary)
        if cut < 0:
            held += data
            self._check()
            return b""
        cut += len(boundary) - k  # the offset in ``data`` just after the boundary
        out = bytes(held) + data[:cut]
        self._held = bytearray(data[cut:])
        return out

    def flush(self) -> bytes:
        """What is held (the body ended without a final boundary)."""
        out = bytes(self._held)
        self._held = bytearray()
        return out

    def _check(self) -> None:
        if len(self._held) > self.limit:
            self._held = bytearray()
            raise LineTooLong("a line longer than %d bytes" % self.limit)


async def _read_to_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(READ_SIZE):
        pass


async def close_writer(writer: asyncio.StreamWriter, linger_reader: Optional[asyncio.StreamReader] = None) -> None:
    """Close a stream.  With a reader, close lingering (RFC 9112 §9.6): half-close, read what
    the peer still sends until its EOF (a few seconds at most), then close, so that a client
    still uploading reads our error instead of a reset."""
    try:
        if linger_reader is not None and writer.can_write_eof():
            writer.write_eof()
            await asyncio.wait_for(_read_to_eof(linger_reader), LINGER_SECONDS)
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), LINGER_SECONDS)
    except (OSError, asyncio.TimeoutError, RuntimeError, asyncio.CancelledError):
        writer.transport.abort()


class ClientGone(Exception):
    """The client closed or reset its connection."""


class ClientProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol plus a disconnect hook.

    While a response is being produced nobody reads the client socket, yet the
    transport still reads into the StreamReader buffer: so EOF or a reset shows up
    here at once, and ``on_gone`` (set only while a relay runs) cancels the relay.
    A pipelined request simply waits in the buffer for the next cycle.
    """

    def __init__(self, reader: asyncio.StreamReader, callback: Callable[..., Any], live: Optional[set] = None) -> None:
        super().__init__(reader, callback)
        self.gone = False
        self.on_gone: Optional[Callable[[], None]] = None
        self.transport: Optional[asyncio.BaseTransport] = None
        self.live = live  #: the server's set of connections not yet lost (made at accept, before the transport)
        if live is not None:
            live.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        super().connection_made(transport)

    def _mark_gone(self) -> None:
        if not self.gone:
            self.gone = True
            if self.on_gone is not None:
                self.on_gone()

    def eof_received(self) -> bool:
        result = super().eof_received()
        self._mark_gone()
        return bool(result)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.live is not None:
            self.live.discard(self)
        super().connection_lost(exc)
        self._mark_gone()


#: Where the response to the current request is (ServerSide.response).
RESPONSE_NOT_STARTED, RESPONSE_BODY, RESPONSE_DONE, RESPONSE_FAILED = range(4)
#: Response body framings toward the client, besides a Content-Length (>= 0).
FRAME_CHUNKED, FRAME_NONE, FRAME_UNTIL_CLOSE = -1, -2, -3


def client_keeps_alive(request: RequestHead) -> bool:
    """Whether the client's request lets the connection carry another (HTTP/1.1 without
    ``Connection: close``; RFC 9112 §9.3), as h11 decides it."""
    return request.http_version >= b"1.1" and not any(says_close(v) for n, v in request.headers if n == b"connection")


def response_head(status: int, headers: Headers, reason: bytes, request_method: bytes, client_http11: bool,
                  keep_alive: bool) -> Tuple[bytes, int, bool]:
    """(the bytes of a response head, its body framing, whether the connection closes after it).

    The framing is the head's Content-Length, none for HEAD, 204 and 304, else chunked toward an
    HTTP/1.1 client and until-close toward HTTP/1.0 (RFC 9112 §6).  A head whose own
    ``Connection`` says close, or a client that did not keep alive, closes the connection; the
    head then says ``Connection: close``.  The bytes are those h11 writes for the same head: the
    framing headers it sets itself title-cased and last."""
    length = -1
    close = False
    for name, value in headers:
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and says_close(value):
            close = True
    no_body = request_method == b"HEAD" or status == 204 or status == 304
    need_close = False
    if length < 0 and status != 204 and status != 304:
        headers = [h for h in headers if h[0] != b"transfer-encoding"]
        if client_http11:
            headers.append((b"Transfer-Encoding", b"chunked"))
        elif request_method != b"HEAD":
            need_close = True
    if not keep_alive or need_close:
        tokens = (connection_tokens(headers) - {b"keep-alive"}) | {b"close"}
        headers = [h for h in headers if h[0] != b"connection"] + [(b"Connection", t) for t in sorted(tokens)]
        close = True
    if no_body:
        framing = FRAME_NONE
    elif length >= 0:
        framing = length
    else:
        framing = FRAME_CHUNKED if client_http11 else FRAME_UNTIL_CLOSE
    data = b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, b"".join([n + b": " + v + b"\r\n" for n, v in headers]))
    return data, framing, close


class ServerSide:
    """The client-facing half: reads the requests of one stream pair, one at a time; the
    responses are written here (``start``, ``body``, ``end``, ``respond``), with their framing
    and the connection's keep-alive decided in ``response_head``.

    ``read_head`` reads until a head is there: a plain request's head is read by
    ``parse_simple_request`` and its body by ``plain_body`` (what came with the head, and the
    rest, up to SIMPLE_BODY_AHEAD, when the body is asked for), any other request by an h11
    connection made for it alone, fed what had arrived.  ``next_event`` gives the body as h11 events
    (reading, and answering 100-continue first, until h11 has one) and never NEED_DATA.  Reads
    are bounded by ``timer``, whose phase the caller sets.  ``h11`` is None while no h11 reads:
    before a head, for a plain request, and once a request is read and its answer starts; what
    arrived beyond the request (pipelined bytes) waits in ``_buffer`` for the next cycle.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn_id: int, timer: IdleTimer, config: Config) -> None:
        self.config = config
        self.reader = reader
        self.writer = writer
        self.conn_id = conn_id
        self.h11: Optional[h11.Connection] = None
        self.timer = timer
        self.protocol: ClientProtocol = writer.transport.get_protocol()  # type: ignore[assignment]
        self.client_gone = False  #: the client left while its request was being served
        self.fed = 0  #: bytes given to h11 since the current request head began
        self._buffer = b""  #: bytes read and not yet parsed (no h11 holds them)
        self._eof = False  #: the client's EOF came after ``_buffer``
        self._body: Optional[bytes] = None  #: a plain request's body (what has arrived of it), until it is taken
        self._body_left = 0  #: bytes of that body still to arrive
        self.awaiting_head = False  #: idle keep-alive: the first bytes of a head switch to --header-timeout
        self.response = RESPONSE_NOT_STARTED
        self.must_close = True  #: the connection closes after this response (until a request says otherwise)
        self.request_method = b""
        self.client_http11 = False  #: the request was HTTP/1.1 (chunked bodies allowed); False before one was read
        self._keep_alive = True  #: the request allows keep-alive (before one was read: the head says close, if it must)
        self._left = 0  #: the response framing: Content-Length bytes still to send, or a FRAME_* value
        self._continue_sent = False
        self._watched: Optional[asyncio.Task] = None  #: what a client EOF or reset cancels

    @property
    def buffered(self) -> bool:
        """Bytes of a next request are already here (pipelined)."""
        return bool(self._buffer)

    async def read_head(self) -> Optional[RequestHead]:
        """The next request's head; None when the client closed before one (or h11 pauses).
        Raises h11.RemoteProtocolError for a head that is not HTTP/1.1."""
        buf = bytearray(self._buffer)
        searched = 0
        while not self._eof and len(buf) <= MAX_HEAD_BYTES:
            if buf[:1] and buf[0] < 0x21:
                break  # h11 refuses at once what cannot start a request line (a TLS hello, an empty line)
            if buf.find(b"\n\r\n", searched) >= 0 or buf.find(b"\n\n", searched) >= 0:
                break  # a head's end, as h11 finds it (a bare LF ends a line)
            searched = max(len(buf) - 2, 0)
            more = await self._read()
            if not more:
                self._eof = True
            buf += more
        data = bytes(buf)
        simple = parse_simple_request(data)
        if simple is not None and (simple[1] is not None or (not self._eof and simple[2] - len(data) <= SIMPLE_BODY_AHEAD)):
            head, body, end = simple
            if body is None:  # a small body still arriving: read when it is asked for (plain_body)
                start = data.index(b"\r\n\r\n") + 4
                self._body, self._body_left, self._buffer = data[start:], end - len(data), b""
            else:
                self._body, self._body_left, self._buffer = body, 0, data[end:]
            return head
        self._buffer = b""
        self.h11 = conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        conn.receive_data(data)
        if self._eof:
            conn.receive_data(b"")
        self.fed = len(data)
        event = await self.next_event()
        if type(event) is not h11.Request:
            return None  # ConnectionClosed, or PAUSED by what h11 makes of the bytes
        return RequestHead(event.method, event.target, list(event.headers), event.http_version)

    @property
    def head_too_large(self) -> bool:
        """h11 bounds only an *incomplete* head; one that arrived whole in a read is counted here."""
        return self.h11 is not None and self.fed - len(self.h11.trailing_data[0]) > MAX_HEAD_BYTES

    async def plain_body(self) -> Optional[bytes]:
        """A plain request's whole body, its rest read under a --header-timeout of its own if it
        is still arriving (None when h11 reads this request's body).  Raises ClientGone if the
        client closes (or the timeout aborts the connection) before its end."""
        if self.h11 is not None:
            return None
        body, self._body = self._body or b"", None
        if not self._body_left:
            return body
        parts = [body]
        self.timer.start(self.config.header_timeout)
        try:
            while self._body_left > 0:
                more = await self._read()
                if not more:
                    self._eof = True
                    self.must_close = True
                    raise ClientGone("client closed the connection while sending the body")
                if len(more) > self._body_left:
                    more, self._buffer = more[:self._body_left], more[self._body_left:]  # a pipelined request began
                parts.append(more)
                self._body_left -= len(more)
        finally:
            self.timer.stop()
        return b"".join(parts)

    async def _read(self) -> bytes:
        try:
            data = await self.reader.read(READ_SIZE)
        except OSError:
            data = b""
        if self.awaiting_head and data:
            self.awaiting_head = False
            self.timer.start(self.config.header_timeout)
        return data

    def begin(self, request: RequestHead) -> None:
        """A request head was read: its response is the next one."""
        self.request_method = request.method
        self.client_http11 = request.http_version >= b"1.1"
        self._keep_alive = keep = client_keeps_alive(request)
        self.must_close = not keep
        self.response = RESPONSE_NOT_STARTED

    def next_cycle(self) -> bool:
        """Ready for the next request on this connection (False when it must close instead)."""
        if self.must_close or self.response != RESPONSE_DONE or not self.request_read:
            return False
        if self.h11 is not None:
            self._buffer, self._eof = self.h11.trailing_data
            self.h11 = None
        self._body = None  # a plain body no one took (OPTIONS *) is not the next request's
        self.response = RESPONSE_NOT_STARTED
        self.must_close = True
        self._continue_sent = False
        return True

    @property
    def request_read(self) -> bool:
        """The whole request was read.  (A request that offers an Upgrade stays in h11's
        MIGHT_SWITCH_PROTOCOL, which only h11's own response would end: the proxy never switches.)"""
        if self.h11 is None:  # a plain request (read once its body is), or h11 dropped by ``start`` once it was read
            return self._body_left == 0
        state = self.h11.their_state  # MUST_CLOSE: read, and the client asked to close after it
        return state is h11.DONE or state is h11.MIGHT_SWITCH_PROTOCOL or state is h11.MUST_CLOSE

    @property
    def client_waits_for_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and nothing answered it yet."""
        conn = self.h11
        return conn is not None and self.response == RESPONSE_NOT_STARTED and not self._continue_sent and conn.they_are_waiting_for_100_continue

    def watch_disconnect(self, task: asyncio.Task) -> None:
        """From now until ``unwatch``, a client EOF or reset cancels ``task``."""
        self._watched = task
        if self.protocol.gone:
            self._gone()
        else:
            self.protocol.on_gone = self._gone

    def _gone(self) -> None:
        self.client_gone = True
        if self._watched is not None:
            self._watched.cancel()

    def unwatch(self) -> None:
        self.protocol.on_gone = None

    async def next_event(self, body_budget: Optional[int] = None) -> Any:
        """The next h11 event.  While a chunked body is read, ``body_budget`` (the bytes it may still
        have) refuses at once a chunk that announces more, or chunk framing h11 would wait on forever."""
        conn = self.h11
        if conn is None:  # a plain request: its body, then its end
            body = await self.plain_body()
            return h11.Data(data=body) if body else h11.EndOfMessage()
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if body_budget is not None:
                problem = chunk_framing_problem(conn, body_budget)
                if problem is not None:
                    raise problem
            if self.client_waits_for_continue:
                self._continue_sent = True
                await self.write(b"HTTP/1.1 100 \r\n\r\n")
            data = await self._read()
            self.fed += len(data)
            conn.receive_data(data)

    # -- the response ------------------------------------------------------

    def start(self, status: int, headers: Headers, reason: bytes = b"") -> bytes:
        """The bytes of the response head; the body follows through ``body`` and ``end``."""
        if self.response != RESPONSE_NOT_STARTED:
            raise h11.LocalProtocolError("a response was already started")
        data, self._left, close = response_head(status, headers, reason, self.request_method, self.client_http11, self._keep_alive)
        self.must_close = self.must_close or close
        self.response = RESPONSE_BODY
        if self.request_read and self.h11 is not None:
            # The request is read: only what h11 holds beyond it (pipelined bytes) is kept, not the
            # parser, for as long as the answer streams.
            self._buffer, self._eof = self.h11.trailing_data
            self.h11 = None
        return data

    def body(self, data: bytes) -> bytes:
        """The bytes that carry ``data`` in the response body (its chunk, under chunked framing)."""
        left = self._left
        if left == FRAME_CHUNKED:
            return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        if left >= 0:
            if len(data) > left:
                raise h11.LocalProtocolError("Too much data for declared Content-Length")
            self._left = left - len(data)
            return data
        if left == FRAME_NONE and data:
            raise h11.LocalProtocolError("a response to HEAD, or a 204 or 304, has no body")
        return data

    def end(self) -> bytes:
        """The bytes that end the response body."""
        if self.response != RESPONSE_BODY:
            raise h11.LocalProtocolError("no response body to end")
        left = self._left
        if left > 0:
            raise h11.LocalProtocolError("Too little data for declared Content-Length")
        self.response = RESPONSE_DONE
        return b"0\r\n\r\n" if left == FRAME_CHUNKED else b""

    async def respond(self, status: int, headers: Headers, body: bytes = b"", reason: bytes = b"") -> None:
        """A whole response in one write (no body bytes where none may go: HEAD, 204, 304)."""
        data = self.start(status, headers, reason)
        if body and self._left != FRAME_NONE:
            data += self.body(body)
        await self.write(data + self.end())

    async def write(self, data: bytes) -> None:
        """Write; a failed write (the client went away) fails the response and raises ClientGone."""
        writer = self.writer
        if writer.transport.is_closing():
            self._failed()
            raise ClientGone("client connection closed")
        try:
            writer.write(data)
            if writer.transport.get_write_buffer_size():
                # A client that stops reading may hold us for --request-timeout, no longer:
                # the timer aborts the transport, and drain raises.
                self.timer.start(self.config.request_timeout)
                try:
                    await writer.drain()
                finally:
                    self.timer.stop()
        except (OSError, RuntimeError) as exc:
            self._failed()
            raise ClientGone(str(exc)) from None

    def _failed(self) -> None:
        self.response = RESPONSE_FAILED
        self.must_close = True


# ---------------------------------------------------------------------------
# 4. Upstream client and pool
# ---------------------------------------------------------------------------
#
# Theory.  The proxy is the only client of its upstream sockets and builds every
# request head itself, from headers h11 already parsed on the client side or from
# its own constants: so it writes them directly, and reads the answers with
# ResponseParser, a small strict sans-IO reader of HTTP/1.1 responses (RFC 9112:
# status line, fields, Content-Length, chunked, read-until-close, 1xx skipped, no
# body for HEAD, 204 and 304).  It is pure: bytes in, heads and body bytes out,
# table-tested alone; what h11 did here cost a quarter of a request's instructions.
#
# One UpstreamConnection is one socket to a backend with a lifecycle: NEW
# (connected, never used), ACTIVE (an exchange in progress), IDLE (in the pool),
# CLOSED.  A connection goes back to the pool only when its request went out whole
# and its response was read to the end with keep-alive; anything else (an
# exception, a cancellation, a client that left, a body not read to the end)
# closes the socket, which is also what makes Ollama stop generating.  Parser
# errors never leave this section: they become BadGateway.

NEW, ACTIVE, IDLE, CLOSED = "NEW", "ACTIVE", "IDLE", "CLOSED"
CHUNKED, NO_BODY = -1, -2  #: request body framings other than a Content-Length
POOL_IDLE_SECONDS = 30.0  #: an idle pooled connection older than this is closed, not reused
POOL_MAX_IDLE = 256  #: idle connections kept per backend; the oldest beyond this are closed
MAX_CHUNK_LINE = 4096  #: a chunk-size line (with its extensions) longer than this is refused


class ResponseError(ValueError):
    """A backend's bytes are not an HTTP/1.1 response, or it closed in the middle of one."""


class ResponseHead(NamedTuple):
    """The final head of a response (field names lower-case, values as sent)."""

    status_code: int
    reason: bytes
    headers: Headers
    http_version: bytes


def encode_request_head(method: bytes, target: bytes, headers: Headers) -> bytes:
    """The bytes of a request head.  The header lines come from h11's parser of the client's
    request or are the proxy's own, so they are not validated again here."""
    return b"%s %s HTTP/1.1\r\n%s\r\n" % (method, target, b"".join([n + b": " + v + b"\r\n" for n, v in headers]))


def request_body_framing(headers: Headers) -> int:
    """How a request head frames its body: its Content-Length, CHUNKED, or NO_BODY."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
        if name == b"transfer-encoding":
            return CHUNKED
    return NO_BODY


_STATUS_LINE_RE = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?\r?\n")
_FIELD_LINE_RE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*\r?\n")
_HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")


def parse_response_head(block: bytes) -> ResponseHead:
    """A response head (status line and field lines, each ended by LF or CRLF, without the blank
    line); ResponseError when it is not one.  Obsolete line folding is unfolded (RFC 9112 §5.2);
    repeated Content-Length values must agree and become one field."""
    match = _STATUS_LINE_RE.match(block)
    if match is None:
        raise ResponseError("not an HTTP/1.x status line: %r" % redact_secrets(repr(block[:60]))[1:])
    version, status, reason = match.groups()
    headers: Headers = []
    pos, end = match.end(), len(block)
    lengths = 0
    while pos < end:
        field_match = _FIELD_LINE_RE.match(block, pos)
        if field_match is None:
            line = block[pos:block.find(b"\n", pos) + 1 or end]
            if line[:1] in (b" ", b"\t") and headers and _FIELD_LINE_RE.match(b"x:" + line):  # obs-fold
                name, value = headers[-1]
                folded = line.strip(b" \t\r\n")
                headers[-1] = (name, value + b" " + folded if value else folded)
                pos += len(line)
                continue
            raise ResponseError("malformed header line %s" % redact_secrets(repr(line[:80]))[1:])
        name = field_match.group(1).lower()
        if name == b"content-length":
            lengths += 1
        headers.append((name, field_match.group(2)))
        pos = field_match.end()
    if lengths:
        values = {v.strip(b" \t") for n, value in headers if n == b"content-length" for v in value.split(b",")}
        length = next(iter(values))
        if len(values) != 1 or not length.isdigit() or len(length) > 18:
            raise ResponseError("invalid Content-Length %s" % b", ".join(sorted(values)).decode("latin-1"))
        if lengths > 1 or header_value(headers, b"content-length") != length:  # repeated, or "3, 3": one field
            first = next(i for i, (n, _) in enumerate(headers) if n == b"content-length")
            headers = [h for i, h in enumerate(headers) if h[0] != b"content-length" or i == first]
            headers[first] = (b"content-length", length)
    return ResponseHead(int(status), reason or b"", headers, version)


#: Body framings of a response (RFC 9112 §6.3).
BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE = range(4)
#: Where a chunked body's reader is.
_CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _CHUNK_TRAILER = range(4)


def response_framing(head: ResponseHead, head_request: bool) -> Tuple[int, int, bool]:
    """(framing, length, keep-alive) of a final response to a request (HEAD or not)."""
    keep_alive = head.http_version >= b"1.1"
    length = -1
    chunked = False
    for name, value in head.headers:
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            if chunked or value.strip(b" \t").lower() != b"chunked":
                raise ResponseError("unsupported Transfer-Encoding %s (only chunked is)" % value.decode("latin-1"))
            chunked = True
        elif name == b"connection" and says_close(value):
            keep_alive = False
    if chunked and length >= 0:
        raise ResponseError("both Transfer-Encoding and Content-Length (RFC 9112 §6.1)")
    status = head.status_code
    if head_request or status == 204 or status == 304:
        return BODY_NONE, 0, keep_alive
    if chunked:
        return BODY_CHUNKED, 0, keep_alive
    if length >= 0:
        return BODY_LENGTH, length, keep_alive
    return BODY_UNTIL_CLOSE, 0, False


class ResponseParser:
    """Sans-IO reader of the responses on one connection: ``feed`` bytes (b"" at EOF), then
    ``read_head`` (None until the final head is complete; 1xx heads are skipped) and
    ``read_body`` (the body bytes available now, and whether the body is complete).

    A fault met after some body bytes is kept for the next ``read_body``: the bytes before it
    come out first.  Every buffer is bounded: a head by MAX_HEAD_BYTES, a chunk line by
    MAX_CHUNK_LINE, the trailer by MAX_HEAD_BYTES."""

    __slots__ = ("_buf", "_eof", "head_request", "framing", "left", "keep_alive", "done", "_chunk", "_trailer", "_fault", "received")

    def __init__(self) -> None:
        self._buf = b""
        self._eof = False
        self.received = 0  #: body bytes handed out for the current response
        self.start(False)

    def start(self, head_request: bool) -> None:
        """A new request went out: its response comes next (``head_request``: it was a HEAD)."""
        self.head_request = head_request
        self.framing = -1  #: before the final head
        self.left = 0  #: body bytes (BODY_LENGTH) or bytes of the current chunk still to come
        self.keep_alive = False
        self.done = False
        self._chunk = _CHUNK_SIZE
        self._trailer = 0
        self._fault: Optional[ResponseError] = None
        self.received = 0

    @property
    def trailing(self) -> bool:
        """Bytes beyond the end of the response (the next exchange would take them as its own)."""
        return bool(self._buf)

    def feed(self, data: bytes) -> None:
        if data:
            self._buf = self._buf + data if self._buf else data
        else:
            self._eof = True

    def read_head(self) -> Optional[ResponseHead]:
        while True:
            buf = self._buf
            crlf = buf.find(b"\n\r\n")
            lf = buf.find(b"\n\n", 0, crlf if crlf >= 0 else len(buf))
            if lf >= 0:
                block, self._buf = buf[:lf + 1], buf[lf + 2:]
            elif crlf >= 0:
                block, self._buf = buf[:crlf + 1], buf[crlf + 3:]
            else:
                if len(buf) > MAX_HEAD_BYTES:
                    raise ResponseError("a response head over %d bytes" % MAX_HEAD_BYTES)
                if self._eof:
                    raise ResponseError("closed the connection in the middle of the response head" if buf.strip() else
                                        "closed the connection before responding")
                return None
            if len(block) > MAX_HEAD_BYTES:
                raise ResponseError("a response head over %d bytes" % MAX_HEAD_BYTES)
            head = parse_response_head(block)
            if head.status_code < 200:
                if head.status_code == 101:
                    raise ResponseError("switched protocols (101), which the proxy never asks for")
                continue  # 100 Continue, 102, 103: the final head follows
            self.framing, self.left, self.keep_alive = response_framing(head, self.head_request)
            self.done = self.framing == BODY_NONE
            return head

    def read_body(self) -> Tuple[bytes, bool]:
        """The body bytes that the buffer holds, and whether the body is complete."""
        if self.done:
            return b"", True
        if self._fault is not None:
            raise self._fault
        framing = self.framing
        buf = self._buf
        if framing == BODY_LENGTH:
            left = self.left
            if len(buf) >= left:
                data, self._buf = (buf, b"") if len(buf) == left else (buf[:left], buf[left:])
                self.left = 0
                self.done = True
                self.received += left
                return data, True
            self._buf = b""
            self.left = left - len(buf)
            self.received += len(buf)
            if self._eof:
                self._fault = ResponseError("closed the connection mid-response (%d of %d body bytes)" % (self.received, self.received + self.left))
                if not buf:
                    raise self._fault
            return buf, False
        if framing == BODY_UNTIL_CLOSE:
            self._buf = b""
            self.received += len(buf)
            self.done = self._eof
            return buf, self._eof
        if framing == BODY_CHUNKED:
            return self._read_chunked()
        raise ResponseError("no response head yet")

    def _read_chunked(self) -> Tuple[bytes, bool]:
        parts: List[bytes] = []
        buf = self._buf
        pos = 0
        try:
            while True:
                state = self._chunk
                if state == _CHUNK_DATA:
                    left = self.left
                    have = len(buf) - pos
                    if have <= 0:
                        break
                    if have < left:
                        parts.append(buf[pos:] if pos else buf)
                        self.left = left - have
                        pos = len(buf)
                        break
                    parts.append(buf[pos:pos + left])
                    pos += left
                    self.left = 0
                    self._chunk = _CHUNK_END
                elif state == _CHUNK_SIZE:
                    nl = buf.find(b"\n", pos, pos + MAX_CHUNK_LINE)
                    if nl < 0:
                        if len(buf) - pos > MAX_CHUNK_LINE:
                            raise ResponseError("a chunk-size line over %d bytes" % MAX_CHUNK_LINE)
                        break
                    if nl == pos or buf[nl - 1] != 13:
                        raise ResponseError("a chunk-size line that does not end in CRLF")
                    size = buf[pos:nl - 1].split(b";", 1)[0].strip(b" \t")
                    if _HEX_RE.fullmatch(size) is None:
                        raise ResponseError("a bad chunk size %r" % size[:20])
                    pos = nl + 1
                    self.left = int(size, 16)
                    self._chunk = _CHUNK_DATA if self.left else _CHUNK_TRAILER
                elif state == _CHUNK_END:
                    if len(buf) - pos < 2:
                        break
                    if buf[pos:pos + 2] != b"\r\n":
                        raise ResponseError("a chunk not followed by CRLF")
                    pos += 2
                    self._chunk = _CHUNK_SIZE
                else:  # the trailer: field lines up to an empty line, dropped
                    nl = buf.find(b"\n", pos)
                    if nl < 0:
                        if self._trailer + len(buf) - pos > MAX_HEAD_BYTES:
                            raise ResponseError("a trailer over %d bytes" % MAX_HEAD_BYTES)
                        break
                    line, pos = buf[pos:nl + 1], nl + 1
                    self._trailer += len(line)
                    if line in (b"\r\n", b"\n"):
                        self.done = True
                        break
                    if self._trailer > MAX_HEAD_BYTES:
                        raise ResponseError("a trailer over %d bytes" % MAX_HEAD_BYTES)
            if not self.done and self._eof:
                raise ResponseError("closed the connection mid-response (in a chunked body)")
        except ResponseError as exc:
            self._buf = b""
            if not parts:
                raise
            self._fault = exc
            data = b"".join(parts)
            self.received += len(data)
            return data, False
        self._buf = buf[pos:] if pos < len(buf) else b""
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.received += len(data)
        return data, self.done


class UpstreamConnection:
    """One keep-alive socket to a backend."""

    def __init__(self, backend: "Backend", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.backend = backend
        self.reader = reader
        self.writer = writer
        self.parser = ResponseParser()
        self.state = NEW
        self.requests = 0
        self.expires_at = 0.0
        self.send_left = 0  #: request body bytes still to send (CHUNKED: a chunked body not ended; 0: sent whole)
        self.send_failed = False  #: a write failed: the request did not go out whole
        self.timed_out = False  #: set when the idle timer aborted the socket (maps to 504)
        self.received_any = False  #: any byte of a response arrived on this exchange
        self.replay: Optional[bytes] = None  #: a body already read (to look at it) that still goes to the client
        self.timer = IdleTimer(asyncio.get_running_loop(), self._on_silence)

    def __repr__(self) -> str:
        return "<UpstreamConnection %s %s requests=%d>" % (self.backend.name, self.state, self.requests)

    def _on_silence(self) -> None:
        self.timed_out = True
        self.writer.transport.abort()

    def is_reusable(self, now: float) -> bool:
        """An idle connection is usable unless it expired, the backend closed it, or it became
        readable while idle (bytes nobody asked for would be taken as the next response)."""
        return (
            self.state == IDLE
            and now < self.expires_at
            and not self.reader.at_eof()
            and not self.writer.is_closing()
            and not getattr(self.reader, "_buffer", b"")  # StreamReader's buffer; no public API says "readable"
        )

    def finished_cleanly(self) -> bool:
        """The request went out whole and its response was read to its end, with nothing after it
        and keep-alive: the socket can carry the next exchange."""
        parser = self.parser
        return (self.state == ACTIVE and parser.done and parser.keep_alive and not parser.trailing
                and self.send_left == 0 and not self.send_failed and not self.timed_out)

    async def send_request(self, method: bytes, target: bytes, headers: Headers, body: Optional[bytes]) -> None:
        """Send the head and (when given) the whole body; without one, ``send_body_part`` and
        ``end_body`` send it as the head's framing says."""
        self.state = ACTIVE
        self.requests += 1
        self.received_any = False
        self.replay = None
        self.parser.start(method == b"HEAD")
        framing = request_body_framing(headers)
        data = encode_request_head(method, target, headers)
        if body is None:
            self.send_left = 0 if framing == NO_BODY else framing
        else:
            if len(body) != (0 if framing == NO_BODY else framing):
                raise BadGateway("cannot send the request upstream: a body of %d bytes under the framing %d" % (len(body), framing))
            data += body
            self.send_left = 0
        try:
            self.writer.write(data)
        except (OSError, RuntimeError):
            self.send_failed = True
            return
        if self.writer.transport.get_write_buffer_size():
            await self._write(b"")

    async def send_body_part(self, data: bytes) -> None:
        if not data:
            return
        left = self.send_left
        if left == CHUNKED:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        elif len(data) > left:  # the body does not match the length the client declared
            raise BadRequest("the request body does not match its framing: %d bytes more than its Content-Length" % (len(data) - left))
        else:
            self.send_left = left - len(data)
        await self._write(data)

    async def end_body(self) -> None:
        if self.send_left == CHUNKED:
            self.send_left = 0
            await self._write(b"0\r\n\r\n")
        elif self.send_left:
            raise BadRequest("the request body does not match its framing: %d bytes short of its Content-Length" % self.send_left)

    async def _write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            if self.writer.transport.get_write_buffer_size():
                await self.writer.drain()
            self.timer.touch()
        except (OSError, RuntimeError):
            # The backend may have answered early (e.g. 400 before reading the whole body):
            # the response is still read, so this is not an error yet.
            self.send_failed = True

    async def _read(self) -> bytes:
        try:
            data = await self.reader.read(READ_SIZE)
        except OSError:
            data = b""
        if data:
            self.received_any = True
        self.timer.touch()
        return data

    def _failure(self, what: str) -> ProxyError:
        if self.timed_out:
            return UpstreamTimeout("backend %s sent nothing for too long (%s)" % (self.backend.name, what))
        return BadGateway("backend %s %s" % (self.backend.name, what))

    async def receive_response(self) -> ResponseHead:
        """Read up to the final response head (skipping 1xx)."""
        parser = self.parser
        while True:
            try:
                head = parser.read_head()
            except ResponseError as exc:
                message = str(exc)
                raise self._failure(message if message.startswith("closed") else "sent an invalid response: %s" % message) from None
            if head is not None:
                return head
            parser.feed(await self._read())

    def take_buffered(self) -> Tuple[bytes, bool]:
        """The body bytes at hand without reading the socket, and whether the body is complete.

        A failure met after some bytes were taken is kept for the next call: the bytes before it
        (lines the client should still get) come out first."""
        try:
            return self.parser.read_body()
        except ResponseError as exc:
            message = str(exc)
            raise self._failure(message if message.startswith("closed") else "broke the response: %s" % message) from None

    async def receive_body(self) -> Tuple[bytes, bool]:
        """The body bytes of one socket read, and whether the body is complete.

        Everything one read brings is joined, so the relay writes it out once.
        """
        while True:
            data, done = self.take_buffered()
            if data or done:
                return data, done
            self.parser.feed(await self._read())

    async def receive_whole_body(self, limit: int = MAX_JSON_BODY) -> bytes:
        if self.replay is not None:
            body, self.replay = self.replay, None
            return body
        parts: List[bytes] = []
        size = 0
        while True:
            data, done = await self.receive_body()
            parts.append(data)
            size += len(data)
            if size > limit:
                raise BadGateway("backend %s answered with a body over %d bytes" % (self.backend.name, limit))
            if done:
                return b"".join(parts)

    def abort(self) -> None:
        self.state = CLOSED
        self.timer.close()
        self.writer.transport.abort()


class Pool:
    """Idle keep-alive connections to one backend, most recently used first."""

    def __init__(self, backend: "Backend", connect_timeout: float) -> None:
        self.backend = backend
        self.connect_timeout = connect_timeout
        self.idle: List[UpstreamConnection] = []
        self.closed = False  #: the backend was forgotten: connections coming back are closed
        self._ssl: Optional[ssl.SSLContext] = ssl.create_default_context() if backend.spec.scheme == "https" else None

    def take_idle(self) -> Optional[UpstreamConnection]:
        """The most recently used idle connection that is still usable, if any."""
        if not self.idle:
            return None
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if conn.is_reusable(now):
                conn.state = ACTIVE
                return conn
            conn.abort()
        return None

    async def connect(self) -> UpstreamConnection:
        spec = self.backend.spec
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(spec.host, spec.port, ssl=self._ssl, limit=READ_SIZE),
                self.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise BadGateway("cannot connect to backend %s (%s): no answer within %.1fs" % (spec.name, spec.url, self.connect_timeout)) from None
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
            raise BadGateway("cannot connect to backend %s (%s): %s" % (spec.name, spec.url, reason)) from None
        return UpstreamConnection(self.backend, reader, writer)

    def release(self, conn: UpstreamConnection) -> None:
        """Back to the pool if the exchange finished cleanly, else closed."""
        conn.timer.stop()
        conn.replay = None
        if self.closed or not conn.finished_cleanly():
            conn.abort()  # includes bytes after the response: the next exchange would read them
            return
        now = time.monotonic()
        conn.state = IDLE
        conn.expires_at = now + POOL_IDLE_SECONDS
        idle = self.idle
        idle.append(conn)
        while idle and (len(idle) > POOL_MAX_IDLE or idle[0].expires_at <= now):
            idle.pop(0).abort()

    def close(self) -> None:
        self.closed = True
        for conn in self.idle:
            conn.abort()
        self.idle.clear()

    async def request_json(self, method: bytes, path: str, body: Any, via: bytes, timeout: float) -> Tuple[int, Any]:
        """One small JSON exchange of the proxy's own with this backend (/api/show, merged lists,
        preload, the doctor): (status, parsed body or None); the socket is pooled like any other."""
        status, raw = await self.exchange(method, path, body, via, timeout, b"application/json")
        try:
            return status, parse_json(raw) if raw else None
        except ValueError:
            return status, None

    async def exchange(self, method: bytes, path: str, body: Any, via: bytes, timeout: float, accept: bytes) -> Tuple[int, bytes]:
        """One exchange of the proxy's own: ``body`` sent as JSON (none when None), the whole
        answer read; (status, raw body). ``timeout`` is the longest silence from the backend."""
        backend = self.backend
        spec = backend.spec
        data = json.dumps(body).encode("utf-8") if body is not None else b""
        headers: Headers = [(b"host", backend.host_header), (b"accept", accept), (b"via", via)]
        if body is not None:
            headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        if spec.auth is not None:
            headers.append((b"authorization", spec.auth.encode("latin-1")))
        upconn = self.take_idle() or await self.connect()
        try:
            upconn.timer.start(timeout)
            await upconn.send_request(method, (spec.path_prefix + path).encode("latin-1"), headers, data)
            response = await upconn.receive_response()
            raw = await upconn.receive_whole_body()
        except BaseException:
            upconn.abort()
            raise
        self.release(upconn)
        return response.status_code, raw


# ---------------------------------------------------------------------------
# 5. Backends and health
# ---------------------------------------------------------------------------
#
# Theory.  Every --scan-interval a thread of its own probes each configured
# backend, each port of the --scan range and each address the --discover-dns
# names resolve to at that moment (GET /api/tags, GET /api/ps), all at once on a
# private event loop, each probe bounded by --probe-timeout.  The results go to
# the proxy's loop through call_soon_threadsafe and nothing else crosses the
# thread boundary.  On the proxy's loop, the Fleet owns the backends: it applies
# each round (a discovered backend comes with its first good probe and goes after
# FORGET_ROUNDS bad ones, or at once when its address is no longer probed: its
# DNS name stopped resolving to it), marks a backend that failed a forwarded
# request, and answers for the health reports.  Beside the probes' health, each
# backend's RequestHealth records what its forwarded requests said (SPEC §6,
# health from real traffic): the App reports each attempt's outcome (Fleet.judge),
# the record's pure transitions decide ejection, trial and recovery, and the
# Fleet logs and counts them.

FORGET_ROUNDS = 3  #: a discovered backend that failed this many probe rounds in a row is forgotten
PROBE_CONCURRENCY = 256  #: probes in flight at once within a round
SCAN_DEBOUNCE_SECONDS = 0.5  #: a round asked for after a request waits this long (a burst finishes first)
METADATA_TIMEOUT = 10.0  #: seconds for the proxy's own /api/show, /api/tags, /api/ps calls
MERGE_TIMEOUT = 3.0  #: at least this long for each backend's part of a merged list
RETRY_AFTER_SECONDS = 5  #: the Retry-After of a 503 (no healthy backend, queue full or wait over)
EJECT_MAX_SECONDS = 300.0  #: the longest cool-off of an ejection (unless --eject-seconds itself is longer)
RECENT_FAILURE_SECONDS = 60.0  #: a backend with a failed request this recent comes after the others in the choice
RECENTLY_FAILED_RANK = 1 << 40  #: added to its in-flight count in the choice's key: after every backend without one


def cool_off_seconds(first: float, ejections: int) -> float:
    """The cool-off of the ``ejections``-th ejection in a row: ``first`` (--eject-seconds), doubled
    for each ejection before it, up to EJECT_MAX_SECONDS (or ``first`` when that is longer)."""
    return min(first * 2.0 ** min(max(ejections - 1, 0), 32), max(first, EJECT_MAX_SECONDS))


@dataclass(frozen=True)
class RequestHealth:
    """What the forwarded requests say of one backend (SPEC §6, health from real traffic).

    Probes see liveness only (Ollama answers /api/tags while its runner is wedged), so each
    forwarded request's outcome is judged too.  Pure: each transition returns the new record and
    what happened, for the one log line ("" when nothing did); ``now`` is the caller's monotonic
    clock.  After ``eject_after`` failed requests in a row the backend is *ejected* until
    ``until``; once that is past, one request at a time may try it (``trial``): its success makes
    the record whole again, its failure ejects it again for twice as long.
    """

    failures: int = 0  #: failed requests in a row
    ejections: int = 0  #: ejections in a row (each one doubles the cool-off); 0 while not ejected
    until: float = 0.0  #: when the current ejection's cool-off ends (0: not ejected)
    cool_off: float = 0.0  #: that cool-off's length, seconds
    trial: bool = False  #: the one trial request after the cool-off is in flight
    last_failure: Optional[float] = None  #: when a request last failed (None: none since the last recovery)
    reason: str = ""  #: why the last failed request failed

    @property
    def ejected(self) -> bool:
        return self.until > 0.0

    def available(self, now: float) -> bool:
        """May a request be sent here: not ejected, or the cool-off is over and no trial is in flight."""
        return self.until == 0.0 or (now >= self.until and not self.trial)

    def trial_due(self, now: float) -> bool:
        """Is the cool-off over with no trial in flight (the next request sent here is the trial)?"""
        return self.until > 0.0 and now >= self.until and not self.trial

    def failed_recently(self, now: float) -> bool:
        """Did a request fail here within RECENT_FAILURE_SECONDS (the choice puts it after the others)?"""
        return self.last_failure is not None and now - self.last_failure < RECENT_FAILURE_SECONDS

    def trying(self) -> "RequestHealth":
        """The trial request is on its way."""
        return dataclasses.replace(self, trial=True)

    def failed(self, now: float, reason: str, eject_after: int, first: float, trial: bool) -> Tuple["RequestHealth", str]:
        """A request failed here (``trial``: it was the trial).  "ejected" after ``eject_after`` in a
        row (0: never), "ejected again" (twice the cool-off) when the trial failed; a request sent
        before the ejection that fails now changes nothing but the counts."""
        failures = self.failures + 1
        if self.until > 0.0:
            if trial and self.trial:
                n = self.ejections + 1
                length = cool_off_seconds(first, n)
                return RequestHealth(failures, n, now + length, length, False, now, reason), "ejected again"
            return dataclasses.replace(self, failures=failures, last_failure=now, reason=reason), ""
        if eject_after > 0 and failures >= eject_after:
            length = cool_off_seconds(first, 1)
            return RequestHealth(failures, 1, now + length, length, False, now, reason), "ejected"
        return dataclasses.replace(self, failures=failures, last_failure=now, reason=reason), ""

    def succeeded(self, trial: bool) -> Tuple["RequestHealth", str]:
        """A request was served here.  The trial's success: "recovered", the record whole again; any
        other success resets the failures in a row (while ejected only the trial decides)."""
        if self.until > 0.0:
            if trial and self.trial:
                return RequestHealth(), "recovered"
            return self, ""
        return (dataclasses.replace(self, failures=0) if self.failures else self), ""

    def unjudged(self, trial: bool) -> "RequestHealth":
        """A request that says nothing of the backend (a 4xx, a client that left): were it the
        trial, the next request may try instead."""
        return dataclasses.replace(self, trial=False) if trial and self.trial else self


@dataclass
class Backend:
    """One Ollama server and what the proxy knows about it."""

    spec: BackendSpec
    in_flight: int = 0
    requests: int = 0
    last_error: Optional[str] = None
    pool: Optional[Pool] = field(default=None, repr=False)
    host_header: bytes = field(default=b"", repr=False)  #: the Host value sent upstream, encoded once
    name: str = field(default="", init=False)  #: the spec's name (read on every request: an attribute)
    digests: Dict[str, str] = field(default_factory=dict, repr=False)  #: model -> digest, from /api/tags
    loaded: Dict[str, int] = field(default_factory=dict, repr=False)  #: model -> context it is loaded with
    healthy: Optional[bool] = None  #: the last probe answered 200 (None: not probed, or probes are off)
    discovered: bool = False  #: found by --scan or --discover-dns (forgotten again when it stays away or leaves DNS)
    tags: List[Dict[str, Any]] = field(default_factory=list, repr=False)  #: /api/tags entries of the last probe
    last_probe: float = 0.0  #: Unix time of the last probe (0: never)
    failed_rounds: int = 0  #: probe rounds failed in a row
    failed_at: float = 0.0  #: Unix time a forwarded request last failed in transport (older good probes do not count)
    request_health: RequestHealth = field(default_factory=RequestHealth, repr=False)  #: what forwarded requests say (the Fleet's)

    def __post_init__(self) -> None:
        self.host_header = self.spec.host_bytes
        self.name = self.spec.name


def scan_targets(config: Config, own_port: int) -> List[BackendSpec]:
    """What each probe round probes: the configured backends, then each port of --scan
    that is neither one of them nor the proxy's own listening address."""
    targets = list(config.backends)
    if config.scan is not None:
        host, start, end = config.scan
        taken = {(b.host.lower(), b.port) for b in config.backends}
        for port in range(start, end + 1):
            spec = BackendSpec(name=_default_name(host, port), scheme="http", host=host, port=port)
            if (host.lower(), port) in taken or _is_same_address(config.host, own_port, spec):
                continue
            targets.append(spec)
    return targets


def dns_backend_name(name: str, address: str, port: int) -> str:
    """The name of the backend at one address of a --discover-dns NAME: ``NAME@ADDRESS:PORT``
    (``ollama-headless@10.1.2.3:11434``, ``ollama-headless@[fd00::3]:11434``)."""
    return "%s@%s" % (name, _default_name(address, port))


#: getaddrinfo's errors that are the DNS's answer "this name has no address" (NXDOMAIN, or no A or
#: AAAA record), as for a Kubernetes headless Service with no ready pod; any other error (EAI_AGAIN:
#: no DNS server answered) is a lookup that failed, which says nothing about the name.
_NO_ADDRESS_ERRORS = frozenset(getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, n))


def resolve_addresses(name: str, port: int) -> List[str]:
    """Every address ``name`` resolves to, IPv4 and IPv6, each once, in the resolver's order; []
    when the DNS says it has none.  OSError when the lookup itself failed.  Blocks: scanner thread only."""
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in _NO_ADDRESS_ERRORS:
            return []
        raise
    addresses: List[str] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in addresses:
            addresses.append(str(sockaddr[0]))
    return addresses


class DnsDiscovery:
    """--discover-dns (SPEC §6): what each NAME:PORT resolves to, as probe targets, once a round.

    Once the scanner runs, only its thread calls ``targets()``.  The one decision on lookups is here:
    a name that the DNS says has no address (NXDOMAIN: a headless Service with no ready pod) has no
    backends, so the ones it had are forgotten; a lookup that fails (no DNS answer, a timeout) keeps
    the addresses of the last good answer, which the probes go on judging.  Each change of a name's
    state is logged once.  ``resolve(name, port)`` (``resolve_addresses``) is the seam tests replace.
    """

    def __init__(self, names: Sequence[Tuple[str, int]]) -> None:
        self.names = list(names)
        self.resolve: Callable[[str, int], List[str]] = resolve_addresses
        self._known: Dict[Tuple[str, int], List[str]] = {}  #: each name's addresses from its last answer
        self._state: Dict[Tuple[str, int], str] = {}  #: "ok", "empty" or "failed": what was last logged

    def targets(self) -> List[BackendSpec]:
        """Every address of every name, as a plain-http backend named ``NAME@ADDRESS:PORT``."""
        return [BackendSpec(name=dns_backend_name(name, address, port), scheme="http", host=address, port=port)
                for name, port in self.names for address in self._lookup(name, port)]

    def _lookup(self, name: str, port: int) -> List[str]:
        key = (name, port)
        try:
            addresses = list(self.resolve(name, port))
        except (OSError, UnicodeError) as exc:  # UnicodeError: a label idna refuses (longer than 63)
            kept = self._known.get(key, [])
            self._log(key, "failed", "DNS name %s:%d: lookup failed (%s); %s", name, port,
                      getattr(exc, "strerror", None) or exc, "keeping its last %d address(es)" % len(kept) if kept else "no backends from it yet")
            return kept
        if addresses:
            self._log(key, "ok", "DNS name %s:%d resolves to %s", name, port, ", ".join(addresses))
        else:
            self._log(key, "empty", "DNS name %s:%d resolves to no address (no ready pod behind the Service?); %s", name, port,
                      "its backends are forgotten" if self._known.get(key) else "no backends from it until it does")
        self._known[key] = addresses
        return addresses

    def _log(self, key: Tuple[str, int], state: str, message: str, *args: Any) -> None:
        """Log a name's new state, once: a warning for trouble, info when it resolves (again)."""
        if self._state.get(key) != state:
            self._state[key] = state
            log.log(logging.INFO if state == "ok" else logging.WARNING, message, *args)


def round_targets(static: Sequence[BackendSpec], found: Sequence[BackendSpec], listen_host: str, own_port: int) -> List[BackendSpec]:
    """One round's targets: the fixed ones (``scan_targets``), then each address found in DNS that
    is neither one of them, nor found twice (the first name keeps it), nor this proxy's own address."""
    targets = list(static)
    taken = {(s.host.lower(), s.port) for s in static}
    for spec in found:
        address = (spec.host.lower(), spec.port)
        if address not in taken and not _is_same_address(listen_host, own_port, spec):
            taken.add(address)
            targets.append(spec)
    return targets


@dataclass
class ProbeResult:
    """What one probe of one address found: ``ok`` with the tag and ps lists, or the error."""

    spec: BackendSpec
    ok: bool
    at: float  #: Unix time the probe started
    error: Optional[str] = None
    tags: List[Dict[str, Any]] = field(default_factory=list)
    ps: List[Dict[str, Any]] = field(default_factory=list)


async def _probe_get(spec: BackendSpec, path: str, via: bytes, ssl_context: Optional[ssl.SSLContext]) -> List[Dict[str, Any]]:
    """One GET on a fresh connection; the ``models`` list of a 200 JSON answer, else ValueError."""
    reader, writer = await asyncio.open_connection(spec.host, spec.port, ssl=ssl_context, limit=READ_SIZE)
    try:
        headers = [(b"host", spec.host_bytes), (b"accept", b"application/json"), (b"via", via), (b"connection", b"close")]
        if spec.auth is not None:
            headers.append((b"authorization", spec.auth.encode("latin-1")))
        writer.write(encode_request_head(b"GET", (spec.path_prefix + path).encode("latin-1"), headers))
        parser = ResponseParser()
        head = None
        while head is None:
            parser.feed(await reader.read(READ_SIZE))
            head = parser.read_head()
        status, parts, size, done = head.status_code, [], 0, False
        while not done:
            data, done = parser.read_body()
            parts.append(data)
            size += len(data)
            if size > MAX_JSON_BODY:
                raise ValueError("GET %s: answer too large" % path)
            if not done:
                parser.feed(await reader.read(READ_SIZE))
    finally:
        writer.transport.abort()
    if status != 200:
        raise ValueError("GET %s answered %d" % (path, status))
    try:
        obj = parse_json(b"".join(parts))
    except ValueError:
        raise ValueError("GET %s: not JSON (not an Ollama server?)" % path) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("models"), list):
        raise ValueError("GET %s: no model list (not an Ollama server?)" % path)
    return [m for m in obj["models"] if isinstance(m, dict)]


async def probe_backend(spec: BackendSpec, timeout: float, via: bytes) -> ProbeResult:
    """GET /api/tags and GET /api/ps of one address, both within ``timeout`` seconds."""
    started = time.time()
    ssl_context = ssl.create_default_context() if spec.scheme == "https" else None
    try:
        tags = await asyncio.wait_for(_probe_get(spec, "/api/tags", via, ssl_context), timeout)
        ps = await asyncio.wait_for(_probe_get(spec, "/api/ps", via, ssl_context), max(0.001, timeout - (time.time() - started)))
    except asyncio.TimeoutError:
        return ProbeResult(spec, False, started, "no answer within %gs" % timeout)
    except (OSError, ssl.SSLError) as exc:
        return ProbeResult(spec, False, started, exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc))
    except ValueError as exc:  # ResponseError among them
        return ProbeResult(spec, False, started, str(exc) or type(exc).__name__)
    except Exception as exc:  # anything a strange server makes us raise (RecursionError on deep JSON...) fails this probe only
        return ProbeResult(spec, False, started, "unusable answer (%s)" % type(exc).__name__)
    return ProbeResult(spec, True, started, tags=tags, ps=ps)


async def probe_all(targets: Sequence[BackendSpec], timeout: float, via: bytes) -> List[ProbeResult]:
    """One round: every target at once (at most PROBE_CONCURRENCY connections open)."""
    limit = asyncio.Semaphore(PROBE_CONCURRENCY)

    async def one(spec: BackendSpec) -> ProbeResult:
        async with limit:
            return await probe_backend(spec, timeout, via)

    return list(await asyncio.gather(*(one(spec) for spec in targets)))


class Scanner:
    """The probe rounds, in a daemon thread with an event loop of its own.

    ``deliver(results, complete)`` is called on the proxy's loop (through ``call_soon_threadsafe``)
    after each round (``complete`` False when the round failed as a whole); ``wake()`` asks for a
    round soon; ``stop()`` ends the thread.  ``discover()``, when given, is called here before
    each round and returns its targets: the fixed ``targets`` and what the --discover-dns names
    resolve to now (``round_targets``).
    """

    def __init__(self, targets: Sequence[BackendSpec], interval: float, timeout: float, via: bytes,
                 loop: asyncio.AbstractEventLoop, deliver: Callable[[List[ProbeResult], bool], None],
                 discover: Optional[Callable[[], List[BackendSpec]]] = None) -> None:
        self.targets = list(targets)
        self.discover = discover
        self.interval = interval
        self.timeout = timeout
        self.via = via
        self.loop = loop
        self.deliver = deliver
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ollama-proxy-scanner", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while not self._stop.is_set():
                complete = True
                try:
                    targets = self.targets if self.discover is None else self.discover()
                    results = loop.run_until_complete(probe_all(targets, self.timeout, self.via))
                except Exception:
                    log.exception("probe round failed; trying again in %gs", self.interval)
                    results, complete = [], False  # still delivered: the first round is over
                # The probes' aborted connections close their sockets on the loop's next turn:
                # give it that turn now, not at the next round (or never, once stopped).
                loop.run_until_complete(asyncio.sleep(0))
                if self._stop.is_set():
                    break
                try:
                    self.loop.call_soon_threadsafe(self.deliver, results, complete)
                except RuntimeError:  # the proxy's loop is closed
                    break
                if self._wake.wait(self.interval) and not self._stop.is_set():
                    self._stop.wait(SCAN_DEBOUNCE_SECONDS)
                self._wake.clear()
        finally:
            loop.run_until_complete(asyncio.sleep(0))  # a round cut short by stop() closes its sockets too
            loop.close()


class Fleet:
    """The backends, their health and what each one has (SPEC §6): the one owner of ``backends``.

    Health comes from the probe rounds (``apply_probes``, delivered by the scanner thread) and
    from forwarded requests that failed in transport (``mark_failed``); beside it, each
    backend's ``request_health`` (a RequestHealth) from the outcome of every forwarded request
    (``judge``, and ``take`` for the trial after a cool-off), decided there and logged here.
    What follows from a change is the caller's: ``on_up(backend)`` when one becomes healthy,
    ``on_down()`` when one goes, is forgotten or is ejected, ``on_back(backend)`` when an
    ejected one may take requests again, ``on_round()`` after each probe round;
    ``count(event, backend)`` counts ejections, trials, recoveries and failed requests.
    """

    def __init__(self, config: Config, models: Models, via: bytes) -> None:
        self.config = config
        self.models = models
        self.via = via
        self.backends = [Backend(spec) for spec in config.backends]
        self.probing = config.scan_interval > 0  #: health is tracked (else every backend counts as healthy)
        self.generation = 0  #: bumped whenever health or inventories change (waiters re-check where they may go)
        self.sticky = StickyTable()  #: which backend holds which conversation
        self.on_up: Callable[[Backend], None] = lambda backend: None
        self.on_down: Callable[[], None] = lambda: None
        self.on_round: Callable[[], None] = lambda: None
        self.on_back: Callable[[Backend], None] = lambda backend: None
        self.count: Callable[[str, str], None] = lambda event, backend: None
        self._ejected: set = set()  #: names of the backends ejected now (for ``choice_clock``'s fast path)
        self._recent_until = 0.0  #: until when a failed request is recent enough to weigh in the choice
        self.scanner: Optional[Scanner] = None
        self.dns = DnsDiscovery(config.discover_dns)  #: the --discover-dns lookups (the scanner thread's, once started)
        self._first_round: Optional[asyncio.Event] = None  #: set once the first probe round is in
        self._closed = False

    def start(self, loop: asyncio.AbstractEventLoop, own_port: int) -> None:
        """Open the pools; with probes on, start the scanner (requests wait for its first round)."""
        for backend in self.backends:
            backend.pool = Pool(backend, self.config.connect_timeout)
        if self.probing:
            self._first_round = asyncio.Event()
            static = scan_targets(self.config, own_port)
            discover = None
            if self.config.discover_dns:
                discover = lambda: round_targets(static, self.dns.targets(), self.config.host, own_port)  # noqa: E731
                log.info("backends from DNS: every address of %s, resolved every %gs",
                         ", ".join("%s:%d" % n for n in self.config.discover_dns), self.config.scan_interval)
            self.scanner = Scanner(static, self.config.scan_interval, self.config.probe_timeout, self.via, loop, self.apply_probes, discover)
            self.scanner.start()

    def stop(self) -> None:
        """No more probe rounds; later results are ignored."""
        self._closed = True
        if self.scanner is not None:
            self.scanner.stop()

    def close(self) -> None:
        for backend in self.backends:
            if backend.pool is not None:
                backend.pool.close()

    async def ready(self) -> None:
        """Wait (a bounded time) for the first probe round, so that the first requests know who is up."""
        if self._first_round is not None and not self._first_round.is_set():
            try:
                await asyncio.wait_for(self._first_round.wait(), self.config.probe_timeout + 5.0)
            except asyncio.TimeoutError:
                pass

    @property
    def first_round_done(self) -> bool:
        return self._first_round is None or self._first_round.is_set()

    def wake(self) -> None:
        """Ask for a probe round soon (a new load may have evicted another model)."""
        if self.scanner is not None:
            self.scanner.wake()

    def several(self) -> bool:
        """Is there a choice to make (else every request goes to the one backend)?"""
        return len(self.backends) > 1 or self.config.discovering

    def named(self, name: str) -> Backend:
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise NotFound("/proxy-backend/%s/: no backend is named %r (backends: %s)" % (name, name, ", ".join(b.name for b in self.backends) or "none"))

    def has_model(self, model: str) -> bool:
        return any(model in b.digests for b in self.backends)

    def eligible(self, model: Optional[str], exclude: Sequence[str] = ()) -> List[Backend]:
        return eligible_backends(self.backends, model, self.config.routes, exclude, self.choice_clock())

    def choice_clock(self) -> Optional[float]:
        """The time at which the choice weighs what requests said of the backends (monotonic), or
        None when nothing of it can matter now (no backend ejected, no failed request within
        RECENT_FAILURE_SECONDS): then the choice skips those facts, as fast as without them."""
        now = time.monotonic()
        if self._ejected:
            if any(b.request_health.until for b in self.backends):
                return now
            self._ejected.clear()  # the ejected ones were forgotten meanwhile
        return now if now < self._recent_until else None

    async def request_json(self, backend: Backend, method: bytes, path: str, body: Any = None,
                           timeout: float = METADATA_TIMEOUT) -> Tuple[int, Any]:
        """The proxy's own small JSON request to one backend (metadata, preload, merged lists)."""
        assert backend.pool is not None
        return await backend.pool.request_json(method, path, body, self.via, timeout)

    # -- health and inventory -------------------------------------------------

    def apply_probes(self, results: List[ProbeResult], complete: bool = True) -> None:
        """A probe round's results (called on this loop by the scanner thread).  In a ``complete``
        round every target has its result: a discovered backend without one is no longer a target
        (its DNS name stopped resolving to it) and is forgotten now."""
        if self._closed:
            return
        if complete:
            probed = {(r.spec.host.lower(), r.spec.port) for r in results}
            for backend in [b for b in self.backends if b.discovered and (b.spec.host.lower(), b.spec.port) not in probed]:
                self._forget(backend, "its DNS name no longer resolves to it")
        self.generation += 1
        by_address = {(b.spec.host.lower(), b.spec.port): b for b in self.backends}
        discovered = False
        for result in results:
            backend = by_address.get((result.spec.host.lower(), result.spec.port))
            if backend is None:
                if not result.ok:
                    continue
                backend = Backend(result.spec, discovered=True)
                backend.pool = Pool(backend, self.config.connect_timeout)
                self.backends.append(backend)
                discovered = True
                log.info("backend %s discovered %s (%d models)", backend.name,
                         "in DNS" if "@" in backend.name else "on the scan range", len(result.tags))  # NAME@ADDRESS:PORT
            backend.last_probe = result.at
            if result.ok and result.at < backend.failed_at:
                continue  # this probe started before a request failed there: it proves nothing now
            if result.ok:
                restarted = backend.failed_rounds > 0  # its probes had failed: it was down, and is back
                backend.failed_rounds = 0
                self._apply_inventory(backend, result.tags, result.ps)
                if backend.healthy is not True:
                    self._set_health(backend, True, None)
                if restarted and backend.request_health.ejected:
                    # Down, and back (a restart): the requests that failed before do not speak for
                    # it now.  (One whose probes pass all along stays ejected: that is what ejection is for.)
                    self._recovered(backend, RequestHealth(), "its probes saw it down and back up")
            else:
                backend.failed_rounds += 1
                backend.last_error = result.error
                if backend.healthy is not False:
                    self._set_health(backend, False, result.error)
                if backend.discovered and backend.failed_rounds >= FORGET_ROUNDS:
                    self._forget(backend, "no answer for %d probe rounds" % backend.failed_rounds)
        if discovered:
            configured = [b for b in self.backends if not b.discovered]
            found = sorted((b for b in self.backends if b.discovered), key=lambda b: b.spec.port)
            self.backends[:] = configured + found
        if self._first_round is not None:
            self._first_round.set()
        self.on_round()

    def _apply_inventory(self, backend: Backend, tags: List[Dict[str, Any]], ps: List[Dict[str, Any]]) -> None:
        """What a backend has (/api/tags) and has loaded (/api/ps)."""
        self.apply_tags(backend, tags)
        loaded = {}
        for m in ps:
            ctx = m.get("context_length")  # since Ollama 0.10; before, loaded with a context not known (0)
            loaded[normalize_model(str(m.get("name") or m.get("model") or ""))] = ctx if isinstance(ctx, int) and not isinstance(ctx, bool) else 0
        backend.loaded = loaded

    def apply_tags(self, backend: Backend, tags: List[Dict[str, Any]]) -> None:
        """A backend's model list; the metadata of a model that changed or went is dropped."""
        self.generation += 1
        backend.tags = tags
        digests = {normalize_model(str(m.get("name") or m.get("model") or "")): str(m.get("digest") or "") for m in tags}
        backend.digests = digests
        self.models.digests_changed(backend, digests)

    def _recovered(self, backend: Backend, after: RequestHealth, why: str) -> None:
        """An ejected backend takes requests again (``after`` is its new record): logged, counted,
        and the queue told."""
        ejections = backend.request_health.ejections
        backend.request_health = after
        self._ejected.discard(backend.name)
        self.generation += 1
        log.info("backend %s recovered: %s (after %d ejection(s) in a row)", backend.name, why, ejections,
                 extra={"fields": {"event": "recovered", "backend": backend.name, "ejections": ejections}})
        self.count("recovery", backend.name)
        self.on_back(backend)

    def _set_health(self, backend: Backend, healthy: bool, reason: Optional[str]) -> None:
        """A health change, logged once."""
        before = backend.healthy
        backend.healthy = healthy
        self.generation += 1
        if healthy:
            if before is False:
                log.info("backend %s is healthy again (%d models)", backend.name, len(backend.digests))
            else:
                log.info("backend %s is healthy (%d models%s)", backend.name, len(backend.digests),
                         ", loaded: " + ", ".join(sorted(backend.loaded)) if backend.loaded else "")
            self.on_up(backend)
            return
        gone = self.sticky.forget_backend(backend.name)
        log.warning("backend %s is unhealthy: %s%s", backend.name, reason or "no answer",
                    "; %d sticky conversation(s) will move" % gone if gone else "")
        self.on_down()

    def _forget(self, backend: Backend, why: str) -> None:
        """A discovered backend that stayed away or left DNS: out of the set (requests on it finish)."""
        log.info("backend %s forgotten: %s", backend.name, why)
        self.backends.remove(backend)
        self.generation += 1
        self.sticky.forget_backend(backend.name)
        self.models.forget(backend)
        if backend.pool is not None:
            backend.pool.close()
        self.on_down()

    def mark_failed(self, backend: Backend, reason: str) -> None:
        """A transport failure of a forwarded request: unhealthy until a good probe (SPEC §6)."""
        backend.last_error = reason
        backend.failed_at = time.time()
        if self.probing and backend.healthy is not False:
            self._set_health(backend, False, reason)

    # -- health from real traffic (SPEC §6) -------------------------------------

    def take(self, backend: Backend, now: float) -> bool:
        """A request goes to ``backend`` (the Scheduler's choice): True when it is the one trial
        after the cool-off, which is then in flight (no other request goes there meanwhile)."""
        health = backend.request_health
        if not health.until or not health.trial_due(now):
            return False
        backend.request_health = health.trying()
        self.generation += 1
        log.info("backend %s: cool-off of %gs over: trying it with one request", backend.name, health.cool_off,
                 extra={"fields": {"event": "trial", "backend": backend.name, "cool_off": health.cool_off}})
        self.count("trial", backend.name)
        return True

    def judge(self, backend: Backend, failure: Optional[str], trial: bool = False) -> None:
        """What one forwarded request says of its backend: ``failure`` is why it failed (SPEC §6: a
        transport failure, a 5xx, silence past --request-timeout, a stream that broke), "" that it
        was served, None nothing (a 4xx, a client that left).  ``trial``: it was the trial."""
        health = backend.request_health
        if failure == "" and not health.failures and not health.until:
            return  # the common case: served, nothing failed before
        if failure is None:
            after = health.unjudged(trial)
            if after is not health:
                backend.request_health = after
                self.generation += 1
                self.on_back(backend)  # the trial ended without a verdict: the next request may try
            return
        if failure == "":
            after, event = health.succeeded(trial)
            if event:
                self._recovered(backend, after, "its trial request succeeded")
            else:
                backend.request_health = after
            return
        now = time.monotonic()
        eject_after = self.config.eject_after if self.several() else 0  # a lone backend has nowhere else to send its requests
        after, event = health.failed(now, failure, eject_after, self.config.eject_seconds, trial)
        backend.request_health = after
        self._recent_until = max(self._recent_until, now + RECENT_FAILURE_SECONDS)
        self.count("request_failure", backend.name)
        if not event:
            return
        self._ejected.add(backend.name)
        self.generation += 1
        self.count("ejection", backend.name)
        if event == "ejected":
            log.warning("backend %s ejected for %gs: %d failed requests in a row (the last: %s)", backend.name, after.cool_off, after.failures,
                        failure, extra={"fields": {"event": "ejected", "backend": backend.name, "cool_off": after.cool_off,
                                                   "failures": after.failures, "reason": failure}})
        else:
            log.warning("backend %s ejected again for %gs: its trial request failed (%s)", backend.name, after.cool_off, failure,
                        extra={"fields": {"event": "ejected", "backend": backend.name, "cool_off": after.cool_off,
                                          "ejections": after.ejections, "reason": failure}})
        self.on_down()  # queued requests that only this backend could serve get their 503

    def ejected_note(self, backend: Backend, now: float) -> Optional[str]:
        """Why an ejected backend takes no request now (None when it may)."""
        health = backend.request_health
        if health.available(now):
            return None
        if health.trial:
            return "ejected, its trial request in flight"
        return "ejected for another %.1fs after %d failed requests (the last: %s)" % (health.until - now, health.failures, health.reason)

    # -- what the reports say -------------------------------------------------

    def is_healthy(self, backend: Backend) -> bool:
        """Healthy as the reports say it (SPEC §6): with probes on, only once a probe answered 200."""
        return backend.healthy is True if self.probing else backend.healthy is not False

    def health(self) -> Tuple[int, Dict[str, Any]]:
        """/__proxy/health: an ejected backend does not count as healthy (it takes no requests)."""
        healthy = sum(1 for b in self.backends if self.is_healthy(b) and not b.request_health.until)
        status = "down" if not healthy else "ok" if healthy == len(self.backends) else "degraded"
        return (503 if not healthy else 200), {"status": status, "healthy_backends": healthy}

    def no_backend_message(self, model: Optional[str]) -> str:
        names = route_for(model, self.config.routes) if model else None
        now = time.monotonic()
        if names is not None:
            ejected = ["%s %s" % (b.name, self.ejected_note(b, now)) for b in self.backends if b.name in names and self.ejected_note(b, now)]
            return "no healthy backend for model '%s' (routed to %s)%s" % (model, ", ".join(names), ": " + "; ".join(ejected[:5]) if ejected else "")
        if not self.backends:
            where = ["on the --scan range"] if self.config.scan is not None else []
            if self.config.discover_dns:
                where.append("at the addresses of " + ", ".join("%s:%d" % n for n in self.config.discover_dns))
            return "no healthy backend: none found yet " + " or ".join(where)
        return "no healthy backend (%s)" % "; ".join("%s: %s" % (b.name, self.ejected_note(b, now) or b.last_error or "not answering")
                                                     for b in self.backends[:5])

    def report(self, backend: Backend) -> Dict[str, Any]:
        return {
            "name": backend.name,
            "url": backend.spec.url,
            "healthy": self.is_healthy(backend),
            "probed": backend.healthy is not None,
            "discovered": backend.discovered,
            "in_flight": backend.in_flight,
            "requests": backend.requests,
            "models": sorted(backend.digests),
            "loaded": [{"model": m, "context_length": c} for m, c in sorted(backend.loaded.items())],
            "last_error": backend.last_error,
            "last_probe": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(backend.last_probe)) if backend.last_probe else None,
            **self._request_health_report(backend.request_health),
        }

    @staticmethod
    def _request_health_report(health: RequestHealth) -> Dict[str, Any]:
        """The report's part from real traffic: ejected (and until when, for how long, the how-many-th
        in a row), the failed requests in a row and the last one's reason, a trial in flight."""
        until = None
        if health.until:
            unix = time.time() + (health.until - time.monotonic())
            until = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix)) + ".%03dZ" % int(unix % 1 * 1000)
        return {
            "ejected": bool(health.until),
            "ejected_until": until,
            "cool_off_seconds": health.cool_off if health.until else None,
            "ejections_in_a_row": health.ejections,
            "consecutive_failures": health.failures,
            "last_request_failure": health.reason or None,
            "trial_in_progress": health.trial,
        }

    async def ask_all(self, path: str) -> List[Tuple[Backend, Dict[str, Any]]]:
        """GET ``path`` on every healthy backend at once: the JSON objects of those that answered 200."""
        await self.ready()
        backends = [b for b in self.backends if b.healthy is not False]
        if not backends:
            raise ServiceUnavailable(self.no_backend_message(None), RETRY_AFTER_SECONDS)
        # A list is asked often (UIs poll /api/tags): a backend that hangs costs one short wait, then
        # it is unhealthy until a probe says otherwise.
        timeout = max(2.0 * self.config.probe_timeout, MERGE_TIMEOUT)
        answers = await asyncio.gather(*(self.request_json(b, b"GET", path, timeout=timeout) for b in backends), return_exceptions=True)
        out = []
        for backend, answer in zip(backends, answers):
            if isinstance(answer, BaseException):
                if not isinstance(answer, (ProxyError, OSError)):
                    raise answer
                log.warning("backend %s left out of the merged %s: %s", backend.name, path, getattr(answer, "message", answer))
                if isinstance(answer, (BadGateway, UpstreamTimeout, OSError)):
                    self.mark_failed(backend, getattr(answer, "message", str(answer)))
                continue
            status, obj = answer
            if status == 200 and isinstance(obj, dict):
                out.append((backend, obj))
            else:
                log.warning("backend %s left out of the merged %s: it answered %d", backend.name, path, status)
        if not out:
            raise BadGateway("no backend answered %s (%s)" % (path, ", ".join(b.name for b in backends)))
        return out


# ---------------------------------------------------------------------------
# 6. Routing and the queue
# ---------------------------------------------------------------------------
#
# Theory.  The choice of a backend for a request is a pure function of the
# backends' state (health, models, what is loaded, requests in flight, what their
# requests said: ejected, failed recently, a trial due), the clock passed in, the
# routes and the sticky table (choose_backend); so is the pick of the queued
# request that gets a freed slot (assign).  The Scheduler owns the slots and the
# queue and does what those two decide.

STICKY_SECONDS = 600.0  #: a sticky conversation entry expires after this
MAX_OVERTAKES = 3  #: a queued request is overtaken by a loaded-model request at most this often
#: Requests that change a backend's models: done once, where they went, never replayed elsewhere.
NOT_RETRIED_PATHS = frozenset({"/api/create", "/api/delete", "/api/copy", "/api/push"})
#: Requests that may use the extra slot per backend (they never wait behind long generations).
EMBED_PATHS = frozenset({"/api/embed", "/api/embeddings", "/v1/embeddings"})


def route_for(model: str, routes: Sequence[Tuple[str, Tuple[str, ...]]]) -> Optional[Tuple[str, ...]]:
    """The backend names of the first route whose pattern matches the (normalized) model."""
    for pattern, names in routes:
        if fnmatch.fnmatchcase(model, pattern):
            return names
    return None


def alias_target(model: str, exact: Mapping[str, str], patterns: Sequence[Tuple[str, str]]) -> Optional[str]:
    """The model an alias sends upstream for the (normalized) ``model``: an exact alias first,
    else the first pattern that matches; None when it is no alias."""
    target = exact.get(model)
    if target is None:
        for pattern, name in patterns:
            if fnmatch.fnmatchcase(model, pattern):
                return name
    return target


def eligible_backends(backends: Sequence[Backend], model: Optional[str], routes: Sequence[Tuple[str, Tuple[str, ...]]],
                      exclude: Sequence[str] = (), now: Optional[float] = None) -> List[Backend]:
    """Healthy backends that may serve a request for ``model``, minus ``exclude``: narrowed to the
    model's route if it has one, else to those listing it when any does.  Model-less (None): the
    first healthy one only.  With ``now`` (monotonic; None: no backend is ejected), an ejected
    backend is not among them until its cool-off is over, nor while its one trial is in flight."""
    if now is None:
        healthy = [b for b in backends if b.healthy is not False]
    else:
        healthy = [b for b in backends if b.healthy is not False and (not b.request_health.until or b.request_health.available(now))]
    if model:
        names = route_for(model, routes)
        if names is not None:
            wanted = set(names) if len(names) > 4 else names  # a long route: one hash lookup per backend
            healthy = [b for b in healthy if b.name in wanted]
        else:
            having = [b for b in healthy if model in b.digests]
            if having:
                healthy = having
    if exclude:
        healthy = [b for b in healthy if b.name not in exclude]
    return healthy if model else healthy[:1]  # model-less: the first healthy one (blobs and create meet there)


def has_free_slot(backend: Backend, cap: int, embed: bool = False) -> bool:
    """Can the backend take one more request under --max-concurrent (embeddings get one extra slot)?"""
    return cap <= 0 or backend.in_flight < cap or (embed and backend.in_flight < cap + 1)


def choose_backend(candidates: Sequence[Backend], model: Optional[str], sticky: Optional[str] = None, need_ctx: int = 0,
                   cap: int = 0, embed: bool = False, now: Optional[float] = None) -> Optional[Backend]:
    """The backend for a request among ``candidates`` (in list order), or None when none has a free slot.

    Model-less: the first with a free slot.  Otherwise: the sticky one; then an ejected one whose
    cool-off is over at ``now`` (its one trial: it comes back only by being tried); then where the
    model is loaded with at least ``need_ctx``; then where it is loaded; then those without a
    failed request in the last RECENT_FAILURE_SECONDS (a backend that fails fast has few requests
    in flight: it must not attract more); then fewest in flight; then the lower port; then the
    earlier in the list.  The health facts are each candidate's ``request_health`` at ``now``
    (monotonic); with None (nothing failed lately, nobody ejected: ``Fleet.choice_clock``) they are
    skipped.
    """
    best: Optional[Backend] = None
    best_key: Tuple[int, ...] = ()
    for index, backend in enumerate(candidates):
        if not has_free_slot(backend, cap, embed):
            continue
        if not model:
            return backend
        if sticky is not None and backend.spec.name == sticky:
            return backend
        loaded = backend.loaded.get(model)  # 0: loaded, context not known (Ollama before 0.10)
        # One tuple of five: the trial ranks before "loaded with enough" (-1), a recent failure
        # before the in-flight count (an offset no count reaches).
        rank = 0 if loaded is not None and loaded >= need_ctx else 1
        in_flight = backend.in_flight
        if now is not None:
            health = backend.request_health
            if health.last_failure is not None:
                if health.trial_due(now):
                    rank = -1
                elif health.failed_recently(now):
                    in_flight += RECENTLY_FAILED_RANK
        key = (rank, 0 if loaded is not None else 1, in_flight, backend.spec.port, index)
        if best is None or key < best_key:
            best, best_key = backend, key
    return best


def pick_waiter(entries: Sequence[Tuple[bool, int]]) -> int:
    """Which queued request gets a freed slot: ``entries`` are the waiters that can use it, in
    arrival order, as (model loaded on that backend, times overtaken).  The first one, unless a
    later one's model is loaded there and nobody it would pass has been overtaken MAX_OVERTAKES times."""
    for index, (loaded, _) in enumerate(entries):
        if loaded:
            return index
        if entries[index][1] >= MAX_OVERTAKES:
            return 0
    return 0


def conversation_key(model: str, body: Mapping[str, Any]) -> Optional[str]:
    """The sticky key of a chat: the model and the messages up to the first user message (a
    system prompt's per-request billing hash left out, so that an agent's turns stay together)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    head = []
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "system" and isinstance(message.get("content"), str):
            message = dict(message, content=_BILLING_HASH_RE.sub(r"\g<1>" + STABLE_BILLING_HASH + ";", message["content"], count=1))
        head.append(message)
        if isinstance(message, dict) and message.get("role") == "user":
            break
    text = json.dumps([model, head], sort_keys=True, ensure_ascii=False, default=str)
    import hashlib  # here, not at the top: OpenSSL's digests cost every proxy 0.7 MB, and only sticky routing needs one
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class StickyTable:
    """Conversation key -> the backend that served its last turn, for STICKY_SECONDS."""

    def __init__(self, ttl: float = STICKY_SECONDS, limit: int = 100_000) -> None:
        self.ttl = ttl
        self.limit = limit
        self.entries: Dict[str, Tuple[str, float]] = {}

    def get(self, key: str, now: float) -> Optional[str]:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self.entries[key]
            return None
        return entry[0]

    def put(self, key: str, backend: str, now: float) -> None:
        self.entries.pop(key, None)  # re-inserted last: the dict stays in expiry order
        self.entries[key] = (backend, now + self.ttl)
        while self.entries:
            oldest = next(iter(self.entries))
            if self.entries[oldest][1] > now and len(self.entries) <= self.limit:
                break
            del self.entries[oldest]

    def forget_backend(self, backend: str) -> int:
        gone = [k for k, (name, _) in self.entries.items() if name == backend]
        for key in gone:
            del self.entries[key]
        return len(gone)


#: Fields of an /api/tags entry that strict clients (the Go and Python clients' types) read.


@dataclass
class Want:
    """What one request asks of the choice (SPEC §6), built once before its first attempt."""

    label: Callable[[], str]  #: how its log lines start (made only when one is written)
    path: str
    model: Optional[str]  #: the normalized model name (None: a model-less request)
    pinned: Optional[Backend] = None  #: named by /proxy-backend/<NAME>/
    create_from: Optional[str] = None  #: /api/create: the normalized base model ("from")
    sticky_key: Optional[str] = None  #: the conversation's key, when sticky
    need: Callable[[], int] = lambda: 0  #: the context it needs, asked only where the model is loaded
    need_ctx: int = -1  #: ``need()``'s answer once asked
    embed: bool = False  #: an embedding request: it may use the extra slot (EMBED_PATHS)
    trial: bool = False  #: its current attempt is its backend's one trial after a cool-off (set by the Scheduler)


@dataclass
class Waiter:
    """A request waiting in the queue for a free slot."""

    want: Want
    model: Optional[str]  #: where it may go, as the choice resolved it
    tried: Tuple[str, ...]
    future: "asyncio.Future[Backend]"
    overtaken: int = 0
    eligible: Any = None  #: ids of the backends it may use, as of ``generation``
    generation: int = -1


def assign(queue: Sequence[Waiter], backend: Backend, cap: int, may_use: Callable[[Waiter], bool]) -> Tuple[Optional[Waiter], List[Waiter]]:
    """Who gets one free slot of ``backend``, and whom that request passes (each is then overtaken
    once more): among the waiters that may use it, in arrival order, the first, unless a later
    one's model is loaded there (``pick_waiter``).  Decides only; no I/O, nothing changed."""
    usable: List[Waiter] = []
    entries: List[Tuple[bool, int]] = []
    for waiter in queue:
        if waiter.future.done() or not has_free_slot(backend, cap, waiter.want.embed) or not may_use(waiter):
            continue
        loaded = bool(waiter.model) and waiter.model in backend.loaded
        usable.append(waiter)
        entries.append((loaded, waiter.overtaken))
        if loaded or waiter.overtaken >= MAX_OVERTAKES:
            break  # pick_waiter's answer cannot change past this one
    if not usable:
        return None, []
    index = pick_waiter(entries)
    return usable[index], usable[:index]


class Scheduler:
    """The choice of a backend, the slots (--max-concurrent) and the queue (SPEC §6).

    ``acquire`` returns a backend with a slot taken, at once or after a FIFO wait (and tells the
    Fleet, ``take``, so that an ejected backend's trial is one request at a time);
    ``release`` gives it back and hands it to a waiter that can use it.  The fleet's changes
    arrive as ``dispatch_all`` (a probe round), ``dispatch(backend)`` (back up) and
    ``fail_stranded`` (one went away).
    """

    def __init__(self, config: Config, fleet: Fleet, count: Callable[[str], None]) -> None:
        self.config = config
        self.fleet = fleet
        self.count = count
        self.queue: List[Waiter] = []
        self._closed = False

    @property
    def depth(self) -> int:
        return len(self.queue)

    async def acquire(self, want: Want, tried: List[str]) -> Backend:
        """A backend for the request with its slot taken (given back by ``release``); ``want.trial``
        says whether this attempt is the backend's one trial after a cool-off."""
        fleet = self.fleet
        want.trial = False
        if not fleet.first_round_done:
            await fleet.ready()
        model = want.model
        if want.path == "/api/create" and model and not fleet.has_model(model):
            # A new model is made where its base model is, else where the model-less /api/blobs uploads went.
            model = want.create_from if want.create_from and fleet.has_model(want.create_from) else None
        candidates = [want.pinned] if want.pinned is not None else fleet.eligible(model, tried)
        if not candidates:
            if tried:
                raise ServiceUnavailable("no other backend left to try for %s (tried %s)" % (model or want.path, ", ".join(tried)), RETRY_AFTER_SECONDS)
            raise ServiceUnavailable(fleet.no_backend_message(model), RETRY_AFTER_SECONDS)
        sticky = fleet.sticky.get(want.sticky_key, time.monotonic()) if want.sticky_key is not None else None
        if model and want.need_ctx < 0 and len(candidates) > 1 and any(model in b.loaded for b in candidates):
            want.need_ctx = want.need()  # only matters where the model is loaded
        now = fleet.choice_clock()
        backend = choose_backend(candidates, model, sticky, max(want.need_ctx, 0), self.config.max_concurrent, want.embed, now)
        if backend is not None:
            backend.in_flight += 1
            if now is not None and want.pinned is None:
                want.trial = fleet.take(backend, now)
            return backend
        return await self._wait(want, model, tried)

    async def _wait(self, want: Want, model: Optional[str], tried: List[str]) -> Backend:
        """FIFO wait for a slot, up to --queue-timeout; a client that leaves leaves the queue."""
        if len(self.queue) >= self.config.max_queue:
            self.count("queue_full")
            raise ServiceUnavailable("all backends are busy and the queue is full (%d waiting)" % len(self.queue), RETRY_AFTER_SECONDS)
        future: asyncio.Future[Backend] = asyncio.get_running_loop().create_future()
        waiter = Waiter(want, model, tuple(tried), future)
        self.queue.append(waiter)
        log.info("%s: all backends busy (--max-concurrent %d): queued, %d waiting", want.label(), self.config.max_concurrent, len(self.queue))
        granted = False
        try:
            await asyncio.wait({future}, timeout=self.config.queue_timeout)
            if future.done() and not future.cancelled():
                granted = True
                return future.result()
            self.count("queue_timeout")
            raise ServiceUnavailable("all backends stayed busy for %gs (--queue-timeout)" % self.config.queue_timeout, RETRY_AFTER_SECONDS)
        finally:
            if waiter in self.queue:
                self.queue.remove(waiter)
            if not granted:
                if future.done() and not future.cancelled() and future.exception() is None:
                    if want.trial:
                        self.fleet.judge(future.result(), None, True)  # a trial that never went: the next request may try
                    self.release(future.result())  # granted just as the wait ended: pass the slot on
                else:
                    future.cancel()

    def release(self, backend: Backend) -> None:
        """Give the slot back; a waiting request that can use it gets it."""
        backend.in_flight -= 1
        if self.queue:
            self.dispatch(backend)

    def may_retry(self, want: Want, tried: List[str], backend: Backend) -> bool:
        """Note the failed attempt; is there another backend to try within --max-retries?"""
        tried.append(backend.name)
        if len(tried) > self.config.max_retries or want.pinned is not None or want.path in NOT_RETRIED_PATHS:
            return False
        if not self.fleet.eligible(want.model, tried):
            return False
        self.count("retry")
        return True

    def _may_use(self, waiter: Waiter, backend: Backend) -> bool:
        """May the waiter go to ``backend``?  Its eligible set is worked out once per fleet change."""
        generation = self.fleet.generation
        if waiter.generation != generation:
            waiter.generation = generation
            pinned = waiter.want.pinned
            waiter.eligible = {id(pinned)} if pinned is not None else {id(b) for b in self.fleet.eligible(waiter.model, waiter.tried)}
        if waiter.want.pinned is not None:
            return id(backend) in waiter.eligible
        return id(backend) in waiter.eligible and backend.healthy is not False and (
            not backend.request_health.until or backend.request_health.available(time.monotonic()))

    def dispatch(self, backend: Backend) -> None:
        """Hand free slots of ``backend`` to queued requests, as ``assign`` decides."""
        cap = self.config.max_concurrent
        while self.queue and not self._closed and not (backend.pool is not None and backend.pool.closed):
            chosen, passed = assign(self.queue, backend, cap, lambda waiter: self._may_use(waiter, backend))
            if chosen is None:
                return
            for waiter in passed:
                waiter.overtaken += 1
            self.queue.remove(chosen)
            backend.in_flight += 1
            chosen.want.trial = chosen.want.pinned is None and bool(backend.request_health.until) and self.fleet.take(backend, time.monotonic())
            chosen.future.set_result(backend)

    def dispatch_all(self) -> None:
        for backend in list(self.fleet.backends):
            if not self.queue:
                return
            self.dispatch(backend)

    def fail_stranded(self) -> None:
        """Queued requests that no healthy backend may serve any more get their 503 now."""
        for waiter in list(self.queue):
            if waiter.want.pinned is not None or waiter.future.done():
                continue
            if not self.fleet.eligible(waiter.model, waiter.tried):
                self.queue.remove(waiter)
                waiter.future.set_exception(ServiceUnavailable(self.fleet.no_backend_message(waiter.model), RETRY_AFTER_SECONDS))

    def close(self) -> None:
        """Shutting down: every waiter gets its 503 and nobody new is dispatched."""
        self._closed = True
        for waiter in self.queue:
            if not waiter.future.done():
                waiter.future.set_exception(ServiceUnavailable("the proxy is shutting down", RETRY_AFTER_SECONDS))
        self.queue.clear()


# ---------------------------------------------------------------------------
# 7. Models and context sizing
# ---------------------------------------------------------------------------
#
# Why this section exists.  Ollama reloads a model (seconds to minutes) whenever
# a request's num_ctx differs from the one the model is loaded with, and a request
# without num_ctx after one with it reloads too (ollama-api.md §7.4).  Clients send
# one size for every model, or none.  So the proxy decides num_ctx itself, per
# model: the training context (from /api/show) capped by --max-context, or in
# auto mode the smallest of --context-sizes that holds the prompt, never smaller
# than what the model is already loaded with.  Everything here is pure: no
# sockets, no clock; the App feeds in what it knows.

#: Tokens budgeted for each image in a request (a typical vision encoder's patch count).
IMAGE_TOKENS = 768
#: Tokens added to every estimate: the chat template, then a safety margin (SPEC §5).
TEMPLATE_TOKENS = 100
MARGIN_TOKENS = 200
#: The response budget of a request that sets no limit of its own.
DEFAULT_RESPONSE_TOKENS = 1024
#: Characters per token: the starting guess, and the bounds of the per-model calibration.
DEFAULT_CHARS_PER_TOKEN = 4.0
MIN_CHARS_PER_TOKEN, MAX_CHARS_PER_TOKEN = 1.0, 8.0
CALIBRATION_WEIGHT = 0.3  #: weight of each new observation in the moving average
#: Prompts shorter than this do not calibrate: the chat template's own tokens would dominate the count.
MIN_CALIBRATION_CHARS = 1000
DEFAULT_NUM_KEEP = 4  #: Ollama's num_keep: the first tokens its truncation keeps
TRUNCATION_MARGIN = 16  #: a prompt_eval_count this close to the context (or to what truncation keeps) bears its mark

@dataclass(frozen=True)
class ModelInfo:
    """What /api/show says about one model on one backend."""

    name: str  #: normalized name
    architecture: str
    context_length: int  #: training context (0 when unknown)
    capabilities: Tuple[str, ...] = ()
    digest: str = ""  #: from /api/tags, to notice a changed model

    @property
    def is_embedding(self) -> bool:
        return "embedding" in self.capabilities and "completion" not in self.capabilities


def model_info_from_show(name: str, show: Any, digest: str = "") -> ModelInfo:
    """Read the training context from an /api/show answer: model_info["<arch>.context_length"]."""
    info = show.get("model_info") if isinstance(show, dict) else None
    info = info if isinstance(info, dict) else {}
    arch = info.get("general.architecture")
    arch = arch if isinstance(arch, str) else ""
    ctx = info.get(arch + ".context_length") if arch else None
    if not isinstance(ctx, int) or isinstance(ctx, bool) or ctx <= 0:
        ctx = 0
    caps = show.get("capabilities") if isinstance(show, dict) else None
    caps = tuple(c for c in caps if isinstance(c, str)) if isinstance(caps, list) else ()
    return ModelInfo(name=name, architecture=arch, context_length=ctx, capabilities=caps, digest=digest)


def _text_length(value: Any) -> int:
    """Characters of text in a message content (a string, or OpenAI-style parts)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(len(p.get("text", "")) for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def prompt_size(path: str, body: Mapping[str, Any]) -> Tuple[int, int]:
    """(characters of prompt text, number of images) of a native request.

    Counts every message's content (and thinking and tool calls), the system prompt, the
    prompt and suffix, the tool definitions, and embedding inputs (the longest, since each
    input is embedded on its own).
    """
    chars = 0
    images = 0
    if path == "/api/chat":
        messages = body.get("messages")
        for msg in messages if isinstance(messages, list) else ():
            if not isinstance(msg, dict):
                continue
            chars += _text_length(msg.get("content")) + _text_length(msg.get("thinking"))
            if msg.get("tool_calls"):
                chars += len(json.dumps(msg["tool_calls"]))
            if isinstance(msg.get("images"), list):
                images += len(msg["images"])
        if body.get("tools"):
            chars += len(json.dumps(body["tools"]))
    elif path == "/api/generate":
        for key in ("prompt", "system", "suffix"):
            chars += _text_length(body.get(key))
        if isinstance(body.get("images"), list):
            images += len(body["images"])
    elif path in ("/api/embed", "/api/embeddings"):
        inputs = body.get("input", body.get("prompt"))
        if isinstance(inputs, str):
            chars = len(inputs)
        elif isinstance(inputs, list):
            chars = max((len(i) for i in inputs if isinstance(i, str)), default=0)
    return chars, images


def response_budget(path: str, body: Mapping[str, Any]) -> int:
    """Tokens to leave for the answer: the request's own limit, else DEFAULT_RESPONSE_TOKENS."""
    if path not in ("/api/chat", "/api/generate"):
        return 0
    options = body.get("options")
    if isinstance(options, dict):
        n = options.get("num_predict")
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
    for key in ("max_tokens", "max_completion_tokens"):
        n = body.get(key)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
    return DEFAULT_RESPONSE_TOKENS


def estimate_tokens(chars: int, images: int, chars_per_token: float) -> int:
    """Prompt tokens from characters (rounded up) plus a fixed budget per image."""
    return int(math.ceil(chars / chars_per_token)) + images * IMAGE_TOKENS


def needed_context(prompt_tokens: int, budget: int) -> int:
    return prompt_tokens + budget + TEMPLATE_TOKENS + MARGIN_TOKENS


def context_cap(training: int, max_context: int) -> int:
    """The largest num_ctx the proxy lets through: min(training context, --max-context); 0 = no cap."""
    caps = [c for c in (training, max_context) if c > 0]
    return min(caps) if caps else 0


def client_num_ctx(body: Mapping[str, Any]) -> Optional[int]:
    """The request's own ``options.num_ctx``, when it is a positive integer."""
    options = body.get("options")
    value = options.get("num_ctx") if isinstance(options, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def context_source(config: "Config", model: str, client: Optional[int], forced: Any) -> Tuple[str, Optional[int]]:
    """SPEC §5's precedence, decided here and nowhere else: where a request's num_ctx comes from.

    ``("url", N)`` /proxy-context/N/; ``("auto", None)`` /proxy-context/auto/ or --context-mode auto;
    ``("fixed", N)`` --num-ctx for the model; ``("client", N)`` the request's own; ``("model", None)``
    the cap; ``("off", None)`` untouched.  The modifier, the choice of a backend, preload and the
    doctor all ask this one function (the value is capped later, by whoever sends it)."""
    if isinstance(forced, int):
        return "url", forced
    if forced == "auto":
        return "auto", None
    fixed = lookup_model_value(config.num_ctx, model)
    if fixed is not None:
        return "fixed", fixed
    if client is not None:
        return "client", client
    return config.context_mode, None


def choose_auto_size(needed: int, sizes: Sequence[int], cap: int, loaded: int = 0) -> Tuple[int, str]:
    """Auto mode: (num_ctx, why) for a request that needs ``needed`` tokens.

    A model already loaded with a context that holds the request keeps it (no reload);
    otherwise the smallest size that holds it (never smaller than what is loaded, so the
    size only grows while the model stays loaded); the cap when none does.
    """
    if loaded and loaded >= needed and (not cap or loaded <= cap):
        return loaded, "loaded with %d, holds %d" % (loaded, needed)
    floor = loaded if loaded and (not cap or loaded <= cap) else 0
    for size in sorted(sizes):
        if cap and size > cap:
            break
        if size >= needed and size >= floor:
            return size, "needs %d" % needed
    if cap:
        return cap, "needs %d, more than any size allows: capped" % needed
    return max(max(sizes), needed), "needs %d" % needed


def next_smaller_size(current: int, sizes: Sequence[int]) -> int:
    """The next --context-sizes entry below ``current`` (0 if none): the out-of-memory fallback."""
    smaller = [s for s in sizes if s < current]
    return max(smaller) if smaller else 0


#: Words in a backend's error that mean the load ran out of memory: Ollama's own list
#: (llm/status.go ``outOfMemorySubstrings``, which its scheduler checks before it lowers an automatic
#: context, ollama-api.md §7.2), plus the wording of Ollama before v0.30 for the same failure.
#: "llama-server process has terminated" alone is any crash: not a reason to retry smaller.
LOAD_FAILURE_MARKERS = ("out of memory", "out of device memory", "cudamalloc failed", "hipmalloc failed", "failed to allocate",
                        "allocation failed", "not enough memory", "insufficient memory", "vk_error_out_of_device_memory",
                        "erroroutofmemory", "requires more system memory")


def is_load_failure(status: int, message: str) -> bool:
    """Did a model load run out of memory (so that a smaller context may fit)?"""
    text = message.lower()
    return status >= 500 and any(marker in text for marker in LOAD_FAILURE_MARKERS)


def truncation_keeps(num_ctx: int, num_keep: int = DEFAULT_NUM_KEEP) -> int:
    """The tokens Ollama's runner keeps of a prompt longer than ``num_ctx`` (ollama-api.md §7.5,
    ``contextShiftPromptLimit``): num_ctx - max((num_ctx - num_keep) / 2, 1), about half."""
    keep = max(0, min(num_keep, num_ctx - 1))
    return num_ctx - max((num_ctx - keep) // 2, 1)


def bears_truncation_mark(prompt_eval_count: int, num_ctx: int, num_keep: int = DEFAULT_NUM_KEEP) -> bool:
    """Does Ollama's count say it truncated the prompt?  A count within a few tokens of the
    context, or of the part of it that the runner's truncation keeps, means the prompt had more
    tokens than the context (a false alarm only makes the estimate denser)."""
    if num_ctx <= 0 or prompt_eval_count <= 0:
        return False
    return prompt_eval_count >= num_ctx - TRUNCATION_MARGIN or abs(prompt_eval_count - truncation_keeps(num_ctx, num_keep)) <= TRUNCATION_MARGIN


def calibrate(old: float, prompt_chars: int, prompt_eval_count: int, num_ctx: int = 0, num_keep: int = DEFAULT_NUM_KEEP) -> Tuple[float, bool]:
    """(new characters-per-token estimate, whether the count bears truncation's mark) from Ollama's
    own count of a prompt of ``prompt_chars`` characters that ran with ``num_ctx`` (0: unknown).

    Ollama counts the prompt after truncating it, so the count is a lower bound on its tokens and
    chars / count an upper bound on the ratio (SPEC §5): an observation may always make the ratio
    denser, at once; sparser only when the count is below half the context (so nothing was cut),
    smoothed; a count with truncation's mark caps the ratio at chars / context.  So an estimate
    that was too small corrects itself within a request or two, even when every request is cut."""
    if prompt_eval_count <= 0 or prompt_chars <= 0:
        return old, False
    truncated = bears_truncation_mark(prompt_eval_count, num_ctx, num_keep)
    if prompt_chars < MIN_CALIBRATION_CHARS:
        return old, truncated  # the template's own tokens would dominate the count
    if truncated:
        return max(MIN_CHARS_PER_TOKEN, min(old, prompt_chars / num_ctx)), True
    observed = min(MAX_CHARS_PER_TOKEN, max(MIN_CHARS_PER_TOKEN, prompt_chars / prompt_eval_count))
    if observed <= old:
        return observed, False
    if not num_ctx or 2 * prompt_eval_count >= num_ctx:
        return old, False  # sparser, from a count that may have been cut: not evidence
    return old + CALIBRATION_WEIGHT * (observed - old), False


METADATA_RETRY_SECONDS = 30.0  #: a failed /api/show is not asked again for this long


@dataclass(frozen=True)
class Learned:
    """What one answer taught about its model (``Models.learn``)."""

    ratio: float  #: characters per token from now on
    estimate: int  #: the prompt's tokens at that ratio
    truncated: bool  #: Ollama cut the prompt to the context it ran with


class Models:
    """What the proxy knows of the models: the one owner of that state and its decisions.

    Per backend and model, what ``/api/show`` said (cached until the model's digest in
    ``/api/tags`` changes, fetched once however many requests want it, not asked again for
    ``METADATA_RETRY_SECONDS`` after a failure) and the largest context known to load after one
    ran out of memory; per model, the characters per token learned from Ollama's own counts.
    ``show(backend, model)`` is the one I/O it needs, given by the application.
    """

    def __init__(self, show: Callable[[Backend, str], Awaitable[Tuple[int, Any]]], count: Callable[[str], None]) -> None:
        self._show = show
        self._count = count
        self._info: Dict[Tuple[str, str], ModelInfo] = {}
        self._pending: Dict[Tuple[str, str], "asyncio.Future[Optional[ModelInfo]]"] = {}
        self._failed: Dict[Tuple[str, str], float] = {}  #: when /api/show last failed
        self._ceiling: Dict[Tuple[str, str], int] = {}
        self.chars_per_token: Dict[str, float] = {}  #: model -> learned characters per token

    def cached(self, backend: Backend, model: str) -> Optional[ModelInfo]:
        return self._info.get((backend.name, model))

    def trained(self, backend: Backend, model: str) -> int:
        """The model's training context on this backend (0 when unknown)."""
        info = self._info.get((backend.name, model))
        return info.context_length if info is not None else 0

    def ratio(self, model: str) -> float:
        return self.chars_per_token.get(model, DEFAULT_CHARS_PER_TOKEN)

    def ceiling(self, backend: Backend, model: str) -> int:
        """A size below one that ran out of memory on this backend (0: none known)."""
        return self._ceiling.get((backend.name, model), 0)

    def record_oom(self, backend: Backend, model: str, smaller: int) -> None:
        self._ceiling[(backend.name, model)] = smaller

    async def info(self, backend: Backend, model: str) -> Optional[ModelInfo]:
        """/api/show for the model on this backend: cached, fetched once for concurrent requests;
        None when it failed (the modifiers that need it are then skipped)."""
        key = (backend.name, model)
        info = self._info.get(key)
        if info is not None:
            self._count("metadata_hit")
            return info
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed < METADATA_RETRY_SECONDS:
            return None
        pending = self._pending.get(key)
        if pending is None:
            self._count("metadata_fetch")
            pending = asyncio.ensure_future(self._fetch(backend, model))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        else:
            self._count("metadata_shared")
        return await asyncio.shield(pending)

    async def _fetch(self, backend: Backend, model: str) -> Optional[ModelInfo]:
        try:
            status, obj = await self._show(backend, model)
        except (ProxyError, OSError) as exc:
            status, obj = 0, {"error": str(exc)}
        key = (backend.name, model)
        if status == 200 and isinstance(obj, dict):
            info = model_info_from_show(model, obj, backend.digests.get(model, ""))
            self._info[key] = info
            self._failed.pop(key, None)
            log.debug("model %s on %s: %s, trained context %d", model, backend.name, info.architecture or "?", info.context_length)
            return info
        self._failed[key] = time.monotonic()
        reason = obj.get("error") if isinstance(obj, dict) else None
        log.warning("model %s on %s: /api/show failed (%s): num_ctx is left as the client sent it", model, backend.name, reason or "status %d" % status)
        return None

    def digests_changed(self, backend: Backend, digests: Mapping[str, str]) -> None:
        """A backend's new model list: what is known of a model that changed or went is dropped."""
        for (name, model), info in list(self._info.items()):
            if name != backend.name:
                continue
            if model not in digests or (info.digest and digests[model] != info.digest):
                log.info("model %s changed on %s: its metadata will be read again", model, backend.name)
                del self._info[(name, model)]
                self._ceiling.pop((name, model), None)
            elif not info.digest:
                self._info[(name, model)] = dataclasses.replace(info, digest=digests[model])

    def forget(self, backend: Backend) -> None:
        for table in (self._info, self._failed, self._ceiling):
            for key in [k for k in table if k[0] == backend.name]:
                del table[key]

    def pending(self) -> List["asyncio.Future[Optional[ModelInfo]]"]:
        """The /api/show fetches in flight (cancelled at shutdown)."""
        return list(self._pending.values())

    def learn(self, model: str, prompt_chars: int, prompt_eval_count: int, window: int, num_keep: int = DEFAULT_NUM_KEEP) -> Learned:
        """Ollama counted ``prompt_eval_count`` tokens of a prompt of ``prompt_chars`` characters that
        ran with ``window`` tokens of context (0: unknown): calibrate (SPEC §5) and say whether the
        prompt was truncated (the count's mark, or an estimate at the learned ratio over the window)."""
        ratio, marked = calibrate(self.ratio(model), prompt_chars, prompt_eval_count, window, num_keep)
        self.chars_per_token[model] = ratio
        estimate = estimate_tokens(prompt_chars, 0, ratio)
        return Learned(ratio, estimate, bool(window) and (marked or estimate > window))


# ---------------------------------------------------------------------------
# 8. Request modifiers
# ---------------------------------------------------------------------------
#
# Each modifier looks at one parsed native request and says what it changed, as
# (what, old, new, why) tuples for the log.  They run in MODIFIERS order; the
# body is re-encoded only when one of them changed something.


@dataclass
class Change:
    """One modification, for the log line and the metrics."""

    modifier: str
    what: str
    old: Any
    new: Any
    reason: str
    warn: bool = False  #: logged as a warning: the request will not fit what it gets
    def describe(self, model: str) -> str:
        """``num_ctx 131072 -> 8192 (nomic-embed-text:latest: trained 8192)``: what, and why, for which model."""
        old = "unset" if self.old is None else self.old
        return "%s %s -> %s (%s: %s)" % (self.what, old, self.new, model, self.reason)


@dataclass
class ModifyContext:
    """What a modifier may read: the request, the model, the settings, the backend's state."""

    path: str  #: the native endpoint: /api/chat, /api/generate, /api/embed, /api/embeddings
    body: Dict[str, Any]
    model: str  #: normalized
    config: "Config"
    info: Optional[ModelInfo] = None  #: None when /api/show failed: modifiers needing it skip
    forced_ctx: Any = None  #: from /proxy-context/<N|auto>/: an int, "auto", or None
    loaded_ctx: int = 0  #: the context this model is loaded with on the chosen backend (0: not loaded)
    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
    chosen_ctx: int = 0  #: set by the context modifier when the proxy chose num_ctx (for the OOM fallback)
    reload_avoided: bool = False  #: set by the context modifier: the loaded context kept instead of the size it would choose
    ceiling: int = 0  #: a size this backend failed to load the model at, minus one step (0: none known)
    prompt: Optional[Tuple[int, int]] = None  #: prompt_size() of the body, when the caller already has it
    embed_limit: int = 0  #: with chunking: no embedding piece is longer than this (0: no chunking)


def _options(body: Dict[str, Any]) -> Dict[str, Any]:
    options = body.get("options")
    if not isinstance(options, dict):
        options = {}
        body["options"] = options
    return options


class Modifier:
    """One adjustment of a native request; ``modify`` changes ctx.body and returns what it did."""

    name = "modifier"
    paths: frozenset = frozenset()
    needs_info = False

    def modify(self, ctx: ModifyContext) -> List[Change]:
        raise NotImplementedError


class ContextModifier(Modifier):
    """num_ctx: URL, then --num-ctx, then the client's value, then --context-mode; capped."""

    name = "num_ctx"
    paths = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings"})
    needs_info = True

    def modify(self, ctx: ModifyContext) -> List[Change]:
        config = ctx.config
        info = ctx.info
        assert info is not None
        client = client_num_ctx(ctx.body)
        source, value = context_source(config, ctx.model, client, ctx.forced_ctx)
        if source == "off":
            return []
        cap = context_cap(info.context_length, config.max_context)
        if ctx.ceiling and (not cap or ctx.ceiling < cap):
            cap = ctx.ceiling  # a larger size ran out of memory on this backend
        cap_text = "trained %d" % info.context_length if info.context_length and (not config.max_context or info.context_length <= config.max_context) else "--max-context %d" % config.max_context
        short = False
        why = {"url": "URL /proxy-context/%s" % value, "fixed": "--num-ctx %s" % value}.get(source, "")
        if value is None:
            if source == "auto":
                chars, images = ctx.prompt if ctx.prompt is not None else prompt_size(ctx.path, ctx.body)
                if ctx.embed_limit and ctx.path in ("/api/embed", "/api/embeddings"):
                    chars = min(chars, ctx.embed_limit)  # long inputs go up in pieces of at most this
                needed = needed_context(estimate_tokens(chars, images, ctx.chars_per_token), response_budget(ctx.path, ctx.body))
                value, why = choose_auto_size(needed, config.context_sizes, cap, ctx.loaded_ctx)
                # SPEC §8's "reloads avoided": the loaded context kept where another size would have been chosen.
                ctx.reload_avoided = bool(ctx.loaded_ctx) and value == ctx.loaded_ctx and choose_auto_size(needed, config.context_sizes, cap)[0] != value
                why = "auto: " + why
                short = value < needed  # no size holds it: the cap, which Ollama will truncate to
            else:
                if not cap:
                    return []
                value, why = cap, cap_text
        if cap and value > cap:
            why = cap_text if value == client else (why + "; " if why else "") + "capped at %s" % cap_text
            value = cap
        if value == client:
            return []
        _options(ctx.body)["num_ctx"] = value
        ctx.chosen_ctx = value
        return [Change(self.name, "num_ctx", client, value, why or cap_text, warn=short)]


class NumPredictModifier(Modifier):
    """num_predict for generations that set none: the request's max_tokens, else --num-predict."""

    name = "num_predict"
    paths = frozenset({"/api/chat", "/api/generate"})

    def modify(self, ctx: ModifyContext) -> List[Change]:
        options = ctx.body.get("options")
        if isinstance(options, dict) and options.get("num_predict") is not None:
            return []  # an explicit value is never changed
        for key in ("max_tokens", "max_completion_tokens"):
            n = ctx.body.get(key)
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                _options(ctx.body)["num_predict"] = n
                return [Change(self.name, "num_predict", None, n, "from %s" % key)]
        if ctx.config.num_predict <= 0:
            return []
        _options(ctx.body)["num_predict"] = ctx.config.num_predict
        return [Change(self.name, "num_predict", None, ctx.config.num_predict, "--num-predict default")]


class KeepAliveModifier(Modifier):
    """keep_alive from --keep-alive for the model, when the request sets none."""

    name = "keep_alive"
    paths = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings"})

    def modify(self, ctx: ModifyContext) -> List[Change]:
        if ctx.body.get("keep_alive") is not None:
            return []
        value = lookup_model_value(ctx.config.keep_alive, ctx.model)
        if value is None:
            return []
        ctx.body["keep_alive"] = value
        return [Change(self.name, "keep_alive", None, value, "--keep-alive for %s" % ctx.model)]


#: The modifiers, in the order they run.
MODIFIERS: Tuple[Modifier, ...] = (ContextModifier(), NumPredictModifier(), KeepAliveModifier())


def apply_modifiers(ctx: ModifyContext, modifiers: Sequence[Modifier] = MODIFIERS) -> List[Change]:
    """Run every modifier that applies to the path; those needing model info skip without it."""
    changes: List[Change] = []
    for modifier in modifiers:
        if ctx.path not in modifier.paths:
            continue
        if modifier.needs_info and ctx.info is None:
            continue
        changes.extend(modifier.modify(ctx))
    return changes


# ---------------------------------------------------------------------------
# 9. OpenAI translation
# ---------------------------------------------------------------------------
#
# Theory.  /v1/chat/completions, /v1/completions and /v1/embeddings are turned
# into /api/chat, /api/generate and /api/embed so that the model-aware modifiers
# apply to them, and the native answers are turned back (SPEC §7).  The client
# must not be able to tell the result from Ollama's own /v1 layer, so every
# mapping, default and error message below mirrors ollama-api.md §6 (Ollama's
# openai.FromChatRequest, ChatWriter, CompleteWriter and friends), including the
# Go decoder's wording for fields of the wrong JSON type.  The deliberate
# differences, and only these: `options`, `keep_alive` and `think` (what the
# OpenAI SDK's extra_body can add; `truncate` on embeddings) and
# `max_completion_tokens` are honoured, and a stream that breaks ends with an
# OpenAI error event instead of stopping silently.
#
# Everything here is pure: requests in, requests out; native objects in, OpenAI
# objects or SSE bytes out.  The stream translators are sans-IO, as h11 is: feed
# them one parsed native NDJSON object at a time and write what they return.
# No clock or random generator is global: both are passed in.
#
# Needs these imports beside the file's own (json, time, re, base64):
#     import calendar
#     import struct

#: OpenAI's system_fingerprint on every Ollama /v1 answer.
OPENAI_FINGERPRINT = "fp_ollama"
#: The last event of a successful SSE stream.
SSE_DONE = b"data: [DONE]\n\n"
#: Image data URL prefixes Ollama accepts (plus "data:;base64,", a bare base64 payload).
_IMAGE_URL_PREFIXES = tuple("data:image/%s;base64," % t for t in ("jpeg", "jpg", "png", "webp"))
#: reasoning_effort / reasoning.effort -> native think (ollama-api.md §6.1).
_EFFORT_TO_THINK: Dict[str, Any] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}
_RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.\d+)?(?:([Zz])|([+-])(\d\d):(\d\d))$")


class SystemRandom:
    """``randrange(n)`` from os.urandom: the ids below need nothing more, and the ``random``
    module is not loaded for them (0.2 MB).  Tests pass a seeded ``random.Random`` instead."""

    @staticmethod
    def randrange(n: int) -> int:
        return int.from_bytes(os.urandom(8), "big") % n


def new_request_id(kind: str, rng: Any) -> str:
    """``chatcmpl-<0..998>`` or ``cmpl-<0..998>`` (random, not unique, as Ollama's); ``kind`` is the prefix."""
    if kind not in ("chatcmpl", "cmpl"):
        raise ValueError("request id kind must be 'chatcmpl' or 'cmpl', not %r" % (kind,))
    return "%s-%d" % (kind, rng.randrange(999))


def rfc3339_to_unix(value: Any) -> Optional[int]:
    """Unix seconds of an RFC 3339 time such as Ollama's created_at (nanoseconds dropped); None if unparsable."""
    m = _RFC3339.match(value) if isinstance(value, str) else None
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        import calendar  # here, not at the top: only this parser needs it

        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if m.group(8):
        offset = int(m.group(9)) * 3600 + int(m.group(10)) * 60
        seconds -= offset if m.group(8) == "+" else -offset
    return seconds


def sse_event(obj: Any) -> bytes:
    """One SSE event, ``data: <compact json>\\n\\n``, as Ollama writes them."""
    return b"data: " + json_bytes(obj) + b"\n\n"


# -- Requests: OpenAI -> native ---------------------------------------------------------

def _json_kind(value: Any) -> str:
    """The JSON kind of a decoded value, in the Go decoder's words."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _go_type_name(value: Any) -> str:
    """What Go's %T prints for a JSON value decoded into ``any``."""
    return {"bool": "bool", "number": "float64", "string": "string", "array": "[]interface {}", "object": "map[string]interface {}"}.get(_json_kind(value), "<nil>")


def _field(struct: str, body: Mapping[str, Any], name: str, go_type: str) -> Any:
    """``body[name]`` if it fits the Go field type (None when absent or null), else the 400 gin answers with."""
    value = body.get(name)
    if value is None:
        return None
    kind = _json_kind(value)
    if go_type == "string":
        ok = kind == "string"
    elif go_type == "bool":
        ok = kind == "bool"
    elif go_type == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        if kind == "number" and not ok:  # Go refuses 1.5, 2.0 and 2e3 for an int alike
            raise BadRequest("json: cannot unmarshal number %s into Go struct field %s.%s of type int" % (json.dumps(value), struct, name))
    elif go_type in ("float64", "float32"):
        ok = kind == "number"
    elif go_type.startswith("[]"):
        ok = kind == "array"
    else:  # a struct
        ok = kind == "object"
    if not ok:
        raise BadRequest("json: cannot unmarshal %s into Go struct field %s.%s of type %s" % (kind, struct, name, go_type))
    return value


def _check_body(body: Any, struct: str) -> Dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("json: cannot unmarshal %s into Go value of type openai.%s" % (_json_kind(body), struct))
    return body


def _stop_list(stop: Any, strict: bool) -> Optional[List[str]]:
    """``stop`` as a list: a string becomes [string]; non-string items are dropped (chat) or refused (completions)."""
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list):
        out = []
        for item in stop:
            if isinstance(item, str):
                out.append(item)
            elif strict:
                raise BadRequest("invalid type for 'stop' field: %s" % _go_type_name(item))
        return out
    return None


def _max_tokens(struct: str, body: Mapping[str, Any]) -> Optional[int]:
    """max_tokens, else (deliberate difference) max_completion_tokens; max_tokens wins when both are set."""
    value = _field(struct, body, "max_tokens", "int")
    if value is None:
        value = _field(struct, body, "max_completion_tokens", "int")
    return None if value is None else int(value)


def _apply_extra_body(struct: str, body: Mapping[str, Any], native: Dict[str, Any], fields: Sequence[str]) -> None:
    """The native fields a client adds through extra_body (deliberate difference, SPEC §7).

    The client's ``options`` are merged over the mapped ones, key by key: they are its
    explicit native intent (e.g. a Modelfile-like temperature instead of /v1's forced 1.0).
    """
    options = _field(struct, body, "options", "map[string]interface {}")
    if options:
        merged = dict(native.get("options") or {})
        merged.update(options)
        native["options"] = merged
    for name in fields:
        if body.get(name) is not None:
            native[name] = body[name]


def _tool_calls_to_native(tool_calls: Any) -> List[Dict[str, Any]]:
    """OpenAI tool calls (arguments a JSON string) -> native ones (arguments an object)."""
    out = []
    for call in tool_calls if isinstance(tool_calls, list) else ():
        call = call if isinstance(call, dict) else {}
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            raise BadRequest("invalid tool call arguments")
        try:
            parsed = parse_json(arguments)
        except ValueError:
            raise BadRequest("invalid tool call arguments") from None
        if parsed is not None and not isinstance(parsed, dict):  # Go decodes into a map: "null" is fine, "[1]" is not
            raise BadRequest("invalid tool call arguments")
        native: Dict[str, Any] = {}
        if isinstance(call.get("id"), str) and call["id"]:
            native["id"] = call["id"]
        native["function"] = {"name": function.get("name") if isinstance(function.get("name"), str) else "", "arguments": parsed if parsed is not None else {}}
        out.append(native)
    return out


def _tool_name_for_id(messages: Sequence[Any], call_id: str) -> str:
    """The function name of the tool call with this id; the last match wins, as in Ollama."""
    for msg in reversed(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("tool_calls"), list):
            continue
        for call in msg["tool_calls"]:
            if isinstance(call, dict) and call.get("id") == call_id:
                function = call.get("function")
                name = function.get("name") if isinstance(function, dict) else None
                return name if isinstance(name, str) else ""
    return ""


def _decode_base64(data: str, message: str) -> str:
    """Validate standard base64 (line breaks ignored, as Go's decoder does) and return it re-encoded."""
    try:
        raw = base64.b64decode(data.replace("\r", "").replace("\n", ""), validate=True)
    except ValueError:
        raise BadRequest(message) from None
    return base64.b64encode(raw).decode("ascii")


def _image_from_url(url: str) -> str:
    """A data URL -> the base64 payload for native ``images``; anything else -> Ollama's 400."""
    if url.startswith(("http://", "https://")):
        raise BadRequest("image URLs are not currently supported, please use base64 encoded data instead")
    for prefix in ("data:;base64,",) + _IMAGE_URL_PREFIXES:
        if url.startswith(prefix):
            return _decode_base64(url[len(prefix):], "invalid image input")
    raise BadRequest("invalid image input")


def _content_part_to_native(role: Any, part: Any) -> Dict[str, Any]:
    """One OpenAI content part -> one native message with the same role."""
    if not isinstance(part, dict):
        raise BadRequest("invalid message format")
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise BadRequest("invalid message format")
        return {"role": role, "content": part["text"]}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise BadRequest("invalid message format")
        return {"role": role, "content": "", "images": [_image_from_url(url)]}
    if kind == "input_audio":  # (inferred) audio travels in `images`, as the native API takes it
        audio = part.get("input_audio")
        data = audio.get("data") if isinstance(audio, dict) else None
        if not isinstance(data, str):
            raise BadRequest("invalid message format")
        return {"role": role, "content": "", "images": [_decode_base64(data, "invalid message format")]}
    raise BadRequest("invalid message format")


def _messages_to_native(messages: List[Any]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    for msg in messages:
        if msg is None:
            msg = {}  # Go decodes a null element into an empty message (then: no content)
        if not isinstance(msg, dict):
            raise BadRequest("json: cannot unmarshal %s into Go struct field ChatCompletionRequest.messages of type openai.Message" % _json_kind(msg))
        role = msg.get("role") if isinstance(msg.get("role"), str) else ""
        tool_name = ""
        if role.lower() == "tool":
            tool_name = msg.get("name") if isinstance(msg.get("name"), str) else ""
            call_id = msg.get("tool_call_id")
            if not tool_name and isinstance(call_id, str) and call_id:
                tool_name = _tool_name_for_id(messages, call_id)
        extra: Dict[str, Any] = {}
        if isinstance(msg.get("reasoning"), str) and msg["reasoning"]:
            extra["thinking"] = msg["reasoning"]
        calls = _tool_calls_to_native(msg.get("tool_calls"))
        if calls:
            extra["tool_calls"] = calls
        if tool_name:
            extra["tool_name"] = tool_name
        if isinstance(msg.get("tool_call_id"), str) and msg["tool_call_id"]:
            extra["tool_call_id"] = msg["tool_call_id"]
        content = msg.get("content")
        if isinstance(content, str):
            out.append(dict({"role": role, "content": content}, **extra))
        elif isinstance(content, list) and content:
            parts = [_content_part_to_native(role, part) for part in content]
            if calls:  # Ollama hangs tool calls (and their context) on the last part's message
                parts[-1].update(extra)
            out.extend(parts)
        elif isinstance(content, list) and not calls:
            continue  # an empty parts list makes no native message, as in Ollama
        elif msg.get("tool_calls") is not None or isinstance(content, list):
            # Content may be null only next to tool calls.  An empty parts list with tool calls is
            # taken the same way (Ollama would hang its tool calls on the previous turn's message).
            out.append(dict({"role": role, "content": ""}, **extra))
        else:
            raise BadRequest("invalid message content type: %s" % _go_type_name(content))
    return out


def _think_from_reasoning(body: Mapping[str, Any]) -> Any:
    """reasoning.effort (which wins when ``reasoning`` is an object) or reasoning_effort -> think; None if unset."""
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict):
        effort = reasoning.get("effort")
    else:
        effort = _field("ChatCompletionRequest", body, "reasoning_effort", "string")
    if not isinstance(effort, str) or not effort:
        return None
    if effort not in _EFFORT_TO_THINK:
        # Word for word openai.thinkFromReasoningEffort (Go's %q quotes the value).
        raise BadRequest('invalid reasoning value: %s (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")'
                         % json.dumps(effort, ensure_ascii=False))
    return _EFFORT_TO_THINK[effort]


def openai_chat_to_native(body: Any) -> Dict[str, Any]:
    """A /v1/chat/completions request -> an /api/chat request (ollama-api.md §6.1, SPEC §7).

    ``stream_options`` is not part of the result: the caller reads it for the stream translator.
    Raises BadRequest with Ollama's own message for what Ollama's /v1 refuses.
    """
    s = "ChatCompletionRequest"
    body = _check_body(body, s)
    # Type errors first, as gin binds the whole body before anything is converted.
    for name, go_type in (("stream_options", "openai.StreamOptions"), ("reasoning", "openai.Reasoning")):
        _field(s, body, name, go_type)
    model = _field(s, body, "model", "string") or ""
    messages = _field(s, body, "messages", "[]openai.Message")
    num_predict = _max_tokens(s, body)
    temperature = _field(s, body, "temperature", "float64")
    top_p = _field(s, body, "top_p", "float64")
    stream = _field(s, body, "stream", "bool") is True
    response_format = _field(s, body, "response_format", "openai.ResponseFormat")
    tools = _field(s, body, "tools", "[]api.Tool")
    logprobs = _field(s, body, "logprobs", "bool")
    top_logprobs = _field(s, body, "top_logprobs", "int")
    sampling = {name: _field(s, body, name, "int" if name == "seed" else "float64") for name in ("seed", "frequency_penalty", "presence_penalty")}
    if not messages:
        raise BadRequest("[] is too short - 'messages'")
    native: Dict[str, Any] = {"model": model, "messages": _messages_to_native(messages)}
    options: Dict[str, Any] = {}
    stop = _stop_list(body.get("stop"), strict=False)
    if stop is not None:
        options["stop"] = stop
    if num_predict is not None:
        options["num_predict"] = num_predict
    options["temperature"] = 1.0 if temperature is None else temperature
    options.update((name, value) for name, value in sampling.items() if value is not None)
    options["top_p"] = 1.0 if top_p is None else top_p
    native["options"] = options
    native["stream"] = stream
    if response_format is not None:
        kind = response_format.get("type")
        kind = kind.strip().lower() if isinstance(kind, str) else ""
        if kind == "json_object":
            native["format"] = "json"
        elif kind == "json_schema" and isinstance(response_format.get("json_schema"), dict):
            schema = response_format["json_schema"].get("schema")
            if schema is not None:
                native["format"] = schema
    if tools:
        native["tools"] = tools
    think = _think_from_reasoning(body)
    if think is not None:
        native["think"] = think
    if logprobs:
        native["logprobs"] = True
    if top_logprobs:
        native["top_logprobs"] = top_logprobs
    _apply_extra_body(s, body, native, ("keep_alive", "think"))
    return native


def openai_completion_to_native(body: Any) -> Dict[str, Any]:
    """A /v1/completions request -> an /api/generate request (ollama-api.md §6.1, SPEC §7).

    ``prompt`` must be a string; the penalties are always sent (0 when absent); top_p 0 or
    absent means 1.0.  ``stream_options`` stays with the caller.
    """
    s = "CompletionRequest"
    body = _check_body(body, s)
    native: Dict[str, Any] = {"model": _field(s, body, "model", "string") or "", "prompt": _field(s, body, "prompt", "string") or ""}
    options: Dict[str, Any] = {}
    stop = _stop_list(body.get("stop"), strict=True)
    if stop is not None:
        options["stop"] = stop
    num_predict = _max_tokens(s, body)
    if num_predict is not None:
        options["num_predict"] = num_predict
    temperature = _field(s, body, "temperature", "float32")
    options["temperature"] = 1.0 if temperature is None else temperature
    seed = _field(s, body, "seed", "int")
    if seed is not None:
        options["seed"] = seed
    options["frequency_penalty"] = _field(s, body, "frequency_penalty", "float32") or 0
    options["presence_penalty"] = _field(s, body, "presence_penalty", "float32") or 0
    options["top_p"] = _field(s, body, "top_p", "float32") or 1.0
    native["options"] = options
    native["stream"] = _field(s, body, "stream", "bool") is True
    suffix = _field(s, body, "suffix", "string")
    if suffix:
        native["suffix"] = suffix
    logprobs = _field(s, body, "logprobs", "int")
    if logprobs is not None and logprobs > 0:
        native["logprobs"] = True
        native["top_logprobs"] = logprobs
    _apply_extra_body(s, body, native, ("keep_alive", "think"))
    return native


def openai_embeddings_to_native(body: Any) -> Dict[str, Any]:
    """A /v1/embeddings request -> an /api/embed request (ollama-api.md §6.5, SPEC §7).

    ``input`` is always a list here ("" becomes [""]).  ``encoding_format`` is validated but
    stays with the caller (pass it to ``native_embed_to_openai``).
    """
    s = "EmbedRequest"
    body = _check_body(body, s)
    model = _field(s, body, "model", "string") or ""
    dimensions = _field(s, body, "dimensions", "int")
    encoding = _field(s, body, "encoding_format", "string")
    if encoding and encoding.lower() not in ("float", "base64"):
        raise BadRequest("Invalid value for 'encoding_format' = %s. Supported values: ['float', 'base64']." % encoding)
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if inputs is None or inputs == []:
        raise BadRequest("invalid input")
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise BadRequest("invalid input type")
    native: Dict[str, Any] = {"model": model, "input": inputs}
    if dimensions:
        native["dimensions"] = dimensions
    _apply_extra_body(s, body, native, ("keep_alive", "truncate"))
    return native


# -- Responses: native -> OpenAI --------------------------------------------------------

def _usage(native: Mapping[str, Any]) -> Dict[str, int]:
    prompt = native.get("prompt_eval_count") or 0
    completion = native.get("eval_count") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _tool_calls_to_openai(tool_calls: Any) -> List[Dict[str, Any]]:
    """Native tool calls -> OpenAI's: complete calls with id, index, type, arguments as a JSON string."""
    out = []
    for call in tool_calls if isinstance(tool_calls, list) else ():
        call = call if isinstance(call, dict) else {}
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        index = function.get("index")
        out.append(
            {
                "id": call.get("id") or "",
                "index": index if isinstance(index, int) else 0,
                "type": "function",
                "function": {
                    "name": function.get("name") or "",
                    "arguments": json.dumps(function.get("arguments"), separators=(",", ":"), ensure_ascii=False),
                },
            }
        )
    return out


GO_ZERO_TIME_UNIX = -62135596800  #: Unix seconds of Go's zero time.Time (0001-01-01T00:00:00Z), which Ollama reads as "now"


def _created(native: Mapping[str, Any], now: Optional[float]) -> int:
    created = rfc3339_to_unix(native.get("created_at"))
    if created is None or created == GO_ZERO_TIME_UNIX:
        created = int(time.time() if now is None else now)
    return created


def native_chat_to_openai(native: Mapping[str, Any], model: str, request_id: str, now: Optional[float] = None) -> Dict[str, Any]:
    """A non-streaming /api/chat answer -> a chat.completion (ollama-api.md §6.2).

    ``model`` is the name the client sent; ``created`` is the native created_at (``now``, or
    the clock, only when that is missing).
    """
    msg = native.get("message") if isinstance(native.get("message"), dict) else {}
    message: Dict[str, Any] = {"role": msg.get("role") or "assistant", "content": msg.get("content") or ""}
    if msg.get("thinking"):
        message["reasoning"] = msg["thinking"]
    calls = _tool_calls_to_openai(msg.get("tool_calls"))
    if calls:
        message["tool_calls"] = calls
    reason = native.get("done_reason") or None
    if reason == "stop" and calls:
        reason = "tool_calls"
    choice: Dict[str, Any] = {"index": 0, "message": message, "finish_reason": reason}
    if native.get("logprobs"):
        choice["logprobs"] = {"content": native["logprobs"]}
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": _created(native, now),
        "model": model,
        "system_fingerprint": OPENAI_FINGERPRINT,
        "choices": [choice],
        "usage": _usage(native),
    }


def native_generate_to_openai(native: Mapping[str, Any], model: str, request_id: str, now: Optional[float] = None) -> Dict[str, Any]:
    """A non-streaming /api/generate answer -> a text_completion (ollama-api.md §6.2)."""
    return {
        "id": request_id,
        "object": "text_completion",
        "created": _created(native, now),
        "model": model,
        "system_fingerprint": OPENAI_FINGERPRINT,
        "choices": [{"text": native.get("response") or "", "index": 0, "finish_reason": native.get("done_reason") or None}],
        "usage": _usage(native),
    }


def floats_to_base64(values: Sequence[float]) -> str:
    """Base64 of the little-endian float32 array, as OpenAI's encoding_format=base64."""
    return base64.b64encode(struct.pack("<%df" % len(values), *values)).decode("ascii")


def native_embed_to_openai(native: Mapping[str, Any], model: str, encoding_format: Optional[str] = None) -> Dict[str, Any]:
    """An /api/embed answer -> OpenAI's embedding list (ollama-api.md §6.5); ``model`` as the client sent it.

    As in Ollama, no vectors at all gives ``data: null``, and an answer without
    ``embeddings`` gives the empty list object.
    """
    embeddings = native.get("embeddings")
    if not isinstance(embeddings, list):
        return {"object": "", "data": None, "model": "", "usage": {"prompt_tokens": 0, "total_tokens": 0}}
    as_base64 = isinstance(encoding_format, str) and encoding_format.lower() == "base64"
    data = [{"object": "embedding", "embedding": floats_to_base64(v) if as_base64 else v, "index": i} for i, v in enumerate(embeddings)]
    count = native.get("prompt_eval_count") or 0
    return {"object": "list", "data": data or None, "model": model, "usage": {"prompt_tokens": count, "total_tokens": count}}


def model_namespace(name: str) -> str:
    """The namespace of a model name, as Ollama's model.ParseName: ``library`` for official models."""
    name = name.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    parts = name.split("/")
    if len(parts) >= 3:
        return parts[-2]
    if len(parts) == 2:
        return parts[0]
    return "library"


def model_to_openai(entry: Mapping[str, Any], requested_name: str) -> Dict[str, Any]:
    """/v1/models/{model}: the name as the client gave it, created from modified_at (a tags entry or /api/show)."""
    return {
        "id": requested_name,
        "object": "model",
        "created": rfc3339_to_unix(entry.get("modified_at")) or 0,
        "owned_by": model_namespace(requested_name),
    }


def models_to_openai(tags: Mapping[str, Any]) -> Dict[str, Any]:
    """/v1/models from an /api/tags answer; ``data`` is null when there are no models, as in Ollama."""
    models = tags.get("models") if isinstance(tags.get("models"), list) else []
    data = [model_to_openai(m, m.get("model") or m.get("name") or "") for m in models if isinstance(m, dict)]  # ToListCompletion
    return {"object": "list", "data": data or None}


# -- Streams: native NDJSON objects -> SSE events -----------------------------------------

class StreamTranslator:
    """What the stream translators share: the envelope fields and how a stream ends badly (one
    error event in the client's dialect)."""

    dialect = OPENAI

    def __init__(self, model: str, request_id: str, include_usage: bool, clock: Callable[[], float] = time.time) -> None:
        self.model = model
        self.request_id = request_id
        self.include_usage = include_usage
        self.clock = clock
        self._finished = False

    @property
    def finished(self) -> bool:
        """True once [DONE] or an error event was produced."""
        return self._finished

    def fail(self, message: str, status: int = 500) -> bytes:
        """The error event that ends a broken stream (no [DONE] after it); b"" once finished."""
        if self._finished:
            return b""
        self._finished = True
        return error_line(status, message, self.dialect)


class ChatStreamTranslator(StreamTranslator):
    """Native /api/chat stream objects in, /v1/chat/completions SSE events out (ollama-api.md §6.3).

    ``feed`` takes one parsed NDJSON object and returns zero or more complete events.  A native
    ``{"error": ...}`` line, or ``fail()`` when the upstream breaks, ends the stream with one
    OpenAI error event and no ``[DONE]`` (the deliberate difference).  After the end, feeding
    returns b"".
    """

    def __init__(self, model: str, request_id: str, include_usage: bool, clock: Callable[[], float] = time.time) -> None:
        super().__init__(model, request_id, include_usage, clock)
        self.created: Optional[int] = None  #: pinned to the first native object
        self.role_sent = False
        self.tool_call_sent = False

    def _chunk(self, delta: Dict[str, Any], finish_reason: Optional[str] = None, logprobs: Any = None) -> Dict[str, Any]:
        choice: Dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        if logprobs:
            choice["logprobs"] = {"content": logprobs}
        return {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": OPENAI_FINGERPRINT,
            "choices": [choice],
        }

    def _delta(self) -> Dict[str, Any]:
        delta: Dict[str, Any] = {}
        if not self.role_sent:
            delta["role"] = "assistant"
            self.role_sent = True
        return delta

    def feed(self, native: Mapping[str, Any]) -> bytes:
        if self._finished:
            return b""
        if "error" in native:
            err = native["error"]
            return self.fail(err if isinstance(err, str) else json.dumps(err))
        if self.created is None:
            self.created = _created(native, self.clock())
        msg = native.get("message") if isinstance(native.get("message"), dict) else {}
        content = msg.get("content") or ""
        thinking = msg.get("thinking") or ""
        calls = _tool_calls_to_openai(msg.get("tool_calls"))
        logprobs = native.get("logprobs")
        done = native.get("done") is True
        out: List[bytes] = []
        if thinking and (content or calls):
            # Split in two (openai.ToStreamChunks): the reasoning alone (no content key) with the
            # logprobs, then the content or tool calls without them.
            out.append(sse_event(self._chunk(dict(self._delta(), reasoning=thinking), logprobs=logprobs)))
            thinking = ""
            logprobs = None
        if content or thinking or calls or logprobs or not done or not self.role_sent:
            delta = self._delta()
            delta["content"] = content
            if thinking:
                delta["reasoning"] = thinking
            if calls:
                delta["tool_calls"] = calls
                self.tool_call_sent = True
            out.append(sse_event(self._chunk(delta, logprobs=logprobs)))
        if done:
            reason = native.get("done_reason") or "stop"
            if reason == "stop" and self.tool_call_sent:
                reason = "tool_calls"
            out.append(sse_event(self._chunk({}, reason)))
            if self.include_usage:
                usage_chunk = self._chunk({})
                usage_chunk["choices"] = []
                usage_chunk["usage"] = _usage(native)
                out.append(sse_event(usage_chunk))
            out.append(SSE_DONE)
            self._finished = True
        return b"".join(out)


class CompletionStreamTranslator(StreamTranslator):
    """Native /api/generate stream objects in, /v1/completions SSE events out (ollama-api.md §6.3).

    One event per native object, ``created`` from the clock at each one, the finish reason on
    the chunk of the ``done`` object itself.  With include_usage every chunk carries zero
    usage and a last chunk with ``choices: []`` carries the real one.
    """

    def feed(self, native: Mapping[str, Any]) -> bytes:
        if self._finished:
            return b""
        if "error" in native:
            err = native["error"]
            return self.fail(err if isinstance(err, str) else json.dumps(err))
        chunk: Dict[str, Any] = {
            "id": self.request_id,
            "object": "text_completion",
            "created": int(self.clock()),
            "choices": [{"text": native.get("response") or "", "index": 0, "finish_reason": native.get("done_reason") or None}],
            "model": self.model,
            "system_fingerprint": OPENAI_FINGERPRINT,
        }
        if self.include_usage:
            chunk["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        out = [sse_event(chunk)]
        if native.get("done") is True:
            if self.include_usage:
                chunk["choices"] = []
                chunk["usage"] = _usage(native)
                out.append(sse_event(chunk))
            out.append(SSE_DONE)
            self._finished = True
        return b"".join(out)


# -- Anthropic /v1/messages <-> native (agents-api.md §1, Ollama's anthropic/anthropic.go) ---------

_ANTHROPIC_STRUCT = "MessagesRequest"
_ANTHROPIC_EFFORTS = frozenset({"low", "medium", "high", "max"})


def _anthropic_text_of(blocks: Any) -> str:
    """The ``text`` of every ``type: text`` block, concatenated with no separator (a system array)."""
    out = []
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            out.append(block["text"])
    return "".join(out)


def _anthropic_image(source: Any, where: str = "") -> str:
    """A base64 image source as the native API takes it (the base64 text, checked), or the 400."""
    if not isinstance(source, dict):
        raise BadRequest("invalid %simage source" % where)
    kind = source.get("type") if isinstance(source.get("type"), str) else ""
    if kind != "base64":
        raise BadRequest("invalid image source type: %s. Only base64 images are supported." % kind)
    data = source.get("data") if isinstance(source.get("data"), str) else ""
    data = data.replace("\r", "").replace("\n", "")  # Go's decoder skips line breaks
    try:
        base64.b64decode(data.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise BadRequest("invalid base64 image data: illegal base64 data") from None
    return data


def _anthropic_tool_result(content: Any) -> Tuple[str, List[str]]:
    """A tool_result's content: a string, or blocks whose text is joined and whose images attach."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        return "", []
    text, images = [], []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif block.get("type") == "image":
            images.append(_anthropic_image(block.get("source"), "tool_result "))
    return "".join(text), images


def _web_search_result_text(content: Any) -> str:
    """A web_search_tool_result's content as Ollama writes it into a tool message
    (formatWebSearchToolResultContent): ``- <title>: <url>`` per result, or the error code."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        if content.get("type") == "web_search_tool_result_error":
            code = content.get("error_code") if isinstance(content.get("error_code"), str) else ""
            return "web_search_tool_result_error: " + code if code else "web_search_tool_result_error"
        return json_bytes(content).decode("utf-8")
    if isinstance(content, list):
        lines = []
        for item in content:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "web_search_result":
                title = item.get("title") if isinstance(item.get("title"), str) else ""
                url = item.get("url") if isinstance(item.get("url"), str) else ""
                lines.append("- %s: %s\n" % (title, url))
            elif item.get("type") == "web_search_tool_result_error":
                return _web_search_result_text(item)
        return "".join(lines)
    return json_bytes(content).decode("utf-8")


def _anthropic_message(msg: Any) -> List[Dict[str, Any]]:
    """One Anthropic message as native messages (convertMessage): its blocks gathered into one
    message of the same role, tool results as tool messages (first, for a user message)."""
    if not isinstance(msg, dict):
        raise BadRequest("json: cannot unmarshal %s into Go struct field %s.messages of type anthropic.MessageParam" % (_json_kind(msg), _ANTHROPIC_STRUCT))
    role = msg.get("role")
    if role is not None and not isinstance(role, str):
        raise BadRequest("json: cannot unmarshal %s into Go struct field MessageParam.messages.role of type string" % _json_kind(role))
    role = (role or "").lower()
    if "content" not in msg:
        raise BadRequest("unexpected end of JSON input")
    content = msg["content"]
    if isinstance(content, str):
        blocks: List[Any] = [{"type": "text", "text": content}]
    elif content is None:
        blocks = []
    elif isinstance(content, list):
        blocks = content
    else:
        raise BadRequest("json: cannot unmarshal %s into Go value of type []anthropic.ContentBlock" % _json_kind(content))
    text: List[str] = []
    images: List[str] = []
    calls: List[Dict[str, Any]] = []
    results: List[Dict[str, Any]] = []
    thinking = ""
    for block in blocks:
        if not isinstance(block, dict):
            raise BadRequest("json: cannot unmarshal %s into Go value of type anthropic.ContentBlock" % _json_kind(block))
        kind = block.get("type")
        if kind == "text":
            if isinstance(block.get("text"), str):
                text.append(block["text"])
        elif kind == "image":
            if block.get("source") is None:
                raise BadRequest("invalid image source")
            images.append(_anthropic_image(block.get("source")))
        elif kind in ("tool_use", "server_tool_use"):
            if kind == "tool_use" and not block.get("id"):
                raise BadRequest("tool_use block missing required 'id' field")
            if kind == "tool_use" and not block.get("name"):
                raise BadRequest("tool_use block missing required 'name' field")
            arguments = block.get("input")
            calls.append({"id": block.get("id") or "", "function": {"name": block.get("name") or "",
                                                                      "arguments": arguments if isinstance(arguments, dict) else {}}})
        elif kind == "tool_result":
            result, result_images = _anthropic_tool_result(block.get("content"))
            tool: Dict[str, Any] = {"role": "tool", "content": result}
            if result_images:
                tool["images"] = result_images
            tool["tool_call_id"] = block.get("tool_use_id") or ""
            results.append(tool)
        elif kind == "thinking":
            if isinstance(block.get("thinking"), str):
                thinking = block["thinking"]  # the last thinking block wins; its signature is dropped
        elif kind == "web_search_tool_result":  # history of a search: the results as a tool message
            results.append({"role": "tool", "content": _web_search_result_text(block.get("content")), "tool_call_id": block.get("tool_use_id") or ""})
        # redacted_thinking, document, search_result, ...: dropped
    out: List[Dict[str, Any]] = []
    if role == "user":
        out.extend(results)
    joined = "".join(text)
    if joined or images or calls or thinking:
        native: Dict[str, Any] = {"role": role, "content": joined}
        if images:
            native["images"] = images
        if calls:
            native["tool_calls"] = calls
        if thinking:
            native["thinking"] = thinking
        out.append(native)
    if role != "user":
        out.extend(results)
    return out


def _anthropic_tool(tool: Any) -> Optional[Dict[str, Any]]:
    """One Anthropic tool as a native function tool; None for the server-side web search."""
    if not isinstance(tool, dict):
        raise BadRequest("json: cannot unmarshal %s into Go struct field %s.tools of type anthropic.Tool" % (_json_kind(tool), _ANTHROPIC_STRUCT))
    if str(tool.get("type") or "").startswith("web_search"):
        return None  # Ollama runs it against ollama.com; this proxy cannot: left out (README)
    name = tool.get("name") if isinstance(tool.get("name"), str) else ""
    function: Dict[str, Any] = {"name": name}
    if isinstance(tool.get("description"), str) and tool["description"]:
        function["description"] = tool["description"]
    schema = tool.get("input_schema")
    if schema is not None:
        if not isinstance(schema, dict):
            raise BadRequest("invalid input_schema for tool %s: json: cannot unmarshal %s into Go value of type api.ToolFunctionParameters"
                             % (json.dumps(name), _json_kind(schema)))
        function["parameters"] = schema
    return {"type": "function", "function": function}


def anthropic_messages_to_native(body: Any) -> Dict[str, Any]:
    """A /v1/messages request as its native /api/chat twin (FromMessagesRequest and the
    middleware's checks, in their order and with their texts, agents-api.md §1.2-§1.4).  The
    answer's model, id and estimate stay with the caller; ``stream`` is false unless asked."""
    if not isinstance(body, dict):
        raise BadRequest("json: cannot unmarshal %s into Go value of type anthropic.%s" % (_json_kind(body), _ANTHROPIC_STRUCT))
    model = _field(_ANTHROPIC_STRUCT, body, "model", "string")
    max_tokens = _field(_ANTHROPIC_STRUCT, body, "max_tokens", "int")
    messages = _field(_ANTHROPIC_STRUCT, body, "messages", "[]anthropic.MessageParam")
    stream = _field(_ANTHROPIC_STRUCT, body, "stream", "bool")
    temperature = _field(_ANTHROPIC_STRUCT, body, "temperature", "float64")
    top_p = _field(_ANTHROPIC_STRUCT, body, "top_p", "float64")
    top_k = _field(_ANTHROPIC_STRUCT, body, "top_k", "int")
    stop = _field(_ANTHROPIC_STRUCT, body, "stop_sequences", "[]string")
    tools = _field(_ANTHROPIC_STRUCT, body, "tools", "[]anthropic.Tool")
    thinking = _field(_ANTHROPIC_STRUCT, body, "thinking", "anthropic.ThinkingConfig")
    output_config = _field(_ANTHROPIC_STRUCT, body, "output_config", "anthropic.OutputConfig")
    _field(_ANTHROPIC_STRUCT, body, "tool_choice", "anthropic.ToolChoice")
    _field(_ANTHROPIC_STRUCT, body, "metadata", "anthropic.Metadata")
    if stop is not None and not all(isinstance(s, str) for s in stop):
        bad = next(s for s in stop if not isinstance(s, str))
        raise BadRequest("json: cannot unmarshal %s into Go struct field %s.stop_sequences of type string" % (_json_kind(bad), _ANTHROPIC_STRUCT))
    if not model:
        raise BadRequest("model is required")
    if not max_tokens or max_tokens <= 0:
        raise BadRequest("max_tokens is required and must be positive")
    if not messages:
        raise BadRequest("messages is required")
    native_messages: List[Dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        native_messages.append({"role": "system", "content": system})
    elif isinstance(system, list):
        text = _anthropic_text_of(system)
        if text:
            native_messages.append({"role": "system", "content": text})
    for msg in messages:
        native_messages.extend(_anthropic_message(msg))
    options: Dict[str, Any] = {"num_predict": max_tokens}
    if temperature is not None:
        options["temperature"] = temperature
    if top_p is not None:
        options["top_p"] = top_p
    if top_k is not None:
        options["top_k"] = top_k
    if stop:
        options["stop"] = stop
    native: Dict[str, Any] = {"model": model, "messages": native_messages, "options": options, "stream": bool(stream)}
    native_tools = [t for t in (_anthropic_tool(t) for t in tools or ()) if t is not None]
    if native_tools:
        native["tools"] = native_tools
    think: Any = None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "enabled":
        think = True
    elif kind == "disabled":
        think = False
    elif isinstance(output_config, dict) and isinstance(output_config.get("effort"), str):
        effort = output_config["effort"].strip().lower()
        effort = "high" if effort == "xhigh" else effort
        if effort in _ANTHROPIC_EFFORTS:
            think = effort
    if think is not None:
        native["think"] = think
    return native


def _anthropic_chars(value: Any) -> int:
    """Characters of a system prompt or message content as EstimateCountTokens counts them: text
    and thinking, and tool_use / tool_result blocks as their JSON."""
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, list):
        total = 0
        for block in value:
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                total += len(block["text"].encode("utf-8"))
            if isinstance(block.get("thinking"), str):
                total += len(block["thinking"].encode("utf-8"))
            if block.get("type") in ("tool_use", "tool_result"):
                total += len(json_bytes(block))
        return total
    return len(json_bytes(value))


_BILLING_HASH_RE = re.compile(r"^(x-anthropic-billing-header:[^\n]*?\bcch=)[0-9a-fA-F]+;")
STABLE_BILLING_HASH = "00000"  #: what the per-request hash becomes


def stable_system_prefix(body: Dict[str, Any]) -> Dict[str, Any]:
    """The request with Claude Code's per-request billing hash (``x-anthropic-billing-header: ...;
    cch=<hex>;`` at the start of its system prompt) replaced by a fixed one, so that the prompt
    Ollama renders starts the same every turn and its prompt cache hits (agents-api.md §3.1).
    The body itself is not changed; a request without the header comes back as it is."""
    system = body.get("system")
    if isinstance(system, str):
        fixed = _BILLING_HASH_RE.sub(lambda m: m.group(1) + STABLE_BILLING_HASH + ";", system, count=1)
        return body if fixed == system else dict(body, system=fixed)
    if isinstance(system, list):
        for index, block in enumerate(system):
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                fixed = _BILLING_HASH_RE.sub(lambda m: m.group(1) + STABLE_BILLING_HASH + ";", block["text"], count=1)
                if fixed == block["text"]:
                    return body
                blocks = list(system)
                blocks[index] = dict(block, text=fixed)
                return dict(body, system=blocks)
    return body


def anthropic_estimate_tokens(body: Mapping[str, Any]) -> int:
    """Ollama's own len/4 estimate of a /v1/messages request (EstimateInputTokens): what its
    ``message_start`` reports as ``input_tokens`` before the real count is known."""
    total = _anthropic_chars(body.get("system"))
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    for msg in messages:
        if isinstance(msg, dict):
            total += len(str(msg.get("role") or "").encode("utf-8")) + _anthropic_chars(msg.get("content"))
    for tool in body.get("tools") or ():
        if isinstance(tool, dict):
            schema = tool.get("input_schema")
            total += _anthropic_chars(str(tool.get("name") or "")) + _anthropic_chars(str(tool.get("description") or ""))
            total += len(json_bytes(schema)) if schema is not None else 0
    tokens = total // 4
    return 1 if tokens == 0 and (messages or body.get("system") is not None) else tokens


def anthropic_message_id() -> str:
    """``msg_`` + 24 hex digits (GenerateMessageID)."""
    return "msg_" + os.urandom(12).hex()


def anthropic_stop_reason(native: Mapping[str, Any], tool_calls: bool, num_predict: int = 0) -> Optional[str]:
    """mapStopReason, plus the proxy's one deliberate difference (SPEC §7.2): a native ``length``
    stop with fewer tokens than the ``num_predict`` sent means the context ran out, not
    ``max_tokens``: ``model_context_window_exceeded``."""
    if tool_calls:
        return "tool_use"
    reason = native.get("done_reason") or ""
    if reason == "stop":
        return "end_turn"
    if reason == "length":
        count = native.get("eval_count")
        if num_predict > 0 and isinstance(count, int) and count < num_predict:
            return "model_context_window_exceeded"
        return "max_tokens"
    return "stop_sequence" if reason else None


def _anthropic_usage(native: Mapping[str, Any]) -> Dict[str, int]:
    prompt, count = native.get("prompt_eval_count"), native.get("eval_count")
    return {"input_tokens": prompt if isinstance(prompt, int) else 0, "output_tokens": count if isinstance(count, int) else 0}


def _anthropic_tool_use(call: Any) -> Optional[Dict[str, Any]]:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return None
    function = call["function"]
    arguments = function.get("arguments")
    return {"type": "tool_use", "id": str(call.get("id") or ""), "name": str(function.get("name") or ""),
            "input": arguments if isinstance(arguments, dict) else {}}


def native_chat_to_anthropic(native: Mapping[str, Any], model: str, message_id: str, num_predict: int = 0) -> Dict[str, Any]:
    """A whole native chat answer as a /v1/messages answer (ToMessagesResponse): thinking, then
    text, then tool_use blocks; ``content`` null when there is none, as Go marshals it."""
    msg = native.get("message") if isinstance(native.get("message"), dict) else {}
    content: List[Dict[str, Any]] = []
    if msg.get("thinking"):
        content.append({"type": "thinking", "thinking": msg["thinking"]})
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    calls = [c for c in (_anthropic_tool_use(c) for c in msg.get("tool_calls") or ()) if c is not None]
    content.extend(calls)
    out: Dict[str, Any] = {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content or None}
    reason = anthropic_stop_reason(native, bool(calls), num_predict)
    if reason:
        out["stop_reason"] = reason
    out["usage"] = _anthropic_usage(native)
    return out


def anthropic_event(kind: str, data: Any) -> bytes:
    """One named SSE event, ``event: X\\ndata: <compact json>\\n\\n``, as Ollama's writeSSE."""
    return b"event: " + kind.encode("ascii") + b"\ndata: " + json_bytes(data) + b"\n\n"


#: What a /v1/messages stream sends while a cold load or the queue keeps it waiting (SPEC §7.2).
ANTHROPIC_PING = anthropic_event("ping", {"type": "ping"})


class AnthropicStreamTranslator(StreamTranslator):
    """Native /api/chat stream objects in, /v1/messages SSE events out (StreamConverter.Process,
    agents-api.md §1.6).  ``feed`` takes one parsed NDJSON object and returns zero or more
    events; a native ``{"error": ...}`` line or ``fail()`` ends the stream with ``event: error``
    (the deliberate difference: Ollama just stops).  After the end, feeding returns b""."""

    dialect = ANTHROPIC

    def __init__(self, model: str, message_id: str, estimated_tokens: int, num_predict: int = 0) -> None:
        super().__init__(model, message_id, include_usage=False)
        self.message_id = message_id
        self.estimated_tokens = estimated_tokens
        self.num_predict = num_predict
        self.started = False
        self.index = 0
        self.thinking_open = self.thinking_done = self.text_open = False
        self.tools_sent: set = set()

    def _stop(self) -> bytes:
        event = anthropic_event("content_block_stop", {"type": "content_block_stop", "index": self.index})
        self.index += 1
        return event

    def _start(self, block: Dict[str, Any]) -> bytes:
        return anthropic_event("content_block_start", {"type": "content_block_start", "index": self.index, "content_block": block})

    def _delta(self, delta: Dict[str, Any]) -> bytes:
        return anthropic_event("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def feed(self, native: Mapping[str, Any]) -> bytes:
        if self._finished:
            return b""
        if "error" in native:
            err = native["error"]
            return self.fail(err if isinstance(err, str) else json.dumps(err))
        out: List[bytes] = []
        if not self.started:
            self.started = True
            prompt = native.get("prompt_eval_count")
            tokens = prompt if isinstance(prompt, int) and prompt else self.estimated_tokens
            out.append(anthropic_event("message_start", {"type": "message_start", "message": {
                "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "usage": {"input_tokens": tokens, "output_tokens": 0}}}))
        msg = native.get("message") if isinstance(native.get("message"), dict) else {}
        thinking, text = msg.get("thinking") or "", msg.get("content") or ""
        if thinking and not self.thinking_done:
            if self.text_open:
                out.append(self._stop())
                self.text_open = False
            if not self.thinking_open:
                self.thinking_open = True
                out.append(self._start({"type": "thinking", "thinking": ""}))
            out.append(self._delta({"type": "thinking_delta", "thinking": thinking}))
        if text:
            if self.thinking_open and not self.thinking_done:
                self.thinking_done = True
                out.append(self._stop())
            if not self.text_open:
                self.text_open = True
                out.append(self._start({"type": "text", "text": ""}))
            out.append(self._delta({"type": "text_delta", "text": text}))
        for call in msg.get("tool_calls") or ():
            block = _anthropic_tool_use(call)
            if block is None or block["id"] in self.tools_sent:
                continue
            if self.thinking_open and not self.thinking_done:
                self.thinking_done = True
                out.append(self._stop())
            if self.text_open:
                out.append(self._stop())
                self.text_open = False
            out.append(self._start(dict(block, input={})))
            out.append(self._delta({"type": "input_json_delta", "partial_json": json_bytes(block["input"]).decode("utf-8")}))
            out.append(self._stop())
            self.tools_sent.add(block["id"])
        if native.get("done") is True:
            if self.text_open or (self.thinking_open and not self.thinking_done):
                out.append(anthropic_event("content_block_stop", {"type": "content_block_stop", "index": self.index}))
            delta: Dict[str, Any] = {}
            reason = anthropic_stop_reason(native, bool(self.tools_sent), self.num_predict)
            if reason:
                delta["stop_reason"] = reason
            out.append(anthropic_event("message_delta", {"type": "message_delta", "delta": delta, "usage": _anthropic_usage(native)}))
            out.append(anthropic_event("message_stop", {"type": "message_stop"}))
            self._finished = True
        return b"".join(out)


# -- OpenAI /v1/responses <-> native (agents-api.md §2, Ollama's openai/responses.go) -------------

_RESPONSES_STRUCT = "ResponsesRequest"
#: The request fields Go binds, with their types, in the order of the struct (for the binding errors).
_RESPONSES_FIELDS = {"model": "string", "background": "bool", "include": "[]string", "instructions": "string",
                     "max_output_tokens": "int", "reasoning": "openai.ResponsesReasoning", "temperature": "float64",
                     "text": "openai.ResponsesText", "top_p": "float64", "truncation": "string",
                     "tools": "[]openai.ResponsesTool", "stream": "bool"}
_RESPONSES_TOOL_FIELDS = {"type": "string", "name": "string", "description": "string", "strict": "bool",
                          "parameters": "map[string]interface {}", "tools": "[]openai.ResponsesTool"}
#: Go's %v of the anonymous structs the item and content decoders peek at a ``type`` with.
_ITEM_PEEK = 'struct { Type string "json:\\"type\\""; Role string "json:\\"role\\"" }'
_CONTENT_PEEK = 'struct { Type string "json:\\"type\\"" }'
#: Each input item or content type, the Go struct it is decoded into, and that struct's string fields.
_RESPONSES_ITEM_STRUCTS = {
    "message": ("", ("type", "role")),
    "function_call": ("ResponsesFunctionCall", ("id", "type", "call_id", "name", "arguments")),
    "function_call_output": ("", ("type", "call_id")),
    "reasoning": ("ResponsesReasoningInput", ("id", "type", "encrypted_content")),
    "web_search_call": ("ResponsesWebSearchCall", ("id", "type", "status")),
    "input_text": ("ResponsesTextContent", ("type", "text")),
    "output_text": ("ResponsesOutputTextContent", ("type", "text")),
    "input_image": ("ResponsesImageContent", ("type", "detail", "file_id", "image_url")),
    "input_file": ("ResponsesFileContent", ("type", "file_data", "file_id", "file_url", "filename")),
}


def go_json_syntax_error(doc: str, exc: ValueError) -> str:
    """What Go's decoder says of the JSON Python's refused, for the usual mistakes."""
    pos = getattr(exc, "pos", len(doc))
    if pos >= len(doc.rstrip()) or str(exc).startswith("Unterminated string"):
        return "unexpected end of JSON input"
    char = doc[pos]
    what = str(exc)
    if what.startswith("Expecting property name"):
        context = "looking for beginning of object key string"
    elif what.startswith("Expecting ':'"):
        context = "after object key"
    elif what.startswith("Expecting ','"):
        opener = _innermost_open(doc, pos)
        context = "after object key:value pair" if opener == "{" else "after array element"
    elif what.startswith("Extra data"):
        context = "after top-level value"
    else:
        context = "looking for beginning of value"
    return "invalid character '%s' %s" % ("\\'" if char == "'" else char, context)


def _innermost_open(doc: str, pos: int) -> str:
    """The bracket (``{`` or ``[``) whose value the decoder was in at ``pos`` (strings skipped)."""
    stack: List[str] = []
    in_string = escaped = False
    for ch in doc[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append(ch)
        elif ch in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _peek_type(value: Any, peek: str, with_role: bool) -> Tuple[str, str]:
    """(type, role) of an input item or content part, as the Go decoders peek at them."""
    if value is None:
        return "", ""
    if not isinstance(value, dict):
        raise BadRequest("json: cannot unmarshal %s into Go value of type %s" % (_json_kind(value), peek))
    for name in ("type", "role") if with_role else ("type",):
        if value.get(name) is not None and not isinstance(value[name], str):
            raise BadRequest("json: cannot unmarshal %s into Go struct field .%s of type string" % (_json_kind(value[name]), name))
    return value.get("type") or "", (value.get("role") or "") if with_role else ""


def _check_strings(value: Any, kind: str) -> Dict[str, Any]:
    """An item or part decoded into its Go struct: the string fields must be strings."""
    struct, names = _RESPONSES_ITEM_STRUCTS[kind]
    value = value if isinstance(value, dict) else {}
    for name in names:
        if value.get(name) is not None and not isinstance(value[name], str):
            raise BadRequest("json: cannot unmarshal %s into Go struct field %s.%s of type string" % (_json_kind(value[name]), struct, name))
    return value


def _responses_parts(raw: Any, where: str, shorthand: bool) -> List[Dict[str, Any]]:
    """Content (``where`` is ``content``) or function output items (``output``): a string
    (the shorthand, when allowed) or an array of typed parts, each checked as Go decodes it."""
    if raw is None:
        return [{"type": "input_text", "text": ""}] if shorthand and where == "content" else []
    if isinstance(raw, str):
        return [{"type": "input_text", "text": raw}]
    if not isinstance(raw, list):
        raise BadRequest("%s must be a string or array: json: cannot unmarshal %s into Go value of type []json.RawMessage" % (where, _json_kind(raw)))
    parts = []
    for index, part in enumerate(raw):
        try:
            kind, _ = _peek_type(part, _CONTENT_PEEK, False)
            if kind not in ("input_text", "output_text", "input_image", "input_file"):
                raise BadRequest("unknown content type: %s" % kind)
            parts.append(dict(_check_strings(part, kind), type=kind))
        except BadRequest as exc:
            raise BadRequest("%s[%d]: %s" % (where, index, exc.message)) from None
    return parts


def _responses_content(parts: Sequence[Mapping[str, Any]]) -> Tuple[str, List[str]]:
    """convertResponsesContent: the text parts concatenated, the data-URI images decoded."""
    text: List[str] = []
    images: List[str] = []
    for part in parts:
        kind = part["type"]
        if kind in ("input_text", "output_text"):
            text.append(part.get("text") or "")
        elif kind == "input_image":
            if part.get("image_url"):
                images.append(_image_from_url(part["image_url"]))  # a file_id alone is skipped
        else:
            raise BadRequest("file inputs are not currently supported")
    return "".join(text), images


def _responses_item(item: Any) -> Dict[str, Any]:
    """One input item, decoded as unmarshalResponsesInputItem does (the item as a dict with its
    resolved ``type``; a message's or output's parts under ``parts``), or its 400."""
    kind, role = _peek_type(item, _ITEM_PEEK, True)
    if not kind and role:
        kind = "message"
    if kind not in _RESPONSES_ITEM_STRUCTS or kind.startswith(("input_", "output_")):
        raise BadRequest("input item missing required 'type' field" if not kind else "unknown input item type: %s" % json.dumps(kind))
    out = dict(_check_strings(item, kind), type=kind)
    if kind == "message":
        out["parts"] = _responses_parts(out.get("content"), "content", True) if "content" in out else []
    elif kind == "function_call_output":
        out["parts"] = _responses_parts(out.get("output"), "output", False)
    elif kind == "reasoning":
        summary = out.get("summary")
        if summary is not None and not isinstance(summary, list):
            raise BadRequest("json: cannot unmarshal %s into Go struct field ResponsesReasoningInput.summary of type []openai.ResponsesReasoningSummary" % _json_kind(summary))
    return out


def _responses_items(raw: Any) -> Tuple[str, List[Dict[str, Any]]]:
    """ResponsesInput.UnmarshalJSON: (text, []) for a string (or null), ("", items) for an array."""
    if raw is None or isinstance(raw, str):
        return raw or "", []
    if not isinstance(raw, list):
        raise BadRequest("input must be a string or array: json: cannot unmarshal %s into Go value of type []json.RawMessage" % _json_kind(raw))
    items = []
    for index, item in enumerate(raw):
        try:
            items.append(_responses_item(item))
        except BadRequest as exc:
            raise BadRequest("input[%d]: %s" % (index, exc.message)) from None
    return "", items


def _bind_responses_request(body: Any) -> None:
    """The Go binding of a ResponsesRequest: a type mismatch of a field is a 400 in Go's words
    (the first in document order; the input's own errors are raised before, as they abort Go's decoder)."""
    for name, value in body.items():
        go_type = _RESPONSES_FIELDS.get(name)
        if go_type is None or value is None:
            continue
        _field(_RESPONSES_STRUCT, body, name, go_type)
        if name == "include" and not all(isinstance(v, str) for v in value):
            bad = next(v for v in value if not isinstance(v, str))
            raise BadRequest("json: cannot unmarshal %s into Go struct field %s.include of type string" % (_json_kind(bad), _RESPONSES_STRUCT))
        if name == "reasoning":
            for key in ("effort", "generate_summary", "summary"):
                _nested(value, "ResponsesReasoning", "reasoning." + key, key, "string")
        elif name == "text" and value.get("format") is not None:
            _nested(value, "ResponsesText", "text.format", "format", "openai.ResponsesTextFormat")
            for key, go in (("type", "string"), ("name", "string"), ("strict", "bool")):
                _nested(value["format"], "ResponsesTextFormat", "text.format." + key, key, go)
        elif name == "tools":
            _bind_responses_tools(value, "tools")


def _nested(obj: Mapping[str, Any], struct: str, path: str, key: str, go_type: str) -> None:
    """A nested field's type, with Go's error naming the innermost struct and the whole path."""
    value = obj.get(key)
    if value is None:
        return
    kind = _json_kind(value)
    ok = {"string": kind == "string", "bool": kind == "bool"}.get(go_type, kind == "array" if go_type.startswith("[]") else kind == "object")
    if not ok:
        raise BadRequest("json: cannot unmarshal %s into Go struct field %s.%s of type %s" % (kind, struct, path, go_type))


def _bind_responses_tools(tools: Sequence[Any], path: str) -> None:
    for tool in tools:
        if tool is None:
            continue
        if not isinstance(tool, dict):
            raise BadRequest("json: cannot unmarshal %s into Go struct field %s.%s of type openai.ResponsesTool" % (_json_kind(tool), _RESPONSES_STRUCT, path))
        for key, go_type in _RESPONSES_TOOL_FIELDS.items():
            _nested(tool, "ResponsesTool", path + "." + key, key, go_type)
        if tool.get("tools"):
            _bind_responses_tools(tool["tools"], path + ".tools")


def _responses_function_tool(tool: Mapping[str, Any], prefix: str = "") -> List[Dict[str, Any]]:
    """convertTools: a function declaration as a native tool; a namespace's members flattened as
    ``<namespace>.<name>``."""
    if tool.get("type") == "namespace":
        ns = tool.get("name") or ""
        out: List[Dict[str, Any]] = []
        for member in tool.get("tools") or ():
            for native in _responses_function_tool(member if isinstance(member, dict) else {}):
                name = native["function"]["name"]
                if ns and not name.startswith(ns + "."):
                    native["function"]["name"] = ns + "." + name
                out.append(native)
        return out
    function: Dict[str, Any] = {"name": tool.get("name") or ""}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("parameters") is not None:
        function["parameters"] = tool["parameters"]
    return [{"type": tool.get("type") or "", "function": function}]


#: The function a local model sees for the built-in web_search tool (WebSearchFunctionTool).
WEB_SEARCH_FUNCTION = {"type": "function", "function": {
    "name": "web_search", "description": "Search the web for current information.",
    "parameters": {"type": "object", "required": ["query"], "properties": {"query": {"type": "string", "description": "The search query."}}}}}


def _responses_arguments(text: str) -> Dict[str, Any]:
    """A replayed function_call's ``arguments`` string as the native object, or Go's 400."""
    if not text:
        return {}
    try:
        parsed = parse_json(text)
    except ValueError as exc:
        raise BadRequest("failed to parse function call arguments: " + go_json_syntax_error(text, exc)) from None
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):  # the ordered map's decoder (jsonparser.ObjectEach) wants an object
        raise BadRequest("failed to parse function call arguments: Value looks like object, but can't find closing '}' symbol")
    return parsed


def responses_to_native(body: Any) -> Dict[str, Any]:
    """A /v1/responses request as its native /api/chat twin (the middleware's binding, then
    FromResponsesRequest, agents-api.md §2.1-§2.2): instructions as the system message, the
    input items as messages (replayed reasoning as the thinking of the next assistant message,
    function calls and their outputs as tool calls and tool messages), temperature 1.0 unless
    given, ``num_predict`` from ``max_output_tokens``, ``think`` from ``reasoning.effort``."""
    if not isinstance(body, dict):
        raise BadRequest("json: cannot unmarshal %s into Go value of type openai.%s" % (_json_kind(body), _RESPONSES_STRUCT))
    text, items = _responses_items(body.get("input"))
    _bind_responses_request(body)
    messages: List[Dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    if text:
        messages.append({"role": "user", "content": text})
    pending = ""  # replayed reasoning, for the next assistant message
    for index, item in enumerate(items):
        kind = item["type"]
        if kind == "reasoning":
            pending = item.get("encrypted_content") or ""
        elif kind == "message":
            content, images = _responses_content(item["parts"])
            msg: Dict[str, Any] = {"role": item.get("role") or "", "content": content}
            if images:
                msg["images"] = images
            if msg["role"] == "assistant" and pending:
                msg["thinking"], pending = pending, ""
            # An assistant message replayed between a function_call and its output joins the call's message.
            following = items[index + 1] if index + 1 < len(items) else None
            answers = following.get("call_id") or "" if following is not None and following["type"] == "function_call_output" else ""
            last = messages[-1] if messages else None
            if (msg["role"] == "assistant" and answers and last is not None and last["role"] == "assistant"
                    and any(call.get("id") == answers for call in last.get("tool_calls") or ())):
                if last["content"] and msg["content"]:
                    last["content"] += "\n"
                last["content"] += msg["content"]
                if images:
                    last["images"] = last.get("images", []) + images
                if msg.get("thinking"):
                    last["thinking"] = msg["thinking"]
                continue
            messages.append(msg)
        elif kind == "function_call":
            call: Dict[str, Any] = {"function": {"name": item.get("name") or "", "arguments": _responses_arguments(item.get("arguments") or "")}}
            if item.get("call_id"):
                call = {"id": item["call_id"], "function": call["function"]}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
                if pending:
                    messages[-1]["thinking"], pending = pending, ""
            else:
                msg = {"role": "assistant", "content": "", "tool_calls": [call]}
                if pending:
                    msg["thinking"], pending = pending, ""
                messages.append(msg)
        elif kind == "function_call_output":
            output = item.get("output")
            content, images = _responses_content(item["parts"]) if item["parts"] else (output if isinstance(output, str) else "", [])
            tool: Dict[str, Any] = {"role": "tool", "content": content}
            if images:
                tool["images"] = images
            if item.get("call_id"):
                tool["tool_call_id"] = item["call_id"]
            messages.append(tool)
        # web_search_call: history only
    if pending:
        messages.append({"role": "assistant", "content": "", "thinking": pending})
    temperature = body.get("temperature")
    options: Dict[str, Any] = {"temperature": temperature if temperature is not None else 1.0}
    if body.get("top_p") is not None:
        options["top_p"] = body["top_p"]
    if body.get("max_output_tokens") is not None:
        options["num_predict"] = body["max_output_tokens"]
    reasoning = body.get("reasoning") or {}
    effort = reasoning.get("effort") or ""
    if effort and effort not in _EFFORT_TO_THINK:
        raise BadRequest('invalid reasoning value: %s (must be "minimal", "low", "medium", "high", "xhigh", "ultra", "max", or "none")'
                         % json.dumps(effort, ensure_ascii=False))
    declared = [t for t in body.get("tools") or () if isinstance(t, dict)]
    builtin = any(t.get("type") == "web_search" for t in declared)
    tools: List[Dict[str, Any]] = []
    for tool in declared:
        if tool.get("type") == "web_search":
            tools.append(json.loads(json.dumps(WEB_SEARCH_FUNCTION)))
            continue
        tools.extend(t for t in _responses_function_tool(tool) if not (builtin and t["function"]["name"] == "web_search"))
    native: Dict[str, Any] = {"model": body.get("model") or "", "messages": messages, "options": options, "stream": bool(body.get("stream"))}
    if tools:
        native["tools"] = tools
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema" and fmt.get("schema") is not None:
        native["format"] = fmt["schema"]
    if effort:
        native["think"] = _EFFORT_TO_THINK[effort]
    return native


def responses_id(kind: str, rng: Any) -> str:
    """``resp_<0..999998>``, ``msg_<...>``, ``rs_<...>``: random and not unique, as Ollama's math/rand ids."""
    return "%s_%d" % (kind, rng.randrange(999999))


def go_any(value: Any) -> Any:
    """A JSON value as Go re-marshals one it decoded into ``any``: every object a map (keys
    sorted), every number a float64 (an integral one written without a fraction, ``1.0`` as ``1``)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 1e21 else value
    if isinstance(value, dict):
        return {k: go_any(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [go_any(v) for v in value]
    return value


def _responses_echo(request: Mapping[str, Any], streamed: bool) -> Dict[str, Any]:
    """The request fields a response object repeats, as ToResponse (``streamed`` false) or the
    stream's buildResponseObject marshals them (tools re-marshalled as Go's ResponsesTool: unknown
    keys gone, ``description``/``strict``/``parameters`` null when absent; the stream drops a
    namespace's members and writes unset reasoning fields as null)."""
    def tool_echo(tool: Any) -> Dict[str, Any]:
        tool = tool if isinstance(tool, dict) else {}
        out = {"type": tool.get("type") or "", "name": tool.get("name") or "", "description": tool.get("description"),
               "strict": tool.get("strict"), "parameters": go_any(tool.get("parameters"))}
        if not streamed and tool.get("tools"):
            out["tools"] = [tool_echo(t) for t in tool["tools"]]
        return out

    fmt = (request.get("text") or {}).get("format")
    text_format: Dict[str, Any] = {"type": "text"}
    if isinstance(fmt, dict):
        text_format = {"type": fmt.get("type") or ""}
        if fmt.get("name"):
            text_format["name"] = fmt["name"]
        if fmt.get("schema") is not None:
            text_format["schema"] = fmt["schema"]
        if fmt.get("strict") is not None:
            text_format["strict"] = fmt["strict"]
    given = request.get("reasoning") or {}
    reasoning: Optional[Dict[str, Any]] = None
    if given.get("effort") or given.get("summary"):
        if streamed:
            reasoning = {"effort": given.get("effort") or None, "summary": given.get("summary") or None}
        else:
            reasoning = {k: given[k] for k in ("effort", "summary") if given.get(k)}
    temperature, top_p = request.get("temperature"), request.get("top_p")
    return {
        "instructions": request.get("instructions") or None,
        "tools": [tool_echo(t) for t in request.get("tools") or ()],
        "tool_choice": "auto",
        "truncation": request.get("truncation") if request.get("truncation") is not None else "disabled",
        "parallel_tool_calls": True,
        "text": {"format": text_format},
        "top_p": go_any(top_p if top_p is not None else 1.0),
        "presence_penalty": 0, "frequency_penalty": 0, "top_logprobs": 0,
        "temperature": go_any(temperature if temperature is not None else 1.0),
        "reasoning": reasoning,
    }


def _response_object(response_id: str, created_at: Any, status: str, model: str, echo: Mapping[str, Any], output: List[Any],
                     usage: Optional[Dict[str, Any]], request: Mapping[str, Any], completed_at: Any = None) -> Dict[str, Any]:
    """A ``response`` object in Go's field order."""
    out: Dict[str, Any] = {"id": response_id, "object": "response", "created_at": created_at, "completed_at": completed_at,
                           "status": status, "incomplete_details": None, "model": model, "previous_response_id": None,
                           "instructions": echo["instructions"], "output": output, "error": None}
    for key in ("tools", "tool_choice", "truncation", "parallel_tool_calls", "text", "top_p", "presence_penalty",
                "frequency_penalty", "top_logprobs", "temperature", "reasoning"):
        out[key] = echo[key]
    out["usage"] = usage
    out["max_output_tokens"] = request.get("max_output_tokens")
    out["max_tool_calls"] = None
    out["store"] = False
    out["background"] = bool(request.get("background"))
    out["service_tier"] = "default"
    out["metadata"] = {}
    out["safety_identifier"] = None
    out["prompt_cache_key"] = None
    return out


def _responses_usage(native: Mapping[str, Any]) -> Dict[str, Any]:
    prompt, count = native.get("prompt_eval_count"), native.get("eval_count")
    prompt = prompt if isinstance(prompt, int) else 0
    count = count if isinstance(count, int) else 0
    return {"input_tokens": prompt, "output_tokens": count, "total_tokens": prompt + count,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


def _output_text(text: str) -> Dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, status: str, content: List[Any]) -> Dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _reasoning_item(item_id: str, thinking: str) -> Dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": thinking}], "encrypted_content": thinking}


def _function_call_item(item_id: str, status: str, call: Mapping[str, Any], arguments: str) -> Dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call["id"], "name": call["function"]["name"], "arguments": arguments}


def native_chat_to_responses(native: Mapping[str, Any], model: str, response_id: str, item_id: str, request: Mapping[str, Any],
                             now: Optional[float] = None) -> Dict[str, Any]:
    """A whole native chat answer as a /v1/responses answer (ToResponse and the writer's
    completed_at): the reasoning item, then the function calls (any text beside them is
    dropped, as Ollama drops it) or the message; status always ``completed``."""
    msg = native.get("message") if isinstance(native.get("message"), dict) else {}
    output: List[Dict[str, Any]] = []
    if msg.get("thinking"):
        output.append(_reasoning_item("rs_" + response_id, msg["thinking"]))
    calls = _tool_calls_to_openai(msg.get("tool_calls")) if msg.get("tool_calls") else []
    for index, call in enumerate(calls):
        output.append(_function_call_item("fc_%s_%d" % (response_id, index), "completed", call, call["function"]["arguments"]))
    if not calls:
        output.append(_message_item(item_id, "completed", [_output_text(msg.get("content") or "")]))
    created = rfc3339_to_unix(native.get("created_at"))
    return _response_object(response_id, created if created is not None else GO_ZERO_TIME_UNIX, "completed", model,
                            _responses_echo(request, False), output, _responses_usage(native), request,
                            int(now if now is not None else time.time()))


class ResponsesStreamTranslator(StreamTranslator):
    """Native /api/chat stream objects in, /v1/responses SSE events out (ResponsesStreamConverter,
    agents-api.md §2.4): each event ``event: <type>\\ndata: <json>`` with a 0-based
    ``sequence_number``; no [DONE].  ``fail()`` ends a broken stream with ``response.failed``
    (the deliberate difference: Ollama just stops), after ``response.created`` and
    ``response.in_progress`` if nothing was sent yet."""

    dialect = OPENAI

    def __init__(self, model: str, response_id: str, item_id: str, request: Mapping[str, Any],
                 clock: Callable[[], float] = time.time, rng: Any = SystemRandom) -> None:
        super().__init__(model, response_id, include_usage=False, clock=clock)
        self.response_id = response_id
        self.item_id = item_id
        self.request = request
        self.rng = rng
        self.echo = _responses_echo(request, True)
        self.sequence = 0
        self.output_index = 0
        self.started = self.text_started = self.tools_sent = False
        self.text = ""
        self.thinking = ""
        self.reasoning_id = ""  # set while a reasoning item is open
        self.completed: List[Dict[str, Any]] = []  # items done, in output order

    def _event(self, kind: str, data: Dict[str, Any]) -> bytes:
        data["type"] = kind
        data["sequence_number"] = self.sequence
        self.sequence += 1
        # Go builds these events as maps, and marshals a map's keys sorted.
        return b"event: " + kind.encode("ascii") + b"\ndata: " + json_bytes(data, sort_keys=True) + b"\n\n"

    def _response(self, status: str, output: List[Any], usage: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        return _response_object(self.response_id, int(self.clock()), status, self.model, self.echo, output, usage, self.request)

    def _begin(self) -> List[bytes]:
        if self.started:
            return []
        self.started = True
        return [self._event("response.created", {"response": self._response("in_progress", [], None)}),
                self._event("response.in_progress", {"response": self._response("in_progress", [], None)})]

    def _finish_reasoning(self) -> List[bytes]:
        if not self.reasoning_id:
            return []
        item = _reasoning_item(self.reasoning_id, self.thinking)
        self.completed.append(item)
        index, item_id, thinking = self.output_index, self.reasoning_id, self.thinking
        self.reasoning_id, self.thinking = "", ""
        self.output_index += 1
        return [self._event("response.reasoning_summary_text.done", {"item_id": item_id, "output_index": index, "summary_index": 0, "text": thinking}),
                self._event("response.output_item.done", {"output_index": index, "item": item})]

    def _final_output(self) -> List[Any]:
        output = list(self.completed)
        if self.text_started:
            output.append(_message_item(self.item_id, "completed", [_output_text(self.text)]))
        return output

    def feed(self, native: Mapping[str, Any]) -> bytes:
        if self._finished:
            return b""
        if "error" in native:
            err = native["error"]
            return self.fail(err if isinstance(err, str) else json.dumps(err))
        out = self._begin()
        msg = native.get("message") if isinstance(native.get("message"), dict) else {}
        thinking, text, calls = msg.get("thinking") or "", msg.get("content") or "", msg.get("tool_calls") or []
        if thinking:
            if not self.reasoning_id:
                self.reasoning_id = responses_id("rs", self.rng)
                out.append(self._event("response.output_item.added", {"output_index": self.output_index,
                                                                      "item": {"id": self.reasoning_id, "type": "reasoning", "summary": []}}))
            self.thinking += thinking
            out.append(self._event("response.reasoning_summary_text.delta", {"item_id": self.reasoning_id, "output_index": self.output_index,
                                                                              "summary_index": 0, "delta": thinking}))
        if calls:
            out.extend(self._finish_reasoning())
            for offset, call in enumerate(_tool_calls_to_openai(calls)):
                index = self.output_index + offset
                item_id = "fc_%d_%d" % (self.rng.randrange(999999), offset)
                arguments = call["function"]["arguments"]
                item = _function_call_item(item_id, "completed", call, arguments)
                self.completed.append(item)
                out.append(self._event("response.output_item.added", {"output_index": index, "item": _function_call_item(item_id, "in_progress", call, "")}))
                out.append(self._event("response.function_call_arguments.delta", {"item_id": item_id, "output_index": index, "delta": arguments}))
                out.append(self._event("response.function_call_arguments.done", {"item_id": item_id, "output_index": index, "arguments": arguments}))
                out.append(self._event("response.output_item.done", {"output_index": index, "item": item}))
            self.output_index += len(calls)
            self.tools_sent = True
        elif text and not self.tools_sent:
            out.extend(self._finish_reasoning())
            if not self.text_started:
                self.text_started = True
                out.append(self._event("response.output_item.added", {"output_index": self.output_index,
                                                                      "item": _message_item(self.item_id, "in_progress", [])}))
                out.append(self._event("response.content_part.added", {"item_id": self.item_id, "output_index": self.output_index,
                                                                       "content_index": 0, "part": _output_text("")}))
            self.text += text
            out.append(self._event("response.output_text.delta", {"item_id": self.item_id, "output_index": self.output_index,
                                                                  "content_index": 0, "delta": text, "logprobs": []}))
        if native.get("done") is True:
            out.extend(self._finish_reasoning())
            if self.text_started and not self.tools_sent:
                where = {"item_id": self.item_id, "output_index": self.output_index, "content_index": 0}
                out.append(self._event("response.output_text.done", dict(where, text=self.text, logprobs=[])))
                out.append(self._event("response.content_part.done", dict(where, part=_output_text(self.text))))
                out.append(self._event("response.output_item.done", {"output_index": self.output_index,
                                                                     "item": _message_item(self.item_id, "completed", [_output_text(self.text)])}))
            response = self._response("completed", self._final_output(), _responses_usage(native))
            response["completed_at"] = int(self.clock())
            out.append(self._event("response.completed", {"response": response}))
            self._finished = True
        return b"".join(out)

    def fail(self, message: str, status: int = 500) -> bytes:
        """``response.failed`` with the error and the items done so far (the proxy's deliberate
        difference, SPEC §7.2); b"" once finished."""
        if self._finished:
            return b""
        out = self._begin()
        response = self._response("failed", self._final_output(), None)
        response["error"] = {"code": "rate_limit_exceeded" if status == 429 else "api_error", "message": message}
        out.append(self._event("response.failed", {"response": response}))
        self._finished = True
        return b"".join(out)


# ---------------------------------------------------------------------------
# 10. Embedding chunking
# ---------------------------------------------------------------------------
#
# Why this section exists.  A pooled embedding must fit in one physical batch of
# the runner, min(2048, num_ctx, training context) tokens.  Ollama sends an input
# that is longer than the batch but fits the context whole, and on some models
# and platforms llama-server then aborts instead of answering, so the client
# sees a 400 that is really a crashed runner (ollama-api.md §9).  Hence the proxy
# cuts a long input into pieces that fit, at whitespace near the limit with 10 %
# overlap, embeds the pieces, and returns one vector per input: the mean of its
# pieces' vectors weighted by their length in characters, L2-normalised again
# where Ollama normalises (/api/embed, /v1/embeddings), plain for the legacy
# /api/embeddings (SPEC §7).  Everything here is pure: text and vectors in and out.
# A "character" is a Python str character (a code point), as len() counts it.

#: A piece may end up to this fraction of the limit early, to end just after whitespace.
CUT_WINDOW = 0.2
#: The largest physical batch Ollama gives an embedding runner (num_batch defaults to min(2048, num_ctx)).
RUNNER_MAX_BATCH = 2048
DEFAULT_EMBED_CHARS = 2000  #: the chunk limit when it cannot be derived (no /api/show data)


def _nearest_cut(text: str, target: int, lo: int, hi: int, reach: int) -> Optional[int]:
    """The cut p in [lo, hi] nearest ``target`` (within ``reach``) with whitespace just before it.

    Ties go to the earlier cut.  None when there is none.
    """
    for d in range(reach + 1):
        for p in (target - d, target + d):
            if lo <= p <= hi and text[p - 1].isspace():
                return p
    return None


def split_spans(text: str, limit: int, overlap_ratio: float = 0.1) -> List[Tuple[int, int]]:
    """The (start, end) offsets of ``split_text``'s pieces.

    A piece ends just after the last whitespace character in the final CUT_WINDOW of its
    window, else exactly at the limit (a hard cut: no whitespace near, e.g. CJK or a long
    token).  The next piece starts ``overlap_ratio`` × limit characters (clamped to 0..0.5)
    before that end, moved to just after the nearest whitespace within half the overlap
    either way.  Starts and ends strictly grow and each piece starts at or before the end
    of the one before (strictly before whenever the overlap is at least one character), so
    the pieces cover the text in order and the loop always ends.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1, not %r" % (limit,))
    n = len(text)
    if n <= limit:
        return [(0, n)]
    overlap = int(limit * min(max(overlap_ratio, 0.0), 0.5))
    slack = max(1, int(limit * CUT_WINDOW))
    spans: List[Tuple[int, int]] = []
    start = prev_end = 0
    while n - start > limit:
        hard = start + limit
        lo = max(start + 1, hard - slack, prev_end + 1)  # ends strictly grow
        cut = _nearest_cut(text, hard, lo, hard, hard - lo)
        end = cut if cut is not None else hard
        spans.append((start, end))
        prev_end = end
        target = end - overlap
        lo, hi = start + 1, (end - 1 if overlap else end)  # starts strictly grow
        nudged = _nearest_cut(text, target, lo, hi, overlap // 2)
        start = nudged if nudged is not None else max(lo, min(hi, target))
    spans.append((start, n))
    return spans


def split_text(text: str, limit: int, overlap_ratio: float = 0.1) -> List[str]:
    """Pieces of at most ``limit`` characters that cover ``text`` in order (see split_spans).

    A text within the limit, the empty one included, is returned whole as the only piece.
    """
    return [text[a:b] for a, b in split_spans(text, limit, overlap_ratio)]


def plan_chunks(inputs: List[str], limit: int) -> Tuple[List[str], List[Tuple[int, int]]]:
    """All inputs' pieces in one list, and per input the (start, end) slice of its pieces there."""
    pieces: List[str] = []
    spans: List[Tuple[int, int]] = []
    for text in inputs:
        start = len(pieces)
        pieces.extend(split_text(text, limit))
        spans.append((start, len(pieces)))
    return pieces, spans


def weighted_mean(vectors: List[List[float]], weights: List[float]) -> List[float]:
    """The component-wise mean of ``vectors`` weighted by ``weights`` (equal weights if they sum to 0)."""
    if not vectors or len(vectors) != len(weights):
        raise ValueError("need one weight per vector and at least one vector")
    dim = len(vectors[0])
    if any(len(v) != dim for v in vectors):
        raise ValueError("vectors of different lengths")
    total = math.fsum(weights)
    if total <= 0:
        weights, total = [1.0] * len(vectors), float(len(vectors))
    return [math.fsum(w * v[i] for v, w in zip(vectors, weights)) / total for i in range(dim)]


def l2_normalize(vec: Sequence[float]) -> List[float]:
    """``vec`` scaled to unit Euclidean length; a zero vector stays zero."""
    norm = math.hypot(*vec)  # scaled inside: no overflow or underflow of the squares
    if norm == 0:
        return [float(x) for x in vec]
    return [x / norm for x in vec]


def combine_embeddings(vectors: List[List[float]], pieces: List[str], spans: List[Tuple[int, int]], normalize: bool) -> List[List[float]]:
    """One vector per input, in input order, from the pieces' vectors (``plan_chunks`` order).

    An input sent as one piece gets its vector exactly as the backend returned it.  A split
    input gets the mean of its pieces' vectors weighted by their length in characters,
    L2-normalised when ``normalize`` (/api/embed, /v1/embeddings), left as is otherwise
    (legacy /api/embeddings).
    """
    if len(vectors) != len(pieces):
        raise ValueError("%d vectors for %d pieces" % (len(vectors), len(pieces)))
    out: List[List[float]] = []
    for a, b in spans:
        if not 0 <= a < b <= len(pieces):
            raise ValueError("bad span (%d, %d) for %d pieces" % (a, b, len(pieces)))
        if b - a == 1:
            out.append(list(vectors[a]))
            continue
        mean = weighted_mean(vectors[a:b], [float(len(p)) for p in pieces[a:b]])
        out.append(l2_normalize(mean) if normalize else mean)
    return out


def runner_batch_tokens(num_ctx: int, training_context: int) -> int:
    """The runner's physical batch: min(2048, the num_ctx it runs with, the training context).

    0 means unknown for either.  A num_ctx above the training context is cut to it by Ollama,
    so the minimum holds either way (ollama-api.md §9).
    """
    return min([RUNNER_MAX_BATCH] + [c for c in (num_ctx, training_context) if c > 0])


def derive_embed_limit(batch_tokens: int, chars_per_token: float, margin: float = 0.1) -> int:
    """The characters per piece: tokens × characters per token × (1 - margin), rounded down, at least 1."""
    # The epsilon keeps a product that is an integer in exact arithmetic (1000 × 0.9) from flooring to one less.
    return max(1, int(math.floor(batch_tokens * chars_per_token * (1.0 - margin) + 1e-9)))


def chunk_limit_error(length: int, limit: int) -> str:
    """The 400 message for an over-long input when chunking is off."""
    return "Input too large (%d characters). Maximum is %d characters." % (length, limit)


# ---------------------------------------------------------------------------
# 11. Merged lists and metrics
# ---------------------------------------------------------------------------
#
# Theory.  With several backends, /api/tags, /api/ps and /api/version are
# composed from every healthy one's answer, by pure functions; the metrics are
# plain counters rendered in Prometheus text format.


TAG_DEFAULTS: Dict[str, Any] = {"modified_at": "1970-01-01T00:00:00Z", "size": 0, "digest": ""}


def repair_tag_entry(entry: Any) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """An /api/tags entry with the fields strict clients need: (entry, what was repaired) or
    (None, why it was dropped)."""
    if not isinstance(entry, dict):
        return None, "not an object"
    name, model = entry.get("name"), entry.get("model")
    if not isinstance(name, str) or not name.strip():
        name = model
    if not isinstance(name, str) or not name.strip():
        return None, "no name"
    fixed = dict(entry)
    repaired = []
    if fixed.get("name") != name:
        fixed["name"] = name
        repaired.append("name")
    if not isinstance(fixed.get("model"), str) or not fixed["model"]:
        fixed["model"] = name
        repaired.append("model")
    for key, default in TAG_DEFAULTS.items():
        if not isinstance(fixed.get(key), type(default)) or isinstance(fixed.get(key), bool):
            fixed[key] = default
            repaired.append(key)
    if not isinstance(fixed.get("details"), dict):
        fixed["details"] = {}
        repaired.append("details")
    return fixed, ", ".join(repaired) or None


def merge_tags(lists: Sequence[Sequence[Any]], routes: Sequence[Tuple[str, Tuple[str, ...]]] = (), aliases: Sequence[Tuple[str, str]] = (),
               list_aliases: bool = False, sources: Sequence[str] = ()) -> Tuple[List[Dict[str, Any]], List[str]]:
    """The merged /api/tags list of several backends' lists (first one wins on a duplicate name),
    only routed models when routes exist (and, given the backends' names in ``sources``, only as
    listed by a backend of the model's route), aliases appended when asked; plus warnings."""
    merged: Dict[str, Dict[str, Any]] = {}
    warnings = []
    for position, entries in enumerate(lists):
        source = sources[position] if position < len(sources) else None
        for entry in entries:
            fixed, note = repair_tag_entry(entry)
            if fixed is None:
                warnings.append("/api/tags entry %s dropped: %s" % (json.dumps(entry)[:80], note))
                continue
            if note:
                warnings.append("/api/tags entry %s repaired: %s" % (fixed["name"], note))
            key = normalize_model(fixed["name"])
            if routes:
                names = route_for(key, routes)
                if names is None or (source is not None and source not in names):
                    continue
            merged.setdefault(key, fixed)
    models = list(merged.values())
    if list_aliases:
        for alias, target in aliases:
            if is_model_pattern(alias):
                continue  # a pattern names no model to list
            entry = merged.get(normalize_model(target))
            if entry is not None and alias not in merged:
                shown = alias[: -len(":latest")] if alias.endswith(":latest") else alias
                models.append(dict(entry, name=shown, model=shown))
    return models, warnings


def merge_ps(lists: Sequence[Sequence[Any]]) -> List[Dict[str, Any]]:
    """The merged /api/ps list: every loaded model once (the first backend's entry)."""
    merged: Dict[str, Dict[str, Any]] = {}
    for entries in lists:
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("name") or entry.get("model"), str):
                merged.setdefault(normalize_model(entry.get("name") or entry.get("model")), entry)
    return list(merged.values())


def version_key(version: str) -> Tuple[Tuple[int, ...], int, Tuple[Tuple[int, Any], ...]]:
    """Order of Ollama version strings: 0.12.3 < 0.12.10, 0.12 == 0.12.0; a pre-release
    (0.13.0-rc9 < 0.13.0-rc10) before its release."""
    core, _, pre = version.strip().lstrip("v").partition("-")
    numbers = [int(p) if p.isdigit() else 0 for p in core.split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    pre_key = tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|\D+", pre))
    return tuple(numbers), 0 if pre else 1, pre_key


def lowest_version(versions: Sequence[str]) -> Optional[str]:
    return min(versions, key=version_key) if versions else None


# -- metrics (SPEC §8) ------------------------------------------------------------------------

LATENCY_BUCKETS: Tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_METRIC_PREFIX = "ollama_proxy_"
_MODIFIED_PREFIX = "modified_"
_METADATA_EVENTS = {"metadata_hit": "hit", "metadata_fetch": "fetch", "metadata_shared": "shared"}
_SINGLE_COUNTERS = {  # event -> (family, help); always rendered, 0 before the first event
    "oom_fallback": ("oom_fallbacks_total", "Requests retried with a smaller num_ctx after an out-of-memory error."),
    "chunked_inputs": ("chunked_inputs_total", "Embedding inputs split into pieces."),
    "chunk_pieces": ("chunk_pieces_total", "Pieces sent upstream for chunked embedding inputs."),
}


_BACKEND_EVENTS = {  # Fleet.count's event -> (family, help), each by backend (SPEC §6, health from real traffic)
    "request_failure": ("backend_request_failures_total", "Forwarded requests that failed their backend (a transport failure, a 5xx, "
                        "silence past --request-timeout, a stream that broke; not a 4xx or a client that left), by backend."),
    "ejection": ("ejections_total", "Backends ejected for a cool-off after failed requests in a row, or again after a failed trial, by backend."),
    "trial": ("ejection_trials_total", "Trial requests sent to an ejected backend after its cool-off, by backend."),
    "recovery": ("ejection_recoveries_total", "Ejected backends whose trial request succeeded, by backend."),
}


def prom_float(value: float) -> str:
    """A sample value or ``le`` bound in the exposition format: repr precision, +Inf, -Inf, NaN."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def prom_escape(value: str) -> str:
    """A label value, escaped: backslash, double quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _prom_labels(pairs: List[Tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join('%s="%s"' % (name, prom_escape(str(value))) for name, value in pairs) + "}"


class Metrics:
    """Counters, gauges and the latency histogram behind ``GET /__proxy/metrics`` (SPEC §8).

    Plain mutable state, no I/O: the server calls ``observe_request`` once per finished
    request and ``count`` per event; ``render`` takes the live values (in flight, health,
    queue depth) from the caller and returns Prometheus text format 0.0.4.
    """

    def __init__(self, start_time: float) -> None:
        self.start_time = start_time
        self.requests: Dict[Tuple[str, str, str], int] = {}  #: (route, status, backend) -> count
        self.latency_buckets: Dict[str, List[int]] = {}  #: route -> per-bucket counts (not cumulative), +Inf last
        self.latency_sum: Dict[str, float] = {}
        self.latency_count: Dict[str, int] = {}
        self.tokens_generated: Dict[str, int] = {}  #: model -> eval_count total
        self.tokens_per_s: Dict[str, float] = {}  #: model -> tokens/s of its last answer with final stats
        self.events: Dict[str, int] = {}  #: event name -> count
        self.truncated: Dict[str, int] = {}  #: model -> prompts Ollama truncated (SPEC §5)
        self.reloads_avoided: Dict[str, int] = {}  #: model -> requests sent at the loaded context instead of another size
        self.backend_events: Dict[Tuple[str, str], int] = {}  #: (event, backend) -> count: ejection, trial, recovery, request_failure
        self.recent = Recent()  #: the last requests and minutes, for the status page (SPEC §8)

    def observe_request(
        self,
        route: str,
        status: int,
        backend: str,
        seconds: float,
        eval_count: int = 0,
        tokens_per_s: float = 0.0,
        model: str = "",
    ) -> None:
        """Count one finished request; ``seconds`` < 0 or NaN means no upstream exchange (not observed)."""
        key = (route, str(status), backend)
        self.requests[key] = self.requests.get(key, 0) + 1
        if seconds >= 0 and seconds != float("inf"):
            counts = self.latency_buckets.get(route)
            if counts is None:
                counts = self.latency_buckets[route] = [0] * (len(LATENCY_BUCKETS) + 1)
            index = len(LATENCY_BUCKETS)
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    index = i
                    break
            counts[index] += 1
            self.latency_sum[route] = self.latency_sum.get(route, 0.0) + seconds
            self.latency_count[route] = self.latency_count.get(route, 0) + 1
        if eval_count > 0:
            self.tokens_generated[model] = self.tokens_generated.get(model, 0) + eval_count
        if tokens_per_s > 0:
            self.tokens_per_s[model] = tokens_per_s

    def count(self, event: str, n: int = 1) -> None:
        """Add ``n`` to the named event counter (``modified_num_ctx``, ``chunk_pieces``, ...)."""
        self.events[event] = self.events.get(event, 0) + n

    def count_truncated(self, model: str) -> None:
        self.truncated[model] = self.truncated.get(model, 0) + 1

    def count_reload_avoided(self, model: str) -> None:
        self.reloads_avoided[model] = self.reloads_avoided.get(model, 0) + 1

    def count_backend(self, event: str, backend: str) -> None:
        """One of a backend's health events from real traffic (the names of _BACKEND_EVENTS)."""
        key = (event, backend)
        self.backend_events[key] = self.backend_events.get(key, 0) + 1

    def render(self, in_flight: Dict[str, int], healthy: Dict[str, bool], queue_depth: int,
               ejected: Optional[Dict[str, bool]] = None) -> str:
        """Every metric family in Prometheus text format 0.0.4, ending with a newline."""
        out: List[str] = []

        def family(name: str, kind: str, help_text: str, samples: List[Tuple[str, List[Tuple[str, str]], Any]]) -> None:
            full = _METRIC_PREFIX + name
            out.append("# HELP %s %s" % (full, help_text.replace("\\", "\\\\").replace("\n", "\\n")))
            out.append("# TYPE %s %s" % (full, kind))
            for suffix, labels, value in samples:
                out.append("%s%s%s %s" % (full, suffix, _prom_labels(labels), prom_float(value)))

        family("up", "gauge", "1 while the proxy is serving.", [("", [], 1)])
        family("start_time_seconds", "gauge", "Unix time the proxy started.", [("", [], float(self.start_time))])
        family(
            "requests_total",
            "counter",
            "Requests answered, by route, status and backend.",
            [("", [("route", r), ("status", s), ("backend", b)], n) for (r, s, b), n in sorted(self.requests.items())],
        )
        family(
            "in_flight",
            "gauge",
            "Requests in progress, by backend.",
            [("", [("backend", b)], int(n)) for b, n in sorted(in_flight.items())],
        )
        hist: List[Tuple[str, List[Tuple[str, str]], Any]] = []
        for route in sorted(self.latency_buckets):
            running = 0
            counts = self.latency_buckets[route]
            for bound, n in zip(list(LATENCY_BUCKETS) + [float("inf")], counts):
                running += n
                hist.append(("_bucket", [("route", route), ("le", prom_float(float(bound)))], running))
            hist.append(("_sum", [("route", route)], float(self.latency_sum[route])))
            hist.append(("_count", [("route", route)], self.latency_count[route]))
        family("upstream_seconds", "histogram", "Upstream latency in seconds, by route.", hist)
        family(
            "tokens_generated_total",
            "counter",
            "Tokens generated (eval_count from Ollama's final stats), by model.",
            [("", [("model", m)], n) for m, n in sorted(self.tokens_generated.items())],
        )
        family(
            "tokens_per_second",
            "gauge",
            "Generation speed of the last answer with final stats, by model.",
            [("", [("model", m)], float(v)) for m, v in sorted(self.tokens_per_s.items())],
        )
        family(
            "truncated_prompts_total",
            "counter",
            "Prompts (and embedding inputs) that Ollama truncated to the context they ran with, by model.",
            [("", [("model", m)], n) for m, n in sorted(self.truncated.items())],
        )
        family(
            "reloads_avoided_total",
            "counter",
            "Requests sent at the context their model is loaded with instead of the size the proxy would otherwise have chosen "
            "(no reload), by model.",
            [("", [("model", m)], n) for m, n in sorted(self.reloads_avoided.items())],
        )
        modified = sorted((e[len(_MODIFIED_PREFIX) :], n) for e, n in self.events.items() if e.startswith(_MODIFIED_PREFIX))
        family(
            "modifications_total",
            "counter",
            "Request modifications made by the proxy, by modifier.",
            [("", [("modifier", m)], n) for m, n in modified],
        )
        for event, (name, help_text) in _SINGLE_COUNTERS.items():
            family(name, "counter", help_text, [("", [], self.events.get(event, 0))])
        family(
            "metadata_lookups_total",
            "counter",
            "Model metadata (/api/show) cache lookups: hit, fetch, or shared with a fetch in progress.",
            [("", [("result", r)], self.events.get(e, 0)) for e, r in _METADATA_EVENTS.items()],
        )
        other = sorted((e, n) for e, n in self.events.items() if not e.startswith(_MODIFIED_PREFIX) and e not in _METADATA_EVENTS and e not in _SINGLE_COUNTERS)
        family("events_total", "counter", "Other proxy events, by name.", [("", [("event", e)], n) for e, n in other])
        family("queue_depth", "gauge", "Requests waiting for a backend.", [("", [], int(queue_depth))])
        family(
            "backend_healthy",
            "gauge",
            "1 if the backend passed its last health check, else 0.",
            [("", [("backend", b)], 1 if ok else 0) for b, ok in sorted(healthy.items())],
        )
        family(
            "backend_ejected",
            "gauge",
            "1 while the backend is ejected after failed requests (its cool-off, then its trial), else 0.",
            [("", [("backend", b)], 1 if out_now else 0) for b, out_now in sorted((ejected or {}).items())],
        )
        for event, (name, help_text) in _BACKEND_EVENTS.items():
            family(name, "counter", help_text,
                   [("", [("backend", b)], n) for (e, b), n in sorted(self.backend_events.items()) if e == event])
        return "\n".join(out) + "\n"


# -- the status page's memory (SPEC §8): the last requests, the last minutes ------------------

RECENT_REQUESTS = 100  #: finished requests the status page lists
SERIES_MINUTES = 15  #: minutes its charts span
#: The fields of one ``Recent.ring`` entry, a plain tuple made by ``log_access`` (nothing else per request).
RECENT_FIELDS = ("finished", "duration", "method", "client_path", "path", "model", "client_model", "rename", "backend", "status",
                 "rate", "changes", "truncated", "error")


def is_failed_request(status: int, error: Optional[str]) -> bool:
    """A failed request as the status page counts it: a 5xx, no answer at all, or an error after a
    good head (a stream that broke); not a 4xx, nor a client that left (499)."""
    return status >= 500 or status == 0 or (error is not None and status < 400)


def iso_ms(unix: float) -> str:
    """``2026-12-03T09:15:16.123Z``: a Unix time in UTC, to the millisecond."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix)) + ".%03dZ" % int(unix % 1 * 1000)


class Recent:
    """What the status page shows of the past (SPEC §8), bounded in memory: the last
    ``RECENT_REQUESTS`` finished requests, each the tuple of ``RECENT_FIELDS`` that ``add`` appends
    to a deque; and per minute of the monotonic clock (a list [minute, requests, failed, tokens,
    deepest queue, {backend: [requests, failed, tokens]}]) the last ``SERIES_MINUTES``.  Owned by
    Metrics; ``add`` is the only per-request cost, the JSON is built when it is asked for."""

    def __init__(self, size: int = RECENT_REQUESTS, minutes: int = SERIES_MINUTES) -> None:
        self.ring: "collections.deque[tuple]" = collections.deque(maxlen=size)
        self.minutes: "collections.deque[list]" = collections.deque(maxlen=minutes + 1)  #: the current one, partly over, too

    def _bucket(self, minute: int) -> list:
        minutes = self.minutes
        if minutes and minutes[-1][0] == minute:
            return minutes[-1]
        bucket = [minute, 0, 0, 0, 0, {}]
        minutes.append(bucket)
        return bucket

    def add(self, entry: tuple) -> None:
        """One finished request (``RECENT_FIELDS``; ``finished`` is time.monotonic())."""
        self.ring.append(entry)
        minutes = self.minutes
        minute = int(entry[0] // 60)
        bucket = minutes[-1] if minutes and minutes[-1][0] == minute else self._bucket(minute)
        status, error, rate, backend = entry[9], entry[13], entry[10], entry[8]
        failed = 1 if status >= 500 or status == 0 or (error is not None and status < 400) else 0  # is_failed_request, inline
        tokens = rate[0] if rate else 0
        bucket[1] += 1
        bucket[2] += failed
        bucket[3] += tokens
        if backend is not None:
            per = bucket[5].get(backend)
            if per is None:
                per = bucket[5][backend] = [0, 0, 0]
            per[0] += 1
            per[1] += failed
            per[2] += tokens

    def sample_queue(self, depth: int, now: float) -> None:
        """The queue's depth at monotonic time ``now`` (each probe round, each status asked): the
        deepest of a minute is charted."""
        bucket = self._bucket(int(now // 60))
        if depth > bucket[4]:
            bucket[4] = depth


def describe_change(change: Any) -> Dict[str, Any]:
    """One modification of a request (a ``Change``) as the status page shows it."""
    return {"modifier": change.modifier, "what": change.what, "old": change.old, "new": change.new, "reason": change.reason}


def recent_request_json(entry: tuple, wall_offset: float) -> Dict[str, Any]:
    """One ring entry (``RECENT_FIELDS``) as JSON; ``wall_offset`` is time.time() - time.monotonic()."""
    (finished, duration, method, client_path, path, model, client_model, rename, backend, status, rate, changes, truncated,
     error) = entry
    asked = rename[1].decode("utf-8", "replace") if rename else (client_model or model)
    return {
        "time": iso_ms(finished - duration + wall_offset),
        "method": method.decode("latin-1"),
        "path": client_path,
        "upstream_path": path,
        "model": model,
        "model_asked": asked,
        "backend": backend,
        "status": status,
        "duration_s": round(duration, 4),
        "eval_count": rate[0] if rate else None,
        "tokens_per_s": round(rate[1], 1) if rate else None,
        "changes": [describe_change(c) for c in changes],
        "truncated_at": truncated or None,
        "error": error,
        "failed": is_failed_request(status, error),
    }


def minute_series(buckets: Sequence[list], minute_now: int, wall_offset: float, minutes: int = SERIES_MINUTES) -> List[Dict[str, Any]]:
    """The last ``minutes`` minutes, oldest first, ending with the current one (``minute_now``, of
    the monotonic clock): each minute's start as a Unix time, its requests, failed requests, tokens
    generated, deepest queue, and the same by backend; a minute without data is zeros."""
    by_minute = {b[0]: b for b in buckets}
    out = []
    for minute in range(minute_now - minutes + 1, minute_now + 1):
        bucket = by_minute.get(minute)
        row: Dict[str, Any] = {"start": round(minute * 60 + wall_offset, 3), "requests": 0, "failed": 0, "tokens": 0, "queue_max": 0, "backends": {}}
        if bucket is not None:
            row.update(requests=bucket[1], failed=bucket[2], tokens=bucket[3], queue_max=bucket[4],
                       backends={name: {"requests": r, "failed": f, "tokens": t} for name, (r, f, t) in sorted(bucket[5].items())})
        out.append(row)
    return out


def backend_state(report: Mapping[str, Any]) -> Tuple[str, str]:
    """(state, why) of one backend report (``Fleet.report``), the status page's verdict: "ejected"
    (by real traffic), "down" (its probes fail), "failing" (up, but its last requests failed) or
    "healthy"; why is "" when healthy."""
    if report.get("ejected"):
        if report.get("trial_in_progress"):
            return "ejected", "trial request in flight after %d failed requests (last: %s)" % (
                report.get("consecutive_failures") or 0, report.get("last_request_failure") or "?")
        return "ejected", "%d failed requests in a row (last: %s), cool-off %ss until %s" % (
            report.get("consecutive_failures") or 0, report.get("last_request_failure") or "?",
            prom_float(report.get("cool_off_seconds") or 0), report.get("ejected_until"))
    if not report.get("healthy"):
        return "down", report.get("last_error") or ("not probed yet" if not report.get("probed") else "not answering its probes")
    if report.get("consecutive_failures"):
        return "failing", "%d failed requests in a row (last: %s)" % (report["consecutive_failures"], report.get("last_request_failure") or "?")
    return "healthy", ""


def status_report(reports: Sequence[Dict[str, Any]], queue: Dict[str, Any], recent: Recent, mono_now: float, wall_now: float,
                  start_time: float) -> Dict[str, Any]:
    """GET /__proxy/status (SPEC §8): the backends (their reports with a state and why), the
    queue, the last requests (newest first) and the per-minute series."""
    offset = wall_now - mono_now
    backends = []
    for report in reports:
        state, why = backend_state(report)
        backends.append(dict(report, state=state, why=why))
    return {
        "version": __version__,
        "time": iso_ms(wall_now),
        "uptime_s": round(wall_now - start_time, 1),
        "backends": backends,
        "queue": queue,
        "recent": [recent_request_json(e, offset) for e in reversed(recent.ring)],
        "recent_limit": recent.ring.maxlen,
        "series": minute_series(list(recent.minutes), int(mono_now // 60), offset),
        "series_minutes": SERIES_MINUTES,
    }


#: Route labels for the metrics; anything else is "other", so clients cannot grow the label set.
METRIC_ROUTES = frozenset(MODEL_PATHS | {"/", "/api/version", "/api/tags", "/api/ps", "/api/copy", "/api/blobs", "/api/status",
                                          "/v1/models", "/__proxy/metrics"})


def metric_route(path: str) -> str:
    if path.startswith("/api/blobs/"):
        return "/api/blobs"
    if path.startswith("/v1/models/"):
        return "/v1/models"
    return path if path in METRIC_ROUTES else "other"


# ---------------------------------------------------------------------------
# 12. Server and request handling
# ---------------------------------------------------------------------------
#
# Theory.  One task per client connection runs a loop of request cycles.  The
# head of a request is read under --header-timeout (--idle-timeout while the
# keep-alive connection waits for its next request).  A body is read whole
# (bounded at 64 MiB) except for uploads, which stream to the backend.  Then the
# relay: connect or reuse, send, wait for the response head, copy the body one
# socket read at a time (one client write per read).  While the relay runs, a
# watcher task reads the client socket: EOF means the client left, so the
# connection task is cancelled and the upstream socket closed, which stops
# Ollama.  Bytes mean a pipelined request: kept for the next cycle.  Errors
# before the response head become a status; after it, one in-band error line.
#
# Who does what: RequestReader reads a request (access, prefixes, body, /v1
# translation, aliases) into an Exchange; OwnEndpoints answers the proxy's own
# paths; for the rest App runs the attempts: the Scheduler gives a backend, the
# Planner builds the Attempt for it afresh from the request, the Relay copies or
# translates the answer, and the Planner learns from it.

_EVAL_COUNT_RE = re.compile(rb'"eval_count"\s*:\s*(\d+)')
_PROMPT_EVAL_RE = re.compile(rb'"prompt_eval_count"\s*:\s*(\d+)')
_EVAL_DURATION_RE = re.compile(rb'"eval_duration"\s*:\s*(\d+)')
_DONE_RE = re.compile(rb'"done"\s*:\s*true')
MAX_TRANSLATED_BODY = 1024 * 1024 * 1024  #: a native answer the proxy translates is read whole, up to this
MAX_LINE_BYTES = MAX_JSON_BODY  #: a streamed NDJSON line or SSE event longer than this ends the stream in-band
#: /v1 endpoints translated to the native API.
TRANSLATED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses"})
GENERATION_PATHS = frozenset({"/api/chat", "/api/generate"})  #: native endpoints with a prompt and an answer
EMBED_NATIVE_PATHS = frozenset({"/api/embed", "/api/embeddings"})  #: native endpoints whose inputs may be chunked
SHUTDOWN_SETTLE_SECONDS = 0.5  #: at most this long at the end of a shutdown for accepts in flight to close
SHUTDOWN_ACCEPT_TURNS = 3  #: loop turns between the last accept and closing the listener
#: Native endpoints whose requests the modifiers adjust.
MODIFIED_PATHS = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings"})


class Request(NamedTuple):
    """A request as RequestReader read it: what the client asked for, parsed once.  Immutable:
    each stage of reading makes the next (``_replace``), and every attempt is built from it."""

    target: bytes  #: as it goes upstream (prefixes read off, translated)
    path: str  #: the target's path
    route: str  #: the path the client asked for (before translation), for metrics and the error shape
    headers: Headers
    forced_ctx: Any = None  #: from /proxy-context/<N|auto>/
    pinned: Optional[Backend] = None  #: named by /proxy-backend/<NAME>/
    body: Optional[bytes] = None  #: as the client sent it (None: not read, an upload)
    json: Any = None  #: the parsed body, where the proxy needs it (MODEL_PATHS); never edited
    model: Optional[str] = None
    streaming: bool = False  #: the answer will be a stream
    kind: Optional[str] = None  #: a translated /v1 request: "chat", "completion", "embeddings", "messages" or "responses"
    client_model: str = ""  #: the model name as the client sent it (answers repeat it)
    request_id: str = ""
    include_usage: bool = False
    encoding_format: str = "float"
    estimate: int = 0  #: /v1/messages: Ollama's own input-token estimate, for message_start
    echo: Any = None  #: /v1/responses: the client's request, which the answer's response object repeats
    rename: Optional[Tuple[bytes, bytes]] = None  #: an alias: (model sent upstream, name the client used) for the answer
    dirty: bool = False  #: ``json`` no longer matches ``body`` (translated, alias resolved): each attempt encodes it
    repair_tags: bool = False  #: one backend's /api/tags: relayed as it is unless an entry needs repair


@dataclass
class Exchange:
    """One request cycle: the request, and what became of it (for the relay and the access log)."""

    conn_id: int
    method: bytes
    client_path: str  #: the path exactly as the client sent it, for every log line
    started: float
    request: Request
    status: int = 0
    backend: Optional[str] = None
    response_started: bool = False  #: the response head reached the client
    line_framed: bool = False  #: the body is NDJSON or SSE with chunked/close framing: an error line can end it
    tail: bytes = b""  #: the last bytes of the response body (for the final stats)
    error: Optional[str] = None
    num_ctx: int = 0  #: the num_ctx of the attempt that went up (0: none)
    num_ctx_changed: bool = False  #: the proxy set or changed it (X-Ollama-Proxy-Num-Ctx)
    translator: Any = None  #: the StreamTranslator of a translated stream once it began (it ends a broken one)
    changes: Sequence[Any] = ()  #: the Changes the modifiers made to the attempt that went up (the status page)
    truncated: int = 0  #: the context Ollama truncated the prompt to (0: it did not)

    @property
    def dialect(self) -> str:
        """The API the client speaks (NATIVE, OPENAI, ANTHROPIC): errors in its shape, its streams as SSE."""
        return dialect_of(self.request.route)

    def label(self) -> str:
        """How each log line of this request starts: ``conn 7: POST /v1/chat/completions model=llama3.2``."""
        text = "conn %d: %s %s" % (self.conn_id, self.method.decode("latin-1"), self.client_path)
        model = self.request.model
        return text + " model=" + model if model else text


def tokens_per_second(tail: bytes) -> Optional[Tuple[int, float]]:
    """(eval_count, tokens/s) from the last bytes of an Ollama answer (its final stats), if any."""
    count = _EVAL_COUNT_RE.search(tail)
    duration = _EVAL_DURATION_RE.search(tail)
    if not count or not duration or int(duration.group(1)) <= 0:
        return None
    n = int(count.group(1))
    return n, n / (int(duration.group(1)) / 1e9)


def rename_model(data: bytes, real: bytes, alias: bytes) -> bytes:
    """Every ``"model":"<real>"`` in an answer (JSON, NDJSON lines, SSE events) names ``alias`` instead."""
    if real not in data:
        return data
    pattern = re.compile(rb'("model"\s*:\s*")' + re.escape(real) + rb'"')
    return pattern.sub(lambda m: m.group(1) + alias + b'"', data)


def wants_stream(path: str, obj: Any) -> bool:
    """Would Ollama stream the answer to this request (ollama-api.md §3.0, §6.1)?"""
    flag = obj.get("stream") if isinstance(obj, dict) else None
    if path in STREAM_BY_DEFAULT:
        return flag is not False
    if path in STREAM_ON_REQUEST:
        return flag is True
    return False


def has_final_line(tail: bytes) -> bool:
    """Does the last NDJSON line of a native stream close it (``"done": true``) or report an error?
    ``tail`` must hold that whole line: a generate answer's last line carries its ``context``
    array between ``done`` and the stats, kilobytes long."""
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return _DONE_RE.search(last) is not None or b'"error"' in last


def parse_context_url(target: bytes) -> Tuple[Any, bytes]:
    """``/proxy-context/<N|auto>/<path>`` -> (N or "auto", the target without the prefix).

    Raises BadRequest for a size that is not a positive integer.
    """
    rest = target[len(b"/proxy-context/") :]
    size, _, remainder = rest.partition(b"/")
    new_target = b"/" + remainder
    if size == b"auto":
        return "auto", new_target
    if size.isdigit() and int(size) > 0:
        return int(size), new_target
    raise BadRequest("/proxy-context/%s/: the size must be a positive number or 'auto'" % size.decode("latin-1"))


def parse_backend_url(target: bytes) -> Tuple[str, bytes]:
    """``/proxy-backend/<NAME>/<path>`` -> (NAME, the target without the prefix)."""
    rest = target[len(b"/proxy-backend/") :]
    name, _, remainder = rest.partition(b"/")
    if not name:
        raise BadRequest("/proxy-backend/<NAME>/<path>: no backend name")
    return percent_decode(name.decode("latin-1")), b"/" + remainder


def split_target(target: bytes) -> Tuple[str, str]:
    """(path, query) of a request target; the path is percent-decoded only for matching."""
    text = target.decode("latin-1")
    path, _, query = text.partition("?")
    return path, query


@dataclass
class Attempt:
    """One try of a request on one backend, built afresh from the request by ``Planner.prepare``:
    a retry elsewhere starts from the request again, so there is nothing to undo."""

    backend: Backend
    body: Optional[Dict[str, Any]]  #: the JSON body as it goes up (None: not a JSON object)
    data: bytes  #: the bytes that go up
    num_ctx: int = 0  #: the num_ctx sent (0: none)
    num_ctx_changed: bool = False  #: the proxy set or changed num_ctx (X-Ollama-Proxy-Num-Ctx)
    chosen_ctx: int = 0  #: a num_ctx the proxy chose: eligible for the out-of-memory fallback
    prompt_chars: int = 0  #: prompt characters, to calibrate characters per token
    chunks: Optional[Tuple[List[str], List[Tuple[int, int]]]] = None  #: embedding pieces and, per input, their span


def attempt_body(body: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of a request body that the modifiers and the chunking may change: they set top-level
    keys and keys of "options", and replace (never edit) "input"; nothing else is touched."""
    copy = dict(body)
    options = body.get("options")
    if isinstance(options, dict):
        copy["options"] = dict(options)
    return copy


def attempt_num_predict(attempt: Attempt) -> int:
    """The num_predict an attempt sent (0: none, or unlimited), to tell a context that ran out
    from a generation that reached its limit."""
    options = attempt.body.get("options") if attempt.body is not None else None
    value = options.get("num_predict") if isinstance(options, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class Planner:
    """What goes up for a request on a given backend, and what its answer teaches (SPEC §4, §5, §7).

    ``prepare`` builds an ``Attempt``: the modifiers, then the embedding plan; ``smaller`` the one
    retry with a smaller context after an out-of-memory load; ``learn`` reads the answer's token
    count; ``need`` is the context a request needs, for the choice; ``preload`` loads the
    --preload models with what their requests will get.
    """

    def __init__(self, config: Config, models: Models, fleet: Fleet, metrics: Metrics) -> None:
        self.config = config
        self.models = models
        self.fleet = fleet
        self.metrics = metrics
        self._preloads: set = set()  #: preload tasks in progress

    async def prepare(self, ex: Exchange, backend: Backend) -> Attempt:
        """The request as it goes to ``backend``; the body is re-encoded only if something changed."""
        body = attempt_body(ex.request.json) if isinstance(ex.request.json, dict) else None
        attempt = Attempt(backend, body, ex.request.body or b"")
        changed = ex.request.dirty
        if ex.method == b"POST" and body is not None:
            if ex.request.kind == "messages" and "think" in body and ex.request.model:
                changed = await self._relax_thinking(ex, attempt, body) or changed
            if ex.request.path in MODIFIED_PATHS and ex.request.model:
                changed = await self._modify(ex, attempt, body) or changed
            if ex.request.path in EMBED_NATIVE_PATHS:
                changed = self._plan_embedding(ex, attempt, body) or changed
        if changed and body is not None:
            attempt.data = json_bytes(body)
        return attempt

    async def _relax_thinking(self, ex: Exchange, attempt: Attempt, body: Dict[str, Any]) -> bool:
        """/v1/messages asks for thinking of a model that cannot think: Ollama's middleware relaxes
        ``think`` to unset (agents-api.md §1.3), where /api/chat would answer 400; so does the proxy."""
        assert ex.request.model is not None
        info = await self.models.info(attempt.backend, normalize_model(ex.request.model))
        if info is None or not info.capabilities or "thinking" in info.capabilities:
            return False
        log.debug("%s: %s does not support thinking, relaxing thinking to nil", ex.label(), ex.request.model)
        del body["think"]
        return True

    async def _modify(self, ex: Exchange, attempt: Attempt, body: Dict[str, Any]) -> bool:
        """Run the request modifiers on ``body``; True if one of them changed it."""
        assert ex.request.model is not None
        backend = attempt.backend
        model = normalize_model(ex.request.model)
        options = body.get("options")
        info = None
        # /api/show only when num_ctx may be set or capped (a client's value is capped even with mode off).
        if context_source(self.config, model, None, ex.request.forced_ctx)[0] != "off" or (isinstance(options, dict) and options.get("num_ctx") is not None):
            info = await self.models.info(backend, model)
        prompt = prompt_size(ex.request.path, body) if ex.request.path in GENERATION_PATHS else None
        ctx = ModifyContext(
            path=ex.request.path,
            body=body,
            model=model,
            config=self.config,
            info=info,
            forced_ctx=ex.request.forced_ctx,
            loaded_ctx=backend.loaded.get(model, 0),
            chars_per_token=self.models.ratio(model),
            ceiling=self.models.ceiling(backend, model),
            embed_limit=self.config.max_embed_chars if self.config.chunking else 0,
            prompt=prompt,
        )
        changes = apply_modifiers(ctx)
        ex.changes = changes  #: this attempt's (a retry elsewhere is prepared afresh)
        if ctx.reload_avoided:
            self.metrics.count_reload_avoided(model)
        if prompt is not None:
            attempt.prompt_chars = prompt[0]  # for the calibration against Ollama's prompt_eval_count
        options = body.get("options")
        num_ctx = options.get("num_ctx") if isinstance(options, dict) else None
        attempt.num_ctx = num_ctx if isinstance(num_ctx, int) and not isinstance(num_ctx, bool) else 0
        if not changes:
            return False
        attempt.chosen_ctx = ctx.chosen_ctx
        for change in changes:
            self.metrics.count("modified_" + change.modifier)
            if change.modifier == "num_ctx":
                attempt.num_ctx_changed = True
            extra = {"fields": {"event": "modification", "conn": ex.conn_id, "model": model, "modifier": change.modifier,
                                "old": change.old, "new": change.new, "reason": change.reason}} if log.fields_wanted else None
            log.log(logging.WARNING if change.warn else logging.INFO, "conn %d: %s %s: %s", ex.conn_id, ex.method.decode("latin-1"), ex.client_path,
                    change.describe(model), extra=extra)
        return True

    def _embed_limit(self, model: str, attempt: Attempt) -> int:
        """--max-embed-chars, or (0) what the model's runner batch holds in characters (SPEC §7)."""
        if self.config.max_embed_chars > 0:
            return self.config.max_embed_chars
        training = self.models.trained(attempt.backend, model)
        if not training:
            return DEFAULT_EMBED_CHARS
        batch = runner_batch_tokens(attempt.num_ctx or training, training)
        return derive_embed_limit(batch, self.models.ratio(model))

    def _plan_embedding(self, ex: Exchange, attempt: Attempt, body: Dict[str, Any]) -> bool:
        """Split inputs over the limit into pieces (or refuse them with chunking off); True if
        ``body`` changed."""
        legacy = ex.request.path == "/api/embeddings"
        raw = body.get("prompt") if legacy else body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
            return False  # Ollama answers what it makes of it
        model = normalize_model(ex.request.model or "")
        limit = self._embed_limit(model, attempt)
        longest = max(len(i) for i in inputs)
        attempt.prompt_chars = sum(len(i) for i in inputs)
        if longest <= limit:
            return False
        if not self.config.chunking:
            raise BadRequest(chunk_limit_error(longest, limit))
        pieces, spans = plan_chunks(inputs, limit)
        attempt.chunks = (pieces, spans)
        attempt.prompt_chars = sum(len(p) for p in pieces)  # what goes up, and what Ollama counts
        for index, (start, end) in enumerate(spans):
            if end - start > 1:
                log.info("%s: embedding input %d: %d characters -> %d pieces of at most %d", ex.label(), index, len(inputs[index]), end - start, limit)
        self.metrics.count("chunked_inputs", sum(1 for s, e in spans if e - s > 1))
        self.metrics.count("chunk_pieces", len(pieces))
        if legacy:
            return False  # its pieces go one by one (Forwarder._embed_legacy_chunked)
        body["input"] = pieces
        return True

    def smaller(self, ex: Exchange, attempt: Attempt, status: int, message: str) -> Optional[Attempt]:
        """A num_ctx the proxy chose is explicit to Ollama, which then does not fall back on its own
        when the load runs out of memory (ollama-api.md §7.2): the attempt again with the next
        smaller size, once; None when the error is another or there is no smaller size."""
        smaller = next_smaller_size(attempt.chosen_ctx, self.config.context_sizes)
        if not attempt.chosen_ctx or attempt.body is None or not is_load_failure(status, message) or not smaller:
            return None
        backend = attempt.backend
        log.warning("%s: num_ctx %d -> %d (%s: the backend %s could not load it: %s)", ex.label(), attempt.chosen_ctx, smaller, ex.request.model,
                    backend.name, message)
        self.metrics.count("oom_fallback")
        ex.changes = [c for c in ex.changes if c.modifier != "num_ctx"] + [
            Change("num_ctx", "num_ctx", attempt.chosen_ctx, smaller, "%s could not load it: %s" % (backend.name, message))]
        self.models.record_oom(backend, normalize_model(ex.request.model or ""), smaller)  # do not ask for the failing size again
        body = dict(attempt.body)
        body["options"] = dict(body["options"], num_ctx=smaller)
        return dataclasses.replace(attempt, body=body, data=json_bytes(body), num_ctx=smaller, chosen_ctx=0)

    def need(self, ex: Exchange, model: str) -> int:
        """The num_ctx this request will be sent with, as far as the choice needs it: an explicit
        one, or (auto mode) the size its prompt needs; 0 when any loaded context will do."""
        body = ex.request.json if isinstance(ex.request.json, dict) else {}
        source, value = context_source(self.config, model, client_num_ctx(body), ex.request.forced_ctx)
        if value is not None:
            return value
        if source == "auto" and ex.request.path in GENERATION_PATHS:
            chars, images = prompt_size(ex.request.path, body)
            # A loaded context at least this large holds the request: auto mode keeps it (no reload).
            return needed_context(estimate_tokens(chars, images, self.models.ratio(model)), response_budget(ex.request.path, body))
        return 0

    # -- after the answer --------------------------------------------------------

    def learn(self, ex: Exchange, attempt: Attempt) -> None:
        """After an answer: what the model is now loaded with, and Ollama's own token count."""
        if ex.status != 200 or ex.request.model is None or ex.error is not None:
            return  # an answer that ended in an error (e.g. a failed load after the heartbeat) teaches nothing
        backend = attempt.backend
        model = normalize_model(ex.request.model)
        trained = self.models.trained(backend, model)
        if model not in backend.loaded:
            self.fleet.wake()  # a new load may have evicted another model: read /api/ps soon
        num_ctx = attempt.num_ctx
        if num_ctx:
            backend.loaded[model] = min(num_ctx, trained) if trained else num_ctx
        chars = attempt.prompt_chars
        if not ex.tail or (chars < MIN_CALIBRATION_CHARS and chars * 2 < (num_ctx or 2048)):
            return  # too short to teach anything or to have been truncated (at least a character a token)
        match = _PROMPT_EVAL_RE.search(ex.tail)
        if match is None:
            return
        count = int(match.group(1))
        ran_with = num_ctx or backend.loaded.get(model, 0)  # the context it ran with (0: unknown)
        window = min(ran_with, trained) if ran_with and trained else ran_with
        body = attempt.body or {}
        options = body.get("options")
        num_keep = options.get("num_keep") if isinstance(options, dict) else None
        num_keep = num_keep if isinstance(num_keep, int) and not isinstance(num_keep, bool) else DEFAULT_NUM_KEEP
        if ex.request.path == "/api/embed":
            # /api/embed counts the tokens of all its inputs, each cut to the context less BOS and EOS:
            # only the count of a single input can bear truncation's mark.
            inputs = body.get("input")
            single = isinstance(inputs, str) or (isinstance(inputs, list) and len(inputs) == 1)
            window = window - 2 if single and window > 2 else 0
        learned = self.models.learn(model, chars, count, window, num_keep)
        estimate = learned.estimate
        if learned.truncated:
            # Ollama cut the prompt without an error (SPEC §5): say so; the denser ratio gives the
            # conversation's next request (auto mode) a size that holds it.
            self.metrics.count_truncated(model)
            ex.truncated = window
            log.warning("%s: Ollama truncated the prompt: about %d tokens in a context of %d (it evaluated %d)%s",
                        ex.label(), estimate, window, count, self._truncation_advice(ex, model, window, trained), extra={"fields": {
                            "event": "truncated", "conn": ex.conn_id, "model": model, "num_ctx": window, "estimate": estimate,
                            "prompt_eval_count": count}})

    def _truncation_advice(self, ex: Exchange, model: str, window: int, trained: int) -> str:
        """What follows from a truncated prompt: auto mode grows by itself below the cap; else a setting."""
        cap = context_cap(trained, self.config.max_context)
        auto = ex.request.forced_ctx == "auto" or (ex.request.forced_ctx is None and self.config.context_mode == "auto")
        if auto and (not cap or window < cap):
            return "; the next request gets a larger context"
        if trained and window >= trained:
            return "; the model's training context (%d) is full" % trained
        if self.config.max_context and window >= self.config.max_context:
            return "; raise --max-context (--num-ctx is capped by it too)"
        return "; raise --max-context or use --num-ctx %s=N" % model

    # -- --preload ---------------------------------------------------------------

    def preload(self, backend: Backend) -> None:
        """Load the --preload models that ``backend`` has, in the background."""
        models = [m for m in self.config.preload if m in backend.digests or not self.fleet.probing]
        if not models:
            return
        task = asyncio.ensure_future(self._preload(backend, models))
        self._preloads.add(task)
        task.add_done_callback(self._preloads.discard)

    def pending(self) -> List[asyncio.Task]:
        return list(self._preloads)

    async def _preload(self, backend: Backend, models: List[str]) -> None:
        """Load each model with the num_ctx and keep_alive its requests will get (an empty generate),
        so that the first request does not pay for the load, nor for a reload."""
        for model in models:
            body: Dict[str, Any] = {"model": model}
            wanted = context_source(self.config, model, None, None)[0] != "off"
            info = await self.models.info(backend, model) if wanted else None  # as _modify asks for it
            ctx = ModifyContext(path="/api/generate", body=body, model=model, config=self.config, info=info,
                                loaded_ctx=backend.loaded.get(model, 0), ceiling=self.models.ceiling(backend, model))
            apply_modifiers(ctx)
            options = body.get("options") if isinstance(body.get("options"), dict) else {}
            request: Dict[str, Any] = {"model": model}
            if "keep_alive" in body:
                request["keep_alive"] = body["keep_alive"]
            num_ctx = options.get("num_ctx")
            if isinstance(num_ctx, int):
                request["options"] = {"num_ctx": num_ctx}
            started = time.monotonic()
            try:
                status, obj = await self.fleet.request_json(backend, b"POST", "/api/generate", request, timeout=self.config.request_timeout)
            except (ProxyError, OSError) as exc:
                status, obj = 0, {"error": str(exc)}
            if status == 200:
                if isinstance(num_ctx, int):
                    backend.loaded[model] = num_ctx
                log.info("preloaded %s on %s in %.1fs%s", model, backend.name, time.monotonic() - started,
                         " (num_ctx %d)" % num_ctx if isinstance(num_ctx, int) else "")
            else:
                reason = obj.get("error") if isinstance(obj, dict) else None
                log.warning("preload of %s on %s failed: %s", model, backend.name, reason or "status %d" % status)


def log_access(ex: Exchange, metrics: Metrics) -> None:
    """A finished request: its metrics, and its access log line (method, path, model, backend, status, time, speed)."""
    now = time.monotonic()
    duration = now - ex.started
    rate = tokens_per_second(ex.tail) if ex.tail else None
    req = ex.request
    if req.route != "/__proxy/metrics":
        metrics.observe_request(metric_route(req.route), ex.status, ex.backend or "-", duration if ex.backend else -1.0,
                                     rate[0] if rate else 0, rate[1] if rate else 0.0, normalize_model(req.model) if req.model else "")
    if not req.route.startswith("/__proxy/"):  # the page's own refreshes and health checks would crowd out the traffic
        error = ex.error
        if error is None and ex.status >= 400 and ex.tail:  # a backend's error answer, relayed: its message
            error = error_message_from_body(ex.tail[-2048:])[:500]
        metrics.recent.add((now, duration, ex.method, ex.client_path, req.path, req.model, req.client_model, req.rename, ex.backend, ex.status,
                            rate, ex.changes, ex.truncated, error))
    if not log.isEnabledFor(logging.INFO):
        return
    method = ex.method.decode("latin-1")
    text = "conn %d: %s %s" % (ex.conn_id, method, ex.client_path)
    if req.path != ex.client_path:
        text += " -> %s" % req.path
    if req.model:
        text += " model=%s" % req.model
    text += " backend=%s status=%s %.3fs" % (ex.backend or "-", ex.status or "-", duration)
    if rate is not None:
        text += " %d tokens %.1f tok/s" % rate
    if ex.error:
        text += " error=%r" % ex.error
    fields: Optional[Dict[str, Any]] = None
    if log.fields_wanted:  # json lines: the same facts as fields
        fields = {"event": "request", "conn": ex.conn_id, "method": method, "path": ex.client_path, "model": req.model,
                  "backend": ex.backend, "status": ex.status, "duration_s": round(duration, 4)}
        if req.path != ex.client_path:
            fields["upstream_path"] = req.path
        if rate is not None:
            fields["eval_count"] = rate[0]
            fields["tokens_per_s"] = round(rate[1], 1)
        if ex.error:
            fields["error"] = ex.error
    log.info(text, extra={"fields": fields} if fields is not None else None)
    if log.isEnabledFor(logging.DEBUG) and ex.request.body:
        log.debug("conn %d request body: %s", ex.conn_id, ex.request.body[:4096].decode("utf-8", "replace"))


class WarnOnce:
    """Warnings given once per process (a list asked every few seconds must not repeat them)."""

    def __init__(self) -> None:
        self.given: set = set()

    def __call__(self, text: str) -> None:
        if text not in self.given:
            self.given.add(text)
            log.warning("%s", text)


def stream_translator(req: Request, num_predict: int = 0) -> StreamTranslator:
    """The stream translator of a translated streaming request (``num_predict``: of the attempt)."""
    if req.kind == "responses":
        return ResponsesStreamTranslator(req.client_model, req.request_id, responses_id("msg", SystemRandom), req.echo)
    if req.kind == "messages":
        return AnthropicStreamTranslator(req.client_model, req.request_id, req.estimate, num_predict)
    if req.kind == "chat":
        return ChatStreamTranslator(req.client_model, req.request_id, req.include_usage)
    return CompletionStreamTranslator(req.client_model, req.request_id, req.include_usage)


class Relay:
    """Every answer the client gets, and how (SPEC §4, §6): the response heads (one builder), the
    native answer copied one client write per upstream read, the translated or chunked answer
    turned into what the client asked for, the proxy's own whole answers and errors, the
    heartbeat of a stream that waits, and the in-band error that ends a started stream."""

    def __init__(self, config: Config, via: bytes, warn_once: WarnOnce) -> None:
        self.config = config
        self.via = via
        self.warn_once = warn_once
        self.shutting_down = False  #: set by the server: every head then says Connection: close

    def head(self, ex: Optional[Exchange], headers: Headers, via: Optional[bytes] = None, close: bool = False) -> Headers:
        """Every response head the proxy sends is finished here: ``headers`` plus Via (after the
        backend's own ``via``, if any), the diagnostic headers (SPEC §4: the backend, and num_ctx
        when the proxy set it), and ``Connection: close`` when asked or while shutting down."""
        headers.append((b"via", join_via(via, self.via)))
        if ex is not None:
            if ex.backend:
                headers.append((b"x-ollama-proxy-backend", ex.backend.encode("utf-8")))
            if ex.num_ctx_changed:
                headers.append((b"x-ollama-proxy-num-ctx", b"%d" % ex.num_ctx))
        if close or self.shutting_down:
            headers.append((b"connection", b"close"))
        return headers

    def response_headers(self, ex: Exchange, upstream: Headers) -> Headers:
        """A backend's response head as the client gets it: hop-by-hop headers dropped, ours added."""
        return self.head(ex, strip_hop_by_hop(upstream, frozenset({b"via"})), all_values(upstream, b"via"))

    async def send_body(self, side: ServerSide, ex: Exchange, status: int, body: bytes, content_type: bytes, close: bool = False,
                         retry_after: int = 0, extra: Headers = ()) -> None:
        """A whole answer from the proxy itself: Via, the diagnostic headers, no body on HEAD."""
        ex.status = status
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        headers.extend(extra)
        if retry_after:
            headers.append((b"retry-after", b"%d" % retry_after))
        self.head(ex, headers, close=close)
        ex.response_started = True
        await side.respond(status, headers, body)

    async def send_json(self, side: ServerSide, ex: Exchange, status: int, obj: Any) -> None:
        """An answer the proxy composed itself (translated or merged)."""
        body = json_bytes(obj)
        await self.send_body(side, ex, status, body, b"application/json; charset=utf-8")

    async def send_error(self, side: ServerSide, ex: Exchange, err: ProxyError) -> None:
        """Answer an error the proxy decided itself, in Ollama's or OpenAI's shape."""
        ex.status = err.status
        ex.error = err.message
        if side.response != RESPONSE_NOT_STARTED:
            return
        close = not side.request_read or self.shutting_down
        body = error_body(err.status, err.message, ex.dialect)
        retry_after = getattr(err, "retry_after", 0)
        await self.send_body(side, ex, err.status, body, b"application/json; charset=utf-8", close, retry_after, getattr(err, "headers", ()))

    async def answer_and_close(self, side: ServerSide, status: int, message: str) -> None:
        """An error answer to a request that cannot be served, then close (no body to a HEAD)."""
        if side.response != RESPONSE_NOT_STARTED:
            return
        body = error_body(status, message, NATIVE)
        headers = self.head(None, [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))], close=True)
        try:
            await side.respond(status, headers, body)
        except (ClientGone, h11.LocalProtocolError):
            pass

    async def heartbeat(self, side: ServerSide, ex: Exchange) -> None:
        """While a stream waits for its first byte: send the head after S seconds, then SSE comments
        (an Anthropic ``ping`` event on /v1/messages, which its clients expect) every S seconds.

        NDJSON gets no filler bytes: the official clients parse every line as JSON.
        """
        interval = self.config.heartbeat
        await asyncio.sleep(interval)
        sse = ex.dialect != NATIVE
        headers = [(b"content-type", b"text/event-stream" if sse else b"application/x-ndjson")]
        if sse:
            headers.append((b"cache-control", b"no-cache"))
        self.head(ex, headers)
        ex.status = 200
        ex.response_started = True  # before the await: the response is in its body from the start on
        await side.write(side.start(200, headers))
        ex.line_framed = True  # chunked NDJSON or SSE from here on
        log.info("%s: %s for %.0fs: response head sent", ex.label(),
                 "backend %s silent (loading the model?)" % ex.backend if ex.backend else "waiting in the queue", interval)
        filler = ANTHROPIC_PING if ex.dialect == ANTHROPIC else b": waiting for the model\n\n"
        while sse:
            await side.write(side.body(filler))
            await asyncio.sleep(interval)

    async def stop_heartbeat(self, heartbeat: asyncio.Task) -> None:
        heartbeat.cancel()
        # asyncio.wait, not "await heartbeat": a cancellation aimed at this task
        # (client gone, shutdown) must not be swallowed with the heartbeat's.
        await asyncio.wait({heartbeat})
        if not heartbeat.cancelled() and heartbeat.exception() is not None:
            raise heartbeat.exception()  # type: ignore[misc]

    async def native(self, side: ServerSide, ex: Exchange, backend: Backend, upconn: UpstreamConnection, response: ResponseHead) -> None:
        """Copy the response body, one client write per upstream read."""
        upstream_headers = list(response.headers)
        rename = ex.request.rename
        if (rename is not None or ex.request.repair_tags) and not ex.response_started:
            ctype = header_value(upstream_headers, b"content-type") or b""
            lines_type = ctype.startswith((b"application/x-ndjson", b"text/event-stream"))
            if not lines_type or header_value(upstream_headers, b"content-length") is not None:
                await self._rewritten(side, ex, upconn, response)
                return
        first: Optional[Tuple[bytes, bool]] = None
        pending = b""
        if ex.response_started:
            # The heartbeat already sent a 200 head: an error status can only go in-band.
            if response.status_code != 200:
                body = await upconn.receive_whole_body()
                await self.end_in_band(side, ex, error_message_from_body(body), response.status_code)
                return
            chunked = True
        else:
            headers = self.response_headers(ex, upstream_headers)
            ex.status = response.status_code
            head = side.start(response.status_code, headers, response.reason)
            ex.response_started = True
            chunked = header_value(headers, b"content-length") is None
            ctype = header_value(upstream_headers, b"content-type") or b""
            # Decided before the first read, so that a failure in it can still end the body in-band.
            ex.line_framed = chunked and ctype.startswith((b"text/event-stream", b"application/x-ndjson"))
            # The head goes out with the first body bytes when they are already here (one
            # write for a whole small answer); otherwise at once, before waiting for them.
            try:
                first = upconn.take_buffered() if upconn.replay is None else (upconn.replay, True)
                upconn.replay = None
            except ProxyError:
                await side.write(head)
                raise
            if first[0] or first[1]:
                pending = head
            else:
                await side.write(head)
            head, headers = b"", []  # not held for the life of a stream
        ctype = header_value(upstream_headers, b"content-type") or b""
        sse = ctype.startswith(b"text/event-stream")
        lines = chunked and (sse or ctype.startswith(b"application/x-ndjson"))
        ex.line_framed = ex.line_framed or lines
        must_finish = lines and not sse and response.status_code == 200 and ex.request.path in ("/api/chat", "/api/generate")
        splitter = LineSplitter(b"\n\n" if sse else b"\n", MAX_LINE_BYTES) if lines else None
        prev = last = b""  # the last two pieces sent: the final stats object is at their end
        writer = side.writer
        while True:
            if first is not None:
                (data, done), first = first, None
                if not (data or done):
                    data, done = await upconn.receive_body()
            else:
                data, done = await upconn.receive_body()
            if splitter is not None:
                # An incomplete line is held back, so that an in-band error lands on a line boundary.
                try:
                    data = splitter.feed(data)
                except LineTooLong as exc:
                    raise BadGateway("backend %s sent %s" % (backend.name, exc)) from None
                if done and splitter.held:
                    data += splitter.flush()
            out, pending = pending, b""
            if data:
                if rename is not None:
                    data = rename_model(data, *rename)
                prev, last = last, data
                out += side.body(data)
            if done:
                tail = (prev + last)[-2048:]
                if must_finish and not has_final_line(last or prev):  # the relay writes whole lines: ``last`` ends with the final one
                    ex.error = "backend %s ended the stream without a final done message" % backend.name
                    log.warning("%s: %s", ex.label(), ex.error)
                    out += side.body(error_line(502, ex.error, NATIVE))
                out += side.end()
                ex.tail = tail
            if out:
                if writer.transport.is_closing() or writer.transport.get_write_buffer_size():
                    await side.write(out)  # the slow path: drain, stalled-client timeout, errors
                else:
                    writer.write(out)
                out = data = b""  # not held while the next read waits
            if done:
                break

    async def _rewritten(self, side: ServerSide, ex: Exchange, upconn: UpstreamConnection, response: ResponseHead) -> None:
        """A whole JSON answer naming the real model of an alias: renamed, with its new length (or
        a tag list with its broken entries repaired)."""
        rename = ex.request.rename
        body = await upconn.receive_whole_body(MAX_TRANSLATED_BODY)
        body = rename_model(body, *rename) if rename is not None else self.repaired_tags(body, response.status_code)
        ex.tail = body[-2048:]
        headers = [(n, v) for n, v in self.response_headers(ex, list(response.headers)) if n not in (b"content-length", b"transfer-encoding")]
        headers.append((b"content-length", b"%d" % len(body)))
        ex.status = response.status_code
        ex.response_started = True
        await side.respond(response.status_code, headers, body, response.reason)

    async def _transformed_whole(self, side: ServerSide, ex: Exchange, attempt: Attempt, upconn: UpstreamConnection, status: int) -> None:
        """A whole native answer (or error), translated or with its pieces' vectors combined."""
        backend = attempt.backend
        raw = await upconn.receive_whole_body(MAX_TRANSLATED_BODY)
        ex.tail = raw[-2048:]
        if status != 200:
            message = error_message_from_body(raw)
            if ex.response_started:
                await self.end_in_band(side, ex, message, status)
            else:
                ex.error = message
                await self._send_translated(side, ex, status, error_object(status, message, ex.dialect))
            return
        try:
            native = parse_json(raw)
        except ValueError:
            raise BadGateway("backend %s answered with invalid JSON" % backend.name) from None
        if attempt.chunks is not None:
            pieces, spans = attempt.chunks
            native["embeddings"] = combine_embeddings(native.get("embeddings") or [], pieces, spans, normalize=True)
        if ex.request.kind == "messages":
            out = native_chat_to_anthropic(native, ex.request.client_model, ex.request.request_id, attempt_num_predict(attempt))
        elif ex.request.kind == "responses":
            out = native_chat_to_responses(native, ex.request.client_model, ex.request.request_id, responses_id("msg", SystemRandom), ex.request.echo)
        elif ex.request.kind == "chat":
            out = native_chat_to_openai(native, ex.request.client_model, ex.request.request_id)
        elif ex.request.kind == "completion":
            out = native_generate_to_openai(native, ex.request.client_model, ex.request.request_id)
        elif ex.request.kind == "embeddings":
            out = native_embed_to_openai(native, ex.request.client_model, ex.request.encoding_format)
        else:
            out = native
        await self._send_translated(side, ex, 200, out)

    async def _send_translated(self, side: ServerSide, ex: Exchange, status: int, obj: Any) -> None:
        """A translated whole answer (or the backend's error) as the route's own writer sends it:
        on /v1/messages and /v1/responses Ollama's AnthropicWriter and ResponsesWriter
        (``application/json``, a JSON encoder's newline at the end, and a stream request keeps the
        ``Cache-Control`` set before the handler ran); elsewhere as gin's c.JSON."""
        if ex.request.kind not in ("messages", "responses"):
            await self.send_json(side, ex, status, obj)
            return
        headers: Headers = [(b"cache-control", b"no-cache")] if ex.request.streaming else []
        await self.send_body(side, ex, status, json_bytes(obj) + b"\n", b"application/json", extra=headers)

    async def transformed(self, side: ServerSide, ex: Exchange, attempt: Attempt, upconn: UpstreamConnection, response: ResponseHead) -> None:
        """The native answer to a translated or chunked request, turned into what the client asked for."""
        if response.status_code != 200 or not ex.request.streaming:
            await self._transformed_whole(side, ex, attempt, upconn, response.status_code)
            return
        backend = attempt.backend
        # A streamed /v1 answer: native NDJSON lines in, SSE events out, one write per read.
        translator = ex.translator = stream_translator(ex.request, attempt_num_predict(attempt))
        out = b""
        ex.line_framed = True
        if not ex.response_started:
            # The head goes out before the first upstream read: whatever that read brings (a close,
            # a bad chunk, silence), the client then has a 200 head and gets the error in-band.
            headers = self.head(ex, [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")])
            ex.status = 200
            ex.response_started = True
            await side.write(side.start(200, headers))
        splitter = LineSplitter(b"\n", MAX_LINE_BYTES)
        while True:
            data, done = await upconn.receive_body()
            try:
                complete = splitter.feed(data)
            except LineTooLong as exc:
                raise BadGateway("backend %s sent %s" % (backend.name, exc)) from None
            if done:
                complete += splitter.flush()
            lines = complete.split(b"\n")
            events = []
            for line in lines:
                if not line.strip():
                    continue
                ex.tail = line
                try:
                    obj = parse_json(line)
                except ValueError:
                    ex.error = "backend %s sent a line that is not JSON" % backend.name
                    events.append(translator.fail(ex.error))
                    upconn.abort()  # nothing more from it can be trusted; stop it generating
                    done = True
                    break
                if isinstance(obj, dict) and obj.get("error") is not None:
                    ex.error = str(obj["error"])
                    events.append(translator.fail(ex.error))
                elif isinstance(obj, dict):
                    events.append(translator.feed(obj))
            if done and not translator.finished and ex.error is None:
                ex.error = "backend %s ended the stream without a final done message" % backend.name
                events.append(translator.fail(ex.error))
            payload = b"".join(events)
            if payload:
                out += side.body(payload)
            if done:
                out += side.end()
            if out:
                await side.write(out)
                out = b""
            if done:
                return

    def final_error(self, ex: Exchange, status: int, message: str) -> bytes:
        """What ends a started stream with an error: the translator's last event on a translated
        stream (``response.failed`` on /v1/responses, after the events that open one when none
        went out yet), else the error line of the client's dialect."""
        if ex.translator is None and ex.request.kind == "responses":
            ex.translator = stream_translator(ex.request)
        if ex.translator is not None:
            return ex.translator.fail(message, status)
        return error_line(status, message, ex.dialect)

    async def end_in_band(self, side: ServerSide, ex: Exchange, message: str, status: int = 502) -> None:
        """The response head is out: end the body with one error line (NDJSON) or event (SSE)."""
        ex.error = message
        log.warning("%s backend=%s: stream ended with an error: %s", ex.label(), ex.backend, message)
        if side.response != RESPONSE_BODY:
            return
        if not ex.line_framed:
            # A JSON (or other) body cut short cannot carry an error line: appending one would
            # turn broken JSON into a complete-looking 200.  Cut the connection instead.
            side.writer.transport.abort()
            raise ClientGone("response cut short")
        try:
            out = side.body(self.final_error(ex, status, message)) + side.end()
        except h11.LocalProtocolError:
            # Content-Length framing: nothing more can be said in-band; the client sees a short body.
            side.writer.transport.abort()
            raise ClientGone("response cut short") from None
        await side.write(out)

    def write_final_error(self, side: ServerSide, ex: Exchange, message: str) -> None:
        """Best effort, without waiting: end a started stream with one error line (used when cancelled)."""
        if not ex.response_started or side.response != RESPONSE_BODY or side.writer.is_closing():
            return
        try:
            side.writer.write(side.body(self.final_error(ex, 503, message)) + side.end())
        except (h11.LocalProtocolError, OSError, RuntimeError):
            pass

    def repaired_tags(self, body: bytes, status: int) -> bytes:
        """One backend's /api/tags answer, byte for byte, unless an entry lacks what strict clients
        need: then the list repaired (or without that entry), warned once."""
        try:
            obj = parse_json(body) if status == 200 else None
        except ValueError:
            return body
        if not isinstance(obj, dict) or not isinstance(obj.get("models"), list):
            return body
        models, warnings = merge_tags([obj["models"]])
        if not warnings:
            return body
        for warning in warnings:
            self.warn_once("%s (answering /api/tags)" % warning)
        return json_bytes(dict(obj, models=models))


#: The two paths of the status page (SPEC §8), which also take Basic authentication under --api-key.
STATUS_PAGE_PATHS = frozenset({"/__proxy/", "/__proxy/status"})
#: GET /__proxy/: the status page, self-contained (no external script, font, style or image: it works on an
#: air-gapped host), refreshed every few seconds from GET /__proxy/status (relative: under any prefix).
STATUS_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ollama-proxy status</title>
<link rel="icon" href="data:,">
<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1c1e21}
header{background:#1f2937;color:#f9fafb;padding:10px 16px;display:flex;flex-wrap:wrap;gap:6px 18px;align-items:baseline}
header h1{font-size:17px;margin:0}
#summary{color:#d1d5db}#problem{color:#fecaca;font-weight:600}
main{padding:12px 16px;display:grid;gap:12px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:10px 12px;min-width:0}
h2{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#57606a;margin:0 0 8px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #dde1e6;border-left:7px solid #8c959f;border-radius:5px;padding:8px 10px;flex:1 1 280px;max-width:480px}
.card.healthy{border-left-color:#1a7f37}.card.failing{border-left-color:#d4a72c;background:#fffbeb}
.card.ejected{border-left-color:#cf222e;background:#fff1f0}.card.down{border-left-color:#57606a;background:#eef0f2}
.card .name{font-weight:600;font-size:15px;margin-right:6px}
.badge{display:inline-block;padding:0 8px;border-radius:9px;font-size:12px;font-weight:700;color:#fff;background:#8c959f;vertical-align:1px}
.badge.healthy{background:#1a7f37}.badge.failing{background:#bf8700}.badge.ejected{background:#cf222e}.badge.down{background:#57606a}
.why{color:#82071e;margin:3px 0}.card.failing .why{color:#7d4e00}.card.down .why{color:#24292f}
.kv{color:#57606a;font-size:12.5px}.kv b{color:#1c1e21;font-weight:600}
.models{margin:4px 0 2px;padding:0;list-style:none}.models li{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
.ctx{display:inline-block;background:#ddf4ff;color:#0550ae;border-radius:4px;padding:0 5px;margin-left:4px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:12px}
.chart .title{font-size:12.5px;color:#57606a}.chart .title b{color:#1c1e21}
svg{display:block;width:100%}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th{text-align:left;color:#57606a;font-weight:600;border-bottom:1px solid #d0d7de;padding:3px 6px;position:sticky;top:0;background:#fff}
td{padding:3px 6px;border-bottom:1px solid #eef0f2;vertical-align:top;white-space:nowrap}
td.wrap{white-space:normal;max-width:420px}
tr.failed td{background:#fff1f0}tr.failed td.st{color:#cf222e;font-weight:700}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace}
.muted{color:#8c959f}.change{color:#0550ae}.err{color:#cf222e}
.scroll{max-height:480px;overflow:auto}
</style>
</head>
<body>
<header><h1>ollama-proxy</h1><span id="summary">loading…</span><span id="problem"></span></header>
<main>
<section><h2>Backends</h2><div id="backends" class="cards"></div></section>
<section><h2>Last 15 minutes</h2><div id="charts" class="charts"></div></section>
<section><h2>What the proxy changed (recent requests)</h2><div id="changes"></div></section>
<section><h2>Queue</h2><div id="queue"></div></section>
<section><h2>Recent requests</h2><div class="scroll"><table id="requests"><thead><tr>
<th>time</th><th>request</th><th>model</th><th>backend</th><th>status</th><th>duration</th><th>tok/s</th><th>changed</th><th>error</th>
</tr></thead><tbody></tbody></table></div></section>
</main>
<script>
"use strict";
var REFRESH_MS = 3000;
function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function add(parent) { for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]); return parent; }
function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
function clock(iso) { var d = new Date(iso); return isNaN(d) ? "" : d.toLocaleTimeString([], {hour12: false}); }
function secs(s) { return s == null ? "" : s < 1 ? Math.round(s * 1000) + " ms" : s.toFixed(s < 10 ? 2 : 1) + " s"; }
function change(c) {
  return c.what + " " + (c.old == null ? "unset" : c.old) + " \u2192 " + c.new + (c.reason ? " (" + c.reason + ")" : "");
}
function kv(label, value) { var s = el("span", "kv", label + " "); add(s, el("b", "", value)); return s; }

function renderBackends(st) {
  var box = clear(document.getElementById("backends")), slots = st.queue.max_concurrent;
  if (!st.backends.length) add(box, el("div", "muted", "no backend yet"));
  st.backends.forEach(function (b) {
    var card = el("div", "card " + b.state), head = el("div");
    card.setAttribute("data-backend", b.name);
    add(head, el("span", "name", b.name), el("span", "badge " + b.state, b.state));
    add(card, head, el("div", "kv mono", b.url));
    if (b.why) add(card, el("div", "why", b.why));
    var line = el("div");
    add(line, kv("in flight", b.in_flight + (slots ? " / " + slots : "")), document.createTextNode(" · "),
        kv("requests", b.requests), document.createTextNode(" · "), kv("models", b.models.length));
    add(card, line);
    var list = el("ul", "models");
    if (!b.loaded.length) add(list, el("li", "muted", "no model loaded"));
    b.loaded.forEach(function (m) { var li = el("li", "", m.model); add(li, el("span", "ctx", "ctx " + m.context_length)); add(list, li); });
    add(card, list);
    var per = st.series.map(function (row) { var x = row.backends[b.name]; return x ? [x.requests, x.failed] : [0, 0]; });
    add(card, el("div", "kv", "requests a minute, failed in red, last " + st.series_minutes + " min"), bars(per, 28, "#6e7781"));
    var foot = el("div", "kv");
    foot.textContent = (b.last_probe ? "probed " + clock(b.last_probe) : "not probed") +
        (b.last_error && b.state !== "down" ? " · last error: " + b.last_error : "");
    add(card, foot);
    add(box, card);
  });
}

// values: [[total, red part], ...] or [n, ...]: an inline SVG bar chart, a bar a minute (numbers only in the markup)
function bars(values, height, color) {
  var w = 300, bw = w / (values.length || 1), max = 1, out = [];
  values.forEach(function (v) { var t = Array.isArray(v) ? v[0] : v; if (t > max) max = t; });
  function rect(x, y, h, fill) {
    out.push('<rect x="' + (x + 0.5).toFixed(1) + '" width="' + Math.max(bw - 1, 1).toFixed(1) + '" y="' + y.toFixed(1) +
             '" height="' + h.toFixed(1) + '" fill="' + fill + '"/>');
  }
  out.push('<svg viewBox="0 0 ' + w + " " + height + '" preserveAspectRatio="none" height="' + height + '" role="img">');
  out.push('<line x1="0" x2="' + w + '" y1="' + (height - 0.5) + '" y2="' + (height - 0.5) + '" stroke="#d0d7de"/>');
  values.forEach(function (v, i) {
    var t = Number(Array.isArray(v) ? v[0] : v) || 0, red = Number(Array.isArray(v) ? v[1] : 0) || 0;
    var h = (height - 2) * t / max, hr = (height - 2) * red / max;
    if (t > 0) rect(i * bw, height - 1 - h, h, color);
    if (red > 0) rect(i * bw, height - 1 - hr, hr, "#cf222e");
  });
  out.push("</svg>");
  var box = el("div", "bars");
  box.title = "peak " + (Math.round(max * 10) / 10);
  box.innerHTML = out.join("");
  return box;
}

function renderCharts(st) {
  var box = clear(document.getElementById("charts")), s = st.series;
  function chart(title, now, values, color) {
    var c = el("div", "chart"), t = el("div", "title", title + " ");
    add(t, el("b", "", now));
    add(c, t, bars(values, 70, color));
    var ax = el("div", "kv"); ax.textContent = "-" + st.series_minutes + " min … now";
    add(box, add(c, ax));
  }
  var last = s.length ? s[s.length - 1] : {requests: 0, failed: 0, tokens: 0, queue_max: 0};
  var reqs = s.reduce(function (a, r) { return a + r.requests; }, 0), failed = s.reduce(function (a, r) { return a + r.failed; }, 0);
  chart("requests a minute (failed in red) · 15 min:", reqs + " (" + failed + " failed)", s.map(function (r) { return [r.requests, r.failed]; }), "#0969da");
  chart("tokens/s generated, a minute's average · now:", (last.tokens / 60).toFixed(1), s.map(function (r) { return r.tokens / 60; }), "#8250df");
  chart("queue depth (deepest seen each minute) · now:", st.queue.depth, s.map(function (r) { return r.queue_max; }), "#bf8700");
}

function renderChanges(st) {
  var box = clear(document.getElementById("changes")), shown = 0, table = el("table"), body = el("tbody");
  st.recent.forEach(function (r) {
    if (!r.changes.length && !r.truncated_at || shown >= 12) return;
    shown++;
    var tr = el("tr");
    var what = r.changes.map(change);
    if (r.truncated_at) what.push("Ollama truncated the prompt to " + r.truncated_at + " tokens");
    add(tr, el("td", "", clock(r.time)), el("td", "mono", r.model || ""), el("td", "", r.backend || ""), el("td", "wrap change", what.join("; ")));
    add(body, tr);
  });
  if (!shown) { add(box, el("div", "muted", "nothing changed in the last " + st.recent.length + " requests")); return; }
  add(box, add(table, body));
}

function renderQueue(st) {
  var box = clear(document.getElementById("queue")), q = st.queue;
  var text = q.depth ? q.depth + " waiting: " + q.waiting.map(function (w) { return (w.model || "-") + " " + w.path; }).join(", ") : "empty";
  text += q.max_concurrent ? " · at most " + q.max_concurrent + " at once per backend" : " · no per-backend cap";
  add(box, el("div", q.depth ? "" : "muted", text));
}

function renderRequests(st) {
  var body = clear(document.querySelector("#requests tbody"));
  if (!st.recent.length) { var tr0 = el("tr"); add(tr0, add(el("td", "muted", "no request yet"))); add(body, tr0); }
  st.recent.forEach(function (r) {
    var tr = el("tr", r.failed ? "failed" : ""), path = r.method + " " + r.path;
    if (r.upstream_path !== r.path.split("?")[0]) path += " \u2192 " + r.upstream_path;
    var model = r.model_asked && r.model && r.model_asked !== r.model ? r.model_asked + " \u2192 " + r.model : (r.model || "");
    var changed = r.changes.map(change);
    if (r.truncated_at) changed.push("truncated at " + r.truncated_at);
    add(tr, el("td", "", clock(r.time)), el("td", "mono", path), el("td", "mono", model), el("td", "", r.backend || "-"),
        el("td", "st", r.status || "-"), el("td", "", secs(r.duration_s)), el("td", "", r.tokens_per_s == null ? "" : r.tokens_per_s),
        el("td", "wrap change", changed.join("; ")), el("td", "wrap err", r.error || ""));
    add(body, tr);
  });
}

function render(st) {
  var counts = {};
  st.backends.forEach(function (b) { counts[b.state] = (counts[b.state] || 0) + 1; });
  var parts = ["healthy", "failing", "ejected", "down"].filter(function (k) { return counts[k]; }).map(function (k) { return counts[k] + " " + k; });
  document.getElementById("summary").textContent = st.backends.length + " backend" + (st.backends.length === 1 ? "" : "s") +
      (parts.length ? " (" + parts.join(", ") + ")" : "") + " · queue " + st.queue.depth + " · v" + st.version + " · updated " + clock(st.time);
  var sick = st.backends.filter(function (b) { return b.state !== "healthy"; }).map(function (b) { return b.name + " " + b.state; });
  document.getElementById("problem").textContent = sick.join(" · ");
  renderBackends(st); renderCharts(st); renderChanges(st); renderQueue(st); renderRequests(st);
}

function refresh() {
  // relative (the page works under any prefix), without the user:key@ of the page's own URL, which fetch refuses
  fetch(location.origin + location.pathname.replace(/[^\/]*$/, "") + "status", {cache: "no-store", credentials: "same-origin"}).then(function (r) {
    if (!r.ok) throw new Error("GET /__proxy/status answered " + r.status);
    return r.json();
  }).then(function (st) { render(st); }).catch(function (e) {
    document.getElementById("problem").textContent = "status unavailable: " + e.message;
  }).then(function () { setTimeout(refresh, REFRESH_MS); });
}
refresh();
</script>
</body>
</html>
""".encode("utf-8")


class OwnEndpoints:
    """What the proxy answers itself (SPEC §6, §8): a path -> handler table.

    The lists (/api/tags, /api/ps, /api/version) are composed from every healthy backend when
    there is more than one to ask (or routes or listed aliases change what a list says); with
    one backend they are its own answer, relayed.
    """

    def __init__(self, config: Config, fleet: Fleet, scheduler: Scheduler, metrics: Metrics, relay: Relay, warn_once: WarnOnce,
                 models: Models, resolve_model: Callable[[str], str]) -> None:
        self.config = config
        self.models = models
        self.resolve_model = resolve_model  #: a model name after aliases
        self.fleet = fleet
        self.scheduler = scheduler
        self.metrics = metrics
        self.relay = relay
        self.warn_once = warn_once
        #: /api/tags, /api/ps, /api/version are composed from several answers (else passed through)
        self.merging = len(config.backends) > 1 or config.discovering or bool(config.routes) or (config.list_aliases and bool(config.aliases))
        self.handlers: Dict[str, Callable[[ServerSide, Exchange], Awaitable[None]]] = {
            "/": self._root,
            "/__proxy/metrics": self._metrics,
            "/__proxy/health": self._health,
            "/health": self._health,
            "/__proxy/backends": self._backends,
            "/__proxy/": self._page,
            "/__proxy/status": self._status,
        }
        if self.merging:
            self.handlers.update({"/api/tags": self._tags, "/api/ps": self._ps, "/api/version": self._version})
        if config.translate:
            self.handlers["/v1/models"] = self._models

    def handler_for(self, ex: Exchange) -> Optional[Callable[[ServerSide, Exchange], Awaitable[None]]]:
        """The handler of a request the proxy answers itself; None for anything to forward."""
        if ex.method == b"POST":
            if ex.request.path == "/v1/messages/count_tokens" and (self.config.translate or ex.request.forced_ctx is not None):
                return self._count_tokens
            if ex.request.path == "/api/event_logging/batch":
                return self._event_logging
            return None
        if ex.method not in (b"GET", b"HEAD"):
            return None
        path = ex.request.path
        if path.startswith("/v1/models/"):
            path = "/v1/models"
        handler = self.handlers.get(path)
        if handler is None and path == "/v1/models" and ex.request.forced_ctx is not None:
            return self._models  # /proxy-context/ turns translation on for the request
        return handler

    async def _count_tokens(self, side: ServerSide, ex: Exchange) -> None:
        """POST /v1/messages/count_tokens (Ollama answers 404): the request rendered as the chat
        prompt it would send (system, messages, tools), in tokens at the model's calibrated
        characters per token, so that agents compact in time (SPEC §7.2)."""
        body = ex.request.json
        if not isinstance(body, dict):
            raise BadRequest("json: cannot unmarshal %s into Go value of type anthropic.CountTokensRequest" % _json_kind(body))
        if self.config.stable_prefix:
            body = stable_system_prefix(body)
        native = anthropic_messages_to_native(dict(body, max_tokens=1))  # it has no max_tokens
        model = normalize_model(self.resolve_model(native["model"]))
        chars, images = prompt_size("/api/chat", native)
        tokens = max(1, estimate_tokens(chars, images, self.models.ratio(model)))
        log.info("%s: count_tokens: about %d tokens (%d characters at %.2f a token)", ex.label(), tokens, chars, self.models.ratio(model))
        await self.relay.send_json(side, ex, 200, {"input_tokens": tokens})

    async def _event_logging(self, side: ServerSide, ex: Exchange) -> None:
        """Claude Code's telemetry batches, which Ollama answers 404: an empty 200, so they stop."""
        await self.relay.send_body(side, ex, 200, b"", b"application/json")

    async def _root(self, side: ServerSide, ex: Exchange) -> None:
        await self.relay.send_body(side, ex, 200, b"Ollama is running", b"text/plain; charset=utf-8")

    async def _metrics(self, side: ServerSide, ex: Exchange) -> None:
        """GET /__proxy/metrics: Prometheus text format (SPEC §8)."""
        backends = self.fleet.backends
        in_flight = {b.name: b.in_flight for b in backends}
        healthy = {b.name: self.fleet.is_healthy(b) for b in backends}
        ejected = {b.name: bool(b.request_health.until) for b in backends}
        body = self.metrics.render(in_flight, healthy, self.scheduler.depth, ejected).encode("utf-8")
        await self.relay.send_body(side, ex, 200, body, b"text/plain; version=0.0.4; charset=utf-8")

    async def _health(self, side: ServerSide, ex: Exchange) -> None:
        """/__proxy/health (and /health, with the context sizes and the effective settings)."""
        status, obj = self.fleet.health()
        if ex.request.path == "/health":
            obj["backends"] = len(self.fleet.backends)
            obj["context_sizes"] = list(self.config.context_sizes)
            obj["settings"] = self.settings()
        await self.relay.send_json(side, ex, status, obj)

    async def _backends(self, side: ServerSide, ex: Exchange) -> None:
        report = {"backends": self.backend_reports(), "queue_depth": self.scheduler.depth}
        await self.relay.send_json(side, ex, 200, report)

    def backend_reports(self) -> List[Dict[str, Any]]:
        """Each backend as /__proxy/backends and /__proxy/status report it (Fleet.report)."""
        return [self.fleet.report(b) for b in self.fleet.backends]

    async def _page(self, side: ServerSide, ex: Exchange) -> None:
        """GET /__proxy/: the status page (SPEC §8); its data comes from /__proxy/status."""
        await self.relay.send_body(side, ex, 200, STATUS_PAGE, b"text/html; charset=utf-8",
                                   extra=[(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")])

    async def _status(self, side: ServerSide, ex: Exchange) -> None:
        """GET /__proxy/status: the backends, the queue, the last requests and minutes, as JSON (SPEC §8)."""
        mono, wall = time.monotonic(), time.time()
        depth = self.scheduler.depth
        recent = self.metrics.recent
        recent.sample_queue(depth, mono)
        queue = {"depth": depth, "max_concurrent": self.config.max_concurrent,
                 "waiting": [{"model": w.want.model, "path": w.want.path} for w in self.scheduler.queue[:50]]}
        report = status_report(self.backend_reports(), queue, recent, mono, wall, self.metrics.start_time)
        await self.relay.send_json(side, ex, 200, report)

    async def _tags(self, side: ServerSide, ex: Exchange) -> None:
        await self.relay.send_json(side, ex, 200, {"models": await self.merged_tags()})

    async def _ps(self, side: ServerSide, ex: Exchange) -> None:
        lists = [obj.get("models") or [] for _, obj in await self.fleet.ask_all("/api/ps") if isinstance(obj.get("models"), list)]
        await self.relay.send_json(side, ex, 200, {"models": merge_ps(lists)})

    async def _version(self, side: ServerSide, ex: Exchange) -> None:
        versions = [obj["version"] for _, obj in await self.fleet.ask_all("/api/version") if isinstance(obj.get("version"), str)]
        if not versions:
            raise BadGateway("no backend answered /api/version")
        await self.relay.send_json(side, ex, 200, {"version": lowest_version(versions)})

    async def _models(self, side: ServerSide, ex: Exchange) -> None:
        """/v1/models and /v1/models/{model}, answered from the merged /api/tags."""
        models = await self.merged_tags()
        if ex.request.path.rstrip("/") == "/v1/models":
            await self.relay.send_json(side, ex, 200, models_to_openai({"models": models}))
            return
        wanted = percent_decode(ex.request.path[len("/v1/models/") :])
        for entry in models:
            if normalize_model(str(entry.get("name") or "")) == normalize_model(wanted):
                await self.relay.send_json(side, ex, 200, model_to_openai(entry, wanted))
                return
        raise NotFound("model '%s' not found" % display_model(wanted))  # ShowHandler names it DisplayShortest()

    async def merged_tags(self) -> List[Dict[str, Any]]:
        answers = await self.fleet.ask_all("/api/tags")
        for backend, obj in answers:
            if isinstance(obj.get("models"), list):
                self.fleet.apply_tags(backend, [m for m in obj["models"] if isinstance(m, dict)])
        models, warnings = merge_tags([obj.get("models") if isinstance(obj.get("models"), list) else [] for _, obj in answers],
                                      self.config.routes, self.config.aliases, self.config.list_aliases, [b.name for b, _ in answers])
        for warning in warnings:
            self.warn_once("%s (answering /api/tags)" % warning)
        return models

    def settings(self) -> Dict[str, Any]:
        """The effective configuration, without secrets (the API key, passwords in backend URLs)."""
        settings: Dict[str, Any] = {}
        for item in dataclasses.fields(self.config):
            value = getattr(self.config, item.name)
            if item.name == "api_key":
                value = "set" if value else None
            elif item.name == "backends":
                value = [{"name": b.name, "url": b.url, "auth": b.auth is not None} for b in value]
            elif item.name == "scan" and value is not None:
                value = "%s:%d-%d" % value
            elif item.name in ("num_ctx", "keep_alive", "routes", "aliases"):
                value = {k: (list(v) if isinstance(v, tuple) else v) for k, v in value}
            elif isinstance(value, tuple):
                value = list(value)
            settings[item.name] = value
        return settings


def basic_password(authorization: bytes) -> Optional[bytes]:
    """The password of an ``Authorization: Basic base64(user:password)`` value (any user); None
    when the value is not one."""
    scheme, _, encoded = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:  # binascii.Error
        return None
    user, colon, password = decoded.partition(b":")
    return password if colon else None


class RequestReader:
    """A request as the proxy reads it, before any backend is chosen (SPEC §4, §6): the API key
    and the loop check first, the URL prefixes, the body (bounded) and its JSON, then (once the
    proxy's own endpoints had their turn) the /v1 translation to the native twin and aliases.
    Each stage replaces ``ex.request`` with the next immutable Request."""

    def __init__(self, config: Config, token: str, fleet: Fleet) -> None:
        self.config = config
        self.token = token.encode("ascii")
        self.fleet = fleet
        self.merging = False  #: the lists are composed by the proxy (else one backend's, relayed); set by the wiring
        self._api_key = config.api_key.encode("utf-8") if config.api_key else None
        self._bearer = b"Bearer " + self._api_key if self._api_key else None
        if self._api_key:
            import hmac  # here, not at the top: it loads OpenSSL's digests (0.7 MB), which only --api-key needs

            self._same = hmac.compare_digest
        self._aliases = {a: m for a, m in config.aliases if not is_model_pattern(a)}
        self._alias_patterns = tuple((a, m) for a, m in config.aliases if is_model_pattern(a))
        self._rng = SystemRandom
        self._told_encoded = False  #: the first encoded body was logged as a warning, later ones at debug

    def start(self, ex: Exchange) -> None:
        """Access first, on the path as the client sent it (no prefix is read before); then
        ``/proxy-context/<N|auto>/`` and ``/proxy-backend/<NAME>/``, read off the target."""
        req = ex.request
        self.check_access(ex.method, req)
        if req.path.startswith("/proxy-context/"):
            forced, target = parse_context_url(req.target)
            path = split_target(target)[0]
            req = req._replace(forced_ctx=forced, target=target, path=path, route=path)
        if req.path.startswith("/proxy-backend/"):
            name, target = parse_backend_url(req.target)
            path = split_target(target)[0]
            req = req._replace(target=target, path=path, route=path, pinned=self.fleet.named(name))
        ex.request = req

    def check_access(self, method: bytes, req: Request) -> None:
        via = all_values(req.headers, b"via")
        if via is not None and self.token in via:
            raise LoopDetected("request loop: this request already passed through this proxy (Via %s)" % via.decode("latin-1"))
        if self._api_key is None:
            return
        if req.path == "/" and method in (b"GET", b"HEAD"):
            return
        if method == b"OPTIONS" and header_value(req.headers, b"access-control-request-method") is not None:
            return
        auth = header_value(req.headers, b"authorization")
        key = header_value(req.headers, b"x-api-key")
        assert self._bearer is not None
        if (auth is not None and self._same(auth, self._bearer)) or (key is not None and self._same(key, self._api_key)):
            return
        if req.path in STATUS_PAGE_PATHS:  # a browser: Basic authentication, the key as the password (SPEC §8)
            password = basic_password(auth) if auth is not None else None
            if password is not None and self._same(password, self._api_key):
                return
            raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>', 'x-api-key: <key>', "
                               "or Basic authentication with the key as the password", challenge=True)
        raise Unauthorized("missing or wrong API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")

    async def read(self, side: ServerSide, ex: Exchange) -> None:
        """The whole body, and its JSON where the proxy needs it: the model and whether it streams."""
        req = ex.request
        body = await self.read_body(side, req.headers)
        if req.path not in MODEL_PATHS or not body:
            ex.request = req._replace(body=body)
            return
        encoding = header_value(req.headers, b"content-encoding")
        if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
            # A compressed body (Codex can send zstd, which Ollama's /v1/responses inflates): the
            # standard library cannot read zstd before Python 3.14, so the body goes upstream as
            # it came and Ollama answers it, without the proxy's context control.
            log.log(logging.DEBUG if self._told_encoded else logging.WARNING,
                    "%s %s: body with Content-Encoding %s passed through untranslated and unmodified "
                    "(the proxy does not decompress request bodies): no num_ctx or num_predict for this request",
                    ex.method.decode("ascii", "replace"), req.path, encoding.decode("latin-1"))
            self._told_encoded = True
            ex.request = req._replace(body=body)
            return
        try:
            obj = parse_json(body)
        except ValueError as exc:
            ex.request = req._replace(body=body)
            raise BadRequest("invalid JSON body: %s" % exc) from None
        model = None
        if isinstance(obj, dict):
            name = obj.get("model") or obj.get("name") or (obj.get("source") if req.path == "/api/copy" else None)
            if isinstance(name, str):
                model = name
        streaming = wants_stream(req.path, obj)
        ex.request = Request(req.target, req.path, req.route, req.headers, req.forced_ctx, req.pinned, body, obj, model, streaming)
        if streaming and self.config.reject_streaming:
            raise BadRequest("streaming is disabled on this proxy: send \"stream\": false")

    async def read_body(self, side: ServerSide, headers: Headers) -> bytes:
        """Read the whole request body (bounded), under --header-timeout between reads."""
        declared = header_value(headers, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_JSON_BODY:
            raise BodyTooLarge("request body too large (%s bytes; the limit is %d)" % (declared.decode(), MAX_JSON_BODY))
        plain = await side.plain_body()  # a plain request: its body came with its head, or the rest of it comes now
        if plain is not None:
            return plain
        parts: List[bytes] = []
        size = 0
        conn = side.h11
        timing = False
        try:
            while True:
                event = conn.next_event()  # a small body usually came with the head: no read needed
                if event is h11.NEED_DATA:
                    if not timing:
                        side.timer.start(self.config.header_timeout)
                        timing = True
                    event = await side.next_event(MAX_JSON_BODY - size)
                kind = type(event)
                if kind is h11.Data:
                    size += len(event.data)
                    if size > MAX_JSON_BODY:
                        raise BodyTooLarge("request body too large (over %d bytes)" % MAX_JSON_BODY)
                    parts.append(event.data)
                elif kind is h11.EndOfMessage:
                    break
                else:
                    raise ClientGone("client closed the connection while sending the body")
        except h11.RemoteProtocolError as exc:
            raise BadRequest("malformed request body: %s" % exc) from None
        finally:
            if timing:
                side.timer.stop()
        return b"".join(parts)

    async def discard_body(self, side: ServerSide, headers: Headers, limit: int = 1024 * 1024) -> None:
        """Read and drop what is left of a small request body, so the connection can be kept.

        A larger one is left unread: the error response then closes the connection.
        """
        conn = side.h11
        if conn is None:  # a plain request: read whole, or (up to SIMPLE_BODY_AHEAD) the rest of it now
            try:
                await side.plain_body()
            except ClientGone:
                pass
            return
        if conn.their_state is not h11.SEND_BODY or side.client_waits_for_continue:
            return  # a client waiting for 100 Continue gets the final status instead (RFC 9110 §10.1.1)
        declared = header_value(headers, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return
        size = 0
        side.timer.start(self.config.header_timeout)
        try:
            while conn.their_state is h11.SEND_BODY and size <= limit:
                event = await side.next_event(limit - size)
                if type(event) is h11.Data:
                    size += len(event.data)
                elif type(event) is not h11.EndOfMessage:
                    return
        except (h11.RemoteProtocolError, ProxyError):
            return
        finally:
            side.timer.stop()

    def resolve(self, ex: Exchange) -> None:
        """What goes upstream: a /v1 request's native twin (translation on), an alias's real model,
        and whether one backend's /api/tags needs its entries checked."""
        req = ex.request
        if req.path in TRANSLATED_PATHS and ex.method == b"POST" and isinstance(req.json, dict) and (self.config.translate or req.forced_ctx is not None):
            req = self.translate(req)
        if (self._aliases or self._alias_patterns) and req.model:
            req = self.resolve_alias(ex.conn_id, req)
        if req.pinned is None and req.path == "/api/tags" and ex.method == b"GET" and not self.merging:
            req = req._replace(repair_tags=True)
        ex.request = req

    def translate(self, req: Request) -> Request:
        """A /v1 request's native twin (so that the modifiers apply to it)."""
        body: Dict[str, Any] = req.json
        encoding_format, estimate, echo = "float", 0, None
        if req.path == "/v1/responses":
            native, native_path, kind, echo = responses_to_native(body), "/api/chat", "responses", body
        elif req.path == "/v1/messages":
            if self.config.stable_prefix:
                body = stable_system_prefix(body)
            native, native_path, kind = anthropic_messages_to_native(body), "/api/chat", "messages"
            estimate = anthropic_estimate_tokens(body)
        elif req.path == "/v1/chat/completions":
            native, native_path, kind = openai_chat_to_native(body), "/api/chat", "chat"
        elif req.path == "/v1/completions":
            native, native_path, kind = openai_completion_to_native(body), "/api/generate", "completion"
        else:
            native, native_path, kind = openai_embeddings_to_native(body), "/api/embed", "embeddings"
            fmt = body.get("encoding_format")
            encoding_format = fmt.lower() if isinstance(fmt, str) and fmt else "float"
        options = body.get("stream_options")
        if kind != "embeddings":
            native["stream"] = bool(body.get("stream"))  # /v1 streams only when asked; native would by default
        query = req.target.partition(b"?")[2]
        return req._replace(
            json=native, dirty=True, streaming=bool(native.get("stream")),
            target=native_path.encode("ascii") + (b"?" + query if query else b""), path=native_path,
            kind=kind, client_model=str(body.get("model") or ""), encoding_format=encoding_format, estimate=estimate, echo=echo,
            include_usage=bool(isinstance(options, dict) and options.get("include_usage")), request_id=self._request_id(kind),
        )

    def _request_id(self, kind: str) -> str:
        """The id of a translated answer, made as Ollama's route makes it."""
        if kind == "messages":
            return anthropic_message_id()
        if kind == "responses":
            return responses_id("resp", self._rng)
        return new_request_id("cmpl" if kind == "completion" else "chatcmpl", self._rng)

    def model_after_aliases(self, model: str) -> str:
        """The model a name goes upstream as: its alias's target, else the name itself."""
        return alias_target(normalize_model(model), self._aliases, self._alias_patterns) or model

    def resolve_alias(self, conn_id: int, req: Request) -> Request:
        """An alias in the request: the real model goes upstream, the answer names the alias."""
        assert req.model is not None
        target = alias_target(normalize_model(req.model), self._aliases, self._alias_patterns)
        if target is None or not isinstance(req.json, dict):
            return req
        key = next((k for k in ("model", "name", "source") if req.json.get(k) == req.model), "model")
        rename = (target.encode("utf-8"), req.model.encode("utf-8")) if req.kind is None else None
        log.debug("conn %d: alias %s -> %s", conn_id, req.model, target)
        return req._replace(json=dict(req.json, **{key: target}), dirty=True, rename=rename, model=target)


class Forwarder:
    """One request's way to a backend and back: a backend chosen (through the Scheduler, waiting
    in its queue when all are busy), each attempt prepared for it (Planner), sent, its answer
    relayed (Relay), and a failure before the answer started tried again elsewhere; streamed
    uploads; the legacy embedding's pieces.  It owns no state: the backends are the Fleet's,
    the slots the Scheduler's, what is learned the Planner's."""

    def __init__(self, config: Config, via: bytes, fleet: Fleet, scheduler: Scheduler, planner: Planner, relay: Relay) -> None:
        self.config = config
        self.via = via
        self.fleet = fleet
        self.scheduler = scheduler
        self.planner = planner
        self.relay = relay
        #: request headers never sent upstream: ours are set per backend, the key is the proxy's own
        self._upstream_drop = frozenset({b"host", b"content-length", b"expect", b"via"}
                                        | ({b"x-api-key", b"authorization"} if config.api_key else set()))

    def _upstream_headers(self, ex: Exchange, backend: Backend, body_length: int) -> Headers:
        """The request head for ``backend``: Host rewritten, hop-by-hop dropped, Via appended.

        ``body_length`` >= 0 sends that Content-Length; CHUNKED streams the body; NO_BODY
        sends neither (a GET without a body).
        """
        headers = strip_hop_by_hop(ex.request.headers, self._upstream_drop)
        spec = backend.spec
        headers.insert(0, (b"host", backend.host_header))
        if body_length >= 0:
            headers.append((b"content-length", b"%d" % body_length))
        elif body_length == CHUNKED:
            headers.append((b"transfer-encoding", b"chunked"))
        headers.append((b"via", join_via(all_values(ex.request.headers, b"via"), self.via)))
        if spec.auth is not None:
            headers = [(n, v) for n, v in headers if n != b"authorization"]
            headers.append((b"authorization", spec.auth.encode("latin-1")))
        return headers

    async def forward(self, side: ServerSide, ex: Exchange, upload: bool) -> None:
        """Choose a backend (waiting in the queue if all are busy), prepare the request for it,
        send it, and relay the answer.  A failure before the answer started goes to another
        backend not yet tried, up to --max-retries times (SPEC §6).  Each attempt's outcome is
        reported to the Fleet (``judge``), which decides what it means for the backend's health."""
        tried: List[str] = []
        heartbeat: Optional[asyncio.Task] = None
        if ex.request.streaming and self.config.heartbeat > 0:
            heartbeat = asyncio.ensure_future(self.relay.heartbeat(side, ex))
        want = self._want(ex)
        scheduler = self.scheduler
        try:
            while True:
                backend: Optional[Backend] = None
                upconn: Optional[UpstreamConnection] = None
                failure: Optional[str] = None  #: the attempt's verdict on its backend: why it failed, "" served, None neither
                try:
                    backend = await scheduler.acquire(want, tried)  # may fail after the heartbeat's head: in-band below
                    ex.backend = backend.name
                    backend.requests += 1
                    # Each attempt is built afresh from the request, for its own backend.
                    attempt = Attempt(backend, None, b"") if upload else await self.planner.prepare(ex, backend)
                    ex.num_ctx, ex.num_ctx_changed = attempt.num_ctx, attempt.num_ctx_changed
                    if attempt.chunks is not None and ex.request.path == "/api/embeddings":
                        await self._embed_legacy_chunked(side, ex, attempt)
                        return
                    try:
                        upconn, response, attempt = await self._send(side, ex, attempt, upload)
                    except (BadGateway, UpstreamTimeout) as err:
                        upconn = None
                        failure = err.message
                        self.fleet.mark_failed(backend, err.message)
                        if not upload and scheduler.may_retry(want, tried, backend):
                            log.warning("%s: %s: trying another backend", ex.label(), err.message)
                            continue
                        raise
                    if response.status_code >= 500:
                        failure = "backend %s answered %d" % (backend.name, response.status_code)
                        if not upload and scheduler.may_retry(want, tried, backend):
                            body = await upconn.receive_whole_body()
                            self._release_connection(backend, upconn)
                            upconn = None
                            failure += " (%s)" % error_message_from_body(body)
                            log.warning("%s: %s: trying another backend", ex.label(), failure)
                            continue
                    if heartbeat is not None:
                        await self.relay.stop_heartbeat(heartbeat)
                        heartbeat = None
                    await self._answer(side, ex, want, attempt, upconn, response)
                    if failure is None and response.status_code < 400:
                        failure = ex.error or ""  # an error after a 2xx head: the stream broke
                    elif failure is not None and (ex.error or ex.tail):
                        failure += " (%s)" % (ex.error or error_message_from_body(ex.tail))[:200]
                    return
                except ProxyError as err:
                    if backend is not None and isinstance(err, (BadGateway, UpstreamTimeout)):
                        backend.last_error = err.message
                        failure = failure or err.message
                    if upconn is not None:
                        upconn.abort()
                        upconn = None
                    if heartbeat is not None:  # stopped first: it may be sending the head right now
                        await self.relay.stop_heartbeat(heartbeat)
                        heartbeat = None
                    if not ex.response_started:
                        raise
                    await self.relay.end_in_band(side, ex, err.message, err.status)
                    return
                finally:
                    if backend is not None:
                        if upconn is not None:
                            self._release_connection(backend, upconn)
                        if want.pinned is None:  # /proxy-backend/ is for debugging: it neither ejects nor recovers
                            self.fleet.judge(backend, failure, want.trial)
                        scheduler.release(backend)
        finally:
            if heartbeat is not None:
                await self.relay.stop_heartbeat(heartbeat)

    async def _send(self, side: ServerSide, ex: Exchange, attempt: Attempt, upload: bool) -> Tuple[UpstreamConnection, ResponseHead, Attempt]:
        """Send the attempt and read the answer's head.  A load that ran out of memory at a size the
        proxy chose goes up once more, smaller (then that is the attempt)."""
        upconn, response = await self._open_exchange(side, ex, attempt, upload)
        if attempt.chosen_ctx and response.status_code >= 500:
            body = await upconn.receive_whole_body()
            smaller = self.planner.smaller(ex, attempt, response.status_code, error_message_from_body(body))
            if smaller is None:
                upconn.replay = body  # the error goes to the client as it came
            else:
                self._release_connection(attempt.backend, upconn)
                attempt = smaller
                ex.num_ctx = attempt.num_ctx
                upconn, response = await self._open_exchange(side, ex, attempt, False)
        return upconn, response, attempt

    async def _answer(self, side: ServerSide, ex: Exchange, want: Want, attempt: Attempt, upconn: UpstreamConnection,
                      response: ResponseHead) -> None:
        """The answer to the client: relayed, or translated and combined; then what it teaches."""
        if ex.request.kind is None and attempt.chunks is None:
            await self.relay.native(side, ex, attempt.backend, upconn, response)
        else:
            await self.relay.transformed(side, ex, attempt, upconn, response)
        if want.sticky_key is not None and ex.status == 200 and ex.error is None:
            self.fleet.sticky.put(want.sticky_key, attempt.backend.name, time.monotonic())
        if ex.request.path in MODIFIED_PATHS and ex.request.model:
            self.planner.learn(ex, attempt)

    def _release_connection(self, backend: Backend, upconn: UpstreamConnection) -> None:
        assert backend.pool is not None
        backend.pool.release(upconn)

    # -- choosing a backend, the queue ---------------------------------------------

    def _want(self, ex: Exchange) -> Want:
        """What the request asks of the choice: its model, a pinned backend, its conversation."""
        model = normalize_model(ex.request.model) if ex.request.model else None
        body = ex.request.json if isinstance(ex.request.json, dict) else None
        want = Want(ex.label, ex.request.path, model, ex.request.pinned, need=functools.partial(self.planner.need, ex, model or ""),
                    embed=ex.request.path in EMBED_PATHS)
        if ex.request.path == "/api/create" and body is not None:
            base = body.get("from")
            want.create_from = normalize_model(base) if isinstance(base, str) and base else None
        if self.config.sticky and model and ex.request.path == "/api/chat" and body is not None and self.fleet.several():
            want.sticky_key = conversation_key(model, body)
        return want

    # -- /v1 translation and embedding chunking ----------------------------------

    async def _embed_legacy_chunked(self, side: ServerSide, ex: Exchange, attempt: Attempt) -> None:
        """/api/embeddings takes one prompt: its pieces go one by one; the answer is their plain weighted mean."""
        assert attempt.chunks is not None and attempt.body is not None
        pieces, spans = attempt.chunks
        vectors = []
        for piece in pieces:
            vectors.append(await self._legacy_embedding(attempt.backend, dict(attempt.body, prompt=piece)))
        (vector,) = combine_embeddings(vectors, pieces, spans, normalize=False)
        await self.relay.send_json(side, ex, 200, {"embedding": vector})

    async def _legacy_embedding(self, backend: Backend, body: Dict[str, Any]) -> List[float]:
        """One piece through the legacy endpoint; its error, if any, becomes the request's."""
        status, obj = await self.fleet.request_json(backend, b"POST", "/api/embeddings", body, timeout=self.config.request_timeout)
        if status != 200 or not isinstance(obj, dict) or not isinstance(obj.get("embedding"), list):
            message = obj.get("error") if isinstance(obj, dict) and isinstance(obj.get("error"), str) else "backend answered %d" % status
            raise ProxyError(message, status if status >= 400 else 502)
        return obj["embedding"]

    # -- answers of the proxy's own: merged lists, health -------------------------------

    async def _open_exchange(self, side: ServerSide, ex: Exchange, attempt: Attempt, upload: bool) -> Tuple[UpstreamConnection, ResponseHead]:
        """Connect (or reuse), send the request, and read the response head.

        A pooled socket that the backend closed meanwhile fails before any response byte;
        such a failure is retried once on a fresh connection (the body is still in hand).
        """
        backend = attempt.backend
        pool = backend.pool
        assert pool is not None
        spec = backend.spec
        target = spec.path_prefix.encode("latin-1") + ex.request.target if spec.path_prefix else ex.request.target
        if upload:
            length = header_value(ex.request.headers, b"content-length")
            upconn = await pool.connect()
            try:
                headers = self._upstream_headers(ex, backend, int(length) if length is not None and length.isdigit() else CHUNKED)
                upconn.timer.start(self.config.request_timeout)
                await upconn.send_request(ex.method, target, headers, None)
                await self._stream_upload(side, ex, upconn)
                task = asyncio.current_task()
                assert task is not None
                side.watch_disconnect(task)  # the body is complete: from now on, EOF means gone
                return upconn, await upconn.receive_response()
            except BaseException:
                upconn.abort()
                raise
        body = attempt.data
        has_framing = header_value(ex.request.headers, b"content-length") is not None or header_value(ex.request.headers, b"transfer-encoding") is not None
        headers = self._upstream_headers(ex, backend, len(body) if body or has_framing else NO_BODY)
        upconn = pool.take_idle() or await pool.connect()
        while True:
            reused = upconn.requests > 0
            try:
                upconn.timer.start(self.config.request_timeout)  # also bounds a backend that stops reading
                await upconn.send_request(ex.method, target, headers, body)
                return upconn, await upconn.receive_response()
            except BadGateway:
                upconn.abort()
                if not reused or upconn.received_any:
                    raise
                log.debug("conn %d: pooled connection to %s was stale; retrying on a new one", ex.conn_id, backend.name)
            except BaseException:
                upconn.abort()
                raise
            upconn = await pool.connect()

    async def _stream_upload(self, side: ServerSide, ex: Exchange, upconn: UpstreamConnection) -> None:
        side.timer.start(self.config.header_timeout)
        try:
            while True:
                event = await side.next_event(UPLOAD_CHUNK_LIMIT)
                side.timer.touch()
                kind = type(event)
                if kind is h11.Data:
                    await upconn.send_body_part(bytes(event.data))
                elif kind is h11.EndOfMessage:
                    await upconn.end_body()
                    return
                else:
                    raise ClientGone("client closed the connection during the upload")
        except h11.RemoteProtocolError as exc:
            raise BadRequest("malformed request body: %s" % exc) from None
        finally:
            side.timer.stop()


class App:
    """The server: it listens, runs each connection's loop of requests (each forwarded by the
    Forwarder unless the proxy answers it itself), shuts down, and wires the collaborators that
    own the rest."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.token = os.urandom(6).hex()
        self.via = ("1.1 ollama-proxy-" + self.token).encode("ascii")
        self.server: Optional[asyncio.AbstractServer] = None
        self.port = 0
        self._conn_ids = itertools.count(1)
        self._idle_conns: Dict[int, ServerSide] = {}  #: connections waiting for their next request
        self._conn_tasks: Dict[int, asyncio.Task] = {}
        self.connections: set = set()  #: every accepted client connection not yet lost (ClientProtocol)
        self._shutting_down = False
        self._stopped: Optional[asyncio.Event] = None
        self.metrics = Metrics(time.time())
        self.models = Models(self._show, self.metrics.count)
        self.fleet = Fleet(config, self.models, self.via)
        self.scheduler = Scheduler(config, self.fleet, self.metrics.count)
        self.planner = Planner(config, self.models, self.fleet, self.metrics)
        warn_once = WarnOnce()
        self.relay = Relay(config, self.via, warn_once)
        self.forwarder = Forwarder(config, self.via, self.fleet, self.scheduler, self.planner, self.relay)
        self.reader = RequestReader(config, self.token, self.fleet)
        self.own = OwnEndpoints(config, self.fleet, self.scheduler, self.metrics, self.relay, warn_once, self.models, self.reader.model_after_aliases)
        self.reader.merging = self.own.merging
        self.fleet.on_up = self._backend_up
        self.fleet.on_down = self.scheduler.fail_stranded
        self.fleet.on_round = self._round
        self.fleet.on_back = self.scheduler.dispatch
        self.fleet.count = self.metrics.count_backend

    def count(self, event: str, n: int = 1) -> None:
        self.metrics.count(event, n)

    def _round(self) -> None:
        """After each probe round: waiting requests may go to what changed; the queue's depth for the status page's chart."""
        self.scheduler.dispatch_all()
        self.metrics.recent.sample_queue(self.scheduler.depth, time.monotonic())

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving (port 0 picks a free port, read back into ``self.port``)."""
        self._stopped = asyncio.Event()
        loop = asyncio.get_running_loop()

        def make_protocol() -> ClientProtocol:
            return ClientProtocol(asyncio.StreamReader(limit=READ_SIZE), self._serve_connection, self.connections)

        self.server = await loop.create_server(make_protocol, self.config.host, self.config.port, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        where = ", ".join("%s (%s)" % (b.name, b.spec.url) for b in self.fleet.backends)
        if self.config.scan is not None:
            host, first, last = self.config.scan
            where = (where + " and " if where else "") + "the Ollama servers found on %s ports %d-%d" % (host, first, last)
        log.info("listening on http://%s:%d, forwarding to %s",
                 self.config.host if ":" not in self.config.host else "[%s]" % self.config.host, self.port, where)
        self.fleet.start(loop, self.port)
        if not self.fleet.probing and self.config.preload:
            for backend in self.fleet.backends:
                self.planner.preload(backend)

    def _backend_up(self, backend: Backend) -> None:
        """A backend became healthy: it gets its --preload models, and waiting requests."""
        self.planner.preload(backend)
        self.scheduler.dispatch(backend)

    async def _stop_accepting(self) -> None:
        """Stop accepting, and close the listener only once the accepts already in flight have
        their connections: a server closed under them refuses to attach their transports
        (Python 3.12+), and their sockets are then left open."""
        if self.server is None:
            return
        loop = asyncio.get_running_loop()
        for sock in self.server.sockets:
            loop.remove_reader(sock.fileno())
        for _ in range(SHUTDOWN_ACCEPT_TURNS):
            await asyncio.sleep(0)
        self.server.close()

    async def serve_until_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    def request_shutdown(self) -> None:
        if self._stopped is not None and not self._shutting_down:
            asyncio.ensure_future(self.shutdown())

    async def shutdown(self) -> None:
        """Stop accepting, close idle connections, let in-flight responses finish for the grace period."""
        if self._shutting_down:
            return
        self._shutting_down = True
        self.relay.shutting_down = True
        log.info("shutting down: %d connection(s) open, waiting up to %gs for in-flight responses", len(self._conn_tasks), self.config.shutdown_grace)
        await self._stop_accepting()
        self.fleet.stop()
        self.scheduler.close()
        for side in list(self._idle_conns.values()):
            side.writer.transport.abort()
        tasks = [t for t in self._conn_tasks.values() if not t.done()]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("shutdown grace over: %d response(s) cut off", len(pending))
                await asyncio.wait(pending, timeout=LINGER_SECONDS + 1.0)
        background = self.models.pending() + self.planner.pending()
        for task in background:
            task.cancel()
        if background:
            await asyncio.wait(background)
        self.fleet.close()
        # Accepts in flight when the listener closed still make their connections some loop
        # turns later, and the server's wait_closed() does not wait for those: every accepted
        # connection is closed here (a short while at most), so that no socket is left open
        # when the caller closes the loop.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_SETTLE_SECONDS
        while self.connections and loop.time() < deadline:
            for protocol in list(self.connections):
                if protocol.transport is not None:
                    protocol.transport.abort()
            await asyncio.sleep(0.002)
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass
        assert self._stopped is not None
        self._stopped.set()

    # -- the per-connection loop -------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = next(self._conn_ids)
        if self._shutting_down:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._conn_tasks[conn_id] = task
        timer = IdleTimer(asyncio.get_running_loop(), writer.transport.abort)
        side = ServerSide(reader, writer, conn_id, timer, self.config)
        try:
            await self._connection_loop(side)
        except (ClientGone, ConnectionError, asyncio.CancelledError):
            pass  # the client left, or the shutdown grace ran out: just close
        except Exception:
            log.exception("conn %d: unexpected error; connection closed", conn_id)
        finally:
            timer.close()
            self._idle_conns.pop(conn_id, None)
            try:
                if not writer.is_closing():
                    await close_writer(writer, reader if side.response == RESPONSE_DONE and side.must_close else None)
                else:
                    writer.transport.abort()
            finally:
                self._conn_tasks.pop(conn_id, None)

    async def _connection_loop(self, side: ServerSide) -> None:
        config = self.config
        first = True
        while True:
            # Phase: waiting for a request head.  A fresh connection gets --header-timeout,
            # a kept-alive one --idle-timeout until its next request starts.
            self._idle_conns[side.conn_id] = side
            side.awaiting_head = not first and not side.buffered  # a pipelined head may already be here
            side.timer.start(config.idle_timeout if side.awaiting_head else config.header_timeout)
            try:
                event = await side.read_head()
            except h11.RemoteProtocolError as exc:
                self._idle_conns.pop(side.conn_id, None)
                side.timer.stop()
                await self._send_protocol_error(side, exc)
                return
            finally:
                self._idle_conns.pop(side.conn_id, None)
            if event is None:
                return
            side.timer.stop()
            side.awaiting_head = False
            first = False
            side.begin(event)
            if side.head_too_large:
                await self._send_protocol_error(side, h11.RemoteProtocolError("request head too large", 431))
                return
            target, status, message = check_request_head(event)
            if status:
                await self._refuse_head(side, event, status, message)
                if status != 200 or not side.next_cycle():
                    return
                continue
            method, headers = event.method, list(event.headers)
            event = None  # the head is not held for the life of a stream: its method, target and headers are
            await self._handle_request(side, method, target, headers)
            if self._shutting_down or not side.next_cycle():
                return  # the response says close, the client is still sending, or something broke

    async def _send_protocol_error(self, side: ServerSide, exc: h11.RemoteProtocolError) -> None:
        """A request h11 could not parse: 400 (431 for a head too large) and close.  The message is
        h11's, which may quote a header line whole: secrets are cut out of it first."""
        status = exc.error_status_hint or 400
        if status == 501:  # h11's answer to a Transfer-Encoding other than chunked: the client's error
            status = 400
        message = "request header fields too large" if status == 431 else "malformed HTTP request: %s" % redact_secrets(str(exc))
        log.info("conn %d: %d %s", side.conn_id, status, message)
        await self.relay.answer_and_close(side, status, message)

    async def _refuse_head(self, side: ServerSide, request: RequestHead, status: int, message: str) -> None:
        """A head check_request_head refused (or ``OPTIONS *``, answered 200 and kept alive)."""
        if status == 200:
            conn = side.h11
            while conn is not None and conn.their_state is h11.SEND_BODY:  # its (empty) body is read, so the connection stays usable
                if type(conn.next_event()) not in (h11.Data, h11.EndOfMessage):
                    break
            headers = self.relay.head(None, [(b"content-length", b"0"), (b"allow", b"GET, HEAD, POST, PUT, DELETE, OPTIONS")])
            await side.respond(200, headers)
            return
        log.info("conn %d: %s %s: %d %s", side.conn_id, request.method.decode("latin-1"), redact_secrets(request.target.decode("latin-1"))[:200],
                 status, message)
        await self.relay.answer_and_close(side, status, message)

    # -- one request ------------------------------------------------------

    async def _handle_request(self, side: ServerSide, method: bytes, target: bytes, headers: Headers) -> None:
        path, _ = split_target(target)
        ex = Exchange(side.conn_id, method, path, time.monotonic(), Request(target, path, path, headers))
        try:
            try:
                reader = self.reader
                reader.start(ex)
                task = asyncio.current_task()
                assert task is not None
                if ex.method == b"POST" and ex.request.path.startswith(STREAMED_UPLOAD_PREFIXES):
                    try:
                        await self.forwarder.forward(side, ex, upload=True)
                    finally:
                        side.unwatch()
                    return
                await reader.read(side, ex)
                handler = self.own.handler_for(ex) if ex.request.pinned is None else None
                if handler is not None:
                    await handler(side, ex)
                    return
                reader.resolve(ex)
                side.watch_disconnect(task)
                try:
                    await self.forwarder.forward(side, ex, upload=False)
                finally:
                    side.unwatch()
            except RecursionError:
                # A body that json could read but that is nested too deeply for the proxy's own walk
                # over it (modifiers, translation, re-encoding): the client's error, never a crash.
                await self.relay.send_error(side, ex, BadRequest("invalid JSON body: nested too deeply for this proxy to read"))
            except ProxyError as err:
                if not isinstance(err, BodyTooLarge):
                    await self.reader.discard_body(side, ex.request.headers)
                await self.relay.send_error(side, ex, err)
        except asyncio.CancelledError:
            if not side.client_gone:
                ex.error = "cut off: the proxy is shutting down" if self._shutting_down else "cancelled"
                self.relay.write_final_error(side, ex, ex.error)
                raise
            ex.error = "client closed the connection"
            ex.status = ex.status or 499
            log.info("%s: the client left: upstream connection closed", ex.label())
            raise ClientGone("client left") from None
        except ClientGone:
            ex.error = ex.error or "client closed the connection"
            ex.status = ex.status or 499
            raise
        finally:
            log_access(ex, self.metrics)

    # -- models: metadata, modifiers, what the backend has loaded -------------

    async def _show(self, backend: Backend, model: str) -> Tuple[int, Any]:
        return await self.fleet.request_json(backend, b"POST", "/api/show", {"model": model})


# ---------------------------------------------------------------------------
# 13. Doctor
# ---------------------------------------------------------------------------
#
# Theory.  --check and the start-up flash-attention check read what Ollama will
# see (its environment, the machine's memory, each model's metadata) and say what
# the proxy would send; pure readers first, then run_doctor, the one with I/O.
# --check --limits MODEL loads the model at growing sizes and measures what this
# machine really runs: pure ladder, verdict, table and advice, then run_limits.


# -- readers of what Ollama sees (SPEC §8) --------

GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
#: Above this --max-context, flash attention forced on is the seed project's heuristic for Metal stalls.
FLASH_ATTENTION_STALL_CONTEXT = 61440
#: The OLLAMA_* settings the doctor shows, in this order (ollama-api.md §11).
RELEVANT_OLLAMA_ENV = (
    "OLLAMA_HOST",
    "OLLAMA_CONTEXT_LENGTH",
    "OLLAMA_FLASH_ATTENTION",
    "OLLAMA_KV_CACHE_TYPE",
    "OLLAMA_NUM_PARALLEL",
    "OLLAMA_MAX_LOADED_MODELS",
    "OLLAMA_KEEP_ALIVE",
    "OLLAMA_MAX_QUEUE",
    "OLLAMA_LOAD_TIMEOUT",
    "OLLAMA_ORIGINS",
)
#: KV-cache types that are not quantized (anything else, e.g. q8_0 or q4_0, is).
UNQUANTIZED_KV_TYPES = frozenset({"f16", "f32", "bf16"})
UNSET_FLASH_ATTENTION = (
    "unset OLLAMA_FLASH_ATTENTION (on macOS: launchctl unsetenv OLLAMA_FLASH_ATTENTION, then restart Ollama.app)"
)
GIB = 1 << 30


def ollama_env_value(raw: Optional[str]) -> Optional[str]:
    """A variable as Ollama reads it (envconfig.Var); None when unset or empty.

    Go's ``strings.Trim(strings.TrimSpace(v), "\\"'")``: whitespace first, then every leading
    and trailing quote character (not just one pair), and no second whitespace trim.
    """
    return (_strip_env_value(raw) or None) if raw is not None else None


def _go_uint(value: Optional[str]) -> Optional[int]:
    """Go's strconv.ParseUint(value, 10, 64): ASCII digits only, no sign; None when invalid."""
    if value is None or not re.fullmatch(r"[0-9]+", value):
        return None
    return int(value)


def flash_attention_setting(raw: Optional[str]) -> Tuple[str, str]:
    """("auto" | "on" | "off", why) for an OLLAMA_FLASH_ATTENTION value (ollama-api.md §11, §14).

    Unset or empty: "auto" (llama.cpp decides per model and device; off only when a device
    lacks support).  A Go-true value: "on".  A Go-false value: "off".  Anything else is not a
    boolean to Go, and Ollama's BoolWithDefault then answers true: "on".
    """
    value = ollama_env_value(raw)
    if value is None:
        return "auto", "OLLAMA_FLASH_ATTENTION is unset, so Ollama lets llama.cpp decide per model (auto)"
    if value in GO_TRUE:
        return "on", "OLLAMA_FLASH_ATTENTION=%s forces flash attention on for every model" % value
    if value in GO_FALSE:
        return "off", "OLLAMA_FLASH_ATTENTION=%s turns flash attention off for every model" % value
    return "on", "OLLAMA_FLASH_ATTENTION=%r is not a boolean to Ollama, so it means ON for every model" % value


def flash_attention_warnings(setting: str, max_context: int, is_macos: bool, raw: Optional[str] = None) -> List[str]:
    """One-line warnings, each saying what to do, for a flash_attention_setting() result.

    - forced on while --max-context is above FLASH_ATTENTION_STALL_CONTEXT (0, no cap, counts
      as above): the seed project's heuristic for Metal stalls.  On macOS that is a warning;
      elsewhere the local Ollama is not Metal, so the line only asks to check Mac backends;
    - forced off: one global switch, off for every model, whatever the OS;
    - ``raw`` (the value as set), when given and not a boolean to Go: it means ON, whatever it
      looks like (``off``, ``no``, ``disabled``).
    """
    warnings: List[str] = []
    value = ollama_env_value(raw)
    if value is not None and value not in GO_TRUE and value not in GO_FALSE:
        warnings.append(
            "OLLAMA_FLASH_ATTENTION=%r is not a boolean to Ollama and turns flash attention ON; use 0/false for off, or %s for auto"
            % (value, UNSET_FLASH_ATTENTION)
        )
    if setting == "on" and (max_context <= 0 or max_context > FLASH_ATTENTION_STALL_CONTEXT):
        cap = "no --max-context cap" if max_context <= 0 else "--max-context %d" % max_context
        if is_macos:
            warnings.append(
                "flash attention is forced on with %s (above %d tokens, where Metal has been seen to stall): %s or lower --max-context to %d"
                % (cap, FLASH_ATTENTION_STALL_CONTEXT, UNSET_FLASH_ATTENTION, FLASH_ATTENTION_STALL_CONTEXT)
            )
        else:
            warnings.append(
                "flash attention is forced on with %s: fine here (not Metal), but on a Mac backend contexts above %d have been seen to stall; "
                "there, unset OLLAMA_FLASH_ATTENTION or lower --max-context" % (cap, FLASH_ATTENTION_STALL_CONTEXT)
            )
    if setting == "off":
        warnings.append(
            "flash attention is forced off for every model (it is one global switch), which costs memory as contexts grow: %s to let Ollama decide per model"
            % UNSET_FLASH_ATTENTION
        )
    return warnings


def parse_sysctl_value(output: str) -> Optional[int]:
    """The integer ``sysctl -n hw.memsize`` or ``sysctl -n iogpu.wired_limit_mb`` printed; None on empty or garbage."""
    value = output.strip()
    return int(value) if re.fullmatch(r"[0-9]+", value) else None


def parse_launchctl_getenv(output: str) -> Optional[str]:
    """The value ``launchctl getenv NAME`` printed (value and a newline; nothing when unset); None when empty.

    Returned as launchctl holds it; pass it through ollama_env_value() to read it as Ollama does.
    """
    value = output[:-1] if output.endswith("\n") else output
    if value.endswith("\r"):
        value = value[:-1]
    return value or None


def gpu_memory_bytes(memsize: Optional[int], wired_limit_mb: Optional[int]) -> Optional[int]:
    """Memory the GPU may wire on Apple silicon: iogpu.wired_limit_mb when set (> 0), else the macOS default.

    The default is an approximation of what Metal reports as recommendedMaxWorkingSetSize:
    about 2/3 of RAM on machines with up to 36 GiB, 3/4 above.  None when RAM is unknown and
    no limit is set.
    """
    if wired_limit_mb is not None and wired_limit_mb > 0:
        return wired_limit_mb * 1024 * 1024
    if memsize is None or memsize <= 0:
        return None
    return memsize * 2 // 3 if memsize <= 36 * GIB else memsize * 3 // 4


def kv_cache_bytes(num_ctx: int, block_count: int, embedding_length: int, head_count: int, head_count_kv: int, bytes_per_value: int = 2) -> int:
    """Approximate KV-cache size of one slot: 2 (K and V) × layers × num_ctx × (embedding_length / head_count × head_count_kv) × bytes.

    The GGUF keys are ``<arch>.block_count``, ``.embedding_length``, ``.attention.head_count``
    and ``.attention.head_count_kv``; ``bytes_per_value`` is 2 for the f16 default (about 1 for
    q8_0).  Models with their own key/value lengths, sliding windows or recurrent layers differ.
    Multiply by OLLAMA_NUM_PARALLEL for a loaded model.  0 when a dimension is unknown (≤ 0).
    """
    if min(num_ctx, block_count, embedding_length, head_count, head_count_kv, bytes_per_value) <= 0:
        return 0
    return 2 * block_count * num_ctx * (embedding_length * head_count_kv // head_count) * bytes_per_value


def relevant_ollama_env(environ: Mapping[str, str]) -> Dict[str, str]:
    """The RELEVANT_OLLAMA_ENV settings present in ``environ``, values as Ollama reads them (empty ones left out: unset to Ollama)."""
    found: Dict[str, str] = {}
    for name in RELEVANT_OLLAMA_ENV:
        value = ollama_env_value(environ.get(name))
        if value is not None:
            found[name] = value
    return found


def _host_port_missing(host: str) -> Optional[str]:
    """For OLLAMA_HOST: the default port Ollama picks when the value has a scheme but no port, else None (ollama-api.md §12)."""
    scheme, sep, rest = host.partition("://")
    if not sep or scheme not in ("http", "https"):
        return None
    hostport = rest.split("/", 1)[0]
    if hostport.startswith("["):
        has_port = "]:" in hostport
    else:
        has_port = hostport.count(":") == 1
    return None if has_port else ("80" if scheme == "http" else "443")


def env_advice(env: Dict[str, str], max_context: int) -> List[str]:
    """Short actionable lines about relevant_ollama_env() settings (flash attention itself: flash_attention_warnings)."""
    advice: List[str] = []
    if "OLLAMA_CONTEXT_LENGTH" in env:
        raw = env["OLLAMA_CONTEXT_LENGTH"]
        n = _go_uint(raw)
        if n is None:
            advice.append("OLLAMA_CONTEXT_LENGTH=%r is not an integer: Ollama ignores it and uses its VRAM-based default; fix or unset it" % raw)
        elif n > 0:
            advice.append(
                "OLLAMA_CONTEXT_LENGTH=%d: every request without num_ctx gets %d; the proxy sets num_ctx per model anyway, so you can unset it" % (n, n)
            )
            if max_context > 0 and n > max_context:
                advice.append(
                    "OLLAMA_CONTEXT_LENGTH=%d is above --max-context %d: requests that reach Ollama without the proxy's num_ctx "
                    "load models at %d; lower it to %d or unset it" % (n, max_context, n, max_context)
                )
    if "OLLAMA_NUM_PARALLEL" in env:
        raw = env["OLLAMA_NUM_PARALLEL"]
        n = _go_uint(raw)
        if n is None:
            advice.append("OLLAMA_NUM_PARALLEL=%r is not an integer: Ollama ignores it and uses 1; fix or unset it" % raw)
        elif n > 1:
            advice.append(
                "OLLAMA_NUM_PARALLEL=%d: every loaded model holds %d × num_ctx of KV cache (%d × --max-context at most); "
                "set 1 unless clients send concurrent requests to the same model" % (n, n, n)
            )
    if "OLLAMA_ORIGINS" in env:
        for origin in env["OLLAMA_ORIGINS"].split(","):
            if origin != origin.strip() or not origin:
                advice.append(
                    "OLLAMA_ORIGINS entry %r has spaces or is empty: Ollama does not trim entries and crashes at start (bad origin); "
                    "write it as a,b with no spaces and no empty entries" % origin
                )
                break
            if origin.count("*") > 1:
                advice.append("OLLAMA_ORIGINS entry %r has more than one '*': Ollama crashes at start; use one '*' per entry" % origin)
                break
    kv_type = env.get("OLLAMA_KV_CACHE_TYPE", "").lower()
    if kv_type and kv_type not in UNQUANTIZED_KV_TYPES:
        setting, _ = flash_attention_setting(env.get("OLLAMA_FLASH_ATTENTION"))
        if setting == "off":
            advice.append(
                "OLLAMA_KV_CACHE_TYPE=%s with flash attention off: a quantized V cache needs flash attention and llama.cpp may refuse to load; "
                "unset OLLAMA_FLASH_ATTENTION or OLLAMA_KV_CACHE_TYPE" % kv_type
            )
    if "OLLAMA_HOST" in env:
        port = _host_port_missing(env["OLLAMA_HOST"])
        if port is not None:
            advice.append(
                "OLLAMA_HOST=%s has a scheme and no port, so Ollama listens on port %s, not 11434; add :11434 or drop the scheme"
                % (env["OLLAMA_HOST"], port)
            )
    if env.get("OLLAMA_KEEP_ALIVE") in ("0", "0s", "0m", "0h"):
        advice.append(
            "OLLAMA_KEEP_ALIVE=%s unloads every model after each request, so each request pays a load; unset it or use --keep-alive per model"
            % env["OLLAMA_KEEP_ALIVE"]
        )
    return advice


def format_report(sections: List[Tuple[str, List[str]]]) -> str:
    """The doctor's report: each title on its own line, its lines indented by two spaces, a blank line between sections."""
    blocks = []
    for title, lines in sections:
        body = [("  " + part) if part else "" for line in (lines or ["(none)"]) for part in line.split("\n")]
        blocks.append("\n".join([title] + body))
    return "\n\n".join(blocks) + "\n"


def _command_output(args: List[str]) -> str:
    """What a small system command prints ("" when it is missing or fails)."""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=5).stdout or ""
    except (OSError, subprocess.SubprocessError):
        return ""


def ollama_environment(environ: Mapping[str, str]) -> Dict[str, str]:
    """The OLLAMA_* settings Ollama sees: ours, and on macOS what launchctl holds for Ollama.app (which wins)."""
    env = relevant_ollama_env(environ)
    if sys.platform == "darwin":
        app_env = {}
        for name in RELEVANT_OLLAMA_ENV:
            value = parse_launchctl_getenv(_command_output(["launchctl", "getenv", name]))
            if value is not None:
                app_env[name] = value
        env.update(relevant_ollama_env(app_env))
    return env


def flash_attention_check(config: Config, environ: Mapping[str, str]) -> List[str]:
    """The start-up warnings about OLLAMA_FLASH_ATTENTION (SPEC §8), read as Ollama reads it."""
    raw = ollama_environment(environ).get("OLLAMA_FLASH_ATTENTION")
    setting, _ = flash_attention_setting(raw)
    return flash_attention_warnings(setting, config.max_context, sys.platform == "darwin", raw)


def _would_send(config: Config, model: str, info: ModelInfo) -> str:
    cap = context_cap(info.context_length, config.max_context)
    source, fixed = context_source(config, model, None, None)
    if fixed is not None:
        return str(min(fixed, cap) if cap else fixed)
    if source == "model":
        return str(cap) if cap else "unchanged"
    if source == "auto":
        low = min(config.context_sizes)
        return "auto %d..%d" % (min(low, cap) if cap else low, cap) if cap else "auto"
    return "the client's (at most %d)" % cap if cap else "the client's"


async def scanned_backends(config: Config, via: bytes) -> List[BackendSpec]:
    """The Ollama servers answering now on the --scan ports that are not configured backends."""
    scanned = [t for t in scan_targets(config, config.port) if t not in config.backends]
    return [r.spec for r in await probe_all(scanned, config.probe_timeout, via) if r.ok]


async def run_doctor(config: Config, environ: Mapping[str, str]) -> int:
    """--check: each backend, its version and models, the num_ctx the proxy would send, the
    Ollama settings and, on macOS, the GPU memory; advice.  0 when every backend answered."""
    via = ("1.1 ollama-proxy-" + os.urandom(6).hex()).encode("ascii")
    backends = [Backend(spec) for spec in config.backends]
    sections: List[Tuple[str, List[str]]] = []
    answered = True
    largest_kv = 0
    if config.scan is not None:
        host, first, last = config.scan
        found = await scanned_backends(config, via)
        sections.append(("scan %s ports %d-%d" % (host, first, last),
                         ["found %d Ollama server(s)%s" % (len(found), ": " + ", ".join(s.name for s in found) if found else " (none answering now)")]))
        backends.extend(Backend(spec, discovered=True) for spec in found)
    for backend in backends:
        pool = backend.pool = Pool(backend, config.connect_timeout)
        lines: List[str] = []
        title = "backend %s (%s)" % (backend.name, backend.spec.url)
        try:
            status, version = await pool.request_json(b"GET", "/api/version", None, via, METADATA_TIMEOUT)
            if status != 200 or not isinstance(version, dict) or not isinstance(version.get("version"), str):
                raise BadGateway("/api/version answered %d without a version (is this Ollama? check the URL and its path)" % status)
            status, tags = await pool.request_json(b"GET", "/api/tags", None, via, METADATA_TIMEOUT)
        except (ProxyError, OSError) as exc:
            answered = False
            sections.append((title, ["NOT REACHABLE: %s" % exc]))
            backend.pool.close()
            continue
        lines.append("reachable: Ollama %s" % version["version"])
        models = [m for m in (tags.get("models") or []) if isinstance(m, dict)] if isinstance(tags, dict) else []
        names = [normalize_model(n) for n in (m.get("name") or m.get("model") for m in models) if isinstance(n, str) and n]
        if not names:
            lines.append("no models installed")
        for name in names:
            try:
                status, show = await pool.request_json(b"POST", "/api/show", {"model": name}, via, METADATA_TIMEOUT)
            except (ProxyError, OSError) as exc:
                lines.append("%s: /api/show failed: %s" % (name, exc))
                continue
            if status != 200:
                reason = show.get("error") if isinstance(show, dict) else None
                lines.append("%s: /api/show failed: status %d%s" % (name, status, ": %s" % reason if reason else ""))
                continue
            info = model_info_from_show(name, show if isinstance(show, dict) else {})
            send = _would_send(config, name, info)
            line = "%-40s trained %7s  num_ctx sent: %s" % (name, info.context_length or "?", send)
            mi = show.get("model_info") if isinstance(show, dict) else None
            if isinstance(mi, dict) and info.architecture and send.isdigit():
                arch = info.architecture
                try:
                    kv = kv_cache_bytes(int(send), int(mi[arch + ".block_count"]), int(mi[arch + ".embedding_length"]),
                                        int(mi[arch + ".attention.head_count"]), int(mi.get(arch + ".attention.head_count_kv") or mi[arch + ".attention.head_count"]))
                    largest_kv = max(largest_kv, kv)
                    line += "  (KV cache about %.1f GiB)" % (kv / 2**30)
                except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError):
                    pass  # dimensions missing or not numbers: no estimate
            lines.append(line)
        sections.append((title, lines))
        backend.pool.close()
    env = ollama_environment(environ)
    sections.append(("Ollama settings the proxy can see" + (" (launchctl getenv wins: Ollama.app sees it)" if sys.platform == "darwin" else ""),
                     ["%s=%s" % kv for kv in sorted(env.items())] or ["no OLLAMA_* variables set"]))
    fa, why = flash_attention_setting(env.get("OLLAMA_FLASH_ATTENTION"))
    advice = ["flash attention: %s (%s)" % (fa, why)]
    advice += flash_attention_warnings(fa, config.max_context, sys.platform == "darwin", env.get("OLLAMA_FLASH_ATTENTION"))
    advice += env_advice(env, config.max_context)
    if sys.platform == "darwin":
        memsize = parse_sysctl_value(_command_output(["sysctl", "-n", "hw.memsize"]))
        wired = parse_sysctl_value(_command_output(["sysctl", "-n", "iogpu.wired_limit_mb"]))
        gpu = gpu_memory_bytes(memsize, wired)
        if gpu:
            advice.append("GPU memory about %.1f GiB (hw.memsize %s, iogpu.wired_limit_mb %s)" % (gpu / 2**30, memsize, wired or "default"))
            if largest_kv and largest_kv > gpu // 2:
                advice.append("the largest KV cache (%.1f GiB) takes over half the GPU memory: lower --max-context" % (largest_kv / 2**30))
    sections.append(("advice", advice))
    print(format_report(sections))
    return 0 if answered else 1


# -- the limits probe: --check --limits MODEL (SPEC §8) --------

LIMITS_FILL = 0.85  #: the share of each size's context the probe's prompt fills, in estimated tokens
LIMITS_NUM_PREDICT = 16  #: tokens each load generates: enough for a generation rate
LIMITS_KEEP_ALIVE = "5m"  #: each load stays listed in /api/ps until it is measured, whatever OLLAMA_KEEP_ALIVE says
LIMITS_QUESTION = "\n\nIn one sentence: what is the text above about?"
LIMITS_FILLER = (
    "The lighthouse keeper wrote down the weather every morning: wind from the west, a grey sea, two fishing "
    "boats leaving the harbour before seven. In the afternoon she painted the railings, counted the gulls on "
    "the breakwater and mended a net for her neighbour, who brought bread and news from the village. "
)
LIMITS_COLUMNS = ("num_ctx", "prompt", "load s", "prompt tok/s", "gen tok/s", "in GPU", "in time", "result")
LIMITS_RESULT_WIDTH = 72  #: the table cuts a longer result (the advice has it whole)


@dataclass(frozen=True)
class LimitProbe:
    """What one load of the limits probe answered: its measurements, or why it did not answer."""

    num_ctx: int
    error: str = ""  #: why the load or the answer failed ("" when it answered)
    stalled: bool = False  #: the backend was silent for --request-timeout
    seconds: float = 0.0  #: the whole request, wall clock
    prompt_tokens: int = 0  #: prompt_eval_count
    load_seconds: float = 0.0  #: load_duration
    prompt_rate: float = 0.0  #: prompt tokens/s: prompt_eval_count / prompt_eval_duration (0: not reported)
    eval_rate: float = 0.0  #: generated tokens/s: eval_count / eval_duration (0: not reported)
    size: int = 0  #: the bytes /api/ps says the loaded model takes (0: not listed)
    size_vram: int = 0  #: of which in GPU memory

    @property
    def answered(self) -> bool:
        """Did it measure anything (an answer with done:true within --request-timeout)?"""
        return not self.error and not self.stalled

    @property
    def gpu_share(self) -> Optional[float]:
        """size_vram / size from /api/ps; None when it did not list the model."""
        return min(1.0, self.size_vram / self.size) if self.size > 0 else None


def limits_ladder(sizes: Sequence[int], training: int) -> List[int]:
    """The sizes the probe loads, smallest first: the --context-sizes up to the training context (all of
    them when it is unknown, 0), or the training context alone when every size is above it."""
    return sorted({s for s in sizes if training <= 0 or s <= training}) or [training]


def limits_prompt(num_ctx: int, chars_per_token: float, fill: float = LIMITS_FILL) -> str:
    """A user message of about ``fill`` × num_ctx tokens at ``chars_per_token``: prose, then a short question."""
    chars = max(0, int(num_ctx * fill * chars_per_token) - len(LIMITS_QUESTION))
    return (LIMITS_FILLER * (chars // len(LIMITS_FILLER) + 1))[:chars] + LIMITS_QUESTION


def stream_failure(status: int, objects: Sequence[Any]) -> str:
    """Why a streamed answer failed ("" when it ended with done:true): an error line (before the stream,
    with a status other than 200, or in it, with 200: ollama-api.md §4), another status, or an end
    without done:true."""
    for obj in objects:
        if isinstance(obj, dict) and isinstance(obj.get("error"), str):
            return obj["error"] if status == 200 else "status %d: %s" % (status, obj["error"])
    if status != 200:
        return "status %d" % status
    if not objects or not isinstance(objects[-1], dict) or objects[-1].get("done") is not True:
        return "the answer ended without done:true"
    return ""


def _stat(value: Any) -> int:
    """A count or a duration of Ollama's stats (omitted when zero): a positive integer, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def ps_entry(ps: Any, model: str) -> Optional[Dict[str, Any]]:
    """The /api/ps entry of the (normalized) ``model``, by its name or model field; None when not loaded."""
    models = ps.get("models") if isinstance(ps, dict) else None
    for entry in models if isinstance(models, list) else []:
        if isinstance(entry, dict) and any(isinstance(entry.get(k), str) and normalize_model(entry[k]) == model for k in ("name", "model")):
            return entry
    return None


def limit_probe(num_ctx: int, final: Mapping[str, Any], seconds: float, entry: Optional[Mapping[str, Any]]) -> LimitProbe:
    """The measurements of one answered load: the final object's stats (ollama-api.md §4) and the model's /api/ps entry."""
    entry = entry or {}

    def rate(count: str, duration: str) -> float:
        n, ns = _stat(final.get(count)), _stat(final.get(duration))
        return n * 1e9 / ns if n and ns else 0.0

    return LimitProbe(num_ctx, seconds=seconds, prompt_tokens=_stat(final.get("prompt_eval_count")),
                      load_seconds=_stat(final.get("load_duration")) / 1e9, prompt_rate=rate("prompt_eval_count", "prompt_eval_duration"),
                      eval_rate=rate("eval_count", "eval_duration"), size=_stat(entry.get("size")), size_vram=_stat(entry.get("size_vram")))


def limit_verdict(probe: LimitProbe) -> Tuple[bool, str]:
    """(passed, what happened) for one load, the one place that decides where the ladder stops: a load
    passes when it answered in time with all of the model in GPU memory (or /api/ps not listing it)."""
    if probe.stalled:
        return False, "stalled: %s" % probe.error
    if probe.error:
        return False, "failed: %s" % probe.error
    share = probe.gpu_share
    if share is not None and share < 1.0:
        return False, "spills to the CPU: %d%% in GPU memory" % int(share * 100)
    return True, "ok"


def limits_progress(probe: LimitProbe, index: int, count: int) -> str:
    """The line that reports one load when it is done: its size, its verdict and what it measured."""
    line = "num_ctx %d (%d/%d): %s" % (probe.num_ctx, index, count, limit_verdict(probe)[1])
    if not probe.answered:
        return line
    share = probe.gpu_share
    return line + " (load %.2f s, prompt %d tokens at %.0f tokens/s, generation %.1f tokens/s, %s in GPU, %.1f s in all)" % (
        probe.load_seconds, probe.prompt_tokens, probe.prompt_rate, probe.eval_rate, "?" if share is None else "%d%%" % int(share * 100),
        probe.seconds)


def _limits_row(probe: LimitProbe) -> Tuple[str, ...]:
    why = limit_verdict(probe)[1]
    if len(why) > LIMITS_RESULT_WIDTH:
        why = why[: LIMITS_RESULT_WIDTH - 3] + "..."
    if not probe.answered:
        return (str(probe.num_ctx), "-", "-", "-", "-", "-", "no" if probe.stalled else "yes", why)
    share = probe.gpu_share
    return (str(probe.num_ctx), str(probe.prompt_tokens), "%.2f" % probe.load_seconds, "%.0f" % probe.prompt_rate if probe.prompt_rate else "?",
            "%.1f" % probe.eval_rate if probe.eval_rate else "?", "?" if share is None else "%d%%" % int(share * 100), "yes", why)


def format_limits_table(probes: Sequence[LimitProbe]) -> str:
    """The probe's table: a header and one row per load, numbers right-aligned, the result last and left-aligned."""
    rows = [LIMITS_COLUMNS] + [_limits_row(p) for p in probes]
    widths = [max(len(row[i]) for row in rows) for i in range(len(LIMITS_COLUMNS) - 1)]
    return "".join(("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) + "  " + row[-1]).rstrip() + "\n" for row in rows)


def limits_advice(model: str, probes: Sequence[LimitProbe], training: int, sends: int) -> List[str]:
    """What to set, from the loads made (in ladder order; a failed one is the last): the largest size that
    passed as --max-context N or --num-ctx MODEL=N, what stopped the ladder, and whether the proxy as set up
    now would send this model more than that (``sends``: the most it sends, 0 = no cap)."""
    verdicts = [limit_verdict(p) for p in probes]
    passed = [p.num_ctx for p, (ok, _) in zip(probes, verdicts) if ok]
    stop = next(((p.num_ctx, why) for p, (ok, why) in zip(probes, verdicts) if not ok), None)
    if not passed:
        if stop is None:
            return ["no size was tried"]
        return ["no size passed: the smallest, %d, %s" % stop,
                "this machine cannot run %s with %d tokens of context as it is set up: try a smaller model or quantization, "
                "or fewer models loaded beside it" % (model, stop[0])]
    best = max(passed)
    if stop is not None:
        lines = ["largest size that passed: %d; %d %s" % (best, stop[0], stop[1])]
    elif training and best >= training:
        lines = ["every size passed, up to the model's training context, %d" % best]
    else:
        lines = ["every size tried passed, up to %d; larger ones were not tried (the training context is %s): add them to --context-sizes to go on"
                 % (best, training or "unknown")]
    lines.append("use --max-context %d (a cap for every model), or --num-ctx %s=%d (this model only)" % (best, model, best))
    if stop is not None and (sends == 0 or sends > best):
        lines.append("as set up now the proxy may send %s num_ctx %s, more than passed here" % (model, sends or "without a cap"))
    return lines


def limits_sends(config: Config, model: str, training: int) -> int:
    """The largest num_ctx the proxy as configured sends ``model`` (0: no cap), as context_source decides it."""
    cap = context_cap(training, config.max_context)
    source, fixed = context_source(config, model, None, None)
    if source == "fixed" and fixed is not None:
        return min(fixed, cap) if cap else fixed
    return cap


class LimitsProgress:
    """Progress lines on ``out``: on a terminal each size's line shows while it loads and is rewritten
    (``\\r``) with its result; otherwise one plain line per size once it is done."""

    def __init__(self, out: Any) -> None:
        self.out = out
        isatty = getattr(out, "isatty", None)
        self.tty = bool(isatty()) if callable(isatty) else False
        self.width = 0  #: of the pending line, which the next one must cover

    def pending(self, text: str) -> None:
        if self.tty:
            self.out.write("\r" + text.ljust(self.width))
            self.out.flush()
            self.width = len(text)

    def done(self, text: str) -> None:
        self.out.write(("\r" + text.ljust(self.width) if self.tty else text) + "\n")
        self.out.flush()
        self.width = 0


async def stream_request(pool: Pool, path: str, body: Any, via: bytes, timeout: float) -> Tuple[int, List[Any]]:
    """One streamed JSON exchange of the doctor's own (a load of the limits probe): (status, the
    answer's NDJSON objects, None for a line that is not JSON); UpstreamTimeout when the backend
    sends nothing for ``timeout`` seconds (the meaning of --request-timeout)."""
    status, raw = await pool.exchange(b"POST", path, body, via, timeout, b"application/x-ndjson")
    objects: List[Any] = []
    for line in raw.split(b"\n"):
        if line.strip():
            try:
                objects.append(parse_json(line))
            except ValueError:
                objects.append(None)
    return status, objects


async def _limits_find(specs: Sequence[BackendSpec], model: str, config: Config,
                       via: bytes) -> Tuple[Optional[Backend], str, List[str], List[str]]:
    """The first backend of ``specs`` that answers and lists ``model`` (normalized), with its pool open,
    and the name it lists it by; then the backends that did not answer (with why) and those without it."""
    unreachable: List[str] = []
    without: List[str] = []
    for spec in specs:
        backend = Backend(spec)
        pool = backend.pool = Pool(backend, config.connect_timeout)
        try:
            status, version = await pool.request_json(b"GET", "/api/version", None, via, METADATA_TIMEOUT)
            if status != 200 or not isinstance(version, dict) or not isinstance(version.get("version"), str):
                raise BadGateway("/api/version answered %d without a version (is this Ollama?)" % status)
            status, tags = await pool.request_json(b"GET", "/api/tags", None, via, METADATA_TIMEOUT)
        except (ProxyError, OSError) as exc:
            unreachable.append("%s: %s" % (spec.name, exc))
            pool.close()
            continue
        entries = tags.get("models") if isinstance(tags, dict) else None
        listed = [e.get("name") or e.get("model") for e in entries or [] if isinstance(e, dict)]
        name = next((n for n in listed if isinstance(n, str) and n and normalize_model(n) == model), None)
        if name is not None:
            return backend, name, unreachable, without
        without.append(spec.name)
        pool.close()
    return None, "", unreachable, without


async def _limits_load(pool: Pool, name: str, model: str, num_ctx: int, chars_per_token: float, config: Config, via: bytes) -> Tuple[LimitProbe, int]:
    """One load at ``num_ctx`` with a prompt that fills most of it, measured; and the prompt's characters."""
    prompt = limits_prompt(num_ctx, chars_per_token)
    body = {"model": name, "messages": [{"role": "user", "content": prompt}], "stream": True, "keep_alive": LIMITS_KEEP_ALIVE,
            "options": {"num_ctx": num_ctx, "num_predict": LIMITS_NUM_PREDICT}}
    started = time.monotonic()
    try:
        status, objects = await stream_request(pool, "/api/chat", body, via, config.request_timeout)
    except UpstreamTimeout:
        return LimitProbe(num_ctx, error="no answer for %gs (--request-timeout)" % config.request_timeout, stalled=True), len(prompt)
    except (ProxyError, OSError) as exc:
        return LimitProbe(num_ctx, error=str(exc)), len(prompt)
    seconds = time.monotonic() - started
    failure = stream_failure(status, objects)
    if failure:
        return LimitProbe(num_ctx, error=failure, seconds=seconds), len(prompt)
    try:
        _, ps = await pool.request_json(b"GET", "/api/ps", None, via, METADATA_TIMEOUT)
    except (ProxyError, OSError):
        ps = None
    return limit_probe(num_ctx, objects[-1], seconds, ps_entry(ps, model)), len(prompt)


async def _limits_leave(pool: Pool, name: str, model: str, before: Optional[int], config: Config, via: bytes) -> str:
    """Unload the model (keep_alive 0), or, when it was loaded before (at ``before``, 0 = size unknown),
    leave it loaded at that size (with the proxy's --keep-alive for it, if any); says which."""
    try:
        if before is None:
            status, _ = await pool.request_json(b"POST", "/api/chat", {"model": name, "messages": [], "keep_alive": 0, "stream": False},
                                                via, config.request_timeout)
            return "unloaded %s" % name if status == 200 else "could not unload %s: status %d" % (name, status)
        _, ps = await pool.request_json(b"GET", "/api/ps", None, via, METADATA_TIMEOUT)
        entry = ps_entry(ps, model)
        if entry is not None and (not before or entry.get("context_length") == before):
            return "%s was loaded before: left loaded" % name
        body: Dict[str, Any] = {"model": name, "messages": [], "stream": False}
        if before:
            body["options"] = {"num_ctx": before}
        keep_alive = lookup_model_value(config.keep_alive, model)
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        status, _ = await pool.request_json(b"POST", "/api/chat", body, via, config.request_timeout)
        what = " at num_ctx %d" % before if before else ""
        return "%s was loaded before: loaded again%s" % (name, what) if status == 200 else "could not load %s again%s: status %d" % (name, what, status)
    except (ProxyError, OSError) as exc:
        return "could not %s %s: %s" % ("unload" if before is None else "load again", name, exc)


async def run_limits(config: Config, model: str, out: Any = None) -> int:
    """--check --limits MODEL (SPEC §8): on the first backend that answers and has the model (among those
    of its --route, if any), load it at each size of limits_ladder, smallest first, with a prompt that
    fills most of the context; stop at the first size limit_verdict does not pass; then unload it (or
    leave it loaded as it was), print the table and the advice.  0 when at least one size was measured."""
    out = out if out is not None else sys.stdout
    via = ("1.1 ollama-proxy-" + os.urandom(6).hex()).encode("ascii")
    wanted = normalize_model(model)
    target = alias_target(wanted, {a: m for a, m in config.aliases if not is_model_pattern(a)},
                          [(a, m) for a, m in config.aliases if is_model_pattern(a)])
    wanted = normalize_model(target) if target else wanted
    specs = list(config.backends) + (await scanned_backends(config, via) if config.scan is not None else [])
    route = route_for(wanted, config.routes)
    if route is not None:
        specs = [spec for name in route for spec in specs if spec.name == name]
    backend, name, unreachable, without = await _limits_find(specs, wanted, config, via)
    if backend is None or backend.pool is None:
        if not without:
            print("ollama-proxy: error: --limits: no backend reachable (%s)" % ("; ".join(unreachable) or "none configured"), file=sys.stderr)
        else:
            print("ollama-proxy: error: --limits: model %r is not on %s%s; check the name or pull it" % (
                wanted, "backend " + without[0] if len(without) == 1 else "any of the backends " + ", ".join(without),
                " (not reachable: %s)" % "; ".join(unreachable) if unreachable else ""), file=sys.stderr)
        return 1
    pool = backend.pool
    try:
        status, show = await pool.request_json(b"POST", "/api/show", {"model": name}, via, METADATA_TIMEOUT)
        _, ps = await pool.request_json(b"GET", "/api/ps", None, via, METADATA_TIMEOUT)
    except (ProxyError, OSError) as exc:
        print("ollama-proxy: error: --limits: backend %s: %s" % (backend.name, exc), file=sys.stderr)
        pool.close()
        return 1
    info = model_info_from_show(wanted, show if isinstance(show, dict) else {})
    if status != 200 or info.is_embedding:
        reason = show.get("error") if isinstance(show, dict) and status != 200 else None
        print("ollama-proxy: error: --limits: %s" % ("/api/show %s: status %d%s" % (name, status, ": %s" % reason if reason else "")
                                                     if status != 200 else "%s is an embedding model: it generates nothing to measure" % name),
              file=sys.stderr)
        pool.close()
        return 1
    entry = ps_entry(ps, wanted)
    before = None if entry is None else _stat(entry.get("context_length"))
    ladder = limits_ladder(config.context_sizes, info.context_length)
    print("limits of %s on backend %s (%s): training context %s, trying num_ctx %s%s" % (
        name, backend.name, backend.spec.url, info.context_length or "unknown", ", ".join(map(str, ladder)),
        "; loaded before at %s" % (before or "an unknown size") if entry is not None else ""), file=out)
    progress = LimitsProgress(out)
    probes: List[LimitProbe] = []
    ratio = DEFAULT_CHARS_PER_TOKEN
    try:
        for index, num_ctx in enumerate(ladder, 1):
            progress.pending("num_ctx %d (%d/%d): loading with a prompt of about %d tokens..." % (num_ctx, index, len(ladder), int(num_ctx * LIMITS_FILL)))
            probe, chars = await _limits_load(pool, name, wanted, num_ctx, ratio, config, via)
            probes.append(probe)
            progress.done(limits_progress(probe, index, len(ladder)))
            if not limit_verdict(probe)[0]:
                break
            ratio, _ = calibrate(ratio, chars, probe.prompt_tokens, num_ctx)  # the next prompt fills its context as planned
    finally:
        left = await _limits_leave(pool, name, wanted, before, config, via)
        pool.close()
    print("\n" + format_limits_table(probes), file=out)
    print(format_report([("advice", limits_advice(name, probes, info.context_length, limits_sends(config, wanted, info.context_length)) + [left])]),
          end="", file=out)
    return 0 if any(p.answered for p in probes) else 1


# ---------------------------------------------------------------------------
# 14. CLI
# ---------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message, and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        obj: Dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + ".%03dZ" % record.msecs,
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            obj.update(fields)
        if record.exc_info:
            obj["traceback"] = self.formatException(record.exc_info)
        return json.dumps(obj)


def setup_logging(config: Config) -> None:
    """The proxy's own lines straight to stderr (``ProxyLog``); anything else that logs through
    the standard machinery (asyncio's own complaints) in the same format on the same stream."""
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    level = getattr(logging, config.log_level.upper())
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced by an object without a descriptor
        log.logger.handlers[:] = [handler]
        log.logger.setLevel(level)
        log.logger.propagate = False
        return
    logging.root.handlers[:] = [handler]
    logging.root.setLevel(logging.WARNING)
    log.logger.propagate = False
    log.write_to(fd, level, config.log_format == "json")


def bytecode_state() -> str:
    """How this module's code came to be: "cached" (loaded from bytecode older than this start),
    "written" (compiled by this start, which wrote bytecode that is valid now), or "compiled" (run
    as a script, or no valid bytecode: missing, another interpreter's or hash-based, or stale, so
    the import compiled the file and could not write it)."""
    cached = globals().get("__cached__")
    if __name__ == "__main__" or not cached:
        return "compiled"
    try:
        with open(cached, "rb") as f:
            header = f.read(16)
        made = os.stat(cached).st_mtime
        source = os.stat(__file__)
    except OSError:
        return "compiled"
    import importlib.util

    magic, flags, mtime, size = header[:4], header[4:8], header[8:12], header[12:16]
    if magic != importlib.util.MAGIC_NUMBER or flags != b"\0\0\0\0":
        return "compiled"  # another interpreter's, or hash-based: the import decided, assume it compiled
    if int.from_bytes(mtime, "little") != int(source.st_mtime) & 0xFFFFFFFF or int.from_bytes(size, "little") != source.st_size & 0xFFFFFFFF:
        return "compiled"
    return "written" if made >= _LOADED_AT - 2.0 else "cached"


def compiled_at_start() -> bool:
    """Whether this process compiled the file instead of loading cached bytecode."""
    return bytecode_state() != "cached"


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing).

    Where no bytecode is cached (a read-only install directory, PYTHONDONTWRITEBYTECODE, the
    first start), the import compiles the whole file, and the compiler's garbage, some 15-20 MB,
    stays in the process's heap after it is freed; trimming once before serving brings the idle
    process down to what an import of cached bytecode costs.  Loaded from cached bytecode there is
    nothing to give back, and ctypes (0.35 MB) is not loaded."""
    if not sys.platform.startswith("linux") or not compiled_at_start():
        return
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (ImportError, OSError, AttributeError):  # musl, no ctypes: keep the memory
        pass


async def _run(config: Config) -> int:
    app = App(config)
    try:
        await app.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror or exc)
        return 1
    for line in flash_attention_check(config, os.environ):
        log.warning("%s", line)
    loop = asyncio.get_event_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, app.request_shutdown)
        except (NotImplementedError, RuntimeError):
            pass
    await app.serve_until_stopped()
    log.info("stopped")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: parse the configuration (exit 2 on a bad one), then serve until SIGTERM/SIGINT."""
    stage = os.environ.pop(_BOOTED, None)  # re-executed by run_from_bytecode ("script") or below ("cached"); not passed on
    try:
        config = build_config(argv, os.environ)
    except ConfigError as exc:
        print("ollama-proxy: error: %s" % redact_secrets(str(exc)), file=sys.stderr)
        return 2
    setup_logging(config)
    if config.notes:  # one line, whatever the number of settings named twice
        log.warning("settings named twice, by our name and by another proxy's: %s", "; ".join(config.notes))
    if config.check and config.limits is not None:
        return asyncio.run(run_limits(config, config.limits))
    if config.check:
        return asyncio.run(run_doctor(config, os.environ))
    if stage == "script" and bytecode_state() == "written":
        # This start compiled the file and cached its bytecode: the serving process is started
        # once more (same PID) from that bytecode, without what the compiler left in the heap.
        reexecute(sys.argv[1:], {_BOOTED: "cached"})
    if stage != "cached":
        release_freed_memory()
    return asyncio.run(_run(config))


#: What the re-executed interpreter runs: this file imported as the module ``ollama_proxy`` (its
#: bytecode cached in __pycache__ where that is writable), then main() with the original arguments.
_BOOT = ("import sys, importlib.util as u; p = sys.argv[1]; s = u.spec_from_file_location('ollama_proxy', p); "
         "m = u.module_from_spec(s); sys.modules['ollama_proxy'] = m; s.loader.exec_module(m); sys.argv = sys.argv[1:]; "
         "sys.exit(m.main())")


_BOOTED = "OLLAMA_PROXY_BOOTED"  #: set for the re-executed interpreter: "script" after run_from_bytecode, "cached" after main


def reexecute(args: Sequence[str], env: Mapping[str, str]) -> None:
    """Replace this process (same PID) with an interpreter that imports this file as the module and
    runs main() with ``args``; the interpreter's options go along.  Returns only if exec failed."""
    flags = sys.flags
    options = ["-X%s" % k if v is True else "-X%s=%s" % (k, v) for k, v in getattr(sys, "_xoptions", {}).items()]
    options += ["-W" + w for w in sys.warnoptions]
    options += [o for o, on in (("-E", flags.ignore_environment), ("-s", flags.no_user_site), ("-B", flags.dont_write_bytecode),
                                ("-I", getattr(flags, "isolated", 0)), ("-u", False)) if on]
    options += ["-O"] * flags.optimize
    os.environ.update(env)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable] + options + ["-c", _BOOT, os.path.abspath(__file__)] + list(args))
    except OSError:  # no exec here: go on as this process is
        for name in env:
            os.environ.pop(name, None)


def run_from_bytecode() -> None:
    """``python3 ollama_proxy.py``: replace this process (same PID, for launchd and systemd) with
    one that imports the file as a module, unless OLLAMA_PROXY_NO_REEXEC is set.

    A script's syntax tree stays in memory for as long as the script runs (CPython frees it only
    when the script returns), some 20 MB for this file; a module's is freed once it is compiled,
    and its bytecode is cached for the next start. The interpreter's options go along."""
    if os.name != "posix" or os.environ.get("OLLAMA_PROXY_NO_REEXEC"):
        return
    reexecute(sys.argv[1:], {_BOOTED: "script"})  # returns only if exec failed: run as the script, with its memory


if __name__ == "__main__":
    run_from_bytecode()
    sys.exit(main())
