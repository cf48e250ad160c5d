"""The shared skeleton of a vendor emulator.

A vendor's emulator subclasses :class:`Emulator`, declares its routes, and speaks its
wire protocol in them. This base gives it: a job table whose states follow a clock
(:class:`EmulatedJob`), counters of accepted submissions, the generic faults
(outage, slow, flaky, rate-limit, drop-after-accept) applied through the vendor's own
error envelope, and rendered MP4s served at ``/media/{job_id}.mp4``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeGuard

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from gateway.emulation.faults import Fault, FaultSet, FaultSpec
from gateway.emulation.render import render_mp4
from gateway.frames import frame_size
from gateway.request import AspectRatio, Resolution

Clock = Callable[[], float]


class JobPhase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAIL_LATE = "fail-late"
    CONTENT_POLICY = "content-policy"


@dataclass
class Timing:
    """How long emulated jobs wait in the queue and then run, in seconds."""

    queue_s: float = 0.5
    run_s: float = 1.5
    #: the share of a vendor's real callback retry span the emulator keeps (1: faithful).
    #: Jobs here take seconds where a vendor takes minutes; fal's two hours become ten seconds
    webhook_retry_scale: float = 10 / 7200


@dataclass
class EmulatedJob:
    id: str
    model: str
    created_at: float
    queue_s: float
    run_s: float
    aspect_ratio: AspectRatio
    resolution: Resolution
    duration_s: int
    outcome: Outcome = Outcome.SUCCESS
    input: dict[str, Any] = field(default_factory=dict)
    cancelled_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def phase(self, now: float) -> JobPhase:
        if self.cancelled_at is not None:
            return JobPhase.CANCELLED
        elapsed = now - self.created_at
        if elapsed < self.queue_s:
            return JobPhase.QUEUED
        if elapsed < self.queue_s + self.run_s:
            return JobPhase.RUNNING
        return JobPhase.SUCCEEDED if self.outcome is Outcome.SUCCESS else JobPhase.FAILED

    def progress(self, now: float) -> float:
        """0..1 through the run (0 while queued)."""
        if self.run_s <= 0:
            return 1.0 if self.phase(now) is not JobPhase.QUEUED else 0.0
        return min(max((now - self.created_at - self.queue_s) / self.run_s, 0.0), 1.0)

    @property
    def size(self) -> tuple[int, int]:
        return frame_size(self.aspect_ratio, self.resolution)


class EmulatedDrop(ConnectionAbortedError):
    """Raised by :class:`DropResponse` to make the server cut the connection."""


class DropResponse(Response):
    """A response that never arrives: the connection drops after the headers.

    ASGI has no "close the socket" message, so it promises a body, sends none and
    fails; the server must then close the connection, and the client sees its answer
    cut off after the vendor already acted -- exactly the ambiguous case we emulate.
    """

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"1024")]})
        raise EmulatedDrop("emulated drop after accept")


class _QuietDrops(logging.Filter):
    """Keep uvicorn from logging our deliberate drops as application errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, EmulatedDrop)


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


class Emulator(ABC):
    """Base of every vendor emulator: an ASGI app plus counters and faults."""

    #: vendor name, matches the provider's name
    name: str

    def __init__(
        self,
        *,
        faults: list[FaultSpec] | None = None,
        timing: Timing | None = None,
        clock: Clock = time.monotonic,
        api_keys: set[str] | None = None,
    ) -> None:
        self.faults = FaultSet(faults)
        self.timing = timing or Timing()
        self.clock = clock
        #: None accepts any well-formed key; a set accepts only those
        self.api_keys = api_keys
        self.jobs: dict[str, EmulatedJob] = {}
        self.accepted_submissions = 0
        #: every accepted submission by the reference its request carried (the attempt key it
        #: named, else its prompt): (wall time, the client's address, the job made). A second
        #: one for a reference is what a duplicate payment looks like; ``stats`` names them
        self.accepted_by: dict[str, list[tuple[float, str, str]]] = {}
        self.rejected_submissions = 0
        self.calls: Counter[str] = Counter()
        #: the most jobs queued or running at once (what a vendor's per-account concurrency
        #: limit counts); a cancelled job counts until its scheduled end
        self.max_active = 0
        #: (scheduled end, job id) of jobs that may still be active: a heap, so counting
        #: costs O(log n) per submit however many jobs are in flight
        self._ends: list[tuple[float, str]] = []
        self._app = Starlette(routes=[*self.routes(), Route("/media/{job_id}.mp4", self._media)])

    # -- what a vendor supplies ---------------------------------------------------------
    @abstractmethod
    def routes(self) -> list[BaseRoute]:
        """The vendor's endpoints."""

    @abstractmethod
    def error(self, status: int, message: str, *, code: str | None = None,
              headers: dict[str, str] | None = None) -> Response:
        """A response in the vendor's error envelope."""

    # -- ASGI ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    @property
    def app(self) -> Emulator:
        return self

    # -- helpers for vendor handlers -------------------------------------------------------
    def authorized(self, key: str | None) -> TypeGuard[str]:
        if not key:
            return False
        return self.api_keys is None or key in self.api_keys

    async def generic_faults(self, *, submit: bool) -> Response | None:
        """Apply outage / slow / flaky / rate-limit. Returns the response to send, if any."""
        slow = self.faults.peek(Fault.SLOW)
        if slow is not None:
            await asyncio.sleep(slow.option("delay"))
        if self.faults.peek(Fault.OUTAGE) is not None:
            return self.error(503, "service unavailable", code="service_unavailable")
        if self.faults.fire(Fault.FLAKY) is not None:
            return self.error(503, "transient upstream error", code="service_unavailable")
        if submit:
            spec = self.faults.fire(Fault.RATE_LIMIT)
            if spec is not None:
                retry_after = spec.option("retry_after")
                return self.error(429, "rate limit exceeded", code="rate_limited",
                                  headers={"Retry-After": f"{retry_after:g}"})
        return None

    def new_job(self, *, model: str, aspect_ratio: AspectRatio, resolution: Resolution,
                duration_s: int, input: dict[str, Any], job_id: str | None = None,
                reference: str | None = None, request: Request | None = None) -> EmulatedJob:
        """Create and count an accepted job, with the outcome the active faults decide;
        recorded under ``reference`` (the submitter's attempt key, when its request names
        one; else the prompt) with where ``request`` came from."""
        outcome = Outcome.SUCCESS
        if self.faults.fire(Fault.CONTENT_POLICY) is not None:
            outcome = Outcome.CONTENT_POLICY
        elif self.faults.fire(Fault.FAIL_LATE) is not None:
            outcome = Outcome.FAIL_LATE
        job = EmulatedJob(
            id=job_id or str(uuid.uuid4()), model=model, created_at=self.clock(),
            queue_s=self.timing.queue_s, run_s=self.timing.run_s, aspect_ratio=aspect_ratio,
            resolution=resolution, duration_s=duration_s, outcome=outcome, input=input,
        )
        if self.faults.fire(Fault.FORGET) is None:
            self.jobs[job.id] = job
        self.accepted_submissions += 1
        client = request.client if request is not None else None
        self.accepted_by.setdefault(reference or str(input.get("prompt") or job.id), []).append(
            (time.time(), f"{client.host}:{client.port}" if client else "", job.id))
        self._count_active(job)
        return job

    def _count_active(self, job: EmulatedJob) -> None:
        heapq.heappush(self._ends, (job.created_at + job.queue_s + job.run_s, job.id))
        while self._ends and self._ends[0][0] <= job.created_at:
            heapq.heappop(self._ends)
        self.max_active = max(self.max_active, len(self._ends))

    def maybe_drop(self) -> Response | None:
        """Call after the job was created: a response that drops the connection when the
        ``drop-after-accept`` fault fires, else None."""
        if self.faults.fire(Fault.DROP_AFTER_ACCEPT) is not None:
            return DropResponse()
        return None

    def media_url(self, request: Request, job: EmulatedJob) -> str:
        """Absolute URL of the job's MP4 as the client reached us (works under a mount)."""
        root = request.scope.get("root_path", "")
        base = f"{request.url.scheme}://{request.url.netloc}{root}"
        return f"{base}/media/{job.id}.mp4"

    async def _media(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None or job.phase(self.clock()) is not JobPhase.SUCCEEDED:
            return Response(status_code=404)
        # an edit's output follows its source (width, height, seconds); a generation its request
        width, height, seconds = job.extra.get("render", (*job.size, job.duration_s))
        data = await asyncio.to_thread(render_mp4, width, height, seconds)
        return Response(data, media_type="video/mp4")

    def stats(self) -> dict[str, Any]:
        now = self.clock()
        phases = Counter(job.phase(now).value for job in self.jobs.values())
        return {
            "accepted_submissions": self.accepted_submissions,
            # references accepted more than once: {reference: [[unix time, client, job id], ...]}
            "duplicates": {ref: [list(r) for r in made] for ref, made in self.accepted_by.items() if len(made) > 1},
            "rejected_submissions": self.rejected_submissions,
            "max_active": self.max_active,
            "jobs": dict(phases),
            "faults": self.faults.describe(),
            "timing": {"queue_s": self.timing.queue_s, "run_s": self.timing.run_s,
                       "webhook_retry_scale": self.timing.webhook_retry_scale},
        }
