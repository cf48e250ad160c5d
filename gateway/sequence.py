"""Sequences: one video longer than any vendor's clip, chained from clips across vendors.

A request whose ``edit`` is an :class:`~gateway.operations.ExtendSpec` is a *sequence*: one
parent job and one child job per segment, all in the store. The last frame of clip *n*
becomes the start image of clip *n+1*, so any vendor that does image-to-video can continue
any other's clip; each segment is planned, routed, retried and fallen back from like any job.
The clips (the source first, when there is one) are then joined into one MP4
(``gateway.joining``).

Durability: segment *n* of parent ``P`` is always job ``P-s<n>``, created in the store before
its submit like every job. A process that resumes ``P`` finds its finished segments there
(not paid again), follows the one in flight as any resumed job is followed (never resubmitted
blindly), and starts only the segments never created. Across replicas the parent's lease
covers its segments (``gateway.segment_leases``).

Money: the parent holds the sum of the segments' quotes; its attempts are its segments'
attempts, so its cost, what is at risk and what the budgets settle are their sums. A
segment holds no budget of its own (that would count it twice).
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import segment_leases
from gateway.errors import InvalidRequest, LeaseLost, ReelgateError
from gateway.images import ImageInput
from gateway.job import JobStatus, VideoJob, VideoOutput
from gateway.live_jobs import OnUpdate
from gateway.operations import ExtendSpec
from gateway.request import Resolution, VideoRequest
from gateway.routing import Plan
from gateway.sequence_source import fetch_source

if TYPE_CHECKING:
    from gateway.api import Gateway

#: the clip lengths a segment may have (``VideoRequest.duration_s``)
CLIP_SECONDS = (5, 9)
#: the most segments one sequence may have (6 x 5 s covers the 30 s cap)
MAX_SEGMENTS = 6


#: the joined video, in the sequence's work directory
JOINED = "sequence.mp4"
#: the output URL of a sequence: joined here, so no vendor URL stands for it
SEQUENCE_URL = "reelgate:sequence/"


#: what a job id looks like (``VideoJob.id``, a segment's ``-s<n>`` included)
JOB_ID = re.compile(r"^vid_[0-9a-f]{32}(-s\d+)?$")


def extend_edit(source: str | Path, target_seconds: int, prompts: Sequence[str] = ()) -> dict[str, Any]:
    """The ``edit`` of a request continuing ``source`` (a video, or a job id) to ``target_seconds``."""
    named = {"source_job": str(source)} if JOB_ID.match(str(source)) else {"source": str(source)}
    return {"operation": "extend", "target_seconds": target_seconds, "prompts": tuple(prompts), **named}


def is_sequence(request: VideoRequest) -> bool:
    return isinstance(request.edit, ExtendSpec)


def spec_of(request: VideoRequest) -> ExtendSpec:
    assert isinstance(request.edit, ExtendSpec)
    return request.edit


def segment_id(parent_id: str, index: int) -> str:
    """Segment ``index`` (0-based) of a parent: fixed, so a resumed parent finds it again."""
    return f"{parent_id}-s{index + 1}"


def seconds_to_add(spec: ExtendSpec, source_s: float) -> float:
    if spec.added_seconds is not None:
        return float(spec.added_seconds)
    assert spec.target_seconds is not None
    missing = spec.target_seconds - source_s
    if missing < min(CLIP_SECONDS) / 2:
        raise InvalidRequest("edit.target_seconds", f"the source is already {source_s:g} s long; "
                                                    f"ask for more than {source_s + min(CLIP_SECONDS) / 2:g} s")
    return missing


def segment_lengths(seconds: float) -> list[int]:
    """Clip lengths whose sum is nearest ``seconds``; of equally near ones, the fewest clips
    (fewer joins, fewer submits). 15 s is 5+5+5; 20 s is 5+5+5+5; 18 s is 9+9."""
    best: tuple[float, int, list[int]] | None = None
    for nines in range(MAX_SEGMENTS + 1):
        for fives in range(MAX_SEGMENTS + 1 - nines):
            if nines + fives == 0:
                continue
            lengths = [9] * nines + [5] * fives
            key = (abs(sum(lengths) - seconds), len(lengths), lengths)
            if best is None or key[:2] < best[:2]:
                best = key
    assert best is not None
    return best[2]


def segment_request(parent: VideoRequest, index: int, lengths: list[int], start_image: ImageInput | None,
                    resolution: str | None) -> VideoRequest:
    """The neutral request of segment ``index``: the parent's look and routing, its own prompt,
    length and start frame. Budget, deadline, webhook and idempotency stay with the parent."""
    spec = spec_of(parent)
    last = index == len(lengths) - 1
    data: dict[str, Any] = {
        "prompt": spec.prompts[index] if index < len(spec.prompts) else parent.prompt,
        "model": parent.model, "aspect_ratio": parent.aspect_ratio, "duration_s": lengths[index],
        "resolution": resolution or parent.resolution, "concepts": parent.concepts, "allow": parent.allow,
        "route": parent.route, "providers": parent.providers, "fallback": parent.fallback,
        "start_image": start_image, "end_image": parent.end_image if last else None,
    }
    return VideoRequest(**{k: v for k, v in data.items() if v is not None})


def png_image(png: bytes) -> ImageInput:
    """A frame as a start image (inlined: it exists nowhere a vendor could fetch it from)."""
    return ImageInput.parse(f"data:image/png;base64,{base64.b64encode(png).decode()}")


async def drive(gateway: Gateway, parent: VideoJob) -> VideoJob:
    """Run (or resume) a sequence to its end: segments in order, then the join."""
    spec = spec_of(parent.request)
    work = work_dir(gateway) / parent.id
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    try:
        source = await fetch_source(gateway, parent, work)
    except ValueError as exc:
        raise InvalidRequest("edit.source", str(exc)) from None
    from gateway import joining

    try:
        info = await asyncio.to_thread(joining.probe, source) if source else None
    except ValueError as exc:
        raise InvalidRequest("edit.source", str(exc)) from None
    state: dict[str, Any] = parent.plan.get("sequence") or {}
    if not state:  # first run: the segments are fixed once, and kept for a resume
        source_s = info.duration_s if info else 0.0
        lengths = segment_lengths(seconds_to_add(spec, source_s))
        state = {"source_s": source_s, "segments": [{"index": i + 1, "job_id": segment_id(parent.id, i),
                                                     "duration_s": n} for i, n in enumerate(lengths)]}
        parent.plan = {"sequence": state}
        await _save(gateway, parent)
    lengths = [s["duration_s"] for s in state["segments"]]
    files = [source] if source is not None else []
    start = None if source is None else png_image(await asyncio.to_thread(joining.last_frame_png, source))
    if start is None:
        start = parent.request.start_image
    done: list[VideoJob] = []
    # the clips match the source's size where a resolution has it (then the join is a remux)
    resolution = _resolution_of(info.width, info.height) if info and parent.request.resolution is None else None
    await segment_leases.take(gateway, parent, [s["job_id"] for s in state["segments"]])
    for i, seg in enumerate(state["segments"]):
        child = await _segment(gateway, parent, done, seg["job_id"],
                               lambda: segment_request(parent.request, i, lengths, start, resolution))  # noqa: B023
        if not child.status.terminal:  # its task ended unfinished: the parent's new holder took it
            raise LeaseLost(f"segment {child.id} is followed elsewhere; so must its sequence be")
        await segment_leases.release(gateway, child)
        done.append(child)
        _mirror(parent, done)
        if child.status is not JobStatus.SUCCEEDED:
            await _discard(gateway, parent)  # nothing will resume it
            return _failed(parent, child, i)
        path = work / f"segment-{i + 1}.mp4"
        if not await asyncio.to_thread(path.exists):
            await gateway.download(child, path)
        files.append(path)
        resolution = resolution or child.resolution  # later clips keep the first's size: a remux
        seg.update(provider=child.provider, cost_usd=float(child.cost_usd), status=child.status.value)
        if i + 1 < len(lengths):
            start = png_image(await asyncio.to_thread(joining.last_frame_png, path))
        await _save(gateway, parent)
    return await _join(gateway, parent, work, files, done)


async def _join(gateway: Gateway, parent: VideoJob, work: Path, files: list[Path], done: list[VideoJob]) -> VideoJob:
    """The clips (the source first) into one MP4: the parent's output."""
    from gateway import joining

    state = parent.plan["sequence"]
    joined = work / JOINED
    result, reencoded = await asyncio.to_thread(joining.join, files, joined)
    size = (await asyncio.to_thread(joined.stat)).st_size
    for clip in files:  # the clips are in the joined file now (a caller's own source file stays)
        if clip.parent == work:
            await asyncio.to_thread(clip.unlink, missing_ok=True)
    # no server path in the URL a caller sees; ``path`` is this process's file until it is kept
    parent.output = VideoOutput(url=f"{SEQUENCE_URL}{parent.id}", path=str(joined), size_bytes=size)
    parent.resolution = done[0].resolution if done else None
    state.update(duration_s=result.duration_s, joined="re-encoded" if reencoded else "remuxed")
    parent.notes.append(f"{len(files)} clips joined ({state['joined']}) into {result.duration_s:g} s")
    parent.progress = 1.0
    if gateway.keep_joined is not None:  # into result storage before it is stored succeeded
        await gateway.keep_joined(parent)
        if parent.output.uri is not None:  # kept: the work directory is no longer needed
            await _discard(gateway, parent)
    _advance(parent, JobStatus.SUCCEEDED)
    gateway.live.emit(parent)
    return parent


async def _segment(gateway: Gateway, parent: VideoJob, done: list[VideoJob], job_id: str,
                   build: Callable[[], VideoRequest]) -> VideoJob:
    """Segment ``job_id`` to its end: a finished one as stored, one in flight followed, a new
    one planned and submitted. Cancelling the parent cancels it."""
    def on_update(child: VideoJob) -> None:
        _mirror(parent, [*done, child])
        parent.progress = (len(done) + (child.progress or 0.0)) / len(parent.plan["sequence"]["segments"])
        _advance(parent, JobStatus.RUNNING)
        gateway.live.emit(parent)

    child = await gateway.store_step(lambda: gateway.fetch(job_id), job_id)
    if child is None:
        child = await _start_segment(gateway, build(), job_id, parent, on_update)
    elif not child.status.terminal and job_id not in gateway.following():
        _follow_segment(gateway, child, on_update)
    if child.status.terminal:
        return child
    _advance(parent, JobStatus.RUNNING)
    try:
        return await gateway.wait(child)
    except asyncio.CancelledError:
        if not segment_leases.parent_stopped():  # the segment's own task stopped: its lease was taken
            raise LeaseLost(f"segment {child.id} is followed elsewhere; so must its sequence be") from None
        if segment_leases.handed_over(gateway, parent):  # the segment goes on where the parent does
            await gateway.abandon(child.id)
        else:  # the parent is cancelled (or out of time): so is the segment
            await gateway.cancel(child.id)
            _mirror(parent, [*done, child])
            await _discard(gateway, parent)
        raise


def _resolution_of(width: int, height: int) -> str | None:
    lines = f"{min(width, height)}p"
    return lines if lines in {r.value for r in Resolution} else None


async def _start_segment(gateway: Gateway, request: VideoRequest, job_id: str, parent: VideoJob,
                         on_update: OnUpdate) -> VideoJob:
    """A segment as a job of its own (planned, stored before its submit, routed); its parent
    holds its budget. A job already stored under that id is followed instead: a race, or this
    creation's own row when the store's answer to it was lost in an outage (tried again, it
    finds the row: the id is fixed, so a segment is never made, nor paid for, twice)."""
    plan = gateway.plan(request)
    job = VideoJob(request=request, id=job_id, owner=parent.owner, parent_id=parent.id)
    if (store := gateway.store) is not None:
        lease = (gateway.lease_owner, gateway.lease_s) if gateway.lease_owner is not None else None
        stored, created = await gateway.store_step(
            lambda: store.create_or_get(job, owner=parent.owner, lease=lease), job_id)
        if not created:
            return stored if stored.status.terminal else _follow_segment(gateway, stored, on_update)
    gateway.launch(job, Plan(plan.policy, plan.candidates, plan.skipped), (), on_update)
    return job


def _follow_segment(gateway: Gateway, job: VideoJob, on_update: OnUpdate) -> VideoJob:
    """Resume a segment a stopped process left in flight, as any resumed job: polled if the
    vendor has it, never resubmitted blindly."""
    try:
        plan: Plan | None = gateway.plan(job.request)
    except ReelgateError:
        plan = None
    gateway.launch(job, plan, (), on_update, resume=True)
    return job


def work_dir(gateway: Gateway) -> Path:
    return gateway.workdir or Path(tempfile.gettempdir()) / "reelgate-sequences"


async def _discard(gateway: Gateway, parent: VideoJob) -> None:
    """The clips and joined file, once nothing reads them: it ended unjoined, or is kept."""
    await asyncio.to_thread(shutil.rmtree, work_dir(gateway) / parent.id, ignore_errors=True)


async def _save(gateway: Gateway, parent: VideoJob) -> None:
    """The parent on record between its segments (what a resume starts from). Through a store
    outage it waits, as a job's own saves do: given up, the sequence stopped mid-way here and
    waited for a claim (or a restart) to go on."""
    await gateway.checkpoint(parent)


def _mirror(parent: VideoJob, children: list[VideoJob]) -> None:
    """The parent's attempts are its segments' (the same objects while they run here)."""
    parent.attempts = [a for child in children for a in child.attempts]


def _advance(parent: VideoJob, status: JobStatus) -> None:
    if parent.status is JobStatus.QUEUED:
        parent.move(JobStatus.SUBMITTED)
    if parent.status is not status:
        parent.move(status)


def _failed(parent: VideoJob, child: VideoJob, index: int) -> VideoJob:
    paid = [j for j in parent.plan["sequence"]["segments"][:index] if j.get("cost_usd")]
    parent.error = {**(child.error or {}), "segment": index + 1, "segment_job": child.id}
    if paid:
        parent.notes.append(f"segments {', '.join(str(s['index']) for s in paid)} were made and billed; "
                            f"they stay readable as their own jobs")
    if child.status is JobStatus.CANCELLED:
        parent.move(JobStatus.CANCELLED)
    else:
        parent.move(JobStatus.FAILED)
    return parent


async def copy_output(gateway: Gateway, job: VideoJob, target: Path) -> Path:
    """The joined video to ``target`` (``Gateway.download`` of a sequence)."""
    assert job.output is not None
    source = work_dir(gateway) / job.id / JOINED
    if source != target:
        await asyncio.to_thread(shutil.copyfile, source, target)
    job.output.path = str(target)
    return target


async def file_chunks(path: Path, size: int = 1 << 20) -> AsyncIterator[bytes]:
    """A local file as chunks (a joined sequence into result storage)."""
    with open(path, "rb") as fh:  # noqa: ASYNC230 -- each read is one chunk of a local file
        while chunk := await asyncio.to_thread(fh.read, size):
            yield chunk
