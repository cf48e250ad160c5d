"""Bad flag values as a newcomer types them: one ``error:`` line naming the flag typed, the
reason and what is allowed, exit 2, and never the request field the flag is mapped onto."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.emulation.render import render_mp4
from tests.integration.test_cli import no_keys as no_keys  # noqa: F401 (autouse fixture)
from tests.integration.test_cli import run

DURATION_RANGE = "choose 5 or 9 for one clip, or 10 to 30 for a chain of clips"


@pytest.fixture(autouse=True)
def own_home(monkeypatch, tmp_path):
    monkeypatch.setenv("REELGATE_HOME", str(tmp_path / "home"))


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(render_mp4(640, 360, 5))
    return path


def one_error_line(result, flag: str, reason: str, internal: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1] == f"error: {flag}: {reason}", result.output
    assert internal not in result.output and "Traceback" not in result.output


def test_the_newcomers_duration_40_names_duration_as_the_console_script_prints_it(tmp_path):
    # the real entry point (gateway.cli.main), as `reelgate generate "x" --duration 40` runs
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "generate", "x", "--duration", "40", "--sandbox"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == f"error: --duration: 40 seconds is not offered; {DURATION_RANGE}"


@pytest.mark.parametrize("seconds", ["0", "-1", "7", "40", "99999999999999999999"])
def test_duration_out_of_range_says_the_whole_range(seconds):
    result = run("generate", "x", "--duration", seconds, "--sandbox")
    one_error_line(result, "--duration", f"{seconds} seconds is not offered; {DURATION_RANGE}", "duration_s")
    assert "target_seconds" not in result.output


def test_duration_that_is_no_number_names_the_flag():
    result = run("generate", "x", "--duration", "abc", "--sandbox")
    assert result.exit_code == 2 and "'--duration'" in result.output and "valid integer" in result.output


def test_json_errors_name_the_flag_too():
    result = run("generate", "x", "--duration", "40", "--sandbox", "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["field"] == "--duration" and error["reason"] == f"40 seconds is not offered; {DURATION_RANGE}"


@pytest.mark.parametrize(("args", "flag", "reason", "internal"), [
    (("--aspect-ratio", "5:4"), "--aspect-ratio",
     "'5:4' is not one of '16:9', '9:16', '1:1', '4:3', '3:4', '21:9' or '9:21'", "aspect_ratio"),
    (("--resolution", "4k"), "--resolution", "'4k' is not one of '540p', '720p' or '1080p'", " resolution:"),
    (("--image", "/no/such.png"), "--image", "file '/no/such.png' does not exist", "start_image"),
    (("--end-image", "/no/such.png"), "--end-image", "file '/no/such.png' does not exist", "end_image"),
    (("--loop", "--end-image", "https://a.example/end.png"), "--loop",
     "cannot be combined with an --end-image and no --image", " request:"),
    (("--max-cost", "-1"), "--max-cost", "Input should be greater than 0", "max_cost_usd"),
    (("--max-cost", "1e999"), "--max-cost", "Input should be a finite number", "max_cost_usd"),
    (("--deadline", "1e99"), "--deadline", "Input should be less than or equal to 604800", "deadline_s"),
    (("--allow", "faster"), "--allow", "'faster' is not one of 'higher_resolution'", "allow.0"),
    (("--provider", "nope"), "--provider", "unknown provider nope; installed: apiframe, fal, railwail", "providers"),
    (("--model", "ray-9"), "--model", "'ray-9' is not one of 'ray-2-flash' or 'ray-2'", " model:"),
])
def test_generate_flags_mapped_onto_other_fields_name_the_flag(args, flag, reason, internal):
    one_error_line(run("generate", "x", *args, "--sandbox"), flag, reason, internal)


def test_an_empty_prompt_names_the_argument():
    one_error_line(run("generate", "", "--sandbox"), "PROMPT",
                   "must not be empty (only an operation on a source video may omit it)", " prompt:")


@pytest.mark.parametrize(("seconds", "reason"), [
    ("40", "Input should be less than or equal to 30"), ("0", "Input should be greater than 5"),
    ("7", "the source is already 5 s long; ask for more than 7.5 s"),  # said by the planner, not the model
])
def test_extend_seconds_names_seconds(clip, seconds, reason):
    one_error_line(run("extend", str(clip), "--seconds", seconds, "--sandbox"), "--seconds", reason,
                   "target_seconds")


def test_extend_options_name_their_flags(clip):
    one_error_line(run("extend", str(clip), "--seconds", "12", "--prompt", "on", "--prompt", "", "--sandbox"),
                   "--prompt", "String should have at least 1 character", "edit.")
    one_error_line(run("extend", str(clip), "--seconds", "12", "--resolution", "4k", "--sandbox"),
                   "--resolution", "'4k' is not one of '540p', '720p' or '1080p'", " resolution:")


def test_modify_and_reframe_name_their_flags(clip):
    one_error_line(run("modify", str(clip), "--mode", "flex_9", "--sandbox"), "--mode",
                   "'flex_9' is not one of 'adhere_1', 'adhere_2', 'adhere_3', 'flex_1', 'flex_2', 'flex_3', "
                   "'reimagine_1', 'reimagine_2' or 'reimagine_3'", "edit.")
    one_error_line(run("modify", "nothing.mp4", "--sandbox"), "SOURCE", "file 'nothing.mp4' does not exist",
                   "edit.")
    one_error_line(run("reframe", str(clip), "--aspect-ratio", "5:4", "--sandbox"),
                   "--aspect-ratio", "'5:4' is not one of '16:9', '9:16', '1:1', '4:3', '3:4', '21:9' or '9:21'",
                   "aspect_ratio")
    one_error_line(run("modify", str(clip), "--image", "/no/such.png", "--sandbox"), "--image",
                   "file '/no/such.png' does not exist", "start_image")


def test_quote_names_the_source_and_length_by_quotes_own_flags(clip):
    one_error_line(run("quote", "x", "--duration", "40", "--sandbox"), "--duration",
                   f"40 seconds is not offered; {DURATION_RANGE}", "target_seconds")
    one_error_line(run("quote", "--extend", str(clip), "--seconds", "40", "--sandbox"), "--seconds",
                   "Input should be less than or equal to 30", "target_seconds")
    one_error_line(run("quote", "--extend", "nothing.mp4", "--seconds", "12", "--sandbox"), "--extend",
                   "file 'nothing.mp4' does not exist", "SOURCE")
    one_error_line(run("quote", "--modify", "nothing.mp4", "--sandbox"), "--modify",
                   "file 'nothing.mp4' does not exist", "edit.")
    one_error_line(run("quote", "--modify", str(clip), "--mode", "bad", "--sandbox"), "--mode",
                   "'bad' is not one of 'adhere_1', 'adhere_2', 'adhere_3', 'flex_1', 'flex_2', 'flex_3', "
                   "'reimagine_1', 'reimagine_2' or 'reimagine_3'", "edit.")
    # a quote that cannot be made carries its error in the report: named by the flag as well
    short = run("quote", "--extend", str(clip), "--seconds", "7", "--sandbox", "--json")
    assert short.exit_code == 2
    error = json.loads(short.stdout)["error"]
    assert error["field"] == "--seconds" and error["message"].startswith("--seconds: the source is already 5 s")


def test_quote_refuses_flags_it_would_have_dropped(clip):
    # each of these priced another request than the one typed, and said nothing
    one_error_line(run("quote", "x", "--modify", str(clip), "--duration", "20", "--sandbox"), "--duration",
                   "more than 9 seconds is a chain of clips made from the prompt and cannot go with --modify",
                   "target_seconds")
    one_error_line(run("quote", "--extend", str(clip), "--seconds", "12", "--duration", "20", "--sandbox"),
                   "--duration", "more than 9 seconds is a chain of clips made from the prompt and cannot go "
                   "with --extend; give the whole length with --seconds", "target_seconds")
    one_error_line(run("quote", "x", "--modify", str(clip), "--extend", str(clip), "--seconds", "12", "--sandbox"),
                   "--modify", "give one of --modify, --reframe or --extend, not --modify and --extend", "edit.")
    one_error_line(run("quote", "x", "--reframe", str(clip), "--mode", "flex_1", "--sandbox"), "--mode",
                   "only goes with --modify", "edit.")
    one_error_line(run("quote", "x", "--seconds", "20", "--sandbox"), "--seconds",
                   "only goes with --extend (a generation's length is --duration)", "target_seconds")
    one_error_line(run("quote", "--extend", str(clip), "--sandbox"), "--seconds",
                   "must be given with --extend: the whole length, the source included", "target_seconds")


def test_quote_extend_without_a_prompt_uses_extends_default_prompt(clip):
    # it was refused ("prompt: must not be empty") where `reelgate extend` takes its default prompt
    result = run("quote", "--extend", str(clip), "--seconds", "14", "--sandbox", "--json")
    assert result.exit_code == 0, result.output
    assert [s["duration_s"] for s in json.loads(result.stdout)["segments"]] == [9]


def test_keys_name_their_flags():
    one_error_line(run("keys", "create", "--name", " "), "--name", "must not be empty", " name:")
    one_error_line(run("keys", "create", "--name", "a", "--budget", "-1"), "--budget",
                   "must be a finite number of USD more than 0, not -1.0", " budget:")
    one_error_line(run("keys", "revoke", "nobody"), "KEY", "no active key with id or name 'nobody'", " key:")
