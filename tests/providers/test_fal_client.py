"""The real ``fal_client`` package against the fal emulator: proof the emulator speaks what
fal's own client expects (vendors.md 1.9: QUEUE_URL_FORMAT is read at call time).

Rate limits are not tested through fal_client: it silently retries 429s ten times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import fal_client
import fal_client.client
import httpx
import pytest

from gateway.emulation.base import Timing
from gateway.emulation.faults import Fault, FaultSpec
from gateway.emulation.render import probe
from providers.fal.emulator import FalEmulator

pytestmark = pytest.mark.integration
APP = "fal-ai/luma-dream-machine/ray-2-flash"
FAST = Timing(queue_s=0.05, run_s=0.15)


def _drop_cached_client() -> None:
    # fal_client's module-level SyncClient caches its credentials and httpx client on
    # first use; each test starts and ends without them so keys never leak across tests.
    cached = fal_client.sync_client.__dict__
    cached.pop("_auth", None)
    client = cached.pop("_client", None)
    if client is not None:
        client.close()


@pytest.fixture
def fal_emulator(serve: Callable, monkeypatch: pytest.MonkeyPatch) -> Iterator[FalEmulator]:
    emu = FalEmulator(timing=FAST, api_keys={"client-key"})
    for name in ("FAL_KEY_ID", "FAL_KEY_SECRET", "FAL_FORCE_AUTH_BY_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FAL_KEY", "client-key")
    monkeypatch.setattr(fal_client.client, "QUEUE_URL_FORMAT", serve(emu) + "/")
    _drop_cached_client()
    yield emu
    _drop_cached_client()


def wait_completed(handle: fal_client.SyncRequestHandle) -> fal_client.Completed:
    seen = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = handle.status(with_logs=True)
        seen.add(type(status))
        if isinstance(status, fal_client.Completed):
            return status
        time.sleep(0.02)
    raise AssertionError(f"not completed; saw {seen}")


def test_submit_status_get(fal_emulator: FalEmulator) -> None:
    handle = fal_client.submit(APP, {"prompt": "a fox", "aspect_ratio": "9:16", "duration": "5s"})
    first = handle.status(with_logs=True)
    assert isinstance(first, (fal_client.Queued, fal_client.InProgress, fal_client.Completed))
    done = wait_completed(handle)
    assert done.error is None and done.metrics["inference_time"] == pytest.approx(FAST.run_s)
    output = handle.get()
    video = httpx.get(output["video"]["url"])
    info = probe(video.content)
    assert info["codec"] == "h264" and info["height"] > info["width"]
    assert fal_emulator.accepted_submissions == 1


def test_status_and_result_by_request_id(fal_emulator: FalEmulator) -> None:
    handle = fal_client.submit(APP + "/image-to-video", {"prompt": "x", "image_url": "https://i.example/a.png"})
    wait_completed(handle)
    # by id, fal_client rebuilds owner/app URLs from QUEUE_URL_FORMAT (the sub-path is dropped)
    status = fal_client.status(APP + "/image-to-video", handle.request_id, with_logs=False)
    assert isinstance(status, fal_client.Completed) and status.logs is None
    assert fal_client.result(APP, handle.request_id)["video"]["url"].endswith(f"/media/{handle.request_id}.mp4")


def test_cancel(fal_emulator: FalEmulator) -> None:
    fal_emulator.timing = Timing(queue_s=30, run_s=1)
    handle = fal_client.submit(APP, {"prompt": "x"})
    assert isinstance(handle.status(), fal_client.Queued)
    handle.cancel()
    status = handle.status()
    assert isinstance(status, fal_client.Completed) and status.error_type == "client_cancelled"
    with pytest.raises(fal_client.FalClientHTTPError) as exc:
        handle.get()
    assert exc.value.status_code == 499
    with pytest.raises(fal_client.FalClientHTTPError) as again:
        fal_client.cancel(APP, handle.request_id)
    assert again.value.status_code == 400


def test_fail_late_and_content_policy(fal_emulator: FalEmulator) -> None:
    fal_emulator.faults.set([FaultSpec(Fault.FAIL_LATE, times=1)])
    failed = fal_client.submit(APP, {"prompt": "x"})
    assert wait_completed(failed).error_type == "runner_server_error"
    with pytest.raises(fal_client.FalClientHTTPError) as late:
        failed.get()
    assert (late.value.status_code, late.value.error_type) == (500, "runner_server_error")

    fal_emulator.faults.set([FaultSpec(Fault.CONTENT_POLICY, times=1)])
    flagged = fal_client.submit(APP, {"prompt": "x"})
    assert wait_completed(flagged).error_type == "content_policy_violation"
    with pytest.raises(fal_client.FalClientHTTPError) as policy:
        flagged.get()
    assert policy.value.status_code == 422


def test_validation_and_auth_errors(fal_emulator: FalEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(fal_client.FalClientHTTPError) as invalid:
        fal_client.submit(APP, {"prompt": "x", "resolution": "4k"})
    assert invalid.value.status_code == 422
    _drop_cached_client()
    monkeypatch.setenv("FAL_KEY", "wrong-key")
    with pytest.raises(fal_client.FalClientHTTPError) as refused:
        fal_client.submit(APP, {"prompt": "x"})
    assert refused.value.status_code == 401
    assert fal_emulator.accepted_submissions == 0
