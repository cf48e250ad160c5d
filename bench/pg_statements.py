"""How many statements PostgreSQL runs per job of ``reelgate serve``: a count, not a timing.

    python -m bench.pg_statements [--jobs 50 250] [--concurrency 1] [--workers 1] [--baseline DIR]

The same processes as ``bench.service`` (the no-work upstream, ``reelgate serve`` on a
throwaway database), but a fixed number of create + retrieve pairs instead of a timed
load. Once they are done and the service has stopped (its connections closed, so every
backend has reported its statistics), the database's ``pg_stat_database`` says how many
transactions it committed or rolled back. The store runs in autocommit, so a transaction
is a statement, or one explicit ``transaction()`` block. Two runs with different job
counts cancel what does not depend on the jobs (migrations, the key lookup, lease rounds):
per job = (count(N2) - count(N1)) / (N2 - N1). Table row counts (inserted, updated, of
them HOT (no index touched), deleted) come the same way from ``pg_stat_user_tables``. It
prints the CPU per job of the service (every process) and of the PostgreSQL backends
serving its database too, taken the same way: timings, so noisy on a shared machine,
unlike the counts.

With ``--concurrency 1 --gap 0.1`` no job overlaps another, so nothing is batched (each
group commit carries one write) and the figure is the statements a job needs, whatever the
machine's load; without the gap a job's last writes overlap the next job's first; at 64 it
shows what batching saves under load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import free_port
from bench.service import PG_DSN, cpu_s, process, service_config, throwaway_database

#: what a job's statements are counted by: the database's, and per table
_DB_STATS = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s"
_TABLE_STATS = "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables"


async def pairs(url: str, key: str, n: int, concurrency: int, gap_s: float) -> int:
    """``n`` create + retrieve pairs, ``concurrency`` at a time, each worker pausing ``gap_s``
    after each; how many failed."""
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = json.dumps({"prompt": "a red fox in fresh snow", "model": "ray-2-flash", "seconds": "5",
                       "size": "960x540"})
    left, failed = [n], [0]

    async def worker(session: aiohttp.ClientSession) -> None:
        while left[0] > 0:
            left[0] -= 1
            async with session.post(f"{url}/v1/videos", data=body, headers=headers) as r:
                created = await r.read()
            if r.status != 200:
                failed[0] += 1
                continue
            async with session.get(f"{url}/v1/videos/{json.loads(created)['id']}", headers=headers) as g:
                await g.read()
                failed[0] += g.status != 200
            await asyncio.sleep(gap_s)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failed[0]


def count(upstream: str, jobs: int, args: argparse.Namespace, tmp: Path, tree: str | None) -> dict[str, float]:
    """Run ``jobs`` pairs against a fresh service and database; the database's counts."""
    import psycopg

    home = tmp / f"home-{uuid.uuid4().hex[:6]}"
    home.mkdir(mode=0o700)
    with throwaway_database() as dsn:
        config = home / "reelgate.yaml"
        config.write_text(service_config(upstream, dsn))
        env = {**os.environ, "REELGATE_HOME": str(home), "REELGATE_LOG_LEVEL": "warning"}
        cwd = str(Path(tree).resolve()) if tree else None  # the baseline's children import its sources
        if cwd:
            env["PYTHONPATH"] = cwd
        key = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--name", "bench",
                              "--config", str(config)], env=env, check=True, capture_output=True,
                             text=True, cwd=cwd).stdout.strip()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(port)]
        argv += ["--workers", str(args.workers)] if args.workers > 1 else []
        name = dsn.rsplit("/", 1)[1]
        with process(argv, f"{url}/healthz", env, cwd=cwd) as proc:
            service_before, server_before = sum(cpu_s(proc.pid).values()), backends_cpu_s(name)
            failed = asyncio.run(pairs(url, key, jobs, args.concurrency, args.gap))
            time.sleep(args.settle)  # the last jobs' videos kept and leases released
            service = sum(cpu_s(proc.pid).values()) - service_before
            server = backends_cpu_s(name) - server_before
        time.sleep(1.0)  # backends exiting report their statistics
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            statements = conn.execute(_DB_STATS, (name,)).fetchone()[0]  # type: ignore[index]
        with psycopg.connect(dsn, autocommit=True) as conn:
            tables = conn.execute(_TABLE_STATS).fetchall()
    out = {"statements": float(statements), "failed": float(failed), "service CPU ms": service * 1000,
           "server CPU ms": server * 1000}
    for table, ins, upd, hot, dele in tables:
        for kind, n in (("ins", ins), ("upd", upd), ("hot upd", hot), ("del", dele)):
            if n:
                out[f"{table}.{kind}"] = float(n)
    return out


def backends_cpu_s(database: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends serving ``database`` (found by their
    process titles: the server must run on this machine). The server's CPU counts against the
    same cores as the service's, so a statement costs both."""
    tick = os.sysconf("SC_CLK_TCK")
    used = 0.0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f" {database} ".encode() not in (proc / "cmdline").read_bytes().replace(b"\0", b" ") + b" ":
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        used += (int(fields[11]) + int(fields[12])) / tick
    return used


def per_job(few: dict[str, float], many: dict[str, float], jobs: tuple[int, int]) -> dict[str, float]:
    return {k: (many.get(k, 0.0) - few.get(k, 0.0)) / (jobs[1] - jobs[0])
            for k in sorted({*few, *many}) if k != "failed"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs=2, default=[50, 250], metavar=("N1", "N2"))
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gap", type=float, default=0.0,
                        help="seconds each worker waits after its pair (0.1 at --concurrency 1: no jobs overlap)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait after the last pair")
    parser.add_argument("--baseline", metavar="DIR", help="another source tree to count too")
    args = parser.parse_args()
    trees = ([("baseline", args.baseline)] if args.baseline else []) + [("this tree", None)]
    print(f"{args.concurrency} concurrent pairs, {args.workers} worker(s); per job = difference of "
          f"{args.jobs[1]} and {args.jobs[0]} jobs")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        port = free_port()
        upstream = f"http://127.0.0.1:{port}"
        with process([sys.executable, "-m", "bench.service", "--upstream-port", str(port)],
                     f"{upstream}/_sandbox/stats"):
            for name, tree in trees:
                few, many = (count(upstream, n, args, tmp, tree) for n in args.jobs)
                failed = int(few["failed"] + many["failed"])
                figures = per_job(few, many, (args.jobs[0], args.jobs[1]))
                service, server = figures.pop("service CPU ms"), figures.pop("server CPU ms")
                print(f"{name}: {figures.pop('statements'):.2f} statements per job, CPU per job: service "
                      f"{service:.2f} ms, PostgreSQL backends {server:.2f} ms"
                      + (f" ({failed} pairs failed)" if failed else ""))
                print("   rows per job: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items() if abs(v) >= 0.005))


if __name__ == "__main__":
    main()
