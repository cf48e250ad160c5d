"""Vendor completion callbacks: verified the vendor's way, then a poll confirms them.

A callback only wakes the poll of the vendor job it names; the job changes on that
poll's answer. So a duplicate or out-of-order callback is harmless, and a job whose
callback never arrives still finishes on its regular (safety) polls.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from gateway.errors import ProtocolError, WebhookRejected
from gateway.server.http import ApiError, read_body, service_of
from gateway.webhooks.inbound import verify_and_parse

router = APIRouter(tags=["vendor webhooks"])


@router.post("/webhooks/{provider}", response_model=None)
async def vendor_webhook(provider: str, request: Request) -> dict[str, object]:
    service = service_of(request)
    adapter = service.gateway.providers.get(provider)
    if adapter is None or not adapter.supports_webhooks:
        raise ApiError(404, f"no webhook endpoint for {provider!r}", code="not_found")
    body = await read_body(request)
    try:
        event = await verify_and_parse(adapter, request.headers, body, now=time.time(),
                                       keys=service.webhook_keys(provider))
    except WebhookRejected as exc:
        service.metrics.webhooks.labels(provider, f"rejected_{exc.reason}").inc()
        raise ApiError(401, exc.message, code="webhook_rejected", type_="authentication_error") from None
    except ProtocolError as exc:
        service.metrics.webhooks.labels(provider, "unreadable").inc()
        raise ApiError(400, exc.message, code="webhook_unreadable") from None
    matched = service.gateway.nudge(provider, event.vendor_id)
    service.metrics.webhooks.labels(provider, "matched" if matched else "unknown_job").inc()
    # 200 even for a job we do not follow: the vendor must stop retrying a settled delivery
    return {"received": True, "matched": matched}
