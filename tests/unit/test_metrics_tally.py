"""The hot path's counts are tallied in plain numbers and flushed to prometheus-client's
values in one go (``gateway.server.metrics.Tally`` / ``Observed``): what a scrape reads
after a flush is what counting each one at once gave, bucket by bucket; with several
workers a tally reaches the shared files only when flushed (by the worker's refresh, its
scrape, or its clean close)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.routing.health import InProcessHealth
from gateway.server.metrics import MULTIPROC_DIR_ENV, Metrics, Observed, Tally

#: every bucket bound, values exactly on them, between them, past the last (+Inf), 0 and below
AMOUNTS = [0.0, -1.0, 0.005, 0.0051, 0.01, 0.3, 1, 2.5, 2.6, 30, 31, 1e9, 0.049, 0.05, 0.051]


def samples(m: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(m.render().decode()) for s in family.samples
            if s.name == name}


def latency(m: Metrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    return {part: samples(m, f"reelgate_vendor_request_seconds_{part}") for part in ("bucket", "sum", "count")}


@pytest.fixture
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)


def test_tallied_observations_read_as_observed_one_by_one(one_process: None) -> None:
    tallied, direct = Metrics(), Metrics()
    assert isinstance(tallied._vendor_latency_of("railwail", "submit", "200"), Observed)
    for amount in AMOUNTS:
        tallied.observe_vendor_call("railwail", "submit", "200", amount)
        direct.vendor_latency.labels("railwail", "submit", "200").observe(amount)
    got, want = latency(tallied), latency(direct)
    assert got == want
    assert want["count"] == {(("operation", "submit"), ("outcome", "200"), ("provider", "railwail")): len(AMOUNTS)}
    # a second batch adds to the first, not over it
    for amount in AMOUNTS[:4]:
        tallied.observe_vendor_call("railwail", "submit", "200", amount)
        direct.vendor_latency.labels("railwail", "submit", "200").observe(amount)
    assert latency(tallied) == latency(direct)


def test_the_installed_histogram_children_can_be_tallied(one_process: None) -> None:
    # if prometheus-client changes a histogram child's layout, Children stops tallying
    # histograms (each observation counted at once): this says it happened
    child = Metrics().vendor_latency.labels("railwail", "submit", "200")
    assert Observed.usable(child)
    assert not Observed.usable(object())


def test_jobs_requests_and_cost_are_counted_after_a_flush(one_process: None) -> None:
    m = Metrics()
    m.jobs_submitted.inc()
    m.jobs_submitted.inc(2)
    m.requests_of("POST", "/v1/videos", "200").inc()
    m.requests_of("POST", "/v1/videos", "200").inc()
    assert isinstance(m.requests_of("POST", "/v1/videos", "200"), Tally)
    assert m.jobs_submitted.child._value.get() == 0  # tallied, not yet in the value
    assert samples(m, "reelgate_jobs_submitted_total") == {(): 3.0}
    assert samples(m, "reelgate_http_requests_total") == {
        (("method", "POST"), ("route", "/v1/videos"), ("status", "200")): 2.0}
    assert samples(m, "reelgate_jobs_submitted_total") == {(): 3.0}  # a flush moves each count once
    with pytest.raises(ValueError):
        m.jobs_submitted.inc(-1)


def posts(m: Metrics) -> float:
    return samples(m, "reelgate_http_requests_total").get(
        (("method", "POST"), ("route", "/v1/videos"), ("status", "200")), 0.0)


async def test_another_workers_tallies_reach_a_scrape_once_it_flushes(as_process) -> None:
    as_process(201)
    first = Metrics()
    first.requests_of("POST", "/v1/videos", "200").inc()
    as_process(202)
    second = Metrics()
    second.watch(InProcessHealth(), lambda: True, lambda: 0)
    for _ in range(4):
        second.requests_of("POST", "/v1/videos", "200").inc()
        second.observe_vendor_call("railwail", "submit", "200", 0.02)
    assert posts(first) == 1  # the first's scrape flushed its own; the second's are tallied
    second.refresh()  # what its refresh task does every GAUGE_REFRESH_S
    assert posts(first) == 5
    assert latency(first)["count"] == {(("operation", "submit"), ("outcome", "200"), ("provider", "railwail")): 4}
    second.requests_of("POST", "/v1/videos", "200").inc()
    await second.aclose()  # a clean stop leaves its counts in its file
    assert posts(first) == 6
    await first.aclose()
