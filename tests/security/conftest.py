"""The service app on the sandbox, driven through its HTTP routes, with handles on what a
hostile request must not reach: the emulators' counters, the store and the spend ledgers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.config import BudgetConfig, PollingConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.job import VideoJob
from gateway.keys import ApiKey, KeyStore
from gateway.plugins import discover
from gateway.server import create_app
from gateway.server.service import Service
from tests.service.conftest import WEBHOOK_SECRET


@dataclass
class Harness:
    client: TestClient
    auth: dict[str, str]
    key: ApiKey
    sandbox: Sandbox
    home: Path
    app: Any

    def restart(self) -> None:
        """Stop the service (as a deploy does: jobs in flight stay unfinished in the store)
        and start a new one on the same home, store and keys."""
        self.client.__exit__(None, None, None)
        self.client = TestClient(self.app, raise_server_exceptions=False)
        self.client.__enter__()

    @property
    def service(self) -> Service:
        service: Service = self.client.app.state.service  # type: ignore[attr-defined]
        return service

    def submissions(self) -> int:
        """Every submit any emulator saw, accepted or refused."""
        return sum(emu.accepted_submissions + emu.rejected_submissions for emu in self.sandbox.emulators.values())

    def wait(self, job_id: str) -> VideoJob:
        """The job once its task has ended (in the app's own event loop)."""
        assert self.client.portal is not None
        return self.client.portal.call(self.service.gateway.wait, job_id)

    def post(self, path: str, **kwargs: Any) -> Any:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        return self.client.post(path, headers=headers, **kwargs)

    def jobs(self) -> list[dict[str, Any]]:
        response = self.client.get("/v1/jobs", headers=self.auth, params={"limit": 100})
        assert response.status_code == 200, response.text
        return list(response.json()["data"])

    def reserved(self) -> tuple[Decimal, Decimal]:
        """What the gateway's ledger and this key's ledger hold for unfinished jobs."""
        ledger = self.service.key_ledger(self.key)
        key_side = sum(ledger.reserved().values(), Decimal(0)) if ledger is not None else Decimal(0)
        return sum(self.service.gateway.ledger.reserved().values(), Decimal(0)), key_side


MakeService = Callable[..., Harness]


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[MakeService]:
    """``make_service(per_day_usd=..., key_budget=..., run_s=...)``: a started service with one key."""
    with contextlib.ExitStack() as stack:
        def make(*, per_day_usd: float | None = None, key_budget: float | None = None,
                 run_s: float = 0.3) -> Harness:
            home = tmp_path / "home"
            env = {"REELGATE_HOME": str(home), "REELGATE_WEBHOOK_SECRET": WEBHOOK_SECRET}
            settings = Settings(polling=PollingConfig(initial_s=0.05, max_s=0.2),
                                budgets=BudgetConfig(per_day_usd=per_day_usd))
            sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.05, run_s=run_s))
            emulators = stack.enter_context(BackgroundServer(sandbox.app))
            app = create_app(lambda: Service.start(settings, sandbox_url=emulators.url, env=env))
            home.mkdir(parents=True)
            key, secret = KeyStore(home / "keys.db").create("tests", budget_usd_per_day=key_budget)
            client = TestClient(app, raise_server_exceptions=False)
            client.__enter__()
            harness = Harness(client, {"Authorization": f"Bearer {secret}"}, key, sandbox, home, app)
            stack.callback(lambda: harness.client.__exit__(None, None, None))
            return harness

        yield make


@pytest.fixture
def harness(make_service: MakeService) -> Harness:
    return make_service()
