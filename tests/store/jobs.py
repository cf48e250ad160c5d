"""Jobs to store in tests: plain builders, no fixtures."""

from __future__ import annotations

from decimal import Decimal

from gateway.job import Attempt, AttemptOutcome, JobStatus, VideoJob, VideoOutput
from gateway.provider import VendorJob
from gateway.request import VideoRequest

#: sums that floats get wrong (0.1 + 0.2) and more digits than a double holds
ESTIMATE = Decimal("0.1") + Decimal("0.2")
BILLED = Decimal("0.123456789012345678901234567891")
CREDITS = Decimal("37.5")


def new_job(prompt: str = "a red fox in fresh snow", *, key: str | None = None,
            created_at: float = 1000.0, **request: object) -> VideoJob:
    return VideoJob(VideoRequest(prompt=prompt, idempotency_key=key, **request),
                    created_at=created_at, updated_at=created_at)


def vendor_job(provider: str = "fal") -> VendorJob:
    return VendorJob(
        provider=provider, vendor_model="fal-ai/luma-dream-machine/ray-2-flash", vendor_id="req-123",
        base_url="https://queue.fal.run", credential_ref="env:FAL_KEY",
        urls={"status_url": "https://queue.fal.run/x/requests/req-123/status"},
        extra={"endpoint": "ray-2-flash", "retries": 2})


def finished_job(*, created_at: float = 1000.0) -> VideoJob:
    """A job that fell back once and succeeded: two attempts, every field set."""
    job = new_job(key="order-42", created_at=created_at, aspect_ratio="9:16", duration_s=9,
                  resolution="720p", concepts=["dolly_zoom", "orbit_left"], loop=True,
                  allow=["higher_resolution"], providers=["apiframe", "fal"], max_cost_usd=2.5,
                  metadata={"user": "u1"}, webhook_url="https://example.com/hook")
    rejected = Attempt(provider="apiframe", vendor_model="ray-2-flash", started_at=created_at + 1,
                       attempt_key="att-1", outcome=AttemptOutcome.REJECTED, ended_at=created_at + 2,
                       error={"class": "InsufficientCredits", "code": "insufficient_credits",
                              "message": "402 out of credits"},
                       estimated_usd=Decimal("0.44"), unit_name="credits", submit_retries=1)
    won = Attempt(provider="fal", vendor_model="fal-ai/luma-dream-machine/ray-2-flash",
                  started_at=created_at + 3, attempt_key="att-2", outcome=AttemptOutcome.SUCCEEDED,
                  ended_at=created_at + 60.25, vendor_job=vendor_job(), estimated_usd=ESTIMATE,
                  cost_usd=BILLED, vendor_units=CREDITS, unit_name="credits", polls=7)
    job.attempts = [rejected, won]
    job.status = JobStatus.SUCCEEDED
    job.output = VideoOutput(url="https://cdn.example/v.mp4", path="/tmp/v.mp4", size_bytes=1234,
                             sha256="ab" * 32)
    job.progress = 1.0
    job.plan = {"policy": "cheapest", "candidates": [{"provider": "fal", "cost_usd": 0.3}], "skipped": {}}
    job.degradations = ["higher_resolution"]
    job.notes = ["apiframe: out of credits"]
    job.resolution = "720p"
    job.updated_at = created_at + 61
    return job
