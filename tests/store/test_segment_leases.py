"""A sequence's segments are leased with their parent (``claim``, ``lease_segments``), on every backend."""

from __future__ import annotations

import pytest

from gateway.job import VideoJob
from gateway.store import JobStore, LeaseLost
from tests.store.jobs import new_job
from tests.support import FakeClock

LEASE_S = 30.0


async def _sequence(store: JobStore, owner: str) -> tuple[VideoJob, list[VideoJob]]:
    parent, _ = await store.create_or_get(new_job(created_at=1000.0), lease=(owner, LEASE_S))
    segments = []
    for n in (1, 2):
        segment = VideoJob(new_job().request, id=f"{parent.id}-s{n}", parent_id=parent.id,
                           created_at=1000.0 + n, updated_at=1000.0 + n)
        segments.append((await store.create_or_get(segment, lease=(owner, LEASE_S)))[0])
    return parent, segments


async def test_a_segment_is_never_claimed_on_its_own(store: JobStore, clock: FakeClock) -> None:
    parent, segments = await _sequence(store, "replica-a")
    clock.t += LEASE_S * 2  # replica-a died
    # only the parent, even when the cap would leave room for its segments
    assert [j.id for j in await store.claim("replica-b", LEASE_S, limit=10)] == [parent.id]
    await store.release(parent.id, "replica-b")
    clock.t += LEASE_S * 2
    assert [j.id for j in await store.claim("replica-c", LEASE_S, limit=1)] == [parent.id]


async def test_the_parents_claimer_takes_its_segments_and_fences_the_old_holder(
        store: JobStore, clock: FakeClock) -> None:
    parent, segments = await _sequence(store, "replica-a")
    ids = [s.id for s in segments]
    clock.t += LEASE_S * 2
    assert not await store.lease_segments(parent.id, ids, "replica-b", LEASE_S)  # no parent: nothing taken
    await store.claim("replica-b", LEASE_S, limit=10)
    assert await store.lease_segments(parent.id, ids, "replica-b", LEASE_S)
    assert await store.renew_all(ids, "replica-b", LEASE_S) == set(ids)
    with pytest.raises(LeaseLost):  # the old holder writes nothing more to a segment
        await store.save(segments[1], lease_owner="replica-a")
    await store.save(segments[1], lease_owner="replica-b")


async def test_a_replica_that_lost_the_parent_takes_no_segment(store: JobStore, clock: FakeClock) -> None:
    parent, segments = await _sequence(store, "replica-a")
    ids = [s.id for s in segments]
    clock.t += LEASE_S * 2  # replica-a stalled; replica-b took the parent and its segments
    await store.claim("replica-b", LEASE_S, limit=10)
    assert await store.lease_segments(parent.id, ids, "replica-b", LEASE_S)
    assert not await store.lease_segments(parent.id, ids, "replica-a", LEASE_S)  # it wakes up
    assert await store.renew_all(ids, "replica-a", LEASE_S) == set()
    clock.t += LEASE_S * 2  # even with replica-b's lease on the parent expired
    assert not await store.lease_segments(parent.id, ids, "replica-b", LEASE_S)
