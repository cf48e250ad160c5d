"""What ``reelgate generate`` says when interrupted, for each point a job can be at."""

from __future__ import annotations

from gateway.api import Gateway
from gateway.cli_run import interrupted
from gateway.config import Settings
from gateway.job import Attempt, JobStatus, VideoJob
from gateway.provider import VendorJob
from gateway.request import VideoRequest


def gateway_with_a_key() -> Gateway:
    return Gateway.from_settings(Settings(), env={"FAL_KEY": "fal-key-for-the-test"})


def test_a_job_at_a_real_vendor_names_the_vendor_job_and_how_to_reach_it():
    gw = gateway_with_a_key()
    job = VideoJob(VideoRequest(prompt="a fox"), status=JobStatus.RUNNING)
    job.attempts.append(Attempt("fal", "fal-ai/luma", 0.0, f"{job.id}.1", vendor_job=VendorJob(
        "fal", "fal-ai/luma", "req-8c1e", "https://queue.fal.run", "env:FAL_KEY")))
    gw.jobs[job.id] = job
    said = interrupted(gw)
    assert said.startswith(f"interrupted: job {job.id} (running) is vendor job req-8c1e at fal;")
    assert "may still run and be billed" in said and type(gw.providers["fal"]).docs_url in said
    assert "reelgate serve" in said and "DELETE /v1/jobs/<id>" in said
    assert "\n" not in said


def test_a_submit_in_flight_says_a_job_may_exist():
    gw = gateway_with_a_key()
    job = VideoJob(VideoRequest(prompt="a fox"))
    job.attempts.append(Attempt("fal", "fal-ai/luma", 0.0, f"{job.id}.1"))
    gw.jobs[job.id] = job
    assert "had a submit to fal in flight" in interrupted(gw) and "a job may exist there" in interrupted(gw)


def test_before_any_vendor_call_nothing_is_billed():
    gw = gateway_with_a_key()
    assert interrupted(gw) == "interrupted before any job was submitted: nothing was started or billed"
    job = VideoJob(VideoRequest(prompt="a fox"))
    gw.jobs[job.id] = job
    assert interrupted(gw) == f"interrupted: job {job.id} was not yet sent to any vendor: nothing was started or billed"
