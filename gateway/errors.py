"""One exception hierarchy for reelgate; every vendor error is mapped into it once,
at the adapter boundary.

    ReelgateError
    ├── InvalidRequest        a field of the request is wrong (field + reason)
    │   └── IdempotencyConflict   an idempotency key already names a different request
    ├── Unsupported           no installed provider can honour the request (why, per provider)
    ├── NoRouteAvailable      candidates exist but all are down, skipped or exhausted
    ├── BudgetExceeded        the cheapest eligible option costs more than allowed
    ├── ConfigError           the configuration file or environment is wrong
    ├── DeadlineExceeded      the job did not finish within ``deadline_s``
    ├── LeaseLost             another replica now follows this job (scale-out)
    ├── WebhookRejected       an inbound webhook failed verification (forged, stale, malformed)
    ├── StorageError          a result could not be stored or read back
    │   ├── ObjectNotFound, ObjectTooLarge, InvalidKey
    └── ProviderError         something a vendor said (or failed to say)
        ├── RateLimited           429; carries ``retry_after`` seconds when the vendor gave one
        ├── Unavailable           outage, transient 5xx, connection refused
        ├── AuthenticationFailed  401/403
        ├── InsufficientCredits   402
        ├── ContentRejected       input or output moderation
        ├── ProviderRejected      the vendor refused this request as invalid
        ├── GenerationFailed      the vendor accepted the job, ran it, and it failed
        ├── ProtocolError         a body we cannot parse or a state we do not know
        ├── AmbiguousSubmit       the submit was sent and no answer came: a job may exist
        └── VendorLostJob         the vendor accepted a job, then said it does not know it

Each ``ProviderError`` says two things the router acts on:

* ``retryable``: the *same* vendor may be asked again (after ``retry_after``).
* ``fallback_safe``: moving to another vendor cannot cause a second paid job for
  this attempt (the vendor created none, or the one it created is finished).
  ``AmbiguousSubmit`` and ``VendorLostJob`` are not: the router moves on from them only
  when ``allow_duplicate_spend`` is set, and records the attempt's estimate as *at risk*.

Messages never contain secrets: adapters build them from status codes and
structured vendor fields, and ``redact`` scrubs every key the process holds by value.
"""

from __future__ import annotations

from typing import Any

# Every credential this process holds (see ``gateway.provider.Secret``) is scrubbed by
# value, whatever shape a vendor gives its keys. By value only: patterns such as "a word
# after Key" rewrote prose ("no API key configured" became "no API key ***") and still
# missed keys of other shapes. Process-wide on purpose: a key must not leak through any
# gateway instance's errors or logs.
_known_secrets: set[str] = set()
#: shorter values are too likely to occur in ordinary text to be replaced safely
_MIN_SECRET_CHARS = 6


def register_secret(value: str) -> None:
    if len(value) >= _MIN_SECRET_CHARS:
        _known_secrets.add(value)


def redact(text: str) -> str:
    """Replace every credential this process holds with ``***`` in text bound for a log or error."""
    for value in _known_secrets:
        if value in text:
            text = text.replace(value, "***")
    return text


class ReelgateError(Exception):
    """Base of every error reelgate raises on purpose."""

    #: short machine-readable name, stable across versions (used in JSON and job records)
    code = "reelgate_error"

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self)

    def to_dict(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "code": self.code, "message": self.message}


class InvalidRequest(ReelgateError):
    code = "invalid_request"

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "field": self.field, "reason": self.reason}


class IdempotencyConflict(InvalidRequest):
    """The idempotency key was first used with a different request: answering with that
    job would hide the caller's mistake, and submitting would pay twice for one key."""

    code = "idempotency_conflict"

    def __init__(self, key: str, job_id: str) -> None:
        self.key, self.job_id = key, job_id
        super().__init__("idempotency_key", f"{key!r} was already used for job {job_id} with a different "
                         "request; reuse a key only to retry the same request")


class Unsupported(ReelgateError):
    """No provider can honour the request; ``reasons`` maps provider -> why not."""

    code = "unsupported"

    def __init__(self, reasons: dict[str, list[str]]) -> None:
        self.reasons = reasons
        detail = "; ".join(f"{r}" for rs in reasons.values() for r in rs) or "no providers are installed"
        super().__init__(f"no provider can honour this request: {detail}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "reasons": self.reasons}


class NoRouteAvailable(ReelgateError):
    code = "no_route_available"

    def __init__(self, message: str, *, skipped: dict[str, str] | None = None,
                 retry_after: float | None = None) -> None:
        self.skipped = skipped or {}
        #: seconds until the first skipped vendor's circuit lets a probe through (None: unknown)
        self.retry_after = retry_after
        super().__init__(message)


class BudgetExceeded(ReelgateError):
    code = "budget_exceeded"


class ConfigError(ReelgateError):
    code = "config_error"


class DeadlineExceeded(ReelgateError):
    code = "deadline_exceeded"


class WebhookRejected(ReelgateError):
    """An inbound webhook we must not act on: a header is missing, the signature does not
    verify, or the timestamp is outside the tolerance. Not a ``ProviderError``: nothing
    here proves the vendor said it. ``reason`` is a short machine-readable word
    (``missing_header``, ``bad_signature``, ``stale``, ``no_keys``, ``unsupported``)."""

    code = "webhook_rejected"

    def __init__(self, message: str, *, provider: str, reason: str) -> None:
        self.provider = provider
        self.reason = reason
        super().__init__(f"{provider}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "provider": self.provider, "reason": self.reason}


class LeaseLost(ReelgateError):
    """This replica no longer holds the job's lease: another one may be polling it."""

    code = "lease_lost"


class StoreUnavailable(ReelgateError):
    """The job store does not answer (its server is down or its connection was lost): a
    request that needs it is refused with 503, a job's save is tried again (docs/deploy.md)."""

    code = "store_unavailable"
    #: seconds a caller should wait before trying again (``Retry-After``)
    retry_after = 5.0


class StorageError(ReelgateError):
    """A result could not be stored or read back."""

    code = "storage_error"


class ObjectNotFound(StorageError):
    code = "object_not_found"


class ObjectTooLarge(StorageError):
    code = "object_too_large"


class InvalidKey(StorageError):
    """A key or URI that would reach outside this storage (traversal, another bucket)."""

    code = "invalid_key"


class ProviderError(ReelgateError):
    code = "provider_error"
    retryable = False
    fallback_safe = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
        vendor_code: str | None = None,
    ) -> None:
        self.provider = provider
        self.status_code = status_code
        self.vendor_code = vendor_code
        super().__init__(f"{provider}: {message}")

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "provider": self.provider,
            "status_code": self.status_code,
            "vendor_code": self.vendor_code,
            "retryable": self.retryable,
            "fallback_safe": self.fallback_safe,
        }


class RateLimited(ProviderError):
    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class Unavailable(ProviderError):
    code = "unavailable"
    retryable = True


class AuthenticationFailed(ProviderError):
    code = "authentication_failed"


class InsufficientCredits(ProviderError):
    code = "insufficient_credits"


class ContentRejected(ProviderError):
    code = "content_rejected"


class ProviderRejected(ProviderError):
    code = "provider_rejected"


class GenerationFailed(ProviderError):
    code = "generation_failed"


class ProtocolError(ProviderError):
    code = "protocol_error"


class AmbiguousSubmit(ProviderError):
    """The submit left this process and no answer came back: the vendor may have a job."""

    code = "ambiguous_submit"
    fallback_safe = False


class VendorLostJob(ProviderError):
    """A 404 / "unknown id" on status or result for a job the vendor *accepted*.

    Amnesia is not rejection: the vendor said yes, so a job may exist, run and bill,
    whatever its lookup says now (a restarted queue, a replica that has not caught up).
    Asking again may find it (``retryable``); another vendor would be a second payment."""

    code = "vendor_lost_job"
    retryable = True
    fallback_safe = False

