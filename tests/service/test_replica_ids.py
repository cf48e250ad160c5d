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
from pathlib import Path

import pytest

from gateway.config import ServiceConfig, Settings
from gateway.server.replica_ids import ReplicaIdInUse, hold_replica_id, release_id
from gateway.server.service import Service
from tests.service.conftest import KEY_VARS, free_port
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
