"""The interface every vendor adapter implements.

Adapters are *sans-I/O*: they build ``httpx.Request`` objects and parse
``httpx.Response`` objects. The core sends them with its own ``httpx.AsyncClient``, so
retries, polling, timeouts and logging live in one place, and translation is tested
from JSON fixtures with no network.

An adapter is found through the ``reelgate.providers`` entry-point group (see
``gateway.plugins``) and built with one :class:`ProviderSettings`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from gateway.capabilities import Capabilities, match
from gateway.errors import ProviderError, WebhookRejected, register_secret
from gateway.pricing import Eligibility, Quote
from gateway.request import ModelFamily, Resolution, VideoRequest

if TYPE_CHECKING:
    from gateway.emulation.base import Emulator
    from gateway.webhooks.inbound import WebhookEvent


class Adoption(StrEnum):
    """How the gateway finds a vendor job whose submit answer it lost, without paying twice
    (declared per vendor in its catalog; read by ``gateway.adoption``)."""

    #: nothing: a lost answer leaves the attempt unknown and at risk
    NONE = "none"
    #: the submit is resent with the same key and the vendor returns the job it made
    IDEMPOTENCY_KEY = "idempotency_key"
    #: the submit's callback URL names the attempt; the vendor's signed callback names its job
    WEBHOOK_ATTEMPT_KEY = "webhook_attempt_key"
    #: the vendor lists its recent jobs (OpenAI-style ``GET /videos``): a bounded scan finds
    #: the one matching our reference (echoed metadata, else prompt + created time)
    LIST_SCAN = "list_scan"


class Secret:
    """A credential that never prints itself: repr, str and f-strings show ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class ProviderSettings:
    """Everything one adapter instance is configured with."""

    name: str
    api_key: Secret | None = None
    #: where the key came from ("env:FAL_KEY", "config", "sandbox"); recorded on jobs instead of the key
    credential_ref: str = "none"
    #: overrides the adapter's default base URL (the sandbox and tests point it at an emulator)
    base_url: str | None = None
    #: vendor-specific settings (usd_per_credit, model ids, paths...), validated by the adapter
    options: Mapping[str, Any] = field(default_factory=dict)
    #: True when this adapter talks to an emulator, never a paid vendor
    sandbox: bool = False


class VendorState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (VendorState.SUCCEEDED, VendorState.FAILED, VendorState.CANCELLED)


@dataclass(frozen=True)
class VendorJob:
    """Everything needed to reach one vendor job again, and nothing secret.

    Status, result and cancel calls are built from this alone, so they can never go
    to another vendor, endpoint or credential than the one that accepted the job.
    """

    provider: str
    vendor_model: str
    vendor_id: str
    base_url: str
    credential_ref: str
    #: URLs the vendor returned for this job (fal: status_url, response_url, cancel_url)
    urls: Mapping[str, str] = field(default_factory=dict)
    #: anything else the adapter needs later (kept small; JSON-serialisable)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # by hand, not ``asdict``: every save of a job encodes it, and asdict's deep copy was
        # most of that (the mappings are copied one level, as before)
        return {"provider": self.provider, "vendor_model": self.vendor_model, "vendor_id": self.vendor_id,
                "base_url": self.base_url, "credential_ref": self.credential_ref, "urls": dict(self.urls),
                "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VendorJob:
        return cls(**data)


@dataclass(frozen=True)
class VendorStatus:
    """One poll's answer, already in neutral terms."""

    state: VendorState
    #: the vendor's own status word, for logs and job records
    vendor_status: str
    progress: float | None = None
    queue_position: int | None = None
    #: when the status itself carries the finished video (apiframe), no result call is needed
    video_url: str | None = None
    #: set when ``state`` is FAILED: the vendor's reason, classified
    error: ProviderError | None = None
    #: a vendor hint for the next poll (seconds), when it gives one
    poll_after_s: float | None = None
    #: vendor units actually billed, when the vendor says (apiframe creditCost)
    billed_units: float | None = None


@dataclass(frozen=True)
class ListedJob:
    """One job in a vendor's list of recent jobs (``Adoption.LIST_SCAN``), neutral terms."""

    vendor_id: str
    vendor_model: str | None = None
    #: unix seconds, by the vendor's clock
    created_at: float | None = None
    prompt: str | None = None
    #: our reference as the vendor echoes it back (metadata); None when it echoes none
    reference: str | None = None


@dataclass(frozen=True)
class ListPage:
    """One page of a vendor's job list, newest first."""

    jobs: list[ListedJob]
    #: the cursor of the next (older) page; None on the last
    next_after: str | None = None


@dataclass(frozen=True)
class VideoResult:
    url: str
    content_type: str = "video/mp4"
    size_bytes: int | None = None
    billed_units: float | None = None


class Provider(ABC):
    """Base class of every vendor adapter. Subclasses set the class attributes and
    implement the abstract methods; everything that talks to the network is the core's."""

    #: short, user-visible name; the entry-point name must match it
    name: ClassVar[str]
    #: one-line description for ``reelgate providers``
    title: ClassVar[str]
    #: environment variable holding the API key
    credential_env: ClassVar[str]
    default_base_url: ClassVar[str]
    #: the vendor's API reference
    docs_url: ClassVar[str]
    #: the vendor deduplicates submits by a key we send (apiframe's Idempotency-Key)
    supports_idempotency: ClassVar[bool]
    #: the vendor does not bill a job that failed on its side
    bills_failures: ClassVar[bool]
    #: polling: first interval and cap, in seconds (the vendor's guidance)
    poll_initial_s: ClassVar[float] = 2.0
    poll_max_s: ClassVar[float] = 10.0
    #: the vendor calls ``callback_url`` (given to ``build_submit``) when a job finishes;
    #: such adapters override ``verify_webhook`` and ``parse_webhook``
    supports_webhooks: ClassVar[bool] = False
    #: how a job whose submit answer was lost is found again (``Adoption``)
    adoption: ClassVar[Adoption] = Adoption.NONE

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self._auth_headers_by_accept: dict[str, httpx.Headers] = {}

    # -- configuration -------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return (self.settings.base_url or self.default_base_url).rstrip("/")

    @property
    def configured(self) -> bool:
        return self.settings.api_key is not None

    def _key(self) -> str:
        if self.settings.api_key is None:
            from gateway.errors import AuthenticationFailed

            raise AuthenticationFailed(
                f"no API key configured (set {self.credential_env})", provider=self.name
            )
        return self.settings.api_key.reveal()

    def _auth_headers(self, scheme: str, accept: str) -> httpx.Headers:
        """``Authorization: <scheme> <key>`` and ``Accept``: the same on every call, so
        normalised once per Accept value (each ``httpx.Request`` copies them). Made only once
        a key is there: a missing one raises at the call, as before."""
        headers = self._auth_headers_by_accept.get(accept)
        if headers is None:
            headers = self._auth_headers_by_accept[accept] = httpx.Headers(
                {"Authorization": f"{scheme} {self._key()}", "Accept": accept})
        return headers

    # -- data --------------------------------------------------------------------------
    @abstractmethod
    def capabilities(self) -> dict[ModelFamily, Capabilities]:
        """What each model family can do here (data from the provider's catalog)."""

    @abstractmethod
    def price(self, request: VideoRequest, resolution: Resolution) -> Quote:
        """The cost of ``request`` made at ``resolution`` (already known to be eligible)."""

    @abstractmethod
    def latency_prior_s(self, model: ModelFamily, resolution: Resolution, duration_s: int) -> float:
        """Expected seconds from submit to a finished video, before any observation."""

    def quote(self, request: VideoRequest) -> Eligibility:
        m = match(self.name, self.capabilities(), request)
        if not m.ok or m.resolution is None:
            return Eligibility(self.name, None, m.reasons, configured=self.configured)
        return Eligibility(
            self.name, self.price(request, m.resolution), (), m.degradations, configured=self.configured
        )

    # -- wire protocol (sans-I/O) ---------------------------------------------------------
    @abstractmethod
    def build_submit(self, request: VideoRequest, *, resolution: Resolution, attempt_key: str,
                     callback_url: str | None = None) -> httpx.Request:
        """The submit call. ``attempt_key`` is stable for one attempt (send it as the
        vendor's idempotency key where the vendor has one). ``callback_url``, when given,
        is where the vendor should post its webhook; adapters without webhooks ignore it."""

    @abstractmethod
    def parse_submit(self, request: VideoRequest, response: httpx.Response) -> VendorJob:
        """A vendor job from the submit answer, or raise a classified ``ProviderError``."""

    def adopted_job(self, vendor_model: str, vendor_id: str) -> VendorJob | None:
        """The vendor job ``vendor_id`` of ``vendor_model``, known from a verified callback
        or the vendor's job list rather than a submit answer (``Adoption``); None when this
        vendor cannot address a job by its id alone."""
        return None

    def build_list(self, after: str | None) -> httpx.Request | None:
        """One page of the vendor's recent jobs, newest first, after cursor ``after``
        (``Adoption.LIST_SCAN``); None when the vendor lists none."""
        return None

    def parse_list(self, response: httpx.Response) -> ListPage:
        raise NotImplementedError(f"{self.name} lists no jobs")

    @abstractmethod
    def build_status(self, job: VendorJob) -> httpx.Request: ...

    @abstractmethod
    def parse_status(self, job: VendorJob, response: httpx.Response) -> VendorStatus: ...

    def build_result(self, job: VendorJob) -> httpx.Request | None:
        """The call that fetches the finished video's URL; None when the status has it."""
        return None

    def parse_result(self, job: VendorJob, response: httpx.Response) -> VideoResult:
        raise NotImplementedError(f"{self.name} has no result call")

    def build_cancel(self, job: VendorJob) -> httpx.Request | None:
        """The cancel call; None when the vendor cannot cancel."""
        return None

    def parse_cancel(self, job: VendorJob, response: httpx.Response) -> bool:
        """True when the vendor accepted the cancellation."""
        return response.is_success

    def build_download(self, job: VendorJob, result: VideoResult) -> httpx.Request:
        """The call that fetches the MP4 bytes (authenticated where the vendor requires it)."""
        return httpx.Request("GET", result.url)

    # -- webhooks (see gateway.webhooks.inbound) ---------------------------------------------
    def build_webhook_keys(self) -> httpx.Request | None:
        """The call that fetches the vendor's public verification keys (fal's JWKS);
        None when the vendor signs with a shared secret or sends no webhooks."""
        return None

    def parse_webhook_keys(self, response: httpx.Response) -> list[Any]:
        """The verification keys from ``build_webhook_keys``' answer."""
        return []

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, now: float,
                       keys: Sequence[Any] = ()) -> None:
        """Return only if ``body`` provably comes from the vendor and is fresh (``now`` in
        unix seconds); otherwise raise ``WebhookRejected``."""
        raise WebhookRejected("this provider sends no webhooks", provider=self.name, reason="unsupported")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """The vendor job id and neutral status a *verified* webhook carries."""
        raise WebhookRejected("this provider sends no webhooks", provider=self.name, reason="unsupported")

    # -- sandbox -------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def emulator(cls, **options: Any) -> Emulator:
        """A local, wire-faithful emulator of this vendor (served by ``reelgate sandbox``)."""
