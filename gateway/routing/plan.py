"""Planning: from a request to an ordered list of candidates, with every other provider's
reason for being left out. Pure functions over quotes; no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from gateway.errors import BudgetExceeded, InvalidRequest, NoRouteAvailable, Unsupported
from gateway.pricing import Eligibility, Quote
from gateway.provider import Provider
from gateway.request import RoutePolicy, VideoRequest
from gateway.routing.health import Health
from gateway.routing.weighted import weighted_order


def latency_key(quote: Quote) -> str:
    """What a latency observation is kept under: the shape that decides render time."""
    return f"{quote.model.value}/{quote.resolution.value}/{quote.duration_s}s"


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
    position = {name: i for i, name in enumerate(order)}

    def pos(c: Candidate) -> int:
        return position.get(c.provider, len(position))

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
    wanted = list(request.providers) if request.providers else None
    unknown = [n for n in wanted or [] if n not in providers]
    if unknown:
        raise InvalidRequest(
            "providers", f"unknown provider {', '.join(unknown)}; installed: {', '.join(providers) or 'none'}"
        )
    pool = {n: p for n, p in providers.items() if wanted is None or n in wanted}
    eligibility = [p.quote(request) for p in pool.values()]
    skipped: dict[str, str] = {}
    candidates: list[Candidate] = []
    caps = [c for c in (request.max_cost_usd, max_cost_usd) if c is not None]
    budget = Decimal(str(min(caps))) if caps else None
    over_budget: list[Quote] = []
    for e in eligibility:
        if not e.eligible:
            skipped[e.provider] = "; ".join(e.reasons)
            continue
        assert e.quote is not None
        if not e.configured:
            skipped[e.provider] = f"no API key configured (set {pool[e.provider].credential_env})"
            continue
        if budget is not None and e.quote.usd > budget:
            skipped[e.provider] = f"costs ${e.quote.usd:.2f}, over max_cost_usd ${budget:.2f}"
            over_budget.append(e.quote)
            continue
        prior = pool[e.provider].latency_prior_s(e.quote.model, e.quote.resolution, e.quote.duration_s)
        expected = prior
        if health is not None:
            allowed, why = health.allow(e.provider, e.quote.vendor_model)
            if not allowed:
                skipped[e.provider] = why
                continue
            key, limit = latency_key(e.quote), (limits or {}).get(e.provider)
            expected = health.expected_s(e.provider, key, prior, limit)
            # checked against the 90th percentile, and the message states that very figure
            p90 = health.p90_s(e.provider, key, prior, limit) if request.deadline_s is not None else None
            if p90 is not None and request.deadline_s is not None and p90 > request.deadline_s:
                skipped[e.provider] = (f"cannot meet deadline_s {request.deadline_s:g}: the 90th-percentile "
                                       f"time there is {p90:.1f} s")
                continue
        elif request.deadline_s is not None and prior > request.deadline_s:
            skipped[e.provider] = f"cannot meet deadline_s {request.deadline_s:g}: expected {prior:.0f} s"
            continue
        candidates.append(Candidate(e.provider, e.quote, expected, e.degradations))

    order = wanted if wanted is not None else list(fallback_order)
    if policy is RoutePolicy.WEIGHTED:
        # the draw decides who goes first; the rest still give a fallback order
        order = weighted_order([c.provider for c in candidates], weights or {}, rng or random.Random())
    ranked = rank_candidates(candidates, policy, order)
    if not ranked:
        if not any(e.eligible for e in eligibility):
            raise Unsupported({e.provider: list(e.reasons) for e in eligibility})
        if over_budget and len(over_budget) == sum(e.eligible and e.configured for e in eligibility):
            cheapest = min(over_budget, key=lambda q: q.usd)
            raise BudgetExceeded(
                f"no eligible provider can do this within max_cost_usd ${budget:.2f}; the cheapest is "
                f"{cheapest.provider} at ${cheapest.usd:.2f}"
            )
        raise NoRouteAvailable(
            "no configured provider can take this request: "
            + "; ".join(f"{n}: {why}" for n, why in skipped.items()),
            skipped=skipped,
        )
    return Plan(policy, ranked, skipped, eligibility)
