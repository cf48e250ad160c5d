"""Serving an ASGI app in the foreground: ``reelgate serve`` and ``reelgate sandbox``."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
from collections.abc import Callable
from typing import Any, Literal

import uvicorn

from gateway.request_head import http_protocol


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket with TCP_NODELAY, which accepted connections inherit: without it,
    small responses written in two parts wait ~40 ms on delayed ACKs (measured: 45 ms per
    poll against 3 ms with it). ``reuse_port``: SO_REUSEPORT too (see :class:`WorkerSockets`)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


#: whether the kernel spreads a port's new connections over the listening sockets bound to it
#: with SO_REUSEPORT (Linux: by a hash of the connection's addresses). BSD and macOS have the
#: option without the spreading
SPREADS_CONNECTIONS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class WorkerSockets:
    """The listening sockets of ``serve --workers N`` on one port, held by the supervisor.

    Where the kernel spreads connections, one per worker slot (SO_REUSEPORT), listening from
    the moment it is made: with one socket shared by every worker, the worker whose loop wakes
    first accepts a whole burst of new connections (uvloop drains the queue per wake-up), and
    keep-alive callers then stay on it (docs/benchmarks.md, section 6.reuseport: 5 of 12 starts
    put all 64 on one). A slot's socket outlives its worker: connections queued on it wait for
    the replacement.
    Elsewhere one socket shared by all, as uvicorn does it.

    A plain bind (no SO_REUSEPORT) comes first: it fails, as a second ``serve`` must, while any
    process listens on the port, SO_REUSEPORT sockets included; without it a second ``serve
    --workers`` of the same user would join this group and take a share of its connections.
    That socket never listens and is the shared one where connections are not spread."""

    def __init__(self, host: str, port: int, count: int, *, backlog: int,
                 per_slot: bool = SPREADS_CONNECTIONS) -> None:
        """The sockets of slots ``0..count-1``, made now (before any worker starts)."""
        self.host, self.backlog, self.per_slot = host, backlog, per_slot
        self.claim = bind(host, port)
        self.port: int = self.claim.getsockname()[1]
        self.slots: dict[int, socket.socket] = {}
        try:
            self.listening = [self.of(slot) for slot in range(count)] if per_slot else [self.claim]
        except BaseException:
            self.close()
            raise

    def of(self, slot: int) -> socket.socket:
        """The socket of worker slot ``slot``: the same for every worker that holds it."""
        if not self.per_slot:
            return self.claim
        if slot not in self.slots:
            sock = bind(self.host, self.port, reuse_port=True)
            sock.listen(self.backlog)
            self.slots[slot] = sock
        return self.slots[slot]

    def drop(self, slot: int) -> None:
        """Close the socket of a slot no worker will hold again (its queued connections are
        reset rather than left waiting for no one)."""
        sock = self.slots.pop(slot, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for slot in list(self.slots):
            self.drop(slot)
        self.claim.close()

    def __enter__(self) -> WorkerSockets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    pair (docs/benchmarks.md, section 6.asgi); the request head bounded in size and time
    (gateway/request_head.py)."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan=lifespan, loop="auto",
                            http=http_protocol())
    server = uvicorn.Server(config)
    # full collections walking what lives as long as the process were the p99 of a job
    # through the gateway (docs/benchmarks.md, section 2)
    tune_collector()
    # the socket closed however the server ends (a failed startup exits through SystemExit)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner, bind(host, port) as sock:
        runner.run(server.serve(sockets=[sock]))
