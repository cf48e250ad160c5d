"""Money in phases: reserve the estimate before a submit, settle at the terminal state.

The ledger refuses a reservation that would take the day's spend past the configured
limit, *before* any vendor call, with ``BudgetExceeded``. A reservation becomes the
settled cost when the attempt ends (zero when the vendor does not bill the failure).
In-process for one gateway; the shared store carries it across replicas.

An attempt whose outcome stayed unknown (an ambiguous submit, a job the vendor lost) is
settled as *at risk*: kept apart from what was spent, and still counted against the limit,
because the vendor may well have billed it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from gateway.errors import BudgetExceeded


class SpendLedger:
    def __init__(self, per_day_usd: float | None, *, clock: Callable[[], float] = time.time) -> None:
        self.limit = Decimal(str(per_day_usd)) if per_day_usd is not None else None
        self._clock = clock
        self._day = self._today()
        self._settled = Decimal(0)
        self._at_risk = Decimal(0)
        self._reserved: dict[str, Decimal] = {}
        self._lock = threading.Lock()

    def _today(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).date().isoformat()

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
            committed = self._settled + self._at_risk + sum(self._reserved.values(), Decimal(0))
            if self.limit is not None and committed + amount > self.limit:
                raise BudgetExceeded(
                    f"daily budget ${self.limit:.2f} would be exceeded: ${committed:.2f} spent or reserved "
                    f"today, this attempt needs ${amount:.2f}"
                )
            self._reserved[key] = amount

    def rename(self, old: str, new: str) -> None:
        """Move a reservation to another key (a job id known only after the check)."""
        with self._lock:
            if old in self._reserved:
                self._reserved[new] = self._reserved.pop(old)

    def settle(self, key: str, cost: Decimal, at_risk: Decimal = Decimal(0)) -> None:
        with self._lock:
            self._roll()
            self._reserved.pop(key, None)
            self._settled += cost
            self._at_risk += at_risk
