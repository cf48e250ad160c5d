"""Mirroring a finished video from its vendor URL into storage, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.emulation.base import Timing
from gateway.emulation.render import probe
from gateway.errors import ProtocolError, ProviderError, RateLimited, Unavailable
from gateway.provider import ProviderSettings, Secret
from gateway.request import VideoRequest
from gateway.storage import LocalStorage, MirrorOptions, ObjectTooLarge, mirror
from gateway.storage.mirror import RETRY_MAX_S, download, retry_delay
from gateway.transport import make_client
from providers.railwail import RailwailAdapter
from tests.support import FakeClock, drive_adapter

MP4 = b"\x00\x00\x00\x18ftypmp42" + os.urandom(300_000)
KEY = "jobs/job_1.mp4"


class Vendor:
    """A CDN that fails the first ``failures`` downloads in a chosen way."""

    def __init__(self, failure: str | None = None, failures: int = 0) -> None:
        self.failure = failure
        self.failures = failures
        self.calls = 0

    async def video(self, request: Request) -> Response:
        self.calls += 1
        if self.calls <= self.failures:
            return self.fail()
        return StreamingResponse(chunked(MP4), media_type="video/mp4")

    def fail(self) -> Response:
        if self.failure == "503":
            return Response(status_code=503)
        if self.failure == "429":
            return Response(status_code=429, headers={"retry-after": "3"})
        if self.failure == "403":
            return Response(status_code=403)
        if self.failure == "cut":
            return StreamingResponse(cut_off(), media_type="video/mp4")
        raise AssertionError(self.failure)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/video.mp4", self.video),
            Route("/page.html", lambda _: Response("<html>expired</html>", media_type="text/html")),
            Route("/huge-declared", lambda _: Response(MP4, media_type="video/mp4")),
            Route("/huge-streamed", lambda _: StreamingResponse(chunked(MP4), media_type="video/mp4")),
        ])


async def chunked(data: bytes, size: int = 32 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def cut_off() -> AsyncIterator[bytes]:
    yield MP4[:50_000]
    raise ConnectionResetError("the CDN dropped the connection")


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "videos")


async def run_mirror(base_url: str, path: str, storage: LocalStorage, clock: FakeClock,
                     options: MirrorOptions | None = None):
    async with make_client() as client:  # the gateway's own client (aiohttp transport)
        return await mirror(client, httpx.Request("GET", base_url + path), storage, KEY,
                            provider="cdn", options=options or MirrorOptions(), sleep=clock.sleep)


async def stored_bytes(storage: LocalStorage, uri: str) -> bytes:
    return b"".join([chunk async for chunk in storage.open(uri)])


async def test_streams_the_video_into_storage_with_its_checksum(serve, storage: LocalStorage) -> None:
    stored = await run_mirror(serve(Vendor().app()), "/video.mp4", storage, FakeClock())
    assert (stored.size_bytes, stored.sha256) == (len(MP4), hashlib.sha256(MP4).hexdigest())
    assert stored.content_type == "video/mp4" and stored.uri == storage.uri_for(KEY)
    assert await stored_bytes(storage, stored.uri) == MP4


def responses_alive() -> int:
    return sum(isinstance(o, httpx.Response) for o in gc.get_objects())


async def test_a_download_leaves_nothing_for_the_cyclic_collector(serve, storage: LocalStorage) -> None:
    base_url = serve(Vendor().app())
    gc.collect()
    gc.disable()
    try:
        before = responses_alive()
        stored = await run_mirror(base_url, "/video.mp4", storage, FakeClock())
        assert stored.size_bytes == len(MP4)
        assert responses_alive() == before  # freed by reference counting, not left to gc
    finally:
        gc.enable()


@pytest.mark.parametrize(("failure", "sleeps"), [("503", [1.0, 2.0]), ("cut", [1.0, 2.0]), ("429", [3.0, 3.0])])
async def test_transient_failures_are_retried(serve, storage: LocalStorage, failure: str,
                                              sleeps: list[float]) -> None:
    vendor, clock = Vendor(failure, failures=2), FakeClock()
    stored = await run_mirror(serve(vendor.app()), "/video.mp4", storage, clock)
    assert vendor.calls == 3 and clock.sleeps == sleeps
    assert await stored_bytes(storage, stored.uri) == MP4


@pytest.mark.parametrize(("failure", "error"), [("503", Unavailable), ("cut", Unavailable), ("429", RateLimited)])
async def test_retries_are_bounded_and_nothing_is_left_behind(serve, storage: LocalStorage, failure: str,
                                                              error: type[Exception]) -> None:
    vendor, clock = Vendor(failure, failures=99), FakeClock()
    with pytest.raises(error):
        await run_mirror(serve(vendor.app()), "/video.mp4", storage, clock, MirrorOptions(retries=1))
    assert vendor.calls == 2 and len(clock.sleeps) == 1
    assert not storage.root.exists() or not any(storage.root.rglob("*.mp4*"))


async def test_a_refused_download_is_not_retried(serve, storage: LocalStorage) -> None:
    vendor, clock = Vendor("403", failures=1), FakeClock()
    with pytest.raises(ProviderError) as caught:
        await run_mirror(serve(vendor.app()), "/video.mp4", storage, clock)
    assert caught.value.status_code == 403 and type(caught.value) is ProviderError
    assert vendor.calls == 1 and clock.sleeps == []


async def test_a_page_that_is_not_a_video_is_refused(serve, storage: LocalStorage) -> None:
    with pytest.raises(ProtocolError, match="not an MP4"):
        await run_mirror(serve(Vendor().app()), "/page.html", storage, FakeClock())
    assert not await storage.exists(storage.uri_for(KEY))


@pytest.mark.parametrize("path", ["/huge-declared", "/huge-streamed"])
async def test_the_size_cap_holds_with_or_without_content_length(serve, storage: LocalStorage, path: str) -> None:
    clock = FakeClock()
    with pytest.raises(ObjectTooLarge):
        await run_mirror(serve(Vendor().app()), path, storage, clock, MirrorOptions(max_bytes=len(MP4) - 1))
    assert clock.sleeps == [] and not await storage.exists(storage.uri_for(KEY))


async def test_a_download_to_a_path_is_streamed_capped_and_all_or_nothing(serve, tmp_path: Path) -> None:
    """``Gateway.download`` takes the mirror's path: the same checks, into a file of the caller's."""
    base, target = serve(Vendor().app()), tmp_path / "out dir" / "my fox.mp4"
    async with make_client() as client:
        with pytest.raises(ObjectTooLarge):
            await download(client, httpx.Request("GET", base + "/huge-streamed"), target, provider="cdn",
                           options=MirrorOptions(max_bytes=len(MP4) - 1), sleep=FakeClock().sleep)
        assert not target.exists() and list(target.parent.glob("*")) == []  # no temporary file either
        stored = await download(client, httpx.Request("GET", base + "/video.mp4"), target, provider="cdn")
    assert target.read_bytes() == MP4
    assert (stored.size_bytes, stored.sha256, stored.uri) == (len(MP4), hashlib.sha256(MP4).hexdigest(),
                                                              target.resolve().as_uri())


SMALL = MP4[:1000]


@asynccontextmanager
async def raw_cdn(answers: list[bytes], hang: bool = False) -> AsyncIterator[str]:
    """A CDN on raw TCP that writes ``answers`` in turn (one per connection, then closes it,
    or hangs when ``hang``): a declared length with fewer bytes behind it is a cut-off body."""
    served = iter(answers)
    done = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(next(served))
            await writer.drain()
            if hang:
                await done.wait()
        finally:
            writer.close()
            await writer.wait_closed()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    finally:
        done.set()
        srv.close()
        await srv.wait_closed()


def head(length: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: %d\r\n\r\n" % length


async def test_a_small_download_cut_off_mid_body_is_retried_and_kept_whole(storage: LocalStorage) -> None:
    """A small body is read whole by the transport (not streamed): cut off, it is still a
    transient failure retried from the start, never a short video."""
    clock = FakeClock()
    async with raw_cdn([head(len(SMALL)) + SMALL[:100], head(len(SMALL)) + SMALL]) as url:
        stored = await run_mirror(url, "/video.mp4", storage, clock)
    assert clock.sleeps == [1.0] and await stored_bytes(storage, stored.uri) == SMALL


async def test_a_small_download_that_stalls_mid_body_ends_at_the_mirrors_timeout(storage: LocalStorage) -> None:
    async with raw_cdn([head(len(SMALL)) + SMALL[:100]], hang=True) as url:
        with pytest.raises(Unavailable, match="longer than 0.3 s"):
            await run_mirror(url, "/video.mp4", storage, FakeClock(), MirrorOptions(timeout_s=0.3, retries=0))
    assert not await storage.exists(storage.uri_for(KEY))


def test_retry_delay_backs_off_and_honours_retry_after_within_the_cap() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_delay(1, retry_after=7) == 7
    assert retry_delay(10) == retry_delay(1, retry_after=3600) == RETRY_MAX_S


@pytest.mark.integration
async def test_mirrors_a_real_rendered_video_through_the_adapters_download(serve, storage: LocalStorage) -> None:
    adapter = RailwailAdapter(ProviderSettings(
        "railwail", Secret("rw_live_test_key_0001"), "test", sandbox=True,
        base_url=serve(RailwailAdapter.emulator(timing=Timing(queue_s=0.05, run_s=0.1))),
    ))
    async with make_client() as client:
        job, _, result = await drive_adapter(adapter, VideoRequest(prompt="waves", aspect_ratio="9:16"), client)
        assert result is not None
        stored = await mirror(client, adapter.build_download(job, result), storage, KEY, provider="railwail")
    video = await stored_bytes(storage, stored.uri)
    assert hashlib.sha256(video).hexdigest() == stored.sha256
    assert probe(video)["codec"] == "h264"


async def test_a_small_download_reaches_storage_as_bytes_with_its_declared_video_type(storage: LocalStorage) -> None:
    """Read whole by the transport, the body goes to storage in one piece (no stream to
    drain), its type from the raw headers: a ``video/`` type as declared (lower case, no
    parameters), anything else MP4."""
    puts: list[tuple[object, str]] = []
    real_put = storage.put

    async def put(key, chunks, content_type, **kwargs):  # type: ignore[no-untyped-def]
        puts.append((chunks, content_type))
        return await real_put(key, chunks, content_type, **kwargs)

    storage.put = put  # type: ignore[method-assign]
    answers = [b"HTTP/1.1 200 OK\r\nContent-Type: Video/QuickTime; codecs=avc1\r\nContent-Length: %d\r\n\r\n"
               % len(SMALL) + SMALL,
               b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
               % len(SMALL) + SMALL,
               b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(SMALL) + SMALL]
    for answer, expected in zip(answers, ["video/quicktime", "video/mp4", "video/mp4"], strict=True):
        async with raw_cdn([answer]) as url:
            stored = await run_mirror(url, "/video.mp4", storage, FakeClock())
        assert stored.content_type == expected and puts[-1] == (SMALL, expected)
        assert isinstance(puts[-1][0], bytes) and await stored_bytes(storage, stored.uri) == SMALL


async def test_a_small_download_over_the_cap_is_refused_before_storage(storage: LocalStorage) -> None:
    async with raw_cdn([head(len(SMALL)) + SMALL]) as url:
        with pytest.raises(ObjectTooLarge, match=f"{len(SMALL)} bytes"):
            await run_mirror(url, "/video.mp4", storage, FakeClock(), MirrorOptions(max_bytes=len(SMALL) - 1))
    assert not storage.root.exists() or not any(storage.root.rglob("*"))


async def test_a_cancel_from_outside_stays_a_cancel_and_a_timeout_leaves_no_cancel_behind(
        storage: LocalStorage) -> None:
    """The attempt's deadline is the mirror's own timer (not ``asyncio.timeout``): only its
    own firing becomes a ``TimeoutError`` (then ``Unavailable``); the caller's cancel goes
    through as a cancel, and a timed-out download leaves its task with no cancel pending."""
    async with raw_cdn([head(len(SMALL)) + SMALL[:100]] * 2, hang=True) as url:
        task = asyncio.ensure_future(run_mirror(url, "/video.mp4", storage, FakeClock(),
                                                MirrorOptions(timeout_s=30, retries=0)))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async def timed_out() -> int:
            with pytest.raises(Unavailable, match="longer than 0.2 s"):
                await run_mirror(url, "/video.mp4", storage, FakeClock(), MirrorOptions(timeout_s=0.2, retries=0))
            current = asyncio.current_task()
            assert current is not None
            await asyncio.sleep(0)  # a cancel left pending would land here
            return current.cancelling()

        assert await asyncio.ensure_future(timed_out()) == 0
    assert not await storage.exists(storage.uri_for(KEY))
