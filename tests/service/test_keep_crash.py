"""A finished job's video is kept before the one write that stores the job succeeded and
names it (gateway/job_tasks.py, ``JobTasks._keep``). A process that dies between the two
leaves the job stored as submitted: the next one polls the vendor job again (paid once),
keeps the video again under the same name, and stores the job naming it."""

from __future__ import annotations

import asyncio
import hashlib

from gateway.config import PollingConfig, ServiceConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.job import JobStatus
from gateway.plugins import discover
from gateway.request import VideoRequest
from gateway.server.service import Service
from tests.support import dies_at_save


async def test_a_process_killed_between_keeping_a_video_and_storing_it_keeps_it_again(tmp_path):
    home = tmp_path / "home"
    env = {"REELGATE_HOME": str(home)}
    settings = Settings(polling=PollingConfig(initial_s=0.05, max_s=0.2), service=ServiceConfig(require_api_key=False))
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.1, run_s=0.3))
    with BackgroundServer(sandbox.app) as emulators:
        first = await Service.start(settings, sandbox_url=emulators.url, env=env)
        # the video is kept: the process dies before storing the job
        with dies_at_save(first.store, lambda job: job.output is not None and job.output.uri is not None) as dying:
            job = await first.submit(VideoRequest(prompt="a fox"), None)
            async with asyncio.timeout(20):  # bounds a failing test only
                await dying.wait()
            video = home / "videos" / "jobs" / f"{job.id}.mp4"
            assert video.is_file()  # kept, and not yet named by any record
            stored = await first.store.get(job.id)
            assert stored is not None and stored.status is not JobStatus.SUCCEEDED  # not stored succeeded unkept
            assert stored.current is not None and stored.current.vendor_job is not None
            live = first.gateway.get(job.id)  # announced succeeded here only once its video is kept
            assert live is not None and live.output is not None and live.output.uri == video.as_uri()
        first.gateway.closing = True  # what a kill leaves: tasks gone, nothing cancelled at vendors
        for task in [*first.gateway._tasks.values(), *first._watchers.values()]:
            task.cancel()
        await first.stop()

        second = await Service.start(settings, sandbox_url=emulators.url, env=env)
        try:
            async with asyncio.timeout(20):
                done = await second.wait_kept(await second.gateway.wait(job.id))
            stored = await second.store.get(job.id)
        finally:
            await second.stop()
    assert stored is not None and stored.status is JobStatus.SUCCEEDED
    assert stored.output is not None and stored.output.uri == video.as_uri() and stored.output.sha256
    assert done.output is not None and done.output.uri == video.as_uri()
    assert hashlib.sha256(video.read_bytes()).hexdigest() == stored.output.sha256  # the file the record names
    assert sorted(p.name for p in video.parent.iterdir()) == [video.name]  # kept again in place, no leftover
    stats = sandbox.stats()
    assert sum(s["accepted_submissions"] for s in stats.values()) == 1  # polled again, never paid twice
