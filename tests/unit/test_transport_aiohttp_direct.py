"""What the aiohttp transport hands aiohttp, made without httpx's and yarl's per-call work
(the URL on its origin's yarl URL, the headers' decoded copy kept, an answer's headers built
from aiohttp's raw list, the connection back in the pool without a second release): each is
what the plain way makes, and the call on the wire is unchanged."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
import pytest
import yarl

from gateway import transport_aiohttp
from gateway.errors import Unavailable
from gateway.transport import GatewayClient, Phase, URLPrefix, send
from gateway.transport_aiohttp import _aiohttp_headers, _headers, _yarl_url
from tests.unit.test_transport import BODY, OK, client, keep_alive, poll, read_request, server


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8123/api/v1/videos/video_68d7512d",           # a job's status URL
    "http://127.0.0.1:8123/api/v1/videos/video_68d7512d/content",
    "https://railwail.com/api/v1/videos",                            # the default port
    "https://railwail.com:8443/api/v1/videos",
    "http://LOCALHOST:80/a",                                         # normalised by httpx first
    "http://[::1]:8080/v1/videos/x",                                 # IPv6
    "https://bücher.example/v/ä b%2Fc",                              # IDNA host, quoted and kept %2F
    "http://h.example/a/../b/./c",                                   # dot segments (httpx's reading)
    "http://h.example",                                              # no path
    "http://h.example/v?after=x&limit=100",                          # a query: parsed by yarl
    "http://h.example/v#frag",                                       # a fragment: likewise
    "http://user:p%40ss@h.example/v",                                # user info: likewise
    "http://h.example/v?",                                           # an empty query
    "/v1/videos/x",                                                  # relative: aiohttp refuses it
])
def test_aiohttps_url_is_the_one_yarl_parses_from_httpxs(url: str) -> None:
    parsed = httpx.URL(url)
    for _ in range(2):  # the second on the origin's kept URL
        made = _yarl_url(parsed)
        expected = yarl.URL(str(parsed), encoded=True)
        assert made == expected and str(made) == str(expected)
        assert (made.scheme, made.host, made.port, made.raw_path_qs, made.raw_user, made.raw_password) == (
            expected.scheme, expected.host, expected.port, expected.raw_path_qs, expected.raw_user,
            expected.raw_password)


def test_a_url_made_on_a_prefix_goes_to_aiohttp_as_its_string_would() -> None:
    prefix = URLPrefix("http://127.0.0.1:8123/api/v1")
    for job in ("video_1", "video_2/content"):
        made = prefix.url(f"http://127.0.0.1:8123/api/v1/videos/{job}")
        assert isinstance(made, httpx.URL)
        assert _yarl_url(made) == yarl.URL(f"http://127.0.0.1:8123/api/v1/videos/{job}", encoded=True)


@pytest.mark.parametrize("raw", [
    [(b"Host", b"h.example"), (b"Authorization", b"Bearer k"), (b"Accept", b"application/json")],
    [(b"X-Name", "caf\u00e9".encode())],                      # utf-8, guessed
    [(b"X-Name", "caf\u00e9".encode("latin-1"))],             # neither ascii nor utf-8: iso-8859-1
    [(b"Accept", b"a"), (b"accept", b"b")],                   # repeated, in order
])
def test_the_headers_aiohttp_gets_are_httpxs_decoded_items(raw: list[tuple[bytes, bytes]]) -> None:
    for _ in range(2):  # the second from the kept copy
        headers = httpx.Headers(raw)
        made = _aiohttp_headers(headers)
        assert list(made.items()) == headers.multi_items()
        with pytest.raises(TypeError):
            made["X-Added"] = "no"  # type: ignore[index]  # shared: read-only


def test_headers_with_an_encoding_of_their_own_are_decoded_with_it() -> None:
    raw = [(b"X-Name", "caf\u00e9".encode())]
    guessed = httpx.Headers(raw)
    own = httpx.Headers(raw)
    own.encoding = "iso-8859-1"
    assert list(_aiohttp_headers(guessed).items()) == guessed.multi_items() == [("x-name", "caf\u00e9")]
    assert list(_aiohttp_headers(own).items()) == own.multi_items() == [("x-name", "caf\u00c3\u00a9")]


@pytest.mark.parametrize("raw", [
    ((b"Content-Type", b"application/json"), (b"Content-Length", b"12"), (b"Set-Cookie", b"a=1"),
     (b"Set-Cookie", b"b=2")),
    ((b"X-Name", "caf\u00e9".encode()),),
    (),
])
def test_an_answers_headers_are_what_httpx_makes_of_the_raw_list(raw: tuple[tuple[bytes, bytes], ...]) -> None:
    made, expected = _headers(raw), httpx.Headers(raw)
    assert made._list == expected._list and made.raw == expected.raw
    assert made.multi_items() == expected.multi_items() and made.encoding == expected.encoding
    assert httpx.Response(200, headers=made).headers.raw == httpx.Response(200, headers=raw).headers.raw


async def test_an_answer_read_whole_leaves_its_connection_in_the_pool() -> None:
    """Read to its end, aiohttp's response has put its connection back already; the next
    call takes that connection again."""
    seen: list[bytes] = []
    connections = 0

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await keep_alive(OK, seen)(reader, writer)

    async with server(counting) as url, client() as http:
        assert isinstance(http, GatewayClient)
        for _ in range(3):
            response = await send(http, "vendor", poll(url), Phase.POLL)
            assert response.content == BODY
        inner = http.timing.inner
        assert isinstance(inner, transport_aiohttp.AiohttpTransport)
        connector = inner.session().connector
        assert connector is not None
        assert sum(len(held) for held in connector._conns.values()) == 1  # idle in the pool
    assert connections == 1 and len(seen) == 3
    assert seen[0].startswith(b"get /status http/1.1\r\n") and b"host: 127.0.0.1:" in seen[0]


async def test_a_small_answer_in_with_its_head_is_taken_from_aiohttps_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_read(*_args: object) -> bytes:
        raise AssertionError("read through aiohttp's read loop")

    monkeypatch.setattr(aiohttp.ClientResponse, "read", no_read)
    async with server(keep_alive(OK)) as url, client() as http:
        for _ in range(2):
            assert (await send(http, "vendor", poll(url), Phase.POLL)).content == BODY


async def test_a_body_that_comes_after_its_head_is_read_to_its_end() -> None:
    """The head alone first: the body is not in yet, so aiohttp reads it; the connection
    still goes back to the pool."""
    head, _, _ = OK.partition(b"\r\n\r\n")
    connections = 0

    async def slow_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while await read_request(reader):
            writer.write(head + b"\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(BODY)
            await writer.drain()

    async with server(slow_body) as url, client() as http:
        for _ in range(2):
            response = await send(http, "vendor", poll(url), Phase.POLL)
            assert response.content == BODY and response.headers["content-length"] == str(len(BODY))
    assert connections == 1


async def test_a_body_cut_off_after_its_head_is_a_protocol_error() -> None:
    head, _, _ = OK.partition(b"\r\n\r\n")

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head + b"\r\n\r\n" + BODY[:3])
        await writer.drain()

    async with server(cut) as url, client() as http:
        with pytest.raises(Unavailable):
            await send(http, "vendor", poll(url), Phase.POLL)


async def test_a_url_aiohttp_cannot_send_to_is_still_refused_as_never_sent() -> None:
    async with client() as http:
        for url in ("/v1/videos/x", "ftp://h.example/v"):
            with pytest.raises(Unavailable, match="UnsupportedProtocol"):
                await send(http, "vendor", httpx.Request("GET", url), Phase.SUBMIT)
