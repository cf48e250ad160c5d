"""The real apiframe adapter over real loopback HTTP against its emulator."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from gateway.emulation.base import Timing
from gateway.emulation.faults import Fault, FaultSpec
from gateway.emulation.render import probe
from gateway.emulation.sandbox import Sandbox
from gateway.errors import (
    AuthenticationFailed,
    GenerationFailed,
    InsufficientCredits,
    ProviderRejected,
    RateLimited,
    Unavailable,
    VendorLostJob,
)
from gateway.provider import ProviderSettings, Secret, VendorJob, VendorState
from gateway.request import Resolution, VideoRequest
from providers.apiframe import ApiframeAdapter
from providers.apiframe.emulator import CONTENT_POLICY_ERROR, ApiframeEmulator
from tests.support import drive_adapter

pytestmark = pytest.mark.integration

KEY = "afk_integration_key"
FAST = Timing(queue_s=0.05, run_s=0.1)
GENERATE = "/v2/videos/generate"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


def start(serve: Callable, *faults: Fault, **options: object) -> tuple[ApiframeEmulator, ApiframeAdapter, str]:
    options.setdefault("timing", FAST)
    emu = ApiframeAdapter.emulator(faults=[FaultSpec(f) for f in faults], **options)
    url = serve(emu)
    return emu, ApiframeAdapter(ProviderSettings("apiframe", api_key=Secret(KEY), base_url=url)), url


def body(**luma: object) -> dict:
    return {"model": "luma-ray-flash-2", "prompt": "a fox", "lumaParams": {"duration": 5, **luma}}


async def submit(a: ApiframeAdapter, c: httpx.AsyncClient, request: VideoRequest, key: str = "att") -> VendorJob:
    built = a.build_submit(request, resolution=Resolution.P720, attempt_key=key)
    return a.parse_submit(request, await c.send(built))


# -- success ------------------------------------------------------------------------------------
async def test_text_to_video_makes_a_real_720p_mp4(serve: Callable, client: httpx.AsyncClient) -> None:
    emu, a, _ = start(serve)
    job, status, result = await drive_adapter(a, VideoRequest(prompt="a fox"), client)
    assert status.state is VendorState.SUCCEEDED and status.billed_units == 51
    video = await client.send(a.build_download(job, result))
    assert video.headers["content-type"] == "video/mp4"
    info = probe(video.content)
    assert info["codec"] == "h264" and (info["width"], info["height"]) == (1280, 720)
    assert info["duration_s"] == pytest.approx(5, abs=0.2)
    assert emu.accepted_submissions == 1 and emu.balance == 10_000_000 - 51


async def test_image_to_video_9_16_for_9_seconds(serve: Callable, client: httpx.AsyncClient) -> None:
    emu, a, _ = start(serve)
    request = VideoRequest(prompt="door", model="ray-2", duration_s=9, aspect_ratio="9:16", loop=True,
                           start_image="https://example.com/a.png", concepts=["orbit_left"])
    job, status, result = await drive_adapter(a, request, client)
    info = probe((await client.get(result.url)).content)
    assert info["height"] > info["width"] and info["height"] == 1280
    assert info["duration_s"] == pytest.approx(9, abs=0.2)
    assert status.billed_units == 180
    sent = emu.jobs[job.vendor_id].input["lumaParams"]
    assert sent["start_image"] == "https://example.com/a.png" and sent["concepts"] == ["orbit_left"]


async def test_progress_rises_while_processing(serve: Callable, client: httpx.AsyncClient) -> None:
    now = [0.0]
    emu, a, _ = start(serve, timing=Timing(queue_s=1, run_s=10), clock=lambda: now[0])
    job = await submit(a, client, VideoRequest(prompt="x"))
    seen = []
    for t in (0.5, 3.0, 8.0, 11.5):
        now[0] = t
        seen.append(a.parse_status(job, await client.send(a.build_status(job))))
    assert [s.vendor_status for s in seen] == ["QUEUED", "PROCESSING", "PROCESSING", "COMPLETED"]
    assert seen[0].progress == 0 < seen[1].progress < seen[2].progress < 1 == seen[3].progress
    raw = (await client.send(a.build_status(job))).json()
    assert set(raw) >= {"id", "status", "model", "progress", "result", "error", "creditCost",
                        "webhookStatus", "createdAt", "completedAt", "expired", "input"}
    assert raw["createdAt"].endswith("Z") and raw["completedAt"].endswith("Z")


# -- faults the vendor renders in its own shape ----------------------------------------------------
async def test_fail_late_is_failed_free_and_refunded(serve: Callable, client: httpx.AsyncClient) -> None:
    emu, a, _ = start(serve, Fault.FAIL_LATE)
    _, status, result = await drive_adapter(a, VideoRequest(prompt="x", duration_s=9), client)
    assert status.state is VendorState.FAILED and result is None
    assert isinstance(status.error, GenerationFailed) and status.billed_units == 0
    assert emu.balance == 10_000_000


async def test_content_policy_is_failed_with_the_vendor_text(serve: Callable, client: httpx.AsyncClient) -> None:
    _, a, _ = start(serve, Fault.CONTENT_POLICY)
    _, status, _ = await drive_adapter(a, VideoRequest(prompt="x"), client)
    assert status.state is VendorState.FAILED and status.billed_units == 0
    assert type(status.error) is GenerationFailed and CONTENT_POLICY_ERROR in status.error.message


async def test_drop_after_accept_then_resend_returns_the_same_job(serve: Callable, client: httpx.AsyncClient) -> None:
    emu, a, _ = start(serve)
    emu.faults.set([FaultSpec(Fault.DROP_AFTER_ACCEPT, times=1)])
    request = VideoRequest(prompt="x")
    with pytest.raises(httpx.RemoteProtocolError):
        await submit(a, client, request, key="att-drop")
    assert emu.accepted_submissions == 1
    job = await submit(a, client, request, key="att-drop")  # same Idempotency-Key
    assert emu.accepted_submissions == 1 and list(emu.jobs) == [job.vendor_id]
    assert emu.balance == 10_000_000 - 51  # paid once


async def test_same_key_different_body_is_409(serve: Callable, client: httpx.AsyncClient) -> None:
    emu, a, _ = start(serve)
    await submit(a, client, VideoRequest(prompt="x"), key="k1")
    with pytest.raises(ProviderRejected) as info:
        await submit(a, client, VideoRequest(prompt="y"), key="k1")
    assert info.value.status_code == 409 and emu.accepted_submissions == 1


async def test_rate_limit_is_429_with_retry_after(serve: Callable, client: httpx.AsyncClient) -> None:
    emu, a, _ = start(serve)
    emu.faults.set([FaultSpec(Fault.RATE_LIMIT, {"retry_after": 2})])
    with pytest.raises(RateLimited) as info:
        await submit(a, client, VideoRequest(prompt="x"))
    assert info.value.retry_after == 2.0 and emu.accepted_submissions == 0


async def test_outage_is_503_unavailable_on_submit_and_status(serve: Callable, client: httpx.AsyncClient) -> None:
    emu, a, _ = start(serve)
    job = await submit(a, client, VideoRequest(prompt="x"))
    emu.faults.set([FaultSpec(Fault.OUTAGE)])
    with pytest.raises(Unavailable):
        await submit(a, client, VideoRequest(prompt="x"), key="other")
    with pytest.raises(Unavailable) as info:
        a.parse_status(job, await client.send(a.build_status(job)))
    assert info.value.status_code == 503 and emu.accepted_submissions == 1


# -- auth, credits, validation -------------------------------------------------------------------------
async def test_missing_or_invalid_key_is_401(serve: Callable, client: httpx.AsyncClient) -> None:
    emu, _, url = start(serve, api_keys={KEY})
    bare = await client.post(url + GENERATE, json=body())
    assert bare.status_code == 401 and bare.json() == {"error": "Invalid or missing API key"}
    wrong = ApiframeAdapter(ProviderSettings("apiframe", api_key=Secret("afk_wrong"), base_url=url))
    with pytest.raises(AuthenticationFailed) as info:
        await submit(wrong, client, VideoRequest(prompt="x"))
    assert info.value.status_code == 401 and emu.accepted_submissions == 0


async def test_short_balance_is_402_with_the_numbers(serve: Callable, client: httpx.AsyncClient) -> None:
    emu, a, _ = start(serve, credits=60)
    with pytest.raises(InsufficientCredits, match="92 required, 60 available"):
        await submit(a, client, VideoRequest(prompt="x", duration_s=9))
    await submit(a, client, VideoRequest(prompt="x"), key="five")
    assert emu.balance == 9 and emu.accepted_submissions == 1


@pytest.mark.parametrize(("payload", "path"), [
    (body(resolution="720p"), "lumaParams.resolution"),
    ({**body(), "end_image_url": "https://e.com/x.png"}, "end_image_url"),
    (body(duration="5s"), "lumaParams.duration"),
    (body(duration=7), "lumaParams.duration"),
    (body(aspect_ratio="9:21"), "lumaParams.aspect_ratio"),
    (body(concepts=["moonwalk"]), "lumaParams.concepts.0"),
    (body(start_image="file:///etc/passwd"), "lumaParams.start_image"),
    (body(loop="yes"), "lumaParams.loop"),
    ({**body(), "model": "ray-flash-2"}, "model"),
    ({**body(), "prompt": ""}, "prompt"),
    ({**body(), "prompt": "x" * 4001}, "prompt"),
])
async def test_emulator_rejects_what_apiframe_rejects(serve: Callable, client: httpx.AsyncClient,
                                                     payload: dict, path: str) -> None:
    emu, _, url = start(serve)
    response = await client.post(url + GENERATE, json=payload, headers={"X-API-Key": KEY})
    assert response.status_code == 400
    assert path in response.json()["details"] and response.headers["x-request-id"]
    assert emu.accepted_submissions == 0 and emu.rejected_submissions == 1


async def test_emulator_accepts_a_whole_number_float_duration(serve: Callable, client: httpx.AsyncClient) -> None:
    _, _, url = start(serve)
    response = await client.post(url + GENERATE, json=body(duration=9.0), headers={"X-API-Key": KEY})
    assert response.status_code == 202 and response.json()["status"] == "QUEUED"


async def test_validation_reject_reaches_the_adapter_with_its_path(serve: Callable, client: httpx.AsyncClient) -> None:
    _, a, url = start(serve)
    response = await client.post(url + GENERATE, content=b"{not json", headers={"X-API-Key": KEY})
    assert response.status_code == 400 and response.json() == {"error": "Invalid JSON body"}
    reply = await client.post(url + GENERATE, json=body(resolution="1080p"), headers={"X-API-Key": KEY})
    with pytest.raises(ProviderRejected, match="lumaParams.resolution") as info:
        a.parse_submit(VideoRequest(prompt="x"), reply)
    assert info.value.vendor_code == "validation"


# -- status lookups and the catalogue -------------------------------------------------------------------
async def test_unknown_job_is_404_and_bad_id_is_400(serve: Callable, client: httpx.AsyncClient) -> None:
    _, a, url = start(serve)
    ghost = VendorJob("apiframe", "luma-ray-flash-2", str(uuid.uuid4()), url, "test")
    with pytest.raises(VendorLostJob, match="not found") as info:
        a.parse_status(ghost, await client.send(a.build_status(ghost)))
    assert info.value.status_code == 404
    bad = await client.get(url + "/v2/jobs/not-a-uuid", headers={"X-API-Key": KEY})
    assert bad.status_code == 400 and "id" in bad.json()["details"]


async def test_another_accounts_job_is_not_found(serve: Callable, client: httpx.AsyncClient) -> None:
    _, a, url = start(serve)
    job = await submit(a, client, VideoRequest(prompt="x"))
    other = await client.get(f"{url}/v2/jobs/{job.vendor_id}", headers={"X-API-Key": "afk_someone_else"})
    assert other.status_code == 404


async def test_models_lists_the_luma_costs(serve: Callable, client: httpx.AsyncClient) -> None:
    _, _, url = start(serve)
    listed = (await client.get(url + "/v2/models?modality=video", headers={"X-API-Key": KEY})).json()
    costs = {m["id"]: (m["costMin"], m["costMax"]) for m in listed["models"]}
    assert costs == {"luma-ray-flash-2": (51, 92), "luma-ray-2": (100, 180)}
    images = (await client.get(url + "/v2/models?modality=image", headers={"X-API-Key": KEY})).json()
    assert images == {"models": []}


async def test_works_mounted_in_the_sandbox(serve: Callable, client: httpx.AsyncClient) -> None:
    sandbox = Sandbox.from_providers({"apiframe": ApiframeAdapter}, timing=FAST)
    url = serve(sandbox.app)
    a = ApiframeAdapter(ProviderSettings("apiframe", api_key=Secret(KEY), base_url=f"{url}/apiframe"))
    _, status, result = await drive_adapter(a, VideoRequest(prompt="x", aspect_ratio="1:1"), client)
    assert status.state is VendorState.SUCCEEDED and result.url.startswith(f"{url}/apiframe/media/")
    info = probe((await client.get(result.url)).content)
    assert (info["width"], info["height"]) == (720, 720)
