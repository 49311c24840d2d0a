"""Many normal-mode fake Ollamas in one process, for bench.py's "choice" measurement.

    python3 tests/perf/many_fakes.py --count N [--host 127.0.0.1]

Starts N ``FakeOllama`` servers (tests/fake_ollama.py, normal mode: they answer /api/tags and
/api/ps, so a probing proxy counts them healthy), each on its own ephemeral port with its own
event loop thread, prints one JSON line ``{"ports": [...]}`` on stdout, then serves until stdin
is closed (or SIGTERM) and stops them all. Idle fakes cost nothing but a blocked thread each.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from fake_ollama import FakeOllama  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    fakes = []
    try:
        for _ in range(args.count):
            fakes.append(FakeOllama(host=args.host).start())
        sys.stdout.write(json.dumps({"ports": [f.port for f in fakes]}) + "\n")
        sys.stdout.flush()
        sys.stdin.read()  # until the bench closes our stdin (or exits)
    finally:
        for fake in fakes:
            fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
