"""The fal.ai adapter: Luma Ray 2 / Ray 2 Flash through fal's queue API (sans-I/O).

Endpoints spoken (reference: https://docs.fal.ai/model-apis/model-endpoints/queue,
errors: https://docs.fal.ai/errors):

* ``POST {base}/fal-ai/luma-dream-machine/{ray-2|ray-2-flash}[/image-to-video|/modify|/reframe]``
  submit (bodies: ``payloads.py``)
* ``GET  {status_url}?logs=1``  status (IN_QUEUE 202 / IN_PROGRESS 202 / COMPLETED 200)
* ``GET  {response_url}``       result (``{"video": {"url": ...}}`` or the run's error replayed)
* ``PUT  {cancel_url}``         cancel (202 CANCELLATION_REQUESTED / 400 ALREADY_COMPLETED / 404)
* ``GET  {webhook_jwks_url}``   the public keys that verify fal's webhooks (see ``webhooks.py``)

Auth is ``Authorization: Key <FAL_KEY>``. Status, result and cancel go to the URLs
fal returned on submit, as fal tells clients to. fal has no FAILED status: a failed
run is ``COMPLETED`` with ``error``/``error_type``, and the real error is on the result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import ValidationError

from gateway.capabilities import Capabilities
from gateway.errors import (
    AuthenticationFailed,
    ConfigError,
    ContentRejected,
    GenerationFailed,
    InsufficientCredits,
    ProtocolError,
    ProviderError,
    ProviderRejected,
    RateLimited,
    Unavailable,
    VendorLostJob,
)
from gateway.operations import Operation
from gateway.policies import retry_after_s
from gateway.pricing import Quote, usd
from gateway.provider import Provider, ProviderSettings, VendorJob, VendorState, VendorStatus, VideoResult
from gateway.request import ModelFamily, Resolution, VideoRequest
from gateway.webhooks.inbound import WebhookEvent
from providers.fal import catalog, webhooks
from providers.fal.models import ErrorBody, StatusAnswer, SubmitAnswer, VideoOutput
from providers.fal.payloads import submit_body as submit_body  # re-exported: tests pin it here

if TYPE_CHECKING:
    from providers.fal.emulator import FalEmulator

CONTENT_POLICY = "content_policy_violation"
#: error_type we give a result that is not ready yet (fal's 400 "still in progress" has none)
NOT_READY = "not_ready"
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_STATES = {"IN_QUEUE": VendorState.QUEUED, "IN_PROGRESS": VendorState.RUNNING}


class FalAdapter(Provider):
    name = "fal"
    title = "fal.ai queue API (Luma Ray 2 / Ray 2 Flash)"
    credential_env = "FAL_KEY"
    default_base_url = catalog.QUEUE_HOST
    docs_url = catalog.DOCS_URL
    supports_idempotency = False  # the queue API takes no idempotency key
    # "5xx failures are not billed": https://docs.fal.ai/model-apis/model-endpoints/reliability
    bills_failures = False
    poll_initial_s = 1.0
    poll_max_s = 5.0
    supports_webhooks = True
    adoption = catalog.ADOPTION

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        defaults = {**catalog.DEFAULT_OPTIONS, **webhooks.OPTIONS}
        unknown = set(settings.options) - set(defaults)
        if unknown:
            raise ConfigError(f"fal: unknown option(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(defaults)}")
        self.options: dict[str, Any] = {**defaults, **settings.options}
        if settings.sandbox and "webhook_jwks_url" not in settings.options:
            # the emulator publishes its own signing key; never ask the real fal for it
            self.options["webhook_jwks_url"] = f"{self.base_url}/.well-known/jwks.json"
        self._allowed_netlocs = {httpx.URL(self.base_url).netloc,
                                 *(h.encode() for h in self.options["extra_url_hosts"])}
        #: job URLs starting with one of these are on an allowed host without parsing them
        #: (parsing the three URLs of every submit answer was 7 % of a job's CPU)
        self._allowed_prefixes = tuple(f"{scheme}://{netloc.decode()}/" for netloc in self._allowed_netlocs
                                       for scheme in ("http", "https"))
        #: endpoint -> its parsed submit URL (a handful per adapter)
        self._submit_urls: dict[str, httpx.URL] = {}

    # -- data ------------------------------------------------------------------------
    def capabilities(self) -> dict[ModelFamily, Capabilities]:
        return dict(catalog.CAPABILITIES)

    @staticmethod
    def _suffix(request: VideoRequest) -> str:
        if request.operation is not Operation.GENERATE:
            return catalog.OPERATION_SUFFIX[request.operation]
        return catalog.I2V_SUFFIX if request.is_image_to_video else ""

    def _default_endpoint(self, request: VideoRequest) -> str:
        return catalog.ENDPOINTS[request.model] + self._suffix(request)

    def endpoint(self, request: VideoRequest) -> str:
        key = request.model.value + self._suffix(request)
        return str(self.options["endpoints"].get(key, self._default_endpoint(request)))

    def price(self, request: VideoRequest, resolution: Resolution) -> Quote:
        endpoint = self.endpoint(request)
        # an overridden endpoint without its own price keeps the catalogued endpoint's price
        fallback = catalog.BASE_USD.get(endpoint, catalog.BASE_USD[self._default_endpoint(request)])
        base = Decimal(str(self.options["base_usd"].get(endpoint, fallback)))
        if request.operation is not Operation.GENERATE:
            # no resolution or duration field: the output follows the source (priced per 5 s)
            unconfirmed = endpoint in catalog.UNCONFIRMED_PRICES and endpoint not in self.options["base_usd"]
            basis = f"${base:.2f} per 5 s of source" + (" (UNCONFIRMED)" if unconfirmed else "")
            return Quote(self.name, request.model, endpoint, resolution, request.duration_s, usd(base), basis=basis)
        res_x = catalog.RESOLUTION_FACTOR[resolution]
        dur_x = catalog.DURATION_FACTOR[request.duration_s]
        basis = f"${base:.2f} base"
        basis += f" x{res_x} {resolution}" if res_x != 1 else ""
        basis += f" x{dur_x} {request.duration_s}s" if dur_x != 1 else ""
        return Quote(self.name, request.model, endpoint, resolution, request.duration_s,
                     usd(base * res_x * dur_x), basis=basis)

    def latency_prior_s(self, model: ModelFamily, resolution: Resolution, duration_s: int) -> float:
        return (catalog.LATENCY_BASE_S[model] * catalog.LATENCY_RESOLUTION_FACTOR[resolution]
                * catalog.LATENCY_DURATION_FACTOR.get(duration_s, duration_s / 5))

    # -- wire protocol -----------------------------------------------------------------
    def _headers(self) -> httpx.Headers:
        return self._auth_headers("Key", "application/json")

    def build_submit(self, request: VideoRequest, *, resolution: Resolution, attempt_key: str,
                     callback_url: str | None = None) -> httpx.Request:
        # attempt_key is unused: fal's queue has no idempotency key (supports_idempotency False)
        endpoint = self.endpoint(request)
        url = self._submit_urls.get(endpoint)
        if url is None:
            url = self._submit_urls[endpoint] = httpx.URL(f"{self.base_url}/{endpoint}")
        if callback_url is not None:
            url = url.copy_merge_params({webhooks.QUERY_PARAM: callback_url})  # httpx URL-encodes it
        return httpx.Request("POST", url, headers=self._headers(), json=submit_body(request, resolution))

    def parse_submit(self, request: VideoRequest, response: httpx.Response) -> VendorJob:
        if not response.is_success:
            raise self.error_from(response, phase="submit")
        answer = self._model(SubmitAnswer, response)
        urls = {"status": answer.status_url, "response": answer.response_url, "cancel": answer.cancel_url}
        self._check_hosts(urls)
        return VendorJob(provider=self.name, vendor_model=self.endpoint(request), vendor_id=answer.request_id,
                         base_url=self.base_url, credential_ref=self.settings.credential_ref, urls=urls)

    def adopted_job(self, vendor_model: str, vendor_id: str) -> VendorJob | None:
        # fal's request ids are UUIDs; anything else from a callback body is not put in a URL
        if not _REQUEST_ID.fullmatch(vendor_id):
            return None
        base = f"{self.base_url}/{'/'.join(vendor_model.split('/')[:catalog.APP_SEGMENTS])}/requests/{vendor_id}"
        return VendorJob(provider=self.name, vendor_model=vendor_model, vendor_id=vendor_id, base_url=self.base_url,
                         credential_ref=self.settings.credential_ref,
                         urls={"status": f"{base}/status", "response": base, "cancel": f"{base}/cancel"})

    def build_status(self, job: VendorJob) -> httpx.Request:
        url: str | httpx.URL = job.urls["status"]
        if self.options["status_logs"]:
            url = _with_logs(str(url))
        return httpx.Request("GET", url, headers=self._headers())

    def parse_status(self, job: VendorJob, response: httpx.Response) -> VendorStatus:
        if not response.is_success:
            raise self.error_from(response, phase="status")
        answer = self._model(StatusAnswer, response)
        if answer.status in _STATES:
            return VendorStatus(_STATES[answer.status], answer.status, queue_position=answer.queue_position)
        if answer.status != "COMPLETED":
            raise ProtocolError(f"unknown status {answer.status!r}", provider=self.name,
                                status_code=response.status_code, vendor_code=answer.status)
        if answer.error is None and answer.error_type is None:
            # not proof of success: parse_result reads the real outcome from the result GET
            return VendorStatus(VendorState.SUCCEEDED, answer.status)
        if answer.error_type in self.options["cancelled_error_types"]:
            return VendorStatus(VendorState.CANCELLED, answer.status)
        return VendorStatus(VendorState.FAILED, answer.status, error=self._run_failure(answer))

    def build_result(self, job: VendorJob) -> httpx.Request:
        return httpx.Request("GET", job.urls["response"], headers=self._headers())

    def parse_result(self, job: VendorJob, response: httpx.Response) -> VideoResult:
        if not response.is_success:
            raise self.error_from(response, phase="result")
        output = self._model(VideoOutput, response)
        units = response.headers.get("x-fal-billable-units")
        try:
            billed = float(units) if units is not None else None
        except ValueError:
            billed = None  # an odd header must not lose a finished video
        return VideoResult(url=output.video.url, content_type=output.video.content_type or "video/mp4",
                           size_bytes=output.video.file_size, billed_units=billed)

    def build_cancel(self, job: VendorJob) -> httpx.Request:
        return httpx.Request("PUT", job.urls["cancel"], headers=self._headers())

    def parse_cancel(self, job: VendorJob, response: httpx.Response) -> bool:
        body = _json(response)
        status = body.get("status") if isinstance(body, dict) else None
        if response.is_success and status in ("CANCELLATION_REQUESTED", "OK"):
            return True
        if (response.status_code, status) in ((400, "ALREADY_COMPLETED"), (404, "NOT_FOUND")):
            return False  # nothing left to cancel: finished, or unknown to fal
        if response.is_success:
            raise ProtocolError(f"unknown cancel answer {status!r}", provider=self.name,
                                status_code=response.status_code, vendor_code=str(status))
        raise self.error_from(response, phase="cancel")

    # -- webhooks ----------------------------------------------------------------------------
    def build_webhook_keys(self) -> httpx.Request:
        # a public document: no Authorization header, the key never goes to another host
        return httpx.Request("GET", str(self.options["webhook_jwks_url"]), headers={"Accept": "application/json"})

    def parse_webhook_keys(self, response: httpx.Response) -> list[Any]:
        if not response.is_success:
            raise Unavailable(f"JWKS fetch answered HTTP {response.status_code}", provider=self.name,
                              status_code=response.status_code)
        return list(webhooks.parse_jwks(_json(response)))

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, now: float,
                       keys: Sequence[Any] = ()) -> None:
        webhooks.verify(headers, body, now=now, keys=keys, tolerance_s=float(self.options["webhook_tolerance_s"]))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        return webhooks.parse(body, cancelled_error_types=self.options["cancelled_error_types"])

    @classmethod
    def emulator(cls, **options: Any) -> FalEmulator:
        from providers.fal.emulator import FalEmulator

        return FalEmulator(**options)

    # -- classification ------------------------------------------------------------------
    def _run_failure(self, answer: StatusAnswer) -> ProviderError:
        message = f"the run failed ({answer.error_type or 'no error_type'}): {answer.error or ''}".rstrip(": ")
        cls = ContentRejected if answer.error_type == CONTENT_POLICY else GenerationFailed
        return cls(message, provider=self.name, status_code=200, vendor_code=answer.error_type)

    def error_from(self, response: httpx.Response, *, phase: str) -> ProviderError:
        """Map one non-2xx answer into the gateway hierarchy, by status and structured fields.
        (fal's ``X-Fal-Retryable`` header is not read: our error class decides retrying.)"""
        code = response.status_code
        parsed = _error_body(response)
        body = parsed or ErrorBody()
        error_type = body.error_type or response.headers.get("x-fal-error-type")
        types = sorted({i.type for i in body.items()})
        vendor_code = CONTENT_POLICY if CONTENT_POLICY in types else error_type or (types[0] if types else None)
        text = body.text() or f"HTTP {code}"
        kw: dict[str, Any] = {"provider": self.name, "status_code": code, "vendor_code": vendor_code}
        # the status code alone decides these, whatever the body (fal's bodies here are UNCONFIRMED)
        if code in (401, 403):
            return AuthenticationFailed(f"the key was refused (HTTP {code})", **kw)
        if code == 402:
            return InsufficientCredits("balance exhausted (HTTP 402)", **kw)
        if code == 429:
            return RateLimited(f"rate limited: {text}", retry_after=retry_after_s(response.headers), **kw)
        if code >= 500 or code in (408, 409):
            if phase == "result" and error_type is not None:
                # the run's own failure replayed by the queue (fal retried it already, bills nothing)
                return GenerationFailed(f"the run failed (HTTP {code}): {text}", **kw)
            return Unavailable(f"HTTP {code}: {text}", **kw)
        if code == 404 and phase in ("status", "result"):
            # fal accepted this request (the URL is its own answer): amnesia, not rejection
            return VendorLostJob(f"fal does not know this request any more: {text}", **kw)
        if parsed is None:
            return ProtocolError(f"HTTP {code} with a body that is not fal's error JSON", **kw)
        if vendor_code == CONTENT_POLICY:
            return ContentRejected(f"content policy: {text}", **kw)
        if code == 404:  # submit: the endpoint is unknown, no request was made
            return ProviderRejected(f"unknown endpoint: {text}", **kw)
        if phase == "result" and code == 400 and isinstance(body.detail, str) and error_type is None:
            # fal answers 400 {"detail": "Request is still in progress"} before completion:
            # structurally a plain-string detail with no error_type. Retryable, not a failure.
            return Unavailable(f"result not ready: {text}", **{**kw, "vendor_code": NOT_READY})
        if phase == "result" and code == 499:
            return GenerationFailed(f"the run was cancelled or disconnected: {text}", **kw)
        return ProviderRejected(f"HTTP {code}: {text}", **kw)

    def _model(self, model: type[Any], response: httpx.Response) -> Any:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise ProtocolError(f"HTTP {response.status_code}: cannot parse {model.__name__}",
                                provider=self.name, status_code=response.status_code) from exc

    def _check_hosts(self, urls: Mapping[str, str]) -> None:
        for kind, url in urls.items():
            if url.startswith(self._allowed_prefixes):
                continue
            parsed = httpx.URL(url)
            if parsed.scheme not in ("http", "https") or parsed.netloc not in self._allowed_netlocs:
                raise ProtocolError(f"{kind}_url points at another host ({parsed.host!r}); the key is not sent there",
                                    provider=self.name)


def _with_logs(status_url: str) -> str | httpx.URL:
    """The status URL asking for the run's logs (``?logs=1``), by plain concatenation when
    it has no query of its own (fal's never has: this runs on every poll)."""
    if "?" not in status_url and "#" not in status_url:
        return f"{status_url}?logs=1"
    return httpx.URL(status_url).copy_merge_params({"logs": "1"})


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_body(response: httpx.Response) -> ErrorBody | None:
    try:
        return ErrorBody.model_validate_json(response.content)
    except ValidationError:
        return None
