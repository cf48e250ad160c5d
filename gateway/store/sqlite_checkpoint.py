"""The SQLite store's checkpoints, in a thread and on a connection of their own.

In WAL mode a commit appends pages to the ``-wal`` file; a checkpoint copies them into the
database file and syncs both. Left to SQLite (``wal_autocheckpoint``), the commit that takes
the WAL past 1,000 pages runs the checkpoint itself, in the store's one thread, before that
thread answers anyone: its two ``fdatasync`` calls, which wait behind whatever else the disk
is writing (the keeper's ``syncfs`` of finished videos, another program), held up every write
of the process. Traced under ``bench.service`` (strace, one worker, 15 s): the store's thread
spent 35 and 185 ms in two of them (docs/benchmarks.md, 6.checkpoint). A commit's own WAL
write can still wait behind the disk; this takes the checkpoints' syncs out of its way only.

So the store's connection checkpoints never (``wal_autocheckpoint = 0``), and this thread
does: a ``PASSIVE`` checkpoint every :data:`EVERY_S`, which takes no lock writers wait for.
Durability is unchanged: a commit is as durable as before the moment it returns (WAL,
``synchronous = NORMAL``); a checkpoint only moves committed pages.

A passive checkpoint that writers overtake leaves the last pages uncopied, and SQLite starts
the ``-wal`` file over only once every page is copied. Should the WAL still hold more than
:data:`TRUNCATE_PAST_BYTES` of pages after a checkpoint (writers that never pause), a
``TRUNCATE`` checkpoint copies the rest with writers held back for as long as that takes, and
the file starts over, empty.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("reelgate.store")

#: how often the WAL's new pages go into the database file (a few MB of WAL at most between
#: two, at the service's write rate)
EVERY_S = 0.5
#: pages in the WAL (since it last started over) past which a checkpoint makes writers wait
TRUNCATE_PAST_BYTES = 64 * 1024 * 1024
#: how long a checkpoint waits for a lock another connection holds, in SQLite's busy handler
BUSY_MS = 100


class Checkpointer:
    """Checkpoints of the WAL database at ``path`` every ``every_s``, in a daemon thread,
    from :meth:`start` until :meth:`stop`."""

    def __init__(self, path: Path, *, every_s: float = EVERY_S,
                 truncate_past_bytes: int = TRUNCATE_PAST_BYTES) -> None:
        self.path, self.every_s, self.truncate_past_bytes = path, every_s, truncate_past_bytes
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reelgate-sqlite-checkpoint", daemon=True)
        #: passive checkpoints run, and truncating ones (tests)
        self.runs = self.truncations = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the checkpoint under way, if any (its connection closed by the thread)."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        failing: str | None = None  # the last failure, logged once rather than every round
        try:
            while not self._stopping.wait(self.every_s):
                try:
                    if conn is None:
                        # ``mode=rw``: a database file removed meanwhile is not made anew, empty
                        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True,
                                               isolation_level=None, check_same_thread=False)
                        conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
                    self.checkpoint(conn)
                except sqlite3.Error as exc:  # a full disk, a file removed: the next round tries again
                    if str(exc) != failing:
                        log.warning("SQLite checkpoint of %s failed (tried again every %g s): %s",
                                    self.path, self.every_s, exc)
                    failing = str(exc)
                    if conn is not None:  # opened afresh next round: the file may have been replaced
                        conn.close()
                        conn = None
                    continue
                if failing is not None:
                    log.warning("SQLite checkpoint of %s works again", self.path)
                    failing = None
        finally:
            if conn is not None:
                conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        # (blocked, pages in the WAL, pages copied): -1, -1 when the database is not in WAL mode
        _, pages, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.runs += 1
        if pages * _page_size(conn) > self.truncate_past_bytes:
            blocked = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            self.truncations += 1
            log.info("SQLite WAL of %s held %d pages: truncating checkpoint %s", self.path, pages,
                     "blocked by another connection" if blocked else "done")


def _page_size(conn: sqlite3.Connection) -> int:
    size: int = conn.execute("PRAGMA page_size").fetchone()[0]
    return size
