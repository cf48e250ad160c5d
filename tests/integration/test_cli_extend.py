"""``reelgate extend``, ``generate --duration 20`` and ``quote`` of a chain, as a user runs them
in the sandbox; the delivered MP4 measured with PyAV."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from gateway.emulation.render import render_mp4
from tests.integration.test_cli import no_keys as no_keys  # noqa: F401 (autouse fixture)
from tests.integration.test_cli import run


@pytest.fixture(autouse=True)
def own_home(monkeypatch, tmp_path):
    monkeypatch.setenv("REELGATE_HOME", str(tmp_path / "home"))


def measured(path: Path) -> tuple[float, int, int]:
    """(seconds, width, height) of a playable MP4: every frame decodes."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        assert frames and container.duration is not None
        return container.duration / av.time_base, frames[0].width, frames[0].height


def test_extend_a_5s_clip_to_20s_writes_one_playable_mp4(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(render_mp4(720, 1280, 5))
    result = run("extend", "clip.mp4", "--seconds", "20", "--prompt", "on", "--prompt", "and on", "--sandbox",
                 "--json", "--output", "long.mp4")
    assert result.exit_code == 0, result.output
    seconds, width, height = measured(tmp_path / "long.mp4")
    assert abs(seconds - 20) <= 0.5
    assert (width, height) == (720, 1280)  # the source's shape, taken as the request's
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded" and job["duration_s"] == 20 and job["aspect_ratio"] == "9:16"
    assert [s["duration_s"] for s in job["segments"]] == [5, 5, 5]
    assert all(s["provider"] and s["cost_usd"] > 0 for s in job["segments"])
    assert job["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in job["segments"]))
    assert [a["outcome"] for a in job["attempts"]] == ["succeeded"] * 3


def test_generate_duration_20_plans_a_chain_and_quote_prices_it(tmp_path):
    quoted = run("quote", "a kite", "--duration", "20", "--sandbox", "--json")
    assert quoted.exit_code == 0, quoted.output
    report = json.loads(quoted.stdout)
    assert [s["duration_s"] for s in report["segments"]] == [5, 5, 5, 5]
    chosen = [next(p["quote"]["cost_usd"] for p in s["providers"] if p["provider"] == s["chosen"])
              for s in report["segments"]]
    assert report["cost_usd"] == pytest.approx(sum(chosen))
    result = run("generate", "a kite", "--duration", "20", "--sandbox", "--sandbox-fault", "fal=outage",
                 "--output", "kite.mp4")
    assert result.exit_code == 0, result.output
    assert abs(measured(tmp_path / "kite.mp4")[0] - 20) <= 0.5
    assert "segment 4: 5 s by" in result.output


def test_quote_extend_and_bad_input_exit_2_naming_the_field(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(render_mp4(1280, 720, 5))
    quoted = run("quote", "more", "--extend", "clip.mp4", "--seconds", "14", "--sandbox", "--json")
    assert quoted.exit_code == 0, quoted.output
    assert [s["duration_s"] for s in json.loads(quoted.stdout)["segments"]] == [9]
    too_long = run("extend", "clip.mp4", "--seconds", "45", "--sandbox")
    assert too_long.exit_code == 2 and "error: --seconds: Input should be less than or equal to 30" in too_long.output
    assert "target_seconds" not in too_long.output
    missing = run("extend", "nothing.mp4", "--seconds", "20", "--sandbox")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    refused = run("extend", str(not_video), "--seconds", "20", "--sandbox")
    assert refused.exit_code == 2 and "not an MP4" in refused.output
    unknown_job = run("extend", "vid_" + "0" * 32, "--seconds", "20", "--sandbox")
    assert unknown_job.exit_code == 2 and "no finished job" in unknown_job.output
