"""The CLI as a user runs it: real adapters over loopback HTTP against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.emulation.render import probe

KEYS = ("FAL_KEY", "APIFRAME_API_KEY", "RAILWAIL_API_KEY")


@pytest.fixture(autouse=True)
def no_keys(monkeypatch, tmp_path):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("REELGATE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_generate_writes_a_playable_portrait_mp4_and_says_who_made_it(tmp_path):
    result = run("generate", "a butterfly emerging from a cocoon", "--aspect-ratio", "9:16", "--sandbox",
                 "--output", "out.mp4")
    assert result.exit_code == 0, result.output
    info = probe((tmp_path / "out.mp4").read_bytes())
    assert info["codec"] == "h264" and info["height"] > info["width"]
    assert abs(info["duration_s"] - 5) < 0.2
    assert "made by" in result.output and "cost $" in result.output


def test_generate_json_reports_the_job_with_attempts(tmp_path):
    result = run("generate", "a fox", "--sandbox", "--json", "--output", "fox.mp4")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    for key in ("id", "status", "provider", "model", "cost_usd", "vendor_units", "output_path", "attempts"):
        assert key in job
    assert job["status"] == "succeeded" and job["output_path"].endswith("fox.mp4")
    assert job["attempts"][-1]["outcome"] == "succeeded"


def test_fal_outage_falls_back_and_shows_the_failed_attempt():
    result = run("generate", "a fox", "--sandbox-fault", "fal=outage", "--json", "-o", "f.mp4")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded" and job["provider"] != "fal"
    first = job["attempts"][0]
    assert first["provider"] == "fal" and first["outcome"] == "rejected"
    assert first["error_class"] == "Unavailable" and first["error"]


@pytest.mark.parametrize(("ratio", "expected"), [("1:1", "apiframe"), ("9:21", "fal")])
def test_aspect_ratio_decides_the_provider(ratio, expected):
    result = run("generate", "a fox", "--aspect-ratio", ratio, "--sandbox", "--json", "-o", "r.mp4")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["provider"] == expected


def test_quote_explains_every_exclusion():
    result = run("quote", "a fox", "--aspect-ratio", "1:1", "--resolution", "1080p", "--sandbox", "--json")
    report = json.loads(result.stdout)
    reasons = {p["provider"]: " ".join(p["reasons"]) for p in report["providers"]}
    assert "aspect_ratio 1:1 is not offered by fal" in reasons["fal"]
    assert "resolution 1080p is not offered by apiframe" in reasons["apiframe"]


def test_1080p_is_never_routed_to_a_provider_without_1080p():
    result = run("quote", "a fox", "--resolution", "1080p", "--sandbox", "--json")
    report = json.loads(result.stdout)
    assert report["chosen"] == "fal" and "apiframe" not in report["order"]


def test_without_keys_generate_says_so_and_uses_the_sandbox(tmp_path):
    result = run("generate", "a fox", "-o", "k.mp4")
    assert result.exit_code == 0, result.output
    assert "No vendor API key is set" in result.output and (tmp_path / "k.mp4").exists()


def test_with_a_key_it_never_silently_uses_the_sandbox(monkeypatch, tmp_path):
    # fal is configured, but pointed at a closed loopback port: the call must fail there.
    Path("reelgate.yaml").write_text("providers:\n  fal:\n    base_url: http://127.0.0.1:9\n")
    monkeypatch.setenv("FAL_KEY", "test-fal-key-123456")
    result = run("generate", "a fox", "--json", "-o", "x.mp4")
    assert result.exit_code == 1
    job = json.loads(result.stdout)
    assert job["attempts"][0]["provider"] == "fal" and job["attempts"][0]["error_class"] == "Unavailable"
    assert "sandbox" not in result.output.lower()
    assert "test-fal-key-123456" not in result.output


@pytest.mark.parametrize(("args", "flag", "field"), [
    (("--duration", "7"), "--duration", "duration_s"),
    (("--aspect-ratio", "2:1"), "--aspect-ratio", "aspect_ratio"),
    (("--concept", "moonwalk"), "--concept", "concepts"),
    (("--image", "/no/such/file.png"), "--image", "start_image"),
])
def test_bad_input_is_one_clean_line_naming_the_flag(args, flag, field):
    result = run("generate", "a fox", "--sandbox", *args)
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {flag}: ") and len(result.output.strip().splitlines()) == 1
    assert field not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("text", "expected"), [
    # an unclosed flow mapping: where it ends, not only the error's class ("ParserError")
    ("providers:\n  fal:\n    api_key: sk-held-secret-123\n  apiframe: {\n bad",
     "is not valid YAML: line 5, column 5: expected ',' or '}'"),
    ("retry:\n\tsubmit_retries: 2\n", "is not valid YAML: line 2, column 1: found character '\\t' that cannot"),
    ("- a\n- b\n", "must hold a mapping at the top level"),
    ("retry: {submit_retries: many}\n", "retry.submit_retries"),
])
def test_a_bad_config_file_is_one_line_saying_where(tmp_path, text, expected):
    config = tmp_path / "reelgate.yaml"
    config.write_text(text)
    for command in (["quote", "a fox"], ["serve", "--port", "1"], ["keys", "list"], ["jobs"]):
        result = run(*command, "--config", str(config))
        assert result.exit_code == 2, (command, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (command, result.output)
        assert "sk-held-secret-123" not in result.output  # PyYAML's own message quotes the line


def test_a_config_path_that_is_no_file_says_why(tmp_path):
    for path, why in ((tmp_path / "missing.yaml", "does not exist"), (tmp_path, "cannot be read: Is a directory")):
        result = run("quote", "a fox", "--config", str(path))
        assert result.exit_code == 2 and result.output.strip() == f"error: config file {str(path)!r} {why}"


def test_providers_lists_plugins_and_credentials():
    result = run("providers", "--json")
    data = json.loads(result.stdout)
    names = {p["name"]: p for p in data["providers"]}
    assert {"fal", "apiframe", "railwail"} <= set(names)
    assert names["fal"]["credentials_set"] is False and names["fal"]["credential_env"] == "FAL_KEY"
    assert "1:1" not in names["fal"]["models"]["ray-2-flash"]["aspect_ratios"]


def test_serve_says_where_its_state_lives_without_the_store_password(tmp_path):
    # it said "state in ~/.reelgate" also on PostgreSQL, where jobs and keys are not there
    from gateway.cli_service import where_state_lives
    from gateway.config import ServiceConfig, Settings

    pg = Settings(service=ServiceConfig(store_url="postgresql://app:s3cret-pw@db/reelgate", store_schema="prod"))
    line = where_state_lives(pg, tmp_path)
    assert line == f"jobs and keys in PostgreSQL, schema prod; home {tmp_path}" and "s3cret" not in line
    assert where_state_lives(Settings(), tmp_path) == f"state in {tmp_path}"


def test_empty_lists_say_so_on_stderr_and_keep_stdout_empty(tmp_path, monkeypatch):
    # `reelgate jobs --at-risk` with nothing at risk printed nothing at all
    monkeypatch.setenv("REELGATE_HOME", str(tmp_path / "home"))
    for args, said in ((["jobs", "--at-risk"], "no jobs at risk"), (["jobs"], "no jobs in this store"),
                       (["keys", "list"], "no keys yet: make one with `reelgate keys create --name NAME`")):
        result = run(*args)
        assert result.exit_code == 0 and result.stdout == "" and result.stderr.strip() == said, result.output
        assert json.loads(run(*args, "--json").stdout) == []
