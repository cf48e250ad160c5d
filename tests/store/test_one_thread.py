"""The SQLite store's own thread (gateway/store/one_thread.py): calls run one at a time in the
order made, each whole even when its caller gave up, so a connection closed after a cancelled
COMMIT is closed after that COMMIT, never under it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from gateway.store import SqliteJobStore
from gateway.store.one_thread import OneThread
from tests.store.jobs import new_job


async def test_calls_run_in_order_in_one_thread_and_hand_back_results_and_errors() -> None:
    thread, seen = OneThread("test-one-thread"), []

    def call(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 10

    def fails() -> None:
        raise ValueError("refused")

    try:
        results = await asyncio.gather(*(thread.run(lambda i=i: call(i)) for i in range(20)))
        assert results == [i * 10 for i in range(20)]
        assert seen == [(i, "test-one-thread") for i in range(20)]
        with pytest.raises(ValueError, match="refused"):
            await thread.run(fails)
    finally:
        thread.stop()


async def test_a_cancelled_callers_call_still_runs_whole_before_the_next() -> None:
    thread, steps = OneThread("test-one-thread"), []
    started = threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.2)
        steps.append("slow done")

    try:
        waiting = asyncio.ensure_future(thread.run(slow))
        await asyncio.to_thread(started.wait, 5)
        waiting.cancel()
        after = thread.run(lambda: steps.append("next"))
        await after
        assert steps == ["slow done", "next"]
    finally:
        thread.stop()


async def test_closing_after_a_cancelled_save_waits_for_it_and_keeps_it(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    await store.open()
    job = new_job()
    await store.create(job)
    job.notes.append("saved while its caller was cancelled")
    saving = asyncio.ensure_future(store.save(job))
    await asyncio.sleep(0)  # the save is queued for the store's thread
    saving.cancel()
    await store.close()  # behind the save's COMMIT, which it must not free the connection under
    async with SqliteJobStore(tmp_path / "jobs.db") as again:
        stored = await again.get(job.id)
    assert stored is not None and stored.id == job.id
