"""The router's promises, shown in the sandbox: real adapters, real loopback HTTP, and
the emulators' own counters, on a fake clock shared by gateway and emulators."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.api import Gateway
from gateway.config import HedgeConfig, RetryConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.faults import parse_fault
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.errors import BudgetExceeded
from gateway.job import AttemptOutcome, JobStatus
from gateway.plugins import discover
from gateway.request import VideoRequest
from gateway.routing.circuit import CircuitSettings
from tests.support import FakeClock


@pytest.fixture
def world():
    """``world(settings=None, faults=None)`` -> (gateway, sandbox, clock); cleaned up after."""
    servers, gateways = [], []

    def make(settings: Settings | None = None, faults: dict[str, list[str]] | None = None):
        clock = FakeClock()
        parsed = {v: [parse_fault(f) for f in fs] for v, fs in (faults or {}).items()}
        sandbox = Sandbox.from_providers(discover().providers, parsed, Timing(queue_s=5, run_s=20), clock=clock.now)
        server = BackgroundServer(sandbox.app).start()
        servers.append(server)
        settings = settings or Settings(fallback_order=["fal", "apiframe", "railwail"])
        gw = Gateway.from_settings(settings, sandbox_url=server.url, sleep=clock.sleep, clock=clock.now)
        gateways.append(gw)
        return gw, sandbox, clock

    yield make
    for server in servers:
        server.stop()


def accepted(sandbox: Sandbox, vendor: str) -> int:
    return sandbox.stats()[vendor]["accepted_submissions"]


async def test_outage_opens_the_circuit_and_a_half_open_probe_closes_it(world):
    # a long cooldown, so the emulated minutes these jobs take do not reach the probe
    settings = Settings(fallback_order=["fal", "apiframe", "railwail"],
                        circuit=CircuitSettings(cooldown_s=3600, max_cooldown_s=7200))
    gw, sandbox, clock = world(settings, faults={"fal": ["outage"]})
    async with gw:
        tried_fal = []
        for _ in range(8):
            job = await gw.generate(VideoRequest(prompt="a fox"))
            assert job.status is JobStatus.SUCCEEDED and job.provider != "fal"
            tried_fal.append(job.attempts[0].provider == "fal")
        threshold = gw.settings.circuit.consecutive_failures
        assert tried_fal == [True] * threshold + [False] * (8 - threshold)
        skipped = job.plan["skipped"]["fal"]
        assert "circuit open" in skipped
        sandbox.emulators["fal"].faults.clear()
        clock.t += gw.settings.circuit.cooldown_s + 1  # the cooldown passes: one probe may go
        probe = await gw.generate(VideoRequest(prompt="a fox"))
        assert probe.provider == "fal" and probe.attempts[0].provider == "fal"
        after = await gw.generate(VideoRequest(prompt="a fox"))
        assert after.provider == "fal"  # closed again
    assert accepted(sandbox, "fal") == 2


async def test_rate_limit_is_honoured_then_succeeds(world):
    gw, sandbox, clock = world(faults={"apiframe": ["rate-limit:retry_after=3,times=2"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox", aspect_ratio="1:1"))
    assert job.provider == "apiframe" and job.attempts[0].submit_retries == 2
    assert clock.sleeps[:2] == [3.0, 3.0]
    assert accepted(sandbox, "apiframe") == 1


async def test_rate_limit_longer_than_configured_falls_back(world):
    settings = Settings(fallback_order=["apiframe", "fal"], default_route="priority",
                        retry=RetryConfig(max_retry_after_s=10))
    gw, sandbox, _ = world(settings, faults={"apiframe": ["rate-limit:retry_after=60"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
    assert [a.provider for a in job.attempts] == ["apiframe", "fal"]
    assert job.attempts[0].error["class"] == "RateLimited" and job.provider == "fal"


async def test_drop_after_accept_at_apiframe_reconciles_to_one_submission_per_job(world):
    gw, sandbox, _ = world(faults={"apiframe": ["drop-after-accept"]})
    async with gw:
        jobs = [await gw.generate(VideoRequest(prompt=f"fox {i}", aspect_ratio="1:1")) for i in range(3)]
    assert all(j.status is JobStatus.SUCCEEDED and j.provider == "apiframe" for j in jobs)
    assert accepted(sandbox, "apiframe") == 3  # one per job, though every submit answer was lost


async def test_drop_after_accept_at_fal_is_never_resubmitted(world):
    gw, sandbox, _ = world(faults={"fal": ["drop-after-accept"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox", aspect_ratio="9:21"))
    assert job.status is JobStatus.FAILED and job.error["class"] == "AmbiguousSubmit"
    assert job.attempts[0].outcome is AttemptOutcome.UNKNOWN
    assert accepted(sandbox, "fal") == 1


async def test_fail_late_finishes_elsewhere_and_costs_only_what_is_billed(world):
    gw, sandbox, _ = world(faults={"fal": ["fail-late"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
    assert job.status is JobStatus.SUCCEEDED and job.provider != "fal"
    failed, won = job.attempts
    assert failed.provider == "fal" and failed.outcome is AttemptOutcome.FAILED and failed.cost_usd == 0
    assert job.cost_usd == won.cost_usd > 0  # fal does not bill failed runs
    assert accepted(sandbox, "fal") == 1


async def test_fastest_switches_vendor_within_a_handful_of_jobs(world):
    settings = Settings(default_route="fastest")
    gw, sandbox, _ = world(settings)
    request = VideoRequest(prompt="a fox", resolution="720p")
    async with gw:
        first = gw.quote(request).chosen
        sandbox.emulators[first].timing = Timing(queue_s=200, run_s=400)  # the favourite slows down
        chosen = []
        for _ in range(6):
            job = await gw.generate(request)
            chosen.append(job.provider)
    assert chosen[0] == first and chosen[-1] != first
    assert chosen.index(next(c for c in chosen if c != first)) <= 4


async def test_cheapest_never_exceeds_max_cost_and_names_the_cheapest(world):
    gw, sandbox, _ = world()
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox", resolution="720p", max_cost_usd=0.41))
        assert job.cost_usd <= Decimal("0.41")
        with pytest.raises(BudgetExceeded, match=r"cheapest is \w+ at \$0.40"):
            await gw.submit(VideoRequest(prompt="a fox", resolution="720p", max_cost_usd=0.30))
    assert sum(accepted(sandbox, v) for v in ("fal", "apiframe", "railwail")) == 1


async def test_hedge_takes_the_first_to_finish_and_cancels_the_other(world):
    settings = Settings(default_route="fastest", hedging=HedgeConfig(enabled=True, after_s=30))
    gw, sandbox, _ = world(settings)
    request = VideoRequest(prompt="a fox", resolution="720p", max_cost_usd=1.0)
    async with gw:
        first = gw.quote(request).chosen
        sandbox.emulators[first].timing = Timing(queue_s=600, run_s=20)  # stuck in its queue
        job = await gw.generate(request)
    assert job.status is JobStatus.SUCCEEDED and job.provider != first
    outcomes = {a.provider: a.outcome for a in job.attempts}
    assert outcomes[first] is AttemptOutcome.CANCELLED
    assert any("hedged" in n for n in job.notes)
    assert job.cost_usd <= Decimal("1.0")


async def test_polls_follow_the_vendors_progress_and_the_durations_learned(world):
    # 200 s jobs where the catalogues expect 30-35 s: without better figures a poll
    # every few seconds after the expected finish (railwail's first job took 22 polls)
    gw, sandbox, clock = world()
    for emulator in sandbox.emulators.values():
        emulator.timing = Timing(queue_s=20, run_s=180)
    async with gw:
        # railwail reports progress: its own figure sets the pace from the first job
        reported = await gw.generate(VideoRequest(prompt="a fox", providers=("railwail",)))
        # fal reports none: the first job overruns its prior, the next uses what it took
        first = await gw.generate(VideoRequest(prompt="a fox", providers=("fal",)))
        second = await gw.generate(VideoRequest(prompt="a fox", providers=("fal",)))
    assert all(j.status is JobStatus.SUCCEEDED for j in (reported, first, second))
    polls = [j.attempts[0].polls for j in (reported, first, second)]
    assert polls[0] <= 10, polls
    assert polls[2] <= 10 and polls[2] < polls[1], polls


@pytest.mark.parametrize(("vendor", "shape"), [("fal", {"aspect_ratio": "9:21"}),
                                               ("apiframe", {"providers": ["apiframe"]}),
                                               ("railwail", {"providers": ["railwail"]})])
async def test_a_job_the_vendor_forgets_is_lost_not_rejected(world, vendor, shape):
    # the vendor accepts, then answers 404 for it (a queue restarted empty): retried within the
    # poll budget, then failed as VendorLostJob with the estimate at risk -- never resubmitted
    gw, sandbox, _ = world(faults={vendor: ["forget"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox", **shape))
    assert job.status is JobStatus.FAILED and job.error["class"] == "VendorLostJob"
    (attempt,) = job.attempts
    assert attempt.provider == vendor and attempt.outcome is AttemptOutcome.UNKNOWN
    assert attempt.polls == gw.settings.retry.poll_error_budget  # asked again, within the budget
    assert attempt.cost_usd == 0 and attempt.at_risk_usd == attempt.estimated_usd > 0
    assert job.at_risk_usd == attempt.estimated_usd and job.cost_usd == 0
    assert job.to_dict()["at_risk"][0]["provider"] == vendor
    assert {v: accepted(sandbox, v) for v in ("fal", "apiframe", "railwail")} == \
        {v: int(v == vendor) for v in ("fal", "apiframe", "railwail")}


async def test_a_lost_job_falls_back_only_when_duplicate_spend_is_allowed(world):
    settings = Settings(fallback_order=["fal", "apiframe", "railwail"], allow_duplicate_spend=True)
    gw, sandbox, _ = world(settings, faults={"fal": ["forget"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox", route="priority", providers=("fal", "railwail")))
    assert job.status is JobStatus.SUCCEEDED and job.provider == "railwail"
    assert job.attempts[0].error["class"] == "VendorLostJob" and job.at_risk_usd == job.attempts[0].estimated_usd
    assert any("vendor_lost_job at fal" in n for n in job.notes)
    assert accepted(sandbox, "fal") == 1 and accepted(sandbox, "railwail") == 1
