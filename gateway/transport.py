"""Sending an adapter's ``httpx.Request`` and turning transport failures into gateway errors.

What a transport failure *means* depends on whether the request may have reached the
vendor: a refused connection sent nothing (safe to go elsewhere); a submit whose answer
was cut off may have created a paid job (``AmbiguousSubmit``).

The client keeps httpx's API (adapters build ``httpx.Request``s) over aiohttp's
connection pool: at 64 concurrent submit+status pairs httpx 0.28's own pool did 87
pairs/s here and aiohttp under httpx's API 456 (docs/benchmarks.md).
:class:`AiohttpTransport` maps aiohttp's errors by what they say about the request
(``httpx_aiohttp``, which does the same conversion, turns a server that dropped the
connection after reading a request into ``httpx.ConnectTimeout`` -- "nothing was
sent" -- which would let a paid submit be repeated elsewhere), and :func:`send` takes
a direct path to it that skips httpx's per-call client machinery.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

import aiohttp
import httpx
import yarl

from gateway.errors import AmbiguousSubmit, ProviderError, Unavailable
from gateway.logs import vendor_called


class Phase(StrEnum):
    SUBMIT = "submit"
    POLL = "poll"
    RESULT = "result"
    CANCEL = "cancel"
    DOWNLOAD = "download"


#: failures that happen before a byte of the request left this process
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections the one shared client may hold.

    ``per_host`` bounds each vendor (vendors are distinct hosts), so one slow vendor
    cannot take every connection; ``total`` bounds the process. In the sandbox all
    vendors share one host, so ``per_host`` bounds them together there.
    """

    total: int = 256
    per_host: int = 64
    #: idle connections are dropped after this: below the 5 s that common servers
    #: (uvicorn, many proxies) keep them, so a pooled connection is not reused just
    #: as the server closes it -- a submit lost that way would be ambiguous
    keepalive_s: float = 4.0


class GatewayClient(httpx.AsyncClient):
    """httpx's client over :class:`AiohttpTransport`, with a direct path for the gateway's
    own calls.

    Adapters build complete ``httpx.Request``s and the gateway sets no auth, cookies,
    redirects or event hooks on this client, so for :func:`send` httpx's per-call
    machinery around the transport (auth flow, redirect loop, cookie extraction, a
    streamed body read back chunk by chunk) is pure cost: it was about half the CPU of a
    poll at 64 concurrent jobs (docs/benchmarks.md). Everything else (``client.send``,
    ``client.get``, streaming) still goes through httpx unchanged.
    """

    def __init__(self, transport: AiohttpTransport, timeout: httpx.Timeout) -> None:
        super().__init__(transport=transport, timeout=timeout, follow_redirects=False)
        self.direct = transport
        self.direct_timeout = _aiohttp_timeout(timeout.as_dict())


def make_client(timeout_s: float = 30.0, limits: ConnectionLimits | None = None) -> GatewayClient:
    """The one client a gateway uses for every vendor call."""
    return GatewayClient(AiohttpTransport(limits or ConnectionLimits()),
                         httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)))


async def send(client: httpx.AsyncClient, provider: str, request: httpx.Request, phase: Phase) -> httpx.Response:
    """Send ``request`` and read the whole answer; transport failures become gateway errors."""
    started = time.perf_counter()
    try:
        response = await _send(client, request, provider, phase)
    except ProviderError as exc:
        vendor_called(provider, phase.value, started, error=type(exc).__name__)
        raise
    vendor_called(provider, phase.value, started, status=response.status_code)
    return response


async def _send(client: httpx.AsyncClient, request: httpx.Request, provider: str, phase: Phase) -> httpx.Response:
    try:
        if isinstance(client, GatewayClient):
            return await client.direct.fetch(request, client.direct_timeout)
        response = await client.send(request)
        await response.aread()
        return response
    except _NOT_SENT as exc:
        raise Unavailable(f"cannot connect ({type(exc).__name__})", provider=provider) from exc
    except httpx.TransportError as exc:
        if phase is Phase.SUBMIT:
            raise AmbiguousSubmit(
                f"the submit was sent but no answer came ({type(exc).__name__}); a job may exist",
                provider=provider,
            ) from exc
        raise Unavailable(f"{phase} call failed ({type(exc).__name__})", provider=provider) from exc


def describe(error: ProviderError) -> str:
    return f"{type(error).__name__}: {error.message}"


# -- the aiohttp transport -------------------------------------------------------------------

#: aiohttp's errors, most specific first, by what they say about the request
_AIOHTTP_ERRORS: tuple[tuple[type[aiohttp.ClientError], type[httpx.TransportError]], ...] = (
    (aiohttp.ClientConnectorError, httpx.ConnectError),        # refused, DNS, TLS handshake
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),    # no connection in time (pool or connect)
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),           # sent; the answer did not come in time
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # closed after reading the request
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),   # the body was cut off
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # an answer that is not HTTP
    (aiohttp.ClientOSError, httpx.ReadError),                  # reset or broken pipe on a live connection
)


def _mapped(exc: aiohttp.ClientError) -> httpx.TransportError:
    for source, target in _AIOHTTP_ERRORS:
        if isinstance(exc, source):
            return target(str(exc) or type(exc).__name__)
    return httpx.TransportError(str(exc) or type(exc).__name__)


@contextlib.contextmanager
def _aiohttp_errors_mapped() -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        raise _mapped(exc) from exc


class _AiohttpStream(httpx.AsyncByteStream):
    """A streamed response body (``client.send(..., stream=True)``), errors mapped."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _aiohttp_errors_mapped():
            async for chunk in self._response.content.iter_chunked(_CHUNK_BYTES):
                yield chunk

    async def aclose(self) -> None:
        with _aiohttp_errors_mapped():
            self._response.release()


RawHeaders = tuple[tuple[bytes, bytes], ...]

#: read size of a streamed body (a download being mirrored)
_CHUNK_BYTES = 64 * 1024
_EXTENSIONS = {"http_version": b"HTTP/1.1"}


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests over one aiohttp session: per-host limits, no cookie jar, and errors
    mapped by whether the request may have reached the server.

    (``httpx_aiohttp`` does the same conversion but maps a server that hung up after
    reading the request to ``ConnectTimeout``, "nothing was sent".)
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self._limits = limits
        # made on first use, inside the event loop that will run it
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's entry point: the body is streamed (httpx reads it, or the caller does)."""
        timeout = _aiohttp_timeout(request.extensions.get("timeout", {}))
        with _aiohttp_errors_mapped():
            response = await self._request(request, timeout)
        return httpx.Response(response.status, headers=response.raw_headers, stream=_AiohttpStream(response),
                              request=request, extensions=_EXTENSIONS)

    async def fetch(self, request: httpx.Request, timeout: aiohttp.ClientTimeout) -> httpx.Response:
        """The whole answer to ``request`` in one step, the connection back in the pool."""
        with _aiohttp_errors_mapped():
            response = await self._request(request, timeout)
            try:
                body = await response.read()
            finally:
                response.release()
        return _whole_response(response.status, response.raw_headers, body, request)

    async def _request(self, request: httpx.Request, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        try:
            data: object = request.content or None
        except httpx.RequestNotRead:
            data = request.stream  # a streamed upload; aiohttp frames it itself
            request.headers.pop("transfer-encoding", None)
        return await self.session().request(
            request.method,
            # httpx has already parsed and percent-encoded the URL: tell yarl not to redo it
            yarl.URL(str(request.url), encoded=True),
            headers=request.headers.multi_items(),
            data=data,
            allow_redirects=False,
            auto_decompress=False,  # httpx decodes by Content-Encoding
            compress=False,
            timeout=timeout,
        )

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = _session(self._limits)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _whole_response(status: int, raw_headers: RawHeaders, body: bytes, request: httpx.Request) -> httpx.Response:
    """An ``httpx.Response`` around a body already read in full.

    ``httpx.Response(content=...)`` runs the body through the decoder chain and rewrites
    Content-Length: ~9 us per response here, against ~1.5 us this way. An unencoded body needs
    neither, so it is set as the already-read content (what ``read()`` would store; httpx
    is pinned below 0.29, and tests/unit/test_transport.py pins this). A compressed body
    takes httpx's own path, which decodes it."""
    if any(name.lower() == b"content-encoding" for name, _ in raw_headers):
        return httpx.Response(status, headers=raw_headers, content=body, request=request, extensions=_EXTENSIONS)
    response = httpx.Response(status, headers=raw_headers, stream=httpx.ByteStream(body), request=request,
                              extensions=_EXTENSIONS)
    response._content = body
    response.is_stream_consumed = response.is_closed = True
    return response


def _aiohttp_timeout(timeout: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx's timeouts in aiohttp's terms (no total: a long download is not a failure)."""
    return aiohttp.ClientTimeout(sock_connect=timeout.get("connect"), sock_read=timeout.get("read"),
                                 connect=timeout.get("pool"))


def _session(limits: ConnectionLimits) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limits.total, limit_per_host=limits.per_host,
                                     keepalive_timeout=limits.keepalive_s)
    # Cookies are httpx's business (and a vendor's cookie must never reach another call).
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
