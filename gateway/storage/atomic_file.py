"""Writing a file all-or-nothing and durably, in as few worker-thread hops as it takes.

The bytes go to a file with no name (``O_TMPFILE``) in the target's own directory, which
is fsynced, then linked under the target's name (``linkat``) and the directory fsynced
after. Where the filesystem or the platform has no ``O_TMPFILE`` (or the name is taken:
a link never replaces a file), the file is a hidden temporary one beside the target,
renamed into place (``os.replace`` is atomic on one filesystem). The guarantee: **when**
:func:`write_file` **returns, the file's bytes and its name are on disk**, so a record
naming it that is saved afterwards (a job's kept video) never outlives it in a crash; a
crash or a cap hit before that leaves the previous file (or none) under the name, never
part of one (and, unnamed, no temporary file either).

A whole body up to ``keeper.LOOP_WRITE_BYTES`` (``reelgate serve`` keeps one video per job,
1 KiB in ``bench.service``) is written on the event loop and made durable in the keeper's
rounds, one ``syncfs`` for every file finishing at the time, in the same order (bytes
durable, then named, then the name durable, then return): :mod:`gateway.storage.keeper`,
~1/3 of the CPU per file of the path below (docs/benchmarks.md 6.keepio). The rest, and
every file where ``syncfs`` does not report writeback errors (Linux before 5.8, other systems):
opening, writing, fsyncing and naming run in **one** worker-thread call for a body that
arrives in one piece or within ``WRITE_BUFFER_BYTES``; larger bodies add one call per
``WRITE_BUFFER_BYTES`` batch (a call per ~16 KiB network chunk cost more than the copy).
The unnamed file is the cheaper path (``bench/keep.py``, docs/benchmarks.md 6.keepfs): no
temporary name to create and rename, its fsync has no new directory entry to write (ext4
without a journal writes the parent directory on the fsync of a newly named file), and the
inode is allocated outside the directory's lock, so concurrent writers do not spin on it.
The directory fsync is grouped: one fsync covers every name placed in that directory
before it began, so files kept at the same moment share it. The SHA-256 is computed in
the worker thread too (hashlib lets go of the GIL for large buffers).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.permissions import FILE_MODE, open_private, private_dirs
from gateway.storage import keeper as keeper_module
from gateway.storage.base import ChunkDigest, Chunks, iter_chunks
from gateway.storage.keeper import keeper

#: network chunks are ~16 KiB and a thread hop per chunk dominated (a 64 MiB mirror
#: over loopback: 40 MiB/s writing each chunk, 150 MiB/s batched), so writes are batched
WRITE_BUFFER_BYTES = 1024 * 1024
TEMP_PREFIX = ".part-"
#: directories remembered (fsyncs grouped, ``O_TMPFILE`` refused); past this many the table
#: starts again (a fresh entry only loses the grouping with fsyncs already under way, never
#: an fsync, and tries ``O_TMPFILE`` once more)
_MAX_DIRECTORIES = 256

#: file writes have threads of their own: a write holds its thread through two fsyncs
#: (milliseconds of disk, no CPU); on the default executor (6 threads on 2 cores) a burst
#: of finished videos would keep the job store's SQLite calls waiting for a thread. Fewer
#: threads cost *more* CPU per file (measured: 2 threads ~1.3x the CPU of 8): the writes
#: that overlap share directory fsyncs and the inode-table block their inodes sit in
FILE_THREADS = 8
#: ``O_TMPFILE`` (Linux >= 3.11) and a way to link its file: ``/proc/self/fd`` (linkat's
#: ``AT_EMPTY_PATH`` needs CAP_DAC_READ_SEARCH on the kernels we support)
_O_TMPFILE: int | None = getattr(os, "O_TMPFILE", None) if os.path.isdir("/proc/self/fd") else None
#: what opening an ``O_TMPFILE`` says where the filesystem (or an old kernel) cannot
_NO_TMPFILE = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})
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
    return await write_into(target.parent, target.name, chunks, max_bytes=max_bytes, private=private,
                            prepare_dir=prepare_dir)


async def write_into(directory: Path, name: str, chunks: Chunks, *, max_bytes: int | None = None,
                     private: bool = False, prepare_dir: PrepareDir | None = None) -> ChunkDigest:
    """:func:`write_file` of the file ``name`` in ``directory``, for a caller that keeps one
    ``Path`` per directory (``LocalStorage``): a ``Path`` caches its string and hash, so a
    file costs no ``Path`` of its own (building, hashing and stringifying one per file, and
    its ``parent`` three times, were a fifth of a small put's Python)."""
    digest = ChunkDigest(max_bytes)
    file = _TempFile(directory, name, digest, private, prepare_dir or (private_dirs if private else _make_dirs))
    try:
        if isinstance(chunks, (bytes, bytearray, memoryview)):  # the whole body: one hop
            digest.count(chunks)
            if _in_rounds(file, chunks):
                await keeper().keep(file, chunks)  # the round's future itself: no coroutine of its own
            else:
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


def _in_rounds(file: _TempFile, data: Bytes) -> bool:
    """Whether the body is written on the loop and made durable in the keeper's rounds
    (:mod:`gateway.storage.keeper`): small, ``syncfs`` usable, the directory taking unnamed files."""
    return (len(data) <= keeper_module.LOOP_WRITE_BYTES and keeper_module.syncfs is not None
            and _O_TMPFILE is not None and file.directory.tmpfile)


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
    """The file that becomes ``target`` (``name`` in ``parent``): created on the first write
    (unnamed when it can be), named ``target`` by :meth:`finish`. ``write``/``finish`` run in a
    worker thread, one at a time (or on the loop, for the keeper's rounds)."""

    def __init__(self, parent: Path, name: str, digest: ChunkDigest, private: bool, prepare_dir: PrepareDir) -> None:
        self.parent = parent
        self.name = name
        self.directory = _directory(parent)
        self.target = f"{self.directory.prefix}{name}"
        self.digest = digest
        self.private = private
        self.prepare_dir = prepare_dir
        self.fd: int | None = None
        #: the hidden name beside ``target`` while it has one (``None``: unnamed, or placed)
        self.temp: Path | None = None
        #: set by the event loop when the write was cancelled: the file must not be named
        self.abandoned = False

    def write(self, data: Bytes) -> None:
        if self.fd is None:
            self.prepare_dir(self.parent)
            self.fd = self._open()
        self.digest.hash(data)
        written = os.write(self.fd, data)  # a small body: all of it, in the one call
        if written < len(data):
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(self.fd, view):]

    def _open(self) -> int:
        if _O_TMPFILE is not None and self.directory.tmpfile:
            try:
                return os.open(self.directory.path, _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC,
                               FILE_MODE if self.private else 0o666)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
                self.directory.tmpfile = False  # this filesystem cannot: named files from now on
        return self._open_named()

    def _open_named(self) -> int:
        # 64 random bits name it (random, not uuid4: os.urandom cost ~25 us a call here); the
        # create is O_EXCL, so a clash (with another replica in a shared directory) fails, never mixes
        temp = self._temp_name()
        fd = (open_private(temp) if self.private
              else os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        self.temp = temp  # only once it is ours: discard() must never remove another's file
        return fd

    def _temp_name(self) -> Path:
        return self.parent / f"{TEMP_PREFIX}{random.getrandbits(64):016x}-{self.name}"

    def finish(self, data: Bytes) -> None:
        self.write(data)
        assert self.fd is not None
        os.fsync(self.fd)  # bytes and inode on disk before any name leads to them
        if self.abandoned:
            raise _Abandoned  # discard() closes the file and removes any temporary name
        self.place()
        self.directory.sync_after_naming()

    def place(self) -> None:
        """Names the written file ``target`` (its bytes already durable) and closes it."""
        assert self.fd is not None
        if self.temp is None:
            self._link()
        os.close(self.fd)
        self.fd = None
        if self.temp is not None:
            os.replace(self.temp, self.target)
            self.temp = None

    def _link(self) -> None:
        """Names the unnamed file ``target``; where ``target`` exists (a keep tried again),
        gives it a temporary name instead, for :meth:`finish` to rename over ``target``."""
        assert self.fd is not None
        # CPython calls link(2), which links the /proc symlink itself, unless a directory fd
        # is passed: then linkat(2) with AT_SYMLINK_FOLLOW. The path is absolute, so the
        # kernel ignores that fd.
        source = f"/proc/self/fd/{self.fd}"
        try:
            os.link(source, self.target, src_dir_fd=self.fd, follow_symlinks=True)
        except FileExistsError:
            temp = self._temp_name()
            os.link(source, temp, src_dir_fd=self.fd, follow_symlinks=True)
            self.temp = temp

    def discard(self) -> None:
        """After a failure: nothing of this write is left (unless it was already named
        ``target`` whole, in which case the new file stays). An unnamed file goes with its fd."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.temp is not None:
            self.temp.unlink(missing_ok=True)
            self.temp = None


class _Abandoned(Exception):
    """The write was cancelled while its last step ran: no rename."""


def _make_dirs(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)


class _Directory:
    """What this process knows of one directory it writes into: whether it takes unnamed
    files, and the group commit for the names placed in it. A name placed is counted (after
    it is done), then waits for an fsync of the directory that began after it. Whoever holds
    the lock fsyncs for every name counted so far; the ones it covered return without another."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = os.fspath(directory)
        #: what a file's name follows to make its path (``os.path.join`` without its checks)
        self.prefix = self.path if self.path.endswith("/") else f"{self.path}/"
        #: cleared when its filesystem refuses ``O_TMPFILE`` (never set again: one failed try)
        self.tmpfile = True
        self._count = threading.Lock()
        self._sync = threading.Lock()
        self._placed = 0
        self._synced = 0

    def sync_after_naming(self) -> None:
        with self._count:
            self._placed += 1
            mine = self._placed
        with self._sync:
            if self._synced >= mine:
                return
            covered = self._placed  # every name counted by now is placed: this fsync covers it
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._synced = covered


_directories: dict[Path, _Directory] = {}
_directories_lock = threading.Lock()


def _directory(directory: Path) -> _Directory:
    known = _directories.get(directory)  # a dict read is atomic: no lock for a directory known
    if known is not None:
        return known
    with _directories_lock:
        known = _directories.get(directory)
        if known is None:
            if len(_directories) >= _MAX_DIRECTORIES:
                _directories.clear()
            known = _directories[directory] = _Directory(directory)
        return known
