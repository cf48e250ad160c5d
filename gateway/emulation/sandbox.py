"""The sandbox: every installed provider's emulator on one loopback port.

Each emulator is mounted under ``/{provider}``; ``GET /_sandbox/stats`` reports accepted
submissions and jobs per vendor, ``POST /_sandbox/faults`` changes faults while running
(body: ``{"fal": ["outage"], "apiframe": []}``), ``POST /_sandbox/timing`` changes how long
emulated jobs take (``{"fal": {"queue_s": 0, "run_s": 3}}``) and how much of its vendor's
callback retry span an emulator keeps (``{"fal": {"webhook_retry_scale": 0.005}}``; 1 is
the vendor's own schedule).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from gateway.emulation.base import Clock, Emulator, Timing
from gateway.emulation.faults import FaultSpec, parse_fault
from gateway.provider import Provider
from gateway.serving import bind


class Sandbox:
    def __init__(self, emulators: Mapping[str, Emulator]) -> None:
        self.emulators = dict(emulators)
        routes = [
            Route("/_sandbox/stats", self._stats, methods=["GET"]),
            Route("/_sandbox/faults", self._faults, methods=["GET", "POST"]),
            Route("/_sandbox/timing", self._timing, methods=["POST"]),
            *(Mount(f"/{name}", app=emu) for name, emu in self.emulators.items()),
        ]
        self.app = Starlette(routes=routes)

    @classmethod
    def from_providers(
        cls,
        providers: Mapping[str, type[Provider]],
        faults: Mapping[str, list[FaultSpec]] | None = None,
        timing: Timing | None = None,
        clock: Clock | None = None,
    ) -> Sandbox:
        """One emulator per provider; ``clock`` lets tests run emulated time."""
        faults = faults or {}
        unknown = set(faults) - set(providers)
        if unknown:
            raise ValueError(f"no emulator for {', '.join(sorted(unknown))}; installed: {', '.join(providers)}")
        emulators = {}
        for name, provider in providers.items():
            options: dict[str, object] = {"faults": list(faults.get(name, [])),
                                          "timing": Timing(timing.queue_s, timing.run_s, timing.webhook_retry_scale)
                                                    if timing else None}
            if clock is not None:
                options["clock"] = clock
            emulators[name] = provider.emulator(**options)
        return cls(emulators)

    def stats(self) -> dict[str, object]:
        return {name: emu.stats() for name, emu in self.emulators.items()}

    async def _stats(self, _request: Request) -> JSONResponse:
        return JSONResponse(self.stats())

    async def _faults(self, request: Request) -> JSONResponse:
        if request.method == "POST":
            try:
                body = await request.json()
                if not isinstance(body, dict):
                    raise ValueError("body must be an object of vendor -> [fault, ...]")
                parsed = {}
                for vendor, specs in body.items():
                    if vendor not in self.emulators:
                        raise ValueError(f"unknown vendor {vendor!r}")
                    specs = [specs] if isinstance(specs, str) else specs
                    parsed[vendor] = [parse_fault(s) for s in specs]
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            for vendor, specs in parsed.items():
                self.emulators[vendor].faults.set(specs)
        return JSONResponse({name: emu.faults.describe() for name, emu in self.emulators.items()})

    async def _timing(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
            for vendor, t in body.items():
                emu = self.emulators[vendor]
                emu.timing = Timing(float(t.get("queue_s", emu.timing.queue_s)),
                                    float(t.get("run_s", emu.timing.run_s)),
                                    float(t.get("webhook_retry_scale", emu.timing.webhook_retry_scale)))
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            return JSONResponse({"error": f"bad timing body: {exc}"}, status_code=400)
        return JSONResponse(self.stats())


def run_to_end(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)``, but the tasks ``main`` leaves running (an emulator's callbacks
    still being sent) are ended while the loop runs, not by ``asyncio.run``'s shutdown.

    That shutdown cancels every task left, also one spawned in the loop's last step and never
    started: anyio's ``connect_tcp`` (httpx's connections) races its attempts in such tasks,
    and anyio (4.16) leaves the coroutine of an attempt cancelled before it started unclosed,
    so it later warns "coroutine 'connect_tcp.<locals>.try_connect' was never awaited" (a
    test failure under ``filterwarnings = error``, in whichever test collects it). Here each
    task left takes its first step before anything cancels it."""
    async def run() -> None:
        try:
            await main
        finally:
            me = asyncio.current_task()
            while left := asyncio.all_tasks() - {me}:
                await asyncio.sleep(0)  # those spawned in the last step start: ended below, not unstarted
                for task in left:
                    task.cancel()
                _, pending = await asyncio.wait(left, timeout=5)
                if pending:  # stuck: asyncio.run's shutdown has them
                    break

    asyncio.run(run())


class BackgroundServer:
    """An ASGI app served by uvicorn on loopback in a daemon thread (for the CLI and tests)."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = bind(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="reelgate-sandbox", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        run_to_end(self._server.serve(sockets=[self._sock]))

    def start(self) -> BackgroundServer:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("sandbox server failed to start")
            threading.Event().wait(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
