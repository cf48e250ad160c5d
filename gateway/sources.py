"""An edit's source video, resolved before planning: what it is and how long it is.

A vendor can only fetch a URL (or take the bytes inline), so ``edit.source = "vid_..."`` is
replaced by that job's video URL, the one its vendor returned, before any provider is
judged. The job must be the caller's own (same owner) and have succeeded. A video whose
download needs the first vendor's key cannot be handed to another vendor as a URL: such a
source is fetched here (with that key, size-capped) and inlined as a data URI.

A modify or reframe keeps its source's length, so the job records it when it can be had
without a network call: a finished job's own length, or an uploaded (data URI) or local
file probed. A URL's is not known before a vendor fetches it: the job reports the request's.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING

import httpx

from gateway.errors import InvalidRequest, ReelgateError
from gateway.job import JobStatus
from gateway.operations import MAX_VIDEO_DATA_URI_BYTES, SourceVideo, VideoKind, sniff_video_type
from gateway.request import VideoRequest
from gateway.sequence_source import known_duration
from gateway.transport import unbound

if TYPE_CHECKING:
    from gateway.api import Gateway

FIELD = "edit.source"


async def resolve_source(gateway: Gateway, request: VideoRequest,
                         owner: str | None) -> tuple[VideoRequest, float | None]:
    """``request`` with a job-id source replaced by that job's video (unchanged otherwise), and
    the length of a modify's or reframe's source when it is known (None otherwise)."""
    edit = request.edit
    if edit is None or edit.source is None:
        return request, None  # (an extend may name its source job apart: ``ExtendSpec.source_job``)
    kept = edit.operation != "extend"  # a sequence's length is its own, measured as it runs
    if edit.source.kind is not VideoKind.JOB:
        if not kept:
            return request, None
        try:
            return request, await asyncio.to_thread(known_duration, edit.source)
        except ValueError:  # a file PyAV cannot read: the vendor judges it; its length is unknown
            return request, None
    job_id = edit.source.value
    job = await gateway.fetch(job_id, owner=owner)
    if job is None:
        hint = "" if gateway.store is not None else " (this gateway keeps no store: give the video's URL or file)"
        raise InvalidRequest(FIELD, f"job {job_id} is not known{hint}")
    if job.status is not JobStatus.SUCCEEDED or job.output is None:
        raise InvalidRequest(FIELD, f"job {job_id} has no finished video (it is {job.status.value})")
    _provider, download = gateway.result_request(job)
    if "authorization" not in download.headers:
        source = SourceVideo(kind=VideoKind.URL, value=job.output.url)
    else:
        source = SourceVideo(kind=VideoKind.DATA_URI, value=await _inline(gateway, download, job_id))
    resolved = request.model_copy(update={"edit": edit.model_copy(update={"source": source})})
    return resolved, float(job.seconds) if kept else None


async def _inline(gateway: Gateway, download: httpx.Request, job_id: str) -> str:
    try:
        response = await gateway.client.send(download, stream=True)
        try:
            if not response.is_success:
                raise InvalidRequest(FIELD, f"job {job_id}'s video answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_VIDEO_DATA_URI_BYTES:
                    raise InvalidRequest(FIELD, f"job {job_id}'s video is larger than the "
                                                f"{MAX_VIDEO_DATA_URI_BYTES // (1024 * 1024)} MiB sent inline")
        finally:
            await response.aclose()
            unbound(response)
    except httpx.HTTPError as exc:
        raise ReelgateError(f"job {job_id}'s video cannot be fetched ({type(exc).__name__})") from None
    mime = sniff_video_type(bytes(body[:16]))
    if mime is None:
        raise InvalidRequest(FIELD, f"job {job_id}'s output is not an MP4, MOV or WebM video")
    return f"data:{mime};base64,{base64.b64encode(bytes(body)).decode()}"
