"""Creates and saves on PostgreSQL, many in one statement: the store's group commit
(group_commit.py).

Each statement through psycopg costs the gateway's process ~150 µs of CPU whatever it
carries (a pooled connection, the query sent, a round trip awaited), five times as much as
building the job's row; a replica saves each job four or five times. So the saves that
arrive while one batch is under way go out together as the next: one statement, one round
trip, one transaction (bench/store_writes.py). The rows travel as one JSON array, each job's
document spliced in as already encoded: as arrays (``unnest``), psycopg escaped every
character of every document in Python, which cost more than the round trips saved.

One statement does what ``save`` did in up to four: saves without a lease upsert, saves
under a lease update only the rows their replica still holds (a job's last one, ``release``,
clearing the lease as it writes), and a finished job with a webhook queues its message in
the same transaction (the outbox's promise). Lease releases on their own (a row without a
document) ride in the same statement. The ids it returns are the rows written; a leased
save (or a release) missing from them lost its lease. A final save tried again after its
answer was lost (PostgreSQL went away after the commit, gateway/store/outage.py) finds its
lease gone, given up by that very write: a row left unleased with the save's status and
``updated_at`` is that write landed (``landed``), not a lost lease, which would hand the
job's settled cost over to no one. Creates insert what
is new; a create missing from the ids met an existing job (its id, or its idempotency key,
raced by another create of the same batch or made before), which is then read back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.job import VideoJob
from gateway.store import codec
from gateway.store.base import JobRow, new_message_id

_SAVE_BATCH = """
WITH v AS (
    SELECT * FROM json_to_recordset(%(rows)s::json) AS v(id text, status text, key text, created float8,
        updated float8, doc jsonb, at_risk bool, lease_owner text, message_id text, release bool)
), upserted AS (
    INSERT INTO jobs (id, status, idempotency_key, created_at, updated_at, doc, at_risk)
    SELECT id, status, key, created, updated, doc, at_risk FROM v WHERE lease_owner IS NULL
    ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at,
        doc = excluded.doc, at_risk = excluded.at_risk
    RETURNING id, status
), fenced AS (
    UPDATE jobs SET status = v.status, updated_at = v.updated, doc = v.doc, at_risk = v.at_risk,
        lease_owner = CASE WHEN v.release THEN NULL ELSE jobs.lease_owner END,
        lease_until = CASE WHEN v.release THEN NULL ELSE jobs.lease_until END
    FROM v WHERE v.lease_owner IS NOT NULL AND v.doc IS NOT NULL AND jobs.id = v.id
        AND jobs.lease_owner = v.lease_owner
    RETURNING jobs.id, jobs.status
), released AS (
    UPDATE jobs SET lease_owner = NULL, lease_until = NULL
    FROM v WHERE v.doc IS NULL AND jobs.id = v.id AND jobs.lease_owner = v.lease_owner
    RETURNING jobs.id
), landed AS (
    SELECT jobs.id FROM jobs JOIN v ON jobs.id = v.id
    WHERE v.release AND v.doc IS NOT NULL AND jobs.lease_owner IS NULL
        AND jobs.status = v.status AND jobs.updated_at = v.updated
), saved AS (
    SELECT id, status FROM upserted UNION ALL SELECT id, status FROM fenced
), queued AS (
    INSERT INTO webhook_outbox (message_id, job_id, status, next_at)
    SELECT v.message_id, saved.id, saved.status, %(now)s FROM saved JOIN v ON v.id = saved.id
    WHERE v.message_id IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT id FROM saved UNION ALL SELECT id FROM released UNION ALL SELECT id FROM landed
"""


_CREATE_BATCH = """
INSERT INTO jobs (id, status, owner, idempotency_key, created_at, updated_at, doc, at_risk, lease_owner, lease_until)
SELECT id, status, owner, key, created, updated, doc, at_risk, lease_owner, lease_until
FROM json_to_recordset(%(rows)s::json) AS v(id text, status text, owner text, key text, created float8,
    updated float8, doc jsonb, at_risk bool, lease_owner text, lease_until float8)
ON CONFLICT DO NOTHING
RETURNING id
"""

_EXISTING = ("SELECT doc FROM jobs WHERE id = %(id)s OR"
             " (coalesce(owner, '') = coalesce(%(owner)s, '') AND idempotency_key = %(key)s)"
             " ORDER BY id = %(id)s DESC LIMIT 1")


@dataclass(frozen=True)
class Create:
    """One ``create_or_get`` waiting for its batch."""

    row: JobRow
    owner: str | None
    lease_owner: str | None
    lease_until: float | None


@dataclass(frozen=True)
class Save:
    """One ``save`` waiting for its batch."""

    row: JobRow
    lease_owner: str | None
    #: the job's last save under its lease: it clears the lease too (``JobStore.save``)
    release: bool = False


@dataclass(frozen=True)
class Release:
    """One ``release`` on its own waiting for its batch: it rides with the saves. Most jobs
    give their lease up with their last save (``Save.release``); this is for those finished
    off after it (a video kept late, a finished job claimed from a dead replica, a segment).
    Unbatched, releases were a statement of their own per job, as many as all the job's
    batched saves under load (bench/pg_statements.py)."""

    id: str
    lease_owner: str


def job_id(write: Create | Save | Release) -> str:
    """A batch holds one write per job: a statement may change a row only once."""
    return write.id if isinstance(write, Release) else write.row.id


async def create_batch(conn: AsyncConnection[TupleRow], creates: list[Create]) -> list[VideoJob | None]:
    """Insert ``creates`` in one statement; per create, None when it was stored, else the
    job already there that the caller must use instead."""
    cur = await conn.execute(_CREATE_BATCH, {"rows": _records(
        (c.row.doc, {"id": c.row.id, "status": c.row.status, "owner": c.owner, "key": c.row.idempotency_key,
                     "created": c.row.created_at, "updated": c.row.updated_at, "at_risk": c.row.at_risk,
                     "lease_owner": c.lease_owner, "lease_until": c.lease_until}) for c in creates)})
    made = {made for (made,) in await cur.fetchall()}
    found: list[VideoJob | None] = []
    for c in creates:
        if c.row.id in made:
            found.append(None)
            continue
        # a losing insert waited for the winner's commit (or was its batchmate): it is visible now
        cur = await conn.execute(_EXISTING, {"id": c.row.id, "owner": c.owner, "key": c.row.idempotency_key})
        existing = await cur.fetchone()
        if existing is None:
            raise LookupError("the job vanished between two statements")
        found.append(codec.decode_job(existing[0]))
    return found


async def save_batch(conn: AsyncConnection[TupleRow], writes: list[Save | Release], now: float) -> set[str]:
    """Write ``writes`` (one per job) in one statement; the ids written (saved, or released)."""
    cur = await conn.execute(_SAVE_BATCH, {"now": now, "rows": _records(
        ("null", {"id": w.id, "lease_owner": w.lease_owner, "release": True}) if isinstance(w, Release)
        else (w.row.doc, {"id": w.row.id, "status": w.row.status, "key": w.row.idempotency_key,
                          "created": w.row.created_at, "updated": w.row.updated_at, "at_risk": w.row.at_risk,
                          "lease_owner": w.lease_owner, "release": w.release,
                          "message_id": new_message_id() if w.row.announce else None})
        for w in writes)})
    return {saved for (saved,) in await cur.fetchall()}


def _records(rows: Iterable[tuple[str, dict[str, Any]]]) -> str:
    """One JSON array of the rows' columns, each job's document spliced in as it was encoded."""
    return "[" + ",".join('{"doc":' + doc + "," + codec.dumps(columns)[1:] for doc, columns in rows) + "]"
