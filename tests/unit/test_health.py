import json
from concurrent.futures import ThreadPoolExecutor

from gateway.routing.circuit import CircuitSettings
from gateway.routing.health import Health, InProcessHealth
from tests.support import FakeClock

RAY = "fal-ai/luma-dream-machine/ray-2"
FLASH = "fal-ai/luma-dream-machine/ray-2-flash"
KEY = "ray-2/720p/5s"


def health() -> tuple[InProcessHealth, FakeClock]:
    clock = FakeClock()
    return InProcessHealth(clock=clock.now, circuit=CircuitSettings(consecutive_failures=3)), clock


def test_in_process_health_is_a_health():
    h: Health = InProcessHealth()
    assert h.allow("fal", RAY) == (True, "circuit closed for fal")


def test_a_broken_model_is_skipped_alone_when_traffic_is_mixed():
    h, _ = health()
    for _ in range(3):
        h.record_failure("fal", RAY)
        h.record_success("fal", FLASH)
    allowed, reason = h.allow("fal", RAY)
    assert not allowed and reason.startswith(f"circuit open for fal/{RAY} since 0 s (3 consecutive failures)")
    assert h.allow("fal", FLASH)[0]


def test_a_provider_down_as_a_whole_is_skipped_for_every_model():
    h, _ = health()
    for model in (RAY, FLASH, RAY):
        h.record_failure("fal", model)
    allowed, reason = h.allow("fal", FLASH)
    assert not allowed and reason.startswith("circuit open for fal since")
    assert h.allow("apiframe", "ray-2")[0]


def test_allow_is_for_planning_and_acquire_takes_the_one_probe():
    h, clock = health()
    for _ in range(3):
        h.record_failure("fal", RAY)
    clock.t += 30
    assert h.allow("fal", RAY)[0] and h.allow("fal", RAY)[0]  # planning twice takes nothing
    allowed, reason = h.acquire("fal", RAY)
    assert allowed and reason == "circuit half-open for fal (3 consecutive failures); this call is the probe"
    assert not h.acquire("fal", RAY)[0]
    assert not h.allow("fal", FLASH)[0]  # the provider's probe is taken, whatever the model
    h.record_success("fal", RAY)
    assert h.acquire("fal", RAY) == (True, "circuit closed for fal")
    assert h.acquire("fal", FLASH)[0]


def test_a_failed_probe_reopens_both_levels():
    h, clock = health()
    for _ in range(3):
        h.record_failure("fal", RAY)
    clock.t += 30
    assert h.acquire("fal", RAY)[0]
    h.record_failure("fal", RAY)
    allowed, reason = h.allow("fal", RAY)
    assert not allowed and reason.endswith("(3 consecutive failures, then 1 failed probe); next probe in 60 s")


def test_latency_and_load_go_through_to_the_estimator():
    h, _ = health()
    assert h.expected_s("fal", KEY, prior_s=60) == 60
    h.observe_duration("fal", KEY, 80, prior_s=60)
    h.started("fal")
    h.started("fal")
    assert h.expected_s("fal", KEY, 60) == 80
    assert h.expected_s("fal", KEY, 60, limit=2) == 80 * 1.5
    assert h.can_meet("fal", KEY, 60, deadline_s=100) and not h.can_meet("fal", KEY, 60, 100, limit=2)
    h.finished("fal")
    assert h.expected_s("fal", KEY, 60, limit=2) == 80


def test_snapshot_is_json_ready_and_has_one_section_per_concern():
    h, clock = health()
    for _ in range(3):
        h.record_failure("fal", RAY)
    h.record_success("apiframe", "ray-2")
    h.observe_duration("apiframe", KEY, 45)
    h.started("apiframe")
    clock.t += 10
    snap = h.snapshot()
    assert set(snap) == {"circuits", "latency", "in_flight"}
    assert list(snap["circuits"]) == ["apiframe", "apiframe/ray-2", "fal", f"fal/{RAY}"]
    assert snap["circuits"]["fal"]["state"] == "open" and snap["circuits"]["fal"]["next_probe_in_s"] == 20
    assert snap["latency"] == {"apiframe": {KEY: {"expected_s": 45.0, "p90_s": 56.2, "observations": 1}}}
    assert snap["in_flight"] == {"apiframe": 1}
    assert json.loads(json.dumps(snap)) == snap


def test_only_one_of_many_threads_gets_the_probe():
    h, clock = health()
    for _ in range(3):
        h.record_failure("fal", RAY)
    clock.t += 30
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda _: h.acquire("fal", RAY)[0], range(64)))
    assert answers.count(True) == 1


def test_probe_wait_is_the_longer_of_the_provider_and_model_cooldowns():
    from gateway.routing.health import probe_wait_s

    h, clock = health()
    assert probe_wait_s(h, "fal", RAY) == 0.0
    for _ in range(3):
        h.record_failure("fal", RAY)
    clock.t += 12
    assert probe_wait_s(h, "fal", RAY) == 18.0  # default cooldown 30 s, opened 12 s ago
    clock.t += 18
    assert probe_wait_s(h, "fal", RAY) == 0.0  # half-open: a probe may go now
