"""Operations in the neutral model: modify, reframe, extend of a source video, and planning them."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from reelgate_toyvendor import ToyAdapter

from gateway.errors import InvalidRequest, Unsupported
from gateway.operations import (
    ModifyMode,
    ModifySpec,
    Operation,
    ReframeSpec,
    VideoKind,
    sniff_video_type,
)
from gateway.provider import ProviderSettings, Secret
from gateway.request import RoutePolicy, VideoRequest
from gateway.routing import plan_request

MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 32
MOV = b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00" + b"\x00" * 32
WEBM = b"\x1a\x45\xdf\xa3" + b"\x00" * 32
URL = "https://cdn.example.com/clip.mp4"


def test_sniffs_mp4_mov_webm_and_nothing_else():
    assert sniff_video_type(MP4) == "video/mp4"
    assert sniff_video_type(MOV) == "video/quicktime"
    assert sniff_video_type(WEBM) == "video/webm"
    assert sniff_video_type(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16) is None


def test_generate_is_the_default_and_unchanged():
    req = VideoRequest(prompt="a cat")
    assert req.operation is Operation.GENERATE and req.edit is None
    assert req.public_dict()["edit"] is None


def test_modify_defaults_to_flex_1_and_takes_a_url():
    req = VideoRequest(prompt="make it snow", edit={"operation": "modify", "source": URL})
    assert req.operation is Operation.MODIFY
    assert isinstance(req.edit, ModifySpec) and req.edit.mode is ModifyMode.FLEX_1
    assert req.edit.source.kind is VideoKind.URL and req.edit.source.value == URL


def test_modify_mode_outside_the_closed_set_names_the_field():
    with pytest.raises(InvalidRequest) as info:
        VideoRequest(prompt="x", edit={"operation": "modify", "source": URL, "mode": "flex_4"})
    assert info.value.field == "edit.modify.mode"


def test_reframe_with_grid_and_crop_box():
    req = VideoRequest(prompt="x", aspect_ratio="1:1", edit={
        "operation": "reframe", "source": URL, "grid_position": {"x": 10, "y": 20},
        "crop_box": {"x_start": 0, "x_end": 100, "y_start": 0, "y_end": 50}})
    assert isinstance(req.edit, ReframeSpec) and req.edit.grid_position is not None
    assert req.operation is Operation.REFRAME and req.aspect_ratio.value == "1:1"
    with pytest.raises(InvalidRequest) as info:
        VideoRequest(prompt="x", edit={"operation": "reframe", "source": URL,
                                       "crop_box": {"x_start": 50, "x_end": 10, "y_start": 0, "y_end": 5}})
    assert "x_end must exceed x_start" in info.value.reason


def test_extend_target_seconds_is_bounded():
    assert VideoRequest(prompt="x", edit={"operation": "extend", "source": URL, "target_seconds": 20}).operation \
        is Operation.EXTEND
    for bad in (5, 31):
        with pytest.raises(InvalidRequest) as info:
            VideoRequest(prompt="x", edit={"operation": "extend", "source": URL, "target_seconds": bad})
        assert info.value.field == "edit.extend.target_seconds"


def test_local_video_file_is_checked(tmp_path: Path):
    good = tmp_path / "clip.mp4"
    good.write_bytes(MP4)
    req = VideoRequest(prompt="x", edit={"operation": "modify", "source": str(good)})
    assert req.edit is not None and req.edit.source.kind is VideoKind.PATH
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video at all")
    with pytest.raises(InvalidRequest) as info:
        VideoRequest(prompt="x", edit={"operation": "modify", "source": str(fake)})
    assert "is not an MP4, MOV or WebM video" in info.value.reason
    with pytest.raises(InvalidRequest) as info:
        VideoRequest(prompt="x", edit={"operation": "modify", "source": str(tmp_path / "missing.mp4")})
    assert "does not exist" in info.value.reason


def test_data_uri_must_hold_a_video_and_is_summarised_in_the_record():
    uri = "data:video/mp4;base64," + base64.b64encode(MP4).decode()
    req = VideoRequest(prompt="x", edit={"operation": "modify", "source": uri})
    assert req.public_dict()["edit"]["source"].startswith("data URI (")
    png = "data:video/mp4;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 8).decode()
    with pytest.raises(InvalidRequest) as info:
        VideoRequest(prompt="x", edit={"operation": "modify", "source": png})
    assert "does not contain an MP4, MOV or WebM video" in info.value.reason


def test_service_parse_refuses_server_paths_without_looking(tmp_path: Path):
    real = tmp_path / "clip.mp4"
    real.write_bytes(MP4)
    for source in (str(real), {"kind": "path", "value": str(real)}, "/does/not/exist.mp4"):
        with pytest.raises(InvalidRequest) as info:
            VideoRequest.parse({"prompt": "x", "edit": {"operation": "modify", "source": source}}, local_files=False)
        assert info.value.field == "edit.source"
        assert "server file paths are not accepted" in info.value.reason
    ok = VideoRequest.parse({"prompt": "x", "edit": {"operation": "reframe", "source": URL}}, local_files=False)
    assert ok.operation is Operation.REFRAME


@pytest.mark.parametrize("field", ["start_image", "source"])
def test_a_callers_stored_form_is_checked_alike_for_images_and_videos(field: str):
    """``{"kind", "value"}`` from a caller: its value parsed like any other and of the kind it
    claims, with nothing else in it (one helper, ``gateway.media.from_caller``; a video's
    kind used to go unchecked)."""
    def parse(reference: object) -> VideoRequest:
        if field == "source":
            return VideoRequest.parse({"prompt": "x", "edit": {"operation": "modify", "source": reference}},
                                      local_files=False)
        return VideoRequest.parse({"prompt": "x", "start_image": reference}, local_files=False)

    url = "https://example.com/a.mp4"
    parsed = parse({"kind": "url", "value": url})
    assert (parsed.edit.source if field == "source" else parsed.start_image).value == url
    for reference in ({"kind": "data_uri", "value": url}, {"kind": "url", "value": url, "extra": 1},
                      {"kind": "url", "value": 5}):
        with pytest.raises(InvalidRequest) as info:
            parse(reference)
        assert info.value.field == ("edit.source" if field == "source" else "start_image")


class Editor(ToyAdapter):
    name = "editor"


class Plain(ToyAdapter):
    name = "plain"


def _plan(request: VideoRequest, editor_ops: list[str]):
    built = {
        "editor": Editor(ProviderSettings("editor", Secret("k"), "test", "http://x",
                                          {"usd": "0.30", "operations": editor_ops})),
        "plain": Plain(ProviderSettings("plain", Secret("k"), "test", "http://x", {"usd": "0.10"})),
    }
    return plan_request(request, built, default_policy=RoutePolicy.CHEAPEST)


def test_planner_skips_a_provider_that_cannot_modify_with_its_reason():
    req = VideoRequest(prompt="x", edit={"operation": "modify", "source": URL})
    plan = _plan(req, ["generate", "modify"])
    assert [c.provider for c in plan.candidates] == ["editor"]
    with pytest.raises(Unsupported) as info:
        _plan(req, ["generate"])
    assert info.value.reasons["plain"] == ["plain cannot modify (model ray-2-flash)"]
    # generation still goes to the cheaper plain provider
    assert [c.provider for c in _plan(VideoRequest(prompt="x"), ["generate"]).candidates] == ["plain", "editor"]
