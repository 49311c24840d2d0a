"""The service files in contrib/: the launchd LaunchAgent and its install script, the systemd unit and its env file,
the Dockerfile, and the Kubernetes manifests.

This runs on Linux: the plist is checked with plistlib, install.sh runs against a fake
``launchctl`` (a script on PATH that records its arguments) with a temporary HOME, and the unit
is read by a small parser of our own and, when ``systemd-analyze`` exists, verified by it.
Every environment variable the files set must be one the proxy reads, and must parse.
There is no container runtime here: the Dockerfile is read by a small parser of our own, and its
install and start commands are run in a fresh virtual environment; the manifests are parsed with
PyYAML and checked against each other, the Dockerfile and the real ``build_config``.
"""

from __future__ import annotations

import http.client
import json
import os
import plistlib
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Tuple

import pytest
import yaml

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


# --- Docker ----------------------------------------------------------------------------------

DOCKER = os.path.join(ROOT, "contrib", "docker")
DOCKERFILE = os.path.join(DOCKER, "Dockerfile")
KUBERNETES = os.path.join(ROOT, "contrib", "kubernetes")


def parse_dockerfile(text: str) -> List[Tuple[str, str]]:
    """A Dockerfile as [(INSTRUCTION, arguments)]: comments dropped, backslash continuations joined."""
    instructions: List[Tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # a comment or blank line, also inside a continued instruction (as Docker reads it)
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        assert re.fullmatch(r"[A-Z]+", word), "not an instruction: %r" % raw
        instructions.append((word, rest.strip()))
    assert not pending, "a continuation at the end of the file"
    return instructions


def dockerfile() -> Dict[str, List[str]]:
    """INSTRUCTION -> its argument strings, in order."""
    found: Dict[str, List[str]] = {}
    for word, rest in parse_dockerfile(read(DOCKERFILE)):
        found.setdefault(word, []).append(rest)
    return found


def image_env() -> Dict[str, str]:
    env: Dict[str, str] = {}
    for rest in dockerfile()["ENV"]:
        for pair in shlex.split(rest):
            key, sep, value = pair.partition("=")
            assert sep and key, "ENV KEY=VALUE expected: %r" % rest
            env[key] = value
    return env


def exec_form(instruction: str) -> List[str]:
    values = dockerfile()[instruction]
    assert len(values) == 1, instruction
    parsed = json.loads(values[0])  # the exec (JSON) form: no shell in between, signals reach the proxy
    assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
    return parsed


def pip_install_args() -> List[str]:
    """The arguments of the RUN's ``python -m pip install`` (every && step of it is a plain command)."""
    (run,) = dockerfile()["RUN"]
    installs = [shlex.split(step) for step in run.split("&&") if " pip install " in " %s " % step]
    assert len(installs) == 1 and installs[0][:4] == ["python", "-m", "pip", "install"], run
    return installs[0][4:]


def test_dockerfile_reads_right():
    """The official slim Python image at a pinned version, h11 as pyproject requires it, the one file,
    a non-root numeric user, the seed's Docker default backend, every address, the port exposed."""
    df = dockerfile()
    (base,) = df["FROM"]
    assert re.fullmatch(r"python:3\.(9|1[0-3])(\.\d+)?-slim", base), base
    h11 = re.search(r'^dependencies = \["(h11[^"]*)"\]$', read(os.path.join(ROOT, "pyproject.toml")), re.M).group(1)
    assert [a for a in pip_install_args() if not a.startswith("-")] == [h11]
    assert df["COPY"] == ["ollama_proxy.py /app/ollama_proxy.py"]
    assert "ADD" not in df
    (user,) = df["USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), user
    (run,) = df["RUN"]
    assert "--uid %s" % uid in run  # the user exists in the image (a name in /etc/passwd for the logs)
    assert "python -m compileall -q /app" in run  # cached bytecode beside the one file: a start without compiling it
    assert df["COPY"] and list(df).index("COPY") < list(df).index("RUN")  # compiled after it is copied
    env = image_env()
    assert env["OLLAMA_BASE_URL"] == "http://host.docker.internal:11434"
    assert env["PROXY_HOST"] == "0.0.0.0"
    assert df["EXPOSE"] == [env["PROXY_PORT"]] == ["11435"]
    assert exec_form("ENTRYPOINT") == ["python", "/app/ollama_proxy.py"] and exec_form("CMD") == []
    config = assert_parses({k: v for k, v in env.items() if not k.startswith("PYTHON")})
    assert (config.host, config.port) == ("0.0.0.0", 11435)
    assert [b.url for b in config.backends] == ["http://host.docker.internal:11434"]
    # The build context is the repository; the Dockerfile's own ignore file sends only the one file.
    ignore = [line.strip() for line in read(DOCKERFILE + ".dockerignore").splitlines() if line.strip() and not line.startswith("#")]
    assert ignore == ["*", "!ollama_proxy.py"]


def test_dockerfile_install_and_start_commands_work_in_a_fresh_venv(tmp_path, fake):
    """The image's RUN pip install in a new virtual environment, then its ENTRYPOINT with its ENV
    (OLLAMA_BASE_URL given as ``docker run -e`` gives it, an ephemeral port): it listens on every
    address, serves a request through the backend, and stops cleanly on SIGTERM."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=180)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", *pip_install_args()], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    copied = {}
    for copy in dockerfile()["COPY"]:
        source, dest = copy.split()
        copied[dest] = os.path.join(ROOT, source)
    argv = [python if a == "python" else copied.get(a, a) for a in exec_form("ENTRYPOINT") + exec_form("CMD")]
    env = dict(image_env(), OLLAMA_BASE_URL=fake.url, PROXY_PORT="0", PATH=os.environ.get("PATH", "/usr/bin:/bin"))
    with subprocess.Popen(argv, env=env, cwd=str(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as proc:
        lines: List[str] = []
        listening = threading.Event()

        def read_log() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)
                if "listening on" in line:
                    listening.set()

        reader = threading.Thread(target=read_log, daemon=True)
        reader.start()
        try:
            assert listening.wait(30), "".join(lines)
            match = re.search(r"listening on http://0\.0\.0\.0:(\d+)", "".join(lines))
            assert match, "".join(lines)
            conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=30)
            try:
                conn.request("POST", "/api/chat", json.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}),
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = json.loads(resp.read())
            finally:
                conn.close()
            assert resp.status == 200 and body["done"] is True, body
            assert [r.path for r in fake.received if r.path == "/api/chat"] == ["/api/chat"]
        finally:
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(60)
            reader.join(10)
        assert returncode == 0, "".join(lines)


# --- Kubernetes ------------------------------------------------------------------------------


def manifests() -> List[dict]:
    """Every object of contrib/kubernetes/*.yaml, parsed strictly (PyYAML's safe loader)."""
    objects = []
    for name in sorted(os.listdir(KUBERNETES)):
        assert name.endswith(".yaml"), name
        with open(os.path.join(KUBERNETES, name), encoding="utf-8") as f:
            objects += [o for o in yaml.safe_load_all(f) if o is not None]
    return objects


def by_kind() -> Dict[Tuple[str, str], dict]:
    found: Dict[Tuple[str, str], dict] = {}
    for obj in manifests():
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in found, "%s twice" % (key,)
        found[key] = obj
    return found


API_VERSIONS = {"Service": "v1", "Deployment": "apps/v1", "StatefulSet": "apps/v1"}


def test_manifests_kinds_and_labels():
    objects = by_kind()
    assert set(objects) == {("Deployment", "ollama-proxy"), ("Service", "ollama-proxy"),
                            ("StatefulSet", "ollama"), ("Service", "ollama-headless")}
    for (kind, _), obj in objects.items():
        assert obj["apiVersion"] == API_VERSIONS[kind]
        assert "namespace" not in obj["metadata"]  # kubectl apply -n NAMESPACE decides
    for key in (("Deployment", "ollama-proxy"), ("StatefulSet", "ollama")):
        spec = objects[key]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), key


def _pods_of(service: dict, objects: Dict[Tuple[str, str], dict]) -> List[Tuple[str, str]]:
    selector = service["spec"]["selector"].items()
    return [key for key, obj in objects.items() if key[0] != "Service" and selector <= obj["spec"]["template"]["metadata"]["labels"].items()]


def _container_port(workload: dict, target: Any) -> int:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    for port in container["ports"]:
        if target in (port["containerPort"], port.get("name")):
            return port["containerPort"]
    raise AssertionError("no container port %r" % (target,))


def test_services_select_their_pods_and_ports_line_up():
    objects = by_kind()
    headless, proxy_service = objects[("Service", "ollama-headless")], objects[("Service", "ollama-proxy")]
    statefulset, deployment = objects[("StatefulSet", "ollama")], objects[("Deployment", "ollama-proxy")]
    assert _pods_of(headless, objects) == [("StatefulSet", "ollama")]
    assert _pods_of(proxy_service, objects) == [("Deployment", "ollama-proxy")]
    # The headless Service: no virtual IP, only ready pods in DNS; the StatefulSet's governing Service.
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is False
    assert statefulset["spec"]["serviceName"] == "ollama-headless"
    (dns_port,) = headless["spec"]["ports"]
    assert _container_port(statefulset, dns_port["targetPort"]) == dns_port["port"] == 11434
    (ollama,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert {e["name"]: e["value"] for e in ollama["env"]}["OLLAMA_HOST"] == "0.0.0.0:11434"
    (port,) = proxy_service["spec"]["ports"]
    assert proxy_service["spec"]["type"] == "ClusterIP"
    assert _container_port(deployment, port["targetPort"]) == port["port"] == int(image_env()["PROXY_PORT"])


def test_proxy_args_parse_and_find_the_headless_service():
    """The Deployment's args with the image's ENV, through the real build_config: DNS discovery of the
    headless Service's name and port, no default backend, every address, the container's port."""
    objects = by_kind()
    deployment = objects[("Deployment", "ollama-proxy")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"].split(":")[0] == "ollama-proxy"  # the README's docker build -t ollama-proxy
    assert "command" not in container  # the image's ENTRYPOINT, with these args
    env = dict(image_env(), **{e["name"]: e["value"] for e in container.get("env", [])})
    config = ollama_proxy.build_config(container["args"], {k: v for k, v in env.items() if not k.startswith("PYTHON")})
    ((name, port),) = config.discover_dns
    assert name.split(".")[0] == "ollama-headless" and port == objects[("Service", "ollama-headless")]["spec"]["ports"][0]["port"]
    assert config.backends == ()  # discovery alone: OLLAMA_BASE_URL of the image is not a backend then
    assert (config.host, config.port) == ("0.0.0.0", _container_port(deployment, "http"))
    assert config.scan_interval > 0
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > config.shutdown_grace


def test_probes_resources_and_security():
    objects = by_kind()
    deployment, statefulset = objects[("Deployment", "ollama-proxy")], objects[("StatefulSet", "ollama")]
    pod = deployment["spec"]["template"]["spec"]
    (proxy,) = pod["containers"]
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/__proxy/health", "port": "http"}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/", "port": "http"}
    # Non-root: the image's numeric user, checked by the kubelet; nothing to write, no privilege.
    uid = dockerfile()["USER"][0].partition(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert proxy["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    for workload in (deployment, statefulset):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], container["name"]
            for kind in ("readinessProbe", "livenessProbe"):
                assert _container_port(workload, container[kind]["httpGet"]["port"])
    # Ollama's models: one volume per pod, from the claim template, where the image keeps them.
    (ollama,) = statefulset["spec"]["template"]["spec"]["containers"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert [m["name"] for m in ollama["volumeMounts"]] == [claim["metadata"]["name"]]
    assert ollama["volumeMounts"][0]["mountPath"] == "/root/.ollama"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["resources"]["requests"]["storage"]
    assert ollama["image"].startswith("ollama/ollama:") and ollama["image"] != "ollama/ollama:latest"


def test_probe_paths_answer_as_the_manifests_expect(fake, start_proxy):
    """The proxy's readiness path is 200 with a healthy backend and 503 with none; the liveness path
    is 200 either way (so Kubernetes takes the proxy out of the Service, but does not restart it)."""
    objects = by_kind()
    (container,) = objects[("Deployment", "ollama-proxy")]["spec"]["template"]["spec"]["containers"]
    ready, alive = container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]

    def get(proxy, path: str) -> Tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % s.getsockname()[1]  # nothing listens there once closed
    for backend, status in ((fake.url, 200), (dead, 503)):
        proxy = start_proxy(backend, "--scan-interval", "0.2")
        deadline = time.monotonic() + 10
        while get(proxy, ready)[0] != status and time.monotonic() < deadline:  # the first probe round
            time.sleep(0.05)
        time.sleep(0.5)  # a few rounds more: it stays so
        code, body = get(proxy, ready)
        assert code == status and json.loads(body)["status"] == ("ok" if status == 200 else "down"), body
        assert get(proxy, alive) == (200, b"Ollama is running")


# --- README: containers ----------------------------------------------------------------------


def test_readme_explains_docker_and_kubernetes():
    readme = read(os.path.join(ROOT, "README.md"))
    section = readme[readme.index("\n## Running it as a service\n") : readme.index("\n## Development\n")]
    for needle in (
        "docker build -f contrib/docker/Dockerfile -t ollama-proxy .",
        "docker run -p 11435:11435 -e OLLAMA_BASE_URL=",
        "kubectl apply -n",
        "-f contrib/kubernetes/",
        "--discover-dns ollama-headless:11434",
        "NXDOMAIN",
    ):
        assert needle in section, needle
