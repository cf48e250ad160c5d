"""Helpers the benchmarks share: the sandbox in its own process, timing control, statistics.

The sandbox runs as a separate process (``python -m gateway.cli sandbox``) so the
emulators do not compete with the code under measurement for this process's GIL and
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
S = TypeVar("S")

#: how long a fresh sandbox process may take to answer before we give up
SANDBOX_START_TIMEOUT_S = 30.0


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop where it is installed (it comes with ``uvicorn[standard]``):
    a load generator shares the machine's two cores with the service it measures, and on
    uvloop it costs less CPU per request (docs/benchmarks.md 6.loader)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def sandbox_process(port: int | None = None) -> Iterator[str]:
    """``reelgate sandbox`` in a child process; yields its base URL and stops it after."""
    with _child([sys.executable, "-m", "gateway.cli", "sandbox", "--port"], port) as url:
        yield url


@contextlib.contextmanager
def stub_process(port: int | None = None) -> Iterator[str]:
    """The fal-shaped stub (:func:`stub_app`) in a child process; yields the URL its
    adapter's ``base_url`` should be (``{url}/fal``, as in the sandbox)."""
    with _child([sys.executable, "-m", "bench.common", "--stub-port"], port) as url:
        yield url


@contextlib.contextmanager
def _child(argv: list[str], port: int | None) -> Iterator[str]:
    port = port or free_port()
    proc = subprocess.Popen([*argv, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, proc)
        yield url
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_until_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + SANDBOX_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sandbox exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_sandbox/stats", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("sandbox did not start in time")


def post_json(url: str, body: object) -> object:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def set_timing(sandbox_url: str, timing: dict[str, dict[str, float]]) -> None:
    """How long each vendor's emulated jobs queue and run: ``{"fal": {"queue_s": 0, "run_s": 1}}``."""
    post_json(f"{sandbox_url}/_sandbox/timing", timing)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a p99 is a value that happened)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(int(round(pct / 100 * len(ordered) + 0.5)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def stub_app():
    """A fal-shaped server that does no work: every job is COMPLETED at once.

    The emulators are faithful, not fast (fal's computes a queue position over every job
    it holds on each submit), so at hundreds of calls per second they, not the client,
    bound the figures. This stub answers the same three calls (submit, status, result)
    with fixed bodies, so what is measured is the client side.
    """
    from aiohttp import web

    async def submit(request: web.Request) -> web.Response:
        await request.read()
        job = f"{next(ids):x}"
        base = f"http://{request.host}/fal/fal-ai/luma-dream-machine/requests/{job}"
        return web.json_response({"request_id": job, "status_url": f"{base}/status", "response_url": base,
                                  "cancel_url": f"{base}/cancel", "status": "IN_QUEUE", "queue_position": 0})

    async def status(_request: web.Request) -> web.Response:
        return web.json_response({"status": "COMPLETED", "logs": [], "metrics": {"inference_time": 0}})

    async def result(request: web.Request) -> web.Response:
        return web.json_response({"video": {"url": f"http://{request.host}/media/x.mp4",
                                            "content_type": "video/mp4"}})

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response({})

    ids = iter(range(1, 1 << 62))
    app = web.Application()
    app.router.add_get("/_sandbox/stats", stats)
    app.router.add_get("/fal/fal-ai/luma-dream-machine/requests/{job}/status", status)
    app.router.add_get("/fal/fal-ai/luma-dream-machine/requests/{job}", result)
    app.router.add_post("/fal/{endpoint:.*}", submit)
    return app


def machine() -> str:
    """One line naming what the figures were measured on."""
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}")


def in_turn(sides: Sequence[S], round_: int) -> Sequence[S]:
    """The order ``sides`` run in in round ``round_`` (from 0) when they alternate: as given,
    then reversed, so that no side always goes first (the first run of a round can find the
    page cache, the file system or the CPU's clock in another state than the next)."""
    return sides if round_ % 2 == 0 else sides[::-1]


def in_tree(tree: str | Path, argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The last line ``argv`` prints, run in a child process in ``tree``'s directory with that
    tree on ``PYTHONPATH`` (over ``env``, this process's environment by default), so that it
    imports that tree's sources."""
    tree = str(Path(tree).resolve())
    out = subprocess.run(list(argv), cwd=tree, env={**(os.environ if env is None else env), "PYTHONPATH": tree},
                         check=True, capture_output=True, text=True).stdout
    lines = out.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{' '.join(argv)!r} printed nothing in {tree}: its last line is the figure")
    return lines[-1]


def against_trees(trees: Sequence[tuple[str, str | Path]], rounds: int, argv: Sequence[str],
                  figure: Callable[[str], T], *, alternate: bool = False, env: Mapping[str, str] | None = None,
                  each: Callable[[int, str, T], object] | None = None) -> dict[str, list[T]]:
    """``argv`` run ``in_tree`` for each named tree, in the order given, ``rounds`` times
    (with ``alternate``, that order reversed every other round: :func:`in_turn`); ``figure``
    reads a run's figure from the child's last line, and ``each(round, name, figure)`` is
    called after each run (a progress line). The figures by tree name, in round order."""
    results: dict[str, list[T]] = {name: [] for name, _ in trees}
    for round_ in range(rounds):
        for name, tree in in_turn(trees, round_) if alternate else trees:
            results[name].append(figure(in_tree(tree, argv, env)))
            if each is not None:
                each(round_, name, results[name][-1])
    return results


def against_lines(ab: Mapping[str, Sequence[float]], unit: str) -> list[str]:
    """An :func:`against_trees` run of figures in ``unit`` as lines to print: each tree's
    median and rounds, then the median of the rounds' ratios baseline / this tree (the two
    runs of a round shared the machine's load, so their ratio is steadier than the medians')."""
    lines = [f"{name:10} {statistics.median(values):7.1f} {unit} (rounds: {', '.join(f'{v:.1f}' for v in values)})"
             for name, values in ab.items()]
    ratio = statistics.median(b / t for b, t in zip(ab["baseline"], ab["this tree"], strict=True))
    return [*lines, f"baseline / this tree: x{ratio:.2f} (median of the rounds' ratios)"]


if __name__ == "__main__":  # the stub server, as a child process of a benchmark
    from aiohttp import web

    web.run_app(stub_app(), host="127.0.0.1", port=int(sys.argv[sys.argv.index("--stub-port") + 1]),
                print=None, access_log=None)

