"""Adoption of a vendor job whose submit answer was lost: the callback URL that names the
attempt (exact wire shape), the job URLs rebuilt from a callback, and the waiting rules."""

from __future__ import annotations

import asyncio
import random
import time
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from gateway.adoption import Adoptions, attempt_signature, attempt_signed, callback_url
from gateway.config import ServiceConfig, Settings
from gateway.errors import AmbiguousSubmit, Unavailable
from gateway.job import Attempt, VideoJob
from gateway.provider import Adoption, ProviderSettings, Secret
from gateway.request import VideoRequest
from gateway.routing import Candidate
from gateway.vendor_calls import LiveAttempt, VendorCalls
from providers.apiframe import ApiframeAdapter
from providers.fal import FalAdapter
from tests.providers.test_fal import JOB_BASE, RID, Q, fixture

PUBLIC = "https://gw.example/base/"


def fal() -> FalAdapter:
    return FalAdapter(ProviderSettings("fal", api_key=Secret("fal-key"), credential_ref="env:FAL_KEY"))


def settings(public_url: str | None = PUBLIC, window_s: float = 300.0) -> Settings:
    return Settings(service=ServiceConfig(public_url=public_url), adoption_window_s=window_s)


def attempt(started_at: float | None = None) -> Attempt:
    return Attempt(provider="fal", vendor_model="fal-ai/luma-dream-machine/ray-2-flash/image-to-video",
                   started_at=time.time() if started_at is None else started_at, attempt_key="vid_1.1",
                   estimated_usd=Decimal("0.20"))


def test_adoption_is_declared_per_vendor_in_its_catalog() -> None:
    assert FalAdapter.adoption is Adoption.WEBHOOK_ATTEMPT_KEY
    assert ApiframeAdapter.adoption is Adoption.IDEMPOTENCY_KEY


@respx.mock
async def test_every_fal_submit_names_its_attempt_in_the_callback_url() -> None:
    submit = respx.post(f"{Q}/fal-ai/luma-dream-machine/ray-2-flash").mock(return_value=fixture("submit_ok"))
    provider, job = fal(), VideoJob(VideoRequest(prompt="a fox"))
    quote = provider.quote(job.request).quote
    assert quote is not None
    live = LiveAttempt(provider, attempt(), Candidate("fal", quote, 30.0))
    async with httpx.AsyncClient() as client:
        vjob = await VendorCalls(client, settings(), asyncio.sleep, random.Random(0)).submit(live, job)
    sent = submit.calls.last.request
    signature = attempt_signature(provider, "vid_1.1")  # the attempt signed: refused otherwise
    assert signature is not None and len(signature) == 32 and signature != attempt_signature(provider, "vid_1.2")
    assert parse_qs(urlsplit(str(sent.url)).query) == {
        "fal_webhook": [f"https://gw.example/base/webhooks/fal?attempt=vid_1.1&attempt_sig={signature}"]}
    encoded = (b"?fal_webhook=https%3A%2F%2Fgw.example%2Fbase%2Fwebhooks%2Ffal%3Fattempt%3Dvid_1.1%26attempt_sig%3D"
               + signature.encode())
    assert sent.url.raw_path.endswith(encoded)
    assert vjob.vendor_id == RID


def test_no_public_url_no_callback_and_no_attempt_for_vendors_that_adopt_otherwise() -> None:
    assert callback_url(settings(None), fal(), "vid_1.1") is None
    assert not Adoptions(settings(None)).possible(fal())
    assert not Adoptions(settings(window_s=0)).possible(fal())
    apiframe = ApiframeAdapter(ProviderSettings("apiframe", api_key=Secret("k"), credential_ref="env:K"))
    assert callback_url(settings(), apiframe, "vid_1.1") == "https://gw.example/base/webhooks/apiframe"


def test_a_job_rebuilt_from_a_callback_has_the_urls_of_a_submit_answer() -> None:
    adopted = fal().adopted_job("fal-ai/luma-dream-machine/ray-2-flash/image-to-video", RID)
    assert adopted is not None and adopted.vendor_id == RID
    assert adopted.urls == {"status": f"{JOB_BASE}/status", "response": JOB_BASE, "cancel": f"{JOB_BASE}/cancel"}
    assert fal().adopted_job("fal-ai/luma-dream-machine/ray-2", "../../x?y") is None  # never put in a URL


async def test_a_callback_naming_a_waiting_attempt_hands_it_the_vendor_job() -> None:
    adoptions, lost = Adoptions(settings()), AmbiguousSubmit("no answer", provider="fal")
    waiting = asyncio.create_task(adoptions.adopt(fal(), attempt(), lost))
    await asyncio.sleep(0)  # the waiter registers on its first step
    assert await adoptions.offer("apiframe", "vid_1.1", "other") is False  # another vendor's job: never this one's
    assert await adoptions.offer("fal", "vid_1.1", RID) is True
    adopted = await waiting
    assert adopted is not None and adopted.vendor_id == RID and adopted.urls["status"] == f"{JOB_BASE}/status"


async def test_a_callback_before_the_attempt_waits_is_kept_for_it() -> None:
    adoptions = Adoptions(settings())
    assert await adoptions.offer("fal", "vid_1.1", RID) is False  # nobody waits yet (a resume to come)
    adopted = await adoptions.adopt(fal(), attempt(), AmbiguousSubmit("process stopped", provider="fal"))
    assert adopted is not None and adopted.vendor_id == RID


@pytest.mark.parametrize("case", ["window_passed", "not_ambiguous", "no_public_url"])
async def test_no_adoption_when_it_is_not_possible(case: str) -> None:
    adoptions = Adoptions(settings(None if case == "no_public_url" else PUBLIC))
    if case != "window_passed":
        await adoptions.offer("fal", "vid_1.1", RID)  # even with a callback at hand
    error = Unavailable("503", provider="fal") if case == "not_ambiguous" else AmbiguousSubmit("x", provider="fal")
    started = time.time() - 301 if case == "window_passed" else None
    assert await adoptions.adopt(fal(), attempt(started), error) is None  # and at once: nothing to wait for


async def test_an_early_callback_is_kept_in_the_store_across_a_restart(tmp_path) -> None:
    from gateway.store.sqlite import SqliteJobStore

    async with SqliteJobStore(tmp_path / "jobs.db") as store:
        assert await Adoptions(settings(), store).offer("fal", "vid_1.1", RID) is False  # nobody waits yet
    async with SqliteJobStore(tmp_path / "jobs.db") as store:  # the process restarted: memory is gone
        restarted = Adoptions(settings(), store)
        assert await restarted.offer("fal", "vid_2.1", RID) is False  # the same job for another attempt: no
        adopted = await restarted.adopt(fal(), attempt(), AmbiguousSubmit("process stopped", provider="fal"))
        assert adopted is not None and adopted.vendor_id == RID
        assert await store.bound_job("fal", "vid_2.1") is None


async def test_a_waiting_attempt_finds_a_callback_bound_at_another_replica(tmp_path, monkeypatch) -> None:
    from gateway import adoption
    from gateway.store.sqlite import SqliteJobStore

    monkeypatch.setattr(adoption, "BINDING_CHECK_S", 0.01)  # looked up often: the test need not wait 2 s
    async with SqliteJobStore(tmp_path / "jobs.db") as store:
        here, there = Adoptions(settings(), store), Adoptions(settings(), store)  # two replicas, one store
        waiting = asyncio.create_task(here.adopt(fal(), attempt(), AmbiguousSubmit("no answer", provider="fal")))
        await asyncio.sleep(0)  # the attempt waits here ...
        assert await there.offer("fal", "vid_1.1", RID) is False  # ... the callback lands there, no relay
        async with asyncio.timeout(10):
            adopted = await waiting
    assert adopted is not None and adopted.vendor_id == RID


def test_an_attempts_signature_is_keyed_by_the_vendor_credential_and_checked_in_constant_time() -> None:
    provider, other_key = fal(), FalAdapter(ProviderSettings("fal", api_key=Secret("other"), credential_ref="c"))
    signature = attempt_signature(provider, "vid_1.1")
    assert signature is not None and "fal-key" not in signature
    assert attempt_signed(provider, "vid_1.1", signature)
    assert not attempt_signed(provider, "vid_1.2", signature)  # moved to another attempt
    assert not attempt_signed(other_key, "vid_1.1", signature)  # made without our credential
    assert not attempt_signed(provider, "vid_1.1", None) and not attempt_signed(provider, "vid_1.1", "")
    keyless = FalAdapter(ProviderSettings("fal"))
    assert attempt_signature(keyless, "vid_1.1") is None and not attempt_signed(keyless, "vid_1.1", signature)
    assert callback_url(settings(), keyless, "vid_1.1") == "https://gw.example/base/webhooks/fal"
