"""The distributed semaphore behind per-vendor concurrency limits when replicas share a
Redis (the interface and the one-process version are in ``gateway.shared.concurrency``).

Keys, per vendor::

    {prefix}:slots:{vendor}:holders   zset  token -> lease expiry (ms, Redis server clock)
    {prefix}:slots:{vendor}:queue     zset  token -> ticket (arrival order)
    {prefix}:slots:{vendor}:seen      zset  token -> last time the waiter asked (ms)
    {prefix}:slots:{vendor}:tickets   string the ticket counter

A waiter asks again whenever a slot is released (an event on the shared channel) and at
least every ``POLL_S``; the first ``free`` tickets in the queue take the free slots. A
holder's lease is renewed every third of ``LEASE_S`` while its job runs; a waiter that
stops asking leaves the queue after ``WAITER_TTL_S``. Every key expires after a day idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from gateway.shared.concurrency import FREE, LocalLimiter
from gateway.shared.connection import REDIS_ERRORS, SharedState

log = logging.getLogger("reelgate.shared")

#: a holder's lease: a replica that stops renewing loses its slots after this long
LEASE_S = 30.0
#: a waiter that has not retried for this long (its replica died) leaves the queue
WAITER_TTL_S = 10.0
#: a waiter retries at least this often even without hearing of a release
POLL_S = 1.0

_ACQUIRE = """
local holders, queue, seen, tickets = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, limit, lease, waiter_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', holders, '-inf', now)
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', seen, '-inf', now - waiter_ttl)) do
  redis.call('ZREM', queue, gone)
  redis.call('ZREM', seen, gone)
end
local granted = 0
if redis.call('ZSCORE', holders, token) then
  granted = 1
else
  if not redis.call('ZSCORE', queue, token) then
    redis.call('ZADD', queue, redis.call('INCR', tickets), token)
  end
  redis.call('ZADD', seen, now, token)
  if redis.call('ZRANK', queue, token) < limit - redis.call('ZCARD', holders) then
    redis.call('ZREM', queue, token)
    redis.call('ZREM', seen, token)
    granted = 1
  end
end
if granted == 1 then redis.call('ZADD', holders, now + lease, token) end
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, 86400000) end
return granted
"""

_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

_RENEW = """
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local kept = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], until_ms, ARGV[i])
    kept = kept + 1
  end
end
return kept
"""


class RedisLimiter:
    """:class:`ConcurrencyLimiter` shared by every replica on one Redis (see the module docstring)."""

    def __init__(self, shared: SharedState, *, lease_s: float = LEASE_S, waiter_ttl_s: float = WAITER_TTL_S,
                 poll_s: float = POLL_S) -> None:
        self.shared = shared
        self.lease_s, self.waiter_ttl_s, self.poll_s = lease_s, waiter_ttl_s, poll_s
        self.local = LocalLimiter()
        self._acquire = shared.aio.register_script(_ACQUIRE)
        self._release = shared.aio.register_script(_RELEASE)
        self._renew = shared.aio.register_script(_RENEW)
        #: provider -> tokens this replica holds in Redis (renewed until released)
        self._held: dict[str, set[str]] = {}
        self._released: dict[str, asyncio.Event] = {}
        self._renewer: asyncio.Task[None] | None = None
        shared.on_event("released", self._on_released)

    def _keys(self, provider: str) -> list[str]:
        return [self.shared.key("slots", provider, part) for part in ("holders", "queue", "seen", "tickets")]

    def _wakeup(self, provider: str) -> asyncio.Event:
        event = self._released.get(provider)
        if event is None:
            event = self._released[provider] = asyncio.Event()
        return event

    def _on_released(self, event: dict[str, Any]) -> None:
        woken = self._released.pop(str(event["provider"]), None)
        if woken is not None:
            woken.set()

    def slot(self, provider: str, limit: int | None) -> contextlib.AbstractAsyncContextManager[None]:
        return FREE if limit is None else self._slot(provider, limit)

    @contextlib.asynccontextmanager
    async def _slot(self, provider: str, limit: int) -> AsyncIterator[None]:
        self.shared.start()
        token = await self._take(provider, limit)
        if token is None:  # Redis is away: this replica's own share of the limit
            async with self.local.slot(provider, limit):
                yield
            return
        try:
            yield
        finally:
            await self._give_back(provider, token)

    async def _take(self, provider: str, limit: int) -> str | None:
        """Wait for a slot in Redis; its token, or None when Redis stopped answering."""
        token = f"{self.shared.replica}:{uuid.uuid4().hex}"
        keys = self._keys(provider)
        args: list[str | int] = [token, limit, int(self.lease_s * 1000), int(self.waiter_ttl_s * 1000)]
        try:
            while self.shared.available:
                released = self._wakeup(provider)  # taken before asking: a release meanwhile still wakes us
                try:
                    granted = await self._acquire(keys=keys, args=args)
                except REDIS_ERRORS as exc:
                    self.shared.failed(exc)
                    # a call that timed out may have run: a slot granted to it would be held
                    # by nobody for a whole lease, one fewer for every replica meanwhile
                    self.shared.spawn(self._release(keys=keys, args=[token]))
                    return None
                if granted:
                    self._held.setdefault(provider, set()).add(token)
                    self._start_renewing()
                    return token
                with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel (3.11)
                    async with asyncio.timeout(self.poll_s):
                        await released.wait()
        except asyncio.CancelledError:  # the job was cancelled while queued: leave the queue
            self.shared.spawn(self._release(keys=keys, args=[token]))
            raise
        return None

    async def _give_back(self, provider: str, token: str) -> None:
        self._held.get(provider, set()).discard(token)
        woken = self._released.pop(provider, None)
        if woken is not None:
            woken.set()
        try:
            await self._release(keys=self._keys(provider), args=[token])
            await self.shared.publish("released", provider=provider)
        except REDIS_ERRORS as exc:  # the lease lapses on its own
            self.shared.failed(exc)

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_leases(), name="reelgate-slot-leases")

    async def _renew_leases(self) -> None:
        while any(self._held.values()):
            await asyncio.sleep(self.lease_s / 3)
            for provider, tokens in list(self._held.items()):
                if not tokens:
                    continue
                try:
                    kept = await self._renew(keys=self._keys(provider)[:1],
                                             args=[int(self.lease_s * 1000), *sorted(tokens)])
                except REDIS_ERRORS as exc:
                    self.shared.failed(exc)
                    continue
                if kept < len(tokens):
                    log.warning("shared state: %d slot lease(s) at %s lapsed while held", len(tokens) - kept, provider)

    def snapshot(self) -> dict[str, object]:
        return {"held": {p: len(t) for p, t in self._held.items() if t}, "local": self.local.snapshot()}

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
