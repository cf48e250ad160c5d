"""fal input bodies for one neutral request: pure functions, pinned by tests.

Generation: the Text/ImageToVideoRequest fields (vendors.md s.1.10). Modify and reframe:
fal's ``ModifyVideoRequest`` (``video_url``, ``image_url``, ``prompt``, ``mode``) and
``ReframeVideoRequest`` (``video_url``, ``aspect_ratio``, ``image_url``, ``prompt``,
``grid_position_x/y``, ``x_start/x_end/y_start/y_end``) from fal's Ray 2 API page (seed 002).
Optional fields are left out rather than sent as null: fal's inputs are pydantic models whose
defaults apply only to absent keys.

fal's page marks modify's ``image_url`` required, while fal's typed clients (vendors.md s.1.10;
``LumaDreamMachineRay2FlashModifyInput`` in public fal-client code) type it optional and Luma's
own modify API has an optional ``first_frame``: we send it only when the caller gives one
(UNCONFIRMED which one fal enforces; a 422 would name the field and end the attempt cleanly).
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest
from gateway.images import ImageInput, ImageKind
from gateway.operations import ModifySpec, ReframeSpec, SourceVideo, VideoKind
from gateway.request import Resolution, VideoRequest


def submit_body(request: VideoRequest, resolution: Resolution) -> dict[str, Any]:
    """The fal input JSON for one neutral request, whatever its operation."""
    edit = request.edit
    if isinstance(edit, ModifySpec):
        return modify_body(request, edit)
    if isinstance(edit, ReframeSpec):
        return reframe_body(request, edit)
    if edit is not None:  # the planner never sends fal an operation it does not declare
        raise ValueError(f"fal cannot {edit.operation}")
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "aspect_ratio": request.aspect_ratio.value,
        "resolution": resolution.value,
        "duration": f"{request.duration_s}s",
        "loop": request.loop,
    }
    for field, image in (("image_url", request.start_image), ("end_image_url", request.end_image)):
        if image is not None:
            body[field] = image_url(image)
    return body


def modify_body(request: VideoRequest, spec: ModifySpec) -> dict[str, Any]:
    """``…/modify``: restyle the source, keeping its motion and length."""
    body: dict[str, Any] = {"video_url": video_url(spec.source), "mode": spec.mode.value}
    _common(body, request)
    return body


def reframe_body(request: VideoRequest, spec: ReframeSpec) -> dict[str, Any]:
    """``…/reframe``: the source on a canvas of ``request.aspect_ratio``."""
    body: dict[str, Any] = {"video_url": video_url(spec.source), "aspect_ratio": request.aspect_ratio.value}
    _common(body, request)
    if spec.grid_position is not None:
        body["grid_position_x"] = spec.grid_position.x
        body["grid_position_y"] = spec.grid_position.y
    if spec.crop_box is not None:
        body.update(spec.crop_box.model_dump())
    return body


def _common(body: dict[str, Any], request: VideoRequest) -> None:
    if request.prompt:
        body["prompt"] = request.prompt
    if request.start_image is not None:  # the first frame of the output
        body["image_url"] = image_url(request.start_image)


def image_url(image: ImageInput) -> str:
    return image.value if image.kind is ImageKind.URL else image.as_data_uri()


def video_url(source: SourceVideo) -> str:
    """A URL fal fetches, or the file inlined (fal takes data URIs wherever a file URL goes)."""
    if source.kind is VideoKind.URL:
        return source.value
    if source.kind is VideoKind.JOB:  # the gateway resolves job ids before planning
        raise ValueError(f"job {source.value} was not resolved to its video")
    try:
        return source.as_data_uri()
    except ValueError as exc:  # e.g. a file past the inline cap: the caller's input, named
        raise InvalidRequest("edit.source", str(exc)) from None
