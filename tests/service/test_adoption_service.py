"""Adoption through ``reelgate serve`` against ``reelgate sandbox``: fal accepts a job and
the connection drops before its answer. With a public webhook URL the callback, whose URL
names the attempt, hands the job over and it is delivered -- one accepted submission,
nothing at risk. Without one, the attempt ends unknown and at risk, as before."""

from __future__ import annotations

import time

import httpx
import yaml

from tests.service.conftest import free_port


def _run_one_dropped_fal_job(processes, tmp_path, *, public: bool) -> tuple[dict, dict]:
    sandbox_url, _ = processes.start("sandbox", health_path="/_sandbox/stats")
    httpx.post(f"{sandbox_url}/_sandbox/timing", json={"fal": {"queue_s": 0.3, "run_s": 1.0}}).raise_for_status()
    httpx.post(f"{sandbox_url}/_sandbox/faults", json={"fal": ["drop-after-accept:times=1"]}).raise_for_status()
    port = free_port()
    config = tmp_path / "reelgate.yaml"
    config.write_text(yaml.safe_dump({
        "providers": {"fal": {"base_url": f"{sandbox_url}/fal", "api_key": "emulated-fal-key",
                              "options": {"webhook_jwks_url": f"{sandbox_url}/fal/.well-known/jwks.json"}}},
        "polling": {"initial_s": 0.3, "max_s": 0.6},
        "adoption_window_s": 60,
        **({"service": {"public_url": f"http://127.0.0.1:{port}"}} if public else {}),
    }))
    auth = {"Authorization": f"Bearer {processes.create_key('app')}"}
    url, _ = processes.start("serve", "--config", str(config), port=port)
    job_id = httpx.post(f"{url}/v1/jobs", headers=auth, json={"prompt": "a fox", "providers": ["fal"]},
                        timeout=30).raise_for_status().json()["id"]
    deadline = time.monotonic() + 60
    while (job := httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth).raise_for_status().json())["status"] not in (
            "succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job, httpx.get(f"{sandbox_url}/_sandbox/stats").json()["fal"]


def test_a_lost_fal_answer_is_adopted_through_the_callback_naming_its_attempt(processes, tmp_path):
    job, fal = _run_one_dropped_fal_job(processes, tmp_path, public=True)
    assert job["status"] == "succeeded", (job["error"], job["attempts"])
    (attempt,) = job["attempts"]  # the same attempt, never resent
    assert attempt["outcome"] == "succeeded" and attempt["vendor_job_id"]
    assert attempt["cost_usd"] == attempt["estimated_usd"] > 0
    assert job["at_risk"] == [] and job["at_risk_usd"] == 0
    assert fal["accepted_submissions"] == 1


def test_without_a_public_url_a_lost_fal_answer_stays_at_risk(processes, tmp_path):
    job, fal = _run_one_dropped_fal_job(processes, tmp_path, public=False)
    assert job["status"] == "failed" and job["error"]["class"] == "AmbiguousSubmit", job
    (attempt,) = job["attempts"]
    assert attempt["outcome"] == "unknown" and attempt["vendor_job_id"] is None and attempt["cost_usd"] == 0
    assert job["at_risk"] == [{"provider": "fal", "vendor_job_id": None, "attempt_key": f"{job['id']}.1",
                               "usd": attempt["estimated_usd"], "error_class": "AmbiguousSubmit"}]
    assert fal["accepted_submissions"] == 1
