"""Operations through the gateway in the sandbox: a finished job's id as the source, fallback
skipping providers that cannot do the operation, idempotency and budgets like generation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.api import Gateway
from gateway.config import Settings
from gateway.emulation.base import Timing
from gateway.emulation.faults import parse_fault
from gateway.emulation.render import probe
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.errors import InvalidRequest, Unsupported
from gateway.job import JobStatus
from gateway.operations import VideoKind
from gateway.plugins import discover
from gateway.request import VideoRequest
from tests.support import FakeClock

pytestmark = pytest.mark.integration


@pytest.fixture
def world() -> Iterator:
    servers: list[BackgroundServer] = []

    def make(faults: dict[str, list[str]] | None = None) -> tuple[Gateway, Sandbox]:
        parsed = {v: [parse_fault(f) for f in fs] for v, fs in (faults or {}).items()}
        clock = FakeClock()  # jobs of emulated minutes run in milliseconds
        sandbox = Sandbox.from_providers(discover().providers, parsed, Timing(queue_s=5, run_s=20), clock=clock.now)
        server = BackgroundServer(sandbox.app).start()
        servers.append(server)
        return Gateway.from_settings(Settings(fallback_order=["fal", "apiframe", "railwail"]), sandbox_url=server.url,
                                     sleep=clock.sleep, clock=clock.now), sandbox

    yield make
    for server in servers:
        server.stop()


async def test_a_finished_job_id_is_the_source_of_a_reframe(world, tmp_path) -> None:
    gw, sandbox = world()
    async with gw:
        made = await gw.generate(VideoRequest(prompt="a fox", providers=["apiframe"]))
        assert made.status is JobStatus.SUCCEEDED and made.provider == "apiframe"
        job = await gw.generate(VideoRequest(aspect_ratio="9:16", edit={"operation": "reframe", "source": made.id}),
                                output=tmp_path / "tall.mp4")
    assert job.status is JobStatus.SUCCEEDED and job.provider == "fal"
    # the stored request names the video the vendor fetched, not the id
    assert job.request.edit is not None and job.request.edit.source.kind is not VideoKind.JOB
    info = probe((tmp_path / "tall.mp4").read_bytes())
    assert info["height"] > info["width"]
    assert sandbox.stats()["fal"]["accepted_submissions"] == 1


async def test_an_edit_of_a_finished_job_records_its_length_and_an_extend_source_is_still_resolved(world) -> None:
    """A modify keeps its source's length (a 9 s job: 9, at submit); an extend whose ``source``
    is a job id is resolved to that job's video too, but its length is the sequence's own."""
    gw, _ = world()
    async with gw:
        made = await gw.generate(VideoRequest(prompt="a fox", duration_s=9, providers=["fal"]))
        assert made.status is JobStatus.SUCCEEDED and made.seconds == 9
        modify = await gw.submit(VideoRequest(edit={"operation": "modify", "source": made.id}))
        assert modify.source_s == 9 and modify.seconds == 9
        extend = await gw.submit(VideoRequest(prompt="on", edit={"operation": "extend", "source": made.id,
                                                                 "target_seconds": 20}))
        assert extend.request.edit is not None and extend.request.edit.source.kind is VideoKind.URL
        assert extend.source_s is None
        await gw.wait_all([modify, extend])


async def test_unknown_or_unfinished_job_ids_are_refused_before_any_vendor_call(world) -> None:
    gw, sandbox = world()
    async with gw:
        with pytest.raises(InvalidRequest) as info:
            await gw.submit(VideoRequest(edit={"operation": "modify", "source": "vid_" + "b" * 32}))
        assert info.value.field == "edit.source" and "is not known" in info.value.reason
        running = await gw.submit(VideoRequest(prompt="a fox"))
        with pytest.raises(InvalidRequest) as info:
            await gw.submit(VideoRequest(edit={"operation": "modify", "source": running.id}))
        assert "has no finished video" in info.value.reason
        await gw.wait(running)
    assert sandbox.stats()["fal"]["accepted_submissions"] == 1  # only the generation


async def test_fal_down_means_no_one_can_modify_and_the_reasons_say_why(world) -> None:
    gw, sandbox = world(faults={"fal": ["outage"]})
    async with gw:
        src = await gw.generate(VideoRequest(prompt="a fox", providers=["railwail"]))
        job = await gw.wait(await gw.submit(VideoRequest(edit={"operation": "modify", "source": src.id})))
        assert job.status is JobStatus.FAILED
        assert [a.provider for a in job.attempts] == ["fal"]  # never sent to one that cannot modify
        with pytest.raises(Unsupported) as info:
            gw.plan(VideoRequest(edit={"operation": "modify", "source": src.output.url}, providers=["apiframe"]))
        assert info.value.reasons["apiframe"] == ["apiframe cannot modify (model ray-2-flash)"]


async def test_the_same_idempotency_key_returns_the_same_edit_job(world) -> None:
    gw, sandbox = world()
    async with gw:
        src = await gw.generate(VideoRequest(prompt="a fox"))
        request = VideoRequest(edit={"operation": "modify", "source": src.id, "mode": "adhere_2"},
                               idempotency_key="edit-1")
        first = await gw.submit(request)
        again = await gw.submit(request)
        assert again.id == first.id
        done = await gw.wait(first)
    assert done.status is JobStatus.SUCCEEDED
    assert sandbox.stats()["fal"]["accepted_submissions"] == 2  # the source and one modify


async def test_a_source_only_its_vendor_key_can_fetch_is_inlined_not_handed_over(world, tmp_path) -> None:
    gw, sandbox = world()
    async with gw:
        made = await gw.generate(VideoRequest(prompt="a fox", providers=["railwail"]))
        assert made.status is JobStatus.SUCCEEDED
        job = await gw.generate(VideoRequest(edit={"operation": "modify", "source": made.id}),
                                output=tmp_path / "m.mp4")
    assert job.status is JobStatus.SUCCEEDED and job.provider == "fal"
    # railwail's content URL wants railwail's key: fal gets the bytes, never that URL or key
    assert job.request.edit is not None and job.request.edit.source.kind is VideoKind.DATA_URI
    sent = [j.input["video_url"] for j in sandbox.emulators["fal"].jobs.values() if "video_url" in j.input]
    assert len(sent) == 1 and sent[0].startswith("data:video/mp4;base64,")
    assert probe((tmp_path / "m.mp4").read_bytes())["codec"] == "h264"
