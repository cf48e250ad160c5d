"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import values

from gateway.server.metrics import MULTIPROC_DIR_ENV


@pytest.fixture
def as_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[int], None]]:
    """Calling it with a pid makes the metrics built next write as that process (prometheus
    multi-process mode, in ``tmp_path``)."""
    monkeypatch.setenv(MULTIPROC_DIR_ENV, str(tmp_path))

    def become(pid: int) -> None:
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid))

    yield become
