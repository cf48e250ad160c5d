"""Lease rounds racing a replica's own work: a job is followed by one task in one replica,
and submitted once, whatever a lease round does while the job is being created.

The race this pins (seen once as 241 accepted submissions for 240 jobs in
tests/service/test_replicas.py under heavy load): ``claim`` takes unfinished jobs whose lease
is the claimer's own (a replica restarted under the same id gets its jobs back at once). A job
a replica has just created is leased to it from the insert on, but its task starts only when
the create's answer reaches the submitting coroutine. A lease round whose claim ran in between
took the new job as "its own, unfollowed" and resumed it, and the create then started a
second task: two tasks, both under the replica's own (valid) lease, each opened attempt 1 and
submitted it. fal and railwail take no idempotency key, so the vendor made two paid jobs; the
job record (one attempt, succeeded) showed nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.config import PollingConfig, ServiceConfig, Settings
from gateway.emulation.sandbox import Sandbox
from gateway.job import JobStatus, VideoJob
from gateway.request import VideoRequest
from gateway.runner import SUBMITS_IN_FLIGHT
from gateway.server.service import Service
from tests.service.test_leases import (  # noqa: F401 (replicas, sandbox: fixtures used below)
    LEASE_S,
    Start,
    accepted,
    all_accepted,
    die,
    replicas,
    sandbox,
)
from tests.store.conftest import pg_schema  # noqa: F401 (a fixture the replicas fixture uses)


async def test_a_lease_round_between_a_jobs_create_and_its_task_does_not_start_it_twice(
        replicas: Start, sandbox: tuple[Sandbox, str]) -> None:  # noqa: F811
    a = await replicas("a")
    assert a.leases is not None
    leases, store = a.leases, a.store
    create_or_get = store.create_or_get
    rounds: list[int] = []

    async def create_then_a_lease_round(job: VideoJob, **options: object) -> tuple[VideoJob, bool]:
        made = await create_or_get(job, **options)  # type: ignore[arg-type]
        # the row is leased to "a" now, and its task not started: a lease round runs here
        await leases.tick()
        rounds.append(len(leases.claimed))
        return made

    store.create_or_get = create_then_a_lease_round  # type: ignore[method-assign]
    # fal and railwail: no idempotency key, so a second submit is a second paid job
    jobs = [await a.submit(VideoRequest(prompt=f"fox {i}", providers=[vendor]), None)
            for i, vendor in enumerate(["fal", "railwail", "fal", "railwail"])]
    assert len(rounds) == 4  # the rounds ran where the race was
    done = [await a.gateway.wait(j.id) for j in jobs]

    assert [j.status for j in done] == [JobStatus.SUCCEEDED] * 4
    assert [len(j.attempts) for j in done] == [1] * 4
    assert accepted(sandbox[0]) == 4  # one paid vendor job per job
    assert not any(stats["duplicates"] for stats in sandbox[0].stats().values())  # type: ignore[index]
    assert not leases.claimed  # nothing was "taken over": the jobs were this replica's own, followed


async def test_a_replica_restarted_under_its_own_id_takes_its_jobs_back(
        replicas: Start, sandbox: tuple[Sandbox, str]) -> None:  # noqa: F811
    """What claiming one's own leases is for (kept): a replica that died and came back under the
    same id resumes its jobs at its first round, without waiting for their leases to expire."""
    first = await replicas("a")
    jobs = [await first.submit(VideoRequest(prompt=f"fox {i}", providers=["fal"]), None) for i in range(2)]
    await all_accepted(first, jobs)
    await die(first)
    again: Service = await replicas("a")
    assert again.leases is not None
    async with asyncio.timeout(30):
        while not {j.id for j in jobs} <= again.leases.claimed:
            await again.leases.wait_rounds(1)
    done = [await again.gateway.wait(j.id) for j in jobs]
    assert [j.status for j in done] == [JobStatus.SUCCEEDED] * 2
    assert accepted(sandbox[0]) == 2



async def test_a_submit_delayed_past_its_lease_is_not_sent_by_the_replica_that_lost_it(
        replicas: Start, sandbox: tuple[Sandbox, str]) -> None:  # noqa: F811
    """The attempt is on record, its submit waits (the submit gate full, a stalled process)
    and meanwhile the lease expires and another replica claims the job. The first replica
    must not send the submit after all: the claimant resumes the pending attempt (same key,
    adoption, or unknown), and fal would run, and bill, a second job for it."""
    a = await replicas("a")
    assert a.leases is not None and a._leasing is not None
    a._leasing.cancel()  # this replica's lease round lags (it would drop the job when it ran)
    await asyncio.gather(a._leasing, return_exceptions=True)
    gate = a.gateway._runner()._submit_gate
    while not gate.locked():  # every submit slot taken: the job's submit waits, its attempt saved
        await gate.acquire()
    job = await a.submit(VideoRequest(prompt="fox", providers=["fal"]), None)
    await until(lambda: _has_attempt(a, job.id))
    await asyncio.sleep(LEASE_S * 1.5)  # past the lease: another replica claims the job
    assert [j.id for j in await a.store.claim("b", 60, limit=10)] == [job.id]
    for _ in range(SUBMITS_IN_FLIGHT):
        gate.release()
    await until(lambda: _done(job.id not in a.gateway.following()))

    assert accepted(sandbox[0]) == 0  # nothing sent by the replica that lost the job
    row = await a.store.get(job.id)
    assert row is not None and [(t.outcome.value, t.vendor_job) for t in row.attempts] == [("pending", None)]


async def test_a_submit_under_a_fresh_lease_adds_no_store_statement(
        tmp_path: Path, sandbox: tuple[Sandbox, str]) -> None:  # noqa: F811
    """The fence costs nothing in the usual case: a job submitted right after its create (its
    lease just taken) goes without a renewal; only a submit delayed past half a lease does.
    (A lease of the default 30 s: the short one of the tests above may lapse halfway on a
    loaded machine before the submit leaves, and rightly be renewed.)"""
    settings = Settings(polling=PollingConfig(initial_s=0.05, max_s=0.2), service=ServiceConfig(
        store_url=f"sqlite:///{tmp_path / 'shared.db'}", leases=True, lease_s=30))
    a = await Service.start(settings, sandbox_url=sandbox[1], env={"REELGATE_HOME": str(tmp_path / "a")},
                            replica_id="a")
    renewals: list[str] = []
    renew = a.store.renew

    async def counted(job_id: str, owner_id: str, lease_s: float) -> bool:
        renewals.append(job_id)
        return await renew(job_id, owner_id, lease_s)

    a.store.renew = counted  # type: ignore[method-assign]
    jobs = [await a.submit(VideoRequest(prompt=f"fox {i}", providers=["apiframe"]), None) for i in range(3)]
    done = [await a.gateway.wait(j.id) for j in jobs]
    await a.stop()
    assert [j.status for j in done] == [JobStatus.SUCCEEDED] * 3
    assert renewals == []


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Until ``check()`` is true (a failure after 10 s, not a hang)."""
    async with asyncio.timeout(10):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)


async def _has_attempt(service: Service, job_id: str) -> bool:
    row = await service.store.get(job_id)
    return row is not None and bool(row.attempts)


async def _done(value: bool) -> bool:
    return value


@pytest.mark.parametrize("vendor", ["fal", "railwail"])
async def test_a_vendor_job_accepted_after_the_lease_was_lost_is_adopted_by_the_new_holder(
        tmp_path: Path, sandbox: tuple[Sandbox, str], vendor: str) -> None:  # noqa: F811
    """The submit left under the lease, the process stalled, the job was claimed, then the
    vendor's answer (its job id) came back to the replica that can no longer save it. That
    replica binds the vendor job to the attempt (as a callback naming it would), so the new
    holder, resuming the attempt as one whose submit may have left, adopts and follows it:
    paid once, delivered, not left paid and unfollowed."""
    settings = Settings(polling=PollingConfig(initial_s=0.05, max_s=0.2), adoption_window_s=20, service=ServiceConfig(
        store_url=f"sqlite:///{tmp_path / 'shared.db'}", leases=True, lease_s=30,
        public_url="http://127.0.0.1:9"))  # fal adopts by callback only where it may call back
    a, b = [await Service.start(settings, sandbox_url=sandbox[1], env={"REELGATE_HOME": str(tmp_path / r)},
                                replica_id=r) for r in ("a", "b")]
    save = a.store.save

    async def claimed_before_the_answer_is_saved(job: VideoJob, **options: object) -> None:
        if job.current is not None and job.current.vendor_job is not None and b.leases is not None:
            await a.store.release(job.id, "a")  # a stalled past its lease; b claims the job
            await b.leases.tick()
        await save(job, **options)  # type: ignore[arg-type]

    a.store.save = claimed_before_the_answer_is_saved  # type: ignore[method-assign]
    job = await a.submit(VideoRequest(prompt="a fox", providers=[vendor]), None)
    await until(lambda: _done(job.id in b.gateway.following() and job.id not in a.gateway.following()))
    done = await b.gateway.wait(job.id)
    for replica in (a, b):
        await replica.stop()

    assert done.status is JobStatus.SUCCEEDED, done.attempts
    assert accepted(sandbox[0]) == 1 and len(done.attempts) == 1
