"""Shared-state fixtures: the real Redis at ``$REELGATE_TEST_REDIS_URL`` (default
127.0.0.1:6379). Each test gets its own random key prefix, and its keys are deleted
afterwards. An unreachable Redis fails these tests (never skips them): the scale-out path
is only proven against a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis

from gateway.shared.connection import SharedState

REDIS_URL = os.environ.get("REELGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def eventually(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """Wait until ``condition()`` holds: state that another replica, Redis or an emulator
    changes, which raises no event in this task to wait on. Fails after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 -- the state lives elsewhere
            await asyncio.sleep(0.005)


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"reelgate-test-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not answering ({exc}); .ci/run starts it")
    yield name
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def states(prefix: str) -> AsyncIterator[Callable[..., SharedState]]:
    """``states(url=REDIS_URL, **options)`` -> a SharedState under this test's prefix (one per replica)."""
    made: list[SharedState] = []

    def make(url: str = REDIS_URL, **options: object) -> SharedState:
        state = SharedState(url, prefix=prefix, **options)  # type: ignore[arg-type]
        made.append(state)
        return state

    yield make
    for state in made:
        await state.aclose()


class TcpProxy:
    """A loopback TCP proxy to Redis that the test can take away and bring back: a real
    outage (connections cut, new ones refused) without touching the shared Redis server.
    It runs its own event loop in a thread, so a synchronous Redis call made from the
    test's loop still gets through."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 6379) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="redis-proxy", daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    def start(self) -> TcpProxy:
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        if self._server is not None and self._server.is_serving():
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):  # cut every connection, as a dead server would
            writer.transport.abort()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def server_of(url: str, default_port: int) -> tuple[str, int]:
    """The host and port a URL names: ``redis://host:port/0``, ``postgresql://user@host:port/db``."""
    where = url.split("//", 1)[1].split("/", 1)[0].rpartition("@")[2]
    host, _, port = where.rpartition(":") if ":" in where else (where, "", "")
    return host or "127.0.0.1", int(port or default_port)


@contextlib.contextmanager
def proxy_to(url: str, default_port: int) -> Iterator[TcpProxy]:
    """A started ``TcpProxy`` to the server ``url`` names, closed afterwards."""
    p = TcpProxy(*server_of(url, default_port)).start()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with proxy_to(REDIS_URL, 6379) as p:
        yield p
