"""Circuit state and latency estimates shared by every replica on one Redis.

:class:`RedisHealth` is :class:`gateway.routing.health.InProcessHealth` -- the same
circuit state machine (``routing.circuit``) and estimator (``routing.latency``) -- with
what one replica learns told to the others:

* **Reads stay local.** ``Health`` is synchronous and called several times per plan and
  per poll; a Redis round trip in each would block the event loop for every job in
  flight, and a slow Redis would stall them all. So every read is answered from this
  replica's view, which Redis keeps current: changes arrive as events on a pub/sub
  channel (within a millisecond on a LAN) and the whole view is re-read on (re)connect
  and every ``resync_s`` (a lost event heals by then).
* **Trips are shared.** When a circuit opens here (or re-opens after a failed probe),
  its reason and the wall-clock end of its cooldown go to the hash ``{prefix}:circuits``
  and out as an event; every other replica opens its circuit for the cooldown left.
  When a probe closes it, the entry is deleted and the others close theirs. Failures are
  counted per replica: a trip anywhere is a trip everywhere. After a cooldown each
  replica lets its own single probe through.
* **Latency estimates are shared.** Each finished job's duration updates the hash
  ``{prefix}:latency`` with the estimator's own formula, in one Lua script (no lost
  updates between replicas), and the result replaces every replica's stats for that key.
  In-flight counts stay per replica (the concurrency limiter bounds the account).

When Redis is away all of it goes on locally; nothing is raised to the router.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from gateway.routing.circuit import CircuitSettings, CircuitState
from gateway.routing.health import InProcessHealth, model_key
from gateway.routing.latency import ALPHA, PRIOR_CV, LatencyStats
from gateway.shared.connection import SharedState

#: the estimator's update (``LatencyStats.observe``), run where the stats live
_OBSERVE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local x, alpha = tonumber(ARGV[2]), tonumber(ARGV[4])
local mean, variance, n
if current then
  local s = cjson.decode(current)
  mean, variance, n = s[1], s[2], s[3]
else
  mean, variance, n = tonumber(ARGV[3]), (tonumber(ARGV[5]) * tonumber(ARGV[3])) ^ 2, 0
end
n = n + 1
local deviation = x - mean
variance = (1 - alpha) * (variance + alpha * deviation * deviation)
mean = mean + math.max(alpha, 1 / n) * deviation
local out = cjson.encode({mean, variance, n})
redis.call('HSET', KEYS[1], ARGV[1], out)
redis.call('EXPIRE', KEYS[1], 30 * 86400)
return out
"""


class RedisHealth(InProcessHealth):
    """:class:`gateway.routing.health.Health` shared through Redis (see the module docstring)."""

    def __init__(self, shared: SharedState, clock: Callable[[], float] = time.monotonic,
                 circuit: CircuitSettings | None = None) -> None:
        super().__init__(clock, circuit)
        self.shared = shared
        self._observe = shared.aio.register_script(_OBSERVE)
        shared.on_event("trip", self._on_trip)
        shared.on_event("reset", self._on_reset)
        shared.on_event("latency", self._on_latency)
        shared.on_join(self._join)

    @property
    def _circuits_key(self) -> str:
        return self.shared.key("circuits")

    @property
    def _latency_key(self) -> str:
        return self.shared.key("latency")

    # -- the Health interface: local answers, shared changes ---------------------------------
    def allow(self, provider: str, vendor_model: str) -> tuple[bool, str]:
        self.shared.start()
        return super().allow(provider, vendor_model)

    def record_failure(self, provider: str, vendor_model: str) -> None:
        keys = (provider, model_key(provider, vendor_model))
        with self._lock:
            before = [self._circuits.state(k) for k in keys]
            for key in keys:
                self._circuits.record_failure(key)
            tripped = [(k, opened) for k, was in zip(keys, before, strict=True)
                       if was is not CircuitState.OPEN and (opened := self._circuits.open_for(k)) is not None]
        for key, (reason, left) in tripped:
            self._share_trip(key, reason, left)

    def record_success(self, provider: str, vendor_model: str) -> None:
        keys = (provider, model_key(provider, vendor_model))
        with self._lock:
            before = [self._circuits.state(k) for k in keys]
            for key in keys:
                self._circuits.record_success(key)
            closed = [k for k, was in zip(keys, before, strict=True)
                      if was is not CircuitState.CLOSED and self._circuits.state(k) is CircuitState.CLOSED]
        for key in closed:
            self._share_reset(key)

    def observe_duration(self, provider: str, key: str, seconds: float, *, prior_s: float | None = None) -> None:
        super().observe_duration(provider, key, seconds, prior_s=prior_s)
        if self.shared.available:
            self.shared.spawn(self._share_observation(provider, key, seconds, seconds if prior_s is None else prior_s))

    def snapshot(self) -> dict[str, object]:
        return {**super().snapshot(), "shared_state": self.shared.status()}

    # -- telling the others ------------------------------------------------------------------------
    def _share_trip(self, key: str, reason: str, left_s: float) -> None:
        if not self.shared.available:
            return
        record = {"key": key, "reason": reason, "until": time.time() + left_s}

        async def share() -> None:
            await self.shared.aio.hset(self._circuits_key, key, json.dumps({**record, "origin": self.shared.replica}))
            await self.shared.aio.expire(self._circuits_key, 86400)
            await self.shared.publish("trip", **record)

        self.shared.spawn(share())

    def _share_reset(self, key: str) -> None:
        if not self.shared.available:
            return

        async def share() -> None:
            await self.shared.aio.hdel(self._circuits_key, key)
            await self.shared.publish("reset", key=key)

        self.shared.spawn(share())

    async def _share_observation(self, provider: str, key: str, seconds: float, prior_s: float) -> None:
        field = json.dumps([provider, key])
        shared = await self._observe(keys=[self._latency_key], args=[field, seconds, prior_s, ALPHA, PRIOR_CV])
        self._adopt(field, shared)
        mean, variance, observations = json.loads(shared)
        await self.shared.publish("latency", field=field, stats=[mean, variance, observations])

    # -- hearing from the others ---------------------------------------------------------------------
    def _on_trip(self, event: dict[str, Any]) -> None:
        left = float(event["until"]) - time.time()
        if left <= 0:
            return
        key, origin = str(event["key"]), str(event.get("origin", "another replica"))
        with self._lock:
            if self._circuits.state(key) is CircuitState.CLOSED:
                self._circuits.trip(key, f"{event['reason']}, seen by replica {origin}", left)

    def _on_reset(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._circuits.reset(str(event["key"]))

    def _on_latency(self, event: dict[str, Any]) -> None:
        self._adopt(str(event["field"]), json.dumps(event["stats"]))

    def _adopt(self, field: str | bytes, stats: str | bytes) -> None:
        provider, key = json.loads(field)
        mean, variance, observations = json.loads(stats)
        with self._lock:
            self._latency.adopt(provider, key, LatencyStats(float(mean), float(variance), int(observations)))

    async def _join(self) -> None:
        """(Re)connected: take every open trip and every shared estimate."""
        for raw in (await self.shared.aio.hgetall(self._circuits_key)).values():
            record = json.loads(raw)
            if record.get("origin") != self.shared.replica:
                self._on_trip(record)
        for field, stats in (await self.shared.aio.hgetall(self._latency_key)).items():
            self._adopt(field, stats)
