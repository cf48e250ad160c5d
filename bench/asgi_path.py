"""What the inbound HTTP path costs per request: the hot routes (hot_routes.py) against
FastAPI's full stack, in one process.

    python -m bench.asgi_path [--requests 3000] [--rounds 3] [--baseline DIR]

The app of ``reelgate serve`` on the sandbox (one job made first, left queued), called as
an ASGI app with no server and no socket, so what is measured is the app's own path:
middlewares, routing, authentication, body parsing, the endpoint, the response. Two
requests, each ``requests`` times per round: ``GET /v1/videos/{id}`` of the job (200),
and ``POST /v1/videos`` with an unknown field (400: the body is read, parsed and refused
before a job exists, so no job piles up). Per round both variants run in turn, the hot
routes on and off (``app.hot = None``): CPU microseconds per request and the ratio.
With ``--baseline DIR`` the hot routes of this tree and of another source tree instead,
each round in a fresh child process per tree, in turn (the A/B of a change to the path).

``--callgrind`` runs the hot routes ``requests`` times once, inside ``functools.reduce`` (a
C function), so that callgrind counts that loop alone, whatever the machine's load::

    PYTHONHASHSEED=0 PYTHONPATH=<tree> valgrind --tool=callgrind --collect-atstart=no \
        --toggle-collect=functools_reduce .venv/bin/python bench/asgi_path.py --callgrind --requests 300

(instructions per request = "Collected" / (2 x requests); ``<tree>``: the sources measured,
with this harness either way).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import against_lines, against_trees, machine


async def call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(requests: int, rounds: int, only: str | None = None,
                  run: Any = None) -> dict[str, list[float]]:
    from gateway.config import PollingConfig, Settings
    from gateway.emulation.base import Timing
    from gateway.emulation.sandbox import BackgroundServer, Sandbox
    from gateway.keys import KeyStore
    from gateway.plugins import discover
    from gateway.server import create_app
    from gateway.server.service import Service
    from gateway.serving import tune_collector

    home = Path(tempfile.mkdtemp(prefix="reelgate-asgi-"))
    os.environ["REELGATE_HOME"] = str(home)
    settings = Settings(polling=PollingConfig(initial_s=5, max_s=5))
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=3600, run_s=3600))
    results: dict[str, list[float]] = {"hot routes": [], "FastAPI stack": []}
    with BackgroundServer(sandbox.app) as emulators:
        app = create_app(lambda: Service.start(settings, sandbox_url=emulators.url, env=dict(os.environ)))
        _, key = KeyStore(home / "keys.db").create("bench")
        json_headers = [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {key}".encode()),
                        (b"content-type", b"application/json")]
        hot = app.hot  # type: ignore[attr-defined]
        async with app.router.lifespan_context(app):
            tune_collector()  # the collector's policy of a served process (gateway/serving.py)
            made = await _create(app, json_headers)
            bad = json.dumps({"prompt": "a fox", "colour": "red"}).encode()
            for _ in range(rounds):
                for name, value in (("hot routes", hot), ("FastAPI stack", None)):
                    if only not in (None, name):
                        continue
                    app.hot = value  # type: ignore[attr-defined]
                    started = time.process_time()
                    if run is not None:  # the loop in another thread's event loop (--callgrind)
                        await asyncio.to_thread(run, app, made, json_headers, bad, requests)
                    else:
                        await pairs(app, made, json_headers, bad, requests)
                    results[name].append((time.process_time() - started) * 1e6 / (2 * requests))
    return results


async def pairs(app: Any, made: str, headers: list[tuple[bytes, bytes]], bad: bytes, requests: int) -> None:
    for _ in range(requests):
        assert await call(app, "GET", f"/v1/videos/{made}", headers, b"") == 200
        assert await call(app, "POST", "/v1/videos", headers, bad) == 400


def counted(app: Any, made: str, headers: list[tuple[bytes, bytes]], bad: bytes, requests: int) -> None:
    """``pairs`` in an event loop of its own, inside ``functools.reduce`` (for callgrind)."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(pairs(app, made, headers, bad, 20))  # warm
        functools.reduce(lambda _n, _i: loop.run_until_complete(pairs(app, made, headers, bad, requests)), [0], None)
    finally:
        loop.close()


async def _create(app: Any, headers: list[tuple[bytes, bytes]]) -> str:
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": json.dumps({"prompt": "a fox"}).encode(), "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/videos", "raw_path": b"/v1/videos", "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    await app(scope, receive, send)
    made: str = json.loads(b"".join(chunks))["id"]
    return made


_CHILD = ("import asyncio, json; from bench.asgi_path import measure; "
          "print(json.dumps(asyncio.run(measure({requests}, 1, only='hot routes'))['hot routes'][0]))")


def against(baseline: str, requests: int, rounds: int) -> dict[str, list[float]]:
    """The hot routes of ``baseline``'s tree and of this one, a child process per tree and
    round (in the tree's directory: ``-c`` puts it first on ``sys.path``)."""
    return against_trees([("baseline", baseline), ("this tree", Path(__file__).resolve().parent.parent)], rounds,
                         [sys.executable, "-c", _CHILD.format(requests=requests)], float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="DIR", help="another source tree: its hot routes against these")
    parser.add_argument("--callgrind", action="store_true", help="one counted run of the hot routes (see above)")
    args = parser.parse_args()
    if args.callgrind:
        asyncio.run(measure(args.requests, 1, only="hot routes", run=counted))
        return
    if args.baseline:
        ab = against(args.baseline, args.requests, args.rounds)
        print(machine())
        print("\n".join(against_lines(ab, "us CPU per request")))
        return
    results = asyncio.run(measure(args.requests, args.rounds))
    print(machine())
    for name, values in results.items():
        print(f"{name:14} {statistics.median(values):7.1f} us CPU per request (median of {len(values)} rounds)")
    ratio = statistics.median(f / h for f, h in zip(results["FastAPI stack"], results["hot routes"], strict=True))
    print(f"FastAPI stack / hot routes: x{ratio:.2f}")


if __name__ == "__main__":
    main()
