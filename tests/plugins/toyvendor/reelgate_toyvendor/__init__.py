"""Toy Video: a made-up vendor with a tiny JSON protocol, packaged outside reelgate.

    POST /jobs            {"prompt", "aspect_ratio", "resolution", "seconds"} -> 201 {"id"}
    GET  /jobs/{id}       -> {"id", "state": waiting|working|done|error, "progress", "video_url", "error_code"}
    POST /jobs/{id}/stop  -> 200 {"stopped": true}
    auth: Authorization: Bearer <key>; errors: {"error_code", "message"}
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.capabilities import Capabilities
from gateway.emulation.base import Emulator, JobPhase, Outcome
from gateway.errors import (
    AuthenticationFailed,
    ContentRejected,
    GenerationFailed,
    ProtocolError,
    ProviderRejected,
    RateLimited,
    Unavailable,
)
from gateway.operations import Operation
from gateway.pricing import Quote, usd
from gateway.provider import Provider, VendorJob, VendorState, VendorStatus
from gateway.request import AspectRatio, ImageKind, ModelFamily, Resolution, VideoRequest

_STATES = {"waiting": VendorState.QUEUED, "working": VendorState.RUNNING, "done": VendorState.SUCCEEDED,
           "error": VendorState.FAILED, "stopped": VendorState.CANCELLED}


class ToyAdapter(Provider):
    name = "toy"
    title = "Toy Video (test plugin)"
    credential_env = "TOY_API_KEY"
    default_base_url = "https://api.toy.invalid"
    docs_url = "https://toy.invalid/docs"
    supports_idempotency = False
    bills_failures = False
    poll_initial_s = 0.05
    poll_max_s = 0.2

    def capabilities(self) -> dict[ModelFamily, Capabilities]:
        caps = Capabilities(
            model=ModelFamily.RAY_2_FLASH, aspect_ratios=frozenset({AspectRatio.R1_1, AspectRatio.R16_9}),
            resolutions=frozenset({Resolution.P540}), default_resolution=Resolution.P540,
            resolution_selectable=True, durations=frozenset({5}), start_image=False, end_image=False,
            loop=False, concepts=frozenset(), image_kinds=frozenset({ImageKind.URL}), max_prompt_chars=500,
            source="made up for tests",
            # the "operations" option lets a test make one toy able to modify, reframe, extend
            operations=frozenset(Operation(o) for o in self.settings.options.get("operations", ["generate"])),
        )
        return {ModelFamily.RAY_2_FLASH: caps}

    def price(self, request: VideoRequest, resolution: Resolution) -> Quote:
        cost = Decimal(str(self.settings.options.get("usd", "0.05")))
        return Quote(self.name, request.model, "toy-1", resolution, request.duration_s, usd(cost), basis="flat")

    def latency_prior_s(self, model: ModelFamily, resolution: Resolution, duration_s: int) -> float:
        return float(self.settings.options.get("latency_s", 10.0))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key()}"}

    def build_submit(self, request: VideoRequest, *, resolution: Resolution, attempt_key: str,
                     callback_url: str | None = None) -> httpx.Request:
        # the toy vendor has no webhooks: callback_url is accepted and ignored
        body = {"prompt": request.prompt, "aspect_ratio": request.aspect_ratio.value,
                "resolution": resolution.value, "seconds": request.duration_s}
        return httpx.Request("POST", f"{self.base_url}/jobs", json=body, headers=self._headers())

    def parse_submit(self, request: VideoRequest, response: httpx.Response) -> VendorJob:
        data = self._ok(response)
        if not isinstance(data.get("id"), str):
            raise ProtocolError("submit answer has no id", provider=self.name, status_code=response.status_code)
        return VendorJob(self.name, "toy-1", data["id"], self.base_url, self.settings.credential_ref)

    def build_status(self, job: VendorJob) -> httpx.Request:
        return httpx.Request("GET", f"{job.base_url}/jobs/{job.vendor_id}", headers=self._headers())

    def parse_status(self, job: VendorJob, response: httpx.Response) -> VendorStatus:
        data = self._ok(response)
        state = _STATES.get(data.get("state"))
        if state is None:
            raise ProtocolError(f"unknown state {data.get('state')!r}", provider=self.name)
        error = None
        if state is VendorState.FAILED:
            cls = ContentRejected if data.get("error_code") == "moderated" else GenerationFailed
            error = cls("job failed", provider=self.name, vendor_code=data.get("error_code"))
        return VendorStatus(state, data["state"], progress=data.get("progress"),
                            video_url=data.get("video_url"), error=error)

    def build_cancel(self, job: VendorJob) -> httpx.Request:
        return httpx.Request("POST", f"{job.base_url}/jobs/{job.vendor_id}/stop", headers=self._headers())

    def _ok(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success and isinstance(data, dict):
            return data
        code = data.get("error_code") if isinstance(data, dict) else None
        kw: dict[str, Any] = {"provider": self.name, "status_code": response.status_code, "vendor_code": code}
        status = response.status_code
        if response.is_success:
            raise ProtocolError("answer is not a JSON object", **kw)
        if status == 429:
            raise RateLimited("rate limited", retry_after=float(response.headers.get("Retry-After", 1)), **kw)
        if status in (401, 403):
            raise AuthenticationFailed("bad key", **kw)
        if status >= 500:
            raise Unavailable(f"HTTP {status}", **kw)
        raise ProviderRejected(f"HTTP {status}", **kw)

    @classmethod
    def emulator(cls, **options: Any) -> ToyEmulator:
        return ToyEmulator(**options)


class ToyEmulator(Emulator):
    name = "toy"

    def routes(self) -> list[Route]:
        return [Route("/jobs", self.submit, methods=["POST"]), Route("/jobs/{id}", self.status),
                Route("/jobs/{id}/stop", self.stop, methods=["POST"])]

    def error(self, status: int, message: str, *, code: str | None = None,
              headers: dict[str, str] | None = None) -> Response:
        return JSONResponse({"error_code": code or "error", "message": message}, status, headers=headers)

    def _auth(self, request: Request) -> Response | None:
        key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return None if self.authorized(key) else self.error(401, "bad key", code="unauthorized")

    async def submit(self, request: Request) -> Response:
        if (fault := await self.generic_faults(submit=True)) or (fault := self._auth(request)):
            return fault
        body = await request.json()
        job = self.new_job(model="toy-1", aspect_ratio=AspectRatio(body["aspect_ratio"]),
                           resolution=Resolution(body["resolution"]), duration_s=int(body["seconds"]), input=body)
        return self.maybe_drop() or JSONResponse({"id": job.id}, 201)

    async def status(self, request: Request) -> Response:
        if (fault := await self.generic_faults(submit=False)) or (fault := self._auth(request)):
            return fault
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return self.error(404, "no such job", code="not_found")
        phase = job.phase(self.clock())
        state = {JobPhase.QUEUED: "waiting", JobPhase.RUNNING: "working", JobPhase.SUCCEEDED: "done",
                 JobPhase.FAILED: "error", JobPhase.CANCELLED: "stopped"}[phase]
        body: dict[str, Any] = {"id": job.id, "state": state, "progress": job.progress(self.clock())}
        if phase is JobPhase.SUCCEEDED:
            body["video_url"] = self.media_url(request, job)
        if phase is JobPhase.FAILED:
            body["error_code"] = "moderated" if job.outcome is Outcome.CONTENT_POLICY else "crashed"
        return JSONResponse(body)

    async def stop(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return self.error(404, "no such job", code="not_found")
        job.cancelled_at = self.clock()
        return JSONResponse({"stopped": True})
