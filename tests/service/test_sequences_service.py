"""Sequences through the HTTP service: OpenAI's ``POST /v1/videos/extensions`` and the native
``POST /v1/jobs``, with the joined video kept and served like any other."""

from __future__ import annotations

import base64
import io
import time

import av
import pytest

from gateway.emulation.render import render_mp4


def finished(service, path: str, job_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = service.client.get(f"{path}/{job_id}", headers=service.auth).json()
        if body["status"] in ("completed", "failed", "succeeded", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def seconds_of(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 0
        assert container.duration is not None
        return container.duration / av.time_base


def test_openai_extension_of_a_finished_video(service):
    created = service.client.post("/v1/videos", headers=service.auth, json={"prompt": "a fox", "size": "1280x720"})
    assert created.status_code == 200, created.text
    assert finished(service, "/v1/videos", created.json()["id"])["status"] == "completed"

    extended = service.client.post("/v1/videos/extensions", headers=service.auth,
                                   json={"video": {"id": created.json()["id"]}, "prompt": "the fox runs on",
                                         "seconds": "10"})
    assert extended.status_code == 200, extended.text
    video = finished(service, "/v1/videos", extended.json()["id"])
    assert video["status"] == "completed", video
    assert video["seconds"] == "15" and video["size"] == "1280x720"
    assert len(video["reelgate"]["attempts"]) == 2  # one per segment, each with its provider and cost
    assert all(a["provider"] and a["cost_usd"] > 0 for a in video["reelgate"]["attempts"])
    assert video["reelgate"]["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in video["reelgate"]["attempts"]))
    content = service.client.get(f"/v1/videos/{video['id']}/content", headers=service.auth)
    assert content.status_code == 200
    assert abs(seconds_of(content.content) - 15) <= 0.5
    job = service.client.get(f"/v1/jobs/{video['id']}", headers=service.auth).json()
    assert [s["duration_s"] for s in job["segments"]] == [5, 5]
    assert job["output"]["path"] is None and "sequences" not in str(job)  # no server path leaks


def test_native_job_extends_a_data_uri_source(service):
    source = "data:video/mp4;base64," + base64.b64encode(render_mp4(720, 1280, 5)).decode()
    created = service.client.post("/v1/jobs", headers=service.auth, json={
        "prompt": "rain", "aspect_ratio": "9:16",
        "edit": {"operation": "extend", "source": source, "target_seconds": 10, "prompts": ["heavier rain"]}})
    assert created.status_code == 202, created.text
    job = finished(service, "/v1/jobs", created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["duration_s"] == 10 and len(job["segments"]) == 1
    content = service.client.get(f"/v1/videos/{job['id']}/content", headers=service.auth)
    assert abs(seconds_of(content.content) - 10) <= 0.5


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": "x", "seconds": "4"}, "video"),
    ({"prompt": "x", "video": {"id": "v", "extra": 1}, "seconds": "4"}, "video"),
    ({"prompt": "x", "video": {"id": "vid_1"}, "seconds": "forty"}, "seconds"),
    ({"prompt": "x", "video": "/etc/passwd", "seconds": "4"}, "edit.source"),
    ({"prompt": "x", "video": {"url": "https://example.com/v.mp4"}, "target_seconds": 99},
     "edit.extend.target_seconds"),
])
def test_bad_extension_requests_name_the_field(service, body, param):
    response = service.client.post("/v1/videos/extensions", headers=service.auth, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_extension_of_an_unknown_or_unfinished_video_is_refused_before_any_job(service):
    response = service.client.post("/v1/videos/extensions", headers=service.auth,
                                   json={"video": {"id": "vid_" + "0" * 32}, "prompt": "x", "seconds": "5"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "edit.source_job"
    assert "no video" in response.json()["error"]["message"]
    running = service.client.post("/v1/videos", headers=service.auth, json={"prompt": "stopped"}).json()
    service.client.post(f"/v1/videos/{running['id']}/cancel", headers=service.auth).raise_for_status()
    response = service.client.post("/v1/videos/extensions", headers=service.auth,
                                   json={"video": {"id": running["id"]}, "prompt": "x", "seconds": "5"})
    assert response.status_code == 400 and "not finished" in response.json()["error"]["message"]
    listed = service.client.get("/v1/jobs", headers=service.auth).json()["data"]
    assert [j["id"] for j in listed] == [running["id"]]
