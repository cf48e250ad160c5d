"""apiframe.ai API v2 adapter (Luma Ray 2 / Ray Flash 2), sans-I/O.

Endpoints spoken (base ``https://api.apiframe.ai``, header ``X-API-Key``):

* ``POST /v2/videos/generate`` -- submit; always with ``Idempotency-Key`` (our attempt
  key) so a resent submit returns the original job instead of paying for a second one.
* ``GET /v2/jobs/{id}`` -- status; a COMPLETED job carries ``result.videoUrl``, so there
  is no separate result call. v2 has no cancel endpoint.
* webhooks: ``webhookUrl`` + ``webhookEvents`` on submit, HMAC-signed POSTs back
  (``webhooks.py``; https://docs-v2.apiframe.ai/docs/webhooks).

Reference: https://docs-v2.apiframe.ai/docs/videos and the server spec ``openapi.json``
in https://github.com/apiframe-ai/apiframe-nodejs-sdk (see /work/shared/vendors.md s.2).

apiframe's failed jobs carry only free text in ``error``: there is no structured reason,
so a moderation failure is reported as ``GenerationFailed`` with the vendor's words, never
re-classified by matching the text. FAILED jobs cost 0 credits (credits refunded, AF-DOCS
jobs/get and faq), hence ``bills_failures = False``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from gateway.capabilities import Capabilities
from gateway.errors import (
    AuthenticationFailed,
    ConfigError,
    GenerationFailed,
    InsufficientCredits,
    InvalidRequest,
    ProtocolError,
    ProviderError,
    ProviderRejected,
    RateLimited,
    Unavailable,
    VendorLostJob,
)
from gateway.policies import retry_after_s
from gateway.pricing import Quote, usd
from gateway.provider import Provider, ProviderSettings, VendorJob, VendorState, VendorStatus
from gateway.request import ImageInput, ImageKind, ModelFamily, Resolution, VideoRequest
from gateway.webhooks.inbound import WebhookEvent
from providers.apiframe import catalog, webhooks
from providers.apiframe.models import ErrorBody, Job, JobAccepted

if TYPE_CHECKING:  # the emulator (PyAV, numpy, starlette) loads only when asked for
    from providers.apiframe.emulator import ApiframeEmulator

NAME = "apiframe"
#: the vendor caps Idempotency-Key at 255 characters (AF-OAS)
MAX_IDEMPOTENCY_KEY = 255

#: every status AF-OAS ``Job.status`` allows; anything else is a ProtocolError
_STATES = {
    "QUEUED": VendorState.QUEUED,
    "PROCESSING": VendorState.RUNNING,
    "COMPLETED": VendorState.SUCCEEDED,
    "FAILED": VendorState.FAILED,
    "CANCELLED": VendorState.CANCELLED,
}

M = TypeVar("M", bound=BaseModel)


class ApiframeAdapter(Provider):
    name = NAME
    title = "apiframe.ai API v2 -- Luma Ray 2 / Ray Flash 2 (credits, 720p)"
    credential_env = "APIFRAME_API_KEY"
    default_base_url = "https://api.apiframe.ai"
    docs_url = catalog.DOCS_URL
    supports_idempotency = True
    adoption = catalog.ADOPTION
    bills_failures = False
    # AF-DOCS: poll video jobs every 5-10 s
    poll_initial_s = 5.0
    poll_max_s = 10.0
    supports_webhooks = True

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        self.opts = catalog.Options.parse(settings.options)

    # -- data --------------------------------------------------------------------------
    def capabilities(self) -> dict[ModelFamily, Capabilities]:
        return catalog.capabilities()

    def price(self, request: VideoRequest, resolution: Resolution) -> Quote:
        model_id = self.opts.model_ids[request.model]
        credits = self.opts.credits.get(model_id, {}).get(request.duration_s)
        if credits is None:
            raise ConfigError(f"apiframe: no credit price for {model_id} at {request.duration_s} s "
                              "(set options.credits)")
        rate = self.opts.usd_per_credit
        return Quote(
            provider=self.name, model=request.model, vendor_model=model_id, resolution=resolution,
            duration_s=request.duration_s, usd=usd(credits * rate), vendor_units=Decimal(credits),
            unit_name="credits", basis=f"{credits} credits x ${rate}/credit ({model_id}, {request.duration_s} s)",
        )

    def latency_prior_s(self, model: ModelFamily, resolution: Resolution, duration_s: int) -> float:
        return catalog.LATENCY_PRIOR_S.get((model, duration_s), max(catalog.LATENCY_PRIOR_S.values()))

    # -- wire protocol -------------------------------------------------------------------
    def build_submit(self, request: VideoRequest, *, resolution: Resolution, attempt_key: str,
                     callback_url: str | None = None) -> httpx.Request:
        if resolution is not catalog.RESOLUTION:
            # apiframe has no resolution key: anything but its fixed 720p cannot be honoured
            raise InvalidRequest("resolution", f"apiframe makes only {catalog.RESOLUTION}")
        body = {
            "model": self.opts.model_ids[request.model],
            "prompt": request.prompt,
            "lumaParams": luma_params(request),
            **(webhooks.submit_fields(callback_url) if callback_url is not None else {}),
        }
        headers = {**self._auth(), "Idempotency-Key": idempotency_key(attempt_key)}
        return httpx.Request("POST", f"{self.base_url}/v2/videos/generate", headers=headers, json=body)

    def parse_submit(self, request: VideoRequest, response: httpx.Response) -> VendorJob:
        if not response.is_success:
            raise error_from(response, submit=True)
        accepted = parse_body(JobAccepted, response)
        return VendorJob(
            provider=self.name,
            vendor_model=self.opts.model_ids[request.model],
            vendor_id=accepted.jobId,
            base_url=self.base_url,
            credential_ref=self.settings.credential_ref,
            urls={"status": _status_url(self.base_url, accepted.jobId)},
        )

    def build_status(self, job: VendorJob) -> httpx.Request:
        return httpx.Request("GET", _status_url(job.base_url, job.vendor_id), headers=self._auth())

    def parse_status(self, job: VendorJob, response: httpx.Response) -> VendorStatus:
        if not response.is_success:
            raise error_from(response, submit=False)
        body = parse_body(Job, response)
        if body.id != job.vendor_id:
            raise ProtocolError(f"status for job {body.id!r} answered a poll of {job.vendor_id!r}",
                                provider=NAME, status_code=response.status_code)
        state = _STATES.get(body.status)
        if state is None:
            raise ProtocolError(f"unknown job status {body.status!r}", provider=NAME,
                                status_code=response.status_code, vendor_code=body.status)
        status = VendorStatus(
            state=state, vendor_status=body.status,
            progress=body.progress / 100 if body.progress is not None else None,
            billed_units=body.creditCost,
        )
        if state is VendorState.SUCCEEDED:
            return _completed(status, body, response)
        if state is VendorState.FAILED:
            reason = body.error or "job failed and apiframe gave no reason"
            failed = GenerationFailed(reason, provider=NAME, status_code=response.status_code,
                                      vendor_code=body.status)
            return replace(status, error=failed)
        return status

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, now: float,
                       keys: Sequence[Any] = ()) -> None:
        # keyed by our API key; apiframe signs no timestamp, so ``now`` cannot be checked
        webhooks.verify(headers, body, api_key=self._key())

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        return webhooks.parse(headers, body)

    @classmethod
    def emulator(cls, **options: Any) -> ApiframeEmulator:
        from providers.apiframe.emulator import ApiframeEmulator

        return ApiframeEmulator(**options)

    def _auth(self) -> dict[str, str]:
        return {"X-API-Key": self._key()}


# -- pure translation helpers (tested directly) ----------------------------------------------
def luma_params(request: VideoRequest) -> dict[str, Any]:
    """``lumaParams`` for one request; absent optional inputs are omitted, not nulled,
    because the vendor's schema types them as uri / array, not nullable."""
    params: dict[str, Any] = {
        "duration": request.duration_s,
        "aspect_ratio": request.aspect_ratio.value,
        "loop": request.loop,
    }
    if request.concepts:
        params["concepts"] = [c.value for c in request.concepts]
    for field, image in (("start_image", request.start_image), ("end_image", request.end_image)):
        if image is not None:
            params[field] = image_url(field, image)
    return params


def image_url(field: str, image: ImageInput) -> str:
    if image.kind is not ImageKind.URL:
        # capability matching refuses these first; this guards direct adapter use
        raise InvalidRequest(field, "apiframe accepts only http(s) image URLs")
    return image.value


def idempotency_key(attempt_key: str) -> str:
    """The attempt key, or its SHA-256 when longer than apiframe's limit (still stable)."""
    if len(attempt_key) <= MAX_IDEMPOTENCY_KEY:
        return attempt_key
    return hashlib.sha256(attempt_key.encode()).hexdigest()


def parse_body(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise ProtocolError(f"unreadable {model.__name__} body (HTTP {response.status_code}): "
                            f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}",
                            provider=NAME, status_code=response.status_code, vendor_code="malformed") from exc


def error_from(response: httpx.Response, *, submit: bool) -> ProviderError:
    """The gateway error for a non-2xx answer, classified by status code and body fields."""
    code = response.status_code
    body = _error_body(response)
    said = body.error or response.reason_phrase or f"HTTP {code}"
    kw: dict[str, Any] = {"provider": NAME, "status_code": code}
    if code in (400, 422):  # v2 documents 400 for validation; 422 is treated alike
        detail = body.detail_text()
        message = said + (f" ({detail})" if detail else "")
        if not submit:  # a status call only fails validation when our job id is wrong
            return ProtocolError(f"status call rejected: {message}", vendor_code="validation", **kw)
        return ProviderRejected(f"request rejected: {message}", vendor_code="validation", **kw)
    if code == 401:
        return AuthenticationFailed(f"invalid or missing API key: {said}", vendor_code="unauthorized", **kw)
    if code == 403:
        return AuthenticationFailed(f"API key not permitted: {said}", vendor_code="forbidden", **kw)
    if code == 402:
        numbers = f"{_num(body.creditsRequired)} required, {_num(body.creditsAvailable)} available"
        return InsufficientCredits(f"insufficient credits: {numbers}", vendor_code="insufficient_credits", **kw)
    if code == 404:
        if submit:
            return ProviderRejected(f"endpoint not found: {said}", vendor_code="not_found", **kw)
        # we only poll ids apiframe gave us: amnesia, not rejection (the job may still bill)
        return VendorLostJob(f"job not found: {said}", vendor_code="not_found", **kw)
    if code == 409:
        return ProviderRejected(f"idempotency key reused with a different request: {said}",
                                vendor_code="idempotency_conflict", **kw)
    if code == 429:
        return RateLimited(f"rate limited: {said}", retry_after=retry_after_s(response.headers),
                           vendor_code="rate_limited", **kw)
    if code >= 500:
        return Unavailable(f"server error: {said}", vendor_code="server_error", **kw)
    return ProtocolError(f"unexpected HTTP {code}: {said}", vendor_code=f"http_{code}", **kw)


def _completed(status: VendorStatus, body: Job, response: httpx.Response) -> VendorStatus:
    url = body.video_url()
    if url is None:
        raise ProtocolError("COMPLETED job has no result.videoUrl", provider=NAME,
                            status_code=response.status_code, vendor_code=body.status)
    if body.expired:
        # the CDN purged the file: a "success" whose URL 404s helps nobody
        expired = GenerationFailed("video expired on apiframe's CDN before it was fetched",
                                   provider=NAME, status_code=response.status_code, vendor_code="expired")
        return replace(status, state=VendorState.FAILED, error=expired)
    return replace(status, video_url=url, progress=1.0)


def _status_url(base_url: str, job_id: str) -> str:
    return f"{base_url}/v2/jobs/{quote(job_id, safe='')}"


def _error_body(response: httpx.Response) -> ErrorBody:
    # An HTML 502 from a load balancer is still a 502: classify it by its status code.
    try:
        return ErrorBody.model_validate_json(response.content)
    except ValidationError:
        return ErrorBody()


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"
