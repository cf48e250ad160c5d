"""What a create + retrieve pair costs the service between the socket and the job's task, in
one process: the app of ``reelgate serve`` called as an ASGI app (no server, no socket),
with the job's task never started, so no vendor call and no background work is measured.

    PYTHONPATH=<tree> .venv/bin/python bench/create_path.py [--pairs 2000] [--rounds 3]
    python -m bench.create_path --baseline DIR [--pairs 2000] [--rounds 5]

Per pair: ``POST /v1/videos`` with ``bench.service``'s body (a 200: parsed, checked, planned,
fingerprinted, reserved and its job's first write into SQLite, group commit thread included),
then ``GET /v1/videos/{id}`` of a job followed in memory (a 200), as the load of
``bench.service`` sends them. Configured as ``bench.service`` configures the service (one
provider, railwail; the others disabled), with an API key. ``Gateway.launch`` is replaced by
a no-op after the first job, so created jobs stay queued in the store and nothing else runs.
CPU is ``time.process_time`` (all threads) per pair.

With ``--baseline DIR`` each round runs this harness in a fresh child process per tree, in
turn (this file by its path, with ``PYTHONPATH`` the tree), and prints the ratio.

``--callgrind`` runs ``pairs`` pairs once, inside ``functools.reduce`` (a C function), so that
callgrind counts that loop alone (the event loop's thread; not the SQLite thread's commits),
whatever the machine's load::

    PYTHONHASHSEED=0 PYTHONPATH=<tree> valgrind --tool=callgrind --collect-atstart=no \
        --toggle-collect=functools_reduce .venv/bin/python bench/create_path.py --callgrind --pairs 300

(instructions per pair = "Collected" / pairs).
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

BODY = json.dumps({"prompt": "a red fox in fresh snow", "model": "ray-2-flash", "seconds": "5",
                   "size": "960x540"}).encode()
OTHERS = ("fal", "apiframe", "openai_video", "toyvendor")


async def call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes,
               out: list[bytes] | None = None) -> int:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif out is not None:
            out.append(message.get("body", b""))

    await app(scope, receive, send)
    return status


async def measure(pairs: int, rounds: int, callgrind: bool = False) -> list[float]:
    from gateway.config import PollingConfig, ProviderConfig, Settings
    from gateway.emulation.base import Timing
    from gateway.emulation.sandbox import BackgroundServer, Sandbox
    from gateway.keys import KeyStore
    from gateway.plugins import discover
    from gateway.server import create_app
    from gateway.server.service import Service
    from gateway.serving import tune_collector

    home = Path(tempfile.mkdtemp(prefix="reelgate-create-"))
    os.environ["REELGATE_HOME"] = str(home)
    settings = Settings(providers={name: ProviderConfig(enabled=False) for name in OTHERS},
                        polling=PollingConfig(initial_s=5, max_s=5))
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=3600, run_s=3600))
    spent: list[float] = []
    with BackgroundServer(sandbox.app) as emulators:
        app = create_app(lambda: Service.start(settings, sandbox_url=emulators.url, env=dict(os.environ)))
        _, key = KeyStore(home / "keys.db").create("bench")
        headers = [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {key}".encode()),
                   (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
        get_headers = headers[:2]
        async with app.router.lifespan_context(app):
            tune_collector()  # the collector's policy of a served process (gateway/serving.py)
            out: list[bytes] = []
            assert await call(app, "POST", "/v1/videos", headers, BODY, out) == 200, out
            made = f"/v1/videos/{json.loads(b''.join(out))['id']}"
            gateway = app.state.service.gateway
            gateway.launch = lambda *_a, **_k: None  # type: ignore[method-assign]

            async def run(count: int) -> None:
                for _ in range(count):
                    assert await call(app, "POST", "/v1/videos", headers, BODY) == 200
                    assert await call(app, "GET", made, get_headers, b"") == 200

            await run(200)  # warm
            if callgrind:  # the pairs driven from a thread's own loop, inside a C function
                def counted() -> None:
                    loop = asyncio.new_event_loop()
                    try:
                        loop.run_until_complete(run(20))  # this loop's paths warmed
                        functools.reduce(lambda _n, _i: loop.run_until_complete(run(pairs)), [0], None)
                    finally:
                        loop.close()
                await asyncio.to_thread(counted)
                return []
            for _ in range(rounds):
                started = time.process_time()
                await run(pairs)
                spent.append((time.process_time() - started) * 1e6 / pairs)
    return spent


def against(baseline: str, pairs: int, rounds: int) -> dict[str, list[float]]:
    # imported here, not at the top: a child runs this file on the baseline tree's ``bench``
    from bench.common import against_trees

    here = Path(__file__).resolve()
    return against_trees([("baseline", baseline), ("this tree", here.parent.parent)], rounds,
                         [sys.executable, str(here), "--pairs", str(pairs), "--rounds", "1", "--json"],
                         lambda line: float(json.loads(line)[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="DIR", help="another source tree: its pairs against these")
    parser.add_argument("--json", action="store_true", help="print the rounds' figures as JSON")
    parser.add_argument("--callgrind", action="store_true", help="one counted run (see above)")
    args = parser.parse_args()
    if args.callgrind:
        asyncio.run(measure(args.pairs, 1, callgrind=True))
        return
    if args.baseline:
        from bench.common import against_lines  # here, not at the top: see against()

        ab = against(args.baseline, args.pairs, args.rounds)
        print("\n".join(against_lines(ab, "us CPU per pair")))
        return
    spent = asyncio.run(measure(args.pairs, args.rounds))
    if args.json:
        print(json.dumps(spent))
    else:
        print(f"{statistics.median(spent):7.1f} us CPU per pair (rounds: {', '.join(f'{v:.1f}' for v in spent)})")


if __name__ == "__main__":
    main()
