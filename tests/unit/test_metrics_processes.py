"""``/metrics`` of one process (its own registry, as many services in one process as a
test builds) and of several workers (prometheus-client's multi-process mode: every
worker's values in one folder, read together at a scrape). Two workers are simulated in
this process by giving prometheus-client two process ids in turn."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.routing.health import InProcessHealth
from gateway.server.metrics import MULTIPROC_DIR_ENV, Metrics
from gateway.worker_processes import forget_dead_workers


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def circuits(got: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> list[float]:
    return [v for (name, _), v in got.items() if name == "reelgate_circuit_open"]


def posts(text: bytes) -> float:
    return samples(text)[("reelgate_http_requests_total",
                          (("method", "POST"), ("route", "/v1/videos"), ("status", "200")))]


def test_one_process_renders_its_own_registry_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_ENV, raising=False)
    one, other = Metrics(), Metrics()  # two services in one process, as tests build them
    assert one.multiproc_dir is None
    for _ in range(3):
        one.requests.labels("POST", "/v1/videos", "200").inc()
    other.requests.labels("POST", "/v1/videos", "200").inc()
    health = InProcessHealth()
    one.watch(health, lambda: True, lambda: 4)  # one process: no refresh task, the scrape sets them
    assert one._refreshing is None
    got = samples(one.render())
    assert posts(one.render()) == 3 and posts(other.render()) == 1
    assert got[("reelgate_shared_state_up", ())] == 1
    assert got[("reelgate_jobs_in_flight", ())] == 4


async def test_several_workers_read_as_one_host_and_a_dead_ones_gauges_leave(as_process, tmp_path: Path) -> None:
    # each worker's labelled values are made (a file per process) while it is that process
    as_process(101)
    first = Metrics()
    closed = InProcessHealth()
    closed.record_success("fal", "fal-ai/veo3")  # this worker's circuit: closed
    first.watch(closed, lambda: True, lambda: 3)
    first.refresh()
    for _ in range(3):
        first.requests.labels("POST", "/v1/videos", "200").inc()
    as_process(102)
    second = Metrics()
    health = InProcessHealth()
    for _ in range(20):  # this worker's circuit opens (no Redis: the other's stays closed)
        health.record_failure("fal", "fal-ai/veo3")
    second.watch(health, lambda: False, lambda: 5)
    second.refresh()
    second.requests.labels("POST", "/v1/videos", "200").inc(2)
    assert first.multiproc_dir == second.multiproc_dir == str(tmp_path)
    assert first._refreshing is not None and second._refreshing is not None  # each writes its gauges

    both = [samples(m.render()) for m in (first, second)]
    assert both[0] == both[1]  # whichever worker answers the scrape
    host = both[0]
    assert posts(first.render()) == 5
    assert host[("reelgate_jobs_in_flight", ())] == 3 + 5  # livesum: the host's jobs
    assert host[("reelgate_shared_state_up", ())] == 0  # livemin: not every worker shares state
    assert set(circuits(host)) == {1}  # livemax: open at one live worker

    forget_dead_workers(tmp_path, live={101})  # the supervisor saw worker 102 go
    after = samples(first.render())
    assert posts(first.render()) == 5  # its counts stay: counters never go down
    assert after[("reelgate_jobs_in_flight", ())] == 3  # its jobs are no longer in flight here
    assert after[("reelgate_shared_state_up", ())] == 1
    assert set(circuits(after)) == {0}
    await first.aclose()
    await second.aclose()
