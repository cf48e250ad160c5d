"""Prometheus metrics of one service (its own registry: no globals, tests build many)."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.job import VideoJob
from gateway.routing.circuit import CircuitState
from gateway.routing.health import Health
from gateway.transport import GatewayClient


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
        self.vendor_latency = Histogram("reelgate_vendor_request_seconds",
                                        "Latency of calls to vendors, to the answer's headers",
                                        ["provider", "operation", "outcome"], registry=r,
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
        """Time every vendor call the gateway's client makes (submit, status, result,
        cancel, download), whatever path sent it."""
        if not isinstance(client, GatewayClient):
            raise TypeError("vendor calls are timed by the gateway's own client (gateway.transport.make_client)")
        client.timing.observers.append(self.observe_vendor_call)

    def observe_vendor_call(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        self.vendor_latency.labels(provider, operation, outcome).observe(seconds)

    def render(self, health: Health) -> bytes:
        circuits = health.snapshot().get("circuits", {})
        for key, state in (circuits.items() if isinstance(circuits, dict) else []):
            value = state.get("state") if isinstance(state, dict) else state
            self.circuit_open.labels(key).set(0 if value == CircuitState.CLOSED.value else 1)
        return generate_latest(self.registry)
