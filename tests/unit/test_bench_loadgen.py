"""``bench.service``'s load generator (bench/loadgen.py): its httptools client sends what its
aiohttp client sends (the same request lines, headers and body; only User-Agent differs),
the GET asks for the id the POST answered, every pair is counted with its latency, and a
connection the server closes (``Connection: close``) or a chunked answer does not break a
worker: both are what the other server measured through it (LiteLLM's proxy) may do."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from aiohttp import web

from bench.loadgen import CLIENTS, load

KEY = "sk-test-loadgen"
#: what the server saw: (method, path, headers in their order, body) per request
Seen = list[tuple[str, str, dict[str, str], bytes]]


def server(seen: Seen, *, close: bool = False,
           chunked: bool = False) -> web.Application:
    ids = itertools.count(1)

    async def create(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, request.path_qs, dict(request.headers), await request.read()))
        answer = json.dumps({"id": f"video_{next(ids)}", "status": "queued"}).encode()
        if chunked:
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            response.content_type = "application/json"
            if close:
                response.force_close()
            await response.prepare(request)
            await response.write(answer[:5])
            await response.write(answer[5:])
            await response.write_eof()
            return response
        response = web.Response(body=answer, content_type="application/json")
        if close:
            response.force_close()
        return response

    async def retrieve(request: web.Request) -> web.Response:
        seen.append((request.method, request.path_qs, dict(request.headers), await request.read()))
        response = web.json_response({"id": request.match_info["video_id"], "status": "completed"})
        if close:
            response.force_close()
        return response

    app = web.Application()
    app.router.add_post("/v1/videos", create)
    app.router.add_get("/v1/videos/{video_id}", retrieve)
    return app


async def run(client: str, **server_options: bool) -> tuple[dict[str, object], Seen]:
    seen: Seen = []
    runner = web.AppRunner(server(seen, **server_options), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        result = await load(f"http://127.0.0.1:{port}", KEY, 0.4, 4, 0.1, "ray-2-flash", client)
    finally:
        await runner.cleanup()
    return result, seen


@pytest.mark.parametrize("client", CLIENTS)
async def test_each_client_does_whole_pairs_and_counts_them(client: str) -> None:
    result, seen = await run(client)
    assert result["errors"] == {} and result["failed"] == 0
    assert result["pairs"] > 0 and result["all_pairs"] >= result["pairs"]  # type: ignore[operator]
    assert float(result["p99_ms"]) >= float(result["p50_ms"]) > 0  # type: ignore[arg-type]
    assert float(result["loadgen_cpu_ms_per_pair"]) > 0  # type: ignore[arg-type]
    # pairs in order per worker: each GET asks for an id some POST answered
    created = {f"/v1/videos/video_{n}" for n in range(1, len(seen) + 1)}
    gets = [path for method, path, _, _ in seen if method == "GET"]
    assert gets and set(gets) <= created and len(gets) == len(set(gets))


async def test_the_two_clients_send_the_same_requests() -> None:
    (_, by_aiohttp), (_, by_httptools) = await run("aiohttp"), await run("httptools")

    def shape(seen: Seen, method: str) -> tuple[list[str], dict[str, str], bytes]:
        first = next(s for s in seen if s[0] == method)
        # each run's server has its own port: Host is the address asked, nothing else differs
        assert first[2]["Host"].startswith("127.0.0.1:")
        headers = {k: v for k, v in first[2].items() if k not in ("User-Agent", "Host")}
        return list(first[2]), headers, first[3]

    for method in ("POST", "GET"):
        names_a, headers_a, body_a = shape(by_aiohttp, method)
        names_h, headers_h, body_h = shape(by_httptools, method)
        assert names_a == names_h  # the same headers, in the same order
        assert headers_a == headers_h and body_a == body_h
    _, headers, body = shape(by_httptools, "POST")
    assert headers["Authorization"] == f"Bearer {KEY}" and headers["Content-Length"] == str(len(body))
    assert json.loads(body) == {"prompt": "a red fox in fresh snow", "model": "ray-2-flash", "seconds": "5",
                                "size": "960x540"}


@pytest.mark.parametrize(("close", "chunked"), [(True, False), (False, True), (True, True)])
async def test_the_httptools_client_reconnects_after_close_and_reads_chunked_answers(close: bool,
                                                                                     chunked: bool) -> None:
    result, seen = await run("httptools", close=close, chunked=chunked)
    assert result["errors"] == {} and result["failed"] == 0 and result["pairs"] > 0  # type: ignore[operator]
    assert sum(1 for s in seen if s[0] == "GET") >= result["all_pairs"]  # type: ignore[operator]


def test_a_server_that_hangs_up_is_counted_as_an_error() -> None:
    async def main() -> dict[str, object]:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)
            writer.close()

        listening = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = listening.sockets[0].getsockname()[1]
        try:
            return await load(f"http://127.0.0.1:{port}", KEY, 0.2, 2, 0.0, "ray-2-flash", "httptools")
        finally:
            listening.close()

    result = asyncio.run(main())
    assert result["all_pairs"] == 0 and result["failed"] > 0  # type: ignore[operator]
    assert set(result["errors"]) == {"HttpError"}  # type: ignore[arg-type]
