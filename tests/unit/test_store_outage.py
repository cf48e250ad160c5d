"""A store that does not answer, seen by one job's saves (gateway/store/outage.py) and by the
lease round (gateway/server/leases.py). The real outage, through a TCP proxy to PostgreSQL,
is tests/service/test_store_outage.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.api import Gateway
from gateway.config import Settings
from gateway.errors import LeaseLost, StoreUnavailable
from gateway.job import VideoJob
from gateway.request import VideoRequest
from gateway.server.leases import Leases
from gateway.store.outage import SAVE_BACKOFF, SAVE_RETRY_S, save_through_outage
from gateway.store.sqlite import SqliteJobStore
from tests.support import FakeClock


class FlakyStore(SqliteJobStore):
    """SQLite that answers ``StoreUnavailable`` while ``down`` (to ``down`` more calls when an int)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.down: bool | int = False
        self.saved: list[str] = []
        self.claims = 0

    def _maybe_fail(self) -> None:
        if self.down is True or (type(self.down) is int and self.down > 0):
            if type(self.down) is int:
                self.down -= 1
            raise StoreUnavailable("the job store (PostgreSQL) is unavailable (PoolTimeout)")

    async def save(self, job: VideoJob, *, lease_owner: str | None = None, release: bool = False) -> None:
        self._maybe_fail()
        self.saved.append(job.status.value)
        await super().save(job, lease_owner=lease_owner, release=release)

    async def renew_all(self, job_ids: list[str], owner_id: str, lease_s: float) -> set[str]:
        self._maybe_fail()
        return await super().renew_all(job_ids, owner_id, lease_s)

    async def take_cancels(self, owner_id: str) -> list[str]:
        self._maybe_fail()
        return await super().take_cancels(owner_id)

    async def claim(self, owner_id: str, lease_s: float, limit: int, *, own: bool = False) -> list[VideoJob]:
        self._maybe_fail()
        self.claims += 1
        return await super().claim(owner_id, lease_s, limit, own=own)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    async with FlakyStore(tmp_path / "jobs.db") as opened:
        yield opened


async def test_a_save_is_tried_again_with_backoff_until_the_store_answers(store: FlakyStore) -> None:
    clock = FakeClock()
    job = VideoJob(request=VideoRequest(prompt="a fox"))
    store.down = 3
    await save_through_outage(store, job, lease_owner=None, sleep=clock.sleep, clock=clock.now)
    assert store.saved == ["queued"] and await store.get(job.id) is not None
    assert len(clock.sleeps) == 3 and all(0 < s <= SAVE_BACKOFF.cap_s for s in clock.sleeps)


async def test_a_save_fails_for_good_once_the_store_stayed_away_too_long(store: FlakyStore) -> None:
    clock = FakeClock()
    store.down = True
    with pytest.raises(StoreUnavailable):
        await save_through_outage(store, VideoJob(request=VideoRequest(prompt="a fox")), lease_owner=None,
                                  sleep=clock.sleep, clock=clock.now)
    assert SAVE_RETRY_S <= sum(clock.sleeps) < SAVE_RETRY_S + SAVE_BACKOFF.cap_s + 1


async def test_a_jobs_checkpoint_tries_once_then_waits_as_the_outage_loop_does(store: FlakyStore) -> None:
    # JobTasks.checkpoint makes the first try itself (no retry-loop frames on every save); a
    # failed one goes on in save_through_outage: the same backoff, no immediate second try
    clock = FakeClock()
    gateway = Gateway(Settings(), {}, store=store, sleep=clock.sleep)
    job = VideoJob(request=VideoRequest(prompt="a fox"))
    store.down = 3
    await gateway.checkpoint(job)
    assert store.saved == ["queued"] and await store.get(job.id) is not None
    assert len(clock.sleeps) == 3 and all(0 < s <= SAVE_BACKOFF.cap_s for s in clock.sleeps)
    store.down = False
    await gateway.checkpoint(job)  # the store answers: one try, no wait
    assert store.saved == ["queued", "queued"] and len(clock.sleeps) == 3
    await gateway.aclose()


async def test_a_lost_lease_is_not_tried_again(store: FlakyStore) -> None:
    clock = FakeClock()
    job = VideoJob(request=VideoRequest(prompt="a fox"))
    await store.create_or_get(job, lease=("other", 60))
    with pytest.raises(LeaseLost):
        await save_through_outage(store, job, lease_owner="me", sleep=clock.sleep, clock=clock.now)
    assert clock.sleeps == []


async def test_no_claim_for_a_lease_period_after_the_store_was_away(store: FlakyStore) -> None:
    gateway = Gateway(Settings(), {}, store=store)
    leases = Leases(store, gateway, "a", lease_s=60, max_claimed=10, follow=lambda job: None,
                    cancel=_nothing, finish=lambda job: None)
    try:
        await leases.tick()
        assert store.claims == 1  # the store answers: the round claims
        store.down = 1
        loop = asyncio.ensure_future(leases.run())  # its round fails, and notes it
        await leases.wait_rounds(1)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await leases.tick()  # the store answers again: renewals go on, claims wait a lease period
        await leases.tick()
        assert store.claims == 1
    finally:
        await gateway.aclose()


async def _nothing(job_id: str) -> None:
    return None
