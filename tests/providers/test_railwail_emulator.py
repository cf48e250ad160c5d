"""The real railwail adapter over real loopback HTTP against the railwail emulator."""

from __future__ import annotations

import base64
from decimal import Decimal

import httpx
import pytest

from gateway.emulation.base import Timing
from gateway.emulation.faults import Fault, FaultSpec
from gateway.emulation.render import probe
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
from providers.railwail import RailwailAdapter
from tests.support import drive_adapter

pytestmark = pytest.mark.integration

KEY = "rw_live_test_key_0001"
FAST = Timing(queue_s=0.05, run_s=0.1)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def start(serve, *faults: FaultSpec, key: str | None = KEY, api_keys: set[str] | None = None,
          timing: Timing = FAST):
    emulator = RailwailAdapter.emulator(faults=list(faults), timing=timing, api_keys=api_keys)
    base_url = serve(emulator)
    adapter = RailwailAdapter(ProviderSettings("railwail", Secret(key) if key else None, "test",
                                               base_url=base_url, sandbox=True))
    return emulator, adapter, base_url


async def submit(adapter: RailwailAdapter, request: VideoRequest, client: httpx.AsyncClient):
    built = adapter.build_submit(request, resolution=Resolution.P720, attempt_key="a1")
    return adapter.parse_submit(request, await client.send(built))


async def test_success_renders_a_real_mp4(serve) -> None:
    emulator, adapter, _ = start(serve)
    request = VideoRequest(prompt="waves on black sand", aspect_ratio="9:16")
    async with httpx.AsyncClient() as client:
        job, status, result = await drive_adapter(adapter, request, client)
        assert status.state is VendorState.SUCCEEDED and status.progress == 1.0
        download = await client.send(adapter.build_download(job, result))
    assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
    info = probe(download.content)
    assert info["codec"] == "h264" and info["height"] > info["width"]
    assert info["duration_s"] == pytest.approx(5, abs=0.2)
    assert emulator.accepted_submissions == 1


async def test_image_to_video_data_uri_and_9s(serve) -> None:
    emulator, adapter, _ = start(serve)
    data_uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    request = VideoRequest(prompt="p", start_image=data_uri, duration_s=9, aspect_ratio="9:16", resolution="540p")
    async with httpx.AsyncClient() as client:
        job, status, result = await drive_adapter(adapter, request, client)
        info = probe((await client.send(adapter.build_download(job, result))).content)
    assert status.state is VendorState.SUCCEEDED
    assert (info["width"], info["height"]) == (540, 960) and info["duration_s"] == pytest.approx(9, abs=0.2)
    assert emulator.jobs[job.vendor_id].input["input_reference"].startswith("data:image/png")


async def test_content_is_404_before_completion_and_status_carries_poll_hint(serve) -> None:
    _, adapter, _ = start(serve, timing=Timing(queue_s=30, run_s=30))  # never done during the test
    async with httpx.AsyncClient() as client:
        job = await submit(adapter, VideoRequest(prompt="p"), client)
        response = await client.send(adapter.build_status(job))
        assert response.headers["openai-poll-after-ms"] == "2000"
        assert int(response.headers["X-RateLimit-Limit"]) == 60
        assert adapter.parse_status(job, response).poll_after_s == 2.0
        early = await client.get(job.urls["content"], headers={"Authorization": f"Bearer {KEY}"})
    assert early.status_code == 404 and early.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("fault", "cls", "code"), [
    (Fault.FAIL_LATE, GenerationFailed, "internal_error"),
    (Fault.CONTENT_POLICY, ContentRejected, "moderation_blocked"),
])
async def test_accepted_then_failed(serve, fault: Fault, cls: type, code: str) -> None:
    emulator, adapter, _ = start(serve, FaultSpec(fault))
    async with httpx.AsyncClient() as client:
        _, status, result = await drive_adapter(adapter, VideoRequest(prompt="p"), client)
    assert status.state is VendorState.FAILED and type(status.error) is cls
    assert status.error.vendor_code == code and result is None
    assert emulator.accepted_submissions == 1


async def test_drop_after_accept_counts_the_job_once(serve) -> None:
    emulator, adapter, _ = start(serve, FaultSpec(Fault.DROP_AFTER_ACCEPT, times=1))
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await submit(adapter, VideoRequest(prompt="p"), client)
    assert emulator.accepted_submissions == 1 and len(emulator.jobs) == 1


async def test_rate_limit_is_429_with_retry_after(serve) -> None:
    emulator, adapter, _ = start(serve, FaultSpec(Fault.RATE_LIMIT, {"retry_after": 2}, times=1))
    request = VideoRequest(prompt="p")
    async with httpx.AsyncClient() as client:
        response = await client.send(adapter.build_submit(request, resolution=Resolution.P720, attempt_key="a"))
        assert response.status_code == 429 and response.headers["Retry-After"] == "2"
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        with pytest.raises(RateLimited) as exc:
            adapter.parse_submit(request, response)
        assert exc.value.retry_after == 2.0
        await submit(adapter, request, client)  # the fault was for one call only
    assert emulator.accepted_submissions == 1


async def test_outage_is_unavailable(serve) -> None:
    emulator, adapter, _ = start(serve, FaultSpec(Fault.OUTAGE))
    async with httpx.AsyncClient() as client:
        with pytest.raises(Unavailable) as exc:
            await submit(adapter, VideoRequest(prompt="p"), client)
    assert exc.value.status_code == 503 and emulator.accepted_submissions == 0


async def test_missing_and_wrong_key_are_401(serve) -> None:
    emulator, adapter, base_url = start(serve, api_keys={KEY})
    wrong = RailwailAdapter(ProviderSettings("railwail", Secret("rw_live_wrong_key"), "test", base_url=base_url))
    async with httpx.AsyncClient() as client:
        with pytest.raises(AuthenticationFailed) as exc:
            await submit(wrong, VideoRequest(prompt="p"), client)
        assert exc.value.status_code == 401 and exc.value.vendor_code == "invalid_api_key"
        bare = await client.post(f"{base_url}/videos", json={"prompt": "p"})
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "authentication_error"
    assert emulator.accepted_submissions == 0


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": "p", "size": "1920x1080"}, "size"),
    ({"prompt": "p", "size": "big"}, "size"),
    ({"prompt": "p", "seconds": "4"}, "seconds"),
    ({"prompt": "p", "model": "sora-2"}, "model"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "p", "loop": True}, "loop"),
    ({"prompt": "p", "input_reference": {"image_url": "ftp://x/y.png"}}, "input_reference"),
])
async def test_validation_rejects_in_the_envelope(serve, body: dict, param: str) -> None:
    emulator, adapter, base_url = start(serve)
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{base_url}/videos", json=body, headers={"Authorization": f"Bearer {KEY}"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and error["code"] == "bad_request"
    with pytest.raises(ProviderRejected):
        adapter.parse_submit(VideoRequest(prompt="p"), response)
    assert emulator.accepted_submissions == 0 and emulator.rejected_submissions == 1


async def test_multipart_upload_list_delete_and_model(serve) -> None:
    emulator, adapter, base_url = start(serve)
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base_url, headers=auth) as client:
        created = await client.post("/videos", data={"prompt": "p", "seconds": "5", "size": "960x540"},
                                    files={"input_reference": ("a.png", PNG, "image/png")})
        assert created.status_code == 200, created.text
        first = created.json()
        assert (first["status"], first["size"], first["seconds"]) == ("queued", "960x540", "5")
        second = (await client.post("/videos", json={"prompt": "q"})).json()
        assert second["size"] == "1280x720" and second["seconds"] == "5"  # emulator defaults
        page = (await client.get("/videos", params={"limit": 1})).json()
        assert page["object"] == "list" and page["data"][0]["id"] == second["id"] and page["has_more"]
        rest = (await client.get("/videos", params={"limit": 1, "after": page["last_id"]})).json()
        assert rest["first_id"] == first["id"] and not rest["has_more"]
        deleted = (await client.delete(f"/videos/{first['id']}")).json()
        assert deleted == {"id": first["id"], "deleted": True, "object": "video.deleted"}
        assert (await client.get(f"/videos/{first['id']}")).status_code == 404
        pricing = adapter.parse_model_pricing(await client.send(adapter.build_model_pricing()))
        assert (await client.get("/models/no-such-model")).status_code == 404
    assert pricing.credit_cost_fixed == Decimal(40) and pricing.currency == "credits"
    assert emulator.accepted_submissions == 2


async def test_the_list_endpoint_pages_and_refuses_bad_parameters(serve) -> None:
    emulator, _, base_url = start(serve)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        made = [(await client.post("/videos", json={"prompt": f"p{i}"})).json()["id"] for i in range(3)]
        newest = (await client.get("/videos", params={"limit": 2, "order": "desc"})).json()
        assert [v["id"] for v in newest["data"]] == made[:0:-1] and newest["has_more"]
        assert newest["data"][0]["prompt"] == "p2" and isinstance(newest["data"][0]["created_at"], int)
        rest = (await client.get("/videos", params={"limit": 2, "after": newest["last_id"]})).json()
        assert [v["id"] for v in rest["data"]] == made[:1] and not rest["has_more"]
        oldest = (await client.get("/videos", params={"order": "asc"})).json()  # default limit 20
        assert [v["id"] for v in oldest["data"]] == made and oldest["first_id"] == made[0]
        empty = (await client.get("/videos", params={"limit": 0})).json()
        assert empty["data"] == [] and empty["first_id"] is None and empty["has_more"]
        for params, param in (({"order": "newest"}, "order"), ({"limit": 101}, "limit"),
                              ({"limit": -1}, "limit"), ({"after": "video_gone"}, "after")):
            refused = await client.get("/videos", params=params)
            assert refused.status_code == 400 and refused.json()["error"]["param"] == param, params
    assert emulator.calls["list"] == 8
