"""What a job may do after an attempt: fall back, or add a hedge. Pure decisions on the
job, the error and the settings, so the runner only carries them out.

Only answers that prove no vendor job exists are fallback-safe; moving on after an unknown
outcome (an ambiguous submit, a job the vendor lost) may pay twice, so it needs the
operator's ``allow_duplicate_spend``.
"""

from __future__ import annotations

from decimal import Decimal

from gateway.config import Settings
from gateway.errors import ContentRejected, ProviderError, ProviderRejected
from gateway.job import VideoJob
from gateway.request import RoutePolicy
from gateway.routing.plan import Candidate

#: errors after which trying another vendor cannot help (the request itself is the problem);
#: a content rejection also stops, unless ``content_rejection_fallback`` is set
STOP_CLASSES: tuple[type[ProviderError], ...] = (ProviderRejected,)


def may_fall_back(settings: Settings, job: VideoJob, error: ProviderError) -> bool:
    """Whether ``job`` may move on to its next candidate after ``error`` (notes why, when it
    moves on at the risk of a second bill)."""
    if not job.request.fallback:
        return False
    if isinstance(error, ContentRejected):
        return settings.content_rejection_fallback
    if isinstance(error, STOP_CLASSES):
        return False
    if not error.fallback_safe:
        if not settings.allow_duplicate_spend:
            return False
        job.notes.append(f"fell back after {error.code} at {error.provider}: that vendor may also bill")
    return True


def hedge_candidate(settings: Settings, job: VideoJob, candidate: Candidate,
                    remaining: list[Candidate]) -> Candidate | None:
    """The candidate that may race ``candidate`` (``fastest`` with hedging on), the first
    whose price still fits the job's budget beside it; None when there is none."""
    if not settings.hedging.enabled or job.plan.get("policy") != RoutePolicy.FASTEST.value or not remaining:
        return None
    budget = job.request.max_cost_usd or settings.budgets.per_request_usd
    spent = job.cost_usd + candidate.quote.usd
    for other in remaining:
        if budget is None or spent + other.quote.usd <= Decimal(str(budget)):
            return other
    return None
