"""A replica's lease rounds and its jobs' last saves (gateway/server/leases.py,
``JobTasks.checkpoint``): a claim leaves the replica's own live leases alone but for its
first, which takes back what its id held; a job's final save gives its lease up, and the
round then neither renews it nor drops it as lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.api import Gateway
from gateway.config import Settings
from gateway.errors import StoreUnavailable, Unavailable
from gateway.job import JobStatus, VideoJob, VideoOutput
from gateway.request import VideoRequest
from gateway.server.leases import Leases
from gateway.store.sqlite import SqliteJobStore
from tests.support import FakeClock

LEASE_S = 60.0


class RecordingStore(SqliteJobStore):
    """SQLite recording each claim's ``own`` and what it returned, and each release."""

    def __init__(self, path: Path, clock: FakeClock) -> None:
        super().__init__(path, clock=clock.now)
        self.claims: list[tuple[bool, list[str]]] = []
        self.releases: list[str] = []

    async def claim(self, owner_id: str, lease_s: float, limit: int, *, own: bool = False) -> list[VideoJob]:
        jobs = await super().claim(owner_id, lease_s, limit, own=own)
        self.claims.append((own, [j.id for j in jobs]))
        return jobs

    async def release(self, job_id: str, owner_id: str) -> bool:
        self.releases.append(job_id)
        return await super().release(job_id, owner_id)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=10_000.0)


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[RecordingStore]:
    async with RecordingStore(tmp_path / "jobs.db", clock) as opened:
        yield opened


@pytest.fixture
async def gateway(store: RecordingStore, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    """A gateway whose resumed jobs count as followed, without running them (no vendors)."""
    gw = Gateway(Settings(), {}, store=store)
    followed: list[str] = []

    async def resume(*, jobs: list[VideoJob], **_: Any) -> list[VideoJob]:
        followed.extend(j.id for j in jobs)
        return jobs

    abandoned: list[str] = []

    async def abandon(job_id: str) -> None:
        abandoned.append(job_id)

    monkeypatch.setattr(gw, "resume", resume)
    monkeypatch.setattr(gw, "following", lambda: list(followed))
    monkeypatch.setattr(gw, "abandon", abandon)
    gw.followed, gw.abandoned = followed, abandoned  # type: ignore[attr-defined]
    yield gw
    await gw.aclose()


def leases_of(store: RecordingStore, gateway: Gateway, replica: str = "a") -> Leases:
    async def nothing(job_id: str) -> None:
        return None

    return Leases(store, gateway, replica, lease_s=LEASE_S, max_claimed=10, follow=lambda job: None,
                  cancel=nothing, finish=lambda job: None)


def job(prompt: str = "a fox", created_at: float = 1000.0) -> VideoJob:
    return VideoJob(VideoRequest(prompt=prompt), created_at=created_at, updated_at=created_at)


async def test_only_the_first_claim_takes_back_what_the_replicas_id_holds(store, gateway, clock) -> None:
    # a worker restarted under a dead one's id: that one's live lease is its own now
    predecessors, _ = await store.create_or_get(job("left", 1000.0), lease=("a", LEASE_S))
    leases = leases_of(store, gateway)
    await leases.tick()
    assert store.claims == [(True, [predecessors.id])] and gateway.followed == [predecessors.id]
    made_here, _ = await store.create_or_get(job("new", 1001.0), lease=("a", LEASE_S))  # created and followed here
    gateway.followed.append(made_here.id)
    clock.t += LEASE_S / 2
    await leases.tick()
    await leases.tick()
    # renewed by the rounds, never claimed again: no row written twice per round
    assert store.claims[1:] == [(False, []), (False, [])]
    assert gateway.followed == [predecessors.id, made_here.id] and gateway.abandoned == []
    clock.t += LEASE_S * 0.9  # past the leases as first given: renewed, they hold
    assert await store.claim("b", LEASE_S, limit=10) == []


async def test_a_final_save_gives_the_lease_up_and_the_round_lets_the_job_go_unrenewed(store, gateway) -> None:
    gateway.lease_owner = "a"
    mine, _ = await store.create_or_get(job(), lease=("a", LEASE_S))
    gateway.followed.append(mine.id)  # its task has not ended yet, nor its watcher
    leases = leases_of(store, gateway)
    mine.fail(Unavailable("down", provider="fal"))
    await gateway.checkpoint(mine)
    assert gateway.released == {mine.id}
    assert not await store.renew(mine.id, "a", LEASE_S)  # no lease left to renew
    await leases.tick()  # not renewed, yet not lost: let go
    assert gateway.abandoned == []
    await gateway.checkpoint(mine)  # nothing more written under a lease given up (no LeaseLost)
    await leases.release(mine.id)  # the watcher's release: nothing left to do in the store
    assert store.releases == []


async def test_a_success_still_to_be_kept_or_a_segment_keeps_its_lease(store, gateway) -> None:
    gateway.lease_owner = "a"

    async def keep(_: VideoJob) -> None:
        return None

    gateway.keep_finished = keep
    unkept, _ = await store.create_or_get(job("unkept"), lease=("a", LEASE_S))
    segment, _ = await store.create_or_get(VideoJob(VideoRequest(prompt="seg"), parent_id="vid_parent"),
                                           lease=("a", LEASE_S))
    unkept.move(JobStatus.SUBMITTED)
    unkept.output = VideoOutput(url="https://cdn.example/v.mp4")
    unkept.move(JobStatus.SUCCEEDED)
    segment.fail(Unavailable("down", provider="fal"))
    for finished in (unkept, segment):
        await gateway.checkpoint(finished)
    assert gateway.released == set()
    assert await store.renew_all([unkept.id, segment.id], "a", LEASE_S) == {unkept.id, segment.id}
    unkept.output.uri = "file:///videos/v.mp4"  # the watcher kept it: its save is the last
    await gateway.checkpoint(unkept)
    assert gateway.released == {unkept.id}
    gateway.forget(unkept.id)
    assert gateway.released == set()


async def test_a_final_save_whose_answer_was_lost_after_its_commit_is_not_a_lost_lease(
        store, gateway, monkeypatch) -> None:
    # PostgreSQL went away after the commit: the save is tried again (gateway/store/outage.py)
    # and finds the lease gone, given up by that very write. A LeaseLost here would hand the
    # job (and its cost) over to no one.
    gateway.lease_owner = "a"
    mine, _ = await store.create_or_get(job(), lease=("a", LEASE_S))
    mine.fail(Unavailable("down", provider="fal"))
    save, cut = store.save, [True]

    async def answer_lost(j: VideoJob, **kw: Any) -> None:
        await save(j, **kw)
        if cut and kw.get("release"):
            cut.clear()
            raise StoreUnavailable("the job store (PostgreSQL) is unavailable (OperationalError)")

    monkeypatch.setattr(store, "save", answer_lost)
    clock = FakeClock()
    monkeypatch.setattr(gateway, "_sleep", clock.sleep)
    await gateway.checkpoint(mine)
    assert not cut and len(clock.sleeps) == 1  # tried again once, and that succeeded
    assert gateway.released == {mine.id}
    stored = await store.get(mine.id)
    assert stored is not None and stored.status is JobStatus.FAILED
