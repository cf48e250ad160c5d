"""Unit tests of the fal adapter: exact wire shapes (respx) and parsing from JSON fixtures."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import respx

from gateway.errors import (
    AuthenticationFailed,
    ConfigError,
    ContentRejected,
    GenerationFailed,
    InsufficientCredits,
    ProtocolError,
    ProviderRejected,
    RateLimited,
    Unavailable,
    VendorLostJob,
)
from gateway.policies import retry_after_s
from gateway.provider import ProviderSettings, Secret, VendorJob, VendorState
from gateway.request import ModelFamily, Resolution, VideoRequest
from providers.fal import FalAdapter

FIXTURES = Path(__file__).parent.parent / "fixtures" / "fal"
KEY = "fal-test-key-0123456789abcdef"
Q = "https://queue.fal.run"
RID = "764cabcf-b745-4b3e-ae38-1200304cf45b"
JOB_BASE = f"{Q}/fal-ai/luma-dream-machine/requests/{RID}"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def adapter(**options: object) -> FalAdapter:
    return FalAdapter(ProviderSettings("fal", api_key=Secret(KEY), credential_ref="env:FAL_KEY", options=options))


def fixture(name: str) -> httpx.Response:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    kw = {"text": data["text"]} if "text" in data else {"json": data["json"]}
    return httpx.Response(data["status"], headers=data["headers"], **kw)


def job() -> VendorJob:
    return adapter().parse_submit(VideoRequest(prompt="x"), fixture("submit_ok"))


def submit_ok() -> httpx.Response:
    return fixture("submit_ok")


# -- wire shapes ------------------------------------------------------------------------
@respx.mock
async def test_text_to_video_wire_shape_and_lifecycle() -> None:
    submit = respx.post(f"{Q}/fal-ai/luma-dream-machine/ray-2-flash").mock(return_value=submit_ok())
    status = respx.get(f"{JOB_BASE}/status").mock(return_value=fixture("status_completed"))
    result = respx.get(JOB_BASE).mock(return_value=fixture("result_ok"))
    fal = adapter()
    request = VideoRequest(prompt="a red fox", aspect_ratio="9:16", resolution="720p", duration_s=9, loop=True)
    async with httpx.AsyncClient() as client:
        job = fal.parse_submit(request, await client.send(
            fal.build_submit(request, resolution=Resolution.P720, attempt_key="a1")))
        st = fal.parse_status(job, await client.send(fal.build_status(job)))
        video = fal.parse_result(job, await client.send(fal.build_result(job)))
    sent = submit.calls.last.request
    assert sent.method == "POST"
    assert str(sent.url) == f"{Q}/fal-ai/luma-dream-machine/ray-2-flash"
    assert sent.headers["authorization"] == f"Key {KEY}"
    assert json.loads(sent.content) == {"prompt": "a red fox", "aspect_ratio": "9:16", "resolution": "720p",
                                        "duration": "9s", "loop": True}
    polled = status.calls.last.request
    assert polled.method == "GET" and str(polled.url) == f"{JOB_BASE}/status?logs=1"
    assert polled.headers["authorization"] == f"Key {KEY}"
    assert result.calls.last.request.headers["authorization"] == f"Key {KEY}"
    assert job.vendor_id == RID and job.vendor_model == "fal-ai/luma-dream-machine/ray-2-flash"
    assert job.urls == {"status": f"{JOB_BASE}/status", "response": JOB_BASE, "cancel": f"{JOB_BASE}/cancel"}
    assert st.state is VendorState.SUCCEEDED
    assert video.url.endswith("__output.mp4") and video.size_bytes == 1843221 and video.billed_units == 4.0


@respx.mock
async def test_image_to_video_wire_shape(tmp_path: Path) -> None:
    route = respx.post(f"{Q}/fal-ai/luma-dream-machine/ray-2/image-to-video").mock(return_value=submit_ok())
    end = tmp_path / "end.png"
    end.write_bytes(PNG)
    request = VideoRequest(prompt="p", model="ray-2", start_image="https://img.example/a.jpg", end_image=end)
    fal = adapter()
    async with httpx.AsyncClient() as client:
        await client.send(fal.build_submit(request, resolution=Resolution.P540, attempt_key="a1"))
    body = json.loads(route.calls.last.request.content)
    assert body == {"prompt": "p", "aspect_ratio": "16:9", "resolution": "540p", "duration": "5s", "loop": False,
                    "image_url": "https://img.example/a.jpg",
                    "end_image_url": "data:image/png;base64," + base64.b64encode(PNG).decode()}
    assert route.calls.last.request.headers["authorization"] == f"Key {KEY}"


@respx.mock
async def test_cancel_uses_returned_cancel_url() -> None:
    route = respx.put(f"{JOB_BASE}/cancel").mock(return_value=fixture("cancel_requested"))
    fal = adapter()
    async with httpx.AsyncClient() as client:
        assert fal.parse_cancel(job(), await client.send(fal.build_cancel(job()))) is True
    assert route.calls.last.request.headers["authorization"] == f"Key {KEY}"


def test_endpoint_override_and_status_logs_off() -> None:
    fal = adapter(endpoints={"ray-2-flash": "acme/luma/flash"}, status_logs=False)
    request = fal.build_submit(VideoRequest(prompt="x"), resolution=Resolution.P540, attempt_key="k")
    assert str(request.url) == f"{Q}/acme/luma/flash"
    assert str(fal.build_status(job()).url) == f"{JOB_BASE}/status"
    quote = fal.quote(VideoRequest(prompt="x")).quote
    assert (quote.vendor_model, quote.usd) == ("acme/luma/flash", Decimal("0.20"))


# -- status -------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "state", "error", "vendor_code"), [
    ("status_in_queue", VendorState.QUEUED, None, None),
    ("status_in_progress", VendorState.RUNNING, None, None),
    ("status_completed", VendorState.SUCCEEDED, None, None),
    ("status_completed_runner_error", VendorState.FAILED, GenerationFailed, "runner_server_error"),
    ("status_completed_content_policy", VendorState.FAILED, ContentRejected, "content_policy_violation"),
    ("status_completed_error_no_type", VendorState.FAILED, GenerationFailed, None),
    ("status_completed_cancelled", VendorState.CANCELLED, None, None),
])
def test_status_mapping(name: str, state: VendorState, error: type | None, vendor_code: str | None) -> None:
    status = adapter().parse_status(job(), fixture(name))
    assert status.state is state
    if error is None:
        assert status.error is None
    else:
        assert type(status.error) is error
        assert (status.error.vendor_code, status.error.provider) == (vendor_code, "fal")


def test_queue_position_is_reported() -> None:
    assert adapter().parse_status(job(), fixture("status_in_queue")).queue_position == 3


@pytest.mark.parametrize("name", ["status_unknown", "status_malformed", "status_missing_status", "error_418_text"])
def test_status_protocol_errors(name: str) -> None:
    with pytest.raises(ProtocolError):
        adapter().parse_status(job(), fixture(name))


# -- errors, by phase --------------------------------------------------------------------
@pytest.mark.parametrize(("name", "phase", "cls", "vendor_code"), [
    ("error_401", "submit", AuthenticationFailed, None),
    ("error_403", "status", AuthenticationFailed, None),
    ("error_402", "submit", InsufficientCredits, None),
    ("error_404", "submit", ProviderRejected, None),
    ("error_404", "status", VendorLostJob, None),
    ("error_404", "result", VendorLostJob, None),
    ("error_409", "submit", Unavailable, None),
    ("error_400_bad_request", "submit", ProviderRejected, "bad_request"),
    ("error_422_validation", "submit", ProviderRejected, "enum"),
    ("error_422_content_policy", "submit", ContentRejected, "content_policy_violation"),
    ("error_422_odd_shape", "submit", ProtocolError, None),
    ("error_429_no_header", "submit", RateLimited, None),
    ("error_503", "submit", Unavailable, "runner_scheduling_failure"),
    ("error_503", "status", Unavailable, "runner_scheduling_failure"),
    ("error_504", "submit", Unavailable, "request_timeout"),
    ("error_502_nginx", "submit", Unavailable, None),
    ("error_502_nginx", "result", Unavailable, None),
    ("error_418_text", "submit", ProtocolError, None),
    ("result_not_ready", "result", Unavailable, "not_ready"),
    ("result_validation_422", "result", ProviderRejected, "image_load_error"),
    ("result_content_policy_422", "result", ContentRejected, "content_policy_violation"),
    ("result_runner_error_500", "result", GenerationFailed, "runner_server_error"),
    ("result_cancelled_499", "result", GenerationFailed, "client_cancelled"),
])
def test_error_mapping(name: str, phase: str, cls: type, vendor_code: str | None) -> None:
    response = fixture(name)
    error = adapter().error_from(response, phase=phase)
    assert type(error) is cls
    assert (error.provider, error.status_code, error.vendor_code) == ("fal", response.status_code, vendor_code)
    assert KEY not in error.message


@respx.mock
async def test_a_forgotten_request_is_a_lost_job_not_a_rejection() -> None:
    # fal's answer for a request id its queue does not know (the emulator's, restarted empty)
    respx.get(f"{JOB_BASE}/status").respond(404, json={"detail": "Request not found"})
    respx.get(JOB_BASE).respond(404, json={"detail": "Request not found"})
    fal, vjob = adapter(), job()
    async with httpx.AsyncClient() as client:
        status = await client.send(fal.build_status(vjob))
        result = await client.send(fal.build_result(vjob))
    with pytest.raises(VendorLostJob) as on_status:
        fal.parse_status(vjob, status)
    with pytest.raises(VendorLostJob) as on_result:
        fal.parse_result(vjob, result)
    for error in (on_status.value, on_result.value):
        assert error.retryable and not error.fallback_safe and error.status_code == 404


def test_parse_methods_raise_mapped_errors() -> None:
    fal = adapter()
    with pytest.raises(RateLimited) as rate:
        fal.parse_submit(VideoRequest(prompt="x"), fixture("error_429_seconds"))
    assert rate.value.retry_after == 7.0 and rate.value.retryable
    with pytest.raises(Unavailable):
        fal.parse_result(job(), fixture("result_not_ready"))
    with pytest.raises(ContentRejected):
        fal.parse_result(job(), fixture("result_content_policy_422"))
    with pytest.raises(AuthenticationFailed):
        fal.parse_cancel(job(), fixture("error_401"))


def test_retry_after_http_date_uses_date_header() -> None:
    with pytest.raises(RateLimited) as rate:
        adapter().parse_submit(VideoRequest(prompt="x"), fixture("error_429_date"))
    assert rate.value.retry_after == 30.0


def test_retry_after_http_date_against_now_and_garbage() -> None:
    now = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after_s(httpx.Headers({"Retry-After": "Tue, 24 Nov 2026 10:00:12 GMT"}), now) == 12.0
    assert retry_after_s(httpx.Headers({"Retry-After": "soon"}), now) is None
    assert retry_after_s(httpx.Headers({"Retry-After": "-3"}), now) == 0.0


# -- submit and result parsing ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["submit_missing_cancel_url", "submit_foreign_host", "status_malformed"])
def test_bad_submit_answers_are_protocol_errors(name: str) -> None:
    with pytest.raises(ProtocolError):
        adapter().parse_submit(VideoRequest(prompt="x"), fixture(name))


def test_extra_url_hosts_allows_a_named_host() -> None:
    fal = adapter(extra_url_hosts=["evil.example"])
    assert fal.parse_submit(VideoRequest(prompt="x"), fixture("submit_foreign_host")).vendor_id == RID


def test_result_defaults_and_bad_bodies() -> None:
    minimal = adapter().parse_result(job(), fixture("result_minimal"))
    assert (minimal.content_type, minimal.size_bytes, minimal.billed_units) == ("video/mp4", None, None)
    with pytest.raises(ProtocolError):
        adapter().parse_result(job(), fixture("result_no_video"))
    odd = httpx.Response(200, json={"video": {"url": "u"}}, headers={"x-fal-billable-units": "n/a"})
    assert adapter().parse_result(job(), odd).billed_units is None


@pytest.mark.parametrize(("name", "accepted"), [
    ("cancel_requested", True), ("cancel_ok", True),
    ("cancel_already_completed", False), ("cancel_not_found", False),
])
def test_cancel_answers(name: str, accepted: bool) -> None:
    assert adapter().parse_cancel(job(), fixture(name)) is accepted


def test_cancel_unknown_answer_is_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        adapter().parse_cancel(job(), fixture("cancel_unknown"))


# -- data: prices, capabilities, latency -----------------------------------------------------
@pytest.mark.parametrize(("kw", "usd", "basis", "endpoint"), [
    ({}, "0.20", "$0.20 base", "ray-2-flash"),
    ({"resolution": "720p", "duration_s": 9}, "0.80", "$0.20 base x2 720p x2 9s", "ray-2-flash"),
    ({"resolution": "1080p", "duration_s": 9}, "1.60", "$0.20 base x4 1080p x2 9s", "ray-2-flash"),
    ({"model": "ray-2"}, "0.50", "$0.50 base", "ray-2"),
    ({"model": "ray-2", "resolution": "720p"}, "1.00", "$0.50 base x2 720p", "ray-2"),
    ({"model": "ray-2", "start_image": "https://i.example/a.png"}, "0.50", "$0.50 base", "ray-2/image-to-video"),
])
def test_quotes(kw: dict, usd: str, basis: str, endpoint: str) -> None:
    quote = adapter().quote(VideoRequest(prompt="x", **kw)).quote
    assert quote.usd == Decimal(usd) and quote.basis == basis and quote.vendor_units is None
    assert quote.vendor_model == f"fal-ai/luma-dream-machine/{endpoint}"


def test_base_price_override() -> None:
    fal = adapter(base_usd={"fal-ai/luma-dream-machine/ray-2/image-to-video": "0.60"})
    request = VideoRequest(prompt="x", model="ray-2", end_image="https://i.example/a.png")
    assert fal.quote(request).quote.usd == Decimal("0.60")


def test_capabilities_refuse_what_fal_cannot_do() -> None:
    assert not adapter().quote(VideoRequest(prompt="x", aspect_ratio="1:1")).eligible
    assert not adapter().quote(VideoRequest(prompt="x", concepts=["orbit_left"])).eligible
    assert adapter().quote(VideoRequest(prompt="x")).quote.resolution is Resolution.P540


def test_latency_priors_flash_is_faster() -> None:
    fal = adapter()
    flash = fal.latency_prior_s(ModelFamily.RAY_2_FLASH, Resolution.P540, 5)
    assert flash < fal.latency_prior_s(ModelFamily.RAY_2, Resolution.P540, 5)
    assert flash < fal.latency_prior_s(ModelFamily.RAY_2_FLASH, Resolution.P1080, 9)


# -- configuration and secrets -------------------------------------------------------------
def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        adapter(colour="blue")


def test_no_key_fails_before_sending() -> None:
    fal = FalAdapter(ProviderSettings("fal"))
    with pytest.raises(AuthenticationFailed, match="FAL_KEY"):
        fal.build_submit(VideoRequest(prompt="x"), resolution=Resolution.P540, attempt_key="k")


def test_key_never_in_job_or_errors() -> None:
    j = job()
    assert KEY not in repr(j) and KEY not in json.dumps(j.to_dict())
    assert j.credential_ref == "env:FAL_KEY"
    assert VendorJob.from_dict(j.to_dict()) == j
    assert KEY not in repr(adapter().settings)


def test_sandboxed_adapter_asks_the_emulator_for_webhook_keys() -> None:
    from gateway.provider import ProviderSettings

    sandboxed = FalAdapter(ProviderSettings("fal", base_url="http://127.0.0.1:9/fal", sandbox=True))
    assert str(sandboxed.build_webhook_keys().url) == "http://127.0.0.1:9/fal/.well-known/jwks.json"
    real = FalAdapter(ProviderSettings("fal"))
    assert real.build_webhook_keys().url.host.endswith("fal.ai")



def test_each_call_gets_its_own_headers_though_they_are_normalised_once() -> None:
    """The adapter keeps one normalised ``httpx.Headers`` (building them per call was part of
    every request's cost); what one request does to its headers never reaches the next."""
    fal = adapter()
    first, second = fal.build_status(job()), fal.build_status(job())
    first.headers["authorization"] = "Key someone-else"
    first.headers["x-extra"] = "1"
    assert second.headers["authorization"] == f"Key {KEY}" and "x-extra" not in second.headers
    assert fal.build_result(job()).headers["authorization"] == f"Key {KEY}"


def test_no_key_still_fails_at_the_call_not_at_start() -> None:
    fal = FalAdapter(ProviderSettings("fal", credential_ref="none"))
    with pytest.raises(AuthenticationFailed, match="FAL_KEY"):
        fal.build_status(job())
    with pytest.raises(AuthenticationFailed, match="FAL_KEY"):  # nothing half-made was kept
        fal.build_submit(VideoRequest(prompt="x"), resolution=Resolution.P540, attempt_key="a1")
