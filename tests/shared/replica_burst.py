"""One replica of the multi-process concurrency test: a Gateway in its own process that
submits a burst of jobs to one vendor through the sandbox and prints how each ended.

    python -m tests.shared.replica_burst SANDBOX_URL REDIS_URL PREFIX JOBS LIMIT
"""

from __future__ import annotations

import asyncio
import json
import sys

from gateway.api import Gateway
from gateway.config import PollingConfig, ProviderConfig, Settings
from gateway.request import VideoRequest


async def burst(sandbox_url: str, redis_url: str, prefix: str, jobs: int, limit: int) -> list[dict[str, object]]:
    settings = Settings(redis_url=redis_url, polling=PollingConfig(initial_s=0.02, max_s=0.05),
                        providers={"fal": ProviderConfig(concurrency_limit=limit)})
    async with Gateway.from_settings(settings, sandbox_url=sandbox_url,
                                     env={"REELGATE_REDIS_PREFIX": prefix}) as gw:
        submitted = [await gw.submit(VideoRequest(prompt=f"fox {i}", providers=["fal"])) for i in range(jobs)]
        done = await gw.wait_all(submitted, timeout=120)
        shared = gw.shared.status()
    return [{"status": j.status.value, "attempts": len(j.attempts), "shared": shared["state"]} for j in done]


if __name__ == "__main__":
    url, redis_url, prefix, jobs, limit = sys.argv[1:6]
    print(json.dumps(asyncio.run(burst(url, redis_url, prefix, int(jobs), int(limit)))))
