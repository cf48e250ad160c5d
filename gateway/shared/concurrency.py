"""Per-vendor concurrency limits (``providers.<name>.concurrency_limit``): how many jobs
this account may have at a vendor at once. Vendors enforce it per account and answer a
submit past it with 429; a gateway that knows the limit holds the submit back instead.

A job takes a slot right before its submit and gives it back once the vendor job is
terminal (``JobRunner._attempt``). A submit over the limit **waits, first come first
served**, until a slot frees; it does not go to another vendor (a slot frees within one
job's length, and the route policy chose this vendor). ``fastest`` already ranks a full
vendor lower through the load penalty, and a request's ``deadline_s`` bounds the wait.

* :class:`LocalLimiter` -- one process: a FIFO semaphore per vendor.
* :class:`gateway.shared.redis_concurrency.RedisLimiter` -- every replica sharing a
  Redis: a distributed semaphore. Holders are a sorted set scored by lease expiry (a
  dead replica's slots come back when their leases lapse; live ones are renewed);
  waiters queue in a sorted set scored by ticket,
  and the first ``free`` tickets take the free slots, so the queue is FIFO across
  replicas. All of it runs in Lua, on the Redis server's clock. When Redis is away, new
  slots come from the local limiter (the limit then holds per replica).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

#: the slot of a vendor without a limit: one stateless object shared by every job, so a
#: job without a limit holds no context-manager frame of its own while it runs
FREE: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()


class ConcurrencyLimiter(Protocol):
    def slot(self, provider: str, limit: int | None) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold one of ``limit`` slots at ``provider`` for the body (no limit: no wait)."""

    def snapshot(self) -> dict[str, object]: ...


class LocalLimiter:
    """:class:`ConcurrencyLimiter` for one process: an ``asyncio.Semaphore`` per vendor
    (its waiters are served in arrival order)."""

    def __init__(self) -> None:
        self._gates: dict[str, tuple[int, asyncio.Semaphore]] = {}
        self._held: dict[str, int] = {}

    def slot(self, provider: str, limit: int | None) -> contextlib.AbstractAsyncContextManager[None]:
        return FREE if limit is None else self._slot(provider, limit)

    @contextlib.asynccontextmanager
    async def _slot(self, provider: str, limit: int) -> AsyncIterator[None]:
        gate = self._gates.get(provider)
        if gate is None or gate[0] != limit:  # a changed limit applies to new slots
            gate = self._gates[provider] = (limit, asyncio.Semaphore(limit))
        async with gate[1]:
            self._held[provider] = self._held.get(provider, 0) + 1
            try:
                yield
            finally:
                self._held[provider] -= 1

    def snapshot(self) -> dict[str, object]:
        return {"held": dict(self._held)}
