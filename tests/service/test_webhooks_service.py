"""Webhooks through the running service: vendor callbacks finish jobs early, forged ones
are refused, and a job's own webhook is signed, delivered and recorded."""

from __future__ import annotations

import time

import httpx
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.emulation.sandbox import BackgroundServer
from gateway.safe_fetch import PublicOnlyTransport
from gateway.webhooks.outbound import verify
from tests.service.conftest import WEBHOOK_SECRET, free_port


def test_vendor_callbacks_finish_jobs_long_before_the_next_poll(processes, tmp_path):
    sandbox_url, _ = processes.start("sandbox", health_path="/_sandbox/stats")
    port = free_port()
    config = tmp_path / "reelgate.yaml"
    config.write_text(yaml.safe_dump({
        "providers": {
            **{v: {"base_url": f"{sandbox_url}/{v}", "api_key": f"emulated-{v}-key"} for v in ("apiframe", "railwail")},
            # the emulator publishes the key its callbacks are signed with
            "fal": {"base_url": f"{sandbox_url}/fal", "api_key": "emulated-fal-key",
                    "options": {"webhook_jwks_url": f"{sandbox_url}/fal/.well-known/jwks.json"}},
        },
        "polling": {"initial_s": 60, "max_s": 120},  # only a callback can finish a job in seconds
        "service": {"public_url": f"http://127.0.0.1:{port}"},
    }))
    key = processes.create_key("app")
    auth = {"Authorization": f"Bearer {key}"}
    url, _ = processes.start("serve", "--config", str(config), port=port)
    ids = [httpx.post(f"{url}/v1/videos", headers=auth, json={"prompt": "a tower", "aspect_ratio": ratio})
           .raise_for_status().json()["id"] for ratio in ("9:21", "1:1")]  # fal, apiframe
    deadline = time.monotonic() + 20
    while True:
        jobs = [httpx.get(f"{url}/v1/jobs/{i}", headers=auth).json() for i in ids]
        if all(j["status"] == "succeeded" for j in jobs):
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.2)
    assert {j["provider"] for j in jobs} == {"fal", "apiframe"}
    assert all(j["attempts"][0]["polls"] <= 2 for j in jobs)  # woken by the callback, not the schedule
    metrics = httpx.get(f"{url}/metrics").text
    assert 'reelgate_vendor_webhooks_total{outcome="matched",provider="fal"}' in metrics
    assert 'reelgate_vendor_webhooks_total{outcome="matched",provider="apiframe"}' in metrics


def test_forged_and_unknown_vendor_callbacks_are_refused(service):
    forged = service.client.post("/webhooks/fal", content=b'{"request_id":"x","status":"OK","payload":{}}',
                                 headers={"X-Fal-Webhook-Request-Id": "x", "X-Fal-Webhook-User-Id": "u",
                                          "X-Fal-Webhook-Timestamp": str(int(time.time())),
                                          "X-Fal-Webhook-Signature": "00" * 64})
    assert forged.status_code == 401
    unsigned = service.client.post("/webhooks/apiframe", content=b'{"event":"completed","jobId":"j"}')
    assert unsigned.status_code == 401
    assert service.client.post("/webhooks/railwail", content=b"{}").status_code == 404
    assert service.client.post("/webhooks/nobody", content=b"{}").status_code == 404


def test_the_jobs_own_webhook_is_signed_delivered_and_recorded(service):
    received: list[tuple[dict, bytes]] = []
    failures = [503]  # the app is down once: the delivery is retried

    async def hook(request: Request) -> JSONResponse:
        body = await request.body()
        if failures:
            return JSONResponse({}, status_code=failures.pop())
        received.append((dict(request.headers), body))
        return JSONResponse({"ok": True})

    with BackgroundServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as app_server:
        created = service.client.post("/v1/jobs", headers=service.auth,
                                      json={"prompt": "a fox", "webhook_url": f"{app_server.url}/hook?token=t"})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 30
        while True:
            job = service.client.get(f"/v1/jobs/{job_id}", headers=service.auth).json()
            if any(w["delivered"] for w in job["webhooks"]):
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
    (headers, body), = received
    verify(WEBHOOK_SECRET, headers, body, now=time.time())  # raises when the signature is wrong
    assert b'"type":"video.completed"' in body and job_id.encode() in body
    record = job["webhooks"][0]
    assert record["delivered"] and len(record["attempts"]) == 2 and "token" not in record["url"]
    assert WEBHOOK_SECRET not in str(job)
    # each delivery re-vets the address it connects to (DNS may have changed since submit)
    assert isinstance(service.client.app.state.service.hooks_client._transport, PublicOnlyTransport)
