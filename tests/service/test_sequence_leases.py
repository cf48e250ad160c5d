"""A sequence under leases, in process on one store (SQLite file and the real PostgreSQL):
a replica that loses the parent's lease mid-sequence stops it and its running segment
without a word to the store or the vendor, and the replica that takes the parent over takes
the segment with it and finishes the sequence, each segment paid once."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import pytest

from gateway.emulation.base import Timing
from gateway.emulation.render import render_mp4
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.job import JobStatus, VideoJob, VideoOutput
from gateway.plugins import discover
from gateway.request import VideoRequest
from gateway.sequence import SEQUENCE_URL
from gateway.server.service import KEEP_FAILED, Service
from tests.service.test_leases import Start, accepted, replicas  # noqa: F401 (a fixture used below)
from tests.store.conftest import pg_schema  # noqa: F401 (a fixture used by ``replicas``)


@pytest.fixture
def sandbox() -> Iterator[tuple[Sandbox, str]]:
    """Slower than test_leases' so a segment is still at its vendor when its lease moves."""
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.5, run_s=1.5))
    with BackgroundServer(sandbox.app) as emulators:
        yield sandbox, emulators.url


def extend_request() -> VideoRequest:
    source = "data:video/mp4;base64," + base64.b64encode(render_mp4(1280, 720, 5)).decode()
    return VideoRequest.model_validate({"prompt": "the walk goes on", "resolution": "720p", "providers": ["fal"],
                                        "edit": {"operation": "extend", "source": source, "target_seconds": 15}})


async def at_vendor(service: Service, job_id: str) -> VideoJob:
    async with asyncio.timeout(30):
        while True:
            row = await service.store.get(job_id)
            if row is not None and row.current is not None and row.current.vendor_job is not None:
                return row
            await asyncio.sleep(0.02)


async def test_a_replica_that_loses_a_sequence_stops_it_and_the_claimer_finishes_it_paying_once(
        replicas: Start, sandbox: tuple[Sandbox, str]) -> None:  # noqa: F811
    a, b = await replicas("a"), await replicas("b")
    parent = await a.submit(extend_request(), None)
    second = await at_vendor(a, f"{parent.id}-s2")  # segment 1 done, segment 2 at its vendor
    assert a.leases is not None and b.leases is not None
    # replica a stalled past its lease (as far as the store knows): b takes the parent over
    a.leases.max_claimed = 0  # (a claims nothing back meanwhile)
    assert await a.store.release(parent.id, "a")
    async with asyncio.timeout(30):
        while parent.id not in b.gateway.following():
            await b.leases.wait_rounds(1)
        while {parent.id, second.id} & set(a.gateway.following()):  # a lets both go, at once
            await a.leases.wait_rounds(1)

    done = await b.gateway.wait(parent.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert accepted(sandbox[0]) == 2  # one per segment: the running one polled where it was
    row = await b.store.get(second.id)
    assert row is not None and row.status is JobStatus.SUCCEEDED and len(row.attempts) == 1
    assert row.attempts[0].vendor_job is not None
    assert row.attempts[0].vendor_job.vendor_id == second.attempts[0].vendor_job.vendor_id  # type: ignore[union-attr]
    assert not any(s["jobs"].get("cancelled") for s in sandbox[0].stats().values())  # type: ignore[index]
    if (watcher := b._watchers.get(parent.id)) is not None:  # finished off here: kept, released
        await asyncio.wait([watcher], timeout=30)
    stored = await b.store.get(parent.id)
    assert stored is not None and stored.output is not None
    assert stored.output.uri is not None and stored.output.path is None  # kept before it was stored succeeded
    assert not (b.home / "sequences" / parent.id).exists()  # kept in result storage: the clips are gone


async def test_a_joined_sequence_left_unkept_by_a_dead_replica_is_finished_off_once(
        replicas: Start) -> None:  # noqa: F811
    b = await replicas("b")
    assert b.leases is not None
    # joined and stored succeeded by a replica that died before keeping it (its file died with it)
    job = VideoJob(extend_request(), output=VideoOutput(url=f"{SEQUENCE_URL}x", path="/nonexistent/sequence.mp4"))
    for status in (JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.SUCCEEDED):
        job.move(status)
    await b.store.create_or_get(job, lease=("dead", 0.001))
    async with asyncio.timeout(30):
        while not (row := await b.store.get(job.id)) or not any(KEEP_FAILED in n for n in row.notes):
            await b.leases.wait_rounds(1)
    await b.leases.wait_rounds(2)
    assert await b.store.claim("c", 60, limit=10) == []  # released once finished off: no claim loop


async def test_a_replica_that_loses_the_running_segment_first_writes_nothing_to_the_parent(
        replicas: Start, sandbox: tuple[Sandbox, str]) -> None:  # noqa: F811
    a, b = await replicas("a"), await replicas("b")
    assert a.leases is not None and b.leases is not None
    a.leases.max_claimed = 0  # a claims nothing back
    parent = await a.submit(extend_request(), None)
    second = await at_vendor(a, f"{parent.id}-s2")
    # of the two leases a lost in one round, the segment's is dropped first
    await a.leases.drop(second.id)
    if (task := a.gateway._tasks.get(parent.id)) is not None:  # the parent stops too, unwritten
        await asyncio.wait([task], timeout=30)
    assert parent.id not in a.gateway.following()
    async with asyncio.timeout(30):  # its lease lapses and b resumes it
        stored = await a.store.get(parent.id)
        assert stored is not None and not stored.status.terminal  # not failed by the segment's loss
        while parent.id not in b.gateway.following():
            await b.leases.wait_rounds(1)
    done = await b.gateway.wait(parent.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    assert accepted(sandbox[0]) == 2
