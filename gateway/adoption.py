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
* ``none`` -- the attempt ends ``unknown`` and at risk at once.

The callback's body is signed by the vendor, its URL is not: a forged ``attempt`` can only
bind an attempt to a job the vendor really ran for this account, and the job is then judged
by polling it. The binding is one-to-one and durable (``JobStore.bind_callback``): a vendor
job is adopted by one attempt at most, and a callback that arrived before its attempt was
waiting -- a restarted process not yet resumed, or a crash between answering the vendor and
saving the adoption -- is found by the attempt after the restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from gateway.config import Settings
from gateway.errors import AmbiguousSubmit, ProviderError
from gateway.job import Attempt
from gateway.provider import Adoption, Provider, VendorJob

if TYPE_CHECKING:
    from gateway.store.base import JobStore

#: the callback URL's query parameter naming the attempt
ATTEMPT_PARAM = "attempt"
#: callbacks kept for an attempt not (yet) waiting: one may arrive before the resume of a
#: restarted process registers its attempt. Bounded: a callback for a job polled to its end
#: lands here too and is never claimed
EARLY_MAX = 10_000
#: how long a callback's binding is kept in the store: as long as the replay guard's memory,
#: far beyond any adoption window
BINDING_TTL_S = 24 * 3600.0
_KEY_MAX = 128


def callback_url(settings: Settings, provider: Provider, attempt_key: str) -> str | None:
    """Where ``provider`` should call back for this attempt, when it can and this service is
    reachable; the URL names the attempt where the vendor adopts by callback."""
    public = settings.service.public_url
    if not public or not provider.supports_webhooks:
        return None
    url = f"{public.rstrip('/')}/webhooks/{provider.name}"
    if provider.adoption is Adoption.WEBHOOK_ATTEMPT_KEY:
        url += f"?{ATTEMPT_PARAM}={attempt_key}"  # job id and a counter: URL-safe as is
    return url


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
        return (provider.adoption is Adoption.WEBHOOK_ATTEMPT_KEY and self.settings.adoption_window_s > 0
                and callback_url(self.settings, provider, "") is not None)

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

    async def adopt(self, provider: Provider, attempt: Attempt, error: ProviderError) -> VendorJob | None:
        """The vendor job a lost submit made, when a callback names its attempt within the
        window; None when the error is no lost answer, the vendor cannot adopt, or time ran out."""
        if not isinstance(error, AmbiguousSubmit) or not self.possible(provider):
            return None
        key = attempt.attempt_key
        # waiting before looking: a callback landing while the store is read sets the future
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[key] = (provider.name, future)
        try:
            vendor_id = self._early.pop((provider.name, key), None)
            if vendor_id is None and self.store is not None:
                vendor_id = await self.store.bound_job(provider.name, key)
            if vendor_id is None:
                left = attempt.started_at + self.settings.adoption_window_s - time.time()
                if left <= 0:
                    return None
                async with asyncio.timeout(left):
                    vendor_id = await future
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(key, None)
        return provider.adopted_job(attempt.vendor_model, vendor_id)
