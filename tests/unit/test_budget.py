from decimal import Decimal

import pytest
from reelgate_toyvendor import ToyAdapter

from gateway.budget import SpendLedger
from gateway.config import BudgetConfig, Settings
from gateway.errors import BudgetExceeded
from gateway.request import VideoRequest
from tests.support import FakeClock
from tests.unit.test_runner import build


def test_ledger_refuses_past_the_daily_limit_and_rolls_over_at_midnight():
    now = [1_700_000_000.0]
    ledger = SpendLedger(1.0, clock=lambda: now[0])
    ledger.reserve("a", Decimal("0.60"))
    with pytest.raises(BudgetExceeded, match=r"daily budget \$1.00"):
        ledger.reserve("b", Decimal("0.50"))
    ledger.settle("a", Decimal("0"))  # the vendor did not bill: the money is free again
    ledger.reserve("b", Decimal("0.50"))
    ledger.settle("b", Decimal("0.50"))
    assert ledger.spent_today() == Decimal("0.50")
    now[0] += 86_400
    assert ledger.spent_today() == Decimal("0")


def test_the_day_a_ledger_names_is_the_utc_date_of_its_clock_at_every_moment():
    """``_today`` names the day once and answers from the span it covers: at the last
    microsecond before midnight, at midnight, after it, and with a clock that goes back."""
    from datetime import UTC, datetime

    midnight = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
    now = [midnight - 3600]
    ledger = SpendLedger(1.0, clock=lambda: now[0])
    for moment in (midnight - 1e-6, midnight - 7200, midnight, midnight + 86_399.999, midnight + 86_400,
                   midnight - 1, midnight + 0.5, midnight - 86_400, midnight - 86_400.5):
        now[0] = moment
        assert ledger._today() == datetime.fromtimestamp(moment, UTC).date().isoformat(), moment
    ledger.reserve("a", Decimal("0.60"))
    now[0] = midnight  # the next day: the limit is whole again, the reservation carries over
    ledger.reserve("b", Decimal("0.30"))
    assert ledger.spent_today() == Decimal("0.90")
    ledger.settle("a", Decimal("0.60"))
    ledger.settle("b", Decimal("0.30"))
    now[0] = midnight + 86_400
    assert ledger.spent_today() == Decimal("0")


def test_an_at_risk_amount_is_kept_apart_from_spend_and_still_counts_against_the_limit():
    now = [1_700_000_000.0]
    ledger = SpendLedger(1.0, clock=lambda: now[0])
    ledger.reserve("lost", Decimal("0.60"))
    ledger.settle("lost", Decimal("0"), at_risk=Decimal("0.60"))  # the vendor lost the job: it may bill
    assert (ledger.spent_today(), ledger.at_risk_today()) == (Decimal("0"), Decimal("0.60"))
    with pytest.raises(BudgetExceeded):
        ledger.reserve("next", Decimal("0.50"))
    now[0] += 86_400
    assert ledger.at_risk_today() == Decimal("0")


async def test_daily_budget_is_enforced_before_any_vendor_call(serve):
    clock = FakeClock()
    settings = Settings(fallback_order=["toy"], budgets=BudgetConfig(per_day_usd=0.15))
    gw, emus = build(serve, clock, settings=settings, classes=(ToyAdapter,))
    async with gw:
        first = await gw.generate(VideoRequest(prompt="one"))
        assert first.cost_usd == Decimal("0.1")
        with pytest.raises(BudgetExceeded):
            await gw.submit(VideoRequest(prompt="two"))
    assert emus["toy"].accepted_submissions == 1


async def test_per_request_budget_from_config_caps_requests(serve):
    clock = FakeClock()
    settings = Settings(fallback_order=["toy"], budgets=BudgetConfig(per_request_usd=0.05))
    gw, emus = build(serve, clock, settings=settings, classes=(ToyAdapter,))
    async with gw:
        with pytest.raises(BudgetExceeded, match=r"cheapest is toy at \$0.10"):
            await gw.submit(VideoRequest(prompt="x"))
    assert emus["toy"].accepted_submissions == 0


def test_a_ledger_without_a_limit_keeps_every_reservation_and_never_refuses():
    ledger = SpendLedger(None)
    for i in range(100):
        ledger.reserve(f"job{i}", Decimal("1000"))
    assert ledger.spent_today() == Decimal("100000")
    assert len(ledger.reserved()) == 100
    ledger.settle("job0", Decimal("2"))
    ledger.release("job1")
    assert ledger.spent_today() == Decimal("2") + 98 * Decimal("1000")
