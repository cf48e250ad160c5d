"""Adoption by list scan for OpenAI-style vendors (railwail): the ``GET /videos`` wire shape
(respx), the matching rules, the scan's bounds, and the emulator's list endpoint."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import respx

from gateway import adoption
from gateway.adoption import Adoptions, matching
from gateway.config import Settings
from gateway.errors import AmbiguousSubmit, Unavailable
from gateway.job import Attempt
from gateway.provider import Adoption, ListedJob, ListPage, Provider, ProviderSettings, Secret
from gateway.store.sqlite import SqliteJobStore
from providers.railwail import RailwailAdapter

FIXTURES = Path(__file__).parent.parent / "fixtures" / "railwail"
BASE = "https://railwail.com/api/v1"
KEY = "rw_live_abcdef123456"
MODEL = "luma-ray-flash-2"
T0 = 1764000000.0


def adapter() -> RailwailAdapter:
    return RailwailAdapter(ProviderSettings("railwail", Secret(KEY), "env:RAILWAIL_API_KEY"))


def attempt(started_at: float = T0, key: str = "job_1.1") -> Attempt:
    return Attempt(provider="railwail", vendor_model=MODEL, started_at=started_at, attempt_key=key,
                   estimated_usd=Decimal("0.40"))


def listed(vid: str, prompt: str = "waves", created: float = T0 + 1, model: str | None = MODEL,
           reference: str | None = None) -> ListedJob:
    return ListedJob(vid, model, created, prompt, reference)


def test_railwail_declares_adoption_by_list_scan() -> None:
    assert RailwailAdapter.adoption is Adoption.LIST_SCAN


@respx.mock
async def test_the_list_request_and_its_answer_on_the_wire() -> None:
    route = respx.get(f"{BASE}/videos").mock(return_value=httpx.Response(
        200, content=(FIXTURES / "video_list.json").read_bytes(), headers={"content-type": "application/json"}))
    a = adapter()
    async with httpx.AsyncClient() as client:
        first = await client.send(a.build_list(None))
        older = await client.send(a.build_list("video_aaa"))
    sent, sent_after = route.calls[0].request, route.calls[1].request
    assert sent.method == "GET" and sent.headers["authorization"] == f"Bearer {KEY}"
    assert str(sent.url) == f"{BASE}/videos?limit=100&order=desc"
    assert str(sent_after.url) == f"{BASE}/videos?limit=100&order=desc&after=video_aaa"
    page = a.parse_list(first)
    assert page == ListPage([ListedJob("video_bbb", MODEL, 1764000010, "a fox in snow"),
                             ListedJob("video_aaa", MODEL, 1764000000, "waves on black sand")], "video_aaa")
    assert a.parse_list(older).next_after == "video_aaa"  # has_more: the cursor to go on from
    last = httpx.Response(200, json={"object": "list", "data": [], "first_id": None, "last_id": None,
                                     "has_more": False})
    assert a.parse_list(last) == ListPage([], None)
    with pytest.raises(Unavailable):
        a.parse_list(httpx.Response(503, json={"error": {"message": "down", "type": "server_error"}}))


def test_an_adopted_video_is_addressed_like_a_created_one() -> None:
    job = adapter().adopted_job(MODEL, "video_aaa")
    assert job is not None and job.urls == {"status": f"{BASE}/videos/video_aaa",
                                            "content": f"{BASE}/videos/video_aaa/content"}
    assert adapter().adopted_job(MODEL, "../../x?y") is None  # never put in a URL


def test_matching_by_prompt_model_and_created_time() -> None:
    mine = listed("v1", "waves")
    assert matching([mine, listed("v2", "fox")], attempt(), "waves") == [mine]
    assert matching([listed("v3", created=T0 + adoption.SCAN_CLOCK_S + 5)], attempt(), "waves") == []
    assert matching([listed("v4", model="other-model")], attempt(), "waves") == []
    twins = [listed("v5"), listed("v6")]
    assert matching(twins, attempt(), "waves") == twins  # the caller adopts neither


def test_matching_by_an_echoed_reference_ignores_prompts() -> None:
    mine = listed("v1", "anything", reference="job_1.1")
    assert matching([mine, listed("v2", "waves", reference="job_2.1")], attempt(), "waves") == [mine]


class Lister:
    def __init__(self, *pages: ListPage) -> None:
        self.pages = list(pages)
        self.asked: list[str | None] = []

    async def __call__(self, provider: Provider, after: str | None) -> ListPage:
        self.asked.append(after)
        return self.pages[min(len(self.asked) - 1, len(self.pages) - 1)]


LOST = AmbiguousSubmit("connection dropped", provider="railwail")


async def test_a_scan_reads_a_few_pages_newest_first_and_adopts_the_one_match(monkeypatch) -> None:
    now = time.time()
    lister = Lister(ListPage([listed("v9", "other", now + 5)], "v9"),
                    ListPage([listed("v8", "waves", now + 1)], None))
    adopted = await Adoptions(Settings()).adopt(adapter(), attempt(now), LOST, prompt="waves", lister=lister)
    assert adopted is not None and adopted.vendor_id == "v8" and lister.asked == [None, "v9"]

    # pages go on for ever: the scan stops after SCAN_PAGES, and rescans only within the window
    monkeypatch.setattr(adoption, "SCAN_WAITS_S", (0.01,))
    endless = Lister(ListPage([listed("vx", "other", now)], "vx"))
    assert await Adoptions(Settings()).adopt(adapter(), attempt(now), LOST, prompt="waves", lister=endless) is None
    assert len(endless.asked) == 2 * adoption.SCAN_PAGES

    # a page older than our submit ends the scan
    old = Lister(ListPage([listed("vo", "other", now - 10 * adoption.SCAN_CLOCK_S)], "vo"))
    assert await Adoptions(Settings()).adopt(adapter(), attempt(now), LOST, prompt="waves", lister=old) is None
    assert len(old.asked) == 2


async def test_no_adoption_of_twins_of_a_job_bound_elsewhere_or_without_a_window(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(adoption, "SCAN_WAITS_S", ())
    now = time.time()
    twins = Lister(ListPage([listed("v1", "waves", now), listed("v2", "waves", now)]))
    assert await Adoptions(Settings()).adopt(adapter(), attempt(now), LOST, prompt="waves", lister=twins) is None
    one = Lister(ListPage([listed("v1", "waves", now)]))
    async with SqliteJobStore(tmp_path / "jobs.db") as store:
        first = await Adoptions(Settings(), store).adopt(adapter(), attempt(now), LOST, prompt="waves", lister=one)
        assert first is not None and first.vendor_id == "v1"
        again = await Adoptions(Settings(), store).adopt(adapter(), attempt(now, "job_2.1"), LOST, prompt="waves",
                                                         lister=one)
        assert again is None  # v1 is job_1.1's: one vendor job, one attempt
    closed = Adoptions(Settings(adoption_window_s=0))
    assert await closed.adopt(adapter(), attempt(now), LOST, prompt="waves", lister=one) is None
    not_lost = Unavailable("503", provider="railwail")
    assert await Adoptions(Settings()).adopt(adapter(), attempt(now), not_lost, prompt="waves", lister=one) is None


def test_a_vendor_echoing_metadata_gets_our_attempt_key_and_is_matched_by_it() -> None:
    import json
    from dataclasses import replace

    from gateway.request import Resolution, VideoRequest

    a = adapter()
    a.cat = replace(a.cat, metadata_key="reelgate_attempt")
    sent = a.build_submit(VideoRequest(prompt="waves"), resolution=Resolution.P720, attempt_key="job_1.1")
    assert json.loads(sent.content)["metadata"] == {"reelgate_attempt": "job_1.1"}
    page = a.parse_list(httpx.Response(200, json={"object": "list", "has_more": False, "data": [
        {"id": "video_m", "status": "queued", "created_at": 1, "prompt": "x",
         "metadata": {"reelgate_attempt": "job_1.1"}},
        {"id": "video_n", "status": "queued", "created_at": 1, "prompt": "x"}]}))
    assert [j.reference for j in page.jobs] == ["job_1.1", None]
    assert [j.vendor_id for j in matching(page.jobs, attempt(), "waves")] == ["video_m"]
    plain = adapter().build_submit(VideoRequest(prompt="waves"), resolution=Resolution.P720, attempt_key="job_1.1")
    assert "metadata" not in json.loads(plain.content)  # the OpenAI shape has none: railwail sends none
