"""The PostgreSQL store when its server goes away and comes back, through a TCP proxy that
the test takes away (every connection cut, new ones refused) and brings back: statements
raise ``StoreUnavailable`` (never psycopg's errors, never a wait of the pool's 30 s), and the
pool is whole again after the return, without a failure per connection left over from
before the outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.errors import StoreUnavailable
from gateway.job import VideoJob
from gateway.request import VideoRequest
from gateway.store.postgres import CHECKOUT_S, PostgresJobStore
from tests.shared.conftest import TcpProxy, proxy_to, server_of
from tests.store.conftest import PG_DSN, pg_schema  # noqa: F401 (a fixture used below)

CONNECTIONS = 4


@pytest.fixture
async def proxied(pg_schema: str) -> AsyncIterator[tuple[PostgresJobStore, TcpProxy]]:  # noqa: F811
    host, port = server_of(PG_DSN, 5432)
    with proxy_to(PG_DSN, 5432) as proxy:
        store = PostgresJobStore(PG_DSN.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}", 1), schema=pg_schema)
        async with store:
            yield store, proxy


async def busy(store: PostgresJobStore, n: int) -> None:
    """``n`` statements at once: the pool holds ``n`` connections afterwards, idle."""
    async def hold() -> None:
        async with store.connection() as conn:
            await conn.execute("SELECT pg_sleep(0.05)")
    await asyncio.gather(*(hold() for _ in range(n)))


async def test_statements_fail_as_store_unavailable_then_work_again(
        proxied: tuple[PostgresJobStore, TcpProxy]) -> None:
    store, proxy = proxied
    job = VideoJob(request=VideoRequest(prompt="a fox"))
    await store.create(job)
    await busy(store, CONNECTIONS)
    await asyncio.to_thread(proxy.stop)

    started = time.monotonic()
    for _ in range(3):  # a connection lost mid-statement, then none to be had
        with pytest.raises(StoreUnavailable):
            await store.get(job.id)
    assert time.monotonic() - started < 3 * CHECKOUT_S + 2  # the pool's own 30 s wait is gone

    await asyncio.to_thread(proxy.start)
    # every idle connection of before the outage was dropped when the first one failed: none
    # fails a statement now (each used to, once)
    async with asyncio.timeout(30):
        found = await asyncio.gather(*(store.get(job.id) for _ in range(CONNECTIONS * 2)))
    assert all(f is not None and f.id == job.id for f in found)


async def test_opening_a_store_that_cannot_be_reached_is_store_unavailable(pg_schema: str) -> None:  # noqa: F811
    host, port = server_of(PG_DSN, 5432)
    with proxy_to(PG_DSN, 5432) as proxy:
        dead = PG_DSN.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}", 1)
        proxy.stop()
        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            await PostgresJobStore(dead, schema=pg_schema).open()


def test_serve_with_the_store_down_is_one_line_naming_the_setting_not_a_traceback(tmp_path, monkeypatch) -> None:
    """``reelgate serve`` whose PostgreSQL does not answer: exit 3 with one line naming
    ``service.store_url``, no traceback, and never the DSN's password."""
    from typer.testing import CliRunner

    from gateway.cli import app
    from tests.support import free_port

    dead_port = free_port()  # a port nothing listens on
    serve_port = free_port()
    monkeypatch.setenv("REELGATE_HOME", str(tmp_path / "home"))
    config = tmp_path / "reelgate.yaml"
    config.write_text(f"service:\n  store_url: postgresql://app:s3cret-pw@127.0.0.1:{dead_port}/test\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(config), "--port", str(serve_port)])
    assert result.exit_code == 3, result.output
    assert "service.store_url: the job store (PostgreSQL) cannot be reached" in result.output
    assert "Traceback" not in result.output and "s3cret-pw" not in result.output
