"""Capabilities matching and planning, on toy providers with no network."""

from __future__ import annotations

from decimal import Decimal

import pytest
from reelgate_toyvendor import ToyAdapter

from gateway.errors import BudgetExceeded, InvalidRequest, NoRouteAvailable, Unsupported
from gateway.provider import ProviderSettings, Secret
from gateway.request import RoutePolicy, VideoRequest
from gateway.routing import plan_request
from gateway.routing.health import InProcessHealth


class Cheap(ToyAdapter):
    name = "cheap"


class Fast(ToyAdapter):
    name = "fast"


def providers(**opts):
    built = {}
    for cls, o in ((Cheap, {"usd": "0.10", "latency_s": 90}), (Fast, {"usd": "0.30", "latency_s": 20})):
        o = {**o, **opts.get(cls.name, {})}
        key = None if o.pop("no_key", False) else Secret("k")
        built[cls.name] = cls(ProviderSettings(cls.name, key, "test", "http://x", o))
    return built


def plan(request, **kw):
    return plan_request(request, providers(**kw.pop("opts", {})), default_policy=RoutePolicy.CHEAPEST, **kw)


def test_cheapest_and_fastest_order():
    assert [c.provider for c in plan(VideoRequest(prompt="a")).candidates] == ["cheap", "fast"]
    fastest = plan(VideoRequest(prompt="a", route="fastest"))
    assert [c.provider for c in fastest.candidates] == ["fast", "cheap"]


def test_priority_follows_the_request_order():
    p = plan(VideoRequest(prompt="a", route="priority", providers=["fast", "cheap"]))
    assert [c.provider for c in p.candidates] == ["fast", "cheap"]


def test_ineligible_provider_says_why():
    with pytest.raises(Unsupported) as info:
        plan(VideoRequest(prompt="a", aspect_ratio="9:21"))
    assert info.value.reasons["cheap"] == ["aspect_ratio 9:21 is not offered by cheap"]


def test_explicit_resolution_is_honoured_or_needs_permission():
    with pytest.raises(Unsupported, match="resolution 720p is not offered by cheap"):
        plan(VideoRequest(prompt="a", resolution="720p"))


def test_max_cost_skips_and_names_the_cheapest_when_nothing_fits():
    p = plan(VideoRequest(prompt="a", max_cost_usd=0.2))
    assert [c.provider for c in p.candidates] == ["cheap"]
    assert "over max_cost_usd" in p.skipped["fast"]
    with pytest.raises(BudgetExceeded, match=r"cheapest is cheap at \$0.10"):
        plan(VideoRequest(prompt="a", max_cost_usd=0.05))


def test_unconfigured_provider_is_skipped_with_the_variable_to_set():
    p = plan(VideoRequest(prompt="a"), opts={"cheap": {"no_key": True}})
    assert [c.provider for c in p.candidates] == ["fast"]
    assert "TOY_API_KEY" in p.skipped["cheap"]


def test_unknown_provider_in_request():
    with pytest.raises(InvalidRequest, match="unknown provider nope"):
        plan(VideoRequest(prompt="a", providers=["nope"]))


def test_quote_carries_usd():
    p = plan(VideoRequest(prompt="a"))
    assert p.chosen.quote.usd == Decimal("0.10")
    assert p.to_dict()["candidates"][0] == {"provider": "cheap", "cost_usd": 0.1, "expected_s": 90.0,
                                             "degradations": []}


def test_no_route_with_every_circuit_open_says_when_the_first_probe_may_go():
    from gateway.errors import NoRouteAvailable
    from gateway.routing.circuit import CircuitSettings
    from gateway.routing.health import InProcessHealth
    from tests.support import FakeClock

    clock = FakeClock()
    health = InProcessHealth(clock=clock.now, circuit=CircuitSettings(consecutive_failures=1, cooldown_s=30))
    health.record_failure("cheap", "any")
    clock.t += 10
    health.record_failure("fast", "any")
    with pytest.raises(NoRouteAvailable) as info:
        plan(VideoRequest(prompt="a"), health=health)
    assert info.value.retry_after == 20.0  # cheap opened first: its probe comes first


def test_a_missed_deadline_names_the_figure_it_was_checked_against():
    # a 35 s prior: the mean is 35 s and the 90th percentile, which a deadline is checked against, 46.2 s
    opts = {"fast": {"latency_s": 35}, "cheap": {"no_key": True}}
    with pytest.raises(NoRouteAvailable) as refused:
        plan(VideoRequest(prompt="a", deadline_s=46), opts=opts, health=InProcessHealth())
    assert refused.value.skipped["fast"] == "cannot meet deadline_s 46: the 90th-percentile time there is 46.2 s"
    kept = plan(VideoRequest(prompt="a", deadline_s=46.3), opts=opts, health=InProcessHealth())
    assert [c.provider for c in kept.candidates] == ["fast"] and kept.candidates[0].expected_s == 35
