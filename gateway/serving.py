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


def serve_forever(app: Callable[..., Any], host: str, port: int, *,
                  lifespan: Literal["auto", "on", "off"] = "off") -> None:
    """Serve ``app`` in the foreground until interrupted (``reelgate sandbox``, ``serve``).

    uvloop and httptools when installed (uvicorn's ``auto``; both are dependencies, the
    asyncio loop and h11 the fallback): measured, they cut the service's CPU per request
    pair (docs/benchmarks.md, section 6.asgi)."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan=lifespan, loop="auto", http="auto")
    server = uvicorn.Server(config)
    # What is alive now (modules, settings, the app) lives as long as the process: frozen
    # out of the collector's reach, a full collection no longer walks it. Those walks were
    # the p99 of a job through the gateway (docs/benchmarks.md, section 2).
    gc.freeze()
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(server.serve(sockets=[bind(host, port)]))
