"""Adoption: finding a vendor job whose submit answer was lost, without paying again.

A submit whose answer never came (``AmbiguousSubmit``, or a process that died with it in
flight) may have created a paid job. How it is found again is the vendor's, declared as
data in its catalog (``Provider.adoption``):

* ``idempotency_key`` -- resent with the same key, the vendor returns its job
  (``vendor_calls``, ``runner.resume``);
* ``webhook_attempt_key`` -- when this service has a public URL, each submit's callback
  URL names the attempt (``?attempt=<attempt key>``). The attempt then waits, pending, up to
  ``adoption_window_s`` after its submit; a verified callback naming it hands over the
  vendor's job id and the attempt is polled like any accepted one. When the window passes,
  it ends ``unknown`` and at risk, as without adoption;
* ``list_scan`` -- the vendor lists its recent jobs (the OpenAI-style ``GET /videos``): a
  bounded scan (``SCAN_PAGES`` pages, newest first, ``SCAN_WAITS_S`` rescans, all within
  the window) looks for the job carrying our reference -- the attempt key, where the vendor
  echoes metadata; else the same prompt and model created within ``SCAN_CLOCK_S`` of the
  submit. Exactly one match is adopted; none, or more than one (two identical prompts at
  the same moment), and the attempt ends ``unknown`` and at risk;
* ``none`` -- the attempt ends ``unknown`` and at risk at once.

The callback's body is signed by the vendor, its URL is not, and fal signs every account's
callbacks with one key set: anyone with a fal account can have fal call our URL, signed, for
*their* job, with any ``attempt``. So the gateway signs the attempt it names
(``?attempt=<key>&attempt_sig=<HMAC>``, keyed by a digest of the credential it submits with:
the same on every replica and across restarts, known to no caller), and a callback whose
attempt is unsigned or signed for another attempt is refused before anything acts on it
(``attempt_signed``); otherwise it would bind someone's attempt to a foreign job, and the
real job's callback could not adopt it after that. The binding is one-to-one and durable
(``JobStore.bind_callback``): a vendor job is adopted by one attempt at most, and a callback
that arrived before its attempt was waiting -- a restarted process not yet resumed, or a
crash between answering the vendor and saving the adoption -- is found by the attempt after
the restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from gateway.config import Settings
from gateway.errors import AmbiguousSubmit, ProviderError, StoreUnavailable
from gateway.job import Attempt
from gateway.provider import Adoption, ListedJob, ListPage, Provider, VendorJob

if TYPE_CHECKING:
    from gateway.store.base import JobStore

#: the callback URL's query parameter naming the attempt ...
ATTEMPT_PARAM = "attempt"
#: ... and the one signing it (``attempt_signature``)
SIGNATURE_PARAM = "attempt_sig"
#: what the signature key is derived for (the credential is never the key itself)
_SIGNING_LABEL = b"reelgate callback attempt v1\0"
#: callbacks kept for an attempt not (yet) waiting: one may arrive before the resume of a
#: restarted process registers its attempt. Bounded: a callback for a job polled to its end
#: lands here too and is never claimed
EARLY_MAX = 10_000
#: how long a callback's binding is kept in the store: as long as the replay guard's memory,
#: far beyond any adoption window
BINDING_TTL_S = 24 * 3600.0
_KEY_MAX = 128
#: an attempt waiting to be adopted looks for its binding in the store this often: a callback
#: that reached another replica is bound there even when its relay (Redis) did not arrive
BINDING_CHECK_S = 2.0
#: a list scan reads at most this many pages (newest first) ...
SCAN_PAGES = 3
#: ... matching jobs created this close to our submit (two clocks; created_at in whole seconds)
SCAN_CLOCK_S = 30.0
#: a scan that found nothing is repeated after these waits (a vendor may list a new job late)
SCAN_WAITS_S = (1.0, 3.0)

#: reads one page of a vendor's job list (``VendorCalls.list_page``)
Lister = Callable[[Provider, str | None], Awaitable[ListPage]]


def callback_url(settings: Settings, provider: Provider, attempt_key: str) -> str | None:
    """Where ``provider`` should call back for this attempt, when it can and this service is
    reachable; the URL names the attempt, signed, where the vendor adopts by callback."""
    public = settings.service.public_url
    if not public or not provider.supports_webhooks:
        return None
    url = f"{public.rstrip('/')}/webhooks/{provider.name}"
    signature = attempt_signature(provider, attempt_key)
    if provider.adoption is Adoption.WEBHOOK_ATTEMPT_KEY and signature is not None:
        # job id and a counter, and hex: URL-safe as they are
        url += f"?{ATTEMPT_PARAM}={attempt_key}&{SIGNATURE_PARAM}={signature}"
    return url


def attempt_signature(provider: Provider, attempt_key: str) -> str | None:
    """HMAC-SHA256 of (vendor, attempt key), keyed by a digest of the vendor credential this
    gateway submits with (every replica has it, a caller does not); None without one. The
    credential and the key never leave this function."""
    credential = provider.settings.api_key
    if credential is None:
        return None
    key = hashlib.sha256(_SIGNING_LABEL + credential.reveal().encode()).digest()
    return hmac.new(key, f"{provider.name}\0{attempt_key}".encode(), hashlib.sha256).hexdigest()[:32]


def attempt_signed(provider: Provider, attempt_key: str, signature: str | None) -> bool:
    """Whether a callback URL's ``attempt`` carries the signature this gateway gave it."""
    expected = attempt_signature(provider, attempt_key)
    return expected is not None and signature is not None and hmac.compare_digest(expected, signature)


class Adoptions:
    """Attempts waiting to be adopted (attempt key -> the vendor job id it receives)."""

    def __init__(self, settings: Settings, store: JobStore | None = None) -> None:
        self.settings = settings
        #: where bindings outlive this process; None: in memory only (the library, tests)
        self.store = store
        self._waiting: dict[str, tuple[str, asyncio.Future[str]]] = {}
        self._early: OrderedDict[tuple[str, str], str] = OrderedDict()

    @property
    def waiting(self) -> int:
        """Attempts waiting now."""
        return len(self._waiting)

    def possible(self, provider: Provider) -> bool:
        if self.settings.adoption_window_s <= 0:
            return False
        if provider.adoption is Adoption.LIST_SCAN:
            return True
        return (provider.adoption is Adoption.WEBHOOK_ATTEMPT_KEY  # the URL names the attempt, signed
                and callback_url(self.settings, provider, "") is not None
                and attempt_signature(provider, "") is not None)

    async def offer(self, provider: str, attempt_key: str, vendor_id: str) -> bool:
        """A verified callback for ``provider``'s job ``vendor_id`` names ``attempt_key``.
        True when an attempt was waiting for it (it is adopted). Bound in the store first,
        before the vendor hears 200: a crash after that loses nothing."""
        if len(attempt_key) > _KEY_MAX:
            return False
        if self.store is not None and not await self.store.bind_callback(provider, vendor_id, attempt_key,
                                                                          ttl_s=BINDING_TTL_S):
            return False  # that job or that attempt is bound to another already
        waiting = self._waiting.get(attempt_key)
        if waiting is not None and waiting[0] == provider and not waiting[1].done():
            waiting[1].set_result(vendor_id)
            return True
        self._early[(provider, attempt_key)] = vendor_id
        while len(self._early) > EARLY_MAX:
            self._early.popitem(last=False)
        return False

    async def leave_bound(self, provider: str, attempt: Attempt) -> None:
        """The vendor accepted ``attempt`` (its job id is on it) but this replica may no longer
        save the job (``LeaseLost``: it stalled past its lease and another replica claimed the
        job). That replica resumes the attempt as one whose submit may have left, and adopts
        what is bound to it: so the vendor job is bound here, as a callback naming the attempt
        would bind it, rather than left paid and followed by no one. Best effort: a binding
        that does not land leaves the attempt to the callback, the list scan, or ``unknown``."""
        vendor_job = attempt.vendor_job
        if self.store is None or vendor_job is None:
            return
        try:
            await self.store.bind_callback(provider, vendor_job.vendor_id, attempt.attempt_key, ttl_s=BINDING_TTL_S)
        except StoreUnavailable:
            pass

    async def adopt(self, provider: Provider, attempt: Attempt, error: ProviderError, *, prompt: str = "",
                    lister: Lister | None = None) -> VendorJob | None:
        """The vendor job a lost submit made, when a callback names its attempt (or the
        vendor's list shows it) within the window; None when the error is no lost answer,
        the vendor cannot adopt, or nothing was found in time."""
        if not isinstance(error, AmbiguousSubmit) or not self.possible(provider):
            return None
        if provider.adoption is Adoption.LIST_SCAN:
            return None if lister is None else await self._scan(provider, attempt, prompt, lister)
        key = attempt.attempt_key
        # waiting before looking: a callback landing while the store is read sets the future
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[key] = (provider.name, future)
        try:
            vendor_id = self._early.pop((provider.name, key), None)
            if vendor_id is None and self.store is not None:
                vendor_id = await self.store.bound_job(provider.name, key)
            if vendor_id is None:
                vendor_id = await self._wait(provider.name, key, future,
                                             attempt.started_at + self.settings.adoption_window_s)
        finally:
            self._waiting.pop(key, None)
        return None if vendor_id is None else provider.adopted_job(attempt.vendor_model, vendor_id)

    async def _wait(self, provider: str, key: str, future: asyncio.Future[str], deadline: float) -> str | None:
        """The vendor job id a callback names for attempt ``key``, by ``deadline`` (Unix time):
        handed over here (the future), or bound in the store by another replica whose relay
        never reached this one (Redis down): looked up every ``BINDING_CHECK_S``."""
        while (left := deadline - time.time()) > 0:
            try:
                async with asyncio.timeout(left if self.store is None else min(left, BINDING_CHECK_S)):
                    return await asyncio.shield(future)  # shielded: a timeout here leaves it waiting
            except TimeoutError:
                pass
            if self.store is None:
                continue
            try:
                found = await self.store.bound_job(provider, key)
            except StoreUnavailable:  # PostgreSQL away too: the next look may find it
                continue
            if found is not None:
                return found
        return None

    # -- list scan -------------------------------------------------------------------------
    async def _scan(self, provider: Provider, attempt: Attempt, prompt: str, lister: Lister) -> VendorJob | None:
        deadline = attempt.started_at + self.settings.adoption_window_s
        for wait in (0.0, *SCAN_WAITS_S):
            if time.time() + wait > deadline:
                return None
            await asyncio.sleep(wait)
            # bound already: by the replica that sent it and lost the job before saving the
            # answer (``leave_bound``), or by an earlier scan of a resume cut short
            bound = None if self.store is None else await self.store.bound_job(provider.name, attempt.attempt_key)
            if bound is not None:
                return provider.adopted_job(attempt.vendor_model, bound)
            try:
                found = await self._scan_once(provider, attempt, prompt, lister)
            except ProviderError:
                continue  # the list did not answer this time; the next scan may
            if len(found) > 1:
                return None  # two jobs fit: we cannot tell ours, so we claim neither
            if found:
                job = found[0]
                if self.store is not None and not await self.store.bind_callback(
                        provider.name, job.vendor_id, attempt.attempt_key, ttl_s=BINDING_TTL_S):
                    return None  # another attempt adopted that job already
                return provider.adopted_job(job.vendor_model or attempt.vendor_model, job.vendor_id)
        return None

    @staticmethod
    async def _scan_once(provider: Provider, attempt: Attempt, prompt: str, lister: Lister) -> list[ListedJob]:
        found: dict[str, ListedJob] = {}  # by id: a job seen on two pages is one job
        after: str | None = None
        for _ in range(SCAN_PAGES):
            page = await lister(provider, after)
            found |= {j.vendor_id: j for j in matching(page.jobs, attempt, prompt)}
            oldest = min((j.created_at for j in page.jobs if j.created_at is not None), default=None)
            if page.next_after is None or (oldest is not None and oldest < attempt.started_at - SCAN_CLOCK_S):
                break  # the end of the list, or past the moment of our submit
            after = page.next_after
        return list(found.values())


def matching(listed: Sequence[ListedJob], attempt: Attempt, prompt: str) -> list[ListedJob]:
    """The listed jobs that may be ``attempt``'s: the one echoing its key when the vendor
    echoes references; else those with its prompt and model created close to its submit."""
    if any(j.reference is not None for j in listed):
        return [j for j in listed if j.reference == attempt.attempt_key]
    return [j for j in listed
            if j.prompt == prompt and j.vendor_model in (None, attempt.vendor_model)
            and j.created_at is not None and abs(j.created_at - attempt.started_at) <= SCAN_CLOCK_S]
