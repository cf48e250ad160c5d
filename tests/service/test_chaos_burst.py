"""Chaos: a 200-job burst through ``reelgate serve`` (vendor webhooks configured) against
``reelgate sandbox``, the server SIGKILLed at a random moment (3 seeds) and restarted. The
caller resends what got no answer, with the same Idempotency-Key. Afterwards every job is
terminal; every job either delivered its video or names where it may have been billed (at
risk); no job was accepted by a vendor twice; and every job fal accepted is delivered: fal
retries its callbacks (emulated on fal's own schedule, scaled), so a submit whose answer
the kill lost is adopted through the callback naming its attempt, never left at risk."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from tests.service.conftest import free_port

VENDORS = ("fal", "apiframe", "railwail")
JOBS = 200
#: fal's callback retries (10 over 2 h) squeezed into a minute: they outlast the restart
FAL_RETRY_SCALE = 60 / 7200


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_sigkill_at_a_random_moment_of_a_burst_pays_for_nothing(processes, tmp_path, seed):
    rng = random.Random(seed)
    sandbox_url, _ = processes.start("sandbox", health_path="/_sandbox/stats")
    timing = {v: {"queue_s": 0.5, "run_s": 2.0} for v in VENDORS}
    timing["fal"]["webhook_retry_scale"] = FAL_RETRY_SCALE
    httpx.post(f"{sandbox_url}/_sandbox/timing", json=timing).raise_for_status()
    port = free_port()
    config = tmp_path / "reelgate.yaml"
    config.write_text(yaml.safe_dump({
        "providers": {v: {"base_url": f"{sandbox_url}/{v}", "api_key": f"emulated-{v}-key",
                          **({"options": {"webhook_jwks_url": f"{sandbox_url}/fal/.well-known/jwks.json"}}
                             if v == "fal" else {})} for v in VENDORS},
        "polling": {"initial_s": 0.3, "max_s": 1.0},
        # a fal submit cut off by the kill waits this long for fal's callback naming it; the
        # callback is retried while the server is down, each wait twice the last, so it lands
        # within about twice the downtime (a restart on 2 busy cores can take 10-20 s). A submit
        # the kill stopped before it reached fal waits it all out
        "adoption_window_s": 45,
        "service": {"public_url": f"http://127.0.0.1:{port}"},  # vendors call back here
    }))
    auth = {"Authorization": f"Bearer {processes.create_key('app')}"}
    url, server = processes.start("serve", "--config", str(config), port=port)
    ids: dict[int, str] = {}
    lock = threading.Lock()

    def post(i: int) -> None:
        body = {"prompt": f"burst {seed} job {i}", "providers": [VENDORS[i % 3]]}
        try:
            answer = httpx.post(f"{url}/v1/jobs", json=body, timeout=30,
                                headers={**auth, "Idempotency-Key": f"burst-{seed}-{i}"})
        except httpx.TransportError:
            return  # the server died under this request: resent below
        if answer.status_code == 202:
            with lock:
                ids[i] = answer.json()["id"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        for i in range(JOBS):
            pool.submit(post, i)
        time.sleep(rng.uniform(0.3, 3.0))  # the moment of the kill, chosen by the seed
        processes.kill(server)
    url, _ = processes.start("serve", "--config", str(config), port=port)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(post, [i for i in range(JOBS) if i not in ids]))
    assert len(ids) == JOBS and len(set(ids.values())) == JOBS  # one job per key, across the kill

    def everything() -> list[dict]:
        with httpx.Client(headers=auth, timeout=30) as client:
            return [client.get(f"{url}/v1/jobs/{j}").raise_for_status().json() for j in ids.values()]

    deadline = time.monotonic() + 180
    while True:
        jobs = everything()
        running = [j for j in jobs if j["status"] not in ("succeeded", "failed", "cancelled")]
        if not running:
            break
        assert time.monotonic() < deadline, running[:3]
        time.sleep(0.5)
    for job in jobs:
        # delivered, or says where it may have been billed: never paid for nothing silently
        assert job["status"] == "succeeded" or job["at_risk"], job
        assert sum(1 for a in job["attempts"] if a["vendor_job_id"]) <= 1  # no vendor job twice
    stats = httpx.get(f"{sandbox_url}/_sandbox/stats").json()
    accepted = sum(stats[v]["accepted_submissions"] for v in VENDORS)
    delivered = sum(j["status"] == "succeeded" for j in jobs)
    at_risk = sum(len(j["at_risk"]) for j in jobs if j["status"] != "succeeded")
    # every accepted submission is a delivered video or an at-risk record; none is a second payment
    assert delivered <= accepted <= delivered + at_risk and accepted <= JOBS
    # fal with webhooks: every job it accepted is delivered, those whose answer the kill lost
    # included (adopted by callback); what stays at risk there never reached fal
    fal_jobs = [j for j in jobs if j["attempts"] and j["attempts"][0]["provider"] == "fal"]
    fal_delivered = sum(j["status"] == "succeeded" for j in fal_jobs)
    assert fal_delivered == stats["fal"]["accepted_submissions"], (
        fal_delivered, stats["fal"], [j["at_risk"] for j in fal_jobs if j["status"] != "succeeded"])
    assert all(r["vendor_job_id"] is None for j in fal_jobs for r in j["at_risk"])
