"""Process CPU per job (a job's three vendor calls: submit POST, status GET, content GET of
1 KiB) with HTTP clients whose HTTP work runs in Rust (pyreqwest, pyqwest, rnet) or in libcurl
(httpx-pycurl), against the current ``make_client()`` path over aiohttp, all in one process,
alternating rounds, one job at a time and 64 jobs in flight.

    PYTHONPATH=. .venv/bin/python bench/rustclient.py [--jobs 1000] [--rounds 5] [--concurrency 1 64]
    PYTHONPATH=. .venv/bin/python bench/rustclient.py --errors      # the failure table only

(needs ``.venv/bin/pip install pyreqwest==0.15.1 pyqwest==0.12.0 rnet==2.4.2 httpx-pycurl==0.0.6``;
a missing one is skipped.)

CPU is ``time.process_time()``: every thread of the process, user and system, so the Rust
clients' Tokio threads and libcurl are counted with the event loop. The upstream is
``bench.vendorcalls``'s (``bench.upstream`` under uvicorn, in its own process; ``--upstream
URL`` uses a running one), so only the client side is measured. Modes:

* ``a:gateway`` -- a job as ``bench/vendorcalls.py`` makes it: the railwail adapter,
  ``VendorCalls.submit``/``poll_until_done``, the mirror into a hashing storage, through
  ``make_client()`` (``GatewayClient`` over ``AiohttpTransport``), its timing observed.
* ``b:<client>`` -- the same three HTTP requests (method, URL, headers, JSON body captured from
  ``a``'s path) sent directly with that client's asyncio API, each answer read whole and the
  two JSON answers ``json.loads``-ed (the submit's for the id). ``b:aiohttp`` is the same with a
  bare ``aiohttp.ClientSession``, the like-for-like floor of today's library.
* ``c:<client>`` -- ``a``'s job with ``GatewayClient`` over an ``httpx.AsyncBaseTransport`` on
  that client: ``own`` is this file's (answers read whole, as ``AiohttpTransport`` does for
  vendor calls; errors mapped by whether the request may have been sent), ``stock`` the one
  the library ships (pyreqwest's ``HttpxTransport``, pyqwest's ``AsyncPyqwestTransport``,
  httpx-pycurl's ``AsyncPyCurlTransport``).

Each batch is preceded by a warm-up (connections opened, 64 of them at 64 in flight); the
modes' order rotates each round; the table gives each mode's median µs CPU per job and its
ratio to ``a:gateway``'s median.

``--errors`` sends a submit-shaped POST with each client (direct and behind ``GatewayClient``
through ``gateway.transport.send`` with ``Phase.SUBMIT``) at loopback servers that fail in
known ways and prints what each raised and what the gateway made of it (``Unavailable``: "never
sent", safe to go elsewhere; ``AmbiguousSubmit``: "may have reached the vendor").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import httpx

from bench.common import machine
from bench.rustclient_errors import errors
from bench.rustclient_transports import (
    LIMITS,
    TIMEOUT,
    ClientBuilder,
    plain_headers,
    pyqwest,
    pyqwest_transport,
    pyreqwest_client,
    rnet,
    rnet_client,
    transports,
)
from bench.vendorcalls import railwail_job_parts, upstream_process
from gateway.job import Attempt, VideoJob
from gateway.routing import Candidate
from gateway.storage.mirror import mirror
from gateway.transport import AiohttpTransport, GatewayClient, make_client
from gateway.vendor_calls import LiveAttempt

# -- jobs ----------------------------------------------------------------------------------

Job = Callable[[], Awaitable[None]]


def gateway_job(upstream: str, client: GatewayClient) -> Job:
    """``bench/vendorcalls.py``'s job, through ``client``."""
    adapter, calls, storage, quote, request = railwail_job_parts(upstream, client)

    async def job() -> None:
        vjob = VideoJob(request)
        attempt = Attempt("railwail", quote.vendor_model, time.time(), f"{vjob.id}.1", estimated_usd=Decimal(0))
        live = LiveAttempt(adapter, attempt, Candidate("railwail", quote, 30.0))
        attempt.vendor_job = await calls.submit(live, vjob)
        result = await calls.poll_until_done(live, vjob, lambda _job: None)
        stored = await mirror(client, adapter.build_download(attempt.vendor_job, result), storage,
                              f"jobs/{vjob.id}.mp4", provider="railwail")
        assert stored.size_bytes == 1024, stored
    return job


class Capture(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.seen = inner, []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, str(request.url), plain_headers(request.headers), request.content))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def capture(upstream: str) -> list[tuple[str, str, list[tuple[str, str]], bytes]]:  # (method, URL, headers, body)
    """The three requests of one gateway job: (method, URL, headers, body)."""
    transport = Capture(AiohttpTransport(LIMITS))

    async def once() -> None:
        client = GatewayClient(transport, TIMEOUT)
        await gateway_job(upstream, client)()
        await client.aclose()
    asyncio.run(once())
    assert [s[0] for s in transport.seen] == ["POST", "GET", "GET"], transport.seen
    return transport.seen


Seen = list[tuple[str, str, list[tuple[str, str]], bytes]]
Mode = Callable[[], tuple[Job, Callable[[], Awaitable[None]]]]


def direct_jobs(upstream: str, seen: Seen) -> dict[str, Mode]:
    """Factories of ``b:`` modes: each gives (job, close)."""
    (_, post_url, post_h, body), (_, status_url, status_h, _), (_, content_url, content_h, _) = seen
    vid = status_url.rsplit("/", 1)[1]
    status_tpl, content_tpl = status_url.replace(vid, "{}"), content_url.replace(vid, "{}")

    def check(status: int, data: bytes, n: int | None = None) -> None:
        assert status == 200 and (n is None or len(data) == n), (status, data[:100])

    def aiohttp_mode() -> tuple[Job, Any]:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=LIMITS.total, limit_per_host=LIMITS.per_host, keepalive_timeout=LIMITS.keepalive_s),
            cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=30))

        async def job() -> None:
            async with session.post(post_url, headers=post_h, data=body) as r:
                data = await r.read()
                check(r.status, data)
            vid = json.loads(data)["id"]
            async with session.get(status_tpl.format(vid), headers=status_h) as r:
                data = await r.read()
                check(r.status, data)
            json.loads(data)
            async with session.get(content_tpl.format(vid), headers=content_h) as r:
                check(r.status, await r.read(), 1024)
        return job, session.close

    def pyreqwest_mode() -> tuple[Job, Any]:
        client = pyreqwest_client()

        async def job() -> None:
            r = await client.post(post_url).headers(post_h).body_bytes(body).build().send()
            data = bytes(await r.bytes())
            check(r.status, data)
            vid = json.loads(data)["id"]
            r = await client.get(status_tpl.format(vid)).headers(status_h).build().send()
            data = bytes(await r.bytes())
            check(r.status, data)
            json.loads(data)
            r = await client.get(content_tpl.format(vid)).headers(content_h).build().send()
            check(r.status, bytes(await r.bytes()), 1024)
        return job, client.close

    def pyqwest_mode() -> tuple[Job, Any]:
        client = pyqwest.Client(pyqwest_transport())

        async def job() -> None:
            r = await client.post(post_url, post_h, body)
            check(r.status, r.content)
            vid = json.loads(r.content)["id"]
            r = await client.get(status_tpl.format(vid), status_h)
            check(r.status, r.content)
            json.loads(r.content)
            r = await client.get(content_tpl.format(vid), content_h)
            check(r.status, r.content, 1024)

        async def close() -> None:
            pass
        return job, close

    def rnet_mode() -> tuple[Job, Any]:
        client = rnet_client()
        ph, sh, ch = dict(post_h), dict(status_h), dict(content_h)

        async def job() -> None:
            r = await client.post(post_url, headers=ph, body=body)
            data = await r.bytes()
            check(r.status, data)
            vid = json.loads(data)["id"]
            r = await client.get(status_tpl.format(vid), headers=sh)
            data = await r.bytes()
            check(r.status, data)
            json.loads(data)
            r = await client.get(content_tpl.format(vid), headers=ch)
            check(r.status, await r.bytes(), 1024)

        async def close() -> None:
            pass
        return job, close

    modes: dict[str, Any] = {"b:aiohttp": aiohttp_mode}
    if ClientBuilder is not None:
        modes["b:pyreqwest"] = pyreqwest_mode
    if pyqwest is not None:
        modes["b:pyqwest"] = pyqwest_mode
    if rnet is not None:
        modes["b:rnet"] = rnet_mode
    return modes


def measure(upstream: str, jobs: int, rounds: int, concurrency: list[int],
            only: list[str] | None) -> dict[tuple[str, int], list[float]]:
    seen = capture(upstream)
    factories: dict[str, Callable[[], tuple[Job, Any]]] = {}

    def gateway_mode(transport: Callable[[], httpx.AsyncBaseTransport] | None) -> Callable[[], tuple[Job, Any]]:
        def make() -> tuple[Job, Any]:
            client = make_client() if transport is None else GatewayClient(transport(), TIMEOUT)
            return gateway_job(upstream, client), client.aclose
        return make

    factories["a:gateway"] = gateway_mode(None)
    factories.update(direct_jobs(upstream, seen))
    for name, transport in transports().items():
        factories[name] = gateway_mode(transport)
    if only:
        factories = {k: v for k, v in factories.items() if k == "a:gateway" or any(o in k for o in only)}
    results: dict[tuple[str, int], list[float]] = {}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    made = {name: loop.run_until_complete(_made(factory)) for name, factory in factories.items()}

    async def batch(job: Job, count: int, width: int) -> None:
        left = count

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await job()
        await asyncio.gather(*(worker() for _ in range(width)))

    names = list(made)
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for width in concurrency:
                for name in order:
                    job = made[name][0]
                    loop.run_until_complete(batch(job, max(2 * width, 20), width))  # warm: connections open
                    start, start_thread = time.process_time(), time.thread_time()
                    loop.run_until_complete(batch(job, jobs, width))
                    us = (time.process_time() - start) / jobs * 1e6
                    results.setdefault((name, width), []).append(us)
                    thread_us = (time.thread_time() - start_thread) / jobs * 1e6
                    results.setdefault((f"{name} [loop thread]", width), []).append(thread_us)
            print(f"# round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    finally:
        for _job, close in made.values():
            with contextlib.suppress(Exception):
                loop.run_until_complete(close())
        loop.close()
    return results


async def _made(factory: Callable[[], tuple[Job, Any]]) -> tuple[Job, Any]:
    return factory()  # inside the loop: some clients bind to the running loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--only", nargs="*", help="modes whose name contains one of these (and a:gateway)")
    parser.add_argument("--upstream", help="a running bench.service upstream (else one is started)")
    parser.add_argument("--errors", action="store_true", help="the failure table only")
    args = parser.parse_args()
    if args.errors:
        errors()
        return
    import gc

    gc.freeze()  # as `reelgate serve` does once started
    with contextlib.nullcontext(args.upstream) if args.upstream else upstream_process() as url:
        results = measure(url, args.jobs, args.rounds, args.concurrency, args.only)
    print(f"# {machine()}; {args.jobs} jobs per batch x {args.rounds} rounds, modes alternating;"
          " process CPU (all threads, user+system) per job of three calls, and the event loop's thread alone")
    for width in args.concurrency:
        base = results[("a:gateway", width)]
        print(f"\n{width} in flight: median us CPU per job (rounds); x a = median over rounds of a's / this,"
              " within the round")
        for part in ("", " [loop thread]"):
            base = results[(f"a:gateway{part}", width)]
            for (name, w), values in results.items():
                if w == width and name.endswith(part) and (part or "[" not in name):
                    ratio = statistics.median(b / v for b, v in zip(base, values, strict=True))
                    print(f"{name:34s} {statistics.median(values):7.1f}  x{ratio:4.2f}   "
                          f"{' '.join(f'{v:.0f}' for v in values)}")

if __name__ == "__main__":
    main()
