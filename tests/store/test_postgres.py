"""PostgreSQL specifics, against the real server: row locks, schemas, racing migrations.

The behaviour every store shares is in test_contract.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg import sql

from gateway.job import JobStatus, VideoJob
from gateway.store import codec, migrations
from gateway.store.base import LeaseLost
from gateway.store.postgres import PostgresJobStore
from gateway.store.postgres_batches import create_batch, save_batch
from tests.store.conftest import PG_DSN, postgres_backend
from tests.store.jobs import BILLED, finished_job, new_job
from tests.support import FakeClock

#: claim must return well within this while another transaction holds a row lock
NO_WAIT_S = 5.0


async def test_claim_skips_a_row_another_transaction_has_locked(pg_schema: str) -> None:
    async with PostgresJobStore(PG_DSN, schema=pg_schema) as store:
        locked, *free = [await store.create(new_job(created_at=1000.0 + i)) for i in range(3)]
        async with await psycopg.AsyncConnection.connect(PG_DSN) as other:
            await other.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
            await other.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (locked.id,))
            async with asyncio.timeout(NO_WAIT_S):  # skipped, not waited for
                claimed = await store.claim("replica-a", 30.0, limit=10)
            assert [j.id for j in claimed] == [j.id for j in free]
            await other.rollback()
        assert [j.id for j in await store.claim("replica-b", 30.0, limit=10)] == [locked.id]


async def test_stores_in_different_schemas_do_not_see_each_other(pg_schema: str) -> None:
    other_schema = pg_schema + "_b"
    try:
        async with (PostgresJobStore(PG_DSN, schema=pg_schema) as one,
                    PostgresJobStore(PG_DSN, schema=other_schema) as two):
            job = await one.create(new_job(key="k"))
            assert await two.get(job.id) is None
            assert (await two.create_or_get(new_job(key="k")))[1]
        with psycopg.connect(PG_DSN) as conn:
            schemas = conn.execute("SELECT DISTINCT table_schema FROM information_schema.tables"
                                   " WHERE table_name = 'jobs' AND table_schema = ANY(%s)",
                                   ([pg_schema, other_schema, "public"],)).fetchall()
        assert sorted(s for (s,) in schemas) == sorted([pg_schema, other_schema])
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(other_schema)))


async def test_replicas_starting_together_migrate_once(pg_schema: str) -> None:
    backend = postgres_backend(pg_schema, FakeClock())
    replicas = [backend.make() for _ in range(5)]
    await asyncio.gather(*(r.open() for r in replicas))
    try:
        assert backend.versions() == [m.version for m in migrations.load("postgres")]
        await replicas[0].create(new_job())
        assert len(await replicas[4].list_jobs()) == 1
    finally:
        await asyncio.gather(*(r.close() for r in replicas))


async def test_the_document_is_jsonb_with_exact_money(pg_schema: str) -> None:
    async with PostgresJobStore(PG_DSN, schema=pg_schema) as store:
        job = await store.create(finished_job())
    with psycopg.connect(PG_DSN) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        cost = conn.execute("SELECT doc->'attempts'->1->>'cost_usd' FROM jobs WHERE id = %s",
                            (job.id,)).fetchone()
    assert cost == (str(BILLED),)


async def test_saves_arriving_together_share_a_statement_and_land_in_order(
        pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The group commit: a burst of saves costs a statement or two, not one each, and two
    saves of one job in the same burst never share a statement (the later one wins)."""
    statements = [0]

    async def counted(*args: Any) -> set[str]:
        statements[0] += 1
        return await save_batch(*args)

    monkeypatch.setattr("gateway.store.postgres.save_batch", counted)
    async with PostgresJobStore(PG_DSN, schema=pg_schema) as store:
        jobs = [await store.create(new_job(f"job {i}", webhook_url="https://app.example/hook")) for i in range(30)]
        submitted = []
        for job in jobs:
            job.move(JobStatus.SUBMITTED)
            submitted.append(codec.decode_job(codec.encode_job(job)))  # a copy: this state, saved first
            job.move(JobStatus.SUCCEEDED)
        await asyncio.gather(*(save for pair in zip(submitted, jobs, strict=True)
                               for save in (store.save(pair[0]), store.save(pair[1]))))
        assert statements[0] == 2
        for job in jobs:
            assert (await store.get(job.id)).status is JobStatus.SUCCEEDED
        # each finished job's webhook was queued by the statement that finished it
        assert len(await store.lease_deliveries("r1", 30.0, 100)) == 30


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many statements the store's connections have executed, in ``[0]`` (set it to 0 to count from there)."""
    count = [0]
    execute = psycopg.AsyncConnection.execute

    async def counted(self: psycopg.AsyncConnection[Any], *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", counted)
    return count


async def leased_to_a_but_the_last(store: PostgresJobStore, n: int) -> tuple[list[VideoJob], VideoJob]:
    """``n`` jobs created leased to replica-a, each with a webhook; the last one since taken
    over by replica-b."""
    jobs = [(await store.create_or_get(new_job(f"job {i}", webhook_url="https://app.example/hook"),
                                       lease=("replica-a", 30.0)))[0] for i in range(n)]
    async with store.connection() as conn:  # another replica took this one over
        await conn.execute("UPDATE jobs SET lease_owner = 'replica-b' WHERE id = %s", (jobs[-1].id,))
    return jobs, jobs[-1]


async def test_releases_ride_in_the_saves_statement_and_stay_fenced(pg_schema: str, statements: list[int]) -> None:
    """Every job releases its lease once it is over: unbatched, that was a statement per job,
    most of the service's statements under load. A release of a lease this replica no longer
    holds changes nothing and says so, in a batch or not."""
    async with PostgresJobStore(PG_DSN, schema=pg_schema) as store:
        jobs, taken = await leased_to_a_but_the_last(store, 20)
        finished, ongoing = jobs[:10], jobs[10:19]
        for job in finished:
            job.move(JobStatus.SUBMITTED)
            job.move(JobStatus.SUCCEEDED)
        statements[0] = 0
        outcomes = await asyncio.gather(*(store.release(j.id, "replica-a") for j in ongoing),
                                        store.release(taken.id, "replica-a"),
                                        *(store.save(j, lease_owner="replica-a") for j in finished))
        assert statements[0] <= 2  # the first write goes at once, alone; the rest share the next
        assert outcomes[:10] == [True] * 9 + [False]
        async with store.connection() as conn:
            cur = await conn.execute("SELECT id, lease_owner FROM jobs")
            owners = dict(await cur.fetchall())
        assert [owners[j.id] for j in ongoing] == [None] * 9
        assert owners[taken.id] == "replica-b"
        assert [owners[j.id] for j in finished] == ["replica-a"] * 10
        # finished jobs' webhooks wait until their leases are released, in the same kind of batch
        assert await store.lease_deliveries("r1", 30.0, 100) == []
        assert await asyncio.gather(*(store.release(j.id, "replica-a") for j in finished)) == [True] * 10
        assert len(await store.lease_deliveries("r1", 30.0, 100)) == 10
        assert not await store.release(finished[0].id, "replica-a")  # released already


async def test_final_saves_release_in_the_batch_beside_saves_and_releases(pg_schema: str,
                                                                         statements: list[int]) -> None:
    """A job's last save gives its lease up in the batch statement, beside plain leased saves
    and releases on their own; one that lost its lease writes nothing and releases nothing."""
    async with PostgresJobStore(PG_DSN, schema=pg_schema) as store:
        jobs, taken = await leased_to_a_but_the_last(store, 16)
        final, ongoing, alone = jobs[:5], jobs[5:10], jobs[10:15]
        for job in (*final, taken):
            job.move(JobStatus.SUBMITTED)
            job.move(JobStatus.SUCCEEDED)
        for job in ongoing:
            job.move(JobStatus.SUBMITTED)
        statements[0] = 0
        outcomes = await asyncio.gather(*(store.save(j, lease_owner="replica-a", release=True) for j in final),
                                        *(store.save(j, lease_owner="replica-a") for j in ongoing),
                                        *(store.release(j.id, "replica-a") for j in alone),
                                        store.save(taken, lease_owner="replica-a", release=True),
                                        return_exceptions=True)
        assert statements[0] <= 2  # the first write goes at once, alone; the rest share the next
        assert outcomes[:10] == [None] * 10 and outcomes[10:15] == [True] * 5
        assert isinstance(outcomes[15], LeaseLost)
        async with store.connection() as conn:
            cur = await conn.execute("SELECT id, lease_owner, lease_until IS NULL, status FROM jobs")
            rows = {r[0]: r[1:] for r in await cur.fetchall()}
        assert [rows[j.id] for j in final] == [(None, True, "succeeded")] * 5
        assert [rows[j.id] for j in ongoing] == [("replica-a", False, "submitted")] * 5
        assert [rows[j.id][:2] for j in alone] == [(None, True)] * 5
        assert rows[taken.id] == ("replica-b", False, "queued")
        # the released finished jobs' webhooks were queued by that statement and may go now
        assert sorted(r.job_id for r in await store.lease_deliveries("r1", 30.0, 100)) == sorted(j.id for j in final)


async def test_creates_arriving_together_share_a_statement_and_a_raced_key_makes_one_job(
        pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    statements = [0]

    async def counted(*args: Any) -> list[VideoJob | None]:
        statements[0] += 1
        return await create_batch(*args)

    monkeypatch.setattr("gateway.store.postgres.create_batch", counted)
    async with PostgresJobStore(PG_DSN, schema=pg_schema) as store:
        before = await store.create(new_job("made before", key="k-0"))
        fresh = [new_job(f"job {i}") for i in range(30)]
        raced = [new_job("same", key="k-1") for _ in range(10)]
        statements[0] = 0
        outcomes = await asyncio.gather(*(store.create_or_get(j) for j in [*fresh, *raced, new_job(key="k-0")]))
        assert statements[0] == 1
        assert [made for _, made in outcomes[:30]] == [True] * 30
        assert [made for _, made in outcomes[30:40]].count(True) == 1
        winner = next(job for job, made in outcomes[30:40] if made)
        assert {job.id for job, _ in outcomes[30:40]} == {winner.id}
        assert outcomes[40] == (before, False)
        assert (await store.get_by_idempotency_key("k-1")).id == winner.id


async def test_a_write_postgresql_refuses_fails_alone_not_its_batchmates(pg_schema: str) -> None:
    """A vendor's text may hold a NUL, which jsonb refuses: the batch it rode in goes again
    write by write, so only that job's write fails."""
    async with PostgresJobStore(PG_DSN, schema=pg_schema) as store:
        jobs = [await store.create(new_job(f"job {i}")) for i in range(10)]
        for job in jobs:
            job.move(JobStatus.SUBMITTED)
        jobs[3].error = {"message": "the vendor said \x00"}
        poisoned = new_job("new, with a NUL from somewhere")
        poisoned.notes.append("\x00")
        outcomes = await asyncio.gather(*(store.save(j) for j in jobs), *(store.create_or_get(j) for j in (
            new_job("fresh"), poisoned)), return_exceptions=True)
        assert all(o is None for i, o in enumerate(outcomes[:10]) if i != 3)
        assert isinstance(outcomes[3], psycopg.errors.DataError)
        assert outcomes[10][1] is True and isinstance(outcomes[11], psycopg.errors.DataError)
        for i, job in enumerate(jobs):
            assert (await store.get(job.id)).status is (JobStatus.QUEUED if i == 3 else JobStatus.SUBMITTED)
