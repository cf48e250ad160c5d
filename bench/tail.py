"""Where the tail of ``bench.service``'s pairs comes from (docs/benchmarks.md 6.tail).

    python -m bench.tail [--store sqlite] [--workers 2] [--seconds 10] [--rounds 1] [--baseline DIR]

Runs ``bench.service``'s rounds (same upstream, service, load generator) with a probe in
every process (bench/tail_probe: collector pauses, event-loop lag, each request's time in
the ASGI app, the store's group-commit waits, the keeper's ``syncfs`` rounds) and the load
generator's pairs stamped, then prints, for the measured window:

* the pairs' p50 / p99 / max, and the POST's and the GET's share of the p99 pairs;
* per process: collections by generation with their pauses, loop lag p50 / p99 / max,
  the app's time per POST and GET, the commit wait, the keeper's rounds;
* how much of the slowest 1 % of pairs (and of all pairs), on average, overlapped a service
  collection, a load-generator collection, or a service loop stall over ``--stall-ms``.

Probing costs CPU, so read its figures against each other, not against an unprobed run.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import tempfile
from pathlib import Path

from bench.common import free_port, machine, median, percentile
from bench.service import process, reelgate_round

PROBE = Path(__file__).resolve().parent / "tail_probe"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def within(events: list[list[float]], window: tuple[float, float]) -> list[list[float]]:
    return [e for e in events if window[0] <= e[0] <= window[1]]


def summary(values: list[float]) -> str:
    if not values:
        return "none"
    return f"n {len(values)}, p50 {ms(median(values))}, p99 {ms(percentile(values, 99))}, max {ms(max(values))} ms"


def overlapped(spans: list[tuple[float, float]], starts: list[float], began: float, took: float) -> float:
    """How much of [began, began + took] the spans (start, length; sorted, ``starts`` theirs) cover."""
    end, covered = began + took, 0.0
    for s, length in spans[max(0, bisect.bisect_right(starts, end) - 256):bisect.bisect_right(starts, end)]:
        covered += max(0.0, min(end, s + length) - max(began, s))
    return covered


def report(folder: Path, stall_s: float) -> list[str]:
    files = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    pairs_file = next(f for f in files if "window" in f)
    window = tuple(pairs_file["window"])
    pairs = pairs_file["pairs"]
    out: list[str] = []
    totals = [p[2] for p in pairs]
    p99 = percentile(totals, 99)
    slow = [p for p in pairs if p[2] >= p99]
    out.append(f"pairs: {summary(totals)}; POST {summary([p[1] for p in pairs])}")
    out.append(f"  slowest 1 % ({len(slow)}): POST {ms(median([p[1] for p in slow]))} ms, "
               f"GET {ms(median([p[2] - p[1] for p in slow]))} ms (medians)")
    service_gc: list[tuple[float, float]] = []
    service_stalls: list[tuple[float, float]] = []
    load_gc: list[tuple[float, float]] = []
    seconds = window[1] - window[0]
    for f in files:
        if "role" not in f:
            continue
        name = f"{f['role']} {f['pid']}"
        gcs = within(f["gc"], window)
        if f["role"] == "service" and not f["asgi"]:
            continue  # the supervisor of --workers
        by_gen = {g: [e[2] for e in gcs if e[1] == g] for g in (0, 1, 2)}
        out.append(f"{name}: collections " + "; ".join(
            f"gen{g} {len(v)} (sum {ms(sum(v))}, max {ms(max(v, default=0))} ms)" for g, v in by_gen.items())
            + f"; {sum(e[2] for e in gcs) / seconds * 100:.1f} % of the window in the collector")
        pauses = [(e[0] - e[2], e[2]) for e in gcs]  # stamped at the end: the span started a pause earlier
        (service_gc if f["role"] == "service" else load_gc if f["role"] == "load" else []).extend(pauses)
        if f.get("heap"):
            heap = f["heap"]
            out.append(f"  at the first request: {heap.get('frozen')} objects frozen, tracked by generation "
                       f"{heap.get('tracked')}; a full collection at the end paused "
                       f"{ms(float(heap.get('full_collection_s', 0)))} ms")
        if f["lag"]:
            lags = within(f["lag"], window)
            out.append(f"  loop lag: {summary([e[1] for e in lags])}; over {ms(stall_s)} ms: "
                       f"{sum(e[1] > stall_s for e in lags)}")
            if f["role"] == "service":
                service_stalls.extend((e[0] - e[1], e[1]) for e in lags if e[1] > stall_s)
        for method in ("POST", "GET"):
            spent = [e[1] for e in within(f["asgi"], window) if e[2] == method]
            if spent:
                out.append(f"  app time {method}: {summary(spent)}")
        for name_ in sorted({e[2] for e in f["commit"]}):
            waits = [e[1] for e in within(f["commit"], window) if e[2] == name_]
            out.append(f"  commit wait {name_}: {summary(waits)}")
        if f["sqlite"]:
            txns = within(f["sqlite"], window)
            out.append(f"  sqlite transactions: {len(txns)}, {median([e[4] for e in txns]):.0f} writes (median);"
                       f" lock {summary([e[1] for e in txns])}")
            out.append(f"    statements {summary([e[2] for e in txns])}; COMMIT {summary([e[3] for e in txns])}")
            busy, locked = sum(e[1] + e[2] + e[3] for e in txns), sum(e[1] for e in txns)
            out.append(f"    the store's thread in transactions {busy / seconds * 100:.1f} % of the window,"
                       f" waiting for the write lock {locked / seconds * 100:.1f} %")
        if f.get("hops"):
            out.append(f"  the store's thread: {len(within(f['hops'], window))} calls")
        if f["keeper"]:
            out.append(f"  keeper syncfs: {summary([e[1] for e in within(f['keeper'], window)])}")
    for label, spans in (("a service collection", service_gc), ("a load-generator collection", load_gc),
                         (f"a service loop stall > {ms(stall_s)} ms", service_stalls)):
        spans.sort()
        starts = [s for s, _ in spans]
        slow_in = [overlapped(spans, starts, p[0], p[2]) for p in slow]
        all_in = [overlapped(spans, starts, p[0], p[2]) for p in pairs]
        out.append(f"time in {label}: slowest 1 % mean {ms(sum(slow_in) / len(slow))} ms "
                   f"({sum(x > 0 for x in slow_in)} of {len(slow)} met one), all pairs mean "
                   f"{ms(sum(all_in) / len(pairs))} ms ({sum(x > 0 for x in all_in)} of {len(pairs)})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", nargs="+", choices=("sqlite", "postgres"), default=["sqlite"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--stall-ms", type=float, default=10.0)
    parser.add_argument("--baseline", metavar="DIR", help="another source tree, probed likewise, round by round")
    args = parser.parse_args()
    args.profile = False
    print(f"{machine()}; {args.concurrency} concurrent pairs, {args.seconds:g} s, probed")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")]))
        port = free_port()
        upstream = f"http://127.0.0.1:{port}"
        with process([sys.executable, "-m", "bench.service", "--upstream-port", str(port)],
                     f"{upstream}/_sandbox/stats"):
            for n in range(args.rounds):
                for store in args.store:
                    for tree in ([args.baseline] if args.baseline else []) + [None]:
                        folder = tmp / f"probe-{store}-{n}-{'base' if tree else 'this'}"
                        folder.mkdir()
                        os.environ["REELGATE_TAIL_PROBE"] = str(folder)
                        result = reelgate_round(store, upstream, args, tmp, tree=tree, workers=args.workers)
                        del os.environ["REELGATE_TAIL_PROBE"]
                        print(f"-- {'baseline' if tree else 'this tree'}, {store}, {args.workers} worker(s): "
                              f"{float(result['pairs']) / args.seconds:.0f} pairs/s, "  # type: ignore[arg-type]
                              f"service CPU {float(result['cpu_ms_per_pair']):.2f} ms/pair")  # type: ignore[arg-type]
                        print("\n".join(report(folder, args.stall_ms / 1000)), flush=True)


if __name__ == "__main__":
    main()
