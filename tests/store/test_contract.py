"""The JobStore contract, run against every backend (see the ``backend`` fixture)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.errors import InvalidRequest, Unavailable
from gateway.job import Attempt, JobStatus, VideoJob
from gateway.provider import ProviderSettings, Secret
from gateway.store import JobStore, LeaseLost, migrations
from gateway.store.codec import fingerprint
from providers.fal import FalAdapter
from tests.store.conftest import Backend
from tests.store.jobs import BILLED, ESTIMATE, finished_job, new_job
from tests.support import FakeClock

LEASE_S = 30.0


async def test_a_job_with_attempts_round_trips(store: JobStore) -> None:
    job = finished_job()
    assert await store.create_or_get(job) == (job, True)
    loaded = await store.get(job.id)
    assert loaded == job
    assert loaded is not None and loaded.attempts[1].cost_usd == BILLED
    assert loaded.attempts[1].estimated_usd == ESTIMATE


async def test_save_writes_every_transition(store: JobStore) -> None:
    job = await store.create(new_job())
    job.move(JobStatus.SUBMITTED)
    job.attempts.append(Attempt(provider="fal", vendor_model="m", started_at=1.0, attempt_key="a1"))
    await store.save(job)
    assert await store.get(job.id) == job
    job.move(JobStatus.RUNNING)
    job.progress = 0.5
    await store.save(job)
    assert await store.get(job.id) == job


async def test_save_inserts_a_job_it_has_not_seen(store: JobStore) -> None:
    job = new_job()
    await store.save(job)
    assert await store.get(job.id) == job


async def test_concurrent_creates_with_one_idempotency_key_make_one_job(store: JobStore) -> None:
    attempts = [new_job(key="pay-once", created_at=1000.0 + i) for i in range(20)]
    results = await asyncio.gather(*(store.create_or_get(job) for job in attempts))
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert [j.id for j in await store.list_jobs()] == [results[0][0].id]
    assert (await store.get_by_idempotency_key("pay-once")) == results[0][0]


async def test_idempotency_keys_are_scoped_by_owner(store: JobStore) -> None:
    mine, created_mine = await store.create_or_get(new_job(key="k"), owner="key_a")
    theirs, created_theirs = await store.create_or_get(new_job(key="k"), owner="key_b")
    local, created_local = await store.create_or_get(new_job(key="k"))
    assert created_mine and created_theirs and created_local
    assert len({mine.id, theirs.id, local.id}) == 3
    assert await store.get_by_idempotency_key("k", "key_b") == theirs
    assert await store.get_by_idempotency_key("k") == local
    assert await store.get_by_idempotency_key("other", "key_a") is None


async def test_creating_the_same_job_twice_returns_the_stored_one(store: JobStore) -> None:
    job = await store.create(new_job())
    again = VideoJob(job.request, id=job.id, created_at=5.0, updated_at=5.0)
    assert await store.create_or_get(again) == (job, False)


async def test_list_pages_newest_first_without_gaps_or_repeats(store: JobStore) -> None:
    # two jobs share a created_at: the id breaks the tie so no page boundary loses one
    times = [1000.0, 1001.0, 1002.0, 1002.0, 1003.0, 1004.0, 1005.0]
    jobs = [await store.create(new_job(f"video {i}", created_at=t)) for i, t in enumerate(times)]
    expected = [j.id for j in sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)]
    seen: list[str] = []
    after = None
    while page := await store.list_jobs(limit=3, after=after):
        seen += [j.id for j in page]
        after = page[-1].id
    assert seen == expected


async def test_list_pages_oldest_first_without_gaps_or_repeats(store: JobStore) -> None:
    times = [1000.0, 1001.0, 1002.0, 1002.0, 1003.0, 1004.0, 1005.0]
    jobs = [await store.create(new_job(f"video {i}", created_at=t)) for i, t in enumerate(times)]
    expected = [j.id for j in sorted(jobs, key=lambda j: (j.created_at, j.id))]
    seen: list[str] = []
    after = None
    while page := await store.list_jobs(limit=3, after=after, oldest_first=True):
        seen += [j.id for j in page]
        after = page[-1].id
    assert seen == expected


async def test_a_cursor_on_another_owners_job_is_as_unknown_as_a_missing_one(store: JobStore) -> None:
    theirs = await store.create(new_job("theirs"), owner="key_b")
    for after in (theirs.id, "vid_missing"):
        with pytest.raises(InvalidRequest) as info:
            await store.list_jobs(owner="key_a", after=after)
        assert info.value.field == "after" and info.value.reason == f"no job {after!r} to continue from"
    assert await store.list_jobs(owner="key_b", after=theirs.id) == []
    assert await store.list_jobs(after=theirs.id) == []  # no owner: every owner's jobs


async def test_list_and_get_filter_by_owner(store: JobStore) -> None:
    mine = await store.create(new_job("mine"), owner="key_a")
    theirs = await store.create(new_job("theirs", created_at=2000.0), owner="key_b")
    assert [j.id for j in await store.list_jobs(owner="key_a")] == [mine.id]
    assert [j.id for j in await store.list_jobs()] == [theirs.id, mine.id]
    assert await store.get(theirs.id, owner="key_a") is None
    assert await store.get(theirs.id, owner="key_b") == theirs
    assert not await store.delete(theirs.id, owner="key_a")


async def test_list_after_an_unknown_job_is_an_invalid_request(store: JobStore) -> None:
    with pytest.raises(InvalidRequest) as info:
        await store.list_jobs(after="vid_missing")
    assert info.value.field == "after"


async def test_delete(store: JobStore) -> None:
    job = await store.create(new_job())
    assert await store.delete(job.id)
    assert await store.get(job.id) is None
    assert not await store.delete(job.id)


async def test_non_terminal_returns_unfinished_jobs_oldest_first(store: JobStore) -> None:
    statuses = [JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.QUEUED, JobStatus.FAILED,
                JobStatus.SUBMITTED, JobStatus.CANCELLED]
    for i, status in enumerate(statuses):
        job = new_job(created_at=1000.0 + i)
        job.status = status
        await store.create(job)
    assert [j.status for j in await store.non_terminal()] == [
        JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.SUBMITTED]


async def test_an_expired_lease_is_taken_over_and_the_old_owner_is_fenced(
        store: JobStore, clock: FakeClock) -> None:
    done = finished_job()
    await store.create(done)
    active = [await store.create(new_job(created_at=1000.0 + i)) for i in range(3)]

    claimed = await store.claim("replica-a", LEASE_S, limit=10)
    assert [j.id for j in claimed] == [j.id for j in active]
    assert await store.claim("replica-b", LEASE_S, limit=10) == []

    clock.t += LEASE_S / 2
    assert await store.renew(active[0].id, "replica-a", LEASE_S)
    clock.t += LEASE_S * 0.75  # the two others expired; the renewed one has not
    taken = await store.claim("replica-b", LEASE_S, limit=10)
    assert [j.id for j in taken] == [j.id for j in active[1:]]

    assert not await store.renew(active[1].id, "replica-a", LEASE_S)
    with pytest.raises(LeaseLost):
        await store.save(active[1], lease_owner="replica-a")
    active[1].move(JobStatus.SUBMITTED)
    await store.save(active[1], lease_owner="replica-b")
    assert (await store.get(active[1].id)).status is JobStatus.SUBMITTED

    assert await store.release(active[1].id, "replica-b")
    assert not await store.release(active[1].id, "replica-b")
    assert [j.id for j in await store.claim("replica-c", LEASE_S, limit=10)] == [active[1].id]


async def test_a_job_created_with_a_lease_is_its_creators(store: JobStore, clock: FakeClock) -> None:
    job, created = await store.create_or_get(new_job(), lease=("replica-a", LEASE_S))
    assert created
    assert await store.claim("replica-b", LEASE_S, limit=10) == []  # the creator's, while live
    await store.save(job, lease_owner="replica-a")
    clock.t += LEASE_S * 2  # replica-a died
    assert [j.id for j in await store.claim("replica-b", LEASE_S, limit=10)] == [job.id]
    with pytest.raises(LeaseLost):
        await store.save(job, lease_owner="replica-a")


async def test_a_finished_job_left_leased_by_a_dead_replica_is_claimed_to_finish_it_off(
        store: JobStore, clock: FakeClock) -> None:
    left, _ = await store.create_or_get(new_job(created_at=1000.0), lease=("replica-a", LEASE_S))
    released, _ = await store.create_or_get(new_job(created_at=1001.0), lease=("replica-a", LEASE_S))
    for job in (left, released):
        job.fail(Unavailable("down", provider="fal"))
        await store.save(job, lease_owner="replica-a")
    await store.release(released.id, "replica-a")  # finished off: no one claims it again
    assert await store.claim("replica-b", LEASE_S, limit=10) == []  # replica-a is still at it
    clock.t += LEASE_S * 2  # replica-a died before releasing the other
    assert [j.id for j in await store.claim("replica-b", LEASE_S, limit=10)] == [left.id]
    assert await store.release(left.id, "replica-b")
    clock.t += LEASE_S * 2
    assert await store.claim("replica-c", LEASE_S, limit=10) == []


async def test_renew_all_extends_only_the_leases_still_held(store: JobStore, clock: FakeClock) -> None:
    mine = [(await store.create_or_get(new_job(created_at=1000.0 + i), lease=("replica-a", LEASE_S)))[0]
            for i in range(3)]
    clock.t += LEASE_S + 1
    (lost,) = await store.claim("replica-b", LEASE_S, limit=1)  # the oldest, taken over
    clock.t += LEASE_S / 2
    ids = [j.id for j in mine]
    assert await store.renew_all([*ids, "vid_unknown"], "replica-a", LEASE_S) == set(ids) - {lost.id}
    clock.t += LEASE_S * 0.9  # the renewed ones are still held; b's claim has expired
    assert [j.id for j in await store.claim("replica-c", LEASE_S, limit=10)] == [lost.id]
    assert await store.renew_all([], "replica-a", LEASE_S) == set()


async def test_a_cancel_asked_anywhere_reaches_the_lease_holder_once(store: JobStore) -> None:
    job, _ = await store.create_or_get(new_job(), lease=("replica-a", LEASE_S))
    await store.request_cancel(job.id)
    await store.request_cancel(job.id)  # twice: one request
    assert await store.take_cancels("replica-b") == []
    assert await store.take_cancels("replica-a") == [job.id]
    assert await store.take_cancels("replica-a") == []


async def test_a_claim_leaves_its_own_replicas_live_leases_alone(store: JobStore, clock: FakeClock) -> None:
    # a replica renews what it follows: its claims must not write those rows again every round
    created, _ = await store.create_or_get(new_job(created_at=1000.0), lease=("replica-a", LEASE_S))
    unleased = await store.create(new_job(created_at=1001.0))
    assert [j.id for j in await store.claim("replica-a", LEASE_S, limit=10)] == [unleased.id]
    clock.t += LEASE_S / 2
    assert await store.claim("replica-a", LEASE_S, limit=10) == []  # both live and its own
    clock.t += LEASE_S * 0.6  # past both leases as first given: extended by a claim, they would not be
    assert [j.id for j in await store.claim("replica-b", LEASE_S, limit=10)] == [created.id, unleased.id]


async def test_a_replica_restarted_under_its_id_takes_back_its_live_leases_with_own(store: JobStore) -> None:
    mine, _ = await store.create_or_get(new_job(created_at=1000.0), lease=("replica-a", LEASE_S))
    others, _ = await store.create_or_get(new_job(created_at=1001.0), lease=("replica-b", LEASE_S))
    free = await store.create(new_job(created_at=1002.0))
    assert [j.id for j in await store.claim("replica-a", LEASE_S, limit=10, own=True)] == [mine.id, free.id]
    assert await store.claim("replica-c", LEASE_S, limit=10, own=True) == []
    assert [j.id for j in await store.claim("replica-b", LEASE_S, limit=10, own=True)] == [others.id]


async def test_the_last_save_under_a_lease_releases_it_in_the_same_write(store: JobStore, clock: FakeClock) -> None:
    job, _ = await store.create_or_get(new_job(webhook_url="https://app.example/hook"), lease=("replica-a", LEASE_S))
    job.fail(Unavailable("down", provider="fal"))
    with pytest.raises(LeaseLost):  # fenced as any leased save: nothing written, nothing released
        await store.save(job, lease_owner="replica-b", release=True)
    assert (await store.get(job.id)).status is JobStatus.QUEUED
    assert await store.take_cancels("replica-a") == [] and await store.lease_deliveries("r1", LEASE_S, 10) == []
    await store.save(job, lease_owner="replica-a", release=True)
    assert (await store.get(job.id)).status is JobStatus.FAILED
    # tried again, its answer lost after the commit: that write landed, so no LeaseLost (the
    # job's cost would be handed over to no one) and nothing written or queued twice
    await store.save(job, lease_owner="replica-a", release=True)
    # released: its webhook goes at once, once, no release is left to make, and nobody claims it
    assert [r.job_id for r in await store.lease_deliveries("r1", LEASE_S, 10)] == [job.id]
    assert not await store.release(job.id, "replica-a")
    clock.t += LEASE_S * 2
    assert await store.claim("replica-b", LEASE_S, limit=10) == []
    with pytest.raises(LeaseLost):  # nothing more is written under the lease given up
        await store.save(job, lease_owner="replica-a")
    job.updated_at += 1  # not the write that landed
    with pytest.raises(LeaseLost):
        await store.save(job, lease_owner="replica-a", release=True)
    with pytest.raises(ValueError, match="leased"):
        await store.save(job, release=True)


async def test_concurrent_claimers_never_share_a_job(backend: Backend, store: JobStore) -> None:
    jobs = [await store.create(new_job(created_at=1000.0 + i)) for i in range(12)]
    replicas = [backend.make() for _ in range(4)]
    for replica in replicas:
        await replica.open()
    try:
        for _ in range(3):  # rounds, so the race is run more than once
            claims = await asyncio.gather(*(r.claim(f"replica-{i}", LEASE_S, limit=5)
                                            for i, r in enumerate(replicas)))
            ids = [j.id for claim in claims for j in claim]
            assert len(ids) == len(set(ids)) == len(jobs)
            for i, claim in enumerate(claims):
                for job in claim:
                    assert await replicas[i].release(job.id, f"replica-{i}")
    finally:
        for replica in replicas:
            await replica.close()


async def test_opening_twice_applies_migrations_once(backend: Backend, store: JobStore) -> None:
    job = await store.create(new_job())
    async with backend.make() as again:
        assert await again.get(job.id) == job
    async with backend.make():
        pass
    assert backend.versions() == [m.version for m in migrations.load(backend.name)]


async def test_the_api_key_is_never_stored(backend: Backend, store: JobStore) -> None:
    key = "fal-secret-key-5f3a9c1e77d2"
    adapter = FalAdapter(ProviderSettings(name="fal", api_key=Secret(key), credential_ref="env:FAL_KEY",
                                          base_url="http://fal.test"))
    job = new_job(key="with-a-key")
    transport = httpx.ASGITransport(app=FalAdapter.emulator())
    async with httpx.AsyncClient(transport=transport) as client:
        sent = adapter.build_submit(job.request, resolution=adapter.quote(job.request).quote.resolution,
                                    attempt_key="att-1")
        assert key in sent.headers["authorization"]  # the key really was in play
        vendor_job = adapter.parse_submit(job.request, await client.send(sent))
    attempt = Attempt(provider="fal", vendor_model=vendor_job.vendor_model, started_at=1.0,
                      attempt_key="att-1", vendor_job=vendor_job)
    attempt.error = Unavailable(f"upstream said: Authorization: Key {key}", provider="fal").to_dict()
    job.attempts.append(attempt)
    job.move(JobStatus.SUBMITTED)
    await store.create(job)
    await store.save(job)

    dumped = backend.dump()
    assert vendor_job.vendor_id in dumped and "env:FAL_KEY" in dumped
    assert key not in dumped


async def test_the_request_fingerprint_is_kept_with_the_job(store: JobStore) -> None:
    """An idempotency key reused with another request is told apart by the stored digest,
    also by a process that never saw the first request."""
    job = new_job(key="pay-once")
    job.fingerprint = fingerprint(job.request)
    await store.create(job, owner="key_a")
    for loaded in (await store.get(job.id), await store.get_by_idempotency_key("pay-once", "key_a")):
        assert loaded is not None and loaded.fingerprint == fingerprint(job.request)
        assert loaded.fingerprint != fingerprint(new_job("another prompt", key="pay-once").request)


async def test_list_at_risk_returns_only_jobs_that_may_have_been_billed_without_a_result(store: JobStore) -> None:
    safe = await store.create(new_job(created_at=1000.0))
    risky = await store.create(new_job(created_at=1001.0), owner="key_a")
    other = await store.create(new_job(created_at=1002.0), owner="key_b")
    for job in (risky, other):
        job.attempts.append(Attempt(provider="fal", vendor_model="m", started_at=1.0, attempt_key=f"{job.id}.1",
                                    estimated_usd=ESTIMATE))
        job.attempts[0].finish_unknown(Unavailable("lost", provider="fal"))
        job.fail(Unavailable("lost", provider="fal"))
        await store.save(job)
    assert [j.id for j in await store.list_jobs(at_risk=True)] == [other.id, risky.id]
    assert [j.id for j in await store.list_jobs(at_risk=True, owner="key_a")] == [risky.id]
    assert [j.id for j in await store.list_jobs(at_risk=True, limit=1, after=other.id)] == [risky.id]
    assert (await store.list_jobs(at_risk=True))[0].at_risk_usd == ESTIMATE
    assert {j.id for j in await store.list_jobs()} == {safe.id, risky.id, other.id}
    # a replica's leased save sets the flag too (an attempt lost while the job moves on)
    (claimed,) = await store.claim("replica-1", LEASE_S, 10)
    claimed.attempts.append(Attempt(provider="fal", vendor_model="m", started_at=1.0, attempt_key="k",
                                    estimated_usd=ESTIMATE))
    claimed.attempts[0].finish_unknown(Unavailable("lost", provider="fal"))
    await store.save(claimed, lease_owner="replica-1")
    assert safe.id in {j.id for j in await store.list_jobs(at_risk=True)}


async def test_a_webhook_key_is_seen_once_until_it_expires_also_after_reopening(
        backend: Backend, store: JobStore, clock: FakeClock) -> None:
    assert await store.first_sighting("fal|req-1|succeeded", ttl_s=60)
    assert not await store.first_sighting("fal|req-1|succeeded", ttl_s=60)
    assert await store.first_sighting("fal|req-1|running", ttl_s=60)  # another key
    async with backend.make() as reopened:  # a restarted process remembers
        assert not await reopened.first_sighting("fal|req-1|succeeded", ttl_s=60)
    clock.t += 61
    assert await store.first_sighting("fal|req-1|succeeded", ttl_s=60)  # expired: acted on again


async def test_concurrent_sightings_of_one_key_admit_exactly_one(backend: Backend, store: JobStore) -> None:
    async with backend.make() as other:  # another process or replica on the same database
        seen = await asyncio.gather(*(s.first_sighting("apiframe|job|succeeded", ttl_s=60)
                                      for _ in range(20) for s in (store, other)))
    assert sum(seen) == 1


def finished_with_webhook(created_at: float = 1000.0) -> VideoJob:
    job = new_job(created_at=created_at, webhook_url="https://app.example/hook")
    job.fail(Unavailable("down", provider="fal"))
    return job


async def test_saving_a_finished_job_with_a_webhook_queues_one_message(store: JobStore, clock: FakeClock) -> None:
    quiet = new_job(created_at=999.0)
    quiet.fail(Unavailable("down", provider="fal"))
    await store.save(quiet)  # no webhook_url: nothing to send
    running = new_job(webhook_url="https://app.example/hook")
    await store.save(running)  # not finished: nothing to announce yet
    job = finished_with_webhook()
    await store.save(job)
    await store.save(job)  # saved again (a later note): still one message
    (row,) = await store.lease_deliveries("r1", LEASE_S, 10)
    assert (row.job_id, row.status, row.attempts, row.body) == (job.id, "failed", 0, None)
    assert row.message_id.startswith("msg_")


async def test_an_outbox_message_is_retried_with_the_same_id_until_done(
        backend: Backend, store: JobStore, clock: FakeClock) -> None:
    await store.save(finished_with_webhook())
    (first,) = await store.lease_deliveries("r1", LEASE_S, 10)
    assert await store.lease_deliveries("r2", LEASE_S, 10) == []  # leased: no one else sends it
    assert not await store.record_delivery(first.message_id, "r2", attempts=1, body="{}", next_at=clock.t)
    assert await store.record_delivery(first.message_id, "r1", attempts=1, body='{"a":1}', next_at=clock.t + 5)
    assert await store.lease_deliveries("r2", LEASE_S, 10) == []  # not due yet
    clock.t += 5
    async with backend.make() as restarted:  # a new process continues it
        (again,) = await restarted.lease_deliveries("r2", LEASE_S, 10)
        assert (again.message_id, again.attempts, again.body) == (first.message_id, 1, '{"a":1}')
        assert await restarted.record_delivery(again.message_id, "r2", attempts=2, body=again.body,
                                               next_at=None, delivered=True)
    clock.t += 3600
    assert await store.lease_deliveries("r1", LEASE_S, 10) == []  # delivered: never sent again


async def test_a_dead_senders_lease_expires_and_concurrent_senders_never_share(
        backend: Backend, store: JobStore, clock: FakeClock) -> None:
    for i in range(10):
        await store.save(finished_with_webhook(created_at=1000.0 + i))
    async with backend.make() as other:
        got = await asyncio.gather(store.lease_deliveries("r1", LEASE_S, 6), other.lease_deliveries("r2", LEASE_S, 6))
    ids = [r.message_id for rows in got for r in rows]
    assert len(ids) == len(set(ids)) == 10
    clock.t += LEASE_S + 1  # both died mid-send
    assert len(await store.lease_deliveries("r3", LEASE_S, 100)) == 10


async def test_a_message_waits_while_its_job_is_leased(store: JobStore, clock: FakeClock) -> None:
    # the job's replica is still finishing it off (keeping its video): announce it after
    job, _ = await store.create_or_get(new_job(webhook_url="https://app.example/hook"), lease=("replica-a", LEASE_S))
    job.fail(Unavailable("down", provider="fal"))
    await store.save(job, lease_owner="replica-a")
    assert await store.lease_deliveries("r1", LEASE_S, 10) == []
    assert await store.release(job.id, "replica-a")
    assert [r.job_id for r in await store.lease_deliveries("r1", LEASE_S, 10)] == [job.id]


async def test_a_dead_replicas_message_goes_once_its_job_is_finished_off(store: JobStore, clock: FakeClock) -> None:
    job, _ = await store.create_or_get(new_job(webhook_url="https://app.example/hook"), lease=("replica-a", LEASE_S))
    job.fail(Unavailable("down", provider="fal"))
    await store.save(job, lease_owner="replica-a")
    clock.t += LEASE_S + 1  # replica-a died: expired is not enough, it may only have stalled
    assert await store.lease_deliveries("r1", LEASE_S, 10) == []
    assert [j.id for j in await store.claim("replica-b", LEASE_S, limit=10)] == [job.id]
    await store.save(job, lease_owner="replica-b")  # finished off (its video kept)
    assert await store.release(job.id, "replica-b")
    assert [r.job_id for r in await store.lease_deliveries("r1", LEASE_S, 10)] == [job.id]


async def test_concurrent_saves_all_land_and_a_fenced_one_fails_alone(store: JobStore) -> None:
    # SQLite writes concurrent saves in one transaction (group commit): one save losing its
    # lease must not take its batchmates down with it
    jobs = [await store.create(new_job(created_at=1000.0 + i)) for i in range(30)]
    (leased,) = await store.claim("replica-1", LEASE_S, 1)
    for job in jobs:
        job.move(JobStatus.SUBMITTED)
    outcomes = await asyncio.gather(*(store.save(j) for j in jobs[1:]),
                                    store.save(leased, lease_owner="replica-2"), return_exceptions=True)
    assert all(o is None for o in outcomes[:-1]) and isinstance(outcomes[-1], LeaseLost)
    for job in jobs[1:]:
        assert (await store.get(job.id)).status is JobStatus.SUBMITTED
