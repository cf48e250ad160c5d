"""OpenAI-compatible ``/v1/videos``: create, retrieve, list, download, delete."""

from __future__ import annotations

import base64
import logging
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from gateway.errors import InvalidKey, InvalidRequest
from gateway.job import JobStatus
from gateway.keys import ApiKey
from gateway.request import sniff_image_type
from gateway.server.http import (
    SPOOL_BYTES,
    ApiError,
    JsonBody,
    Order,
    caller,
    header_of,
    json_body,
    not_found,
    parse_json_object,
    read_body,
    service_of,
)
from gateway.server.openai_compat import form_value, request_from_openai, video_object
from gateway.server.openai_extend import extension_from_openai
from gateway.server.service import KEEP_FAILED, Service

log = logging.getLogger("reelgate.server")
router = APIRouter(prefix="/v1/videos", tags=["OpenAI-compatible videos"])

#: form fields that may repeat (lists in the neutral request)
_LIST_FIELDS = ("providers", "concepts", "allow")
#: form fields that may carry an image file (each sniffed and capped the same way)
_UPLOAD_FIELDS = ("input_reference", "end_image")
_MAX_FILES = len(_UPLOAD_FIELDS)
_MAX_FIELDS = 64


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
                "size": {"type": "string"}, "input_reference": {"type": "string", "format": "binary"},
                "end_image": {"type": "string", "format": "binary"}},
                "required": ["prompt"]}},
        },
    }
}



@router.post("", status_code=200, openapi_extra=_CREATE_SCHEMA, response_model=None)
async def create_video(request: Request, key: ApiKey | None = Depends(caller)) -> JSONResponse:
    service = service_of(request)
    body, image = await _read_create_body(request, service.settings.service.max_upload_bytes)
    idempotency_key = header_of(request, b"idempotency-key")
    if idempotency_key and "idempotency_key" not in body:
        body["idempotency_key"] = idempotency_key
    video_request = request_from_openai(body, service.settings, image_data_uri=image)
    if video_request.resolution is None:
        # OpenAI's Video has a size from the start: fix the one the route chooses now, so
        # the size reported at create is the size delivered (also after a fallback)
        video_request = video_request.model_copy(update={"resolution": service.first_choice(video_request, key)})
    try:
        job = await service.submit(video_request, key)
    except InvalidRequest as exc:  # the fetched image (not an image, no such host): named as the caller sent it
        if exc.field == "start_image" and isinstance(body.get("input_reference"), dict):
            raise InvalidRequest("input_reference.image_url", exc.reason) from None
        raise
    return JsonBody(video_object(job))  # plain JSON already: FastAPI's encoder walk costs ~4% of a pair


@router.post("/extensions", status_code=200, response_model=None)
async def create_extension(request: Request, key: ApiKey | None = Depends(caller)) -> dict[str, Any]:
    """Extend a finished video (or one at a URL) by chaining clips (gateway/sequence.py).
    Declared before the ``/{video_id}`` routes, so it is never read as a video id."""
    service = service_of(request)
    body = await json_body(request)
    if request.headers.get("idempotency-key") and "idempotency_key" not in body:
        body["idempotency_key"] = request.headers["idempotency-key"]
    job = await service.submit(extension_from_openai(body, service.settings), key)
    return video_object(job)


async def _read_create_body(request: Request, limit: int) -> tuple[dict[str, Any], str | None]:
    """The create body's fields (an uploaded ``end_image`` as a data URI), and the uploaded
    ``input_reference`` as a data URI."""
    content_type = (header_of(request, b"content-type") or "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        if content_type and content_type != "application/json":
            raise ApiError(415, f"send application/json or multipart/form-data, not {content_type}",
                           code="unsupported_media_type")
        return parse_json_object(await read_body(request)), None  # ``json_body``, its type checked above
    body: dict[str, Any] = {}
    image = None
    # the body as a whole is capped while it streams (guard.py); these cap its parts: a
    # file spools to disk past 1 MiB, any other field is at most SPOOL_BYTES (in memory)
    async with request.form(max_part_size=SPOOL_BYTES, max_files=_MAX_FILES, max_fields=_MAX_FIELDS) as form:
        for raw_name in form:
            values = form.getlist(raw_name)
            # the openai SDK sends list fields as ``providers[]``
            name = raw_name.removesuffix("[]") if raw_name.removesuffix("[]") in _LIST_FIELDS else raw_name
            if name in _UPLOAD_FIELDS and isinstance(values[0], UploadFile):
                uploaded = await _image_upload(values[0], limit, name)
                if name == "input_reference":
                    image = uploaded
                else:
                    body[name] = uploaded
            elif name in _LIST_FIELDS:
                body[name] = [*body.get(name, []), *(v for v in values if isinstance(v, str))]
            elif name.startswith("metadata[") and name.endswith("]"):  # the SDK's form of a mapping
                body.setdefault("metadata", {})[name[len("metadata["):-1]] = values[0]
            else:
                body[name] = form_value(name, values[0]) if isinstance(values[0], str) else None
    return body, image


async def _image_upload(upload: UploadFile, limit: int, field: str) -> str:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise InvalidRequest(field, f"is larger than {limit} bytes")
    mime = sniff_image_type(data)
    if mime is None:
        raise InvalidRequest(field, "is not a PNG, JPEG, GIF or WebP image")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@router.get("", response_model=None)
async def list_videos(
    request: Request,
    key: ApiKey | None = Depends(caller),
    after: str | None = Query(default=None, max_length=200),
    limit: int = Query(default=20, ge=1, le=100),
    order: Order = Query(default="desc"),
) -> dict[str, Any]:
    service = service_of(request)
    jobs = await service.store.list_jobs(owner=key.id if key else None, limit=limit + 1, after=after,
                                         oldest_first=order == "asc")
    page = [video_object(service.gateway.get(j.id) or j) for j in jobs[:limit]]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(jobs) > limit}


@router.get("/{video_id}", response_model=None)
async def retrieve_video(video_id: str, request: Request, key: ApiKey | None = Depends(caller)) -> JSONResponse:
    job = await service_of(request).get(video_id, key)
    if job is None:
        raise not_found("video")
    return JsonBody(video_object(job))


async def _readable_here(service: Service, uri: str) -> None:
    """Refuse, before the answer starts, a kept video this replica cannot read: once a 200 has
    started, a failure can only cut it short (it was 200 with 0 bytes and a traceback, at a
    replica whose default storage is its own directory while another replica kept the video)."""
    try:
        found = await service.storage.exists(uri)
    except InvalidKey:  # another replica's storage: a balancer retries a 503 at another replica
        log.warning("the video at %s cannot be read here: give every replica one storage "
                    "(storage.path on a shared directory, or kind: s3; docs/deploy.md)", uri)
        raise ApiError(503, "the video was kept by another replica, in storage this replica cannot read; "
                       "try again (the service's storage is not shared: docs/deploy.md)", code="not_here",
                       type_="server_error", headers={"Retry-After": "1"}) from None
    if not found:
        raise ApiError(404, "the kept video is no longer in storage", code="not_kept")


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
        if not any(note.startswith(KEEP_FAILED) for note in job.notes):  # another replica is keeping it
            raise ApiError(404, "the video is still being stored: try again in a moment", code="not_ready")
        raise ApiError(404, "the finished video could not be kept", code="not_kept")
    await _readable_here(service, job.output.uri)
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
