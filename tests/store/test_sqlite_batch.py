"""The SQLite store's batches written as a few multi-row statements (sqlite_batch.py), and its
writes waiting for another process's write lock in short tries (sqlite_setup.write).

What must hold: a batch written together gives every write exactly the outcome, and leaves
exactly the rows, that writing its writes one by one in the order made would; and it is
written together (few statements), or the point of it is gone.
"""

from __future__ import annotations

import asyncio
import functools
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.job import JobStatus, VideoJob
from gateway.store import SqliteJobStore
from gateway.store.base import JobRow, LeaseLost
from gateway.store.sqlite import LOCK_TRY_MS, _in_one_transaction
from gateway.store.sqlite_batch import Create, Release, Save, Write, _chunks, independent, together
from gateway.store.sqlite_setup import write
from tests.store.jobs import new_job

LEASE_S = 30.0


def test_chunks_are_powers_of_two_largest_first() -> None:
    assert list(_chunks(48)) == [(0, 32), (32, 16)]
    assert list(_chunks(7)) == [(0, 4), (4, 2), (6, 1)]
    assert list(_chunks(130)) == [(0, 64), (64, 64), (128, 2)]
    assert list(_chunks(0)) == []
    for n in range(1, 300):  # every row once, in order
        assert [i for start, size in _chunks(n) for i in range(start, start + size)] == list(range(n))


def create(job: VideoJob, owner: str | None = None) -> Create:
    return Create(job, JobRow.of(job), owner, None, None)


def test_a_batch_is_together_only_when_no_write_depends_on_another() -> None:
    a, b = new_job("a", key="k"), new_job("b", key="k")
    assert independent([create(new_job("x")), create(new_job("y"))])
    assert not independent([create(a), create(b)])  # the same key: the first one wins
    assert independent([create(a, "app-1"), create(b, "app-2")])  # keys are per owner
    assert not independent([create(a), Save(JobRow.of(a), "r", False, time.time)])  # one job twice
    assert not independent([Release(a.id, "r"), Release(a.id, "r")])


class Recorder:
    """The statements a connection runs (its trace callback)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.statements: list[str] = []
        conn.set_trace_callback(self.statements.append)

    def writes(self) -> list[str]:
        return [s for s in self.statements if s.split()[0] in ("INSERT", "UPDATE")]


async def test_a_burst_of_creates_and_saves_is_a_few_statements(tmp_path: Path) -> None:
    async with SqliteJobStore(tmp_path / "jobs.db") as store:
        jobs = [new_job(f"job {i}") for i in range(48)]
        assert store._conn is not None
        seen = Recorder(store._conn)
        await asyncio.gather(*(store.create_or_get(j, lease=("replica-a", LEASE_S)) for j in jobs))
        assert len(seen.writes()) == 2  # 48 rows: 32 + 16
        for job in jobs:
            job.move(JobStatus.SUBMITTED)
        seen.statements.clear()
        await asyncio.gather(*(store.save(j, lease_owner="replica-a") for j in jobs))
        assert len(seen.writes()) == 2
        for job in jobs:
            assert (await store.get(job.id)).status is JobStatus.SUBMITTED  # type: ignore[union-attr]


def _fresh(path: Path) -> sqlite3.Connection:
    """A migrated store file and a connection to it."""
    async def made() -> None:
        async with SqliteJobStore(path):
            pass

    asyncio.run(made())
    return sqlite3.connect(path, isolation_level=None)


def _rows(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    jobs = conn.execute("SELECT id, status, owner, idempotency_key, updated_at, doc, at_risk, lease_owner,"
                        " lease_until FROM jobs ORDER BY id").fetchall()
    outbox = conn.execute("SELECT job_id, status FROM webhook_outbox ORDER BY job_id, status").fetchall()
    return jobs + outbox


def _outcome(value: Any) -> Any:
    """An outcome comparable across two stores: a job by its id, an error by its text."""
    if isinstance(value, tuple):
        return value[0].id, value[1]
    if isinstance(value, LeaseLost):
        return "LeaseLost", str(value)
    return value


def _random_batches(seed: int) -> list[list[Write]]:
    """Batches as replicas write them: each job created under a lease, saved by its holder,
    its final save giving the lease up; and, one write in ten, what a batch must also get
    right: a lease lost to another replica, a create again (an id or a key taken), an
    unleased save, a release, a final save repeated. Some batches hold a job twice."""
    rnd = random.Random(seed)
    keys = [None, None, None, "k1", "k2"]
    jobs = [new_job(f"job {i}", key=rnd.choice(keys), created_at=1000.0 + i) for i in range(40)]
    created: set[str] = set()
    finished: set[str] = set()

    def write_of(job: VideoJob) -> Write:
        odd = rnd.random() < 1 / 10
        if job.id not in created or (odd and rnd.random() < 0.3):
            created.add(job.id)
            return Create(job, JobRow.of(job), rnd.choice([None, "app"]), "replica-a", 2000.0)
        if odd and rnd.random() < 0.3:
            return Release(job.id, rnd.choice(["replica-a", "replica-b"]))
        job.status = rnd.choice([JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.SUCCEEDED])
        job.updated_at += 1
        if job.status is JobStatus.SUCCEEDED:
            job.request = job.request.model_copy(update={"webhook_url": "https://example.com/hook"})
        owner = rnd.choice(["replica-b", None]) if odd else "replica-a"
        final = owner is not None and (job.status is JobStatus.SUCCEEDED or odd)
        if final and owner == "replica-a":
            finished.add(job.id)
        return Save(JobRow.of(job), owner, final, lambda: 5.0)

    batches: list[list[Write]] = []
    for n in range(24):
        # three batches in four with a job at most once (together), the rest where one may come twice
        live = [job for job in jobs if job.id not in finished][:10] or jobs
        size = rnd.randint(2, 8)
        picked = rnd.sample(live, min(len(live), size)) if n % 4 else rnd.choices(live, k=size)
        batches.append([write_of(job) for job in picked])
    return batches


def _alone(conn: sqlite3.Connection, batch: list[Write]) -> list[Any]:
    with write(conn):
        return [one.alone(conn) for one in batch]


def _written(run: Any) -> Any:
    """A batch's outcomes, or the error that failed it whole (a key taken by an unleased
    save, say: then neither way leaves anything of it)."""
    try:
        return [_outcome(o) for o in run()]
    except sqlite3.Error as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize("seed", range(20))
def test_together_gives_what_one_by_one_gives(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same batches through the store's transaction and one write at a time: the same
    outcome for every write and the same rows (jobs, leases, outbox) after each batch."""
    from gateway.store import sqlite as sqlite_store

    went_together = []

    def counted(*args: Any) -> Any:
        outcomes = together(*args)  # NotTogether passes through, uncounted
        went_together.append(True)
        return outcomes

    monkeypatch.setattr(sqlite_store, "together", counted)
    conn, alone = _fresh(tmp_path / "together.db"), _fresh(tmp_path / "alone.db")
    for batch in _random_batches(seed):
        assert _written(functools.partial(_in_one_transaction, conn, batch, lambda: 5.0)) == _written(
            functools.partial(_alone, alone, batch))
        assert _rows(conn) == _rows(alone)
    assert went_together  # some batches did go together


def test_a_job_twice_in_a_batch_is_written_in_order(tmp_path: Path) -> None:
    """A save before its job's create fails (no such job under that lease) and the create
    then makes it: written together (create first), the save would have landed."""
    conn = _fresh(tmp_path / "jobs.db")
    job, other = new_job("twice"), new_job("other")
    batch: list[Write] = [Save(JobRow.of(job), "replica-a", False, lambda: 5.0),
                          Create(job, JobRow.of(job), None, "replica-a", 2000.0),
                          Create(other, JobRow.of(other), None, "replica-a", 2000.0)]
    outcomes = _in_one_transaction(conn, batch, lambda: 5.0)
    assert isinstance(outcomes[0], LeaseLost)
    assert [_outcome(o) for o in outcomes[1:]] == [(job.id, True), (other.id, True)]


def test_a_lost_lease_in_a_batch_fails_that_save_alone(tmp_path: Path) -> None:
    conn = _fresh(tmp_path / "jobs.db")
    jobs = [new_job(f"job {i}") for i in range(6)]
    created = _in_one_transaction(conn, [Create(j, JobRow.of(j), None, "replica-a", 2000.0) for j in jobs],
                                  lambda: 5.0)
    assert [made for _, made in created] == [True] * 6
    conn.execute("UPDATE jobs SET lease_owner = 'replica-b' WHERE id = ?", (jobs[2].id,))  # taken over
    for job in jobs:
        job.move(JobStatus.SUBMITTED)
    saved = _in_one_transaction(conn, [Save(JobRow.of(j), "replica-a", False, lambda: 5.0) for j in jobs],
                                lambda: 5.0)
    assert [type(s) for s in saved] == [type(None)] * 2 + [LeaseLost] + [type(None)] * 3
    statuses = dict(conn.execute("SELECT id, status FROM jobs").fetchall())
    assert [statuses[j.id] for j in jobs] == ["submitted"] * 2 + ["queued"] + ["submitted"] * 3


async def test_a_write_waits_for_the_lock_in_short_tries(tmp_path: Path) -> None:
    """Another process's transaction holding the write lock 0.2 s: the store tries every
    LOCK_TRY_MS, not on SQLite's sleeps that grow to 100 ms, and writes once it is free."""
    async with SqliteJobStore(tmp_path / "jobs.db") as store:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA busy_timeout").fetchone() == (LOCK_TRY_MS,)
        other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        seen = Recorder(store._conn)
        threading.Timer(0.2, lambda: other.execute("COMMIT")).start()
        job = new_job()
        await store.create(job)
        assert (await store.get(job.id)) is not None
        # tens of tries (0.2 s / 2 ms = 100), where SQLite's handler alone made ~8
        assert seen.statements.count("BEGIN IMMEDIATE") >= 0.2 / (LOCK_TRY_MS / 1000) / 4


async def test_a_write_still_fails_once_its_wait_is_over(tmp_path: Path) -> None:
    async with SqliteJobStore(tmp_path / "jobs.db", busy_timeout_s=0.1) as store:
        other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        began = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.create(new_job())
        assert time.monotonic() - began >= 0.1
        other.execute("ROLLBACK")
        job = new_job()  # and the next write, once the lock is free, goes through
        await store.create(job)
        assert (await store.get(job.id)) is not None
