"""Running one job: attempts in the plan's order, fallback, hedging, health.

The three outcomes of a submit decide what may happen next (design.md):

* *Rejected* -- the vendor answered and created no job: after the safe retries in
  ``vendor_calls``, fall back to the next candidate.
* *Unknown* -- the submit left and no answer came: the attempt ends ``unknown`` and the
  job only moves on when the operator allowed possibly-duplicate spend.
* *Accepted, then failed* -- the vendor ran the job and it failed: a new attempt on the
  next candidate is a new, separately costed job.

Hedging (``fastest`` only, off by default): when the chosen vendor has not started the
job after ``hedging.after_s``, the next candidate gets the job too; the first to finish
wins and the other is cancelled. Both are costed, and a hedge is only placed when both
fit in the request's budget.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from decimal import Decimal
from typing import Any

import httpx

from gateway.adoption import Adoptions
from gateway.config import Settings
from gateway.errors import (
    AmbiguousSubmit,
    ContentRejected,
    LeaseLost,
    NoRouteAvailable,
    ProviderError,
    ProviderRejected,
    RateLimited,
    Unavailable,
    VendorLostJob,
)
from gateway.job import Attempt, AttemptOutcome, JobStatus, VideoJob, VideoOutput
from gateway.provider import Provider, VideoResult
from gateway.routing import Candidate, Plan
from gateway.routing.health import Health
from gateway.routing.next_step import hedge_candidate, may_fall_back
from gateway.routing.plan import latency_key
from gateway.shared.concurrency import ConcurrencyLimiter, LocalLimiter
from gateway.vendor_calls import Fence, LiveAttempt, Nudge, Sleep, VendorCalls

OnUpdate = Callable[[VideoJob], None]
#: persists the job; awaited before every vendor call that could create or change a job
Checkpoint = Callable[[VideoJob], Awaitable[None]]

#: submits one gateway has in flight at once by default: the connections it keeps per vendor
#: (``transport.ConnectionLimits.per_host``); more would only queue on the pool
SUBMITS_IN_FLIGHT = 64
#: errors that show the vendor up and answering (the request or our pace is the cause)
_NOT_HEALTH: tuple[type[ProviderError], ...] = (ContentRejected, ProviderRejected, RateLimited)


class JobRunner:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        client: httpx.AsyncClient,
        settings: Settings,
        *,
        health: Health | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        on_update: OnUpdate | None = None,
        checkpoint: Checkpoint | None = None,
        nudges: dict[tuple[str, str], Nudge] | None = None,
        submit_gate: asyncio.Semaphore | None = None,
        limiter: ConcurrencyLimiter | None = None,
        adoptions: Adoptions | None = None,
        defer_success: bool = False,
        fence: Fence | None = None,
    ) -> None:
        self.providers = providers
        self.settings = settings
        self.health = health
        self.calls = VendorCalls(client, settings, sleep, rng or random.Random(), {} if nudges is None else nudges,
                                 estimate=self._expected_s if health is not None else None, fence=fence)
        self._sleep = sleep
        self._on_update = on_update
        self._checkpoint = checkpoint
        #: bounds submits in flight across every job sharing it, so a burst of thousands of
        #: jobs waits here, cheaply, instead of as built requests queued on the connection pool
        self._submit_gate = submit_gate or asyncio.Semaphore(SUBMITS_IN_FLIGHT)
        #: ``concurrency_limit`` slots per vendor, held from submit to the vendor job's end
        self.limiter = limiter or LocalLimiter()
        #: attempts whose submit answer was lost, waiting for a vendor callback naming them
        self.adoptions = adoptions or Adoptions(settings)
        #: a success left unannounced and unsaved: the job's task keeps the video, then stores
        #: the job succeeded naming it, one write (``JobTasks._run``; why that is safe: ``_keep``)
        self.defer_success = defer_success

    def run(self, job: VideoJob, plan: Plan) -> Coroutine[Any, Any, VideoJob]:
        """Drive ``job`` through the plan's candidates to a terminal state (await it)."""
        job.plan = plan.to_dict()
        return self._continue(job, list(plan.candidates), None)

    async def resume(self, job: VideoJob, plan: Plan | None) -> VideoJob:
        """Pick up a job a previous process left unfinished (read back from the store).

        An attempt with a vendor job is polled again. An attempt without one may have had
        its submit in flight when the process died: it is resent with the same attempt key
        where the vendor deduplicates, and otherwise closed as ``unknown`` -- never resent
        blindly. Candidates not yet tried remain for fallback.
        """
        tried = {a.provider for a in job.attempts}
        remaining = [c for c in (plan.candidates if plan else []) if c.provider not in tried]
        current = job.current
        if current is None or current.outcome is not AttemptOutcome.PENDING:
            return await self._continue(job, remaining, None)
        provider = self.providers.get(current.provider)
        candidate = self._candidate_for(provider, job, plan)
        if provider is None or candidate is None:
            lost: ProviderError = Unavailable("provider no longer configured; the job cannot be followed there",
                                              provider=current.provider)
            if current.vendor_job is None:
                current.finish_unknown(lost)
            else:  # the vendor accepted it and nothing here can follow it now: it may still bill
                current.finish(AttemptOutcome.FAILED, lost)
                current.at_risk_usd = current.estimated_usd
            return await self._continue(job, remaining, lost)
        live = LiveAttempt(provider, current, candidate, elapsed_s=max(time.time() - current.started_at, 0.0))
        if current.vendor_job is None:
            if not provider.supports_idempotency:
                lost = AmbiguousSubmit("the process stopped while this submit was in flight; a job may exist",
                                       provider=provider.name)
                current.vendor_job = await self.adoptions.adopt(provider, current, lost, prompt=job.request.prompt,
                                                                lister=self.calls.list_page)
                if current.vendor_job is None:
                    current.finish_unknown(lost)
                    return await self._continue(job, remaining, lost)
                await self._accepted(job, live)  # a callback named this attempt: follow its job
            elif (error := await self._submit(job, live)) is not None:  # same key: the vendor returns its job
                return await self._continue(job, remaining, error)
        elif self.health:
            self.health.started(provider.name)
        error = await self._follow(job, live)
        return job if error is None else await self._continue(job, remaining, error)

    @staticmethod
    def _candidate_for(provider: Provider | None, job: VideoJob, plan: Plan | None) -> Candidate | None:
        """The plan entry for the attempt being resumed; rebuilt from a fresh quote when the
        new plan skipped that provider (its circuit, say) -- the job there still exists."""
        if provider is None:
            return None
        found = next((c for c in (plan.candidates if plan else []) if c.provider == provider.name), None)
        if found is not None:
            return found
        e = provider.quote(job.request)
        if e.quote is None:
            return None
        prior = provider.latency_prior_s(e.quote.model, e.quote.resolution, e.quote.duration_s)
        return Candidate(provider.name, e.quote, prior, e.degradations)

    async def _continue(self, job: VideoJob, remaining: list[Candidate], last: ProviderError | None) -> VideoJob:
        if last is not None and not may_fall_back(self.settings, job, last):
            remaining = []
        while remaining:
            candidate = remaining.pop(0)
            if job.status is not JobStatus.QUEUED:
                job.move(JobStatus.QUEUED)  # falling back: the one backward edge
            hedge = hedge_candidate(self.settings, job, candidate, remaining)
            limit = self.settings.provider(candidate.provider).concurrency_limit
            async with self.limiter.slot(candidate.provider, limit):  # a vendor account's jobs at once
                last = await self._attempt(job, candidate, hedge, remaining)
            if last is None:
                return job
            if not may_fall_back(self.settings, job, last):
                break
        job.fail(last or NoRouteAvailable("no candidate left to try"))
        self._notify(job)
        await self._save(job)
        return job

    # -- attempts ------------------------------------------------------------------------------
    async def _open(self, job: VideoJob, candidate: Candidate) -> LiveAttempt:
        provider, quote = self.providers[candidate.provider], candidate.quote
        attempt = Attempt(
            provider=provider.name, vendor_model=quote.vendor_model, started_at=time.time(),
            attempt_key=f"{job.id}.{len(job.attempts) + 1}", estimated_usd=quote.usd,
            vendor_units=quote.vendor_units, unit_name=quote.unit_name,
        )
        job.attempts.append(attempt)
        self._notify(job)
        await self._save(job)  # on record before the submit leaves: a restart knows it may exist
        return LiveAttempt(provider, attempt, candidate)

    async def _submit(self, job: VideoJob, live: LiveAttempt) -> ProviderError | None:
        name, model = live.provider.name, live.attempt.vendor_model
        if self.health:
            # the circuit may have opened since planning; a half-open circuit lets this one probe
            admitted, why = self.health.acquire(name, model)
            if not admitted:
                refused = Unavailable(why, provider=name, vendor_code="circuit_open")
                live.attempt.finish(AttemptOutcome.REJECTED, refused)
                return refused
        try:
            async with self._submit_gate:
                live.attempt.vendor_job = await self.calls.submit(live, job)
        except ProviderError as exc:
            # an answer lost on the way: the vendor's callback or job list may still show its job
            live.attempt.vendor_job = await self.adoptions.adopt(live.provider, live.attempt, exc,
                                                                 prompt=job.request.prompt, lister=self.calls.list_page)
            if live.attempt.vendor_job is not None:
                await self._accepted(job, live)
                return None
            if exc.fallback_safe:
                live.attempt.finish(AttemptOutcome.REJECTED, exc)
            else:
                live.attempt.finish_unknown(exc)
            self._record_outcome(live, exc)
            await self._save(job)
            return exc
        try:
            await self._accepted(job, live)
        except LeaseLost:  # the job is another replica's now: it may adopt this vendor job
            await self.adoptions.leave_bound(name, live.attempt)
            raise
        return None

    async def _accepted(self, job: VideoJob, live: LiveAttempt) -> None:
        """The vendor has the attempt's job (its answer, or a callback adopting it)."""
        if self.health:
            self.health.record_success(live.provider.name, live.attempt.vendor_model)  # it took the job
            self.health.started(live.provider.name)
        job.resolution = live.candidate.quote.resolution.value
        job.degradations = list(live.candidate.degradations)
        job.move(JobStatus.SUBMITTED)
        self._notify(job)
        await self._save(job)  # the vendor job id is on record before the first poll

    async def _attempt(
        self, job: VideoJob, candidate: Candidate, hedge: Candidate | None, remaining: list[Candidate]
    ) -> ProviderError | None:
        primary = await self._open(job, candidate)
        error = await self._submit(job, primary)
        if error is not None:
            return error
        if hedge is None:
            return await self._follow(job, primary)
        racers = {asyncio.create_task(self._poll(job, primary)): primary}
        try:
            tried, second = await self._maybe_hedge(job, primary, next(iter(racers)), hedge)
        except BaseException:  # LeaseLost storing or submitting the hedge, or the job cancelled
            await self._stop(racers)
            raise
        if tried:
            remaining.remove(hedge)  # attempted (even if it refused): not a fallback any more
        if second is not None:
            racers[asyncio.create_task(self._poll(job, second))] = second
        return await self._race(job, racers)

    def _poll(self, job: VideoJob, live: LiveAttempt) -> Coroutine[Any, Any, VideoResult]:
        # a plain function handing back the coroutine: no frame of its own while it waits
        return self.calls.poll_until_done(live, job, self._notify)

    async def _follow(self, job: VideoJob, live: LiveAttempt) -> ProviderError | None:
        """One attempt, no hedge: poll it in the job's own task (a second task per job only
        serves a race; it was half the tasks and ~1 KB per job in flight)."""
        try:
            result = await self._poll(job, live)
        except ProviderError as exc:
            self._failed(live, exc)
            await self._save(job)
            return exc
        self._succeeded(job, live, result)
        if not self.defer_success:
            await self._save(job)
        return None

    async def _race(self, job: VideoJob, racers: dict[asyncio.Task[VideoResult], LiveAttempt]) -> ProviderError | None:
        """Wait for the first attempt to succeed; the others are cancelled. With one racer
        this is simply waiting for it."""
        last: ProviderError | None = None
        try:
            while racers:
                done, _ = await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    live = racers.pop(task)
                    try:
                        result = task.result()
                    except ProviderError as exc:
                        self._failed(live, exc)
                        await self._save(job)
                        last = exc
                        continue
                    await self._cancel_losers(job, racers)
                    self._succeeded(job, live, result)
                    if not self.defer_success:
                        await self._save(job)
                    return None
        finally:
            await self._stop(racers)  # left only by LeaseLost from a save, or the job cancelled
        return last

    @staticmethod
    async def _stop(racers: dict[asyncio.Task[VideoResult], LiveAttempt]) -> None:
        """End the job's polls, and wait for it: after ``LeaseLost`` none may poll or announce it."""
        for task in racers:
            task.cancel()
        if racers:
            await asyncio.gather(*racers, return_exceptions=True)

    async def _cancel_losers(self, job: VideoJob, racers: dict[asyncio.Task[VideoResult], LiveAttempt]) -> None:
        for task, live in list(racers.items()):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            stopped = await self.calls.cancel(live.provider, live.attempt)
            live.attempt.finish(AttemptOutcome.CANCELLED)
            # A vendor that could not stop the job may still bill it.
            live.attempt.cost_usd = Decimal(0) if stopped else live.attempt.estimated_usd
            job.notes.append(f"hedge at {live.provider.name} cancelled ({'stopped' if stopped else 'may still bill'})")
            self._finished(live)
            racers.pop(task)

    def _expected_s(self, live: LiveAttempt) -> float:
        """What jobs like ``live``'s take now, by the durations observed so far."""
        assert self.health is not None
        quote = live.candidate.quote
        prior = live.provider.latency_prior_s(quote.model, quote.resolution, quote.duration_s)
        return self.health.expected_s(live.provider.name, latency_key(quote), prior)

    def _succeeded(self, job: VideoJob, live: LiveAttempt, result: VideoResult) -> None:
        attempt = live.attempt
        attempt.settle(result.billed_units)
        attempt.finish(AttemptOutcome.SUCCEEDED)
        if self.health:
            quote = live.candidate.quote
            prior = live.provider.latency_prior_s(quote.model, quote.resolution, quote.duration_s)
            self.health.record_success(live.provider.name, attempt.vendor_model)
            self.health.observe_duration(live.provider.name, latency_key(quote), live.elapsed_s, prior_s=prior)
        self._finished(live)
        job.resolution = live.candidate.quote.resolution.value
        job.output = VideoOutput(url=result.url, content_type=result.content_type, size_bytes=result.size_bytes)
        job.progress = 1.0
        if not self.defer_success:
            self.announce_success(job)

    def announce_success(self, job: VideoJob) -> None:
        """Deferred: once the video is kept, so no reader anywhere sees a success without it."""
        job.move(JobStatus.SUCCEEDED)
        self._notify(job)

    def _failed(self, live: LiveAttempt, exc: ProviderError) -> None:
        if isinstance(exc, VendorLostJob):  # accepted, then forgotten: whether it bills is unknown
            live.attempt.finish_unknown(exc)
        else:
            live.attempt.finish(AttemptOutcome.FAILED, exc)
            live.attempt.cost_usd = live.attempt.estimated_usd if live.provider.bills_failures else Decimal(0)
        self._record_outcome(live, exc)
        self._finished(live)

    # -- hedging -------------------------------------------------------------------------------
    async def _maybe_hedge(self, job: VideoJob, primary: LiveAttempt, primary_task: asyncio.Task[VideoResult],
                           hedge: Candidate) -> tuple[bool, LiveAttempt | None]:
        """(whether the hedge was tried, the hedge attempt now in flight if it was accepted)"""
        # ensure_future, not create_task: an injected Sleep returns any awaitable, not only a coroutine
        timer = asyncio.ensure_future(self._sleep(self.settings.hedging.after_s))
        try:
            await asyncio.wait({primary_task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if primary_task.done() or primary.running:
            return False, None
        job.notes.append(f"{primary.provider.name} had not started after {self.settings.hedging.after_s:g} s: "
                         f"hedged at {hedge.provider}")
        second = await self._open(job, hedge)
        if await self._submit(job, second) is not None:
            return True, None
        return True, second

    # -- policy and bookkeeping ------------------------------------------------------------------
    def _record_outcome(self, live: LiveAttempt, exc: ProviderError) -> None:
        """Close the health record of a call that ended in ``exc`` (every ``acquire`` must)."""
        if not self.health:
            return
        if isinstance(exc, _NOT_HEALTH):
            self.health.record_success(live.provider.name, live.attempt.vendor_model)  # it answered
        else:
            self.health.record_failure(live.provider.name, live.attempt.vendor_model)

    def _finished(self, live: LiveAttempt) -> None:
        if self.health and live.attempt.vendor_job is not None:
            self.health.finished(live.provider.name)

    def _save(self, job: VideoJob) -> Awaitable[None]:
        # the checkpoint's own coroutine, handed back: no frame of this one per save (as ``_poll``)
        return _unsaved() if self._checkpoint is None else self._checkpoint(job)

    def _notify(self, job: VideoJob) -> None:
        job.updated_at = time.time()
        if self._on_update is not None:
            self._on_update(job)

    async def cancel_at_vendor(self, attempt: Attempt) -> bool:
        return await self.calls.cancel(self.providers[attempt.provider], attempt)


async def _unsaved() -> None:
    """A runner without a checkpoint (no store) saves nothing."""
