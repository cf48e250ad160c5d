"""Copying a finished video from its vendor URL into our storage.

Vendor URLs expire (hours to days), so a gateway that promises a result keeps its
own copy. The download is the adapter's ``build_download`` request (it carries the
vendor's auth where one is needed) sent with the gateway's client, streamed straight
into storage with a size cap, hashed on the way, and retried from the start on a
transient failure -- storage writes are all-or-nothing, so a retry never appends to
a broken copy. A body declared at most ``transport.WHOLE_BODY_BYTES`` and not compressed
(``transport.small_body``) is read in one piece -- by the gateway's transport, before httpx
sees it, which hands back a closed response -- and handed to storage as ``bytes`` (one write
call, none of the streaming layers' per-chunk cost); the cap and the MP4 check hold the same.
Per kept video (the service keeps every one) the attempt's deadline is one timer handle
(:func:`_within`) and the headers are read once (``bench/keep.py``, docs/benchmarks.md 6.keep, the last section).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx

from gateway.errors import ProtocolError, ProviderError, RateLimited, Unavailable
from gateway.policies import backoff_s, retry_after_s
from gateway.storage.atomic_file import write_file
from gateway.storage.base import Chunks, ObjectTooLarge, ResultStorage, StoredObject
from gateway.transport import Phase, small_body, tag, unbound

#: a 9 s 1080p clip is ~10-30 MB; 1 GiB leaves room for any model we route to
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
DEFAULT_RETRIES = 2
RETRY_BASE_S = 1.0
RETRY_MAX_S = 30.0
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_CONTENT_TYPE = "video/mp4"
#: an ISO base-media file (MP4, MOV) has its ``ftyp`` box type at bytes 4..8
_MP4_BOX_TYPE = slice(4, 8)
_MP4_HEAD_BYTES = 8

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class MirrorOptions:
    max_bytes: int = DEFAULT_MAX_BYTES
    retries: int = DEFAULT_RETRIES
    #: the whole of one attempt: connect, headers and every byte of the body
    timeout_s: float = DEFAULT_TIMEOUT_S
    #: refuse bodies that are not MP4/MOV (an HTML error page served with 200, say)
    require_mp4: bool = True


@functools.lru_cache(maxsize=16)
def capped(max_bytes: int) -> MirrorOptions:
    """``MirrorOptions(max_bytes=max_bytes)``, one (frozen) object per cap: the service keeps
    every video with the same options, and a frozen dataclass costs a ``setattr`` per field."""
    return MirrorOptions(max_bytes=max_bytes)


def retry_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): the vendor's
    ``Retry-After`` when given, else exponential from ``RETRY_BASE_S``; capped."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_MAX_S)
    return backoff_s(attempt - 1, RETRY_BASE_S, RETRY_MAX_S)


async def mirror(
    client: httpx.AsyncClient,
    request: httpx.Request,
    storage: ResultStorage,
    key: str,
    *,
    provider: str,
    options: MirrorOptions = MirrorOptions(),
    sleep: Sleep = asyncio.sleep,
) -> StoredObject:
    """Download ``request``'s body into ``storage`` under ``key``.

    Raises ``Unavailable``/``RateLimited`` once retries are spent on transient
    failures, ``ProviderError`` for a refusal (403 on an expired URL, 404),
    ``ProtocolError`` for a body that is not a video, ``ObjectTooLarge`` past the cap.
    """
    # storage.put's own coroutine, not one awaiting it: a frame fewer on every resume
    put = functools.partial(storage.put, key, max_bytes=options.max_bytes)
    return await _fetch(client, request, put, provider, options, sleep)


async def download(
    client: httpx.AsyncClient,
    request: httpx.Request,
    path: Path,
    *,
    provider: str,
    options: MirrorOptions = MirrorOptions(),
    sleep: Sleep = asyncio.sleep,
) -> StoredObject:
    """:func:`mirror` into a file of the caller's choosing (``Gateway.download``): the same
    streamed, size-capped, checked and retried download, written all-or-nothing. The
    stored object's ``uri`` names the file by its absolute path."""
    target = await asyncio.to_thread(lambda: path.expanduser().resolve())

    async def put(body: Chunks, content_type: str) -> StoredObject:
        digest = await write_file(target, body, max_bytes=options.max_bytes)
        return StoredObject(target.as_uri(), digest.size, digest.sha256, content_type)

    return await _fetch(client, request, put, provider, options, sleep)


#: where a download's checked body goes: (body, content type) -> what was stored
Put = Callable[[Chunks, str], Awaitable[StoredObject]]


async def _fetch(client: httpx.AsyncClient, request: httpx.Request, put: Put, provider: str,
                 options: MirrorOptions, sleep: Sleep) -> StoredObject:
    for attempt in range(options.retries + 1):
        try:
            return await _within(options.timeout_s, _fetch_once(client, request, put, provider, options))
        except (Unavailable, RateLimited) as exc:
            if attempt == options.retries:
                raise
            await sleep(retry_delay(attempt + 1, getattr(exc, "retry_after", None)))
        except TimeoutError as exc:
            if attempt == options.retries:
                raise Unavailable(f"download took longer than {options.timeout_s:g} s", provider=provider) from exc
            await sleep(retry_delay(attempt + 1))
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _within(timeout_s: float, attempt: Coroutine[Any, Any, StoredObject]) -> StoredObject:
    """``await attempt``, cut off by ``TimeoutError`` after ``timeout_s``: what ``asyncio.timeout``
    does, with one timer handle and no more (its context manager, state enum and reschedule
    were ~3x the CPU of the timer itself, paid by every kept video). A cancel from outside
    stays a cancel; only this timer's own becomes ``TimeoutError``."""
    task = asyncio.current_task()
    if task is None:  # not in a task (never in the gateway): the stock context manager says why
        async with asyncio.timeout(timeout_s):
            return await attempt
    loop = asyncio.get_running_loop()
    cancelling = task.cancelling()
    expired: list[bool] = []
    timer = loop.call_at(loop.time() + timeout_s, _expire, task, expired)
    try:
        return await attempt
    except asyncio.CancelledError as exc:
        # ours only if it fired and no other cancel is pending on the task (as asyncio.timeout)
        if expired:
            expired.clear()
            if task.uncancel() <= cancelling:
                raise TimeoutError from exc
        raise
    finally:
        timer.cancel()
        if expired:  # fired, but the attempt ended some other way: its cancel is withdrawn
            task.uncancel()


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


async def _fetch_once(client: httpx.AsyncClient, request: httpx.Request, put: Put, provider: str,
                      options: MirrorOptions) -> StoredObject:
    try:
        response = await client.send(tag(request, provider, Phase.DOWNLOAD), stream=True)
    except httpx.TransportError as exc:
        raise Unavailable(f"download failed ({type(exc).__name__})", provider=provider) from exc
    try:
        status = response.status_code
        if status < 200 or status >= 300:
            _refuse(response, provider)
        if response.is_closed:  # read whole by the transport (a small body): its bytes are here
            body = response.content
            if len(body) > options.max_bytes:
                raise ObjectTooLarge(f"{provider}: the video is {len(body)} bytes, "
                                     f"over the {options.max_bytes}-byte limit")
            if options.require_mp4:
                _check_mp4_head(body, provider, whole=True)
            return await put(body, _content_type(response.headers))
        headers = response.headers
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > options.max_bytes:
            raise ObjectTooLarge(f"{provider}: the video is {declared} bytes, over the {options.max_bytes}-byte limit")
        if small_body(headers):  # another client's response: read it in one piece here
            body = await _read_whole(response, provider)
            if options.require_mp4:
                _check_mp4_head(body, provider, whole=True)
            return await put(body, _content_type(headers))
        return await put(_body(response, provider, options.require_mp4), _content_type(headers))
    finally:
        if not response.is_closed:
            await response.aclose()
        unbound(response)


async def _read_whole(response: httpx.Response, provider: str) -> bytes:
    try:
        return await response.aread()
    except httpx.TransportError as exc:
        raise Unavailable(f"download cut off ({type(exc).__name__})", provider=provider) from exc


def _refuse(response: httpx.Response, provider: str) -> NoReturn:
    """The error for an answer that is not a 2xx."""
    status = response.status_code
    if status == 429:
        raise RateLimited("download rate-limited (HTTP 429)", provider=provider, status_code=status,
                          retry_after=retry_after_s(response.headers))
    if status >= 500:
        raise Unavailable(f"download failed with HTTP {status}", provider=provider, status_code=status)
    raise ProviderError(f"download refused with HTTP {status}", provider=provider, status_code=status)


def _content_type(headers: httpx.Headers) -> str:
    """The declared ``video/...`` type, else MP4. One pass over the raw headers: httpx's
    ``get`` decodes every header of the answer on first use, then scans them again per name."""
    for name, value in headers.raw:
        if name.lower() == b"content-type":
            declared = value.decode("latin-1").split(";")[0].strip().lower()
            return declared if declared.startswith("video/") else DEFAULT_CONTENT_TYPE
    return DEFAULT_CONTENT_TYPE


async def _body(response: httpx.Response, provider: str, require_mp4: bool) -> AsyncIterator[bytes]:
    """The response body; transport failures mid-body become ``Unavailable`` (retryable)."""
    head = b""
    try:
        async for chunk in response.aiter_bytes():
            if require_mp4 and len(head) < _MP4_HEAD_BYTES:
                head += chunk
                _check_mp4_head(head, provider)
            yield chunk
    except httpx.TransportError as exc:
        raise Unavailable(f"download cut off ({type(exc).__name__})", provider=provider) from exc
    if require_mp4:
        _check_mp4_head(head, provider, whole=True)


def _check_mp4_head(head: bytes, provider: str, *, whole: bool = False) -> None:
    """``head`` (the body's first bytes, or all of it when ``whole``) starts an MP4/MOV."""
    if len(head) >= _MP4_HEAD_BYTES and head[_MP4_BOX_TYPE] != b"ftyp":
        raise ProtocolError("download is not an MP4 video (no 'ftyp' box)", provider=provider)
    if whole and len(head) < _MP4_HEAD_BYTES:
        raise ProtocolError(f"download is {len(head)} bytes, too short to be a video", provider=provider)
