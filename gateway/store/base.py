"""The ``JobStore`` interface: where jobs live so that none is ever lost.

A job is written before any vendor is called (``create_or_get``) and again at every
transition (``save``), so a restarted gateway finds every job that was not finished
(``non_terminal``) and resumes polling it.

Scale-out: several gateway replicas share one store (PostgreSQL). Each replica
``claim``s the unfinished jobs it will poll, holding a *lease* it ``renew``s while
it works and ``release``s when done. A replica that dies stops renewing; once its
leases expire another replica claims its jobs. A replica that has lost its lease
must stop writing: ``save(job, lease_owner=me)`` raises ``LeaseLost`` then.

Two identities, not to be confused: ``owner`` is who the job belongs to (an API key
id of the HTTP service; None for local use) and scopes idempotency keys and
listings; ``owner_id``/``lease_owner`` is the replica polling the job right now.
"""

from __future__ import annotations

import builtins
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from gateway.errors import LeaseLost as LeaseLost  # re-exported: part of this interface
from gateway.job import JobStatus, VideoJob
from gateway.store import codec
from gateway.webhooks.outbound import new_message_id as new_message_id  # the store names messages

#: how many jobs ``list`` returns when the caller does not say
DEFAULT_PAGE = 50
#: the states ``non_terminal`` and ``claim`` return, as stored
ACTIVE_STATES = tuple(s.value for s in JobStatus if not s.terminal)
_TERMINAL = frozenset(s for s in JobStatus if s.terminal)

Clock = Callable[[], float]


@dataclass(slots=True)
class JobRow:
    """A job as the columns a store indexes, plus its document. (Not frozen: a frozen
    dataclass sets each field through ``object.__setattr__``, and every save makes one.)"""

    id: str
    status: str
    idempotency_key: str | None
    created_at: float
    updated_at: float
    doc: str
    #: some attempt may have been billed without a result (``VideoJob.at_risk_usd``)
    at_risk: bool = False
    #: a finished job whose caller asked for a webhook: saving it queues the message
    announce: bool = False

    @classmethod
    def of(cls, job: VideoJob) -> JobRow:
        status, request = job.status, job.request
        at_risk = False
        for attempt in job.attempts:  # the sum's Decimal arithmetic only when some attempt has any
            if attempt.at_risk_usd:
                at_risk = job.at_risk_usd > 0
                break
        return cls(job.id, str(status), request.idempotency_key, job.created_at,  # str(): as codec's
                   job.updated_at, codec.job_json(job), at_risk,
                   status in _TERMINAL and request.webhook_url is not None)


@dataclass(frozen=True)
class OutboxRow:
    """One webhook to an app, as the outbox keeps it (see ``JobStore.lease_deliveries``)."""

    message_id: str
    job_id: str
    #: the terminal status it announces (``succeeded`` | ``failed`` | ``cancelled``)
    status: str
    attempts: int
    next_at: float
    #: the exact bytes sent, fixed by the first attempt (None before it)
    body: str | None



class JobStore(ABC):
    """Async, durable storage of jobs. Open it (``async with``) before use."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        #: the lease clock (Unix seconds); replicas sharing a store need synced clocks
        self.clock: Clock = clock or time.time

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations (safe when other processes do the same)."""

    @abstractmethod
    async def close(self) -> None: ...

    # -- jobs ------------------------------------------------------------------------
    @abstractmethod
    async def create_or_get(self, job: VideoJob, *, owner: str | None = None,
                            lease: tuple[str, float] | None = None) -> tuple[VideoJob, bool]:
        """Persist a new job and reserve its idempotency key, atomically; with ``lease``
        (replica id, seconds) the new job is leased to that replica in the same write.

        Returns ``(job, True)`` when it was stored, or ``(existing, False)`` when a job
        with the same id, or the same ``(owner, request.idempotency_key)``, exists:
        the caller must then use ``existing`` and call no vendor for ``job``.
        """

    async def create(self, job: VideoJob, *, owner: str | None = None) -> VideoJob:
        """``create_or_get`` when only the job to use matters."""
        stored, _ = await self.create_or_get(job, owner=owner)
        return stored

    @abstractmethod
    async def save(self, job: VideoJob, *, lease_owner: str | None = None, release: bool = False) -> None:
        """Write the job's full state (upsert). With ``lease_owner``, only while that
        replica holds the job's lease; otherwise raise ``LeaseLost`` and write nothing.
        With ``release`` too (the job's last write under its lease, a final state), the
        same write gives the lease up, as ``release`` would after it: one write per job
        fewer, and no moment where the job is final but still leased. Tried again after its
        answer was lost, it finds that write landed (the row unleased, with its status and
        ``updated_at``) and succeeds writing nothing."""

    @abstractmethod
    async def get(self, job_id: str, *, owner: str | None = None) -> VideoJob | None:
        """The job, or None; with ``owner``, None unless it belongs to that owner."""

    @abstractmethod
    async def get_by_idempotency_key(self, key: str, owner: str | None = None) -> VideoJob | None: ...

    @abstractmethod
    async def list_jobs(self, *, owner: str | None = None, limit: int = DEFAULT_PAGE,
                        after: str | None = None, oldest_first: bool = False,
                        at_risk: bool = False) -> list[VideoJob]:
        """Jobs newest first (``created_at``, then id), or oldest first. ``after`` is the id
        of the last job of the previous page; an unknown id, or another owner's, is an
        ``InvalidRequest``. ``owner=None`` lists every owner's jobs; ``at_risk`` only those
        that may have been billed without a result (``VideoJob.at_risk_usd`` above zero)."""

    @abstractmethod
    async def delete(self, job_id: str, *, owner: str | None = None) -> bool:
        """Remove the job; True when one was removed."""

    @abstractmethod
    async def non_terminal(self) -> list[VideoJob]:
        """Every job not yet succeeded, failed or cancelled, oldest first (single-process resume)."""

    # -- inbound webhooks ---------------------------------------------------------------
    @abstractmethod
    async def first_sighting(self, key: str, *, ttl_s: float) -> bool:
        """Remember ``key`` for ``ttl_s`` seconds (by ``clock``). True the first time, and
        again once an earlier sighting expired; False while it is remembered. Atomic: of
        concurrent callers (processes, replicas) with one key, exactly one gets True."""

    # -- adoption: vendor callbacks naming an attempt -------------------------------------
    @abstractmethod
    async def bind_callback(self, provider: str, vendor_id: str, attempt_key: str, *, ttl_s: float) -> bool:
        """Remember for ``ttl_s`` that a verified callback for ``provider``'s job ``vendor_id``
        named ``attempt_key``. True when this pair is remembered (now or before); False when
        either side is already bound to another: a vendor job is adopted by one attempt at
        most, and an attempt adopts one vendor job."""

    @abstractmethod
    async def bound_job(self, provider: str, attempt_key: str) -> str | None:
        """The vendor job a remembered callback bound ``attempt_key`` to, if any."""

    # -- outbound webhooks (the outbox) ---------------------------------------------------
    # ``save`` of a finished job whose request has a ``webhook_url`` queues one message per
    # terminal status, in the same transaction: a crash cannot finish a job and lose its webhook.

    @abstractmethod
    async def lease_deliveries(self, owner_id: str, lease_s: float, limit: int) -> builtins.list[OutboxRow]:
        """Lease up to ``limit`` undelivered messages that are due (``next_at`` passed), oldest
        first, that no one else holds a live lease on and whose job no replica holds (it is
        still being finished off). Concurrent callers never share one."""

    @abstractmethod
    async def record_delivery(self, message_id: str, owner_id: str, *, attempts: int, body: str | None,
                              next_at: float | None, delivered: bool = False) -> bool:
        """Write an attempt's outcome and give the lease up: due again at ``next_at``, or done
        (``next_at=None``: acknowledged when ``delivered``, else given up). False, and nothing
        written, when ``owner_id`` no longer holds the lease."""

    # -- leases (scale-out) -----------------------------------------------------------
    @abstractmethod
    async def claim(self, owner_id: str, lease_s: float, limit: int, *, own: bool = False) -> list[VideoJob]:
        """Lease up to ``limit`` unfinished jobs to ``owner_id`` for ``lease_s`` seconds,
        oldest first: jobs with no lease or an expired one; and finished jobs whose lease
        expired unreleased (their replica died before finishing them off: keeping the
        video, releasing). A live lease is left alone, ``owner_id``'s own too: a replica
        renews what it follows (``renew_all``), and a claim re-leasing it wrote every
        followed job's row again each round. With ``own``, jobs leased to ``owner_id`` are
        taken whatever their lease: a replica restarted under its predecessor's id (a
        worker the supervisor replaced) takes back what that one held, at its first round.
        Concurrent claimers never receive the same job. A sequence's segment (``parent_id``
        set) is never claimed on its own: its parent's claimer takes it with ``lease_segments``."""

    @abstractmethod
    async def lease_segments(self, parent_id: str, job_ids: builtins.list[str], owner_id: str,
                             lease_s: float) -> bool:
        """The parent's lease covers its segments: while ``owner_id`` holds ``parent_id``'s
        live lease, lease it ``job_ids`` (its segments) for ``lease_s`` seconds, whoever held
        them (a dead or stalled replica). False, and nothing changed, when it does not hold
        the parent. One statement: a replica that lost the parent takes no segment."""

    @abstractmethod
    async def request_cancel(self, job_id: str) -> None:
        """Ask whichever replica follows the job to cancel it (see ``take_cancels``)."""

    @abstractmethod
    async def take_cancels(self, owner_id: str) -> list[str]:
        """The jobs leased to ``owner_id`` whose cancel was asked, each returned once."""

    async def renew(self, job_id: str, owner_id: str, lease_s: float) -> bool:
        """Extend ``owner_id``'s lease; False when it no longer holds it."""
        return job_id in await self.renew_all([job_id], owner_id, lease_s)

    @abstractmethod
    async def renew_all(self, job_ids: builtins.list[str], owner_id: str, lease_s: float) -> set[str]:
        """Extend ``owner_id``'s leases on ``job_ids`` in one statement (a replica renews every
        job it follows each round: one round trip per job fell behind the lease under load);
        the ids it still held, and now holds for ``lease_s`` more."""

    @abstractmethod
    async def release(self, job_id: str, owner_id: str) -> bool:
        """Give the lease up; False when ``owner_id`` did not hold it."""
