"""The fal adapter over real loopback HTTP against the fal emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from gateway.emulation.base import Timing
from gateway.emulation.faults import Fault, FaultSpec
from gateway.emulation.render import probe
from gateway.emulation.sandbox import Sandbox
from gateway.errors import (
    AuthenticationFailed,
    ContentRejected,
    GenerationFailed,
    ProviderRejected,
    RateLimited,
    Unavailable,
)
from gateway.provider import ProviderSettings, Secret, VendorState
from gateway.request import Resolution, VideoRequest
from providers.fal import FalAdapter
from providers.fal.emulator import FalEmulator
from tests.support import drive_adapter

pytestmark = pytest.mark.integration
FAST = Timing(queue_s=0.05, run_s=0.1)
FLASH = "/fal-ai/luma-dream-machine/ray-2-flash"
AUTH = {"Authorization": "Key k"}


def emulator(*faults: FaultSpec, timing: Timing = FAST, **kw: object) -> FalEmulator:
    emu = FalAdapter.emulator(faults=list(faults), timing=timing, **kw)
    assert isinstance(emu, FalEmulator)
    return emu


def adapter(base_url: str, key: str | None = "k") -> FalAdapter:
    return FalAdapter(ProviderSettings("fal", api_key=Secret(key) if key else None, base_url=base_url))


async def submit(fal: FalAdapter, client: httpx.AsyncClient, request: VideoRequest) -> httpx.Response:
    return await client.send(fal.build_submit(request, resolution=Resolution.P540, attempt_key="a"))


@pytest.mark.parametrize(("kw", "size"), [
    ({"aspect_ratio": "9:16", "duration_s": 9}, (540, 960)),
    ({"start_image": "https://img.example/a.png", "resolution": "720p"}, (1280, 720)),
])
async def test_success_renders_a_real_mp4(serve: Callable, kw: dict, size: tuple[int, int]) -> None:
    emu = emulator()
    fal = adapter(serve(emu))
    request = VideoRequest(prompt="a fox", **kw)
    async with httpx.AsyncClient() as client:
        job, status, result = await drive_adapter(fal, request, client)
        video = await client.get(result.url)
    info = probe(video.content)
    assert status.state is VendorState.SUCCEEDED
    assert info["codec"] == "h264" and (info["width"], info["height"]) == size
    assert info["duration_s"] == pytest.approx(request.duration_s, abs=0.2)
    assert result.billed_units == 2.0  # x2 for 9 s, or x2 for 720p
    assert emu.accepted_submissions == 1 and job.vendor_id in emu.jobs


async def test_sandbox_mount_returns_urls_under_the_mount(serve: Callable) -> None:
    base = serve(Sandbox({"fal": emulator()}).app) + "/fal"
    async with httpx.AsyncClient() as client:
        job, status, result = await drive_adapter(adapter(base), VideoRequest(prompt="x"), client)
        assert (await client.get(result.url)).status_code == 200
    assert job.urls["status"].startswith(base + "/fal-ai/luma-dream-machine/requests/")
    assert result.url.startswith(base + "/media/")


async def test_fail_late(serve: Callable) -> None:
    fal = adapter(serve(emulator(FaultSpec(Fault.FAIL_LATE))))
    async with httpx.AsyncClient() as client:
        job, status, result = await drive_adapter(fal, VideoRequest(prompt="x"), client)
        raw = await client.send(fal.build_result(job))
    assert status.state is VendorState.FAILED and result is None
    assert isinstance(status.error, GenerationFailed) and status.error.vendor_code == "runner_server_error"
    assert raw.status_code == 500 and raw.headers["x-fal-error-type"] == "runner_server_error"
    with pytest.raises(GenerationFailed):
        fal.parse_result(job, raw)


async def test_content_policy(serve: Callable) -> None:
    fal = adapter(serve(emulator(FaultSpec(Fault.CONTENT_POLICY))))
    async with httpx.AsyncClient() as client:
        job, status, _ = await drive_adapter(fal, VideoRequest(prompt="x"), client)
        raw = await client.send(fal.build_result(job))
    assert isinstance(status.error, ContentRejected)
    assert raw.status_code == 422 and raw.json()["detail"][0]["type"] == "content_policy_violation"
    with pytest.raises(ContentRejected):
        fal.parse_result(job, raw)


async def test_drop_after_accept_counts_one_job(serve: Callable) -> None:
    emu = emulator(FaultSpec(Fault.DROP_AFTER_ACCEPT, times=1))
    fal = adapter(serve(emu))
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await submit(fal, client, VideoRequest(prompt="x"))
    assert emu.accepted_submissions == 1 and len(emu.jobs) == 1


async def test_rate_limit(serve: Callable) -> None:
    emu = emulator(FaultSpec(Fault.RATE_LIMIT, {"retry_after": 2}, times=1))
    fal = adapter(serve(emu))
    async with httpx.AsyncClient() as client:
        response = await submit(fal, client, VideoRequest(prompt="x"))
        assert response.status_code == 429 and response.headers["retry-after"] == "2"
        with pytest.raises(RateLimited) as exc:
            fal.parse_submit(VideoRequest(prompt="x"), response)
        assert exc.value.retry_after == 2.0
        fal.parse_submit(VideoRequest(prompt="x"), await submit(fal, client, VideoRequest(prompt="x")))
    assert emu.accepted_submissions == 1


async def test_outage_on_submit_and_status(serve: Callable) -> None:
    emu = emulator()
    fal = adapter(serve(emu))
    async with httpx.AsyncClient() as client:
        job = fal.parse_submit(VideoRequest(prompt="x"), await submit(fal, client, VideoRequest(prompt="x")))
        emu.faults.set([FaultSpec(Fault.OUTAGE)])
        response = await submit(fal, client, VideoRequest(prompt="x"))
        assert response.status_code == 503
        with pytest.raises(Unavailable):
            fal.parse_submit(VideoRequest(prompt="x"), response)
        with pytest.raises(Unavailable):
            fal.parse_status(job, await client.send(fal.build_status(job)))
    assert emu.accepted_submissions == 1


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer good"}, {"Authorization": "Key bad"}])
async def test_auth_failures(serve: Callable, headers: dict[str, str]) -> None:
    emu = emulator(api_keys={"good"})
    base = serve(emu)
    async with httpx.AsyncClient() as client:
        raw = await client.post(base + FLASH, json={"prompt": "x"}, headers=headers)
        assert raw.status_code == 401 and "detail" in raw.json()
        with pytest.raises(AuthenticationFailed):
            adapter(base, key="bad").parse_submit(
                VideoRequest(prompt="x"), await submit(adapter(base, key="bad"), client, VideoRequest(prompt="x")))
        ok = await submit(adapter(base, key="good"), client, VideoRequest(prompt="x"))
        assert ok.status_code == 200
    assert emu.accepted_submissions == 1


@pytest.mark.parametrize(("path", "body", "loc", "kind"), [
    (FLASH, {"aspect_ratio": "16:9"}, ["body", "prompt"], "missing"),
    (FLASH, {"prompt": "x", "aspect_ratio": "1:1"}, ["body", "aspect_ratio"], "enum"),
    (FLASH, {"prompt": "x", "resolution": "4k"}, ["body", "resolution"], "enum"),
    (FLASH, {"prompt": "x", "duration": "10s"}, ["body", "duration"], "enum"),
    (FLASH, {"prompt": "x", "loop": "yes"}, ["body", "loop"], "bool_type"),
    (FLASH, {"prompt": "x", "image_url": "https://i.example/a.png"}, ["body", "image_url"], "extra_forbidden"),
    (FLASH + "/image-to-video", {"prompt": "x", "image_url": "ftp://a"}, ["body", "image_url"], "url_parsing"),
    (FLASH, ["not", "an", "object"], ["body"], "dict_type"),
])
async def test_validation_rejects(serve: Callable, path: str, body: object, loc: list, kind: str) -> None:
    emu = emulator()
    base = serve(emu)
    async with httpx.AsyncClient() as client:
        raw = await client.post(base + path, json=body, headers=AUTH)
    assert raw.status_code == 422
    assert raw.json()["detail"][0]["loc"] == loc and raw.json()["detail"][0]["type"] == kind
    with pytest.raises(ProviderRejected):
        adapter(base).parse_submit(VideoRequest(prompt="x"), raw)
    assert (emu.accepted_submissions, emu.rejected_submissions) == (0, 1)


async def test_extra_fields_are_tolerated_and_unknown_endpoint_is_404(serve: Callable) -> None:
    base = serve(emulator())
    async with httpx.AsyncClient() as client:
        ok = await client.post(base + FLASH, json={"prompt": "x", "seed": 3}, headers=AUTH)
        missing = await client.post(base + "/fal-ai/luma-dream-machine/ray-9", json={"prompt": "x"}, headers=AUTH)
    assert ok.status_code == 200 and ok.json()["status"] == "IN_QUEUE" and ok.headers["x-fal-request-id"]
    assert missing.status_code == 404
    with pytest.raises(ProviderRejected):
        adapter(base).parse_submit(VideoRequest(prompt="x"), missing)


async def test_status_shapes_and_result_before_completion(serve: Callable) -> None:
    base = serve(emulator(timing=Timing(queue_s=0.3, run_s=30)))
    fal = adapter(base)
    async with httpx.AsyncClient() as client:
        job = fal.parse_submit(VideoRequest(prompt="x"), await submit(fal, client, VideoRequest(prompt="x")))
        queued = await client.get(job.urls["status"], params={"logs": "true"}, headers=AUTH)
        early = await client.send(fal.build_result(job))
        bad = await client.get(job.urls["status"], params={"logs": "maybe"}, headers=AUTH)
        await asyncio.sleep(0.35)
        running = {v: await client.get(job.urls["status"], params={"logs": v}, headers=AUTH)
                   for v in ("1", "0", "true", "false")}
    assert queued.status_code == 202 and queued.json()["queue_position"] == 0
    assert queued.headers["x-fal-request-id"] == job.vendor_id
    assert bad.status_code == 422
    assert all(r.status_code == 202 and r.json()["status"] == "IN_PROGRESS" for r in running.values())
    assert running["1"].json()["logs"] and running["0"].json()["logs"] is None
    assert fal.parse_status(job, running["1"]).state is VendorState.RUNNING
    with pytest.raises(Unavailable) as exc:
        fal.parse_result(job, early)
    assert exc.value.vendor_code == "not_ready"


async def test_cancel_lifecycle(serve: Callable) -> None:
    base = serve(emulator(timing=Timing(queue_s=30, run_s=1)))
    fal = adapter(base)
    async with httpx.AsyncClient() as client:
        job = fal.parse_submit(VideoRequest(prompt="x"), await submit(fal, client, VideoRequest(prompt="x")))
        assert fal.parse_cancel(job, await client.send(fal.build_cancel(job))) is True
        status = fal.parse_status(job, await client.send(fal.build_status(job)))
        result = await client.send(fal.build_result(job))
        again = await client.send(fal.build_cancel(job))
        unknown = await client.put(job.urls["cancel"].replace(job.vendor_id, "nope"), headers=AUTH)
    assert status.state is VendorState.CANCELLED
    assert result.status_code == 499 and result.json()["error_type"] == "client_cancelled"
    assert again.status_code == 400 and fal.parse_cancel(job, again) is False
    assert unknown.status_code == 404 and fal.parse_cancel(job, unknown) is False
