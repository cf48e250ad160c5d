"""A loop ended with an HTTP connection being opened leaves no coroutine unawaited.

Seen twice under heavy load: a test failed on an unraisable "coroutine
'connect_tcp.<locals>.try_connect' was never awaited", collected during
test_router_sandbox.py's first test. Its source: a sandbox server (``BackgroundServer``, its
own loop in a thread) stopped while the fal emulator was sending a callback (the
test_resume.py tests point those at a URL that answers 404, retried), and ``asyncio.run``'s
shutdown cancelled a connection attempt anyio had spawned in the loop's last step, before it
started (gateway/emulation/sandbox.py, ``run_to_end``)."""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest

from gateway.emulation.sandbox import run_to_end


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connecting_as_it_returns() -> Coroutine[Any, Any, None]:
    """A loop's main coroutine that returns right after starting a connection: the attempt
    anyio spawns for it is still unstarted when the loop's last step ends."""
    port = refused_port()

    async def main() -> None:
        asyncio.get_running_loop().create_task(anyio.connect_tcp("127.0.0.1", port))

    return main()


def unraisable_of(run: Callable[[Coroutine[Any, Any, None]], None]) -> list[str]:
    seen: list[str] = []
    hook, sys.unraisablehook = sys.unraisablehook, lambda u: seen.append(str(u.exc_value))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            run(connecting_as_it_returns())
            gc.collect()
    finally:
        sys.unraisablehook = hook
    return seen


def test_tasks_left_running_end_inside_the_loop_and_leave_no_coroutine_unawaited() -> None:
    assert unraisable_of(run_to_end) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_asyncio_run_alone_leaves_the_attempt_unawaited() -> None:
    """What ``run_to_end`` is for (anyio 4.16): when this fails, anyio closes such an
    attempt itself and ``run_to_end`` may become ``asyncio.run`` again."""
    assert unraisable_of(asyncio.run) == ["coroutine 'connect_tcp.<locals>.try_connect' was never awaited"]
