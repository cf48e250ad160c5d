"""The emulators name what a duplicate payment looks like: each accepted submission is
recorded under the attempt key its request names (fal's callback URL, apiframe's
Idempotency-Key) or else its prompt, and ``stats()["duplicates"]`` lists the references
accepted more than once, with when, from which client and which vendor job each time. A
failing "one accepted submission per job" then says which job was paid twice and from where."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gateway.emulation.base import Timing
from gateway.provider import ProviderSettings, Secret
from gateway.request import Resolution, VideoRequest
from providers.apiframe.adapter import ApiframeAdapter
from providers.fal import FalAdapter
from providers.railwail.adapter import RailwailAdapter

pytestmark = pytest.mark.integration
FAST = Timing(queue_s=0.05, run_s=0.1)
CALLBACK = "http://127.0.0.1:9/webhooks/fal?attempt={key}&attempt_sig=00"


@pytest.mark.parametrize(("adapter", "callback"), [(FalAdapter, CALLBACK), (FalAdapter, None),
                                                   (RailwailAdapter, None)])
async def test_a_reference_accepted_twice_is_named_with_both_acceptances(
        serve: Callable, adapter: type, callback: str | None) -> None:
    emu = adapter.emulator(timing=FAST)
    vendor = adapter(ProviderSettings(adapter.name, api_key=Secret("k"), base_url=serve(emu)))
    async with httpx.AsyncClient() as client:
        for key in ("job1.1", "job1.1", "job2.1"):  # the first attempt sent twice, then another job's
            url = callback.format(key=key) if callback else None
            sent = vendor.build_submit(VideoRequest(prompt=f"a fox {key[3]}"), resolution=Resolution.P540,
                                       attempt_key=key, callback_url=url)
            assert (await client.send(sent)).is_success

    stats = emu.stats()
    [(reference, made)] = stats["duplicates"].items()
    # fal's callback URL names the attempt; without one (and for railwail) the prompt does
    assert reference == ("job1.1" if callback else "a fox 1")
    assert len(made) == 2 and made[0][2] != made[1][2] and all(made_at > 0 for made_at, _, _ in made)
    assert all(client.startswith("127.0.0.1:") for _, client, _ in made)
    assert stats["accepted_submissions"] == 3


async def test_an_idempotent_replay_is_no_duplicate(serve: Callable) -> None:
    emu = ApiframeAdapter.emulator(timing=FAST)
    vendor = ApiframeAdapter(ProviderSettings("apiframe", api_key=Secret("k"), base_url=serve(emu)))
    async with httpx.AsyncClient() as client:
        for _ in range(2):  # the same Idempotency-Key: apiframe returns the job it made
            sent = vendor.build_submit(VideoRequest(prompt="a fox"), resolution=Resolution.P720, attempt_key="job1.1")
            assert (await client.send(sent)).is_success
    assert emu.stats()["duplicates"] == {} and emu.accepted_submissions == 1
    assert list(emu.accepted_by) == ["job1.1"]
