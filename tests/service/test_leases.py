"""Two ``Service`` replicas on one store (SQLite file and the real PostgreSQL): each job is
followed by exactly one of them, and a dead replica's jobs are taken over by the other,
finishing with exactly one accepted submission each at the emulators."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.budget import SpendLedger
from gateway.config import PollingConfig, ServiceConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.job import JobStatus, VideoJob
from gateway.plugins import discover
from gateway.request import VideoRequest
from gateway.server.replica_ids import release_id
from gateway.server.service import Service
from gateway.shared import REDIS_PREFIX_ENV
from tests.shared.conftest import REDIS_URL, prefix  # noqa: F401 (a fixture used below)
from tests.store.conftest import PG_DSN, pg_schema  # noqa: F401 (a fixture used below)

#: renewed every second (lease_s / 3): a live replica keeps its leases unless a round is two
#: seconds late. At 0.6 s (renewals 0.2 s apart) rounds late by 0.4 s on the loaded CI host
#: handed a live replica's jobs to the other (claimed, "lease lost") in 1 of 3 runs; takeovers
#: of a dead replica's jobs wait for the lease to run out, so a few seconds more each.
LEASE_S = 3.0
Start = Callable[[str], Awaitable[Service]]


@pytest.fixture
def sandbox() -> Iterator[tuple[Sandbox, str]]:
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.3, run_s=0.6))
    with BackgroundServer(sandbox.app) as emulators:
        yield sandbox, emulators.url


@pytest.fixture(params=["sqlite", "postgres"])
async def replicas(request: pytest.FixtureRequest, tmp_path: Path,
                   sandbox: tuple[Sandbox, str]) -> AsyncIterator[Start]:
    """Starts replicas by id on one store; stops those still running afterwards."""
    if request.param == "sqlite":
        store_url, schema = f"sqlite:///{tmp_path / 'shared.db'}", "reelgate"
    else:  # the real server, in a schema of this test's own
        store_url, schema = PG_DSN, request.getfixturevalue("pg_schema")
    settings = Settings(polling=PollingConfig(initial_s=0.05, max_s=0.2),
                        service=ServiceConfig(store_url=store_url, store_schema=schema, leases=True, lease_s=LEASE_S))
    started: list[Service] = []

    async def start(replica_id: str) -> Service:
        env = {"REELGATE_HOME": str(tmp_path / replica_id)}
        service = await Service.start(settings, sandbox_url=sandbox[1], env=env, replica_id=replica_id)
        started.append(service)
        return service

    yield start
    for service in started:
        if service.leases is not None:  # not killed
            await service.stop()


def accepted(sandbox: Sandbox) -> int:
    return sum(int(stats["accepted_submissions"]) for stats in sandbox.stats().values())  # type: ignore[index]


async def submit(service: Service, n: int, tag: str) -> list[VideoJob]:
    return [await service.submit(VideoRequest(prompt=f"fox {tag} {i}", providers=["fal"]), None) for i in range(n)]


async def die(service: Service) -> None:
    """Stop a replica's tasks without releasing anything, as a SIGKILL would."""
    service.leases = None
    tasks = [t for t in (service._leasing, *service.gateway._tasks.values(), *service._watchers.values()) if t]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await service.gateway.aclose()
    await service.store.close()
    await release_id(service._id_hold)  # a killed process's connections close with it


async def all_accepted(service: Service, jobs: list[VideoJob]) -> None:
    """Until every job has its vendor job id on record (nothing in flight at the kill)."""
    async with asyncio.timeout(30):
        await _all_accepted(service, jobs)


async def _all_accepted(service: Service, jobs: list[VideoJob]) -> None:
    while True:
        stored = [await service.store.get(job.id) for job in jobs]
        if all(j is not None and j.current is not None and j.current.vendor_job is not None for j in stored):
            return
        await asyncio.sleep(0.02)


async def test_each_job_is_followed_by_the_replica_that_created_it(replicas: Start, sandbox: tuple[Sandbox, str]):
    a, b = await replicas("a"), await replicas("b")
    jobs_a, jobs_b = await submit(a, 4, "a"), await submit(b, 4, "b")
    assert a.leases is not None and b.leases is not None
    await asyncio.gather(a.leases.wait_rounds(2), b.leases.wait_rounds(2))  # both renewed and claimed meanwhile

    assert not set(a.gateway.following()) & set(b.gateway.following())
    assert not a.leases.claimed and not b.leases.claimed  # a live replica's jobs are never taken
    done = [await a.gateway.wait(j.id) for j in jobs_a] + [await b.gateway.wait(j.id) for j in jobs_b]
    assert [j.status for j in done] == [JobStatus.SUCCEEDED] * 8
    assert accepted(sandbox[0]) == 8
    rows = [await a.store.get(j.id) for j in done]
    assert all(r is not None and r.status is JobStatus.SUCCEEDED for r in rows)


async def test_a_dead_replicas_jobs_are_taken_over_and_submitted_once(replicas: Start, sandbox: tuple[Sandbox, str]):
    a, b = await replicas("a"), await replicas("b")
    jobs = await submit(a, 6, "a")
    await all_accepted(a, jobs)
    await die(a)
    assert b.leases is not None
    ids = {j.id for j in jobs}
    async with asyncio.timeout(30):  # a failure, not a hang, when no one takes them over
        while not ids <= b.leases.claimed | {j.id for j in jobs if await finished(b, j.id)}:
            await b.leases.wait_rounds(1)

    done = [await b.gateway.wait(job_id) for job_id in ids]
    assert {j.status for j in done} == {JobStatus.SUCCEEDED}
    assert accepted(sandbox[0]) == 6  # polled where they were, never resubmitted


async def test_a_replica_that_lost_a_lease_stops_following_the_job(replicas: Start, sandbox: tuple[Sandbox, str],
                                                                   monkeypatch: pytest.MonkeyPatch):
    # the job still runs when its lease moves: at 0.9 s it could end first under load, and a
    # finished job is not claimed (the intruder found nothing to claim in 2 of 6 runs)
    for emulator in sandbox[0].emulators.values():
        emulator.timing = Timing(queue_s=60, run_s=60)
    a = await replicas("a")
    a.gateway.ledger = ledger = RecordingLedger(None)
    [job] = await submit(a, 1, "a")
    await all_accepted(a, [job])
    # another replica holds the row now (a's lease expired while a stalled, say). a stalls
    # meanwhile for real: a round of a's between the release and the intruder's claim would
    # take the unleased row back, and so would a second replica's rounds
    assert a.leases is not None
    stalled = await stall_rounds(a, monkeypatch)
    await a.store.release(job.id, "a")
    assert [j.id for j in await a.store.claim("intruder", 60, limit=10)] == [job.id]
    stalled.set()
    await a.leases.wait_rounds(2)  # a renew is refused: the job is dropped at once

    assert job.id not in a.gateway.following()
    row = await a.store.get(job.id)
    assert row is not None and not row.status.terminal  # a wrote nothing more
    # nor settles anything: the job's reservation and cost are the new holder's (settling
    # here would drop the new holder's hold in a shared ledger, or count the cost twice)
    assert ledger.calls == [("handover", job.id)] and ledger.reserved() == {}


class RecordingLedger(SpendLedger):
    def __init__(self, per_day_usd: float | None) -> None:
        super().__init__(per_day_usd)
        self.calls: list[tuple[str, str]] = []

    def settle(self, key: str, cost: Decimal, at_risk: Decimal = Decimal(0)) -> None:
        self.calls.append(("settle", key))
        super().settle(key, cost, at_risk)

    def handover(self, key: str) -> None:
        self.calls.append(("handover", key))
        super().handover(key)


async def stall_rounds(service: Service, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Hold ``service``'s lease rounds until the event returned is set: once this returns no
    round is under way (one begun before has ended), and the next waits for the event."""
    leases = service.leases
    assert leases is not None
    parked, go, tick = asyncio.Event(), asyncio.Event(), leases.tick

    async def stalled_tick() -> None:
        parked.set()
        await go.wait()
        await tick()

    monkeypatch.setattr(leases, "tick", stalled_tick)
    async with asyncio.timeout(30):
        await parked.wait()
    return go


async def finished(service: Service, job_id: str) -> bool:
    row = await service.store.get(job_id)
    return row is not None and row.status.terminal



def test_replicas_on_a_shared_store_lease_and_report_it(tmp_path: Path, sandbox: tuple[Sandbox, str]) -> None:
    from starlette.testclient import TestClient

    from gateway.server import create_app

    settings = Settings(service=ServiceConfig(store_url=f"sqlite:///{tmp_path / 'shared.db'}", leases=True))
    env = {"REELGATE_HOME": str(tmp_path / "home")}
    app = create_app(lambda: Service.start(settings, sandbox_url=sandbox[1], env=env, replica_id="replica-7"))
    with TestClient(app) as client:
        replica = client.get("/readyz").json()["replica"]
    assert replica == {"id": "replica-7", "store": "sqlite", "leases": True, "pid": os.getpid(), "workers": 1}


def test_a_replica_goes_by_its_given_id_in_shared_state_too(tmp_path: Path, sandbox: tuple[Sandbox, str],
                                                          prefix: str) -> None:  # noqa: F811
    # /readyz said "replica": "replica-7" but "shared_state": {"replica": "host-pid-random"}, and
    # circuits opened here reached the other replicas' plans under that second name
    from starlette.testclient import TestClient

    from gateway.server import create_app

    settings = Settings(redis_url=REDIS_URL,
                        service=ServiceConfig(store_url=f"sqlite:///{tmp_path / 'shared.db'}", leases=True))
    env = {"REELGATE_HOME": str(tmp_path / "home"), REDIS_PREFIX_ENV: prefix}
    app = create_app(lambda: Service.start(settings, sandbox_url=sandbox[1], env=env, replica_id="replica-7"))
    with TestClient(app) as client:
        ready = client.get("/readyz").json()
        assert ready["replica"]["id"] == "replica-7"
        assert ready["shared_state"]["backend"] == "redis" and ready["shared_state"]["replica"] == "replica-7"
        assert app.state.service.gateway.shared.state.replica == "replica-7"  # what trips and slots carry


async def test_any_replica_reads_cancels_and_deletes_any_job(replicas: Start, sandbox: tuple[Sandbox, str]):
    for emulator in sandbox[0].emulators.values():  # the jobs outlast the test unless cancelled
        emulator.timing = Timing(queue_s=60, run_s=60)
    a, b = await replicas("a"), await replicas("b")
    kept, dropped = await submit(a, 2, "a")
    await all_accepted(a, [kept, dropped])

    seen = await b.get(kept.id, None)  # b does not follow it: read from the store
    assert seen is not None and seen.id == kept.id and kept.id not in b.gateway.following()
    asked = await b.cancel(kept.id, None)
    assert asked is not None and not asked.status.terminal  # asked; a cancels it on its next round
    assert a.leases is not None
    async with asyncio.timeout(30):
        while not await finished(b, kept.id):
            await a.leases.wait_rounds(1)
    row = await b.store.get(kept.id)
    assert row is not None and row.status is JobStatus.CANCELLED, row.error
    assert kept.id not in a.gateway.following()

    stored = await b.get(dropped.id, None)
    assert stored is not None
    await b.delete(stored)
    async with asyncio.timeout(30):  # a's next save or renew finds the row gone: it stops
        while dropped.id in a.gateway.following():
            await a.leases.wait_rounds(1)
    assert await b.store.get(dropped.id) is None  # and it wrote nothing back


async def test_another_replica_sees_a_job_succeeded_only_with_its_video_kept(
        replicas: Start, monkeypatch: pytest.MonkeyPatch):
    # one write stores the job succeeded and names its kept video (JobTasks._keep): no other
    # replica ever reads a success whose video is not there yet
    a, b = await replicas("a"), await replicas("b")
    keeping = asyncio.Event()
    keep = a.gateway.keep_finished
    assert keep is not None

    async def slow_keep(job: VideoJob) -> None:  # a keeps the video a while after the vendor finished
        keeping.set()
        await asyncio.sleep(0.5)
        await keep(job)

    monkeypatch.setattr(a.gateway, "keep_finished", slow_keep)
    (job,) = await submit(a, 1, "a")
    async with asyncio.timeout(30):
        await keeping.wait()
    seen = await b.get(job.id, None)
    assert seen is not None and seen.status is not JobStatus.SUCCEEDED  # not kept yet: not succeeded yet
    here = await a.get(job.id, None)  # nor at the replica keeping it
    assert here is not None and here.status is not JobStatus.SUCCEEDED
    assert (await a.cancel(job.id, None)) is here and here.status is not JobStatus.CANCELLED  # finished: not cancelled
    async with asyncio.timeout(30):
        await a.gateway.wait(job.id)  # its task ends with the one write
    seen = await b.get(job.id, None)
    assert seen is not None and seen.status is JobStatus.SUCCEEDED
    assert seen.output is not None and seen.output.uri is not None
    assert (await b.wait_kept(seen)).output == seen.output
    assert await a.storage.exists(seen.output.uri)  # (separate homes here: a shared directory in deployment)


@pytest.mark.parametrize("replicas", ["postgres"], indirect=True)  # the store both replicas read keys from
async def test_a_job_taken_over_is_held_in_the_budget_of_a_key_made_after_start(replicas: Start):
    a, b = await replicas("a"), await replicas("b")
    made, plaintext = await a.keys.acreate("late", budget_usd_per_day=50.0)  # b started before it existed
    key = await a.keys.averify(plaintext)
    job = await a.submit(VideoRequest(prompt="fox late", providers=["fal"]), key)
    await all_accepted(a, [job])
    await die(a)
    assert b.leases is not None
    async with asyncio.timeout(30):
        while job.id not in b.leases.claimed and not await finished(b, job.id):
            await b.leases.wait_rounds(1)
    ledger = b._ledgers.get(made.id)  # b learned the key from the store when it claimed the job
    assert ledger is not None
    assert (await b.gateway.wait(job.id)).status is JobStatus.SUCCEEDED
    assert ledger.spent_today() > 0  # the job's cost settled against the key's daily budget


async def test_a_job_whose_replica_died_while_keeping_its_video_is_polled_and_kept_by_another(
        replicas: Start, sandbox: tuple[Sandbox, str], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = await replicas("a"), await replicas("b")
    keeping = asyncio.Event()

    async def stalls(job: VideoJob) -> None:  # a dies while copying the video: stored still running
        keeping.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(a.gateway, "keep_finished", stalls)
    [job] = await submit(a, 1, "a")
    async with asyncio.timeout(30):
        await keeping.wait()
    await die(a)
    assert b.leases is not None
    async with asyncio.timeout(30):  # b claims the finished job once a's lease expires
        while (row := await b.store.get(job.id)) is None or row.output is None or row.output.uri is None:
            await b.leases.wait_rounds(1)
    assert row.status is JobStatus.SUCCEEDED and row.output.sha256
    assert [j.id for j in await b.store.claim("c", LEASE_S, limit=10)] == []  # released: nothing left
    assert accepted(sandbox[0]) == 1
