"""A sequence's segments go where its parent goes (replicas sharing a store, leases on).

The parent's lease covers its segments: the store never lets a replica claim a segment on its
own (``JobStore.claim``), and the replica driving a parent leases its segments to itself
(``JobStore.lease_segments``, only while it holds the parent) before it follows any of them.
So a parent whose replica died is claimed by one replica, which takes its segments from the
dead one, reuses the finished ones, and polls the one in flight where its vendor has it; and
a replica that lost the parent loses its segments with it, writing nothing more to either.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from gateway.errors import LeaseLost, StoreUnavailable
from gateway.job import VideoJob

if TYPE_CHECKING:
    from gateway.api import Gateway


async def take(gateway: Gateway, parent: VideoJob, segment_ids: list[str]) -> None:
    """Lease the parent's segments to this replica (from whoever held them), or raise
    ``LeaseLost`` when the parent is not this replica's any more. Nothing without leases."""
    store, owner = gateway.store, gateway.lease_owner
    if store is None or owner is None:
        return
    # through a store outage it waits (``Gateway.store_step``); leasing again to this replica is harmless
    if not await gateway.store_step(lambda: store.lease_segments(parent.id, segment_ids, owner, gateway.lease_s),
                                    parent.id):
        raise LeaseLost(f"sequence {parent.id} is followed by another replica now")


async def release(gateway: Gateway, segment: VideoJob) -> None:
    """A finished segment's lease is given up (its parent reads it from the store from now on)."""
    if gateway.store is not None and gateway.lease_owner is not None:
        # through a store outage the lease is left to lapse: nobody claims a segment on its own,
        # and the parent goes on (its next save waits for the store)
        with contextlib.suppress(StoreUnavailable):
            await gateway.store.release(segment.id, gateway.lease_owner)


def handed_over(gateway: Gateway, parent: VideoJob) -> bool:
    """The parent's task is stopped because another replica has it now (``Gateway.abandon``
    let go of it first) or because this process stops: its segment is left as it is, to be
    followed by whoever resumes the parent, never cancelled at its vendor."""
    return gateway.closing or gateway.jobs.get(parent.id) is not parent


def parent_stopped() -> bool:
    """Whether a CancelledError out of waiting for a segment stops the parent's own task (a
    cancel, a deadline, a lost parent, a stop), not only the segment's: a segment whose lease
    was taken is let go alone (``Gateway.abandon``), and its parent must then end unwritten."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
