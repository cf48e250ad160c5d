"""The half of :class:`~gateway.api.Gateway` that drives jobs: one task per job, run to a
terminal state whatever happens (deadline, lost lease, a bug), saved, its reservations settled
into what it cost, then retired. ``Gateway`` plans, admits and finds jobs; this runs them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar, cast

import httpx

from gateway import sequence
from gateway.adoption import Adoptions
from gateway.budget import Ledger
from gateway.config import Settings
from gateway.errors import DeadlineExceeded, LeaseLost, ReelgateError, StoreUnavailable
from gateway.job import AttemptOutcome, JobStatus, VideoJob
from gateway.live_jobs import LiveJobs
from gateway.provider import Provider
from gateway.quote_report import planned
from gateway.routing import Plan
from gateway.routing.health import Health
from gateway.runner import SUBMITS_IN_FLIGHT, JobRunner, OnUpdate
from gateway.shared import Shared
from gateway.store.base import JobStore
from gateway.store.outage import save_through_outage, through_outage
from gateway.vendor_calls import Nudge, Sleep

if TYPE_CHECKING:
    from gateway.api import Gateway

log = logging.getLogger("reelgate")

T = TypeVar("T")


class JobTasks:
    """Set up by ``Gateway.__init__``: these are its attributes."""

    settings: Settings
    providers: dict[str, Provider]
    client: httpx.AsyncClient
    health: Health
    shared: Shared
    store: JobStore | None
    live: LiveJobs
    jobs: dict[str, VideoJob]
    adoptions: Adoptions
    lease_owner: str | None
    released: set[str]
    _tasks: dict[str, asyncio.Task[VideoJob]]
    _creating: set[str]
    _lease_until: dict[str, float]
    lease_s: float
    _holds: dict[str, tuple[Ledger, ...]]
    _nudges: dict[tuple[str, str], Nudge]
    _shared_runner: JobRunner | None
    keep_finished: Callable[[VideoJob], Awaitable[None]] | None
    _sleep: Sleep
    _rng: random.Random

    def launch(self, job: VideoJob, plan: Plan | None, ledgers: tuple[Ledger, ...], on_update: OnUpdate | None,
               *, resume: bool = False) -> None:
        """Start ``job``'s task, charged to ``ledgers`` (a sequence's segment: none, its parent is).

        One task per job per process: two would each submit the job's next attempt under this
        replica's (valid) lease, and a vendor without idempotency keys would run, and bill, it
        twice (docs/service.md, "One task per job")."""
        running = self._tasks.get(job.id)
        if running is not None and not running.done():
            raise RuntimeError(f"job {job.id} is already followed in this process")
        self._holds[job.id] = ledgers
        self.live.add(job, on_update)
        self._tasks[job.id] = asyncio.create_task(self._run(job, plan, resume=resume), name=f"reelgate-{job.id}")

    def following(self) -> list[str]:
        """The jobs whose tasks run in this process now."""
        return list(self._tasks)

    async def abandon(self, job_id: str) -> None:
        """Stop following a job whose lease another replica now holds: its task ends and
        nothing more is written (the store refuses this replica's saves anyway)."""
        self._hand_over(job_id)  # before the task ends: its ``_close`` must settle nothing
        await self.stop(job_id)

    async def stop(self, job_id: str) -> None:
        """End the job's task now, whatever it is doing (keeping a finished job's video, say),
        and wait until it has ended: it writes nothing after this returns."""
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _hand_over(self, job_id: str) -> None:
        """The job's lease is another replica's: its reservations and its cost are that
        replica's to settle, so this one lets go of both (and of the job)."""
        for ledger in self._holds.pop(job_id, ()):
            ledger.handover(job_id)
        self.jobs.pop(job_id, None)

    async def _run(self, job: VideoJob, plan: Plan | None, *, resume: bool = False) -> VideoJob:
        """A job's task: drive it to a terminal state whatever happens, save it, settle its cost.

        One coroutine with the runner's awaited directly: each frame here is held by every
        job in flight, thousands at once (docs/benchmarks.md)."""
        runner = self._runner()
        saved = kept = False
        try:
            try:
                chained = sequence.is_sequence(job.request)
                work = (sequence.drive(cast("Gateway", self), job) if chained
                        else runner.resume(job, plan) if resume else runner.run(job, planned(plan)))
                if job.request.deadline_s is None:
                    job = await work
                else:
                    async with asyncio.timeout(job.request.deadline_s):
                        job = await work
                # the runner saved the terminal state it reached (a sequence leaves it to us): a
                # second write of the same state was one of the service's five per job (bench/service.py)
                saved = job.status.terminal and not chained
                # ...except a success when this process keeps videos: left unannounced and
                # unsaved by the runner (its only way back without a terminal state), kept below
                kept = not chained and runner.defer_success and not job.status.terminal and job.output is not None
            except TimeoutError as exc:
                if job.request.deadline_s is None:  # not the deadline: a call inside timed out
                    self._fail(job, ReelgateError(f"internal error: {type(exc).__name__}"))
                else:
                    await self._cancel_current(job, status=None)
                    self._fail(job, DeadlineExceeded(
                        f"the job did not finish within deadline_s={job.request.deadline_s:g}"))
            except (LeaseLost, StoreUnavailable):
                raise
            except ReelgateError as exc:  # e.g. an input a vendor cannot take after all
                self._fail(job, exc)
            except Exception as exc:  # never leave a job without a terminal state
                log.exception("job %s failed unexpectedly", job.id)
                if not job.status.terminal:  # e.g. its terminal save failed: saved again below
                    self._fail(job, ReelgateError(f"internal error: {type(exc).__name__}"))
            if kept:
                if job.parent_id is None:  # a segment's clip is its parent's to keep (joined)
                    await self._keep(job)
                runner.announce_success(job)
            if not saved:
                await self.checkpoint(job)
            return job
        except LeaseLost:  # another replica follows the job now: this one writes nothing more
            log.info("job %s: lease lost, no longer followed here", job.id)
            self._hand_over(job.id)
            return job
        except StoreUnavailable:  # for SAVE_RETRY_S: whoever claims it next resumes it as stored
            log.warning("job %s: the store stayed unavailable; no longer followed here", job.id)
            self._hand_over(job.id)
            return job
        finally:
            self._close(job)

    def _close(self, job: VideoJob) -> None:
        """The job's task is over: its reservations become what it really cost (zero if
        nothing was billed), once, and the job is retired."""
        for ledger in self._holds.pop(job.id, ()):
            ledger.settle(job.id, job.cost_usd, job.at_risk_usd)
        self._retire(job)

    def _retire(self, job: VideoJob) -> None:
        self._tasks.pop(job.id, None)
        self._lease_until.pop(job.id, None)
        self.live.finished(job.id)

    async def _keep(self, job: VideoJob) -> None:
        """The finished job's video into result storage, before the one write that stores the
        job succeeded and names it. The store has the job submitted until that write, so a
        process that dies in between leaves it to be resumed: polled again (the vendor job is
        paid once), its video kept again under the same name (replacing, never leaking, the
        copy made here), then stored. Outside the deadline: the job has finished."""
        assert self.keep_finished is not None
        try:
            await self.keep_finished(job)
        except Exception:  # stored unkept: the service's watcher tries again (Service._finish)
            log.exception("job %s: keeping its video failed", job.id)

    def _last_under_lease(self, job: VideoJob) -> bool:
        """Whether this save of ``job`` is its last under this replica's lease, which it then
        gives up in the same write (``JobStore.save(release=True)``): one write per job fewer
        than a save and a release. A final state; not a segment (its parent's driver releases
        it once it has read it); not a success whose video is still to be kept (the service's
        watcher keeps it under the lease, saves, then releases)."""
        return (self.lease_owner is not None and job.status.terminal and job.parent_id is None
                and not (self.keep_finished is not None and job.output is not None and job.output.uri is None
                         and job.status is JobStatus.SUCCEEDED))

    async def _save(self, job: VideoJob) -> None:
        if self.store is not None and job.id not in self.released:  # see ``checkpoint``
            release = self._last_under_lease(job)
            await self.store.save(job, lease_owner=self.lease_owner, release=release)
            if release:
                self.released.add(job.id)

    async def checkpoint(self, job: VideoJob) -> None:
        """A save in the job's own task (a sequence's parent's too, between its segments):
        through a store outage it waits for the store rather than end the job with what the
        store lacks (gateway/store/outage.py). A job whose final save gave its lease up is on
        record as it ends: nothing more is written to it here (another replica's webhook
        delivery may be writing its record now)."""
        if self.store is not None and job.id not in self.released:
            release = self._last_under_lease(job)
            try:  # the first try without the retry loop's frames: every save of every job makes one
                await self.store.save(job, lease_owner=self.lease_owner, release=release)
            except StoreUnavailable as exc:
                await save_through_outage(self.store, job, lease_owner=self.lease_owner, release=release,
                                          sleep=self._sleep, failed=exc)
            if release:
                self.released.add(job.id)

    def leases_held(self, job_ids: Iterable[str], since: float) -> None:
        """This replica took or renewed these jobs' leases with a write sent at ``since``
        (``time.monotonic()``): each is surely its own until ``since + lease_s``."""
        until = since + self.lease_s
        for job_id in job_ids:
            self._lease_until[job_id] = until

    async def fence_submit(self, job: VideoJob) -> None:
        """Right before a submit leaves (each try): this replica must hold the job's lease
        with at least half a lease period to go, renewed first when it has less (a submit
        delayed in the queue, a stalled process: docs/storage.md, "A submit leaves under a
        live lease"). Lost, ``LeaseLost`` and nothing is sent: the replica that holds the job
        now resumes its pending attempt (same key where the vendor dedupes, else adoption or
        unknown), and a POST sent here as well would be a second paid job. Through a store
        outage the renewal is tried again, as a save is; without leases (one process owns
        the store) there is nothing to check."""
        owner, store = self.lease_owner, self.store
        if owner is None or store is None:
            return
        now = time.monotonic()
        if self._lease_until.get(job.id, 0.0) - now > self.lease_s / 2:
            return
        if not await through_outage(lambda: store.renew(job.id, owner, self.lease_s), "job", job.id,
                                    sleep=self._sleep):
            raise LeaseLost(f"job {job.id}: {owner} no longer holds its lease; its submit was not sent")
        self.leases_held([job.id], now)

    async def store_step(self, step: Callable[[], Awaitable[T]], job_id: str) -> T:
        """A store read or write in a job's own task that it cannot go on without (a sequence's
        read, creation or lease of its segments): through a store outage it waits, as the
        task's saves do, rather than end the task for a claim or a restart to resume. The step
        must be safe to repeat (a creation whose answer was lost finds its row the next time)."""
        return await through_outage(step, "job", job_id, sleep=self._sleep)

    def _runner(self) -> JobRunner:
        """The one runner every job of this gateway shares (it keeps no per-job state), made
        on first use: its submit gate belongs to the running loop."""
        runner = self._shared_runner
        if runner is None:
            runner = self._shared_runner = JobRunner(
                self.providers, self.client, self.settings, health=self.health, sleep=self._sleep, rng=self._rng,
                on_update=self._emit, checkpoint=self.checkpoint, nudges=self._nudges,
                submit_gate=asyncio.Semaphore(SUBMITS_IN_FLIGHT), limiter=self.shared.limiter,
                adoptions=self.adoptions, defer_success=self.keep_finished is not None,
                fence=self.fence_submit if self.lease_owner is not None else None)
        return runner

    def _fail(self, job: VideoJob, error: ReelgateError) -> None:
        self._end_current(job, error)
        job.fail(error)
        self._emit(job)

    def _end_current(self, job: VideoJob, error: ReelgateError) -> None:
        if job.current is not None and job.current.outcome is AttemptOutcome.PENDING:
            job.current.finish(AttemptOutcome.REJECTED, error)

    async def _cancel_current(self, job: VideoJob, status: JobStatus | None = JobStatus.CANCELLED) -> None:
        for attempt in job.attempts:  # a hedged job may have two in flight
            if attempt.outcome is AttemptOutcome.PENDING:
                await self._runner().cancel_at_vendor(attempt)
                attempt.finish(AttemptOutcome.CANCELLED)
        if status is not None and not job.status.terminal:
            job.move(status)
            self._emit(job)

    def _emit(self, job: VideoJob) -> None:
        self.live.emit(job)
