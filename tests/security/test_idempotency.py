"""An idempotency key names one request: a retry of it gets the same job and pays nothing
more, another request under it is a 409 naming the key, and a deleted job frees its key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.api import Gateway
from gateway.config import PollingConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.errors import InvalidRequest
from gateway.job import VideoJob
from gateway.plugins import discover
from gateway.request import VideoRequest
from gateway.store.sqlite import SqliteJobStore
from tests.security.conftest import Harness


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Until ``condition`` holds (checked every 10 ms), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


@pytest.mark.parametrize("finished", [True, False], ids=["finished", "running"])
def test_a_key_reused_after_delete_makes_a_new_job(harness: Harness, finished: bool) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = harness.post("/v1/videos", json={"prompt": "a fox"}, headers=headers)
    assert first.status_code == 200, first.text
    if finished:
        harness.wait(first.json()["id"])
    else:  # deleted while the vendor runs it, not before its submit went out
        wait_for(lambda: harness.submissions() == 1)
    deleted = harness.client.delete(f"/v1/videos/{first.json()['id']}", headers=harness.auth)
    assert deleted.status_code == 200, deleted.text

    again = harness.post("/v1/videos", json={"prompt": "a fox"}, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["id"] != first.json()["id"]
    assert harness.wait(again.json()["id"]).status.value == "succeeded"
    assert [j["id"] for j in harness.jobs()] == [again.json()["id"]]
    assert harness.submissions() == 2


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/videos"])
def test_a_key_reused_with_another_request_is_a_409_naming_the_key(harness: Harness, route: str) -> None:
    first = harness.post(route, json={"prompt": "a fox", "idempotency_key": "order-42"})
    assert first.status_code in (200, 202), first.text
    # the same request, the key in the header this time: the same job
    same = harness.post(route, json={"prompt": "a fox"}, headers={"Idempotency-Key": "order-42"})
    assert same.status_code == first.status_code and same.json()["id"] == first.json()["id"]

    for other in ({"prompt": "a cat"}, {"prompt": "a fox", "aspect_ratio": "1:1"}, {"prompt": "a fox", "loop": True},
                  {"prompt": "a fox", "metadata": {"order": "43"}}):
        response = harness.post(route, json={**other, "idempotency_key": "order-42"})
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["param"] == "idempotency_key" and "'order-42'" in error["message"]
        assert error["code"] == "idempotency_conflict"
    harness.wait(first.json()["id"])
    assert harness.submissions() == 1 and len(harness.jobs()) == 1


async def test_a_process_that_never_saw_the_first_request_still_tells_them_apart(tmp_path: Path) -> None:
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.05, run_s=0.1))
    settings = Settings(polling=PollingConfig(initial_s=0.05, max_s=0.1))
    with BackgroundServer(sandbox.app) as server:
        async with SqliteJobStore(tmp_path / "jobs.db") as store:
            async with Gateway.from_settings(settings, sandbox_url=server.url, store=store) as first:
                job = await first.wait(await first.submit(VideoRequest(prompt="a fox", idempotency_key="k1")))
            async with Gateway.from_settings(settings, sandbox_url=server.url, store=store) as second:
                replay = await second.submit(VideoRequest(prompt="a fox", idempotency_key="k1"))
                assert replay.id == job.id
                with pytest.raises(InvalidRequest) as raised:
                    await second.submit(VideoRequest(prompt="a cat", idempotency_key="k1"))
    assert raised.value.field == "idempotency_key" and job.id in raised.value.message
    assert sum(emu.accepted_submissions for emu in sandbox.emulators.values()) == 1


async def test_two_processes_racing_one_key_with_two_requests_make_one_job(tmp_path: Path) -> None:
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.05, run_s=0.1))
    settings = Settings(polling=PollingConfig(initial_s=0.05, max_s=0.1))
    with BackgroundServer(sandbox.app) as server:
        async with SqliteJobStore(tmp_path / "jobs.db") as store:
            async with (Gateway.from_settings(settings, sandbox_url=server.url, store=store) as a,
                        Gateway.from_settings(settings, sandbox_url=server.url, store=store) as b):
                results = await asyncio.gather(a.submit(VideoRequest(prompt="a fox", idempotency_key="k1")),
                                               b.submit(VideoRequest(prompt="a cat", idempotency_key="k1")),
                                               return_exceptions=True)
                jobs = [r for r in results if isinstance(r, VideoJob)]
                refused = [r for r in results if isinstance(r, InvalidRequest)]
                assert len(jobs) == 1 and len(refused) == 1, results
                assert refused[0].field == "idempotency_key"
                await (a if results[0] is jobs[0] else b).wait(jobs[0])
                # the loser's reservation went with it; the winner's settled
                assert a.ledger.reserved() == {} and b.ledger.reserved() == {}
    assert sum(emu.accepted_submissions for emu in sandbox.emulators.values()) == 1
