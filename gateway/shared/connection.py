"""One replica's connection to the shared Redis: its clients, whether Redis answers, the
event channel replicas tell each other things on, and falling back to local state.

Every shared component (health, budgets, concurrency) asks :attr:`SharedState.available`
before it uses Redis and reports any Redis error with :meth:`SharedState.failed`; from
then on they all serve on their local (in-process) state. One watcher task listens on
the event channel while Redis answers and, once it stops answering, tries again every
``retry_s``; when Redis is back it resynchronises every component (``on_join``) and they
use Redis again. Nothing here raises to a caller because Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis

log = logging.getLogger("reelgate.shared")

#: what a broken or absent Redis raises through redis-py (timeouts and refused connections included)
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
#: a call of the synchronous client (budgets) may take this long before Redis counts as
#: gone: it blocks the event loop, which costs every job in flight, so a slow Redis is
#: treated as an absent one. The kernel times it (a socket timeout), so it measures Redis.
TIMEOUT_S = 0.5
#: the same for a call the event loop awaits (slots, publishing, resyncs). This one is
#: timed by the loop, so it also counts every other task's turn and the process's wait for
#: a CPU: on a loaded 2-core host a 10 ms timer fired up to 0.37 s late, and at 0.5 s a
#: busy replica read as a lost Redis and took slots from its local limiter (N replicas, N x
#: the vendor's limit; tests/shared/test_concurrency.py). Awaiting blocks nobody else, so
#: this only has to catch a Redis that stopped answering (a host gone without a reset).
LOOP_TIMEOUT_S = 5.0
#: seconds between attempts to reach Redis again while it is away
RETRY_S = 1.0
#: seconds between full resynchronisations while connected (a lost event heals by then)
RESYNC_S = 5.0

Handler = Callable[[dict[str, Any]], None]
Join = Callable[[], Awaitable[None]]


def redact(url: str) -> str:
    """The URL without its password, fit for logs and /readyz."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    netloc = f"{user}{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class SharedState:
    """The Redis side of one replica. ``prefix`` starts every key and the channel name."""

    def __init__(self, url: str, *, prefix: str = "reelgate", replica: str | None = None,
                 timeout_s: float = TIMEOUT_S, loop_timeout_s: float = LOOP_TIMEOUT_S,
                 retry_s: float = RETRY_S, resync_s: float = RESYNC_S) -> None:
        self.url = url
        self.prefix = prefix
        self.replica = replica or replica_id()
        self.retry_s, self.resync_s = retry_s, resync_s
        #: for work the event loop awaits (scripts of the limiter, publishing, resyncs)
        self.aio: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=loop_timeout_s, socket_connect_timeout=loop_timeout_s)
        #: for the synchronous interfaces (budgets): one short round trip, bounded by the timeout
        self.sync: redis.Redis = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        #: Redis answered last time it was asked (optimistic until the first call says otherwise)
        self.available = True
        self.since = time.time()
        self.last_error = ""
        self._handlers: dict[str, Handler] = {}
        self._joins: list[Join] = []
        self._watcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._joined: asyncio.Event | None = None
        self._closed = False

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def channel(self) -> str:
        return self.key("events")

    # -- components plug in here ------------------------------------------------------------
    def on_event(self, kind: str, handler: Handler) -> None:
        """Call ``handler(event)`` for every event of ``kind`` another replica publishes."""
        self._handlers[kind] = handler

    def on_join(self, join: Join) -> None:
        """Await ``join()`` whenever this replica (re)connects, and every ``resync_s``."""
        self._joins.append(join)

    # -- status -------------------------------------------------------------------------------
    def failed(self, exc: BaseException) -> None:
        """A Redis call failed: serve on local state until the watcher reaches Redis again."""
        if self.available:
            self.available, self.since = False, time.time()
            self.last_error = type(exc).__name__
            if self._joined is not None:
                self._joined.clear()
            log.warning("shared state: Redis at %s is unreachable (%s); serving on local state",
                        redact(self.url), self.last_error)

    def _rejoined(self) -> None:
        if not self.available:
            log.warning("shared state: Redis at %s answers again; using shared state", redact(self.url))
            self.since = time.time()
        self.available, self.last_error = True, ""
        self.joined.set()

    @property
    def joined(self) -> asyncio.Event:
        """Set while this replica is connected and synchronised (for readiness and tests)."""
        if self._joined is None:
            self._joined = asyncio.Event()
        return self._joined

    def status(self) -> dict[str, object]:
        """For /readyz and logs: which Redis, whether it is in use, since when and why not."""
        status: dict[str, object] = {
            "backend": "redis", "url": redact(self.url), "replica": self.replica,
            "state": "shared" if self.available else "local fallback",
            "since": round(self.since, 3),
        }
        if self.last_error:
            status["error"] = self.last_error
        return status

    # -- the watcher ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the watcher on the running loop (idempotent; a no-op outside a loop)."""
        if self._watcher is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._watcher = loop.create_task(self._watch(), name="reelgate-shared-state")

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` (a Redis write nobody waits for) in the background; errors mark Redis down."""

        async def run() -> None:
            try:
                await work
            except REDIS_ERRORS as exc:
                self.failed(exc)

        try:
            task = asyncio.get_running_loop().create_task(run())
        except RuntimeError:  # no loop: a synchronous caller; the local state already has it
            if asyncio.iscoroutine(work):
                work.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def publish(self, kind: str, **fields: Any) -> None:
        await self.aio.publish(self.channel, json.dumps({"kind": kind, "origin": self.replica, **fields}))

    async def _watch(self) -> None:
        while not self._closed:
            try:
                async with self.aio.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    await self._sync()
                    self._rejoined()
                    await self._listen(pubsub)
            except REDIS_ERRORS as exc:
                self.failed(exc)
            await asyncio.sleep(self.retry_s)  # a backoff between reconnection attempts

    async def _listen(self, pubsub: Any) -> None:
        synced = time.monotonic()
        while not self._closed:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.retry_s)
            if message is not None:
                self._dispatch(message.get("data"))
            if not self.available or time.monotonic() - synced >= self.resync_s:
                # another call failed while this connection stayed up (or it is time): check
                await self._sync()
                self._rejoined()
                synced = time.monotonic()

    async def _sync(self) -> None:
        await self.aio.ping()
        for join in self._joins:
            await join()

    def _dispatch(self, data: object) -> None:
        try:
            event = json.loads(data) if isinstance(data, (bytes, str)) else None
        except ValueError:
            event = None
        if not isinstance(event, dict) or event.get("origin") == self.replica:
            return
        handler = self._handlers.get(str(event.get("kind")))
        if handler is not None:
            try:
                handler(event)
            except (KeyError, TypeError, ValueError):  # a malformed event from another version
                log.warning("shared state: ignored a malformed %s event", event.get("kind"))

    async def aclose(self) -> None:
        self._closed = True
        tasks = [t for t in (self._watcher, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(*REDIS_ERRORS):
            await self.aio.aclose()
        with contextlib.suppress(*REDIS_ERRORS):
            self.sync.close()
