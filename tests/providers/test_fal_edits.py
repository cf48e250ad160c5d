"""fal modify and reframe: exact wire shapes (respx), capabilities and prices per operation."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import respx

from gateway.capabilities import match
from gateway.operations import Operation
from gateway.request import Resolution, VideoRequest
from providers.fal.payloads import submit_body
from tests.providers.test_fal import KEY, Q, adapter, fixture

SRC = "https://cdn.example.com/clip.mp4"
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 32


def modify(**kw: object) -> VideoRequest:
    return VideoRequest(**{"prompt": "make it snow", "edit": {"operation": "modify", "source": SRC}, **kw})


def reframe(**kw: object) -> VideoRequest:
    return VideoRequest(**{"aspect_ratio": "9:16", "edit": {"operation": "reframe", "source": SRC}, **kw})


async def _sent(request: VideoRequest, path: str) -> httpx.Request:
    with respx.mock:
        route = respx.post(f"{Q}/{path}").mock(return_value=fixture("submit_ok"))
        fal = adapter()
        async with httpx.AsyncClient() as client:
            job = fal.parse_submit(request, await client.send(
                fal.build_submit(request, resolution=Resolution.P540, attempt_key="a1")))
        assert job.vendor_model == path
        return route.calls.last.request


@pytest.mark.parametrize(("model", "mode"), [("ray-2-flash", "reimagine_2"), ("ray-2", "adhere_1")])
async def test_modify_wire_shape(model: str, mode: str) -> None:
    request = VideoRequest(prompt="make it snow", model=model, start_image="https://img.example/first.png",
                           edit={"operation": "modify", "source": SRC, "mode": mode})
    sent = await _sent(request, f"fal-ai/luma-dream-machine/{model}/modify")
    assert sent.method == "POST"
    assert sent.headers["authorization"] == f"Key {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.content) == {"video_url": SRC, "mode": mode, "prompt": "make it snow",
                                        "image_url": "https://img.example/first.png"}


async def test_modify_defaults_to_flex_1_and_omits_absent_fields() -> None:
    sent = await _sent(VideoRequest(edit={"operation": "modify", "source": SRC}),
                       "fal-ai/luma-dream-machine/ray-2-flash/modify")
    assert json.loads(sent.content) == {"video_url": SRC, "mode": "flex_1"}


@pytest.mark.parametrize("model", ["ray-2-flash", "ray-2"])
async def test_reframe_wire_shape_with_grid_and_crop_box(model: str) -> None:
    request = VideoRequest(prompt="wider sky", model=model, aspect_ratio="1:1", edit={
        "operation": "reframe", "source": SRC, "grid_position": {"x": 10, "y": 20},
        "crop_box": {"x_start": 0, "x_end": 640, "y_start": 5, "y_end": 480}})
    sent = await _sent(request, f"fal-ai/luma-dream-machine/{model}/reframe")
    assert sent.method == "POST" and sent.headers["authorization"] == f"Key {KEY}"
    assert json.loads(sent.content) == {
        "video_url": SRC, "aspect_ratio": "1:1", "prompt": "wider sky", "grid_position_x": 10,
        "grid_position_y": 20, "x_start": 0, "x_end": 640, "y_start": 5, "y_end": 480}


async def test_reframe_minimal_body() -> None:
    sent = await _sent(reframe(), "fal-ai/luma-dream-machine/ray-2-flash/reframe")
    assert json.loads(sent.content) == {"video_url": SRC, "aspect_ratio": "9:16"}


def test_a_local_source_file_is_inlined_as_a_data_uri(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(MP4)
    body = submit_body(VideoRequest(edit={"operation": "modify", "source": str(clip)}), Resolution.P540)
    assert body["video_url"] == "data:video/mp4;base64," + base64.b64encode(MP4).decode()


def test_an_unresolved_job_id_never_reaches_the_wire() -> None:
    request = VideoRequest(edit={"operation": "modify", "source": "vid_" + "0" * 32})
    with pytest.raises(ValueError, match="not resolved"):
        submit_body(request, Resolution.P540)


def test_fal_declares_modify_and_reframe_and_reframe_to_1_1() -> None:
    caps = adapter().capabilities()
    for family in caps.values():
        assert {Operation.GENERATE, Operation.MODIFY, Operation.REFRAME} <= family.operations
        assert Operation.EXTEND not in family.operations
    assert match("fal", caps, reframe(aspect_ratio="1:1")).ok
    # generation still has no 1:1 at fal
    assert not match("fal", caps, VideoRequest(prompt="x", aspect_ratio="1:1")).ok


def test_fields_an_edit_cannot_honour_are_refused_with_reasons() -> None:
    caps = adapter().capabilities()
    m = match("fal", caps, modify(resolution="1080p", loop=True))
    assert "resolution cannot be set for modify at fal (the output follows the source video)" in m.reasons
    assert "loop cannot be set for modify at fal (the output follows the source video)" in m.reasons
    assert not match("fal", caps, VideoRequest(prompt="x", edit={
        "operation": "extend", "source": SRC, "target_seconds": 20})).ok


@pytest.mark.parametrize(("request_", "endpoint", "usd"), [
    (modify(), "fal-ai/luma-dream-machine/ray-2-flash/modify", "0.20"),
    (modify(model="ray-2"), "fal-ai/luma-dream-machine/ray-2/modify", "0.50"),
    (reframe(), "fal-ai/luma-dream-machine/ray-2-flash/reframe", "0.20"),
    (reframe(model="ray-2"), "fal-ai/luma-dream-machine/ray-2/reframe", "0.50"),
])
def test_prices_per_operation_are_marked_unconfirmed(request_: VideoRequest, endpoint: str, usd: str) -> None:
    price = adapter().quote(request_).quote
    assert price is not None
    assert price.vendor_model == endpoint and price.usd == Decimal(usd)
    assert "UNCONFIRMED" in price.basis


def test_a_deployment_price_for_an_edit_endpoint_replaces_the_unconfirmed_one() -> None:
    fal = adapter(base_usd={"fal-ai/luma-dream-machine/ray-2-flash/modify": "0.31"})
    price = fal.quote(modify()).quote
    assert price is not None and price.usd == Decimal("0.31") and "UNCONFIRMED" not in price.basis


def test_a_budget_below_the_edit_price_refuses_it_before_any_call() -> None:
    from gateway.errors import ReelgateError
    from gateway.request import RoutePolicy
    from gateway.routing import plan_request

    pool = {"fal": adapter()}
    plan = plan_request(modify(model="ray-2"), pool, default_policy=RoutePolicy.CHEAPEST)
    assert plan.candidates[0].quote.usd == Decimal("0.50")
    with pytest.raises(ReelgateError) as info:
        plan_request(modify(model="ray-2", max_cost_usd=0.3), pool, default_policy=RoutePolicy.CHEAPEST)
    assert "0.50" in info.value.message or "max_cost" in info.value.message
