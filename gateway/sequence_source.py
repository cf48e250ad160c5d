"""Where a sequence's source video comes from: a local file, a data URI, a URL or a finished
job of this gateway, brought into the sequence's work directory once (a resumed sequence
finds it there).

A URL is fetched with the gateway's client, or, in the HTTP service, through a transport
that connects to public addresses only (``Gateway.public_sources_only``): the service is
never a way into its own network.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from gateway.job import JobStatus, VideoJob
from gateway.operations import MAX_VIDEO_BYTES, ExtendSpec, SourceVideo, VideoKind, sniff_video_type
from gateway.safe_fetch import PublicOnlyTransport
from gateway.storage.atomic_file import write_file
from gateway.storage.mirror import MirrorOptions, download

if TYPE_CHECKING:
    from gateway.api import Gateway

#: the source length a quote assumes when it cannot look at the source (a URL, a job)
ASSUMED_SOURCE_S = 5.0
SOURCE_FILE = "source.mp4"


def known_duration(source: SourceVideo | None) -> float | None:
    """A source video's length when it can be had without a network call (file, data URI):
    a sequence's quote, and the length an edit keeps (``gateway.sources``). ValueError when
    it is no video PyAV can read."""
    from gateway import joining

    if source is None or source.kind in (VideoKind.URL, VideoKind.JOB):
        return None
    if source.kind is VideoKind.PATH:
        return joining.probe(Path(source.value)).duration_s
    with tempfile.TemporaryDirectory(prefix="reelgate-") as tmp:
        path = Path(tmp) / SOURCE_FILE
        path.write_bytes(_data_uri_bytes(source.value))
        return joining.probe(path).duration_s


def _data_uri_bytes(value: str) -> bytes:
    return base64.b64decode(value.partition(",")[2])


async def fetch_source(gateway: Gateway, parent: VideoJob, work: Path) -> Path | None:
    """The source as a local file, or None for a chain that starts from nothing.
    ValueError names what is wrong with the source."""
    spec = parent.request.edit
    assert isinstance(spec, ExtendSpec)
    if spec.source_job is not None:
        return await _from_job(gateway, parent, spec.source_job, work / SOURCE_FILE)
    source = spec.source
    if source is None:
        return None
    if source.kind is VideoKind.PATH:
        path = Path(source.value)
        if not await asyncio.to_thread(path.is_file):
            raise ValueError(f"file {source.value!r} no longer exists")
        return path
    target = work / SOURCE_FILE
    if await asyncio.to_thread(target.exists):  # fetched before a restart
        return target
    if source.kind is VideoKind.DATA_URI:
        await asyncio.to_thread(target.write_bytes, _data_uri_bytes(source.value))
        return target
    options = MirrorOptions(max_bytes=MAX_VIDEO_BYTES, require_mp4=False)
    if gateway.public_sources_only:
        async with httpx.AsyncClient(transport=PublicOnlyTransport(), trust_env=False) as client:
            await download(client, httpx.Request("GET", source.value), target, provider="source", options=options)
    else:
        await download(gateway.client, httpx.Request("GET", source.value), target, provider="source",
                       options=options)
    head = await asyncio.to_thread(_head, target)
    if sniff_video_type(head) is None:
        await asyncio.to_thread(target.unlink)
        raise ValueError(f"{source.value} is not an MP4, MOV or WebM video")
    return target


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(16)


async def _from_job(gateway: Gateway, parent: VideoJob, job_id: str, target: Path) -> Path:
    if await asyncio.to_thread(target.exists):
        return target
    job = await gateway.fetch(job_id, owner=parent.owner)
    if job is None:
        raise ValueError(f"there is no job {job_id!r}")
    if job.status is not JobStatus.SUCCEEDED or job.output is None:
        raise ValueError(f"job {job_id!r} has no finished video (it is {job.status.value})")
    kept = Path(job.output.path) if job.output.path else None
    if kept is not None and await asyncio.to_thread(kept.is_file):
        await asyncio.to_thread(shutil.copyfile, kept, target)
    elif job.output.uri is not None and gateway.open_kept is not None:  # the service's copy: vendor URLs expire
        await write_file(target, gateway.open_kept(job.output.uri), max_bytes=MAX_VIDEO_BYTES)
    else:
        await gateway.download(job, target)
    return target
