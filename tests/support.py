"""Helpers shared by the test suite (not fixtures: plain functions and classes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from gateway.job import VideoJob
from gateway.provider import Provider, VendorJob, VendorStatus, VideoResult
from gateway.request import VideoRequest


def free_port(port: int = 0) -> int:
    """A loopback port (``port``, else one the kernel picks) held for a process this test
    starts next, which binds it seconds later. Merely closing a bound socket left that gap
    open: any bind to port 0 meanwhile, in any process, could be given the port -- a
    ``serve --sandbox`` binds its own emulators so, and when they got the port its own
    --port failed "in use" while they answered the health check (CI saw connection refused).
    So the port is left in TIME_WAIT, by a connection made *from* it and closed from its side
    first: for the next 60 s the kernel hands it to no bind to port 0 and no connect, while
    a server binding it by number with SO_REUSEADDR (``gateway.serving.bind``, nginx) can.
    Nothing ever listens on it meanwhile: a client of the port is refused, never answered
    by this. Called with the port, it holds it again (a server restarted on its old port)."""
    with socket.socket() as peer, socket.socket() as holder:
        peer.bind(("127.0.0.1", 0))
        peer.listen(1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the TIME_WAIT inherits it
        holder.bind(("127.0.0.1", port))
        holder.settimeout(10)
        holder.connect(peer.getsockname())
        accepted, _ = peer.accept()
        with accepted:
            held = int(holder.getsockname()[1])
            holder.close()  # the side that closes first keeps the TIME_WAIT: the port's
        return held


async def drive_adapter(
    adapter: Provider,
    request: VideoRequest,
    client: httpx.AsyncClient,
    *,
    attempt_key: str = "attempt-1",
    poll_s: float = 0.05,
    timeout_s: float = 30.0,
) -> tuple[VendorJob, VendorStatus, VideoResult | None]:
    """Submit, poll to a terminal state and fetch the result with one adapter, over real
    HTTP, without the router: what an adapter-level integration test needs."""
    match = adapter.quote(request)
    assert match.eligible, match.reasons
    resolution = match.quote.resolution
    response = await client.send(adapter.build_submit(request, resolution=resolution, attempt_key=attempt_key))
    job = adapter.parse_submit(request, response)
    async with asyncio.timeout(timeout_s):
        while True:
            status = adapter.parse_status(job, await client.send(adapter.build_status(job)))
            if status.state.terminal:
                break
            await asyncio.sleep(poll_s)
    result = None
    if status.state.value == "succeeded":
        built = adapter.build_result(job)
        if built is None:
            result = VideoResult(url=status.video_url or "")
        else:
            result = adapter.parse_result(job, await client.send(built))
    return job, status, result


class FakeClock:
    """A clock the test drives: ``sleep`` advances it instead of waiting.

    Give ``clock.now`` to emulators and ``clock.sleep`` to the gateway, and a job that
    would take minutes runs in milliseconds, deterministically.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


async def until(happened: Callable[[], bool], *, timeout_s: float = 30.0, every_s: float = 0.01) -> None:
    """Return once ``happened()`` is true: for events in another thread (an emulator served
    by a background server), where no ``asyncio.Event`` of this loop can say so. The
    timeout only bounds a test that would otherwise hang; nothing is expected of the clock."""
    async with asyncio.timeout(timeout_s):
        while True:
            if happened():
                return
            await asyncio.sleep(every_s)


def record_disk_steps(monkeypatch) -> list[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    """Every ``os.fsync`` (of which path, which inode), ``os.link`` and ``os.replace`` (to
    where, which inode), in the order they finished: how a test sees that a write is durable
    before something else happens. The inode ties a file's fsync to the name it gets (an
    unnamed ``O_TMPFILE`` file has no path of its own until it is linked)."""
    steps: list[tuple[str, str, int]] = []
    real_fsync, real_link, real_replace = os.fsync, os.link, os.replace

    def fsync(fd: int) -> None:
        real_fsync(fd)
        steps.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_ino))

    def link(src: str, dst: str, **kwargs: object) -> None:
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]
        steps.append(("link", str(dst), os.stat(dst, follow_symlinks=False).st_ino))

    def replace(src: str, dst: str) -> None:
        real_replace(src, dst)
        steps.append(("rename", str(dst), os.stat(dst, follow_symlinks=False).st_ino))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "replace", replace)
    return steps


@contextlib.contextmanager
def dies_at_save(store: Any, when: Callable[[VideoJob], bool]) -> Iterator[asyncio.Event]:
    """What a process killed at its first save of a job that ``when`` accepts leaves behind:
    that save never returns and writes nothing (the event says it was reached). The store
    saves as usual again on leaving the block, for the next process."""
    real_save, dying = store.save, asyncio.Event()

    async def save(job: VideoJob, **kw: Any) -> None:
        if when(job):
            dying.set()
            await asyncio.Event().wait()
        await real_save(job, **kw)

    store.save = save
    try:
        yield dying
    finally:
        store.save = real_save
