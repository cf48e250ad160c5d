"""Per-vendor concurrency slots: FIFO in one process, and across replicas through Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from gateway.shared.concurrency import LocalLimiter
from gateway.shared.connection import TIMEOUT_S, SharedState
from gateway.shared.redis_concurrency import RedisLimiter
from tests.shared.conftest import TcpProxy, eventually


class Gauge:
    """How many bodies hold a slot now, and the most at once."""

    def __init__(self) -> None:
        self.now = self.most = 0

    def __enter__(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def __exit__(self, *_exc: object) -> None:
        self.now -= 1


async def test_local_limiter_holds_the_limit_and_serves_in_arrival_order() -> None:
    limiter, gauge, order = LocalLimiter(), Gauge(), []
    go = asyncio.Event()

    async def job(i: int) -> None:
        async with limiter.slot("fal", 2):
            with gauge:
                order.append(i)
                await go.wait()

    tasks = [asyncio.create_task(job(i)) for i in range(6)]
    await eventually(lambda: len(order) == 2)
    assert limiter.snapshot() == {"held": {"fal": 2}}
    go.set()
    await asyncio.gather(*tasks)
    assert gauge.most == 2 and order == list(range(6))


async def test_no_limit_never_waits() -> None:
    limiter = LocalLimiter()
    async with limiter.slot("fal", None), limiter.slot("fal", None):
        assert limiter.snapshot() == {"held": {}}


async def test_redis_slots_hold_the_limit_across_replicas(states: Callable[..., SharedState]) -> None:
    limiters = [RedisLimiter(states()) for _ in range(3)]
    gauge, done, full = Gauge(), [], asyncio.Event()

    async def job(i: int) -> None:
        async with limiters[i % 3].slot("fal", 4):
            with gauge:
                if gauge.now == 4:
                    full.set()
                # the first holders keep their slots until four are held at once, so the
                # test sees the limit reached whatever the machine's speed (a limiter that
                # admits fewer never gets there: the wait times out)
                await asyncio.wait_for(full.wait(), timeout=30)
                done.append(i)

    await asyncio.gather(*(job(i) for i in range(40)))
    assert gauge.most == 4 and sorted(done) == list(range(40))
    holders = limiters[0].shared.sync.zcard(limiters[0]._keys("fal")[0])
    assert holders == 0  # every slot given back


async def test_redis_waiters_are_served_first_come_first_served(states: Callable[..., SharedState]) -> None:
    first, a, b = (RedisLimiter(states()) for _ in range(3))
    queue_key = first._keys("fal")[1]
    order: list[str] = []
    release, holding = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with first.slot("fal", 1):
            holding.set()
            await release.wait()

    async def wait(limiter: RedisLimiter, name: str) -> None:
        async with limiter.slot("fal", 1):
            order.append(name)

    holder = asyncio.create_task(hold())
    await holding.wait()
    waiters = []
    for i, (limiter, name) in enumerate([(a, "a1"), (b, "b1"), (a, "a2"), (b, "b2")]):
        waiters.append(asyncio.create_task(wait(limiter, name)))
        await eventually(lambda i=i: first.shared.sync.zcard(queue_key) == i + 1)  # type: ignore[misc]
    release.set()
    await asyncio.gather(holder, *waiters)
    assert order == ["a1", "b1", "a2", "b2"]


async def test_a_busy_event_loop_is_not_a_lost_redis(states: Callable[..., SharedState]) -> None:
    # On a loaded host the loop runs other tasks (or waits for a CPU) for longer than the
    # synchronous client's timeout while a slot is being asked for; Redis answered in time,
    # so the replica must stay on shared state and the slot come from Redis (a local slot
    # there lets N replicas run N x the limit).
    state = states()
    limiter = RedisLimiter(state)
    await state.aio.ping()

    async def take() -> dict[str, object]:
        async with limiter.slot("fal", 1):
            return limiter.snapshot()

    taking = asyncio.create_task(take())
    for _ in range(3):  # the acquire (and the watcher's subscribe) are on the wire
        await asyncio.sleep(0)
    time.sleep(2 * TIMEOUT_S)  # noqa: ASYNC251 -- another task holding the loop is the point
    assert (await taking)["held"] == {"fal": 1}
    assert state.available, state.status()
    await limiter.aclose()


async def test_a_slot_granted_to_an_acquire_whose_answer_was_lost_is_given_back(
    states: Callable[..., SharedState], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = states()
    limiter = RedisLimiter(state)
    acquire = limiter._acquire

    async def answer_lost(**call: Any) -> Any:
        await acquire(**call)  # Redis granted the slot...
        raise redis.TimeoutError("Timeout reading from socket")  # ...but its answer came too late

    monkeypatch.setattr(limiter, "_acquire", answer_lost)
    async with limiter.slot("fal", 1):
        assert limiter.snapshot()["local"] == {"held": {"fal": 1}}  # this job runs on a local slot
    holders_key = limiter._keys("fal")[0]
    await eventually(lambda: state.sync.zcard(holders_key) == 0)  # not held by nobody for a lease


async def test_a_dead_replicas_slot_comes_back_when_its_lease_lapses(states: Callable[..., SharedState]) -> None:
    dead, alive = RedisLimiter(states(), lease_s=0.3), RedisLimiter(states(), poll_s=0.05)
    slot = dead.slot("fal", 1)
    await slot.__aenter__()  # and never leaves: its process is gone
    await dead.aclose()  # no more renewals
    async with asyncio.timeout(10):
        async with alive.slot("fal", 1):
            pass


async def test_renewal_keeps_a_long_job_its_slot(states: Callable[..., SharedState]) -> None:
    holder, other = RedisLimiter(states(), lease_s=1.0), RedisLimiter(states(), poll_s=0.05)
    holders_key = holder._keys("fal")[0]
    server = holder.shared.sync

    def server_ms() -> float:
        seconds, micros = server.time()
        return seconds * 1000 + micros / 1000

    later = other.slot("fal", 1)
    async with holder.slot("fal", 1):
        held: list[tuple[bytes, float]] = server.zrange(holders_key, 0, -1, withscores=True)  # type: ignore[assignment]
        ((token, expiry),) = held
        waiting = asyncio.create_task(later.__aenter__())
        await eventually(lambda: server_ms() > expiry + 100)  # the first lease is over, on the Redis clock
        assert float(server.zscore(holders_key, token) or 0) > expiry  # renewed
        assert not waiting.done()  # so the slot is still this job's
    await asyncio.wait_for(waiting, 10)
    await later.__aexit__(None, None, None)


async def test_redis_away_new_slots_come_from_the_local_limiter(
    states: Callable[..., SharedState], proxy: TcpProxy
) -> None:
    state = states(proxy.url, retry_s=0.05)
    limiter = RedisLimiter(state)
    async with limiter.slot("fal", 2):
        assert limiter.snapshot()["held"] == {"fal": 1}
    proxy.stop()
    gauge = Gauge()

    async def job() -> None:
        async with limiter.slot("fal", 2):
            with gauge:
                await asyncio.sleep(0)

    await asyncio.gather(*(job() for _ in range(6)))
    assert not state.available and gauge.most == 2
    proxy.start()
    while not state.available:
        await state.joined.wait()
    async with limiter.slot("fal", 2):
        assert limiter.snapshot()["held"] == {"fal": 1}
