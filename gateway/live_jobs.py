"""The jobs one gateway holds in memory: those it runs, and the most recent finished ones.

A process that runs for weeks must not keep every job it ever ran, so finished jobs are
let go oldest first once more than ``retain`` are kept; with a store they stay readable
there and their idempotency keys keep working through it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from gateway.job import VideoJob

OnUpdate = Callable[[VideoJob], None]


class LiveJobs:
    def __init__(self, retain: int) -> None:
        self.retain = retain
        #: by job id; the live object while the job runs here
        self.jobs: dict[str, VideoJob] = {}
        #: finished jobs still in ``jobs``, oldest first
        self._finished: deque[str] = deque()
        self._by_key: dict[tuple[str | None, str], str] = {}
        self._listeners: dict[str, list[OnUpdate]] = {}

    def add(self, job: VideoJob, on_update: OnUpdate | None = None) -> None:
        self.jobs[job.id] = job
        if job.request.idempotency_key is not None:
            self._by_key[(job.owner, job.request.idempotency_key)] = job.id
        if on_update is not None:
            self._listeners.setdefault(job.id, []).append(on_update)

    def by_key(self, owner: str | None, key: str) -> VideoJob | None:
        job_id = self._by_key.get((owner, key))
        return self.jobs.get(job_id) if job_id is not None else None

    def emit(self, job: VideoJob) -> None:
        for listener in self._listeners.get(job.id, []):
            listener(job)

    def finished(self, job_id: str) -> None:
        """The job's task is over: keep it at hand for a while, then let the oldest go."""
        self._finished.append(job_id)
        while len(self._finished) > self.retain:
            self.forget(self._finished.popleft())

    def forget(self, job_id: str) -> None:
        """Let go of a job now (deleted from the store, say): its idempotency key is free."""
        self._listeners.pop(job_id, None)
        job = self.jobs.pop(job_id, None)
        if job is not None and job.request.idempotency_key is not None:
            self._by_key.pop((job.owner, job.request.idempotency_key), None)
