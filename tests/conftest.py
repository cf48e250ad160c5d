from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.emulation.sandbox import BackgroundServer

#: the logs of the processes a test started (fixtures add theirs with ``keep_log``): a
#: failing test's report ends with each one's last lines, so a server that died or never
#: came up says why in the CI output itself (the files go with the test's tmp_path)
SERVER_LOGS = pytest.StashKey[list[Path]]()
LOG_TAIL_LINES = 40

# The toy third-party plugin is importable directly for core tests; test_plugins.py
# also installs it for real to prove the entry-point path.
TOY_PLUGIN_DIR = Path(__file__).parent / "plugins" / "toyvendor"
sys.path.insert(0, str(TOY_PLUGIN_DIR))


def keep_log(node: pytest.Item, path: Path) -> None:
    """Show ``path``'s last lines in ``node``'s report if the test fails."""
    logs = node.stash.setdefault(SERVER_LOGS, [])
    if path not in logs:
        logs.append(path)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({path} cannot be read: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if report.failed:
        for path in item.stash.get(SERVER_LOGS, []):
            report.sections.append((f"last lines of {path.name} ({path})", log_tail(path)))
    return report


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
