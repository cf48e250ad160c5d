"""The create path's cheaper dumps and plan pieces (docs/benchmarks.md 6.pydreq): each gives
what the long way gave."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
from pydantic import ValidationError

from gateway import request_limits
from gateway.config import ProviderConfig, Settings
from gateway.errors import InvalidRequest
from gateway.job import Attempt, VideoJob
from gateway.pricing import Quote
from gateway.request import Degradation, ModelFamily, Resolution, VideoRequest
from gateway.routing.plan import _budget, latency_key
from gateway.server import openai_compat
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


@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"prompt": "a\x00fox"}, "prompt", "NUL"),
    ({"pro\x00mpt": "a fox"}, "pro\x00mpt", "NUL"),  # an ASCII value under a bad name
    ({"prompt": "a fox \ud83d"}, "prompt", "lone surrogate"),
    ({"metadata": {"k": "v\x00"}}, "metadata", "NUL"),
])
def test_the_quick_pass_over_plain_fields_still_refuses_bad_text(body: dict[str, object], field: str,
                                                                   reason: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        request_limits.check_strings({"model": "ray-2", **body})
    assert refused.value.field == field.encode("ascii", "backslashreplace").decode() and reason in refused.value.reason
    request_limits.check_strings({"model": "ray-2", "prompt": "un renard déjà vu 🦊", "seconds": 5})  # fine


def test_a_remote_parse_leaves_the_callers_data_as_it_was() -> None:
    data = {"prompt": "", "start_image": "https://example.com/a.png",
            "edit": {"operation": "modify", "source": "https://example.com/v.mp4"}}
    before = json.dumps(data)
    request = VideoRequest.parse(data, local_files=False)
    assert json.dumps(data) == before and request.start_image is not None and request.edit is not None
    assert VideoRequest.parse({"prompt": "a fox"}, local_files=False) == VideoRequest(prompt="a fox")


def test_a_model_is_read_by_its_name_or_refused_naming_the_choices() -> None:
    assert openai_compat.request_from_openai({"prompt": "a fox", "model": "ray-2"}, Settings()).model \
        is ModelFamily.RAY_2
    with pytest.raises(InvalidRequest) as refused:
        openai_compat.request_from_openai({"prompt": "a fox", "model": "RAY-2"}, Settings())
    assert refused.value.field == "model" and "ray-2-flash, ray-2" in refused.value.reason


def test_a_jobs_cost_is_the_exact_sum_of_its_attempts() -> None:
    job = VideoJob(request=VideoRequest(prompt="a fox"))
    assert job.cost_usd == Decimal(0) and isinstance(job.cost_usd, Decimal)
    for usd in ("0.1", "0.2"):
        job.attempts.append(Attempt("railwail", "ray-2", 0.0, "k", cost_usd=Decimal(usd)))
    assert job.cost_usd == Decimal("0.3")  # not 0.30000000000000004


def test_a_provider_the_file_does_not_name_reads_the_defaults_which_none_can_change() -> None:
    settings = Settings(providers={"fal": ProviderConfig(enabled=False)})
    assert settings.provider("fal").enabled is False
    unnamed = settings.provider("railwail")
    assert unnamed.model_dump() == ProviderConfig().model_dump() and isinstance(unnamed, ProviderConfig)
    with pytest.raises(ValidationError):  # shared by every read: frozen
        unnamed.concurrency_limit = 1
