"""Daily budgets in Redis: the SpendLedger interface, atomic across replicas."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from gateway.errors import BudgetExceeded
from gateway.shared.connection import SharedState
from gateway.shared.redis_budget import RedisSpendLedger
from tests.shared.conftest import TcpProxy


def test_many_concurrent_reserves_across_replicas_never_pass_the_limit(states: Callable[..., SharedState]) -> None:
    replicas = [RedisSpendLedger(states(), "gateway", 10.0) for _ in range(3)]

    def reserve(i: int) -> bool:
        try:
            replicas[i % 3].reserve(f"job-{i}", Decimal("0.40"))
            return True
        except BudgetExceeded:
            return False

    with ThreadPoolExecutor(max_workers=24) as pool:
        granted = list(pool.map(reserve, range(120)))
    assert sum(granted) == 25  # $10 / $0.40, exactly: no two replicas took the last dollar
    assert all(r.spent_today() == Decimal("10.00") for r in replicas)


def test_reserve_hold_release_settle_as_the_in_process_ledger_does(states: Callable[..., SharedState]) -> None:
    a, b = RedisSpendLedger(states(), "key:k1", 1.0), RedisSpendLedger(states(), "key:k1", 1.0)
    other = RedisSpendLedger(states(), "key:k2", 1.0)
    a.reserve("job-1", Decimal("0.50"))
    assert a.reserved() == {"job-1": Decimal("0.50")} and b.reserved() == {}  # each replica its own
    b.hold("resumed", Decimal("0.90"))  # a resumed job: held past the limit, never refused
    assert a.spent_today() == Decimal("1.40")
    b.release("resumed")
    assert b.reserved() == {} and a.spent_today() == Decimal("0.50")
    assert b.spent_today() == Decimal("0.50") and other.spent_today() == 0
    with pytest.raises(BudgetExceeded, match=r"\$1.00 would be exceeded: \$0.50 spent or reserved today, "
                                             r"this attempt needs \$0.60"):
        b.reserve("job-2", Decimal("0.60"))
    b.settle("job-1", Decimal("0.30"))  # settled on another replica than the one that reserved
    assert a.spent_today() == Decimal("0.30")
    a.settle("job-1", Decimal("0.30"))  # settling again (or an unknown key) adds the cost
    assert a.spent_today() == Decimal("0.60")
    b.reserve("job-2", Decimal("0.40"))
    assert a.spent_today() == Decimal("1.00")


def test_a_job_handed_over_to_another_replica_is_held_and_settled_once(states: Callable[..., SharedState]) -> None:
    a, b = RedisSpendLedger(states(), "gateway", 1.0), RedisSpendLedger(states(), "gateway", 1.0)
    a.reserve("job-1", Decimal("0.50"))
    b.hold("job-1", Decimal("0.50"))  # b took the lease over and holds the job's estimate again
    a.handover("job-1")  # a learns it lost the lease: its record goes, b's hold stays
    assert a.reserved() == {} and b.reserved() == {"job-1": Decimal("0.50")}
    assert a.spent_today() == Decimal("0.50")  # still held once, not dropped, not doubled
    b.settle("job-1", Decimal("0.40"))
    assert a.spent_today() == b.spent_today() == Decimal("0.40")


def test_a_reservation_its_replica_never_settles_lapses(states: Callable[..., SharedState]) -> None:
    state = states()
    ledger = RedisSpendLedger(state, "gateway", 1.0)
    ledger.reserve("job-of-a-dead-replica", Decimal("0.90"))
    with pytest.raises(BudgetExceeded):
        ledger.reserve("job-2", Decimal("0.20"))
    # its expiry, as if RESERVATION_TTL_S had passed on the Redis clock
    state.sync.zadd(state.key("budget", "gateway", "expiry"), {"job-of-a-dead-replica": 1})
    ledger.reserve("job-2", Decimal("0.20"))
    assert ledger.spent_today() == Decimal("0.20")


def test_a_new_utc_day_starts_from_zero_and_open_reservations_carry_over(states: Callable[..., SharedState]) -> None:
    now = [time.time()]
    ledger = RedisSpendLedger(states(), "gateway", 1.0, clock=lambda: now[0])
    ledger.settle("job-1", Decimal("0.70"))
    ledger.reserve("job-2", Decimal("0.20"))
    now[0] += 86400
    assert ledger.spent_today() == Decimal("0.20")
    ledger.reserve("job-3", Decimal("0.80"))


async def test_redis_away_serves_on_a_local_ledger_and_replays_into_redis_on_return(
    states: Callable[..., SharedState], proxy: TcpProxy
) -> None:
    direct = RedisSpendLedger(states(), "gateway", 1.0)
    state = states(proxy.url, retry_s=0.05)
    ledger = RedisSpendLedger(state, "gateway", 1.0)
    ledger.reserve("job-1", Decimal("0.30"))
    state.start()
    await state.joined.wait()
    proxy.stop()
    ledger.settle("job-1", Decimal("0.25"))  # Redis is gone: kept locally, to be replayed
    assert not state.available and state.status()["state"] == "local fallback"
    ledger.reserve("job-2", Decimal("0.50"))  # the local ledger, seeded with what Redis last said
    with pytest.raises(BudgetExceeded, match=r"\$0.75 spent or reserved"):
        ledger.reserve("job-3", Decimal("0.50"))
    assert direct.spent_today() == Decimal("0.30")  # Redis has not heard yet
    proxy.start()
    while not state.available:  # the watcher reaches Redis again and replays
        await state.joined.wait()
    assert state.status()["state"] == "shared"
    assert direct.spent_today() == Decimal("0.25")
    ledger.settle("job-2", Decimal("0.50"))
    assert direct.spent_today() == Decimal("0.75")
