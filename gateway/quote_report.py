"""What ``Gateway.quote`` answers, and the small decisions ``Gateway`` takes about a job
before it runs (an idempotent replay, the estimate a resumed job still holds)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.errors import IdempotencyConflict, ReelgateError
from gateway.job import AttemptOutcome, VideoJob
from gateway.pricing import Eligibility
from gateway.routing import Plan
from gateway.store import codec


class QuoteReport:
    """Every provider's answer for one request, and which would be chosen."""

    def __init__(self, plan: Plan | None, eligibility: list[Eligibility], error: ReelgateError | None = None) -> None:
        self.plan = plan
        self.eligibility = eligibility
        self.error = error

    @property
    def chosen(self) -> str | None:
        return self.plan.chosen.provider if self.plan and self.plan.chosen else None

    def to_dict(self) -> dict[str, Any]:
        skipped = self.plan.skipped if self.plan else {}
        return {
            "chosen": self.chosen,
            "policy": self.plan.policy.value if self.plan else None,
            "order": [c.provider for c in self.plan.candidates] if self.plan else [],
            "providers": [{**e.to_dict(), "skipped": skipped.get(e.provider)} for e in self.eligibility],
            "error": self.error.to_dict() if self.error else None,
        }


def replayed(job: VideoJob, digest: str) -> VideoJob:
    """The job an idempotency key already names, if the request is the same one."""
    known = job.fingerprint or codec.fingerprint(job.request)  # jobs stored before fingerprints
    if known != digest:
        raise IdempotencyConflict(job.request.idempotency_key or "", job.id)
    return job


def held_estimate(job: VideoJob, plan: Plan | None) -> Decimal:
    """What a resumed job may still cost: its attempt in flight, or the next one it will make."""
    if job.current is not None and job.current.outcome is AttemptOutcome.PENDING:
        return job.current.estimated_usd
    return plan.candidates[0].quote.usd if plan is not None and plan.candidates else Decimal(0)


def planned(plan: Plan | None) -> Plan:
    assert plan is not None, "a new job always has a plan"
    return plan
