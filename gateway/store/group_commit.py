"""Group commit: writes that arrive while one batch is under way go out together in the next.

One commit (SQLite: one transaction and one thread hop; PostgreSQL: one statement and one
round trip) per batch instead of one per write, so a new job or a vendor's accept is durable
without queueing behind every other job's write (bench/accept_durable.py, bench/service.py,
bench/store_writes.py). Each caller gets its own write's outcome once its batch is durable.
Should the batch fail, every write in it fails with the same error: none of them is on record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

_W = TypeVar("_W")


class GroupCommit(Generic[_W]):
    def __init__(self, commit: Callable[[list[_W]], Awaitable[Sequence[Any]]], *, name: str,
                 key: Callable[[_W], Hashable] | None = None) -> None:
        #: writes a batch; returns one outcome per write, in order
        self._commit = commit
        self._name = name
        #: writes with equal keys never share a batch (one statement may not change a row twice):
        #: the later waits for the next batch, so one row's writes land in the order made
        self._key = key
        self._pending: list[tuple[_W, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, write: _W) -> Any:
        """Run ``write`` in the next batch; its outcome once that is durable."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((write, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=self._name)
        return await done

    def _next_batch(self) -> list[tuple[_W, asyncio.Future[Any]]]:
        if self._key is None:
            batch, self._pending = self._pending, []
            return batch
        batch, later, seen = [], [], set()
        for item in self._pending:
            k = self._key(item[0])
            if k in seen:
                later.append(item)
            else:
                seen.add(k)
                batch.append(item)
        self._pending = later
        return batch

    async def _flush(self) -> None:
        while self._pending:
            batch = self._next_batch()
            try:
                outcomes = await self._commit([w for w, _ in batch])
            except asyncio.CancelledError:
                for _, done in batch:
                    done.cancel()
                raise
            except Exception as exc:  # the whole batch failed: every write in it did
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if not done.done():  # its caller may have been cancelled meanwhile
                    done.set_result(outcome)
