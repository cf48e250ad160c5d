"""``reelgate serve --workers N``: N worker processes on one host serving one port.

One Python process uses about one core (docs/deploy.md, *Sizing*), so a host with more
cores runs several. Each worker is a replica as the scale-out path knows them: it has
its own replica id (the base id, ``--replica-id`` or ``host-pid-random``, plus ``-w<index>``),
leases the jobs it creates, renews them, claims those of a worker that died, and answers
for any job through the store (gateway/server/leases.py). Nothing here re-implements
that: a worker is ``Service.start`` with a replica id and leases on.

The processes are uvicorn's own multi-process supervisor (``uvicorn.supervisors.Multiprocess``,
what ``uvicorn --workers`` runs): the parent binds the port and hands each worker slot its
own listening socket on it where the kernel spreads connections over them (Linux, SO_REUSEPORT:
gateway/serving.py ``WorkerSockets``), else one socket to all; it restarts a worker that
died or stopped answering its health pings (``HEALTH_PING_TIMEOUT_S``), and on SIGTERM /
SIGINT stops every worker gracefully (each finishes its requests and stops its service)
before it exits.

A restarted worker takes the lowest index (and so the replica id) no live worker holds,
from lock files only a live process holds, which is the index of the one that died: its
first lease round claims its predecessor's jobs at once (a replica may re-claim what its
own id holds) instead of after ``lease_s``. That is safe because the supervisor starts it
only after the old process is gone.

``/metrics`` answers for the whole host: the supervisor points prometheus-client's
multi-process mode at a fresh private folder (``PROMETHEUS_MULTIPROC_DIR``, inherited by
each worker it starts), tells it of each worker that is gone (``mark_process_dead``: its
live gauges leave the sums; its counters stay) and removes the folder when it exits
(gateway/server/metrics.py has the reading side).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.request_head import http_protocol
from gateway.serving import WorkerSockets

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("reelgate.server")

#: how long a (re)started worker waits for a free index: a dead worker's lock goes with it,
#: so one is free at once unless the supervisor is starting more workers than it was asked
SLOT_WAIT_S = 30.0
#: a worker that does not answer the supervisor's health ping for this long is killed and
#: replaced. uvicorn's default (5 s) also counts a new worker's imports before it can answer,
#: which take longer than that on a loaded machine: workers would be killed while starting
HEALTH_PING_TIMEOUT_S = 20
#: Linux prctl option: a signal sent to this process when its parent dies
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSpec:
    """What each worker process is started with (pickled to it by the supervisor)."""

    settings: Settings
    base_id: str
    #: the folder of the index lock files (one per worker index)
    slots: Path
    log_level: int
    sandbox_url: str | None = None

    @property
    def workers(self) -> int:
        return self.settings.service.workers


def worker_id(base_id: str, index: int) -> str:
    """The replica id of worker ``index``: the same for the worker that replaces it."""
    return f"{base_id}-w{index}"


def check_workers(settings: Settings, env: Mapping[str, str] | None = None) -> None:
    """Refuse what several workers cannot do: a limit meant for the whole gateway would hold
    per worker without Redis (N workers: N times the budget, N times the vendor's slots),
    and workers without leases would each resume and poll every job."""
    workers = settings.service.workers
    if workers == 1:
        return
    if settings.service.leases is False:
        raise ConfigError(f"service.workers is {workers} but service.leases is false: workers share the "
                          "store's jobs through leases (remove service.leases or set it to true)")
    from gateway.shared import redis_url

    if redis_url(settings, env) is not None:
        return
    why = (f"would hold per worker process, {workers} times over, without shared state: set redis_url "
           f"(or REELGATE_REDIS_URL), or run service.workers: 1")
    if settings.budgets.per_day_usd is not None:
        raise ConfigError(f"budgets.per_day_usd with service.workers {workers}: the daily budget {why}")
    limited = sorted(name for name, p in settings.providers.items() if p.concurrency_limit is not None)
    if limited:
        raise ConfigError(f"providers.{limited[0]}.concurrency_limit with service.workers {workers}: "
                          f"the vendor's concurrency limit {why}")


def worker_settings(settings: Settings) -> Settings:
    """A worker's settings: leases on (workers share one store, SQLite included)."""
    return settings.model_copy(update={"service": settings.service.model_copy(update={"leases": True})})


def take_slot(folder: Path, count: int, *, wait_s: float = SLOT_WAIT_S) -> tuple[int, int]:
    """The lowest worker index no live process holds, and the open lock file that holds it
    (kept open for the process's life; the kernel lets go of it when the process dies)."""
    deadline = time.monotonic() + wait_s
    while True:
        for index in range(count):
            fd = os.open(folder / f"worker-{index}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return index, fd
        if time.monotonic() >= deadline:
            raise RuntimeError(f"no free worker index of {count} in {folder}")
        time.sleep(0.05)


def _die_with_parent() -> None:
    """SIGTERM this worker when the supervisor dies (even by SIGKILL), so no worker is left
    holding the port and leases with no one to restart or stop it. Linux only; elsewhere
    the supervisor's own SIGTERM handling is all there is."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_app(spec: WorkerSpec) -> FastAPI:
    """The app of one worker process (uvicorn calls this in the worker, as a factory)."""
    from gateway.logs import configure
    from gateway.server import create_app
    from gateway.server.service import Service
    from gateway.serving import tune_collector

    configure(spec.log_level)
    _die_with_parent()
    # twice as many indexes as workers: on SIGHUP uvicorn starts each new worker before it
    # stops the old one (which then frees its index for the next new one)
    index, _held = take_slot(spec.slots, 2 * spec.workers)  # held until this process ends
    replica_id = worker_id(spec.base_id, index)
    log.info("worker %d started (pid %d, replica %s, %d workers)", index, os.getpid(), replica_id, spec.workers)

    async def start() -> Service:
        return await Service.start(spec.settings, sandbox_url=spec.sandbox_url, replica_id=replica_id)

    app = create_app(start)
    tune_collector()  # as serve_forever does
    return app


def forget_dead_workers(folder: Path, live: set[int]) -> None:
    """Drop the live gauges of every process that wrote metrics to ``folder`` and is not in
    ``live``: found from the files themselves, so a worker started and killed during a
    SIGHUP restart is forgotten too."""
    from prometheus_client.multiprocess import mark_process_dead

    written = {int(f.stem.rsplit("_", 1)[1]) for f in folder.glob("gauge_live*_*.db")}
    for pid in written - live:
        mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


class Supervisor(Multiprocess):
    """uvicorn's supervisor with worker slot ``i`` always started on ``sockets.of(i)`` (the
    replacement of a dead worker, SIGHUP's new one, included), and forgetting the live gauges
    of the workers it replaced. uvicorn starts each worker with ``Process(config,
    self.sockets)``: each method of it that does so is overridden here, as uvicorn 0.54 has it
    but for the socket (tests/unit/test_worker_sockets.py fails should a new one appear)."""

    def __init__(self, config: uvicorn.Config, sockets: WorkerSockets, metrics: Path) -> None:
        super().__init__(config, sockets=sockets.listening)  # what uvicorn would give every worker
        self.slot_sockets, self.metrics = sockets, metrics

    def spawn(self, slot: int) -> Process:
        process = Process(self.config, [self.slot_sockets.of(slot)])
        process.start()
        return process

    def init_processes(self) -> None:
        for slot in range(self.processes_num):
            self.processes.append(self.spawn(slot))

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for slot, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung, or dead already
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # would fail the same way on every restart
                log.error("worker process %s failed to start: stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.info("worker process %s died: starting another", process.pid)
            self.processes[slot] = self.spawn(slot)
        self.forget_dead()

    def restart_all(self) -> None:
        """SIGHUP: each worker replaced in turn, the new one ready before the old one stops."""
        for slot, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self.spawn(slot)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error("new worker process %s not ready in time: keeping %s, restart aborted", new.pid, old.pid)
                break
            old.terminate()
            old.join()
            self.processes[slot] = new
        self.forget_dead()

    def handle_ttin(self) -> None:
        log.info("SIGTTIN: one worker more")
        self.processes_num += 1
        self.processes.append(self.spawn(len(self.processes)))

    def handle_ttou(self) -> None:
        if self.processes_num <= 1:
            return
        log.info("SIGTTOU: one worker fewer")
        self.processes_num -= 1
        process = self.processes.pop()
        process.terminate()
        process.join()
        self.slot_sockets.drop(len(self.processes))
        self.forget_dead()

    def forget_dead(self) -> None:
        forget_dead_workers(self.metrics, {p.pid for p in self.processes if p.pid is not None and p.exitcode is None})


def serve_workers(settings: Settings, host: str, port: int, *, base_id: str, log_level: int,
                  sandbox_url: str | None = None) -> bool:
    """Run ``settings.service.workers`` workers on ``host:port`` until SIGTERM / SIGINT.
    Returns False when a worker failed to start (uvicorn then stops them all)."""
    # the folder of the lock files and of the metrics, private (0700) and removed at exit
    with tempfile.TemporaryDirectory(prefix="reelgate-workers-") as slots, _multiproc_env(Path(slots)) as metrics:
        spec = WorkerSpec(worker_settings(settings), base_id, Path(slots), log_level, sandbox_url)
        config = uvicorn.Config(functools.partial(worker_app, spec), factory=True, workers=spec.workers,
                                lifespan="on", log_level="warning", access_log=False, http=http_protocol(),
                                timeout_worker_healthcheck=HEALTH_PING_TIMEOUT_S)
        with WorkerSockets(host, port, spec.workers, backlog=config.backlog) as sockets:
            supervisor = Supervisor(config, sockets, metrics)
            supervisor.run()
        return all(p.exitcode != STARTUP_FAILURE for p in supervisor.processes)


@contextlib.contextmanager
def _multiproc_env(parent: Path) -> Iterator[Path]:
    """``PROMETHEUS_MULTIPROC_DIR`` set to a new folder under ``parent`` while the workers
    run (each started worker inherits it; uvicorn spawns them, so each imports
    prometheus-client with it set), and unset again after."""
    from gateway.server.metrics import MULTIPROC_DIR_ENV

    folder = parent / "metrics"
    folder.mkdir(mode=0o700)
    before = os.environ.get(MULTIPROC_DIR_ENV)
    os.environ[MULTIPROC_DIR_ENV] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop(MULTIPROC_DIR_ENV, None)
        else:
            os.environ[MULTIPROC_DIR_ENV] = before
