"""Switching an app from one vendor to another is one line of configuration, no code."""

from __future__ import annotations

import yaml

from gateway.api import Gateway
from gateway.config import PollingConfig, load_settings
from gateway.emulation.base import Timing
from gateway.emulation.sandbox import BackgroundServer, Sandbox
from gateway.plugins import discover
from gateway.request import VideoRequest

APP_CODE_REQUEST = VideoRequest(prompt="a lighthouse at dusk", aspect_ratio="16:9")


async def make_video(config_path, sandbox_url):
    """The app's code: identical for every vendor."""
    settings = load_settings(config_path).model_copy(update={"polling": PollingConfig(initial_s=0.05, max_s=0.1)})
    async with Gateway.from_settings(settings, sandbox_url=sandbox_url) as gw:
        return await gw.generate(APP_CODE_REQUEST)


async def test_one_config_line_moves_the_app_to_another_vendor(tmp_path):
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0, run_s=0.2))
    base = {"default_route": "priority", "fallback_order": ["fal", "apiframe", "railwail"]}
    before, after = tmp_path / "before.yaml", tmp_path / "after.yaml"
    before.write_text(yaml.safe_dump(base))
    after.write_text(yaml.safe_dump({**base, "fallback_order": ["apiframe", "fal", "railwail"]}))
    with BackgroundServer(sandbox.app) as server:
        first = await make_video(before, server.url)
        second = await make_video(after, server.url)
    assert (first.provider, second.provider) == ("fal", "apiframe")
    assert first.status.value == second.status.value == "succeeded"
    stats = sandbox.stats()
    assert stats["fal"]["accepted_submissions"] == 1 and stats["apiframe"]["accepted_submissions"] == 1


async def test_disabling_a_provider_in_config_removes_it(tmp_path):
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0, run_s=0.2))
    path = tmp_path / "reelgate.yaml"
    path.write_text("providers:\n  fal:\n    enabled: false\n")
    with BackgroundServer(sandbox.app) as server:
        job = await make_video(path, server.url)
    assert job.provider != "fal" and sandbox.stats()["fal"]["accepted_submissions"] == 0
