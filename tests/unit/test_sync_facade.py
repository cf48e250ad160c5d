"""The blocking facade drives the same async core (no second copy of the logic)."""

from __future__ import annotations

from reelgate_toyvendor import ToyAdapter

from gateway.api import Gateway
from gateway.config import PollingConfig, Settings
from gateway.emulation.base import Timing
from gateway.job import JobStatus
from gateway.provider import ProviderSettings, Secret
from gateway.request import VideoRequest
from gateway.sync_facade import SyncGateway


def test_sync_gateway_quotes_generates_and_downloads(serve, tmp_path):
    emulator = ToyAdapter.emulator(timing=Timing(queue_s=0, run_s=0.1))
    url = serve(emulator)
    toy = ToyAdapter(ProviderSettings("toy", Secret("k"), "test", url, {"usd": "0.05"}))
    settings = Settings(polling=PollingConfig(initial_s=0.02, max_s=0.05))
    with SyncGateway(lambda: Gateway(settings, {"toy": toy})) as gw:
        assert gw.quote(VideoRequest(prompt="a")).chosen == "toy"
        job = gw.generate(VideoRequest(prompt="a fox", aspect_ratio="1:1"), output=tmp_path / "fox.mp4")
    assert job.status is JobStatus.SUCCEEDED and job.output.size_bytes == (tmp_path / "fox.mp4").stat().st_size
    assert emulator.accepted_submissions == 1
