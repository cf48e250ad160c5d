"""The benchmarks' load generators run on uvloop: they share two cores with the service
they measure, and on uvloop they cost less CPU per request (docs/benchmarks.md 6.loader)."""

from __future__ import annotations

import asyncio

import uvloop

from bench.common import run_event_loop


def test_the_load_generator_loop_is_uvloop() -> None:
    async def loop_type() -> type:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop())

    assert run_event_loop(loop_type()) is uvloop.Loop
