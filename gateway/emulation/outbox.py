"""The emulators' callbacks: messages that wait until they are due, then go out.

A vendor emulator calls its client back when a job finishes, as the vendor does; the
delivery itself (retries, records) is :func:`gateway.webhooks.outbound.post_with_retries`.
Each message may carry its vendor's retry schedule (:class:`RetrySchedule`), scaled down
like the emulators' job timings: a client that is down for a while still gets the callback
once it is back, as it would from the vendor.
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


@dataclass(frozen=True)
class RetrySchedule:
    """A vendor's published callback retries: ``retries`` more attempts after the first,
    spread over ``span_s``, each wait twice the one before (vendors publish the count and
    span, rarely the curve; doubling is the common one)."""

    retries: int
    span_s: float

    def scaled(self, scale: float) -> tuple[int, Backoff]:
        """(attempts, backoff) of this schedule with its span multiplied by ``scale``."""
        span = self.span_s * scale
        # the waits double: base * (2**retries - 1) == span; a little jitter, as vendors add
        base = span / (2.0**self.retries - 1) if self.retries else span
        return self.retries + 1, Backoff(base_s=base, cap_s=span, jitter=0.2)


@dataclass
class _Pending:
    key: str
    url: str
    ready: Callable[[], bool]
    render: Render
    max_attempts: int
    backoff: Backoff


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

    def add(self, key: str, url: str, *, ready: Callable[[], bool], render: Render,
            schedule: tuple[int, Backoff] | None = None) -> None:
        """Queue a message; ``schedule`` (attempts, backoff) overrides the outbox's own."""
        attempts, backoff = schedule or (self.max_attempts, self.backoff)
        self._pending.append(_Pending(key, url, ready, render, attempts, backoff))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _take_due(self) -> list[_Pending]:
        due: list[_Pending] = []
        waiting: list[_Pending] = []
        for message in self._pending:
            (due if message.ready() else waiting).append(message)
        self._pending = waiting
        return due

    async def _send(self, client: httpx.AsyncClient, message: _Pending) -> DeliveryRecord:
        record = await post_with_retries(client, message.url, message.render, message_id=message.key,
                                         sleep=self._sleep, max_attempts=message.max_attempts,
                                         backoff=message.backoff)
        self.records.append(record)
        return record

    async def deliver_due(self) -> list[DeliveryRecord]:
        """Send every due message, each to its end (acknowledged or out of retries)."""
        due = self._take_due()
        if not due:
            return []
        async with httpx.AsyncClient(transport=self._transport) as client:
            return list(await asyncio.gather(*(self._send(client, p) for p in due)))

    def start(self) -> None:
        """Run the ticker on the current event loop, unless it is already running."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        # each message retries in its own task: one callback waiting out a long retry
        # schedule must not hold back the callbacks of jobs that end meanwhile
        sending: set[asyncio.Task[DeliveryRecord]] = set()
        async with httpx.AsyncClient(transport=self._transport) as client:
            try:
                while self._pending or sending:
                    for message in self._take_due():
                        task = asyncio.ensure_future(self._send(client, message))
                        sending.add(task)
                        task.add_done_callback(sending.discard)
                    await asyncio.sleep(self.tick_s)
            finally:  # the ticker cancelled (an emulator stopping): its deliveries stop with it
                for task in list(sending):
                    task.cancel()
                await asyncio.gather(*sending, return_exceptions=True)
        if self._pending:  # added while the client closed, when start() saw this ticker running
            self._ticker = asyncio.get_running_loop().create_task(self._tick())
