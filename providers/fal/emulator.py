"""A wire-faithful emulator of fal's queue API for the Luma Ray 2 endpoints.

Speaks what vendors.md section 1 records: submit on the full endpoint id, status /
result / cancel on ``/{owner}/{app}/requests/{id}``, ``Authorization: Key ...``, 202
while queued or running and 200 once COMPLETED, failures as COMPLETED + ``error`` with
the real error replayed on the result GET, and ``x-fal-request-id`` on job responses.

Choices where fal is silent (UNCONFIRMED): validation happens at submit (422, no job)
rather than on the result GET; extra input fields are ignored like fal's pydantic
inputs, except image fields on a text-to-video endpoint (422, so a caller never gets
a silent text-to-video); a cancelled job later reports COMPLETED +
``error_type: client_cancelled`` and its result answers 499.

Modify and reframe (``…/modify``, ``…/reframe``): the source video is fetched and checked at
submit (``emulator_edits.py``); the output really has the requested aspect ratio (reframe) and
the source's length (modify).

Webhooks: a submit with ``?fal_webhook=<url>`` gets a signed POST to that URL once the job
ends (``providers/fal/webhooks.py`` builds and signs it with a key generated when the
emulator starts; ``GET /.well-known/jwks.json`` serves the public half). A failed delivery
(non-2xx, or no answer) is retried as fal does: 10 times over 2 hours (``WEBHOOK_RETRIES``),
that span scaled by ``Timing.webhook_retry_scale`` like the emulator's job timings. A
ticker started on the first such submit delivers them; tests with a fake clock call
:meth:`FalEmulator.deliver_due_webhooks`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.adoption import ATTEMPT_PARAM
from gateway.emulation.base import EmulatedJob, Emulator, JobPhase, Outcome
from gateway.emulation.outbox import Outbox, RetrySchedule
from gateway.request import AspectRatio, Resolution
from gateway.webhooks.outbound import DeliveryRecord
from providers.fal import emulator_edits as edits
from providers.fal import webhooks

APP_PREFIX = "fal-ai/luma-dream-machine"
#: endpoint path -> what it does: t2v, i2v, modify or reframe
ENDPOINTS = {
    f"{APP_PREFIX}/{family}{suffix}": kind
    for family in ("ray-2-flash", "ray-2")
    for suffix, kind in (("", "t2v"), ("/image-to-video", "i2v"), ("/modify", "modify"), ("/reframe", "reframe"))
}
ASPECTS = ["16:9", "9:16", "4:3", "3:4", "21:9", "9:21"]
RESOLUTIONS = ["540p", "720p", "1080p"]
DURATIONS = ["5s", "9s"]
_FACTORS = {"540p": 1, "720p": 2, "1080p": 4, "5s": 1, "9s": 2}
#: how each failed outcome shows on the status (error, error_type) and result (HTTP, body)
_FAILURES: dict[str, tuple[str, str, int]] = {
    Outcome.FAIL_LATE: ("Internal server error", "runner_server_error", 500),
    "cancelled": ("Request was cancelled by the client", "client_cancelled", 499),
}


#: the user id the emulator signs webhooks as
WEBHOOK_USER_ID = "emulator-user"
#: fal's webhook retry policy: "If the webhook fails to deliver the payload, it will retry 10
#: times in the span of 2 hours" (https://docs.fal.ai/model-apis/model-endpoints/webhooks,
#: "Retry policy", read 2026-11-30). A gateway down for a while still gets its callbacks,
#: which is what lets it adopt the jobs whose submit answers a crash lost.
WEBHOOK_RETRIES = RetrySchedule(retries=10, span_s=2 * 3600.0)


class FalEmulator(Emulator):
    name = "fal"

    def __init__(self, *, wall_clock: Callable[[], float] = time.time, outbox: Outbox | None = None,
                 auto_deliver: bool = True, **options: Any) -> None:
        #: signs webhooks; made fresh per emulator, its public half is at /.well-known/jwks.json
        self.signing_key = Ed25519PrivateKey.generate()
        #: webhook timestamps are unix seconds, whatever clock drives the jobs
        self.wall_clock = wall_clock
        self.outbox = outbox or Outbox()
        self.auto_deliver = auto_deliver
        super().__init__(**options)

    def routes(self) -> list[BaseRoute]:
        base = "/{owner}/{app}/requests/{request_id}"
        return [
            Route("/.well-known/jwks.json", self._jwks, methods=["GET"]),
            Route(base + "/status", self._status, methods=["GET"]),
            Route(base + "/cancel", self._cancel, methods=["PUT"]),
            Route(base, self._result, methods=["GET"]),
            Route("/{endpoint:path}", self._submit, methods=["POST"]),
        ]

    def error(self, status: int, message: str, *, code: str | None = None,
              headers: dict[str, str] | None = None) -> Response:
        # Generic faults (outage, flaky, 429) come from fal's edge, not a run: a plain
        # {"detail"} without x-fal-request-id. A run's infra error carries error_type.
        return JSONResponse({"detail": message}, status_code=status, headers=headers)

    def _infra_error(self, status: int, message: str, error_type: str, job: EmulatedJob) -> Response:
        return JSONResponse({"detail": message, "error_type": error_type}, status_code=status,
                            headers={"X-Fal-Error-Type": error_type, "x-fal-request-id": job.id})

    def _unauthorized(self, request: Request) -> Response | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme != "Key" or not self.authorized(key.strip()):
            return self.error(401, "No user found for Key ID and Secret")
        return None

    # -- submit ----------------------------------------------------------------------
    async def _submit(self, request: Request) -> Response:
        self.calls["submit"] += 1
        refused = await self.generic_faults(submit=True) or self._unauthorized(request)
        if refused is not None:
            return refused
        endpoint = request.path_params["endpoint"].strip("/")
        if endpoint not in ENDPOINTS:
            return self.error(404, f"Application '{endpoint}' not found")
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        kind = ENDPOINTS[endpoint]
        if kind in ("modify", "reframe"):
            made = await self._edit_job(endpoint, kind, body)
            if isinstance(made, Response):
                return made
            job = made
        else:
            problems = validate(body, image_to_video=kind == "i2v")
            if problems:
                self.rejected_submissions += 1
                return JSONResponse({"detail": problems}, status_code=422)
            job = self.new_job(
                model=endpoint, aspect_ratio=AspectRatio(body.get("aspect_ratio", "16:9")),
                resolution=Resolution(body.get("resolution", "540p")),
                duration_s=int(body.get("duration", "5s")[:-1]), input=body,
                reference=_attempt_named(request.query_params.get(webhooks.QUERY_PARAM)), request=request,
            )
        callback = request.query_params.get(webhooks.QUERY_PARAM)
        if callback:  # fal calls back for every request it accepted, whether its answer arrived or not
            self._schedule_webhook(job, callback, self.media_url(request, job))
        dropped = self.maybe_drop()
        if dropped is not None:
            return dropped
        answer = {**self._urls(request, job), "queue_position": self._queue_position(job), "status": "IN_QUEUE"}
        if callback:
            answer["gateway_request_id"] = job.id
        return JSONResponse(answer, headers={"x-fal-request-id": job.id})

    async def _edit_job(self, endpoint: str, kind: str, body: Any) -> EmulatedJob | Response:
        """A modify/reframe job whose output has the shape the source and body call for."""
        problems = edits.validate_edit(body, kind)
        source = problems or await edits.fetch_source(body["video_url"])
        if isinstance(source, list):
            self.rejected_submissions += 1
            return JSONResponse({"detail": source}, status_code=422)
        width, height, seconds = edits.output_shape(kind, body, source)
        aspect = body.get("aspect_ratio", "16:9" if width >= height else "9:16")
        job = self.new_job(model=endpoint, aspect_ratio=AspectRatio(aspect), resolution=Resolution.P540,
                           duration_s=max(1, round(seconds)), input=body)
        job.extra["render"] = (width, height, seconds)  # what /media serves (base.Emulator._media)
        return job

    # -- webhooks ------------------------------------------------------------------------
    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [webhooks.jwk(self.signing_key.public_key())]})

    def _schedule_webhook(self, job: EmulatedJob, url: str, video_url: str) -> None:
        def ready() -> bool:
            return job.phase(self.clock()) not in (JobPhase.QUEUED, JobPhase.RUNNING)

        def render() -> tuple[bytes, dict[str, str]]:
            body = json.dumps(self.webhook_body(job, video_url)).encode()
            return body, webhooks.sign(self.signing_key, job.id, WEBHOOK_USER_ID, int(self.wall_clock()), body)

        self.outbox.add(job.id, url, ready=ready, render=render,
                        schedule=WEBHOOK_RETRIES.scaled(self.timing.webhook_retry_scale))
        if self.auto_deliver:
            self.outbox.start()

    async def deliver_due_webhooks(self) -> list[DeliveryRecord]:
        """POST every webhook whose job has ended (what the ticker does on each tick)."""
        return await self.outbox.deliver_due()

    def webhook_body(self, job: EmulatedJob, video_url: str) -> dict[str, Any]:
        """What fal posts when ``job`` ends (vendors.md s.1.8)."""
        head = {"request_id": job.id, "gateway_request_id": job.id}
        failure = _failure_key(job, job.phase(self.clock()))
        if failure is None:
            video = {"url": video_url, "content_type": "video/mp4", "file_name": "output.mp4"}
            return {**head, "status": "OK", "payload": {"video": video}}
        if failure == Outcome.CONTENT_POLICY:
            item = _item(["body", "prompt"], "The content could not be processed because it contained "
                         "material flagged by a content checker.", "content_policy_violation")
            return {**head, "status": "ERROR", "error": "Invalid status code: 422", "payload": {"detail": [item]}}
        message, error_type, status = _FAILURES[failure]
        return {**head, "status": "ERROR", "error": f"Invalid status code: {status}",
                "payload": {"detail": message, "error_type": error_type}}

    def _urls(self, request: Request, job: EmulatedJob) -> dict[str, str]:
        root = request.scope.get("root_path", "")
        base = f"{request.url.scheme}://{request.url.netloc}{root}/{APP_PREFIX}/requests/{job.id}"
        return {"request_id": job.id, "response_url": base, "status_url": base + "/status",
                "cancel_url": base + "/cancel"}

    def _queue_position(self, job: EmulatedJob) -> int:
        now = self.clock()
        return sum(1 for j in self.jobs.values()
                   if j.created_at < job.created_at and j.phase(now) is JobPhase.QUEUED)

    def _job(self, request: Request) -> EmulatedJob | None:
        job = self.jobs.get(request.path_params["request_id"])
        app = f"{request.path_params['owner']}/{request.path_params['app']}"
        return job if job is not None and job.model.startswith(app + "/") else None

    async def _lookup(self, request: Request, call: str) -> EmulatedJob | Response:
        self.calls[call] += 1
        refused = await self.generic_faults(submit=False) or self._unauthorized(request)
        if refused is not None:
            return refused
        job = self._job(request)
        if job is None:
            return JSONResponse({"detail": "Request not found"}, status_code=404)
        return job

    # -- status ----------------------------------------------------------------------
    async def _status(self, request: Request) -> Response:
        job = await self._lookup(request, "status")
        if isinstance(job, Response):
            return job
        logs_param = request.query_params.get("logs", "0").lower()
        if logs_param not in ("1", "0", "true", "false"):
            return JSONResponse({"detail": [_item(["query", "logs"], "Input should be a valid boolean",
                                                  "bool_parsing")]}, status_code=422)
        logs: list[dict[str, Any]] | None = [] if logs_param in ("1", "true") else None
        answer: dict[str, Any] = self._urls(request, job)
        phase = job.phase(self.clock())
        if phase is JobPhase.QUEUED:
            answer |= {"status": "IN_QUEUE", "queue_position": self._queue_position(job)}
            return JSONResponse(answer, status_code=202, headers={"x-fal-request-id": job.id})
        if phase is JobPhase.RUNNING:
            if logs is not None:
                logs.append({"message": f"Generating... {job.progress(self.clock()):.0%}", "level": "INFO",
                             "source": "USER", "timestamp": "2026-11-24T00:00:00Z"})
            answer |= {"status": "IN_PROGRESS", "logs": logs}
            return JSONResponse(answer, status_code=202, headers={"x-fal-request-id": job.id})
        answer |= {"status": "COMPLETED", "logs": logs, "metrics": {"inference_time": job.run_s}}
        failure = _failure_key(job, phase)
        if failure == Outcome.CONTENT_POLICY:
            answer |= {"error": "Content policy violation", "error_type": "content_policy_violation"}
        elif failure is not None:
            answer |= {"error": _FAILURES[failure][0], "error_type": _FAILURES[failure][1]}
        return JSONResponse(answer, headers={"x-fal-request-id": job.id})

    # -- result ----------------------------------------------------------------------
    async def _result(self, request: Request) -> Response:
        job = await self._lookup(request, "result")
        if isinstance(job, Response):
            return job
        phase = job.phase(self.clock())
        if phase in (JobPhase.QUEUED, JobPhase.RUNNING):
            return JSONResponse({"detail": "Request is still in progress"}, status_code=400,
                                headers={"x-fal-request-id": job.id})
        failure = _failure_key(job, phase)
        if failure == Outcome.CONTENT_POLICY:
            item = _item(["body", "prompt"], "The content could not be processed because it contained "
                         "material flagged by a content checker.", "content_policy_violation")
            return JSONResponse({"detail": [item]}, status_code=422, headers={"x-fal-request-id": job.id})
        if failure is not None:
            message, error_type, status = _FAILURES[failure]
            return self._infra_error(status, message, error_type, job)
        units = _FACTORS[job.input.get("resolution", "540p")] * _FACTORS[job.input.get("duration", "5s")]
        video = {"url": self.media_url(request, job), "content_type": "video/mp4", "file_name": "output.mp4"}
        return JSONResponse({"video": video}, headers={"x-fal-request-id": job.id,
                                                       "x-fal-billable-units": str(units)})

    # -- cancel ----------------------------------------------------------------------
    async def _cancel(self, request: Request) -> Response:
        job = await self._lookup(request, "cancel")
        if isinstance(job, Response):
            if job.status_code == 404:
                return JSONResponse({"status": "NOT_FOUND"}, status_code=404)
            return job
        if job.phase(self.clock()) in (JobPhase.QUEUED, JobPhase.RUNNING):
            # a queued job is removed; a running one gets the signal, and our emulated app honours it
            job.cancelled_at = self.clock()
            return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)


def _failure_key(job: EmulatedJob, phase: JobPhase) -> str | None:
    if phase is JobPhase.CANCELLED:
        return "cancelled"
    if phase is JobPhase.FAILED:
        return job.outcome
    return None


def _item(loc: list[str], msg: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind, **extra}


def validate(body: Any, *, image_to_video: bool) -> list[dict[str, Any]]:
    """fal's pydantic-style ``detail`` items for a bad input body (empty when it is fine)."""
    if not isinstance(body, dict):
        return [_item(["body"], "Input should be a valid dictionary", "dict_type")]
    problems = []
    prompt = body.get("prompt")
    if prompt is None:
        problems.append(_item(["body", "prompt"], "Field required", "missing"))
    elif not isinstance(prompt, str):
        problems.append(_item(["body", "prompt"], "Input should be a valid string", "string_type", input=prompt))
    for name, allowed in (("aspect_ratio", ASPECTS), ("resolution", RESOLUTIONS), ("duration", DURATIONS)):
        if name in body and body[name] not in allowed:
            expected = ", ".join(repr(a) for a in allowed)
            problems.append(_item(["body", name], f"Input should be {expected}", "enum",
                                  input=body[name], ctx={"expected": expected}))
    if "loop" in body and not isinstance(body["loop"], bool):
        problems.append(_item(["body", "loop"], "Input should be a valid boolean", "bool_type", input=body["loop"]))
    for name in ("image_url", "end_image_url"):
        value = body.get(name)
        if value is None:
            continue
        if not image_to_video:
            problems.append(_item(["body", name], "Extra inputs are not permitted on a text-to-video endpoint",
                                  "extra_forbidden"))
        elif not isinstance(value, str) or not value.startswith(("http://", "https://", "data:image/")):
            problems.append(_item(["body", name], "Input should be a valid URL or data URI", "url_parsing"))
    return problems


def _attempt_named(callback: str | None) -> str | None:
    """The attempt key a submit's callback URL names (``?attempt=``), if it names one: what the
    emulator records an accepted submission under (``Emulator.accepted_by``)."""
    if not callback:
        return None
    named = parse_qs(urlsplit(callback).query).get(ATTEMPT_PARAM)
    return named[0] if named else None
