"""The CLI under broken and hostile input, run as a user or a script runs it: a separate
process whose stdout and stderr are pipes, not a terminal.

Every bad input exits 2 with exactly one line naming the field and the reason, and no
traceback (README: "Bad input exits 2 with one line"); nothing is paid for before the
input is known good; Ctrl-C says what was left running; a key never reaches the output.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import keep_log
from tests.service.conftest import free_port, wait_until_up

VENDOR_KEY = "fal-live-5e4d3c2b1a09"
KEYS = ("FAL_KEY", "APIFRAME_API_KEY", "RAILWAIL_API_KEY")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in KEYS and not k.startswith("REELGATE_")}
    return {**clean, "REELGATE_HOME": str(tmp_path / "home"), "COLUMNS": "80"}


def cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)


def one_line_exit_2(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The one error line, after checking there is exactly one, it says ``needles``, and exit 2."""
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1 and result.stdout == "", (result.stdout, result.stderr)
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def sandbox_proc(env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """``reelgate sandbox`` in its own process; yields its URL once it answers."""
    port = free_port()
    log = tmp_path / "sandbox.log"
    keep_log(request.node, log)
    with log.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "sandbox", "--port", str(port)], env=env,
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc, "/_sandbox/stats", log)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def fal_only_config(tmp_path: Path, base_url: str) -> Path:
    config = tmp_path / "reelgate.yaml"
    config.write_text(f"providers:\n  fal: {{base_url: '{base_url}'}}\n"
                      "  apiframe: {enabled: false}\n  railwail: {enabled: false}\n")
    return config


def accepted(url: str) -> int:
    return int(httpx.get(f"{url}/_sandbox/stats").json()["fal"]["accepted_submissions"])


def test_a_bad_output_path_is_refused_before_any_vendor_call(sandbox_proc, env, tmp_path):
    config = fal_only_config(tmp_path, f"{sandbox_proc}/fal")
    env = {**env, "FAL_KEY": VENDOR_KEY}
    readonly = Path("/proc/reelgate-cannot-write.mp4")  # not creatable, even for root
    cases = [
        (tmp_path / "missing" / "out.mp4", "does not exist"),
        (tmp_path, "is a directory"),
        (readonly, "cannot be written"),
    ]
    for output, reason in cases:
        result = cli("generate", "a fox", "--config", str(config), "-o", str(output), env=env, cwd=tmp_path)
        one_line_exit_2(result, "--output", reason)
        assert accepted(sandbox_proc) == 0  # nothing was paid for
    assert not (tmp_path / "missing").exists()
    # the same command with a good path does reach the vendor: the counter above can move
    good = cli("generate", "a fox", "--config", str(config), "-o", "out.mp4", "--json", env=env, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert accepted(sandbox_proc) == 1 and (tmp_path / "out.mp4").stat().st_size > 0


def test_a_config_file_that_is_not_utf8_is_one_line(env, tmp_path):
    (tmp_path / "bad.yaml").write_bytes(b"default_route: \xff\xfecheapest\n")
    for command in (["generate", "a fox"], ["quote", "a fox"], ["serve"]):
        result = cli(*command, "--config", "bad.yaml", env=env, cwd=tmp_path)
        one_line_exit_2(result, "bad.yaml", "not UTF-8")


@pytest.mark.parametrize("command", ["serve", "sandbox"])
def test_a_port_out_of_range_or_in_use_is_one_line(command, env, tmp_path):
    for port in ("99999", "0", "-1"):
        one_line_exit_2(cli(command, "--port", port, env=env, cwd=tmp_path), "--port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        one_line_exit_2(cli(command, "--port", port, env=env, cwd=tmp_path), "--port", "in use")


@pytest.mark.parametrize("command", ["serve", "sandbox"])
def test_a_bad_log_level_is_one_line_and_the_flag_wins(command, env, tmp_path):
    one_line_exit_2(cli(command, "--log-level", "loud", env=env, cwd=tmp_path), "--log-level", "'loud'")
    bad_env = {**env, "REELGATE_LOG_LEVEL": "verbose"}
    one_line_exit_2(cli(command, env=bad_env, cwd=tmp_path), "REELGATE_LOG_LEVEL", "'verbose'")
    # the flag wins over the variable: the bad variable is never read, so the next error is the port's
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        one_line_exit_2(cli(command, "--log-level", "debug", "--port", port, env=bad_env, cwd=tmp_path), "--port")


@pytest.mark.parametrize("budget", ["nan", "inf", "-1", "0"])
def test_a_key_budget_must_be_a_positive_number(budget, env, tmp_path):
    one_line_exit_2(cli("keys", "create", "--name", "app", "--budget", budget, env=env, cwd=tmp_path), "budget")
    listed = cli("keys", "list", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []  # nothing stored as "unlimited"


@pytest.mark.parametrize(("fault", "reason"), [
    ("fal=flaky:rate=1.5", "rate=1.5 must be between 0 and 1"),
    ("fal=outage:times=2", "outage takes no times"),
    ("fal=slow:times=1", "slow takes no times"),
    ("fal=slow:colour=red", "slow has no option 'colour'"),
    ("fal=meteor", "unknown fault 'meteor'"),
    ("nobody=outage", "no emulator for nobody"),
])
def test_bad_sandbox_faults_are_one_line(fault, reason, env, tmp_path):
    one_line_exit_2(cli("sandbox", "--fault", fault, env=env, cwd=tmp_path), "--fault", reason)
    one_line_exit_2(cli("generate", "a fox", "--sandbox-fault", fault, "-o", "x.mp4", env=env, cwd=tmp_path),
                    "--sandbox-fault", reason)


def test_long_messages_are_not_wrapped_into_a_pipe(env, tmp_path):
    missing = "/" + "/".join(["a-rather-long-directory-name"] * 6) + "/frame.png"
    result = cli("generate", "a fox", "--sandbox", "--image", missing, env=env, cwd=tmp_path)
    line = one_line_exit_2(result, "error: --image: ", missing)
    assert len(line) > 200


def test_usage_errors_are_one_line(env, tmp_path):
    one_line_exit_2(cli("generate", env=env, cwd=tmp_path), "prompt")
    one_line_exit_2(cli("generate", "a fox", "--duration", "five", env=env, cwd=tmp_path), "--duration")
    one_line_exit_2(cli("nope", env=env, cwd=tmp_path), "nope")


def test_prose_survives_the_secret_filter_and_no_key_is_printed(env, tmp_path):
    # fal has a key (on a closed port); apiframe has none, and the quote must say so in words
    (tmp_path / "reelgate.yaml").write_text("providers:\n  fal: {base_url: 'http://127.0.0.1:9'}\n")
    result = cli("quote", "a fox", "--json", env={**env, "FAL_KEY": VENDOR_KEY}, cwd=tmp_path)
    report = json.loads(result.stdout)
    skipped = {p["provider"]: p["skipped"] for p in report["providers"]}
    assert skipped["apiframe"] == "no API key configured (set APIFRAME_API_KEY)"
    assert "***" not in result.stdout and VENDOR_KEY not in result.stdout + result.stderr


def echoes_the_key(request: Request) -> JSONResponse:
    """A vendor that repeats the credential it was sent in its error (some do)."""
    return JSONResponse({"detail": f"invalid credentials {request.headers.get('authorization')}"}, status_code=400)


def test_a_key_echoed_by_a_vendor_is_redacted(serve, env, tmp_path):
    url = serve(Starlette(routes=[Route("/{path:path}", echoes_the_key, methods=["POST"])]))
    config = fal_only_config(tmp_path, url)
    result = cli("generate", "a fox", "--config", str(config), "--json", "-o", "x.mp4",
                 env={**env, "FAL_KEY": VENDOR_KEY}, cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # the job failed; the run did not
    attempt = json.loads(result.stdout)["attempts"][0]
    assert attempt["error"] == "fal: HTTP 400: invalid credentials Key ***"
    assert VENDOR_KEY not in result.stdout + result.stderr


def test_ctrl_c_during_a_job_says_where_it_runs_and_exits_130(env, tmp_path):
    # every emulated fal call takes 5 s: after the submit is announced, the job cannot end
    # before the next poll answers, so the interrupt lands while it runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "generate", "a fox", "--sandbox", "--provider", "fal",
         "--sandbox-fault", "fal=slow:delay=5", "-o", "x.mp4"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a suite started in the background by a script (`cmd &`, nohup) has SIGINT ignored,
        # and its children inherit that: the CLI never saw this Ctrl-C and made the video
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stderr is not None
        submitted = ""
        for line in proc.stderr:
            if line.startswith("submitted job "):
                submitted = line
                break
        assert submitted, "the submit was never announced"
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # "submitted job vid_... to fal as vendor job <id>"
    words = submitted.split()
    job_id, vendor, vendor_job = words[2], words[4], words[-1]
    assert job_id.startswith("vid_") and vendor == "fal"
    assert proc.returncode == 130, (out, rest)
    assert "Traceback" not in rest and not (tmp_path / "x.mp4").exists()
    lines = rest.splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: ")
    assert job_id in lines[0] and vendor_job in lines[0] and "at fal" in lines[0]


def test_version_and_help(env, tmp_path):
    from gateway import __version__

    version = cli("--version", env=env, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"reelgate {__version__}"
    helped = cli("--help", env=env, cwd=tmp_path)
    assert helped.returncode == 0 and "generate" in helped.stdout
