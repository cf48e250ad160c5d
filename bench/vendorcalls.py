"""CPU per vendor call as ``reelgate serve`` makes them, over real sockets: one job's submit,
status poll and the download of its finished video, one call at a time.

    PYTHONPATH=. .venv/bin/python bench/vendorcalls.py [--jobs 2000] [--repeats 3]
    PYTHONPATH=/tmp/base .venv/bin/python bench/vendorcalls.py ...       # another tree
    valgrind --tool=callgrind .venv/bin/python bench/vendorcalls.py --jobs 200 --repeats 1

Each job is what the service does at the vendor for a create (section 6): ``VendorCalls.submit``
(the railwail adapter's create), ``VendorCalls.poll_until_done`` (one status call: the
upstream says ``completed`` at once; its poll wait is no sleep here) and the service's
:func:`~gateway.storage.mirror.mirror` of the video (1 KiB of MP4) into a storage that only
hashes it, all through ``make_client()`` with an observer on its timing as in the service.
The upstream is ``bench.service``'s (:func:`bench.upstream.upstream_app`) in its own
process, so this process's CPU is the client side only: adapters, the core's call code,
httpx, the aiohttp transport and aiohttp. Unlike ``bench.sendpath --adapters``, aiohttp's
session and connection code run for real.

``--upstream URL`` uses a running upstream (two trees measured against the same one).
Under callgrind (``--repeats 1``) the instructions per job are the difference between two
runs with different ``--jobs`` divided by the difference in jobs: start-up cancels out, and
the count does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

from bench.common import free_port, machine
from bench.service import UPSTREAM_KEY, process
from gateway.config import PollingConfig, Settings
from gateway.job import Attempt, VideoJob
from gateway.pricing import Quote
from gateway.provider import ProviderSettings, Secret
from gateway.request import VideoRequest
from gateway.routing import Candidate
from gateway.storage.base import Chunks, ResultStorage, StoredObject, iter_chunks
from gateway.storage.mirror import mirror
from gateway.transport import GatewayClient, make_client
from gateway.vendor_calls import LiveAttempt, VendorCalls
from providers.railwail.adapter import RailwailAdapter


class HashOnly(ResultStorage):
    """Result storage that keeps nothing: the download's cost without the file's."""

    def uri_for(self, key: str) -> str:
        return f"mem://{key}"

    async def put(self, key: str, chunks: Chunks, content_type: str, *,
                  max_bytes: int | None = None) -> StoredObject:
        sha, size = hashlib.sha256(), 0
        if isinstance(chunks, bytes):
            sha.update(chunks)
            size = len(chunks)
        else:
            async for chunk in iter_chunks(chunks):
                sha.update(chunk)
                size += len(chunk)
        return StoredObject(self.uri_for(key), size, sha.hexdigest(), content_type)

    async def open(self, uri: str) -> AsyncIterator[bytes]:
        raise NotImplementedError
        yield b""  # pragma: no cover

    async def exists(self, uri: str) -> bool:
        return False

    async def delete(self, uri: str) -> bool:
        return False


async def no_sleep(_seconds: float) -> None:
    pass


def railwail_job_parts(upstream: str, client: GatewayClient
                       ) -> tuple[RailwailAdapter, VendorCalls, HashOnly, Quote, VideoRequest]:
    """What one job's three calls need: the railwail adapter at ``upstream``, the service's call
    code on ``client`` (its timing observed, as in the service), a storage that only hashes,
    and a request with its quote (also ``bench/rustclient.py``'s)."""
    settings = Settings(polling=PollingConfig(initial_s=0.01, max_s=0.01))
    adapter = RailwailAdapter(ProviderSettings("railwail", api_key=Secret(UPSTREAM_KEY), credential_ref="env:K",
                                               base_url=f"{upstream}/api/v1"))
    client.timing.observers.append(lambda *_call: None)  # as in the service: every call is timed
    calls = VendorCalls(client, settings, no_sleep, random.Random(0))
    request = VideoRequest(prompt="a red fox in fresh snow", resolution="540p")
    quote = adapter.quote(request).quote
    assert quote is not None
    return adapter, calls, HashOnly(), quote, request


def measure(upstream: str, jobs: int, repeats: int) -> dict[str, float]:
    """Microseconds of CPU per call of each kind, best of ``repeats`` runs of ``jobs`` jobs.

    The measured runs go through ``functools.reduce`` (a C function) so that callgrind can
    count them alone: ``--collect-atstart=no --toggle-collect=functools_reduce``."""
    client = make_client()
    adapter, calls, storage, quote, request = railwail_job_parts(upstream, client)
    spent = {"submit": 0.0, "status": 0.0, "download": 0.0}
    best = dict.fromkeys(spent, float("inf"))

    async def job() -> None:
        vjob = VideoJob(request)
        attempt = Attempt("railwail", quote.vendor_model, time.time(), f"{vjob.id}.1", estimated_usd=Decimal(0))
        live = LiveAttempt(adapter, attempt, Candidate("railwail", quote, 30.0))
        started = time.process_time()
        attempt.vendor_job = await calls.submit(live, vjob)
        submitted = time.process_time()
        result = await calls.poll_until_done(live, vjob, lambda _job: None)
        polled = time.process_time()
        await mirror(client, adapter.build_download(attempt.vendor_job, result), storage, f"jobs/{vjob.id}.mp4",
                     provider="railwail")
        spent["submit"] += submitted - started
        spent["status"] += polled - submitted
        spent["download"] += time.process_time() - polled

    async def run(count: int) -> None:
        spent.update(dict.fromkeys(spent, 0.0))
        for _ in range(count):
            await job()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run(20))  # the connection opened, every path warmed
        for _ in range(repeats):
            functools.reduce(lambda _none, _item: loop.run_until_complete(run(jobs)), [0], None)
            for name, seconds in spent.items():
                best[name] = min(best[name], seconds / jobs * 1e6)
        loop.run_until_complete(client.aclose())
    finally:
        loop.close()
    return best


@contextlib.contextmanager
def upstream_process() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process([sys.executable, "-m", "bench.service", "--upstream-port", str(port)], f"{url}/_sandbox/stats"):
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--upstream", help="a running bench.service upstream (else one is started)")
    args = parser.parse_args()
    import gc

    gc.freeze()  # as `reelgate serve` does once started
    with contextlib.nullcontext(args.upstream) if args.upstream else upstream_process() as url:
        best = measure(url, args.jobs, args.repeats)
    print(f"# {machine()}; {args.jobs} jobs x {args.repeats}, best run; one call at a time over loopback")
    for name, us in best.items():
        print(f"{name:10s} {us:7.1f} us CPU per call")
    print(f"{'job':10s} {sum(best.values()):7.1f} us CPU (three calls)")


if __name__ == "__main__":
    main()
