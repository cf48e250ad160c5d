"""Planning: from a request to an ordered list of candidates, with every other provider's
reason for being left out. Pure functions over quotes; no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

from gateway.errors import BudgetExceeded, InvalidRequest, NoRouteAvailable, Unsupported
from gateway.pricing import Eligibility, Quote
from gateway.provider import Provider
from gateway.request import RoutePolicy, VideoRequest
from gateway.routing.health import Health, probe_wait_s
from gateway.routing.weighted import weighted_order

_V = TypeVar("_V")


def latency_key(quote: Quote) -> str:
    """What a latency observation is kept under: the shape that decides render time."""
    # a StrEnum formats as its value: ``.value`` is a Python-level property, read twice per plan
    return f"{quote.model}/{quote.resolution}/{quote.duration_s}s"


@dataclass(frozen=True)
class Candidate:
    provider: str
    quote: Quote
    expected_s: float
    degradations: tuple[str, ...] = ()


@dataclass
class Plan:
    policy: RoutePolicy
    candidates: list[Candidate]
    #: provider -> why it is not a candidate
    skipped: dict[str, str] = field(default_factory=dict)
    eligibility: list[Eligibility] = field(default_factory=list)

    @property
    def chosen(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def to_dict(self) -> dict[str, object]:
        return {
            "policy": self.policy.value,
            "candidates": [
                {"provider": c.provider, "cost_usd": float(c.quote.usd), "expected_s": round(c.expected_s, 1),
                 "degradations": list(c.degradations)}
                for c in self.candidates
            ],
            "skipped": dict(self.skipped),
        }


def rank_candidates(
    candidates: Sequence[Candidate], policy: RoutePolicy, order: Sequence[str] = ()
) -> list[Candidate]:
    """Order candidates by the policy. ``order`` is the priority list and the final tie-break."""
    if len(candidates) < 2:  # one provider (a common deployment): nothing to order
        return list(candidates)
    position = {name: i for i, name in enumerate(order)}

    def pos(c: Candidate) -> int:
        return position.get(c.provider, len(position))

    key: Callable[[Candidate], tuple[object, ...]]
    if policy is RoutePolicy.CHEAPEST:
        key = lambda c: (c.quote.usd, c.expected_s, pos(c), c.provider)  # noqa: E731
    elif policy is RoutePolicy.FASTEST:
        key = lambda c: (c.expected_s, c.quote.usd, pos(c), c.provider)  # noqa: E731
    else:  # priority, and weighted (whose order was drawn by weight)
        key = lambda c: (pos(c), c.quote.usd, c.provider)  # noqa: E731
    return sorted(candidates, key=key)


def plan_request(
    request: VideoRequest,
    providers: Mapping[str, Provider],
    *,
    default_policy: RoutePolicy,
    fallback_order: Sequence[str] = (),
    max_cost_usd: float | None = None,
    health: Health | None = None,
    limits: Mapping[str, int | None] | None = None,
    weights: Mapping[str, float] | None = None,
    rng: random.Random | None = None,
) -> Plan:
    """Quote every provider, keep those that can honour the request within its budget,
    whose circuit admits calls and that can meet the deadline, and rank them. Raises
    before any vendor call when nothing can take the request."""
    policy = request.route or default_policy
    wanted = _wanted(request, providers)
    # all of them, unless the request names some (kept in the installed order either way)
    pool = providers if wanted is None else {n: p for n, p in providers.items() if n in wanted}
    eligibility = [p.quote(request) for p in pool.values()]
    checks = _Checks(request, pool, _budget(request.max_cost_usd, max_cost_usd), health, limits or {})
    skipped: dict[str, str] = {}
    candidates: list[Candidate] = []
    for e in eligibility:
        why = checks.skip_reason(e)
        if why is None:
            candidates.append(checks.candidate(e))
        else:
            skipped[e.provider] = why
    order = wanted if wanted is not None else list(fallback_order)
    if policy is RoutePolicy.WEIGHTED:
        # the draw decides who goes first; the rest still give a fallback order
        order = weighted_order([c.provider for c in candidates], weights or {}, rng or random.Random())
    ranked = rank_candidates(candidates, policy, order)
    if not ranked:
        raise _no_route(eligibility, skipped, checks.budget, checks.waits)
    return Plan(policy, ranked, skipped, eligibility)


class SettingOf(Mapping[str, _V]):
    """``{provider: one of its settings}``, read when asked rather than built per plan: a
    plan reads its candidates' limits only, and the weights under ``weighted`` only."""

    def __init__(self, names: Collection[str], read: Callable[[str], _V]) -> None:
        self._names, self._read = names, read

    def __getitem__(self, name: str) -> _V:
        if name not in self._names:
            raise KeyError(name)
        return self._read(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _wanted(request: VideoRequest, providers: Mapping[str, Provider]) -> list[str] | None:
    """The request's own provider list (checked against what is installed), or None for all."""
    wanted = list(request.providers) if request.providers else None
    unknown = [n for n in wanted or [] if n not in providers]
    if unknown:
        raise InvalidRequest(
            "providers", f"unknown provider {', '.join(unknown)}; installed: {', '.join(providers) or 'none'}"
        )
    return wanted


def _budget(asked: float | None, configured: float | None) -> Decimal | None:
    """The tightest of the request's and the configuration's cost caps."""
    cap = configured if asked is None else asked if configured is None else min(asked, configured)
    return None if cap is None else Decimal(str(cap))


@dataclass(slots=True)  # not frozen: a frozen init sets each field through object.__setattr__, per plan
class _Checks:
    """One check per reason a provider is left out, in the order they are asked."""

    request: VideoRequest
    pool: Mapping[str, Provider]
    budget: Decimal | None
    health: Health | None
    limits: Mapping[str, int | None]
    #: seconds until each provider refused by its circuit may be probed again (Retry-After)
    waits: list[float] = field(default_factory=list)

    def skip_reason(self, e: Eligibility) -> str | None:
        """Why ``e``'s provider is not a candidate (the first reason found), or None."""
        # spelled out, not a loop over a tuple of bound methods made per provider per plan
        why = self._can_honour(e)
        if why is None:
            why = self._configured(e)
        if why is None:
            why = self._within_budget(e)
        if why is None:
            why = self._circuit_admits(e)
        if why is None:
            why = self._meets_deadline(e)
        return why

    def candidate(self, e: Eligibility) -> Candidate:
        assert e.quote is not None
        return Candidate(e.provider, e.quote, self._expected_s(e.provider, e.quote), e.degradations)

    def _can_honour(self, e: Eligibility) -> str | None:
        return None if e.eligible else "; ".join(e.reasons)

    def _configured(self, e: Eligibility) -> str | None:
        return None if e.configured else f"no API key configured (set {self.pool[e.provider].credential_env})"

    def _within_budget(self, e: Eligibility) -> str | None:
        assert e.quote is not None
        if self.budget is None or e.quote.usd <= self.budget:
            return None
        return f"costs ${e.quote.usd:.2f}, over max_cost_usd ${self.budget:.2f}"

    def _circuit_admits(self, e: Eligibility) -> str | None:
        assert e.quote is not None
        if self.health is None:
            return None
        allowed, why = self.health.allow(e.provider, e.quote.vendor_model)
        if allowed:
            return None
        self.waits.append(probe_wait_s(self.health, e.provider, e.quote.vendor_model))
        return why

    def _meets_deadline(self, e: Eligibility) -> str | None:
        assert e.quote is not None
        deadline = self.request.deadline_s
        if deadline is None:
            return None
        prior = self._prior_s(e.provider, e.quote)
        if self.health is None:
            return None if prior <= deadline else f"cannot meet deadline_s {deadline:g}: expected {prior:.0f} s"
        # checked against the 90th percentile, and the message states that very figure
        p90 = self.health.p90_s(e.provider, latency_key(e.quote), prior, self.limits.get(e.provider))
        if p90 <= deadline:
            return None
        return f"cannot meet deadline_s {deadline:g}: the 90th-percentile time there is {p90:.1f} s"

    def _prior_s(self, provider: str, quote: Quote) -> float:
        return self.pool[provider].latency_prior_s(quote.model, quote.resolution, quote.duration_s)

    def _expected_s(self, provider: str, quote: Quote) -> float:
        """The catalogued prior, or what health has learned of this provider and shape."""
        prior = self._prior_s(provider, quote)
        if self.health is None:
            return prior
        return self.health.expected_s(provider, latency_key(quote), prior, self.limits.get(provider))


def _no_route(eligibility: Sequence[Eligibility], skipped: Mapping[str, str], budget: Decimal | None,
              waits: Sequence[float]) -> Exception:
    """The error that says why nothing can take the request."""
    if not any(e.eligible for e in eligibility):
        return Unsupported({e.provider: list(e.reasons) for e in eligibility})
    usable = [e.quote for e in eligibility if e.eligible and e.configured and e.quote is not None]
    if budget is not None and usable and all(q.usd > budget for q in usable):
        cheapest = min(usable, key=lambda q: q.usd)
        return BudgetExceeded(
            f"no eligible provider can do this within max_cost_usd ${budget:.2f}; the cheapest is "
            f"{cheapest.provider} at ${cheapest.usd:.2f}"
        )
    return NoRouteAvailable(
        "no configured provider can take this request: " + "; ".join(f"{n}: {why}" for n, why in skipped.items()),
        skipped=dict(skipped), retry_after=min(waits) if waits else None,
    )
