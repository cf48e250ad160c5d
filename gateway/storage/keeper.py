"""Making small files durable in rounds: one thread, one ``syncfs`` for every file of a round.

:func:`gateway.storage.atomic_file.write_file` hands a whole small body here (a kept 1 KiB
video in ``bench.service``). The event-loop thread opens the unnamed file (``O_TMPFILE``)
and writes it; one keeper thread per process runs **rounds**: it takes every file waiting,
calls ``syncfs`` and then ``fsync`` on a directory of that filesystem, and hands the round
back to the loop in one ``call_soon_threadsafe``. A file goes through two rounds: after the
first its bytes are on disk and the loop names it (``linkat``, or the rename of
:meth:`_TempFile.place`); after the second its name is on disk and ``write_file`` returns.
So the order is the same as one file's fsync / link / directory fsync: **no name leads to
bytes not yet durable, and the caller resumes only once bytes and name are durable**.

Why: per file, the thread-pool path hops to a worker thread and makes six blocking calls
there (open, write, fsync, link, close, directory fsync), and each one gives up the GIL and
must take it back from a busy event loop: under ``bench.service`` the 8 file threads spent
~8 % of the service's CPU in futex alone. Here the loop makes the non-blocking calls
(no hand-off: nobody else waits for the GIL), and the keeper makes two blocking calls per
round for all its files; files that finish while one round runs share the next. Rounds
start at least ``ROUND_GAP_S`` apart (a put waits ~2-3 of them: tens of ms).
Measured (docs/benchmarks.md 6.keepio): ~1/3 of the CPU per small put, service CPU per
pair x1.2 on SQLite and PostgreSQL. Tried and left: the open and write in a worker thread
(one hop per file, the expensive inode allocation off the loop): no cheaper, no faster.

**Why ``syncfs`` is as durable as ``fsync`` of each file and of its directory.** ``syncfs``
(``sync_filesystem``) writes back and waits for every dirty inode of the filesystem (our
files' pages and inodes among them), asks the filesystem to commit (``->sync_fs(wait)``: a
journal commit on ext4/XFS/btrfs), then writes and waits for the block device's buffers
(ext2-style metadata: inode tables, directory blocks of ext4 without a journal). That last
write comes *after* ext4's cache flush in ``sync_fs``, so the ``fsync`` of a directory that
follows is the flush that puts it on the medium (ext4 without a journal flushes on every
fsync; on a journal it is a clean inode's no-op). Errors: since Linux 5.8 ``syncfs`` returns
writeback errors recorded on the filesystem since the fd's last check (``errseq``), not only
its own. The keeper checks one long-lived directory fd per filesystem every round, so every
writeback error is reported by some round; a failed round fails all its files, and a file
written before a failure reported by a round it was not part of fails too (the error may
have been its pages, written early by that round or by the flusher). Older kernels (no
error reporting), non-Linux systems and a libc without ``syncfs`` use the per-file path.
Checked on this machine's kernel (6.18): with ext4 on a loop device whose backing store
fills up, another writer's lost pages fail every file of the next round with EIO.
The price: ``syncfs`` also writes other programs' dirty pages on that filesystem (SQLite's
WAL and PostgreSQL's files when they share it), and its round waits for them: back-to-back
rounds cost a PostgreSQL on the same disk a third of its pairs/s, hence the gap; a writer
dirtying 20-80 MiB/s beside us made a round ~2x longer. A store that shares its filesystem
with a heavy writer is better on a filesystem of its own.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.storage.atomic_file import Bytes, _TempFile

#: a body up to this size is written by the event-loop thread (into the page cache: ~20 us
#: for 64 KiB); larger ones go to a worker thread as before
LOOP_WRITE_BYTES = 256 * 1024
_SYNCFS_REPORTS_ERRORS = (5, 8)
#: rounds start at least this far apart: every syncfs also forces other writers' dirty pages
#: out (a database on the same filesystem waits for its commits' fsyncs behind them)
ROUND_GAP_S = 0.02


def _load_syncfs() -> Callable[[int], None] | None:
    """``syncfs(2)`` through libc, where it reports writeback errors; else ``None``."""
    release = re.match(r"(\d+)\.(\d+)", os.uname().release) if sys.platform.startswith("linux") else None
    if release is None or (int(release[1]), int(release[2])) < _SYNCFS_REPORTS_ERRORS:
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return syncfs


#: ``None`` where rounds cannot be durable (see the module's note): files take the thread path
syncfs = _load_syncfs()


class _Small:
    """One file in rounds: written and unnamed (``named`` false), then named."""

    __slots__ = ("file", "future", "loop", "device", "failures_before", "named")

    def __init__(self, file: _TempFile, loop: asyncio.AbstractEventLoop, failures_before: int) -> None:
        self.file = file
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.failures_before = failures_before
        self.device = 0
        self.named = False


class Keeper:
    """The rounds of one process (see the module's note)."""

    def __init__(self) -> None:
        #: files waiting for a round, in either stage (a C queue: a put from the loop takes no
        #: Python-level lock or condition, two per file before)
        self._queue: queue.SimpleQueue[_Small] = queue.SimpleQueue()
        self._starting = threading.Lock()
        self._thread: threading.Thread | None = None
        #: rounds failed so far, and the last one's error
        self.failures = 0
        self._error: BaseException | None = None
        #: filesystem (``st_dev``) -> a directory fd that every round's ``syncfs`` checks: one
        #: fd per filesystem for the process's life, so no error falls between two fds' checks
        self._witnesses: dict[int, int] = {}

    def keep(self, file: _TempFile, data: Bytes) -> asyncio.Future[None]:
        """``file`` written with ``data``; the future is done once it is durable and named
        (two rounds). Cancelled (its awaiting task cancelled), write_file's clean-up closes
        the file and the round skips it."""
        item = _Small(file, asyncio.get_running_loop(), self.failures)  # counted before the bytes exist
        file.write(data)  # on this thread: the directory check, the unnamed open, the write
        assert file.fd is not None
        item.device = os.fstat(file.fd).st_dev
        self._submit(item)
        return item.future

    def _submit(self, item: _Small) -> None:
        self._queue.put(item)
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._starting:  # one thread, whichever event loop (thread) puts first
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="reelgate-keeper", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        started = -ROUND_GAP_S
        while True:
            batch = [self._queue.get()]  # waits for a file
            time.sleep(max(0.0, started + ROUND_GAP_S - time.monotonic()))
            started = time.monotonic()
            while True:  # and takes every file waiting by now
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            error: BaseException | None = None
            try:
                for device in dict.fromkeys(item.device for item in batch):
                    self._sync(device, next(item for item in batch if item.device == device))
            except BaseException as exc:  # every file of the round fails with it (and later ones: see keep)
                error = self._error = exc
                self.failures += 1
            self._hand_back(batch, error, self.failures)

    def _sync(self, device: int, item: _Small) -> None:
        witness = self._witnesses.get(device)
        if witness is None:
            witness = os.open(item.file.directory.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            if os.fstat(witness).st_dev != device:  # the directory was swapped for a mount meanwhile
                os.close(witness)
                raise OSError(f"{item.file.directory.path} moved to another filesystem while being written")
            self._witnesses[device] = witness
        assert syncfs is not None
        syncfs(witness)
        os.fsync(witness)  # the cache flush after syncfs' last writes (see the module's note)

    def _hand_back(self, batch: list[_Small], error: BaseException | None, failures: int) -> None:
        loops: dict[asyncio.AbstractEventLoop, list[_Small]] = {}
        for item in batch:
            loops.setdefault(item.loop, []).append(item)
        for loop, items in loops.items():
            try:
                loop.call_soon_threadsafe(self._after_round, items, error, failures)
            except RuntimeError:  # its loop is closed: nobody waits for these; an unnamed file goes with its fd
                for item in items:
                    item.file.discard()

    def _after_round(self, items: list[_Small], error: BaseException | None, failures: int) -> None:
        """On the loop: name the files whose bytes are durable, resolve those whose names are."""
        for item in items:
            if item.future.done():  # cancelled: write_file's clean-up has discarded it
                continue
            failed = error or (self._error if item.failures_before != failures else None)
            if failed is not None:
                item.file.discard()
                item.future.set_exception(failed)
            elif item.named:
                item.future.set_result(None)
            else:
                try:
                    item.file.place()
                except BaseException as exc:
                    item.file.discard()
                    item.future.set_exception(exc)
                    continue
                item.named = True
                self._submit(item)


_keeper: Keeper | None = None


def keeper() -> Keeper:
    global _keeper
    if _keeper is None:
        _keeper = Keeper()
    return _keeper


def _forget_keeper() -> None:
    """A forked child has no keeper thread: it starts its own (its parent's rounds are not its own)."""
    global _keeper
    if _keeper is not None:
        for fd in _keeper._witnesses.values():
            os.close(fd)
    _keeper = None


os.register_at_fork(after_in_child=_forget_keeper)
