"""The load generator of ``bench.service``: ``concurrency`` workers doing create + retrieve pairs.

Each worker, in a loop: ``POST /v1/videos`` (the same JSON body every time), then
``GET /v1/videos/{id}`` with the id from the POST's answer, both over the worker's own
HTTP/1.1 keep-alive connection; a pair's latency runs from before the POST is sent to the
GET's whole answer read. Two clients do that, with the same requests on the wire (the
same headers but ``User-Agent``):

- ``httptools`` (the default): each connection an asyncio protocol writing the request's
  bytes (built once, but for the GET's id) and parsing the answer with httptools, the
  parser uvicorn uses. ~0.07 ms of CPU per pair against aiohttp's ~0.3 on this machine
  (docs/benchmarks.md 6.metrics2): the load generator shares the two cores with the
  service it measures, so what it does not spend the service (or LiteLLM's proxy, measured
  the same way) gets.
- ``aiohttp``: a ``ClientSession`` with a pool of ``concurrency`` connections, what the
  figures before 2026-12-01 17:00 UTC were measured with (``bench.service --loadgen aiohttp``).

The result carries this process's own CPU per pair (``loadgen_cpu_ms_per_pair``: user +
system time from the first request to the last, over every pair done, the warm-up's too).

With ``REELGATE_TAIL_PROBE`` set to a folder (``bench.tail``) it also writes each measured
pair's wall-clock start, its POST's and the whole pair's latency, and the measured window,
to ``<folder>/pairs-<pid>.json``, for lining the pairs up with what the probed processes
recorded (bench/tail_probe).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from bench.common import median, percentile

#: the clients ``load`` can send with
CLIENTS = ("httptools", "aiohttp")

#: one worker's pair of calls: (POST's status and body) and (GET's status) for a video id
Create = Callable[[], Awaitable[tuple[int, bytes]]]
Retrieve = Callable[[str], Awaitable[int]]


class HttpError(Exception):
    """The connection broke, or its answer could not be parsed."""


async def load(url: str, key: str, seconds: float, concurrency: int, warmup_s: float, model: str,
               client: str = "httptools") -> dict[str, object]:
    """``concurrency`` workers doing create + retrieve pairs; pairs that finished in the
    ``seconds`` after ``warmup_s`` are counted."""
    body = json.dumps({"prompt": "a red fox in fresh snow", "model": model, "seconds": "5", "size": "960x540"})
    latencies: list[float] = []
    creates: list[float] = []  # the POST alone, for what the service adds to a create
    traced: list[tuple[float, float, float]] = []  # (wall start, POST s, pair s): REELGATE_TAIL_PROBE only
    trace = os.environ.get("REELGATE_TAIL_PROBE")
    failed, done = [0], [0]
    errors: dict[str, int] = {}
    opened = _aiohttp_workers(url, key, body, concurrency) if client == "aiohttp" else _raw_workers(url, key, body)
    async with opened as (worker_calls, caught):
        cpu_at_start = own_cpu_s()
        start = time.perf_counter()
        measure_from, stop_at = start + warmup_s, start + warmup_s + seconds

        async def worker() -> None:
            async with worker_calls() as (create, retrieve):
                while (began := time.perf_counter()) < stop_at:
                    ok, posted = False, 0.0
                    try:
                        status, created = await create()
                        posted = time.perf_counter() - began
                        if status == 200 and measure_from <= time.perf_counter() <= stop_at:
                            creates.append(posted)
                        if status == 200:
                            status = await retrieve(json.loads(created)["id"])
                            ok = status == 200
                        if not ok:
                            errors[str(status)] = errors.get(str(status), 0) + 1
                    except caught as exc:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    ended = time.perf_counter()
                    done[0] += ok
                    if measure_from <= ended <= stop_at:  # finished in the window (a slow server's pairs too)
                        if ok:
                            latencies.append(ended - began)
                            if trace:
                                traced.append((time.time() - (ended - began), posted, ended - began))
                        else:
                            failed[0] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        # this process's CPU for every pair (the warm-up's too, as the service's CPU is counted)
        cpu_ms_per_pair = (own_cpu_s() - cpu_at_start) * 1000 / max(done[0], 1)
    if trace:
        at_start = time.time() - (time.perf_counter() - start)  # the wall clock at ``start``
        _write_trace(trace, (at_start + warmup_s, at_start + warmup_s + seconds), traced)
    return {"pairs": len(latencies), "all_pairs": done[0], "seconds": seconds, "failed": failed[0], "errors": errors,
            "loadgen_cpu_ms_per_pair": cpu_ms_per_pair, "loadgen": client,
            "p50_ms": median(latencies) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
            "post_p99_ms": percentile(creates, 99) * 1000}


# -- httptools: a keep-alive connection per worker ---------------------------------------------

class Connection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection carrying one request at a time; its answers are
    parsed by httptools (bodies by ``Content-Length`` or chunked, as the server sends)."""

    def __init__(self) -> None:
        import httptools

        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.parse_error: type[Exception] = httptools.HttpParserError
        self.body: list[bytes] = []
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.usable = True  # false once closed, broken, or answered with ``Connection: close``

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except self.parse_error as exc:
            self._fail(HttpError(f"unparsable answer: {exc}"))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.usable = self.parser.should_keep_alive()
        body, self.body = b"".join(self.body), []
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), body))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(HttpError("the server closed the connection" if exc is None else str(exc)))

    def _fail(self, exc: Exception) -> None:
        self.usable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Write the request; the future is its answer's status and whole body."""
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)  # type: ignore[union-attr]
        return self.waiter

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()


@asynccontextmanager
async def _raw_workers(url: str, key: str, body: str) -> AsyncIterator[tuple[Any, tuple[type[Exception], ...]]]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    # the headers aiohttp sends, in its order (only User-Agent differs)
    head = (f"Host: {parts.netloc}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
            f"User-Agent: Python/{'.'.join(platform.python_version_tuple()[:2])} reelgate-bench\r\n")
    post = f"POST /v1/videos HTTP/1.1\r\n{head}Content-Length: {len(body.encode())}\r\n\r\n{body}".encode()
    get_tail = f" HTTP/1.1\r\n{head}\r\n".encode()
    loop = asyncio.get_running_loop()

    @asynccontextmanager
    async def worker_calls() -> AsyncIterator[tuple[Create, Retrieve]]:
        conn: list[Connection] = []  # the worker's connection, opened again when the last is unusable

        async def send(request: bytes) -> tuple[int, bytes]:
            if not conn or not conn[0].usable:
                if conn:
                    conn.pop().close()
                conn.append((await loop.create_connection(Connection, host, port))[1])
            return await conn[0].send(request)

        async def create() -> tuple[int, bytes]:
            return await send(post)

        async def retrieve(video_id: str) -> int:
            return (await send(b"GET /v1/videos/" + video_id.encode() + get_tail))[0]

        try:
            yield create, retrieve
        finally:
            if conn:
                conn[0].close()

    yield worker_calls, (HttpError, OSError, KeyError, ValueError)


# -- aiohttp: one session, a pool of connections -----------------------------------------------

@asynccontextmanager
async def _aiohttp_workers(url: str, key: str, body: str,
                           concurrency: int) -> AsyncIterator[tuple[Any, tuple[type[Exception], ...]]]:
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        @asynccontextmanager
        async def worker_calls() -> AsyncIterator[tuple[Create, Retrieve]]:
            async def create() -> tuple[int, bytes]:
                async with session.post(f"{url}/v1/videos", data=body, headers=headers) as r:
                    return r.status, await r.read()

            async def retrieve(video_id: str) -> int:
                async with session.get(f"{url}/v1/videos/{video_id}", headers=headers) as g:
                    await g.read()
                    return g.status

            yield create, retrieve

        yield worker_calls, (aiohttp.ClientError, OSError, KeyError, ValueError)


def own_cpu_s() -> float:
    """CPU seconds (user + system) this process has used, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _write_trace(folder: str, window: tuple[float, float], pairs: list[tuple[float, float, float]]) -> None:
    with open(os.path.join(folder, f"pairs-{os.getpid()}.json"), "w") as out:
        json.dump({"window": window, "pairs": pairs}, out)
