"""Unit tables for the doctor and the flash-attention check (pure functions, no I/O)."""

from __future__ import annotations

import pytest

import ollama_proxy as op

GIB = 1 << 30


# -- environment values as Ollama reads them -------------------------------------------------

@pytest.mark.parametrize(
    "raw, value",
    [(None, None), ("", None), ("   ", None), ('""', None), ("1", "1"), (" true ", "true"), ("'1'", "1"), ('"q8_0"', "q8_0"),
     ("\"'x'\"", "x"), ("' 1 '", " 1 "), ("http://a, http://b", "http://a, http://b")],
)
def test_ollama_env_value(raw, value):
    """Whitespace, then every surrounding quote character, is trimmed (Go envconfig.Var); empty is unset."""
    assert op.ollama_env_value(raw) == value


@pytest.mark.parametrize(
    "raw, setting",
    [(None, "auto"), ("", "auto"), ("  ", "auto"), ("1", "on"), ("true", "on"), ("TRUE", "on"), ("t", "on"), ("True", "on"),
     ("0", "off"), ("false", "off"), ("F", "off"), ("False", "off"), ("FALSE", "off"),
     ("off", "on"), ("no", "on"), ("yes", "on"), ("disabled", "on"), ("fALSE", "on"), ("'1'", "on"), ("'0'", "off"), (" true ", "on")],
)
def test_flash_attention_setting(raw, setting):
    """Unset is auto, Go's ParseBool spellings are on/off, anything else non-empty is on."""
    assert op.flash_attention_setting(raw)[0] == setting


@pytest.mark.parametrize("raw", ["off", "no", "yes"])
def test_flash_attention_setting_explains_non_boolean(raw):
    """A non-boolean value's explanation names the value and says it means ON."""
    why = op.flash_attention_setting(raw)[1]
    assert repr(raw) in why and "not a boolean" in why and "ON" in why


# -- flash-attention warnings ----------------------------------------------------------------

@pytest.mark.parametrize(
    "setting, max_context, is_macos, count",
    [("auto", 131072, True, 0), ("auto", 0, True, 0), ("on", 61440, True, 0), ("on", 16384, True, 0), ("on", 61441, True, 1),
     ("on", 131072, True, 1), ("on", 0, True, 1), ("on", 131072, False, 1), ("on", 61440, False, 0), ("off", 16384, True, 1),
     ("off", 131072, False, 1)],
)
def test_flash_attention_warning_thresholds(setting, max_context, is_macos, count):
    """Forced on warns only above 61440 tokens (0 = no cap counts as above); forced off always warns; auto never."""
    assert len(op.flash_attention_warnings(setting, max_context, is_macos)) == count


def test_flash_attention_on_macos_says_what_to_do():
    """On macOS the large-context warning names launchctl unsetenv and --max-context."""
    (line,) = op.flash_attention_warnings("on", 131072, True)
    assert "launchctl unsetenv OLLAMA_FLASH_ATTENTION" in line and "--max-context" in line and "131072" in line and "\n" not in line


def test_flash_attention_elsewhere_is_softer():
    """Off macOS the large-context line points at Mac backends rather than the local Ollama."""
    (line,) = op.flash_attention_warnings("on", 131072, False)
    assert "Mac backend" in line and "not Metal" in line


def test_flash_attention_off_is_global():
    """Forced off says it applies to every model and how to return to auto."""
    (line,) = op.flash_attention_warnings("off", 16384, True)
    assert "every model" in line and "global" in line and "unset OLLAMA_FLASH_ATTENTION" in line


@pytest.mark.parametrize("raw, count", [("off", 1), ("no", 1), (" 'disabled' ", 1), ("1", 0), ("false", 0), (None, 0), ("", 0)])
def test_flash_attention_warns_about_non_boolean(raw, count):
    """Given the raw value, a non-boolean adds one warning that it turns flash attention on."""
    setting = op.flash_attention_setting(raw)[0]
    lines = op.flash_attention_warnings(setting, 16384, True, raw=raw)
    assert len([line for line in lines if "turns flash attention ON" in line]) == count
    assert len(lines) == count + (setting == "off")


# -- sysctl, launchctl, memory ---------------------------------------------------------------

@pytest.mark.parametrize(
    "output, value",
    [("68719476736\n", 68719476736), ("0\n", 0), ("49152", 49152), ("  17179869184  \n", 17179869184), ("", None), ("\n", None),
     ("garbage", None), ("-1\n", None), ("sysctl: unknown oid 'iogpu.wired_limit_mb'\n", None), ("1.5\n", None)],
)
def test_parse_sysctl_value(output, value):
    """sysctl -n prints an integer; anything else is None."""
    assert op.parse_sysctl_value(output) == value


@pytest.mark.parametrize(
    "output, value",
    [("", None), ("\n", None), ("1\n", "1"), ("false\n", "false"), ("'1'\n", "'1'"), (" off \n", " off "), ("q8_0", "q8_0"), ("1\r\n", "1")],
)
def test_parse_launchctl_getenv(output, value):
    """launchctl getenv prints the value and a newline, or nothing when unset; the value is kept as set."""
    assert op.parse_launchctl_getenv(output) == value


def test_launchctl_value_read_as_ollama():
    """A launchctl value fed through ollama_env_value reads as Ollama.app would."""
    assert op.flash_attention_setting(op.parse_launchctl_getenv(" 'off' \n"))[0] == "on"
    assert op.flash_attention_setting(op.parse_launchctl_getenv(""))[0] == "auto"


@pytest.mark.parametrize(
    "memsize, wired, value",
    [(64 * GIB, None, 48 * GIB), (64 * GIB, 0, 48 * GIB), (36 * GIB, None, 24 * GIB), (18 * GIB, None, 12 * GIB),
     (48 * GIB, None, 36 * GIB), (64 * GIB, 57344, 56 * GIB), (None, 8192, 8 * GIB), (None, None, None), (None, 0, None), (0, None, None)],
)
def test_gpu_memory_bytes(memsize, wired, value):
    """The wired limit when set, else about 2/3 of RAM up to 36 GiB and 3/4 above."""
    assert op.gpu_memory_bytes(memsize, wired) == value


@pytest.mark.parametrize(
    "args, value",
    [((8192, 32, 4096, 32, 8), GIB),  # llama3.1 8B: 128 KiB per token
     ((8192, 32, 4096, 32, 8, 1), GIB // 2),
     ((131072, 32, 4096, 32, 8), 16 * GIB),
     ((4096, 32, 4096, 32, 32), 2 * GIB),  # no GQA
     ((8192, 0, 4096, 32, 8), 0), ((8192, 32, 4096, 0, 8), 0), ((0, 32, 4096, 32, 8), 0)],
)
def test_kv_cache_bytes(args, value):
    """2 × layers × num_ctx × (embedding / heads × kv heads) × bytes; 0 when a dimension is unknown."""
    assert op.kv_cache_bytes(*args) == value


# -- the OLLAMA_* settings and the advice ----------------------------------------------------

def test_relevant_ollama_env():
    """Only the listed settings, in the listed order, read as Ollama reads them; empty ones are left out."""
    environ = {"OLLAMA_ORIGINS": "*", "OLLAMA_HOST": ' "0.0.0.0:11434" ', "OLLAMA_MODELS": "/x", "OLLAMA_KEEP_ALIVE": "",
               "PATH": "/bin", "OLLAMA_FLASH_ATTENTION": "'1'", "OLLAMA_CONTEXT_LENGTH": "8192"}
    env = op.relevant_ollama_env(environ)
    assert env == {"OLLAMA_HOST": "0.0.0.0:11434", "OLLAMA_CONTEXT_LENGTH": "8192", "OLLAMA_FLASH_ATTENTION": "1", "OLLAMA_ORIGINS": "*"}
    assert list(env) == ["OLLAMA_HOST", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_FLASH_ATTENTION", "OLLAMA_ORIGINS"]


@pytest.mark.parametrize(
    "env, max_context, needles",
    [
        ({}, 16384, []),
        ({"OLLAMA_CONTEXT_LENGTH": "8192"}, 16384, ["gets 8192; the proxy sets num_ctx per model anyway, so you can unset it"]),
        ({"OLLAMA_CONTEXT_LENGTH": "65536"}, 16384, ["gets 65536", "above --max-context 16384"]),
        ({"OLLAMA_CONTEXT_LENGTH": "65536"}, 0, ["gets 65536"]),
        ({"OLLAMA_CONTEXT_LENGTH": "0"}, 16384, []),
        ({"OLLAMA_CONTEXT_LENGTH": "8k"}, 16384, ["not an integer"]),
        ({"OLLAMA_NUM_PARALLEL": "1"}, 16384, []),
        ({"OLLAMA_NUM_PARALLEL": "4"}, 16384, ["4 × num_ctx"]),
        ({"OLLAMA_NUM_PARALLEL": "-2"}, 16384, ["not an integer"]),
        ({"OLLAMA_ORIGINS": "http://a,http://b"}, 16384, []),
        ({"OLLAMA_ORIGINS": "http://a, http://b"}, 16384, ["crashes at start"]),
        ({"OLLAMA_ORIGINS": "http://a,"}, 16384, ["crashes at start"]),
        ({"OLLAMA_ORIGINS": "http://*.a:*"}, 16384, ["more than one '*'"]),
        ({"OLLAMA_ORIGINS": "*"}, 16384, []),
        ({"OLLAMA_KV_CACHE_TYPE": "q8_0", "OLLAMA_FLASH_ATTENTION": "0"}, 16384, ["quantized V cache"]),
        ({"OLLAMA_KV_CACHE_TYPE": "Q4_0", "OLLAMA_FLASH_ATTENTION": "false"}, 16384, ["q4_0"]),
        ({"OLLAMA_KV_CACHE_TYPE": "q8_0"}, 16384, []),
        ({"OLLAMA_KV_CACHE_TYPE": "q8_0", "OLLAMA_FLASH_ATTENTION": "off"}, 16384, []),
        ({"OLLAMA_KV_CACHE_TYPE": "f16", "OLLAMA_FLASH_ATTENTION": "0"}, 16384, []),
        ({"OLLAMA_HOST": "http://1.2.3.4"}, 16384, ["port 80"]),
        ({"OLLAMA_HOST": "https://example.com/ollama"}, 16384, ["port 443"]),
        ({"OLLAMA_HOST": "http://[::1]"}, 16384, ["port 80"]),
        ({"OLLAMA_HOST": "http://1.2.3.4:11434"}, 16384, []),
        ({"OLLAMA_HOST": "http://[::1]:11434"}, 16384, []),
        ({"OLLAMA_HOST": "0.0.0.0"}, 16384, []),
        ({"OLLAMA_HOST": "::1"}, 16384, []),
        ({"OLLAMA_KEEP_ALIVE": "0"}, 16384, ["after each request"]),
        ({"OLLAMA_KEEP_ALIVE": "10m"}, 16384, []),
    ],
)
def test_env_advice(env, max_context, needles):
    """Each setting that needs attention gives one line containing what matters; harmless ones give none."""
    lines = op.env_advice(env, max_context)
    assert len(lines) == len(needles)
    for line, needle in zip(lines, needles):
        assert needle in line and "\n" not in line


def test_env_advice_from_environment():
    """The advice reads values as relevant_ollama_env returns them (quotes and spaces trimmed)."""
    env = op.relevant_ollama_env({"OLLAMA_NUM_PARALLEL": " '2' ", "OLLAMA_HOST": '"http://10.0.0.5"'})
    lines = op.env_advice(env, 16384)
    assert [("× num_ctx" in line, "port 80" in line) for line in lines] == [(True, False), (False, True)]


# -- the report ------------------------------------------------------------------------------

def test_format_report():
    """Titles flush left, lines indented two spaces, a blank line between sections, (none) for an empty one."""
    text = op.format_report([("backends", ["http://a: ok, 0.12.0", "http://b: unreachable"]), ("advice", []), ("env", ["x\ny"])])
    assert text == "backends\n  http://a: ok, 0.12.0\n  http://b: unreachable\n\nadvice\n  (none)\n\nenv\n  x\n  y\n"


def test_format_report_empty():
    """No sections print one empty line."""
    assert op.format_report([]) == "\n"
