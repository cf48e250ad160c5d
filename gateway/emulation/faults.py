"""Faults an emulator can inject, parsed from ``VENDOR=FAULT[:key=value,...]``.

| fault               | effect                                                          | options                    |
|---------------------|-----------------------------------------------------------------|----------------------------|
| `outage`            | every call answers 503 (no job is created)                      |                            |
| `slow`              | every response is delayed                                       | `delay` s (2)              |
| `rate-limit`        | submits answer 429 with Retry-After (no job is created)         | `retry_after` (1), `times` |
| `flaky`             | a share of calls answer 5xx before doing anything               | `rate` 0..1 (0.3), `times` |
| `fail-late`         | jobs are accepted, run, then fail                               | `times`                    |
| `drop-after-accept` | the job is created, then the connection drops before the answer | `times`                    |
| `content-policy`    | the vendor's moderation rejects the job                         | `times`                    |
| `forget`            | the job is accepted (and counted), then lost: status/result 404 | `times`                    |

``times`` (a whole number, at least 1) limits a fault to the next N calls it applies to;
it is removed after that. ``outage`` and ``slow`` last until changed, so they take no
``times``. Any other option is an error, never silently ignored.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass, field
from enum import StrEnum


class Fault(StrEnum):
    OUTAGE = "outage"
    SLOW = "slow"
    RATE_LIMIT = "rate-limit"
    FLAKY = "flaky"
    FAIL_LATE = "fail-late"
    DROP_AFTER_ACCEPT = "drop-after-accept"
    CONTENT_POLICY = "content-policy"
    #: a vendor's amnesia (a queue restarted empty): it said yes, then knows nothing
    FORGET = "forget"


_DEFAULTS: dict[Fault, dict[str, float]] = {
    Fault.SLOW: {"delay": 2.0},
    Fault.RATE_LIMIT: {"retry_after": 1.0},
    Fault.FLAKY: {"rate": 0.3},
}
#: the faults that count down ``times`` (the others are checked, not fired, on every call)
_COUNTED = frozenset({Fault.RATE_LIMIT, Fault.FLAKY, Fault.FAIL_LATE, Fault.DROP_AFTER_ACCEPT, Fault.CONTENT_POLICY})
#: each numeric option's allowed range (inclusive)
_RANGES: dict[str, tuple[float, float]] = {"delay": (0.0, 3600.0), "retry_after": (0.0, 3600.0), "rate": (0.0, 1.0)}


@dataclass
class FaultSpec:
    fault: Fault
    options: dict[str, float] = field(default_factory=dict)
    #: None = for ever; otherwise how many more times this fault fires
    times: int | None = None

    def option(self, name: str) -> float:
        return self.options.get(name, _DEFAULTS.get(self.fault, {}).get(name, 0.0))

    def describe(self) -> str:
        opts = dict(self.options)
        if self.times is not None:
            opts["times"] = self.times
        if not opts:
            return self.fault.value
        return f"{self.fault.value}:" + ",".join(f"{k}={v:g}" for k, v in opts.items())


def parse_fault(text: str) -> FaultSpec:
    """``"rate-limit:retry_after=2,times=3"`` -> FaultSpec. Raises ValueError with the reason."""
    name, _, rest = text.strip().partition(":")
    try:
        fault = Fault(name.strip())
    except ValueError:
        known = ", ".join(f.value for f in Fault)
        raise ValueError(f"unknown fault {name!r}; known faults: {known}") from None
    options: dict[str, float] = {}
    times: int | None = None
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"fault option {part!r} must look like key=value")
        if key == "times":
            times = _times(fault, value)
        else:
            options[key] = _option(fault, key, value)
    return FaultSpec(fault, options, times)


def _number(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"fault option {key}={value!r} must be a number") from None
    if not math.isfinite(number):
        raise ValueError(f"fault option {key}={value!r} must be a finite number")
    return number


def _times(fault: Fault, value: str) -> int:
    if fault not in _COUNTED:
        raise ValueError(f"fault {fault.value} takes no times (it lasts until changed)")
    number = _number("times", value)
    if number != int(number) or number < 1:
        raise ValueError(f"fault option times={value!r} must be a whole number of at least 1")
    return int(number)


def _option(fault: Fault, key: str, value: str) -> float:
    allowed = sorted(_DEFAULTS.get(fault, {}))
    if key not in allowed:
        takes = ", ".join([*allowed, *(["times"] if fault in _COUNTED else [])]) or "no options"
        raise ValueError(f"fault {fault.value} has no option {key!r}; it takes {takes}")
    number = _number(key, value)
    low, high = _RANGES[key]
    if not low <= number <= high:
        raise ValueError(f"fault option {key}={value} must be between {low:g} and {high:g}")
    return number


def parse_assignment(text: str) -> tuple[str, FaultSpec]:
    """``"fal=outage"`` -> ("fal", FaultSpec(outage))."""
    vendor, eq, spec = text.partition("=")
    if not eq or not vendor.strip():
        raise ValueError(f"{text!r} must look like VENDOR=FAULT, e.g. fal=outage")
    return vendor.strip(), parse_fault(spec)


class FaultSet:
    """The faults active on one emulator; changed while it runs (thread-safe)."""

    def __init__(self, specs: list[FaultSpec] | None = None, *, rng: random.Random | None = None) -> None:
        self._specs: dict[Fault, FaultSpec] = {s.fault: s for s in specs or []}
        self._lock = threading.Lock()
        self._rng = rng or random.Random()

    def set(self, specs: list[FaultSpec]) -> None:
        with self._lock:
            self._specs = {s.fault: s for s in specs}

    def clear(self) -> None:
        self.set([])

    def active(self) -> list[FaultSpec]:
        with self._lock:
            return list(self._specs.values())

    def peek(self, fault: Fault) -> FaultSpec | None:
        with self._lock:
            return self._specs.get(fault)

    def fire(self, fault: Fault) -> FaultSpec | None:
        """The spec if ``fault`` applies to this call (counting down ``times``), else None."""
        with self._lock:
            spec = self._specs.get(fault)
            if spec is None:
                return None
            if fault is Fault.FLAKY and self._rng.random() >= spec.option("rate"):
                return None
            if spec.times is not None:
                spec.times -= 1
                if spec.times <= 0:
                    del self._specs[fault]
            return spec

    def describe(self) -> list[str]:
        return [s.describe() for s in self.active()]
