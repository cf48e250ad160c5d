"""railwail accepts a job and the connection drops before its answer: the gateway finds the
job in railwail's ``GET /videos`` list (same prompt, created at our submit) and follows it
instead of failing -- delivered, with exactly one accepted submission at the emulator."""

from __future__ import annotations

from gateway.api import Gateway
from gateway.config import PollingConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.faults import parse_fault
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.job import AttemptOutcome, JobStatus
from gateway.plugins import discover
from gateway.request import AspectRatio, Resolution, VideoRequest
from gateway.store.sqlite import SqliteJobStore

FAST = PollingConfig(initial_s=0.05, max_s=0.1)


async def run(tmp_path, **settings) -> tuple:
    sandbox = Sandbox.from_providers(discover().providers, {"railwail": [parse_fault("drop-after-accept:times=1")]},
                                     timing=Timing(queue_s=0.1, run_s=0.3))
    with BackgroundServer(sandbox.app) as server:
        async with SqliteJobStore(tmp_path / "jobs.db") as store:
            gateway = Gateway.from_settings(Settings(polling=FAST, **settings), sandbox_url=server.url, store=store)
            async with gateway:
                railwail = sandbox.emulators["railwail"]
                for i in range(3):  # other jobs in the list, one with the same prompt long before ours
                    railwail.new_job(model="luma-ray-flash-2", aspect_ratio=AspectRatio.R16_9,
                                     resolution=Resolution.P720, duration_s=5, job_id=f"video_other{i}",
                                     input={"prompt": "an otter" if i else "a heron"}).extra["created_unix"] = 1000
                before = railwail.accepted_submissions
                job = await gateway.submit(VideoRequest(prompt="a heron", providers=("railwail",)))
                done = await gateway.wait(job.id)
    return done, railwail, railwail.accepted_submissions - before


async def test_a_lost_create_answer_is_adopted_from_the_vendor_list(tmp_path):
    done, railwail, accepted = await run(tmp_path)
    assert done.status is JobStatus.SUCCEEDED, done.error
    (attempt,) = done.attempts
    assert attempt.outcome is AttemptOutcome.SUCCEEDED and attempt.vendor_job is not None
    assert railwail.jobs[attempt.vendor_job.vendor_id].input["prompt"] == "a heron"
    assert accepted == 1  # ours, once: found, never resent
    assert railwail.calls["list"] >= 1 and done.at_risk_usd == 0


async def test_without_an_adoption_window_the_lost_answer_stays_at_risk(tmp_path):
    done, railwail, accepted = await run(tmp_path, adoption_window_s=0)
    assert done.status is JobStatus.FAILED and done.error is not None
    (attempt,) = done.attempts
    assert attempt.outcome is AttemptOutcome.UNKNOWN and done.at_risk_usd > 0
    assert railwail.calls["list"] == 0 and accepted == 1
