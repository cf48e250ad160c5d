"""Where a served pair's tail comes from: a probe loaded into every process of a
``bench.tail`` run (this directory goes first on ``PYTHONPATH``, so Python imports this
module at start-up; nothing here runs unless ``REELGATE_TAIL_PROBE`` names a folder).

Per process it records, with wall-clock stamps (``time.time()``, comparable across the
processes) so the analysis can line them up with the load generator's pairs:

* every cyclic collection (``gc.callbacks``): generation, wall pause, collected;
* in a uvicorn process (the service's workers, the upstream): the event loop's lag (a task
  sleeping ``LAG_TICK_S`` and noting how late it woke: a stalled loop delays every request
  it holds), and each request's time in the ASGI app (call to the last body byte sent);
* in the service: each group-commit write's wait (the store's durability on a create),
  each SQLite write transaction in its parts (lock, statements, COMMIT), each call into the
  SQLite store's thread and each keeper round (``syncfs`` of the kept videos); at the first
  request, how many objects are frozen and tracked (what start-up left to the collector),
  and at the end how long a full collection pauses.

It writes ``<folder>/<role>-<pid>.json`` when the process ends (uvicorn's graceful stop on
SIGTERM, or the load generator's normal exit).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import sys
import time

FOLDER = os.environ.get("REELGATE_TAIL_PROBE")
#: the lag probe's sleep: short enough to see a few-ms stall, long enough to cost nothing
LAG_TICK_S = 0.002


def _role() -> str:
    argv = " ".join(sys.argv)
    if "--load" in argv:
        return "load"
    if "--upstream-port" in argv:
        return "upstream"
    return "service"


if FOLDER:
    _events: dict[str, list] = {"gc": [], "lag": [], "asgi": [], "commit": [], "keeper": [], "sqlite": [],
                                "hops": []}
    _gc_start = [0.0]

    def _on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            _gc_start[0] = time.perf_counter()
        else:
            pause = time.perf_counter() - _gc_start[0]
            _events["gc"].append((time.time(), info["generation"], pause, info["collected"]))

    gc.callbacks.append(_on_gc)

    _heap: dict[str, object] = {}

    def _dump() -> None:
        if not any(_events.values()):
            return
        if _events["asgi"] and "full_collection_s" not in _heap:  # what a full collection would pause now
            began = time.perf_counter()
            gc.collect()
            _heap["full_collection_s"] = time.perf_counter() - began
        path = os.path.join(FOLDER, f"{_role()}-{os.getpid()}.json")
        with open(path, "w") as out:
            json.dump({"role": _role(), "pid": os.getpid(), "heap": _heap, **_events}, out)

    atexit.register(_dump)

    async def _lag_probe() -> None:
        import asyncio

        lags = _events["lag"]
        while True:
            before = time.perf_counter()
            await asyncio.sleep(LAG_TICK_S)
            lags.append((time.time(), time.perf_counter() - before - LAG_TICK_S))

    def _timed_app(app):  # type: ignore[no-untyped-def]
        asgi = _events["asgi"]

        async def timed(scope, receive, send):  # type: ignore[no-untyped-def]
            if scope["type"] != "http":
                return await app(scope, receive, send)
            began = time.time()
            if not _heap:  # the first request: start-up is over; what it left to the collector
                _heap.update(frozen=gc.get_freeze_count(), tracked=[len(gc.get_objects(g)) for g in (0, 1, 2)])

            async def sent(message):  # type: ignore[no-untyped-def]
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    asgi.append((began, time.time() - began, scope["method"]))

            return await app(scope, receive, sent)

        return timed

    def _patch_store() -> None:
        """The group commit's per-write wait and the keeper's rounds (service only)."""
        try:
            from gateway.storage import keeper
            from gateway.store import group_commit
        except ImportError:
            return
        commit, commits = group_commit.GroupCommit.__call__, _events["commit"]

        async def timed_commit(self, write):  # type: ignore[no-untyped-def]
            began = time.time()
            try:
                return await commit(self, write)
            finally:
                commits.append((began, time.time() - began, self._name))

        group_commit.GroupCommit.__call__ = timed_commit  # type: ignore[method-assign]
        sync, rounds = keeper.Keeper._sync, _events["keeper"]

        def timed_sync(self, device, item):  # type: ignore[no-untyped-def]
            began = time.time()
            try:
                return sync(self, device, item)
            finally:
                rounds.append((began, time.time() - began))

        keeper.Keeper._sync = timed_sync  # type: ignore[method-assign]
        from gateway.store import sqlite

        transactions, batch, write, in_one = _events["sqlite"], [0], sqlite.write, sqlite._in_one_transaction

        @contextlib.contextmanager
        def timed_write(conn, *args, **kwargs):  # type: ignore[no-untyped-def]
            """A write transaction timed in its parts: taking the write lock (the other
            worker's transactions), the statements, the COMMIT."""
            began, t0 = time.time(), time.perf_counter()
            with write(conn, *args, **kwargs):
                t1 = time.perf_counter()
                yield
                t2 = time.perf_counter()
            transactions.append((began, t1 - t0, t2 - t1, time.perf_counter() - t2, batch[0]))
            batch[0] = 0

        def counted(conn, writes, *rest):  # type: ignore[no-untyped-def]
            batch[0] = len(writes)
            return in_one(conn, writes, *rest)

        sqlite.write = timed_write
        sqlite._in_one_transaction = counted
        from gateway.store import one_thread

        run, hops = one_thread.OneThread.run, _events["hops"]

        def counted_hop(self, fn):  # type: ignore[no-untyped-def]
            hops.append((time.time(),))
            return run(self, fn)

        one_thread.OneThread.run = counted_hop  # type: ignore[method-assign]

    try:
        import uvicorn.config
        import uvicorn.server
    except ImportError:
        pass
    else:
        _load, _serve = uvicorn.config.Config.load, uvicorn.server.Server._serve

        def load(self):  # type: ignore[no-untyped-def]
            _load(self)
            self.loaded_app = _timed_app(self.loaded_app)
            _patch_store()

        async def serve(self, sockets=None):  # inside uvicorn's signal capture, which re-raises after it  # type: ignore[no-untyped-def]
            import asyncio

            probe = asyncio.get_running_loop().create_task(_lag_probe())
            try:
                return await _serve(self, sockets)
            finally:
                probe.cancel()
                _dump()

        uvicorn.config.Config.load = load  # type: ignore[method-assign]
        uvicorn.server.Server._serve = serve  # type: ignore[method-assign]
