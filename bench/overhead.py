"""What does the gateway add over hand-written HTTP? Latency per job and throughput.

    python -m bench.overhead [--jobs 1280] [--concurrency 64] [--poll-s 0.005]
                             [--run-s 0] [--server sandbox|stub] [--profile] [--no-gc-freeze]
    python -m bench.overhead --compare-transports --server stub [--pairs 2000] [--rounds 3]

The same workload runs twice, each against a fresh server process: through
``Gateway`` (polling overridden to a fixed cadence) and through a raw aiohttp client
making the same calls (the fal adapter's submit, status polls at the same cadence,
the result GET). A job's *work time* is its wall time minus the time it deliberately
slept between polls, so poll jitter does not count as overhead; the gateway's added
latency is the difference of the two work-time distributions at the median and p99.

``--server sandbox`` is the fal emulator in ``reelgate sandbox``; ``--server stub`` a
fal-shaped server that does no work (bench.common.stub_app), for when the emulator
rather than the client is the bottleneck. ``--profile`` runs the gateway pass under
cProfile and prints where its time goes.

``--compare-transports`` instead measures submit+status pairs/s at ``--concurrency``
through each candidate client: httpx 0.28's default transport (httpcore),
``httpx_aiohttp.AiohttpTransport``, the gateway's ``make_client()``, ``httpx2`` (another
client: requests converted) and raw aiohttp as the ceiling; rounds are interleaved so
drift hits every candidate alike, and failed pairs are counted, not hidden.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import cProfile
import json
import pstats
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import aiohttp
import httpx

from bench.common import (
    machine,
    median,
    percentile,
    sandbox_process,
    set_timing,
    stub_process,
)
from gateway.api import Gateway
from gateway.config import PollingConfig, ProviderConfig, Settings
from gateway.job import JobStatus
from gateway.request import Resolution, VideoRequest
from gateway.sandboxed import sandbox_settings
from gateway.serving import tune_collector
from gateway.transport import make_client
from providers.fal.adapter import FalAdapter

#: every vendor but fal is switched off, so both paths talk to the same emulator
OTHER_VENDORS = ("apiframe", "railwail", "openai_video", "toyvendor")
#: targets from the issue
TARGET_MEDIAN_MS, TARGET_P99_MS, TARGET_THROUGHPUT_SHARE = 1.0, 3.0, 0.5

Pair = Callable[[], Awaitable[None]]

#: seconds the current job has slept on purpose; each job's task has its own box
_slept: contextvars.ContextVar[list[float]] = contextvars.ContextVar("slept")


async def counted_sleep(seconds: float) -> None:
    box = _slept.get(None)
    if box is not None:
        box[0] += seconds
    await asyncio.sleep(seconds)


@dataclass
class Pass:
    """One path's figures: per-job work times (s) and the batch's wall time."""

    name: str
    work_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    #: CPU seconds this process spent on the batch (the client side's whole cost)
    cpu_s: float = 0.0
    failed: int = 0

    @property
    def jobs_per_s(self) -> float:
        return len(self.work_s) / self.wall_s if self.wall_s else 0.0


async def run_batch(name: str, job: Callable[[], Awaitable[bool]], jobs: int, concurrency: int) -> Pass:
    """``jobs`` runs of ``job`` with at most ``concurrency`` at once."""
    result = Pass(name)
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            box = [0.0]
            _slept.set(box)  # inherited by every task the job starts
            started = time.perf_counter()
            ok = await job()
            work = time.perf_counter() - started - box[0]
            if ok:
                result.work_s.append(work)
            else:
                result.failed += 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(jobs)))
    result.wall_s = time.perf_counter() - started
    result.cpu_s = time.process_time() - cpu
    return result


# -- the two paths -----------------------------------------------------------------------------

def bench_request() -> VideoRequest:
    return VideoRequest(prompt="a red fox in fresh snow", resolution="540p")


def gateway_settings(poll_s: float) -> Settings:
    return Settings(providers={name: ProviderConfig(enabled=False) for name in OTHER_VENDORS},
                    polling=PollingConfig(initial_s=poll_s, max_s=poll_s))


async def gateway_pass(url: str, jobs: int, concurrency: int, poll_s: float) -> Pass:
    request = bench_request()
    async with Gateway.from_settings(gateway_settings(poll_s), sandbox_url=url, sleep=counted_sleep) as gw:
        async def job() -> bool:
            done = await gw.wait(await gw.submit(request))
            return done.status is JobStatus.SUCCEEDED

        await job()  # warm the pool
        return await run_batch("gateway", job, jobs, concurrency)


async def raw_pass(url: str, jobs: int, concurrency: int, poll_s: float) -> Pass:
    """The same calls by hand: one aiohttp session, JSON parsed with ``json.loads``."""
    adapter = FalAdapter(sandbox_settings("fal", url, Settings()))
    built = adapter.build_submit(bench_request(), resolution=Resolution.P540, attempt_key="raw")
    headers = {"Authorization": built.headers["authorization"], "Accept": "application/json",
               "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def job() -> bool:
            async with session.post(str(built.url), data=built.content, headers=headers) as r:
                answer = json.loads(await r.read())
            while True:
                await counted_sleep(poll_s)
                async with session.get(answer["status_url"], params={"logs": "1"}, headers=headers) as r:
                    status = json.loads(await r.read())
                if status["status"] == "COMPLETED":
                    break
            async with session.get(answer["response_url"], headers=headers) as r:
                return "video" in json.loads(await r.read())

        await job()
        return await run_batch("raw aiohttp", job, jobs, concurrency)


# -- --compare-transports: which transport should make_client() use? --------------------------

@dataclass(frozen=True)
class Call:
    """One pre-built submit: what every candidate sends, so only the client differs."""

    url: str
    headers: dict[str, str]
    body: bytes


def submit_call(sandbox_url: str) -> Call:
    adapter = FalAdapter(sandbox_settings("fal", sandbox_url, Settings()))
    built = adapter.build_submit(VideoRequest(prompt="bench"), resolution=Resolution.P540, attempt_key="b")
    headers = {k: v for k, v in built.headers.items() if k.lower() not in ("content-length", "host")}
    return Call(str(built.url), headers, built.content)


def httpx_pair(client: httpx.AsyncClient, call: Call) -> Pair:
    async def pair() -> None:
        submitted = await client.post(call.url, headers=call.headers, content=call.body)
        status_url = submitted.json()["status_url"]
        (await client.get(status_url, headers=call.headers)).raise_for_status()
    return pair


def aiohttp_pair(session: aiohttp.ClientSession, call: Call) -> Pair:
    async def pair() -> None:
        async with session.post(call.url, headers=call.headers, data=call.body) as r:
            status_url = json.loads(await r.read())["status_url"]
        async with session.get(status_url, headers=call.headers) as r:
            await r.read()
            r.raise_for_status()
    return pair


async def pairs_per_s(pair: Pair, pairs: int, concurrency: int) -> tuple[float, int]:
    """Completed pairs per second, and how many pairs failed (a transport error is a result too)."""
    remaining = iter(range(pairs))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for _ in remaining:
            try:
                await pair()
            except (httpx.HTTPError, aiohttp.ClientError, httpx2_errors()) as exc:
                failed += 1
                print(f"  {type(exc).__name__}: {exc}", file=sys.stderr)

    await pair()  # warm the pool
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (pairs - failed) / (time.perf_counter() - started), failed


def httpx2_errors() -> type[Exception]:
    import httpx2  # only a candidate under measurement, not a gateway dependency

    return httpx2.HTTPError


async def compare_transports(sandbox_url: str, pairs: int, concurrency: int, rounds: int) -> dict[str, list[float]]:
    import httpx2  # only a candidate under measurement, not a gateway dependency
    from httpx_aiohttp import AiohttpTransport

    call = submit_call(sandbox_url)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients: dict[str, object] = {
        "httpx 0.28 default (httpcore)": httpx.AsyncClient(limits=limits),
        "httpx + httpx_aiohttp.AiohttpTransport": httpx.AsyncClient(transport=AiohttpTransport(limits=limits)),
        "gateway make_client()": make_client(),
        "httpx2": httpx2.AsyncClient(limits=httpx2.Limits(max_connections=concurrency,
                                                           max_keepalive_connections=concurrency)),
        "raw aiohttp": aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)),
    }
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in clients}
    for _ in range(rounds):
        for name, client in clients.items():
            pair = aiohttp_pair(client, call) if isinstance(client, aiohttp.ClientSession) else httpx_pair(client, call)
            results[name].append(await pairs_per_s(pair, pairs, concurrency))
            print(f"{name}: {results[name][-1][0]:.0f} pairs/s, {results[name][-1][1]} failed", file=sys.stderr)
    for client in clients.values():
        await (client.close() if isinstance(client, aiohttp.ClientSession) else client.aclose())
    return results


# -- running and reporting ---------------------------------------------------------------------

@contextlib.contextmanager
def fresh_server(kind: str, run_s: float) -> Iterator[str]:
    """A new server process per pass, so neither pass inherits the other's jobs."""
    if kind == "stub":
        with stub_process() as url:
            yield url
        return
    with sandbox_process() as url:
        set_timing(url, {"fal": {"queue_s": 0, "run_s": run_s}})
        yield url


def report_transports(results: dict[str, list[tuple[float, int]]], args: argparse.Namespace) -> None:
    print(f"# {machine()}; {args.pairs} submit+status pairs x {args.rounds} rounds, "
          f"{args.concurrency} concurrent, {args.server} server in a separate process")
    print(f"{'transport':42} {'pairs/s (median)':>17} {'failed':>7}  rounds")
    for name, runs in results.items():
        rates = [rate for rate, _ in runs]
        failed = sum(f for _, f in runs)
        print(f"{name:42} {median(rates):17.0f} {failed:7d}  {' '.join(f'{r:.0f}' for r in rates)}")


def report(raw: Pass, gw: Pass, args: argparse.Namespace) -> None:
    added_med = (median(gw.work_s) - median(raw.work_s)) * 1000
    added_p99 = (percentile(gw.work_s, 99) - percentile(raw.work_s, 99)) * 1000
    share = gw.jobs_per_s / raw.jobs_per_s if raw.jobs_per_s else 0.0
    print(f"# {machine()}; {args.jobs} jobs, {args.concurrency} concurrent, poll every {args.poll_s * 1000:g} ms, "
          f"emulated run {args.run_s:g} s, {args.server} server in a separate process, "
          f"serve's collector policy {'off' if args.no_gc_freeze else 'on'}")
    print(f"{'path':12} {'work median ms':>15} {'work p99 ms':>12} {'jobs/s':>8} {'CPU ms/job':>11} {'failed':>7}")
    for p in (raw, gw):
        print(f"{p.name:12} {median(p.work_s) * 1000:15.2f} {percentile(p.work_s, 99) * 1000:12.2f} "
              f"{p.jobs_per_s:8.0f} {p.cpu_s / max(len(p.work_s), 1) * 1000:11.2f} {p.failed:7d}")
    print(f"added by the gateway: median {added_med:.2f} ms (target <= {TARGET_MEDIAN_MS:g}: "
          f"{'met' if added_med <= TARGET_MEDIAN_MS else 'NOT met'}), p99 {added_p99:.2f} ms (target <= "
          f"{TARGET_P99_MS:g}: {'met' if added_p99 <= TARGET_P99_MS else 'NOT met'})")
    print(f"throughput: gateway {share:.0%} of raw aiohttp (target >= {TARGET_THROUGHPUT_SHARE:.0%}: "
          f"{'met' if share >= TARGET_THROUGHPUT_SHARE else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1280)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--poll-s", type=float, default=0.005)
    parser.add_argument("--run-s", type=float, default=0.0, help="emulated run time (sandbox only)")
    parser.add_argument("--server", choices=["sandbox", "stub"], default="sandbox")
    parser.add_argument("--profile", action="store_true", help="cProfile the gateway pass")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="CPython's collector as it starts (no freeze, young collections every 700 allocations)")
    parser.add_argument("--compare-transports", action="store_true",
                        help="instead: submit+status pairs/s through each candidate transport")
    parser.add_argument("--pairs", type=int, default=2000, help="with --compare-transports")
    parser.add_argument("--rounds", type=int, default=3, help="with --compare-transports")
    args = parser.parse_args()
    if args.compare_transports:
        with fresh_server(args.server, args.run_s) as url:
            results = asyncio.run(compare_transports(url, args.pairs, args.concurrency, args.rounds))
        report_transports(results, args)
        return
    # as `reelgate serve` does once started: the imported world out of the collector's
    # reach and young collections every 10,000 allocations, for both passes alike (without
    # the freeze the gateway's p99 carries full collections)
    if not args.no_gc_freeze:
        tune_collector()
    with fresh_server(args.server, args.run_s) as url:
        raw = asyncio.run(raw_pass(url, args.jobs, args.concurrency, args.poll_s))
    profiler = cProfile.Profile() if args.profile else None
    with fresh_server(args.server, args.run_s) as url:
        if profiler:
            profiler.enable()
        gw = asyncio.run(gateway_pass(url, args.jobs, args.concurrency, args.poll_s))
        if profiler:
            profiler.disable()
    report(raw, gw, args)
    if profiler:
        stats = pstats.Stats(profiler)
        print("\n# gateway pass: top functions by own time")
        stats.sort_stats("tottime").print_stats(15)
        print("# gateway pass: reelgate's own functions by cumulative time")
        stats.sort_stats("cumulative").print_stats(r"/(gateway|providers)/", 25)


if __name__ == "__main__":
    main()
