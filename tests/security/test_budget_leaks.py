"""A reservation is released on every way out: refused, failed, cancelled, replayed,
deleted. Whatever a caller does, the gateway's and the key's ledgers hold exactly the
estimates of the jobs still running."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

from gateway.api import Gateway
from gateway.config import BudgetConfig, PollingConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.faults import parse_fault
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.job import JobStatus
from gateway.plugins import discover
from gateway.request import VideoRequest
from tests.security.conftest import Harness, MakeService

FAL: dict[str, Any] = {"prompt": "a fox", "providers": ["fal"]}  # $0.20 on the sandbox
NOTHING = (Decimal(0), Decimal(0))


def test_cancelled_jobs_that_cost_nothing_free_the_key_budget(make_service: MakeService) -> None:
    harness = make_service(key_budget=0.5, run_s=3600)
    for cancel in ("/v1/jobs/{}/cancel", "/v1/videos/{}/cancel", "/v1/jobs/{}/cancel"):
        job = harness.post("/v1/jobs", json=FAL)
        assert job.status_code == 202, job.text  # refused once two cancelled jobs leaked $0.40
        cancelled = harness.post(cancel.format(job.json()["id"]))
        assert cancelled.status_code == 200, cancelled.text
        stored = harness.wait(job.json()["id"])
        assert stored.status is JobStatus.CANCELLED and stored.cost_usd == 0
        assert harness.reserved() == NOTHING


def test_replaying_a_job_reserves_and_costs_nothing_more(make_service: MakeService) -> None:
    harness = make_service(key_budget=0.5, per_day_usd=0.5)
    first = harness.post("/v1/jobs", json=FAL, headers={"Idempotency-Key": "once"})
    assert first.status_code == 202, first.text
    running_replay = harness.post("/v1/jobs", json=FAL, headers={"Idempotency-Key": "once"})
    assert running_replay.json()["id"] == first.json()["id"]
    finished = harness.wait(first.json()["id"])
    assert finished.status is JobStatus.SUCCEEDED
    for _ in range(3):
        replay = harness.post("/v1/jobs", json=FAL, headers={"Idempotency-Key": "once"})
        assert replay.status_code == 202 and replay.json()["id"] == first.json()["id"]
    assert harness.reserved() == NOTHING
    key_ledger = harness.service.key_ledger(harness.key)
    assert key_ledger is not None
    assert key_ledger.spent_today() == harness.service.gateway.ledger.spent_today() == finished.cost_usd
    # $0.20 spent of $0.50: another $0.20 job still fits (a replay used to add its price again)
    assert harness.post("/v1/jobs", json=FAL).status_code == 202


def test_after_any_sequence_the_ledgers_hold_the_running_jobs_estimates(make_service: MakeService) -> None:
    harness = make_service(per_day_usd=20.0, key_budget=10.0)
    emulators = harness.sandbox.emulators
    emulators["fal"].timing = Timing(0.05, 3600)  # fal's jobs run until the end of the test
    emulators["railwail"].faults.set([parse_fault("fail-late")])
    apiframe: dict[str, Any] = {"prompt": "a fox", "providers": ["apiframe"]}
    railwail: dict[str, Any] = {"prompt": "a fox", "providers": ["railwail"]}

    def create(body: dict[str, Any], status: int = 202, key: str | None = None) -> str:
        headers = {"Idempotency-Key": key} if key else {}
        response = harness.post("/v1/jobs", content=json.dumps(body), headers={**headers,
                                "content-type": "application/json"})
        assert response.status_code == status, response.text
        return str(response.json()["id"]) if status == 202 else ""

    # refused: each after validation, planning or a budget check
    create({**FAL, "deadline_s": float("inf")}, 400)
    create({**FAL, "metadata": {"k": "\ud83d"}}, 400)
    create({**FAL, "start_image": "/etc/hostname"}, 400)
    create({**apiframe, "aspect_ratio": "9:21"}, 400)  # apiframe cannot
    create({**FAL, "max_cost_usd": 0.01}, 402)
    # running, then replayed while running, and one refused for reusing its key
    running = [create(FAL, key="run-1"), create(FAL)]
    assert create(FAL, key="run-1") == running[0]
    create({**FAL, "prompt": "a cat"}, 409, key="run-1")
    # finished, then replayed
    done = create(apiframe, key="done-1")
    assert harness.wait(done).status is JobStatus.SUCCEEDED
    assert create(apiframe, key="done-1") == done
    # failed at the vendor
    failed = create(railwail)
    assert harness.wait(failed).status is JobStatus.FAILED
    # cancelled, and deleted while running
    cancelled = create(FAL)
    assert harness.post(f"/v1/jobs/{cancelled}/cancel").status_code == 200
    deleted = create(FAL, key="gone")
    assert harness.client.delete(f"/v1/videos/{deleted}", headers=harness.auth).status_code == 200
    harness.wait(cancelled)  # (the deleted one was stopped before DELETE answered)

    still_running = {j["id"]: j for j in harness.jobs() if j["status"] not in ("succeeded", "failed", "cancelled")}
    assert set(still_running) == set(running)
    estimates = sum((Decimal(str(j["plan"]["candidates"][0]["cost_usd"])) for j in still_running.values()),
                    Decimal(0))
    assert estimates == Decimal("0.40")
    assert harness.reserved() == (estimates, estimates)
    assert set(harness.service.gateway.ledger.reserved()) == set(running)


def test_a_restarted_service_holds_the_estimates_of_the_jobs_it_resumed(make_service: MakeService) -> None:
    harness = make_service(per_day_usd=20.0, key_budget=10.0, run_s=3600)
    running = [harness.post("/v1/jobs", json=FAL).json()["id"] for _ in range(2)]
    for job_id in running:  # stored as accepted by the vendor: the restart follows them, $0.20 each
        _until_stored_as_submitted(harness, job_id)
    harness.restart()
    assert harness.reserved() == (Decimal("0.40"), Decimal("0.40"))
    assert set(harness.service.gateway.ledger.reserved()) == set(running)
    harness.post(f"/v1/jobs/{running[0]}/cancel")
    harness.wait(running[0])
    assert harness.reserved() == (Decimal("0.20"), Decimal("0.20"))


def _until_stored_as_submitted(harness: Harness, job_id: str, timeout_s: float = 10) -> None:
    """Until the store (what a restarted service reads) has the vendor's acceptance. A job
    cut off mid-submit by the stop would be failed as ambiguous on resume, never resent."""
    assert harness.client.portal is not None
    deadline = time.monotonic() + timeout_s
    while (stored := harness.client.portal.call(harness.service.store.get, job_id)) is None or \
            stored.status is JobStatus.QUEUED:
        assert time.monotonic() < deadline, f"{job_id} was not accepted within {timeout_s} s"
        time.sleep(0.01)


async def test_a_job_cancelled_before_its_task_ran_releases_its_reservation() -> None:
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.05, run_s=0.1))
    settings = Settings(polling=PollingConfig(initial_s=0.05, max_s=0.1), budgets=BudgetConfig(per_day_usd=1.0))
    with BackgroundServer(sandbox.app) as server:
        async with Gateway.from_settings(settings, sandbox_url=server.url) as gw:
            job = await gw.submit(VideoRequest(prompt="a fox", providers=("fal",)))
            await gw.cancel(job)  # at once: the job's task has not started
            assert (await gw.wait(job)).status is JobStatus.CANCELLED
            assert gw.ledger.reserved() == {} and gw.ledger.spent_today() == 0
