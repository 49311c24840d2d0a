"""The service files in contrib/: the launchd LaunchAgent and its install script, the systemd unit and its env file.

This runs on Linux: the plist is checked with plistlib, install.sh runs against a fake
``launchctl`` (a script on PATH that records its arguments) with a temporary HOME, and the unit
is read by a small parser of our own and, when ``systemd-analyze`` exists, verified by it.
Every environment variable the files set must be one the proxy reads, and must parse.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import stat
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ollama_proxy  # noqa: E402

LABEL = "com.github.ollama-proxy"
LAUNCHD = os.path.join(ROOT, "contrib", "launchd")
PLIST = os.path.join(LAUNCHD, LABEL + ".plist")
INSTALL_SH = os.path.join(LAUNCHD, "install.sh")
SYSTEMD = os.path.join(ROOT, "contrib", "systemd")
UNIT = os.path.join(SYSTEMD, "ollama-proxy.service")
ENV_FILE = os.path.join(SYSTEMD, "ollama-proxy.env")
PROXY = os.path.join(ROOT, "ollama_proxy.py")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_plist(path: str) -> dict:
    with open(path, "rb") as f:
        return plistlib.load(f)


_known_names: List[str] = []


def variables_the_proxy_reads() -> set:
    """Every $NAME in ``ollama_proxy.py --help``, plus OLLAMA_HOST and OLLAMA_BASE_URL (the default backend)."""
    if not _known_names:
        out = subprocess.run([sys.executable, PROXY, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
        _known_names.extend(re.findall(r"\$([A-Z][A-Z0-9_]*)", out))
        assert "PROXY_PORT" in _known_names and "OLLAMA_BACKENDS" in _known_names
    return set(_known_names) | {"OLLAMA_HOST", "OLLAMA_BASE_URL"}


def assert_parses(env: Dict[str, str]) -> ollama_proxy.Config:
    unknown = sorted(set(env) - variables_the_proxy_reads())
    assert not unknown, "variables the proxy does not read: %s" % unknown
    try:
        return ollama_proxy.build_config([], env)
    except ollama_proxy.ConfigError as exc:  # pragma: no cover - the failure message
        pytest.fail("build_config rejects %r: %s" % (env, exc))


# --- launchd ---------------------------------------------------------------------------------


def test_plist_is_a_user_launch_agent():
    """A valid XML plist with the keys launchd needs, of the right types."""
    plist = load_plist(PLIST)
    assert plist["Label"] == LABEL
    args = plist["ProgramArguments"]
    assert isinstance(args, list) and len(args) == 2 and all(isinstance(a, str) for a in args)
    assert os.path.isabs(args[0]) and os.path.basename(args[0]).startswith("python")
    assert args[0] == "/usr/bin/python3"
    assert args[1] == "/Users/USERNAME/.local/share/ollama-proxy/ollama_proxy.py"
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] is True
    assert isinstance(plist["ThrottleInterval"], int) and plist["ThrottleInterval"] > 0
    assert plist["ProcessType"] in ("Background", "Interactive")
    # launchd sends SIGTERM, then SIGKILL after ExitTimeOut: leave room for the shutdown grace.
    assert plist["ExitTimeOut"] > ollama_proxy.Config().shutdown_grace
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert plist[key] == "/Users/USERNAME/Library/Logs/ollama-proxy.log"
    env = plist["EnvironmentVariables"]
    assert isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    for name in ("PROXY_HOST", "PROXY_PORT", "OLLAMA_BACKENDS", "MAX_CONTEXT_OVERRIDE", "PROXY_CONTEXT_MODE", "LOG_LEVEL"):
        assert name in env


def test_plist_environment_is_the_proxy_defaults():
    """Every variable is one the proxy reads, parses, and gives the configuration of no variables at all."""
    env = load_plist(PLIST)["EnvironmentVariables"]
    assert assert_parses(env) == ollama_proxy.build_config([], {})


def _fake_bin(tmp_path, fail_bootstrap_once: bool = False) -> Tuple[str, str]:
    """A directory with a fake launchctl that appends its arguments (tab-separated) to a log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "launchctl.log"
    flag = tmp_path / "fail-bootstrap"
    if fail_bootstrap_once:
        flag.write_text("")
    script = bin_dir / "launchctl"
    script.write_text(
        "#!/bin/sh\n"
        "for a in \"$@\"; do printf '%%s\\t' \"$a\"; done >> '%s'\n"
        "echo >> '%s'\n"
        "if [ \"$1\" = bootstrap ] && [ -e '%s' ]; then rm -f '%s'; echo 'Bootstrap failed: 5' >&2; exit 5; fi\n"
        "exit 0\n" % (log, log, flag, flag)
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(bin_dir), str(log)


def _calls(log: str) -> List[List[str]]:
    if not os.path.exists(log):
        return []
    return [line.rstrip("\n").rstrip("\t").split("\t") for line in read(log).splitlines()]


def _run_install(tmp_path, home: str, bin_dir: str, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    env = {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "PYTHON": python}
    return subprocess.run([INSTALL_SH, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def home(tmp_path):
    # A space and an ampersand: the substitution must neither split the path nor break the XML or sed.
    path = tmp_path / "home dir & co"
    path.mkdir()
    return str(path)


def test_install_script_installs_and_bootstraps(tmp_path, home):
    bin_dir, log = _fake_bin(tmp_path)
    result = _run_install(tmp_path, home, bin_dir, "install")
    assert result.returncode == 0, result.stderr
    installed = os.path.join(home, ".local", "share", "ollama-proxy", "ollama_proxy.py")
    with open(installed, "rb") as a, open(PROXY, "rb") as b:
        assert a.read() == b.read()
    plist_path = os.path.join(home, "Library", "LaunchAgents", LABEL + ".plist")
    assert "USERNAME" not in read(plist_path)
    plist = load_plist(plist_path)
    assert plist["ProgramArguments"] == [sys.executable, installed]
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == os.path.join(home, "Library", "Logs", "ollama-proxy.log")
    assert plist["WorkingDirectory"] == os.path.dirname(installed)
    assert os.path.isdir(os.path.join(home, "Library", "Logs"))
    assert plist["EnvironmentVariables"] == load_plist(PLIST)["EnvironmentVariables"]
    domain = "gui/%d" % os.getuid()
    assert _calls(log) == [["bootout", "%s/%s" % (domain, LABEL)], ["bootstrap", domain, plist_path]]

    # Again over an installed one (an upgrade): the same, and a failed bootout is ignored.
    os.remove(log)
    assert _run_install(tmp_path, home, bin_dir, "install").returncode == 0
    assert [c[0] for c in _calls(log)] == ["bootout", "bootstrap"]


def test_install_script_retries_a_bootstrap_right_after_bootout(tmp_path, home):
    bin_dir, log = _fake_bin(tmp_path, fail_bootstrap_once=True)
    result = _run_install(tmp_path, home, bin_dir, "install")
    assert result.returncode == 0, result.stderr
    assert [c[0] for c in _calls(log)] == ["bootout", "bootstrap", "bootstrap"]


def test_install_script_refuses_a_python_without_h11(tmp_path, home):
    bin_dir, log = _fake_bin(tmp_path)
    no_h11 = tmp_path / "python3"
    no_h11.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'h11'\" >&2\nexit 1\n")
    no_h11.chmod(0o755)
    result = _run_install(tmp_path, home, bin_dir, "install", python=str(no_h11))
    assert result.returncode != 0
    assert "pip install --user h11" in result.stderr
    assert _calls(log) == []
    assert not os.path.exists(os.path.join(home, "Library", "LaunchAgents", LABEL + ".plist"))

    result = _run_install(tmp_path, home, bin_dir, "install", python="python3")
    assert result.returncode != 0 and "absolute" in result.stderr


def test_install_script_uninstall_restart_and_usage(tmp_path, home):
    bin_dir, log = _fake_bin(tmp_path)
    assert _run_install(tmp_path, home, bin_dir, "install").returncode == 0
    plist_path = os.path.join(home, "Library", "LaunchAgents", LABEL + ".plist")
    target = "gui/%d/%s" % (os.getuid(), LABEL)

    os.remove(log)
    result = _run_install(tmp_path, home, bin_dir, "restart")
    assert result.returncode == 0, result.stderr
    assert _calls(log) == [["kickstart", "-k", target]]

    os.remove(log)
    result = _run_install(tmp_path, home, bin_dir, "uninstall")
    assert result.returncode == 0, result.stderr
    assert _calls(log) == [["bootout", target]]
    assert not os.path.exists(plist_path)
    assert not os.path.exists(os.path.join(home, ".local", "share", "ollama-proxy"))

    result = _run_install(tmp_path, home, bin_dir, "frobnicate")
    assert result.returncode == 2 and "usage" in result.stderr


# --- systemd ---------------------------------------------------------------------------------


def parse_unit(text: str) -> Dict[str, List[Tuple[str, str]]]:
    """A systemd unit as {section: [(key, value), ...]}: keys may repeat, comments and continuations handled."""
    sections: Dict[str, List[Tuple[str, str]]] = {}
    current = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            assert current not in sections, "section [%s] twice" % current
            sections[current] = []
            continue
        assert current is not None and "=" in line, "not a key=value in a section: %r" % raw
        key, value = line.split("=", 1)
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(section: List[Tuple[str, str]], key: str) -> List[str]:
    return [v for k, v in section if k == key]


def one(section: List[Tuple[str, str]], key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, "%s: %r" % (key, found)
    return found[0]


def test_unit_after_ollama_restarts_and_is_sandboxed():
    unit = parse_unit(read(UNIT))
    assert set(unit) == {"Unit", "Service", "Install"}
    u, s = unit["Unit"], unit["Service"]
    assert set(one(u, "After").split()) == {"network-online.target", "ollama.service"}
    assert set(one(u, "Wants").split()) == {"network-online.target", "ollama.service"}
    assert one(s, "ExecStart") == "/usr/bin/python3 /opt/ollama-proxy/ollama_proxy.py"
    assert one(s, "EnvironmentFile") == "-/etc/ollama-proxy/ollama-proxy.env"
    assert one(s, "Restart") == "on-failure"
    assert float(one(s, "RestartSec")) > 0
    assert one(s, "KillSignal") == "SIGTERM"
    assert float(one(s, "TimeoutStopSec")) > ollama_proxy.Config().shutdown_grace
    for key in (
        "DynamicUser",
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RestrictNamespaces",
        "RestrictSUIDSGID",
    ):
        assert one(s, key) == "yes", key
    assert one(s, "ProtectSystem") == "strict"
    assert one(s, "SystemCallArchitectures") == "native"
    assert set(one(s, "RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert one(s, "CapabilityBoundingSet") == ""
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


def test_unit_parser_handles_repeats_and_continuations():
    unit = parse_unit("# c\n[Service]\nA=1\n; c\nA=2\nB=x \\\n  y\n")
    assert values(unit["Service"], "A") == ["1", "2"] and one(unit["Service"], "B") == "x  y"


def test_systemd_analyze_verifies_the_unit(tmp_path):
    """systemd-analyze verify, on a copy that runs this checkout with this Python, says nothing about our unit."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    text = read(UNIT)
    exec_start = 'ExecStart="%s" "%s"' % (sys.executable, PROXY)
    text, count = re.subn(r"^ExecStart=.*$", lambda _m: exec_start, text, flags=re.M)
    assert count == 1

    def verify(body: str) -> Tuple[int, List[str]]:
        path = tmp_path / "ollama-proxy.service"
        path.write_text(body)
        proc = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=120)
        ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "ollama-proxy.service" in line]
        return proc.returncode, ours

    # First show that this systemd-analyze works here and reports a broken copy of our unit.
    _, ours = verify(text.replace("DynamicUser=", "DynamicUsr=") + "\n[Service]\nExecStart=/nonexistent/python3\n")
    if not ours:
        pytest.skip("systemd-analyze verify does not report a broken unit in this environment")
    returncode, ours = verify(text)
    assert ours == [], "\n".join(ours)
    assert returncode == 0


def env_file_examples() -> Dict[str, str]:
    """The commented-out VARIABLE=value lines of the env file, uncommented (quotes stripped as systemd does)."""
    examples: Dict[str, str] = {}
    for line in read(ENV_FILE).splitlines():
        m = re.match(r"^#\s*([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if m:
            value = m.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            assert m.group(1) not in examples, "%s twice" % m.group(1)
            examples[m.group(1)] = value
    return examples


def test_env_file_examples_parse():
    examples = env_file_examples()
    for name in ("PROXY_HOST", "PROXY_PORT", "OLLAMA_BACKENDS", "MAX_CONTEXT_OVERRIDE", "PROXY_CONTEXT_MODE", "LOG_LEVEL"):
        assert name in examples
    # Nothing active by default: the unit runs with the proxy's defaults until someone edits it.
    active = [line for line in read(ENV_FILE).splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert active == []
    config = assert_parses(examples)
    assert config.num_ctx and config.keep_alive and config.api_key == "change-me"
    # Each one alone parses too (OLLAMA_HOST is only the default backend when OLLAMA_BACKENDS is unset).
    for name, value in examples.items():
        assert_parses({name: value})


# --- README ----------------------------------------------------------------------------------


def test_readme_explains_running_it_as_a_service():
    readme = read(os.path.join(ROOT, "README.md"))
    start = readme.index("\n## Running it as a service\n")
    end = readme.index("\n## Development\n")
    assert start < end and "\n## " not in readme[start + 1 : end].replace("\n## Running it as a service\n", "", 1)
    section = readme[start:end]
    for needle in (
        "contrib/launchd/install.sh install",
        "launchctl bootstrap gui/$(id -u)",
        "launchctl bootout gui/$(id -u)/" + LABEL,
        "launchctl kickstart -k gui/$(id -u)/" + LABEL,
        "~/Library/Logs/ollama-proxy.log",
        "/usr/bin/python3 -m pip install --user h11",
        "/opt/ollama-proxy",
        "systemctl daemon-reload && systemctl enable --now ollama-proxy",
        "journalctl -u ollama-proxy -f",
        "systemctl disable --now ollama-proxy",
    ):
        assert needle in section, needle
