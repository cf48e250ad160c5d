"""The job and its attempts: the state machine every entry point shares.

    queued ──► submitted ──► running ──► succeeded
       │           │            │
       └───────────┴────────────┴──────► failed | cancelled

A job is ``queued`` once accepted and persisted, ``submitted`` when a vendor accepted
it (its vendor reference is stored), ``running`` when the vendor says so. A failed
attempt may move a job back to ``queued`` for the next candidate (fallback): that is
the one backward edge, and the attempt list keeps what happened.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from gateway.errors import ReelgateError
from gateway.logs import job_moved
from gateway.pricing import usd
from gateway.provider import VendorJob
from gateway.request import VideoRequest


class JobStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.SUBMITTED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.SUBMITTED: frozenset({JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED,
                                    JobStatus.CANCELLED, JobStatus.QUEUED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED,
                                  JobStatus.QUEUED}),
}


_ZERO = Decimal(0)


class InvalidTransition(RuntimeError):
    pass


class AttemptOutcome(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    #: the vendor created no job (safe to go elsewhere)
    REJECTED = "rejected"
    #: the vendor accepted the job and then it failed
    FAILED = "failed"
    #: the submit was sent and no answer came
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class Attempt:
    provider: str
    vendor_model: str
    started_at: float
    #: stable per attempt; sent as the vendor's idempotency key where it has one
    attempt_key: str
    outcome: AttemptOutcome = AttemptOutcome.PENDING
    ended_at: float | None = None
    vendor_job: VendorJob | None = None
    error: dict[str, Any] | None = None
    #: the quote (estimate) and, once settled, what was billed
    estimated_usd: Decimal = Decimal(0)
    cost_usd: Decimal = Decimal(0)
    vendor_units: Decimal | None = None
    unit_name: str | None = None
    #: retries of the submit call inside this attempt (rate limits, transient 5xx)
    submit_retries: int = 0
    polls: int = 0
    #: what this vendor may have billed although we could not learn the outcome (an
    #: ambiguous submit, a job the vendor lost): the estimate, kept apart from ``cost_usd``
    at_risk_usd: Decimal = Decimal(0)

    def finish(self, outcome: AttemptOutcome, error: ReelgateError | None = None) -> None:
        self.outcome = outcome
        self.ended_at = time.time()
        if error is not None:
            self.error = error.to_dict()

    def settle(self, billed_units: float | None) -> None:
        """Set what the attempt cost: its quote, adjusted when the vendor reported what it billed."""
        if billed_units is None or not self.vendor_units:
            self.cost_usd = self.estimated_usd
            return
        per_unit = self.estimated_usd / self.vendor_units
        self.vendor_units = Decimal(str(billed_units))
        self.cost_usd = usd(per_unit * self.vendor_units)

    def finish_unknown(self, error: ReelgateError) -> None:
        """End the attempt without knowing whether the vendor runs (and bills) a job: its
        estimate is recorded as at risk, not spent."""
        self.finish(AttemptOutcome.UNKNOWN, error)
        self.cost_usd = Decimal(0)
        self.at_risk_usd = self.estimated_usd

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "vendor_model": self.vendor_model,
            "outcome": self.outcome.value,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "vendor_job_id": self.vendor_job.vendor_id if self.vendor_job else None,
            "error_class": self.error["class"] if self.error else None,
            "error": self.error["message"] if self.error else None,
            "estimated_usd": float(self.estimated_usd),
            "cost_usd": float(self.cost_usd),
            "vendor_units": float(self.vendor_units) if self.vendor_units is not None else None,
            "unit_name": self.unit_name,
            "submit_retries": self.submit_retries,
            "polls": self.polls,
            "at_risk_usd": float(self.at_risk_usd),
        }


@dataclass(slots=True)
class VideoOutput:
    url: str
    content_type: str = "video/mp4"
    path: str | None = None
    #: the kept copy in result storage (``file://...`` or ``s3://...``)
    uri: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None


@dataclass
class VideoJob:
    request: VideoRequest
    #: 32 random hex digits, as a uuid4's were (os.urandom alone: uuid4 builds a UUID to print it)
    id: str = field(default_factory=lambda: "vid_" + os.urandom(16).hex())
    status: JobStatus = JobStatus.QUEUED
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    attempts: list[Attempt] = field(default_factory=list)
    output: VideoOutput | None = None
    error: dict[str, Any] | None = None
    progress: float | None = None
    #: the routing decision: candidates in order and why others were skipped
    plan: dict[str, Any] = field(default_factory=dict)
    degradations: list[str] = field(default_factory=list)
    #: things a reader of the job must know (e.g. a possibly duplicated spend)
    notes: list[str] = field(default_factory=list)
    #: what the produced video is (the resolution may differ from "no preference")
    resolution: str | None = None
    #: who the job belongs to (an API key id of the HTTP service; None for local use)
    owner: str | None = None
    #: deliveries of this job's terminal event to ``request.webhook_url`` (attempts, outcome)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    #: a digest of the request as the caller sent it: an idempotency key reused with another
    #: request is refused (None on jobs stored before it was kept)
    fingerprint: str | None = None
    #: the sequence this job is a segment of (``gateway.sequence``); None for a job of its own
    parent_id: str | None = None
    #: an edit's source length in seconds, when known at submit (a modify or reframe keeps it)
    source_s: float | None = None
    #: the request as the stores write it (JSON), made once per job by gateway/store/codec.py
    #: (or ``Gateway.admit``: ``VideoRequest.document_json``) and keyed by the request object;
    #: not state: never stored, compared or shown
    request_json: tuple[VideoRequest, str] | None = field(default=None, init=False, repr=False, compare=False)

    # -- state machine ---------------------------------------------------------------
    def move(self, status: JobStatus) -> None:
        if status == self.status:
            return
        if status not in _ALLOWED.get(self.status, frozenset()):
            raise InvalidTransition(f"job {self.id}: {self.status} -> {status} is not allowed")
        job_moved(self.id, len(self.attempts), self.current.provider if self.current else None, self.status.value,
                  status.value, self.created_at, (self.error or {}).get("class"))
        self.status = status
        self.updated_at = time.time()

    def fail(self, error: ReelgateError) -> None:
        self.error = error.to_dict()
        self.move(JobStatus.FAILED)

    # -- derived ------------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        """How long the job's video is: a sequence's joined length, an edit's source's (known at
        submit; a modify or reframe keeps it), else the length the request asked for."""
        joined = self.plan.get("sequence", {}).get("duration_s")
        if joined is not None:
            return float(joined)
        return self.source_s if self.source_s is not None else self.request.duration_s

    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def provider(self) -> str | None:
        for attempt in reversed(self.attempts):
            if attempt.outcome is AttemptOutcome.SUCCEEDED:
                return attempt.provider
        return self.current.provider if self.current else None

    @property
    def cost_usd(self) -> Decimal:
        total = _ZERO  # a loop, not sum() over a generator: every video object answered reads it
        for attempt in self.attempts:
            total += attempt.cost_usd
        return total

    @property
    def at_risk_usd(self) -> Decimal:
        """What vendors may have billed for attempts whose outcome is unknown (not in ``cost_usd``)."""
        return sum((a.at_risk_usd for a in self.attempts), Decimal(0))

    def at_risk(self) -> list[dict[str, Any]]:
        """Where this job may have been billed without a result: for an operator to check."""
        return [{"provider": a.provider, "vendor_job_id": a.vendor_job.vendor_id if a.vendor_job else None,
                 "attempt_key": a.attempt_key, "usd": float(a.at_risk_usd),
                 "error_class": a.error["class"] if a.error else None}
                for a in self.attempts if a.at_risk_usd]

    def to_dict(self) -> dict[str, Any]:
        winner = next((a for a in self.attempts if a.outcome is AttemptOutcome.SUCCEEDED), None)
        return {
            "id": self.id,
            "status": self.status.value,
            "provider": self.provider,
            "model": self.request.model.value,
            "vendor_model": winner.vendor_model if winner else None,
            "resolution": self.resolution,
            "duration_s": self.seconds,
            "aspect_ratio": self.request.aspect_ratio.value,
            "cost_usd": float(self.cost_usd),
            "at_risk_usd": float(self.at_risk_usd),
            "at_risk": self.at_risk(),
            "vendor_units": float(winner.vendor_units) if winner and winner.vendor_units is not None else None,
            "unit_name": winner.unit_name if winner else None,
            "progress": self.progress,
            "output": None if self.output is None else {
                "url": self.output.url, "path": self.output.path, "uri": self.output.uri,
                "size_bytes": self.output.size_bytes, "sha256": self.output.sha256,
            },
            "error": self.error,
            "degradations": self.degradations,
            "notes": self.notes,
            "attempts": [a.to_dict() for a in self.attempts],
            "plan": self.plan,
            "owner": self.owner,
            "parent_id": self.parent_id,
            "segments": self.plan.get("sequence", {}).get("segments"),
            "webhooks": self.webhooks,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "request": self.request.public_dict(),
        }
