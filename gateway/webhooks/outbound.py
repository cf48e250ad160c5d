"""Webhooks reelgate sends to apps, in the Standard Webhooks format.

Spec: https://www.standardwebhooks.com/ (https://github.com/standard-webhooks/standard-webhooks).
Every message carries three headers:

* ``webhook-id``         unique per message, the same on every retry (apps dedupe on it)
* ``webhook-timestamp``  unix seconds of *this attempt* (a retry is re-signed, so an app's
  5-minute tolerance never rejects a late but genuine retry)
* ``webhook-signature``  ``v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>``;
  several space-separated signatures may appear (secret rotation), any one may match

Secrets look like ``whsec_<base64>``; the bytes after the prefix are the HMAC key.
A secret never enters a :class:`DeliveryRecord` or an error message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import random
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from gateway.errors import WebhookRejected
from gateway.policies import backoff_s
from gateway.webhooks.inbound import check_timestamp, require_headers

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
TOLERANCE_S = 300.0
#: who a rejection is attributed to in ``WebhookRejected.provider``
SENDER = "reelgate"
EVENT_TYPES = {"succeeded": "video.completed", "failed": "video.failed", "cancelled": "video.cancelled"}
#: job fields an app gets in ``data`` (attempts and the routing plan stay in our records)
SUMMARY_FIELDS = ("id", "status", "provider", "model", "vendor_model", "resolution", "duration_s",
                  "aspect_ratio", "cost_usd", "vendor_units", "unit_name", "output", "error",
                  "created_at", "updated_at")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


# -- signing ---------------------------------------------------------------------------------
def new_secret(token: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A fresh ``whsec_`` secret of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token(32)).decode()


def secret_bytes(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be whsec_ followed by base64") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body), "content-type": "application/json"}


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float,
           tolerance_s: float = TOLERANCE_S) -> None:
    """Check a message the way an app should; raises ``WebhookRejected`` when it must be ignored."""
    found = require_headers(SENDER, headers, ("webhook-id", "webhook-timestamp", "webhook-signature"))
    stamp = check_timestamp(SENDER, found["webhook-timestamp"], now=now, tolerance_s=tolerance_s)
    expected = sign(secret, found["webhook-id"], stamp, body).encode()
    offered = found["webhook-signature"].split()
    if not any(hmac.compare_digest(expected, candidate.encode()) for candidate in offered):
        raise WebhookRejected("no webhook-signature matches", provider=SENDER, reason="bad_signature")


# -- what we send -----------------------------------------------------------------------------
def job_event(job: Mapping[str, Any], *, now: float) -> dict[str, Any]:
    """The payload for a finished job (``job`` is ``VideoJob.to_dict()``)."""
    kind = EVENT_TYPES.get(job["status"])
    if kind is None:
        raise ValueError(f"job {job['id']} is {job['status']}: only finished jobs are announced")
    return {"type": kind, "timestamp": _iso(now), "data": {k: job.get(k) for k in SUMMARY_FIELDS}}


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The bytes of a message: compact, keys sorted, so equal payloads are equal bodies."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


# -- delivery ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between delivery attempts, with jitter so many failed
    deliveries do not retry in lock-step."""

    base_s: float = 1.0
    cap_s: float = 60.0
    #: each delay is scaled by a factor drawn from [1 - jitter, 1]
    jitter: float = 0.5

    def delay(self, failures: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based)."""
        return backoff_s(failures - 1, self.base_s, self.cap_s, self.jitter, rng)


@dataclass(frozen=True)
class DeliveryAttempt:
    at: float
    duration_s: float
    status_code: int | None = None
    #: exception class name for transport failures (never its message: it may hold the URL)
    error: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass
class DeliveryRecord:
    """What happened to one message; stored on the job. Holds no secret."""

    message_id: str
    #: the endpoint without its query string (which may carry an app's own token)
    url: str
    attempts: list[DeliveryAttempt] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].acknowledged

    def to_dict(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "url": self.url, "delivered": self.delivered,
                "attempts": [asdict(a) for a in self.attempts]}


#: builds the body and headers of one attempt (called per attempt: signatures are fresh)
Render = Callable[[], tuple[bytes, Mapping[str, str]]]


async def post_with_retries(client: httpx.AsyncClient, url: str, render: Render, *, message_id: str,
                            sleep: Sleep = asyncio.sleep, clock: Clock = time.time, max_attempts: int = 5,
                            backoff: Backoff = Backoff(), rng: Callable[[], float] = random.random,
                            timeout_s: float = 15.0) -> DeliveryRecord:
    """POST until a 2xx or ``max_attempts``; any signing scheme (``render`` decides)."""
    record = DeliveryRecord(message_id, without_query(url))
    for number in range(1, max_attempts + 1):
        body, headers = render()
        started = clock()
        try:
            response = await client.post(url, content=body, headers=dict(headers), timeout=timeout_s)
            attempt = DeliveryAttempt(started, clock() - started, status_code=response.status_code)
        except httpx.TransportError as exc:
            attempt = DeliveryAttempt(started, clock() - started, error=type(exc).__name__)
        record.attempts.append(attempt)
        if attempt.acknowledged:
            break
        if number < max_attempts:
            await sleep(backoff.delay(number, rng))
    return record


async def deliver(client: httpx.AsyncClient, url: str, payload: Mapping[str, Any], secret: str, *,
                  sleep: Sleep = asyncio.sleep, max_attempts: int = 5, backoff: Backoff = Backoff(),
                  clock: Clock = time.time, rng: Callable[[], float] = random.random,
                  message_id: str | None = None) -> DeliveryRecord:
    """Send one Standard Webhooks message, retrying non-2xx answers and transport errors.

    The body and ``webhook-id`` are fixed for the message; each attempt is re-signed with
    its own timestamp. Pass the same ``message_id`` when resending after a restart."""
    secret_bytes(secret)  # a malformed secret fails here, before any network call
    msg_id = message_id or new_message_id()
    body = encode_body(payload)

    def render() -> tuple[bytes, Mapping[str, str]]:
        return body, signed_headers(secret, msg_id, int(clock()), body)

    return await post_with_retries(client, url, render, message_id=msg_id, sleep=sleep, clock=clock,
                                   max_attempts=max_attempts, backoff=backoff, rng=rng)


def without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))
