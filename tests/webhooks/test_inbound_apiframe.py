"""apiframe webhooks: HMAC verification, body parsing, and the emulator's signed
deliveries to a real loopback receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable

import httpx
import pytest

from gateway.emulation.base import Timing
from gateway.emulation.faults import Fault, FaultSpec
from gateway.emulation.outbox import Outbox
from gateway.errors import GenerationFailed, ProtocolError, WebhookRejected
from gateway.provider import ProviderSettings, Secret, VendorState
from gateway.request import Resolution, VideoRequest
from gateway.webhooks.inbound import verify_and_parse
from providers.apiframe import ApiframeAdapter
from providers.apiframe import webhooks as af_webhooks
from providers.apiframe.emulator import ApiframeEmulator
from tests.support import FakeClock
from tests.webhooks.receiver import Receiver

API_KEY = "afk_webhook_test_key"
NOW = 1_800_000_000.0
VIDEO = "https://cdn2.apiframe.ai/videos/3f0c.mp4"

#: the bodies apiframe documents (vendors.md s.2.5)
COMPLETED = {"event": "completed", "jobId": "job-1", "status": "COMPLETED", "progress": 100,
             "result": {"videoUrl": VIDEO}, "model": "luma-ray-flash-2", "creditCost": 51,
             "completedAt": "2026-11-24T10:00:00.000Z"}
FAILED = {"event": "failed", "jobId": "job-2", "status": "FAILED",
          "error": "Provider returned an error: content policy violation", "model": "luma-ray-flash-2"}
PROGRESS = {"event": "progress", "jobId": "job-3", "status": "PROCESSING", "progress": 40,
            "model": "luma-ray-flash-2"}


def adapter(key: str = API_KEY, base_url: str | None = None) -> ApiframeAdapter:
    return ApiframeAdapter(ProviderSettings("apiframe", api_key=Secret(key), base_url=base_url))


def signed(body: dict, key: str = API_KEY) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body).encode()
    return af_webhooks.sign(key, body["event"], raw), raw


def test_signature_is_hmac_keyed_by_the_sha256_digest_of_the_api_key() -> None:
    raw = b'{"event":"completed"}'
    expected = hmac.new(hashlib.sha256(API_KEY.encode()).digest(), raw, hashlib.sha256).hexdigest()
    assert af_webhooks.signature(API_KEY, raw) == expected
    assert af_webhooks.sign(API_KEY, "completed", raw)["X-Webhook-Signature"] == "sha256=" + expected


def test_prefixed_and_bare_hex_signatures_verify() -> None:
    headers, raw = signed(COMPLETED)
    adapter().verify_webhook(headers, raw, now=NOW)
    bare = {**headers, "X-Webhook-Signature": headers["X-Webhook-Signature"].removeprefix("sha256=")}
    adapter().verify_webhook(bare, raw, now=NOW)


@pytest.mark.parametrize("change", [
    lambda h, b: (h, b.replace(b"job-1", b"job-9")),
    lambda h, b: ({**h, "X-Webhook-Signature": "sha256=" + "0" * 64}, b),
    lambda h, b: ({**h, "X-Webhook-Signature": "sha256=not-hex"}, b),
])
def test_tampering_is_rejected(change: Callable) -> None:
    headers, raw = change(*signed(COMPLETED))
    with pytest.raises(WebhookRejected) as caught:
        adapter().verify_webhook(headers, raw, now=NOW)
    assert caught.value.reason == "bad_signature"


def test_another_accounts_key_is_rejected_and_not_echoed() -> None:
    headers, raw = signed(COMPLETED, key="afk_someone_else")
    with pytest.raises(WebhookRejected) as caught:
        adapter().verify_webhook(headers, raw, now=NOW)
    assert API_KEY not in str(caught.value) and "afk_someone_else" not in str(caught.value)


def test_the_signature_header_is_required() -> None:
    headers, raw = signed(COMPLETED)
    del headers["X-Webhook-Signature"]
    with pytest.raises(WebhookRejected) as caught:
        adapter().verify_webhook(headers, raw, now=NOW)
    assert caught.value.reason == "missing_header"


def test_completed_is_success_with_url_and_credits() -> None:
    event = adapter().parse_webhook(*signed(COMPLETED))
    assert (event.vendor_id, event.vendor_event) == ("job-1", "completed")
    assert event.status.state is VendorState.SUCCEEDED
    assert (event.status.video_url, event.status.billed_units) == (VIDEO, 51)


def test_failed_keeps_the_vendor_words_without_reclassifying_them() -> None:
    status = adapter().parse_webhook(*signed(FAILED)).status
    assert status.state is VendorState.FAILED and type(status.error) is GenerationFailed
    assert "content policy violation" in status.error.message and status.billed_units == 0


def test_progress_is_running() -> None:
    status = adapter().parse_webhook(*signed(PROGRESS)).status
    assert (status.state, status.progress) == (VendorState.RUNNING, 0.4)


@pytest.mark.parametrize("body", [
    {**COMPLETED, "result": None},
    {**COMPLETED, "event": "exploded"},
    {"jobId": "job-1"},
])
def test_unreadable_bodies_are_protocol_errors(body: dict) -> None:
    with pytest.raises(ProtocolError):
        adapter().parse_webhook({}, json.dumps(body).encode())


def test_an_event_header_that_contradicts_the_body_is_a_protocol_error() -> None:
    headers, raw = signed(COMPLETED)
    with pytest.raises(ProtocolError, match="X-Webhook-Event"):
        adapter().parse_webhook({**headers, "X-Webhook-Event": "failed"}, raw)


def test_a_replayed_delivery_is_harmless_at_parse_level() -> None:
    # apiframe signs no timestamp: a replay verifies forever, so handling must be idempotent
    headers, raw = signed(COMPLETED)
    adapter().verify_webhook(headers, raw, now=NOW + 10 * 365 * 86400)
    assert adapter().parse_webhook(headers, raw) == adapter().parse_webhook(headers, raw)


def test_submit_subscribes_to_terminal_events_only_when_asked() -> None:
    def body(**kw: str) -> dict:
        sent = adapter().build_submit(VideoRequest(prompt="p"), resolution=Resolution.P720, attempt_key="k", **kw)
        return json.loads(sent.content)

    assert body(callback_url="https://gw.example/hooks/apiframe")["webhookUrl"] == "https://gw.example/hooks/apiframe"
    assert body(callback_url="https://gw.example/h")["webhookEvents"] == ["completed", "failed"]
    assert "webhookUrl" not in body() and "webhookEvents" not in body()


# -- the emulator ----------------------------------------------------------------------------
FAST = Timing(queue_s=0.05, run_s=0.1)


async def submit(af: ApiframeAdapter, client: httpx.AsyncClient, callback: str) -> str:
    request = VideoRequest(prompt="a fox")
    sent = af.build_submit(request, resolution=Resolution.P720, attempt_key="a", callback_url=callback)
    return af.parse_submit(request, await client.send(sent)).vendor_id


async def settled_webhook_status(client: httpx.AsyncClient, base: str, job_id: str) -> dict:
    """The job once its webhook is no longer ``pending``.

    The receiver has the acknowledged delivery before the emulator's sender has read the
    2xx and recorded it, so the status is ``pending`` for that instant, as at apiframe."""
    for _ in range(200):
        job = (await client.get(f"{base}/v2/jobs/{job_id}", headers={"X-API-Key": API_KEY})).json()
        if job["webhookStatus"] != "pending":
            return job
        await asyncio.sleep(0.01)
    return job


@pytest.mark.integration
@pytest.mark.parametrize(("faults", "state"), [
    ([], VendorState.SUCCEEDED),
    ([FaultSpec(Fault.FAIL_LATE)], VendorState.FAILED),
])
async def test_emulator_posts_signed_webhooks_that_the_adapter_verifies(
        serve: Callable, faults: list, state: VendorState) -> None:
    receiver = Receiver(statuses=[500])  # the first delivery fails: the emulator retries
    hook = serve(receiver.app) + "/hook"
    emu = ApiframeEmulator(faults=faults, timing=FAST)
    base = serve(emu)
    af = adapter(base_url=base)
    async with httpx.AsyncClient() as client:
        job_id = await submit(af, client, hook)
        got = await receiver.wait_for(2)
        events = [await verify_and_parse(af, r.headers, r.body, now=NOW) for r in got]
        job = await settled_webhook_status(client, base, job_id)
    assert receiver.answered == [500, 200]
    assert {e.dedupe_key for e in events} == {("apiframe", job_id, state.value)}
    assert got[0].headers["x-webhook-event"] == ("completed" if state is VendorState.SUCCEEDED else "failed")
    assert job["webhookStatus"] == "delivered"


async def test_emulator_skips_events_the_job_did_not_subscribe_to() -> None:
    clock = FakeClock()
    posted: list[httpx.Request] = []

    def app(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(200)

    emu = ApiframeEmulator(timing=Timing(queue_s=1, run_s=1), clock=clock.now, auto_deliver=False,
                           faults=[FaultSpec(Fault.FAIL_LATE)], outbox=Outbox(transport=httpx.MockTransport(app)))
    body = {"model": "luma-ray-flash-2", "prompt": "p", "webhookUrl": "https://gw.example/h",
            "webhookEvents": ["completed"]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(emu), base_url="http://af.test") as client:
        accepted = await client.post("/v2/videos/generate", json=body, headers={"X-API-Key": API_KEY})
    assert accepted.status_code == 202
    await clock.sleep(5)
    assert await emu.deliver_due_webhooks() == [] and posted == [] and emu.outbox.pending == 0
