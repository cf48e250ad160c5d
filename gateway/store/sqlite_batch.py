"""The SQLite store's group commit: a batch of job writes as one transaction, and as few
statements as the batch allows.

Why few statements: the store's thread gives the GIL up around every statement it steps and
must take it back from the loop thread, which, busy, keeps it up to the switch interval
(5 ms). A batch of ~50 writes stepped ~50 statements while holding the database's one write
lock, which the other processes of ``serve --workers N`` wait for in SQLite's busy handler,
whose sleeps grow to 100 ms: on a quiet machine a worker's wait for the lock reached
330-730 ms, the pairs' p99 (docs/benchmarks.md, 6.sqlbatch). Here a batch's creates are one
``INSERT`` and its leased saves one ``UPDATE ... FROM (VALUES ...)`` per chunk, the chunks
sized in powers of two so that a handful of statement texts serve every batch size (the
``sqlite3`` module caches prepared statements by their text).

The outcomes are exactly those of writing one by one, in the order made:
* together only when no write's outcome can depend on another's: every job id and every
  idempotency key appears once in the batch (``independent``);
* every statement must change as many rows as it was given. When one changes fewer (a lease
  lost, an idempotency key already taken, a job already there), ``NotTogether`` rolls the
  transaction back and the caller writes the batch one by one (``alone``), as it always did.
  Both happen inside one process's write lock, so nothing in between can tell them apart.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.job import VideoJob
from gateway.store import codec
from gateway.store.base import Clock, JobRow, LeaseLost, new_message_id

#: the largest chunk of one statement (rows); with up to 10 columns, far below SQLite's
#: 32,766 bound parameters
LARGEST_CHUNK = 64


class NotTogether(Exception):
    """A statement of the batch changed fewer rows than it was given: write it one by one."""


@dataclass(slots=True)
class Create:
    """``create_or_get``: a new job, unless its id or (owner, idempotency key) is taken."""

    job: VideoJob
    row: JobRow
    owner: str | None
    lease_owner: str | None
    lease_until: float | None

    def alone(self, conn: sqlite3.Connection) -> tuple[VideoJob, bool]:
        row = self.row
        if conn.execute(_statement(_INSERT_JOBS, 1, 10), self.values()).rowcount:
            return self.job, True
        # in the same transaction as any earlier write of the batch: a job created just
        # before with the same key is seen here
        existing = conn.execute(
            "SELECT doc FROM jobs WHERE id = ? OR"
            " (coalesce(owner, '') = coalesce(?, '') AND idempotency_key = ?)"
            " ORDER BY id = ? DESC LIMIT 1",
            (row.id, self.owner, row.idempotency_key, row.id),
        ).fetchone()
        return job_of(existing), False

    def values(self) -> tuple[Any, ...]:
        row = self.row
        return (row.id, row.status, self.owner, row.idempotency_key, row.created_at, row.updated_at, row.doc,
                row.at_risk, self.lease_owner, self.lease_until)


@dataclass(slots=True)
class Save:
    """``save``: a job's new state; leased, only while ``lease_owner`` holds it (the fence)."""

    row: JobRow
    lease_owner: str | None
    release: bool
    clock: Clock

    def alone(self, conn: sqlite3.Connection) -> LeaseLost | None:
        row = self.row
        if self.lease_owner is None:
            conn.execute(_statement(_UPSERT_JOBS, 1, 7), self.upsert_values())
        elif not conn.execute(_statement(_UPDATE_LEASED, 1, 7), self.leased_values()).rowcount:
            if self.release and conn.execute(  # this final save landed before (postgres_batches.py)
                    "SELECT 1 FROM jobs WHERE id = ? AND lease_owner IS NULL AND status = ? AND updated_at = ?",
                    (row.id, row.status, row.updated_at)).fetchone():
                return None
            return LeaseLost(f"job {row.id}: {self.lease_owner} no longer holds its lease")
        if row.announce:  # the finished job and its webhook commit together, or neither
            conn.execute(_statement(_INSERT_OUTBOX, 1, 4), self.outbox_values(self.clock()))
        return None

    def upsert_values(self) -> tuple[Any, ...]:
        row = self.row
        return row.id, row.status, row.idempotency_key, row.created_at, row.updated_at, row.doc, row.at_risk

    def leased_values(self) -> tuple[Any, ...]:
        row = self.row
        return row.id, self.lease_owner, row.status, row.updated_at, row.doc, row.at_risk, self.release

    def outbox_values(self, now: float) -> tuple[Any, ...]:
        return new_message_id(), self.row.id, self.row.status, now


@dataclass(slots=True)
class Release:
    """``release``: the lease given up, if ``owner_id`` holds it."""

    job_id: str
    owner_id: str

    def alone(self, conn: sqlite3.Connection) -> bool:
        return conn.execute(_statement(_RELEASE, 1, 2), (self.job_id, self.owner_id)).rowcount > 0


Write = Create | Save | Release

_INSERT_JOBS = ("INSERT INTO jobs (id, status, owner, idempotency_key, created_at, updated_at, doc, at_risk,"
                " lease_owner, lease_until) VALUES {} ON CONFLICT DO NOTHING")
_UPSERT_JOBS = ("INSERT INTO jobs (id, status, idempotency_key, created_at, updated_at, doc, at_risk) VALUES {}"
                " ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at,"
                " doc = excluded.doc, at_risk = excluded.at_risk")
# the job's last save under its lease gives it up too (``release``). Not ``WITH v AS (VALUES
# ...) UPDATE``: the sqlite3 module counts changed rows only of a statement that begins with
# INSERT, UPDATE, DELETE or REPLACE (Python 3.11), and the fence is read from that count.
# A VALUES table's columns are column1, column2, ...:
# id, lease_owner, status, updated_at, doc, at_risk, release
_UPDATE_LEASED = ("UPDATE jobs SET status = v.column3, updated_at = v.column4, doc = v.column5,"
                  " at_risk = v.column6, lease_owner = iif(v.column7, NULL, jobs.lease_owner),"
                  " lease_until = iif(v.column7, NULL, jobs.lease_until)"
                  " FROM (VALUES {}) AS v WHERE jobs.id = v.column1 AND jobs.lease_owner = v.column2")
_INSERT_OUTBOX = "INSERT INTO webhook_outbox (message_id, job_id, status, next_at) VALUES {} ON CONFLICT DO NOTHING"
_RELEASE = ("UPDATE jobs SET lease_owner = NULL, lease_until = NULL FROM (VALUES {}) AS v"
            " WHERE jobs.id = v.column1 AND jobs.lease_owner = v.column2")


def independent(writes: Sequence[Write]) -> bool:
    """Whether no write's outcome depends on another's: each job id, and each (owner,
    idempotency key) a write may insert, once in the batch."""
    ids: set[str] = set()
    keys: set[tuple[str, str]] = set()
    for one in writes:
        job_id = one.job_id if isinstance(one, Release) else one.row.id
        if job_id in ids:
            return False
        ids.add(job_id)
        if isinstance(one, Release) or (isinstance(one, Save) and one.lease_owner is not None):
            continue
        if (key := one.row.idempotency_key) is not None:
            owned = (one.owner if isinstance(one, Create) else None) or "", key
            if owned in keys:
                return False
            keys.add(owned)
    return True


def together(conn: sqlite3.Connection, writes: Sequence[Write], clock: Clock) -> list[Any]:
    """The outcomes of ``writes`` (``independent``), written in a few multi-row statements
    inside the caller's transaction; ``NotTogether`` when a write's outcome would not be
    the plain one (the caller rolls back and writes them ``alone``)."""
    creates = [w for w in writes if isinstance(w, Create)]
    saves = [w for w in writes if isinstance(w, Save)]
    leased = [w for w in saves if w.lease_owner is not None]
    upserts = [w for w in saves if w.lease_owner is None]
    releases = [w for w in writes if isinstance(w, Release)]
    _each_changed(conn, _INSERT_JOBS, 10, [w.values() for w in creates])
    _each_changed(conn, _UPSERT_JOBS, 7, [w.upsert_values() for w in upserts])
    _each_changed(conn, _UPDATE_LEASED, 7, [w.leased_values() for w in leased])
    _each_changed(conn, _RELEASE, 2, [(w.job_id, w.owner_id) for w in releases])
    if announced := [w for w in saves if w.row.announce]:
        now = clock()
        _in_chunks(conn, _INSERT_OUTBOX, 4, [w.outbox_values(now) for w in announced])
    return [(w.job, True) if isinstance(w, Create) else None if isinstance(w, Save) else True for w in writes]


def _each_changed(conn: sqlite3.Connection, statement: str, width: int, rows: list[tuple[Any, ...]]) -> None:
    if _in_chunks(conn, statement, width, rows) != len(rows):
        raise NotTogether


def _in_chunks(conn: sqlite3.Connection, statement: str, width: int, rows: list[tuple[Any, ...]]) -> int:
    """``statement`` over ``rows``, a multi-row ``VALUES`` per chunk; the rows it changed."""
    changed = 0
    for start, size in _chunks(len(rows)):
        flat = [value for row in rows[start:start + size] for value in row]
        changed += conn.execute(_statement(statement, size, width), flat).rowcount
    return changed


def _chunks(count: int) -> Iterator[tuple[int, int]]:
    """(start, size) covering ``count`` rows, each size a power of two up to LARGEST_CHUNK,
    largest first: 48 rows are 32 + 16."""
    start, size = 0, LARGEST_CHUNK
    while start < count:
        while size > count - start:
            size //= 2
        yield start, size
        start += size


_STATEMENTS: dict[tuple[str, int], str] = {}


def _statement(template: str, rows: int, width: int) -> str:
    """``template`` with its ``VALUES {}`` for ``rows`` rows of ``width`` columns, made once
    per shape (the same string each time: the module's statement cache is a dict by text)."""
    text = _STATEMENTS.get((template, rows))
    if text is None:
        text = _STATEMENTS[template, rows] = template.format(
            ", ".join(["(" + ", ".join("?" * width) + ")"] * rows))
    return text


def job_of(row: tuple[str]) -> VideoJob:
    """A job from its stored document (a row's first column)."""
    return codec.decode_job(json.loads(row[0]))
