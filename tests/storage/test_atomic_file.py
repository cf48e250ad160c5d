"""Writing a kept video: durable before it is reported (unnamed until synced, or through a
temporary name where O_TMPFILE is missing), nothing left by a crash, private, in one thread
call when small, the directory check remembered but not fooled, directory fsyncs grouped.
Small whole bodies go through the keeper's rounds where ``syncfs`` reports errors
(tests/storage/test_keeper.py); the tests here that pin the per-file thread path turn the
rounds off (``per_file``: a kernel before 5.8, or not Linux)."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.storage import InvalidKey, LocalStorage, atomic_file, keeper
from gateway.storage.atomic_file import WRITE_BUFFER_BYTES, write_file
from tests.support import record_disk_steps

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(1000)


@pytest.fixture
def per_file(monkeypatch) -> None:
    """The per-file thread path, as where ``syncfs`` cannot report errors."""
    monkeypatch.setattr(keeper, "syncfs", None)


async def test_the_file_is_fsynced_unnamed_then_linked_and_the_directory_fsynced(tmp_path, monkeypatch,
                                                                                 per_file) -> None:
    steps = record_disk_steps(monkeypatch)
    storage = LocalStorage(tmp_path / "videos")
    directory = storage.root / "jobs"
    names_at_fsync: list[list[str]] = []
    recorded_fsync = os.fsync

    def fsync(fd: int) -> None:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            names_at_fsync.append(os.listdir(directory))
        recorded_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    stored = await storage.put("jobs/job_1.mp4", VIDEO, "video/mp4")
    target = directory / "job_1.mp4"
    inode = target.stat().st_ino
    # all three done when put returns: a record naming the video, saved after, cannot outlive it
    assert [(kind, ino == inode) for kind, _, ino in steps] == [("fsync", True), ("link", True), ("fsync", False)]
    assert steps[1][1] == str(target) and steps[2][1] == str(directory)
    assert names_at_fsync == [[]]  # its bytes were synced with no name in the directory, not even a temporary one
    assert stored.uri == target.as_uri() and target.read_bytes() == VIDEO


async def test_without_o_tmpfile_a_temporary_file_is_fsynced_renamed_and_the_directory_fsynced(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic_file, "_O_TMPFILE", None)  # a platform with none (macOS), or no /proc
    steps = record_disk_steps(monkeypatch)
    storage = LocalStorage(tmp_path / "videos")
    stored = await storage.put("jobs/job_1.mp4", VIDEO, "video/mp4")
    target, directory = storage.root / "jobs" / "job_1.mp4", str(storage.root / "jobs")
    assert [kind for kind, _, _ in steps] == ["fsync", "rename", "fsync"]
    assert steps[0][1].startswith(str(target.parent / ".part-")) and steps[0][1].endswith("job_1.mp4")
    assert steps[1] == ("rename", str(target), target.stat().st_ino) and steps[2][1] == directory
    assert stored.uri == target.as_uri() and target.read_bytes() == VIDEO


async def test_a_filesystem_that_refuses_o_tmpfile_gets_named_files_and_is_asked_once(tmp_path, monkeypatch) -> None:
    tries: list[str] = []
    real_open = os.open

    def no_tmpfile(path, flags, mode=0o777, **kwargs):  # NFS, some FUSE filesystems, kernels before 3.11
        if atomic_file._O_TMPFILE is not None and flags & atomic_file._O_TMPFILE == atomic_file._O_TMPFILE:
            tries.append(str(path))
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", no_tmpfile)
    steps = record_disk_steps(monkeypatch)
    storage = LocalStorage(tmp_path / "videos")
    await storage.put("jobs/a.mp4", VIDEO, "video/mp4")
    await storage.put("jobs/b.mp4", VIDEO[::-1], "video/mp4")
    assert tries == [str(storage.root / "jobs")] and "link" not in [kind for kind, _, _ in steps]
    assert [kind for kind, _, _ in steps].count("rename") == 2
    assert (storage.root / "jobs" / "b.mp4").read_bytes() == VIDEO[::-1]
    assert sorted(os.listdir(storage.root / "jobs")) == ["a.mp4", "b.mp4"]


async def test_a_second_write_to_a_name_replaces_it_through_a_synced_temporary_name(tmp_path, monkeypatch,
                                                                                    per_file) -> None:
    """A link never replaces a file: a keep tried again links a temporary name, then renames it over."""
    storage = LocalStorage(tmp_path / "videos")
    await storage.put("jobs/job_1.mp4", b"first", "video/mp4")
    steps = record_disk_steps(monkeypatch)
    await storage.put("jobs/job_1.mp4", VIDEO, "video/mp4")
    target = storage.root / "jobs" / "job_1.mp4"
    inode = target.stat().st_ino
    assert [(kind, ino == inode) for kind, _, ino in steps] == [
        ("fsync", True), ("link", True), ("rename", True), ("fsync", False)]
    assert steps[1][1].startswith(str(target.parent / ".part-")) and steps[2][1] == str(target)
    assert target.read_bytes() == VIDEO and os.listdir(target.parent) == ["job_1.mp4"]


def test_a_process_killed_mid_write_leaves_no_file_behind(tmp_path) -> None:
    """Killed between its first and last bytes (a crash, an OOM kill), a write leaves nothing
    in the directory: the unnamed file goes with the process (a named temporary file stayed)."""
    target = tmp_path / "videos" / "jobs" / "job_1.mp4"
    script = f"""
import asyncio, sys
from pathlib import Path
from gateway.storage.atomic_file import WRITE_BUFFER_BYTES, write_file

async def body():
    yield bytes(WRITE_BUFFER_BYTES)  # one batch: the file is open and written
    yield bytes(1)
    print("written", flush=True)
    await asyncio.Event().wait()  # never the last byte

asyncio.run(write_file(Path({str(target)!r}), body(), private=True))
"""
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                          cwd=Path(__file__).resolve().parents[2]) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "written\n"
        finally:
            child.kill()
    assert target.parent.is_dir() and os.listdir(target.parent) == []


async def test_a_kept_video_is_private_whatever_the_umask(tmp_path) -> None:
    async def streamed():
        yield VIDEO[:10]
        yield VIDEO[10:]

    old = os.umask(0)
    try:
        storage = LocalStorage(tmp_path / "videos")
        await storage.put("jobs/whole.mp4", VIDEO, "video/mp4")
        await storage.put("jobs/streamed.mp4", streamed(), "video/mp4")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(storage.root) == mode(storage.root / "jobs") == 0o700
    assert mode(storage.root / "jobs" / "whole.mp4") == mode(storage.root / "jobs" / "streamed.mp4") == 0o600


async def test_a_small_body_takes_one_thread_call_and_a_large_one_a_call_per_batch(tmp_path, monkeypatch,
                                                                                   per_file) -> None:
    loop = asyncio.get_running_loop()
    calls: list[object] = []
    real = loop.run_in_executor

    def counting(executor, fn, *args):
        calls.append(fn)
        return real(executor, fn, *args)

    monkeypatch.setattr(loop, "run_in_executor", counting)
    storage = LocalStorage(tmp_path / "videos")
    await storage.put("jobs/a.mp4", VIDEO, "video/mp4")
    assert len(calls) == 1  # open, write, fsync, rename, directory fsync: one call

    async def chunks(total: int, size: int = 64 * 1024):
        for start in range(0, total, size):
            yield bytes(min(size, total - start))

    calls.clear()
    await storage.put("jobs/small-streamed.mp4", chunks(200_000), "video/mp4")
    assert len(calls) == 1
    calls.clear()
    await storage.put("jobs/large.mp4", chunks(2 * WRITE_BUFFER_BYTES + 1), "video/mp4")
    assert len(calls) == 3  # two full batches, then the rest with the fsync and rename


async def test_a_directory_swapped_for_a_symlink_after_a_put_is_checked_again(tmp_path) -> None:
    storage = LocalStorage(tmp_path / "videos")
    await storage.put("jobs/a.mp4", VIDEO, "video/mp4")
    outside = tmp_path / "outside"
    outside.mkdir()
    (storage.root / "jobs").rename(tmp_path / "old-jobs")
    (storage.root / "jobs").symlink_to(outside)
    with pytest.raises(InvalidKey):
        await storage.put("jobs/b.mp4", VIDEO, "video/mp4")
    assert list(outside.iterdir()) == []


async def test_a_write_to_a_path_keeps_the_umask_and_leaves_nothing_on_failure(tmp_path) -> None:
    async def cut_off():
        yield b"half"
        raise ConnectionResetError

    target = tmp_path / "out" / "fox.mp4"
    with pytest.raises(ConnectionResetError):
        await write_file(target, cut_off())
    assert not target.exists()
    digest = await write_file(target, b"whole")
    assert (digest.size, target.read_bytes()) == (5, b"whole")
    assert list(target.parent.iterdir()) == [target]


def test_one_directory_fsync_covers_the_names_placed_before_it(tmp_path, monkeypatch) -> None:
    """Names placed while an fsync of their directory runs share the next one."""
    syncs: list[int] = []
    first_started, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        syncs.append(fd)
        if len(syncs) == 1:
            first_started.set()
            release.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    sync = atomic_file._Directory(tmp_path)
    first = threading.Thread(target=sync.sync_after_naming)
    first.start()
    assert first_started.wait(30)
    later = [threading.Thread(target=sync.sync_after_naming) for _ in range(5)]
    for thread in later:
        thread.start()
    deadline = time.monotonic() + 30
    while sync._placed < 6:  # all counted (their names placed) while the first fsync runs
        assert time.monotonic() < deadline
        time.sleep(0.001)
    for thread in later:
        thread.join(0.05)
    assert all(thread.is_alive() for thread in later)  # each waits for an fsync begun after its rename
    release.set()
    for thread in [first, *later]:
        thread.join(30)
    assert len(syncs) == 2  # the first, and one for the five that came during it


def test_a_forked_child_writes_on_threads_of_its_own(tmp_path) -> None:
    """The parent's pool is inherited without its threads: the child must not queue work to it."""
    asyncio.run(write_file(tmp_path / "parent.mp4", VIDEO))  # the parent's pool has threads now
    pid = os.fork()
    if pid == 0:  # the child: write, then leave at once (no pytest teardown in here)
        try:
            asyncio.run(asyncio.wait_for(write_file(tmp_path / "child.mp4", VIDEO), 10))
            os._exit(0)
        except BaseException:
            os._exit(1)
    deadline = time.monotonic() + 30
    while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0):  # a child stuck on dead threads hangs
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's write never ran")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(waited[1]) == 0 and (tmp_path / "child.mp4").read_bytes() == VIDEO
