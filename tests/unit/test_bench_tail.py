"""bench.tail (docs/benchmarks.md 6.tail): the probe loads into a process and records its
collections, and the report lines the probed processes' events up with the load's pairs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.tail import PROBE, overlapped, report


def test_overlap_counts_only_the_covered_part_of_a_pair() -> None:
    spans = [(0.0, 1.0), (2.0, 0.5), (10.0, 1.0)]
    starts = [s for s, _ in spans]
    assert overlapped(spans, starts, 0.5, 2.0) == 0.5 + 0.5  # [0.5, 2.5]: half of each of the first two
    assert overlapped(spans, starts, 3.0, 1.0) == 0.0
    assert overlapped(spans, starts, 9.0, 5.0) == 1.0


def test_the_probe_records_a_processs_collections(tmp_path: Path) -> None:
    env = {**os.environ, "REELGATE_TAIL_PROBE": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(PROBE), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", "import gc; gc.collect(); gc.collect(1)"], env=env, check=True,
                   timeout=60)
    (written,) = tmp_path.glob("service-*.json")
    generations = [event[1] for event in json.loads(written.read_text())["gc"]]
    assert 2 in generations and 1 in generations


def test_the_report_lines_events_up_with_the_measured_pairs(tmp_path: Path) -> None:
    (tmp_path / "pairs-1.json").write_text(json.dumps({
        "window": [100.0, 110.0],
        # (wall start, POST s, pair s); one pair before the window is left out
        "pairs": [[100.0 + i * 0.1, 0.02, 0.03] for i in range(99)] + [[105.0, 0.4, 0.5]],
    }))
    (tmp_path / "service-2.json").write_text(json.dumps({
        "role": "service", "pid": 2, "heap": {"frozen": 87000, "tracked": [8000, 0, 0], "full_collection_s": 0.003},
        "gc": [[105.2, 0, 0.004, 10], [105.3, 1, 0.006, 0], [50.0, 2, 0.1, 0]],
        "lag": [[101.0, 0.001], [105.1, 0.02]],
        "asgi": [[105.0, 0.35, "POST"], [105.4, 0.001, "GET"]],
        "commit": [[105.0, 0.3, "sqlite-group-commit"], [106.0, 0.01, "sqlite-group-commit"]],
        "keeper": [[104.0, 0.01]],
        "sqlite": [[105.0, 0.002, 0.001, 0.0005, 30]],
        "hops": [[105.0], [106.0]],
    }))
    (tmp_path / "load-3.json").write_text(json.dumps({
        "role": "load", "pid": 3, "heap": {}, "gc": [[107.0, 0, 0.002, 0]],
        "lag": [], "asgi": [], "commit": [], "keeper": [], "sqlite": [], "hops": []}))
    lines = "\n".join(report(tmp_path, stall_s=0.01))
    assert "pairs: n 100, p50 30.0, p99 500.0" in lines
    assert "slowest 1 % (1): POST 400.0 ms, GET 100.0 ms" in lines
    assert "service 2: collections gen0 1 (sum 4.0, max 4.0 ms); gen1 1 (sum 6.0, max 6.0 ms); gen2 0" in lines
    assert "87000 objects frozen" in lines and "paused 3.0 ms" in lines
    assert "commit wait sqlite-group-commit: n 2, p50 155.0, p99 300.0, max 300.0 ms" in lines
    assert "sqlite transactions: 1, 30 writes" in lines
    assert "the store's thread: 2 calls" in lines
    # the slow pair [105.0, 105.5] met both service collections (4 + 6 ms) and the 20 ms stall
    assert "time in a service collection: slowest 1 % mean 10.0 ms (1 of 1 met one)" in lines
    assert "time in a service loop stall > 10.0 ms: slowest 1 % mean 20.0 ms" in lines
    assert "time in a load-generator collection: slowest 1 % mean 0.0 ms (0 of 1 met one)" in lines
