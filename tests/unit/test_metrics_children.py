"""Labelled metric children kept by label values (``gateway.server.metrics.Children``):
the kept child is the metric's own, so what is counted through it is what a scrape reads,
and a client choosing label values (the HTTP method) cannot grow the kept set without bound."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.server import metrics as metrics_module
from gateway.server.metrics import MULTIPROC_DIR_ENV, Metrics


def requests_counted(m: Metrics) -> dict[tuple[str, str, str], float]:
    return {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
            for family in text_string_to_metric_families(m.render().decode()) for s in family.samples
            if s.name == "reelgate_http_requests_total"}


@pytest.fixture(autouse=True)
def one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)


def test_a_kept_child_is_the_metrics_own_and_counts_under_its_labels() -> None:
    m = Metrics()
    first = m.requests_of("GET", "/v1/videos/{video_id}", "200")
    assert m.requests_of("GET", "/v1/videos/{video_id}", "200") is first
    assert first.child is m.requests.labels("GET", "/v1/videos/{video_id}", "200")  # its tally's
    assert m.requests_of("GET", "/v1/videos/{video_id}", "404") is not first
    for _ in range(3):
        m.requests_of("GET", "/v1/videos/{video_id}", "200").inc()
    m.requests_of("GET", "/v1/videos/{video_id}", "404").inc()
    m.requests.labels("GET", "/v1/videos/{video_id}", "200").inc()  # the uncached way, same sample
    assert requests_counted(m) == {("GET", "/v1/videos/{video_id}", "200"): 4.0,
                                   ("GET", "/v1/videos/{video_id}", "404"): 1.0}


def test_two_services_keep_their_own_children() -> None:
    one, other = Metrics(), Metrics()
    one.requests_of("POST", "/v1/videos", "200").inc()
    assert requests_counted(other) == {}
    assert requests_counted(one) == {("POST", "/v1/videos", "200"): 1.0}


def test_past_the_cap_label_sets_are_still_counted_but_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "KEPT_CHILDREN", 2)
    m = Metrics()
    methods = ["GET", "POST", "PURGE", "BREW"]
    for method in methods:
        for _ in range(2):
            m.requests_of(method, "unmatched", "404").inc()
    assert requests_counted(m) == {(method, "unmatched", "404"): 2.0 for method in methods}
    assert len(m.requests_of._kept) == 2


def test_vendor_call_latency_goes_through_kept_children() -> None:
    m = Metrics()
    m.observe_vendor_call("railwail", "submit", "ok", 0.02)
    m.observe_vendor_call("railwail", "submit", "ok", 0.2)
    counts = {s.labels["operation"]: s.value
              for family in text_string_to_metric_families(m.render().decode()) for s in family.samples
              if s.name == "reelgate_vendor_request_seconds_count"}
    assert counts == {"submit": 2.0}
