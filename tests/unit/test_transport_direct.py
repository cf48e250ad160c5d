"""The gateway client's direct send (past httpx's auth flow and redirect loop) and the
transport's response read whole (past httpx's reading machinery): each does what httpx's own
path does to the request and the response, and httpx's path still runs whenever the call
needs it."""

from __future__ import annotations

import base64
import contextlib

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from gateway.errors import Unavailable
from gateway.transport import Phase, URLPrefix, json_model, make_client, post_json, send, tag
from tests.support import free_port
from tests.unit.test_transport import BODY, CHUNKED, OK, client, keep_alive, poll, server


@pytest.fixture
def httpx_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names the calls that went through httpx's own ``send`` machinery."""
    seen: list[str] = []
    inner = httpx.AsyncClient._send_handling_auth

    async def recorded(self: httpx.AsyncClient, request: httpx.Request, *args: object, **kwargs: object) -> object:
        seen.append(request.url.path)
        return await inner(self, request, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx.AsyncClient, "_send_handling_auth", recorded)
    return seen


async def test_a_plain_vendor_call_skips_httpx_machinery_after_the_first(httpx_paths: list[str]) -> None:
    async with server(keep_alive(OK)) as url, client() as http:
        first = await send(http, "vendor", poll(url), Phase.POLL)
        second = await send(http, "vendor", poll(url), Phase.POLL)
    assert httpx_paths == ["/status"]  # the first opens the client the way httpx does
    for response in (first, second):
        assert response.json() == {"ok": True} and response.is_closed and response.is_stream_consumed
        assert response.request.extensions["timeout"]["read"] == 5.0  # the client's timeouts


async def test_auth_and_credentials_in_the_url_take_httpx_path(httpx_paths: list[str]) -> None:
    heads: list[bytes] = []
    async with server(keep_alive(OK, heads)) as url, client() as http:
        await send(http, "vendor", poll(url), Phase.POLL)
        await http.send(tag(poll(url), "vendor", Phase.POLL), auth=("u", "p"))
        with contextlib.suppress(ValueError):  # (aiohttp refuses URL credentials beside a header)
            await http.send(tag(poll(url.replace("http://", "http://v:w@")), "vendor", Phase.POLL))
    assert httpx_paths == ["/status"] * 3  # each through httpx's auth flow
    assert b"authorization: basic " + base64.b64encode(b"u:p").lower() in heads[1]


async def test_a_redirect_is_not_followed_and_says_where_it_goes(httpx_paths: list[str]) -> None:
    moved = b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
    async with server(keep_alive(moved)) as url, client() as http:
        await send(http, "vendor", poll(url), Phase.POLL)
        response = await send(http, "vendor", poll(url), Phase.POLL)
    assert len(httpx_paths) == 1
    assert response.status_code == 302 and response.next_request is not None
    assert str(response.next_request.url) == f"{url}/elsewhere" and response.history == []


async def test_a_transport_failure_names_its_request_and_keeps_its_meaning() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with client() as http:
        for _ in range(2):  # the second one takes the direct path
            request = tag(poll(url), "vendor", Phase.POLL)
            with pytest.raises(httpx.ConnectError) as caught:
                await http.send(request)
            assert caught.value.request is request
        with pytest.raises(Unavailable) as failed:
            await send(http, "vendor", poll(url), Phase.POLL)
    assert failed.value.fallback_safe


async def test_a_closed_client_refuses_to_send() -> None:
    async with server(keep_alive(OK)) as url:
        http = make_client(5.0)
        await send(http, "vendor", poll(url), Phase.POLL)  # opened: the next takes the direct path
        await http.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await http.send(poll(url))


async def test_an_untagged_answer_is_streamed_read_and_timed_as_httpx_does(httpx_paths: list[str]) -> None:
    async with server(keep_alive(CHUNKED)) as url, client() as http:
        await http.get(f"{url}/open")
        read = await http.send(httpx.Request("GET", f"{url}/stats"))
        streamed = await http.send(httpx.Request("GET", f"{url}/stats"), stream=True)
        assert not streamed.is_closed
        assert await streamed.aread() == BODY
    assert httpx_paths == ["/open"]
    assert read.content == BODY and read.is_closed and read.elapsed.total_seconds() > 0
    assert streamed.is_closed and streamed.elapsed.total_seconds() > 0


@pytest.mark.parametrize("answer", [OK, CHUNKED], ids=["declared", "chunked"])
async def test_an_answer_read_whole_is_what_httpx_would_make_of_it(answer: bytes) -> None:
    """The transport builds the response without httpx's reading machinery: the same
    content, headers (a chunked answer gains the Content-Length httpx would add) and state."""
    async with server(keep_alive(answer)) as url, client() as http:
        response = await send(http, "vendor", poll(url), Phase.POLL)
    expected = httpx.Response(200, headers=response.headers.raw[:-1] if answer is CHUNKED else response.headers.raw,
                              content=BODY)
    assert response.headers.multi_items() == expected.headers.multi_items()
    assert response.headers["content-length"] == str(len(BODY))
    assert (response.content, response.text, response.json()) == (BODY, BODY.decode(), {"ok": True})
    assert (response.is_closed, response.is_stream_consumed, response.num_bytes_downloaded) == (
        expected.is_closed, expected.is_stream_consumed, expected.num_bytes_downloaded)
    assert await response.aread() == BODY and list(response.iter_bytes()) == [BODY]
    with pytest.raises(httpx.StreamConsumed):
        [chunk async for chunk in response.aiter_raw()]


@pytest.mark.parametrize("url", [
    "https://railwail.com/api/v1/videos/video_68d7512d07848190b3e45da0ecbebcde",
    "https://railwail.com/api/v1/videos/video_68d7512d07848190b3e45da0ecbebcde/content",
    "http://127.0.0.1:8123/api/v1/videos/v-1/content",
])
def test_a_url_under_a_prefix_is_the_url_httpx_parses(url: str) -> None:
    """Made on the prefix's parse (httpx's private parse result): if httpx changes that, this
    fails rather than a vendor call going to a wrong URL."""
    base = url.split("/videos/")[0]
    made = URLPrefix(base).url(url)
    assert isinstance(made, httpx.URL)
    parsed = httpx.URL(url)
    assert made == parsed and str(made) == url and made.raw_path == parsed.raw_path
    assert (made.scheme, made.host, made.port, made.netloc, made.path) == (
        parsed.scheme, parsed.host, parsed.port, parsed.netloc, parsed.path)
    assert httpx.Request("GET", made).headers["host"] == httpx.Request("GET", url).headers["host"]


@pytest.mark.parametrize(("prefix", "url"), [
    ("https://railwail.com/api/v1", "https://railwail.com/api/v1/videos/a b"),         # quoted by httpx
    ("https://railwail.com/api/v1", "https://railwail.com/api/v1/videos/../x"),        # a dot segment
    ("https://railwail.com/api/v1", "https://railwail.com/api/v1/videos/x?after=y"),   # a query
    ("https://railwail.com/api/v1", "https://cdn.example/v.mp4"),                      # elsewhere
    ("https://railwail.com/api/v1", "https://railwail.com/api/v10/videos/x"),          # not under it
    ("https://RailWail.com:443/api/v1", "https://RailWail.com:443/api/v1/videos/x"),   # normalised by httpx
    ("https://railwail.com/api/v1?k=1", "https://railwail.com/api/v1?k=1/videos/x"),   # a query in the prefix
    ("http://[::1", "http://[::1/videos/x"),                                           # not a URL at all
])
def test_any_other_url_is_left_for_httpx_to_parse(prefix: str, url: str) -> None:
    assert URLPrefix(prefix).url(url) == url


class _Answer(BaseModel):
    id: str
    progress: float | None = None


@pytest.mark.parametrize("body", [
    b'{"id":"a","progress":"50"}', b'{"id":"a","id":"b"}', b'{"id":"a","progress":NaN}',
    b'\xef\xbb\xbf{"id":"a"}', '{"id":"\u00e9"}'.encode("utf-16"), b'{"id":"\\ud800"}',   # read the old way
    b'{"id":"a\tb"}', b'{"id":"a\xff"}', b"<html>", b'{"progress":1}',                       # refused the old way
])
def test_an_answer_read_as_a_model_means_and_fails_as_json_then_validate_did(body: bytes) -> None:
    response = httpx.Response(200, content=body)
    try:
        expected: object = _Answer.model_validate(response.json())
    except (ValueError, ValidationError) as exc:
        expected = type(exc)
    try:
        got: object = json_model(_Answer, response)
    except (ValueError, ValidationError) as exc:
        got = type(exc)
    assert repr(got) == repr(expected)  # (repr: NaN is not equal to itself)


def test_a_plain_answer_is_read_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    response = httpx.Response(200, content=b'{"id":"a","progress":0.5}')
    monkeypatch.setattr(httpx.Response, "json", lambda *_a, **_k: pytest.fail("read through json.loads"))
    assert json_model(_Answer, response) == _Answer(id="a", progress=0.5)


@pytest.mark.parametrize("url", [
    "https://railwail.com/api/v1/videos/v1",                     # made on the prefix
    "http://127.0.0.1:8123/api/v1/videos/v-1/content",           # (another prefix: below)
    "https://cdn.example/v.mp4?sig=a b",                         # not under it: httpx's own
])
def test_a_get_under_a_prefix_is_the_request_httpx_makes(url: str) -> None:
    headers = httpx.Headers({"Authorization": "Bearer k", "Accept": "application/json"})
    prefix = URLPrefix(url.split("/videos/")[0] if "/videos/" in url else "https://railwail.com/api/v1")
    for _ in range(2):  # the second from the cached header list
        made = prefix.get(url, headers)
        expected = httpx.Request("GET", url, headers=headers)
        assert (made.method, made.url, made.headers.raw, made.content) == (
            expected.method, expected.url, expected.headers.raw, expected.content)
        assert made.extensions == expected.extensions and isinstance(made.stream, httpx.ByteStream)
        assert made.headers.multi_items() == expected.headers.multi_items()


def test_a_get_with_its_own_host_header_is_left_to_httpx() -> None:
    headers = httpx.Headers({"Host": "elsewhere.example", "Accept": "application/json"})
    url = "https://railwail.com/api/v1/videos/v1"
    made = URLPrefix("https://railwail.com/api/v1").get(url, headers)
    assert made.headers.raw == httpx.Request("GET", url, headers=headers).headers.raw


@pytest.mark.parametrize("body", [{"model": "m", "prompt": "un renard roux \u00e9\u2603", "seconds": "5"},
                                  [1, 2.5, None]])
def test_a_json_post_is_the_request_httpx_makes(body: object) -> None:
    url = httpx.URL("https://railwail.com:8443/api/v1/videos")
    headers = httpx.Headers({"Authorization": "Bearer k", "Accept": "application/json"})
    for _ in range(2):  # the second with the headers' check cached
        made, expected = post_json(url, body, headers), httpx.Request("POST", url, json=body, headers=headers)
        assert (made.method, made.url, made.headers.raw, made.content) == (
            expected.method, expected.url, expected.headers.raw, expected.content)
        assert made.extensions == expected.extensions and isinstance(made.stream, httpx.ByteStream)


def test_a_json_post_with_its_own_content_headers_or_a_bad_body_is_httpx_own() -> None:
    url = httpx.URL("https://railwail.com/api/v1/videos")
    own = httpx.Headers({"Content-Type": "application/vnd.api+json", "Accept": "application/json"})
    expected = httpx.Request("POST", url, json={"a": 1}, headers=own)
    assert post_json(url, {"a": 1}, own).headers.raw == expected.headers.raw
    plain = httpx.Headers({"Accept": "application/json"})
    for bad in ({"progress": float("nan")}, {"when": object()}):  # refused alike: ValueError / TypeError
        with pytest.raises((ValueError, TypeError)) as expected:
            httpx.Request("POST", url, json=bad, headers=plain)
        with pytest.raises(expected.type):
            post_json(url, bad, plain)
