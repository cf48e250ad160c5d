"""The native API: neutral requests, quotes, full job records, cancellation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from gateway.keys import ApiKey
from gateway.request import VideoRequest
from gateway.server import vetting
from gateway.server.http import Order, caller, json_body, not_found, service_of
from gateway.server.openai_compat import video_object

router = APIRouter(prefix="/v1", tags=["native"])

_REQUEST_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/VideoRequest"}}}}}



@router.post("/quotes", openapi_extra=_REQUEST_SCHEMA, response_model=None)
async def quote(request: Request, key: ApiKey | None = Depends(caller)) -> dict[str, Any]:
    service = service_of(request)
    video_request = VideoRequest.parse(await json_body(request), local_files=False)
    if key is not None and key.allowed_providers:
        video_request = vetting.restrict(video_request, key.allowed_providers)
    return service.gateway.quote(video_request).to_dict()


@router.post("/jobs", openapi_extra=_REQUEST_SCHEMA, status_code=202, response_model=None)
async def create_job(request: Request, key: ApiKey | None = Depends(caller)) -> JSONResponse:
    body = await json_body(request)
    if request.headers.get("idempotency-key") and "idempotency_key" not in body:
        body["idempotency_key"] = request.headers["idempotency-key"]
    job = await service_of(request).submit(VideoRequest.parse(body, local_files=False), key)
    return JSONResponse(job.to_dict(), status_code=202)


@router.get("/jobs", response_model=None)
async def list_jobs(request: Request, key: ApiKey | None = Depends(caller),
                    after: str | None = Query(default=None, max_length=200),
                    limit: int = Query(default=20, ge=1, le=100),
                    order: Order = Query(default="desc"),
                    at_risk: bool = Query(default=False)) -> dict[str, Any]:
    service = service_of(request)
    jobs = await service.store.list_jobs(owner=key.id if key else None, limit=limit + 1, after=after,
                                         oldest_first=order == "asc", at_risk=at_risk)
    return {"data": [(service.gateway.get(j.id) or j).to_dict() for j in jobs[:limit]], "has_more": len(jobs) > limit}


@router.get("/jobs/{job_id}", response_model=None)
async def get_job(job_id: str, request: Request, key: ApiKey | None = Depends(caller)) -> dict[str, Any]:
    job = await service_of(request).get(job_id, key)
    if job is None:
        raise not_found("job")
    return job.to_dict()


@router.post("/jobs/{job_id}/cancel", response_model=None)
async def cancel_job(job_id: str, request: Request, key: ApiKey | None = Depends(caller)) -> dict[str, Any]:
    job = await service_of(request).cancel(job_id, key)
    if job is None:
        raise not_found("job")
    return job.to_dict()


@router.post("/videos/{video_id}/cancel", response_model=None)
async def cancel_video(video_id: str, request: Request, key: ApiKey | None = Depends(caller)) -> dict[str, Any]:
    job = await service_of(request).cancel(video_id, key)
    if job is None:
        raise not_found("video")
    return video_object(job)
