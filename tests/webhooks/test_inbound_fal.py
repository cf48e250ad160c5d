"""fal webhooks: Ed25519 verification, body parsing, the key cache, and the emulator's
signed deliveries to a real loopback receiver."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.emulation.base import Timing
from gateway.emulation.faults import Fault, FaultSpec
from gateway.emulation.outbox import Outbox
from gateway.errors import ContentRejected, GenerationFailed, ProtocolError, Unavailable, WebhookRejected
from gateway.provider import ProviderSettings, Secret, VendorState
from gateway.request import Resolution, VideoRequest
from gateway.store import SqliteJobStore
from gateway.webhooks.inbound import KeyCache, ReplayGuard, key_fetcher, verify_and_parse
from providers.fal import FalAdapter
from providers.fal import webhooks as fal_webhooks
from providers.fal.emulator import FalEmulator
from tests.support import FakeClock
from tests.webhooks.receiver import Receiver

NOW = 1_800_000_000
KEY = Ed25519PrivateKey.generate()
VIDEO = "https://v3.fal.media/files/x/output.mp4"

#: the bodies fal documents (vendors.md s.1.8), with a Ray 2 output as payload
OK = {"request_id": "req-1", "gateway_request_id": "req-1", "status": "OK",
      "payload": {"video": {"url": VIDEO, "content_type": "video/mp4"}}}
CONTENT_POLICY = {"request_id": "req-2", "gateway_request_id": "req-2", "status": "ERROR",
                  "error": "Invalid status code: 422",
                  "payload": {"detail": [{"loc": ["body", "prompt"], "msg": "flagged",
                                          "type": "content_policy_violation"}]}}
VALIDATION = {"request_id": "req-3", "status": "ERROR", "error": "Invalid status code: 422",
              "payload": {"detail": [{"loc": ["body", "duration"], "msg": "bad", "type": "enum"}]}}
INFRA = {"request_id": "req-4", "status": "ERROR", "error": "Invalid status code: 500",
         "payload": {"detail": "Internal server error", "error_type": "runner_server_error"}}
CANCELLED = {"request_id": "req-5", "status": "ERROR", "error": "Invalid status code: 499",
             "payload": {"detail": "cancelled", "error_type": "client_cancelled"}}
UNSERIALISABLE = {"request_id": "req-6", "status": "OK", "payload": None,
                  "payload_error": "Response payload is not JSON serializable"}


def adapter(**options: object) -> FalAdapter:
    return FalAdapter(ProviderSettings("fal", api_key=Secret("fal-key-123"), options=options))


def signed(body: dict, *, key: Ed25519PrivateKey = KEY, ts: int = NOW) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body).encode()
    return fal_webhooks.sign(key, body["request_id"], "user-9", ts, raw), raw


# -- verification ----------------------------------------------------------------------------
def test_a_signed_delivery_verifies_against_any_jwks_key() -> None:
    headers, raw = signed(OK)
    other = Ed25519PrivateKey.generate().public_key()
    adapter().verify_webhook(headers, raw, now=NOW + 300, keys=[other, KEY.public_key()])


def test_verification_follows_the_jwks_document() -> None:
    jwks = {"keys": [{"kty": "RSA", "n": "x", "e": "AQAB"}, {"kty": "OKP", "crv": "Ed25519", "x": "@@"},
                     fal_webhooks.jwk(KEY.public_key())]}
    response = httpx.Response(200, json=jwks)
    keys = adapter().parse_webhook_keys(response)
    assert len(keys) == 1  # the RSA key and the malformed one are skipped
    headers, raw = signed(OK)
    adapter().verify_webhook(headers, raw, now=NOW, keys=keys)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda h, b: (h, b.replace(b"req-1", b"req-X", 1)), "bad_signature"),
    (lambda h, b: ({**h, fal_webhooks.REQUEST_ID: "req-X"}, b), "bad_signature"),
    (lambda h, b: ({**h, fal_webhooks.USER_ID: "someone"}, b), "bad_signature"),
    (lambda h, b: ({**h, fal_webhooks.TIMESTAMP: str(NOW + 1)}, b), "bad_signature"),
    (lambda h, b: ({**h, fal_webhooks.SIGNATURE: "zz"}, b), "bad_signature"),
    (lambda h, b: ({**h, fal_webhooks.TIMESTAMP: str(NOW - 301)}, b), "stale"),
    (lambda h, b: ({**h, fal_webhooks.TIMESTAMP: str(NOW + 301)}, b), "stale"),
    (lambda h, b: ({**h, fal_webhooks.TIMESTAMP: "yesterday"}, b), "bad_timestamp"),
])
def test_tampered_or_stale_deliveries_are_rejected(change: Callable, reason: str) -> None:
    headers, raw = change(*signed(OK))
    with pytest.raises(WebhookRejected) as caught:
        adapter().verify_webhook(headers, raw, now=NOW, keys=[KEY.public_key()])
    assert caught.value.reason == reason


def test_a_signature_by_another_key_is_rejected() -> None:
    headers, raw = signed(OK, key=Ed25519PrivateKey.generate())
    with pytest.raises(WebhookRejected, match="matches no JWKS entry"):
        adapter().verify_webhook(headers, raw, now=NOW, keys=[KEY.public_key()])


@pytest.mark.parametrize("missing", fal_webhooks.HEADERS)
def test_every_signature_header_is_required(missing: str) -> None:
    headers, raw = signed(OK)
    del headers[missing]
    with pytest.raises(WebhookRejected, match=missing):
        adapter().verify_webhook(headers, raw, now=NOW, keys=[KEY.public_key()])


def test_no_keys_means_no_trust() -> None:
    with pytest.raises(WebhookRejected) as caught:
        adapter().verify_webhook(*signed(OK), now=NOW, keys=[])
    assert caught.value.reason == "no_keys"


def test_the_tolerance_is_an_option() -> None:
    headers, raw = signed(OK, ts=NOW - 100)
    with pytest.raises(WebhookRejected, match="stale|tolerance"):
        adapter(webhook_tolerance_s=60).verify_webhook(headers, raw, now=NOW, keys=[KEY.public_key()])


# -- parsing ---------------------------------------------------------------------------------
def test_ok_is_success_with_the_video_url() -> None:
    event = adapter().parse_webhook({}, json.dumps(OK).encode())
    assert (event.provider, event.vendor_id, event.vendor_event) == ("fal", "req-1", "OK")
    assert event.status.state is VendorState.SUCCEEDED and event.status.video_url == VIDEO


@pytest.mark.parametrize(("body", "cls", "code"), [
    (CONTENT_POLICY, ContentRejected, "content_policy_violation"),
    (VALIDATION, GenerationFailed, "enum"),
    (INFRA, GenerationFailed, "runner_server_error"),
])
def test_errors_are_classified_by_structured_fields(body: dict, cls: type, code: str) -> None:
    event = adapter().parse_webhook({}, json.dumps(body).encode())
    assert event.status.state is VendorState.FAILED
    assert type(event.status.error) is cls and event.status.error.vendor_code == code


def test_a_cancelled_run_is_cancelled_not_failed() -> None:
    assert adapter().parse_webhook({}, json.dumps(CANCELLED).encode()).status.state is VendorState.CANCELLED


def test_an_unserialisable_payload_means_fetch_the_result() -> None:
    status = adapter().parse_webhook({}, json.dumps(UNSERIALISABLE).encode()).status
    # SUCCEEDED without a URL: the core GETs the result, whose answer is authoritative
    assert status.state is VendorState.SUCCEEDED and status.video_url is None


@pytest.mark.parametrize("raw", [b"not json", b'{"status": "OK"}', json.dumps({**OK, "status": "FAILED"}).encode()])
def test_unreadable_bodies_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        adapter().parse_webhook({}, raw)


def test_duplicates_and_late_events_are_harmless_at_parse_level() -> None:
    raw = json.dumps(OK).encode()
    first, again = adapter().parse_webhook({}, raw), adapter().parse_webhook({}, raw)
    assert first == again and first.dedupe_key == ("fal", "req-1", "succeeded")
    failed = adapter().parse_webhook({}, json.dumps({**INFRA, "request_id": "req-1"}).encode())
    assert failed.dedupe_key != first.dedupe_key  # the service keeps the first terminal state it saw


# -- submit and keys -------------------------------------------------------------------------
def test_submit_carries_the_url_encoded_callback() -> None:
    callback = "https://gw.example/hooks/fal?job=vid_1&x=a b"
    sent = adapter().build_submit(VideoRequest(prompt="p"), resolution=Resolution.P540, attempt_key="k",
                                  callback_url=callback)
    assert parse_qs(urlsplit(str(sent.url)).query) == {"fal_webhook": [callback]}
    assert b"fal_webhook=https%3A%2F%2Fgw.example" in sent.url.raw_path
    plain = adapter().build_submit(VideoRequest(prompt="p"), resolution=Resolution.P540, attempt_key="k")
    assert plain.url.query == b""


def test_the_jwks_request_is_configurable_and_carries_no_key() -> None:
    assert str(adapter().build_webhook_keys().url) == fal_webhooks.JWKS_URL
    built = adapter(webhook_jwks_url=fal_webhooks.ALT_JWKS_URL).build_webhook_keys()
    assert str(built.url) == fal_webhooks.ALT_JWKS_URL and "authorization" not in built.headers


async def test_key_cache_refetches_after_its_ttl_and_never_trusts_past_a_day() -> None:
    clock = FakeClock()
    fetched: list[int] = []

    async def fetch() -> list:
        fetched.append(1)
        return [KEY.public_key()]

    cache = KeyCache(fetch, ttl_s=3600, clock=clock.now)
    await cache.keys()
    await cache.keys()
    assert len(fetched) == 1
    await clock.sleep(3600)
    await cache.keys()
    assert len(fetched) == 2
    with pytest.raises(ValueError):
        KeyCache(fetch, ttl_s=24 * 3600 + 1)


async def test_a_rotated_key_is_picked_up_by_one_early_refetch() -> None:
    clock = FakeClock()
    current = [Ed25519PrivateKey.generate().public_key()]

    async def fetch() -> list:
        return list(current)

    cache = KeyCache(fetch, clock=clock.now, min_refresh_s=60)
    await cache.keys()
    current[:] = [KEY.public_key()]  # fal rotated
    headers, raw = signed(OK)
    with pytest.raises(WebhookRejected):  # too soon after the last fetch to refetch
        await verify_and_parse(adapter(), headers, raw, now=NOW, keys=cache)
    await clock.sleep(60)
    event = await verify_and_parse(adapter(), headers, raw, now=NOW, keys=cache)
    assert event.vendor_id == "req-1" and cache.fetches == 2


async def test_replay_guard_acts_once_per_dedupe_key_until_it_expires(tmp_path) -> None:
    clock = FakeClock()
    async with SqliteJobStore(tmp_path / "r.db", clock=clock.now) as store:
        guard = ReplayGuard(store.first_sighting, ttl_s=300)
        event = fal_webhooks.parse(json.dumps(OK).encode(), cancelled_error_types=["client_cancelled"])
        assert await guard.first_sighting(event) and not await guard.first_sighting(event)
        clock.t += 301
        assert await guard.first_sighting(event)


async def test_a_failed_key_fetch_backs_off_instead_of_refetching_per_request() -> None:
    clock = FakeClock()
    down = [True]

    async def fetch() -> list:
        if down[0]:
            raise httpx.ConnectError("refused")
        return [KEY.public_key()]

    cache = KeyCache(fetch, clock=clock.now, backoff=lambda failures: 60.0 * 2 ** (failures - 1))
    headers, raw = signed(OK)
    for _ in range(50):  # a burst of deliveries while fal's JWKS is unreachable
        with pytest.raises(Unavailable):
            await verify_and_parse(adapter(), headers, raw, now=NOW, keys=cache)
    assert cache.fetches == 1 and cache.retry_in_s() == 60
    await clock.sleep(60)
    with pytest.raises(Unavailable):
        await cache.keys()
    assert cache.fetches == 2 and cache.retry_in_s() == 120  # the next wait doubles
    down[0] = False
    await clock.sleep(119)
    with pytest.raises(Unavailable):
        await cache.keys()
    assert cache.fetches == 2
    await clock.sleep(1)
    assert (await verify_and_parse(adapter(), headers, raw, now=NOW, keys=cache)).vendor_id == "req-1"
    assert cache.fetches == 3 and cache.retry_in_s() == 0


# -- the emulator ----------------------------------------------------------------------------
FAST = Timing(queue_s=0.05, run_s=0.1)


async def submit(fal: FalAdapter, client: httpx.AsyncClient, callback: str) -> str:
    sent = fal.build_submit(VideoRequest(prompt="a fox"), resolution=Resolution.P540, attempt_key="a",
                            callback_url=callback)
    response = await client.send(sent)
    assert response.json()["gateway_request_id"] == response.json()["request_id"]
    return fal.parse_submit(VideoRequest(prompt="a fox"), response).vendor_id


@pytest.mark.integration
@pytest.mark.parametrize(("faults", "state"), [
    ([], VendorState.SUCCEEDED),
    ([FaultSpec(Fault.CONTENT_POLICY)], VendorState.FAILED),
])
async def test_emulator_posts_signed_webhooks_that_the_adapter_verifies(
        serve: Callable, faults: list, state: VendorState) -> None:
    receiver = Receiver(statuses=[503])  # the first delivery fails: the emulator retries
    hook = serve(receiver.app) + "/hook"
    emu = FalEmulator(faults=faults, timing=FAST)
    base = serve(emu)
    fal = FalAdapter(ProviderSettings("fal", api_key=Secret("k"), base_url=base,
                                      options={"webhook_jwks_url": base + "/.well-known/jwks.json"}))
    async with httpx.AsyncClient() as client:
        vendor_id = await submit(fal, client, hook)
        got = await receiver.wait_for(2)
        cache = KeyCache(key_fetcher(fal, client))
        events = [await verify_and_parse(fal, r.headers, r.body, now=emu.wall_clock(), keys=cache) for r in got]
    assert receiver.answered == [503, 200]
    assert {e.dedupe_key for e in events} == {("fal", vendor_id, state.value)}  # the retry is a duplicate
    if state is VendorState.SUCCEEDED:
        assert events[0].status.video_url.endswith(f"/media/{vendor_id}.mp4")
    else:
        assert isinstance(events[0].status.error, ContentRejected)


async def test_emulator_delivers_when_its_clock_says_the_job_ended() -> None:
    clock = FakeClock()
    posted: list[httpx.Request] = []

    def app(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(200)

    emu = FalEmulator(timing=Timing(queue_s=10, run_s=50), clock=clock.now, wall_clock=lambda: NOW,
                      auto_deliver=False, outbox=Outbox(transport=httpx.MockTransport(app)))
    fal = FalAdapter(ProviderSettings("fal", api_key=Secret("k"), base_url="http://fal.test"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(emu)) as client:
        await submit(fal, client, "https://gw.example/hook")
    assert await emu.deliver_due_webhooks() == [] and posted == []
    await clock.sleep(60)
    [record] = await emu.deliver_due_webhooks()
    assert record.delivered and len(posted) == 1
    keys = fal_webhooks.parse_jwks({"keys": [fal_webhooks.jwk(emu.signing_key.public_key())]})
    fal.verify_webhook(posted[0].headers, posted[0].content, now=NOW, keys=keys)
    assert await emu.deliver_due_webhooks() == []  # delivered once
