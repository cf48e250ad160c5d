"""LiteLLM's SDK (``video_remix``, ``video_status``, ``video_content``) and the openai
package's ``videos.remix`` / ``videos.edit``, pointed at ``reelgate serve --sandbox``."""

from __future__ import annotations

import os
import time

import pytest
from openai import OpenAI

from gateway.emulation.render import probe

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _litellm():  # noqa: ANN202 - the module
    # litellm fetches a price table from GitHub at import unless told to use its bundled copy:
    # no test sends traffic off the machine
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    litellm.telemetry = False
    return litellm


def finished(litellm, video_id: str, common: dict[str, str]):  # noqa: ANN001, ANN201 - LiteLLM's module and object
    """LiteLLM's ``video_status`` of ``video_id``, polled until it is over (30 s at most)."""
    for _ in range(300):
        status = litellm.video_status(video_id=video_id, **common)
        if status.status in ("completed", "failed"):
            break
        time.sleep(0.1)
    return status


def test_litellm_video_remix_gets_a_finished_video(processes, tmp_path) -> None:
    litellm = _litellm()
    key = processes.create_key("litellm")
    url, _ = processes.start("serve", "--sandbox")
    client = OpenAI(base_url=f"{url}/v1", api_key=key)
    source = client.videos.poll(client.videos.create(model="ray-2-flash", prompt="a paper boat",
                                                     seconds="5", size="1280x720").id, poll_interval_ms=100)
    assert source.status == "completed"
    common = {"custom_llm_provider": "openai", "api_base": f"{url}/v1", "api_key": key}
    remix = litellm.video_remix(video_id=source.id, prompt="the boat in a storm", **common)
    assert remix.status in ("queued", "in_progress") and remix.id != source.id
    status = finished(litellm, remix.id, common)
    assert status.status == "completed"
    data = litellm.video_content(video_id=remix.id, **common)
    info = probe(data)
    assert info["codec"] == "h264" and abs(float(info["duration_s"]) - 5) < 0.2


def test_openai_sdk_remix_and_edit(processes) -> None:
    key = processes.create_key("sdk")
    url, _ = processes.start("serve", "--sandbox")
    client = OpenAI(base_url=f"{url}/v1", api_key=key)
    source = client.videos.poll(client.videos.create(model="ray-2-flash", prompt="a fox", seconds="5",
                                                     size="1280x720").id, poll_interval_ms=100)
    remixed = client.videos.remix(source.id, prompt="a fox in snow")
    assert remixed.remixed_from_video_id == source.id
    assert client.videos.poll(remixed.id, poll_interval_ms=100).status == "completed"
    # openai 3.57's edit() only sends ``video`` as a file (a {"id"} object trips its
    # extract_files assertion); the {"id"} form is covered over JSON in test_edit_routes.py
    clip = client.videos.download_content(source.id).content
    edited = client.videos.edit(prompt="at night", video=("clip.mp4", clip, "video/mp4"))
    done = client.videos.poll(edited.id, poll_interval_ms=100)
    assert done.status == "completed"
    assert probe(client.videos.download_content(done.id).content)["codec"] == "h264"


def test_litellm_video_generation_status_content_and_list(processes) -> None:
    # LiteLLM's own create path (``video_generation``) against ``reelgate serve``, as a LiteLLM
    # user points it at any OpenAI-compatible base URL; its ids wrap ours (base64)
    litellm = _litellm()
    key = processes.create_key("litellm-generation")
    url, _ = processes.start("serve", "--sandbox")
    common = {"custom_llm_provider": "openai", "api_base": f"{url}/v1", "api_key": key}
    made = litellm.video_generation(model="ray-2-flash", prompt="a lighthouse at dusk", seconds="5",
                                    size="1280x720", **common)
    assert made.status in ("queued", "in_progress") and made.model == "ray-2-flash"
    status = finished(litellm, made.id, common)
    assert status.status == "completed"
    info = probe(litellm.video_content(video_id=made.id, **common))
    assert info["codec"] == "h264" and (info["width"], info["height"]) == (1280, 720)
    listed = litellm.video_list(**common)
    assert [v["status"] for v in listed["data"]] == ["completed"]
    with pytest.raises(litellm.BadRequestError, match="model: 'sora-2' is not offered"):
        litellm.video_generation(model="sora-2", prompt="x", **common)
