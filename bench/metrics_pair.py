"""What a create + retrieve pair's metrics cost a worker of ``reelgate serve --workers N``.

    PYTHONPATH=. .venv/bin/python bench/metrics_pair.py [--pairs 100000] [--rounds 3] [--baseline DIR]

Per pair, ``bench.service``'s service records: two requests counted (Guard's
``requests_of(...).inc()``), one job accepted (``jobs_submitted.inc()``), three vendor
calls timed (``observe_vendor_call``: submit, status, download) and the finished job
(``observe_job``, one attempt with a cost). This does exactly that ``--pairs`` times on a
``Metrics`` in prometheus-client's multi-process mode (``PROMETHEUS_MULTIPROC_DIR`` set to
a fresh folder, as the supervisor does for its workers), with a ``refresh`` (gauges, and on
this tree the flush of the tallies) every 500 pairs, as a worker's one-second refresh at
~500 pairs/s per worker, and one ``render`` (a scrape) at the end. It prints CPU
microseconds per pair (``time.process_time``). ``--baseline DIR`` runs the same on that
tree's ``gateway`` in a child process, alternating round by round, and prints the ratio
baseline / this. Run as a script (not ``-m``) so the child can import another tree's code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from types import SimpleNamespace


def child(pairs: int) -> float:
    folder = tempfile.mkdtemp(prefix="metrics-pair-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # before prometheus-client picks its value class
    from gateway.routing.health import InProcessHealth
    from gateway.server.metrics import Metrics

    m = Metrics(folder)
    m._health, m._shared_up, m._in_flight = InProcessHealth(), lambda: False, lambda: 64  # watch() minus its task
    attempt = SimpleNamespace(provider="railwail", outcome=SimpleNamespace(value="succeeded"), error=None,
                              cost_usd=Decimal("0.05"))
    job = SimpleNamespace(status=SimpleNamespace(value="completed"), provider="railwail", attempts=[attempt])
    started = time.process_time()
    for n in range(pairs):
        m.requests_of("POST", "/v1/videos", "200").inc()
        m.jobs_submitted.inc()
        m.observe_vendor_call("railwail", "submit", "200", 0.004)
        m.observe_vendor_call("railwail", "status", "200", 0.003)
        m.observe_vendor_call("railwail", "download", "200", 0.012)
        m.observe_job(job)  # type: ignore[arg-type]
        m.requests_of("GET", "/v1/videos/{video_id}", "200").inc()
        if n % 500 == 499:
            m.refresh()
    m.render()
    return (time.process_time() - started) / pairs * 1e6


def main() -> None:
    # imported here, not at the top: a child runs this file on another tree's sources
    from bench.common import against_trees

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="DIR")
    args = parser.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = [("baseline", args.baseline), ("this tree", here)] if args.baseline else [("this tree", here)]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}  # each child makes its own

    def progress(n: int, name: str, pair_us: float) -> None:
        print(f"round {n + 1} {name:<10} {pair_us:6.2f} µs CPU per pair", flush=True)

    got = against_trees(sides, args.rounds, [sys.executable, os.path.abspath(__file__), "--child", str(args.pairs)],
                        float, alternate=True, env=env, each=progress)
    for name, values in got.items():
        print(f"{name:<10} median {statistics.median(values):6.2f} µs CPU per pair")
    if args.baseline:
        print(f"baseline / this: x{statistics.median(got['baseline']) / statistics.median(got['this tree']):.2f}")


if __name__ == "__main__":
    if "--child" in sys.argv:
        print(child(int(sys.argv[sys.argv.index("--child") + 1])))
    else:
        main()
