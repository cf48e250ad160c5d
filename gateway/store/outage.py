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

The same wait (``through_outage``, one backoff, one bound) covers a sequence's parent between
its segments: its saves, and the lease, read and creation of its next segment
(``Gateway.store_step``, ``gateway/sequence.py``), and a webhook's delivery outcome, written after the POST
(``gateway/webhooks/delivery.py``): given up, the message would be sent again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.errors import StoreUnavailable
from gateway.job import VideoJob
from gateway.store.base import JobStore
from gateway.webhooks.outbound import Backoff

log = logging.getLogger("reelgate")

T = TypeVar("T")

#: between tries of one job's save: 0.5 s doubling to 5 s, jittered (jobs in flight by the
#: thousand must not all hit the store the moment it is back)
SAVE_BACKOFF = Backoff(base_s=0.5, cap_s=5.0)
#: how long a job waits for the store before its save fails for good
SAVE_RETRY_S = 300.0


async def save_through_outage(store: JobStore, job: VideoJob, *, lease_owner: str | None, release: bool = False,
                              sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                              clock: Callable[[], float] = time.monotonic,
                              failed: StoreUnavailable | None = None) -> None:
    """``store.save(job)``, tried again while the store is unavailable (at most ``SAVE_RETRY_S``).
    Each try writes the job as it stands then (and with ``release`` gives its lease up).
    ``LeaseLost`` and other errors pass at once. ``failed``: the caller's own first try just
    failed so (``JobTasks.checkpoint``)."""
    await through_outage(lambda: store.save(job, lease_owner=lease_owner, release=release), "job", job.id,
                         sleep=sleep, clock=clock, failed=failed)


async def through_outage(write: Callable[[], Awaitable[T]], kind: str, name: str, *,
                         sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                         clock: Callable[[], float] = time.monotonic,
                         failed: StoreUnavailable | None = None) -> T:
    """``write()``, tried again with ``SAVE_BACKOFF`` while the store is unavailable, for at
    most ``SAVE_RETRY_S``: a job's saves, and what must land after something already happened
    outside (a webhook's delivery outcome, ``gateway/webhooks/delivery.py``). With ``failed``,
    a first try made by the caller failed just now: the next one waits its backoff."""
    failures, since = 0, clock()
    while True:
        if failed is None:
            try:
                result = await write()
            except StoreUnavailable as exc:
                failed = exc
            else:
                if failures:
                    log.info("%s %s: written after %d failed tries (%.1f s)", kind, name, failures, clock() - since)
                return result
        failures += 1
        if clock() - since >= SAVE_RETRY_S:
            raise failed
        if failures == 1:
            log.info("%s %s: the store is unavailable; its write is tried again until it lands", kind, name)
        failed = None
        await sleep(SAVE_BACKOFF.delay(failures))
