"""The official ``openai`` package (its own HTTP stack, httpx2) against the railwail emulator:
proves the emulator speaks the OpenAI Videos shape as real clients send it (multipart
create, poll helper, binary content download)."""

from __future__ import annotations

import base64

import openai
import pytest

from gateway.emulation.base import Timing
from gateway.emulation.faults import Fault, FaultSpec
from gateway.emulation.render import probe
from providers.railwail import RailwailAdapter

pytestmark = [
    pytest.mark.integration,
    # Every client.videos.* method is wrapped in @deprecated (OpenAI is shutting the Sora
    # API down), so each call warns; the suite turns warnings into errors. Only these tests
    # use the SDK, so only they ignore DeprecationWarning.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

KEY = "rw_live_sdk_test_key"
FAST = Timing(queue_s=0.05, run_s=0.1)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def client_for(serve, *faults: FaultSpec):
    emulator = RailwailAdapter.emulator(faults=list(faults), timing=FAST, api_keys={KEY})
    return emulator, openai.OpenAI(base_url=serve(emulator), api_key=KEY, max_retries=0)


def test_railwail_sdk_create_poll_download(serve) -> None:
    emulator, client = client_for(serve)
    video = client.videos.create(model="luma-ray-flash-2", prompt="a lighthouse at dusk",
                                 seconds="5", size="720x1280")
    assert video.status == "queued" and video.object == "video" and video.seconds == "5"
    done = client.videos.poll(video.id, poll_interval_ms=50)
    assert done.status == "completed" and done.progress == 100 and done.completed_at is not None
    assert client.videos.retrieve(video.id).status == "completed"
    info = probe(client.videos.download_content(video.id).content)
    assert info["codec"] == "h264" and info["height"] > info["width"]
    assert info["duration_s"] == pytest.approx(5, abs=0.2)
    assert [v.id for v in client.videos.list()] == [video.id]
    assert client.videos.delete(video.id).deleted is True
    assert emulator.accepted_submissions == 1


def test_railwail_sdk_image_reference_upload(serve) -> None:
    # openai 3.57's create() only accepts a *file* as input_reference (an object such as
    # {"image_url": ...} trips its extract_files assertion), so the SDK path is an upload;
    # the object form is covered over JSON in test_railwail_emulator.py.
    emulator, client = client_for(serve)
    video = client.videos.create(model="luma-ray-flash-2", prompt="p", seconds="9", size="1280x720",
                                 input_reference=("first.png", PNG, "image/png"))
    assert emulator.jobs[video.id].input["input_reference"] == f"upload ({len(PNG)} bytes)"
    done = client.videos.poll(video.id, poll_interval_ms=50)
    assert done.status == "completed" and done.seconds == "9" and done.size == "1280x720"


def test_railwail_sdk_failed_video(serve) -> None:
    _, client = client_for(serve, FaultSpec(Fault.FAIL_LATE))
    video = client.videos.create(model="luma-ray-flash-2", prompt="p", seconds="5", size="720x1280")
    failed = client.videos.poll(video.id, poll_interval_ms=50)
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "internal_error"
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)


def test_railwail_sdk_sees_errors_in_the_openai_envelope(serve) -> None:
    _, client = client_for(serve)
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.create(model="luma-ray-flash-2", prompt="p", seconds="4", size="720x1280")
    assert exc.value.code == "bad_request" and exc.value.param == "seconds"
    bad_key = openai.OpenAI(base_url=str(client.base_url), api_key="rw_live_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad_key.videos.retrieve("video_missing")
    assert auth.value.code == "invalid_api_key"
