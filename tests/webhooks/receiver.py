"""A tiny webhook receiver for tests: a Starlette app that records every POST and
answers with the status codes it is told to (then 200)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    #: status codes for the first deliveries, in order; 200 after that
    statuses: list[int] = field(default_factory=list)
    #: called with each delivery; its return value (if not None) overrides the status
    check: Callable[[Received], int | None] | None = None
    received: list[Received] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    #: the server answers in its own thread; ``wait_for`` waits on this, not on a clock
    _arrived: threading.Condition = field(default_factory=threading.Condition, repr=False)

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        got = Received(dict(request.headers), await request.body())
        with self._arrived:
            self.received.append(got)
            status = self.statuses.pop(0) if self.statuses else 200
            if self.check is not None:
                status = self.check(got) or status
            self.answered.append(status)
            self._arrived.notify_all()
        return Response(status_code=status)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Wait until ``count`` deliveries arrived and were answered (``timeout_s`` only
        bounds a failing test: the sender is a real server, on real time)."""

        def arrived() -> bool:
            with self._arrived:
                return self._arrived.wait_for(lambda: len(self.received) >= count, timeout_s)

        if not await asyncio.to_thread(arrived):
            raise TimeoutError(f"{len(self.received)} of {count} deliveries after {timeout_s} s")
        return self.received
