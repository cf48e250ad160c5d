"""A tiny webhook receiver for tests: a Starlette app that records every POST and
answers with the status codes it is told to (then 200)."""

from __future__ import annotations

import asyncio
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

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        got = Received(dict(request.headers), await request.body())
        self.received.append(got)
        status = self.statuses.pop(0) if self.statuses else 200
        if self.check is not None:
            status = self.check(got) or status
        self.answered.append(status)
        return Response(status_code=status)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Wait (on real time: the sender is a real server) until ``count`` deliveries arrived."""
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                await asyncio.sleep(0.02)
        return self.received
