"""The cyclic collector's policy of a served process: applied by ``serve_forever`` (one
``reelgate serve``, the sandbox) and by each worker of ``--workers N``."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.serving import YOUNG_COLLECTION_EVERY, serve_forever, tune_collector

POLICY = (YOUNG_COLLECTION_EVERY, 10, 10)


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """This test process's own collector settings, back as they were after the test."""
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_the_policy_freezes_what_lives_and_collects_young_objects_less_often(collector_restored: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    tune_collector()
    assert gc.get_threshold() == POLICY
    assert gc.get_freeze_count() > 1000  # modules, classes, functions: out of every walk
    assert POLICY[0] > 700


def test_serve_forever_applies_it_before_the_app_starts(collector_restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    seen: list[tuple[int, ...]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()  # lifespan.startup
        seen.append(gc.get_threshold())
        await send({"type": "lifespan.startup.failed", "message": "seen enough"})  # the server stops

    with pytest.raises(SystemExit):  # uvicorn's way out of a failed startup
        serve_forever(app, "127.0.0.1", 0, lifespan="on")
    assert seen == [POLICY]


def test_each_worker_applies_it(tmp_path: Path) -> None:
    """``worker_app`` (what uvicorn calls in each worker process) in a process of its own:
    it sets a death signal and takes a worker index, not for this test process to do."""
    script = """
import gc, json, sys
from pathlib import Path
from gateway.config import Settings
from gateway.worker_processes import WorkerSpec, worker_app, worker_settings
settings = worker_settings(Settings.model_validate({"service": {"workers": 2}}))
worker_app(WorkerSpec(settings, "base", Path(sys.argv[1]), 30))
print(json.dumps([gc.get_threshold(), gc.get_freeze_count()]))
"""
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         check=True, timeout=120, cwd=Path(__file__).parents[2])
    threshold, frozen = json.loads(out.stdout.splitlines()[-1])
    assert tuple(threshold) == POLICY and frozen > 1000
