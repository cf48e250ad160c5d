"""Saving a running job through a store outage (docs/deploy.md, "When PostgreSQL goes away").

A job's saves are what make it durable: the attempt is on record before its submit leaves,
and an accepted vendor job id before anything else happens to it. When the store does not
answer (``StoreUnavailable``) the job's task does not give up -- ending it in memory only
would leave the store without the vendor job id, and the replica that resumes it could
only call it lost: paid for nothing. It waits instead, trying the save again with backoff,
and moves on (submits, polls) only once the save landed. The row stays leased to this
replica meanwhile (no renewal lands, but nothing else writes it), and the lease round does
not take over others' jobs right after an outage (``gateway/server/leases.py``), so the
save lands before anyone else could resume the job from its stale record.

After ``SAVE_RETRY_S`` the save fails for good: the job ends in memory as before, and the
replica that claims it resumes it as stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.errors import StoreUnavailable
from gateway.job import VideoJob
from gateway.store.base import JobStore
from gateway.webhooks.outbound import Backoff

log = logging.getLogger("reelgate")

#: between tries of one job's save: 0.5 s doubling to 5 s, jittered (jobs in flight by the
#: thousand must not all hit the store the moment it is back)
SAVE_BACKOFF = Backoff(base_s=0.5, cap_s=5.0)
#: how long a job waits for the store before its save fails for good
SAVE_RETRY_S = 300.0


async def save_through_outage(store: JobStore, job: VideoJob, *, lease_owner: str | None,
                              sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                              clock: Callable[[], float] = time.monotonic) -> None:
    """``store.save(job)``, tried again while the store is unavailable (at most ``SAVE_RETRY_S``).
    Each try writes the job as it stands then. ``LeaseLost`` and other errors pass at once."""
    failures, since = 0, clock()
    while True:
        try:
            await store.save(job, lease_owner=lease_owner)
        except StoreUnavailable:
            failures += 1
            if clock() - since >= SAVE_RETRY_S:
                raise
            if failures == 1:
                log.info("job %s: the store is unavailable; its save is tried again until it lands", job.id)
            await sleep(SAVE_BACKOFF.delay(failures))
            continue
        if failures:
            log.info("job %s: saved after %d failed tries (%.1f s)", job.id, failures, clock() - since)
        return
