"""Fixtures for the hostile-input suite: the service app on the sandbox driven through its
HTTP routes (``make_service``/``harness``, with handles on what a hostile request must not
reach: the emulators' counters, the store and the spend ledgers), the app with chosen
service settings (``make_app``), and ``reelgate serve`` as a real process whose log is kept
(``serve``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from bench.common import stop_process
from gateway.config import BudgetConfig, PollingConfig, Settings
from gateway.emulation.base import Timing
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.job import VideoJob
from gateway.keys import ApiKey, KeyStore
from gateway.plugins import discover
from gateway.server import create_app
from gateway.server.service import Service
from tests.conftest import keep_log
from tests.service.conftest import KEY_VARS, WEBHOOK_SECRET, free_port, wait_until_up


@dataclass
class InProcess:
    client: Any  # starlette TestClient
    auth: dict[str, str]
    home: Path

    @property
    def service(self) -> Any:
        return self.client.app.state.service


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make_app(timing=None, **service_settings)``: a context manager yielding the app on
    the sandbox (TestClient) with one caller key, built with those ``service:`` settings."""
    from starlette.testclient import TestClient

    from gateway.config import PollingConfig, ServiceConfig, Settings
    from gateway.emulation.base import Timing
    from gateway.emulation.sandbox import BackgroundServer, Sandbox
    from gateway.keys import KeyStore
    from gateway.plugins import discover
    from gateway.server import create_app
    from gateway.server.service import Service

    made = 0

    @contextmanager
    def make(timing: Timing | None = None, **service: Any) -> Iterator[InProcess]:
        nonlocal made
        made += 1
        home = tmp_path / f"home{made}"
        env = {"REELGATE_HOME": str(home), "REELGATE_WEBHOOK_SECRET": WEBHOOK_SECRET}
        settings = Settings(polling=PollingConfig(initial_s=0.05, max_s=0.2), service=ServiceConfig(**service))
        sandbox = Sandbox.from_providers(discover().providers, timing=timing or Timing(queue_s=0.1, run_s=0.3))
        with BackgroundServer(sandbox.app) as emulators:
            app = create_app(lambda: Service.start(settings, sandbox_url=emulators.url, env=env))
            _, key = KeyStore(home / "keys.db").create("tests")
            with TestClient(app, raise_server_exceptions=False) as client:
                yield InProcess(client, {"Authorization": f"Bearer {key}"}, home)

    yield make


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def reelgate_serve(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Server]]:
    """``reelgate_serve(**service_settings)``: ``reelgate serve --sandbox`` as its own process, its
    stderr (the server log) kept in a file, whose last lines a failing test's report shows."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**service: Any) -> Server:
        env = {k: v for k, v in os.environ.items() if k not in KEY_VARS and k != "REELGATE_CONFIG"}
        env["REELGATE_HOME"] = str(tmp_path / "home")
        config = tmp_path / "reelgate.yaml"
        config.write_text(yaml.safe_dump({"service": service}))
        made = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", "--name", "tests"],
                              capture_output=True, text=True, env=env, timeout=60, check=True)
        port = free_port()
        log = tmp_path / "server.log"
        keep_log(request.node, log)
        with log.open("wb") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--sandbox", "--config",
                                     str(config), "--port", str(port)], env=env, stdout=sink, stderr=sink)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, proc, log=log)
        return Server(url, proc, log, made.stdout.strip())

    yield start
    for proc in procs:
        stop_process(proc)


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
