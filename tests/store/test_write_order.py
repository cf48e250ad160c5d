"""The writes of one job, in order against its vendor calls: the job is on record before
its submit leaves, the vendor job id before the first poll, and the terminal state is
written once (it was written twice, a fifth of the service's store writes)."""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.api import Gateway
from gateway.config import PollingConfig, ProviderConfig, Settings
from gateway.job import JobStatus, VideoJob
from gateway.request import VideoRequest
from gateway.store import SqliteJobStore

BASE = "https://vendor.test/api/v1"
OTHERS = ("fal", "apiframe", "openai_video", "toyvendor")


def settings() -> Settings:
    providers = {name: ProviderConfig(enabled=False) for name in OTHERS}
    providers["railwail"] = ProviderConfig(base_url=BASE, api_key="sk-test")
    return Settings(providers=providers, polling=PollingConfig(initial_s=0.01, max_s=0.01))


def video(status: str) -> dict[str, object]:
    return {"id": "video_1", "object": "video", "model": "luma-ray-flash-2", "status": status, "progress": 100,
            "created_at": 1, "completed_at": 2, "expires_at": None, "prompt": "a fox", "seconds": "5",
            "size": "960x540", "remixed_from_video_id": None, "error": None}


async def test_each_write_comes_before_the_vendor_call_that_needs_it(tmp_path: Path) -> None:
    events: list[tuple[str, ...]] = []

    def vendor(request: httpx.Request) -> httpx.Response:
        events.append(("vendor", request.method, request.url.path))
        return httpx.Response(200, json=video("queued" if request.method == "POST" else "completed"))

    async with SqliteJobStore(tmp_path / "jobs.db") as store:
        create, save = store.create_or_get, store.save

        async def recorded_create(job: VideoJob, **kw: object) -> tuple[VideoJob, bool]:
            made = await create(job, **kw)  # type: ignore[arg-type]
            events.append(("create", job.status.value))
            return made

        async def recorded_save(job: VideoJob, **kw: object) -> None:
            await save(job, **kw)  # type: ignore[arg-type]
            current = job.current
            events.append(("save", job.status.value, "vendor job" if current and current.vendor_job else "-"))

        store.create_or_get = recorded_create  # type: ignore[method-assign]
        store.save = recorded_save  # type: ignore[method-assign]
        client = httpx.AsyncClient(transport=httpx.MockTransport(vendor))
        async with Gateway.from_settings(settings(), store=store, client=client) as gateway:
            job = await gateway.wait(await gateway.submit(VideoRequest(prompt="a fox")))
        await client.aclose()
        stored = await store.get(job.id)
    assert job.status is JobStatus.SUCCEEDED and stored is not None and stored.status is JobStatus.SUCCEEDED
    assert events == [
        ("create", "queued"),
        ("save", "queued", "-"),  # the attempt, before its submit leaves
        ("vendor", "POST", "/api/v1/videos"),
        ("save", "submitted", "vendor job"),  # the vendor job id, before the first poll
        ("vendor", "GET", "/api/v1/videos/video_1"),
        ("save", "succeeded", "vendor job"),  # once
    ]
