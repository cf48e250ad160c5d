"""Vendor completion callbacks: verified the vendor's way, then a poll confirms them.

A callback only wakes the poll of the vendor job it names; the job changes on that
poll's answer. A duplicate (a vendor's retry, a replay) is acted on once: its dedupe key
is remembered in the store. A job whose callback never arrives still finishes on its
regular (safety) polls. When a vendor's signing keys cannot be fetched the answer is 503
with Retry-After, and the keys are not fetched again before then.
"""

from __future__ import annotations

import math
import time

from fastapi import APIRouter, Request

from gateway.adoption import ATTEMPT_PARAM, SIGNATURE_PARAM, attempt_signed
from gateway.errors import ProtocolError, Unavailable, WebhookRejected
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
    keys = service.callbacks.keys(provider)
    try:
        event = await verify_and_parse(adapter, request.headers, body, now=time.time(), keys=keys)
    except WebhookRejected as exc:
        service.metrics.webhooks.labels(provider, f"rejected_{exc.reason}").inc()
        raise ApiError(401, exc.message, code="webhook_rejected", type_="authentication_error") from None
    except ProtocolError as exc:
        service.metrics.webhooks.labels(provider, "unreadable").inc()
        raise ApiError(400, exc.message, code="webhook_unreadable") from None
    except Unavailable as exc:  # the vendor's keys could not be fetched: it retries, later
        service.metrics.webhooks.labels(provider, "keys_unavailable").inc()
        raise ApiError(503, exc.message, code="webhook_keys_unavailable", type_="unavailable_error",
                       headers={"Retry-After": str(max(math.ceil(keys.retry_in_s()), 1))}) from None
    # the attempt param: a job whose submit answer was lost, named by our callback URL. The
    # vendor signs the body, not the URL: an attempt must carry our signature, checked before
    # anything is remembered or bound (gateway/adoption.py)
    attempt = request.query_params.get(ATTEMPT_PARAM)
    if attempt is not None and not attempt_signed(adapter, attempt, request.query_params.get(SIGNATURE_PARAM)):
        service.metrics.webhooks.labels(provider, "rejected_attempt").inc()
        raise ApiError(401, "the callback URL's attempt is not signed by this gateway for that attempt",
                       code="webhook_rejected", type_="authentication_error")
    first = await service.callbacks.replay_guard.first_sighting(event)
    matched, relayed = await service.callbacks.act(provider, event.vendor_id, attempt, first=first)
    if not first:
        service.metrics.webhooks.labels(provider, "duplicate").inc()
        return {"received": True, "matched": matched, "duplicate": True}
    service.metrics.webhooks.labels(provider, "matched" if matched else "relayed" if relayed else "unknown_job").inc()
    # 200 even for a job we do not follow: the vendor must stop retrying a settled delivery
    return {"received": True, "matched": matched, **({"relayed": True} if relayed else {})}
