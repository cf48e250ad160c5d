"""``reelgate modify`` and ``reelgate reframe`` as a user runs them, in the sandbox; outputs
read back with PyAV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.emulation.render import probe, render_mp4
from tests.integration.test_cli import no_keys as no_keys  # noqa: F401 (autouse fixture)
from tests.integration.test_cli import run


@pytest.fixture
def wide(tmp_path: Path) -> Path:
    """A 16:9 clip of 3.5 s (not the 5 s a generation makes, so "as long as its source" is real)."""
    clip = tmp_path / "wide.mp4"
    clip.write_bytes(render_mp4(640, 360, 3.5))
    return clip


def test_reframe_of_a_16_9_clip_to_9_16_writes_a_taller_than_wide_mp4(tmp_path: Path, wide: Path) -> None:
    result = run("reframe", str(wide), "--aspect-ratio", "9:16", "--sandbox", "--output", "tall.mp4")
    assert result.exit_code == 0, result.output
    info = probe((tmp_path / "tall.mp4").read_bytes())
    assert info["codec"] == "h264" and info["height"] > info["width"]
    assert "made by fal (fal-ai/luma-dream-machine/ray-2-flash/reframe), reframe of" in result.output


def test_modify_reimagine_2_writes_an_mp4_as_long_as_its_source(tmp_path: Path, wide: Path) -> None:
    result = run("modify", str(wide), "--mode", "reimagine_2", "--prompt", "make it snow", "--sandbox",
                 "--json", "--output", "snow.mp4")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    info = probe((tmp_path / "snow.mp4").read_bytes())
    assert abs(float(info["duration_s"]) - 3.5) < 0.1
    assert (info["width"], info["height"]) == (640, 360)
    assert job["status"] == "succeeded" and job["request"]["edit"]["mode"] == "reimagine_2"
    [attempt] = job["attempts"]
    assert attempt["provider"] == "fal" and attempt["outcome"] == "succeeded"
    assert attempt["vendor_model"] == "fal-ai/luma-dream-machine/ray-2-flash/modify"
    assert attempt["cost_usd"] == pytest.approx(0.20) and job["cost_usd"] == pytest.approx(0.20)


def test_a_url_source_from_a_finished_generation(tmp_path: Path) -> None:
    made = run("generate", "a fox", "--sandbox", "--json", "--output", "fox.mp4")
    assert made.exit_code == 0, made.output
    # each CLI run has its own sandbox: a URL of an earlier one is gone, and that is a clean failure
    url = json.loads(made.stdout)["output"]["url"]
    gone = run("modify", url, "--sandbox", "--json", "--output", "m.mp4")
    assert gone.exit_code in (1, 2) and "Traceback" not in gone.output


def test_quote_names_who_cannot_and_prices_fal_unconfirmed(wide: Path) -> None:
    result = run("reframe", str(wide), "--aspect-ratio", "1:1", "--sandbox", "--quote", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["chosen"] == "fal"
    fal = next(p for p in report["providers"] if p["provider"] == "fal")
    assert fal["quote"]["vendor_model"].endswith("/reframe") and "UNCONFIRMED" in fal["quote"]["basis"]
    reasons = {e["provider"]: e["reasons"] for e in report["providers"] if not e["eligible"]}
    assert reasons["apiframe"] == ["apiframe cannot reframe (model ray-2-flash)"]


def test_bad_input_names_the_field(tmp_path: Path, wide: Path) -> None:
    bad_mode = run("modify", str(wide), "--mode", "flex_9", "--sandbox")
    assert bad_mode.exit_code == 2 and "error: --mode: 'flex_9' is not one of" in bad_mode.output
    assert "edit.modify.mode" not in bad_mode.output  # the request field; the user typed --mode
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    bad_file = run("reframe", str(not_video), "--aspect-ratio", "9:16", "--sandbox")
    assert bad_file.exit_code == 2 and "is not an MP4, MOV or WebM video" in bad_file.output
    unknown_job = run("modify", "vid_" + "a" * 32, "--sandbox")
    assert unknown_job.exit_code == 2 and "is not known" in unknown_job.output


def test_reelgate_quote_prices_modify_and_reframe(wide: Path) -> None:
    framed = run("quote", "--reframe", str(wide), "--aspect-ratio", "9:16", "--sandbox", "--json")
    assert framed.exit_code == 0, framed.output
    report = json.loads(framed.stdout)
    fal = next(p for p in report["providers"] if p["provider"] == "fal")
    assert report["chosen"] == "fal" and fal["quote"]["vendor_model"].endswith("/ray-2-flash/reframe")
    modified = run("quote", "make it snow", "--modify", str(wide), "--mode", "flex_3", "--model", "ray-2",
                   "--sandbox", "--json")
    assert modified.exit_code == 0, modified.output
    fal = next(p for p in json.loads(modified.stdout)["providers"] if p["provider"] == "fal")
    assert fal["quote"]["vendor_model"].endswith("/ray-2/modify") and fal["quote"]["cost_usd"] == 0.5
    refused = run("quote", "--modify", str(wide), "--resolution", "1080p", "--sandbox")
    assert refused.exit_code == 2 and "resolution cannot be set for modify at fal" in refused.output
