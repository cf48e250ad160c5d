"""The SQLite store's own thread: calls run there one at a time, in the order made.

Not a ``ThreadPoolExecutor`` and ``run_in_executor``: each hop through them makes a
``concurrent.futures.Future`` (a condition variable and its lock), chains it to an asyncio
future through a callback and another ``call_soon_threadsafe``, and the store guarded it with
an ``asyncio.Lock`` and ``asyncio.shield`` besides: ~35 us of CPU per hop against ~16 here
(bench/jobpath.py, docs/benchmarks.md 6.jobpath). Here a hop is one queue put, and one
``call_soon_threadsafe`` that hands the outcome to the loop.

One thread and one FIFO queue are also what kept a connection safe before: a call runs whole
before the next starts, so closing the connection (itself a call) never frees it under a
running COMMIT, even when the coroutine that made that COMMIT's call was cancelled meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")
#: what to call on the loop with a call's outcome: ``settle(target, outcome, failed)``
Settle = Callable[[Any, Any, bool], object]
_Call = tuple[asyncio.AbstractEventLoop, Settle, Any, Callable[[], Any]]


class OneThread:
    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        # a daemon, as the executor's threads were joined only at exit: a store never closed
        # must not hold the interpreter open
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[], _T]) -> asyncio.Future[_T]:
        """``fn()`` in the thread, after every call made before; its outcome on the running loop.
        Cancelling the future does not stop ``fn``: only its outcome is dropped."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[_T] = loop.create_future()
        self._calls.put((loop, _settle, done, fn))
        return done

    def call(self, fn: Callable[[], Any], settle: Settle, target: Any) -> None:
        """``run`` without a future: ``settle(target, outcome, failed)`` on the running loop
        once ``fn()`` has run (the store's group commit settles a whole batch so, in one
        callback: gateway/store/group_commit.py ``ThreadGroupCommit``)."""
        self._calls.put((asyncio.get_running_loop(), settle, target, fn))

    def stop(self) -> None:
        """End the thread once the calls already made have run."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            loop, settle, target, fn = call
            try:
                outcome, failed = fn(), False
            except BaseException as exc:  # handed to the caller, as an executor would
                outcome, failed = exc, True
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: no one is waiting
                loop.call_soon_threadsafe(settle, target, outcome, failed)
            del call, settle, target, fn, outcome  # not held while waiting for the next call


def _settle(done: asyncio.Future[Any], outcome: Any, failed: bool) -> None:
    if done.cancelled():  # its caller gave up; the call ran anyway
        return
    if failed:
        done.set_exception(outcome)
    else:
        done.set_result(outcome)
