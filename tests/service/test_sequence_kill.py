"""SIGKILL in the middle of a 4-segment extend: the restarted server resumes the sequence from
the store and every segment is accepted by a vendor exactly once (the emulators' counters in
a separate ``reelgate sandbox`` process)."""

from __future__ import annotations

import base64
import io
import time

import av
import httpx
import yaml

from gateway.emulation.render import render_mp4

VENDORS = ("fal", "apiframe", "railwail")


def test_killed_mid_sequence_resumes_and_pays_each_segment_once(processes, tmp_path):
    sandbox_url, _ = processes.start("sandbox", health_path="/_sandbox/stats")
    httpx.post(f"{sandbox_url}/_sandbox/timing",
               json={v: {"queue_s": 0.5, "run_s": 2.0} for v in VENDORS}).raise_for_status()
    config = tmp_path / "reelgate.yaml"
    config.write_text(yaml.safe_dump({
        "providers": {v: {"base_url": f"{sandbox_url}/{v}", "api_key": f"emulated-{v}-key"} for v in VENDORS},
        "polling": {"initial_s": 0.2, "max_s": 0.5},
    }))
    auth = {"Authorization": f"Bearer {processes.create_key('app')}"}
    url, server = processes.start("serve", "--config", str(config))
    source = "data:video/mp4;base64," + base64.b64encode(render_mp4(1280, 720, 5)).decode()
    created = httpx.post(f"{url}/v1/jobs", headers=auth, json={
        "prompt": "a long walk", "resolution": "720p",
        "edit": {"operation": "extend", "source": source, "target_seconds": 25}})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]

    def job(base: str) -> dict:
        return httpx.get(f"{base}/v1/jobs/{job_id}", headers=auth).raise_for_status().json()

    deadline = time.monotonic() + 60
    while not (len(job(url)["attempts"]) >= 2 and job(url)["attempts"][1]["vendor_job_id"]):
        assert time.monotonic() < deadline, "the second segment never reached a vendor"
        time.sleep(0.05)
    before = job(url)
    assert before["status"] == "running" and len(before["segments"]) == 4
    assert before["attempts"][1]["outcome"] == "pending"
    processes.kill(server)  # segment 1 done, segment 2 at its vendor, 3 and 4 never created

    url, _ = processes.start("serve", "--config", str(config))
    deadline = time.monotonic() + 120
    while (final := job(url))["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, "the sequence did not finish after the restart"
        time.sleep(0.2)
    assert final["status"] == "succeeded", final["error"]
    stats = httpx.get(f"{sandbox_url}/_sandbox/stats").json()
    assert sum(stats[v]["accepted_submissions"] for v in VENDORS) == 4  # one per segment, none twice
    assert len(final["attempts"]) == 4 and all(a["outcome"] == "succeeded" for a in final["attempts"])
    segments = [httpx.get(f"{url}/v1/jobs/{s['job_id']}", headers=auth).json() for s in final["segments"]]
    assert [len(s["attempts"]) for s in segments] == [1, 1, 1, 1]
    assert final["cost_usd"] == sum(s["cost_usd"] for s in segments) > 0
    content = httpx.get(f"{url}/v1/videos/{job_id}/content", headers=auth)
    assert content.status_code == 200
    with av.open(io.BytesIO(content.content)) as container:
        assert container.duration is not None and abs(container.duration / av.time_base - 25) <= 0.5
