"""Group commit: writes that arrive while one batch is under way go out together in the next.

One commit (SQLite: one transaction and one thread hop; PostgreSQL: one statement and one
round trip) per batch instead of one per write, so a new job or a vendor's accept is durable
without queueing behind every other job's write (bench/accept_durable.py, bench/service.py,
bench/store_writes.py). Each caller gets its own write's outcome once its batch is durable.
Should the batch fail, every write in it fails with the same error: none of them is on record;
unless the error is one a single write's own data can cause (``alone_on``: PostgreSQL refusing
a vendor's NUL character in a document): then each write of the batch goes again on its own,
so one bad write fails alone instead of taking its batchmates (other callers' jobs) with it.

``ThreadGroupCommit`` is the same for a store whose commits run in its own thread (SQLite's
``OneThread``), without a task: a batch is sent from a loop callback and settled by the one
callback the thread hands back. The flusher task per batch and the four coroutines between
it and the thread were ~9 % of the loop thread's samples in bench/jobpath.py (py-spy --gil;
docs/benchmarks.md 6.jobstore).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

_W = TypeVar("_W")
#: sends a batch's writes to the thread, to run as one commit there; the thread then calls
#: ``settle(batch, outcomes or the error, failed)`` on the loop (``OneThread.call``)
Send = Callable[[list[_W], Callable[[Any, Any, bool], object], Any], None]


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
        #: flushers not done yet (their loop has not ended)
        self._running = 0
        #: the keys of the batches under way
        self._busy: set[Hashable] = set()

    async def __call__(self, write: _W) -> Any:
        """Run ``write`` in the next batch; its outcome once that is durable."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((write, done))
        # flushers still running: one done, not discarded yet (its callback runs later), takes no more
        if self._running < self._in_flight:
            self._running += 1
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
        try:
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
        finally:  # no await after this: the task is done as the count drops
            self._running -= 1

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


class ThreadGroupCommit(Generic[_W]):
    """One batch under way at a time, in a thread: the writes made while it commits go out
    together as the next, as ``GroupCommit(in_flight=1)`` has them, and in the order made.
    ``send`` raising (the store closed, say) fails that batch's writes with its error."""

    def __init__(self, send: Send[_W]) -> None:
        self._send = send
        self._pending: list[tuple[_W, asyncio.Future[Any]]] = []
        #: a batch is under way, or about to be sent by a callback already scheduled
        self._sending = False

    def __call__(self, write: _W) -> asyncio.Future[Any]:
        """Run ``write`` in the next batch: its outcome once that is durable (await it).
        Cancelling the future drops the outcome only: the write goes out with its batch."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._pending.append((write, done))
        if not self._sending:
            self._sending = True
            # on the next turn, not now: the writes made in this one go out together
            loop.call_soon(self._next)
        return done

    def _next(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._sending = False
            return
        try:
            self._send([w for w, _ in batch], self._settle, batch)
        except Exception as exc:
            self._settle(batch, exc, True)

    def _settle(self, batch: list[tuple[_W, asyncio.Future[Any]]], outcomes: Any, failed: bool) -> None:
        if failed:  # the whole batch failed: every write in it did
            for _, done in batch:
                if not done.done():
                    done.set_exception(outcomes)
        else:
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if not done.done():  # its caller may have been cancelled meanwhile
                    done.set_result(outcome)
        # what arrived meanwhile goes as one batch, on the next turn: the callers just settled,
        # and whatever else was ready, may add to it first (as a flusher task resumed then did)
        asyncio.get_running_loop().call_soon(self._next)
