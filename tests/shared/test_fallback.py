"""Redis going away: the gateway keeps serving on local state, says so (/readyz, a log
line, a metric) and rejoins when Redis is back."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.api import Gateway
from gateway.config import BudgetConfig, PollingConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.errors import ConfigError
from gateway.job import JobStatus
from gateway.keys import KeyStore
from gateway.plugins import discover
from gateway.request import VideoRequest
from gateway.server import create_app
from gateway.server.service import Service
from gateway.shared import LocalLimiter, open_shared
from gateway.shared.redis_budget import RedisSpendLedger
from gateway.shared.redis_concurrency import RedisLimiter
from gateway.shared.redis_health import RedisHealth
from tests.shared.conftest import TcpProxy
from tests.support import free_port

FAST = PollingConfig(initial_s=0.05, max_s=0.2)


@pytest.fixture
def emulators() -> Iterator[str]:
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.05, run_s=0.1))
    with BackgroundServer(sandbox.app) as server:
        yield server.url


def test_redis_url_picks_the_shared_implementations(prefix: str) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6379/0", budgets=BudgetConfig(per_day_usd=5))
    shared = open_shared(settings, {"REELGATE_REDIS_PREFIX": prefix})
    assert isinstance(shared.health, RedisHealth) and isinstance(shared.limiter, RedisLimiter)
    assert isinstance(shared.ledger("gateway", 5.0), RedisSpendLedger)
    assert shared.state is not None and shared.state.prefix == prefix
    from_env = open_shared(Settings(), {"REELGATE_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert from_env.state is not None
    local = open_shared(Settings(), {})
    assert local.state is None and isinstance(local.limiter, LocalLimiter)
    assert local.status() == {"backend": "in-process", "state": "local"}


def test_a_malformed_redis_url_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    from gateway.config import load_settings

    config = tmp_path / "reelgate.yaml"
    config.write_text("redis_url: localhost:6379\n")
    with pytest.raises(ConfigError, match="redis_url"):
        load_settings(config)


async def test_a_gateway_whose_redis_is_not_there_serves_on_local_state(emulators: str) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", polling=FAST,
                        budgets=BudgetConfig(per_day_usd=1.0))
    async with Gateway.from_settings(settings, sandbox_url=emulators, env={}) as gw:
        job = await gw.generate(VideoRequest(prompt="a fox"))
        assert job.status is JobStatus.SUCCEEDED
        assert gw.shared.status()["state"] == "local fallback"
        assert gw.ledger.spent_today() == job.cost_usd  # the local ledger counted it


def metric(client: TestClient) -> str:
    lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith("reelgate_shared_state_up")]
    return lines[0].split()[-1]


def wait_for(client: TestClient, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get("/readyz").json()
        if body["shared_state"]["state"] == state:
            return body
        time.sleep(0.02)
    raise AssertionError(f"shared state never became {state!r}: {body}")


def test_the_service_reports_redis_away_and_back(
    tmp_path: Path, emulators: str, proxy: TcpProxy, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    env = {"REELGATE_HOME": str(home), "REELGATE_REDIS_URL": proxy.url, "REELGATE_REDIS_PREFIX": prefix}
    app = create_app(lambda: Service.start(Settings(polling=FAST), sandbox_url=emulators, env=env))
    home.mkdir(parents=True)
    _, key = KeyStore(home / "keys.db").create("tests")
    auth = {"Authorization": f"Bearer {key}"}
    with caplog.at_level(logging.WARNING, "reelgate.shared"), TestClient(app) as client:
        ready = wait_for(client, "shared")
        assert ready["status"] == "ready" and ready["shared_state"]["url"] == proxy.url
        assert metric(client) == "1.0"
        proxy.stop()
        away = wait_for(client, "local fallback")
        assert away["status"] == "ready"  # still serving, on local state
        assert metric(client) == "0.0"
        created = client.post("/v1/videos", headers=auth, json={"prompt": "a fox"})
        assert created.status_code == 200, created.text
        proxy.start()
        wait_for(client, "shared")
        assert metric(client) == "1.0"
    messages = [r.getMessage() for r in caplog.records]
    assert any("unreachable" in m and "serving on local state" in m for m in messages)
    assert any("answers again" in m for m in messages)
