"""What does ``reelgate serve`` cost over the library? Create + retrieve pairs per second.

    python -m bench.service [--store sqlite postgres] [--seconds 20] [--concurrency 64]
                            [--rounds 1] [--workers 1 2] [--direct] [--baseline DIR] [--no-litellm] [--profile]
                            [--loadgen httptools|aiohttp]

Three processes besides this one, as a deployment would have them: one OpenAI-style
upstream that does no work (:func:`bench.upstream.upstream_app`: every video is ``completed`` at once,
its content a few bytes of MP4 header, so the upstream is never the bottleneck);
``reelgate serve`` (uvicorn) routed to it as the railwail vendor; and one load generator
(bench/loadgen.py: ``--concurrency`` workers, each on its own HTTP/1.1 keep-alive
connection, doing ``POST /v1/videos`` then ``GET /v1/videos/{id}`` for ``--seconds``,
after a warm-up; ``--loadgen aiohttp`` for the aiohttp client the figures before
2026-12-01 17:00 UTC were taken with). It prints pairs/s and the pair latency's p50 / p99,
the service's CPU per pair and, in brackets, where the rest of the two cores went per
pair: the upstream's CPU, the load generator's own, and the service's share of the three,
per store: SQLite in a fresh ``REELGATE_HOME``, and PostgreSQL
(``postgresql://postgres@127.0.0.1:5432/test`` or ``$REELGATE_BENCH_PG``: a throwaway
database is created beside ``test`` and dropped afterwards).

``--baseline DIR`` runs the service from another source tree too (``git archive <commit> |
tar -x -C DIR``), alternating with this one round by round, and prints this tree's
pairs/s as a ratio of the baseline's: on a shared machine only the ratio means much.

With the optional ``bench`` extra installed (``pip install -e '.[bench]'``: LiteLLM's
proxy), the same pairs also go through ``litellm --config`` against the same upstream,
with ``LITELLM_LOCAL_MODEL_COST_MAP=True`` so it never reaches the network
(``$REELGATE_BENCH_LITELLM`` names another ``litellm`` executable, e.g. in its own venv).

``--direct`` runs the same load on the upstream itself, once per round: the service's
``POST p99`` minus the upstream's is what the service adds to a create (its "service CPU"
is then the upstream's).

``--workers 1 2`` runs ``reelgate serve --workers N`` for each N in turn (the service CPU
then counts the supervisor and every worker process).

Each job does a whole lifecycle at the service while the load runs: stored, submitted,
polled (0.01 s after the submit), its video mirrored into result storage, finished.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

from bench.common import free_port, machine, median, run_event_loop, stop_process
from bench.loadgen import CLIENTS, load
from bench.upstream import UPSTREAM_KEY, upstream_app

#: how long the service may take to answer before we give up
START_TIMEOUT_S = 120.0
PG_DSN = os.environ.get("REELGATE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


# -- processes ---------------------------------------------------------------------------------

@contextlib.contextmanager
def process(argv: list[str], ready_url: str, env: dict[str, str] | None = None,
            log: Path | None = None, cwd: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, up once ``ready_url`` answers; terminated after."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[2:4]} exited with code {proc.returncode}"
                                   + (f"; see {log}" if log else ""))
            try:
                with urllib.request.urlopen(ready_url, timeout=1):
                    break
            except urllib.error.HTTPError:
                break  # it answers (401 without a key, say)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{argv[2:4]} did not start in time") from None
                time.sleep(0.2)
        yield proc
    finally:
        stop_process(proc, timeout_s=15)
        if log:
            out.close()  # type: ignore[union-attr]


def service_config(upstream: str, store_url: str | None) -> str:
    lines = ["providers:",
             "  railwail:",
             f"    base_url: {upstream}/api/v1",
             f"    api_key: {UPSTREAM_KEY}"]
    lines += [f"  {name}:\n    enabled: false" for name in ("fal", "apiframe", "openai_video", "toyvendor")]
    lines += ["polling:", "  initial_s: 0.01", "  max_s: 0.05", "service:"]
    lines += [f"  store_url: {store_url}"] if store_url else ["  store_url: null"]
    return "\n".join(lines) + "\n"


def cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by the process and each of its descendants
    (``--workers``: the supervisor and its worker processes), by pid."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        used[child] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def under(p: int) -> bool:
        while p > 1:
            if p == pid:
                return True
            p = parents.get(p, 0)
        return False

    return {p: cpu for p, cpu in used.items() if under(p)}


def run_load(url: str, key: str, args: argparse.Namespace, pid: int,
             model: str = "ray-2-flash", upstream_pid: int | None = None) -> dict[str, object]:
    """The load generator's figures, and the service's CPU time per pair: on a machine
    shared with other work that is the steadier measure of what a pair costs. Also where
    the rest of the cores went per pair: the load generator's own CPU (it measures it) and,
    given ``upstream_pid``, the upstream's."""
    before = cpu_s(pid)
    upstream_before = sum(cpu_s(upstream_pid).values()) if upstream_pid else 0.0
    out = subprocess.run([sys.executable, "-m", "bench.service", "--load", url, key, str(args.seconds),
                          str(args.concurrency), str(args.warmup), model, getattr(args, "loadgen", CLIENTS[0])],
                         check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(out.stdout)
    used = {p: cpu - before.get(p, 0.0) for p, cpu in cpu_s(pid).items()}
    all_pairs = max(int(result["all_pairs"]), 1)  # type: ignore[call-overload]
    result["cpu_ms_per_pair"] = sum(used.values()) * 1000 / all_pairs
    if upstream_pid:
        result["upstream_cpu_ms_per_pair"] = (sum(cpu_s(upstream_pid).values()) - upstream_before) * 1000 / all_pairs
    # how the work was shared between the worker processes (those that used more than 1 %)
    busy = sorted((cpu for cpu in used.values() if cpu > 0.01 * sum(used.values())), reverse=True)
    result["cpu_split"] = [round(cpu / sum(busy) * 100) for cpu in busy] if len(busy) > 1 else []
    return result


def reelgate_round(store: str, upstream: str, args: argparse.Namespace, tmp: Path,
                   tree: str | None = None, workers: int = 1, upstream_pid: int | None = None) -> dict[str, object]:
    """One round against ``reelgate serve`` (from ``tree``'s sources when given), with
    ``workers`` worker processes (``--workers``; 1: the one process of before)."""
    home = tmp / f"home-{store}-{uuid.uuid4().hex[:6]}"
    home.mkdir(mode=0o700)
    with (throwaway_database() if store == "postgres" else contextlib.nullcontext(None)) as dsn:
        config = home / "reelgate.yaml"
        config.write_text(service_config(upstream, dsn))
        port = free_port()
        env = {**os.environ, "REELGATE_HOME": str(home), "REELGATE_LOG_LEVEL": "warning"}
        # ``python -m`` puts the working directory first on sys.path, before PYTHONPATH: the
        # baseline's children run in its tree, or they would import this one's sources
        cwd = str(Path(tree).resolve()) if tree else None
        if cwd:  # (bench.tail's probe, when set, goes into both trees' processes)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(Path(__file__).with_name("tail_probe"))] * ("REELGATE_TAIL_PROBE" in env) + [cwd])
        # The key goes where `serve` looks for it: keys.db, or the PostgreSQL store's api_keys.
        key = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--name", "bench",
                              "--config", str(config)], env=env, check=True, capture_output=True,
                             text=True, cwd=cwd).stdout.strip()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)]
        argv += ["--workers", str(workers)] if workers > 1 else []
        with process(argv, f"{url}/healthz", env, log=tmp / f"serve-{store}.log", cwd=cwd) as proc:
            wait_for_workers(url, workers)
            if args.profile:
                print(f"  (profile the service: py-spy record --pid {proc.pid} -o /tmp/service.svg)", flush=True)
            return run_load(url, key, args, proc.pid, upstream_pid=upstream_pid)


def wait_for_workers(url: str, workers: int) -> None:
    """Until ``workers`` distinct processes have answered ``/readyz`` (each on a new
    connection). The load's connections are opened once and kept: started when only the
    first worker answers, they all went to it, and one worker took 92-97 % of the CPU in
    some rounds (docs/benchmarks.md 6.loader)."""
    seen: set[int] = set()
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {workers} workers answered in time")
        with contextlib.suppress(OSError, ValueError, KeyError):
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as answer:
                seen.add(int(json.loads(answer.read())["replica"]["pid"]))
        time.sleep(0.05)


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    """A fresh database beside ``PG_DSN``'s, dropped after: the service's tables (in its
    default schema) never meet anyone else's."""
    import psycopg
    from psycopg import sql

    name = f"reelgate_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield PG_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def litellm_round(upstream: str, args: argparse.Namespace, tmp: Path,
                  upstream_pid: int | None = None) -> dict[str, object] | str:
    """LiteLLM's proxy in front of the same upstream, or why it was not run."""
    exe = (os.environ.get("REELGATE_BENCH_LITELLM") or shutil.which("litellm")
           or str(Path(sys.executable).with_name("litellm")))
    if not Path(exe).exists():
        return "skipped: LiteLLM is not installed (pip install -e '.[bench]')"
    config = tmp / "litellm.yaml"
    config.write_text("model_list:\n  - model_name: ray-2-flash\n    litellm_params:\n"
                      f"      model: openai/luma-ray-flash-2\n      api_base: {upstream}/v1\n"
                      f"      api_key: {UPSTREAM_KEY}\n"
                      "general_settings:\n  master_key: sk-litellm-bench\n")
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "True"}
    url = f"http://127.0.0.1:{port}"
    try:
        with process([exe, "--config", str(config), "--port", str(port), "--host", "127.0.0.1", "--num_workers",
                      "1"], f"{url}/health/liveliness", env, log=tmp / "litellm.log") as proc:
            return run_load(url, "sk-litellm-bench", args, proc.pid, model="ray-2-flash", upstream_pid=upstream_pid)
    except RuntimeError as exc:  # its start-up (seconds on a quiet machine) is optional here
        return f"skipped: {exc}"


def pairs_per_s(r: dict[str, object]) -> float:
    return float(r["pairs"]) / float(r["seconds"])  # type: ignore[arg-type]


def line(name: str, r: dict[str, object] | str) -> str:
    if isinstance(r, str):
        return f"{name:<30} {r}"
    errors = f", errors {r['errors']}" if r["errors"] else ""
    return (f"{name:<30} {pairs_per_s(r):7.0f} pairs/s  p50 {float(r['p50_ms']):6.1f} ms"  # type: ignore[arg-type]
            f"  p99 {float(r['p99_ms']):6.1f} ms  POST p99 {float(r['post_p99_ms']):6.1f} ms"  # type: ignore[arg-type]
            f"  service CPU {float(r['cpu_ms_per_pair']):5.2f} ms/pair"  # type: ignore[arg-type]
            + cpu_shares(r)
            + f"  failed {r['failed']}{errors}"
            + (f"  CPU split {'/'.join(map(str, r['cpu_split']))} %" if r.get("cpu_split") else ""))  # type: ignore[call-overload]


def cpu_shares(r: dict[str, object]) -> str:
    """The other processes' CPU per pair, and the service's share of the three: what the
    machine's cores did for each pair (the upstream's is absent for ``--direct``, where it
    is the service)."""
    others = {"upstream": r.get("upstream_cpu_ms_per_pair"), "loadgen": r.get("loadgen_cpu_ms_per_pair")}
    known = {name: float(v) for name, v in others.items() if v is not None}  # type: ignore[arg-type]
    if not known:
        return ""
    service = float(r["cpu_ms_per_pair"])  # type: ignore[arg-type]
    share = f", service {service / (service + sum(known.values())) * 100:.0f} %" if len(known) == 2 else ""
    return " (" + ", ".join(f"{name} {v:4.2f}" for name, v in known.items()) + share + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[1], metavar="N",
                        help="run the service with N worker processes (serve --workers N); several: one round each")
    parser.add_argument("--direct", action="store_true",
                        help="also run the load on the upstream directly (its POST p99 is what the service adds to)")
    parser.add_argument("--baseline", metavar="DIR", help="another source tree to run side by side")
    parser.add_argument("--no-litellm", action="store_true", help="do not run LiteLLM's proxy even if installed")
    parser.add_argument("--profile", action="store_true", help="print the service's pid (for py-spy)")
    parser.add_argument("--loadgen", choices=CLIENTS, default=CLIENTS[0],
                        help="the load generator's HTTP client (bench/loadgen.py; aiohttp: as before 2026-12-01)")
    args = parser.parse_args()
    print(f"{machine()}; {args.concurrency} concurrent create+retrieve pairs, {args.seconds:g} s per round, "
          f"load generator on {args.loadgen}")
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        upstream_port = free_port()
        upstream = f"http://127.0.0.1:{upstream_port}"
        with process([sys.executable, "-m", "bench.service", "--upstream-port", str(upstream_port)],
                     f"{upstream}/_sandbox/stats") as upstream_proc:
            for n in range(args.rounds):
                if args.direct:  # the same load on the upstream itself: what a create costs without us
                    print(line("upstream direct", run_load(upstream, UPSTREAM_KEY, args, upstream_proc.pid)),
                          flush=True)
                for store, workers in ((store, w) for store in args.store for w in args.workers):
                    name = store if workers == 1 else f"{store}/{workers} workers"
                    if args.baseline:
                        base = reelgate_round(store, upstream, args, tmp, tree=args.baseline, workers=workers,
                                              upstream_pid=upstream_proc.pid)
                        print(line(f"baseline/{name}", base), flush=True)
                    result = reelgate_round(store, upstream, args, tmp, workers=workers, upstream_pid=upstream_proc.pid)
                    print(line(f"reelgate/{name}", result), flush=True)
                    if args.baseline and pairs_per_s(base):
                        ratios.setdefault(name, []).append(pairs_per_s(result) / pairs_per_s(base))
                        cpu = float(base["cpu_ms_per_pair"]) / float(result["cpu_ms_per_pair"])  # type: ignore[arg-type]
                        ratios.setdefault(f"{name} (CPU per pair, baseline / this)", []).append(cpu)
                if not args.no_litellm:
                    litellm = litellm_round(upstream, args, tmp, upstream_pid=upstream_proc.pid)
                    print(line("litellm proxy", litellm), flush=True)
                if args.rounds > 1 and n < args.rounds - 1:
                    print("--")
    for store, values in ratios.items():
        print(f"this tree vs baseline, {store}: x{median(values):.2f} (median of {len(values)} rounds: "
              + ", ".join(f"{v:.2f}" for v in values) + ")")


if __name__ == "__main__":
    if "--upstream-port" in sys.argv:
        import uvicorn

        uvicorn.run(upstream_app, host="127.0.0.1", port=int(sys.argv[sys.argv.index("--upstream-port") + 1]),
                    log_level="warning", access_log=False, loop="auto", http="auto")
    elif "--load" in sys.argv:
        at = sys.argv.index("--load")
        url, key, seconds, concurrency, warmup, model, client = sys.argv[at + 1:at + 8]
        print(json.dumps(run_event_loop(load(url, key, float(seconds), int(concurrency), float(warmup), model,
                                             client))))
    else:
        main()
