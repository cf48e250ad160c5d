"""A vendor's amnesia is not a rejection: the sandbox is restarted empty under running jobs
(every vendor now answers 404 for them). Nothing is submitted a second time; each job
ends failed with ``VendorLostJob`` and its estimate recorded as at risk."""

from __future__ import annotations

import json
import time

import httpx
import yaml

from tests.service.conftest import free_port

VENDORS = ("fal", "apiframe", "railwail")


def test_sandbox_restarted_empty_under_running_jobs_pays_nothing_twice(processes, tmp_path):
    port = free_port()
    sandbox_url, sandbox = processes.start("sandbox", health_path="/_sandbox/stats", port=port)
    slow = {v: {"queue_s": 1.0, "run_s": 600.0} for v in VENDORS}  # still running when the vendor forgets
    httpx.post(f"{sandbox_url}/_sandbox/timing", json=slow).raise_for_status()
    config = tmp_path / "reelgate.yaml"
    config.write_text(yaml.safe_dump({
        "providers": {v: {"base_url": f"{sandbox_url}/{v}", "api_key": f"emulated-{v}-key"} for v in VENDORS},
        "polling": {"initial_s": 0.3, "max_s": 0.6},
    }))
    key = processes.create_key("app")
    auth = {"Authorization": f"Bearer {key}"}
    url, _ = processes.start("serve", "--config", str(config))
    bodies = [{"prompt": "a tower", "aspect_ratio": "9:21"}, {"prompt": "a kite", "providers": ["apiframe"]},
              {"prompt": "a boat", "providers": ["railwail"]}, {"prompt": "a fox", "aspect_ratio": "21:9"}]
    ids = [httpx.post(f"{url}/v1/jobs", json=b, headers=auth).raise_for_status().json()["id"] for b in bodies]

    def jobs() -> list[dict]:
        return [httpx.get(f"{url}/v1/jobs/{i}", headers=auth).raise_for_status().json() for i in ids]

    deadline = time.monotonic() + 30
    while not all(j["attempts"] and j["attempts"][-1]["vendor_job_id"] for j in jobs()):
        assert time.monotonic() < deadline, "jobs never reached their vendors"
        time.sleep(0.1)
    processes.kill(sandbox)
    sandbox_url, _ = processes.start("sandbox", health_path="/_sandbox/stats", port=port)  # empty

    deadline = time.monotonic() + 90
    while True:
        final = jobs()
        if all(j["status"] in ("succeeded", "failed", "cancelled") for j in final):
            break
        assert time.monotonic() < deadline, final
        time.sleep(0.2)
    for job in final:
        assert job["status"] == "failed" and job["error"]["class"] == "VendorLostJob", job
        (attempt,) = job["attempts"]  # not tried anywhere else
        assert attempt["outcome"] == "unknown" and attempt["cost_usd"] == 0
        assert job["at_risk_usd"] == attempt["at_risk_usd"] == attempt["estimated_usd"] > 0
        assert job["at_risk"] == [{"provider": attempt["provider"], "vendor_job_id": attempt["vendor_job_id"],
                                   "attempt_key": f"{job['id']}.1", "usd": attempt["estimated_usd"],
                                   "error_class": "VendorLostJob"}]
    assert {j["attempts"][0]["provider"] for j in final} == set(VENDORS)
    stats = httpx.get(f"{sandbox_url}/_sandbox/stats").json()
    assert sum(stats[v]["accepted_submissions"] for v in VENDORS) == 0  # no second submission anywhere

    # an operator finds them: the native API and `reelgate jobs --at-risk`
    listed = httpx.get(f"{url}/v1/jobs", params={"at_risk": "true"}, headers=auth).raise_for_status().json()
    assert sorted(j["id"] for j in listed["data"]) == sorted(ids)
    done = processes.cli("jobs", "--at-risk", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert {j["id"]: j["at_risk"] for j in json.loads(done.stdout)} == {j["id"]: j["at_risk"] for j in final}
    assert "emulated-" not in done.stdout
