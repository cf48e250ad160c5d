"""A generic emulator of an OpenAI-Videos-shaped API, parameterised by a vendor catalog.

Speaks: ``POST /videos`` (JSON *and* multipart/form-data, as the official openai SDK
always sends multipart), ``GET /videos/{id}`` (with ``openai-poll-after-ms``),
``GET /videos/{id}/content`` (a real H.264 MP4; 404 until completed), ``GET /videos``
(cursor page), ``DELETE /videos/{id}`` and ``GET /models/{slug}`` (price in credits).
Errors use the OpenAI envelope ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from email import policy
from email.parser import BytesParser
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.emulation.base import EmulatedJob, Emulator, JobPhase, Outcome
from gateway.emulation.render import render_mp4
from gateway.frames import frame_size
from gateway.request import AspectRatio, Resolution, sniff_image_type
from providers.openai_video.catalog import OpenAIVideoCatalog

#: the OpenAI ``type`` that goes with each status we answer
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_quota",
          404: "invalid_request_error", 429: "rate_limit_error"}
#: generic fault codes (gateway.emulation.base) -> the OpenAI/railwail spelling
_CODES = {"rate_limited": "rate_limit_exceeded", "service_unavailable": "service_unavailable"}
_FIELDS = {"model", "prompt", "seconds", "size", "input_reference"}
_FAILURES = {Outcome.FAIL_LATE: ("internal_error", "video generation failed"),
             Outcome.CONTENT_POLICY: ("moderation_blocked", "the request was blocked by moderation")}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def parse_form(body: bytes, content_type: str) -> dict[str, str | bytes]:
    """multipart/form-data -> {name: text, or bytes for a file part}, with the stdlib
    (starlette's form parser needs python-multipart, which reelgate does not ship)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise BadRequest("malformed multipart body")
    fields: dict[str, str | bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)  # bytes for a leaf part, None for a nested multipart
        data = payload if isinstance(payload, bytes) else b""
        if name:
            fields[str(name)] = data if part.get_filename() else data.decode()
    return fields


class OpenAIVideoEmulator(Emulator):
    """Subclasses set ``name`` and ``catalog`` (the same catalog their adapter uses)."""

    catalog: ClassVar[OpenAIVideoCatalog]
    poll_after_ms: ClassVar[int] = 2000
    rate_limit_per_min: ClassVar[int] = 60

    def routes(self) -> list[BaseRoute]:
        p = self.catalog.paths
        return [
            Route(p.create, self._create, methods=["POST"]),
            Route(p.list, self._list, methods=["GET"]),
            Route(p.content, self._content, methods=["GET"]),
            Route(p.retrieve, self._retrieve, methods=["GET"]),
            Route(p.delete, self._delete, methods=["DELETE"]),
            Route(p.model, self._model, methods=["GET"]),
        ]

    def error(self, status: int, message: str, *, code: str | None = None,
              headers: dict[str, str] | None = None, param: str | None = None) -> Response:
        kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": param, "code": _CODES.get(code or "", code)}}
        headers = dict(headers or {})
        if status == 429:
            wait = float(headers.get("Retry-After", "1"))
            headers |= self._limits(remaining=0, reset_in=wait)
        return JSONResponse(body, status_code=status, headers=headers)

    # -- handlers --------------------------------------------------------------------
    async def _create(self, request: Request) -> Response:
        self.calls["create"] += 1
        denied = await self._gate(request, submit=True)
        if denied is not None:
            return denied
        try:
            fields = await self._body(request)
            job_args = self._validate(fields)
        except BadRequest as exc:
            self.rejected_submissions += 1
            return self.error(400, str(exc), code="bad_request", param=exc.param)
        job = self.new_job(**job_args, job_id=f"video_{uuid.uuid4().hex}", request=request)
        job.extra["created_unix"] = int(time.time())
        return self.maybe_drop() or self._json(self._video(job))

    async def _retrieve(self, request: Request) -> Response:
        self.calls["retrieve"] += 1
        job = await self._job(request)
        if isinstance(job, Response):
            return job
        return self._json(self._video(job), {"openai-poll-after-ms": str(self.poll_after_ms)})

    async def _content(self, request: Request) -> Response:
        self.calls["content"] += 1
        job = await self._job(request)
        if isinstance(job, Response):
            return job
        if request.query_params.get("variant", "video") != "video":
            return self.error(400, "only the video variant is available", code="bad_request", param="variant")
        if job.phase(self.clock()) is not JobPhase.SUCCEEDED:
            return self.error(404, "video content is not ready", code="not_found")
        data = await asyncio.to_thread(render_mp4, *job.size, job.duration_s)
        return Response(data, media_type="video/mp4")

    async def _list(self, request: Request) -> Response:
        """``GET /videos``: the project's videos by creation time, ``order`` desc (default,
        newest first) or asc, ``limit`` 0-100 (default 20), ``after`` the previous page's
        ``last_id``. Bad parameters are a 400 naming the param; an ``after`` that names no
        video is one too (UNCONFIRMED: OpenAI documents no answer for it; a page from the
        start would send a scanning client round in circles)."""
        self.calls["list"] += 1
        denied = await self._gate(request, submit=False)
        if denied is not None:
            return denied
        q = request.query_params
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            return self.error(400, "order must be 'asc' or 'desc'", code="bad_request", param="order")
        raw_limit = q.get("limit", "20")
        if not raw_limit.isdigit() or int(raw_limit) > 100:
            return self.error(400, "limit must be an integer from 0 to 100", code="bad_request", param="limit")
        jobs = sorted(self.jobs.values(), key=lambda j: (j.created_at, j.id), reverse=order == "desc")
        ids = [j.id for j in jobs]
        after = q.get("after")
        if after is not None and after not in ids:
            return self.error(400, f"no video {after!r} to list after", code="bad_request", param="after")
        start = ids.index(after) + 1 if after is not None else 0
        page = jobs[start:start + int(raw_limit)]
        return self._json({"object": "list", "data": [self._video(j) for j in page],
                           "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
                           "has_more": start + len(page) < len(jobs)})

    async def _delete(self, request: Request) -> Response:
        job = await self._job(request)
        if isinstance(job, Response):
            return job
        del self.jobs[job.id]
        return self._json({"id": job.id, "deleted": True, "object": "video.deleted"})

    async def _model(self, request: Request) -> Response:
        denied = await self._gate(request, submit=False)
        if denied is not None:
            return denied
        slug = request.path_params["slug"]
        family = next((f for f, m in self.catalog.models.items() if m == slug), None)
        if family is None:
            return self.error(404, f"model {slug!r} not found", code="not_found")
        caps = self.catalog.capabilities[family]
        credits = self.catalog.prices[(family, caps.default_resolution, min(caps.durations))]
        return self._json({"id": slug, "object": "model", "name": slug, "category": "video",
                           "created": 0, "owned_by": "luma",
                           "pricing": {"credit_cost_fixed": float(credits), "credit_cost_input_per_1k": 0,
                                       "credit_cost_output_per_1k": 0, "currency": "credits"}})

    # -- pieces ----------------------------------------------------------------------
    async def _gate(self, request: Request, *, submit: bool) -> Response | None:
        fault = await self.generic_faults(submit=submit)
        if fault is not None:
            return fault
        auth = request.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not self.authorized(key.strip()):
            return self.error(401, "Invalid API key", code="invalid_api_key")
        return None

    async def _job(self, request: Request) -> EmulatedJob | Response:
        """The job the path names, or the response that denies it."""
        denied = await self._gate(request, submit=False)
        if denied is not None:
            return denied
        job = self.jobs.get(request.path_params["video_id"])
        if job is None:
            return self.error(404, "video not found", code="not_found", param="video_id")
        return job

    async def _body(self, request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        raw = await request.body()
        if ctype.startswith("multipart/form-data"):
            return parse_form(raw, ctype)
        if ctype.startswith("application/json"):
            try:
                data = await request.json()
            except ValueError:
                raise BadRequest("body is not valid JSON") from None
            if isinstance(data, dict):
                return data
        raise BadRequest("send application/json or multipart/form-data")

    def _validate(self, fields: dict[str, Any]) -> dict[str, Any]:
        image = self._input_reference(fields)
        extra = set(fields) - _FIELDS
        if extra:
            raise BadRequest(f"unrecognized request argument: {sorted(extra)[0]}", sorted(extra)[0])
        prompt = fields.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadRequest("prompt is required", "prompt")
        model = fields.get("model", next(iter(self.catalog.models.values())))
        family = next((f for f, m in self.catalog.models.items() if m == model), None)
        if family is None:
            raise BadRequest(f"unknown model {model!r}", "model")
        caps = self.catalog.capabilities[family]
        if len(prompt) > caps.max_prompt_chars:
            raise BadRequest(f"prompt is longer than {caps.max_prompt_chars} characters", "prompt")
        seconds = str(fields.get("seconds", min(caps.durations)))
        if not seconds.isdigit() or int(seconds) not in caps.durations:
            raise BadRequest(f"seconds must be one of {sorted(map(str, caps.durations))}", "seconds")
        default = frame_size(AspectRatio.R16_9, caps.default_resolution)
        aspect, resolution = self._shape(str(fields.get("size", f"{default[0]}x{default[1]}")), caps)
        return {"model": model, "aspect_ratio": aspect, "resolution": resolution, "duration_s": int(seconds),
                "input": {"prompt": prompt, "input_reference": image}}

    @staticmethod
    def _shape(size: str, caps: Any) -> tuple[AspectRatio, Resolution]:
        match = re.fullmatch(r"(\d+)x(\d+)", size)
        if match:
            wanted = (int(match[1]), int(match[2]))
            for aspect in caps.aspect_ratios:
                for res in caps.resolutions:
                    if frame_size(aspect, res) == wanted:
                        return aspect, res
        raise BadRequest(f"size {size!r} is not supported", "size")

    @staticmethod
    def _input_reference(fields: dict[str, Any]) -> str | None:
        """Accepts an upload, ``{"image_url": ...}`` (JSON) or ``input_reference[image_url]``
        (the SDK's multipart spelling of the object); pops it from ``fields``."""
        ref = fields.pop("input_reference", None)
        if "input_reference[image_url]" in fields:
            ref = {"image_url": fields.pop("input_reference[image_url]")}
        if ref is None:
            return None
        if isinstance(ref, bytes):
            if sniff_image_type(ref) is None:
                raise BadRequest("input_reference is not a PNG, JPEG, GIF or WebP image", "input_reference")
            return f"upload ({len(ref)} bytes)"
        url = ref.get("image_url") if isinstance(ref, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:image/")):
            raise BadRequest("input_reference.image_url must be an http(s) or data:image URL", "input_reference")
        return url[:64]

    def _video(self, job: EmulatedJob) -> dict[str, Any]:
        now = self.clock()
        phase = job.phase(now)
        status = {JobPhase.QUEUED: "queued", JobPhase.RUNNING: "in_progress",
                  JobPhase.SUCCEEDED: "completed"}.get(phase, "failed")
        created = job.extra.get("created_unix", 0)
        done = phase in (JobPhase.SUCCEEDED, JobPhase.FAILED)
        video: dict[str, Any] = {
            "id": job.id, "object": "video", "model": job.model, "status": status,
            "progress": 100 if done else int(job.progress(now) * 100), "created_at": created,
            "completed_at": int(created + job.queue_s + job.run_s) if done else None,
            "expires_at": None, "prompt": job.input.get("prompt"), "seconds": str(job.duration_s),
            "size": f"{job.size[0]}x{job.size[1]}", "remixed_from_video_id": None, "error": None,
        }
        if status == "failed":
            code, message = _FAILURES.get(job.outcome, ("cancelled", "the video was cancelled"))
            video["error"] = {"code": code, "message": message}
        return video

    def _json(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(body, headers={**self._limits(), **(headers or {})})

    def _limits(self, *, remaining: int | None = None, reset_in: float = 60.0) -> dict[str, str]:
        left = self.rate_limit_per_min - 1 if remaining is None else remaining
        return {"X-RateLimit-Limit": str(self.rate_limit_per_min), "X-RateLimit-Remaining": str(left),
                "X-RateLimit-Reset": str(int(time.time() + reset_in + 0.999))}
