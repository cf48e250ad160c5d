"""Latency estimates: expected seconds from submit to a finished video, per provider and
request shape, learnt from what the gateway observes and penalised by the load it has put
on each provider.

The estimator (see docs/routing.md for the numbers and why):

* before any observation the estimate is the caller's prior (the provider catalog's
  ``latency_prior_s``);
* the first observation replaces the prior, the second averages with it, and from the
  third on each observation weighs ``ALPHA``: a running mean that turns into an EWMA. A
  catalog figure is a guess about someone else's deployment; one real measurement of this
  one is better evidence, and a constant weight afterwards lets the estimate follow a
  vendor that slows down (the gap to a new level shrinks by ``1 - ALPHA`` per job);
* the spread is an exponentially weighted variance, floored at ``MIN_CV`` of the mean, and
  ``p90_s`` is mean + ``Z90`` standard deviations: the figure a deadline is checked against.

Everything here is pure arithmetic over small records; the lock lives in
:class:`gateway.routing.health.InProcessHealth`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: weight of the newest observation once there are a few: the gap to a new level shrinks to
#: 0.6**n, so after a shift the estimate is within 8 % after 5 jobs, and a vendor that
#: doubles its time loses a "fastest" ranking after the first slow job
ALPHA = 0.4
#: spread assumed before any observation: render times of one shape vary by about a quarter
PRIOR_CV = 0.25
#: the spread never drops below this share of the mean: identical times so far do not
#: promise identical times next
MIN_CV = 0.1
#: one-sided 90 % quantile of a normal distribution, in standard deviations
Z90 = 1.2816


@dataclass
class LatencyStats:
    """What is known about one (provider, request shape): a mean, a variance and a count."""

    mean_s: float
    variance: float
    observations: int = 0

    @classmethod
    def from_prior(cls, prior_s: float) -> LatencyStats:
        return cls(prior_s, (PRIOR_CV * prior_s) ** 2)

    def observe(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"an observed duration must be a finite, non-negative number of seconds, not {seconds}")
        self.observations += 1
        deviation = seconds - self.mean_s
        # the variance moves by ALPHA from the start, so a first observation far from the
        # prior widens the spread instead of claiming certainty from one sample
        self.variance = (1 - ALPHA) * (self.variance + ALPHA * deviation**2)
        self.mean_s += max(ALPHA, 1 / self.observations) * deviation

    @property
    def stdev_s(self) -> float:
        return max(math.sqrt(self.variance), MIN_CV * self.mean_s)

    @property
    def p90_s(self) -> float:
        return self.mean_s + Z90 * self.stdev_s


def load_factor(in_flight: int, limit: int | None) -> float:
    """How much longer a new job takes when this gateway already runs ``in_flight`` jobs at a
    provider that works on ``limit`` at a time.

    Below the limit a new job starts at once (1.0). At or above it, the new job queues
    behind ``excess = in_flight - limit + 1`` jobs (itself included) that need a slot; every
    ``limit`` of them cost one more job-length, pessimistically assuming the running jobs
    have just started: ``1 + excess / limit``.
    """
    if limit is None or in_flight < limit:
        return 1.0
    if limit < 1:
        raise ValueError(f"a concurrency limit must be at least 1, not {limit}")
    return 1 + (in_flight - limit + 1) / limit


class LatencyEstimator:
    """Latency stats per (provider, key) and in-flight counts per provider."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], LatencyStats] = {}
        self._in_flight: dict[str, int] = {}

    def observe(self, provider: str, key: str, seconds: float, prior_s: float | None = None) -> None:
        """Learn from one finished job. ``prior_s`` only matters for the spread of a first
        observation; without it the first observation is its own prior."""
        stats = self._stats.get((provider, key))
        if stats is None:
            stats = self._stats[(provider, key)] = LatencyStats.from_prior(prior_s if prior_s is not None else seconds)
        stats.observe(seconds)

    def adopt(self, provider: str, key: str, stats: LatencyStats) -> None:
        """Take stats learnt elsewhere (another replica, through shared state) as this key's."""
        self._stats[(provider, key)] = stats

    def stats(self, provider: str, key: str, prior_s: float) -> LatencyStats:
        return self._stats.get((provider, key)) or LatencyStats.from_prior(prior_s)

    def expected_s(self, provider: str, key: str, prior_s: float, limit: int | None = None) -> float:
        return self.stats(provider, key, prior_s).mean_s * load_factor(self.in_flight(provider), limit)

    def p90_s(self, provider: str, key: str, prior_s: float, limit: int | None = None) -> float:
        return self.stats(provider, key, prior_s).p90_s * load_factor(self.in_flight(provider), limit)

    def can_meet(self, provider: str, key: str, prior_s: float, deadline_s: float, limit: int | None = None) -> bool:
        """Whether nine jobs in ten of this shape would finish within ``deadline_s`` seconds."""
        return self.p90_s(provider, key, prior_s, limit) <= deadline_s

    # -- load ------------------------------------------------------------------------
    def in_flight(self, provider: str) -> int:
        return self._in_flight.get(provider, 0)

    def started(self, provider: str) -> None:
        self._in_flight[provider] = self.in_flight(provider) + 1

    def finished(self, provider: str) -> None:
        # never below zero: a job resumed after a restart finishes without having started here
        self._in_flight[provider] = max(self.in_flight(provider) - 1, 0)

    def snapshot(self) -> dict[str, object]:
        latency: dict[str, dict[str, object]] = {}
        for (provider, key), s in sorted(self._stats.items()):
            latency.setdefault(provider, {})[key] = {
                "expected_s": round(s.mean_s, 1), "p90_s": round(s.p90_s, 1), "observations": s.observations,
            }
        return {"latency": latency, "in_flight": dict(sorted(self._in_flight.items()))}
