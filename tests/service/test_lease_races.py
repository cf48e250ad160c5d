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

from gateway.emulation.sandbox import Sandbox
from gateway.job import JobStatus, VideoJob
from gateway.request import VideoRequest
from gateway.server.service import Service
from tests.service.test_leases import (  # noqa: F401 (replicas, sandbox: fixtures used below)
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

