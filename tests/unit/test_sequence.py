"""Sequence planning (pure) and the PyAV work it relies on (probe, last frame, join)."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from gateway import joining
from gateway.emulation.render import render_mp4
from gateway.errors import InvalidRequest
from gateway.operations import ExtendSpec
from gateway.request import VideoRequest
from gateway.sequence import seconds_to_add, segment_id, segment_lengths, segment_request

URL = "https://example.com/clip.mp4"


@pytest.mark.parametrize(("seconds", "lengths"), [
    (15, [5, 5, 5]), (20, [5, 5, 5, 5]), (18, [9, 9]), (14, [9, 5]), (5, [5]), (9, [9]), (25, [5] * 5),
    (11, [5, 5]),  # nearest: 10 (1 s short) beats 14 (3 s over)
])
def test_segment_lengths_are_the_nearest_sum_with_the_fewest_clips(seconds, lengths):
    assert sorted(segment_lengths(seconds), reverse=True) == sorted(lengths, reverse=True)


def test_seconds_to_add_counts_the_source_or_takes_added_seconds():
    assert seconds_to_add(ExtendSpec(source=URL, target_seconds=20), 5.0) == 15
    assert seconds_to_add(ExtendSpec(source=URL, added_seconds=8), 5.0) == 8
    with pytest.raises(InvalidRequest) as info:
        seconds_to_add(ExtendSpec(source=URL, target_seconds=10), 9.0)
    assert info.value.field == "edit.target_seconds" and "already 9 s" in info.value.reason


@pytest.mark.parametrize(("edit", "reason"), [
    ({"source": URL}, "exactly one of target_seconds"),
    ({"source": URL, "target_seconds": 20, "added_seconds": 5}, "exactly one of target_seconds"),
    ({"added_seconds": 5}, "needs target_seconds"),
    ({"source": URL, "source_job": "vid_1", "target_seconds": 20}, "not both"),
    ({"source_job": "../etc", "target_seconds": 20}, "pattern"),
])
def test_extend_spec_refuses_what_cannot_be_planned(edit, reason):
    with pytest.raises(InvalidRequest) as info:
        VideoRequest(prompt="x", edit={"operation": "extend", **edit})
    assert reason in info.value.reason and info.value.field.startswith("edit")


def test_segment_requests_carry_their_prompt_frame_and_the_parents_routing():
    parent = VideoRequest(prompt="base", providers=["fal", "railwail"], max_cost_usd=3, deadline_s=600,
                          idempotency_key="k", end_image="https://example.com/end.png",
                          edit={"operation": "extend", "source": URL, "target_seconds": 20, "prompts": ["one"]})
    first = segment_request(parent, 0, [5, 5, 5], None, "720p")
    last = segment_request(parent, 2, [5, 5, 5], None, "720p")
    assert (first.prompt, last.prompt) == ("one", "base")
    assert first.providers == ("fal", "railwail") and first.resolution.value == "720p"
    assert first.end_image is None and last.end_image is not None  # the sequence ends on the end frame
    # budget, deadline and idempotency stay with the parent, which checks and holds them for all
    assert (first.max_cost_usd, first.deadline_s, first.idempotency_key, first.edit) == (None, None, None, None)
    assert segment_id("vid_abc", 0) == "vid_abc-s1"


def test_last_frame_is_a_png_of_the_clip_size(tmp_path: Path):
    clip = tmp_path / "c.mp4"
    clip.write_bytes(render_mp4(640, 360, 5))
    png = joining.last_frame_png(clip)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(png[16:20], "big") == 640 and int.from_bytes(png[20:24], "big") == 360


def test_join_remuxes_matching_clips_and_reencodes_differing_ones(tmp_path: Path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(render_mp4(640, 360, 5))
    b.write_bytes(render_mp4(360, 640, 5))
    info, reencoded = joining.join([a, a, a], tmp_path / "same.mp4")
    assert not reencoded and abs(info.duration_s - 15) <= 0.1
    info, reencoded = joining.join([a, b], tmp_path / "mixed.mp4")
    assert reencoded and (info.width, info.height) == (640, 360) and abs(info.duration_s - 10) <= 0.2
    for name, frames in (("same.mp4", 180), ("mixed.mp4", 120)):
        with av.open(str(tmp_path / name)) as container:
            assert sum(1 for _ in container.decode(video=0)) == frames  # every frame plays
    assert not list(tmp_path.glob("*.part"))


def test_probe_refuses_what_is_not_a_video(tmp_path: Path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    with pytest.raises(ValueError, match="not a video"):
        joining.probe(bad)
