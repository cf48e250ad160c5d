"""Several Gateway replicas sharing one Redis, against the sandbox's emulators over
loopback HTTP: a circuit opened by one is skipped by the others, and a vendor's
concurrency limit holds across all of them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.api import Gateway
from gateway.config import PollingConfig, ProviderConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.faults import parse_fault
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.job import JobStatus
from gateway.plugins import discover
from gateway.request import AspectRatio, Resolution, RoutePolicy, VideoRequest
from gateway.routing.circuit import CircuitSettings
from gateway.shared import Shared
from gateway.shared.connection import SharedState
from tests.shared.conftest import REDIS_URL, eventually
from tests.support import FakeClock

ORDER = ["fal", "apiframe", "railwail"]


@pytest.fixture
def sandbox() -> Iterator[tuple[Sandbox, str, FakeClock]]:
    clock = FakeClock()
    sandbox = Sandbox.from_providers(discover().providers, {}, Timing(queue_s=5, run_s=20), clock=clock.now)
    with BackgroundServer(sandbox.app) as server:
        yield sandbox, server.url, clock


def replica(settings: Settings, url: str, clock: FakeClock, state: SharedState) -> Gateway:
    """One replica: its own Gateway, its own Redis connection, the shared prefix."""
    return Gateway.from_settings(settings, sandbox_url=url, sleep=clock.sleep, clock=clock.now,
                                 shared=Shared(settings, state, clock=clock.now))


async def test_a_circuit_opened_by_one_replica_is_skipped_by_the_other(
    sandbox: tuple[Sandbox, str, FakeClock], states: Callable[..., SharedState]
) -> None:
    emulators, url, clock = sandbox
    settings = Settings(fallback_order=ORDER, default_route=RoutePolicy.PRIORITY,
                        circuit=CircuitSettings(cooldown_s=3600, max_cooldown_s=7200))
    a, b = replica(settings, url, clock, states()), replica(settings, url, clock, states())
    async with a, b:
        first = await b.generate(VideoRequest(prompt="a fox"))
        assert first.provider == "fal"
        await b.shared.state.joined.wait()  # type: ignore[union-attr]
        emulators.emulators["fal"].faults.set([parse_fault("outage")])
        for _ in range(settings.circuit.consecutive_failures):
            job = await a.generate(VideoRequest(prompt="a fox"))
            assert [x.provider for x in job.attempts] == ["fal", "apiframe"]
        assert "circuit open" in a.plan(VideoRequest(prompt="a fox")).skipped["fal"]
        await eventually(lambda: "fal" in b.plan(VideoRequest(prompt="a fox")).skipped)  # B hears of the trip
        calls_before = emulators.emulators["fal"].calls.total()
        job = await b.generate(VideoRequest(prompt="a fox"))
        assert [x.provider for x in job.attempts] == ["apiframe"] and job.status is JobStatus.SUCCEEDED
        assert "seen by replica" in job.plan["skipped"]["fal"]
        assert emulators.emulators["fal"].calls.total() == calls_before  # B never called fal


async def test_a_concurrency_limit_holds_across_three_replicas_and_no_job_is_dropped(
    sandbox: tuple[Sandbox, str, FakeClock], states: Callable[..., SharedState]
) -> None:
    emulators, url, clock = sandbox
    settings = Settings(fallback_order=ORDER, default_route=RoutePolicy.PRIORITY,
                        polling=PollingConfig(initial_s=1, max_s=2),
                        providers={"fal": ProviderConfig(concurrency_limit=4)})
    gateways = [replica(settings, url, clock, states()) for _ in range(3)]
    try:
        jobs = [await gateways[i % 3].submit(VideoRequest(prompt=f"fox {i}", providers=["fal"]))
                for i in range(30)]
        done = [await gateways[i % 3].wait(job, timeout=120) for i, job in enumerate(jobs)]
    finally:
        for gw in gateways:
            await gw.aclose()
    fal = emulators.emulators["fal"]
    assert [j.status for j in done] == [JobStatus.SUCCEEDED] * 30
    assert all(len(j.attempts) == 1 for j in done)
    assert fal.accepted_submissions == 30 and fal.rejected_submissions == 0
    assert fal.max_active == 4  # the limit was reached, never passed


def test_the_emulator_counts_the_most_jobs_active_at_once() -> None:
    clock = FakeClock()
    emu = discover().providers["fal"].emulator(timing=Timing(queue_s=1, run_s=2), clock=clock.now)
    for _ in range(3):
        emu.new_job(model="m", aspect_ratio=AspectRatio.R16_9, resolution=Resolution.P720, duration_s=5, input={})
    clock.t += 3  # those three have ended
    emu.new_job(model="m", aspect_ratio=AspectRatio.R16_9, resolution=Resolution.P720, duration_s=5, input={})
    clock.t += 1
    emu.new_job(model="m", aspect_ratio=AspectRatio.R16_9, resolution=Resolution.P720, duration_s=5, input={})
    assert emu.max_active == 3 and emu.stats()["max_active"] == 3


def test_a_concurrency_limit_holds_across_three_replica_processes(prefix: str) -> None:
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.05, run_s=0.2))
    root = Path(__file__).resolve().parents[2]
    with BackgroundServer(sandbox.app) as server:
        procs = [subprocess.Popen([sys.executable, "-m", "tests.shared.replica_burst", server.url, REDIS_URL,
                                   prefix, "12", "4"], cwd=root, stdout=subprocess.PIPE, text=True)
                 for _ in range(3)]
        outputs = [proc.communicate(timeout=180)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0]
    ended = [job for out in outputs for job in json.loads(out)]
    assert ended == [{"status": "succeeded", "attempts": 1, "shared": "shared"}] * 36
    fal = sandbox.emulators["fal"]
    assert fal.accepted_submissions == 36 and fal.rejected_submissions == 0
    assert fal.max_active == 4  # reached across the three processes, never passed
