"""A local, wire-faithful emulator of apiframe.ai API v2 (Luma video only).

Speaks ``POST /v2/videos/generate``, ``GET /v2/jobs/{id}`` and ``GET /v2/models`` as the
server spec describes them (``openapi.json`` in apiframe-ai/apiframe-nodejs-sdk; see
/work/shared/vendors.md s.2): ``X-API-Key`` auth, strict validation (unknown keys are a
400 with ``details`` keyed by json path), a credit balance (402 when short, deducted on
accept, refunded when a job fails), ``Idempotency-Key`` replay / 409, and an
``x-request-id`` header on every answer. Output is 720p, the only size apiframe makes.

Webhooks: a job submitted with ``webhookUrl`` gets a POST signed as apiframe signs
(``providers/apiframe/webhooks.py``, keyed by the submitting API key) when it ends, for
the events it subscribed to (``webhookEvents``; ``completed`` and ``failed`` when
omitted -- apiframe's default is UNCONFIRMED). ``progress`` events are not emulated.
Delivery is retried on non-2xx a few times with short backoff, by a ticker started on
the first such submit; tests with a fake clock call ``deliver_due_webhooks``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.emulation.base import EmulatedJob, Emulator, JobPhase, Outcome
from gateway.emulation.outbox import Outbox
from gateway.request import AspectRatio, Concept
from gateway.webhooks.outbound import DeliveryRecord
from providers.apiframe import catalog, webhooks

#: what apiframe answers when the upstream model's moderation refuses a job (AF-DOCS jobs/get)
CONTENT_POLICY_ERROR = "Provider returned an error: content policy violation"
FAIL_LATE_ERROR = "Provider returned an error: generation failed"
#: default balance: large enough that only tests that ask for it see a 402
DEFAULT_CREDITS = 10_000_000
_LABELS = {"luma-ray-flash-2": "Luma Ray Flash 2", "luma-ray-2": "Luma Ray 2"}
_STATUS = {
    JobPhase.QUEUED: "QUEUED", JobPhase.RUNNING: "PROCESSING", JobPhase.SUCCEEDED: "COMPLETED",
    JobPhase.FAILED: "FAILED", JobPhase.CANCELLED: "CANCELLED",
}


def _http_url(value: str) -> str:
    # AF-OAS says "format: uri"; we accept only http(s) (data: URIs are UNCONFIRMED there)
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.split("/")[0]:
        raise ValueError("Invalid url")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LumaParams(_Strict):
    duration: Literal[5, 9] = 5
    aspect_ratio: Literal["16:9", "9:16", "1:1", "4:3", "3:4", "21:9"] = "16:9"
    start_image: str | None = None
    end_image: str | None = None
    loop: bool = False
    concepts: list[Concept] | None = None

    @field_validator("duration", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        # a JSON number: 5.0 is 5 (as in JavaScript); "5" and "5s" stay wrong
        return int(v) if isinstance(v, float) and v.is_integer() else v

    @field_validator("start_image", "end_image")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)


class GenerateVideo(_Strict):
    model: Literal["luma-ray-flash-2", "luma-ray-2"]
    prompt: str = Field(min_length=1, max_length=catalog.MAX_PROMPT_CHARS)
    lumaParams: LumaParams = Field(default_factory=LumaParams)
    webhookUrl: str | None = None
    webhookEvents: list[Literal["progress", "completed", "failed"]] | None = Field(default=None, min_length=1)

    @field_validator("webhookUrl")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)


class ApiframeEmulator(Emulator):
    name = "apiframe"

    def __init__(self, *, credits: int = DEFAULT_CREDITS,
                 costs: Mapping[str, Mapping[int, int]] | None = None, outbox: Outbox | None = None,
                 auto_deliver: bool = True, **options: Any) -> None:
        self.outbox = outbox or Outbox()
        self.auto_deliver = auto_deliver
        #: the account's credit balance (one account; every accepted key shares it)
        self.balance = credits
        self.costs = {m: dict(t) for m, t in (costs or catalog.CREDITS).items()}
        #: (api key, Idempotency-Key) -> (body fingerprint, job id)
        self._idempotency: dict[tuple[str, str], tuple[str, str]] = {}
        super().__init__(**options)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v2/videos/generate", self._generate, methods=["POST"]),
            Route("/v2/jobs/{job_id}", self._job, methods=["GET"]),
            Route("/v2/models", self._models, methods=["GET"]),
        ]

    def error(self, status: int, message: str, *, code: str | None = None,
              headers: dict[str, str] | None = None, **extra: Any) -> Response:
        # apiframe's envelope is {"error": text} with no code field; ``code`` is dropped
        return self._json({"error": message, **extra}, status, headers)

    # -- handlers --------------------------------------------------------------------------
    async def _generate(self, request: Request) -> Response:
        if (fault := await self.generic_faults(submit=True)) is not None:
            return fault
        self.calls["generate"] += 1
        key = request.headers.get("x-api-key")
        if not self.authorized(key):
            return self._reject(401, "Invalid or missing API key")
        idem = request.headers.get("idempotency-key")
        if idem is not None and not 1 <= len(idem) <= 255:
            return self._reject(400, "Validation failed",
                                details={"Idempotency-Key": ["Must be 1-255 characters"]})
        try:
            body = GenerateVideo.model_validate_json(await request.body())
        except ValidationError as exc:
            message, extra = _validation(exc)
            return self._reject(400, message, **extra)
        fingerprint = json.dumps(body.model_dump(mode="json"), sort_keys=True)
        if idem is not None and (key, idem) in self._idempotency:
            return self._replay(fingerprint, *self._idempotency[(key, idem)])
        cost = self.costs[body.model][body.lumaParams.duration]
        if self.balance < cost:
            return self._reject(402, "Insufficient credits", creditsRequired=cost, creditsAvailable=self.balance)
        job = self.new_job(
            model=body.model, aspect_ratio=AspectRatio(body.lumaParams.aspect_ratio),
            resolution=catalog.RESOLUTION, duration_s=body.lumaParams.duration,
            input=body.model_dump(mode="json", exclude_none=True), reference=idem, request=request,
        )
        job.extra.update(owner=key, cost=cost, created_at=time.time(), refunded=False)
        self.balance -= cost
        if idem is not None:
            self._idempotency[(key, idem)] = (fingerprint, job.id)
        if body.webhookUrl is not None:
            self._schedule_webhook(job, body.webhookUrl, body.webhookEvents, self.media_url(request, job))
        if (drop := self.maybe_drop()) is not None:
            return drop
        return self._json({"jobId": job.id, "status": "QUEUED"}, 202)

    async def _job(self, request: Request) -> Response:
        if (fault := await self.generic_faults(submit=False)) is not None:
            return fault
        self.calls["job"] += 1
        key = request.headers.get("x-api-key")
        if not self.authorized(key):
            return self.error(401, "Invalid or missing API key")
        job_id = request.path_params["job_id"]
        try:
            uuid.UUID(job_id)
        except ValueError:
            return self.error(400, "Validation failed", details={"id": ["Invalid uuid"]})
        job = self.jobs.get(job_id)
        if job is None or job.extra.get("owner") != key:  # another account's job is "not found"
            return self.error(404, "Job not found")
        return self._json(self.job_view(request, job), 200)

    async def _models(self, request: Request) -> Response:
        if (fault := await self.generic_faults(submit=False)) is not None:
            return fault
        if not self.authorized(request.headers.get("x-api-key")):
            return self.error(401, "Invalid or missing API key")
        modality = request.query_params.get("modality")
        models = [
            {"id": m, "label": _LABELS.get(m, m), "modality": "video",
             "costMin": min(t.values()), "costMax": max(t.values())}
            for m, t in self.costs.items()
        ]
        return self._json({"models": [m for m in models if modality in (None, "video")]}, 200)

    # -- the job body ------------------------------------------------------------------------
    def job_view(self, request: Request, job: EmulatedJob) -> dict[str, Any]:
        """``GET /v2/jobs/{id}``: every key the spec marks required, always present."""
        now = self.clock()
        phase = job.phase(now)
        failed = phase is JobPhase.FAILED
        if failed:
            self._refund(job)
        done = phase in (JobPhase.SUCCEEDED, JobPhase.FAILED, JobPhase.CANCELLED)
        progress = round(job.progress(now) * 100)
        if phase is JobPhase.RUNNING:
            progress = min(progress, 99)  # 100 only once COMPLETED, as the vendor reports it
        return {
            "id": job.id,
            "status": _STATUS[phase],
            "model": job.model,
            "progress": progress,
            "result": {"videoUrl": self.media_url(request, job)} if phase is JobPhase.SUCCEEDED else None,
            "error": _failure_text(job.outcome) if failed else None,
            "creditCost": 0 if failed else job.extra["cost"],
            "webhookStatus": self._webhook_status(job),
            "createdAt": _iso(job.extra["created_at"]),
            "completedAt": _iso(job.extra["created_at"] + job.queue_s + job.run_s) if done else None,
            "expired": False,
            "input": job.input,
        }

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "credits": self.balance}

    # -- webhooks ------------------------------------------------------------------------
    def _schedule_webhook(self, job: EmulatedJob, url: str, events: Sequence[str] | None, video_url: str) -> None:
        # no cancel in v2 and the outcome is fixed at submit, so the final event is known now
        event = "completed" if job.outcome is Outcome.SUCCESS else "failed"
        if event not in (events or webhooks.EVENTS):
            return
        job.extra["webhook"] = "pending"

        def ready() -> bool:
            return job.phase(self.clock()) in (JobPhase.SUCCEEDED, JobPhase.FAILED)

        def render() -> tuple[bytes, dict[str, str]]:
            body = json.dumps(self.webhook_body(job, video_url)).encode()
            return body, webhooks.sign(job.extra["owner"], event, body)

        self.outbox.add(job.id, url, ready=ready, render=render)
        if self.auto_deliver:
            self.outbox.start()

    async def deliver_due_webhooks(self) -> list[DeliveryRecord]:
        """POST every webhook whose job has ended (what the ticker does on each tick)."""
        return await self.outbox.deliver_due()

    def webhook_body(self, job: EmulatedJob, video_url: str) -> dict[str, Any]:
        """What apiframe posts when ``job`` ends (vendors.md s.2.5)."""
        if job.outcome is not Outcome.SUCCESS:
            self._refund(job)
            return {"event": "failed", "jobId": job.id, "status": "FAILED", "error": _failure_text(job.outcome),
                    "model": job.model}
        done_at = job.extra["created_at"] + job.queue_s + job.run_s
        return {"event": "completed", "jobId": job.id, "status": "COMPLETED", "progress": 100,
                "result": {"videoUrl": video_url}, "model": job.model, "creditCost": job.extra["cost"],
                "completedAt": _iso(done_at)}

    def _webhook_status(self, job: EmulatedJob) -> str | None:
        if "webhook" not in job.extra:
            return None
        record = next((r for r in self.outbox.records if r.message_id == job.id), None)
        if record is None:
            return "pending"
        return "delivered" if record.delivered else "failed"

    # -- helpers -------------------------------------------------------------------------
    def _replay(self, fingerprint: str, original: str, job_id: str) -> Response:
        """Same key: the original job (not a new submission), or 409 when the body differs."""
        if fingerprint != original:
            return self._reject(409, "Idempotency-Key was already used with a different request body")
        job = self.jobs[job_id]
        return self._json({"jobId": job.id, "status": _STATUS[job.phase(self.clock())]}, 202)

    def _refund(self, job: EmulatedJob) -> None:
        # FAILED jobs cost nothing: their credits go back exactly once (AF-DOCS faq)
        if not job.extra["refunded"]:
            job.extra["refunded"] = True
            self.balance += job.extra["cost"]

    def _reject(self, status: int, message: str, **extra: Any) -> Response:
        self.rejected_submissions += 1
        return self.error(status, message, **extra)

    def _json(self, body: Any, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(body, status, headers={**(headers or {}), "x-request-id": str(uuid.uuid4())})


def _validation(exc: ValidationError) -> tuple[str, dict[str, Any]]:
    """(message, extra fields) of a 400, with ``details`` keyed by json path like Zod's."""
    if any(e["type"] == "json_invalid" for e in exc.errors()):
        return "Invalid JSON body", {}
    details: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"]) or "(root)"
        details.setdefault(path, []).append(err["msg"].removeprefix("Value error, "))
    return "Validation failed", {"details": details}


def _failure_text(outcome: Outcome) -> str:
    return CONTENT_POLICY_ERROR if outcome is Outcome.CONTENT_POLICY else FAIL_LATE_ERROR


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

