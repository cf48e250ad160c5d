"""Prometheus metrics of one service (its own registry: no globals, tests build many)."""

from __future__ import annotations

import time

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.job import VideoJob
from gateway.routing.circuit import CircuitState
from gateway.routing.health import Health


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("reelgate_http_requests", "HTTP requests served", ["method", "route", "status"],
                                registry=r)
        self.jobs_submitted = Counter("reelgate_jobs_submitted", "Jobs accepted", registry=r)
        self.jobs = Counter("reelgate_jobs_finished", "Jobs by terminal status and provider",
                            ["status", "provider"], registry=r)
        self.attempts = Counter("reelgate_attempts", "Vendor attempts by outcome and error class",
                                ["provider", "outcome", "error_class"], registry=r)
        self.cost = Counter("reelgate_cost_usd", "Settled cost in USD", ["provider"], registry=r)
        self.vendor_latency = Histogram("reelgate_vendor_request_seconds", "Latency of calls to vendors",
                                        ["host", "method", "status"], registry=r,
                                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.webhooks = Counter("reelgate_vendor_webhooks", "Vendor callbacks received, by outcome",
                                ["provider", "outcome"], registry=r)
        self.circuit_open = Gauge("reelgate_circuit_open", "1 when a provider's circuit is open or half-open",
                                  ["key"], registry=r)

    def observe_job(self, job: VideoJob) -> None:
        self.jobs.labels(job.status.value, job.provider or "none").inc()
        for attempt in job.attempts:
            error_class = attempt.error["class"] if attempt.error else ""
            self.attempts.labels(attempt.provider, attempt.outcome.value, error_class).inc()
            if attempt.cost_usd:
                self.cost.labels(attempt.provider).inc(float(attempt.cost_usd))

    def instrument(self, client: httpx.AsyncClient) -> None:
        """Time every vendor call (to the response headers) through the client's hooks."""

        async def started(request: httpx.Request) -> None:
            request.extensions["reelgate_started"] = time.perf_counter()

        async def answered(response: httpx.Response) -> None:
            start = response.request.extensions.get("reelgate_started")
            if start is not None:
                self.vendor_latency.labels(response.request.url.host, response.request.method,
                                           str(response.status_code)).observe(time.perf_counter() - start)

        hooks = client.event_hooks
        client.event_hooks = {"request": [*hooks["request"], started], "response": [*hooks["response"], answered]}

    def render(self, health: Health) -> bytes:
        circuits = health.snapshot().get("circuits", {})
        for key, state in (circuits.items() if isinstance(circuits, dict) else []):
            value = state.get("state") if isinstance(state, dict) else state
            self.circuit_open.labels(key).set(0 if value == CircuitState.CLOSED.value else 1)
        return generate_latest(self.registry)
