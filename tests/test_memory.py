"""Started as a script, the proxy replaces itself (same PID) with an interpreter that imports the
file as a module, so the script's syntax tree (some 20 MB that CPython keeps for as long as a
script runs) is not carried for the life of the service (issue 14, memory)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.path.join(ROOT, "ollama_proxy.py")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(env_extra: dict, *python_options: str):
    port = free_port()
    env = dict(os.environ)
    env.pop("OLLAMA_PROXY_NO_REEXEC", None)
    env.update(env_extra)
    proc = subprocess.Popen([sys.executable, *python_options, PROXY, "--port", str(port), "--backend", "http://127.0.0.1:9",
                             "--scan-interval", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
    raise AssertionError("the proxy did not listen")


def status_kb(pid: int, key: str) -> int:
    with open("/proc/%d/status" % pid) as f:
        return int(next(line for line in f if line.startswith(key + ":")).split()[1])


def stop(proc) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err.decode()


def test_a_script_start_re_executes_as_the_module_keeping_pid_options_and_arguments():
    proc = start({}, "-X", "dev", "-W", "ignore::DeprecationWarning")
    try:
        with open("/proc/%d/cmdline" % proc.pid, "rb") as f:
            argv = f.read().split(b"\0")
        assert b"-c" in argv and b"-Xdev" in argv and b"-Wignore::DeprecationWarning" in argv
        assert argv[argv.index(b"-c") + 2] == PROXY.encode() and b"--port" in argv  # the file, then our arguments
    finally:
        log = stop(proc)
    assert "listening on" in log and "stopped" in log


def test_the_re_executed_proxy_carries_no_syntax_tree():
    """The same start with OLLAMA_PROXY_NO_REEXEC (run as the script) holds some 20 MB more."""
    as_module = start({"PYTHONDONTWRITEBYTECODE": "1"})  # compiled at start even then: the tree is freed
    as_script = start({"OLLAMA_PROXY_NO_REEXEC": "1"})
    try:
        module_kb, script_kb = status_kb(as_module.pid, "VmRSS"), status_kb(as_script.pid, "VmRSS")
        with open("/proc/%d/cmdline" % as_script.pid, "rb") as f:
            assert b"-c" not in f.read().split(b"\0")
    finally:
        stop(as_module)
        stop(as_script)
    assert script_kb - module_kb > 8 * 1024, (module_kb, script_kb)
