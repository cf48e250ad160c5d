import pytest

from gateway.routing.circuit import CallWindow, CircuitBreaker, CircuitSettings, CircuitState
from tests.support import FakeClock


def breaker(**settings: float) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(CircuitSettings(**settings), clock.now), clock  # type: ignore[arg-type]


def fail(b: CircuitBreaker, key: str, times: int) -> None:
    for _ in range(times):
        b.record_failure(key)


def test_opens_after_consecutive_failures_and_says_why_and_until_when():
    b, clock = breaker()
    fail(b, "fal", 4)
    assert b.state("fal") is CircuitState.CLOSED
    assert b.allow("fal") == (True, "circuit closed for fal")
    b.record_failure("fal")
    assert b.state("fal") is CircuitState.OPEN
    clock.t += 12
    assert b.allow("fal") == (False, "circuit open for fal since 12 s (5 consecutive failures); next probe in 18 s")
    assert not b.try_acquire_probe("fal")


def test_a_success_resets_the_consecutive_count():
    b, _ = breaker()
    fail(b, "fal", 4)
    b.record_success("fal")
    fail(b, "fal", 4)
    assert b.state("fal") is CircuitState.CLOSED


def test_keys_are_independent():
    b, _ = breaker()
    fail(b, "fal/ray-2", 5)
    assert b.state("fal/ray-2") is CircuitState.OPEN
    assert b.state("fal") is CircuitState.CLOSED
    assert b.allow("apiframe")[0]


def test_half_open_admits_exactly_one_probe():
    b, clock = breaker()
    fail(b, "fal", 5)
    clock.t += 30
    assert b.state("fal") is CircuitState.HALF_OPEN
    allowed, reason = b.allow("fal")
    assert allowed and reason.endswith("this call is the probe")
    assert b.try_acquire_probe("fal")
    assert not b.try_acquire_probe("fal")
    clock.t += 3
    assert b.allow("fal") == (
        False, "circuit half-open for fal (5 consecutive failures); a probe is in flight since 3 s")


def test_probe_success_closes_with_a_clean_slate():
    b, clock = breaker()
    fail(b, "fal", 5)
    clock.t += 30
    assert b.try_acquire_probe("fal")
    b.record_success("fal")
    assert b.state("fal") is CircuitState.CLOSED
    fail(b, "fal", 4)  # the failures from before the outage are forgotten
    assert b.state("fal") is CircuitState.CLOSED


def test_probe_failure_reopens_with_a_growing_capped_cooldown():
    b, clock = breaker(cooldown_s=30, cooldown_growth=2, max_cooldown_s=100)
    fail(b, "fal", 5)
    waits = []
    for _ in range(4):
        clock.t += 1000
        assert b.try_acquire_probe("fal")
        b.record_failure("fal")
        assert b.state("fal") is CircuitState.OPEN
        waits.append(b.snapshot()["fal"]["next_probe_in_s"])
    assert waits == [60, 100, 100, 100]
    assert "5 consecutive failures, then 4 failed probes" in b.allow("fal")[1]
    clock.t += 100
    assert b.try_acquire_probe("fal")
    b.record_success("fal")
    fail(b, "fal", 5)
    assert b.snapshot()["fal"]["next_probe_in_s"] == 30  # closing resets the cooldown


def test_a_probe_that_never_reports_frees_the_slot_after_its_timeout():
    b, clock = breaker(probe_timeout_s=60)
    fail(b, "fal", 5)
    clock.t += 30
    assert b.try_acquire_probe("fal")
    clock.t += 59
    assert not b.try_acquire_probe("fal")
    clock.t += 1
    assert b.try_acquire_probe("fal")


def test_failure_rate_over_the_window_opens_a_flapping_circuit():
    b, clock = breaker(min_calls=10, failure_rate=0.5, window_s=60)
    for _ in range(5):  # never two failures in a row, but half of all calls fail
        b.record_success("railwail")
        clock.t += 1
        assert b.state("railwail") is CircuitState.CLOSED
        b.record_failure("railwail")
        clock.t += 1
    assert b.state("railwail") is CircuitState.OPEN
    assert "5 of 10 calls failed in the last 60 s" in b.allow("railwail")[1]


def test_the_rate_rule_needs_enough_calls_inside_the_window():
    b, clock = breaker(min_calls=10, failure_rate=0.5, window_s=60)
    fail(b, "railwail", 1)
    for _ in range(3):
        b.record_success("railwail")
        fail(b, "railwail", 1)
    assert b.state("railwail") is CircuitState.CLOSED  # 4 of 7: too few calls to judge
    clock.t += 61  # those calls leave the window
    for _ in range(4):
        b.record_success("railwail")
        fail(b, "railwail", 1)
    assert b.state("railwail") is CircuitState.CLOSED
    assert b.snapshot()["railwail"]["window"] == {"calls": 8, "failures": 4, "seconds": 60}


def test_late_outcomes_while_open_change_nothing():
    b, clock = breaker()
    fail(b, "fal", 5)
    clock.t += 10
    b.record_success("fal")  # a job admitted before the outage finished late
    b.record_failure("fal")
    assert b.state("fal") is CircuitState.OPEN
    assert b.snapshot()["fal"]["next_probe_in_s"] == 20


def test_snapshot_shape():
    b, clock = breaker()
    b.record_success("apiframe")
    fail(b, "fal", 5)
    clock.t += 5
    snap = b.snapshot()
    assert list(snap) == ["apiframe", "fal"]
    assert snap["apiframe"] == {
        "state": "closed", "reason": "circuit closed for apiframe", "consecutive_failures": 0,
        "window": {"calls": 1, "failures": 0, "seconds": 60.0}, "cooldown_s": 30.0,
    }
    assert snap["fal"]["state"] == "open"
    assert snap["fal"]["opened_s_ago"] == 5 and snap["fal"]["next_probe_in_s"] == 25


@pytest.mark.parametrize("bad", [
    {"consecutive_failures": 0}, {"failure_rate": 0}, {"failure_rate": 1.5}, {"window_s": 0},
    {"cooldown_growth": 0.5}, {"max_cooldown_s": 10},
])
def test_settings_reject_nonsense(bad: dict[str, float]):
    with pytest.raises(ValueError):
        CircuitSettings(**bad)  # type: ignore[arg-type]


def test_the_window_counts_in_buckets_bounded_by_the_span_not_the_call_rate():
    window = CallWindow(60.0)
    for i in range(10_000):  # ~170 calls a second for a minute
        window.add(1000.0 + i * 0.006, failed=i % 4 == 0)
    assert (window.calls, window.failures) == (10_000, 2_500)
    assert len(window._buckets) <= CallWindow.BUCKETS + 1
    window.add(1000.0 + 60.0 + 30.0, failed=True)  # half a minute on: the first half has left
    assert 4_900 <= window.calls <= 5_200 and window.failures <= 1_300
    window.prune(1000.0 + 60.0 * 3)
    assert (window.calls, window.failures) == (0, 0)
