"""Bad input gets a 4xx naming the field and the reason, in OpenAI's error envelope."""

from __future__ import annotations

import time

import pytest

from tests.service.conftest import wait_kept

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]


@pytest.mark.parametrize(("kwargs", "status", "param"), [
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, None),
    ({"json": ["a", "list"]}, 400, None),
    ({"json": {"prompt": 42}}, 400, "prompt"),
    ({"json": {"prompt": "x", "size": "333x333"}}, 400, "size"),
    ({"json": {"prompt": "x", "seconds": "7"}}, 400, "seconds"),
    ({"json": {"prompt": "x", "model": "sora-2"}}, 400, "model"),
    ({"json": {"prompt": "x" * 5000}}, 400, "prompt"),
    ({"json": {"prompt": ""}}, 400, "prompt"),
    ({"json": {"prompt": "x", "colour": "red"}}, 400, "colour"),
    ({"json": {"prompt": "x", "aspect_ratio": "1:1", "resolution": "1080p"}}, 400, None),
    ({"json": {"prompt": "x", "max_cost_usd": 0.01}}, 402, None),
    ({"content": b"prompt=x", "headers": {"content-type": "text/plain"}}, 415, None),
    # booleans: JSON true or false only (pydantic's lax mode read all of these as one)
    ({"json": {"prompt": "x", "loop": "yes"}}, 400, "loop"),
    ({"json": {"prompt": "x", "loop": 1}}, 400, "loop"),
    ({"json": {"prompt": "x", "fallback": "off"}}, 400, "fallback"),
    ({"json": {"prompt": "x", "fallback": 0}}, 400, "fallback"),
    # a multipart form's flag (files=: multipart, (None, text) a plain field): "true" or "false"
    ({"files": {"prompt": (None, "x"), "loop": (None, "on")}}, 400, "loop"),
    ({"files": {"prompt": (None, "x"), "fallback": (None, "1")}}, 400, "fallback"),
])
def test_malformed_create_requests(service, kwargs, status, param):
    headers = {**service.auth, **kwargs.pop("headers", {})}
    response = service.client.post("/v1/videos", headers=headers, **kwargs)
    assert response.status_code == status, response.text
    error = error_of(response)
    if param:
        assert error["param"] == param and param in error["message"]


def test_oversized_upload_is_refused(service):
    limit = 20 * 1024 * 1024
    response = service.client.post("/v1/videos", headers=service.auth, data={"prompt": "x"},
                                   files={"input_reference": ("big.png", PNG + b"\x00" * limit, "image/png")})
    assert response.status_code == 413
    assert "larger than" in error_of(response)["message"]


def test_non_image_upload_names_the_field(service):
    response = service.client.post("/v1/videos", headers=service.auth, data={"prompt": "x"},
                                   files={"input_reference": ("a.png", b"not an image", "image/png")})
    assert response.status_code == 400 and error_of(response)["param"] == "input_reference"


def test_missing_key_is_401_with_a_clear_body(service):
    response = service.client.get("/v1/videos")
    assert response.status_code == 401
    assert "Authorization: Bearer" in error_of(response)["message"]


def test_unknown_video_is_404(service):
    assert service.client.get("/v1/videos/vid_nope", headers=service.auth).status_code == 404
    assert service.client.get("/v1/videos/vid_nope/content", headers=service.auth).status_code == 404


def test_multipart_create_with_image_and_native_job_record(service):
    response = service.client.post("/v1/videos", headers=service.auth,
                                   data={"prompt": "a fox", "seconds": "5", "size": "1280x720",
                                         "providers": ["fal", "railwail"]},
                                   files={"input_reference": ("a.png", PNG, "image/png")})
    assert response.status_code == 200, response.text
    video = response.json()
    job = service.client.get(f"/v1/jobs/{video['id']}", headers=service.auth).json()
    assert job["request"]["start_image"].startswith("data URI (")
    assert job["plan"]["candidates"][0]["provider"] in ("fal", "railwail")


def test_flags_are_json_booleans_or_a_forms_true_and_false(service):
    for path in ("/v1/jobs", "/v1/quotes"):
        refused = service.client.post(path, headers=service.auth, json={"prompt": "a", "loop": "yes"})
        assert refused.status_code == 400 and error_of(refused)["param"] == "loop", refused.text
        assert "must be true or false" in error_of(refused)["message"]
    # the openai SDK (httpx) sends a boolean form field as "true" / "false"
    fields = {"prompt": "a fox", "loop": "true", "fallback": "False", "providers[]": "fal"}
    made = service.client.post("/v1/videos", headers=service.auth,
                               files={name: (None, value) for name, value in fields.items()})
    assert made.status_code == 200, made.text
    request = service.client.get(f"/v1/jobs/{made.json()['id']}", headers=service.auth).json()["request"]
    assert request["loop"] is True and request["fallback"] is False


def test_native_quote_job_cancel_and_metrics(service):
    quote = service.client.post("/v1/quotes", headers=service.auth, json={"prompt": "a", "aspect_ratio": "1:1"})
    assert quote.status_code == 200 and quote.json()["chosen"] == "apiframe"
    created = service.client.post("/v1/jobs", headers={**service.auth, "Idempotency-Key": "k-1"},
                                  json={"prompt": "a", "aspect_ratio": "9:21"})
    assert created.status_code == 202
    again = service.client.post("/v1/jobs", headers={**service.auth, "Idempotency-Key": "k-1"},
                                json={"prompt": "a", "aspect_ratio": "9:21"})
    assert again.json()["id"] == created.json()["id"]
    cancelled = service.client.post(f"/v1/videos/{created.json()['id']}/cancel", headers=service.auth)
    assert cancelled.status_code == 200 and cancelled.json()["status"] in ("failed", "completed")
    deadline = time.monotonic() + 10
    while service.client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline
    metrics = service.client.get("/metrics").text
    assert "reelgate_http_requests_total" in metrics and "reelgate_jobs_submitted_total" in metrics


def test_openapi_schema_describes_the_create_body(service):
    schema = service.client.get("/openapi.json").json()
    body = schema["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert "CreateVideo" in schema["components"]["schemas"] and "VideoRequest" in schema["components"]["schemas"]


def test_image_urls_are_fetched_only_from_public_addresses(service):
    state = service.client.app.state.service
    state.sandbox = False  # as in production: loopback and private ranges are off limits
    for url in ("http://127.0.0.1:1/frame.png", "http://10.0.0.7/frame.png", "http://[::1]/frame.png"):
        response = service.client.post("/v1/jobs", headers=service.auth, json={"prompt": "a", "start_image": url})
        assert response.status_code == 400, response.text
        assert error_of(response)["param"] == "start_image"


def test_finished_video_is_kept_with_size_and_checksum(service):
    import hashlib

    job_id = service.client.post("/v1/jobs", headers=service.auth, json={"prompt": "a fox"}).json()["id"]
    job = wait_kept(service, job_id)
    content = service.client.get(f"/v1/videos/{job_id}/content", headers=service.auth)
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    assert hashlib.sha256(content.content).hexdigest() == job["output"]["sha256"]
    assert len(content.content) == job["output"]["size_bytes"]
    assert job["output"]["uri"].startswith("file://")
    assert service.client.delete(f"/v1/videos/{job_id}", headers=service.auth).json()["deleted"] is True
    assert service.client.get(f"/v1/videos/{job_id}", headers=service.auth).status_code == 404


def test_a_key_limited_to_providers_and_a_daily_budget(service):
    from gateway.keys import KeyStore

    _, secret = KeyStore(service.home / "keys.db").create("limited", budget_usd_per_day=1.0,
                                                          allowed_providers=["apiframe"])
    auth = {"Authorization": f"Bearer {secret}"}
    quote = service.client.post("/v1/quotes", headers=auth, json={"prompt": "a"}).json()
    assert quote["chosen"] == "apiframe" and quote["order"] == ["apiframe"]
    assert service.client.post("/v1/jobs", headers=auth, json={"prompt": "a", "providers": ["fal"]}).status_code == 400
    made = [service.client.post("/v1/jobs", headers=auth, json={"prompt": f"fox {i}"}) for i in range(3)]
    assert [m.status_code for m in made] == [202, 202, 402]  # $0.41 each against $1.00 a day
    assert "daily budget" in error_of(made[2])["message"]
    assert all(m.json()["attempts"] == [] or m.json()["attempts"][0]["provider"] == "apiframe" for m in made[:2])


def test_a_webhook_url_into_a_private_network_is_refused(service):
    service.client.app.state.service.sandbox = False
    response = service.client.post("/v1/jobs", headers=service.auth,
                                   json={"prompt": "a", "webhook_url": "http://169.254.169.254/latest"})
    assert response.status_code == 400 and error_of(response)["param"] == "webhook_url"


def test_readyz_names_the_replica_and_its_store(service):
    """One process on SQLite: no leases (it resumes every unfinished job itself)."""
    replica = service.client.get("/readyz").json()["replica"]
    assert replica["store"] == "sqlite" and replica["leases"] is False
    assert replica["id"].count("-") >= 2  # host-pid-random


def test_content_being_kept_elsewhere_is_not_ready_and_a_failed_keep_is_not_kept(service):
    """Another replica may still be copying the video into shared storage: a client should
    try again, unlike for a video that could not be kept at all."""
    from gateway.server.service import KEEP_FAILED

    job_id = service.client.post("/v1/jobs", headers=service.auth, json={"prompt": "a fox"}).json()["id"]
    deadline = time.monotonic() + 20
    while not (service.client.get(f"/v1/jobs/{job_id}", headers=service.auth).json()["output"] or {}).get("uri"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    state = service.client.app.state.service
    job = state.gateway.get(job_id)
    job.output.uri = None  # as stored while another replica is keeping it
    service.client.portal.call(state.store.save, job)
    response = service.client.get(f"/v1/videos/{job_id}/content", headers=service.auth)
    assert response.status_code == 404 and error_of(response)["code"] == "not_ready"
    job.notes.append(f"{KEEP_FAILED}: the vendor's URL had expired")
    service.client.portal.call(state.store.save, job)
    response = service.client.get(f"/v1/videos/{job_id}/content", headers=service.auth)
    assert response.status_code == 404 and error_of(response)["code"] == "not_kept"
