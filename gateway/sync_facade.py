"""``SyncGateway``: the blocking facade over the async :class:`gateway.api.Gateway`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.api import Gateway, QuoteReport
from gateway.job import VideoJob
from gateway.request import VideoRequest
from gateway.sequence_quote import SequenceQuote


class SyncGateway:
    """Blocking facade: one event loop owned by the facade, the async ``Gateway`` inside."""

    def __init__(self, factory: Callable[[], Gateway]) -> None:
        self._runner = asyncio.Runner()

        async def build() -> Gateway:
            return factory()

        self._gateway = self._runner.run(build())

    @property
    def gateway(self) -> Gateway:
        return self._gateway

    def quote(self, request: VideoRequest) -> QuoteReport | SequenceQuote:
        return self._gateway.quote(request)

    def generate(self, request: VideoRequest, **kw: Any) -> VideoJob:
        return self._runner.run(self._gateway.generate(request, **kw))

    def cancel(self, job: VideoJob | str) -> VideoJob:
        return self._runner.run(self._gateway.cancel(job))

    def close(self) -> None:
        self._runner.run(self._gateway.aclose())
        self._runner.close()

    def __enter__(self) -> SyncGateway:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
