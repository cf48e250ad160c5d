"""The group commits the stores use (PostgreSQL's ``GroupCommit``, SQLite's
``ThreadGroupCommit``), against fake commits (the stores' own tests run them against SQLite
and PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.store.group_commit import GroupCommit, ThreadGroupCommit
from gateway.store.one_thread import OneThread, Settle

Write = tuple[str, int]


class Fake:
    """A commit that takes two loop turns (a round trip) and records what it saw."""

    def __init__(self, refuse: int | None = None) -> None:
        self.active: set[str] = set()
        self.landed: list[Write] = []
        self.batches: list[int] = []
        self.under_way = self.most_at_once = 0
        self.refuse = refuse

    async def __call__(self, batch: list[Write]) -> list[int]:
        keys = [k for k, _ in batch]
        assert len(set(keys)) == len(keys) and not self.active & set(keys)  # one key, one write at a time
        self.active.update(keys)
        self.under_way += 1
        self.most_at_once = max(self.most_at_once, self.under_way)
        self.batches.append(len(batch))
        try:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if any(n == self.refuse for _, n in batch):
                raise ValueError(f"write {self.refuse} is refused")
            self.landed.extend(batch)
            return [n for _, n in batch]
        finally:
            self.active.difference_update(keys)
            self.under_way -= 1


async def test_one_keys_writes_never_overlap_and_land_in_the_order_made() -> None:
    fake = Fake()
    group: GroupCommit[Write] = GroupCommit(fake, name="test", key=lambda w: w[0], in_flight=3)
    writes = [(f"job-{n % 5}", n) for n in range(60)]
    assert await asyncio.gather(*(group(w) for w in writes)) == [n for _, n in writes]
    for key in {k for k, _ in writes}:
        assert [w for w in fake.landed if w[0] == key] == [w for w in writes if w[0] == key]
    assert len(fake.batches) < len(writes)  # batched, not one commit each


async def test_a_write_after_a_quiet_spell_still_goes_out() -> None:
    """Writes made one after another, each once the last is durable: none is stranded by a
    flusher that was just finishing."""
    group: GroupCommit[Write] = GroupCommit(Fake(), name="test", key=lambda w: w[0], in_flight=2)
    async with asyncio.timeout(5):
        for n in range(50):
            assert await group(("job", n)) == n


async def test_a_write_refused_for_its_own_data_fails_alone() -> None:
    fake = Fake(refuse=7)
    group: GroupCommit[Write] = GroupCommit(fake, name="test", key=lambda w: w[0], alone_on=(ValueError,))
    outcomes = await asyncio.gather(*(group((f"job-{n}", n)) for n in range(12)), return_exceptions=True)
    assert isinstance(outcomes[7], ValueError)
    assert [o for n, o in enumerate(outcomes) if n != 7] == [n for n in range(12) if n != 7]


async def test_any_other_failure_fails_the_whole_batch() -> None:
    group: GroupCommit[Write] = GroupCommit(Fake(refuse=7), name="test", key=lambda w: w[0])
    outcomes = await asyncio.gather(*(group((f"job-{n}", n)) for n in range(12)), return_exceptions=True)
    assert all(isinstance(o, ValueError) for o in outcomes)


@pytest.mark.parametrize("in_flight", [1, 3])
async def test_as_many_batches_under_way_as_allowed_and_no_more(in_flight: int) -> None:
    """Jobs each writing in turn, as a job's task does: writes arriving while a batch is
    under way start another, up to ``in_flight``."""
    fake = Fake()
    group: GroupCommit[Write] = GroupCommit(fake, name="test", key=lambda w: w[0], in_flight=in_flight)

    async def job(i: int) -> None:
        for _ in range(i):  # arriving one loop turn after another
            await asyncio.sleep(0)
        for n in range(5):
            await group((f"job-{i}", n))

    await asyncio.gather(*(job(i) for i in range(10)))
    assert fake.most_at_once == in_flight and len(fake.landed) == 50


# -- ThreadGroupCommit: SQLite's, batches sent to a thread without a task ------------------------

class Thread:
    """A ``OneThread`` with a gate: batches queue behind one held in the thread."""

    def __init__(self) -> None:
        self.thread = OneThread("test-group-commit")
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.refuse: int | None = None

    def send(self, writes: list[int], settle: Settle, batch: object) -> None:
        def commit() -> list[int]:
            self.gate.wait(5)
            self.batches.append(list(writes))
            if self.refuse in writes:
                raise ValueError(f"write {self.refuse} is refused")
            return [n * 10 for n in writes]

        self.thread.call(commit, settle, batch)


async def test_thread_writes_made_together_share_one_commit_and_get_their_own_outcomes() -> None:
    fake = Thread()
    group: ThreadGroupCommit[int] = ThreadGroupCommit(fake.send)
    try:
        assert await asyncio.gather(*(group(n) for n in range(20))) == [n * 10 for n in range(20)]
        assert fake.batches == [list(range(20))]
    finally:
        fake.thread.stop()


async def test_thread_writes_made_while_a_batch_commits_go_together_in_order_in_the_next() -> None:
    fake = Thread()
    group: ThreadGroupCommit[int] = ThreadGroupCommit(fake.send)
    try:
        fake.gate.clear()
        first = group(0)
        await asyncio.sleep(0.05)  # the first batch is in the thread, held
        later = [group(n) for n in range(1, 30)]
        cancelled = later[3]
        cancelled.cancel()  # its caller gave up: the write still goes, with its batch
        fake.gate.set()
        assert await first == 0
        assert await asyncio.gather(*(f for f in later if f is not cancelled)) == [
            n * 10 for n in range(1, 30) if n != 4]
        assert fake.batches == [[0], list(range(1, 30))]
        for n in range(50):  # one after another, each once the last is durable: none stranded
            assert await asyncio.wait_for(group(n), 5) == n * 10
    finally:
        fake.thread.stop()


async def test_a_thread_batch_that_fails_fails_every_write_in_it_and_the_next_goes_on() -> None:
    fake = Thread()
    fake.refuse = 7
    group: ThreadGroupCommit[int] = ThreadGroupCommit(fake.send)
    try:
        outcomes = await asyncio.gather(*(group(n) for n in range(12)), return_exceptions=True)
        assert all(isinstance(o, ValueError) for o in outcomes)
        assert await group(1) == 10
    finally:
        fake.thread.stop()


async def test_a_batch_that_cannot_be_sent_fails_its_writes() -> None:
    def closed(writes: list[int], settle: Settle, batch: object) -> None:
        raise RuntimeError("the store is not open")

    group: ThreadGroupCommit[int] = ThreadGroupCommit(closed)
    with pytest.raises(RuntimeError, match="not open"):
        await group(1)
    with pytest.raises(RuntimeError, match="not open"):  # and the next batch is tried as well
        await group(2)
