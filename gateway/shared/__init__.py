"""State several gateway replicas share: circuits and latency estimates, daily budgets
and per-vendor concurrency slots -- in Redis when ``redis_url`` (or ``REELGATE_REDIS_URL``)
is set, in process otherwise. docs/deploy.md ("Shared state (Redis)") has the keys, TTLs
and what happens while Redis is away.

The Redis client is imported only when Redis is configured, so a one-process gateway
does not load it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from gateway.budget import Ledger, SpendLedger
from gateway.errors import ConfigError
from gateway.routing.health import Health, InProcessHealth
from gateway.shared.concurrency import ConcurrencyLimiter, LocalLimiter

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.shared.connection import SharedState

REDIS_URL_ENV = "REELGATE_REDIS_URL"
#: starts every key and the event channel: deployments (or test runs) sharing one Redis
#: server keep apart by prefix, or by database number in the URL
REDIS_PREFIX_ENV = "REELGATE_REDIS_PREFIX"

__all__ = ["REDIS_PREFIX_ENV", "REDIS_URL_ENV", "ConcurrencyLimiter", "Ledger", "LocalLimiter", "Shared", "open_shared"]


class Shared:
    """What a gateway keeps of shared state: its health, daily ledgers and concurrency
    limiter, from Redis when ``state`` is given, else in process."""

    def __init__(self, settings: Settings, state: SharedState | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        circuit = settings.circuit
        self.health: Health
        self.limiter: ConcurrencyLimiter
        if state is None:
            self.health, self.limiter = InProcessHealth(clock, circuit), LocalLimiter()
        else:
            from gateway.shared.redis_concurrency import RedisLimiter
            from gateway.shared.redis_health import RedisHealth

            self.health, self.limiter = RedisHealth(state, clock, circuit), RedisLimiter(state)

    def ledger(self, scope: str, per_day_usd: float | None) -> Ledger:
        """The daily budget of ``scope`` (``gateway``, ``key:<id>``). Without a limit nothing is
        enforced, so it stays local (no round trip per job for a figure nobody checks)."""
        if self.state is None or per_day_usd is None:
            return SpendLedger(per_day_usd)
        from gateway.shared.redis_budget import RedisSpendLedger

        return RedisSpendLedger(self.state, scope, per_day_usd)

    def connect(self) -> None:
        """For a service: connect now, not on the first job."""
        if self.state is not None:
            self.state.start()

    def in_use(self) -> bool:
        """Whether circuits, budgets and slots are shared now (the gauge
        ``reelgate_shared_state_up``, gateway/server/metrics.py)."""
        return self.state is not None and self.state.available

    def status(self) -> dict[str, object]:
        """For /readyz: where shared state lives and whether it is in use."""
        if self.state is None:
            return {"backend": "in-process", "state": "local"}
        return self.state.status()

    async def aclose(self) -> None:
        if self.state is not None:
            aclose = getattr(self.limiter, "aclose", None)
            if aclose is not None:
                await aclose()
            await self.state.aclose()


def redis_url(settings: Settings, env: Mapping[str, str] | None = None) -> str | None:
    """``redis_url`` from the config file, else ``$REELGATE_REDIS_URL``, else None."""
    env = os.environ if env is None else env
    return settings.redis_url or env.get(REDIS_URL_ENV) or None


def open_shared(settings: Settings, env: Mapping[str, str] | None = None, *,
                clock: Callable[[], float] = time.monotonic) -> Shared:
    """Shared state as configured: Redis when a URL is set (no connection is made yet; the
    first use connects, and a Redis that is not there means local state until it is)."""
    env = os.environ if env is None else env
    url = redis_url(settings, env)
    if url is None:
        return Shared(settings, clock=clock)
    try:
        from gateway.shared.connection import SharedState
    except ImportError:
        raise ConfigError("redis_url is set but the redis client is not installed: "
                          "pip install 'reelgate[redis]'") from None
    return Shared(settings, SharedState(url, prefix=env.get(REDIS_PREFIX_ENV) or "reelgate"), clock=clock)
