"""``/metrics`` times every call the service makes to a vendor, whichever path sent it."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families


def vendor_calls(metrics_text: str) -> dict[tuple[str, str, str], float]:
    """(provider, operation, outcome) -> how many calls ``reelgate_vendor_request_seconds`` counted."""
    counts: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "reelgate_vendor_request_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                labels = sample.labels
                counts[(labels["provider"], labels["operation"], labels["outcome"])] = sample.value
    return counts


def test_one_sandbox_job_times_its_submit_polls_result_and_download(service):
    created = service.client.post("/v1/jobs", headers=service.auth, json={"prompt": "a fox", "providers": ["fal"]})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    deadline = time.monotonic() + 20
    # the job is done once its video is kept: the download (mirror) is the last vendor call
    while not (job := service.client.get(f"/v1/jobs/{job_id}", headers=service.auth).json())["output"] \
            or not job["output"]["sha256"]:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    polls = job["attempts"][0]["polls"]
    assert polls >= 2  # the emulated job queues, then runs: several status calls

    calls = vendor_calls(service.client.get("/metrics").text)
    assert calls[("fal", "submit", "200")] == 1
    # fal answers 202 while the job is queued or running, 200 once it is done
    assert calls[("fal", "status", "202")] + calls[("fal", "status", "200")] == polls
    assert calls[("fal", "result", "200")] == 1
    assert calls[("fal", "download", "200")] == 1
