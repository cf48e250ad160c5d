"""Circuit breaking: stop sending work to a key (a provider, or one of its models) that is
failing, and let exactly one probe find out when it has recovered.

States: ``closed`` (calls flow) → ``open`` (calls refused for a cooldown) → ``half_open``
(one probe at a time) → ``closed`` on a probe success, or ``open`` again, with a longer
cooldown, on a probe failure. The caller decides which failures count (outages, not
content rejections) and reports them with ``record_failure``; everything else that shows
the vendor answering is a ``record_success``.

Time is an argument (``now``) on :class:`Circuit` and an injected clock on
:class:`CircuitBreaker`, so tests drive it with a fake clock and nothing here sleeps.
Not thread-safe by itself: :class:`gateway.routing.health.InProcessHealth` holds the lock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitSettings(BaseModel):
    """When a circuit opens and how long it stays open (``circuit:`` in the config file).
    Defaults are explained in docs/routing.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: this many failures in a row open the circuit: a hard outage trips it fast
    consecutive_failures: int = Field(default=5, ge=1)
    #: ... or this share of failed calls over the window (flapping vendors never fail 5 in a row)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    window_s: float = Field(default=60.0, gt=0)
    #: the rate rule needs this many calls in the window, so 1 of 2 is not "50 % down"
    min_calls: int = Field(default=10, ge=1)
    #: first wait before a probe; each failed probe multiplies it by the growth, up to the cap
    cooldown_s: float = Field(default=30.0, gt=0)
    cooldown_growth: float = Field(default=2.0, ge=1)
    max_cooldown_s: float = Field(default=300.0, gt=0)
    #: a probe that reports no outcome for this long (its caller died) frees the slot
    probe_timeout_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _cooldowns(self) -> CircuitSettings:
        if self.max_cooldown_s < self.cooldown_s:
            raise ValueError("max_cooldown_s must be at least cooldown_s")
        return self


class CallWindow:
    """Calls and failures over the last ``span_s`` seconds, counted in buckets.

    Memory and time per call are bounded by the number of buckets, not by the call rate:
    a vendor taking thousands of calls a minute must not cost a record per call (that was
    ~0.2 KB per job in flight). A bucket leaves the window once all of it is older than
    the span, so the window may hold up to one bucket (``span_s / BUCKETS``) extra."""

    BUCKETS = 60

    __slots__ = ("span_s", "calls", "failures", "_width", "_buckets")

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.calls = self.failures = 0
        self._width = span_s / self.BUCKETS
        #: [bucket number, calls, failures], oldest first
        self._buckets: deque[list[int]] = deque()

    def add(self, now: float, failed: bool) -> None:
        number = math.floor(now / self._width)
        if not self._buckets or self._buckets[-1][0] != number:
            self._buckets.append([number, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += failed
        self.calls += 1
        self.failures += failed
        self.prune(now)

    def prune(self, now: float) -> None:
        while self._buckets and (self._buckets[0][0] + 1) * self._width <= now - self.span_s:
            _, calls, failures = self._buckets.popleft()
            self.calls -= calls
            self.failures -= failures

    def clear(self) -> None:
        self._buckets.clear()
        self.calls = self.failures = 0


class Circuit:
    """The state machine of one key. Every method takes ``now`` (seconds, monotonic)."""

    def __init__(self, name: str, settings: CircuitSettings) -> None:
        self.name = name
        self.settings = settings
        self._consecutive = 0
        self._window = CallWindow(settings.window_s)
        self._opened_at: float | None = None
        self._tripped_by = ""
        self._failed_probes = 0
        self._cooldown_s = settings.cooldown_s
        self._probe_started_at: float | None = None

    # -- reading -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Closed whatever the time (never opened, or closed since): no clock needed."""
        return self._opened_at is None

    def state(self, now: float) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if now < self._opened_at + self._cooldown_s:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def allow(self, now: float) -> tuple[bool, str]:
        """Whether a call may go now, and why; does not take the probe (see ``try_acquire_probe``)."""
        state = self.state(now)
        if state is CircuitState.CLOSED:
            return True, f"circuit closed for {self.name}"
        assert self._opened_at is not None
        if state is CircuitState.OPEN:
            since = now - self._opened_at
            wait = self._opened_at + self._cooldown_s - now
            return False, (f"circuit open for {self.name} since {since:.0f} s ({self._open_reason}); "
                           f"next probe in {wait:.0f} s")
        if self._probe_busy(now):
            assert self._probe_started_at is not None
            return False, (f"circuit half-open for {self.name} ({self._open_reason}); "
                           f"a probe is in flight since {now - self._probe_started_at:.0f} s")
        return True, f"circuit half-open for {self.name} ({self._open_reason}); this call is the probe"

    def try_acquire_probe(self, now: float) -> bool:
        """Call right before the call itself. Closed: always True (no probe needed). Half-open:
        True for exactly one caller until it reports an outcome (or the probe times out)."""
        allowed, _ = self.allow(now)
        if allowed and self.state(now) is CircuitState.HALF_OPEN:
            self._probe_started_at = now
        return allowed

    def _probe_busy(self, now: float) -> bool:
        started = self._probe_started_at
        return started is not None and now - started < self.settings.probe_timeout_s

    # -- outcomes ----------------------------------------------------------------------
    def record_success(self, now: float) -> None:
        state = self.state(now)
        if state is CircuitState.HALF_OPEN:
            self._close()
        elif state is CircuitState.CLOSED:
            self._consecutive = 0
            self._remember(now, failed=False)
        # open: the call was admitted before the circuit opened; it says nothing about now

    def record_failure(self, now: float) -> None:
        state = self.state(now)
        if state is CircuitState.HALF_OPEN:
            self._cooldown_s = min(self._cooldown_s * self.settings.cooldown_growth, self.settings.max_cooldown_s)
            self._failed_probes += 1
            self._open(now, self._tripped_by)
        elif state is CircuitState.CLOSED:
            self._consecutive += 1
            self._remember(now, failed=True)
            reason = self._trip_reason()
            if reason:
                self._open(now, reason)

    def _trip_reason(self) -> str:
        s = self.settings
        if self._consecutive >= s.consecutive_failures:
            return f"{self._consecutive} consecutive failures"
        calls, failures = self._window.calls, self._window.failures
        if calls >= s.min_calls and failures / calls >= s.failure_rate:
            return f"{failures} of {calls} calls failed in the last {s.window_s:.0f} s"
        return ""

    def _remember(self, now: float, *, failed: bool) -> None:
        self._window.add(now, failed)

    def cooldown_left(self, now: float) -> float:
        """Seconds until the next probe may go (0 when not open)."""
        return max(self._opened_at + self._cooldown_s - now, 0.0) if self._opened_at is not None else 0.0

    @property
    def open_reason(self) -> str:
        """What opened the circuit (and the failed probes since), for another replica to show."""
        return self._open_reason

    @property
    def _open_reason(self) -> str:
        probes = self._failed_probes
        if not probes:
            return self._tripped_by
        return f"{self._tripped_by}, then {probes} failed probe{'s' if probes > 1 else ''}"

    def trip(self, now: float, reason: str, cooldown_s: float) -> None:
        """Open the circuit because another replica saw it fail (shared state): for the
        ``cooldown_s`` that remain of that replica's cooldown. A probe failure here grows
        the cooldown from there, as for a trip of its own."""
        left = min(max(cooldown_s, 0.0), self.settings.max_cooldown_s)
        self._cooldown_s = max(left, self.settings.cooldown_s)
        self._open(now + left - self._cooldown_s, reason)  # so the cooldown ends when it does there

    def reset(self) -> None:
        """Close the circuit because another replica's probe found the key working again."""
        self._close()

    def _open(self, now: float, reason: str) -> None:
        self._opened_at = now
        self._tripped_by = reason
        self._probe_started_at = None

    def _close(self) -> None:
        # a fresh start: old failures must not re-open a vendor that just proved it works
        self._opened_at = None
        self._tripped_by = ""
        self._failed_probes = 0
        self._probe_started_at = None
        self._cooldown_s = self.settings.cooldown_s
        self._consecutive = 0
        self._window.clear()

    def snapshot(self, now: float) -> dict[str, object]:
        self._window.prune(now)
        state = self.state(now)
        snap: dict[str, object] = {
            "state": state.value,
            "reason": self.allow(now)[1],
            "consecutive_failures": self._consecutive,
            "window": {"calls": self._window.calls, "failures": self._window.failures,
                       "seconds": self.settings.window_s},
            "cooldown_s": self._cooldown_s,
        }
        if self._opened_at is not None:
            snap["opened_s_ago"] = round(now - self._opened_at, 1)
            snap["next_probe_in_s"] = round(max(self._opened_at + self._cooldown_s - now, 0.0), 1)
        return snap


class CircuitBreaker:
    """Circuits by key (``fal``, ``fal/fal-ai/luma-dream-machine/ray-2``), sharing settings and a clock."""

    def __init__(self, settings: CircuitSettings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or CircuitSettings()
        self._clock = clock
        self._circuits: dict[str, Circuit] = {}

    def _circuit(self, key: str) -> Circuit:
        circuit = self._circuits.get(key)
        if circuit is None:
            circuit = self._circuits[key] = Circuit(key, self.settings)
        return circuit

    def state(self, key: str) -> CircuitState:
        return self._circuit(key).state(self._clock())

    def allow(self, key: str) -> tuple[bool, str]:
        return self._circuit(key).allow(self._clock())

    def closed(self, key: str) -> bool:
        return self._circuit(key).closed

    def try_acquire_probe(self, key: str) -> bool:
        return self._circuit(key).try_acquire_probe(self._clock())

    def record_success(self, key: str) -> None:
        self._circuit(key).record_success(self._clock())

    def record_failure(self, key: str) -> None:
        self._circuit(key).record_failure(self._clock())

    def trip(self, key: str, reason: str, cooldown_s: float) -> None:
        self._circuit(key).trip(self._clock(), reason, cooldown_s)

    def open_for(self, key: str) -> tuple[str, float] | None:
        """(why, seconds of cooldown left) when ``key``'s circuit is open, else None."""
        circuit, now = self._circuit(key), self._clock()
        if circuit.state(now) is not CircuitState.OPEN:
            return None
        return circuit.open_reason, circuit.cooldown_left(now)

    def reset(self, key: str) -> None:
        self._circuit(key).reset()

    def snapshot(self) -> dict[str, dict[str, object]]:
        now = self._clock()
        return {key: circuit.snapshot(now) for key, circuit in sorted(self._circuits.items())}
