"""Small files kept in rounds (gateway/storage/keeper.py): no name before a round has made
the bytes durable, no put resolved before a later round has made its name durable, a failed
round fails every file in it (and every file written before the failure), a cancel leaves
nothing named, and where ``syncfs`` cannot report errors the per-file path is taken.
The round tests need Linux >= 5.8 (CI's kernel); elsewhere they fail, never skip."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.storage import LocalStorage, atomic_file, keeper
from gateway.storage.keeper import Keeper

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(1000)


class Gate:
    """``keeper.syncfs`` that waits for the test's word at each call (``go``), fails the calls
    named in ``fail``, and runs ``at_call`` first (in the keeper thread)."""

    def __init__(self, at_call=lambda n: None) -> None:  # type: ignore[no-untyped-def]
        self.real = keeper.syncfs
        self.calls = 0
        self.entered = threading.Semaphore(0)
        self.go = threading.Semaphore(0)
        self.fail: dict[int, OSError] = {}
        self.at_call = at_call
        self.open_wide = False

    def __call__(self, fd: int) -> None:
        self.calls += 1
        n = self.calls
        self.at_call(n)
        self.entered.release()
        if not self.open_wide:
            assert self.go.acquire(timeout=30)
        if n in self.fail:
            raise self.fail[n]
        assert self.real is not None
        self.real(fd)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.acquire, True, 30)

    def release(self) -> None:
        self.go.release()


@pytest.fixture
def fresh(monkeypatch) -> Iterator[Keeper]:  # type: ignore[no-untyped-def]
    """A keeper of this test's own (its rounds start with the test's first put)."""
    mine = Keeper()
    monkeypatch.setattr(keeper, "_keeper", mine)
    yield mine
    for fd in mine._witnesses.values():
        os.close(fd)


@pytest.fixture
def gate(monkeypatch) -> Gate:  # type: ignore[no-untyped-def]
    """A ``Gate`` standing in for ``keeper.syncfs``."""
    installed = Gate()
    monkeypatch.setattr(keeper, "syncfs", installed)
    return installed


async def put_held_at_syncfs(storage: LocalStorage, gate: Gate, key: str) -> asyncio.Future[object]:
    """A put of ``VIDEO`` under ``key``, running until its round's ``syncfs`` waits for the gate."""
    task = asyncio.ensure_future(storage.put(key, VIDEO, "video/mp4"))
    await gate.wait_entered()
    return task


def unnamed_open(directory: Path) -> list[str]:
    """This process's fds on an unnamed file in ``directory`` (what ``O_TMPFILE`` shows)."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [link for link in links if link.startswith(f"{directory}/#")]


async def test_names_follow_a_round_that_began_after_the_write_and_puts_return_a_round_after_naming(
        tmp_path, monkeypatch, fresh) -> None:
    storage = LocalStorage(tmp_path / "videos")
    directory = storage.root / "jobs"
    written: list[str] = []
    real_write = atomic_file._TempFile.write

    def write(self, data):  # type: ignore[no-untyped-def]
        real_write(self, data)
        written.append(self.name)

    tasks: dict[str, asyncio.Task[object]] = {}
    #: at each syncfs' start: (files written, names on disk, puts returned)
    seen: list[tuple[set[str], set[str], set[str]]] = []

    def at_call(n: int) -> None:
        names = set(os.listdir(directory)) if directory.exists() else set()
        seen.append((set(written), names, {name for name, task in list(tasks.items()) if task.done()}))

    gate = Gate(at_call)
    gate.open_wide = True
    monkeypatch.setattr(atomic_file._TempFile, "write", write)
    monkeypatch.setattr(keeper, "syncfs", gate)
    for n in range(24):  # staggered, so rounds hold files at both stages
        tasks[f"{n}.mp4"] = asyncio.ensure_future(storage.put(f"jobs/{n}.mp4", VIDEO, "video/mp4"))
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks.values())
    assert len(seen) >= 3 and sorted(os.listdir(directory)) == sorted(tasks)
    before: tuple[set[str], set[str], set[str]] = (set(), set(), set())
    for now in seen:
        assert now[1] <= before[0]  # named: its bytes were written before the last syncfs began
        assert now[2] <= before[1]  # returned: its name was on disk before the last syncfs began
        before = now


async def test_a_small_put_makes_no_worker_thread_call_and_syncs_before_naming(tmp_path, monkeypatch, fresh) -> None:
    loop = asyncio.get_running_loop()
    calls: list[object] = []
    real_executor = loop.run_in_executor
    monkeypatch.setattr(loop, "run_in_executor", lambda *a: calls.append(a[1]) or real_executor(*a))
    steps: list[str] = []
    real_sync, real_link = keeper.syncfs, os.link
    assert real_sync is not None

    def syncfs(fd: int) -> None:
        steps.append("syncfs")
        real_sync(fd)

    def link(*args, **kwargs):  # type: ignore[no-untyped-def]
        steps.append("link")
        real_link(*args, **kwargs)

    monkeypatch.setattr(keeper, "syncfs", syncfs)
    monkeypatch.setattr(os, "link", link)
    storage = LocalStorage(tmp_path / "videos")
    stored = await storage.put("jobs/a.mp4", VIDEO, "video/mp4")
    assert steps == ["syncfs", "link", "syncfs"] and calls == []
    assert (storage.root / "jobs" / "a.mp4").read_bytes() == VIDEO and stored.size_bytes == len(VIDEO)


@pytest.mark.parametrize("failing", [1, 2])
async def test_a_failed_syncfs_fails_every_file_of_its_round(tmp_path, gate, fresh, failing: int) -> None:
    """Call 1 holds a first file's bytes; the others queue meanwhile, so round 2 holds their
    bytes and the first file's name: ``failing`` picks the round that fails."""
    storage = LocalStorage(tmp_path / "videos")
    directory = storage.root / "jobs"
    gate.fail[failing] = OSError(errno.EIO if failing == 1 else errno.ENOSPC, "writeback failed")
    first = await put_held_at_syncfs(storage, gate, "jobs/first.mp4")
    others = [asyncio.ensure_future(storage.put(f"jobs/{n}.mp4", VIDEO, "video/mp4")) for n in range(5)]
    await asyncio.sleep(0.05)
    assert fresh._queue.qsize() == 5 and not any(task.done() for task in [first, *others])
    gate.open_wide = True
    for _ in range(3):
        gate.release()
    results = await asyncio.gather(first, *others, return_exceptions=True)
    code = gate.fail[failing].errno
    if failing == 1:  # the first file's round: it fails; the others were written before it failed
        assert all(isinstance(r, OSError) and r.errno == code for r in results)
        assert os.listdir(directory) == []
    else:  # round 2: every file of it fails, the first one's name stays (whole, not known durable)
        assert all(isinstance(r, OSError) and r.errno == code for r in results)
        assert os.listdir(directory) == ["first.mp4"]
    assert unnamed_open(directory) == []
    # the next put, written after the failures, is kept as usual
    await storage.put("jobs/later.mp4", VIDEO, "video/mp4")
    assert (directory / "later.mp4").read_bytes() == VIDEO


async def test_a_put_cancelled_before_its_bytes_are_durable_leaves_no_name_and_no_open_file(
        tmp_path, gate, fresh) -> None:
    storage = LocalStorage(tmp_path / "videos")
    directory = storage.root / "jobs"
    task = await put_held_at_syncfs(storage, gate, "jobs/a.mp4")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert unnamed_open(directory) == []  # closed at once: its round does not touch it again
    gate.open_wide = True
    gate.release()
    await storage.put("jobs/b.mp4", VIDEO, "video/mp4")  # the cancelled one's round is long done
    assert os.listdir(directory) == ["b.mp4"]


async def test_a_put_cancelled_after_its_name_is_placed_leaves_the_whole_file(tmp_path, gate, fresh) -> None:
    storage = LocalStorage(tmp_path / "videos")
    directory = storage.root / "jobs"
    task = await put_held_at_syncfs(storage, gate, "jobs/a.mp4")
    gate.release()
    await gate.wait_entered()  # the name round: the file is named
    assert os.listdir(directory) == ["a.mp4"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.open_wide = True
    gate.release()
    await storage.put("jobs/b.mp4", VIDEO, "video/mp4")
    assert (directory / "a.mp4").read_bytes() == VIDEO and unnamed_open(directory) == []


async def test_a_name_taken_is_replaced_through_a_temporary_name_in_rounds(tmp_path, fresh) -> None:
    storage = LocalStorage(tmp_path / "videos")
    await storage.put("jobs/a.mp4", b"first", "video/mp4")
    await storage.put("jobs/a.mp4", VIDEO, "video/mp4")  # a keep tried again
    assert os.listdir(storage.root / "jobs") == ["a.mp4"] and (storage.root / "jobs" / "a.mp4").read_bytes() == VIDEO


async def test_a_large_or_streamed_body_and_a_system_without_syncfs_take_the_thread_path(tmp_path, monkeypatch,
                                                                                       fresh) -> None:
    loop = asyncio.get_running_loop()
    calls: list[object] = []
    real_executor = loop.run_in_executor
    monkeypatch.setattr(loop, "run_in_executor", lambda *a: calls.append(a[1]) or real_executor(*a))
    storage = LocalStorage(tmp_path / "videos")
    await storage.put("jobs/large.mp4", bytes(keeper.LOOP_WRITE_BYTES + 1), "video/mp4")
    assert len(calls) == 1
    monkeypatch.setattr(keeper, "syncfs", None)
    await storage.put("jobs/small.mp4", VIDEO, "video/mp4")
    assert len(calls) == 2 and fresh._thread is None  # no round ran
    assert (storage.root / "jobs" / "small.mp4").read_bytes() == VIDEO


@pytest.mark.parametrize(("system", "release", "usable"), [
    ("Linux", "5.4.0-150-generic", False), ("Linux", "5.7.19", False), ("Linux", "5.8.0", True),
    ("Linux", "6.9-rc1", True), ("Darwin", "23.1.0", False)])
def test_syncfs_is_used_only_where_it_reports_writeback_errors(monkeypatch, system, release, usable) -> None:
    monkeypatch.setattr(keeper.sys, "platform", "linux" if system == "Linux" else "darwin")
    monkeypatch.setattr(keeper.os, "uname", lambda: os.uname_result((system, "host", release, "#1", "x86_64")))
    assert (keeper._load_syncfs() is not None) is usable
