"""Vendor webhooks through the service: a replayed signed message wakes no extra poll (the
dedupe key is remembered in the store), and fal's signing keys being unreachable is a clean
503 with Retry-After, fetched again only after the backoff."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from gateway.config import PollingConfig, ProviderConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.keys import KeyStore
from gateway.plugins import discover
from gateway.sandboxed import SANDBOX_KEY
from gateway.server import create_app
from gateway.server.service import Service
from providers.apiframe import webhooks as af_webhooks
from tests.service.conftest import WEBHOOK_SECRET, free_port


@contextmanager
def running(tmp_path: Path, settings: Settings, clock: list[float]) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The service in this process over an in-thread sandbox whose emulators run on ``clock``."""
    home = tmp_path / "home"
    env = {"REELGATE_HOME": str(home), "REELGATE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0, run_s=100),
                                     clock=lambda: clock[0])
    with BackgroundServer(sandbox.app) as emulators:
        app = create_app(lambda: Service.start(settings, sandbox_url=emulators.url, env=env))
        home.mkdir(parents=True)
        _, key = KeyStore(home / "keys.db").create("tests")
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, {"Authorization": f"Bearer {key}"}


def wait_for(client: TestClient, auth: dict[str, str], job_id: str, done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while not done(job := client.get(f"/v1/jobs/{job_id}", headers=auth).json()):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    return job


def test_two_hundred_replays_of_a_signed_message_cause_one_poll(tmp_path):
    clock = [0.0]
    # polls only when a webhook wakes them: the schedule alone would wait an hour
    settings = Settings(polling=PollingConfig(initial_s=3600, max_s=3600))
    with running(tmp_path, settings, clock) as (client, auth):
        created = client.post("/v1/jobs", headers=auth, json={"prompt": "a kite", "providers": ["apiframe"]})
        job_id = created.json()["id"]
        vendor_id = wait_for(client, auth, job_id, lambda j: j["attempts"] and j["attempts"][0]["vendor_job_id"]
                             )["attempts"][0]["vendor_job_id"]
        progress = json.dumps({"event": "progress", "jobId": vendor_id, "status": "PROCESSING", "progress": 40,
                               "model": "luma-ray-flash-2"}).encode()
        answers = [client.post("/webhooks/apiframe", content=progress,
                               headers=af_webhooks.sign(SANDBOX_KEY, "progress", progress)).json()
                   for _ in range(200)]
        assert answers[0] == {"received": True, "matched": True}
        assert all(a == {"received": True, "matched": False, "duplicate": True} for a in answers[1:])
        clock[0] = 1000.0  # the vendor finished: its completion webhook is a new message
        completed = json.dumps({"event": "completed", "jobId": vendor_id, "status": "COMPLETED", "progress": 100,
                                "result": {"videoUrl": "https://cdn.example/v.mp4"}}).encode()
        assert client.post("/webhooks/apiframe", content=completed,
                           headers=af_webhooks.sign(SANDBOX_KEY, "completed", completed)).json()["matched"]
        job = wait_for(client, auth, job_id, lambda j: j["status"] == "succeeded")
    assert job["attempts"][0]["polls"] == 2  # one per distinct message, none per replay


def test_unreachable_fal_signing_keys_answer_503_with_retry_after_and_are_fetched_once(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"  # nothing listens there
    settings = Settings(providers={"fal": ProviderConfig(options={"webhook_jwks_url": closed})})
    body = b'{"request_id":"r","status":"OK","payload":{}}'
    headers = {"X-Fal-Webhook-Request-Id": "r", "X-Fal-Webhook-User-Id": "u",
               "X-Fal-Webhook-Timestamp": str(int(time.time())), "X-Fal-Webhook-Signature": "00" * 64}
    with running(tmp_path, settings, [0.0]) as (client, _):
        answers = [client.post("/webhooks/fal", content=body, headers=headers) for _ in range(20)]
        keys = client.app.state.service.callbacks.keys("fal")
        assert keys.fetches == 1  # one fetch, then backing off: not one per delivery
    for answer in answers:
        assert answer.status_code == 503 and 1 <= int(answer.headers["retry-after"]) <= 60
        assert answer.json()["error"]["code"] == "webhook_keys_unavailable"
        assert "Traceback" not in answer.text
