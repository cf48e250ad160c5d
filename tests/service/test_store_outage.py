"""A PostgreSQL outage under two ``Service`` replicas with jobs in flight at the emulators.

PostgreSQL is reached through a TCP proxy that the test takes away for several seconds
(every connection cut, new ones refused) and brings back, never by stopping the shared
server. Vendor answers take a second (the emulators' ``slow`` fault), so the store goes
away while submits are in flight: their vendor job ids come back with no store to save
them in. Meanwhile the replicas answer 503 (``/readyz`` and requests that need the store,
never a 500); once PostgreSQL is back every job ends with exactly one accepted submission
at the emulators, none at risk, and the pools have reconnected by themselves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.config import PollingConfig, ServiceConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.faults import parse_fault
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.job import JobStatus, VideoJob
from gateway.plugins import discover
from gateway.server import create_app
from gateway.server.service import Service
from tests.shared.conftest import TcpProxy, eventually, proxy_to, server_of
from tests.store.conftest import PG_DSN, pg_schema  # noqa: F401 (a fixture used below)

VENDORS = ("fal", "apiframe", "railwail")
#: longer than a pool's reconnection lag after the outage (its backoff steps reach 4 s), so
#: the live replica renews before the other one may claim (gateway/server/leases.py)
LEASE_S = 5.0
#: longer than LEASE_S: every lease lapses during the outage
OUTAGE_S = 7.0


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    with proxy_to(PG_DSN, 5432) as proxy:
        yield proxy


@pytest.fixture
def sandbox() -> Iterator[tuple[Sandbox, str]]:
    slow = {v: [parse_fault("slow:delay=1")] for v in VENDORS}  # every answer a second late
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.5, run_s=1.5), faults=slow)
    with BackgroundServer(sandbox.app) as emulators:
        yield sandbox, emulators.url


@pytest.fixture
async def replicas(tmp_path: Path, pg_proxy: TcpProxy, pg_schema: str,  # noqa: F811
                   sandbox: tuple[Sandbox, str]) -> AsyncIterator[list[tuple[Service, httpx.AsyncClient]]]:
    host, port = server_of(PG_DSN, 5432)
    dsn = PG_DSN.replace(f"{host}:{port}", f"127.0.0.1:{pg_proxy.port}", 1)  # PostgreSQL through the proxy
    assert dsn != PG_DSN
    settings = Settings(polling=PollingConfig(initial_s=0.2, max_s=0.5),
                        service=ServiceConfig(store_url=dsn, store_schema=pg_schema, leases=True, lease_s=LEASE_S,
                                              require_api_key=False))
    made = []
    for name in ("a", "b"):
        service = await Service.start(settings, sandbox_url=sandbox[1], env={"REELGATE_HOME": str(tmp_path / name)},
                                      replica_id=name)
        app = create_app(lambda: Service.start(settings))  # never called: the service is set below
        app.state.service = service
        made.append((service, httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://replica",
                                                timeout=30)))
    yield made
    for service, client in made:
        await client.aclose()
        await service.stop()


def accepted(sandbox: Sandbox) -> int:
    return sum(int(stats["accepted_submissions"]) for stats in sandbox.stats().values())  # type: ignore[index]


async def create(client: httpx.AsyncClient, i: int) -> str:
    body = {"prompt": f"a fox {i}", "providers": [VENDORS[i % len(VENDORS)]]}
    response = await client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_jobs_in_flight_survive_a_postgres_outage_with_one_submission_each(
        replicas: list[tuple[Service, httpx.AsyncClient]], pg_proxy: TcpProxy, sandbox: tuple[Sandbox, str]) -> None:
    (a, http_a), (b, http_b) = replicas
    ids = [await create(http_a, i) for i in range(6)] + [await create(http_b, i) for i in range(6, 9)]
    # until a submit left (its vendor answers a second later, into the outage)
    await eventually(lambda: any(j.current is not None and j.current.vendor_job is None
                                 for j in a.gateway.jobs.values()), timeout_s=0.9)
    await asyncio.to_thread(pg_proxy.stop)
    cut = time.monotonic()

    ready, created, listed, unknown, live, cancel = await asyncio.gather(
        http_a.get("/readyz"), http_a.post("/v1/jobs", json={"prompt": "a kite", "providers": ["fal"]}),
        http_b.get("/v1/jobs"), http_b.get("/v1/jobs/vid_unknown"), http_a.get(f"/v1/jobs/{ids[0]}"),
        http_a.post(f"/v1/jobs/{ids[1]}/cancel"))
    assert ready.status_code == 503 and ready.json()["checks"]["store"].startswith("error"), ready.text
    # a cancel that could not be recorded stops nothing (its job runs on, below)
    for refused in (created, listed, unknown, cancel):  # a clear 503 in the error envelope, never a 500
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "store_unavailable"
        assert refused.headers["Retry-After"] == "5"
    assert live.status_code == 200  # a job this replica runs is answered from memory
    await asyncio.sleep(max(OUTAGE_S - (time.monotonic() - cut), 0))
    await asyncio.to_thread(pg_proxy.start)

    async with asyncio.timeout(90):  # a failure, not a hang, when a job is never finished
        jobs = await _all_finished(a, ids)
    assert {j.status for j in jobs} == {JobStatus.SUCCEEDED}, [(j.id, j.status, j.error) for j in jobs]
    for job in jobs:
        (attempt,) = job.attempts  # never resubmitted, never given up as unknown
        assert attempt.vendor_job is not None and job.at_risk_usd == 0, job.id
    assert accepted(sandbox[0]) == 9  # and the create refused during the outage reached no vendor
    for client in (http_a, http_b):  # the pools reconnected by themselves
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.post("/v1/jobs", json={"prompt": "after", "providers": ["fal"]})).status_code == 202


async def _all_finished(service: Service, ids: list[str]) -> list[VideoJob]:
    while True:
        try:
            jobs = [await service.store.get(job_id) for job_id in ids]
        except Exception:  # a connection from before the outage, discarded as it fails
            jobs = []
        if jobs and all(j is not None and j.status.terminal for j in jobs):
            return [j for j in jobs if j is not None]
        await asyncio.sleep(0.2)
