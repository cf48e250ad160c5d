"""The window between a vendor's accept and the vendor job id being durable, under a burst.

    python -m bench.accept_durable [--jobs 200]

A job whose submit the vendor accepted, but whose vendor job id is not yet written when
the process dies, can only be closed as ``unknown`` after a restart (and may be billed
for nothing). This measures that window: ``jobs`` requests are submitted at once through
one Gateway with the default SQLite store, against the sandbox in its own process (jobs queue 600 s,
so nothing but submits and their writes happen). For each job: the moment its adapter
parsed the accept answer, and the moment the store write that carries the vendor job id
returned. Prints the window's p50 / p90 / p99 / max in ms, the burst's wall time, and the
store writes per job.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench.common import machine, median, percentile, sandbox_process, set_timing
from gateway.api import Gateway
from gateway.config import Settings
from gateway.job import VideoJob
from gateway.request import VideoRequest
from gateway.store import open_store
from gateway.store.base import JobStore

VENDORS = ("fal", "apiframe", "railwail")


def instrument(gateway: Gateway, store: JobStore, jobs: int, all_durable: asyncio.Event
               ) -> tuple[dict[str, float], dict[str, float], list[int]]:
    """(accepted at, durable at) per vendor job id, and a one-cell write counter; sets
    ``all_durable`` once ``jobs`` vendor job ids are on record."""
    accepted: dict[str, float] = {}
    durable: dict[str, float] = {}
    writes = [0]
    for provider in gateway.providers.values():
        parse: Callable[..., Any] = provider.parse_submit

        def timed(request: Any, response: Any, _parse: Callable[..., Any] = parse) -> Any:
            vjob = _parse(request, response)
            accepted.setdefault(vjob.vendor_id, time.perf_counter())
            return vjob

        provider.parse_submit = timed  # type: ignore[method-assign]
    save = store.save

    async def timed_save(job: VideoJob, **kw: Any) -> None:
        await save(job, **kw)
        writes[0] += 1
        current = job.current
        if current is not None and current.vendor_job is not None:
            durable.setdefault(current.vendor_job.vendor_id, time.perf_counter())
            if len(durable) >= jobs:
                all_durable.set()

    store.save = timed_save  # type: ignore[method-assign]
    return accepted, durable, writes


async def burst(sandbox_url: str, jobs: int, store_url: str) -> None:
    async with open_store(store_url, os.environ) as store:
        gateway = Gateway.from_settings(Settings(), sandbox_url=sandbox_url, store=store)
        all_durable = asyncio.Event()
        accepted, durable, writes = instrument(gateway, store, jobs, all_durable)
        async with gateway:
            started = time.perf_counter()
            await asyncio.gather(*(gateway.submit(VideoRequest(prompt=f"job {i}", providers=(VENDORS[i % 3],)))
                                   for i in range(jobs)))
            await all_durable.wait()
            wall = time.perf_counter() - started
            for job in list(gateway.jobs):
                await gateway.cancel(job)
    window_ms = [(durable[v] - accepted[v]) * 1000 for v in accepted if v in durable]
    print(f"{machine()}; store {store_url.split(':', 1)[0]}; {jobs} jobs submitted at once")
    print(f"accept -> vendor job id durable: p50 {median(window_ms):.1f} ms, p90 {percentile(window_ms, 90):.1f} ms, "
          f"p99 {percentile(window_ms, 99):.1f} ms, max {max(window_ms):.1f} ms")
    print(f"burst: all {jobs} vendor job ids durable after {wall:.2f} s; {writes[0] / jobs:.1f} store writes per job")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, sandbox_process() as url:
        set_timing(url, {v: {"queue_s": 600.0, "run_s": 600.0} for v in VENDORS})
        asyncio.run(burst(url, args.jobs, f"sqlite:///{tmp}/bench.db"))


if __name__ == "__main__":
    main()
