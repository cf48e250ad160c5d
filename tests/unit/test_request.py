from __future__ import annotations

import base64

import pytest

from gateway.errors import InvalidRequest
from gateway.request import AspectRatio, ImageKind, VideoRequest

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def invalid(**fields) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        VideoRequest(**{"prompt": "a fox", **fields})
    return info.value


def test_defaults_are_the_cheapest_common_shape():
    r = VideoRequest(prompt="a fox")
    assert r.model.value == "ray-2-flash" and r.aspect_ratio is AspectRatio.R16_9
    assert r.duration_s == 5 and r.resolution is None and r.fallback


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt_names_the_field(prompt):
    e = invalid(prompt=prompt)
    assert e.field == "prompt" and "empty" in e.reason


def test_huge_prompt_is_rejected():
    assert invalid(prompt="x" * 4001).field == "prompt"


def test_unknown_enum_value_lists_the_choices():
    e = invalid(aspect_ratio="2:1")
    assert e.field == "aspect_ratio" and "'2:1'" in e.reason and "16:9" in e.reason


def test_seven_seconds_is_not_a_duration():
    e = invalid(duration_s=7)
    assert e.field == "duration_s" and "choose 5 or 9" in e.reason


def test_duration_spelled_like_vendors_is_accepted():
    assert VideoRequest(prompt="a", duration_s="9s").duration_s == 9


def test_unknown_concept_names_the_field():
    e = invalid(concepts=["moonwalk"])
    assert e.field == "concepts" and "moonwalk" in e.reason


def test_unknown_field_is_rejected():
    assert invalid(colour="red").field == "colour"


def test_missing_file_is_reported(tmp_path):
    e = invalid(start_image=str(tmp_path / "nope.png"))
    assert e.field == "start_image" and "does not exist" in e.reason


def test_non_image_file_is_reported(tmp_path):
    f = tmp_path / "notes.png"
    f.write_text("not an image")
    e = invalid(end_image=str(f))
    assert e.field == "end_image" and "is not a PNG, JPEG, GIF or WebP image" in e.reason


def test_directory_is_not_an_image(tmp_path):
    e = invalid(start_image=str(tmp_path))
    assert e.field == "start_image" and "is not a file" in e.reason


def test_image_inputs_of_each_kind(tmp_path):
    f = tmp_path / "frame.png"
    f.write_bytes(PNG)
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    r = VideoRequest(prompt="a", start_image=str(f), end_image="https://example.com/e.jpg")
    assert r.start_image.kind is ImageKind.PATH and r.end_image.kind is ImageKind.URL
    assert r.start_image.as_data_uri() == uri
    assert VideoRequest(prompt="a", start_image=uri).start_image.kind is ImageKind.DATA_URI


def test_bad_data_uri_and_scheme():
    assert "base64" in invalid(start_image="data:image/png;base64,@@@").reason
    assert "scheme" in invalid(start_image="ftp://x/y.png").reason


def test_public_dict_summarises_inlined_images():
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    data = VideoRequest(prompt="a", start_image=uri).public_dict()
    assert data["start_image"].startswith("data URI (")


@pytest.mark.parametrize("value", ["yes", "on", "1", "true", 1, 0, None, [True]])
@pytest.mark.parametrize("name", ["loop", "fallback"])
def test_a_flag_is_true_or_false_only(name, value):
    # pydantic's lax mode took all of these: "yes" looped the video, 0 turned fallback off
    e = invalid(**{name: value})
    assert e.field == name and e.reason.startswith("must be true or false")


def test_a_flag_takes_a_boolean():
    assert VideoRequest(prompt="a", loop=True).loop and not VideoRequest(prompt="a", fallback=False).fallback


def test_budget_and_deadline_must_be_positive():
    assert invalid(max_cost_usd=0).field == "max_cost_usd"
    assert invalid(deadline_s=-1).field == "deadline_s"
