"""apiframe v2 webhooks: submit fields, HMAC verification and bodies (pure functions).

Reference: https://docs-v2.apiframe.ai/docs/webhooks and ``src/webhooks.ts`` of
apiframe-ai/apiframe-nodejs-sdk (vendors.md s.2.5).

* submit with ``webhookUrl`` and ``webhookEvents`` (we ask for ``completed`` and ``failed``)
* headers ``X-Webhook-Signature: sha256=<hex>`` (bare hex also accepted, as the SDK does)
  and ``X-Webhook-Event``
* signature = HMAC-SHA256(key = SHA-256 digest (32 raw bytes) of the API key string,
  message = the raw body)

apiframe signs no timestamp and no delivery id, so a captured delivery can be replayed
forever. Replay protection is therefore only idempotent handling: every event names a
job and a terminal state, and acting on the same (job, state) twice changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.errors import GenerationFailed, ProtocolError, WebhookRejected
from gateway.provider import VendorState, VendorStatus
from gateway.webhooks.inbound import WebhookEvent, require_headers

NAME = "apiframe"
SIGNATURE = "X-Webhook-Signature"
EVENT = "X-Webhook-Event"
PREFIX = "sha256="
#: the events we subscribe to; progress would only cost requests (we poll for progress)
EVENTS = ("completed", "failed")


class Delivery(BaseModel):
    """The webhook body; unknown fields ignored."""

    model_config = ConfigDict(extra="ignore")

    event: str
    jobId: str
    status: str | None = None
    progress: float | None = None
    result: Any = None
    error: str | None = None
    model: str | None = None
    creditCost: float | None = None


def submit_fields(callback_url: str) -> dict[str, Any]:
    return {"webhookUrl": callback_url, "webhookEvents": list(EVENTS)}


def signature(api_key: str, body: bytes) -> str:
    """The hex signature apiframe sends for ``body``."""
    key = hashlib.sha256(api_key.encode()).digest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def sign(api_key: str, event: str, body: bytes) -> dict[str, str]:
    """The headers apiframe would send with ``body`` (the emulator and tests sign with this)."""
    return {SIGNATURE: PREFIX + signature(api_key, body), EVENT: event, "content-type": "application/json"}


def verify(headers: Mapping[str, str], body: bytes, *, api_key: str) -> None:
    offered = require_headers(NAME, headers, (SIGNATURE,))[SIGNATURE].removeprefix(PREFIX).lower()
    if not hmac.compare_digest(signature(api_key, body).encode(), offered.encode()):
        raise WebhookRejected("X-Webhook-Signature does not match the body", provider=NAME, reason="bad_signature")


def parse(headers: Mapping[str, str], body: bytes) -> WebhookEvent:
    try:
        delivery = Delivery.model_validate_json(body)
    except ValidationError as exc:
        raise ProtocolError("webhook body is not apiframe's webhook JSON", provider=NAME) from exc
    announced = {k.lower(): v for k, v in headers.items()}.get(EVENT.lower())
    if announced is not None and announced != delivery.event:
        raise ProtocolError(f"{EVENT} says {announced!r} but the body says {delivery.event!r}",
                            provider=NAME, vendor_code=delivery.event)
    return WebhookEvent(NAME, delivery.jobId, _status(delivery), delivery.event)


def _status(delivery: Delivery) -> VendorStatus:
    vendor_status = delivery.status or delivery.event
    if delivery.event == "completed":
        url = _video_url(delivery.result)
        if url is None:
            raise ProtocolError("completed webhook has no result.videoUrl", provider=NAME, vendor_code="completed")
        return VendorStatus(VendorState.SUCCEEDED, vendor_status, progress=1.0, video_url=url,
                            billed_units=delivery.creditCost)
    if delivery.event == "failed":
        # free text only: not re-classified by its words (same rule as the status poll)
        error = GenerationFailed(delivery.error or "job failed and apiframe gave no reason",
                                 provider=NAME, vendor_code="FAILED")
        return VendorStatus(VendorState.FAILED, vendor_status, error=error, billed_units=0)
    if delivery.event == "progress":
        progress = delivery.progress / 100 if delivery.progress is not None else None
        return VendorStatus(VendorState.RUNNING, vendor_status, progress=progress)
    raise ProtocolError(f"unknown webhook event {delivery.event!r}", provider=NAME, vendor_code=delivery.event)


def _video_url(result: Any) -> str | None:
    # like the Job model: {"videoUrl": ...}, or a bare URL string in older docs
    if isinstance(result, str) and result:
        return result
    if isinstance(result, dict) and isinstance(result.get("videoUrl"), str) and result["videoUrl"]:
        return str(result["videoUrl"])
    return None
