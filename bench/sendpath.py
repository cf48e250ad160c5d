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

``--adapters`` measures a whole vendor call's client side as the gateway makes it: the
adapter builds the request (fal, and railwail's OpenAI shape), ``send()`` takes it through
``make_client()``'s layers (httpx's ``client.send``, ``TimedTransport``, the aiohttp
transport's own code) and the adapter parses the answer; only aiohttp's session is
replaced by one answering from memory. Run it as a file with ``PYTHONPATH`` at another tree to
compare two trees (``PYTHONPATH=/tmp/base python bench/sendpath.py --adapters``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from bench.common import machine, stub_process
from gateway.config import Settings
from gateway.provider import Provider
from gateway.request import Resolution, VideoRequest
from gateway.sandboxed import sandbox_settings
from gateway.transport import AiohttpTransport, ConnectionLimits, GatewayClient, Phase, make_client, send, tag
from providers.fal.adapter import FalAdapter
from providers.railwail.adapter import RailwailAdapter

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
    try:
        return await best_cpu_us(paths, calls, repeats)
    finally:
        await client.aclose()


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


# -- --adapters: the whole client side of a vendor call ---------------------------------------

HOST = "http://127.0.0.1:1"
JOB = f"{HOST}/fal/fal-ai/luma-dream-machine/requests/764cabcf-b745-4b3e-ae38-1200304cf45b"
VIDEO = {"id": "video_764cabcf", "object": "video", "model": "luma-ray-2-flash", "progress": 40,
         "created_at": 1764560000, "seconds": "5", "size": "960x540"}
#: (method, path) -> (status, JSON body): what each vendor answers, in its shapes
ANSWERS: dict[tuple[str, str], tuple[int, object]] = {
    ("POST", "/fal/fal-ai/luma-dream-machine/ray-2-flash"): (200, {
        "request_id": "764cabcf-b745-4b3e-ae38-1200304cf45b", "response_url": JOB,
        "status_url": f"{JOB}/status", "cancel_url": f"{JOB}/cancel"}),
    ("GET", JOB.removeprefix(HOST) + "/status"): (202, {"status": "IN_PROGRESS", "logs": []}),
    ("GET", JOB.removeprefix(HOST)): (200, {"video": {"url": f"{HOST}/v.mp4", "content_type": "video/mp4"}}),
    ("POST", "/railwail/videos"): (200, {**VIDEO, "status": "queued"}),
    ("GET", "/railwail/videos/video_764cabcf"): (200, {**VIDEO, "status": "in_progress"}),
}


class _Answer:
    """What the aiohttp transport reads of aiohttp's response."""

    #: read whole, its connection is back in the pool (aiohttp's ``connection`` then)
    connection = None

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self._body = status, body
        self.raw_headers = ((b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode()))
        self.headers = CIMultiDictProxy(CIMultiDict((k.decode(), v.decode()) for k, v in self.raw_headers))

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        pass


class _Session:
    """aiohttp's session as the transport calls it, answering from ``ANSWERS``: everything
    of the transport's own code runs (the URL and headers made for aiohttp included)."""

    async def _request(self, method: str, url: yarl.URL, **_options: object) -> _Answer:
        status, body = ANSWERS[method, url.path]
        return _Answer(status, json.dumps(body).encode())

    request = _request  # what an older transport called

    async def close(self) -> None:
        pass


class AnswerFromMemory(AiohttpTransport):
    """The gateway's aiohttp transport with aiohttp's session replaced by ``ANSWERS``."""

    def session(self) -> aiohttp.ClientSession:
        return _Session()  # type: ignore[return-value]


async def measure_adapters(calls: int, repeats: int) -> dict[str, float]:
    """Microseconds of CPU per call (adapter build, ``send()``, adapter parse), best of ``repeats``."""
    client = GatewayClient(AnswerFromMemory(ConnectionLimits()), httpx.Timeout(30))
    client.timing.observers.append(lambda *_call: None)  # as in the service: every call is timed
    fal = FalAdapter(sandbox_settings("fal", HOST, Settings()))
    railwail = RailwailAdapter(sandbox_settings("railwail", HOST, Settings()))
    request = VideoRequest(prompt="a red fox in fresh snow", resolution="540p")

    async def submit(adapter: Provider) -> None:
        built = adapter.build_submit(request, resolution=Resolution.P540, attempt_key="k")
        adapter.parse_submit(request, await send(client, adapter.name, built, Phase.SUBMIT))

    fal_job = fal.parse_submit(request, await send(client, "fal", fal.build_submit(
        request, resolution=Resolution.P540, attempt_key="k"), Phase.SUBMIT))
    rw_job = railwail.parse_submit(request, await send(client, "railwail", railwail.build_submit(
        request, resolution=Resolution.P540, attempt_key="k"), Phase.SUBMIT))
    fal_result = fal.build_result(fal_job)
    assert fal_result is not None

    async def fal_submit() -> None:
        await submit(fal)

    async def fal_status() -> None:
        fal.parse_status(fal_job, await send(client, "fal", fal.build_status(fal_job), Phase.POLL))

    async def fal_result_call() -> None:
        built = fal.build_result(fal_job)
        assert built is not None
        fal.parse_result(fal_job, await send(client, "fal", built, Phase.RESULT))

    async def railwail_submit() -> None:
        await submit(railwail)

    async def railwail_status() -> None:
        railwail.parse_status(rw_job, await send(client, "railwail", railwail.build_status(rw_job), Phase.POLL))

    paths: dict[str, Callable[[], Awaitable[None]]] = {
        "fal submit": fal_submit, "fal status": fal_status, "fal result": fal_result_call,
        "railwail submit": railwail_submit, "railwail status": railwail_status,
    }
    try:
        return await best_cpu_us(paths, calls, repeats)
    finally:
        await client.aclose()


async def best_cpu_us(paths: dict[str, Callable[[], Awaitable[None]]], calls: int, repeats: int) -> dict[str, float]:
    """Microseconds of CPU per call of each path, best of ``repeats``."""
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(repeats):  # interleaved, so a burst of load hits every path alike
        for name, call in paths.items():
            started = time.process_time()
            for _ in range(calls):
                await call()
            best[name] = min(best[name], (time.process_time() - started) / calls * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loopback", action="store_true", help="real sockets, to the stub server")
    parser.add_argument("--adapters", action="store_true",
                        help="whole vendor calls: adapter build, send(), adapter parse; network from memory")
    args = parser.parse_args()
    if args.adapters:
        gc.freeze()  # as `reelgate serve` does once started
        best = asyncio.run(measure_adapters(args.calls, args.repeats))
        print(f"# {machine()}; {args.calls} calls x {args.repeats}, best run; adapter + send() + parse, "
              "aiohttp's network call answered from memory")
        for name, us in best.items():
            print(f"{name:38s} {us:7.1f} us CPU per call")
        print(f"{'mean':38s} {sum(best.values()) / len(best):7.1f} us CPU per call")
        return
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
