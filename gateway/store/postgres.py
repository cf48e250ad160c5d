"""The shared store for several gateway replicas: PostgreSQL through psycopg 3.

Why psycopg 3 rather than asyncpg: it adapts ``jsonb`` and composes identifiers
safely (``sql.Identifier`` for the schema name) out of the box, its pool
(``psycopg_pool``) is maintained with it, and the same library serves sync tools
and tests. asyncpg's raw speed is not what bounds a store written a few times per
video.

Every table lives in one schema (``reelgate`` unless told), so the gateway can share
a database with an application without name clashes, and tests can use a throwaway
schema each. Connections run in autocommit: each statement below is its own
transaction, and the multi-statement ones use an explicit ``transaction()``.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection, OperationalError, errors, sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.errors import InvalidRequest, StoreUnavailable
from gateway.job import VideoJob
from gateway.store import codec, migrations
from gateway.store.base import (
    ACTIVE_STATES,
    DEFAULT_PAGE,
    Clock,
    JobRow,
    JobStore,
    LeaseLost,
    OutboxRow,
)
from gateway.store.group_commit import GroupCommit
from gateway.store.postgres_batches import Create, Release, Save, create_batch, job_id, save_batch

DEFAULT_SCHEMA = "reelgate"
#: pg_advisory_xact_lock key serialising migrations across replicas ("reelgate" in ASCII)
MIGRATION_LOCK = 0x7265656C67617465
POOL_MIN, POOL_MAX = 1, 10
#: how long a statement waits for a pooled connection before the store counts as down (the
#: pool's default, 30 s, held every request of a PostgreSQL outage for 30 s); a busy pool
#: hands connections over in milliseconds
CHECKOUT_S = 5.0
#: how long the pool retries one lost connection (backoff 1, 2, 4 s...) before giving it up;
#: the next checkout then connects at once. Bounds how late the pool notices PostgreSQL is
#: back (the pool's default, 5 min, let the backoff grow past a minute)
RECONNECT_S = 10.0

_ACTIVE = f"status IN ({', '.join(repr(s) for s in ACTIVE_STATES)})"

# A message waits while its job is leased: the job's replica is still finishing it (keeping
# its video), and releases the lease once done; a dead replica's job is finished off and
# released by whoever claims it (see _CLAIM). Released, not merely expired: a stalled
# holder's late save would otherwise overwrite the delivery's record on the job.
_LEASE_DELIVERIES = """
WITH picked AS (
    SELECT message_id FROM webhook_outbox
    WHERE done_at IS NULL AND next_at <= %(now)s
      AND (lease_owner IS NULL OR lease_owner = %(owner)s OR lease_until < %(now)s)
      AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = webhook_outbox.job_id AND jobs.lease_owner IS NOT NULL)
    ORDER BY next_at, message_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_outbox SET lease_owner = %(owner)s, lease_until = %(until)s
FROM picked WHERE webhook_outbox.message_id = picked.message_id
RETURNING webhook_outbox.message_id, job_id, status, attempts, next_at, body
"""

# One statement, so one transaction: the oldest claimable jobs are locked, skipping
# rows another claimer has locked right now, and leased before the locks are released.
# A live lease is left alone, the claimer's own too (it renews those: renew_all), unless
# ``own`` (a restarted replica taking back what its id held). A finished job still leased
# was not finished off by its replica (its video kept, its lease released): once that
# lease expires it is claimed too, to be finished here.
# A sequence's segment goes with its parent (lease_segments), never on its own.
_CLAIM = f"""
WITH picked AS (
    SELECT id FROM jobs
    WHERE (({_ACTIVE} AND (lease_owner IS NULL OR lease_until < %(now)s
                           OR (%(own)s AND lease_owner = %(owner)s)))
           OR (NOT {_ACTIVE} AND lease_owner IS NOT NULL AND lease_until < %(now)s))
      AND doc->>'parent_id' IS NULL
    ORDER BY created_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET lease_owner = %(owner)s, lease_until = %(until)s
FROM picked WHERE jobs.id = picked.id
RETURNING jobs.doc
"""


class PostgresJobStore(JobStore):
    def __init__(self, dsn: str, *, schema: str = DEFAULT_SCHEMA, clock: Clock | None = None,
                 min_size: int = POOL_MIN, max_size: int = POOL_MAX) -> None:
        super().__init__(clock=clock)
        self.dsn = dsn
        self.schema = schema
        self._pool: AsyncConnectionPool[AsyncConnection[TupleRow]] = AsyncConnectionPool(
            dsn, min_size=min_size, max_size=max_size, open=False, timeout=CHECKOUT_S,
            reconnect_timeout=RECONNECT_S, kwargs={"autocommit": True}, configure=self._configure)
        self._checking: asyncio.Task[None] | None = None
        # a vendor's text PostgreSQL refuses (a NUL) fails its own job's write, not its batchmates'
        alone_on = (errors.DataError, errors.IntegrityError)
        # several statements under way at once, as before batching: one at a time, every write
        # queued behind the one round trip under way and throughput fell under load
        in_flight = max(1, max_size // 2)
        self._creates: GroupCommit[Create] = GroupCommit(self._create, name="postgres-creates", key=job_id,
                                                         in_flight=in_flight, alone_on=alone_on)
        self._saves: GroupCommit[Save | Release] = GroupCommit(self._save, name="postgres-saves", key=job_id,
                                                     in_flight=in_flight, alone_on=alone_on)

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        # the schema must exist before a pooled connection points its search_path at it
        try:
            async with await AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                await self._migrate(conn)
            await self._pool.open(wait=True, timeout=CHECKOUT_S)
        except OperationalError as exc:  # PoolTimeout too; its message may name the host: the class only
            raise StoreUnavailable(f"the job store (PostgreSQL) cannot be reached ({type(exc).__name__})") from exc

    async def close(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
        await self._pool.close()

    @property
    def pool(self) -> AsyncConnectionPool[AsyncConnection[TupleRow]]:
        """The store's pool (its statistics); statements take connections from ``connection()``."""
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[TupleRow]]:
        """A pooled connection. PostgreSQL unreachable (no connection within ``CHECKOUT_S``,
        or one lost mid-statement) raises ``StoreUnavailable``: requests answer 503 and
        saves are tried again (docs/deploy.md), rather than a 500 with psycopg's trace."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except OperationalError as exc:  # PoolTimeout too; its message may name the host: the class only
            if not isinstance(exc, PoolTimeout):
                self._check_idle()
            raise StoreUnavailable(f"the job store (PostgreSQL) is unavailable ({type(exc).__name__})") from exc

    def _check_idle(self) -> None:
        """A connection was lost: those idle in the pool were most likely cut with it (a
        restart, a network cut). Check them now, so that each is replaced rather than fail
        one statement after PostgreSQL is back."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(self._pool.check(), name="store-pool-check")

    async def _configure(self, conn: AsyncConnection[TupleRow]) -> None:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    async def _migrate(self, conn: AsyncConnection[TupleRow]) -> None:
        async with conn.transaction():
            # replicas starting together would otherwise race to create the same tables
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            await self._configure(conn)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY,"
                               " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            applied = (await cur.fetchone() or (0,))[0]
            for migration in migrations.pending(migrations.load("postgres"), applied):
                await conn.execute(migration.sql.encode())  # bytes: run as a plain script
                await conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                                   (migration.version, migration.name))

    # -- jobs --------------------------------------------------------------------------
    async def create_or_get(self, job: VideoJob, *, owner: str | None = None,
                            lease: tuple[str, float] | None = None) -> tuple[VideoJob, bool]:
        # creates arriving together share one statement (postgres_batches.py)
        lease_owner, lease_until = (lease[0], self.clock() + lease[1]) if lease else (None, None)
        existing = await self._creates(Create(JobRow.of(job), owner, lease_owner, lease_until))
        return (job, True) if existing is None else (existing, False)

    async def _create(self, creates: list[Create]) -> list[VideoJob | None]:
        async with self.connection() as conn:
            return await create_batch(conn, creates)

    async def save(self, job: VideoJob, *, lease_owner: str | None = None, release: bool = False) -> None:
        if release and lease_owner is None:
            raise ValueError("only a leased save can release its lease")
        # saves arriving together share one statement (postgres_batches.py)
        if not await self._saves(Save(JobRow.of(job), lease_owner, release)):
            raise LeaseLost(f"job {job.id}: {lease_owner} no longer holds its lease")

    async def _save(self, writes: list[Save | Release]) -> list[bool]:
        async with self.connection() as conn:
            written = await save_batch(conn, writes, self.clock())
        return [job_id(w) in written for w in writes]

    async def get(self, job_id: str, *, owner: str | None = None) -> VideoJob | None:
        rows = await self._docs(
            "SELECT doc FROM jobs WHERE id = %(id)s AND (%(owner)s::text IS NULL OR owner = %(owner)s)",
            {"id": job_id, "owner": owner})
        return rows[0] if rows else None

    async def get_by_idempotency_key(self, key: str, owner: str | None = None) -> VideoJob | None:
        rows = await self._docs(
            "SELECT doc FROM jobs WHERE coalesce(owner, '') = coalesce(%(owner)s, '')"
            " AND idempotency_key = %(key)s", {"key": key, "owner": owner})
        return rows[0] if rows else None

    async def list_jobs(self, *, owner: str | None = None, limit: int = DEFAULT_PAGE,
                        after: str | None = None, oldest_first: bool = False,
                        at_risk: bool = False) -> list[VideoJob]:
        params: dict[str, Any] = {"owner": owner, "limit": limit, "after": after,
                                  "created": None, "id": None, "at_risk": at_risk}
        direction, beyond = ("ASC", ">") if oldest_first else ("DESC", "<")
        async with self.connection() as conn:
            if after is not None:
                # another owner's job is as unknown as a missing one: no existence oracle
                cur = await conn.execute(
                    "SELECT created_at, id FROM jobs WHERE id = %(after)s"
                    " AND (%(owner)s::text IS NULL OR owner = %(owner)s)", params)
                found = await cur.fetchone()
                if found is None:
                    raise InvalidRequest("after", f"no job {after!r} to continue from")
                params["created"], params["id"] = found
            cur = await conn.execute(
                "SELECT doc FROM jobs WHERE (%(owner)s::text IS NULL OR owner = %(owner)s)"
                f" AND (%(after)s::text IS NULL OR (created_at, id) {beyond} (%(created)s::float8, %(id)s::text))"
                " AND (NOT %(at_risk)s OR at_risk)"
                f" ORDER BY created_at {direction}, id {direction} LIMIT %(limit)s", params)
            return [_job(row) for row in await cur.fetchall()]

    async def delete(self, job_id: str, *, owner: str | None = None) -> bool:
        return await self._execute(
            "DELETE FROM jobs WHERE id = %(id)s AND (%(owner)s::text IS NULL OR owner = %(owner)s)",
            {"id": job_id, "owner": owner})

    async def non_terminal(self) -> list[VideoJob]:
        return await self._docs(f"SELECT doc FROM jobs WHERE {_ACTIVE} ORDER BY created_at, id", {})

    # -- inbound webhooks -------------------------------------------------------------------
    async def first_sighting(self, key: str, *, ttl_s: float) -> bool:
        now = self.clock()
        # one statement: a new key is inserted, an expired one taken over; a live one is left
        # alone and RETURNING yields nothing. Concurrent callers serialise on the key's row.
        return await self._execute(
            "INSERT INTO webhook_seen (key, expires_at) VALUES (%(key)s, %(until)s)"
            " ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at"
            " WHERE webhook_seen.expires_at < %(now)s", {"key": key, "until": now + ttl_s, "now": now})

    async def bind_callback(self, provider: str, vendor_id: str, attempt_key: str, *, ttl_s: float) -> bool:
        now = self.clock()
        pair = {"provider": provider, "vendor": vendor_id, "attempt": attempt_key, "now": now, "until": now + ttl_s}
        async with self.connection() as conn:
            await conn.execute("DELETE FROM vendor_callbacks WHERE expires_at < %(now)s", pair)
            # ON CONFLICT without a target: either uniqueness (vendor job, attempt) keeps what is there
            await conn.execute("INSERT INTO vendor_callbacks (provider, vendor_id, attempt_key, expires_at)"
                               " VALUES (%(provider)s, %(vendor)s, %(attempt)s, %(until)s) ON CONFLICT DO NOTHING",
                               pair)
            cur = await conn.execute("SELECT 1 FROM vendor_callbacks WHERE provider = %(provider)s"
                                     " AND vendor_id = %(vendor)s AND attempt_key = %(attempt)s", pair)
            return await cur.fetchone() is not None

    async def bound_job(self, provider: str, attempt_key: str) -> str | None:
        async with self.connection() as conn:
            cur = await conn.execute("SELECT vendor_id FROM vendor_callbacks WHERE provider = %(provider)s"
                                     " AND attempt_key = %(attempt)s AND expires_at >= %(now)s",
                                     {"provider": provider, "attempt": attempt_key, "now": self.clock()})
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    # -- outbox --------------------------------------------------------------------------
    async def lease_deliveries(self, owner_id: str, lease_s: float, limit: int) -> builtins.list[OutboxRow]:
        now = self.clock()
        async with self.connection() as conn:
            cur = await conn.execute(_LEASE_DELIVERIES, {"owner": owner_id, "now": now, "until": now + lease_s,
                                                         "limit": limit})
            rows = [OutboxRow(*r) for r in await cur.fetchall()]
        return sorted(rows, key=lambda r: (r.next_at, r.message_id))

    async def record_delivery(self, message_id: str, owner_id: str, *, attempts: int, body: str | None,
                              next_at: float | None, delivered: bool = False) -> bool:
        return await self._execute(
            "UPDATE webhook_outbox SET attempts = %(attempts)s, body = %(body)s,"
            " next_at = coalesce(%(next_at)s, next_at), done_at = %(done_at)s, delivered = %(delivered)s,"
            " lease_owner = NULL, lease_until = NULL WHERE message_id = %(id)s AND lease_owner = %(owner)s",
            {"attempts": attempts, "body": body, "next_at": next_at, "delivered": delivered, "id": message_id,
             "owner": owner_id, "done_at": self.clock() if next_at is None else None})

    # -- leases --------------------------------------------------------------------------
    async def claim(self, owner_id: str, lease_s: float, limit: int, *, own: bool = False) -> list[VideoJob]:
        now = self.clock()
        jobs = await self._docs(_CLAIM, {"owner": owner_id, "now": now, "until": now + lease_s,
                                         "limit": limit, "own": own})
        return sorted(jobs, key=lambda j: (j.created_at, j.id))

    async def lease_segments(self, parent_id: str, job_ids: builtins.list[str], owner_id: str,
                             lease_s: float) -> bool:
        async with self.connection() as conn, conn.transaction():
            now = self.clock()
            cur = await conn.execute(  # the parent's row locked: its lease cannot move meanwhile
                "SELECT 1 FROM jobs WHERE id = %(id)s AND lease_owner = %(owner)s AND lease_until >= %(now)s"
                " FOR UPDATE", {"id": parent_id, "owner": owner_id, "now": now})
            if await cur.fetchone() is None:
                return False
            await conn.execute("UPDATE jobs SET lease_owner = %(owner)s, lease_until = %(until)s"
                               " WHERE id = ANY(%(ids)s)", {"owner": owner_id, "until": now + lease_s, "ids": job_ids})
            return True

    async def request_cancel(self, job_id: str) -> None:
        await self._execute("INSERT INTO cancel_requests (job_id) VALUES (%(id)s) ON CONFLICT DO NOTHING",
                            {"id": job_id})

    async def take_cancels(self, owner_id: str) -> list[str]:
        async with self.connection() as conn:
            cur = await conn.execute("DELETE FROM cancel_requests WHERE job_id IN"
                                     " (SELECT id FROM jobs WHERE lease_owner = %(owner)s) RETURNING job_id",
                                     {"owner": owner_id})
            return [job_id for (job_id,) in await cur.fetchall()]

    async def renew_all(self, job_ids: builtins.list[str], owner_id: str, lease_s: float) -> set[str]:
        async with self.connection() as conn:
            cur = await conn.execute(
                "UPDATE jobs SET lease_until = %(until)s WHERE id = ANY(%(ids)s) AND lease_owner = %(owner)s"
                " RETURNING id", {"until": self.clock() + lease_s, "ids": job_ids, "owner": owner_id})
            return {job_id for (job_id,) in await cur.fetchall()}

    async def release(self, job_id: str, owner_id: str) -> bool:
        # with the saves arriving meanwhile (postgres_batches.py): one statement for all of them
        released: bool = await self._saves(Release(job_id, owner_id))
        return released

    # -- helpers ---------------------------------------------------------------------------
    async def _execute(self, query: str, params: dict[str, Any]) -> bool:
        """Run one statement; True when it changed a row."""
        async with self.connection() as conn:
            cur = await conn.execute(query, params)
            return cur.rowcount > 0

    async def _docs(self, query: str, params: dict[str, Any]) -> list[VideoJob]:
        async with self.connection() as conn:
            cur = await conn.execute(query, params)
            return [_job(row) for row in await cur.fetchall()]


def _job(row: TupleRow | None) -> VideoJob:
    if row is None:
        raise LookupError("the job vanished between two statements")
    return codec.decode_job(row[0])
