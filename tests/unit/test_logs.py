"""Structured logs: one key=value line per job transition and per vendor call, with the job,
attempt, vendor, outcome and latency -- and never a key or a prompt."""

from __future__ import annotations

import io
import logging
import re

import pytest

from gateway.api import Gateway
from gateway.config import PollingConfig, ProviderConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.faults import parse_fault
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.errors import InvalidRequest
from gateway.job import JobStatus
from gateway.logs import FIELDS_ATTR, KeyValueFormatter, configure, level_from
from gateway.plugins import discover
from gateway.provider import Secret
from gateway.request import VideoRequest
from tests.support import FakeClock

VENDOR_KEY = "fal-live-9f8e7d6c5b4a"
PROMPT = "a lighthouse keeper whispering the launch codes"
JOB_FIELDS = {"job", "attempt", "vendor", "from", "to", "latency_ms"}
CALL_FIELDS = {"job", "attempt", "vendor", "phase", "outcome", "latency_ms"}


@pytest.fixture
def fal_gateway():
    """A gateway with a real-looking fal key, pointed at the fal emulator (fake clock)."""
    clock = FakeClock()
    sandbox = Sandbox.from_providers(discover().providers, {"fal": [parse_fault("rate-limit:retry_after=1,times=1")]},
                                     Timing(queue_s=2, run_s=4), clock=clock.now)
    with BackgroundServer(sandbox.app) as server:
        settings = Settings(polling=PollingConfig(initial_s=1, max_s=2), providers={
            "fal": ProviderConfig(base_url=f"{server.url}/fal"),
            "apiframe": ProviderConfig(enabled=False), "railwail": ProviderConfig(enabled=False)})
        yield Gateway.from_settings(settings, env={"FAL_KEY": VENDOR_KEY}, sleep=clock.sleep, clock=clock.now)


def fields(record: logging.LogRecord) -> dict[str, object]:
    return getattr(record, FIELDS_ATTR)


async def test_each_transition_and_vendor_call_is_one_line_with_its_fields(fal_gateway, caplog):
    caplog.set_level(logging.DEBUG, logger="reelgate")
    async with fal_gateway as gw:
        job = await gw.generate(VideoRequest(prompt=PROMPT))
    assert job.status is JobStatus.SUCCEEDED
    moves = [fields(r) for r in caplog.records if r.name == "reelgate.job"]
    assert [(m["from"], m["to"]) for m in moves] == [("queued", "submitted"), ("submitted", "running"),
                                                     ("running", "succeeded")]
    for m in moves:
        assert JOB_FIELDS <= set(m) and m["job"] == job.id and m["attempt"] == 1 and m["vendor"] == "fal"
        assert isinstance(m["latency_ms"], int) and m["latency_ms"] >= 0
    calls = [fields(r) for r in caplog.records if r.name == "reelgate.vendor"]
    phases = [(c["phase"], c["outcome"]) for c in calls]
    # the rate-limited submit, its retry, the polls, then the result
    assert phases[:2] == [("submit", 429), ("submit", 200)] and ("status", 200) in phases
    assert phases[-1][0] == "result" and len(calls) == 2 + job.attempts[0].polls + 1
    for c in calls:
        assert CALL_FIELDS <= set(c) and c["job"] == job.id and c["attempt"] == 1 and c["vendor"] == "fal"


async def test_a_vendor_that_cannot_be_reached_is_logged_with_the_error_class(caplog):
    caplog.set_level(logging.INFO, logger="reelgate")
    settings = Settings(providers={"fal": ProviderConfig(base_url="http://127.0.0.1:9"),
                                   "apiframe": ProviderConfig(enabled=False),
                                   "railwail": ProviderConfig(enabled=False)})
    async with Gateway.from_settings(settings, env={"FAL_KEY": VENDOR_KEY}) as gw:
        job = await gw.generate(VideoRequest(prompt=PROMPT))
    assert job.status is JobStatus.FAILED
    calls = [fields(r) for r in caplog.records if r.name == "reelgate.vendor"]
    assert calls and all(c["outcome"] == "Unavailable" and c["job"] == job.id for c in calls)
    failed = [fields(r) for r in caplog.records if r.name == "reelgate.job"][-1]
    assert failed["to"] == "failed" and failed["error"] == "Unavailable"


async def test_no_log_line_holds_the_vendor_key_or_the_prompt(fal_gateway, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="reelgate")
    async with fal_gateway as gw:
        job = await gw.generate(VideoRequest(prompt=PROMPT, metadata={"note": "x"}))
    assert job.status is JobStatus.SUCCEEDED
    lines = [KeyValueFormatter().format(r) for r in caplog.records]
    assert len(lines) >= 5
    for line in lines:
        assert VENDOR_KEY not in line and PROMPT not in line and "lighthouse" not in line
        assert "\n" not in line


def test_the_formatter_writes_one_key_value_line_and_redacts_held_keys():
    Secret("held-key-31337")
    stream = io.StringIO()
    handler = configure(logging.INFO, stream)
    try:
        log = logging.getLogger("reelgate.test")
        log.info("job", extra={FIELDS_ATTR: {"job": "vid_1", "attempt": 2, "vendor": "fal", "note": 'a "b" c'}})
        try:
            raise ValueError("boom\nwith held-key-31337")
        except ValueError:
            log.exception("unexpected")
        log.debug("not shown at info")
    finally:
        logging.getLogger("reelgate").removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r'ts=\S+Z level=info logger=reelgate\.test event=job job=vid_1 attempt=2 vendor=fal '
                        r'note="a \\"b\\" c"', lines[0])
    assert "level=error" in lines[1] and 'error="ValueError: boom\\nwith ***"' in lines[1]
    assert "held-key-31337" not in stream.getvalue()


def test_the_flag_wins_over_the_environment_and_bad_values_name_their_source():
    env = {"REELGATE_LOG_LEVEL": "debug"}
    assert level_from(None, env) == logging.DEBUG
    assert level_from("error", env) == logging.ERROR
    assert level_from(None, {}) == logging.WARNING and level_from(None, {}, default="info") == logging.INFO
    assert level_from(" INFO ", {}) == logging.INFO
    with pytest.raises(InvalidRequest) as flag:
        level_from("loud", env)
    assert flag.value.field == "--log-level"
    with pytest.raises(InvalidRequest) as var:
        level_from(None, {"REELGATE_LOG_LEVEL": "verbose"})
    assert var.value.field == "REELGATE_LOG_LEVEL" and "debug, info, warning, error" in var.value.reason


def test_control_characters_and_line_breaks_are_escaped_never_written_raw():
    # a caller's text reaches some lines (the path of a request that failed, a vendor's
    # message): a NUL, an ESC sequence or a Unicode line break must not reach the log raw
    stream = io.StringIO()
    handler = configure(logging.INFO, stream)
    hostile = "/v1/videos/\x00\x1b[2J\x07\x7f\x85\u2028x\u2029y\tz"
    try:
        logging.getLogger("reelgate.test").info("GET %s failed", hostile, extra={FIELDS_ATTR: {"path": hostile}})
        logging.getLogger("reelgate.test").info("café", extra={FIELDS_ATTR: {"job": "vid_1"}})
    finally:
        logging.getLogger("reelgate").removeHandler(handler)
    text = stream.getvalue()
    assert len(text.splitlines()) == 2  # splitlines also breaks at \x85, \u2028, \u2029
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]", text), repr(text)
    escaped = r'"GET /v1/videos/\x00\x1b[2J\x07\x7f\x85\u2028x\u2029y\tz failed"'
    assert f"event={escaped}" in text
    assert 'event="café" job=vid_1' in text.splitlines()[1]
