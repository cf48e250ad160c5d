"""The official openai package, pointed at ``reelgate serve --sandbox``, makes a video."""

from __future__ import annotations

import time

import pytest
from openai import AuthenticationError, NotFoundError, OpenAI

from gateway.emulation.render import probe

# The Videos API methods of the openai package are marked deprecated (Sora's shutdown);
# the calls still work, and compatibility with them is the point of this test.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_openai_client_creates_polls_and_downloads_a_video(processes, tmp_path):
    key = processes.create_key("sdk")
    url, _ = processes.start("serve", "--sandbox")
    client = OpenAI(base_url=f"{url}/v1", api_key=key)
    video = client.videos.create(model="ray-2-flash", prompt="a paper boat on a river", seconds="5", size="720x1280")
    assert video.status in ("queued", "in_progress")
    done = client.videos.poll(video.id, poll_interval_ms=200)
    assert done.status == "completed" and done.progress == 100
    content = client.videos.download_content(done.id)
    target = tmp_path / "boat.mp4"
    content.write_to_file(target)
    info = probe(target.read_bytes())
    assert info["codec"] == "h264" and info["height"] > info["width"] and abs(info["duration_s"] - 5) < 0.2
    listed = client.videos.list()
    assert done.id in [v.id for v in listed.data]


def test_keys_are_required_and_jobs_are_private_to_their_key(processes):
    alice, bob = processes.create_key("alice"), processes.create_key("bob")
    url, _ = processes.start("serve", "--sandbox")
    mine = OpenAI(base_url=f"{url}/v1", api_key=alice)
    theirs = OpenAI(base_url=f"{url}/v1", api_key=bob)
    video = mine.videos.create(model="ray-2-flash", prompt="a fox", seconds="5", size="1280x720")
    with pytest.raises(NotFoundError):
        theirs.videos.retrieve(video.id)
    with pytest.raises(NotFoundError):
        theirs.videos.download_content(video.id)
    with pytest.raises(NotFoundError):
        theirs.videos.delete(video.id)
    assert video.id not in [v.id for v in theirs.videos.list().data]
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{url}/v1", api_key="rg_nope_nope").videos.list()
    assert mine.videos.retrieve(video.id).id == video.id
    revoked = processes.cli("keys", "revoke", "alice")
    assert revoked.returncode == 0
    # a verified key is trusted for service.key_cache_s (2 s): refused within that bound
    deadline = time.monotonic() + 2 + 3
    while True:
        try:
            mine.videos.retrieve(video.id)
        except AuthenticationError:
            break
        assert time.monotonic() < deadline, "a revoked key still works after key_cache_s"
        time.sleep(0.1)
