"""fal webhooks: the submit parameter, Ed25519 verification and the body (pure functions).

Reference: https://docs.fal.ai/model-endpoints/webhooks (vendors.md s.1.8).

* enable with ``?fal_webhook=<url>`` on the submit; fal POSTs JSON when the request ends
* headers ``X-Fal-Webhook-Request-Id``, ``-User-Id``, ``-Timestamp`` (unix s), ``-Signature``
  (hex Ed25519 over ``request_id \\n user_id \\n timestamp \\n sha256_hex(body)``)
* valid if any key of fal's JWKS verifies and the timestamp is within 300 s
* body: ``{"request_id", "gateway_request_id", "status": "OK"|"ERROR", "error"?,
  "payload": <model output | error body> | null, "payload_error"?}``

``payload: null`` with ``payload_error`` (fal could not serialise the output) is read as
"finished, fetch the result to know": the status is SUCCEEDED without a video URL, which
makes the core GET the result, whose answer -- video or replayed error -- is authoritative.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.errors import ContentRejected, GenerationFailed, ProtocolError, ProviderError, WebhookRejected
from gateway.provider import VendorState, VendorStatus
from gateway.webhooks.inbound import TIMESTAMP_TOLERANCE_S, WebhookEvent, check_timestamp, require_headers
from providers.fal.models import ErrorBody, VideoOutput

NAME = "fal"
CONTENT_POLICY = "content_policy_violation"
#: UNCONFIRMED which host is canonical: older docs and verifiers use rest.alpha.fal.ai,
#: fal_client moved its REST_URL to rest.fal.ai. Configurable (option webhook_jwks_url).
JWKS_URL = "https://rest.alpha.fal.ai/.well-known/jwks.json"
ALT_JWKS_URL = "https://rest.fal.ai/.well-known/jwks.json"
QUERY_PARAM = "fal_webhook"
REQUEST_ID = "X-Fal-Webhook-Request-Id"
USER_ID = "X-Fal-Webhook-User-Id"
TIMESTAMP = "X-Fal-Webhook-Timestamp"
SIGNATURE = "X-Fal-Webhook-Signature"
HEADERS = (REQUEST_ID, USER_ID, TIMESTAMP, SIGNATURE)

#: the adapter options this module adds to the catalog's
OPTIONS: dict[str, Any] = {
    "webhook_jwks_url": JWKS_URL,
    "webhook_tolerance_s": TIMESTAMP_TOLERANCE_S,
}


class Delivery(BaseModel):
    """fal's webhook body; unknown fields ignored like every vendor model."""

    model_config = ConfigDict(extra="ignore")

    request_id: str
    gateway_request_id: str | None = None
    status: str
    error: str | None = None
    payload: Any = None
    payload_error: str | None = None


def message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The bytes fal signs."""
    return "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()


def jwk(key: Ed25519PublicKey) -> dict[str, str]:
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}


def parse_jwks(data: Any) -> list[Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS document; other key types are skipped."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ProtocolError("JWKS is not {\"keys\": [...]}", provider=NAME)
    keys = []
    for entry in data["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        try:
            x = str(entry["x"])
            keys.append(Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))))
        except (KeyError, ValueError, binascii.Error):
            continue  # one malformed key must not hide the good ones
    return keys


def sign(key: Ed25519PrivateKey, request_id: str, user_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers fal would send with ``body`` (the emulator and tests sign with this)."""
    signature = key.sign(message(request_id, user_id, str(timestamp), body)).hex()
    return {REQUEST_ID: request_id, USER_ID: user_id, TIMESTAMP: str(timestamp), SIGNATURE: signature,
            "content-type": "application/json"}


def verify(headers: Mapping[str, str], body: bytes, *, now: float, keys: Sequence[Ed25519PublicKey],
           tolerance_s: float = TIMESTAMP_TOLERANCE_S) -> None:
    found = require_headers(NAME, headers, HEADERS)
    check_timestamp(NAME, found[TIMESTAMP], now=now, tolerance_s=tolerance_s)
    if not keys:
        raise WebhookRejected("no verification keys (JWKS empty or not fetched)", provider=NAME, reason="no_keys")
    try:
        signature = bytes.fromhex(found[SIGNATURE])
    except ValueError:
        raise WebhookRejected("signature is not hex", provider=NAME, reason="bad_signature") from None
    signed = message(found[REQUEST_ID], found[USER_ID], found[TIMESTAMP], body)
    for key in keys:
        try:
            key.verify(signature, signed)
            return
        except InvalidSignature:
            continue
    raise WebhookRejected("the signature matches no JWKS entry", provider=NAME, reason="bad_signature")


def parse(body: bytes, *, cancelled_error_types: Sequence[str] = ()) -> WebhookEvent:
    """The neutral event of a verified delivery."""
    try:
        delivery = Delivery.model_validate_json(body)
    except ValidationError as exc:
        raise ProtocolError("webhook body is not fal's webhook JSON", provider=NAME) from exc
    if delivery.status == "OK":
        status = _succeeded(delivery)
    elif delivery.status == "ERROR":
        status = _failed(delivery, cancelled_error_types)
    else:
        raise ProtocolError(f"unknown webhook status {delivery.status!r}", provider=NAME,
                            vendor_code=delivery.status)
    return WebhookEvent(NAME, delivery.request_id, status, delivery.status)


def _succeeded(delivery: Delivery) -> VendorStatus:
    try:
        output = VideoOutput.model_validate(delivery.payload)
    except ValidationError:
        # payload null (payload_error) or not a video: the result GET will say what happened
        return VendorStatus(VendorState.SUCCEEDED, delivery.status)
    return VendorStatus(VendorState.SUCCEEDED, delivery.status, video_url=output.video.url)


def _failed(delivery: Delivery, cancelled_error_types: Sequence[str]) -> VendorStatus:
    try:
        body = ErrorBody.model_validate(delivery.payload or {})
    except ValidationError:
        body = ErrorBody()
    if body.error_type in cancelled_error_types:
        return VendorStatus(VendorState.CANCELLED, delivery.status)
    return VendorStatus(VendorState.FAILED, delivery.status, error=classify(delivery, body))


def classify(delivery: Delivery, body: ErrorBody) -> ProviderError:
    """By the structured ``detail[].type`` / ``error_type`` only, never the message text."""
    types = sorted({item.type for item in body.items() if item.type})
    text = body.text() or delivery.error or delivery.payload_error or "no detail"
    if CONTENT_POLICY in types:
        return ContentRejected(f"content policy: {text}", provider=NAME, vendor_code=CONTENT_POLICY)
    vendor_code = body.error_type or (types[0] if types else "ERROR")
    return GenerationFailed(f"the run failed: {text}", provider=NAME, vendor_code=vendor_code)
