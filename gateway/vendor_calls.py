"""The calls one attempt makes at one vendor: submit (with safe retries), poll, result.

These know nothing of fallback or hedging (``gateway.runner`` decides those); they only
make one vendor's job happen, retrying what may be retried:

* a submit the vendor *rejected* (429 honouring Retry-After, transient 5xx) is retried;
* a submit whose answer never came (``AmbiguousSubmit``) is resent only to a vendor that
  deduplicates by our attempt key, with the same key -- that reconciles instead of
  paying twice;
* polls are retried freely, within an error budget; an accepted job whose polls stop being
  answered ends as ``VendorLostJob`` (its outcome is unknown, not failed).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from gateway.adoption import callback_url
from gateway.config import Settings
from gateway.errors import (
    AmbiguousSubmit,
    GenerationFailed,
    InvalidRequest,
    ProtocolError,
    ProviderError,
    VendorLostJob,
)
from gateway.job import Attempt, JobStatus, VideoJob
from gateway.logs import for_attempt
from gateway.policies import expected_from_progress, next_poll_delay, should_retry_submit, submit_backoff
from gateway.provider import ListPage, Provider, VendorJob, VendorState, VendorStatus, VideoResult
from gateway.routing import Candidate
from gateway.transport import Phase, send

Sleep = Callable[[float], Awaitable[None]]


#: tells the job's listeners it changed
Notify = Callable[[VideoJob], None]
#: awaited right before each submit try leaves: raises (``LeaseLost``) when this process may
#: no longer send it (``JobTasks.fence_submit``)
Fence = Callable[[VideoJob], Awaitable[None]]


class Nudge:
    """Set by a verified vendor webhook: the poll sleeping on it wakes now.

    The poll sleeps in its own task and a nudge cancels that sleep, rather than racing a
    sleep task against an ``Event.wait`` task: two tasks and an ``asyncio.wait`` per poll
    were a visible share of a poll's CPU with thousands of jobs in flight. Not an
    ``asyncio.Event`` either: nothing waits on it, and an Event's waiter deque was 0.7 KB
    of every job in flight.
    """

    __slots__ = ("_set", "_sleeper")

    def __init__(self) -> None:
        self._set = False
        self._sleeper: asyncio.Task[object] | None = None

    def is_set(self) -> bool:
        return self._set

    def clear(self) -> None:
        self._set = False

    def set(self) -> None:
        if self._sleeper is not None and not self._set:
            self._sleeper.cancel()  # only ever while suspended in the sleep below, and once
        self._set = True

    async def sleep(self, sleep: Sleep, delay: float) -> None:
        """``sleep(delay)``, cut short by :meth:`set`; a cancellation from outside still propagates."""
        task = asyncio.current_task()
        assert task is not None
        self._sleeper = task
        try:
            await sleep(delay)
        except asyncio.CancelledError:
            # woken by set(): absorb our own cancel, unless someone else cancelled too
            if not self._set or task.uncancel() > 0:
                raise
        finally:
            self._sleeper = None


@dataclass(slots=True)
class LiveAttempt:
    """One attempt in flight: its provider, record and plan entry, and time spent polling."""

    provider: Provider
    attempt: Attempt
    candidate: Candidate
    #: seconds waited since the vendor accepted the job (the sum of poll waits)
    elapsed_s: float = 0.0
    #: the vendor reported the job running (not just queued)
    running: bool = field(default=False)


@dataclass
class VendorCalls:
    client: httpx.AsyncClient
    settings: Settings
    sleep: Sleep
    rng: random.Random
    #: (provider, vendor job id) -> set by a verified vendor webhook: poll now, not later
    nudges: dict[tuple[str, str], Nudge] = field(default_factory=dict)
    #: the current expected duration of an attempt's job (seconds), when health learns them
    estimate: Callable[[LiveAttempt], float] | None = None
    #: replicas sharing a store: the job's lease checked before each submit try
    fence: Fence | None = None

    async def submit(self, live: LiveAttempt, job: VideoJob) -> VendorJob:
        provider, attempt, retry = live.provider, live.attempt, self.settings.retry
        for_attempt(attempt.attempt_key)
        while True:
            if self.fence is not None:
                await self.fence(job)
            try:
                return await self._submit_once(provider, job, live.candidate, attempt)
            except AmbiguousSubmit:
                if provider.supports_idempotency and attempt.submit_retries < retry.submit_retries:
                    attempt.submit_retries += 1  # same attempt key: the vendor returns the job it made
                    continue
                raise
            except ProviderError as exc:
                if not should_retry_submit(exc, attempt.submit_retries, retry.submit_retries, retry.max_retry_after_s):
                    raise
                if sum(a.submit_retries for a in job.attempts) >= retry.request_retry_budget:
                    raise
                delay = submit_backoff(exc, attempt.submit_retries, retry.base_backoff_s, retry.max_backoff_s, self.rng)
                attempt.submit_retries += 1
                await self.sleep(delay)

    async def _submit_once(self, provider: Provider, job: VideoJob, candidate: Candidate,
                           attempt: Attempt) -> VendorJob:
        try:
            built = provider.build_submit(job.request, resolution=candidate.quote.resolution,
                                          attempt_key=attempt.attempt_key,
                                          callback_url=callback_url(self.settings, provider, attempt.attempt_key))
        except ValueError as exc:  # e.g. an image the vendor cannot take after all
            raise InvalidRequest("request", str(exc)) from exc
        response = await send(self.client, provider.name, built, Phase.SUBMIT)
        try:
            return provider.parse_submit(job.request, response)
        except ProtocolError as exc:
            if response.is_success:  # it said yes, in words we cannot read: a job may exist
                raise AmbiguousSubmit(f"accepted with an unreadable answer ({exc.message})",
                                      provider=provider.name, status_code=response.status_code) from exc
            raise

    async def poll_until_done(self, live: LiveAttempt, job: VideoJob, notify: Notify) -> VideoResult:
        """Poll the attempt's vendor job to its end; the video's result, or its error raised.

        One coroutine for the whole wait (no helper coroutines around the sleep): each
        suspended frame is kept for every job in flight, thousands at once."""
        provider, attempt = live.provider, live.attempt
        vjob = attempt.vendor_job
        assert vjob is not None
        for_attempt(attempt.attempt_key)
        initial = self.settings.polling.initial_s or provider.poll_initial_s
        cap = self.settings.polling.max_s or provider.poll_max_s
        # With polling overridden (the sandbox), the vendor-scale expectation does not apply.
        overridden = self.settings.polling.initial_s is not None
        hint: float | None = None
        from_progress: float | None = None
        # elapsed seconds when the job was last seen not yet running: the earliest it began
        queued_until = 0.0
        errors = 0
        key = (provider.name, vjob.vendor_id)
        self.nudges[key] = nudge = Nudge()
        try:
            while True:
                expected = None if overridden else from_progress or self._expected(live)
                delay = next_poll_delay(attempt.polls, initial, cap, self.rng, hint, expected, live.elapsed_s)
                if not nudge.is_set():  # else a vendor webhook said something happened: poll now
                    await nudge.sleep(self.sleep, delay)
                nudge.clear()
                live.elapsed_s += delay  # exact under a fake clock, close enough under a real one
                attempt.polls += 1
                try:
                    status = await self._status(provider, vjob)
                except ProviderError as exc:
                    errors += 1
                    if not exc.retryable:
                        raise
                    if errors >= self.settings.retry.poll_error_budget:
                        raise _unanswered(exc, errors) from exc
                    continue
                errors, hint = 0, status.poll_after_s
                if status.state is VendorState.QUEUED:
                    queued_until = live.elapsed_s
                elif status.state is VendorState.RUNNING:
                    from_progress = expected_from_progress(live.elapsed_s, live.elapsed_s - queued_until,
                                                           status.progress)
                self._record(live, job, status)
                notify(job)
                if status.state is VendorState.SUCCEEDED:
                    return await self.result(provider, vjob, status.video_url, status.billed_units)
                if status.state.terminal:
                    raise _failure(provider.name, status)
        finally:
            self.nudges.pop(key, None)

    async def _status(self, provider: Provider, vjob: VendorJob) -> VendorStatus:
        # its own frame, so the HTTP response is freed before the poll sleeps again rather
        # than held by the loop's locals for every job in flight
        return provider.parse_status(vjob, await send(self.client, provider.name, provider.build_status(vjob),
                                                      Phase.POLL))

    @staticmethod
    def _record(live: LiveAttempt, job: VideoJob, status: VendorStatus) -> None:
        """What one poll's answer changes on the job."""
        if status.state is VendorState.RUNNING:
            live.running = True
            if job.status is JobStatus.SUBMITTED:
                job.move(JobStatus.RUNNING)
        if status.progress is not None:
            job.progress = status.progress

    def _expected(self, live: LiveAttempt) -> float:
        """How long jobs like this one take: learned from finished jobs as they finish
        (so jobs already in flight benefit), else the plan's figure."""
        return self.estimate(live) if self.estimate is not None else live.candidate.expected_s

    async def result(self, provider: Provider, vjob: VendorJob, url: str | None, billed: float | None) -> VideoResult:
        built = provider.build_result(vjob)
        if built is None:
            if not url:
                raise ProtocolError("finished without a video URL", provider=provider.name)
            return VideoResult(url=url, billed_units=billed)
        retries = self.settings.retry.submit_retries
        for tries in range(retries + 1):
            try:
                return provider.parse_result(vjob, await send(self.client, provider.name, built, Phase.RESULT))
            except ProviderError as exc:
                if not exc.retryable or tries == retries:
                    raise
                await self.sleep(submit_backoff(exc, tries, self.settings.retry.base_backoff_s,
                                                self.settings.retry.max_backoff_s, self.rng))
        raise AssertionError("unreachable")

    async def list_page(self, provider: Provider, after: str | None) -> ListPage:
        """One page of ``provider``'s recent jobs (adoption by list scan)."""
        built = provider.build_list(after)
        if built is None:
            return ListPage([])
        return provider.parse_list(await send(self.client, provider.name, built, Phase.LIST))

    async def cancel(self, provider: Provider, attempt: Attempt) -> bool:
        """Best effort: ask the vendor to stop the attempt's job. True when it agreed."""
        if attempt.vendor_job is None:
            return False
        for_attempt(attempt.attempt_key)
        built = provider.build_cancel(attempt.vendor_job)
        if built is None:
            return False
        try:
            response = await send(self.client, provider.name, built, Phase.CANCEL)
            return provider.parse_cancel(attempt.vendor_job, response)
        except ProviderError:
            return False


def _unanswered(exc: ProviderError, polls: int) -> ProviderError:
    """The error an accepted job's attempt ends with when its polls stopped being answered:
    the vendor may still run and bill it, so it is never a reason to go elsewhere for free."""
    if isinstance(exc, VendorLostJob):
        return exc
    return VendorLostJob(f"no answer about this job after {polls} polls (last: {exc.code})",
                         provider=exc.provider, status_code=exc.status_code, vendor_code=exc.vendor_code)


def _failure(provider: str, status: VendorStatus) -> ProviderError:
    """The error a failed or cancelled vendor job ends its attempt with."""
    if status.state is VendorState.CANCELLED:
        return GenerationFailed("the vendor cancelled the job", provider=provider, vendor_code=status.vendor_status)
    return status.error or GenerationFailed(f"job failed ({status.vendor_status})", provider=provider)
