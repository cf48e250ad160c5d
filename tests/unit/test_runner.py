"""The runner and Gateway over real loopback HTTP against toy emulators, on a fake clock."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from reelgate_toyvendor import ToyAdapter

from gateway.api import Gateway
from gateway.config import Settings
from gateway.emulation.base import Timing
from gateway.emulation.faults import parse_fault
from gateway.job import AttemptOutcome, JobStatus
from gateway.provider import ProviderSettings, Secret
from gateway.request import VideoRequest
from tests.support import FakeClock


class ToyB(ToyAdapter):
    name = "toyb"


class ToyC(ToyAdapter):
    name = "toyc"


def build(serve, clock, faults=None, *, settings=None, usd=None, classes=(ToyAdapter, ToyB)):
    """A gateway over toy providers, each with its own emulator; returns (gateway, emulators)."""
    faults = faults or {}
    providers, emulators = {}, {}
    for i, cls in enumerate(classes):
        emu = cls.emulator(faults=[parse_fault(f) for f in faults.get(cls.name, [])],
                           timing=Timing(queue_s=2, run_s=10), clock=clock.now)
        url = serve(emu)
        price = (usd or {}).get(cls.name, f"0.{i + 1}")
        providers[cls.name] = cls(ProviderSettings(cls.name, Secret("k"), "test", url,
                                                   {"usd": price, "latency_s": 0.1}))
        emulators[cls.name] = emu
    settings = settings or Settings(fallback_order=[c.name for c in classes])
    return Gateway(settings, providers, sleep=clock.sleep), emulators


async def test_success_on_cheapest_records_cost_and_output(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock)
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
    assert job.status is JobStatus.SUCCEEDED
    assert job.provider == "toy" and job.cost_usd == Decimal("0.1")
    assert job.output.url.endswith(".mp4")
    assert [a.outcome for a in job.attempts] == [AttemptOutcome.SUCCEEDED]
    assert emus["toy"].accepted_submissions == 1 and emus["toyb"].accepted_submissions == 0
    assert job.plan["candidates"][0]["provider"] == "toy"


async def test_outage_falls_back_and_records_the_failed_attempt(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock, {"toy": ["outage"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
    assert job.status is JobStatus.SUCCEEDED and job.provider == "toyb"
    first, second = job.attempts
    assert first.provider == "toy" and first.outcome is AttemptOutcome.REJECTED
    assert first.error["class"] == "Unavailable" and first.cost_usd == 0
    assert second.outcome is AttemptOutcome.SUCCEEDED
    assert emus["toy"].accepted_submissions == 0


async def test_rate_limit_is_retried_after_retry_after(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock, {"toy": ["rate-limit:retry_after=7,times=2"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
    assert job.provider == "toy" and job.attempts[0].submit_retries == 2
    assert clock.sleeps[:2] == [7.0, 7.0]  # honoured Retry-After exactly, twice
    assert emus["toy"].accepted_submissions == 1


async def test_rate_limit_longer_than_allowed_falls_back_at_once(serve):
    clock = FakeClock()
    gw, _ = build(serve, clock, {"toy": ["rate-limit:retry_after=120"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
    assert job.provider == "toyb"
    assert job.attempts[0].error["class"] == "RateLimited" and job.attempts[0].submit_retries == 0


async def test_drop_after_accept_never_resubmits_blindly(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock, {"toy": ["drop-after-accept"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
    assert job.status is JobStatus.FAILED
    assert job.attempts[0].outcome is AttemptOutcome.UNKNOWN
    assert job.error["class"] == "AmbiguousSubmit"
    assert emus["toy"].accepted_submissions == 1 and emus["toyb"].accepted_submissions == 0


async def test_drop_after_accept_falls_back_only_when_duplicate_spend_allowed(serve):
    clock = FakeClock()
    settings = Settings(fallback_order=["toy", "toyb"], allow_duplicate_spend=True)
    gw, emus = build(serve, clock, {"toy": ["drop-after-accept"]}, settings=settings)
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
    assert job.status is JobStatus.SUCCEEDED and job.provider == "toyb"
    assert any("may also bill" in n for n in job.notes)
    assert emus["toy"].accepted_submissions == 1


async def test_fail_late_moves_to_next_vendor_and_costs_only_the_success(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock, {"toy": ["fail-late"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
    assert job.status is JobStatus.SUCCEEDED and job.provider == "toyb"
    assert [a.outcome for a in job.attempts] == [AttemptOutcome.FAILED, AttemptOutcome.SUCCEEDED]
    assert job.attempts[0].error["class"] == "GenerationFailed"
    assert job.cost_usd == Decimal("0.2")  # toy does not bill failures


async def test_content_rejection_stops_without_fallback(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock, {"toy": ["content-policy"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
    assert job.status is JobStatus.FAILED and job.error["class"] == "ContentRejected"
    assert emus["toyb"].accepted_submissions == 0


async def test_fallback_false_stops_after_first_failure(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock, {"toy": ["outage"]})
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox", fallback=False))
    assert job.status is JobStatus.FAILED and len(job.attempts) == 1
    assert emus["toyb"].accepted_submissions == 0


async def test_idempotency_key_returns_the_same_job(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock)
    async with gw:
        a = await gw.submit(VideoRequest(prompt="a fox", idempotency_key="k1"))
        b = await gw.submit(VideoRequest(prompt="a fox", idempotency_key="k1"))
        await gw.wait(a)
    assert a is b and emus["toy"].accepted_submissions == 1


async def test_wait_all_waits_for_every_job_and_a_timeout_cancels_none(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock, {"toyb": ["slow:delay=1"]})
    async with gw:
        jobs = [await gw.submit(VideoRequest(prompt=f"fox {i}", providers=("toy",))) for i in range(3)]
        done = await gw.wait_all([jobs[0], jobs[1].id, jobs[2]])
        assert [j.id for j in done] == [j.id for j in jobs]
        assert all(j.status is JobStatus.SUCCEEDED for j in done)
        stuck = await gw.submit(VideoRequest(prompt="slow fox", providers=("toyb",)))
        [still] = await gw.wait_all([stuck], timeout=0.2)  # toyb holds its answer for 1 s
        assert still is stuck and not still.status.terminal
        assert not gw._tasks[stuck.id].cancelled() and not gw._tasks[stuck.id].done()


async def test_a_waiter_cancelled_or_timed_out_leaves_the_job_running(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock, {"toyb": ["slow:delay=1"]})
    async with gw:
        job = await gw.submit(VideoRequest(prompt="slow fox", providers=("toyb",)))
        waiter = asyncio.create_task(gw.wait(job))  # no timeout: the service's way
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        with pytest.raises(TimeoutError):
            await gw.wait(job, timeout=0.05)
        assert not gw._tasks[job.id].done()
        assert (await gw.wait(job)).status is JobStatus.SUCCEEDED


async def test_deadline_cancels_at_the_vendor(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock)
    polling = asyncio.Event()

    async def first_poll_never_ends(seconds: float) -> None:
        # the vendor has the job once the first poll waits: only the deadline ends that wait,
        # however long the submit took on this machine
        polling.set()
        await asyncio.Event().wait()

    gw._sleep = first_poll_never_ends
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox", deadline_s=1.0))
    assert polling.is_set()
    assert job.status is JobStatus.FAILED and job.error["class"] == "DeadlineExceeded"
    assert job.attempts[0].outcome is AttemptOutcome.CANCELLED
    (emulated,) = emus["toy"].jobs.values()
    assert emulated.cancelled_at is not None


async def test_cancel_reaches_the_vendor(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock)
    gw._sleep = _real_sleep_after(clock)
    async with gw:
        job = await gw.submit(VideoRequest(prompt="a fox"))
        while job.status is not JobStatus.SUBMITTED and job.status is not JobStatus.RUNNING:
            await clock_tick()
        await gw.cancel(job)
    assert job.status is JobStatus.CANCELLED
    (emulated,) = emus["toy"].jobs.values()
    assert emulated.cancelled_at is not None


async def test_nothing_eligible_fails_before_any_vendor_call(serve):
    clock = FakeClock()
    gw, emus = build(serve, clock)
    from gateway.errors import Unsupported

    async with gw:
        with pytest.raises(Unsupported, match="aspect_ratio 9:16 is not offered by toy"):
            await gw.submit(VideoRequest(prompt="a fox", aspect_ratio="9:16"))
    assert all(e.accepted_submissions == 0 for e in emus.values())


def _real_sleep_after(clock: FakeClock):
    """Polls really wait (a little), so deadline and cancel have time to act."""
    import asyncio

    async def sleep(seconds: float) -> None:
        clock.sleeps.append(seconds)
        await asyncio.sleep(0.05)

    return sleep


async def clock_tick() -> None:
    import asyncio

    await asyncio.sleep(0.01)


async def test_request_retry_budget_caps_retries_across_attempts(serve):
    from gateway.config import RetryConfig

    clock = FakeClock()
    settings = Settings(fallback_order=["toy", "toyb", "toyc"],
                        retry=RetryConfig(submit_retries=3, request_retry_budget=4))
    gw, emus = build(serve, clock, {"toy": ["flaky:rate=1"], "toyb": ["flaky:rate=1"]}, settings=settings,
                     classes=(ToyAdapter, ToyB, ToyC))
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
    assert job.provider == "toyc"
    assert [a.submit_retries for a in job.attempts] == [3, 1, 0]


async def test_finished_jobs_are_let_go_after_the_retention_and_stay_in_the_store(serve, tmp_path):
    from gateway.store.sqlite import SqliteJobStore

    clock = FakeClock()
    gw, _ = build(serve, clock)
    async with SqliteJobStore(tmp_path / "jobs.db") as store:
        kept = Gateway(gw.settings, gw.providers, sleep=clock.sleep, store=store, retain_finished=2)
        async with kept:
            jobs = [await kept.generate(VideoRequest(prompt=f"fox {i}", idempotency_key=f"k{i}")) for i in range(4)]
            assert set(kept.jobs) == {jobs[2].id, jobs[3].id} and not kept._tasks  # nothing else held
            assert kept.get(jobs[0].id) is None
            again = await kept.wait(jobs[0].id)  # from the store now
            assert again.id == jobs[0].id and again.status is JobStatus.SUCCEEDED
            same = await kept.submit(VideoRequest(prompt="fox 0", idempotency_key="k0"))
            assert same.id == jobs[0].id  # the key still finds the job, through the store
    async with gw:
        alone = Gateway(gw.settings, gw.providers, sleep=clock.sleep, retain_finished=1)
        async with alone:
            first = await alone.generate(VideoRequest(prompt="a"))
            await alone.generate(VideoRequest(prompt="b"))
            with pytest.raises(KeyError, match="no longer kept"):
                await alone.wait(first.id)
            # the caller's own job object is the live one: waiting on it still answers
            assert await alone.wait(first) is first and first.status is JobStatus.SUCCEEDED
            assert await alone.wait_all([first]) == [first]


class ToyTimingOut(ToyAdapter):
    name = "toy"

    def parse_status(self, job, response):
        raise TimeoutError  # a timeout inside a call, not the request's deadline


async def test_a_stray_timeout_without_a_deadline_still_ends_the_job(serve):
    clock = FakeClock()
    gw, _ = build(serve, clock, classes=(ToyTimingOut,))
    async with gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
    assert job.status is JobStatus.FAILED and job.error["message"] == "internal error: TimeoutError"
