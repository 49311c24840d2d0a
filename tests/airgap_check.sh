#!/usr/bin/env bash
# The air-gapped path (README "Offline install"): a Python with no pip and nothing installed,
# only the h11 wheel on PYTHONPATH and the one file.  Runs --help and serves one proxied
# request to the fake Ollama.  Usage: tests/airgap_check.sh /path/to/python3
set -euo pipefail
python=${1:?usage: airgap_check.sh PYTHON}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# On the connected machine: fetch the wheel.  On the air-gapped one: a venv without pip.
"$python" -m pip download -q --no-deps --only-binary=:all: -d "$work/wheels" "h11>=0.16" 2>/dev/null
wheel=$(ls "$work"/wheels/h11-*.whl)
"$python" -m venv --without-pip "$work/venv"
cp "$repo/ollama_proxy.py" "$work/"
py="$work/venv/bin/python"
cd "$work"
if "$py" -m pip --version >/dev/null 2>&1; then echo "airgap: pip should not be there" >&2; exit 1; fi

PYTHONPATH="$wheel" "$py" ollama_proxy.py --help >/dev/null

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
fake_port=$(free_port)
proxy_port=$(free_port)
PYTHONPATH="$wheel" "$py" "$repo/tests/fake_ollama.py" --port "$fake_port" >"$work/fake.log" 2>&1 &
pids+=($!)
PYTHONPATH="$wheel" "$py" ollama_proxy.py --port "$proxy_port" --backend "http://127.0.0.1:$fake_port" --scan-interval 0 >"$work/proxy.log" 2>&1 &
pids+=($!)

"$py" - "$proxy_port" <<'PY'
import json, sys, time, urllib.request
port = int(sys.argv[1])
deadline = time.time() + 20
while True:
    try:
        body = json.dumps({"model": "llama3.2", "prompt": "hi", "stream": False}).encode()
        req = urllib.request.Request("http://127.0.0.1:%d/api/generate" % port, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = json.loads(resp.read())
            assert resp.status == 200 and answer["done"] is True, answer
            assert "ollama-proxy-" in resp.headers["Via"]
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
print("airgap: --help and one proxied request OK with only the h11 wheel on PYTHONPATH")
PY
