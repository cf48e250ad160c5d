"""Vendor-neutral plumbing for webhooks a vendor sends us.

An adapter knows how its vendor signs and what the body says
(``Provider.verify_webhook`` / ``Provider.parse_webhook``); this module holds what every
vendor shares: the parsed :class:`WebhookEvent`, header and timestamp checks, a cache of
verification keys (fal's JWKS) with a bounded lifetime, and a memory of deliveries
already seen.

Duplicates and reordering are expected (vendors retry deliveries, and a poll may have
already seen the terminal state). Parsing is pure and so harmless to repeat; the service
acts at most once per :attr:`WebhookEvent.dedupe_key` -- vendor, vendor job id and state
-- remembered durably in the job store (:class:`ReplayGuard`), and ignores an event for
a job that is already terminal.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from gateway.errors import ReelgateError, Unavailable, WebhookRejected

if TYPE_CHECKING:
    from gateway.provider import Provider, VendorStatus

#: how far a signed timestamp may be from our clock (fal's documented 300 s, and the
#: Standard Webhooks default)
TIMESTAMP_TOLERANCE_S = 300.0
#: a key set is trusted at most this long (fal: "cache the JWKS for up to 24 hours")
MAX_KEY_TTL_S = 24 * 3600.0
DEFAULT_KEY_TTL_S = 3600.0
#: a signature that fails against cached keys refetches them (the vendor may have
#: rotated), but no more often than this, so forged traffic cannot hammer the vendor
MIN_REFRESH_INTERVAL_S = 60.0
#: how long a vendor webhook's dedupe key is remembered: longer than any vendor retries a
#: delivery (fal: ~2 h); past it a replay finds its job terminal and changes nothing either
SEEN_TTL_S = 24 * 3600.0

Clock = Callable[[], float]
KeyFetcher = Callable[[], Awaitable[list[Any]]]
#: seconds to wait after the n-th failed key fetch in a row (1-based)
FetchBackoff = Callable[[int], float]
#: remembers a key for ``ttl_s``; True the first time (``JobStore.first_sighting``)
Sighting = Callable[..., Awaitable[bool]]


@dataclass(frozen=True)
class WebhookEvent:
    """One verified vendor webhook, in neutral terms."""

    provider: str
    vendor_id: str
    status: VendorStatus
    #: the vendor's event word ("OK", "completed", ...), for logs and job records
    vendor_event: str

    @property
    def dedupe_key(self) -> tuple[str, str, str]:
        """Vendor, vendor job id, state: the second delivery of one key changes nothing."""
        return (self.provider, self.vendor_id, self.status.state.value)


def require_headers(provider: str, headers: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    """The named headers' values (case-insensitive), or ``WebhookRejected`` naming the first missing."""
    lowered = {k.lower(): v for k, v in headers.items()}
    found = {}
    for name in names:
        value = lowered.get(name.lower(), "").strip()
        if not value:
            raise WebhookRejected(f"header {name} is missing", provider=provider, reason="missing_header")
        found[name] = value
    return found


def check_timestamp(provider: str, value: str, *, now: float, tolerance_s: float = TIMESTAMP_TOLERANCE_S) -> int:
    """The signed unix-seconds timestamp, if within ``tolerance_s`` of ``now`` either way.

    A stale message may be a replay; one from the future means a clock we cannot trust."""
    try:
        stamp = int(value)
    except ValueError:
        raise WebhookRejected(f"timestamp {value[:32]!r} is not unix seconds", provider=provider,
                              reason="bad_timestamp") from None
    if abs(now - stamp) > tolerance_s:
        raise WebhookRejected(f"timestamp is {now - stamp:+.0f} s from now (tolerance {tolerance_s:g} s)",
                              provider=provider, reason="stale")
    return stamp


class KeyCache:
    """Verification keys fetched on demand and kept for at most ``ttl_s`` (≤ 24 h).

    ``fetch`` is injected (see :func:`key_fetcher`), so tests hand in a list and the
    service hands in an HTTP call through its own client. A failed fetch is not repeated
    for every incoming webhook: the next one waits ``backoff(failures)`` seconds (at least
    ``min_refresh_s``), and meanwhile :meth:`keys` raises ``Unavailable`` at once, naming
    the wait (``retry_in_s``) so the caller can answer 503 with Retry-After."""

    def __init__(self, fetch: KeyFetcher, *, ttl_s: float = DEFAULT_KEY_TTL_S, clock: Clock = time.monotonic,
                 min_refresh_s: float = MIN_REFRESH_INTERVAL_S, backoff: FetchBackoff | None = None,
                 provider: str = "webhooks") -> None:
        if not 0 < ttl_s <= MAX_KEY_TTL_S:
            raise ValueError(f"key TTL must be in (0, {MAX_KEY_TTL_S:g}] seconds, not {ttl_s}")
        self._fetch = fetch
        self.ttl_s = ttl_s
        self.min_refresh_s = min_refresh_s
        self._backoff = backoff
        self.provider = provider
        self._clock = clock
        self._keys: list[Any] | None = None
        self._fetched_at = float("-inf")
        self._failures = 0
        self._failed_at = float("-inf")
        self.fetches = 0

    async def keys(self) -> list[Any]:
        if self._keys is None or self._clock() - self._fetched_at >= self.ttl_s:
            await self.refresh()
        return list(self._keys or [])

    async def refresh(self) -> None:
        wait = self.retry_in_s()
        if wait > 0:
            raise Unavailable(f"webhook verification keys unavailable; next fetch in {wait:.0f} s",
                              provider=self.provider, vendor_code="keys_unavailable")
        self.fetches += 1
        try:
            keys = list(await self._fetch())
        except (ReelgateError, httpx.HTTPError) as exc:
            self._failures += 1
            self._failed_at = self._clock()
            raise Unavailable(f"fetching webhook verification keys failed ({type(exc).__name__}); "
                              f"next fetch in {self.retry_in_s():.0f} s",
                              provider=self.provider, vendor_code="keys_unavailable") from exc
        self._failures = 0
        self._keys = keys
        self._fetched_at = self._clock()

    def retry_in_s(self) -> float:
        """Seconds before the next fetch is allowed after failed ones (0 when it is now)."""
        if not self._failures:
            return 0.0
        delay = max(self._backoff(self._failures) if self._backoff else 0.0, self.min_refresh_s)
        return max(self._failed_at + delay - self._clock(), 0.0)

    @property
    def may_refresh(self) -> bool:
        """True when an early refetch (after a failed verification) is allowed now."""
        return self._clock() - self._fetched_at >= self.min_refresh_s and self.retry_in_s() == 0


def key_fetcher(provider: Provider, client: httpx.AsyncClient) -> KeyFetcher:
    """A fetcher for :class:`KeyCache` that asks ``provider`` for its key set over ``client``."""

    async def fetch() -> list[Any]:
        request = provider.build_webhook_keys()
        if request is None:
            return []
        return provider.parse_webhook_keys(await client.send(request))

    return fetch


async def verify_and_parse(provider: Provider, headers: Mapping[str, str], body: bytes, *, now: float,
                           keys: KeyCache | None = None) -> WebhookEvent:
    """Verify one delivery with the provider (refetching keys once if they may have
    rotated) and parse it. Raises ``WebhookRejected`` for anything we must not act on."""
    current = await keys.keys() if keys is not None else []
    try:
        provider.verify_webhook(headers, body, now=now, keys=current)
    except WebhookRejected as exc:
        if keys is None or exc.reason != "bad_signature" or not keys.may_refresh:
            raise
        await keys.refresh()
        provider.verify_webhook(headers, body, now=now, keys=await keys.keys())
    return provider.parse_webhook(headers, body)


class ReplayGuard:
    """Acts once per :attr:`WebhookEvent.dedupe_key`: a vendor's retried delivery, or a
    captured one replayed (apiframe signs no timestamp, so its deliveries verify forever),
    wakes no second poll. Remembered for ``ttl_s`` in the job store, so it holds across a
    restart and across replicas sharing the store."""

    def __init__(self, sighting: Sighting, *, ttl_s: float = SEEN_TTL_S) -> None:
        self._sighting = sighting
        self.ttl_s = ttl_s

    async def first_sighting(self, event: WebhookEvent) -> bool:
        # unit separators: no vendor id or state word contains one
        return await self._sighting("\x1f".join(event.dedupe_key), ttl_s=self.ttl_s)
