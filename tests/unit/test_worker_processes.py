"""``reelgate serve --workers N``: what several workers refuse to start with, and how a
worker finds its index (tests/service/test_workers.py runs them)."""

from __future__ import annotations

import os
import pickle
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.budget import SpendLedger
from gateway.cli import app
from gateway.config import Settings
from gateway.errors import BudgetExceeded, ConfigError
from gateway.keys import ApiKey
from gateway.server.service import Service
from gateway.worker_processes import WorkerSpec, check_workers, take_slot, worker_id, worker_settings


def settings(**service: object) -> dict[str, object]:
    return {"service": {"workers": 2, **service}}


def test_one_worker_is_todays_service_whatever_is_configured() -> None:
    one = Settings.model_validate({"budgets": {"per_day_usd": 5}, "providers": {"fal": {"concurrency_limit": 2}},
                                   "service": {"leases": False}})
    assert one.service.workers == 1
    check_workers(one, env={})  # nothing refused


@pytest.mark.parametrize("config, named", [
    ({"budgets": {"per_day_usd": 50}, **settings()}, "budgets.per_day_usd"),
    ({"providers": {"fal": {"concurrency_limit": 4}}, **settings()}, "providers.fal.concurrency_limit"),
])
def test_a_gateway_wide_limit_without_redis_is_refused_naming_the_setting(config: dict[str, object],
                                                                          named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_workers(Settings.model_validate(config), env={})
    message = caught.value.message
    assert message.startswith(named) and "service.workers 2" in message and "redis_url" in message
    assert "2 times" in message


@pytest.mark.parametrize("where", ["file", "env"])
def test_with_redis_the_limits_are_shared_and_allowed(where: str) -> None:
    config: dict[str, object] = {"budgets": {"per_day_usd": 50}, "providers": {"fal": {"concurrency_limit": 4}},
                                 **settings()}
    env = {}
    if where == "file":
        config["redis_url"] = "redis://127.0.0.1:6379/0"
    else:
        env["REELGATE_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    check_workers(Settings.model_validate(config), env=env)


def test_workers_without_leases_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"service.workers is 2 but service.leases is false"):
        check_workers(Settings.model_validate(settings(leases=False)), env={})


def test_a_worker_leases_even_on_sqlite() -> None:
    base = Settings.model_validate(settings())
    assert base.service.leases is None  # the default: off for SQLite
    assert worker_settings(base).service.leases is True
    assert worker_settings(base).service.workers == 2


def test_workers_out_of_range_are_a_config_error() -> None:
    for bad in (0, 65):
        with pytest.raises(ValueError, match="workers"):
            Settings.model_validate(settings(workers=bad))


def test_the_cli_refuses_before_binding_and_names_the_setting(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("REELGATE_REDIS_URL", raising=False)
    config = tmp_path / "reelgate.yaml"
    config.write_text("budgets:\n  per_day_usd: 20\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(config), "--workers", "3", "--port", "1"])
    assert result.exit_code == 2
    assert "budgets.per_day_usd with service.workers 3" in result.output
    config.write_text("service:\n  workers: 2\n  leases: false\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(config), "--port", "1"])
    assert result.exit_code == 2 and "service.leases is false" in result.output


def test_a_worker_takes_the_lowest_free_index_and_its_successor_the_same(tmp_path: Path) -> None:
    first, held_first = take_slot(tmp_path, 2)
    second, held_second = take_slot(tmp_path, 2)
    assert (first, second) == (0, 1)
    with pytest.raises(RuntimeError, match="no free worker index of 2"):
        take_slot(tmp_path, 2, wait_s=0)
    os.close(held_first)  # worker 0 died: the kernel let its lock go
    again, held_again = take_slot(tmp_path, 2, wait_s=0)
    assert again == 0 and worker_id("host-1-ab", again) == "host-1-ab-w0"
    os.close(held_second)
    os.close(held_again)


def test_the_spec_pickles_for_the_worker_processes(tmp_path: Path) -> None:
    spec = WorkerSpec(worker_settings(Settings.model_validate(settings())), "base", tmp_path, 20, "http://x")
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert spec.workers == 2


@pytest.mark.parametrize("workers, limit", [(1, Decimal("10")), (2, Decimal("5")), (4, Decimal("2.5"))])
async def test_a_keys_daily_budget_is_split_over_the_workers_without_redis(tmp_path: Path, workers: int,
                                                                           limit: Decimal) -> None:
    """Keys are made while the service runs, so a key's budget cannot be refused at start as
    budgets.per_day_usd is: each of N workers holds 1/N of it, so the key never spends more."""
    config = Settings.model_validate({"service": {"workers": workers}})
    service = await Service.start(config, sandbox_url="http://127.0.0.1:9", env={"REELGATE_HOME": str(tmp_path)})
    try:
        ledger = service.key_ledger(ApiKey("k1", "app", 0.0, budget_usd_per_day=10.0))
        assert isinstance(ledger, SpendLedger) and ledger.limit == limit
        with pytest.raises(BudgetExceeded):
            ledger.reserve("job-1", limit + Decimal("0.01"))
    finally:
        await service.stop()
