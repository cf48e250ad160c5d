"""A gateway that stops mid-flight loses no job and submits nothing twice: a new gateway
on the same store picks every unfinished job up."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from gateway.api import Gateway
from gateway.config import PollingConfig, Settings
from gateway.emulation.base import Emulator, Timing
from gateway.emulation.faults import parse_fault
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.job import AttemptOutcome, JobStatus, VideoJob
from gateway.plugins import discover
from gateway.request import VideoRequest
from gateway.store.sqlite import SqliteJobStore
from tests.support import dies_at_save, until

FAST = PollingConfig(initial_s=0.05, max_s=0.1)


def settings(**kw) -> Settings:
    return Settings(fallback_order=["fal", "apiframe", "railwail"], polling=FAST, **kw)


async def stop_abruptly(gw: Gateway) -> None:
    """What a killed process leaves: tasks gone mid-poll, nothing marked, nothing cancelled."""
    for task in gw._tasks.values():
        task.cancel()
    await asyncio.gather(*gw._tasks.values(), return_exceptions=True)
    await gw.client.aclose()


async def test_jobs_in_flight_are_resumed_by_a_new_gateway(tmp_path):
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.3, run_s=1.0))
    with BackgroundServer(sandbox.app) as server:
        async with SqliteJobStore(tmp_path / "jobs.db") as store:
            first = Gateway.from_settings(settings(), sandbox_url=server.url, store=store)
            submitted: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

            def on_update(job: VideoJob) -> None:
                if job.status is JobStatus.RUNNING:  # the vendor job id is stored before the first poll
                    submitted[job.id].set()

            jobs = [await first.submit(VideoRequest(prompt=f"fox {i}", aspect_ratio=r), on_update=on_update)
                    for i, r in enumerate(["16:9", "1:1", "9:21"])]
            async with asyncio.timeout(10):  # bounds a failing test only
                for job in jobs:
                    await submitted[job.id].wait()
            await stop_abruptly(first)

            second = Gateway.from_settings(settings(), sandbox_url=server.url, store=store)
            async with second:
                resumed = await second.resume()
                assert {j.id for j in resumed} == {j.id for j in jobs}
                finished = [await second.wait(j.id) for j in jobs]
        assert all(j.status is JobStatus.SUCCEEDED for j in finished)
        assert all(len(j.attempts) == 1 for j in finished)
    stats = sandbox.stats()
    assert sum(stats[v]["accepted_submissions"] for v in stats) == len(jobs)  # nothing paid twice


async def test_a_submit_cut_off_by_the_stop_is_never_resent_blindly(tmp_path):
    sandbox = Sandbox.from_providers(discover().providers, {"fal": [parse_fault("slow:delay=5")]},
                                     timing=Timing(queue_s=0.1, run_s=0.2))
    with BackgroundServer(sandbox.app) as server:
        async with SqliteJobStore(tmp_path / "jobs.db") as store:
            first = Gateway.from_settings(settings(), sandbox_url=server.url, store=store)
            job = await first.submit(VideoRequest(prompt="fox", aspect_ratio="9:21"))  # fal only
            await until(lambda: sandbox.emulators["fal"].calls["submit"] > 0)  # on the wire, its answer 5 s late
            assert job.current is not None and job.current.vendor_job is None
            await stop_abruptly(first)
            sandbox.emulators["fal"].faults.clear()

            second = Gateway.from_settings(settings(), sandbox_url=server.url, store=store)
            async with second:
                await second.resume()
                done = await second.wait(job.id)
    assert done.status is JobStatus.FAILED and done.error["class"] == "AmbiguousSubmit"
    assert done.attempts[0].outcome is AttemptOutcome.UNKNOWN
    assert sandbox.stats()["fal"]["accepted_submissions"] <= 1


async def test_idempotency_key_is_shared_through_the_store(tmp_path):
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0, run_s=0.2))
    with BackgroundServer(sandbox.app) as server:
        async with SqliteJobStore(tmp_path / "jobs.db") as store:
            a = Gateway.from_settings(settings(), sandbox_url=server.url, store=store)
            b = Gateway.from_settings(settings(), sandbox_url=server.url, store=store)
            async with a, b:
                request = VideoRequest(prompt="fox", idempotency_key="order-42")
                one, two = await asyncio.gather(a.submit(request), b.submit(request))
                assert one.id == two.id
                await a.wait(one.id) if one.id in a.jobs else await b.wait(two.id)
    stats = sandbox.stats()
    assert sum(stats[v]["accepted_submissions"] for v in stats) == 1


async def test_an_accept_lost_to_the_stop_is_reconciled_by_the_same_idempotency_key(tmp_path):
    # apiframe made the job, but the process died before the job's id was written: the next
    # process asks again with the same Idempotency-Key and gets that job back -- reconciled,
    # not paid twice, not left at risk
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.1, run_s=0.2))
    emulator = sandbox.emulators["apiframe"]
    with BackgroundServer(sandbox.app) as server:
        async with SqliteJobStore(tmp_path / "jobs.db") as store:
            # the accept is in: the process dies before writing it
            with dies_at_save(store, lambda job: job.current is not None and job.current.vendor_job is not None) \
                    as dying:
                first = Gateway.from_settings(settings(), sandbox_url=server.url, store=store)
                job = await first.submit(VideoRequest(prompt="fox", providers=("apiframe",)))
                await dying.wait()
                await stop_abruptly(first)
            assert (await store.get(job.id)).current.vendor_job is None  # its id never written

            second = Gateway.from_settings(settings(), sandbox_url=server.url, store=store)
            async with second:
                await second.resume()
                done = await second.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED and len(done.attempts) == 1
    assert done.attempts[0].vendor_job.vendor_id == next(iter(emulator.jobs))  # the job it made first
    assert emulator.accepted_submissions == 1 and done.at_risk_usd == 0


@dataclass
class LostSubmit:
    """fal accepted a submit whose answer was lost, and the process stopped before any callback."""

    sandbox_url: str
    settings: Settings
    store: SqliteJobStore
    first: Gateway
    job: VideoJob
    fal: Emulator
    vendor_id: str


@contextlib.asynccontextmanager
async def a_fal_submit_lost_to_a_stop(tmp_path: Path) -> AsyncIterator[LostSubmit]:
    sandbox = Sandbox.from_providers(discover().providers, {"fal": [parse_fault("drop-after-accept")]},
                                     timing=Timing(queue_s=0.1, run_s=0.2))
    with BackgroundServer(sandbox.app) as server:
        # fal's own callbacks find no receiver there (404): these tests hand the callback over themselves
        adopting = settings(service={"public_url": f"{server.url}/nobody"}, adoption_window_s=60)
        async with SqliteJobStore(tmp_path / "jobs.db") as store:
            first = Gateway.from_settings(adopting, sandbox_url=server.url, store=store)
            job = await first.submit(VideoRequest(prompt="fox", aspect_ratio="9:21"))  # fal only
            fal = sandbox.emulators["fal"]
            await until(lambda: first.adoptions.waiting == 1)  # accepted, its answer lost: waiting
            await stop_abruptly(first)
            (vendor_id,) = fal.jobs
            yield LostSubmit(server.url, adopting, store, first, job, fal, vendor_id)


async def test_a_submit_cut_off_by_the_stop_is_adopted_when_fal_calls_back_naming_it(tmp_path):
    async with a_fal_submit_lost_to_a_stop(tmp_path) as lost:
        job = lost.job  # the attempt is on record, pending, with no vendor job
        assert job.current is not None and job.current.vendor_job is None

        second = Gateway.from_settings(lost.settings, sandbox_url=lost.sandbox_url, store=lost.store)
        async with second:
            await second.resume()
            # what the webhook route does with fal's verified callback to ...?attempt=<key>
            await until(lambda: bool(second.adoptions.waiting) or second.jobs[job.id].status.terminal)
            assert await second.adopt("fal", f"{job.id}.1", lost.vendor_id) is True
            done = await second.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    (attempt,) = done.attempts
    assert attempt.vendor_job is not None and attempt.vendor_job.vendor_id == lost.vendor_id
    assert done.at_risk_usd == 0 and lost.fal.accepted_submissions == 1


async def test_a_callback_that_came_before_the_crash_is_found_by_the_resumed_attempt(tmp_path):
    """fal's callback arrives while no attempt waits for it (here: just after the process lost
    the attempt; in life, also before a submit's own answer was stored) and is answered 200,
    so fal never sends it again. Bound in the store, it survives the restart: the resumed
    attempt adopts the job with no further callback."""
    async with a_fal_submit_lost_to_a_stop(tmp_path) as lost:
        job, vendor_id = lost.job, lost.vendor_id
        assert await lost.first.adopt("fal", f"{job.id}.1", vendor_id) is False  # nobody waits any more
        assert await lost.first.adopt("fal", f"{job.id}.9", vendor_id) is False  # a forged URL: refused

        async with SqliteJobStore(tmp_path / "jobs.db") as reopened:  # a new process
            second = Gateway.from_settings(lost.settings, sandbox_url=lost.sandbox_url, store=reopened)
            async with second:
                await second.resume()
                done = await second.wait(job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    (attempt,) = done.attempts
    assert attempt.vendor_job is not None and attempt.vendor_job.vendor_id == vendor_id
    assert done.at_risk_usd == 0 and lost.fal.accepted_submissions == 1
