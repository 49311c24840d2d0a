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


def start(env_extra: dict, *python_options: str, proxy: str = PROXY):
    port = free_port()
    env = dict(os.environ)
    env.pop("OLLAMA_PROXY_NO_REEXEC", None)
    env.update(env_extra)
    proc = subprocess.Popen([sys.executable, *python_options, proxy, "--port", str(port), "--backend", "http://127.0.0.1:9",
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


def _loaded_modules_after_start(tmp_path, compile_first: bool):
    """Start a copy of the file as the re-executed module, its bytecode cached or not, and list
    which of the modules only some starts need are loaded once it serves."""
    copy = tmp_path / "ollama_proxy.py"
    with open(PROXY, "rb") as f:
        copy.write_bytes(f.read())
    if compile_first:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tmp_path)], check=True)
        os.utime(copy, (time.time() - 60, time.time() - 60))  # older than its bytecode, as after an install
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-f", str(tmp_path)], check=True)
        time.sleep(2.1)  # the bytecode predates this start
    code = ("import sys, importlib.util as u; s = u.spec_from_file_location('ollama_proxy', %r); m = u.module_from_spec(s); "
            "sys.modules['ollama_proxy'] = m; s.loader.exec_module(m); m.release_freed_memory(); "
            "print(m.compiled_at_start(), *[n for n in ('ctypes', 'hashlib', 'calendar', 'uuid', 'encodings.idna') if n in sys.modules])"
            % str(copy))
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()


def test_loaded_from_cached_bytecode_nothing_is_trimmed_and_ctypes_is_not_loaded(tmp_path):
    assert _loaded_modules_after_start(tmp_path, compile_first=True) == ["False"]


def test_compiled_at_this_start_the_heap_is_trimmed(tmp_path):
    assert _loaded_modules_after_start(tmp_path, compile_first=False) == ["True", "ctypes"]


def _serving(proc) -> tuple:
    """(how the serving process was started, whether it loaded ctypes to trim its heap)."""
    with open("/proc/%d/environ" % proc.pid, "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    with open("/proc/%d/maps" % proc.pid) as f:
        trimmed = "_ctypes" in f.read()
    return env.get(b"OLLAMA_PROXY_BOOTED", b"").decode(), trimmed


def test_a_first_start_that_wrote_the_bytecode_serves_from_it(tmp_path):
    """The first start compiles the file and writes its bytecode; it then starts once more (same
    PID) from that bytecode, so the compiler's leftovers are not carried; the next start loads the
    bytecode at once.  Where nothing can be written (PYTHONDONTWRITEBYTECODE) it trims its heap."""
    copy = tmp_path / "ollama_proxy.py"
    with open(PROXY, "rb") as f:
        copy.write_bytes(f.read())
    env = {"PYTHONDONTWRITEBYTECODE": ""}
    first = start(env, proxy=str(copy))
    try:
        assert _serving(first) == ("cached", False)
        assert list((tmp_path / "__pycache__").glob("ollama_proxy.*.pyc"))
    finally:
        assert "listening on" in stop(first)
    time.sleep(2.1)  # the bytecode is older than the next start
    again = start(env, proxy=str(copy))
    try:
        assert _serving(again) == ("script", False)
    finally:
        stop(again)
    with open(copy, "ab") as f:  # a new version of the file: its bytecode is stale, and cannot be rewritten
        f.write(b"\n# changed\n")
    stale = start({"PYTHONDONTWRITEBYTECODE": "1"}, proxy=str(copy))
    try:
        assert _serving(stale) == ("script", True)  # no second start from the stale bytecode: trimmed instead
    finally:
        stop(stale)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "ollama_proxy.py").write_bytes(copy.read_bytes())
    unwritable = start({"PYTHONDONTWRITEBYTECODE": "1"}, proxy=str(other / "ollama_proxy.py"))
    try:
        assert _serving(unwritable) == ("script", True)
    finally:
        stop(unwritable)
