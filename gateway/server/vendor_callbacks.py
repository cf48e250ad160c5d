"""Vendor callbacks at the service: their verification keys, their dedupe, and what a
verified one does -- wake the poll of the vendor job it names, hand a job to the attempt
whose submit answer was lost (adoption), or relay it to the replica that can do either
(docs/deploy.md, "Inbound vendor webhooks at any replica")."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from gateway.api import Gateway
from gateway.store.base import JobStore
from gateway.webhooks.inbound import KeyCache, ReplayGuard, key_fetcher
from gateway.webhooks.outbound import Backoff

log = logging.getLogger("reelgate.server")

#: the shared-state event carrying a vendor callback to the replica following its job
WEBHOOK_EVENT = "webhook"
#: after a failed fetch of a vendor's webhook keys: 1 min, doubling to 10 min, no jitter
#: (one fetch per vendor at a time, nothing to spread out)
KEY_FETCH_BACKOFF = Backoff(base_s=60.0, cap_s=600.0, jitter=0.0)


@dataclass
class VendorCallbacks:
    gateway: Gateway
    store: JobStore
    _key_caches: dict[str, KeyCache] = field(default_factory=dict)
    #: relayed callbacks being adopted (kept here so their tasks are not collected)
    _relays: set[asyncio.Task[None]] = field(default_factory=set)

    def listen(self) -> None:
        """Act on callbacks other replicas relay (when shared state is configured)."""
        if self.gateway.shared.state is not None:
            self.gateway.shared.state.on_event(WEBHOOK_EVENT, self._on_relayed)

    def keys(self, provider: str) -> KeyCache:
        """The verification keys of one vendor's callbacks, fetched and cached on demand."""
        if provider not in self._key_caches:
            adapter = self.gateway.providers[provider]
            self._key_caches[provider] = KeyCache(key_fetcher(adapter, self.gateway.client),
                                                  backoff=KEY_FETCH_BACKOFF.delay, provider=provider)
        return self._key_caches[provider]

    @property
    def replay_guard(self) -> ReplayGuard:
        """Vendor webhooks already acted on, remembered in the store (restarts, replicas)."""
        return ReplayGuard(self.store.first_sighting)

    async def act(self, provider: str, vendor_id: str, attempt: str | None,
                  *, first: bool = True) -> tuple[bool, bool]:
        """A verified vendor callback: wake the poll of the vendor job it names, or hand the
        job to the attempt it names whose submit answer was lost (adoption). A duplicate
        (``first`` False) may still adopt: the process may have died between seeing it first
        and saving the adoption, and the binding is durable and one-to-one, so a replay adopts
        nothing a first sighting did not. When this replica does neither for a first
        sighting, it is relayed to the others over Redis pub/sub (the one that follows the
        job acts at once; without Redis, that job moves on at its next poll, and an attempt
        waiting to adopt finds the stored binding).
        Returns (matched here, relayed)."""
        matched = first and self.gateway.nudge(provider, vendor_id)
        if not matched and attempt:
            matched = await self.gateway.adopt(provider, attempt, vendor_id)
        if matched or not first:
            return matched, False
        state = self.gateway.shared.state
        if state is None or not state.available:
            return False, False
        state.spawn(state.publish(WEBHOOK_EVENT, provider=provider, vendor_id=vendor_id, attempt=attempt))
        return False, True

    def _on_relayed(self, event: dict[str, object]) -> None:
        provider, vendor_id, attempt = str(event["provider"]), str(event["vendor_id"]), event.get("attempt")
        if not self.gateway.nudge(provider, vendor_id) and isinstance(attempt, str):
            # kept for a resume when no attempt waits here; adopting writes the store: a task
            task = asyncio.get_running_loop().create_task(self._adopt_relayed(provider, attempt, vendor_id))
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)

    async def _adopt_relayed(self, provider: str, attempt: str, vendor_id: str) -> None:
        try:
            await self.gateway.adopt(provider, attempt, vendor_id)
        except Exception:  # a relay is an optimisation: the job's own polls still finish it
            log.exception("adopting a relayed %s callback failed", provider)
