"""What ``reelgate serve`` runs: a Gateway over a durable store, caller keys, finished
videos kept locally, and the jobs this process follows.

State lives under ``REELGATE_HOME`` (default ``~/.reelgate``): the SQLite store, the key
file and the videos. A job is stored before any vendor call; on start every unfinished
job is resumed, so a killed server loses nothing and submits nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gateway import sequence
from gateway.api import Gateway
from gateway.config import Settings
from gateway.errors import InvalidRequest, LeaseLost, ReelgateError, StoreUnavailable
from gateway.home import HOME_ENV, reelgate_home
from gateway.job import JobStatus, VideoJob
from gateway.keys import ApiKey, Keys, open_keys
from gateway.permissions import private_dir
from gateway.provider import Secret
from gateway.request import Resolution, VideoRequest
from gateway.safe_fetch import PublicOnlyTransport
from gateway.server import vetting
from gateway.server.leases import Leases, new_replica_id
from gateway.server.metrics import Metrics
from gateway.server.replica_ids import IdHold, hold_given_id, release_id
from gateway.server.vendor_callbacks import VendorCallbacks
from gateway.shared import Ledger
from gateway.storage import ResultStorage, build_storage, capped, mirror
from gateway.store import open_store
from gateway.store.base import JobStore
from gateway.store.outage import save_through_outage
from gateway.webhooks.delivery import DeliveryWorker
from gateway.webhooks.outbound import secret_bytes

log = logging.getLogger("reelgate.server")

WEBHOOK_SECRET_ENV = "REELGATE_WEBHOOK_SECRET"
#: starts the note on a finished job whose video could not be copied into result storage
#: the note of a finished job whose video could not be kept
KEEP_FAILED = "the video could not be kept"


#: the longest a /content request waits for another replica to keep a finished video
KEEP_WAIT_S = 30.0


def _keeping_failed(job: VideoJob) -> bool:
    return any(note.startswith(KEEP_FAILED) for note in job.notes)


def service_store_url(settings: Settings, home: Path) -> str:
    """The store ``reelgate serve`` (and ``reelgate keys``) use: ``service.store_url``, else
    the SQLite file in ``home``."""
    return settings.service.store_url or f"sqlite:///{home / 'reelgate.db'}"


@dataclass
class Service:
    settings: Settings
    gateway: Gateway
    store: JobStore
    keys: Keys
    home: Path
    storage: ResultStorage
    #: the vendors are the sandbox's emulators (so image URLs on loopback are allowed)
    sandbox: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    #: signs the jobs' own webhooks (Standard Webhooks ``whsec_...``); from REELGATE_WEBHOOK_SECRET
    webhook_secret: Secret | None = None
    _watchers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _ledgers: dict[str, Ledger] = field(default_factory=dict)
    #: the keys by id, for the budgets of jobs resumed or taken over
    _owners: dict[str, ApiKey] = field(default_factory=dict)
    _hooks: httpx.AsyncClient | None = None
    #: sends the jobs' own webhooks from the store's outbox (when a signing secret is set)
    deliveries: DeliveryWorker | None = None
    _delivering: asyncio.Task[None] | None = None
    #: this process among the replicas sharing the store (docs/deploy.md)
    replica_id: str = ""
    #: the store's kind for /readyz: "sqlite" or "postgresql"
    store_kind: str = "sqlite"
    #: the lease loop, when replicas share the store (``service.leases``)
    leases: Leases | None = None
    _leasing: asyncio.Task[None] | None = None
    #: the connection holding this replica's given id on PostgreSQL (gateway/server/replica_ids.py)
    _id_hold: IdHold | None = None
    #: vendor callbacks: their keys, their dedupe, and what they do here (or at another replica)
    callbacks: VendorCallbacks = field(init=False)

    @classmethod
    async def start(cls, settings: Settings, *, sandbox_url: str | None = None,
                    env: Mapping[str, str] | None = None, replica_id: str | None = None) -> Service:
        home = private_dir(reelgate_home(env))
        store_url = service_store_url(settings, home)
        store = open_store(store_url, env=os.environ if env is None else env, schema=settings.service.store_schema)
        await store.open()
        try:  # a given id is held while this process runs: two live replicas under one id both
            id_hold = await hold_given_id(settings, store_url, replica_id)  # followed its jobs
        except BaseException:
            await store.close()
            raise
        keys = open_keys(store, home, cache_s=settings.service.key_cache_s)
        gateway = Gateway.from_settings(settings, sandbox_url=sandbox_url, env=env, store=store)
        gateway.workdir = home / "sequences"  # a killed server's sequences resume from their clips here
        gateway.public_sources_only = sandbox_url is None
        env = os.environ if env is None else env
        secret = Secret(env[WEBHOOK_SECRET_ENV]) if env.get(WEBHOOK_SECRET_ENV) else None
        if secret is not None:
            secret_bytes(secret.reveal())  # a malformed secret stops the start, not a delivery
        storage = build_storage(settings.storage, {**env, HOME_ENV: str(home)})
        service = cls(settings, gateway, store, keys, home, storage,
                      sandbox=sandbox_url is not None, webhook_secret=secret, replica_id=replica_id or new_replica_id())
        service._id_hold = id_hold
        gateway.open_kept = storage.open  # a video extended by id is read from its kept copy
        gateway.keep_joined = service._keep_joined
        gateway.keep_finished = service._keep_video  # before any job runs: its runner defers successes
        service.metrics.instrument(gateway.client)
        if gateway.shared.state is not None:  # one name for this replica in its logs, /readyz and Redis
            gateway.shared.state.replica = service.replica_id
        gateway.shared.connect()
        service.metrics.watch(gateway.health, gateway.shared.in_use, service._watchers.__len__)
        service.callbacks = VendorCallbacks(gateway, store)
        service.callbacks.listen()  # vendor callbacks received by other replicas
        if secret is not None:  # webhooks queued before a restart continue with their ids
            service.deliveries = DeliveryWorker(store, service.hooks_client, secret.reveal(),
                                                busy=service._watchers.__contains__, fetch=gateway.fetch,
                                                owner_id=f"{service.replica_id}-deliveries",
                                                lease_s=settings.service.lease_s)
            service._delivering = asyncio.create_task(service.deliveries.run(), name="webhook-deliveries")
        await service._follow_jobs(store_url)
        return service

    async def _follow_jobs(self, store_url: str) -> None:
        """Start following the store's unfinished jobs: all of them (one process owns the
        store), or, when replicas share it, those this one claims (gateway/server/leases.py)."""
        self._owners = {key.id: key for key in await self.keys.alist()}

        def budget_of(owner: str | None) -> Ledger | None:
            return self.key_ledger(self._owners.get(owner or ""))

        self.store_kind = store_url.split(":", 1)[0].split("+", 1)[0]
        leased = self.settings.service.leases
        if leased or (leased is None and self.store_kind != "sqlite"):
            self.leases = Leases(self.store, self.gateway, self.replica_id, lease_s=self.settings.service.lease_s,
                                 max_claimed=self.settings.service.max_claimed_jobs, follow=self._watch,
                                 cancel=self._cancel_here, finish=self._finish_claimed,
                                 finishing=self._watchers.keys, budget_of=budget_of, prepare=self._know_owners,
                                 keep_id=self._id_hold.check if self._id_hold is not None else None,
                                 id_changed=self._id_changed)
            self._leasing = asyncio.create_task(self.leases.run(), name="leases")  # its first round claims
        else:  # the one process on this store: every unfinished job is its own
            for job in await self.gateway.resume(budget_of=budget_of):
                self._watch(job)
        log.info("replica %s started (store: %s, leases: %s)", self.replica_id, self.store_kind,
                 "on" if self.leases else "off")

    async def _id_changed(self, held: bool) -> None:
        """This replica's id is another process's (leases.py), or its own again: finishing jobs
        off and webhook deliveries (leased as ``<id>-deliveries``) stop, or start again."""
        if held:
            if self.deliveries is not None and self._delivering is None:
                self._delivering = asyncio.create_task(self.deliveries.run(), name="webhook-deliveries")
            return
        tasks = [*self._watchers.values(), *([self._delivering] if self._delivering is not None else [])]
        self._delivering = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _know_owners(self, jobs: list[VideoJob]) -> None:
        """Before jobs taken over resume: their keys' budgets, for keys made since the start."""
        if any(job.owner and job.owner not in self._owners for job in jobs):
            self._owners = {key.id: key for key in await self.keys.alist()}

    async def stop(self) -> None:
        tasks = [*self._watchers.values(), *(t for t in (self._delivering, self._leasing) if t is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.metrics.aclose()
        await self.gateway.aclose()
        if self._hooks is not None:
            await self._hooks.aclose()
        await self.keys.aclose()
        await self.store.close()
        await release_id(self._id_hold)
        await self.storage.aclose()

    # -- jobs ------------------------------------------------------------------------------
    async def submit(self, request: VideoRequest, key: ApiKey | None) -> VideoJob:
        """Start (or replay, for a known idempotency key) a caller's job. The key's daily
        budget and the gateway's are both charged by the gateway, before any vendor call."""
        owner = key.id if key else None
        if self.leases is not None and self.leases.id_taken:  # its jobs would be another's too
            raise StoreUnavailable(f"replica {self.replica_id}'s id is held by another process: "
                                   "send this to another replica")
        vetting.refuse_local_files(request)
        if request.webhook_url and self.webhook_secret is None:
            raise InvalidRequest("webhook_url", f"this service signs no webhooks: set {WEBHOOK_SECRET_ENV}")
        await vetting.check_urls(request, allow_private=self.sandbox,
                                 max_upload_bytes=self.settings.service.max_upload_bytes)
        await self._check_source_job(request, key)
        if key is not None and key.allowed_providers:
            request = vetting.restrict(request, key.allowed_providers)
        job, started = await self.gateway.admit(request, owner=owner, budget=self.key_ledger(key))
        if started:
            self.metrics.jobs_submitted.inc()
        self._watch(job)
        return job

    def first_choice(self, request: VideoRequest, key: ApiKey | None) -> Resolution:
        """The resolution the route would produce now (the first candidate's), for this caller."""
        if key is not None and key.allowed_providers:
            request = vetting.restrict(request, key.allowed_providers)
        return self.gateway.plan(request).candidates[0].quote.resolution

    def key_ledger(self, key: ApiKey | None) -> Ledger | None:
        """The daily spend of a key with a budget (in this process)."""
        if key is None or key.budget_usd_per_day is None:
            return None
        if key.id not in self._ledgers:  # in Redis when configured: the budget holds across replicas
            per_day, workers = key.budget_usd_per_day, self.settings.service.workers
            if self.gateway.shared.state is None and workers > 1:
                # N worker processes and no Redis: each holds 1/N of the budget, so the key
                # never spends more than it may (keys are made while the service runs, so
                # this cannot be refused at start as budgets.per_day_usd is; docs/deploy.md)
                per_day /= workers
                log.warning("key %s: its daily budget is split over %d workers without redis_url", key.id, workers)
            self._ledgers[key.id] = self.gateway.shared.ledger(f"key:{key.id}", per_day)
        return self._ledgers[key.id]

    async def _check_source_job(self, request: VideoRequest, key: ApiKey | None) -> None:
        """A video to extend named by id is this caller's, and finished: a 400 now, not a failed job later."""
        source_job = getattr(request.edit, "source_job", None)
        if source_job is None:
            return
        job = await self.get(source_job, key)
        if job is None:
            raise InvalidRequest("edit.source_job", f"there is no video {source_job}")
        if job.status is not JobStatus.SUCCEEDED:
            raise InvalidRequest("edit.source_job", f"video {source_job} is not finished ({job.status.value})")

    def _watch(self, job: VideoJob) -> None:
        if job.id not in self._watchers and not job.status.terminal and self.gateway.get(job.id) is not None:
            self._watchers[job.id] = asyncio.create_task(self._finish(job.id), name=f"watch-{job.id}")

    def _finish_claimed(self, job: VideoJob) -> None:
        """A finished job claimed from a replica that died before finishing it off."""
        if job.id not in self._watchers:
            self._watchers[job.id] = asyncio.create_task(self._finish(job.id, job), name=f"finish-{job.id}")

    async def _finish(self, job_id: str, finished: VideoJob | None = None) -> None:
        """After the job ends: keep the video (vendor URLs expire), count it, settle budgets.
        Its webhook waits in the outbox until the lease is released (the store's
        ``lease_deliveries``), so it announces the kept video: by the job's final save, which
        names the kept video (``JobTasks.checkpoint``), or here after a video kept late."""
        try:
            job = finished or await self.gateway.wait(job_id)
            # kept by the job's task before it was stored succeeded (``Gateway.keep_finished``);
            # here only what that left: a job claimed unkept from a dead replica, or a keep that
            # ended in a bug rather than a noted failure
            if job.status is JobStatus.SUCCEEDED and job.output is not None and job.output.uri is None \
                    and not _keeping_failed(job):
                await self._keep(job)
            if finished is None:  # counted where it ran
                self.metrics.observe_job(job)
            await self._release(job_id)  # not when cut off: a cancel still saves the job, under the lease
        except LeaseLost:  # another replica took it over (this one stalled): it finishes the job
            log.warning("job %s: lease lost by replica %s while finishing it", job_id, self.replica_id)
        except Exception:  # a watcher must never take the service down
            log.exception("finishing job %s failed", job_id)
        finally:
            self._watchers.pop(job_id, None)
            if self.deliveries is not None:  # its webhook (queued with the terminal state) may go now
                self.deliveries.kick()

    async def _keep(self, job: VideoJob) -> None:
        """Keep the finished video and store the job naming it."""
        await self._keep_video(job)
        await save_through_outage(self.store, job, lease_owner=self.gateway.lease_owner)

    async def _keep_video(self, job: VideoJob) -> None:
        """Copy the finished video into result storage, with its size and checksum; a failure
        is noted on the job (the job stays succeeded: the vendor's URL is still given)."""
        try:
            await self._put(job)
        except ReelgateError as exc:
            job.notes.append(f"{KEEP_FAILED}: {exc.message}")

    async def _put(self, job: VideoJob) -> None:
        assert job.output is not None
        if sequence.is_sequence(job.request):  # joined here, not at a vendor
            if not await asyncio.to_thread(Path(job.output.path or "").is_file):  # a replica that died has it
                raise ReelgateError("the joined file is gone with the replica that joined it")
            kept = await self.storage.put(f"jobs/{job.id}.mp4", sequence.file_chunks(Path(job.output.path or "")),
                                          "video/mp4", max_bytes=self.settings.storage.max_bytes)
            job.output.path = None  # a server path is no caller's business
        else:
            provider, request = self.gateway.result_request(job)
            kept = await mirror(self.gateway.client, request, self.storage, f"jobs/{job.id}.mp4",
                                provider=provider.name, options=capped(self.settings.storage.max_bytes))
        job.output.uri, job.output.size_bytes, job.output.sha256 = kept.uri, kept.size_bytes, kept.sha256

    async def _keep_joined(self, job: VideoJob) -> None:
        """A joined sequence kept before it is stored succeeded: its file is only on this replica."""
        with contextlib.suppress(ReelgateError):  # ``_finish`` tries again, and notes a failure
            await self._put(job)

    @property
    def hooks_client(self) -> httpx.AsyncClient:
        """The client for the jobs' own webhooks: each call goes only to an address vetted
        at that moment (the URL was checked at submit, but its DNS answer may have changed
        to an internal address since), with no proxy and no redirects."""
        if self._hooks is None:
            self._hooks = httpx.AsyncClient(transport=PublicOnlyTransport(allow_private=self.sandbox),
                                            trust_env=False, follow_redirects=False)
        return self._hooks

    async def get(self, job_id: str, key: ApiKey | None) -> VideoJob | None:
        return await self.gateway.fetch(job_id, owner=key.id if key else None)

    async def wait_kept(self, job: VideoJob) -> VideoJob:
        """The job once its video is kept (or it ended without one). When another replica
        follows it, that one keeps the video a moment after the job turns succeeded: wait
        for its save (read from the store) rather than answer 404 in between."""
        watcher = self._watchers.get(job.id)
        if watcher is not None:
            await asyncio.shield(watcher)
            return (await self.store.get(job.id)) or job
        job = (await self.store.get(job.id)) or job
        if self.leases is None:  # one process on the store: nobody else keeps it
            return job
        try:
            async with asyncio.timeout(KEEP_WAIT_S):
                while job.output is not None and job.output.uri is None and not _keeping_failed(job):
                    await asyncio.sleep(0.1)
                    job = (await self.store.get(job.id)) or job
        except TimeoutError:  # its replica died before keeping it: the route says so
            pass
        return job

    async def cancel(self, job_id: str, key: ApiKey | None) -> VideoJob | None:
        """The job after asking it to stop; None when this caller has no such job."""
        job = await self.get(job_id, key)
        if job is None:
            return None
        if not job.status.terminal and job.id not in self.gateway.jobs and self.leases is not None:
            await self.store.request_cancel(job.id)  # another replica follows it: it cancels next round
            return job
        if job.status.terminal or job.id not in self.gateway.jobs:
            return job
        if self.leases is not None and not await self.leases.still_held(job.id):  # PostgreSQL away: a 503
            await self.store.request_cancel(job.id)  # another replica holds it now: it cancels there
            return job
        job = self._count_cancel(await self.gateway.cancel(job.id))
        if job.status.terminal:  # not a finished job still keeping its video: its task releases it
            await self._release(job.id)
        return job

    async def _cancel_here(self, job_id: str) -> None:
        """A cancel asked at another replica, for a job this one follows."""
        if job_id in self.gateway.jobs:
            if self._count_cancel(await self.gateway.cancel(job_id)).status.terminal:  # as in ``cancel``
                await self._release(job_id)

    async def _release(self, job_id: str) -> None:
        if self.leases is not None:
            await self.leases.release(job_id)
            # reads go to the store from now on: a copy kept here would go stale as other
            # replicas write to the job (their delivery workers record its webhook on it)
            self.gateway.forget(job_id)

    def _count_cancel(self, job: VideoJob) -> VideoJob:
        # a cancel stops the job's task, and with it the watcher that counts finished jobs
        if job.status is JobStatus.CANCELLED:
            self.metrics.observe_job(job)
        if self.deliveries is not None:  # cancelled jobs are announced too (video.cancelled)
            self.deliveries.kick()
        return job

    async def delete(self, job: VideoJob) -> None:
        """Forget a job: stop it if it runs, remove its record and its kept video."""
        if not job.status.terminal and job.id in self.gateway.jobs:
            self._count_cancel(await self.gateway.cancel(job.id))
        # until they have stopped: the job's task (which keeps a finished job's video before
        # storing it) or its watcher (a video claimed unkept) cut off while keeping must not
        # save the record back after it is deleted, nor leave the kept file behind
        await self.gateway.stop(job.id)
        watcher = self._watchers.pop(job.id, None)
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        job = self.gateway.get(job.id) or job
        self.gateway.forget(job.id)  # its idempotency key is free again: a new job, not a 500
        await self.store.delete(job.id)
        if job.output is not None and job.output.uri is not None:
            await self.storage.delete(job.output.uri)
