"""Group commit: writes that arrive while one batch is under way go out together in the next.

One commit (SQLite: one transaction and one thread hop; PostgreSQL: one statement and one
round trip) per batch instead of one per write, so a new job or a vendor's accept is durable
without queueing behind every other job's write (bench/accept_durable.py, bench/service.py,
bench/store_writes.py). Each caller gets its own write's outcome once its batch is durable.
Should the batch fail, every write in it fails with the same error: none of them is on record;
unless the error is one a single write's own data can cause (``alone_on``: PostgreSQL refusing
a vendor's NUL character in a document): then each write of the batch goes again on its own,
so one bad write fails alone instead of taking its batchmates (other callers' jobs) with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

_W = TypeVar("_W")


class GroupCommit(Generic[_W]):
    def __init__(self, commit: Callable[[list[_W]], Awaitable[Sequence[Any]]], *, name: str,
                 key: Callable[[_W], Hashable] | None = None, in_flight: int = 1,
                 alone_on: tuple[type[Exception], ...] = ()) -> None:
        #: writes a batch; returns one outcome per write, in order
        self._commit = commit
        self._name = name
        #: writes with equal keys never share a batch (one statement may not change a row twice)
        #: nor go out while another batch holds one: one row's writes land in the order made
        self._key = key
        #: batches under way at once (PostgreSQL: several connections; SQLite: one). A write
        #: finding one free goes at once, alone; writes wait and batch up only when none is.
        self._in_flight = in_flight
        self._alone_on = alone_on
        self._pending: list[tuple[_W, asyncio.Future[Any]]] = []
        self._flushers: set[asyncio.Task[None]] = set()
        #: the keys of the batches under way
        self._busy: set[Hashable] = set()

    async def __call__(self, write: _W) -> Any:
        """Run ``write`` in the next batch; its outcome once that is durable."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((write, done))
        # done, not discarded yet (its callback runs later): a finished flusher takes no more
        if sum(not f.done() for f in self._flushers) < self._in_flight:
            flusher = asyncio.create_task(self._flush(), name=self._name)
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return await done

    def _next_batch(self) -> list[tuple[_W, asyncio.Future[Any]]]:
        if self._key is None:
            batch, self._pending = self._pending, []
            return batch
        batch, later = [], []
        for item in self._pending:
            k = self._key(item[0])
            if k in self._busy:
                later.append(item)
            else:
                self._busy.add(k)
                batch.append(item)
        self._pending = later
        return batch

    async def _flush(self) -> None:
        while batch := self._next_batch():  # empty: nothing pending, or all wait on batches under way
            try:
                if not await self._commit_batch(batch):  # nothing of it is on record
                    for one in batch:
                        await self._commit_batch([one])
            except asyncio.CancelledError:
                for _, done in batch:
                    done.cancel()
                raise
            finally:
                if self._key is not None:
                    self._busy.difference_update(self._key(w) for w, _ in batch)

    async def _commit_batch(self, batch: list[tuple[_W, asyncio.Future[Any]]]) -> bool:
        """Commit ``batch`` and hand each caller its outcome; False, and no caller told, when a
        batch of several writes failed with what ``alone_on`` names."""
        try:
            outcomes = await self._commit([w for w, _ in batch])
        except Exception as exc:  # the whole batch failed: every write in it did
            if len(batch) > 1 and isinstance(exc, self._alone_on):
                return False
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return True
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if not done.done():  # its caller may have been cancelled meanwhile
                done.set_result(outcome)
        return True
