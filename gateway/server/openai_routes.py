"""OpenAI-compatible ``/v1/videos``: create, retrieve, list, download, delete."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from gateway.errors import InvalidRequest
from gateway.job import JobStatus
from gateway.keys import ApiKey
from gateway.request import sniff_image_type
from gateway.server.http import ApiError, caller, json_body, not_found, service_of
from gateway.server.openai_compat import request_from_openai, video_object

router = APIRouter(prefix="/v1/videos", tags=["OpenAI-compatible videos"])

#: form fields that may repeat (lists in the neutral request)
_LIST_FIELDS = ("providers", "concepts", "allow")


class CreateVideo(BaseModel):
    """The create body: OpenAI's fields plus reelgate's extras (documentation of the schema)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=4000)
    model: str | None = Field(default=None, description="ray-2-flash, ray-2, or a route alias from the config")
    seconds: str | None = Field(default=None, description='"5" or "9"')
    size: str | None = Field(default=None, description="WxH, e.g. 1280x720 or 720x1280")
    input_reference: dict[str, str] | None = Field(default=None, description='{"image_url": "https://..."}')
    aspect_ratio: str | None = None
    resolution: str | None = None
    loop: bool | None = None
    end_image: str | None = None
    route: str | None = None
    providers: list[str] | None = None
    max_cost_usd: float | None = None
    deadline_s: float | None = None
    concepts: list[str] | None = None
    idempotency_key: str | None = None


_CREATE_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/CreateVideo"}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "prompt": {"type": "string"}, "model": {"type": "string"}, "seconds": {"type": "string"},
                "size": {"type": "string"}, "input_reference": {"type": "string", "format": "binary"}},
                "required": ["prompt"]}},
        },
    }
}



@router.post("", status_code=200, openapi_extra=_CREATE_SCHEMA, response_model=None)
async def create_video(request: Request, key: ApiKey | None = Depends(caller)) -> dict[str, Any]:
    service = service_of(request)
    body, image = await _read_create_body(request, service.settings.service.max_upload_bytes)
    if request.headers.get("idempotency-key") and "idempotency_key" not in body:
        body["idempotency_key"] = request.headers["idempotency-key"]
    video_request = request_from_openai(body, service.settings, image_data_uri=image)
    job = await service.submit(video_request, key)
    return video_object(job)


async def _read_create_body(request: Request, limit: int) -> tuple[dict[str, Any], str | None]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        body: dict[str, Any] = {}
        image = None
        async with request.form(max_part_size=limit) as form:  # closes the spooled uploads
            for name in form:
                values = form.getlist(name)
                if name == "input_reference" and isinstance(values[0], UploadFile):
                    image = await _image_upload(values[0], limit)
                elif name in _LIST_FIELDS:
                    body[name] = [v for v in values if isinstance(v, str)]
                else:
                    body[name] = values[0] if isinstance(values[0], str) else None
        return body, image
    if content_type and not content_type.startswith("application/json"):
        raise ApiError(415, "send application/json or multipart/form-data", code="unsupported_media_type")
    return await json_body(request), None


async def _image_upload(upload: UploadFile, limit: int) -> str:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise InvalidRequest("input_reference", f"is larger than {limit} bytes")
    mime = sniff_image_type(data)
    if mime is None:
        raise InvalidRequest("input_reference", "is not a PNG, JPEG, GIF or WebP image")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@router.get("", response_model=None)
async def list_videos(
    request: Request,
    key: ApiKey | None = Depends(caller),
    after: str | None = Query(default=None, max_length=200),
    limit: int = Query(default=20, ge=1, le=100),
) -> dict[str, Any]:
    service = service_of(request)
    jobs = await service.store.list_jobs(owner=key.id if key else None, limit=limit + 1, after=after)
    page = [video_object(service.gateway.get(j.id) or j) for j in jobs[:limit]]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(jobs) > limit}


@router.get("/{video_id}", response_model=None)
async def retrieve_video(video_id: str, request: Request, key: ApiKey | None = Depends(caller)) -> dict[str, Any]:
    job = await service_of(request).get(video_id, key)
    if job is None:
        raise not_found("video")
    return video_object(job)


@router.get("/{video_id}/content", response_model=None, responses={200: {"content": {"video/mp4": {}}}})
async def download_video(
    video_id: str, request: Request, key: ApiKey | None = Depends(caller),
    variant: str = Query(default="video", max_length=20),
) -> StreamingResponse:
    service = service_of(request)
    job = await service.get(video_id, key)
    if job is None:
        raise not_found("video")
    if variant != "video":
        raise ApiError(400, f"variant {variant!r} is not available; only 'video'", code="invalid_variant",
                       param="variant")
    if job.status is not JobStatus.SUCCEEDED:
        raise ApiError(404, f"the video is not ready (status {job.status.value})", code="not_ready")
    job = await service.wait_kept(job)
    if job.output is None or job.output.uri is None:
        raise ApiError(404, "the finished video could not be kept", code="not_kept")
    headers = {"Content-Disposition": f'attachment; filename="{job.id}.mp4"'}
    if job.output.size_bytes is not None:
        headers["Content-Length"] = str(job.output.size_bytes)
    return StreamingResponse(service.storage.open(job.output.uri), media_type="video/mp4", headers=headers)


@router.delete("/{video_id}", response_model=None)
async def delete_video(video_id: str, request: Request, key: ApiKey | None = Depends(caller)) -> dict[str, Any]:
    service = service_of(request)
    job = await service.get(video_id, key)
    if job is None:
        raise not_found("video")
    await service.delete(job)
    return {"id": video_id, "object": "video.deleted", "deleted": True}
