"""Sandbox fault options are validated: an option a fault does not use is an error, never ignored."""

from __future__ import annotations

import pytest

from gateway.emulation.faults import Fault, parse_fault


@pytest.mark.parametrize(("text", "fault", "options", "times"), [
    ("outage", Fault.OUTAGE, {}, None),
    ("slow:delay=0.5", Fault.SLOW, {"delay": 0.5}, None),
    ("rate-limit:retry_after=2,times=3", Fault.RATE_LIMIT, {"retry_after": 2.0}, 3),
    ("flaky:rate=1,times=2", Fault.FLAKY, {"rate": 1.0}, 2),
    ("flaky:rate=0", Fault.FLAKY, {"rate": 0.0}, None),
    ("drop-after-accept:times=1", Fault.DROP_AFTER_ACCEPT, {}, 1),
    ("fail-late:times=2", Fault.FAIL_LATE, {}, 2),
    ("content-policy:times=1", Fault.CONTENT_POLICY, {}, 1),
])
def test_valid_faults_parse(text, fault, options, times):
    spec = parse_fault(text)
    assert (spec.fault, spec.options, spec.times) == (fault, options, times)
    assert parse_fault(spec.describe()) == spec  # what stats report reads back the same


@pytest.mark.parametrize(("text", "reason"), [
    ("outage:times=2", "fault outage takes no times"),
    ("slow:times=1", "fault slow takes no times"),
    ("slow:delay=2,color=1", "fault slow has no option 'color'; it takes delay"),
    ("outage:delay=1", "fault outage has no option 'delay'; it takes no options"),
    ("fail-late:rate=0.5", "fault fail-late has no option 'rate'; it takes times"),
    ("flaky:rate=1.5", "rate=1.5 must be between 0 and 1"),
    ("flaky:rate=-0.1", "rate=-0.1 must be between 0 and 1"),
    ("flaky:rate=nan", "must be a finite number"),
    ("slow:delay=inf", "must be a finite number"),
    ("rate-limit:retry_after=-1", "retry_after=-1 must be between 0 and 3600"),
    ("rate-limit:times=0", "times='0' must be a whole number of at least 1"),
    ("rate-limit:times=1.5", "times='1.5' must be a whole number of at least 1"),
    ("rate-limit:times=x", "must be a number"),
    ("rate-limit:times", "must look like key=value"),
    ("meteor", "unknown fault 'meteor'"),
])
def test_invalid_faults_say_why(text, reason):
    with pytest.raises(ValueError) as refused:
        parse_fault(text)
    assert reason in str(refused.value)
