"""The SQLite store's WAL checkpoints run in a thread of their own, never in a commit
(gateway/store/sqlite_checkpoint.py)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.store import SqliteJobStore
from gateway.store.sqlite_checkpoint import Checkpointer
from tests.store.jobs import new_job


def wal_database(path: Path) -> sqlite3.Connection:
    """A WAL database written as the store writes it: commits never checkpoint."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (x TEXT)")
    return conn


def fill(conn: sqlite3.Connection, rows: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,) for _ in range(rows)])
    conn.execute("COMMIT")


def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.01)


@pytest.fixture
def checkpointers() -> Iterator[list[Checkpointer]]:
    made: list[Checkpointer] = []
    yield made
    for c in made:
        c.stop()


def started(made: list[Checkpointer], path: Path, **options: float) -> Checkpointer:
    checkpointer = Checkpointer(path, **options)  # type: ignore[arg-type]
    made.append(checkpointer)
    checkpointer.start()
    return checkpointer


def test_committed_pages_reach_the_database_file_without_any_commit_checkpointing(
        tmp_path: Path, checkpointers: list[Checkpointer]) -> None:
    path = tmp_path / "db"
    writer = wal_database(path)
    fill(writer, 2000)
    before = path.stat().st_size
    assert Path(f"{path}-wal").stat().st_size > 1_000_000  # the rows are in the WAL only
    checkpointer = started(checkpointers, path, every_s=0.02)
    until(lambda: checkpointer.runs >= 1)
    assert path.stat().st_size > before + 1_000_000 and checkpointer.truncations == 0
    # everything was copied: the next writer starts the WAL over, and it stops growing
    wal = Path(f"{path}-wal").stat().st_size
    for _ in range(20):
        fill(writer, 50)
        time.sleep(0.03)
    assert Path(f"{path}-wal").stat().st_size == wal
    assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 3000


def test_a_wal_that_cannot_start_over_is_truncated_once_nothing_holds_it(
        tmp_path: Path, checkpointers: list[Checkpointer], caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "db"
    writer = wal_database(path)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # a read pinned to the snapshot before the rows
    fill(writer, 400)
    with caplog.at_level(logging.INFO, logger="reelgate.store"):
        checkpointer = started(checkpointers, path, every_s=0.02, truncate_past_bytes=64 * 1024)
        until(lambda: checkpointer.truncations >= 1)
        assert Path(f"{path}-wal").stat().st_size > 64 * 1024  # held by the reader: blocked
        reader.execute("COMMIT")
        until(lambda: "truncating checkpoint done" in caplog.text)
    assert Path(f"{path}-wal").stat().st_size == 0
    assert "truncating checkpoint blocked by another connection" in caplog.text
    assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 400


def test_a_failing_checkpoint_is_logged_once_tried_again_and_its_recovery_logged(
        tmp_path: Path, checkpointers: list[Checkpointer], caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "db"
    path.write_bytes(b"not a database, but a file of the store's name" * 100)
    with caplog.at_level(logging.WARNING, logger="reelgate.store"):
        checkpointer = started(checkpointers, path, every_s=0.02)
        time.sleep(0.5)  # ~25 rounds, all failing
        assert checkpointer.runs == 0
        path.unlink()
        wal_database(path)
        until(lambda: checkpointer.runs >= 1)
        until(lambda: "works again" in caplog.text)
    assert caplog.text.count("file is not a database") == 1, caplog.text


def test_a_database_file_removed_is_not_made_anew(
        tmp_path: Path, checkpointers: list[Checkpointer], caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "db"
    with caplog.at_level(logging.WARNING, logger="reelgate.store"):
        started(checkpointers, path, every_s=0.02)
        until(lambda: "unable to open database file" in caplog.text)
    assert not path.exists()


def test_stop_ends_the_thread_at_once_and_twice_is_harmless(tmp_path: Path) -> None:
    wal_database(tmp_path / "db")
    checkpointer = Checkpointer(tmp_path / "db", every_s=3600)
    checkpointer.start()
    started_at = time.monotonic()
    checkpointer.stop()
    checkpointer.stop()
    assert time.monotonic() - started_at < 5
    assert "reelgate-sqlite-checkpoint" not in {t.name for t in threading.enumerate()}


async def test_the_store_checkpoints_off_its_commits_and_stops_doing_so_at_close(tmp_path: Path) -> None:
    path = tmp_path / "reelgate.db"
    async with SqliteJobStore(path) as store:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert "reelgate-sqlite-checkpoint" in {t.name for t in threading.enumerate()}
        before = path.stat().st_size
        for _ in range(200):
            await store.create_or_get(new_job())
        # the checkpointer (every 0.5 s) copies the jobs into the database file
        deadline = time.monotonic() + 10
        while path.stat().st_size <= before:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert "reelgate-sqlite-checkpoint" not in {t.name for t in threading.enumerate()}
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 200
