"""The service's edit routes (in process, on the sandbox): OpenAI-style remix and edits, the
native API's operations, and unknown routes answering JSON that names what is served."""

from __future__ import annotations

import base64
import time

from gateway.emulation.render import probe, render_mp4


def _finished(service, video_id: str, path: str = "/v1/videos/") -> dict:
    for _ in range(400):
        body = service.client.get(path + video_id, headers=service.auth).json()
        if body["status"] in ("completed", "failed", "succeeded", "cancelled"):
            return body
        time.sleep(0.025)
    raise AssertionError(f"{video_id} did not finish")


def _made(service) -> str:
    created = service.client.post("/v1/videos", headers=service.auth,
                                  json={"prompt": "a fox", "model": "ray-2-flash", "size": "1280x720"})
    assert created.status_code == 200, created.text
    assert _finished(service, created.json()["id"])["status"] == "completed"
    return created.json()["id"]


def test_remix_is_a_modify_of_the_finished_video(service) -> None:
    source = _made(service)
    remix = service.client.post(f"/v1/videos/{source}/remix", headers=service.auth,
                                json={"prompt": "now in snow", "mode": "reimagine_2"})
    assert remix.status_code == 200, remix.text
    video = remix.json()
    assert video["object"] == "video" and video["remixed_from_video_id"] == source
    done = _finished(service, video["id"])
    assert done["status"] == "completed" and done["reelgate"]["provider"] == "fal"
    assert done["reelgate"]["attempts"][0]["vendor_model"] == "fal-ai/luma-dream-machine/ray-2-flash/modify"
    job = service.client.get(f"/v1/jobs/{video['id']}", headers=service.auth).json()
    assert job["request"]["edit"]["operation"] == "modify" and job["request"]["edit"]["mode"] == "reimagine_2"
    content = service.client.get(f"/v1/videos/{video['id']}/content", headers=service.auth)
    assert content.status_code == 200 and abs(float(probe(content.content)["duration_s"]) - 5) < 0.2


def test_remix_of_an_unknown_video_is_404_and_a_bad_body_400(service) -> None:
    missing = service.client.post("/v1/videos/vid_" + "c" * 32 + "/remix", headers=service.auth,
                                  json={"prompt": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    source = _made(service)
    no_prompt = service.client.post(f"/v1/videos/{source}/remix", headers=service.auth, json={})
    assert no_prompt.status_code == 400 and no_prompt.json()["error"]["param"] == "prompt"
    bad_mode = service.client.post(f"/v1/videos/{source}/remix", headers=service.auth,
                                   json={"prompt": "x", "mode": "flex_7"})
    assert bad_mode.status_code == 400 and bad_mode.json()["error"]["param"] == "edit.modify.mode"


def test_edits_takes_a_video_reference_or_an_upload(service) -> None:
    source = _made(service)
    by_id = service.client.post("/v1/videos/edits", headers=service.auth,
                                json={"prompt": "make it night", "video": {"id": source}})
    assert by_id.status_code == 200, by_id.text
    assert _finished(service, by_id.json()["id"])["status"] == "completed"
    clip = render_mp4(320, 240, 2.0)
    upload = service.client.post("/v1/videos/edits", headers=service.auth, data={"prompt": "sepia"},
                                 files={"video": ("clip.mp4", clip, "video/mp4")})
    assert upload.status_code == 200, upload.text
    done = _finished(service, upload.json()["id"])
    assert done["status"] == "completed"
    out = service.client.get(f"/v1/videos/{done['id']}/content", headers=service.auth).content
    assert abs(float(probe(out)["duration_s"]) - 2.0) < 0.1
    not_video = service.client.post("/v1/videos/edits", headers=service.auth, data={"prompt": "x"},
                                    files={"video": ("clip.mp4", b"hello", "video/mp4")})
    assert not_video.status_code == 400 and not_video.json()["error"]["param"] == "video"


def test_native_jobs_run_every_operation_and_refuse_server_files(service) -> None:
    source = _made(service)
    job = service.client.post("/v1/jobs", headers=service.auth, json={
        "aspect_ratio": "9:16", "edit": {"operation": "reframe", "source": source}})
    assert job.status_code == 202, job.text
    done = _finished(service, job.json()["id"], "/v1/jobs/")
    assert done["status"] == "succeeded" and done["attempts"][0]["vendor_model"].endswith("/reframe")
    out = service.client.get(f"/v1/videos/{done['id']}/content", headers=service.auth).content
    info = probe(out)
    assert info["height"] > info["width"]
    quote = service.client.post("/v1/quotes", headers=service.auth,
                                json={"edit": {"operation": "modify", "source": source}})
    assert quote.status_code == 200 and quote.json()["chosen"] == "fal"
    local = service.client.post("/v1/jobs", headers=service.auth,
                                json={"edit": {"operation": "modify", "source": "/etc/passwd"}})
    assert local.status_code == 400 and local.json()["error"]["param"] == "edit.source"
    page = service.client.post("/v1/jobs", headers=service.auth, json={
        "edit": {"operation": "modify", "source": "data:video/mp4;base64," + base64.b64encode(b"nope").decode()}})
    assert page.status_code == 400 and "does not contain an MP4" in page.json()["error"]["message"]


def test_unknown_routes_answer_json_naming_what_is_served(service) -> None:
    wrong = service.client.post("/v1/videos/nope", headers=service.auth, json={})
    assert wrong.status_code == 404
    message = wrong.json()["error"]["message"]
    assert wrong.json()["error"]["code"] == "unknown_route"
    for served in ("POST /v1/videos", "POST /v1/videos/edits", "POST /v1/videos/{video_id}/remix"):
        assert served in message
    lost = service.client.get("/v2/whatever", headers=service.auth)
    assert lost.status_code == 404 and lost.json()["error"]["code"] == "unknown_route"


def test_a_source_url_follows_the_image_rules_outside_the_sandbox(service) -> None:
    service.client.app.state.service.sandbox = False  # as `reelgate serve` without --sandbox
    inside = service.client.post("/v1/jobs", headers=service.auth, json={
        "edit": {"operation": "modify", "source": "http://127.0.0.1:9/clip.mp4"}})
    assert inside.status_code == 400 and inside.json()["error"]["param"] == "edit.source"
    assert "loopback" in inside.json()["error"]["message"]
    remix_url = service.client.post("/v1/videos/edits", headers=service.auth,
                                    json={"prompt": "x", "video_url": "http://10.0.0.7/clip.mp4"})
    assert remix_url.status_code == 400 and remix_url.json()["error"]["param"] == "edit.source"


def test_a_source_url_that_is_not_a_video_is_refused(service, serve) -> None:
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    async def page(_request: object) -> HTMLResponse:
        return HTMLResponse("<html>a page, not a clip</html>")

    url = serve(Starlette(routes=[Route("/clip.mp4", page)])) + "/clip.mp4"
    refused = service.client.post("/v1/jobs", headers=service.auth, json={
        "aspect_ratio": "9:16", "edit": {"operation": "reframe", "source": url}})
    assert refused.status_code == 400 and "is not an MP4, MOV or WebM video" in refused.json()["error"]["message"]


def test_an_edit_reports_the_length_of_its_source_not_a_default(service) -> None:
    """A remix or edit keeps its source's length: ``seconds`` says it (OpenAI's ``Video.seconds``
    is any string; a sequence already reports its joined length, e.g. "15"), from the moment
    it is accepted, whether the source is a 9 s job or an uploaded 2 s clip."""
    created = service.client.post("/v1/videos", headers=service.auth,
                                  json={"prompt": "a fox", "model": "ray-2-flash", "seconds": "9"})
    assert created.status_code == 200, created.text
    source = created.json()["id"]
    assert _finished(service, source)["seconds"] == "9"
    remix = service.client.post(f"/v1/videos/{source}/remix", headers=service.auth, json={"prompt": "in snow"})
    by_id = service.client.post("/v1/videos/edits", headers=service.auth,
                                json={"prompt": "at night", "video": {"id": source}})
    upload = service.client.post("/v1/videos/edits", headers=service.auth, data={"prompt": "sepia"},
                                 files={"video": ("clip.mp4", render_mp4(320, 240, 2.0), "video/mp4")})
    for answer, seconds in ((remix, "9"), (by_id, "9"), (upload, "2")):
        assert answer.status_code == 200, answer.text
        assert answer.json()["seconds"] == seconds
        done = _finished(service, answer.json()["id"])
        assert done["status"] == "completed" and done["seconds"] == seconds
        job = service.client.get(f"/v1/jobs/{done['id']}", headers=service.auth).json()
        assert job["duration_s"] == float(seconds)
    remix_of_remix = service.client.post(f"/v1/videos/{remix.json()['id']}/remix", headers=service.auth,
                                         json={"prompt": "in rain"})
    assert remix_of_remix.json()["seconds"] == "9"
