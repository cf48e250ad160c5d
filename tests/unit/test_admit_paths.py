"""The shortcuts of a create's planning and parsing (docs/benchmarks.md 6.admit): each
answers exactly as the long way did, and stops when what it skipped could differ."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway import request_limits
from gateway.config import Settings
from gateway.errors import InvalidRequest
from gateway.provider import ProviderSettings, Secret
from gateway.request import Resolution, VideoRequest
from gateway.routing.circuit import CircuitSettings
from gateway.routing.health import InProcessHealth, model_key
from gateway.routing.plan import SettingOf
from gateway.server import openai_compat
from providers.openai_video.offer import Offer
from providers.railwail import RailwailAdapter
from tests.support import FakeClock

RAY = "ray-2"


def railwail() -> RailwailAdapter:
    return RailwailAdapter(ProviderSettings("railwail", Secret("k"), "env:RAILWAIL_API_KEY"))


def test_a_quote_is_made_once_per_shape_and_anew_for_another_catalog() -> None:
    a = railwail()
    request = VideoRequest(prompt="waves", resolution="540p", duration_s=5)
    first = a.price(request, Resolution.P540)
    assert a.price(VideoRequest(prompt="other words", resolution="540p", duration_s=5), Resolution.P540) is first
    assert first == Offer("railwail", a.cat)._price(request.model, Resolution.P540, 5)  # what pricing makes
    assert a.price(request, Resolution.P720) != first  # another shape, its own quote
    a.cat = replace(a.cat, usd_per_unit=a.cat.usd_per_unit * 2)  # another catalog: quoted anew
    assert a.price(request, Resolution.P540).usd == first.usd * 2
    assert a.capabilities() == {m: c for m, c in a.cat.capabilities.items() if m in a.cat.models}


def health() -> tuple[InProcessHealth, FakeClock]:
    clock = FakeClock()
    return InProcessHealth(clock=clock.now, circuit=CircuitSettings(consecutive_failures=3)), clock


def test_closed_circuits_answer_as_the_full_check_does() -> None:
    h, _ = health()
    assert h.allow("fal", RAY) == h._circuits.allow("fal") == (True, "circuit closed for fal")


def test_a_model_circuit_not_closed_takes_the_full_check() -> None:
    """The provider's circuit is closed, the model's is not: no closed answer for either state."""
    h, clock = health()
    for _ in range(3):
        h.record_failure("fal", RAY)
        h.record_success("fal", "ray-2-flash")  # the provider's circuit stays closed
    assert not h.allow("fal", RAY)[0]  # open
    clock.t += 30
    allowed, reason = h.allow("fal", RAY)  # half-open: the model's answer, which names the probe
    assert allowed and reason.startswith(f"circuit half-open for {model_key('fal', RAY)}")
    assert reason.endswith("this call is the probe")


def test_a_setting_of_each_provider_is_read_when_asked() -> None:
    read: list[str] = []

    def limit(name: str) -> int:
        read.append(name)
        return len(name)

    limits = SettingOf({"fal": None, "railwail": None}.keys(), limit)
    assert read == []  # nothing read for a plan that asks nothing
    assert limits.get("fal") == 3 and limits.get("openai") is None and read == ["fal"]
    with pytest.raises(KeyError):
        limits["openai"]
    assert dict(limits) == {"fal": 3, "railwail": 8} and len(limits) == 2


def test_an_openai_create_checks_its_strings_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    check = request_limits.check_strings

    def counted(data: object) -> None:
        calls.append(data)
        check(data)  # type: ignore[arg-type]

    monkeypatch.setattr(request_limits, "check_strings", counted)
    monkeypatch.setattr(openai_compat, "check_strings", counted)
    body = {"model": "ray-2", "prompt": "a red fox", "seconds": "5"}
    request = openai_compat.request_from_openai(body, Settings())
    assert len(calls) == 1 and request.prompt == "a red fox"
    with pytest.raises(InvalidRequest) as refused:  # the one check still refuses what it must
        openai_compat.request_from_openai({**body, "prompt": "a red\x00fox"}, Settings())
    assert refused.value.field == "prompt"
    assert len(calls) == 2


def test_parsing_a_remote_request_still_refuses_a_bad_string() -> None:
    with pytest.raises(InvalidRequest) as refused:
        VideoRequest.parse({"prompt": "waves", "metadata": {"k": "\ud83d"}}, local_files=False)
    assert refused.value.field == "metadata"
    assert VideoRequest.parse({"prompt": "waves"}, local_files=False) == VideoRequest(prompt="waves")


def test_acquire_still_takes_the_probe_of_a_half_open_model() -> None:
    h, clock = health()
    assert h.acquire("fal", RAY) == (True, "circuit closed for fal")  # closed: nothing to take
    for _ in range(3):
        h.record_failure("fal", RAY)
        h.record_success("fal", "ray-2-flash")
    clock.t += 30
    assert h.acquire("fal", RAY)[0]  # the model's one probe
    assert not h.acquire("fal", RAY)[0] and h.acquire("fal", "ray-2-flash")[0]
