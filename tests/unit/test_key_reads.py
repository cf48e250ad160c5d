"""Verifying caller keys: requests that miss the cache for the same key together share one
store read (``Keys._read``), whatever happens to any one of them."""

from __future__ import annotations

import asyncio
import builtins

import pytest

from gateway.errors import StoreUnavailable
from gateway.keys import ApiKey, Keys, digest

KEY = ApiKey("k1", "app", created_at=0.0)
PRESENTED = "rg_k1_secret"


class HeldKeys(Keys):
    """One key; every store read waits for ``gate`` and is counted."""

    def __init__(self) -> None:
        super().__init__(cache_s=2.0)
        self.gate = asyncio.Event()
        self.reads = 0
        self.fail: Exception | None = None
        self.record = KEY

    async def _afetch(self, key_id: str) -> tuple[ApiKey, str] | None:
        self.reads += 1
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return (self.record, digest("secret")) if key_id == KEY.id else None

    async def acreate(self, name: str, *, budget_usd_per_day: float | None = None,
                      allowed_providers: builtins.list[str] | None = None) -> tuple[ApiKey, str]:
        raise NotImplementedError

    async def alist(self) -> builtins.list[ApiKey]:
        return [self.record]

    async def _arevoke(self, id_or_name: str) -> ApiKey:
        self.record = ApiKey(KEY.id, KEY.name, KEY.created_at, revoked_at=1.0)
        return self.record


async def started(keys: HeldKeys, *presented: str) -> list[asyncio.Task[ApiKey | None]]:
    tasks = [asyncio.create_task(keys.averify(p)) for p in presented]
    await asyncio.sleep(0)  # each has reached the store read (or joined it)
    return tasks


async def test_requests_missing_together_share_one_read() -> None:
    keys = HeldKeys()
    tasks = await started(keys, *[PRESENTED] * 20, "rg_k1_wrong", "rg_k2_secret")
    keys.gate.set()
    results = await asyncio.gather(*tasks)
    assert results == [KEY] * 20 + [None, None]  # a wrong secret still fails, alone in its check
    assert keys.reads == 2  # k1 once for 21 requests, k2 once
    assert await keys.averify(PRESENTED) == KEY and keys.reads == 2  # cached now


async def test_a_caller_that_goes_away_does_not_cancel_the_read_for_the_others() -> None:
    keys = HeldKeys()
    first, second = await started(keys, PRESENTED, PRESENTED)
    first.cancel()
    await asyncio.sleep(0)
    keys.gate.set()
    assert await second == KEY
    with pytest.raises(asyncio.CancelledError):
        await first
    assert keys.reads == 1


async def test_a_failed_read_fails_every_request_waiting_and_the_next_one_reads_again() -> None:
    keys = HeldKeys()
    keys.fail = StoreUnavailable("the key store cannot be used")
    tasks = await started(keys, PRESENTED, PRESENTED)
    keys.gate.set()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        assert isinstance(outcome, StoreUnavailable)
    keys.fail = None
    assert await keys.averify(PRESENTED) == KEY and keys.reads == 2


async def test_a_request_after_a_revocation_here_does_not_join_a_read_begun_before() -> None:
    keys = HeldKeys()
    (before,) = await started(keys, PRESENTED)
    await keys.arevoke("app")
    (after,) = await started(keys, PRESENTED)
    keys.gate.set()
    assert await after is None  # the revoked record, read anew
    await before
    assert keys.reads == 2
