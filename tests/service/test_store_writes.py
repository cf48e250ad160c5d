"""How many times the service writes a job: each write carries a fact the order guarantees
need (tests/store/test_write_order.py), and every write costs CPU and, on PostgreSQL, a
round trip (bench/store_writes.py). This fails if the count grows back.

Counted on SQLite and on PostgreSQL with and without leases: with leases, the last of the
four writes gives the lease up too (``save(release=True)``); it was a fifth write of its own
(``release``)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.service.conftest import InProcess

#: created; its attempt, before the submit; the vendor job id, before the first poll;
#: succeeded, naming the video kept just before (JobTasks._keep). It was 5: the kept video
#: was a write of its own.
WRITES_PER_JOB = 4


@pytest.fixture(params=["sqlite", "postgres", "postgres-leases"])
def any_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[InProcess]:
    """The service in this process on the sandbox, on each kind of store (no caller keys)."""
    from starlette.testclient import TestClient

    from gateway.config import PollingConfig, ServiceConfig, Settings
    from gateway.emulation.base import Timing
    from gateway.emulation.sandbox import BackgroundServer, Sandbox
    from gateway.plugins import discover
    from gateway.server import create_app
    from gateway.server.service import Service

    home = tmp_path / "home"
    env = {"REELGATE_HOME": str(home)}
    service = ServiceConfig(require_api_key=False)
    if request.param != "sqlite":
        service = ServiceConfig(require_api_key=False, store_url=request.getfixturevalue("pg_database"),
                                leases=request.param == "postgres-leases")
    settings = Settings(polling=PollingConfig(initial_s=0.05, max_s=0.2), service=service)
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.1, run_s=0.3))
    with BackgroundServer(sandbox.app) as emulators:
        app = create_app(lambda: Service.start(settings, sandbox_url=emulators.url, env=env))
        home.mkdir(parents=True)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield InProcess(client, {}, home)


def test_a_job_is_written_four_times_from_create_to_kept_video(any_store):
    state = any_store.client.app.state.service
    store = state.gateway.store
    writes: Counter[str] = Counter()
    released: Counter[str] = Counter()
    let_go_by_save: Counter[str] = Counter()
    create, save, release = store.create_or_get, store.save, store.release

    async def counted_create(job: Any, **kw: Any) -> Any:
        writes[job.id] += 1
        return await create(job, **kw)

    async def counted_save(job: Any, **kw: Any) -> None:
        writes[job.id] += 1
        if kw.get("release"):
            let_go_by_save[job.id] += 1
        await save(job, **kw)

    async def counted_release(job_id: str, owner_id: str) -> bool:
        released[job_id] += 1
        return await release(job_id, owner_id)

    store.create_or_get, store.save, store.release = counted_create, counted_save, counted_release
    job_id = any_store.client.post("/v1/jobs", json={"prompt": "a fox"}).json()["id"]
    deadline = time.monotonic() + 20
    while not (any_store.client.get(f"/v1/jobs/{job_id}").json()["output"] or {}).get("uri"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.3)  # nothing more comes after the kept video
    assert writes == {job_id: WRITES_PER_JOB}
    assert released == {}  # no write of its own: the last save released the lease
    assert let_go_by_save == ({job_id: 1} if state.leases is not None else {})
