"""A lease lost while a hedge is being placed: the job is another replica's now, so every
task of it here stops at once, the primary's poll included, and nothing more is written.

The defect this pins: the primary attempt's poll runs in a task of its own while the hedge is
stored and submitted; ``LeaseLost`` raised there left that task polling the vendor (and
announcing the job) for a job this replica no longer held."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import HedgeConfig, Settings
from gateway.emulation.base import Timing
from gateway.errors import LeaseLost
from gateway.job import AttemptOutcome, VideoJob
from gateway.request import VideoRequest
from gateway.routing import Plan
from gateway.runner import JobRunner
from tests.integration.test_router_sandbox import world  # noqa: F401 (a fixture used below)


@pytest.mark.parametrize("lost_at", ["hedge opened", "hedge accepted"])
async def test_a_lease_lost_while_hedging_stops_the_primarys_poll(world, lost_at: str):  # noqa: F811
    settings = Settings(default_route="fastest", hedging=HedgeConfig(enabled=True, after_s=30))
    gw, sandbox, clock = world(settings)
    request = VideoRequest(prompt="a fox", resolution="720p", max_cost_usd=1.0)
    async with gw:
        plan = gw.plan(request)
        assert isinstance(plan, Plan) and len(plan.candidates) >= 2
        first = plan.candidates[0].provider
        sandbox.emulators[first].timing = Timing(queue_s=600, run_s=20)  # stuck: a hedge is placed
        saves: list[tuple[int, bool]] = []
        updates: list[int] = []

        async def checkpoint(job: VideoJob) -> None:
            hedge_stored = len(job.attempts) == 2
            accepted = hedge_stored and job.attempts[1].vendor_job is not None
            if (lost_at == "hedge opened" and hedge_stored and not accepted) or (lost_at == "hedge accepted"
                                                                                 and accepted):
                raise LeaseLost(f"job {job.id}: another replica holds it now")
            saves.append((len(job.attempts), accepted))

        runner = JobRunner(gw.providers, gw.client, gw.settings, health=gw.health, sleep=clock.sleep,
                           checkpoint=checkpoint, on_update=lambda job: updates.append(job.attempts[0].polls))
        job = VideoJob(request=request)
        with pytest.raises(LeaseLost):
            await runner.run(job, plan)
        primary = job.attempts[0]
        assert primary.provider == first and primary.vendor_job is not None
        polls, written, announced = primary.polls, list(saves), len(updates)
        # the fake clock makes each poll's sleep instant: a poll left running polls again at once
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert primary.polls == polls, "the primary's poll went on after the lease was lost"
        assert saves == written and len(updates) == announced
        assert primary.outcome is AttemptOutcome.PENDING  # left as stored, for the new holder to follow
        assert not [t for t in asyncio.all_tasks() if "poll_until_done" in repr(t.get_coro())]
