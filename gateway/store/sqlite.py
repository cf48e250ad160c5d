"""The embedded default store: one SQLite file, safe to share between processes.

Why stdlib ``sqlite3`` in a worker thread rather than ``aiosqlite``: aiosqlite is
the same design (one connection, driven from a thread) behind a second API, and a
dependency. Here each operation is one plain function that runs whole in the store's own
thread, one at a time in the order made (``one_thread.OneThread``), so a write transaction
(``BEGIN IMMEDIATE`` ... ``COMMIT``) can never interleave with another coroutine's. Its own
thread, not ``asyncio.to_thread``'s pool: a commit never queues behind the service's file
copies in that pool, and a hop costs no task and no context copy (bench/store_writes.py).

Sharing the file: WAL mode lets readers run beside the one writer; every write
takes the write lock up front (``BEGIN IMMEDIATE``), and a second process waits for it
(in tries of ``LOCK_TRY_MS``, up to ``busy_timeout_s``) instead of failing. That
single-writer lock is also what makes ``claim`` exclusive, the role ``FOR UPDATE SKIP
LOCKED`` plays in PostgreSQL.
"""

from __future__ import annotations

import builtins
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import InvalidRequest, StoreUnavailable
from gateway.home import reelgate_home
from gateway.job import VideoJob
from gateway.store.base import (
    ACTIVE_STATES,
    DEFAULT_PAGE,
    Clock,
    JobRow,
    JobStore,
    OutboxRow,
)
from gateway.store.group_commit import ThreadGroupCommit
from gateway.store.one_thread import OneThread, Settle
from gateway.store.sqlite_batch import Create, NotTogether, Release, Save, Write, independent, job_of, together
from gateway.store.sqlite_checkpoint import Checkpointer
from gateway.store.sqlite_setup import create_private, set_up, until_unlocked, write

#: how long a write waits for another process's write lock before failing
BUSY_TIMEOUT_S = 10.0
#: how long SQLite's own busy handler waits for another process's lock before a call is
#: tried again from the start (``_try``). Left to wait the whole ``busy_timeout``, the handler
#: sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100, 100 ... ms between its tries: a worker
#: of ``serve --workers 2`` whose first tries met the other's transactions then slept through
#: many of the gaps between them, 330-730 ms where a transaction holds the lock ~1 ms
#: (docs/benchmarks.md, 6.sqlbatch). Asked for 2 ms, it sleeps 1 and 1 ms.
LOCK_TRY_MS = 2
DB_NAME = "reelgate.db"

_ACTIVE = f"status IN ({', '.join(repr(s) for s in ACTIVE_STATES)})"
_T = TypeVar("_T")


def default_sqlite_path(env: Mapping[str, str]) -> Path:
    """``$REELGATE_HOME/reelgate.db``, with ``REELGATE_HOME`` defaulting to ``~/.reelgate``."""
    return reelgate_home(env) / DB_NAME


class SqliteJobStore(JobStore):
    def __init__(self, path: str | os.PathLike[str], *, clock: Clock | None = None,
                 busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        super().__init__(clock=clock)
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        #: the one thread that touches the connection (made at open, gone at close)
        self._thread: OneThread | None = None
        #: the WAL's checkpoints, off the thread that commits (gateway/store/sqlite_checkpoint.py)
        self._checkpointer: Checkpointer | None = None
        #: creates, saves and releases: each batch of them is one transaction (group_commit.py)
        self._in_next_commit: ThreadGroupCommit[Write] = ThreadGroupCommit(self._send)

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        self._thread = OneThread("reelgate-sqlite")
        try:
            self._conn = await self._thread.run(self._connect)
        except (OSError, sqlite3.Error) as exc:  # a missing directory, no permission, not a database
            self._thread.stop()
            self._thread = None
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreUnavailable(f"the job store (SQLite) cannot be opened at {self.path}: {reason}") from None
        self._checkpointer = Checkpointer(self.path)
        self._checkpointer.start()

    async def close(self) -> None:
        thread, conn, checkpointer = self._thread, self._conn, self._checkpointer
        self._thread = self._conn = self._checkpointer = None
        if thread is None:
            return
        try:
            if checkpointer is not None:  # joined in the store's thread, not the loop's
                await thread.run(checkpointer.stop)
            if conn is not None:
                # queued behind every call made before (a cancelled caller's COMMIT too): the
                # connection is never freed under a running statement
                await thread.run(conn.close)
        finally:
            thread.stop()  # after the close, however this wait ends

    def _connect(self) -> sqlite3.Connection:
        create_private(self.path)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            until_unlocked(lambda: set_up(conn), self.busy_timeout_s)
            # commits never checkpoint: the store's ``Checkpointer`` does, in its own thread
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            # from now on every call waits for another process's lock in short tries (``_try``)
            conn.execute(f"PRAGMA busy_timeout = {LOCK_TRY_MS}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._conn is None:
            raise RuntimeError("the store is not open (use `async with store:` or `await store.open()`)")
        assert self._thread is not None
        # a caller cancelled meanwhile drops the outcome only: the call still runs whole, and
        # ``close`` queues behind it (a connection freed under a running COMMIT crashes the
        # process inside SQLite)
        return await self._thread.run(functools.partial(self._try, functools.partial(fn, self._conn)))

    # -- jobs --------------------------------------------------------------------------
    async def create_or_get(self, job: VideoJob, *, owner: str | None = None,
                            lease: tuple[str, float] | None = None) -> tuple[VideoJob, bool]:
        lease_owner, lease_until = (lease[0], self.clock() + lease[1]) if lease else (None, None)
        created: tuple[VideoJob, bool] = await self._in_next_commit(
            Create(job, JobRow.of(job), owner, lease_owner, lease_until))
        return created

    async def save(self, job: VideoJob, *, lease_owner: str | None = None, release: bool = False) -> None:
        if release and lease_owner is None:
            raise ValueError("only a leased save can release its lease")
        lost = await self._in_next_commit(Save(JobRow.of(job), lease_owner, release, self.clock))
        if lost is not None:
            raise lost

    def _send(self, writes: list[Write], settle: Settle, batch: Any) -> None:
        """A batch of writes to the store's thread, as one transaction (``ThreadGroupCommit``)."""
        if self._conn is None:
            raise RuntimeError("the store is not open (use `async with store:` or `await store.open()`)")
        assert self._thread is not None
        self._thread.call(functools.partial(self._try, functools.partial(_in_one_transaction, self._conn, writes,
                                                                         self.clock)), settle, batch)

    def _try(self, call: Callable[[], _T]) -> _T:
        """``call`` in the store's thread, again from its start while another process holds
        the lock it needs, for up to ``busy_timeout_s``. A call is a read, or a transaction
        that has rolled back when the lock stopped it: running it again is safe."""
        return until_unlocked(call, self.busy_timeout_s, pause_s=(0.0, 0.0))

    async def get(self, job_id: str, *, owner: str | None = None) -> VideoJob | None:
        return await self._one("SELECT doc FROM jobs WHERE id = ? AND (? IS NULL OR owner = ?)",
                               (job_id, owner, owner))

    async def get_by_idempotency_key(self, key: str, owner: str | None = None) -> VideoJob | None:
        return await self._one(
            "SELECT doc FROM jobs WHERE coalesce(owner, '') = coalesce(?, '') AND idempotency_key = ?",
            (owner, key))

    async def list_jobs(self, *, owner: str | None = None, limit: int = DEFAULT_PAGE,
                        after: str | None = None, oldest_first: bool = False,
                        at_risk: bool = False) -> list[VideoJob]:
        direction, beyond = ("ASC", ">") if oldest_first else ("DESC", "<")

        def page(conn: sqlite3.Connection) -> list[VideoJob]:
            cursor: tuple[float | None, str | None] = (None, None)
            if after is not None:
                # another owner's job is as unknown as a missing one: no existence oracle
                found = conn.execute("SELECT created_at, id FROM jobs WHERE id = ? AND (? IS NULL OR owner = ?)",
                                     (after, owner, owner)).fetchone()
                if found is None:
                    raise InvalidRequest("after", f"no job {after!r} to continue from")
                cursor = tuple(found)
            rows = conn.execute(
                "SELECT doc FROM jobs WHERE (? IS NULL OR owner = ?)"
                f" AND (? IS NULL OR (created_at, id) {beyond} (?, ?)) AND (NOT ? OR at_risk = 1)"
                f" ORDER BY created_at {direction}, id {direction} LIMIT ?",
                (owner, owner, after, *cursor, at_risk, limit)).fetchall()
            return [job_of(r) for r in rows]

        return await self._run(page)

    async def delete(self, job_id: str, *, owner: str | None = None) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            with write(conn):
                return conn.execute("DELETE FROM jobs WHERE id = ? AND (? IS NULL OR owner = ?)",
                                    (job_id, owner, owner)).rowcount > 0

        return await self._run(delete)

    async def non_terminal(self) -> list[VideoJob]:
        return await self._all(f"SELECT doc FROM jobs WHERE {_ACTIVE} ORDER BY created_at, id", ())

    # -- inbound webhooks -------------------------------------------------------------------
    async def first_sighting(self, key: str, *, ttl_s: float) -> bool:
        now = self.clock()

        def sight(conn: sqlite3.Connection) -> bool:
            with write(conn):
                conn.execute("DELETE FROM webhook_seen WHERE expires_at < ?", (now,))  # forget the expired
                return conn.execute(
                    "INSERT INTO webhook_seen (key, expires_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                    (key, now + ttl_s)).rowcount > 0

        return await self._run(sight)

    async def bind_callback(self, provider: str, vendor_id: str, attempt_key: str, *, ttl_s: float) -> bool:
        now, pair = self.clock(), (provider, vendor_id, attempt_key)

        def bind(conn: sqlite3.Connection) -> bool:
            with write(conn):
                conn.execute("DELETE FROM vendor_callbacks WHERE expires_at < ?", (now,))
                conn.execute("INSERT INTO vendor_callbacks (provider, vendor_id, attempt_key, expires_at)"
                             " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", (*pair, now + ttl_s))
                return conn.execute("SELECT 1 FROM vendor_callbacks WHERE provider = ? AND vendor_id = ?"
                                    " AND attempt_key = ?", pair).fetchone() is not None

        return await self._run(bind)

    async def bound_job(self, provider: str, attempt_key: str) -> str | None:
        query = ("SELECT vendor_id FROM vendor_callbacks WHERE provider = ? AND attempt_key = ?"
                 " AND expires_at >= ?")
        row = await self._run(lambda conn: conn.execute(query, (provider, attempt_key, self.clock())).fetchone())
        return None if row is None else str(row[0])

    # -- outbox --------------------------------------------------------------------------
    async def lease_deliveries(self, owner_id: str, lease_s: float, limit: int) -> builtins.list[OutboxRow]:
        now = self.clock()

        def lease(conn: sqlite3.Connection) -> builtins.list[OutboxRow]:
            with write(conn):  # the one write lock makes the lease exclusive, as in claim()
                rows = conn.execute(
                    "UPDATE webhook_outbox SET lease_owner = :owner, lease_until = :until WHERE message_id IN"
                    " (SELECT message_id FROM webhook_outbox WHERE done_at IS NULL AND next_at <= :now"
                    "  AND (lease_owner IS NULL OR lease_owner = :owner OR lease_until < :now)"
                    # its job's replica is still finishing it (see postgres.py)
                    "  AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = webhook_outbox.job_id"
                    "   AND jobs.lease_owner IS NOT NULL)"
                    "  ORDER BY next_at, message_id LIMIT :limit)"
                    " RETURNING message_id, job_id, status, attempts, next_at, body",
                    {"owner": owner_id, "until": now + lease_s, "now": now, "limit": limit}).fetchall()
            return sorted((OutboxRow(*r) for r in rows), key=lambda r: (r.next_at, r.message_id))

        return await self._run(lease)

    async def record_delivery(self, message_id: str, owner_id: str, *, attempts: int, body: str | None,
                              next_at: float | None, delivered: bool = False) -> bool:
        done_at = self.clock() if next_at is None else None
        return await self._change(
            "UPDATE webhook_outbox SET attempts = ?, body = ?, next_at = coalesce(?, next_at), done_at = ?,"
            " delivered = ?, lease_owner = NULL, lease_until = NULL WHERE message_id = ? AND lease_owner = ?",
            (attempts, body, next_at, done_at, delivered, message_id, owner_id))

    # -- leases --------------------------------------------------------------------------
    async def claim(self, owner_id: str, lease_s: float, limit: int, *, own: bool = False) -> list[VideoJob]:
        now = self.clock()

        def claim(conn: sqlite3.Connection) -> list[VideoJob]:
            # BEGIN IMMEDIATE holds the database's one write lock from the SELECT to
            # the UPDATE: no other process can claim in between.
            with write(conn):
                rows = conn.execute(
                    "UPDATE jobs SET lease_owner = :owner, lease_until = :until WHERE id IN"
                    # a live lease is left alone, its own too unless ``own`` (postgres.py)
                    f" (SELECT id FROM jobs WHERE (({_ACTIVE} AND (lease_owner IS NULL"
                    "   OR lease_until < :now OR (:own AND lease_owner = :owner)))"
                    # finished, but its replica died before finishing it off (postgres.py)
                    f"  OR (NOT {_ACTIVE} AND lease_owner IS NOT NULL AND lease_until < :now))"
                    # a segment goes with its parent (lease_segments)
                    "  AND json_extract(doc, '$.parent_id') IS NULL"
                    "  ORDER BY created_at, id LIMIT :limit)"
                    " RETURNING doc",
                    {"owner": owner_id, "until": now + lease_s, "now": now, "limit": limit, "own": own}).fetchall()
            return sorted((job_of(r) for r in rows), key=lambda j: (j.created_at, j.id))

        return await self._run(claim)

    async def lease_segments(self, parent_id: str, job_ids: builtins.list[str], owner_id: str,
                             lease_s: float) -> bool:
        now = self.clock()

        def take(conn: sqlite3.Connection) -> bool:
            with write(conn):  # the one write lock: the parent's lease cannot move meanwhile
                if conn.execute("SELECT 1 FROM jobs WHERE id = ? AND lease_owner = ? AND lease_until >= ?",
                                (parent_id, owner_id, now)).fetchone() is None:
                    return False
                conn.execute("UPDATE jobs SET lease_owner = ?, lease_until = ? WHERE id IN"
                             " (SELECT value FROM json_each(?))", (owner_id, now + lease_s, json.dumps(job_ids)))
                return True

        return await self._run(take)

    async def request_cancel(self, job_id: str) -> None:
        await self._change("INSERT OR IGNORE INTO cancel_requests (job_id) VALUES (?)", (job_id,))

    async def take_cancels(self, owner_id: str) -> list[str]:
        def take(conn: sqlite3.Connection) -> list[str]:
            with write(conn):
                rows = conn.execute("DELETE FROM cancel_requests WHERE job_id IN"
                                    " (SELECT id FROM jobs WHERE lease_owner = ?) RETURNING job_id",
                                    (owner_id,)).fetchall()
            return [job_id for (job_id,) in rows]

        return await self._run(take)

    async def renew_all(self, job_ids: builtins.list[str], owner_id: str, lease_s: float) -> set[str]:
        def renew(conn: sqlite3.Connection) -> set[str]:
            with write(conn):
                return {r[0] for r in conn.execute(
                    "UPDATE jobs SET lease_until = ? WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))"
                    " RETURNING id", (self.clock() + lease_s, owner_id, json.dumps(job_ids))).fetchall()}

        return await self._run(renew)

    async def release(self, job_id: str, owner_id: str) -> bool:
        # in the next batch with the saves (as PostgreSQL's): a service releases every job it
        # finishes, and alone each release was a transaction and a thread hop of its own,
        # taking the write lock from the other workers (docs/benchmarks.md 6.tail)
        released: bool = await self._in_next_commit(Release(job_id, owner_id))
        return released

    # -- helpers ---------------------------------------------------------------------------
    async def _one(self, query: str, params: tuple[Any, ...]) -> VideoJob | None:
        row = await self._run(lambda conn: conn.execute(query, params).fetchone())
        return None if row is None else job_of(row)

    async def _all(self, query: str, params: tuple[Any, ...]) -> list[VideoJob]:
        rows = await self._run(lambda conn: conn.execute(query, params).fetchall())
        return [job_of(r) for r in rows]

    async def _change(self, query: str, params: tuple[Any, ...]) -> bool:
        def change(conn: sqlite3.Connection) -> bool:
            with write(conn):
                return conn.execute(query, params).rowcount > 0

        return await self._run(change)


def _in_one_transaction(conn: sqlite3.Connection, writes: list[Write], clock: Clock) -> list[Any]:
    """A batch in one transaction: in a few multi-row statements where that gives every write
    the outcome it would have alone (gateway/store/sqlite_batch.py), else one by one."""
    if len(writes) > 1 and independent(writes):
        try:
            with write(conn):
                return together(conn, writes, clock)
        except NotTogether:
            pass  # rolled back: nothing of it is on record
    with write(conn):
        return [one.alone(conn) for one in writes]

