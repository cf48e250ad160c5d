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

from gateway.store import migrations

#: how long SQLite's own busy handler waits for another process's write lock before a write
#: tries again from here (``write``). Left to wait the whole ``busy_timeout``, the handler
#: sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100, 100 ... ms between its tries: a worker
#: of ``serve --workers 2`` whose first tries met the other's transactions then slept through
#: many of the next gaps between them, 330-730 ms where a transaction holds the lock ~1 ms
#: (docs/benchmarks.md, 6.sqlbatch). Asked for 2 ms at a time, it sleeps 1 and 1 ms.
LOCK_TRY_MS = 2


class StoreConnection(sqlite3.Connection):
    """The job store's connection: ``lock_wait_s`` is how long a write waits for the write
    lock, tried every ``LOCK_TRY_MS``; None (a file not in WAL mode) leaves it to SQLite's
    ``busy_timeout`` whole, as a COMMIT there may have to wait for readers too."""

    lock_wait_s: float | None = None


@contextmanager
def write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction holding the write lock from its start (waits up to busy_timeout)."""
    wait_s = getattr(conn, "lock_wait_s", None)
    if wait_s is None:
        conn.execute("BEGIN IMMEDIATE")
    else:
        _begin_trying(conn, wait_s)
    try:
        try:
            yield
        except BaseException:
            if conn.in_transaction:  # SQLite rolls back by itself on some errors
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        if wait_s is not None:  # reads wait the whole busy_timeout (a WAL recovery by another process)
            conn.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")


def _begin_trying(conn: sqlite3.Connection, wait_s: float) -> None:
    """``BEGIN IMMEDIATE``, tried every LOCK_TRY_MS until ``wait_s`` has passed. In WAL mode
    the write lock taken here is the only one the transaction's statements and COMMIT need,
    so none of them waits under the short timeout (``write`` restores the long one after)."""
    conn.execute(f"PRAGMA busy_timeout = {LOCK_TRY_MS}")
    deadline = None
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            now = time.monotonic()
            if deadline is None:
                deadline = now + wait_s
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or now >= deadline:
                conn.execute(f"PRAGMA busy_timeout = {int(wait_s * 1000)}")
                raise


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


def until_unlocked(step: Callable[[], None], timeout_s: float) -> None:
    """Run ``step``, again while another process holds a lock it needs.

    When two processes open a new file at once, switching it to WAL needs an exclusive
    lock, and SQLite answers SQLITE_BUSY at once, without the busy handler, where waiting
    could deadlock; ``busy_timeout`` alone does not cover opening."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(0.01 + 0.04 * random.random())


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
