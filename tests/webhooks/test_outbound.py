"""Standard Webhooks signing, verification and retried delivery (gateway/webhooks/outbound.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import httpx
import pytest

from gateway.emulation.outbox import Outbox
from gateway.errors import WebhookRejected
from gateway.webhooks.outbound import (
    Backoff,
    deliver,
    job_event,
    new_secret,
    sign,
    signed_headers,
    verify,
)
from tests.support import FakeClock
from tests.webhooks.receiver import Receiver

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
NOW = 1_800_000_000
BODY = b'{"type":"video.completed"}'


def headers(secret: str = SECRET, msg_id: str = "msg_1", ts: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return signed_headers(secret, msg_id, ts, body)


def test_signature_matches_the_spec_test_vector() -> None:
    # the example from the Standard Webhooks reference libraries' tests
    signature = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                     b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_round_trip_verifies() -> None:
    verify(SECRET, headers(), BODY, now=NOW + 299)


def test_a_fresh_secret_is_whsec_base64_of_32_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    verify(secret, headers(secret), BODY, now=NOW)


def test_any_of_several_signatures_may_match() -> None:
    # during secret rotation a sender signs with both secrets
    sent = headers()
    old = sign(new_secret(), "msg_1", NOW, BODY)
    sent["webhook-signature"] = f"{old} {sent['webhook-signature']}"
    verify(SECRET, sent, BODY, now=NOW)


@pytest.mark.parametrize("tamper", [
    lambda h, b: (h, b + b" "),
    lambda h, b: ({**h, "webhook-id": "msg_2"}, b),
    lambda h, b: ({**h, "webhook-timestamp": str(NOW + 1)}, b),
    lambda h, b: ({**h, "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}, b),
    lambda h, b: ({**h, "webhook-signature": h["webhook-signature"].replace("v1,", "v2,")}, b),
])
def test_tampering_is_rejected(tamper: Callable) -> None:
    sent, body = tamper(headers(), BODY)
    with pytest.raises(WebhookRejected) as caught:
        verify(SECRET, sent, body, now=NOW)
    assert caught.value.reason == "bad_signature"


def test_another_secret_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="no webhook-signature matches"):
        verify(new_secret(), headers(), BODY, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301])
def test_stale_or_future_timestamps_are_rejected(skew: int) -> None:
    with pytest.raises(WebhookRejected) as caught:
        verify(SECRET, headers(), BODY, now=NOW + skew)
    assert caught.value.reason == "stale"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers_are_rejected(missing: str) -> None:
    sent = {k: v for k, v in headers().items() if k != missing}
    with pytest.raises(WebhookRejected, match=missing) as caught:
        verify(SECRET, sent, BODY, now=NOW)
    assert caught.value.reason == "missing_header"


def test_a_malformed_secret_is_a_value_error_that_does_not_echo_it() -> None:
    with pytest.raises(ValueError) as caught:
        sign("whsec_not base64!", "m", NOW, BODY)
    assert "not base64!" not in str(caught.value)


JOB = {"id": "vid_1", "status": "succeeded", "provider": "fal", "model": "ray-2-flash", "cost_usd": 0.2,
       "output": {"url": "https://cdn/x.mp4"}, "error": None, "attempts": [{"provider": "fal"}],
       "plan": {}, "request": {"prompt": "p"}}


@pytest.mark.parametrize(("status", "kind"), [
    ("succeeded", "video.completed"), ("failed", "video.failed"), ("cancelled", "video.cancelled"),
])
def test_job_event_names_the_terminal_state(status: str, kind: str) -> None:
    event = job_event({**JOB, "status": status}, now=NOW)
    assert event["type"] == kind
    assert event["timestamp"] == "2027-01-15T08:00:00Z"
    assert event["data"]["id"] == "vid_1" and event["data"]["output"] == {"url": "https://cdn/x.mp4"}
    assert "attempts" not in event["data"] and "plan" not in event["data"]


def test_job_event_refuses_an_unfinished_job() -> None:
    with pytest.raises(ValueError, match="only finished jobs"):
        job_event({**JOB, "status": "running"}, now=NOW)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    backoff = Backoff(base_s=1, cap_s=5, jitter=0.5)
    assert [backoff.delay(n, rng=lambda: 0.0) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert backoff.delay(2, rng=lambda: 1.0) == 1.0  # the most jitter halves it


async def test_delivery_retries_until_acknowledged(serve: Callable) -> None:
    receiver = Receiver(statuses=[500, 503])
    url = serve(receiver.app) + "/hook?token=app-own-token"
    clock = FakeClock(start=NOW)
    payload = job_event(JOB, now=NOW)
    async with httpx.AsyncClient() as client:
        record = await deliver(client, url, payload, SECRET, sleep=clock.sleep, clock=clock.now,
                               max_attempts=5, backoff=Backoff(base_s=2, cap_s=60), rng=lambda: 0.0)
    assert record.delivered
    assert [a.status_code for a in record.attempts] == [500, 503, 200]
    assert clock.sleeps == [2, 4]  # exponential, no sleep after the acknowledged attempt
    assert [a.at for a in record.attempts] == [NOW, NOW + 2, NOW + 6]
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert ids == {record.message_id}  # stable across retries
    for got, attempt in zip(receiver.received, record.attempts, strict=True):
        assert got.headers["webhook-timestamp"] == str(int(attempt.at))  # each attempt re-signed
        verify(SECRET, got.headers, got.body, now=attempt.at)
        assert json.loads(got.body) == payload
    text = json.dumps(record.to_dict())
    assert SECRET not in text and SECRET[6:] not in text and "app-own-token" not in text
    assert record.to_dict()["attempts"][0]["status_code"] == 500


async def test_delivery_gives_up_after_max_attempts_recording_transport_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    clock = FakeClock(start=NOW)
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        record = await deliver(client, "https://app.example/hook", {"type": "video.failed"}, SECRET,
                               sleep=clock.sleep, clock=clock.now, max_attempts=3, rng=lambda: 0.0)
    assert not record.delivered
    assert [(a.status_code, a.error) for a in record.attempts] == [(None, "ConnectError")] * 3
    assert len(clock.sleeps) == 2


async def test_outbox_delivers_only_what_is_due() -> None:
    seen: list[bytes] = []

    def app(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(204)

    done = {"a": False}
    outbox = Outbox(transport=httpx.MockTransport(app))
    outbox.add("a", "https://app.example/hook", ready=lambda: done["a"], render=lambda: (b"a", {}))
    assert await outbox.deliver_due() == [] and outbox.pending == 1
    done["a"] = True
    records = await outbox.deliver_due()
    assert [r.delivered for r in records] == [True] and seen == [b"a"] and outbox.pending == 0


async def test_the_delivery_worker_stops_when_cancelled_as_a_job_finishes(tmp_path):
    """A service stopping cancels its watchers, whose last act is ``kick``, and the worker in
    the same step: the cancel must win (``asyncio.wait_for`` on 3.11 swallowed it when the
    event was set at that moment, and the shutdown waited for ever)."""
    import asyncio

    import httpx

    from gateway.store.sqlite import SqliteJobStore
    from gateway.webhooks.delivery import DeliveryWorker

    async with SqliteJobStore(tmp_path / "jobs.db") as store, httpx.AsyncClient() as client:
        worker = DeliveryWorker(store, client, SECRET)
        running = asyncio.ensure_future(worker.run())
        for _ in range(50):  # until it waits for work (its first round found none)
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        worker.kick()
        running.cancel()
        done, _ = await asyncio.wait([running], timeout=5)
        assert done, "the worker went on after it was cancelled"
        assert running.cancelled()


def failed_job_with_hook():
    """A job that failed, whose webhook (to an app on no network) is due."""
    from gateway.errors import Unavailable
    from tests.store.jobs import new_job

    job = new_job(webhook_url="https://app.example/hook")
    job.fail(Unavailable("down", provider="fal"))
    return job


async def test_a_message_leased_too_long_ago_is_given_back_unsent(tmp_path):
    """A round that fell behind its lease (a slow store, a busy machine) sends nothing more:
    another replica may lease the message once the lease ends, and would send it again."""
    from gateway.store.sqlite import SqliteJobStore
    from gateway.webhooks.delivery import DeliveryWorker

    clock = FakeClock(start=NOW)
    posts: list[bytes] = []

    def app(request: httpx.Request) -> httpx.Response:
        posts.append(request.content)
        return httpx.Response(204)

    job = failed_job_with_hook()
    async with (SqliteJobStore(tmp_path / "jobs.db", clock=clock.now) as store,
                httpx.AsyncClient(transport=httpx.MockTransport(app)) as client):
        await store.save(job)

        async def slow_fetch(job_id: str):
            clock.t += 20  # the lease (30 s) has less left than one POST may take (15 s)
            return await store.get(job_id)

        late = DeliveryWorker(store, client, SECRET, clock=clock.now, fetch=slow_fetch, owner_id="late")
        await late.deliver_due()
        assert posts == []
        (row,) = await store.lease_deliveries("other", 30, 10)  # given back: due, not leased
        assert row.attempts == 0
        await store.record_delivery(row.message_id, "other", attempts=0, body=None, next_at=row.next_at)
        await DeliveryWorker(store, client, SECRET, clock=clock.now, owner_id="prompt").deliver_due()
        assert len(posts) == 1


async def test_a_delivery_outcome_waits_through_a_store_outage_and_is_not_sent_again(tmp_path):
    """The store goes away while the app answers: the outcome (outbox row, then the job's
    record) is written once it is back, so no worker sends the message again. It used to
    raise out of the round, and the message, still due, went out again once its lease ended."""
    import contextlib
    from typing import Any

    from gateway.errors import StoreUnavailable
    from gateway.job import VideoJob
    from gateway.store.sqlite import SqliteJobStore
    from gateway.webhooks.delivery import DeliveryWorker

    class StoreAway(SqliteJobStore):
        down = 0

        def _maybe_fail(self) -> None:
            if self.down:
                self.down -= 1
                raise StoreUnavailable("the job store (PostgreSQL) is unavailable (PoolTimeout)")

        async def record_delivery(self, message_id: str, owner_id: str, **outcome: Any) -> bool:
            self._maybe_fail()
            return await super().record_delivery(message_id, owner_id, **outcome)

        async def save(self, job: VideoJob, *, lease_owner: str | None = None, release: bool = False) -> None:
            self._maybe_fail()
            await super().save(job, lease_owner=lease_owner, release=release)

    clock = FakeClock(start=NOW)
    posts: list[str] = []

    def app(request: httpx.Request) -> httpx.Response:
        posts.append(request.headers["webhook-id"])
        store.down = 4  # the store goes away as the app answers: 4 writes fail
        return httpx.Response(204)

    job = failed_job_with_hook()
    async with (StoreAway(tmp_path / "jobs.db", clock=clock.now) as store,
                httpx.AsyncClient(transport=httpx.MockTransport(app)) as client):
        await store.save(job)
        worker = DeliveryWorker(store, client, SECRET, clock=clock.now, sleep=clock.sleep, owner_id="first")
        with contextlib.suppress(StoreUnavailable):  # as the worker's loop does with a failed round
            await worker.deliver_due()
        assert store.down == 0 and len(clock.sleeps) == 4  # it waited through the outage
        clock.t += 120  # past any lease: a message still due would be leased and sent again
        await DeliveryWorker(store, client, SECRET, clock=clock.now, owner_id="other").deliver_due()
        assert len(posts) == 1
        (record,) = (await store.get(job.id)).webhooks
        assert record["delivered"] and [a["status_code"] for a in record["attempts"]] == [204]
        assert record["message_id"] == posts[0]
