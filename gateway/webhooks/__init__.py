"""Webhooks: verified inbound calls from vendors, signed outbound calls to apps.

``inbound``  vendor-neutral plumbing (``WebhookEvent``, key cache, timestamp and replay
             checks); each adapter's ``verify_webhook`` / ``parse_webhook`` does the rest.
``outbound`` Standard Webhooks signing, verification and retried delivery.
"""

from gateway.webhooks.inbound import KeyCache, ReplayGuard, WebhookEvent, verify_and_parse
from gateway.webhooks.outbound import Backoff, DeliveryAttempt, DeliveryRecord, deliver, sign, verify

__all__ = [
    "Backoff", "DeliveryAttempt", "DeliveryRecord", "KeyCache", "ReplayGuard", "WebhookEvent",
    "deliver", "sign", "verify", "verify_and_parse",
]
