"""Prometheus metrics of one service: its own registry (no globals, tests build many).

With ``reelgate serve --workers N`` (gateway/worker_processes.py) the supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` to a fresh private folder before it starts the workers:
prometheus-client then keeps every value in a file per process there, and a scrape,
whichever worker takes it, reads all of them (``MultiProcessCollector``): counters and
histograms summed over every worker the host has run (a dead worker's counts stay),
each gauge combined as its ``multiprocess_mode`` says, over live workers only (the
supervisor calls ``mark_process_dead`` for a worker that is gone). A gauge's value is a
file write, not a function read at collection, so each worker sets its gauges every
``GAUGE_REFRESH_S`` and at each scrape it answers.

What the hot path counts (requests, jobs, attempts, cost, vendor-call latency) is tallied
in plain Python numbers first (``Tally``, ``Observed``) and written to prometheus-client's
values in one go (``Metrics.flush``): at each scrape this worker answers, every
``GAUGE_REFRESH_S`` with several workers, and at :meth:`Metrics.aclose`. A multi-process
value's ``inc`` takes a lock, checks the pid and packs the float into the memory-mapped
file (~1.5 µs; a histogram observation two of them), several times per request pair; a
tally is an attribute add. So another worker's counts may lag a scrape by up to
``GAUGE_REFRESH_S``, as its gauges already did, and a worker killed by SIGKILL loses at
most that long's counts (one stopped cleanly flushes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.job import VideoJob
from gateway.routing.circuit import CircuitState
from gateway.routing.health import Health
from gateway.transport import GatewayClient

#: where prometheus-client keeps the values of every process (set only for several workers)
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: how often a worker writes its gauges when several share the metrics (a scrape reads the
#: other workers' values as they last wrote them)
GAUGE_REFRESH_S = 1.0
#: label sets whose children are kept per metric (see ``Children``); past it, ``labels`` each time
KEPT_CHILDREN = 1024


class Tally:
    """Counts for one labelled child, kept here until :meth:`flush` adds them to it (one
    ``inc`` for many). Only the event loop's thread counts and flushes (uvicorn's, the only
    one recording metrics), so a plain add is enough."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.pending += amount

    def flush(self) -> None:
        if self.pending:
            amount, self.pending = self.pending, 0.0
            self.child.inc(amount)


class Observed:
    """Observations of one labelled histogram child, kept as its per-bucket counts and sum
    until :meth:`flush` adds them to the child's values (``Histogram.observe`` adds the
    amount to ``_sum`` and 1 to the first bucket whose bound is >= it; this does the same,
    batched). :meth:`usable` says whether a child has those values (prometheus-client's
    layout in 0.26, the version installed; tests/unit/test_metrics_tally.py fails if it changes)."""

    __slots__ = ("child", "bounds", "counts", "sum", "dirty")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.dirty = False

    @staticmethod
    def usable(child: Any) -> bool:
        bounds, buckets = getattr(child, "_upper_bounds", None), getattr(child, "_buckets", None)
        return (hasattr(child, "_sum") and isinstance(bounds, list) and isinstance(buckets, list)
                and len(bounds) == len(buckets))

    def observe(self, amount: float) -> None:
        if amount != amount:  # NaN: no bucket takes it, the sum does (as Histogram.observe)
            self.child.observe(amount)
            return
        self.sum += amount
        # the first bound >= amount; the last bound is +Inf, so always one
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.dirty = True

    def flush(self) -> None:
        if not self.dirty:
            return
        counts, total = self.counts, self.sum
        self.counts, self.sum, self.dirty = [0] * len(self.bounds), 0.0, False
        self.child._sum.inc(total)
        for bucket, n in zip(self.child._buckets, counts, strict=True):
            if n:
                bucket.inc(n)


class Children:
    """The labelled children of one metric, each behind its tally, kept by label values:
    ``labels()`` takes the metric's lock and validates the values on every call (~6 µs,
    twice per request pair and once per vendor call), while a child, once made, is the
    same object for as long as the metric lives (prometheus-client only drops one on
    ``remove``/``clear``, which nothing here calls). At most ``KEPT_CHILDREN`` sets are
    kept, so label values a client chooses (the HTTP method) cannot grow this without
    bound; past it the child itself is returned (counted at once, not tallied)."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._kept: dict[tuple[str, ...], Any] = {}
        self._tallied = Observed if isinstance(metric, Histogram) else Tally

    def __call__(self, *values: str) -> Any:
        kept = self._kept.get(values)
        if kept is None:
            kept = self._metric.labels(*values)
            if len(self._kept) < KEPT_CHILDREN:
                if self._tallied is Tally or Observed.usable(kept):
                    kept = self._tallied(kept)
                self._kept[values] = kept
        return kept

    def flush(self) -> None:
        for kept in self._kept.values():
            if isinstance(kept, (Tally, Observed)):
                kept.flush()


class Metrics:
    def __init__(self, multiproc_dir: str | None = None) -> None:
        #: the folder of every worker's values, or None: this process alone
        self.multiproc_dir = multiproc_dir if multiproc_dir is not None else os.environ.get(MULTIPROC_DIR_ENV) or None
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("reelgate_http_requests", "HTTP requests served", ["method", "route", "status"],
                                registry=r)
        #: ``requests.labels(method, route, status)``, tallied (what Guard counts with)
        self.requests_of = Children(self.requests)
        #: jobs accepted, tallied (``.inc()``); the metric itself is ``jobs_submitted.child``
        self.jobs_submitted = Tally(Counter("reelgate_jobs_submitted", "Jobs accepted", registry=r))
        self.jobs = Counter("reelgate_jobs_finished", "Jobs by terminal status and provider",
                            ["status", "provider"], registry=r)
        self._jobs_of = Children(self.jobs)
        self.attempts = Counter("reelgate_attempts", "Vendor attempts by outcome and error class",
                                ["provider", "outcome", "error_class"], registry=r)
        self._attempts_of = Children(self.attempts)
        self.cost = Counter("reelgate_cost_usd", "Settled cost in USD", ["provider"], registry=r)
        self._cost_of = Children(self.cost)
        self.vendor_latency = Histogram("reelgate_vendor_request_seconds",
                                        "Latency of calls to vendors, to the answer's headers",
                                        ["provider", "operation", "outcome"], registry=r,
                                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self._vendor_latency_of = Children(self.vendor_latency)
        self._tallied = (self.requests_of, self._jobs_of, self._attempts_of, self._cost_of, self._vendor_latency_of)
        self.webhooks = Counter("reelgate_vendor_webhooks", "Vendor callbacks received, by outcome",
                                ["provider", "outcome"], registry=r)
        # several workers: open when open at any live worker (each keeps its own circuits without Redis)
        self.circuit_open = Gauge("reelgate_circuit_open", "1 when a provider's circuit is open or half-open",
                                  ["key"], registry=r, multiprocess_mode="livemax")
        # several workers: 1 only while every live worker shares state
        self.shared_state_up = Gauge("reelgate_shared_state_up",
                                     "1 while circuits, budgets and slots are shared through Redis; 0 on local state",
                                     registry=r, multiprocess_mode="livemin")
        # several workers: the jobs the whole host follows
        self.jobs_in_flight = Gauge("reelgate_jobs_in_flight", "Unfinished jobs this service follows",
                                    registry=r, multiprocess_mode="livesum")
        self._health: Health | None = None
        self._shared_up: Callable[[], bool] = lambda: False
        self._in_flight: Callable[[], int] = lambda: 0
        self._refreshing: asyncio.Task[None] | None = None

    def watch(self, health: Health, shared_up: Callable[[], bool], in_flight: Callable[[], int]) -> None:
        """Where the gauges read from. With several workers (called in the running loop)
        it also starts writing them every ``GAUGE_REFRESH_S``, until :meth:`aclose`."""
        self._health, self._shared_up, self._in_flight = health, shared_up, in_flight
        if self.multiproc_dir is not None and self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh_every(GAUGE_REFRESH_S), name="metrics-gauges")

    def flush(self) -> None:
        """Add what was tallied since the last flush to prometheus-client's values."""
        self.jobs_submitted.flush()
        for children in self._tallied:
            children.flush()

    def refresh(self) -> None:
        """Set the gauges from what they watch, and flush the tallies."""
        self.flush()
        self.shared_state_up.set(1.0 if self._shared_up() else 0.0)
        self.jobs_in_flight.set(self._in_flight())
        circuits = self._health.snapshot().get("circuits", {}) if self._health is not None else {}
        for key, state in (circuits.items() if isinstance(circuits, dict) else []):
            value = state.get("state") if isinstance(state, dict) else state
            self.circuit_open.labels(key).set(0 if value == CircuitState.CLOSED.value else 1)

    async def _refresh_every(self, seconds: float) -> None:
        while True:
            self.refresh()
            await asyncio.sleep(seconds)

    async def aclose(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing
        self.flush()  # a worker stopping cleanly leaves every count in its file

    def observe_job(self, job: VideoJob) -> None:
        self._jobs_of(job.status.value, job.provider or "none").inc()
        for attempt in job.attempts:
            error_class = attempt.error["class"] if attempt.error else ""
            self._attempts_of(attempt.provider, attempt.outcome.value, error_class).inc()
            if attempt.cost_usd:
                self._cost_of(attempt.provider).inc(float(attempt.cost_usd))

    def instrument(self, client: httpx.AsyncClient) -> None:
        """Time every vendor call the gateway's client makes (submit, status, result,
        cancel, download), whatever path sent it."""
        if not isinstance(client, GatewayClient):
            raise TypeError("vendor calls are timed by the gateway's own client (gateway.transport.make_client)")
        client.timing.observers.append(self.observe_vendor_call)

    def observe_vendor_call(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        self._vendor_latency_of(provider, operation, outcome).observe(seconds)

    def render(self) -> bytes:
        """The exposition text: this service's registry, or every worker's values."""
        self.refresh()
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        host = CollectorRegistry()
        MultiProcessCollector(host, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
        return generate_latest(host)
