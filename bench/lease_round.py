"""What one lease round costs a replica following many jobs: rows written, jobs read, CPU.

    python -m bench.lease_round [--store postgres sqlite] [--jobs 1000] [--rounds 20] [--baseline DIR]

A replica sharing a store renews each round the leases of every job it follows
(``renew_all``) and claims what no live replica holds (``claim``), every ``lease_s / 3``
(gateway/server/leases.py). Real videos take minutes, so a busy replica follows thousands
of jobs at once, and what a round costs per followed job is paid by each of them every 10 s.

For each source tree (this one, and ``--baseline``'s in a child process importing its
sources, alternating), on a throwaway PostgreSQL database or SQLite file: ``--jobs`` running
jobs (an attempt accepted by its vendor, as in flight) created leased to replica ``a``,
which follows them (``Gateway.following`` answers their ids; nothing runs), then
``--rounds`` rounds of ``Leases.tick``. Printed per round: the jobs its claims returned (a
claim that re-leases the replica's own jobs returns them, and ``tick`` discards them), the
rows PostgreSQL updated (``pg_stat_user_tables``, read once the store's connections closed),
and the CPU the process used (``time.process_time``: the SQLite store's own thread
included; PostgreSQL's backends not). Counts are exact; the CPU is a timing, noisy on a
shared machine, so the two trees alternate in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


async def measure(store_kind: str, jobs: int, rounds: int, tmp: Path) -> dict[str, float]:
    """In the tree this process imports: one replica's lease rounds over ``jobs`` followed jobs."""
    from gateway.api import Gateway
    from gateway.config import Settings
    from gateway.job import Attempt, JobStatus, VideoJob
    from gateway.provider import VendorJob
    from gateway.request import VideoRequest
    from gateway.server.leases import Leases
    from gateway.store.base import JobStore

    lease_s = 30.0
    with _database(store_kind, tmp) as (store_url, open_store):
        store: JobStore = open_store()
        async with store:
            ids = []
            for i in range(jobs):
                job = VideoJob(VideoRequest(prompt=f"a red fox in fresh snow {i}", model="ray-2-flash"))
                job.move(JobStatus.SUBMITTED)
                job.attempts.append(Attempt(
                    provider="railwail", vendor_model="luma-ray-flash-2", started_at=job.created_at,
                    attempt_key=f"att-{i}", vendor_job=VendorJob(
                        provider="railwail", vendor_model="luma-ray-flash-2", vendor_id=f"video_{i:08d}",
                        base_url="http://127.0.0.1:1/api/v1", credential_ref="env:RAILWAIL_API_KEY",
                        urls={"status_url": f"http://127.0.0.1:1/api/v1/videos/video_{i:08d}"})))
                await store.create_or_get(job, lease=("a", lease_s))
                ids.append(job.id)
            returned = [0]
            claim = store.claim

            async def counted(*args: Any, **kwargs: Any) -> list[VideoJob]:
                got = await claim(*args, **kwargs)
                returned[0] += len(got)
                return got

            store.claim = counted  # type: ignore[method-assign]
            gateway = Gateway(Settings(), {}, store=store)
            gateway.following = lambda: list(ids)  # type: ignore[method-assign]

            async def nothing(job_id: str) -> None:
                return None

            leases = Leases(store, gateway, "a", lease_s=lease_s, max_claimed=1000, follow=lambda job: None,
                            cancel=nothing, finish=lambda job: None)
            await leases.tick()  # the first round (it takes what its id holds, where that exists)
            returned[0] = 0
            if not store_url.startswith("sqlite"):
                # PostgreSQL 15 reports an idle backend's counts after 10 s (PGSTAT_IDLE_INTERVAL):
                # the creates and the first round are then in, and not counted below
                await asyncio.sleep(11.0)
            updated_before = _rows_updated(store_url)
            cpu = time.process_time()
            for _ in range(rounds):
                await leases.tick()
            cpu = time.process_time() - cpu
            await gateway.aclose()
        await asyncio.sleep(1.0)  # the store's backends have exited: their counts are in
        updated = _rows_updated(store_url) - updated_before
    return {"claimed per round": returned[0] / rounds, "rows updated per round": updated / rounds,
            "CPU ms per round": cpu * 1000 / rounds}


class _database:
    """A throwaway PostgreSQL database or SQLite file, and how to open a store on it."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind, self.tmp = kind, tmp

    def __enter__(self) -> tuple[str, Any]:
        if self.kind == "sqlite":
            from gateway.store.sqlite import SqliteJobStore

            path = self.tmp / f"jobs-{os.getpid()}.db"
            return f"sqlite:///{path}", lambda: SqliteJobStore(path)
        from bench.service import throwaway_database
        from gateway.store.postgres import PostgresJobStore

        self._pg = throwaway_database()
        dsn = self._pg.__enter__()
        return dsn, lambda: PostgresJobStore(dsn)

    def __exit__(self, *exc: object) -> None:
        if self.kind != "sqlite":
            self._pg.__exit__(None, None, None)


def _rows_updated(store_url: str) -> float:
    if store_url.startswith("sqlite"):
        return float("nan")  # SQLite keeps no such count
    import psycopg

    with psycopg.connect(store_url, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(sum(n_tup_upd), 0) FROM pg_stat_user_tables").fetchone()
    return float(row[0]) if row else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", nargs="+", default=["postgres", "sqlite"], choices=["postgres", "sqlite"])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs the replica follows")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=2, help="runs per tree, alternating")
    parser.add_argument("--baseline", metavar="DIR", help="another source tree to measure too")
    parser.add_argument("--child", choices=["postgres", "sqlite"], help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(measure(args.child, args.jobs, args.rounds, Path(args.tmp)))))
        return
    # imported here, not at the top: a child runs this file on another tree's sources
    from bench.common import against_trees

    trees = ([("baseline", args.baseline)] if args.baseline else []) + [("this tree", Path(__file__).parent.parent)]
    print(f"one replica following {args.jobs} jobs, {args.rounds} lease rounds per run")
    with tempfile.TemporaryDirectory() as tmp_dir:
        for store_kind in args.store:
            # ``measure`` in a child process importing each tree's sources; this file runs by
            # its path, so the baseline needs no copy of it
            runs: dict[str, list[dict[str, float]]] = against_trees(
                trees, args.repeat, [sys.executable, __file__, "--child", store_kind, "--jobs", str(args.jobs),
                                     "--rounds", str(args.rounds), "--tmp", tmp_dir], json.loads)
            for name, figures in runs.items():
                print(f"{store_kind}, {name}: " + "; ".join(
                    f"{k} " + ", ".join(f"{f[k]:.1f}" for f in figures) for k in figures[0]))
            if args.baseline:
                base, this = runs["baseline"], runs["this tree"]
                ratio = sorted(b["CPU ms per round"] / t["CPU ms per round"] for b, t in zip(base, this, strict=True))
                print(f"{store_kind}: CPU per round, baseline / this tree: " + ", ".join(f"x{r:.2f}" for r in ratio))


if __name__ == "__main__":
    main()
