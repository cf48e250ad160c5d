"""OpenAI-style edits of a finished video: ``POST /v1/videos/{id}/remix`` and
``POST /v1/videos/edits``, both run as a neutral *modify* of the source video.

Request shapes (looked up, not guessed):

* remix — ``POST /videos/{video_id}/remix`` with JSON ``{"prompt": str}``, answering a
  ``Video`` (vendors.md s.4; OpenAI API reference "Remix video"; LiteLLM's proxy
  ``litellm/proxy/video_endpoints/endpoints.py`` serves ``/v1/videos/{video_id}/remix`` and
  its SDK's ``video_remix(video_id=..., prompt=...)`` posts exactly that body).
* edits — ``POST /videos/edits`` with ``prompt`` (required) and ``video``: a reference to a
  completed video ``{"id": "..."}`` (JSON) or an uploaded file (multipart)
  (https://developers.openai.com/api/reference/cli/resources/videos/methods/edit,
  https://learn.microsoft.com/en-us/azure/foundry/reference/rest/video-generation-create-video-edit-multipart-video-generation-create-video-edit-json).

Besides OpenAI's fields, the body may carry reelgate's: ``mode`` (adhere_1..reimagine_3),
``video_url`` (a public http(s) URL instead of an id), ``model``, ``providers``, ``route``,
``max_cost_usd``, ``deadline_s``, ``idempotency_key``, ``metadata``, ``webhook_url``.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import UploadFile

from gateway.errors import InvalidRequest
from gateway.keys import ApiKey
from gateway.operations import MAX_VIDEO_DATA_URI_BYTES, sniff_video_type
from gateway.request import VideoRequest
from gateway.request_limits import check_strings
from gateway.server.http import SPOOL_BYTES, ApiError, caller, json_body, not_found, service_of
from gateway.server.openai_compat import _model, form_value, video_object

router = APIRouter(prefix="/v1/videos", tags=["OpenAI-compatible videos"])

#: reelgate's extras on an edit body (each maps straight onto VideoRequest)
EXTRA_FIELDS = ("providers", "route", "max_cost_usd", "deadline_s", "idempotency_key", "metadata", "webhook_url",
                "fallback")
_EDIT_FIELDS = ("prompt", "video", "video_url", "mode", "model", *EXTRA_FIELDS)


def edit_request(body: dict[str, Any], source: str, request: Request) -> VideoRequest:
    """A neutral modify of ``source`` from an OpenAI-style edit body (pure but for settings)."""
    check_strings(body)
    unknown = sorted(set(body) - set(_EDIT_FIELDS))
    if unknown:
        raise InvalidRequest(unknown[0], "is not a known field")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():  # OpenAI: prompt is required (minLength 1)
        raise InvalidRequest("prompt", "is required")
    edit: dict[str, Any] = {"operation": "modify", "source": source}
    if body.get("mode") is not None:
        edit["mode"] = body["mode"]
    fields: dict[str, Any] = {k: body[k] for k in EXTRA_FIELDS if body.get(k) is not None}
    fields.update(_model(body.get("model"), service_of(request).settings), prompt=prompt, edit=edit)
    if request.headers.get("idempotency-key") and "idempotency_key" not in fields:
        fields["idempotency_key"] = request.headers["idempotency-key"]
    return VideoRequest.parse(fields, local_files=False)


async def _submit(request: Request, key: ApiKey | None, body: dict[str, Any], source: str,
                  remixed_from: str | None) -> dict[str, Any]:
    service = service_of(request)
    job = await service.submit(edit_request(body, source, request), key)
    answer = video_object(job)
    answer["remixed_from_video_id"] = remixed_from
    return answer


@router.post("/edits", response_model=None)
async def edit_video(request: Request, key: ApiKey | None = Depends(caller)) -> dict[str, Any]:
    body = await _read_body(request)
    video, url = body.get("video"), body.get("video_url")
    if isinstance(video, dict) and set(video) == {"id"} and isinstance(video["id"], str):
        if url is not None:
            raise InvalidRequest("video", "give either video or video_url, not both")
        source, remixed_from = video["id"], video["id"]
        if await service_of(request).get(source, key) is None:
            raise not_found("video")
    elif isinstance(video, str) and video.startswith("data:video/") and url is None:
        source, remixed_from = video, None  # an uploaded file, inlined
    elif video is None and isinstance(url, str):
        source, remixed_from = url, None
    else:
        raise InvalidRequest("video", 'must be {"id": "<video id>"}, an uploaded video file, or give video_url')
    return await _submit(request, key, body, source, remixed_from)


@router.post("/{video_id}/remix", response_model=None)
async def remix_video(video_id: str, request: Request, key: ApiKey | None = Depends(caller)) -> dict[str, Any]:
    body = await json_body(request)
    if await service_of(request).get(video_id, key) is None:
        raise not_found("video")
    for name in ("video", "video_url"):
        if name in body:
            raise InvalidRequest(name, "is not taken by remix: the video is the one in the path")
    return await _submit(request, key, body, video_id, video_id)


async def _read_body(request: Request) -> dict[str, Any]:
    """JSON, or multipart with ``video`` as a file (inlined as a data URI) or ``video[id]``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        if content_type and content_type != "application/json":
            raise ApiError(415, f"send application/json or multipart/form-data, not {content_type}",
                           code="unsupported_media_type")
        return await json_body(request)
    body: dict[str, Any] = {}
    async with request.form(max_part_size=SPOOL_BYTES, max_files=1, max_fields=32) as form:
        for name in form:
            value = form.getlist(name)[0]
            if name == "video" and isinstance(value, UploadFile):
                body["video"] = await _video_upload(value)
            elif name == "video[id]" and isinstance(value, str):  # the SDK's form of {"id": ...}
                body["video"] = {"id": value}
            elif name.startswith("metadata[") and name.endswith("]") and isinstance(value, str):
                body.setdefault("metadata", {})[name[len("metadata["):-1]] = value
            elif name == "providers" or name == "providers[]":
                body["providers"] = [v for v in form.getlist(name) if isinstance(v, str)]
            else:
                body[name] = form_value(name, value) if isinstance(value, str) else None
    return body


async def _video_upload(upload: UploadFile) -> str:
    data = await upload.read(MAX_VIDEO_DATA_URI_BYTES + 1)
    if len(data) > MAX_VIDEO_DATA_URI_BYTES:
        raise InvalidRequest("video", f"is larger than {MAX_VIDEO_DATA_URI_BYTES} bytes")
    mime = sniff_video_type(data)
    if mime is None:
        raise InvalidRequest("video", "is not an MP4, MOV or WebM video")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
