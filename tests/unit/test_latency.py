import pytest

from gateway.routing.latency import ALPHA, LatencyEstimator, LatencyStats, load_factor

KEY = "ray-2-flash/720p/5s"


def test_the_prior_stands_until_something_is_observed():
    est = LatencyEstimator()
    assert est.expected_s("fal", KEY, prior_s=60) == 60
    assert est.p90_s("fal", KEY, prior_s=60) == pytest.approx(60 * (1 + 1.2816 * 0.25))


def test_the_first_observation_replaces_the_prior_and_the_second_averages():
    est = LatencyEstimator()
    est.observe("fal", KEY, 100, prior_s=60)
    assert est.expected_s("fal", KEY, prior_s=60) == 100
    est.observe("fal", KEY, 80)
    assert est.expected_s("fal", KEY, prior_s=60) == 90
    est.observe("fal", KEY, 90)
    assert est.expected_s("fal", KEY, prior_s=60) == 90  # from here on, an EWMA with ALPHA


@pytest.mark.parametrize("before, after", [(60.0, 120.0), (120.0, 40.0)])
def test_converges_to_a_new_level_within_five_jobs(before: float, after: float):
    stats = LatencyStats.from_prior(before)
    for _ in range(20):
        stats.observe(before)
    errors = []
    for _ in range(5):
        stats.observe(after)
        errors.append(abs(stats.mean_s - after) / abs(after - before))
    assert errors[2] < 0.25 and errors[4] < 0.1  # the gap shrinks by (1 - ALPHA) per job
    assert errors[4] == pytest.approx((1 - ALPHA) ** 5)


def test_fastest_switches_vendor_after_the_first_slow_job():
    est = LatencyEstimator()
    for _ in range(10):
        est.observe("fal", KEY, 60)
        est.observe("apiframe", KEY, 90)
    est.observe("fal", KEY, 180)  # fal slowed down to three times its usual
    assert est.expected_s("fal", KEY, 60) > est.expected_s("apiframe", KEY, 90)


def test_spread_grows_with_noise_and_never_collapses_to_zero():
    steady, noisy = LatencyStats.from_prior(60), LatencyStats.from_prior(60)
    for i in range(30):
        steady.observe(60)
        noisy.observe(30 if i % 2 else 90)
    assert steady.p90_s == pytest.approx(60 * (1 + 1.2816 * 0.1))  # the MIN_CV floor
    assert noisy.stdev_s > 25  # alternating 30 s and 90 s: a true spread of 30 s


def test_a_first_observation_far_from_the_prior_widens_the_spread():
    stats = LatencyStats.from_prior(60)
    stats.observe(180)
    assert stats.p90_s - stats.mean_s > 1.2816 * 0.25 * 60


def test_can_meet_checks_the_90th_percentile_against_the_deadline():
    est = LatencyEstimator()
    for _ in range(10):
        est.observe("fal", KEY, 60)
    assert est.can_meet("fal", KEY, 60, deadline_s=70)
    assert not est.can_meet("fal", KEY, 60, deadline_s=61)  # the mean fits, nine in ten do not


def test_load_factor_is_flat_below_the_limit_then_grows_a_job_length_per_round():
    assert load_factor(0, None) == load_factor(50, None) == 1.0
    assert load_factor(1, 2) == 1.0
    assert load_factor(2, 2) == 1.5  # waits for one of two slots
    assert load_factor(3, 2) == 2.0  # a full round of two jobs ahead
    assert load_factor(1, 1) == 2.0
    with pytest.raises(ValueError):
        load_factor(3, 0)


def test_in_flight_load_inflates_the_estimate_and_the_deadline_check():
    est = LatencyEstimator()
    est.observe("fal", KEY, 60)
    for _ in range(4):
        est.started("fal")
    assert est.in_flight("fal") == 4 and est.in_flight("apiframe") == 0
    assert est.expected_s("fal", KEY, 60, limit=None) == 60
    assert est.expected_s("fal", KEY, 60, limit=8) == 60
    assert est.expected_s("fal", KEY, 60, limit=2) == 60 * 2.5
    assert est.can_meet("fal", KEY, 60, deadline_s=90) and not est.can_meet("fal", KEY, 60, 90, limit=2)
    for _ in range(6):
        est.finished("fal")
    assert est.in_flight("fal") == 0  # a job resumed after a restart may finish unstarted


def test_observations_must_be_durations():
    est = LatencyEstimator()
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            est.observe("fal", KEY, bad, prior_s=60)


def test_snapshot_shape():
    est = LatencyEstimator()
    est.observe("fal", KEY, 100, prior_s=60)
    est.started("fal")
    assert est.snapshot() == {
        "latency": {"fal": {KEY: {"expected_s": 100.0, "p90_s": pytest.approx(est.p90_s("fal", KEY, 60), abs=0.05),
                                  "observations": 1}}},
        "in_flight": {"fal": 1},
    }
