"""The fal emulator's modify and reframe: validate the input like fal's ModifyVideoRequest /
ReframeVideoRequest, fetch the source video, refuse what is not a video, and decide the
output's shape (reframe: the requested aspect ratio at the source's short side; modify: the
source's size and length). PyAV is used here, in the emulator only, never by the adapter.

Where fal is silent (UNCONFIRMED): the source is fetched at submit and a bad one is a 422
naming ``video_url`` (fal's pydantic inputs report bad files the same way), with no job made.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.emulation.render import probe
from gateway.operations import MAX_VIDEO_BYTES, ModifyMode, sniff_video_type

REFRAME_ASPECTS = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"]
MODES = [m.value for m in ModifyMode]
FETCH_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Source:
    width: int
    height: int
    duration_s: float


def item(loc: list[str], msg: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind, **extra}


def validate_edit(body: Any, kind: str) -> list[dict[str, Any]]:
    """fal's ``detail`` items for a bad modify/reframe body (empty when it is fine)."""
    if not isinstance(body, dict):
        return [item(["body"], "Input should be a valid dictionary", "dict_type")]
    problems = []
    if "video_url" not in body:
        problems.append(item(["body", "video_url"], "Field required", "missing"))
    elif not isinstance(body["video_url"], str):
        problems.append(item(["body", "video_url"], "Input should be a valid string", "string_type"))
    for name in ("prompt", "image_url"):
        if name in body and not isinstance(body[name], str):
            problems.append(item(["body", name], "Input should be a valid string", "string_type"))
    if kind == "modify":
        _enum(problems, body, "mode", MODES, required=False)
    else:
        _enum(problems, body, "aspect_ratio", REFRAME_ASPECTS, required=True)
        for name in ("grid_position_x", "grid_position_y", "x_start", "x_end", "y_start", "y_end"):
            if name in body and (not isinstance(body[name], int) or isinstance(body[name], bool)):
                problems.append(item(["body", name], "Input should be a valid integer", "int_type"))
    for name in ("resolution", "duration", "loop", "end_image_url"):
        if name in body:  # not in these schemas; a silent drop would hide a caller's mistake
            problems.append(item(["body", name], f"Extra inputs are not permitted on {kind}", "extra_forbidden"))
    return problems


def _enum(problems: list[dict[str, Any]], body: dict[str, Any], name: str, allowed: list[str], *,
          required: bool) -> None:
    if name not in body:
        if required:
            problems.append(item(["body", name], "Field required", "missing"))
        return
    if body[name] not in allowed:
        expected = ", ".join(repr(a) for a in allowed)
        problems.append(item(["body", name], f"Input should be {expected}", "enum", input=body[name],
                             ctx={"expected": expected}))


async def fetch_source(url: str) -> Source | list[dict[str, Any]]:
    """The source video's shape, or the 422 items saying why it cannot be used."""
    def bad(msg: str, kind: str = "value_error") -> list[dict[str, Any]]:
        return [item(["body", "video_url"], msg, kind)]

    if url.startswith("data:"):
        head, _, payload = url.partition(",")
        if not head.startswith("data:video/") or not head.endswith(";base64"):
            return bad("Data URI must be data:video/<type>;base64,<data>")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return bad("Data URI payload is not valid base64")
    elif url.startswith(("http://", "https://")):
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S), \
                    httpx.AsyncClient(follow_redirects=True, trust_env=False) as client:
                response = await client.get(url)
        except (httpx.HTTPError, TimeoutError) as exc:
            return bad(f"Could not download the file from {url} ({type(exc).__name__})", "file_download_error")
        if not response.is_success:
            return bad(f"Could not download the file from {url} (HTTP {response.status_code})",
                       "file_download_error")
        data = response.content
    else:
        return bad("Input should be a valid URL", "url_parsing")
    if len(data) > MAX_VIDEO_BYTES:
        return bad("The video is too large", "file_too_large")
    if sniff_video_type(data) is None:
        return bad("The file is not a video (expected MP4, MOV or WebM)", "invalid_video")
    try:
        shape = await asyncio.to_thread(probe, data)
    except Exception:  # noqa: BLE001 - any decoder failure means "not a playable video"
        return bad("The video could not be decoded", "invalid_video")
    return Source(int(shape["width"]), int(shape["height"]), float(shape["duration_s"]))


def output_shape(kind: str, body: dict[str, Any], source: Source) -> tuple[int, int, float]:
    """(width, height, seconds) of the output: modify keeps the source's; reframe puts the
    source's short side on the requested aspect ratio."""
    if kind == "modify":
        return source.width, source.height, source.duration_s
    w, h = (int(x) for x in str(body["aspect_ratio"]).split(":"))
    short = min(source.width, source.height)
    if w >= h:
        return _even(short * w / h), _even(short), source.duration_s
    return _even(short), _even(short * h / w), source.duration_s


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)
