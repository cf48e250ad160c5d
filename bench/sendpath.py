"""CPU per vendor call on the gateway's one HTTP path, without a network or a server.

    PYTHONPATH=. .venv/bin/python -m bench.sendpath

Every vendor call goes through ``gateway.transport.send``, which calls httpx's
``client.send`` (auth flow, redirect loop, event hooks, cookie extraction, the body read
through httpx's stream). This measures what that path costs per call against calling the
client's transport directly, the kind of shortcut the gateway used to take and dropped
(it silently skipped the client's event hooks). The transport here answers at once from
memory, so the figures are the client side's CPU only, and best-of-N so other load on
the machine weighs less. Results: docs/benchmarks.md, section 4.

``--loopback`` measures the same over real sockets: ``send()`` through ``make_client()``
(the aiohttp transport) to the fal-shaped stub server in its own process, against a raw
aiohttp GET of the same URL read whole -- one call at a time, CPU of this process only.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx

from bench.common import machine, stub_process
from gateway.transport import GatewayClient, Phase, make_client, send, tag

#: a fal status answer's size and shape
BODY = b'{"status": "IN_PROGRESS", "request_id": "764cabcf-b745-4b3e-ae38-1200304cf45b", "logs": []}'
URL = "http://127.0.0.1:1/fal/requests/764cabcf-b745-4b3e-ae38-1200304cf45b/status"


class AnswerAtOnce(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=[(b"content-type", b"application/json"),
                                            (b"content-length", str(len(BODY)).encode())],
                              stream=httpx.ByteStream(BODY), request=request)


async def measure(calls: int, repeats: int) -> dict[str, float]:
    """Microseconds of CPU per call, best of ``repeats`` runs of ``calls`` calls each."""
    client = GatewayClient(AnswerAtOnce(), httpx.Timeout(30))
    client.timing.observers.append(lambda *_call: None)  # as in the service: every call is timed

    async def build_only() -> None:
        httpx.Request("GET", URL)

    async def one_path() -> None:
        await send(client, "fal", httpx.Request("GET", URL), Phase.POLL)

    async def transport_direct() -> None:
        response = await client.timing.handle_async_request(tag(httpx.Request("GET", URL), "fal", Phase.POLL))
        await response.aread()

    paths: dict[str, Callable[[], Awaitable[None]]] = {
        "build the httpx.Request only": build_only,
        "send() (client.send: the one path)": one_path,
        "transport called directly": transport_direct,
    }
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(repeats):  # interleaved, so a burst of load hits every path alike
        for name, call in paths.items():
            started = time.process_time()
            for _ in range(calls):
                await call()
            best[name] = min(best[name], (time.process_time() - started) / calls * 1e6)
    await client.aclose()
    return best


async def measure_loopback(url: str, calls: int, repeats: int) -> dict[str, float]:
    """Microseconds of CPU per status call to the stub, best of ``repeats``: the gateway's
    one path against raw aiohttp."""
    status_url = f"{url}/fal/fal-ai/luma-dream-machine/requests/1/status"
    client = make_client()
    client.timing.observers.append(lambda *_call: None)
    session = aiohttp.ClientSession()

    async def one_path() -> None:
        await send(client, "fal", httpx.Request("GET", status_url), Phase.POLL)

    async def raw() -> None:
        async with session.get(status_url) as r:
            await r.read()

    paths: dict[str, Callable[[], Awaitable[None]]] = {
        "send() over make_client()": one_path,
        "raw aiohttp": raw,
    }
    best = dict.fromkeys(paths, float("inf"))
    for call in paths.values():
        await call()  # open the connection
    for _ in range(repeats):
        for name, call in paths.items():
            started = time.process_time()
            for _ in range(calls):
                await call()
            best[name] = min(best[name], (time.process_time() - started) / calls * 1e6)
    await client.aclose()
    await session.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loopback", action="store_true", help="real sockets, to the stub server")
    args = parser.parse_args()
    if args.loopback:
        with stub_process() as url:
            best = asyncio.run(measure_loopback(url, args.calls, args.repeats))
        print(f"# {machine()}; {args.calls} calls x {args.repeats}, best run; the stub server, one call at a time")
        for name, us in best.items():
            print(f"{name:38s} {us:7.1f} us CPU per call")
        gateway, raw = best["send() over make_client()"], best["raw aiohttp"]
        print(f"the gateway's path costs {gateway - raw:.1f} us more per call ({gateway / raw:.2f}x raw aiohttp)")
        return
    best = asyncio.run(measure(args.calls, args.repeats))
    print(f"# {machine()}; {args.calls} calls x {args.repeats}, best run; an in-memory transport")
    for name, us in best.items():
        print(f"{name:38s} {us:7.1f} us CPU per call")
    one, direct = best["send() (client.send: the one path)"], best["transport called directly"]
    print(f"httpx's client machinery costs {one - direct:.1f} us per call ({one / direct:.2f}x the direct call)")


if __name__ == "__main__":
    main()
