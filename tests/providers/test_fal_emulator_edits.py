"""fal modify and reframe against the fal emulator over loopback HTTP: the source is really
fetched and checked, and the output really has the requested shape (read back with PyAV)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.emulation.render import probe, render_mp4
from gateway.errors import ProviderRejected
from gateway.request import Resolution, VideoRequest
from tests.providers.test_fal_emulator import adapter, emulator, submit
from tests.support import drive_adapter

pytestmark = pytest.mark.integration


async def _source(client: httpx.AsyncClient, fal: object, **kw: object) -> str:
    """A finished 16:9 generation of the emulator: its video URL (on loopback)."""
    _, _, result = await drive_adapter(fal, VideoRequest(prompt="a fox", **kw), client)  # type: ignore[arg-type]
    assert result is not None
    return result.url


async def test_reframe_of_a_16_9_clip_to_9_16_is_taller_than_wide(serve: Callable) -> None:
    emu = emulator()
    fal = adapter(serve(emu))
    async with httpx.AsyncClient() as client:
        src = await _source(client, fal)
        request = VideoRequest(aspect_ratio="9:16", edit={"operation": "reframe", "source": src})
        _, status, result = await drive_adapter(fal, request, client)
        assert result is not None
        out = probe((await client.get(result.url)).content)
    assert status.state.value == "succeeded"
    assert out["height"] > out["width"] and (out["width"], out["height"]) == (540, 960)
    assert abs(float(out["duration_s"]) - 5) < 0.2
    assert emu.jobs[[*emu.jobs][-1]].input == {"video_url": src, "aspect_ratio": "9:16"}


async def test_reframe_to_1_1(serve: Callable) -> None:
    fal = adapter(serve(emulator()))
    async with httpx.AsyncClient() as client:
        src = await _source(client, fal, aspect_ratio="9:16")
        request = VideoRequest(aspect_ratio="1:1", edit={"operation": "reframe", "source": src})
        _, _, result = await drive_adapter(fal, request, client)
        assert result is not None
        out = probe((await client.get(result.url)).content)
    assert out["width"] == out["height"] == 540


async def test_modify_keeps_the_source_length_even_off_whole_seconds(serve: Callable, tmp_path: Path) -> None:
    clip = tmp_path / "odd.mp4"
    clip.write_bytes(render_mp4(320, 240, 2.5))  # a local file: sent inline as a data URI
    fal = adapter(serve(emulator()))
    request = VideoRequest(prompt="snow", edit={"operation": "modify", "source": str(clip), "mode": "reimagine_2"})
    async with httpx.AsyncClient() as client:
        _, _, result = await drive_adapter(fal, request, client)
        assert result is not None
        out = probe((await client.get(result.url)).content)
    assert (out["width"], out["height"]) == (320, 240)
    assert abs(float(out["duration_s"]) - 2.5) < 0.1


@pytest.mark.parametrize(("source", "kind"), [
    ("data:video/mp4;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode(), "invalid_video"),
    ("http://127.0.0.1:1/nothing.mp4", "file_download_error"),
])
async def test_what_is_not_a_video_is_a_422_naming_video_url(serve: Callable, source: str, kind: str) -> None:
    emu = emulator()
    fal = adapter(serve(emu))
    # the adapter sends URLs as given; the bad data URI is built by hand (the model would refuse it)
    request = VideoRequest(edit={"operation": "modify", "source": "https://x.example/a.mp4"})
    built = fal.build_submit(request, resolution=Resolution.P540, attempt_key="a")
    body = built.content.replace(b"https://x.example/a.mp4", source.encode())
    async with httpx.AsyncClient() as client:
        response = await client.post(str(built.url), headers=dict(built.headers) | {"content-length": str(len(body))},
                                     content=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "video_url"] and detail[0]["type"] == kind
    assert emu.accepted_submissions == 0 and emu.rejected_submissions == 1
    with pytest.raises(ProviderRejected):
        fal.parse_submit(request, response)


async def test_an_html_page_is_not_a_video(serve: Callable) -> None:
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    async def page(_request: object) -> HTMLResponse:
        return HTMLResponse("<html>not a video</html>")

    page_url = serve(Starlette(routes=[Route("/clip.mp4", page)])) + "/clip.mp4"
    fal = adapter(serve(emulator()))
    request = VideoRequest(aspect_ratio="9:16", edit={"operation": "reframe", "source": page_url})
    async with httpx.AsyncClient() as client:
        response = await submit(fal, client, request)
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "invalid_video"


async def test_edit_bodies_are_validated_like_fal(serve: Callable) -> None:
    fal = adapter(serve(emulator()))
    base = fal.build_submit(VideoRequest(edit={"operation": "reframe", "source": "https://x.example/a.mp4"}),
                            resolution=Resolution.P540, attempt_key="a")
    async with httpx.AsyncClient() as client:
        response = await client.post(str(base.url), headers={"Authorization": "Key k"},
                                     json={"video_url": "https://x.example/a.mp4", "aspect_ratio": "5:4",
                                           "duration": "5s"})
    locs = {tuple(i["loc"]) for i in response.json()["detail"]}
    assert response.status_code == 422 and locs == {("body", "aspect_ratio"), ("body", "duration")}
