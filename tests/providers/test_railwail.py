"""railwail adapter, no network: the exact wire shape (respx) and every status / error
mapping from the JSON fixtures in tests/fixtures/railwail/."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime
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
    InvalidRequest,
    ProtocolError,
    ProviderRejected,
    RateLimited,
    Unavailable,
    VendorLostJob,
)
from gateway.provider import ProviderSettings, Secret, VendorJob, VendorState, VideoResult
from gateway.request import AspectRatio, ModelFamily, Resolution, VideoRequest
from providers.openai_video.adapter import classify_error, retry_after_s, video_size
from providers.railwail import RailwailAdapter
from providers.railwail.catalog import CATALOG

FIXTURES = Path(__file__).parent.parent / "fixtures" / "railwail"
BASE = "https://railwail.com/api/v1"
KEY = "rw_live_abcdef123456"
VID = "video_68d7512d07848190b3e45da0ecbebcde"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def adapter(**options: object) -> RailwailAdapter:
    return RailwailAdapter(ProviderSettings("railwail", Secret(KEY), "env:RAILWAIL_API_KEY", options=options))


def fixture(name: str, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    content = (FIXTURES / name).read_bytes()
    ctype = "text/html" if name.endswith(".html") else "application/json"
    return httpx.Response(status, content=content, headers={"content-type": ctype, **(headers or {})})


def job() -> VendorJob:
    return VendorJob("railwail", "luma-ray-flash-2", VID, BASE, "env:RAILWAIL_API_KEY",
                     {"status": f"{BASE}/videos/{VID}", "content": f"{BASE}/videos/{VID}/content"})


async def send(request: httpx.Request) -> httpx.Request:
    async with httpx.AsyncClient() as client:
        await client.send(request)
    return respx.calls.last.request


# -- wire shape ------------------------------------------------------------------------
@respx.mock
async def test_text_to_video_wire_shape() -> None:
    route = respx.post(f"{BASE}/videos").mock(return_value=fixture("video_queued.json"))
    req = VideoRequest(prompt="waves on black sand", aspect_ratio="9:16", duration_s=9)
    sent = await send(adapter().build_submit(req, resolution=Resolution.P720, attempt_key="a1"))
    assert route.called and sent.method == "POST" and str(sent.url) == f"{BASE}/videos"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.content) == {"model": "luma-ray-flash-2", "prompt": "waves on black sand",
                                        "seconds": "9", "size": "720x1280"}


@respx.mock
async def test_image_to_video_wire_shape_url_and_local_file(tmp_path: Path) -> None:
    respx.post(f"{BASE}/videos").mock(return_value=fixture("video_queued.json"))
    req = VideoRequest(prompt="p", start_image="https://img.example/a.png", resolution="540p")
    sent = await send(adapter().build_submit(req, resolution=Resolution.P540, attempt_key="a1"))
    assert json.loads(sent.content) == {"model": "luma-ray-flash-2", "prompt": "p", "seconds": "5",
                                        "size": "960x540",
                                        "input_reference": {"image_url": "https://img.example/a.png"}}
    path = tmp_path / "frame.png"
    path.write_bytes(PNG)
    req = VideoRequest(prompt="p", start_image=str(path))
    sent = await send(adapter().build_submit(req, resolution=Resolution.P720, attempt_key="a1"))
    ref = json.loads(sent.content)["input_reference"]["image_url"]
    assert ref == "data:image/png;base64," + base64.b64encode(PNG).decode()


def test_submit_refuses_fields_the_shape_cannot_carry() -> None:
    req = VideoRequest(prompt="p", start_image="https://a.example/1.png", end_image="https://a.example/2.png")
    with pytest.raises(InvalidRequest) as exc:
        adapter().build_submit(req, resolution=Resolution.P720, attempt_key="a1")
    assert exc.value.field == "end_image"


@pytest.mark.parametrize(("aspect", "resolution", "size"), [
    ("16:9", "720p", "1280x720"), ("9:16", "720p", "720x1280"), ("1:1", "540p", "540x540"),
    ("21:9", "720p", "1680x720"), ("3:4", "720p", "720x960"),
])
def test_video_size(aspect: str, resolution: str, size: str) -> None:
    assert video_size(AspectRatio(aspect), Resolution(resolution)) == size


@respx.mock
async def test_status_and_download_requests_are_authenticated() -> None:
    a = adapter()
    respx.get(f"{BASE}/videos/{VID}").mock(return_value=fixture("video_queued.json"))
    sent = await send(a.build_status(job()))
    assert sent.method == "GET" and sent.headers["authorization"] == f"Bearer {KEY}"
    respx.get(f"{BASE}/videos/{VID}/content").mock(return_value=httpx.Response(200, content=b"mp4"))
    sent = await send(a.build_download(job(), VideoResult(url=f"{BASE}/videos/{VID}/content")))
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    # a URL elsewhere (a CDN) never receives the key
    assert "authorization" not in a.build_download(job(), VideoResult(url="https://cdn.example/v.mp4")).headers
    assert a.build_result(job()) is None and a.build_cancel(job()) is None


@respx.mock
async def test_a_video_railwail_forgot_is_a_lost_job_on_status_and_content() -> None:
    a = adapter()
    respx.get(f"{BASE}/videos/{VID}").mock(return_value=fixture("error_404.json", 404))
    respx.get(f"{BASE}/videos/{VID}/content").mock(return_value=fixture("error_404.json", 404))
    async with httpx.AsyncClient() as client:
        status = await client.send(a.build_status(job()))
        content = await client.get(f"{BASE}/videos/{VID}/content")
    with pytest.raises(VendorLostJob):
        a.parse_status(job(), status)
    lost = classify_error("railwail", CATALOG, content, phase="content")
    assert isinstance(lost, VendorLostJob) and not lost.fallback_safe and lost.status_code == 404


def test_parse_submit_keeps_everything_but_the_key() -> None:
    a = adapter()
    vendor_job = a.parse_submit(VideoRequest(prompt="p"), fixture("video_queued.json"))
    assert vendor_job == job()
    assert KEY not in json.dumps(vendor_job.to_dict())


# -- status mapping ----------------------------------------------------------------------
def test_status_queued_and_running_with_poll_hint() -> None:
    a = adapter()
    queued = a.parse_status(job(), fixture("video_queued.json", headers={"openai-poll-after-ms": "2500"}))
    assert queued.state is VendorState.QUEUED and queued.poll_after_s == 2.5 and queued.progress == 0
    running = a.parse_status(job(), fixture("video_in_progress.json"))
    assert running.state is VendorState.RUNNING and running.progress == pytest.approx(0.42)
    assert running.poll_after_s is None and running.video_url is None


def test_status_completed_points_at_content_endpoint() -> None:
    done = adapter().parse_status(job(), fixture("video_completed.json"))
    assert done.state is VendorState.SUCCEEDED and done.video_url == f"{BASE}/videos/{VID}/content"


@pytest.mark.parametrize(("name", "cls", "code"), [
    ("video_failed.json", GenerationFailed, "internal_error"),
    ("video_failed_moderation.json", ContentRejected, "moderation_blocked"),
    ("video_failed_no_error.json", GenerationFailed, None),
])
def test_status_failed(name: str, cls: type, code: str | None) -> None:
    status = adapter().parse_status(job(), fixture(name))
    assert status.state is VendorState.FAILED and type(status.error) is cls
    assert status.error.vendor_code == code and status.error.provider == "railwail"


@pytest.mark.parametrize("name", ["video_unknown_status.json", "video_malformed.json", "not_json.html"])
def test_status_unknown_or_unreadable_is_protocol_error(name: str) -> None:
    with pytest.raises(ProtocolError):
        adapter().parse_status(job(), fixture(name))


def test_status_404_is_a_lost_job_but_submit_404_is_rejection() -> None:
    with pytest.raises(VendorLostJob) as lost:
        adapter().parse_status(job(), fixture("error_404.json", 404))
    assert lost.value.retryable and not lost.value.fallback_safe
    with pytest.raises(ProviderRejected):
        adapter().parse_submit(VideoRequest(prompt="p"), fixture("error_404.json", 404))


# -- error mapping -------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "status", "cls", "code"), [
    ("error_400.json", 400, ProviderRejected, "bad_request"),
    ("error_422.json", 422, ProviderRejected, "invalid_request_error"),
    ("error_400_moderation.json", 400, ContentRejected, "moderation_blocked"),
    ("error_401.json", 401, AuthenticationFailed, "invalid_api_key"),
    ("error_403.json", 403, AuthenticationFailed, "forbidden"),
    ("error_402.json", 402, InsufficientCredits, "insufficient_credits"),
    ("error_409.json", 409, ProviderRejected, "conflict"),
    ("error_500.json", 500, Unavailable, "internal_error"),
    ("error_503.json", 503, Unavailable, "service_unavailable"),
    ("not_json.html", 502, Unavailable, None),
])
def test_submit_errors(name: str, status: int, cls: type, code: str | None) -> None:
    with pytest.raises(cls) as exc:
        adapter().parse_submit(VideoRequest(prompt="p"), fixture(name, status))
    err = exc.value
    assert type(err) is cls and err.status_code == status and err.vendor_code == code
    assert KEY not in str(err)


def test_malformed_success_body_on_submit_is_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        adapter().parse_submit(VideoRequest(prompt="p"), fixture("video_malformed.json"))


NOW = 1_764_000_000.0


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "7"}, 7.0),
    ({"Retry-After": format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)}, 30.0),
    ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
    ({"X-RateLimit-Reset": str(int(NOW + 12)), "X-RateLimit-Remaining": "0"}, 12.0),
    ({}, None),
])
def test_rate_limited_retry_after(headers: dict[str, str], expected: float | None) -> None:
    err = classify_error("railwail", CATALOG, fixture("error_429.json", 429, headers), phase="submit", now=NOW)
    assert isinstance(err, RateLimited) and err.vendor_code == "rate_limit_exceeded"
    assert err.retry_after == expected


def test_garbage_retry_after_is_ignored() -> None:
    assert retry_after_s(httpx.Headers({"Retry-After": "soon"}), now=NOW) is None


# -- data ----------------------------------------------------------------------------------------
def test_capabilities_and_class_attributes() -> None:
    caps = adapter().capabilities()[ModelFamily.RAY_2_FLASH]
    assert caps.aspect_ratios == {AspectRatio.R16_9, AspectRatio.R9_16} and caps.durations == {5, 9}
    assert caps.resolutions == {Resolution.P540, Resolution.P720} and caps.default_resolution is Resolution.P720
    assert caps.start_image and not caps.end_image and not caps.loop and not caps.concepts
    assert ModelFamily.RAY_2 not in adapter().capabilities()
    assert (RailwailAdapter.supports_idempotency, RailwailAdapter.bills_failures) == (False, True)
    assert RailwailAdapter.credential_env == "RAILWAIL_API_KEY" and RailwailAdapter.default_base_url == BASE


def test_quote_in_credits_and_options_override() -> None:
    quote = adapter().quote(VideoRequest(prompt="p", duration_s=9)).quote
    assert quote.vendor_units == Decimal(80) and quote.usd == Decimal("0.80") and quote.unit_name == "credits"
    custom = adapter(credits={"ray-2-flash/720p/9": 100}, usd_per_credit=0.005,
                     model_ids={"ray-2-flash": "ray-flash-2"}).quote(VideoRequest(prompt="p", duration_s=9)).quote
    assert custom.usd == Decimal("0.50") and custom.vendor_model == "ray-flash-2"
    assert adapter().quote(VideoRequest(prompt="p", resolution="1080p")).eligible is False


def test_paths_option_moves_every_endpoint() -> None:
    a = adapter(paths={"create": "/video/generations", "model": "/catalog/{slug}"})
    sent = a.build_submit(VideoRequest(prompt="p"), resolution=Resolution.P720, attempt_key="k")
    assert str(sent.url) == f"{BASE}/video/generations"
    assert str(a.build_model_pricing().url) == f"{BASE}/catalog/luma-ray-flash-2"


def test_unknown_option_is_config_error() -> None:
    with pytest.raises(ConfigError):
        adapter(usd_per_credits=0.01)


def test_latency_prior() -> None:
    assert adapter().latency_prior_s(ModelFamily.RAY_2_FLASH, Resolution.P720, 5) == 45.0


def test_model_pricing() -> None:
    a = adapter()
    request = a.build_model_pricing()
    assert request.method == "GET" and str(request.url) == f"{BASE}/models/luma-ray-flash-2"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    pricing = a.parse_model_pricing(fixture("model.json"))
    assert pricing.credit_cost_fixed == Decimal(45) and pricing.currency == "credits"
    with pytest.raises(ProtocolError):
        a.parse_model_pricing(fixture("model_no_pricing.json"))
    with pytest.raises(ProviderRejected):
        a.parse_model_pricing(fixture("error_404.json", 404))


def test_missing_key_is_authentication_failed() -> None:
    bare = RailwailAdapter(ProviderSettings("railwail"))
    with pytest.raises(AuthenticationFailed, match="RAILWAIL_API_KEY"):
        bare.build_submit(VideoRequest(prompt="p"), resolution=Resolution.P720, attempt_key="k")


@respx.mock
async def test_submits_share_the_parsed_url_but_not_their_headers() -> None:
    """The create URL is parsed once per adapter and the headers normalised once per Accept
    value; each request still carries its own copy, and the wire is unchanged."""
    route = respx.post(f"{BASE}/videos").mock(return_value=fixture("video_queued.json"))
    rw = adapter()
    req = VideoRequest(prompt="waves on black sand")
    first = rw.build_submit(req, resolution=Resolution.P720, attempt_key="a1")
    first.headers["authorization"] = "Bearer someone-else"
    sent = await send(rw.build_submit(req, resolution=Resolution.P720, attempt_key="a2"))
    assert route.call_count == 1 and str(sent.url) == f"{BASE}/videos"
    assert sent.headers["authorization"] == f"Bearer {KEY}" and sent.headers["accept"] == "application/json"
    status = rw.build_status(job())
    assert status.headers["accept"] == "application/json" and status.headers["authorization"] == f"Bearer {KEY}"
    download = rw.build_download(job(), VideoResult(url=f"{BASE}/videos/{VID}/content"))
    assert download.headers["accept"] == "application/binary"
