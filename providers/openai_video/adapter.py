"""A generic adapter for vendors that speak the OpenAI Videos shape.

Endpoints (paths are catalog data, these are the OpenAI defaults):

* ``POST {base}/videos``               create; JSON ``{model, prompt, seconds, size, input_reference}``
* ``GET  {base}/videos/{id}``          retrieve the ``Video`` object (``openai-poll-after-ms`` hint)
* ``GET  {base}/videos/{id}/content``  the MP4 bytes (Bearer auth required)
* ``GET  {base}/videos?limit=&order=desc&after=``  recent jobs, newest first (``after``: the
  previous page's ``last_id``); read to adopt a job whose create answer was lost
* ``GET  {base}/models/{slug}``        a model's price (railwail-style ``pricing.credit_cost_fixed``)

Reference: https://developers.openai.com/api/docs/guides/video-generation and
openai-python ``resources/videos.py``. A vendor is an :class:`OpenAIVideoCatalog` (``catalog.py``)
plus the class attributes ``Provider`` requires; see ``providers.railwail`` for one. The
vendor's objects are read as the models in ``models.py``.
"""

from __future__ import annotations

import functools
import re
import time
from typing import Any, ClassVar, Literal

import httpx
from pydantic import ValidationError

from gateway import policies
from gateway.capabilities import Capabilities
from gateway.errors import (
    AuthenticationFailed,
    ContentRejected,
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
from gateway.frames import video_size
from gateway.pricing import Quote
from gateway.provider import (
    ListedJob,
    ListPage,
    Provider,
    ProviderSettings,
    VendorJob,
    VendorState,
    VendorStatus,
    VideoResult,
)
from gateway.request import ImageInput, ImageKind, ModelFamily, Resolution, VideoRequest
from gateway.transport import URLPrefix, json_model, post_json
from providers.openai_video.catalog import OpenAIVideoCatalog
from providers.openai_video.models import ErrorBody, ModelPricing, Video, VideoList
from providers.openai_video.offer import Offer

Phase = Literal["submit", "status", "content", "model", "list"]
#: a list page's size when scanning for a lost job (the OpenAI shape allows 0-100)
LIST_LIMIT = 100

#: ``video_size``, made once per (aspect ratio, resolution): a handful of pairs, asked per submit
_video_size = functools.cache(video_size)

STATES: dict[str, VendorState] = {
    "queued": VendorState.QUEUED,
    "in_progress": VendorState.RUNNING,
    "completed": VendorState.SUCCEEDED,
    "failed": VendorState.FAILED,
}


# -- errors ---------------------------------------------------------------------------
def _error_body(response: httpx.Response) -> ErrorBody | None:
    try:
        return ErrorBody.model_validate(response.json()["error"])
    except (ValueError, KeyError, TypeError, ValidationError):
        return None


def retry_after_s(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, ``retry-after`` (the standard header, read
    by the gateway's one parser), or ``X-RateLimit-Reset`` (unix time), in the order the
    OpenAI client prefers them."""
    now = time.time() if now is None else now
    try:
        if "retry-after-ms" in headers:
            return max(float(headers["retry-after-ms"]) / 1000, 0.0)
        if "retry-after" in headers:
            return policies.retry_after_s(headers, now)
        if "x-ratelimit-reset" in headers:
            return max(float(headers["x-ratelimit-reset"]) - now, 0.0)
    except ValueError:
        return None
    return None


def classify_error(provider: str, catalog: OpenAIVideoCatalog, response: httpx.Response, *, phase: Phase,
                   now: float | None = None) -> ProviderError:
    """One non-success response as a gateway error, by status code and ``error.code``."""
    status = response.status_code
    body = _error_body(response)
    code = body.code if body else None
    message = (body.message if body and body.message else None) or f"HTTP {status} without an error body"
    kw: dict[str, Any] = {"provider": provider, "status_code": status,
                          "vendor_code": code or (body.type if body else None)}
    if status == 404 and phase in ("status", "content"):
        # we only ask for jobs the vendor gave us: it accepted this one and now forgets it,
        # which is amnesia, not rejection (the job may still run and bill)
        return VendorLostJob(f"job not found: {message}", **kw)
    by_code = catalog.error_codes.get(code or "")
    if status == 429 or by_code is RateLimited:
        return RateLimited(message, retry_after=retry_after_s(response.headers, now), **kw)
    if by_code is not None and status < 500:
        return by_code(message, **kw)
    if status in (401, 403):
        return AuthenticationFailed(message, **kw)
    if status == 402:
        return InsufficientCredits(message, **kw)
    if status == 408 or status >= 500:
        return Unavailable(message, **kw)
    if 400 <= status < 500:
        return ProviderRejected(message, **kw)
    return ProtocolError(f"unexpected HTTP {status}", **kw)


class OpenAIVideoAdapter(Provider):
    """``Provider`` for any OpenAI-Videos-shaped API; a subclass sets ``catalog`` and the
    class attributes (name, credential_env, default_base_url, ...)."""

    catalog: ClassVar[OpenAIVideoCatalog]

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        self.cat = self.catalog.with_options(settings.options)
        self._offer = Offer(self.name, self.cat)
        self._create_url: httpx.URL | None = None
        self._job_urls = URLPrefix(self.base_url)  # a job's status and content URLs, cheaply parsed

    # -- data ------------------------------------------------------------------------
    def capabilities(self) -> dict[ModelFamily, Capabilities]:
        return self._offered().capabilities

    def price(self, request: VideoRequest, resolution: Resolution) -> Quote:
        return self._offered().quote(request.model, resolution, request.duration_s)

    def _offered(self) -> Offer:
        """The catalog's offer, made again only when ``cat`` is another catalog (tests swap it)."""
        if self._offer.catalog is not self.cat:
            self._offer = Offer(self.name, self.cat)
        return self._offer

    def latency_prior_s(self, model: ModelFamily, resolution: Resolution, duration_s: int) -> float:
        return self.cat.latency_s.get((model, resolution, duration_s), 60.0 * duration_s / 5)

    # -- wire ------------------------------------------------------------------------
    def _headers(self, accept: str) -> httpx.Headers:
        return self._auth_headers("Bearer", accept)

    def _url(self, base: str, path: str, **params: str) -> str:
        return base.rstrip("/") + path.format(**params)

    def build_submit(self, request: VideoRequest, *, resolution: Resolution, attempt_key: str,
                     callback_url: str | None = None) -> httpx.Request:
        # callback_url is ignored: the create call takes no webhook URL (OpenAI's video webhooks
        # are set per project, event names UNCONFIRMED), and railwail documents none.
        # The core checks capabilities first; this guard stops a silent drop if it did not.
        for name in ("end_image", "loop", "concepts"):
            if getattr(request, name):
                raise InvalidRequest(name, f"the OpenAI video shape has no field for it ({self.name})")
        body: dict[str, Any] = {
            "model": self.cat.models[request.model],
            "prompt": request.prompt,
            "seconds": str(request.duration_s),
            "size": _video_size(request.aspect_ratio, resolution),
        }
        if request.start_image is not None:
            body["input_reference"] = {"image_url": _image_ref(request.start_image)}
        if self.cat.metadata_key is not None:  # our reference, for the list scan to find
            body["metadata"] = {self.cat.metadata_key: attempt_key}
        if self._create_url is None:  # parsed once: httpx parses a URL string in Python on every request
            self._create_url = httpx.URL(self._url(self.base_url, self.cat.paths.create))
        return post_json(self._create_url, body, self._headers("application/json"))

    def parse_submit(self, request: VideoRequest, response: httpx.Response) -> VendorJob:
        video = self._video(response, phase="submit")
        return self._job(video.model or self.cat.models[request.model], video.id)

    def _job(self, vendor_model: str, video_id: str) -> VendorJob:
        urls = {"status": self._url(self.base_url, self.cat.paths.retrieve, video_id=video_id),
                "content": self._url(self.base_url, self.cat.paths.content, video_id=video_id)}
        return VendorJob(self.name, vendor_model, video_id, self.base_url, self.settings.credential_ref, urls)

    # -- adoption by list scan ---------------------------------------------------------
    def adopted_job(self, vendor_model: str, vendor_id: str) -> VendorJob | None:
        # an id read from the list goes into URL paths: only a plain token does
        return self._job(vendor_model, vendor_id) if _VIDEO_ID.fullmatch(vendor_id) else None

    def build_list(self, after: str | None) -> httpx.Request:
        params = {"limit": str(LIST_LIMIT), "order": "desc", **({"after": after} if after else {})}
        return httpx.Request("GET", self._url(self.base_url, self.cat.paths.list), params=params,
                             headers=self._headers("application/json"))

    def parse_list(self, response: httpx.Response) -> ListPage:
        if not response.is_success:
            raise classify_error(self.name, self.cat, response, phase="list")
        try:
            page = VideoList.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise ProtocolError(f"unreadable video list ({type(exc).__name__})", provider=self.name,
                                status_code=response.status_code) from exc
        jobs = [ListedJob(v.id, v.model, v.created_at, v.prompt, self._reference(v)) for v in page.data]
        return ListPage(jobs, page.last_id if page.has_more and page.data else None)

    def _reference(self, video: Video) -> str | None:
        """Our attempt key as the vendor echoes it in ``metadata``, when it does."""
        key = self.cat.metadata_key
        value = (video.metadata or {}).get(key) if key else None
        return str(value) if value is not None else None

    def build_status(self, job: VendorJob) -> httpx.Request:
        return self._job_urls.get(job.urls["status"], self._headers("application/json"))

    def parse_status(self, job: VendorJob, response: httpx.Response) -> VendorStatus:
        video = self._video(response, phase="status")
        state = STATES.get(video.status)
        if state is None:
            raise ProtocolError(f"unknown video status {video.status!r}", provider=self.name,
                                status_code=response.status_code, vendor_code=video.status)
        progress = None if video.progress is None else min(max(video.progress / 100, 0.0), 1.0)
        hint = response.headers.get("openai-poll-after-ms")
        poll_after = float(hint) / 1000 if hint and hint.isdigit() else None
        error = self._failure(video, response.status_code) if state is VendorState.FAILED else None
        url = job.urls["content"] if state is VendorState.SUCCEEDED else None
        return VendorStatus(state, video.status, progress, video_url=url, error=error, poll_after_s=poll_after)

    def build_download(self, job: VendorJob, result: VideoResult) -> httpx.Request:
        # The content endpoint wants the Bearer key; any other host (a CDN the vendor
        # redirected us to) must never see it.
        if result.url.startswith(job.base_url.rstrip("/") + "/"):
            return self._job_urls.get(result.url, self._headers("application/binary"))
        return httpx.Request("GET", result.url)

    # -- model pricing (for a later price refresh by the core) -----------------------------
    def build_model_pricing(self, model: ModelFamily = ModelFamily.RAY_2_FLASH) -> httpx.Request:
        url = self._url(self.base_url, self.cat.paths.model, slug=self.cat.models[model])
        return httpx.Request("GET", url, headers=self._headers("application/json"))

    def parse_model_pricing(self, response: httpx.Response) -> ModelPricing:
        return parse_model_pricing(self.name, self.cat, response)

    # -- helpers ---------------------------------------------------------------------
    def _video(self, response: httpx.Response, *, phase: Phase) -> Video:
        if not response.is_success:
            raise classify_error(self.name, self.cat, response, phase=phase)
        try:
            return json_model(Video, response)
        except (ValueError, ValidationError) as exc:
            raise ProtocolError(f"unreadable video object ({type(exc).__name__})", provider=self.name,
                                status_code=response.status_code) from exc

    def _failure(self, video: Video, status_code: int) -> ProviderError:
        code = video.error.code if video.error else None
        message = (video.error.message if video.error else None) or "the video failed without a reason"
        cls = ContentRejected if code in self.cat.content_policy_codes else GenerationFailed
        return cls(message, provider=self.name, status_code=status_code, vendor_code=code)


def parse_model_pricing(provider: str, catalog: OpenAIVideoCatalog, response: httpx.Response) -> ModelPricing:
    """``pricing`` of a ``GET /models/{slug}`` answer (railwail's model catalogue)."""
    if not response.is_success:
        raise classify_error(provider, catalog, response, phase="model")
    try:
        return ModelPricing.model_validate(response.json()["pricing"])
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise ProtocolError("unreadable model pricing", provider=provider,
                            status_code=response.status_code) from exc


#: a vendor's video id, as it may appear in a URL path
_VIDEO_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _image_ref(image: ImageInput) -> str:
    """A URL as is; a local file inlined as a data URI (the vendor cannot read our disk)."""
    return image.value if image.kind is not ImageKind.PATH else image.as_data_uri()
