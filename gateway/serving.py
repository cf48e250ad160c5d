"""Serving an ASGI app in the foreground: ``reelgate serve`` and ``reelgate sandbox``."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Callable
from typing import Any, Literal

import uvicorn


def bind(host: str, port: int) -> socket.socket:
    """A listening socket with TCP_NODELAY, which accepted connections inherit: without it,
    small responses written in two parts wait ~40 ms on delayed ACKs (measured: 45 ms per
    poll against 3 ms with it)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


#: allocations (net, of objects the cyclic collector tracks) between young collections;
#: CPython's default is 700. A served process has hundreds of requests' objects alive at
#: any moment: at 700 each young collection walked them all and pushed them into the
#: older generations, which full collections then walked again: 7-30 % of the service's
#: CPU, by load (docs/benchmarks.md, section 6.gcloop). At 10,000 most of a request's
#: objects are freed by reference counting before a collection sees them; one pauses ~4 ms.
YOUNG_COLLECTION_EVERY = 10_000


def tune_collector() -> None:
    """The cyclic collector's policy of a served process (one ``serve`` or each worker of
    ``--workers N``), applied once it has started: what is alive now (modules, settings, the
    app) lives as long as the process, so it is frozen out of the collector's reach, and
    young collections run every :data:`YOUNG_COLLECTION_EVERY` allocations (the two older
    generations' thresholds stay CPython's: every 10 of the one below)."""
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, 10, 10)


def serve_forever(app: Callable[..., Any], host: str, port: int, *,
                  lifespan: Literal["auto", "on", "off"] = "off") -> None:
    """Serve ``app`` in the foreground until interrupted (``reelgate sandbox``, ``serve``).

    uvloop and httptools when installed (uvicorn's ``auto``; both are dependencies, the
    asyncio loop and h11 the fallback): measured, they cut the service's CPU per request
    pair (docs/benchmarks.md, section 6.asgi)."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan=lifespan, loop="auto", http="auto")
    server = uvicorn.Server(config)
    # full collections walking what lives as long as the process were the p99 of a job
    # through the gateway (docs/benchmarks.md, section 2)
    tune_collector()
    # the socket closed however the server ends (a failed startup exits through SystemExit)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner, bind(host, port) as sock:
        runner.run(server.serve(sockets=[sock]))
