"""The emulators' callbacks: messages that wait until they are due, then go out.

A vendor emulator calls its client back when a job finishes, as the vendor does; the
delivery itself (retries, records) is :func:`gateway.webhooks.outbound.post_with_retries`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from gateway.webhooks.outbound import (
    Backoff,
    DeliveryRecord,
    Render,
    Sleep,
    post_with_retries,
)

#: an emulator retries a callback within about a second, as vendors do over minutes
QUICK_RETRIES = Backoff(base_s=0.05, cap_s=0.5)


@dataclass
class _Pending:
    key: str
    url: str
    ready: Callable[[], bool]
    render: Render


class Outbox:
    """Messages that wait until they are due, then go out with :func:`post_with_retries`.

    The emulators use it to call a client back when a job finishes: ``add`` a message,
    and either call :meth:`deliver_due` (tests with a fake clock) or :meth:`start` a
    ticker on the running event loop that delivers due messages until none are left."""

    def __init__(self, *, tick_s: float = 0.05, max_attempts: int = 4,
                 backoff: Backoff = QUICK_RETRIES, sleep: Sleep = asyncio.sleep,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.tick_s = tick_s
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._sleep = sleep
        self._transport = transport
        self._pending: list[_Pending] = []
        self._ticker: asyncio.Task[None] | None = None
        self.records: list[DeliveryRecord] = []

    def add(self, key: str, url: str, *, ready: Callable[[], bool], render: Render) -> None:
        self._pending.append(_Pending(key, url, ready, render))

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def deliver_due(self) -> list[DeliveryRecord]:
        due: list[_Pending] = []
        waiting: list[_Pending] = []
        for message in self._pending:
            (due if message.ready() else waiting).append(message)
        self._pending = waiting
        if not due:
            return []
        async with httpx.AsyncClient(transport=self._transport) as client:
            sent = await asyncio.gather(*(
                post_with_retries(client, p.url, p.render, message_id=p.key, sleep=self._sleep,
                                  max_attempts=self.max_attempts, backoff=self.backoff) for p in due))
        self.records.extend(sent)
        return list(sent)

    def start(self) -> None:
        """Run the ticker on the current event loop, unless it is already running."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while self._pending:
            await self.deliver_due()
            await asyncio.sleep(self.tick_s)
