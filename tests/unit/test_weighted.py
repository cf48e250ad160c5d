import random
from collections import Counter

import pytest

from gateway.routing.weighted import weighted_order

DRAWS = 10_000


def test_the_first_choice_follows_the_weights():
    rng = random.Random(7)
    firsts = Counter(weighted_order(["fal", "apiframe", "railwail"], {"fal": 6, "apiframe": 3, "railwail": 1}, rng)[0]
                     for _ in range(DRAWS))
    # binomial standard deviation at 10,000 draws is at most 0.5 %; 1.5 % is three of them
    assert firsts["fal"] / DRAWS == pytest.approx(0.6, abs=0.015)
    assert firsts["apiframe"] / DRAWS == pytest.approx(0.3, abs=0.015)
    assert firsts["railwail"] / DRAWS == pytest.approx(0.1, abs=0.015)


def test_the_rest_is_drawn_by_weight_among_those_left():
    rng = random.Random(8)
    orders = Counter(tuple(weighted_order(["a", "b", "c"], {"a": 6, "b": 3, "c": 1}, rng)) for _ in range(DRAWS))
    # P(a, b, c) = 0.6 * 3/4; P(a, c, b) = 0.6 * 1/4; P(b, a, c) = 0.3 * 6/7
    assert orders[("a", "b", "c")] / DRAWS == pytest.approx(0.45, abs=0.015)
    assert orders[("a", "c", "b")] / DRAWS == pytest.approx(0.15, abs=0.015)
    assert orders[("b", "a", "c")] / DRAWS == pytest.approx(0.3 * 6 / 7, abs=0.015)


def test_every_name_appears_once_and_zero_or_absent_weights_go_last_in_given_order():
    rng = random.Random(9)
    for _ in range(100):
        order = weighted_order(["z1", "fal", "z2", "apiframe", "z3"], {"fal": 1, "apiframe": 1, "z1": 0}, rng)
        assert sorted(order[:2]) == ["apiframe", "fal"] and order[2:] == ["z1", "z2", "z3"]
    assert weighted_order(["b", "a"], {}, rng) == ["b", "a"]
    assert weighted_order([], {"a": 1}, rng) == []


def test_a_seed_pins_the_order():
    names, weights = ["a", "b", "c", "d"], {"a": 1, "b": 2, "c": 3, "d": 4}
    first = [weighted_order(names, weights, random.Random(42)) for _ in range(3)]
    assert first[0] == first[1] == first[2]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_weights_must_be_finite_and_not_negative(bad: float):
    with pytest.raises(ValueError, match="weight of a"):
        weighted_order(["a"], {"a": bad}, random.Random(0))
