"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.server.http import service_of

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=None)
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request) -> JSONResponse:
    """Ready to take jobs: the store answers, at least one provider is configured, and no other
    process has taken this replica's id (gateway/server/replica_ids.py)."""
    service = service_of(request)
    checks: dict[str, str] = {}
    try:
        await service.store.list_jobs(limit=1)
        checks["store"] = "ok"
    except Exception as exc:  # readiness reports, it does not raise
        checks["store"] = f"error: {type(exc).__name__}"
    configured = [n for n, p in service.gateway.providers.items() if p.configured]
    checks["providers"] = ", ".join(configured) if configured else "none configured"
    ready = checks["store"] == "ok" and bool(configured)
    if service.leases is not None and service.leases.id_taken:  # it follows and takes no jobs now
        checks["replica_id"] = "held by another process"
        ready = False
    # shared state on local fallback still serves: reported, not a reason to leave the pool
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks,
                         "shared_state": service.gateway.shared.status(),
                         "replica": {"id": service.replica_id, "store": service.store_kind,
                                     "leases": service.leases is not None, "pid": os.getpid(),
                                     "workers": service.settings.service.workers}},
                        status_code=200 if ready else 503)


@router.get("/metrics", response_model=None)
async def metrics(request: Request) -> Response:
    service = service_of(request)
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
