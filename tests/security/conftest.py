"""Fixtures for the hostile-input suite: the service in this process with chosen service
settings, and ``reelgate serve`` as a real process whose log is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

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
def make_service(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make_service(timing=None, **service_settings)``: a context manager yielding the app on
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
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(**service_settings)``: ``reelgate serve --sandbox`` as its own process, its
    stderr (the server log) kept in a file."""
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
        with log.open("wb") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--sandbox", "--config",
                                     str(config), "--port", str(port)], env=env, stdout=sink, stderr=sink)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, proc)
        return Server(url, proc, log, made.stdout.strip())

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
