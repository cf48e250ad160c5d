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
