"""Sequences in the sandbox: real adapters and emulators on loopback, a real store, PyAV
on the delivered files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import httpx
import pytest

from gateway.api import Gateway
from gateway.config import PollingConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.faults import parse_fault
from gateway.emulation.render import render_mp4
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.errors import StoreUnavailable
from gateway.job import JobStatus, VideoJob
from gateway.plugins import discover
from gateway.request import VideoRequest
from gateway.sequence import segment_id
from gateway.store.sqlite import SqliteJobStore
from tests.support import until

FAST = Settings(polling=PollingConfig(initial_s=0.02, max_s=0.05), fallback_order=["fal", "apiframe", "railwail"])


def seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        assert frames, "no picture"
        assert container.duration is not None
        return container.duration / av.time_base


@pytest.fixture
def sandbox():
    servers: list[BackgroundServer] = []

    def started(faults: dict[str, list[str]] | None = None, timing: Timing | None = None) -> tuple[Sandbox, str]:
        parsed = {v: [parse_fault(f) for f in fs] for v, fs in (faults or {}).items()}
        box = Sandbox.from_providers(discover().providers, parsed, timing or Timing(queue_s=0.02, run_s=0.05))
        server = BackgroundServer(box.app).start()
        servers.append(server)
        return box, server.url

    yield started
    for server in servers:
        server.stop()


def accepted(box: Sandbox) -> int:
    return sum(v["accepted_submissions"] for v in box.stats().values())


async def test_extend_a_5s_clip_to_20s_with_a_store(sandbox, tmp_path):
    box, url = sandbox()
    source = tmp_path / "clip.mp4"
    source.write_bytes(render_mp4(1280, 720, 5))
    async with SqliteJobStore(tmp_path / "jobs.db") as store:
        async with Gateway.from_settings(FAST, sandbox_url=url, store=store) as gw:
            gw.workdir = tmp_path / "work"
            request = VideoRequest(prompt="the fox runs on", edit={"operation": "extend", "source": str(source),
                                                                    "target_seconds": 20,
                                                                    "prompts": ["a", "b"]})
            job = await gw.generate(request, output=tmp_path / "out.mp4")
            assert job.status is JobStatus.SUCCEEDED, job.error
            assert abs(seconds(tmp_path / "out.mp4") - 20) <= 0.5
            segments = job.to_dict()["segments"]
            assert [s["duration_s"] for s in segments] == [5, 5, 5]
            assert all(s["provider"] and s["cost_usd"] > 0 for s in segments)
            assert accepted(box) == 3 and len(job.attempts) == 3
            assert job.cost_usd == sum(a.cost_usd for a in job.attempts) > 0
            children = [await store.get(segment_id(job.id, i)) for i in range(3)]
            assert [c.request.prompt for c in children] == ["a", "b", "the fox runs on"]
            assert all(c.parent_id == job.id and c.request.start_image is not None for c in children)
            assert (await store.get(job.id)).status is JobStatus.SUCCEEDED
            assert "remuxed" in job.notes[-1]


async def test_generate_20s_is_a_chain_from_nothing_and_falls_back_per_segment(sandbox, tmp_path):
    box, url = sandbox({"fal": ["outage"]})
    async with Gateway.from_settings(FAST, sandbox_url=url) as gw:
        gw.workdir = tmp_path / "work"
        report = gw.quote(VideoRequest(prompt="a kite", edit={"operation": "extend", "target_seconds": 20}))
        assert len(report.to_dict()["segments"]) == 4 and report.usd > 0
        job = await gw.generate(VideoRequest(prompt="a kite", edit={"operation": "extend", "target_seconds": 20}),
                                output=tmp_path / "kite.mp4")
        assert job.status is JobStatus.SUCCEEDED, job.error
        assert abs(seconds(tmp_path / "kite.mp4") - 20) <= 0.5
        assert all(s["provider"] != "fal" for s in job.to_dict()["segments"])
        assert accepted(box) == 4


async def extend_to_vendor(gw: Gateway) -> tuple[VideoJob, str]:
    """A 10 s extend submitted, once its first segment is accepted at the vendor: the job
    and that segment's id."""
    job = await gw.submit(VideoRequest(prompt="x", edit={"operation": "extend", "target_seconds": 10}))
    child_id = segment_id(job.id, 0)

    def segment_at_vendor() -> bool:
        child = gw.get(child_id)
        return child is not None and child.current is not None and child.current.vendor_job is not None

    await until(segment_at_vendor)
    return job, child_id


async def test_cancelling_a_sequence_cancels_its_running_segment(sandbox, tmp_path):
    box, url = sandbox(timing=Timing(queue_s=5.0, run_s=30.0))
    async with Gateway.from_settings(FAST, sandbox_url=url) as gw:
        gw.workdir = tmp_path / "work"
        job, child_id = await extend_to_vendor(gw)
        cancelled = await gw.cancel(job)
        assert cancelled.status is JobStatus.CANCELLED
        assert gw.get(child_id).status is JobStatus.CANCELLED
        assert cancelled.attempts[0].outcome.value == "cancelled"
        assert accepted(box) == 1
        assert not (tmp_path / "work" / job.id).exists()  # nothing resumes it: its files are gone


async def test_a_failed_sequence_leaves_no_files(sandbox, tmp_path):
    _, url = sandbox({v: ["outage"] for v in ("fal", "apiframe", "railwail")})
    async with Gateway.from_settings(FAST, sandbox_url=url) as gw:
        gw.workdir = tmp_path / "work"
        job = await gw.wait(await gw.submit(VideoRequest(prompt="x", edit={"operation": "extend",
                                                                          "target_seconds": 10})))
        assert job.status is JobStatus.FAILED
        assert (tmp_path / "work").is_dir() and not (tmp_path / "work" / job.id).exists()


async def test_a_stopping_gateway_leaves_the_running_segment_for_a_resume(sandbox, tmp_path):
    box, url = sandbox(timing=Timing(queue_s=5.0, run_s=30.0))
    # the caller's client outlives the gateway: a cancel sent while it stops would reach the vendor
    async with SqliteJobStore(tmp_path / "jobs.db") as store, httpx.AsyncClient() as client:
        async with Gateway.from_settings(FAST, sandbox_url=url, store=store, client=client) as gw:
            gw.workdir = tmp_path / "work"
            job, child_id = await extend_to_vendor(gw)
            tasks = list(gw._tasks.values())
        await asyncio.gather(*tasks, return_exceptions=True)  # what the stop cut off has ended
        child = await store.get(child_id)
        assert child is not None and not child.status.terminal  # polled by the resume, not cancelled
        assert child.attempts[0].outcome.value == "pending"
        assert not any(v["jobs"].get("cancelled") for v in box.stats().values())


async def test_the_budget_is_the_whole_sequences_and_is_held_until_it_settles(sandbox, tmp_path):
    from gateway.errors import BudgetExceeded

    box, url = sandbox()
    async with Gateway.from_settings(FAST, sandbox_url=url) as gw:
        gw.workdir = tmp_path / "work"
        chain = {"operation": "extend", "target_seconds": 20}
        one_clip = gw.quote(VideoRequest(prompt="x")).plan.candidates[0].quote.usd
        with pytest.raises(BudgetExceeded, match="sequence of 4 clips"):
            await gw.submit(VideoRequest(prompt="x", max_cost_usd=float(one_clip) * 2, edit=chain))
        assert accepted(box) == 0 and gw.ledger.reserved() == {}
        job = await gw.submit(VideoRequest(prompt="x", edit=chain))
        held = gw.ledger.reserved()[job.id]
        assert held == gw.quote(VideoRequest(prompt="x", edit=chain)).usd
        job = await gw.wait(job)
        assert job.status is JobStatus.SUCCEEDED and gw.ledger.reserved() == {}
        assert gw.ledger.spent_today() == job.cost_usd == sum(a.cost_usd for a in job.attempts)


async def test_the_library_extends_a_finished_job_by_its_id(sandbox, tmp_path):
    box, url = sandbox()
    async with Gateway.from_settings(FAST, sandbox_url=url) as gw:
        gw.workdir = tmp_path / "work"
        first = await gw.generate(VideoRequest(prompt="a fox", resolution="720p"))
        assert first.status is JobStatus.SUCCEEDED
        longer = await gw.extend(first.id, seconds=14, prompt="the fox runs on", output=tmp_path / "l.mp4")
        assert longer.status is JobStatus.SUCCEEDED, longer.error
        assert longer.request.edit.source_job == first.id
        assert abs(seconds(tmp_path / "l.mp4") - 14) <= 0.5
        assert accepted(box) == 2  # the source's clip, then one 9 s segment


async def test_the_deadline_covers_the_whole_sequence_and_stops_its_segment(sandbox, tmp_path):
    box, url = sandbox(timing=Timing(queue_s=5.0, run_s=30.0))
    async with Gateway.from_settings(FAST, sandbox_url=url) as gw:
        gw.workdir = tmp_path / "work"
        job = await gw.generate(VideoRequest(prompt="x", deadline_s=1.5,
                                             edit={"operation": "extend", "target_seconds": 10}))
        assert job.status is JobStatus.FAILED and job.error["class"] == "DeadlineExceeded"
        segment = gw.get(segment_id(job.id, 0))
        assert segment.status is JobStatus.CANCELLED and gw.following() == []
        assert accepted(box) == 1 and gw.ledger.reserved() == {}


class StoreAwayAfterSegment1(SqliteJobStore):
    """SQLite whose saves answer ``StoreUnavailable`` ``outage`` times, from the moment segment 1
    is stored finished: the store goes away while the sequence is between its segments."""

    def __init__(self, path: Path, outage: int) -> None:
        super().__init__(path)
        self.outage, self.down, self.refused = outage, 0, 0

    def _away(self) -> None:
        if self.down:
            self.down -= 1
            self.refused += 1
            raise StoreUnavailable("the job store (PostgreSQL) is unavailable (PoolTimeout)")

    async def release(self, job_id: str, owner_id: str) -> bool:
        self._away()
        return await super().release(job_id, owner_id)

    async def save(self, job: VideoJob, *, lease_owner: str | None = None, release: bool = False) -> None:
        self._away()
        await super().save(job, lease_owner=lease_owner, release=release)
        if job.id.endswith("-s1") and job.status.terminal and self.outage:
            self.down, self.outage = self.outage, 0


@pytest.mark.parametrize("lease_owner", [None, "replica-a"])
async def test_a_sequence_waits_through_a_store_outage_between_its_segments(sandbox, tmp_path, lease_owner):
    """The parent's save after segment 1 waits for the store (it used to raise: the sequence
    stopped mid-way, left for a claim or a restart), and with leases the finished segment's
    release is left to lapse; then the sequence goes on, each segment submitted once."""
    box, url = sandbox()
    async with StoreAwayAfterSegment1(tmp_path / "jobs.db", outage=2) as store:
        async with Gateway.from_settings(FAST, sandbox_url=url, store=store) as gw:
            gw.workdir, gw.lease_owner = tmp_path / "work", lease_owner
            request = VideoRequest(prompt="a fox", edit={"operation": "extend", "target_seconds": 10})
            job = await gw.generate(request, output=tmp_path / "out.mp4")
            assert store.refused == 2  # the store was away between segment 1 and segment 2
            assert job.status is JobStatus.SUCCEEDED, job.error
            assert accepted(box) == 2 and len(job.attempts) == 2
            assert (await store.get(job.id)).status is JobStatus.SUCCEEDED
            assert [(await store.get(segment_id(job.id, i))).status for i in range(2)] == [JobStatus.SUCCEEDED] * 2


class StoreAwayAtSegment2(SqliteJobStore):
    """SQLite away when the sequence moves on to segment 2: its leases of the segments are
    refused once, its read of segment 2 ``reads`` times, and then the answer to segment 2's
    creation is lost once (the row is committed; the caller hears ``StoreUnavailable``)."""

    def __init__(self, path: Path, reads: int) -> None:
        super().__init__(path)
        self.reads, self.lost, self.leases_refused, self.refused = reads, 1, 1, 0
        self.creates: list[str] = []

    def _away(self) -> None:
        self.refused += 1
        raise StoreUnavailable("the job store (PostgreSQL) is unavailable (PoolTimeout)")

    async def lease_segments(self, parent_id: str, job_ids: list[str], owner_id: str, lease_s: float) -> bool:
        if self.leases_refused:
            self.leases_refused -= 1
            self._away()
        return await super().lease_segments(parent_id, job_ids, owner_id, lease_s)

    async def get(self, job_id: str, *, owner: str | None = None) -> VideoJob | None:
        if job_id.endswith("-s2") and self.reads:
            self.reads -= 1
            self._away()
        return await super().get(job_id, owner=owner)

    async def create_or_get(self, job: VideoJob, *, owner: str | None = None,
                            lease: tuple[str, float] | None = None) -> tuple[VideoJob, bool]:
        answer = await super().create_or_get(job, owner=owner, lease=lease)
        self.creates.append(job.id)
        if job.id.endswith("-s2") and self.lost:
            self.lost -= 1
            self._away()  # committed, but the answer never came back
        return answer


@pytest.mark.parametrize("lease_owner", [None, "replica-a"])
async def test_a_sequence_waits_through_a_store_outage_reading_and_creating_its_next_segment(
        sandbox, tmp_path, lease_owner):
    """The read of segment 2 and its creation wait for the store (they used to end the parent's
    task: the sequence stalled until a claim or a restart). A creation whose answer was lost is
    tried again and finds the segment it made: one row, one submission, one payment per segment."""
    box, url = sandbox()
    async with StoreAwayAtSegment2(tmp_path / "jobs.db", reads=2) as store:
        async with Gateway.from_settings(FAST, sandbox_url=url, store=store) as gw:
            gw.workdir, gw.lease_owner = tmp_path / "work", lease_owner
            request = VideoRequest(prompt="a fox", edit={"operation": "extend", "target_seconds": 10})
            job = await asyncio.wait_for(gw.generate(request, output=tmp_path / "out.mp4"), 60)
            assert job.status is JobStatus.SUCCEEDED, job.error
            assert store.refused == (4 if lease_owner else 3)  # 2 reads, 1 lost creation, (1 lease)
            second = segment_id(job.id, 1)
            assert store.creates.count(second) == 2  # tried again after its answer was lost ...
            assert accepted(box) == 2 and len(job.attempts) == 2  # ... and submitted once
            assert [a.provider for a in (await store.get(second)).attempts] == [job.attempts[1].provider]
            assert gw.ledger.reserved() == {} and job.at_risk_usd == 0
            assert job.cost_usd == sum([(await store.get(segment_id(job.id, i))).cost_usd for i in range(2)],
                                       start=job.cost_usd * 0)
            assert (await store.get(job.id)).status is JobStatus.SUCCEEDED
