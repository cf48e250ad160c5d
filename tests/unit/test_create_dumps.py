"""The create path's cheaper dumps and plan pieces (docs/benchmarks.md 6.pydreq): each gives
what the long way gave."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest

from gateway.pricing import Quote
from gateway.request import Degradation, ModelFamily, Resolution, VideoRequest
from gateway.routing.plan import _budget, latency_key
from gateway.store import codec
from tests.unit.test_inbound_paths import gateway

DATA_URI = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()

REQUESTS = [
    VideoRequest(prompt="a fox"),
    VideoRequest(prompt="un renard, déjà vu 🦊", resolution="720p", duration_s=9, aspect_ratio="9:16"),
    VideoRequest(prompt="waves", start_image="https://example.com/a.png", end_image=DATA_URI, loop=False,
                 concepts=["pan_left", "aerial"], allow=["higher_resolution"], route="fastest",
                 providers=["railwail", "fal"], max_cost_usd=0.1, deadline_s=1e-3, fallback=False,
                 idempotency_key="k-1", webhook_url="https://example.com/hook",
                 metadata={"b": "2", "a": "\u00e9\n\t\"quoted\""}),
    VideoRequest(prompt="", edit={"operation": "modify", "source": "https://example.com/v.mp4"}),
    VideoRequest(prompt="NaN and Infinity are words here"),  # the codec takes its json fallback
]


@pytest.mark.parametrize("request_", REQUESTS)
def test_a_request_document_in_one_dump_is_the_codecs(request_: VideoRequest) -> None:
    long_way = codec.dumps(codec.encode_request(request_))
    one_dump = request_.document_json()
    assert one_dump is not None
    assert json.loads(one_dump) == json.loads(long_way)
    if "NaN" not in request_.prompt:  # else the codec's text is ``json.dumps``'s (ASCII escapes)
        assert one_dump == long_way
    assert codec.decode_request(json.loads(one_dump)) == request_


def test_allow_is_dumped_sorted_as_json_and_stays_a_set_in_python() -> None:
    request = VideoRequest(prompt="a fox", allow=["higher_resolution"])
    assert json.loads(request.model_dump_json())["allow"] == ["higher_resolution"]
    assert request.model_dump(mode="json")["allow"] == ["higher_resolution"]
    assert request.model_dump()["allow"] == frozenset({Degradation.HIGHER_RESOLUTION})
    # one degradation exists today; with twenty, hash order is sorted by chance 1 in 20!
    many = VideoRequest.model_construct(prompt="a fox", allow=frozenset(f"d{i:02}" for i in range(20)))
    assert json.loads(many.model_dump_json())["allow"] == [f"d{i:02}" for i in range(20)]


def test_a_request_pydantic_cannot_dump_is_left_to_the_codec() -> None:
    # a lone surrogate: parsing refuses it, so only a request built around validation holds one
    odd = VideoRequest.model_construct(prompt="a fox \ud83d")
    assert odd.document_json() is None
    assert json.loads(codec.dumps(codec.encode_request(odd)))["prompt"] == "a fox \ud83d"


async def test_a_job_without_a_key_is_written_from_the_one_dump() -> None:
    gw = gateway()
    try:
        job, started = await gw.admit(VideoRequest(prompt="a fox", resolution="540p", duration_s=5))
        assert started and job.request_json is not None
        assert job.request_json == (job.request, job.request.document_json())  # made by admit, no encode
        assert codec.request_json(job) == codec.dumps(codec.encode_request(job.request))
        keyed, _ = await gw.admit(VideoRequest(prompt="a fox", resolution="540p", duration_s=5, idempotency_key="k"))
        assert keyed.request_json is not None
        assert keyed.request_json[1] == codec.dumps(codec.encode_request(keyed.request))  # the fingerprint's dump
    finally:
        await gw.aclose()


def test_a_latency_key_spells_the_shape_by_its_values() -> None:
    quote = Quote("railwail", ModelFamily.RAY_2, "ray-2", Resolution.P540, 5, Decimal("0.5"))
    assert latency_key(quote) == "ray-2/540p/5s"


def test_the_tightest_cost_cap_is_the_budget() -> None:
    assert _budget(None, None) is None
    assert _budget(0.5, None) == Decimal("0.5") and _budget(None, 0.25) == Decimal("0.25")
    assert _budget(0.5, 0.25) == Decimal("0.25") == _budget(0.25, 0.5)
