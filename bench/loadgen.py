"""The load generator of ``bench.service``: ``concurrency`` workers doing create + retrieve pairs.

With ``REELGATE_TAIL_PROBE`` set to a folder (``bench.tail``) it also writes each measured
pair's wall-clock start, its POST's and the whole pair's latency, and the measured window,
to ``<folder>/pairs-<pid>.json``, for lining the pairs up with what the probed processes
recorded (bench/tail_probe).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from bench.common import median, percentile


async def load(url: str, key: str, seconds: float, concurrency: int, warmup_s: float, model: str) -> dict[str, object]:
    """``concurrency`` workers doing create + retrieve pairs; pairs that finished in the
    ``seconds`` after ``warmup_s`` are counted."""
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = json.dumps({"prompt": "a red fox in fresh snow", "model": model, "seconds": "5", "size": "960x540"})
    latencies: list[float] = []
    creates: list[float] = []  # the POST alone, for what the service adds to a create
    traced: list[tuple[float, float, float]] = []  # (wall start, POST s, pair s): REELGATE_TAIL_PROBE only
    trace = os.environ.get("REELGATE_TAIL_PROBE")
    failed, done = [0], [0]
    errors: dict[str, int] = {}
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        while (began := time.perf_counter()) < stop_at:
            ok, posted = False, 0.0
            try:
                async with session.post(f"{url}/v1/videos", data=body, headers=headers) as r:
                    created = await r.read()
                    posted = time.perf_counter() - began
                    if r.status == 200 and measure_from <= time.perf_counter() <= stop_at:
                        creates.append(posted)
                    if r.status == 200:
                        async with session.get(f"{url}/v1/videos/{json.loads(created)['id']}",
                                               headers=headers) as g:
                            await g.read()
                            ok = g.status == 200
                            status = g.status
                    else:
                        status = r.status
                    if not ok:
                        errors[str(status)] = errors.get(str(status), 0) + 1
            except (aiohttp.ClientError, OSError, KeyError, ValueError) as exc:
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

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    if trace:
        at_start = time.time() - (time.perf_counter() - start)  # the wall clock at ``start``
        _write_trace(trace, (at_start + warmup_s, at_start + warmup_s + seconds), traced)
    return {"pairs": len(latencies), "all_pairs": done[0], "seconds": seconds, "failed": failed[0], "errors": errors,
            "p50_ms": median(latencies) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
            "post_p99_ms": percentile(creates, 99) * 1000}


def _write_trace(folder: str, window: tuple[float, float], pairs: list[tuple[float, float, float]]) -> None:
    with open(os.path.join(folder, f"pairs-{os.getpid()}.json"), "w") as out:
        json.dump({"window": window, "pairs": pairs}, out)
