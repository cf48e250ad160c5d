"""What a vendor call is: its :class:`Phase` and the tag that names its provider and phase on
the ``httpx.Request`` (read by the timing layer and by the aiohttp transport). Its own module so
that ``gateway.transport`` and ``gateway.transport_aiohttp`` can both import it."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import httpx


class Phase(StrEnum):
    """What a vendor call does (the ``operation`` of its timing)."""

    SUBMIT = "submit"
    POLL = "status"
    RESULT = "result"
    CANCEL = "cancel"
    DOWNLOAD = "download"
    #: reading the vendor's list of recent jobs (adoption by list scan)
    LIST = "list"


#: the ``request.extensions`` key naming a vendor call: ``(provider, Phase)``
CALL_EXTENSION = "reelgate.call"

#: told of each finished vendor call: provider, operation, outcome, seconds
CallObserver = Callable[[str, str, str, float], None]


def tag(request: httpx.Request, provider: str, phase: Phase) -> httpx.Request:
    """Mark ``request`` as ``phase`` at ``provider``, for :class:`TimedTransport`."""
    request.extensions = {**request.extensions, CALL_EXTENSION: (provider, phase)}
    return request
