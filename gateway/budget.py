"""Money in phases: reserve the estimate before a submit, settle at the terminal state.

The ledger refuses a reservation that would take the day's spend past the configured
limit, *before* any vendor call, with ``BudgetExceeded``. A reservation becomes the
settled cost when the attempt ends (zero when the vendor does not bill the failure),
and is released on every other way out: a request refused after the check, a replay,
a cancelled job. At any moment the open reservations are the estimates of the jobs
still running.
In-process for one gateway; the shared store carries it across replicas.

An attempt whose outcome stayed unknown (an ambiguous submit, a job the vendor lost) is
settled as *at risk*: kept apart from what was spent, and still counted against the limit,
because the vendor may well have billed it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from gateway.errors import BudgetExceeded


class Ledger(Protocol):
    """A daily budget: :class:`SpendLedger` in one process, or its Redis twin
    (``gateway.shared.redis_budget``) shared by replicas."""

    limit: Decimal | None

    def spent_today(self) -> Decimal: ...

    def reserve(self, key: str, amount: Decimal) -> None: ...

    def hold(self, key: str, amount: Decimal) -> None: ...

    def at_risk_today(self) -> Decimal: ...

    def settle(self, key: str, cost: Decimal, at_risk: Decimal = ...) -> None: ...

    def release(self, key: str) -> None: ...

    def handover(self, key: str) -> None: ...

    def reserved(self) -> dict[str, Decimal]: ...


class SpendLedger:
    def __init__(self, per_day_usd: float | None, *, clock: Callable[[], float] = time.time) -> None:
        self.limit = Decimal(str(per_day_usd)) if per_day_usd is not None else None
        self._clock = clock
        #: the UTC day ``_today`` last named, and the clock's span of it [from, until)
        self._named: tuple[float, float, str] = (0.0, 0.0, "")
        self._day = self._today()
        self._settled = Decimal(0)
        self._at_risk = Decimal(0)
        self._reserved: dict[str, Decimal] = {}
        self._lock = threading.Lock()

    def _today(self) -> str:
        """The UTC date now. Named from the clock once per day: every reserve and settle asks
        (a ``datetime`` and an ISO date per call were ~2 % of a create's CPU)."""
        now = self._clock()
        start, until, day = self._named
        if start <= now < until:
            return day
        moment = datetime.fromtimestamp(now, UTC)
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        day = moment.date().isoformat()
        self._named = (start, start + 86_400, day)  # POSIX time: every UTC day is 86,400 s
        return day

    def _roll(self) -> None:
        today = self._today()
        if today != self._day:  # a new UTC day starts from zero; open reservations carry over
            self._day, self._settled, self._at_risk = today, Decimal(0), Decimal(0)

    def spent_today(self) -> Decimal:
        with self._lock:
            self._roll()
            return self._settled + sum(self._reserved.values(), Decimal(0))

    def at_risk_today(self) -> Decimal:
        """What may have been billed today without a result (not part of ``spent_today``)."""
        with self._lock:
            self._roll()
            return self._at_risk

    def reserve(self, key: str, amount: Decimal) -> None:
        """Hold ``amount`` for attempt ``key``, or raise when it would pass the daily limit."""
        with self._lock:
            self._roll()
            if self.limit is not None:  # no limit, nothing to add up (a sum over every job in flight)
                committed = self._settled + self._at_risk + sum(self._reserved.values(), Decimal(0))
                if committed + amount > self.limit:
                    raise BudgetExceeded(
                        f"daily budget ${self.limit:.2f} would be exceeded: ${committed:.2f} spent or reserved "
                        f"today, this attempt needs ${amount:.2f}"
                    )
            self._reserved[key] = amount

    def hold(self, key: str, amount: Decimal) -> None:
        """Reserve without the check: for a job already running (resumed after a restart)."""
        with self._lock:
            self._reserved[key] = amount

    def settle(self, key: str, cost: Decimal, at_risk: Decimal = Decimal(0)) -> None:
        """The reservation becomes what was really spent (zero when nothing was billed),
        plus what may have been billed without a result (``at_risk``, kept apart)."""
        with self._lock:
            self._roll()
            self._reserved.pop(key, None)
            self._settled += cost
            self._at_risk += at_risk

    def release(self, key: str) -> None:
        """Drop the reservation: nothing was, or will be, spent for it."""
        self.settle(key, Decimal(0))

    def handover(self, key: str) -> None:
        """Another replica follows the job now (its lease moved): this process's reservation
        goes, and what the job costs is the new holder's to settle, once."""
        with self._lock:
            self._reserved.pop(key, None)

    def reserved(self) -> dict[str, Decimal]:
        """The open reservations by key (attempt or job id)."""
        with self._lock:
            return dict(self._reserved)


def reserve_all(ledgers: Iterable[Ledger | None], key: str, amount: Decimal) -> tuple[Ledger, ...]:
    """Hold ``amount`` in every ledger given, or in none (``BudgetExceeded`` from the first
    that refuses)."""
    held: list[Ledger] = []
    try:
        for ledger in ledgers:
            if ledger is not None:
                ledger.reserve(key, amount)
                held.append(ledger)
    except BudgetExceeded:
        release_all(held, key)
        raise
    return tuple(held)


def release_all(ledgers: Iterable[Ledger], key: str) -> None:
    for ledger in ledgers:
        ledger.release(key)
