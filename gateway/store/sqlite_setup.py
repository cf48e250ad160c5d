"""Opening the SQLite store's file: a private file, WAL, migrations applied in one
transaction, and the write-transaction helper every write uses (split out of
``gateway/store/sqlite.py``)."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from gateway.store import migrations

_T = TypeVar("_T")


@contextmanager
def write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction holding the write lock from its start (waits up to busy_timeout)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite rolls back by itself on some errors
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create_private(path: Path) -> None:
    """Create the file readable by its owner only: jobs hold prompts and images."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))


def set_up(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL is durable across application crashes in WAL mode; only an OS
    # crash or power loss may lose the last transactions.
    conn.execute("PRAGMA synchronous = NORMAL")
    _migrate(conn)


def until_unlocked(step: Callable[[], _T], timeout_s: float, *, pause_s: tuple[float, float] = (0.01, 0.05)) -> _T:
    """Run ``step``, again while another process holds a lock it needs, for up to
    ``timeout_s``, pausing a random ``pause_s`` (from, to) between tries.

    When two processes open a new file at once, switching it to WAL needs an exclusive
    lock, and SQLite answers SQLITE_BUSY at once, without the busy handler, where waiting
    could deadlock; ``busy_timeout`` alone does not cover opening. The job store runs every
    call so too (``SqliteJobStore``), with a short ``busy_timeout`` and no pause."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        if pause_s[1]:
            time.sleep(pause_s[0] + (pause_s[1] - pause_s[0]) * random.random())


def _migrate(conn: sqlite3.Connection) -> None:
    with write(conn):
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version"
                     " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)")
        applied = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        for migration in migrations.pending(migrations.load("sqlite"), applied):
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                         (migration.version, migration.name, time.time()))


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements. ``executescript`` would commit the open
    transaction first, so a half-applied migration could not be rolled back."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    leftover = [line for line in pending.splitlines() if line.strip() and not line.strip().startswith("--")]
    if leftover:
        raise ValueError(f"incomplete SQL statement at the end of a migration: {pending!r}")
