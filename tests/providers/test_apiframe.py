"""apiframe adapter, no network: exact wire shapes (respx) and every status / error
mapping, parsed from the JSON fixtures in tests/fixtures/apiframe/."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import respx

from gateway.errors import (
    AuthenticationFailed,
    ConfigError,
    GenerationFailed,
    InsufficientCredits,
    InvalidRequest,
    ProtocolError,
    ProviderRejected,
    RateLimited,
    Unavailable,
    VendorLostJob,
)
from gateway.policies import retry_after_s
from gateway.provider import ProviderSettings, Secret, VendorJob, VendorState
from gateway.request import ImageInput, ImageKind, ModelFamily, Resolution, VideoRequest
from providers.apiframe import ApiframeAdapter
from providers.apiframe.adapter import idempotency_key, image_url
from providers.apiframe.emulator import ApiframeEmulator

FIXTURES = Path(__file__).parent.parent / "fixtures" / "apiframe"
BASE = "https://api.apiframe.ai"
KEY = "afk_unit_test_key_123456"
JOB_ID = "3f1c2b9a-7d4e-4c1a-9b2f-5e6d7c8a9b0c"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def adapter(**options: object) -> ApiframeAdapter:
    settings = ProviderSettings("apiframe", api_key=Secret(KEY), credential_ref="env:APIFRAME_API_KEY",
                                options=options)
    return ApiframeAdapter(settings)


def vendor_job(a: ApiframeAdapter | None = None) -> VendorJob:
    a = a or adapter()
    request = VideoRequest(prompt="a red fox")
    return a.parse_submit(request, httpx.Response(202, json=fixture("submit_accepted.json")))


def reply(status: int, name: str | None = None, **kw: object) -> httpx.Response:
    return httpx.Response(status, json=fixture(name) if name else None, **kw)


# -- declared facts ---------------------------------------------------------------------------
def test_class_attributes_declare_the_vendor() -> None:
    assert ApiframeAdapter.name == "apiframe"
    assert ApiframeAdapter.credential_env == "APIFRAME_API_KEY"
    assert ApiframeAdapter.default_base_url == BASE
    assert ApiframeAdapter.supports_idempotency is True
    assert ApiframeAdapter.bills_failures is False
    assert (ApiframeAdapter.poll_initial_s, ApiframeAdapter.poll_max_s) == (5.0, 10.0)
    job = vendor_job()
    assert adapter().build_cancel(job) is None
    assert adapter().build_result(job) is None


def test_capabilities_are_720p_only_with_all_concepts_and_no_9_21() -> None:
    caps = adapter().capabilities()
    assert set(caps) == {ModelFamily.RAY_2_FLASH, ModelFamily.RAY_2}
    for c in caps.values():
        assert c.resolutions == {Resolution.P720} and not c.resolution_selectable
        assert {a.value for a in c.aspect_ratios} == {"16:9", "9:16", "1:1", "4:3", "3:4", "21:9"}
        assert len(c.concepts) == 34 and c.durations == {5, 9} and c.max_prompt_chars == 4000
        assert c.image_kinds == {ImageKind.URL}


# -- exact wire shapes --------------------------------------------------------------------------
@respx.mock
async def test_text_to_video_submit_wire_shape() -> None:
    route = respx.post(f"{BASE}/v2/videos/generate").mock(return_value=reply(202, "submit_accepted.json"))
    a = adapter()
    request = VideoRequest(prompt="a red fox in snow")
    async with httpx.AsyncClient() as client:
        response = await client.send(a.build_submit(request, resolution=Resolution.P720, attempt_key="att-1"))
    sent = route.calls.last.request
    assert sent.method == "POST" and str(sent.url) == f"{BASE}/v2/videos/generate"
    assert sent.headers["X-API-Key"] == KEY
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Idempotency-Key"] == "att-1"
    assert "authorization" not in sent.headers
    assert json.loads(sent.content) == {
        "model": "luma-ray-flash-2",
        "prompt": "a red fox in snow",
        "lumaParams": {"duration": 5, "aspect_ratio": "16:9", "loop": False},
    }
    job = a.parse_submit(request, response)
    assert job.vendor_id == JOB_ID and job.vendor_model == "luma-ray-flash-2"
    assert job.base_url == BASE and job.credential_ref == "env:APIFRAME_API_KEY"
    assert job.urls["status"] == f"{BASE}/v2/jobs/{JOB_ID}"
    assert KEY not in repr(job) and KEY not in json.dumps(job.to_dict())


@respx.mock
async def test_image_to_video_submit_wire_shape() -> None:
    route = respx.post(f"{BASE}/v2/videos/generate").mock(return_value=reply(202, "submit_accepted.json"))
    request = VideoRequest(
        prompt="the door opens", model="ray-2", duration_s=9, aspect_ratio="9:16", loop=True,
        start_image="https://example.com/a.png", end_image="https://example.com/b.jpg",
        concepts=["dolly_zoom", "pan_left"],
    )
    async with httpx.AsyncClient() as client:
        await client.send(adapter().build_submit(request, resolution=Resolution.P720, attempt_key="att-2"))
    sent = route.calls.last.request
    assert sent.headers["Idempotency-Key"] == "att-2"
    body = json.loads(sent.content)
    assert body == {
        "model": "luma-ray-2",
        "prompt": "the door opens",
        "lumaParams": {
            "duration": 9, "aspect_ratio": "9:16", "loop": True, "concepts": ["dolly_zoom", "pan_left"],
            "start_image": "https://example.com/a.png", "end_image": "https://example.com/b.jpg",
        },
    }
    assert isinstance(body["lumaParams"]["duration"], int)  # a number, never "9s"


@respx.mock
async def test_status_wire_shape() -> None:
    route = respx.get(f"{BASE}/v2/jobs/{JOB_ID}").mock(return_value=reply(200, "job_queued.json"))
    a = adapter()
    async with httpx.AsyncClient() as client:
        response = await client.send(a.build_status(vendor_job(a)))
    sent = route.calls.last.request
    assert sent.method == "GET" and sent.headers["X-API-Key"] == KEY and sent.content == b""
    assert "Idempotency-Key" not in sent.headers
    assert a.parse_status(vendor_job(a), response).state is VendorState.QUEUED


@respx.mock
async def test_a_job_apiframe_forgot_is_a_lost_job_not_a_rejection() -> None:
    respx.get(f"{BASE}/v2/jobs/{JOB_ID}").mock(return_value=reply(404, "error_404.json"))
    a = adapter()
    async with httpx.AsyncClient() as client:
        response = await client.send(a.build_status(vendor_job(a)))
    with pytest.raises(VendorLostJob) as lost:
        a.parse_status(vendor_job(a), response)
    assert lost.value.retryable and not lost.value.fallback_safe
    assert (lost.value.status_code, lost.value.vendor_code) == (404, "not_found")


def test_base_url_override_and_model_id_options() -> None:
    settings = ProviderSettings("apiframe", api_key=Secret(KEY), base_url="http://127.0.0.1:9/af/",
                                options={"models": {"ray-2-flash": "ray-flash-2"}})
    a = ApiframeAdapter(settings)
    built = a.build_submit(VideoRequest(prompt="x"), resolution=Resolution.P720, attempt_key="k")
    assert str(built.url) == "http://127.0.0.1:9/af/v2/videos/generate"
    assert json.loads(built.content)["model"] == "ray-flash-2"


def test_long_attempt_key_is_hashed_to_fit_and_stays_stable() -> None:
    long = "k" * 300
    assert len(idempotency_key(long)) == 64 and idempotency_key(long) == idempotency_key(long)
    assert idempotency_key("short") == "short"


def test_no_key_is_authentication_failed_naming_the_variable() -> None:
    a = ApiframeAdapter(ProviderSettings("apiframe"))
    with pytest.raises(AuthenticationFailed, match="APIFRAME_API_KEY"):
        a.build_submit(VideoRequest(prompt="x"), resolution=Resolution.P720, attempt_key="k")


def test_local_files_and_data_uris_are_not_accepted(tmp_path: Path) -> None:
    png = tmp_path / "frame.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    eligibility = adapter().quote(VideoRequest(prompt="x", start_image=str(png)))
    assert not eligibility.eligible
    assert "start_image as a local file is not accepted by apiframe" in eligibility.reasons[0]
    with pytest.raises(InvalidRequest, match="end_image"):
        image_url("end_image", ImageInput(kind=ImageKind.DATA_URI, value="data:image/png;base64,AAAA"))


def test_9_21_and_explicit_1080p_are_not_offered_but_higher_resolution_degrades_540p() -> None:
    a = adapter()
    assert "aspect_ratio 9:21" in a.quote(VideoRequest(prompt="x", aspect_ratio="9:21")).reasons[0]
    assert not a.quote(VideoRequest(prompt="x", resolution="1080p")).eligible
    up = a.quote(VideoRequest(prompt="x", resolution="540p", allow=["higher_resolution"]))
    assert up.eligible and up.quote.resolution is Resolution.P720 and up.degradations
    with pytest.raises(InvalidRequest, match="resolution"):
        a.build_submit(VideoRequest(prompt="x"), resolution=Resolution.P1080, attempt_key="k")


# -- prices and priors ------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "duration", "credits"), [
    ("ray-2-flash", 5, 51), ("ray-2-flash", 9, 92), ("ray-2", 5, 100), ("ray-2", 9, 180),
])
def test_quote_is_credits_times_usd_per_credit(model: str, duration: int, credits: int) -> None:
    quote = adapter().quote(VideoRequest(prompt="x", model=model, duration_s=duration)).quote
    assert quote.vendor_units == Decimal(credits) and quote.unit_name == "credits"
    assert quote.usd == (Decimal(credits) * Decimal("0.008")).quantize(Decimal("0.0001"))
    assert quote.resolution is Resolution.P720


def test_credit_table_and_usd_per_credit_are_options() -> None:
    a = adapter(credits={"luma-ray-2": {"5": 120}}, usd_per_credit="0.01")
    assert a.quote(VideoRequest(prompt="x", model="ray-2")).quote.usd == Decimal("1.2000")
    assert a.quote(VideoRequest(prompt="x", model="ray-2", duration_s=9)).quote.vendor_units == 180


@pytest.mark.parametrize("options", [
    {"usd_per_credit": "lots"}, {"usd_per_credit": -1}, {"credits": {"luma-ray-2": {"5": "x"}}},
    {"models": {"ray-3": "luma-ray-3"}}, {"colour": "blue"},
])
def test_bad_options_are_config_errors(options: dict) -> None:
    with pytest.raises(ConfigError, match="apiframe"):
        adapter(**options)


def test_latency_priors_sit_in_the_documented_one_to_five_minutes() -> None:
    a = adapter()
    flash = a.latency_prior_s(ModelFamily.RAY_2_FLASH, Resolution.P720, 5)
    ray2 = a.latency_prior_s(ModelFamily.RAY_2, Resolution.P720, 9)
    assert 60 <= flash < ray2 <= 300


# -- submit answers ----------------------------------------------------------------------------------
def test_submit_without_job_id_is_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="JobAccepted"):
        adapter().parse_submit(VideoRequest(prompt="x"), reply(202, "submit_missing_job_id.json"))


def test_submit_non_json_success_is_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        adapter().parse_submit(VideoRequest(prompt="x"), httpx.Response(202, text="<html>ok</html>"))
    assert info.value.vendor_code == "malformed" and info.value.status_code == 202


SUBMIT_ERRORS = [
    (400, "error_400_validation.json", ProviderRejected, "validation",
     ["lumaParams.resolution: Unrecognized key", "prompt: String must"]),
    (422, "error_422.json", ProviderRejected, "validation", ["lumaParams.duration"]),
    (401, "error_401.json", AuthenticationFailed, "unauthorized", ["Invalid or missing API key"]),
    (403, "error_403.json", AuthenticationFailed, "forbidden", ["inactive"]),
    (402, "error_402.json", InsufficientCredits, "insufficient_credits", ["92 required, 40 available"]),
    (404, "error_404.json", ProviderRejected, "not_found", ["not found"]),
    (409, "error_409.json", ProviderRejected, "idempotency_conflict", ["different request"]),
    (500, "error_500.json", Unavailable, "server_error", ["Internal server error"]),
    (503, "error_503.json", Unavailable, "server_error", ["Queue unavailable"]),
]


@pytest.mark.parametrize(("status", "name", "cls", "code", "says"), SUBMIT_ERRORS)
def test_submit_error_mapping(status: int, name: str, cls: type, code: str, says: list[str]) -> None:
    with pytest.raises(cls) as info:
        adapter().parse_submit(VideoRequest(prompt="x"), reply(status, name))
    err = info.value
    assert type(err) is cls
    assert (err.provider, err.status_code, err.vendor_code) == ("apiframe", status, code)
    for text in says:
        assert text in err.message


def test_rate_limit_with_seconds() -> None:
    with pytest.raises(RateLimited) as info:
        adapter().parse_submit(VideoRequest(prompt="x"), reply(429, "error_429.json", headers={"Retry-After": "7"}))
    assert info.value.retry_after == 7.0 and info.value.retryable and info.value.status_code == 429


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, None),
    ({"Retry-After": "soon"}, None),
    ({"Retry-After": "-3"}, 0.0),
    ({"Retry-After": "1.5"}, 1.5),
    # an HTTP-date is measured against the response's own Date, not our clock
    ({"Date": "Tue, 24 Nov 2026 10:00:00 GMT", "Retry-After": "Tue, 24 Nov 2026 10:00:30 GMT"}, 30.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a past date without Date: now
])
def test_retry_after_edge_cases(headers: dict, expected: float | None) -> None:
    assert retry_after_s(httpx.Headers(headers)) == expected


def test_non_json_gateway_page_is_classified_by_status() -> None:
    with pytest.raises(Unavailable):
        adapter().parse_submit(VideoRequest(prompt="x"), httpx.Response(502, text="<html>Bad gateway</html>"))


def test_undocumented_status_code_is_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        adapter().parse_submit(VideoRequest(prompt="x"), httpx.Response(418, json={"error": "teapot"}))
    assert info.value.vendor_code == "http_418"


def test_error_messages_never_carry_the_key() -> None:
    body = {"error": f"key {KEY} is inactive"}
    with pytest.raises(AuthenticationFailed) as info:
        adapter().parse_submit(VideoRequest(prompt="x"), httpx.Response(403, json=body))
    assert KEY not in info.value.message and KEY not in json.dumps(info.value.to_dict())


# -- status answers -----------------------------------------------------------------------------------
def status_of(name: str, code: int = 200):
    a = adapter()
    return a.parse_status(vendor_job(a), reply(code, name))


def test_queued_processing_and_cancelled() -> None:
    assert status_of("job_cancelled.json").state is VendorState.CANCELLED
    queued = status_of("job_queued.json")
    assert (queued.state, queued.vendor_status, queued.progress) == (VendorState.QUEUED, "QUEUED", 0.0)
    running = status_of("job_processing.json")
    assert (running.state, running.progress, running.billed_units) == (VendorState.RUNNING, 0.65, 51)


@pytest.mark.parametrize("name", ["job_completed.json", "job_completed_string_result.json"])
def test_completed_carries_the_video_url(name: str) -> None:
    done = status_of(name)
    assert done.state is VendorState.SUCCEEDED and done.error is None
    assert done.video_url == f"https://cdn2.apiframe.ai/videos/{JOB_ID}.mp4"
    assert done.billed_units == 51 and done.progress == 1.0


@pytest.mark.parametrize(("name", "says"), [
    ("job_failed.json", "Provider returned an error: generation failed"),
    # no structured reason exists, so moderation is not re-classified from the text
    ("job_failed_content_policy.json", "content policy violation"),
    ("job_failed_no_reason.json", "no reason"),
])
def test_failed_is_generation_failed_with_the_vendor_text_and_no_charge(name: str, says: str) -> None:
    failed = status_of(name)
    assert failed.state is VendorState.FAILED and failed.billed_units == 0
    assert type(failed.error) is GenerationFailed and says in failed.error.message
    assert failed.error.vendor_code == "FAILED"


def test_expired_completed_job_is_a_failure_not_a_dead_link() -> None:
    expired = status_of("job_completed_expired.json")
    assert expired.state is VendorState.FAILED and expired.error.vendor_code == "expired"


@pytest.mark.parametrize(("name", "code"), [
    ("job_unknown_status.json", "PENDING"),
    ("job_completed_no_url.json", "COMPLETED"),
    ("job_missing_status.json", "malformed"),
    ("job_progress_out_of_range.json", "malformed"),
    ("job_other_id.json", None),
])
def test_unparseable_or_unknown_status_is_protocol_error(name: str, code: str | None) -> None:
    with pytest.raises(ProtocolError) as info:
        status_of(name)
    assert info.value.vendor_code == code


def test_status_non_json_is_protocol_error() -> None:
    a = adapter()
    with pytest.raises(ProtocolError, match="unreadable Job"):
        a.parse_status(vendor_job(a), httpx.Response(200, text="not json"))


@pytest.mark.parametrize(("code", "name", "cls"), [
    (404, "error_404.json", VendorLostJob),
    (400, "error_400_validation.json", ProtocolError),
    (401, "error_401.json", AuthenticationFailed),
    (403, "error_403.json", AuthenticationFailed),
    (500, "error_500.json", Unavailable),
    (503, "error_503.json", Unavailable),
])
def test_status_error_mapping(code: int, name: str, cls: type) -> None:
    with pytest.raises(cls) as info:
        status_of(name, code)
    assert type(info.value) is cls and info.value.status_code == code


def test_status_rate_limit_keeps_retry_after() -> None:
    a = adapter()
    with pytest.raises(RateLimited) as info:
        a.parse_status(vendor_job(a), reply(429, "error_429.json", headers={"Retry-After": "3"}))
    assert info.value.retry_after == 3.0


def test_emulator_classmethod_passes_options() -> None:
    emu = ApiframeAdapter.emulator(credits=10, api_keys={"k"})
    assert isinstance(emu, ApiframeEmulator) and emu.balance == 10 and emu.api_keys == {"k"}
