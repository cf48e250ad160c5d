"""Replicas sharing one store: which one follows which job.

Each ``reelgate serve`` replica has an id. A job is leased by the replica that creates it
(``JobStore.create_or_get`` with ``lease``), renewed while that replica follows it and released at its
terminal state, by the save that stores that state (``JobTasks.checkpoint``). Every
``lease_s / 3`` seconds a replica renews its leases and claims jobs whose lease has expired
(their replica died) or that no one holds, up to a cap, and follows them as a restart's
resume does: what a vendor accepted is polled, a submit that may have left is never resent
blindly. Its own live leases are renewed, never claimed again, except by its first claim:
a worker restarted under a dead one's id takes back what that id held at once. A replica
whose lease is gone (renew refused, or a save raising ``LeaseLost``) stops following that
job at once and writes nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable

from gateway.api import Gateway
from gateway.budget import Ledger
from gateway.errors import StoreUnavailable
from gateway.job import VideoJob
from gateway.store.base import JobStore

log = logging.getLogger("reelgate.server")


def new_replica_id() -> str:
    """hostname + pid + random: unique even for a pid reused after a restart."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Leases:
    """The lease loop of one replica (claim, renew, drop lost jobs)."""

    def __init__(self, store: JobStore, gateway: Gateway, replica_id: str, *, lease_s: float, max_claimed: int,
                 follow: Callable[[VideoJob], None], cancel: Callable[[str], Awaitable[None]],
                 finish: Callable[[VideoJob], None], finishing: Callable[[], Iterable[str]] = tuple,
                 budget_of: Callable[[str | None], Ledger | None] | None = None,
                 prepare: Callable[[list[VideoJob]], Awaitable[None]] | None = None,
                 keep_id: Callable[[], Awaitable[bool]] | None = None,
                 id_changed: Callable[[bool], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.gateway = gateway
        self.replica_id = replica_id
        self.lease_s = lease_s
        self.max_claimed = max_claimed
        self._follow = follow
        self._cancel = cancel
        #: finish off a finished job claimed from a dead replica (keep its video, release it)
        self._finish = finish
        #: finished jobs this replica is still finishing off (their leases are renewed too)
        self._finishing = finishing
        self._budget_of = budget_of
        #: runs before claimed jobs resume (the service learns keys made since it started)
        self._prepare = prepare
        #: jobs this replica took over from others (the cap counts these)
        self.claimed: set[str] = set()
        #: set after each round of renew and claim (tests wait on it, not on a clock)
        self.rounds = asyncio.Condition()
        self.round = 0
        #: a round found the store unavailable; no claim before ``_claim_after`` (monotonic).
        #: Every lease lapsed during a PostgreSQL outage: claimed at once, a live replica's
        #: job would be resumed from a record its replica has not managed to save yet (an
        #: accepted vendor job id, gateway/store/outage.py). One lease period after this
        #: replica reaches the store again, live replicas have renewed what they follow.
        self._store_failed = False
        self._claim_after = 0.0
        #: no claim has run yet: the first also takes what this replica's id holds (a dead
        #: predecessor's, docs/deploy.md), later ones leave this replica's own leases alone
        self._first_claim = True
        #: whether this process still holds its given id (``replica_ids.IdHold.check``), and
        #: what else stops while another process holds it (the service's finishing, deliveries)
        self._keep_id, self._id_changed = keep_id, id_changed
        #: another process holds this replica's id: this one claims and follows nothing
        self.id_taken = False
        gateway.lease_owner, gateway.lease_s = replica_id, lease_s

    @property
    def interval_s(self) -> float:
        # renewed three times per lease: two renewals can fail (a slow store) before it lapses
        return self.lease_s / 3

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except StoreUnavailable as exc:  # PostgreSQL is down: try again next round
                self._store_failed = True
                log.warning("lease round of replica %s failed: %s", self.replica_id, exc.message)
            except Exception:
                log.exception("lease round of replica %s failed", self.replica_id)
            async with self.rounds:
                self.round += 1
                self.rounds.notify_all()
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> None:
        """One round: renew what this replica follows, cancel those whose cancel was asked at
        another replica, then claim what no live replica holds."""
        if self._keep_id is not None and not await self._still_own_id():
            return
        held = self.held()
        sent = time.monotonic()
        renewed = await self.store.renew_all(sorted(held), self.replica_id, self.lease_s) if held else set()
        self.gateway.leases_held(renewed & set(self.gateway.following()), sent)
        for job_id in held - renewed:
            if job_id in self.held():  # not finished here meanwhile (a release is no loss)
                log.warning("job %s: lease lost by replica %s, no longer followed here", job_id, self.replica_id)
                await self.drop(job_id)
        for job_id in await self.store.take_cancels(self.replica_id):  # asked at another replica
            if job_id in self.gateway.following():
                await self._cancel(job_id)
        self.claimed &= self.held()
        if self._store_failed:  # the store answers again: every live replica renews before any claims
            self._store_failed, self._claim_after = False, time.monotonic() + self.lease_s
        if time.monotonic() < self._claim_after:
            return
        room = self.max_claimed - len(self.claimed)
        if room <= 0:
            return
        held = self.held()
        sent = time.monotonic()
        taken = await self.store.claim(self.replica_id, self.lease_s, room, own=self._first_claim)
        self._first_claim = False
        claimed = [job for job in taken if job.id not in held]
        for job in (job for job in claimed if job.status.terminal):
            log.info("job %s: finished, claimed by replica %s to finish it off", job.id, self.replica_id)
            self.claimed.add(job.id)
            self._finish(job)
        jobs = [job for job in claimed if not job.status.terminal]
        if jobs and self._prepare is not None:
            await self._prepare(jobs)
        resumed = await self.gateway.resume(budget_of=self._budget_of, jobs=jobs)
        self.gateway.leases_held((job.id for job in resumed), sent)
        for job in resumed:
            log.info("job %s: claimed by replica %s", job.id, self.replica_id)
            self.claimed.add(job.id)
            self._follow(job)

    async def _still_own_id(self) -> bool:
        """Whether this process holds its id (its lock's connection may have dropped: a
        PostgreSQL restart). Another process that took it claims every job leased under the
        id, as its own: two processes would follow them, each saving over the other. So this
        one stops all it does under the id, at once, until it holds the id again."""
        assert self._keep_id is not None
        if await self._keep_id():  # StoreUnavailable: the round fails as in any outage
            if self.id_taken:
                log.warning("replica %s: holds its id again; claiming jobs again", self.replica_id)
                self.id_taken, self._first_claim = False, True  # takes back what is leased under its id
                if self._id_changed is not None:
                    await self._id_changed(True)
            return True
        if not self.id_taken:
            log.error("replica %s: another process took this replica's id (its PostgreSQL lock was lost with "
                      "its connection); this one stops following and claiming jobs, and is not ready, until "
                      "it holds the id again", self.replica_id)
        self.id_taken = True
        if self._id_changed is not None:  # first: a finishing job's watcher would release its lease
            await self._id_changed(False)
        for job_id in self.held():
            await self.drop(job_id)
        return False

    async def still_held(self, job_id: str) -> bool:
        """Renew one lease now: before a cancel stops a job here, the store must answer (else
        ``StoreUnavailable``) and the lease be this replica's. A job stopped but never saved
        cancelled would be resumed by the next holder as if no one had asked."""
        return await self.store.renew(job_id, self.replica_id, self.lease_s)

    def held(self) -> set[str]:
        """The jobs whose leases this replica keeps: those it follows and those it finishes
        off, but for those whose final save already gave the lease up (not lost: let go)."""
        held = {*self.gateway.following(), *self._finishing()}
        held.difference_update(self.gateway.released)
        return held

    async def drop(self, job_id: str) -> None:
        self.claimed.discard(job_id)
        await self.gateway.abandon(job_id)

    async def release(self, job_id: str) -> None:
        """The job is over here (terminal, or deleted): anyone may take the row's lease."""
        self.claimed.discard(job_id)
        if job_id in self.gateway.released:  # its final save gave the lease up already
            return
        try:
            await self.store.release(job_id, self.replica_id)
        except Exception:  # a lease left behind only expires: nothing is lost
            log.warning("job %s: releasing its lease failed", job_id)

    async def wait_rounds(self, n: int = 1) -> None:
        """Until ``n`` more rounds have run (for tests and orderly shutdowns)."""
        async with self.rounds:
            target = self.round + n
            await self.rounds.wait_for(lambda: self.round >= target)
