"""Circuits and latency estimates shared between replicas through Redis."""

from __future__ import annotations

import json
from collections.abc import Callable

from gateway.routing.circuit import CircuitSettings
from gateway.routing.health import Health
from gateway.routing.latency import LatencyStats
from gateway.shared.connection import SharedState
from gateway.shared.redis_health import RedisHealth
from tests.shared.conftest import eventually
from tests.support import FakeClock

RAY = "fal-ai/luma-dream-machine/ray-2"
KEY = "ray-2/720p/5s"
SETTINGS = CircuitSettings(consecutive_failures=3, cooldown_s=60, max_cooldown_s=600)


async def replicas(states: Callable[..., SharedState], n: int = 2) -> list[tuple[RedisHealth, FakeClock]]:
    made = []
    for _ in range(n):
        clock = FakeClock()
        health = RedisHealth(states(), clock.now, SETTINGS)
        health.shared.start()
        await health.shared.joined.wait()
        made.append((health, clock))
    return made


async def test_a_trip_at_one_replica_opens_the_circuit_at_the_others(states: Callable[..., SharedState]) -> None:
    (a, a_clock), (b, b_clock) = await replicas(states)
    h: Health = b
    for _ in range(3):
        a.record_failure("fal", RAY)
    assert not a.allow("fal", RAY)[0]
    await eventually(lambda: not h.allow("fal", RAY)[0])
    allowed, why = b.allow("fal", RAY)
    assert why.startswith("circuit open for fal since 0 s (3 consecutive failures, seen by replica ")
    assert a.shared.replica in why and "next probe in 60 s" in why
    assert b.allow("apiframe", "ray-2")[0]
    # A's probe after the cooldown finds fal working: every replica closes its circuit
    a_clock.t += 61
    assert a.acquire("fal", RAY) == (True, "circuit half-open for fal (3 consecutive failures); this call is the probe")
    a.record_success("fal", RAY)
    await eventually(lambda: b.allow("fal", RAY)[0])
    assert b.snapshot()["circuits"]["fal"]["state"] == "closed"  # type: ignore[index]


async def test_a_replica_that_joins_later_takes_the_open_circuits(states: Callable[..., SharedState]) -> None:
    ((a, _),) = await replicas(states, 1)
    for _ in range(3):
        a.record_failure("fal", RAY)
    await eventually(lambda: a.shared.sync.hexists(a.shared.key("circuits"), "fal"))
    ((late, _),) = await replicas(states, 1)
    assert not late.allow("fal", RAY)[0]


async def test_latency_estimates_are_shared_with_the_estimators_own_formula(
    states: Callable[..., SharedState]
) -> None:
    (a, _), (b, _) = await replicas(states)
    expected = LatencyStats.from_prior(100.0)
    def seen(health: RedisHealth) -> object:
        return health.snapshot()["latency"].get("fal", {}).get(KEY, {}).get("observations")  # type: ignore[attr-defined]

    for n, (seconds, at) in enumerate([(60.0, a), (80.0, b), (200.0, a), (90.0, b)], 1):
        at.observe_duration("fal", KEY, seconds, prior_s=100.0)
        expected.observe(seconds)
        await eventually(lambda n=n: bool(seen(a) == seen(b) == n))  # type: ignore[misc]  # both took it
    for health in (a, b):
        assert abs(health.expected_s("fal", KEY, 100.0) - expected.mean_s) < 1e-9
        assert health.snapshot()["latency"] == {"fal": {KEY: {"expected_s": round(expected.mean_s, 1),
                                                              "p90_s": round(expected.p90_s, 1),
                                                              "observations": 4}}}
    raw = a.shared.sync.hget(a.shared.key("latency"), json.dumps(["fal", KEY]))
    assert isinstance(raw, bytes)
    stored = json.loads(raw)
    assert stored[2] == 4 and abs(stored[1] - expected.variance) < 1e-6


async def test_health_snapshot_says_where_shared_state_is(states: Callable[..., SharedState]) -> None:
    ((a, _),) = await replicas(states, 1)
    status = a.snapshot()["shared_state"]
    assert status["backend"] == "redis" and status["state"] == "shared"  # type: ignore[index]
    assert status["replica"] == a.shared.replica  # type: ignore[index]
