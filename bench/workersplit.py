"""How a burst of new connections splits over ``reelgate serve --workers 2``'s workers.

    python -m bench.workersplit [--baseline DIR] [--starts 10]

Each start: ``serve --sandbox --workers 2`` on a free port (a fresh REELGATE_HOME), once it
answers, 64 connections opened at once (as ``bench.service``'s keep-alive pool is), then
``/readyz`` asked on each: it prints how many each worker took. Keep-alive callers stay
where they landed, so this split is the CPU split of the whole run (docs/benchmarks.md,
section 6.reuseport). ``--baseline``: the same from another source tree, start by start.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import free_port

CONNECTIONS = 64


def split(tree: Path) -> list[int]:
    """The connections each worker took, most first, of one start of ``tree``'s service."""
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "REELGATE_HOME": home, "PYTHONPATH": str(tree)}
        env.pop("REELGATE_REDIS_URL", None)
        serve = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--sandbox", "--workers", "2",
                                  "--port", str(port)], env=env, cwd=tree,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            up(port)
            connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=90) for _ in range(CONNECTIONS)]
            for c in connections:
                c.connect()
            took: Counter[int] = Counter()
            for c in connections:
                c.request("GET", "/readyz")
                took[json.loads(c.getresponse().read())["replica"]["pid"]] += 1
                c.close()
            return sorted(took.values(), reverse=True)
        finally:
            serve.terminate()
            serve.wait(60)


def up(port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            c.getresponse().read()
            c.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="another source tree to run start by start")
    parser.add_argument("--starts", type=int, default=10)
    args = parser.parse_args()
    trees = {"reelgate": Path.cwd(), **({"baseline": args.baseline} if args.baseline else {})}
    results: dict[str, list[list[int]]] = {name: [] for name in trees}
    for _ in range(args.starts):
        for name, tree in trees.items():
            results[name].append(split(tree))
    for name, splits in results.items():
        worst = max(s[0] for s in splits) * 100 // CONNECTIONS
        print(f"{name:9} {' '.join('/'.join(map(str, s)) for s in splits)}   worst {worst}/{100 - worst} %")


if __name__ == "__main__":
    main()
