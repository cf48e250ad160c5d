"""One live process per ``--replica-id`` on a PostgreSQL store (gateway/server/replica_ids.py).

Run by hand before: a second ``reelgate serve --replica-id replica-2`` next to a live
replica-2 claimed 4 of the 10 jobs the first had just created (a replica claims back what
is leased under its own id) and both followed them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from psycopg import AsyncConnection

from gateway.config import PollingConfig, ServiceConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.errors import StoreUnavailable
from gateway.job import JobStatus
from gateway.plugins import discover
from gateway.request import VideoRequest
from gateway.server import create_app
from gateway.server.replica_ids import ReplicaIdInUse, hold_replica_id, release_id
from gateway.server.service import Service
from tests.service.conftest import KEY_VARS, free_port
from tests.service.test_leases import LEASE_S, accepted, all_accepted
from tests.store.conftest import PG_DSN, pg_schema  # noqa: F401 (a fixture: a schema of this test's own)


def _settings(schema: str) -> Settings:
    return Settings(service=ServiceConfig(store_url=PG_DSN, store_schema=schema))


async def test_a_second_live_replica_under_one_id_is_refused_and_the_id_frees_with_its_holder(
        pg_schema: str, tmp_path: Path) -> None:  # noqa: F811
    env = {"REELGATE_HOME": str(tmp_path / "a")}
    first = await Service.start(_settings(pg_schema), sandbox_url="http://127.0.0.1:9", env=env, replica_id="r-1")
    try:
        started = time.monotonic()
        with pytest.raises(ReplicaIdInUse, match="--replica-id: 'r-1' is the id of a replica running"):
            await Service.start(_settings(pg_schema), sandbox_url="http://127.0.0.1:9",
                                env={"REELGATE_HOME": str(tmp_path / "b")}, replica_id="r-1")
        assert time.monotonic() - started < 15  # waited for the id (WAIT_S), then refused
        # another id, and the same id on another schema (another deployment), are free
        other = await Service.start(_settings(pg_schema), sandbox_url="http://127.0.0.1:9",
                                    env={"REELGATE_HOME": str(tmp_path / "c")}, replica_id="r-2")
        await other.stop()
        elsewhere = await hold_replica_id(PG_DSN, pg_schema + "_other", "r-1", wait_s=0)
        await release_id(elsewhere)
    finally:
        await first.stop()
    # stopped: its id is free at once (a killed process's goes with its connection)
    again = await Service.start(_settings(pg_schema), sandbox_url="http://127.0.0.1:9", env=env, replica_id="r-1")
    await again.stop()


async def test_serve_under_a_held_id_is_one_line_and_exit_2(pg_schema: str, tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "reelgate.yaml"
    config.write_text(f"service:\n  store_url: {PG_DSN}\n  store_schema: {pg_schema}\n")
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS and k != "REELGATE_CONFIG"}
    env["REELGATE_HOME"] = str(tmp_path / "home")
    hold = await hold_replica_id(PG_DSN, pg_schema, "replica-2")
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--port", str(free_port()),
               "--sandbox", "--replica-id", "replica-2"]
    try:  # the CLI's own event loop, not this test's: it runs in a thread
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, env=env, timeout=60)
    finally:
        await release_id(hold)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --replica-id: 'replica-2' is the id of a replica running on this store now; give each replica its "
        "own id (reuse one only once its process is gone; a dead host's hold lapses within 25 s)"]


@pytest.fixture
def slow_sandbox() -> Iterator[tuple[Sandbox, str]]:
    """Jobs that run for seconds: still in flight while the id's lock is lost and retaken."""
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=4, run_s=4))
    with BackgroundServer(sandbox.app) as emulators:
        yield sandbox, emulators.url


async def _replica(schema: str, sandbox_url: str, home: Path) -> Service:
    settings = Settings(polling=PollingConfig(initial_s=0.05, max_s=0.2),
                        service=ServiceConfig(store_url=PG_DSN, store_schema=schema, leases=True, lease_s=LEASE_S))
    return await Service.start(settings, sandbox_url=sandbox_url, env={"REELGATE_HOME": str(home)}, replica_id="r-1")


async def _drop_lock_connection(schema: str) -> None:
    """What a PostgreSQL restart does to the id's lock: its backend ends, and the lock with it
    (found by the lock's key: other tests may hold advisory locks on this server meanwhile)."""
    async with await AsyncConnection.connect(PG_DSN, autocommit=True) as admin:
        rows = await (await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)",
            (f"reelgate replica {schema} r-1",))).fetchall()
    assert rows == [(True,)]


async def _readyz(service: Service) -> httpx.Response:
    app = create_app(lambda: _never())
    app.state.service = service
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") as client:
        return await client.get("/readyz")


async def _never() -> Service:
    raise AssertionError("the test sets the service")


async def test_a_replica_whose_id_lock_was_taken_by_another_process_stops_following_and_claiming(
        pg_schema: str, tmp_path: Path, slow_sandbox: tuple[Sandbox, str]) -> None:  # noqa: F811
    """Its lock's connection dropped (PostgreSQL restarted) and another process took the id:
    that one claims every job leased under the id as its own, so this one must stop at once."""
    a = await _replica(pg_schema, slow_sandbox[1], tmp_path / "a")
    try:
        assert a.leases is not None
        jobs = [await a.submit(VideoRequest(prompt=f"fox {i}", providers=["fal"]), None) for i in range(2)]
        await all_accepted(a, jobs)
        assert (await _readyz(a)).status_code == 200
        await _drop_lock_connection(pg_schema)
        other = await hold_replica_id(PG_DSN, pg_schema, "r-1", wait_s=5)  # "another process" takes the id
        try:
            await a.leases.wait_rounds(2)
            assert not list(a.gateway.following()) and not a._watchers  # no task of its jobs left
            assert a.leases.id_taken
            stored = [await a.store.get(j.id) for j in jobs]
            ready = await _readyz(a)
            assert ready.status_code == 503 and ready.json()["checks"]["replica_id"] == "held by another process"
            with pytest.raises(StoreUnavailable, match="held by another process"):
                await a.submit(VideoRequest(prompt="fox 3", providers=["fal"]), None)
            await a.leases.wait_rounds(2)  # rounds go on: still not its id, still nothing followed
            assert a.leases.id_taken and not list(a.gateway.following())
            assert [await a.store.get(j.id) for j in jobs] == stored  # nothing written meanwhile
        finally:
            await release_id(other)
        # the other process went away: the id is this one's again, and so are its jobs
        await a.leases.wait_rounds(2)
        assert not a.leases.id_taken and (await _readyz(a)).status_code == 200
        done = [await asyncio.wait_for(a.gateway.wait(j.id), 60) for j in jobs]
        assert [j.status for j in done] == [JobStatus.SUCCEEDED] * 2
        assert accepted(slow_sandbox[0]) == 2  # one paid vendor job per job, all along
    finally:
        await a.stop()


async def test_a_replica_whose_id_lock_dropped_takes_it_back(
        pg_schema: str, tmp_path: Path, slow_sandbox: tuple[Sandbox, str]) -> None:  # noqa: F811
    a = await _replica(pg_schema, slow_sandbox[1], tmp_path / "a")
    try:
        assert a.leases is not None
        await _drop_lock_connection(pg_schema)
        await a.leases.wait_rounds(2)
        with pytest.raises(ReplicaIdInUse):  # held again: a second process is refused
            await release_id(await hold_replica_id(PG_DSN, pg_schema, "r-1", wait_s=0))
        assert not a.leases.id_taken and (await _readyz(a)).status_code == 200
    finally:
        await a.stop()
