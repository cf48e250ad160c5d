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
sent" -- which would let a paid submit be repeated elsewhere).

Every vendor call goes through ``client.send`` (one path, no shortcut around httpx) and
through :class:`TimedTransport`, which times it by provider, operation and outcome: the
call is tagged (:func:`tag`) with whom it is for and what it does.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
import httpx
import yarl

from gateway.errors import AmbiguousSubmit, ProviderError, Unavailable
from gateway.logs import vendor_called


class Phase(StrEnum):
    """What a vendor call does (the ``operation`` of its timing)."""

    SUBMIT = "submit"
    POLL = "status"
    RESULT = "result"
    CANCEL = "cancel"
    DOWNLOAD = "download"
    #: reading the vendor's list of recent jobs (adoption by list scan)
    LIST = "list"


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


# -- timing every vendor call ----------------------------------------------------------------

#: the ``request.extensions`` key naming a vendor call: ``(provider, Phase)``
CALL_EXTENSION = "reelgate.call"

#: told of each finished vendor call: provider, operation, outcome, seconds
CallObserver = Callable[[str, str, str, float], None]


def tag(request: httpx.Request, provider: str, phase: Phase) -> httpx.Request:
    """Mark ``request`` as ``phase`` at ``provider``, for :class:`TimedTransport`."""
    request.extensions = {**request.extensions, CALL_EXTENSION: (provider, phase)}
    return request


class TimedTransport(httpx.AsyncBaseTransport):
    """Wraps the real transport and tells its observers how long each tagged call took,
    from sending to the whole answer (to its headers for a download streamed afterwards by
    its reader: one not :func:`small_body`). The outcome is the HTTP status code, or the transport failure's httpx class
    (``ConnectError``, ``ReadTimeout``...). Untagged requests are not vendor calls (the
    sandbox's stats, say) and pass through untimed."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.observers: list[CallObserver] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = request.extensions.get(CALL_EXTENSION)
        if call is None or not self.observers:
            return await self.inner.handle_async_request(request)
        start = time.perf_counter()
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TransportError as exc:
            self._observe(call, type(exc).__name__, start)
            raise
        self._observe(call, str(response.status_code), start)
        return response

    def _observe(self, call: tuple[str, Phase], outcome: str, start: float) -> None:
        seconds = time.perf_counter() - start
        provider, phase = call
        for observer in self.observers:
            observer(provider, phase.value, outcome, seconds)

    async def aclose(self) -> None:
        await self.inner.aclose()


class NoCookies(httpx.Cookies):
    """A cookie store that never keeps one.

    Adapters build their own ``httpx.Request``s and ``client.send`` never adds the client's
    cookies to those, so what httpx extracted from every answer was never sent back -- yet
    extracting it (a ``urllib`` request and an ``email`` message built per response) was
    about a third of ``client.send``'s CPU (docs/benchmarks.md, section 4). Nor may one
    vendor's cookie ride along on a later call (a download through ``client.stream``)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass

    def set_cookie_header(self, request: httpx.Request) -> None:
        pass


class GatewayClient(httpx.AsyncClient):
    """httpx's client over :class:`AiohttpTransport`, every call timed by ``timing``; it
    keeps no cookies (:class:`NoCookies`)."""

    def __init__(self, transport: httpx.AsyncBaseTransport, timeout: httpx.Timeout) -> None:
        self.timing = TimedTransport(transport)
        self._no_cookies = NoCookies()
        super().__init__(transport=self.timing, timeout=timeout, follow_redirects=False)

    async def send(self, request: httpx.Request, *, stream: bool = False, **options: Any) -> httpx.Response:
        """httpx's ``send`` (``options``: its ``auth`` and ``follow_redirects``); a response
        read whole comes back :func:`unbound`."""
        response = await super().send(request, stream=stream, **options)
        return response if stream else unbound(response)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        if cookies:
            raise ValueError("the gateway's client keeps no cookies: set them on the request")


#: what a closed response's ``stream`` becomes: it is never read again (httpx raises
#: ``StreamClosed`` / ``StreamConsumed`` first) and its ``aclose`` is never called twice
_CLOSED_STREAM = httpx.ByteStream(b"")


def unbound(response: httpx.Response) -> httpx.Response:
    """``response`` (once closed) without its reference cycle: httpx's client wraps every
    response's stream in one that points back to the response (to stamp ``elapsed`` at
    close), so a response, its request, headers, URL and aiohttp's response behind it could
    only be freed by the cyclic garbage collector, a few dozen objects per vendor call. Under
    load they outlived young collections and were walked again in full ones (~7 % of the
    service's CPU in the collector; docs/benchmarks.md, section 6.gcloop). Unbound, they go
    the moment the last reference does."""
    if response.is_closed:
        response.stream = _CLOSED_STREAM
    return response


def make_client(timeout_s: float = 30.0, limits: ConnectionLimits | None = None) -> GatewayClient:
    """The one client a gateway uses for every vendor call."""
    return GatewayClient(AiohttpTransport(limits or ConnectionLimits()),
                         httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)))


async def send(client: httpx.AsyncClient, provider: str, request: httpx.Request, phase: Phase) -> httpx.Response:
    """Send ``request`` and read the whole answer; transport failures become gateway errors.

    (Adapters build their requests themselves, so they carry no timeouts of their own:
    ``client.send`` puts the client's on a request that has none.) One coroutine, not a
    wrapper around another: this runs for every vendor call."""
    started = time.perf_counter()
    tag(request, provider, phase)
    try:
        response = await client.send(request)
    except httpx.TransportError as exc:
        error = _failure(exc, provider, phase)
        vendor_called(provider, phase.value, started, error=type(error).__name__)
        raise error from exc
    except ProviderError as exc:
        vendor_called(provider, phase.value, started, error=type(exc).__name__)
        raise
    vendor_called(provider, phase.value, started, status=response.status_code)
    return response


def _failure(exc: httpx.TransportError, provider: str, phase: Phase) -> ProviderError:
    """What a transport failure means, by whether the request may have reached the vendor."""
    if isinstance(exc, _NOT_SENT):
        return Unavailable(f"cannot connect ({type(exc).__name__})", provider=provider)
    if phase is Phase.SUBMIT:
        return AmbiguousSubmit(f"the submit was sent but no answer came ({type(exc).__name__}); a job may exist",
                               provider=provider)
    return Unavailable(f"{phase} call failed ({type(exc).__name__})", provider=provider)


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


#: read size of a streamed body (a download being mirrored)
_CHUNK_BYTES = 64 * 1024
#: a download declared at most this long (and not compressed) is read in one piece, by
#: the transport and by its reader: the size the mirror's writer batches anyway
WHOLE_BODY_BYTES = 1024 * 1024
_EXTENSIONS = {"http_version": b"HTTP/1.1"}


def small_body(headers: Mapping[str, str]) -> bool:
    """Whether an answer with these (case-insensitive) headers is read whole rather than
    streamed: its declared length is at most ``WHOLE_BODY_BYTES`` and it is not compressed
    (a small gzip body may inflate to any size; streamed, its reader's size cap stops it
    chunk by chunk). A larger declared length is left to the reader, who refuses it before
    reading a byte when it is over its cap."""
    declared = headers.get("content-length", "")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    return declared.isdigit() and int(declared) <= WHOLE_BODY_BYTES and encoding in ("", "identity")


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
        """httpx's entry point. A vendor call's answer (tagged, not a download) is read here
        in one piece and its connection goes back to the pool at once: handing httpx a
        stream it reads back chunk by chunk through its async generators cost more CPU
        than the rest of the call's client side (docs/benchmarks.md, section 4). So is a
        download declared small and not compressed (:func:`small_body`): the mirror
        writes it in one piece anyway. Anything else (large downloads, untagged calls) is
        streamed: httpx reads it, or the caller does.

        (aiohttp's errors are mapped by a plain ``try``, not :func:`_aiohttp_errors_mapped`:
        a context manager's generator per call, on every vendor call.)"""
        timeout = _aiohttp_timeout(request.extensions.get("timeout") or _NO_TIMEOUTS)
        call = request.extensions.get(CALL_EXTENSION)
        try:
            response = await self._request(request, timeout)
            if call is not None and (call[1] is not Phase.DOWNLOAD or small_body(response.headers)):
                try:
                    body = await response.read()
                finally:
                    response.release()
                # content=: httpx decodes it by Content-Encoding and marks it read
                return httpx.Response(response.status, headers=response.raw_headers, content=body,
                                      request=request, extensions=_EXTENSIONS)
        except aiohttp.ClientError as exc:
            raise _mapped(exc) from exc
        return httpx.Response(response.status, headers=response.raw_headers, stream=_AiohttpStream(response),
                              request=request, extensions=_EXTENSIONS)

    def _request(self, request: httpx.Request,
                 timeout: aiohttp.ClientTimeout) -> Awaitable[aiohttp.ClientResponse]:
        """aiohttp's request, to be awaited by the caller (a plain function: one coroutine
        frame fewer per call)."""
        try:
            data: object = request.content or None
        except httpx.RequestNotRead:
            data = request.stream  # a streamed upload; aiohttp frames it itself
            request.headers.pop("transfer-encoding", None)
        return self.session().request(
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


_NO_TIMEOUTS: Mapping[str, float | None] = {}
#: (connect, read, pool) -> aiohttp's timeout: every call of one client carries the same
#: three figures, so the (frozen) aiohttp object is made once, not per call
_TIMEOUTS: dict[tuple[float | None, float | None, float | None], aiohttp.ClientTimeout] = {}


def _aiohttp_timeout(timeout: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx's timeouts in aiohttp's terms (no total: a long download is not a failure)."""
    key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
    made = _TIMEOUTS.get(key)
    if made is None:
        if len(_TIMEOUTS) >= 64:  # per-request timeouts of every value: keep the table small
            _TIMEOUTS.clear()
        made = _TIMEOUTS[key] = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
    return made


def _session(limits: ConnectionLimits) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limits.total, limit_per_host=limits.per_host,
                                     keepalive_timeout=limits.keepalive_s)
    # Cookies are httpx's business (and a vendor's cookie must never reach another call).
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
