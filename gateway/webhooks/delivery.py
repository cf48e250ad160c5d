"""Delivering the jobs' own webhooks from the store's outbox, so none is lost to a crash.

A finished job's webhook is queued in the same transaction that stores the terminal job
(``JobStore.save``). A :class:`DeliveryWorker` leases the due messages, sends each once
per lease (Standard Webhooks, re-signed per attempt), and writes the outcome back: done,
or due again after ``Backoff``. Killed at any point, the next process continues from the
last written attempt with the same message id (``webhook-id``), so an app that dedupes by
it sees each terminal state exactly once. A crash after the app answered 2xx but before
that was written resends the message once: delivery is at least once, dedupe is the app's.

Leases (``lease_owner``/``lease_until``) let several replicas share one outbox: each message
is leased by one replica's worker at a time (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), and
a dead sender's message is taken over when its lease expires (twice one POST's timeout). A
message waits while its job is still leased (its replica is keeping the video).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict

import httpx

from gateway.errors import StoreUnavailable
from gateway.job import VideoJob
from gateway.store.base import JobStore, OutboxRow
from gateway.store.outage import save_through_outage, through_outage
from gateway.webhooks.outbound import (
    Backoff,
    Clock,
    DeliveryAttempt,
    encode_body,
    job_event,
    signed_headers,
    without_query,
)

log = logging.getLogger("reelgate.webhooks")

#: a lease outlives one POST (``TIMEOUT_S``) with room to write its outcome
LEASE_S = 30.0
TIMEOUT_S = 15.0
#: attempts per message before it is given up (recorded on the job as not delivered)
MAX_ATTEMPTS = 5
#: how often an idle worker looks for due messages (a kick wakes it at once)
TICK_S = 0.5
BATCH = 50
#: between attempts: 1 s doubling to 60 s, jittered so failed messages do not retry in step
BACKOFF = Backoff()


class DeliveryWorker:
    def __init__(self, store: JobStore, client: httpx.AsyncClient, secret: str, *,
                 busy: Callable[[str], bool] = lambda _job_id: False, backoff: Backoff = BACKOFF,
                 max_attempts: int = MAX_ATTEMPTS, clock: Clock = time.time,
                 rng: Callable[[], float] = random.random, owner_id: str | None = None,
                 fetch: Callable[[str], Awaitable[VideoJob | None]] | None = None,
                 lease_s: float = LEASE_S, sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.store = store
        #: how long a message stays leased here (replicas: the service's ``lease_s``, so a dead
        #: replica's deliveries move on as soon as its jobs do); a POST times out within half of it
        self.lease_s = lease_s
        self.timeout_s = min(TIMEOUT_S, lease_s / 2)
        #: the job a message is about: the live object where one is held (so its record shows)
        self._fetch = fetch or self.store.get
        self.client = client
        self._secret = secret
        #: jobs still being finished here (their video kept): announced once that is done
        self._busy = busy
        self.backoff = backoff
        self.max_attempts = max_attempts
        self._clock = clock
        self._rng = rng
        self._sleep = sleep
        self.owner_id = owner_id or f"deliveries-{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Look for due messages now (a job just finished)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver due messages until cancelled."""
        while True:
            try:
                more = await self.deliver_due()
            except StoreUnavailable as exc:  # PostgreSQL away: one line per round, no trace
                log.warning("webhook delivery round failed: %s", exc.message)
                more = False
            except Exception:  # a store hiccup must not end deliveries for good
                log.exception("webhook delivery round failed")
                more = False
            if not more:
                self._wake.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
                # that arrives as the event is set (a job finishing as the service stops),
                # and this loop then never ended (a shutdown that hung)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK_S):
                        await self._wake.wait()

    async def deliver_due(self) -> bool:
        """One round: lease what is due and attempt each once. True when more may be due."""
        # a POST may start only while its answer can still be recorded under this lease: a
        # batch that took longer (a slow store, a busy machine) would be sent again by whoever
        # leases it next
        last_start = self._clock() + self.lease_s - self.timeout_s
        rows = await self.store.lease_deliveries(self.owner_id, self.lease_s, BATCH)
        ready = []
        for row in rows:
            if self._busy(row.job_id):  # give it back untouched
                await self.store.record_delivery(row.message_id, self.owner_id, attempts=row.attempts,
                                                 body=row.body, next_at=row.next_at)
            else:
                ready.append(row)
        await asyncio.gather(*(self._attempt(row, last_start) for row in ready))
        return len(rows) == BATCH and bool(ready)

    async def _attempt(self, row: OutboxRow, last_start: float) -> None:
        job = await self._fetch(row.job_id)
        if self._clock() > last_start:  # too late in this lease: give it back for the next round
            await self.store.record_delivery(row.message_id, self.owner_id, attempts=row.attempts,
                                             body=row.body, next_at=row.next_at)
            return
        url = job.request.webhook_url if job is not None else None
        if job is None or url is None:  # the job was deleted: nobody to tell
            await self.store.record_delivery(row.message_id, self.owner_id, attempts=row.attempts,
                                             body=row.body, next_at=None)
            return
        started = self._clock()
        body = row.body.encode() if row.body is not None else encode_body(job_event(job.to_dict(), now=started))
        try:
            response = await self.client.post(url, content=body, timeout=self.timeout_s,
                                              headers=signed_headers(self._secret, row.message_id, int(started), body))
            attempt = DeliveryAttempt(started, self._clock() - started, status_code=response.status_code)
        except httpx.TransportError as exc:  # its class only: the message may hold the URL
            attempt = DeliveryAttempt(started, self._clock() - started, error=type(exc).__name__)
        attempts = row.attempts + 1
        done = attempt.acknowledged or attempts >= self.max_attempts
        next_at = None if done else self._clock() + self.backoff.delay(attempts, self._rng)
        # the POST happened: its outcome waits through a store outage, as a job's saves do
        # (gateway/store/outage.py). Given up, the message stayed due and was sent again.
        if not await through_outage(
                lambda: self.store.record_delivery(row.message_id, self.owner_id, attempts=attempts,
                                                   body=body.decode(), next_at=next_at,
                                                   delivered=attempt.acknowledged),
                "webhook", row.message_id, sleep=self._sleep, clock=self._clock):
            return  # our lease ran out mid-POST: the new holder records it
        _record_on(job, row.message_id, url, attempt)
        await save_through_outage(self.store, job, lease_owner=None, sleep=self._sleep, clock=self._clock)


def _record_on(job: VideoJob, message_id: str, url: str, attempt: DeliveryAttempt) -> None:
    """The job's record of this message (``DeliveryRecord.to_dict`` shape), one attempt longer."""
    record = next((r for r in job.webhooks if r.get("message_id") == message_id), None)
    if record is None:
        record = {"message_id": message_id, "url": without_query(url), "delivered": False, "attempts": []}
        job.webhooks.append(record)
    record["attempts"].append(asdict(attempt))
    record["delivered"] = attempt.acknowledged
