"""The library surface: ``Gateway`` (async) and ``SyncGateway`` (a thin facade over it).

    async with Gateway.from_settings(load_settings()) as gw:
        job = await gw.generate(VideoRequest(prompt="a red fox in snow"), output="fox.mp4")
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from gateway import sequence, sequence_quote
from gateway.adoption import Adoptions
from gateway.budget import Ledger, release_all, reserve_all
from gateway.config import Settings, provider_settings
from gateway.errors import ReelgateError
from gateway.job import AttemptOutcome, JobStatus, VideoJob
from gateway.job_tasks import JobTasks
from gateway.live_jobs import LiveJobs
from gateway.logs import for_attempt
from gateway.plugins import discover
from gateway.provider import Provider, VideoResult
from gateway.quote_report import QuoteReport as QuoteReport
from gateway.quote_report import held_estimate, replayed
from gateway.request import VideoRequest
from gateway.routing import Plan, plan_request
from gateway.routing.health import Health
from gateway.routing.plan import SettingOf
from gateway.runner import JobRunner, OnUpdate
from gateway.sandboxed import sandbox_settings
from gateway.sequence_quote import SequenceQuote
from gateway.shared import Shared, open_shared
from gateway.sources import resolve_source
from gateway.storage.mirror import MirrorOptions, download
from gateway.store import codec
from gateway.store.base import JobStore
from gateway.transport import make_client
from gateway.vendor_calls import Nudge, Sleep

log = logging.getLogger("reelgate")


#: finished jobs a gateway keeps in memory (``get``, ``wait``, in-process idempotency keys);
#: older ones are let go. With a store they remain readable there (``fetch``, ``wait``) and
#: their idempotency keys keep working; without one, a key is remembered this long.
RETAIN_FINISHED = 10_000


class Gateway(JobTasks):
    """Plans, submits and tracks video jobs across the configured providers."""

    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        *,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        health: Health | None = None,
        store: JobStore | None = None,
        load_failures: Mapping[str, str] | None = None,
        retain_finished: int = RETAIN_FINISHED,
        shared: Shared | None = None,
    ) -> None:
        self.settings = settings
        self.providers = dict(providers)
        self.load_failures = dict(load_failures or {})
        self._own_client = client is None
        self.client = client or make_client(settings.http_timeout_s)
        self._sleep = sleep
        self._rng = rng or random.Random()
        #: circuits, latency, daily budgets and concurrency slots: in Redis when configured
        self.shared = shared or Shared(settings, clock=clock)
        self.health: Health = health or self.shared.health
        #: where jobs are persisted before any vendor call; None keeps them in this process only
        self.store = store
        self.live = LiveJobs(retain_finished)
        self.jobs = self.live.jobs
        self._tasks: dict[str, asyncio.Task[VideoJob]] = {}
        #: jobs whose creation is under way here: stored (and leased to this replica) from the
        #: insert on, their task started only once the store's answer is back. A lease round
        #: in between must not take one for a job of its own left unfollowed (``resume``)
        self._creating: set[str] = set()
        #: how long this replica surely holds each lease it follows (monotonic seconds): from
        #: before the write that took or renewed it. A submit leaves only well inside it
        #: (``JobTasks.fence_submit``)
        self._lease_until: dict[str, float] = {}
        #: polls waiting on a vendor job, woken early by a verified vendor webhook
        self._nudges: dict[tuple[str, str], Nudge] = {}
        self.adoptions = Adoptions(settings, store)
        self.ledger: Ledger = self.shared.ledger("gateway", settings.budgets.per_day_usd)
        #: the ledgers each unfinished job is charged to, until it is settled (``_close``)
        self._holds: dict[str, tuple[Ledger, ...]] = {}
        self._shared_runner: JobRunner | None = None
        #: the replica id this gateway leases its jobs under (None: one process owns the store)
        self.lease_owner: str | None = None
        self.lease_s = 30.0
        #: jobs whose final save gave their lease up (``JobTasks.checkpoint``), until forgotten
        self.released: set[str] = set()
        #: where sequences keep their clips (None: the system's temp); fetch their sources from
        #: public addresses only (the HTTP service)
        self.workdir: Path | None = None
        self.public_sources_only = False
        #: reads a kept video by its storage URI (the service's result storage), for extending it
        self.open_kept: Callable[[str], AsyncIterator[bytes]] | None = None
        #: puts a joined sequence into the service's result storage before it is saved
        #: succeeded (sets ``output.uri``; a failure leaves it unset), so any replica serves it
        self.keep_joined: Callable[[VideoJob], Awaitable[None]] | None = None
        #: puts a finished job's video into the service's result storage before the job is
        #: stored succeeded, so that one write records both (``JobTasks._run``); a failure is
        #: noted on the job, never raised
        self.keep_finished: Callable[[VideoJob], Awaitable[None]] | None = None
        #: set by ``aclose``: tasks cut off by a stop are left for a resume, not cancelled at vendors
        self.closing = False

    @classmethod
    def from_settings(
        cls, settings: Settings, *, sandbox_url: str | None = None, env: Mapping[str, str] | None = None, **kw: Any
    ) -> Gateway:
        """Build every enabled, installed provider. ``sandbox_url`` points them all at the
        sandbox's emulators instead of the vendors."""
        plugins = discover()
        providers: dict[str, Provider] = {}
        for name, cls_ in plugins.providers.items():
            if not settings.provider(name).enabled:
                continue
            ps = (sandbox_settings(name, sandbox_url, settings) if sandbox_url
                  else provider_settings(name, cls_.credential_env, settings, env=env))
            providers[name] = cls_(ps)
        if "shared" not in kw:
            kw["shared"] = open_shared(settings, env, clock=kw.get("clock", time.monotonic))
        return cls(settings, providers, load_failures=plugins.failures, **kw)

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.closing = True
        for task in self._tasks.values():
            task.cancel()
        if self._own_client:
            await self.client.aclose()
        await self.shared.aclose()

    # -- planning -------------------------------------------------------------------------
    def plan(self, request: VideoRequest) -> Plan:
        names, settings = self.providers.keys(), self.settings
        return plan_request(
            request, self.providers, default_policy=settings.default_route,
            fallback_order=settings.fallback_order, max_cost_usd=settings.budgets.per_request_usd,
            health=self.health, rng=self._rng,
            limits=SettingOf(names, lambda n: settings.provider(n).concurrency_limit),
            weights=SettingOf(names, lambda n: settings.provider(n).weight),
        )

    def quote(self, request: VideoRequest) -> QuoteReport | SequenceQuote:
        """What each provider would charge, who is eligible and why not, and the choice; for a
        sequence, that of each segment and their sum."""
        if sequence.is_sequence(request):
            return sequence_quote.quote(self, request)
        try:
            plan = self.plan(request)
            return QuoteReport(plan, plan.eligibility)
        except ReelgateError as exc:
            return QuoteReport(None, [p.quote(request) for p in self.providers.values()], exc)

    # -- jobs -------------------------------------------------------------------------------
    async def submit(
        self, request: VideoRequest, *, owner: str | None = None, on_update: OnUpdate | None = None,
        budget: Ledger | None = None,
    ) -> VideoJob:
        """Plan, persist and start a job; returns at once with the job queued. Raises before
        any vendor call when nothing can take the request (Unsupported, BudgetExceeded...).
        The same idempotency key (per owner) returns the same job, across processes when a
        store is shared; with a different request it raises ``IdempotencyConflict``.
        ``budget``: a ledger the job is charged to besides the gateway's own (an API key's)."""
        job, _ = await self.admit(request, owner=owner, on_update=on_update, budget=budget)
        return job

    async def admit(
        self, request: VideoRequest, *, owner: str | None = None, on_update: OnUpdate | None = None,
        budget: Ledger | None = None,
    ) -> tuple[VideoJob, bool]:
        """``submit``, also saying whether this call started the job (False: a replay of its
        idempotency key, which reserves and costs nothing)."""
        # Pacing: let the loop run once per submit, so a caller submitting thousands of jobs
        # in a loop does not hold it (for seconds) until the last one is planned. With a store,
        # the job's first write below waits for the store each time: that is the pause, and a
        # second one costs every create of the service a pass of the loop (6.inbound3).
        if self.store is None:
            await asyncio.sleep(0)
        sent = request
        key = request.idempotency_key
        # a fingerprint is only ever compared under an idempotency key (``replayed``): a job
        # without one cannot be replayed, so none is made for it (a canonical dump and a
        # SHA-256, ~10 us of every create; docs/benchmarks.md, 6.inbound3)
        encoded: dict[str, Any] | None = None
        digest: str | None = None
        if key is not None:
            encoded = codec.encode_request(sent)  # once for the fingerprint and the job's first write
            digest = codec.digest(encoded)
            existing = await self._by_key(key, owner)
            if existing is not None:
                return replayed(existing, digest), False
        request, source_s = await resolve_source(self, request, owner)  # a job-id source becomes its video
        plan, estimate = self._estimate(request)
        job = VideoJob(request=request, owner=owner, fingerprint=digest, source_s=source_s)
        if encoded is not None and request is sent:  # made for the fingerprint: kept for the first write
            codec.remember_request(job, encoded)
        elif encoded is None and (text := request.document_json()) is not None:
            job.request_json = (request, text)  # what the store's first write would encode
        # the caller's budget, then the gateway's, refuse before any vendor call
        ledgers = reserve_all((budget, self.ledger), job.id, estimate)
        try:
            if self.store is not None:
                lease = (self.lease_owner, self.lease_s) if self.lease_owner is not None else None
                self._creating.add(job.id)
                leased_at = time.monotonic()
                stored, created = await self.store.create_or_get(job, owner=owner, lease=lease)
                if created and lease is not None:
                    self.leases_held([job.id], leased_at)
                if not created:  # another request with this key won the race
                    release_all(ledgers, job.id)
                    known = codec.fingerprint(sent) if digest is None else digest  # a keyed job's: made above
                    return replayed(self.jobs.get(stored.id, stored), known), False
        except BaseException:  # e.g. the store is down: nothing was started, nothing is held
            release_all(ledgers, job.id)
            raise
        finally:  # launched below with no await in between: no lease round can come first
            self._creating.discard(job.id)
        # the job keeps its candidates, not every provider's quote (those are for quote reports)
        self.launch(job, plan and Plan(plan.policy, plan.candidates, plan.skipped), ledgers, on_update)
        return job, True

    def _estimate(self, request: VideoRequest) -> tuple[Plan | None, Decimal]:
        """The plan (none for a sequence: each segment has its own) and what to reserve."""
        if sequence.is_sequence(request):
            return None, sequence_quote.estimate(self, request)
        plan = self.plan(request)
        return plan, plan.candidates[0].quote.usd

    # ASYNC109: ``timeout`` is public API, as in asyncio.wait: the caller need not wrap each call
    async def wait(self, job: VideoJob | str, *, timeout: float | None = None) -> VideoJob:  # noqa: ASYNC109
        job_id = job if isinstance(job, str) else job.id
        task = self._tasks.get(job_id)
        if task is not None and timeout is None:  # the service's every job: no timeout object
            await asyncio.shield(task)
        elif task is not None:
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel (3.11)
                await asyncio.shield(task)
        return await self._known(job)

    async def wait_all(self, jobs: Iterable[VideoJob | str], *,
                       timeout: float | None = None) -> list[VideoJob]:  # noqa: ASYNC109 (as wait)
        """Wait for many jobs at once; those not terminal by ``timeout`` come back as they
        stand, still running. One callback per job and no task per waiter, so a batch of
        thousands costs no more than the jobs themselves (gathering ``wait`` per job
        added ~1 KB per job in flight)."""
        jobs = list(jobs)
        running = [task for job in jobs if (task := self._tasks.get(job if isinstance(job, str) else job.id))
                   is not None and not task.done()]
        if running:
            await asyncio.wait(running, timeout=timeout)  # never cancels the jobs themselves
        return [await self._known(job) for job in jobs]

    async def _known(self, job: VideoJob | str) -> VideoJob:
        """A job this gateway started: in memory; once let go, from the store, or the job
        object the caller holds (the runner updated that very object)."""
        job_id = job if isinstance(job, str) else job.id
        found = await self.fetch(job_id)
        if found is not None:
            return found
        if isinstance(job, VideoJob):
            return job
        raise KeyError(f"unknown job {job_id!r} (finished and no longer kept; configure a store to keep them)")

    async def generate(
        self, request: VideoRequest, *, output: str | Path | None = None, on_update: OnUpdate | None = None
    ) -> VideoJob:
        """Submit, wait for a terminal state and, on success, download to ``output``."""
        job = await self.wait(await self.submit(request, on_update=on_update))
        if job.status is JobStatus.SUCCEEDED and output is not None:
            await self.download(job, output)
        return job

    async def extend(self, source: str | Path, *, seconds: int, prompt: str, prompts: Sequence[str] = (),
                     output: str | Path | None = None) -> VideoJob:
        """Continue ``source`` (a video URL, data URI or file, or a finished job's id) to ``seconds``
        in all, as a chain of clips (``gateway.sequence``). For routing options, ``generate`` a
        request whose ``edit`` is ``sequence.extend_edit(...)``."""
        edit = sequence.extend_edit(source, seconds, prompts)
        return await self.generate(VideoRequest(prompt=prompt, edit=edit), output=output)

    def get(self, job_id: str) -> VideoJob | None:
        """A job this process knows (the live object while it runs here)."""
        return self.jobs.get(job_id)

    async def fetch(self, job_id: str, *, owner: str | None = None) -> VideoJob | None:
        """A job by id: the live one if this process drives it, else the stored one. With
        ``owner``, None unless the job belongs to that owner."""
        live = self.jobs.get(job_id)
        if live is not None:
            return live if owner is None or live.owner == owner else None
        return await self.store.get(job_id, owner=owner) if self.store is not None else None

    async def _by_key(self, key: str, owner: str | None) -> VideoJob | None:
        live = self.live.by_key(owner, key)
        if live is not None:
            return live
        if self.store is not None:
            return await self.store.get_by_idempotency_key(key, owner)
        return None

    def forget(self, job_id: str) -> None:
        """Let go of a job deleted from the store: its idempotency key is free again."""
        self.live.forget(job_id)
        self.released.discard(job_id)

    def nudge(self, provider: str, vendor_id: str) -> bool:
        """A vendor says its job changed: poll it now. Only a poll's answer changes the job,
        so a forged, duplicated or out-of-order callback can do no harm. True when this
        process follows that vendor job."""
        event = self._nudges.get((provider, vendor_id))
        if event is None:
            return False
        event.set()
        return True

    async def adopt(self, provider: str, attempt_key: str, vendor_id: str) -> bool:
        """A verified callback for ``provider``'s job ``vendor_id`` names ``attempt_key``:
        an attempt whose submit answer was lost follows that job (``gateway.adoption``).
        True when such an attempt was waiting here."""
        return await self.adoptions.offer(provider, attempt_key, vendor_id)

    async def resume(self, *, budget_of: Callable[[str | None], Ledger | None] | None = None,
                     jobs: list[VideoJob] | None = None) -> list[VideoJob]:
        """Start following every unfinished job in the store (after a restart): polls what
        vendors accepted, never resubmits blindly what may have been sent. Each job's estimate
        is held again in the gateway's ledger and in ``budget_of(job.owner)``'s."""
        if self.store is None:
            return []
        resumed = []
        for job in await self.store.non_terminal() if jobs is None else jobs:  # jobs: claimed by this replica
            # followed here already, or being created here (its task starts once the create
            # returns: a second task would submit it a second time); a segment: its parent resumes it
            if job.id in self._tasks or job.id in self._creating or job.parent_id is not None:
                continue
            try:
                plan, estimate = self._estimate(job.request)
            except ReelgateError:
                plan, estimate = None, Decimal(0)  # nothing new can be tried; what is in flight is followed
            ledgers = tuple(ledger for ledger in (budget_of(job.owner) if budget_of else None, self.ledger)
                            if ledger is not None)
            for ledger in ledgers:  # already running: counted, never refused
                ledger.hold(job.id, estimate if plan is None else held_estimate(job, plan))
            self.launch(job, plan, ledgers, None, resume=True)
            resumed.append(job)
        return resumed

    async def cancel(self, job: VideoJob | str) -> VideoJob:
        """Stop the job here and, where the vendor can, at the vendor."""
        job = self.jobs[job if isinstance(job, str) else job.id]
        task = self._tasks.get(job.id)
        if job.status.terminal or job.output is not None:  # finished: its video is being kept
            return job
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if job.id in self._holds:  # cancelled before its task ever ran: its finally never will
            self._close(job)
        await self._cancel_current(job)
        await self._save(job)
        return job

    async def download(self, job: VideoJob, path: str | Path) -> Path:
        """Fetch the finished video (with the vendor's auth where needed) to ``path``:
        streamed, size-capped and written all-or-nothing, as the service mirrors results."""
        target = await asyncio.to_thread(lambda: Path(path).expanduser().resolve())
        if sequence.is_sequence(job.request):  # joined here: a local file
            return await sequence.copy_output(self, job, target)
        provider, built = self.result_request(job)
        assert job.output is not None
        stored = await download(self.client, built, target, provider=provider.name,
                                options=MirrorOptions(max_bytes=self.settings.storage.max_bytes), sleep=self._sleep)
        job.output.path = str(target)
        job.output.size_bytes = stored.size_bytes
        job.output.sha256 = stored.sha256
        return target

    def result_request(self, job: VideoJob) -> tuple[Provider, httpx.Request]:
        """The request that fetches a finished job's video from its vendor (with its auth)."""
        attempt = next(a for a in job.attempts if a.outcome is AttemptOutcome.SUCCEEDED)
        assert job.output is not None and attempt.vendor_job is not None
        for_attempt(attempt.attempt_key)
        provider = self.providers[attempt.provider]
        return provider, provider.build_download(attempt.vendor_job, VideoResult(url=job.output.url))

