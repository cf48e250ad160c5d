"""What one job write costs the gateway's process: CPU per ``create_or_get`` and per ``save``.

    python -m bench.store_writes [--store sqlite postgres] [--jobs 2000] [--concurrency 32]
                                 [--rounds 3] [--baseline DIR]

Each round writes ``jobs`` jobs the way a job's life writes them (created; its attempt
opened; the vendor job accepted; succeeded), ``concurrency`` jobs at once, into a fresh
SQLite file or a throwaway PostgreSQL schema (``$REELGATE_BENCH_PG``, default the ``test``
database), and prints this process's CPU time (``time.process_time``: every thread, so the
SQLite worker thread too) per write, and per job. Wall time is printed but means little
on a shared machine.

``--baseline DIR`` runs the same rounds from another source tree too (``git archive <commit>
| tar -x -C DIR``), alternating with this one, and prints this tree's CPU per job as a ratio
of the baseline's.

``--leased`` writes each job as a replica does (``reelgate serve`` on PostgreSQL, or with
``--workers``): created leased, saved under the lease, and the lease given up at the end,
as each tree's service does it: with the last save (``save(release=True)``) where the store
takes that, else a ``release`` after it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import os
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

PG_DSN = os.environ.get("REELGATE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
WRITES_PER_JOB = 4


def lifecycle_jobs(n: int) -> list[object]:
    """``n`` fresh jobs as the service makes them (a plan, a webhook-less request)."""
    from gateway.job import VideoJob
    from gateway.request import VideoRequest

    plan = {"policy": "cheapest", "candidates": [{"provider": "railwail", "model": "luma-ray-flash-2",
                                                  "cost_usd": 0.3, "latency_s": 40.0}], "skipped": {}}
    return [VideoJob(VideoRequest(prompt=f"a red fox in fresh snow, take {i}"), plan=dict(plan)) for i in range(n)]


async def one_job(store: object, job: object, owner: str | None = None) -> None:
    """A job's writes; with ``owner``, under its lease, released at the end."""
    from gateway.job import Attempt, AttemptOutcome, JobStatus, VideoJob, VideoOutput
    from gateway.provider import VendorJob

    assert isinstance(job, VideoJob)
    under = {} if owner is None else {"lease_owner": owner}
    await store.create_or_get(job, **({} if owner is None else {"lease": (owner, 30.0)}))  # type: ignore[attr-defined]
    attempt = Attempt(provider="railwail", vendor_model="luma-ray-flash-2", started_at=time.time(),
                      attempt_key=f"{job.id}.1", estimated_usd=Decimal("0.3"))
    job.attempts.append(attempt)
    await store.save(job, **under)  # type: ignore[attr-defined]
    attempt.vendor_job = VendorJob(provider="railwail", vendor_model="luma-ray-flash-2", vendor_id=f"video_{job.id}",
                                   base_url="http://127.0.0.1:9/api/v1", credential_ref="env:RAILWAIL_KEY")
    job.move(JobStatus.SUBMITTED)
    await store.save(job, **under)  # type: ignore[attr-defined]
    attempt.finish(AttemptOutcome.SUCCEEDED)
    job.output = VideoOutput(url="http://127.0.0.1:9/v.mp4")
    job.progress = 1.0
    job.move(JobStatus.SUCCEEDED)
    if owner is None:
        await store.save(job)  # type: ignore[attr-defined]
    elif "release" in inspect.signature(store.save).parameters:  # type: ignore[attr-defined]
        await store.save(job, lease_owner=owner, release=True)  # type: ignore[attr-defined]
    else:  # a tree whose stores release in a write of its own
        await store.save(job, lease_owner=owner)  # type: ignore[attr-defined]
        await store.release(job.id, owner)  # type: ignore[attr-defined]


async def one_round(kind: str, jobs: int, concurrency: int, owner: str | None = None) -> tuple[float, float]:
    """(CPU seconds, wall seconds) to write ``jobs`` lifecycles."""
    from gateway.store import SqliteJobStore
    from gateway.store.postgres import PostgresJobStore

    with tempfile.TemporaryDirectory() as home:
        schema = f"bench_writes_{uuid.uuid4().hex[:8]}"
        store = (SqliteJobStore(Path(home) / "jobs.db") if kind == "sqlite"
                 else PostgresJobStore(PG_DSN, schema=schema))
        async with store:
            try:
                todo = lifecycle_jobs(jobs)
                await asyncio.gather(*(one_job(store, j, owner) for j in todo[:concurrency]))  # warm-up
                todo = todo[concurrency:]
                gate = asyncio.Semaphore(concurrency)

                async def gated(job: object) -> None:
                    async with gate:
                        await one_job(store, job, owner)

                cpu, wall = time.process_time(), time.perf_counter()
                await asyncio.gather(*(gated(j) for j in todo))
                return (time.process_time() - cpu) / len(todo), (time.perf_counter() - wall) / len(todo)
            finally:
                if kind == "postgres":
                    async with store.pool.connection() as conn:  # type: ignore[attr-defined]
                        await conn.execute(f"DROP SCHEMA {schema} CASCADE")


def child(kind: str, jobs: int, concurrency: int, owner: str | None) -> None:
    cpu, wall = asyncio.run(one_round(kind, jobs, concurrency, owner))
    print(f"{cpu * 1e6:.1f} {wall * 1e6:.1f}")


def cpu_and_wall(line: str) -> tuple[float, float]:
    """What :func:`child` printed: microseconds of CPU and of wall time per job."""
    cpu, wall = line.split()
    return float(cpu), float(wall)


def print_round(kind: str, r: int, name: str, per_job: tuple[float, float]) -> None:
    job_cpu, job_wall = per_job
    print(f"{kind:8s} round {r + 1} {name:8s} CPU {job_cpu:7.1f} us/job"
          f" ({job_cpu / WRITES_PER_JOB:6.1f} us/write), wall {job_wall:7.1f} us/job", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--leased", action="store_true", help="write each job under a lease, released at its end")
    parser.add_argument("--child", choices=("sqlite", "postgres"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.jobs, args.concurrency, "bench-replica" if args.leased else None)
        return
    # imported here, not at the top: a child runs this file on another tree's sources
    from bench.common import against_trees

    here = Path(__file__).resolve().parent.parent
    trees = [("this", here)] + ([("baseline", args.baseline)] if args.baseline else [])
    for kind in args.store:
        argv = [sys.executable, __file__, "--child", kind, "--jobs", str(args.jobs),
                "--concurrency", str(args.concurrency), *(["--leased"] if args.leased else [])]
        runs = against_trees(trees, args.rounds, argv, cpu_and_wall, alternate=True,
                             each=functools.partial(print_round, kind))
        best = {name: min(job_cpu for job_cpu, _ in per_job) for name, per_job in runs.items()}
        line = f"{kind:8s} best CPU per job: this {best['this']:.1f} us"
        if args.baseline:
            line += f", baseline {best['baseline']:.1f} us, ratio {best['this'] / best['baseline']:.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
