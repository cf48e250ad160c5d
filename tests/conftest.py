from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.emulation.sandbox import BackgroundServer

# The toy third-party plugin is importable directly for core tests; test_plugins.py
# also installs it for real to prove the entry-point path.
TOY_PLUGIN_DIR = Path(__file__).parent / "plugins" / "toyvendor"
sys.path.insert(0, str(TOY_PLUGIN_DIR))


@pytest.fixture
def serve() -> Iterator:
    """``serve(asgi_app) -> base_url``: the app on a loopback port for this test."""
    servers: list[BackgroundServer] = []

    def start(app: object) -> str:
        server = BackgroundServer(app).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()
