"""Provider health as the router sees it: may a call go to this provider and model now, and
how long will a job there take. One small interface, so the in-process implementation here
and a shared (Redis) one for several replicas are interchangeable.

Circuits are kept at two levels: the provider (``fal``: its host, its account) and the
model (``fal/fal-ai/luma-dream-machine/ray-2``: one endpoint). Every outcome is recorded at
both, and a call needs both to admit it, so one broken endpoint is skipped alone when
traffic is mixed, and a vendor that is down as a whole is skipped for every model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from gateway.routing.circuit import CircuitBreaker, CircuitSettings, CircuitState
from gateway.routing.latency import LatencyEstimator


class Health(Protocol):
    """What the router and runner need from health state. Synchronous on purpose: every
    method is one small read or update that a Redis implementation does in one round trip."""

    def allow(self, provider: str, vendor_model: str) -> tuple[bool, str]:
        """For planning: whether a call may go there now, and why not. Takes nothing."""

    def acquire(self, provider: str, vendor_model: str) -> tuple[bool, str]:
        """Right before a submit: like ``allow``, and takes the half-open probe slot, so
        exactly one call tests a recovering vendor. The call must end in ``record_*``."""

    def record_success(self, provider: str, vendor_model: str) -> None:
        """The vendor answered (a content rejection counts: the vendor is up)."""

    def record_failure(self, provider: str, vendor_model: str) -> None:
        """An outage-type failure: unavailable, ambiguous submit, timeout."""

    def observe_duration(self, provider: str, key: str, seconds: float, *, prior_s: float | None = None) -> None:
        """Seconds from submit to a finished video of shape ``key`` (``routing.plan.latency_key``)."""

    def expected_s(self, provider: str, key: str, prior_s: float, limit: int | None = None) -> float:
        """Expected seconds to a finished video, inflated when in-flight jobs reach ``limit``."""

    def can_meet(self, provider: str, key: str, prior_s: float, deadline_s: float, limit: int | None = None) -> bool:
        """Whether the 90th percentile, with the same load penalty, is within the deadline."""

    def p90_s(self, provider: str, key: str, prior_s: float, limit: int | None = None) -> float:
        """The 90th-percentile seconds ``can_meet`` checks a deadline against (same load penalty)."""

    def started(self, provider: str) -> None: ...

    def finished(self, provider: str) -> None: ...

    def snapshot(self) -> dict[str, object]:
        """JSON-ready state for ``reelgate providers --json`` and metrics."""


def model_key(provider: str, vendor_model: str) -> str:
    """The circuit key of one model at one provider."""
    return f"{provider}/{vendor_model}"


def probe_wait_s(health: Health, provider: str, vendor_model: str) -> float:
    """Seconds until both circuits of a model at a provider let a call (a probe) through,
    read from the circuits' snapshot (0 when one is half-open with its probe in flight)."""
    circuits = health.snapshot().get("circuits", {})
    waits = [0.0]
    for key in (provider, model_key(provider, vendor_model)):
        state = circuits.get(key) if isinstance(circuits, dict) else None
        if isinstance(state, dict) and isinstance(state.get("next_probe_in_s"), (int, float)):
            waits.append(float(state["next_probe_in_s"]))
    return max(waits)


class InProcessHealth:
    """:class:`Health` for one process: plain dicts behind one lock."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        circuit: CircuitSettings | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._circuits = CircuitBreaker(circuit or CircuitSettings(), clock)
        self._latency = LatencyEstimator()

    def _admission(self, provider: str, vendor_model: str) -> tuple[bool, str]:
        """The first of the two circuits that refuses; else the half-open one, whose reason
        says this call is the probe; else the provider's."""
        keys = (provider, model_key(provider, vendor_model))
        if self._closed(keys):
            return True, f"circuit closed for {provider}"
        answers = [self._circuits.allow(key) for key in keys]
        refused = [a for a in answers if not a[0]]
        if refused:
            return refused[0]
        probing = [a for key, a in zip(keys, answers, strict=True)
                   if self._circuits.state(key) is CircuitState.HALF_OPEN]
        return (probing or answers)[0]

    def _closed(self, keys: tuple[str, str]) -> bool:
        """Both circuits closed, the usual case: answered as the full check answers it (the
        provider's "closed", no probe to take) without clock reads, reasons and lists (a
        job is admitted twice: when planned and when submitted)."""
        return self._circuits.closed(keys[0]) and self._circuits.closed(keys[1])

    def allow(self, provider: str, vendor_model: str) -> tuple[bool, str]:
        with self._lock:
            return self._admission(provider, vendor_model)

    def acquire(self, provider: str, vendor_model: str) -> tuple[bool, str]:
        keys = (provider, model_key(provider, vendor_model))
        with self._lock:
            if self._closed(keys):  # a closed circuit has no probe to take
                return True, f"circuit closed for {provider}"
            allowed, reason = self._admission(provider, vendor_model)
            if allowed:
                # both admit, so neither acquisition can fail; taken together under the lock
                for key in keys:
                    self._circuits.try_acquire_probe(key)
            return allowed, reason

    def record_success(self, provider: str, vendor_model: str) -> None:
        with self._lock:
            self._circuits.record_success(provider)
            self._circuits.record_success(model_key(provider, vendor_model))

    def record_failure(self, provider: str, vendor_model: str) -> None:
        with self._lock:
            self._circuits.record_failure(provider)
            self._circuits.record_failure(model_key(provider, vendor_model))

    def observe_duration(self, provider: str, key: str, seconds: float, *, prior_s: float | None = None) -> None:
        with self._lock:
            self._latency.observe(provider, key, seconds, prior_s)

    def expected_s(self, provider: str, key: str, prior_s: float, limit: int | None = None) -> float:
        with self._lock:
            return self._latency.expected_s(provider, key, prior_s, limit)

    def can_meet(self, provider: str, key: str, prior_s: float, deadline_s: float, limit: int | None = None) -> bool:
        with self._lock:
            return self._latency.can_meet(provider, key, prior_s, deadline_s, limit)

    def p90_s(self, provider: str, key: str, prior_s: float, limit: int | None = None) -> float:
        with self._lock:
            return self._latency.p90_s(provider, key, prior_s, limit)

    def started(self, provider: str) -> None:
        with self._lock:
            self._latency.started(provider)

    def finished(self, provider: str) -> None:
        with self._lock:
            self._latency.finished(provider)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {"circuits": self._circuits.snapshot(), **self._latency.snapshot()}
