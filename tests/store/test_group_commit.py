"""The group commit both stores use, against a fake commit (the stores' own tests run it
against SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store.group_commit import GroupCommit

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
