"""The shortcuts of the inbound create path (docs/benchmarks.md 6.inbound3): each answers
exactly as the long way did."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.api import Gateway
from gateway.config import Settings
from gateway.errors import IdempotencyConflict, InvalidRequest
from gateway.job import VideoJob
from gateway.provider import ProviderSettings, Secret
from gateway.request import VideoRequest
from gateway.server import openai_compat
from gateway.store import codec
from gateway.store.base import JobStore
from gateway.store.sqlite import SqliteJobStore
from providers.railwail import RailwailAdapter


def gateway(store: JobStore | None = None) -> Gateway:
    adapter = RailwailAdapter(ProviderSettings("railwail", Secret("k"), "env:RAILWAIL_API_KEY"))
    gw = Gateway(Settings(), {"railwail": adapter}, store=store)
    # planned, admitted and known by its key, never sent
    gw.launch = lambda job, _plan, _ledgers, on_update, **_k: gw.live.add(job, on_update)  # type: ignore[method-assign]
    return gw


async def test_only_a_keyed_job_is_fingerprinted_and_its_replays_still_compare() -> None:
    gw = gateway()
    try:
        keyless, started = await gw.admit(VideoRequest(prompt="a fox", resolution="540p", duration_s=5))
        assert started and keyless.fingerprint is None  # nothing can replay it: no digest made
        assert codec.request_json(keyless) == codec.dumps(codec.encode_request(keyless.request))  # first write
        keyed_request = VideoRequest(prompt="a fox", resolution="540p", duration_s=5, idempotency_key="k1")
        keyed, started = await gw.admit(keyed_request)
        assert started and keyed.fingerprint == codec.fingerprint(keyed_request)
        again, started = await gw.admit(VideoRequest(prompt="a fox", resolution="540p", duration_s=5,
                                                     idempotency_key="k1"))
        assert again is keyed and not started
        with pytest.raises(IdempotencyConflict):
            await gw.admit(VideoRequest(prompt="another fox", resolution="540p", duration_s=5, idempotency_key="k1"))
    finally:
        await gw.aclose()


def test_an_unknown_field_is_named_as_before_and_known_fields_map_as_before() -> None:
    settings = Settings()
    with pytest.raises(InvalidRequest) as refused:
        openai_compat.request_from_openai({"prompt": "a", "zeta": 1, "colour": "red", "beta": 2}, settings)
    assert refused.value.field == "beta"  # the first in sorted order, as sorted(...)[0] named it
    body = {"prompt": "a fox", "seconds": "5", "size": "960x540", "route": "cheapest", "loop": None,
            "max_cost_usd": 2.5, "concepts": [], "metadata": {"a": "b"}, "idempotency_key": "x"}
    made = openai_compat.request_from_openai(dict(body), settings)
    fields = {k: body[k] for k in openai_compat.EXTRA_FIELDS if body.get(k) is not None}  # the long way
    fields.update(prompt="a fox", duration_s=5, aspect_ratio="16:9", resolution="540p")
    assert made == VideoRequest.parse(fields, local_files=False)


def test_a_video_object_holds_plain_strings_as_before() -> None:
    job = VideoJob(request=VideoRequest(prompt="a fox", resolution="540p", duration_s=5, aspect_ratio="9:16"))
    video = openai_compat.video_object(job)
    details = video["reelgate"]
    assert (video["model"], details["aspect_ratio"], details["resolution"]) == ("ray-2-flash", "9:16", "540p")
    for value in (video["model"], details["aspect_ratio"], details["resolution"]):
        assert type(value) is str  # not the enum: any encoder writes it the same
    assert json.loads(json.dumps(video)) == video


async def test_submits_in_a_loop_let_the_loop_run_with_a_store_and_without(tmp_path: Path) -> None:
    """The pacing ``admit`` promises: a caller submitting job after job does not hold the loop.
    Without a store ``admit`` yields itself; with one, the job's first write is the pause."""
    store = SqliteJobStore(tmp_path / "jobs.db")
    await store.open()
    try:
        for gw in (gateway(), gateway(store)):
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            ticker = asyncio.create_task(tick())
            await asyncio.sleep(0)
            start = ticks
            for i in range(20):
                await gw.submit(VideoRequest(prompt=f"a fox, take {i}", resolution="540p", duration_s=5))
            ticker.cancel()
            assert ticks - start >= 20, (gw.store, ticks - start)
            await gw.aclose()
    finally:
        await store.close()
