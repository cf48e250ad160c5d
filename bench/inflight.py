"""Thousands of long jobs in flight through one Gateway: memory, loop lag, polls, losses.

    python -m bench.inflight [--jobs 10000] [--poll-policy current|growing] [--serve-collector]

The sandbox runs in a separate process. Its emulators take one timing per vendor (no
per-job random durations), so the jobs are a fixed mix: a third each on fal (60 s),
apiframe (120 s) and railwail (200 s), each request pinned to its vendor. The gateway
polls on the vendors' real schedules (no polling override).

Prints: peak RSS per in-flight job (peak RSS over the idle baseline, / N), event-loop
lag p99 (a ticker's scheduling delay), polls per job (median and max, from
``job.attempts[-1].polls``) and jobs lost (not terminal when the run ends: must be 0).
``--serve-collector`` applies ``reelgate serve``'s collector policy (``tune_collector``)
once the gateway is warm, as a served process has it.
``--poll-policy growing`` measures the schedule without the expected duration
(``initial`` x1.5 per poll up to the cap) by patching it inside this process only.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from collections import Counter
from collections.abc import Callable

import httpx

from bench.common import machine, median, percentile, sandbox_process, set_timing
from gateway import policies, vendor_calls
from gateway.api import Gateway
from gateway.config import Settings
from gateway.job import VideoJob
from gateway.request import VideoRequest
from gateway.runner import SUBMITS_IN_FLIGHT
from gateway.serving import tune_collector
from gateway.transport import Phase, send

#: vendor -> (queue_s, run_s): 60, 120 and 200 s jobs
MIX = {"fal": (0.0, 60.0), "apiframe": (10.0, 110.0), "railwail": (20.0, 180.0)}
LONGEST_S = max(q + r for q, r in MIX.values())
#: after the longest job should have ended, how long before a job counts as lost
GRACE_S = 120.0
TICK_S = 0.05
TARGET_KB_PER_JOB, TARGET_LAG_P99_MS, TARGET_MEDIAN_POLLS = 10.0, 50.0, 10


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


class LagTicker:
    """How late the event loop runs a task that asked to wake every ``TICK_S``."""

    def __init__(self) -> None:
        self.lags_s: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(TICK_S)
            self.lags_s.append(time.perf_counter() - asked - TICK_S)

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def growing_schedule() -> Callable[..., float]:
    """The poll schedule with no expected duration: what ``--poll-policy growing`` uses."""
    def delay(polls_done, initial_s, max_s, rng, hint_s=None, expected_s=None, elapsed_s=None):  # noqa: ANN001
        return policies.next_poll_delay(polls_done, initial_s, max_s, rng, hint_s)
    return delay


async def run(url: str, jobs: int, serve_collector: bool = False) -> dict[str, float | str]:
    vendors = list(MIX)
    async with Gateway.from_settings(Settings(), sandbox_url=url) as gw:
        # The baseline includes what is paid once, not per job: each vendor's code path
        # (a job each) and the connection pool at its working size (as many connections
        # as submits in flight).
        warm = [await gw.submit(VideoRequest(prompt="warm-up", providers=(v,), deadline_s=LONGEST_S + GRACE_S))
                for v in vendors]
        await asyncio.gather(*(send(gw.client, "sandbox", httpx.Request("GET", f"{url}/_sandbox/stats"), Phase.POLL)
                               for _ in range(SUBMITS_IN_FLIGHT)))
        await asyncio.sleep(1.0)  # let the warm-up jobs submit
        if serve_collector:
            tune_collector()
        baseline_kb = peak_rss_kb()
        ticker = LagTicker()
        ticker.start()
        started = time.perf_counter()
        submitted: list[VideoJob] = []
        for i in range(jobs):
            vendor = vendors[i % len(vendors)]
            submitted.append(await gw.submit(VideoRequest(prompt=f"job {i}", providers=(vendor,))))
        submit_s = time.perf_counter() - started
        # whatever is not terminal by then is counted as lost below
        await gw.wait_all([*warm, *submitted], timeout=LONGEST_S + GRACE_S + submit_s)
        await ticker.stop()
        peak_kb = peak_rss_kb()
    polls = [job.attempts[-1].polls for job in submitted if job.attempts]
    outcomes = Counter(job.status.value for job in submitted)
    errors = Counter(f"{job.error['class']} ({job.error.get('provider')})" for job in submitted if job.error)
    return {
        "baseline_mb": baseline_kb / 1024, "peak_mb": peak_kb / 1024,
        "kb_per_job": (peak_kb - baseline_kb) / jobs,
        "lag_p99_ms": percentile(ticker.lags_s, 99) * 1000, "lag_max_ms": max(ticker.lags_s) * 1000,
        "polls_median": median(polls), "polls_max": max(polls, default=0),
        "lost": sum(1 for job in submitted if not job.status.terminal),
        "succeeded": outcomes.get("succeeded", 0), "failed": outcomes.get("failed", 0),
        "submit_s": submit_s, "wall_s": time.perf_counter() - started,
        "errors": ", ".join(f"{name} x{count}" for name, count in errors.most_common()) or "none",
    }


def report(figures: dict[str, float | str], args: argparse.Namespace) -> None:
    f = figures
    mix = ", ".join(f"{v} {q + r:g} s" for v, (q, r) in MIX.items())
    print(f"# {machine()}; {args.jobs} jobs ({mix}), poll policy {args.poll_policy}, sandbox in a separate process"
          + (", serve's collector policy" if args.serve_collector else ""))
    print(f"RSS: baseline {f['baseline_mb']:.0f} MB, peak {f['peak_mb']:.0f} MB -> {f['kb_per_job']:.1f} KB per "
          f"in-flight job (target <= {TARGET_KB_PER_JOB:g}: {_met(f['kb_per_job'] <= TARGET_KB_PER_JOB)})")
    print(f"event-loop lag: p99 {f['lag_p99_ms']:.1f} ms, max {f['lag_max_ms']:.0f} ms "
          f"(target p99 <= {TARGET_LAG_P99_MS:g}: {_met(f['lag_p99_ms'] <= TARGET_LAG_P99_MS)})")
    print(f"polls per job: median {f['polls_median']:g}, max {f['polls_max']:g} "
          f"(target median <= {TARGET_MEDIAN_POLLS}: {_met(f['polls_median'] <= TARGET_MEDIAN_POLLS)})")
    print(f"jobs lost: {f['lost']:g} (target 0: {_met(f['lost'] == 0)}); succeeded {f['succeeded']:g}, "
          f"failed {f['failed']:g}; submitting took {f['submit_s']:.1f} s, the run {f['wall_s']:.0f} s")
    print(f"errors: {f['errors']}")


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--poll-policy", choices=["current", "growing"], default="current")
    parser.add_argument("--serve-collector", action="store_true", help="reelgate serve's gc policy (tune_collector)")
    args = parser.parse_args()
    if args.poll_policy == "growing":
        vendor_calls.next_poll_delay = growing_schedule()  # this process only, for comparison
    with sandbox_process() as url:
        set_timing(url, {v: {"queue_s": q, "run_s": r} for v, (q, r) in MIX.items()})
        report(asyncio.run(run(url, args.jobs, args.serve_collector)), args)


if __name__ == "__main__":
    main()
