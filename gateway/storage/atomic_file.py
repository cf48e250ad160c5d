"""Writing a file all-or-nothing and durably, in as few worker-thread hops as it takes.

The bytes go to a hidden temporary file in the target's own directory, which is fsynced,
renamed into place (``os.replace`` is atomic on one filesystem) and the directory fsynced
after the rename. The guarantee: **when** :func:`write_file` **returns, the file's bytes
and its name are on disk**, so a record naming it that is saved afterwards (a job's kept
video) never outlives it in a crash; a crash or a cap hit before that leaves the previous
file (or none) under the name, never part of one.

Cost per file (``reelgate serve`` keeps one video per job, 1 KiB in ``bench.service``):
opening, writing, fsyncing and renaming run in **one** worker-thread call for a body that
arrives in one piece or within ``WRITE_BUFFER_BYTES``; larger bodies add one call per
``WRITE_BUFFER_BYTES`` batch (a call per ~16 KiB network chunk cost more than the copy).
The directory fsync is grouped: one fsync covers every rename into that directory that
finished before it began, so files kept at the same moment share it. The SHA-256 is
computed in the worker thread too (hashlib lets go of the GIL for large buffers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.permissions import open_private, private_dirs
from gateway.storage.base import ChunkDigest, Chunks, iter_chunks

#: network chunks are ~16 KiB and a thread hop per chunk dominated (a 64 MiB mirror
#: over loopback: 40 MiB/s writing each chunk, 150 MiB/s batched), so writes are batched
WRITE_BUFFER_BYTES = 1024 * 1024
TEMP_PREFIX = ".part-"
#: directories whose fsyncs are grouped; past this many the table starts again (a fresh
#: entry only loses the grouping with fsyncs already under way, never an fsync)
_MAX_SYNCED_DIRS = 256

#: file writes have threads of their own: a write holds its thread through two fsyncs
#: (milliseconds of disk, no CPU); on the default executor (6 threads on 2 cores) a burst
#: of finished videos would keep the job store's SQLite calls waiting for a thread
FILE_THREADS = 8
_file_threads: ThreadPoolExecutor | None = None


def _threads() -> ThreadPoolExecutor:
    global _file_threads
    if _file_threads is None:
        _file_threads = ThreadPoolExecutor(max_workers=FILE_THREADS, thread_name_prefix="reelgate-file")
    return _file_threads


def _forget_threads() -> None:
    """A forked child has none of its parent's threads: it starts its own pool."""
    global _file_threads
    _file_threads = None


os.register_at_fork(after_in_child=_forget_threads)

#: runs in the worker thread before the temporary file is created: make the directory
#: (and check it, for a storage that confines its files)
PrepareDir = Callable[[Path], object]
Bytes = bytes | bytearray | memoryview


async def write_file(target: Path, chunks: Chunks, *, max_bytes: int | None = None, private: bool = False,
                     prepare_dir: PrepareDir | None = None) -> ChunkDigest:
    """Write ``chunks`` to ``target`` all-or-nothing and durably (see the module's note),
    counted and hashed; ``ObjectTooLarge`` past ``max_bytes`` leaves nothing behind.
    ``private``: missing directories 0700 and the file 0600 whatever the umask (kept videos
    under ``REELGATE_HOME``); otherwise as the umask says (a caller's own ``--output``).
    ``prepare_dir`` replaces the default making of the target's directory."""
    digest = ChunkDigest(max_bytes)
    file = _TempFile(target, digest, private, prepare_dir or (private_dirs if private else _make_dirs))
    try:
        if isinstance(chunks, (bytes, bytearray, memoryview)):  # the whole body: one hop
            digest.count(chunks)
            await _in_thread(file, file.finish, chunks)
            return digest
        pending = bytearray()
        async with contextlib.aclosing(iter_chunks(chunks)) as stream:
            async for chunk in stream:
                pending += digest.count(chunk)
                if len(pending) >= WRITE_BUFFER_BYTES:
                    await _in_thread(file, file.write, pending)
                    pending = bytearray()
        await _in_thread(file, file.finish, pending)
    except BaseException:
        file.discard()
        raise
    return digest


async def _in_thread(file: _TempFile, step: Callable[[Bytes], None], data: Bytes) -> None:
    """``step(data)`` in a worker thread. Cancelled meanwhile, the thread (which a cancel
    cannot stop) is waited for and told to give up before the rename, so the caller's
    clean-up never races it and nothing it opened is left to the garbage collector."""
    work = asyncio.get_running_loop().run_in_executor(_threads(), step, data)
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        file.abandoned = True
        with contextlib.suppress(Exception):
            await work
        raise


class _TempFile:
    """The temporary file beside ``target``: created on the first write, renamed onto
    ``target`` by :meth:`finish`. ``write``/``finish`` run in a worker thread, one at a time."""

    def __init__(self, target: Path, digest: ChunkDigest, private: bool, prepare_dir: PrepareDir) -> None:
        self.target = target
        # 64 random bits name it (random, not uuid4: os.urandom cost ~25 us a call here); the
        # create is O_EXCL, so a clash (with another replica in a shared directory) fails, never mixes
        self.temp = target.with_name(f"{TEMP_PREFIX}{random.getrandbits(64):016x}-{target.name}")
        self.digest = digest
        self.private = private
        self.prepare_dir = prepare_dir
        self.fd: int | None = None
        self.placed = False
        #: set by the event loop when the write was cancelled: the rename must not happen
        self.abandoned = False

    def write(self, data: Bytes) -> None:
        if self.fd is None:
            self.prepare_dir(self.target.parent)
            self.fd = (open_private(self.temp) if self.private
                       else os.open(self.temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        self.digest.hash(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def finish(self, data: Bytes) -> None:
        self.write(data)
        assert self.fd is not None
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        if self.abandoned:
            raise _Abandoned  # discard() removes the temporary file
        os.replace(self.temp, self.target)
        self.placed = True
        _directory_sync(self.target.parent).after_rename()

    def discard(self) -> None:
        """After a failure: nothing of this write is left (unless it was already renamed
        into place whole, in which case the new file stays)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if not self.placed:
            self.temp.unlink(missing_ok=True)


class _Abandoned(Exception):
    """The write was cancelled while its last step ran: no rename."""


def _make_dirs(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)


class _DirectorySync:
    """Group commit for one directory's renames: a rename counts itself (after it is done),
    then waits for an fsync of the directory that began after it. Whoever holds the lock
    fsyncs for every rename counted so far; the ones it covered return without another."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._count = threading.Lock()
        self._sync = threading.Lock()
        self._renamed = 0
        self._synced = 0

    def after_rename(self) -> None:
        with self._count:
            self._renamed += 1
            mine = self._renamed
        with self._sync:
            if self._synced >= mine:
                return
            covered = self._renamed  # every rename counted by now is done: this fsync covers it
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._synced = covered


_syncs: dict[Path, _DirectorySync] = {}
_syncs_lock = threading.Lock()


def _directory_sync(directory: Path) -> _DirectorySync:
    with _syncs_lock:
        sync = _syncs.get(directory)
        if sync is None:
            if len(_syncs) >= _MAX_SYNCED_DIRS:
                _syncs.clear()
            sync = _syncs[directory] = _DirectorySync(directory)
        return sync
