"""The shared client's transport over real loopback sockets: each way a call can fail
maps to the gateway error that says whether the vendor may have acted on it."""

from __future__ import annotations

import asyncio
import gc
import gzip
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from gateway import transport
from gateway.errors import AmbiguousSubmit, Unavailable
from gateway.transport import (
    CALL_EXTENSION,
    AiohttpTransport,
    ConnectionLimits,
    GatewayClient,
    Phase,
    make_client,
    send,
    tag,
)
from tests.support import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
BODY = b'{"ok": true}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One whole HTTP/1.1 request (head and Content-Length body); b"" when the peer closed."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


def answering(raw: bytes) -> Handler:
    """A handler that reads one request and writes ``raw`` (a whole HTTP answer) back."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()

    return answer


def keep_alive(raw: bytes, seen: list[bytes] | None = None) -> Handler:
    """A handler that answers every request on its connection with ``raw``, keeping each
    request (lower-cased) in ``seen`` when given."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await read_request(reader):
            if seen is not None:
                seen.append(request.lower())
            writer.write(raw)
            await writer.drain()

    return answer


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    """``handler`` serving raw TCP on a loopback port; yields the base URL."""
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(guarded, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.close()
        await srv.wait_closed()


@asynccontextmanager
async def client(timeout_s: float = 5.0, limits: ConnectionLimits | None = None) -> AsyncIterator[httpx.AsyncClient]:
    http = make_client(timeout_s, limits)
    try:
        yield http
    finally:
        await http.aclose()


def submit(url: str) -> httpx.Request:
    return httpx.Request("POST", f"{url}/submit", json={"prompt": "a fox"})


def poll(url: str) -> httpx.Request:
    return httpx.Request("GET", f"{url}/status")


async def test_the_shared_client_times_calls_over_the_aiohttp_transport() -> None:
    async with client() as http:
        assert isinstance(http, GatewayClient)
        assert isinstance(http.timing.inner, AiohttpTransport)


Observed = list[tuple[str, str, str, float]]


def observed_by(http: httpx.AsyncClient) -> Observed:
    seen: Observed = []
    assert isinstance(http, GatewayClient)
    http.timing.observers.append(lambda *call: seen.append(call))
    return seen


async def test_each_call_is_timed_with_its_provider_operation_and_status() -> None:
    async with server(answering(OK)) as url, client() as http:
        seen = observed_by(http)
        await send(http, "fal", submit(url), Phase.SUBMIT)
    [(provider, operation, outcome, seconds)] = seen
    assert (provider, operation, outcome) == ("fal", "submit", "200")
    assert 0 < seconds < 5


async def test_a_streamed_call_is_timed_too() -> None:
    async with server(answering(OK)) as url, client() as http:
        seen = observed_by(http)
        async with http.stream("GET", f"{url}/video", extensions={CALL_EXTENSION: ("apiframe", Phase.DOWNLOAD)}):
            pass
        untagged = await http.get(f"{url}/_sandbox/stats")  # not a vendor call: not timed
    assert untagged.status_code == 200
    assert [call[:3] for call in seen] == [("apiframe", "download", "200")]


async def test_a_failed_call_is_timed_with_the_failure_as_outcome() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with client() as http:
        seen = observed_by(http)
        with pytest.raises(Unavailable):
            await send(http, "railwail", poll(url), Phase.POLL)
    assert [call[:3] for call in seen] == [("railwail", "status", "ConnectError")]


async def test_an_answer_is_read_whole() -> None:
    async with server(answering(OK)) as url, client() as http:
        response = await send(http, "vendor", submit(url), Phase.SUBMIT)
    assert response.status_code == 200
    assert response.json() == {"ok": True}


async def test_an_answer_is_an_httpx_response_read_in_full() -> None:
    async with server(answering(OK)) as url, client() as http:
        request = poll(url)
        response = await send(http, "vendor", request, Phase.POLL)
        assert await response.aread() == BODY  # reading again is harmless
    assert (response.content, response.text) == (BODY, BODY.decode())
    assert response.headers["content-length"] == str(len(BODY))
    assert response.headers.get_list("content-type") == ["application/json"]
    assert response.request is request and response.http_version == "HTTP/1.1"
    assert response.is_closed and response.is_stream_consumed


async def test_a_compressed_answer_is_decoded() -> None:
    packed = gzip.compress(BODY)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
    raw = head + b"Content-Length: %d\r\n\r\n%s" % (len(packed), packed)
    async with server(answering(raw)) as url, client() as http:
        response = await send(http, "vendor", poll(url), Phase.POLL)
    assert response.json() == {"ok": True}
    assert response.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize("phase", [Phase.SUBMIT, Phase.POLL])
async def test_connection_refused_is_unavailable_whatever_the_phase(phase: Phase) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with client() as http:
        with pytest.raises(Unavailable) as caught:
            await send(http, "vendor", submit(url) if phase is Phase.SUBMIT else poll(url), phase)
    assert caught.value.fallback_safe


async def hang_up_after_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)


async def hang_up_after_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n{\"req")
    await writer.drain()


async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"this is not HTTP\r\n\r\n")
    await writer.drain()


DROPS = [hang_up_after_reading, hang_up_after_headers, answer_garbage]


@pytest.mark.parametrize("drop", DROPS, ids=lambda h: h.__name__)
async def test_a_submit_cut_off_after_it_was_sent_is_ambiguous(drop: Handler) -> None:
    async with server(drop) as url, client() as http:
        with pytest.raises(AmbiguousSubmit) as caught:
            await send(http, "vendor", submit(url), Phase.SUBMIT)
    assert not caught.value.fallback_safe  # the vendor may have a paid job: never resubmit blindly


@pytest.mark.parametrize("drop", DROPS, ids=lambda h: h.__name__)
async def test_a_poll_cut_off_is_unavailable_and_retryable(drop: Handler) -> None:
    async with server(drop) as url, client() as http:
        with pytest.raises(Unavailable) as caught:
            await send(http, "vendor", poll(url), Phase.POLL)
    assert caught.value.retryable


async def test_a_submit_whose_answer_times_out_is_ambiguous() -> None:
    never = asyncio.Event()

    async def read_and_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await never.wait()

    async with server(read_and_wait) as url, client(timeout_s=0.2) as http:
        try:
            with pytest.raises(AmbiguousSubmit, match="ReadTimeout"):
                await send(http, "vendor", submit(url), Phase.SUBMIT)
        finally:
            never.set()


async def test_each_client_and_each_request_keeps_its_own_read_timeout() -> None:
    """aiohttp's timeout object is made once per set of figures and shared: a short timeout
    on one client must not reach another, and a request's own timeout wins over its client's."""
    async def answer_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            await asyncio.sleep(0.5)
            writer.write(OK)
            await writer.drain()

    async with server(answer_late) as url, client(timeout_s=0.2) as short, client(timeout_s=5.0) as long:
        with pytest.raises(Unavailable, match="ReadTimeout"):
            await send(short, "vendor", poll(url), Phase.POLL)
        assert (await send(long, "vendor", poll(url), Phase.POLL)).status_code == 200
        own = poll(url)
        own.extensions["timeout"] = httpx.Timeout(0.2).as_dict()
        with pytest.raises(Unavailable, match="ReadTimeout"):
            await send(long, "vendor", own, Phase.POLL)
        assert (await send(long, "vendor", poll(url), Phase.POLL)).status_code == 200


async def test_connections_per_host_are_bounded() -> None:
    connections = 0

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await keep_alive(OK)(reader, writer)

    async with server(counting) as url, client(limits=ConnectionLimits(per_host=2)) as http:
        responses = await asyncio.gather(*(send(http, "vendor", poll(url), Phase.POLL) for _ in range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert connections == 2


async def test_a_cookie_set_by_one_answer_is_never_sent_on_the_next_request() -> None:
    """One client serves every caller's jobs: the jar keeps nothing (and costs nothing)."""
    body = b'{"ok": true}'
    cookie = (b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    seen: list[bytes] = []
    async with server(keep_alive(cookie, seen)) as url, client() as http:
        await send(http, "fal", poll(url), Phase.POLL)
        await send(http, "fal", poll(url), Phase.POLL)
        assert not http.cookies
    assert len(seen) == 2 and b"cookie" not in seen[1].replace(b"set-cookie", b"")


async def test_a_vendor_call_comes_back_from_the_transport_read_whole_and_a_download_streamed() -> None:
    """The transport reads a vendor call's answer itself (one read, the connection back in
    the pool before httpx sees it); a download stays a stream its reader pulls (unless it is
    small: next test)."""
    big = b"x" * (transport.WHOLE_BODY_BYTES + 1)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)

    async def by_path(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK if b"/status" in await read_request(reader) else answer)
        await writer.drain()

    async with server(by_path) as url, client() as http:
        assert isinstance(http, GatewayClient)
        inner = http.timing.inner
        whole = await inner.handle_async_request(tag(poll(url), "fal", Phase.POLL))
        assert whole.is_stream_consumed and whole.content == BODY  # no aread() needed
        streamed = await inner.handle_async_request(tag(httpx.Request("GET", f"{url}/video"), "fal", Phase.DOWNLOAD))
        with pytest.raises(httpx.ResponseNotRead):
            _ = streamed.content
        assert await streamed.aread() == big


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
GZIPPED = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (
    len(gzip.compress(BODY)), gzip.compress(BODY))


@pytest.mark.parametrize(("answer", "whole"), [(OK, True), (CHUNKED, False), (GZIPPED, False)],
                         ids=["small-declared", "undeclared-length", "compressed"])
async def test_a_small_download_is_read_whole_by_the_transport(answer: bytes, whole: bool) -> None:
    """A download declared at most ``WHOLE_BODY_BYTES`` and not compressed comes back
    read (the mirror writes it in one piece: no chunk-by-chunk read through httpx's
    generators); one of unknown length, or compressed (it may inflate past any cap), stays a
    stream its reader caps chunk by chunk."""
    async with server(answering(answer)) as url, client() as http:
        response = await http.send(tag(httpx.Request("GET", f"{url}/video"), "vendor", Phase.DOWNLOAD),
                                   stream=True)
        try:
            assert response.is_stream_consumed is whole
            assert await response.aread() == BODY
        finally:
            await response.aclose()


async def test_a_vendor_cookie_is_neither_kept_nor_sent_back() -> None:
    """httpx would extract every Set-Cookie into the client's jar (a third of its CPU per
    call) and a later ``client.stream``/``client.get`` to that host would send it."""
    heads: list[bytes] = []
    set_cookie = b"HTTP/1.1 200 OK\r\nSet-Cookie: lb=vendor-a; Path=/\r\nContent-Length: %d\r\n\r\n%s" % (
        len(BODY), BODY)
    async with server(keep_alive(set_cookie, heads)) as url, client() as http:
        first = await send(http, "vendor", poll(url), Phase.POLL)
        await http.get(f"{url}/video")
        assert first.headers["set-cookie"].startswith("lb=vendor-a")  # the answer itself is intact
        assert len(http.cookies) == 0
        with pytest.raises(ValueError, match="no cookies"):
            http.cookies = {"lb": "x"}
    assert len(heads) == 2 and not any(b"cookie:" in head for head in heads)


async def test_an_answer_is_freed_when_dropped_without_the_cyclic_collector() -> None:
    """httpx binds each response's stream back to the response: left so, every vendor
    call's response (with its request, headers and aiohttp's response) waited for the
    cyclic collector. Read whole, it now goes with its last reference."""
    async with server(answering(OK)) as url, client() as http:
        gc.disable()
        try:
            vendor_call = await send(http, "vendor", poll(url), Phase.POLL)
            assert vendor_call.json() == {"ok": True}
            read_by_httpx = await http.get(f"{url}/_sandbox/stats")  # untagged: streamed, read by httpx
            assert read_by_httpx.content == BODY and read_by_httpx.is_closed
            refs = [weakref.ref(vendor_call), weakref.ref(read_by_httpx)]
            del vendor_call, read_by_httpx
            assert [ref() for ref in refs] == [None, None]
        finally:
            gc.enable()


async def test_a_streamed_answer_stays_bound_until_closed() -> None:
    # chunked, no declared length: a small declared body is read whole by the transport
    # (small_body), so only an answer like this one is still streamed to the caller
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY))
    async with server(answering(chunked)) as url, client() as http:
        response = await http.send(tag(poll(url), "cdn", Phase.DOWNLOAD), stream=True)
        assert not response.is_closed
        assert b"".join([chunk async for chunk in response.aiter_raw()]) == BODY  # still readable
        assert response.is_closed and response.elapsed.total_seconds() > 0  # httpx's close stamp kept
