"""Daily budgets shared by every replica: :class:`gateway.budget.SpendLedger`'s interface
(``reserve`` / ``hold`` / ``settle`` / ``release`` / ``reserved`` / ``spent_today``) over Redis.

Each operation is one Lua script (``EVALSHA``), so the check and the reservation are one
atomic step on the server: many replicas reserving at once never pass the limit between
them. Amounts are kept as integer micro-dollars (exact in Lua's doubles up to $9 billion).

Keys, for a scope ``gateway`` or ``key:<api key id>``::

    {prefix}:budget:{scope}:reserved        hash   reservation key -> micro-dollars
    {prefix}:budget:{scope}:reserved_total  string sum of the hash
    {prefix}:budget:{scope}:expiry          zset   reservation key -> expiry (ms, server clock)
    {prefix}:budget:{scope}:settled:{day}   string micro-dollars settled that UTC day (3 days TTL)

A reservation lapses after ``RESERVATION_TTL_S`` (a replica that died holding it never
settles it); settling an unknown or lapsed key still adds its cost. Open reservations
count on every day until settled, as in the in-process ledger.

The interface is synchronous (the gateway checks a budget inline, before any vendor
call), so this uses the synchronous client with a short timeout: one round trip per
operation. When Redis is away it serves on a local ledger, seeded with the day's total
last read from Redis; what happens meanwhile is replayed into Redis when it returns.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from gateway.budget import SpendLedger
from gateway.errors import BudgetExceeded
from gateway.shared.connection import REDIS_ERRORS, SharedState

#: a reservation not settled within this long is dropped (its replica is presumed dead)
RESERVATION_TTL_S = 6 * 3600
#: how long a day's settled total is kept after the day
SETTLED_TTL_S = 3 * 86400
MICROS = Decimal(1_000_000)

_PRUNE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, lapsed in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  redis.call('DECRBY', KEYS[2], tonumber(redis.call('HGET', KEYS[1], lapsed) or '0'))
  redis.call('HDEL', KEYS[1], lapsed)
  redis.call('ZREM', KEYS[3], lapsed)
end
local function committed()
  return tonumber(redis.call('GET', KEYS[4]) or '0') + tonumber(redis.call('GET', KEYS[2]) or '0')
end
local function unreserve(key)
  local held = redis.call('HGET', KEYS[1], key)
  if held then
    redis.call('DECRBY', KEYS[2], tonumber(held))
    redis.call('HDEL', KEYS[1], key)
    redis.call('ZREM', KEYS[3], key)
  end
  return held
end
"""

_RESERVE = _PRUNE + """
local amount, limit = tonumber(ARGV[2]), ARGV[3]
unreserve(ARGV[1])
local before = committed()
if limit ~= '' and before + amount > tonumber(limit) then return {0, before} end
redis.call('HSET', KEYS[1], ARGV[1], amount)
redis.call('INCRBY', KEYS[2], amount)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
return {1, before + amount}
"""

_SETTLE = _PRUNE + """
unreserve(ARGV[1])
redis.call('INCRBY', KEYS[4], tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[3]))
return committed()
"""

_SPENT = _PRUNE + "return committed()"


def micros(amount: Decimal) -> int:
    return int((amount * MICROS).to_integral_value(ROUND_HALF_UP))


def dollars(value: int) -> Decimal:
    return Decimal(value) / MICROS


class RedisSpendLedger:
    """A daily budget of one scope, shared through Redis (see the module docstring)."""

    def __init__(self, shared: SharedState, scope: str, per_day_usd: float | None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.shared = shared
        self.scope = scope
        self.limit = Decimal(str(per_day_usd)) if per_day_usd is not None else None
        self._clock = clock
        self._scripts = {name: shared.sync.register_script(lua) for name, lua in
                         (("reserve", _RESERVE), ("settle", _SETTLE), ("spent", _SPENT))}
        self._lock = threading.Lock()
        #: the day's committed total as Redis last said (seeds the local ledger)
        self._last_seen = Decimal(0)
        #: the local ledger while Redis is away, and what to tell Redis when it is back
        self._local: SpendLedger | None = None
        self._replay: list[tuple[str, list[Any]]] = []
        #: reservations this replica holds in Redis (the local ledger takes them over)
        self._held: dict[str, Decimal] = {}
        #: what this replica settled as at risk (the limit sees it through the settled total)
        self._at_risk = SpendLedger(None, clock=clock)
        shared.on_join(self._rejoin)

    def _keys(self) -> list[str]:
        day = datetime.fromtimestamp(self._clock(), UTC).date().isoformat()
        base = ("budget", self.scope)
        return [self.shared.key(*base, "reserved"), self.shared.key(*base, "reserved_total"),
                self.shared.key(*base, "expiry"), self.shared.key(*base, "settled", day)]

    def _run(self, name: str, args: list[Any]) -> Any:
        """Run one script; None when Redis is (or just went) away."""
        if not self.shared.available:
            return None
        try:
            return self._scripts[name](keys=self._keys(), args=args)
        except REDIS_ERRORS as exc:
            self.shared.failed(exc)
            self.shared.start()  # so the watcher brings Redis back as soon as it answers
            return None

    def _fallback(self) -> SpendLedger:
        if self._local is None:
            local = self._local = SpendLedger(float(self.limit) if self.limit is not None else None, clock=self._clock)
            local.settle("spent before Redis went away", self._last_seen - sum(self._held.values(), Decimal(0)))
            for key, amount in self._held.items():
                with contextlib.suppress(BudgetExceeded):  # it was within the limit when Redis took it
                    local.reserve(key, amount)
        return self._local

    # -- the SpendLedger interface ----------------------------------------------------------
    def spent_today(self) -> Decimal:
        value = self._run("spent", [])
        if value is None:
            with self._lock:
                return self._fallback().spent_today()
        self._last_seen = dollars(int(value))
        return self._last_seen

    def reserve(self, key: str, amount: Decimal) -> None:
        """Hold ``amount`` for ``key``, or raise ``BudgetExceeded`` when it would pass the daily limit."""
        self._reserve(key, amount, checked=True)

    def hold(self, key: str, amount: Decimal) -> None:
        """Reserve without the check: for a job already running (resumed after a restart)."""
        self._reserve(key, amount, checked=False)

    def _reserve(self, key: str, amount: Decimal, *, checked: bool) -> None:
        limit = "" if self.limit is None or not checked else str(micros(self.limit))
        answer = self._run("reserve", [key, micros(amount), limit, RESERVATION_TTL_S * 1000])
        if answer is None:
            with self._lock:
                local = self._fallback()
                (local.reserve if checked else local.hold)(key, amount)
            return
        granted, committed = int(answer[0]), dollars(int(answer[1]))
        if not granted:
            assert self.limit is not None
            raise BudgetExceeded(
                f"daily budget ${self.limit:.2f} would be exceeded: ${committed:.2f} spent or reserved "
                f"today, this attempt needs ${amount:.2f}"
            )
        self._last_seen = committed
        with self._lock:
            self._held[key] = amount

    def settle(self, key: str, cost: Decimal, at_risk: Decimal = Decimal(0)) -> None:
        """``cost`` plus ``at_risk`` count against the limit (the vendor may have billed
        both); ``at_risk`` is also reported apart, per replica (``at_risk_today``)."""
        args: list[Any] = [key, micros(cost + at_risk), SETTLED_TTL_S]
        value = self._run("settle", args)
        with self._lock:
            if value is None:  # the local ledger takes over this replica's reservations first
                self._fallback().settle(key, cost, at_risk)
                self._replay.append(("settle", args))
            self._held.pop(key, None)
            self._at_risk.settle(key, Decimal(0), at_risk)
        if value is not None:
            self._last_seen = dollars(int(value))

    def at_risk_today(self) -> Decimal:
        return self._at_risk.at_risk_today()

    def release(self, key: str) -> None:
        """Drop the reservation: nothing was, or will be, spent for it."""
        self.settle(key, Decimal(0))

    def handover(self, key: str) -> None:
        """Another replica follows the job now: the reservation in Redis is its hold (``hold``
        by the same key), so only this replica's own record of it goes; settling here would
        drop that hold, or count the job's cost twice."""
        with self._lock:
            self._held.pop(key, None)
            if self._local is not None:
                self._local.handover(key)

    def reserved(self) -> dict[str, Decimal]:
        """The reservations this replica holds (the others' are theirs to report)."""
        with self._lock:
            return self._local.reserved() if self._local is not None else dict(self._held)

    async def _rejoin(self) -> None:
        """Redis is back: tell it what was settled meanwhile, then use it again."""
        while True:
            with self._lock:
                if not self._replay:
                    self._local = None
                    return
                name, args = self._replay[0]
            self._scripts[name](keys=self._keys(), args=args)  # an error leaves it queued
            with self._lock:
                self._replay.pop(0)
