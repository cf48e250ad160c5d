"""SQLite specifics: where the file lives, how it is opened, two processes sharing it.

The behaviour every store shares is in test_contract.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sqlite3
import stat
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.store import SqliteJobStore, default_sqlite_path, migrations, open_store
from gateway.store.postgres import PostgresJobStore
from tests.store.jobs import new_job

JOBS_PER_PROCESS = 25


def test_the_default_path_is_under_reelgate_home(tmp_path: Path) -> None:
    assert default_sqlite_path({"REELGATE_HOME": str(tmp_path)}) == tmp_path / "reelgate.db"
    assert default_sqlite_path({}) == Path("~/.reelgate/reelgate.db").expanduser()
    assert default_sqlite_path({"REELGATE_HOME": "~/rg"}) == Path("~/rg/reelgate.db").expanduser()


def test_open_store_reads_a_url(tmp_path: Path) -> None:
    env = {"REELGATE_HOME": str(tmp_path)}
    default = open_store(None, env)
    assert isinstance(default, SqliteJobStore) and default.path == tmp_path / "reelgate.db"
    assert open_store(f"sqlite://{tmp_path}/jobs.db", env).path == tmp_path / "jobs.db"
    assert isinstance(open_store("postgresql://u@db.internal/reelgate", env), PostgresJobStore)
    with pytest.raises(ConfigError, match="'mysql'") as info:
        open_store("mysql://u:hunter2@db/x", env)
    assert "hunter2" not in str(info.value)


async def test_the_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "reelgate.db"
    async with SqliteJobStore(path) as store:
        await store.create(new_job())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_store_must_be_opened_first(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await SqliteJobStore(tmp_path / "x.db").get("vid_1")


def _create_jobs(path: str, label: str) -> list[bool]:
    """Run in a separate process: open the file (migrating it) and create jobs in it."""
    async def run() -> list[bool]:
        async with SqliteJobStore(path) as store:
            created = []
            for i in range(JOBS_PER_PROCESS):
                await store.create(new_job(f"{label} {i}"))
                _, fresh = await store.create_or_get(new_job(key=f"shared-{i}"))
                created.append(fresh)
            return created

    return asyncio.run(run())


async def test_two_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "reelgate.db"  # new: both processes race to create and migrate it
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        futures = [pool.submit(_create_jobs, str(path), label) for label in ("a", "b")]
        first, second = [f.result(timeout=60) for f in futures]
    # each shared key was created by exactly one of the two processes
    assert [a + b for a, b in zip(first, second, strict=True)] == [1] * JOBS_PER_PROCESS
    async with SqliteJobStore(path) as store:
        assert len(await store.list_jobs(limit=1000)) == 3 * JOBS_PER_PROCESS
    with sqlite3.connect(path) as conn:
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
        assert versions == [(m.version,) for m in migrations.load("sqlite")]


@pytest.fixture
def transactions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the SQLite store's write transactions (each ``BEGIN IMMEDIATE`` ... ``COMMIT``),
    whichever way they are made: a group commit's batch or a write of its own."""
    from gateway.store import sqlite as sqlite_store

    count, write = [0], sqlite_store.write

    @contextlib.contextmanager
    def counted(conn: sqlite3.Connection) -> Iterator[None]:
        count[0] += 1
        with write(conn):
            yield

    monkeypatch.setattr(sqlite_store, "write", counted)
    return count


async def test_new_jobs_and_saves_arriving_together_share_commits(tmp_path: Path, transactions: list[int]) -> None:
    """Creates go through the group commit with saves: a burst costs a few transactions,
    not one per write, and a key raced within one batch still makes exactly one job."""
    async with SqliteJobStore(tmp_path / "jobs.db") as store:
        jobs = [new_job(f"job {i}") for i in range(40)]
        raced = [new_job("same", key="k-1") for _ in range(10)]
        outcomes = await asyncio.gather(*(store.create_or_get(j) for j in jobs + raced),
                                        *(store.save(j) for j in jobs))
        assert 1 <= transactions[0] <= 3
        created = [made for _, made in outcomes[:50]]
        assert created[:40] == [True] * 40 and created[40:].count(True) == 1
        winner = next(job for job, made in outcomes[40:50] if made)
        assert {job.id for job, _ in outcomes[40:50]} == {winner.id}
    async with SqliteJobStore(tmp_path / "jobs.db") as reopened:  # each one durable
        for job in jobs:
            assert (await reopened.get(job.id)) is not None
        assert (await reopened.get_by_idempotency_key("k-1")).id == winner.id


async def test_releases_share_commits_with_saves(tmp_path: Path, transactions: list[int]) -> None:
    """A service releases every job it finishes: the releases join the saves' group commit
    (one transaction for a burst, not one each), each still answers whether its owner held
    the lease, and each is durable."""
    async with SqliteJobStore(tmp_path / "jobs.db") as store:
        jobs = [new_job(f"job {i}") for i in range(40)]
        for job in jobs:
            await store.create_or_get(job, lease=("replica-a", 30.0))
        transactions[0] = 0
        released = await asyncio.gather(*(store.release(j.id, "replica-a") for j in jobs[:30]),
                                        *(store.release(j.id, "replica-b") for j in jobs[30:]),
                                        *(store.save(j) for j in jobs))
        assert 1 <= transactions[0] <= 2
        assert released[:30] == [True] * 30 and released[30:40] == [False] * 10
    async with SqliteJobStore(tmp_path / "jobs.db") as reopened:
        # released: claimable by anyone now; still held by replica-a: not claimable by b
        claimed = {job.id for job in await reopened.claim("replica-b", 30.0, 100)}
        assert claimed == {j.id for j in jobs[:30]}
