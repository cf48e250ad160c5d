"""CPU per job of the gateway's own bookkeeping between the HTTP edges: admit (fingerprint,
plan, estimate, reserve), the job's task, its four store writes into SQLite, the runner's
attempt and the deferred success the service keeps a video for; the vendor calls stubbed.

    PYTHONPATH=. .venv/bin/python -m bench.jobpath [--jobs 2000] [--concurrency 64] [--repeats 3]
    PYTHONHASHSEED=0 PYTHONPATH=<tree> valgrind --tool=callgrind .venv/bin/python -m bench.jobpath \\
        --jobs 400 --repeats 1   # and --jobs 200: Ir per job = the difference / 200

``--leased`` runs each job as a replica does (``lease_owner`` set: created under its lease,
released once over); run this file by its path (``python bench/jobpath.py``) with
``PYTHONPATH=<baseline tree>`` to count a baseline's lease path too.

Each job is what ``reelgate serve`` does for a create between parsing the request and the
vendor's answers (section 6): ``Gateway.admit`` on a fresh ``VideoRequest`` with a
``SqliteJobStore`` (a fresh file), then the job's task through the real ``JobRunner`` and
``VendorCalls.poll_until_done``, with only the network replaced: ``submit`` returns a vendor
job, a status poll says ``succeeded`` with a URL. ``keep_finished`` is set, as in the
service, to a stub that names a kept copy without copying anything (the real one is
``storage/atomic_file.py``'s). ``concurrency`` jobs run at once, each admitted and waited for
as the service's create route and watcher do.

Under callgrind, instructions per job are the difference between two runs' totals with
different ``--jobs``, divided by the difference in jobs: start-up cancels out, the SQLite
thread's work is counted (a ``--toggle-collect`` on the measured function would count the
main thread only) and the count does not depend on the machine's load. The CPU
figure (``time.process_time``, every thread, so the SQLite thread too) does.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from bench.common import machine
from gateway.api import Gateway
from gateway.config import PollingConfig, ProviderConfig, Settings
from gateway.job import VideoJob
from gateway.provider import ProviderSettings, Secret, VendorJob, VendorState, VendorStatus, VideoResult
from gateway.request import VideoRequest
from gateway.store.sqlite import SqliteJobStore
from gateway.vendor_calls import LiveAttempt, VendorCalls
from providers.railwail.adapter import RailwailAdapter

BASE_URL = "http://127.0.0.1:9/api/v1"


class NoNetwork(VendorCalls):
    """The vendor calls with their network replaced: an instant accept, one poll that says done."""

    async def submit(self, live: LiveAttempt, job: VideoJob) -> VendorJob:
        attempt = live.attempt
        return VendorJob(provider=attempt.provider, vendor_model=attempt.vendor_model,
                         vendor_id=f"video_{attempt.attempt_key}", base_url=BASE_URL, credential_ref="env:RAILWAIL_KEY")

    async def _status(self, provider: object, vjob: VendorJob) -> VendorStatus:  # type: ignore[override]
        return VendorStatus(VendorState.SUCCEEDED, "completed", progress=1.0,
                            video_url=f"{BASE_URL}/videos/{vjob.vendor_id}/content")

    async def result(self, provider: object, vjob: VendorJob, url: str | None,  # type: ignore[override]
                     billed: float | None) -> VideoResult:
        return VideoResult(url=url or "")


async def no_sleep(_seconds: float) -> None:
    pass


async def keep(job: VideoJob) -> None:
    """The service's ``_keep_video`` without the copy: the job names its kept video."""
    assert job.output is not None
    job.output.uri, job.output.size_bytes, job.output.sha256 = f"file:///kept/jobs/{job.id}.mp4", 1024, "0" * 64


def gateway(store: SqliteJobStore) -> Gateway:
    # configured as bench.service configures the service (a provider's settings are looked up per job)
    settings = Settings(providers={"railwail": ProviderConfig(base_url=BASE_URL, api_key="k")},
                        polling=PollingConfig(initial_s=0.01, max_s=0.05))
    adapter = RailwailAdapter(ProviderSettings("railwail", api_key=Secret("k"), credential_ref="env:RAILWAIL_KEY",
                                               base_url=BASE_URL))
    gw = Gateway(settings, {"railwail": adapter}, sleep=no_sleep, store=store, rng=random.Random(0))
    gw.keep_finished = keep
    runner = gw._runner()
    runner.calls = NoNetwork(runner.calls.client, settings, no_sleep, random.Random(0), runner.calls.nudges,
                             estimate=runner.calls.estimate)
    return gw


def measure(jobs: int, concurrency: int, repeats: int, leased: bool = False) -> list[float]:
    """Microseconds of CPU per job, each of ``repeats`` runs of ``jobs`` jobs. ``leased``: as
    a replica runs them (each created under its lease, given up once the job is over, as
    ``Service._finish`` and ``Leases.release`` do: by the final save where the tree's stores
    take ``save(release=True)``, else by a ``release`` of its own)."""
    spent: list[float] = []
    owner = "bench-replica"

    async def one(gw: Gateway, i: int) -> None:
        request = VideoRequest(prompt=f"a red fox in fresh snow, take {i}", resolution="540p", duration_s=5)
        job, _ = await gw.admit(request)
        done = await gw.wait(job.id)
        assert done.status.value == "succeeded" and done.output is not None and done.output.uri, done.error
        if leased:  # the watcher's end of the job (Service._release)
            if job.id not in getattr(gw, "released", ()):
                assert gw.store is not None and await gw.store.release(job.id, owner)
            gw.forget(job.id)

    async def run(gw: Gateway, count: int) -> None:
        queue = iter(range(count))

        async def worker() -> None:
            for i in queue:
                await one(gw, i)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    with tempfile.TemporaryDirectory() as tmp:
        loop = asyncio.new_event_loop()
        try:
            store = SqliteJobStore(Path(tmp) / "jobs.db")
            loop.run_until_complete(store.open())
            gw = gateway(store)
            if leased:
                gw.lease_owner, gw.lease_s = owner, 30.0
            loop.run_until_complete(run(gw, 2 * concurrency))  # every path warmed
            for _ in range(repeats):
                started = time.process_time()
                loop.run_until_complete(run(gw, jobs))
                spent.append((time.process_time() - started) / jobs * 1e6)
            loop.run_until_complete(gw.aclose())
            loop.run_until_complete(store.close())
        finally:
            loop.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--leased", action="store_true", help="as a replica: each job under its lease, released")
    args = parser.parse_args()
    import gc

    gc.freeze()
    spent = measure(args.jobs, args.concurrency, args.repeats, args.leased)
    print(f"# {machine()}; {args.jobs} jobs x {args.repeats}, {args.concurrency} at once, SQLite, vendor stubbed"
          + (", leased" if args.leased else ""))
    print("us CPU per job: " + " / ".join(f"{us:.1f}" for us in spent) + f" (best {min(spent):.1f})")


if __name__ == "__main__":
    main()
