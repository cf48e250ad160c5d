"""The emulators' callback retries: fal's published schedule (10 retries over 2 h), scaled
like the emulated job timings, and one message's retries never holding back another's."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.emulation.base import Timing
from gateway.emulation.outbox import Outbox, RetrySchedule
from gateway.provider import ProviderSettings, Secret
from providers.fal import FalAdapter
from providers.fal.emulator import WEBHOOK_RETRIES, FalEmulator
from tests.support import FakeClock, until
from tests.webhooks.test_inbound_fal import NOW, submit


def test_a_schedule_spreads_its_retries_over_its_span_each_wait_twice_the_last() -> None:
    attempts, backoff = RetrySchedule(retries=10, span_s=7200.0).scaled(1.0)
    waits = [backoff.delay(n, rng=lambda: 0.0) for n in range(1, attempts)]  # without jitter
    assert attempts == 11 and len(waits) == 10
    assert sum(waits) == pytest.approx(7200.0)
    assert all(b == pytest.approx(2 * a) for a, b in zip(waits, waits[1:], strict=False))
    _, scaled = RetrySchedule(retries=10, span_s=7200.0).scaled(0.01)
    assert sum(scaled.delay(n, rng=lambda: 0.0) for n in range(1, 11)) == pytest.approx(72.0)
    assert WEBHOOK_RETRIES == RetrySchedule(retries=10, span_s=7200.0)  # fal: "10 times in the span of 2 hours"


async def test_fal_retries_a_refused_callback_on_its_scaled_schedule() -> None:
    clock, sleeps, posted = FakeClock(), [], []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    def down(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(503)  # the gateway is down the whole time

    emu = FalEmulator(timing=Timing(queue_s=1, run_s=1, webhook_retry_scale=0.5), clock=clock.now,
                      wall_clock=lambda: NOW, auto_deliver=False,
                      outbox=Outbox(transport=httpx.MockTransport(down), sleep=sleep))
    fal = FalAdapter(ProviderSettings("fal", api_key=Secret("k"), base_url="http://fal.test"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(emu)) as client:
        await submit(fal, client, "https://gw.example/hook")
    await clock.sleep(5)
    [record] = await emu.deliver_due_webhooks()
    assert not record.delivered and len(record.attempts) == len(posted) == 11
    assert 0.8 * 3600 <= sum(sleeps) <= 3600  # half of fal's 2 h, less up to 20 % jitter


async def test_one_callback_waiting_out_its_retries_holds_back_no_other() -> None:
    def app(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500 if request.url.path == "/down" else 204)

    outbox = Outbox(tick_s=0.01, transport=httpx.MockTransport(app))
    slow = RetrySchedule(retries=3, span_s=30.0).scaled(1.0)
    outbox.add("a", "https://app.example/down", ready=lambda: True, render=lambda: (b"a", {}), schedule=slow)
    outbox.start()
    await asyncio.sleep(0.05)  # "a" failed once and now waits seconds before its next try
    outbox.add("b", "https://app.example/up", ready=lambda: True, render=lambda: (b"b", {}))
    outbox.start()
    await until(lambda: bool(outbox.records), timeout_s=2)  # well before "a"'s next try (> 3 s)
    assert [r.message_id for r in outbox.records] == ["b"] and outbox.records[0].delivered
    assert outbox._ticker is not None and not outbox._ticker.done()  # "a" still retrying
    outbox._ticker.cancel()
    await asyncio.gather(outbox._ticker, return_exceptions=True)
