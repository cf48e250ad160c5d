"""The httpx transports and clients ``bench/rustclient.py`` measures: httpx over pyreqwest,
pyqwest, rnet and httpx-pycurl (each optional: a missing one is skipped), answers read whole as
``transport_aiohttp._read_whole`` reads them, errors mapped by whether the request may have
been sent (split out of ``bench/rustclient.py``)."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable
from typing import Any

import httpx

from gateway.transport import CLOSED_STREAM, ConnectionLimits
from gateway.transport_aiohttp import _headers as httpx_headers

try:
    import pyreqwest.exceptions as pyreqwest_exc
    from pyreqwest.client import ClientBuilder
    from pyreqwest.compatibility.httpx import HttpxTransport as PyreqwestStock
except ImportError:  # pragma: no cover
    ClientBuilder = None
try:
    import pyqwest
    from pyqwest.httpx import AsyncPyqwestTransport
except ImportError:  # pragma: no cover
    pyqwest = None
try:
    import rnet
except ImportError:  # pragma: no cover
    rnet = None
try:
    from httpx_pycurl import AsyncPyCurlTransport
except ImportError:  # pragma: no cover
    AsyncPyCurlTransport = None

TIMEOUT = httpx.Timeout(30.0, connect=10.0)  # make_client()'s
LIMITS = ConnectionLimits()
_EXT = {"http_version": b"HTTP/1.1"}
_SKIP = {"host", "content-length"}  # the clients set these themselves


def whole(status: int, raw: list[tuple[bytes, bytes]], body: bytes, request: httpx.Request) -> httpx.Response:
    """An answer read whole as ``transport_aiohttp._read_whole`` makes it (no encoding here)."""
    answer = httpx.Response(status, headers=httpx_headers(tuple(raw)), stream=CLOSED_STREAM, request=request,
                            extensions=_EXT)
    answer._content = body
    answer.is_stream_consumed = answer.is_closed = True
    return answer


_HDRS: dict[tuple[Any, ...], list[tuple[str, str]]] = {}


def plain_headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    """A request's headers as str pairs, less Host and Content-Length, kept per header list."""
    key = tuple(headers._list)
    made = _HDRS.get(key)
    if made is None:
        made = _HDRS[key] = [(k, v) for k, v in headers.multi_items() if k.lower() not in _SKIP]
    return made


# -- transports on each client (``own``): read whole, errors mapped by "may have been sent" ---

class PyreqwestTransport(httpx.AsyncBaseTransport):
    """httpx over pyreqwest; timeouts are the client's (connect / read), set once."""

    def __init__(self) -> None:
        self.client = pyreqwest_client()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        builder = self.client.request(request.method, str(request.url)).headers(plain_headers(request.headers))
        if request.content:
            builder = builder.body_bytes(request.content)
        try:
            response = await builder.build().send()
            body = bytes(await response.bytes())
        except pyreqwest_exc.PyreqwestError as exc:
            raise pyreqwest_mapped(exc) from exc
        return whole(response.status, [(k.encode(), v.encode()) for k, v in response.headers.items()], body, request)

    async def aclose(self) -> None:
        await self.client.close()


def pyreqwest_client() -> Any:
    return (ClientBuilder().connect_timeout(datetime.timedelta(seconds=10))
            .read_timeout(datetime.timedelta(seconds=30)).pool_idle_timeout(datetime.timedelta(seconds=4))
            .pool_max_idle_per_host(64).max_connections(LIMITS.total).follow_redirects(False)
            .gzip(False).brotli(False).zstd(False).deflate(False).build())


def pyreqwest_mapped(exc: Exception) -> httpx.TransportError:
    e = pyreqwest_exc
    for source, target in ((e.ConnectTimeoutError, httpx.ConnectTimeout), (e.PoolTimeoutError, httpx.PoolTimeout),
                           (e.ConnectError, httpx.ConnectError), (e.ReadTimeoutError, httpx.ReadTimeout),
                           (e.WriteTimeoutError, httpx.WriteTimeout), (e.RequestTimeoutError, httpx.ReadTimeout),
                           (e.ReadError, httpx.ReadError), (e.WriteError, httpx.WriteError)):
        if isinstance(exc, source):
            return target(str(exc))
    return httpx.TransportError(f"{type(exc).__name__}: {exc}")  # ambiguous for a submit


class PyqwestTransport(httpx.AsyncBaseTransport):
    """httpx over pyqwest's transport."""

    def __init__(self) -> None:
        self.transport = pyqwest_transport()
        self.client = pyqwest.Client(self.transport)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self.client.execute(request.method, str(request.url), plain_headers(request.headers),
                                                 request.content or None)
        except (ConnectionError, TimeoutError, pyqwest.ReadError, pyqwest.WriteError,
                pyqwest.RemoteProtocolError) as exc:
            raise pyqwest_mapped(exc) from exc
        return whole(response.status, [(k.encode(), v.encode()) for k, v in response.headers.items()],
                     response.content, request)

    async def aclose(self) -> None:
        with contextlib.suppress(AttributeError):
            await self.transport.aclose()


def pyqwest_transport() -> Any:
    return pyqwest.HTTPTransport(connect_timeout=10.0, read_timeout=30.0, pool_idle_timeout=4.0,
                                 pool_max_idle_per_host=64, max_connections_per_address=LIMITS.per_host,
                                 follow_redirects=False, enable_gzip=False, enable_brotli=False, enable_zstd=False,
                                 enable_otel=False)


def pyqwest_mapped(exc: Exception) -> httpx.TransportError:
    # pyqwest.ConnectTimeout is both ConnectionError and TimeoutError; a reset after sending is
    # a ConnectionResetError -- a ConnectionError too: only the connect phase is "not sent"
    if isinstance(exc, pyqwest.ConnectTimeout):
        return httpx.ConnectTimeout(str(exc))
    if isinstance(exc, ConnectionRefusedError) or (type(exc) is ConnectionError):
        return httpx.ConnectError(str(exc))
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(str(exc))
    if isinstance(exc, pyqwest.RemoteProtocolError):
        return httpx.RemoteProtocolError(str(exc))
    return httpx.ReadError(f"{type(exc).__name__}: {exc}")


def rnet_client() -> Any:
    return rnet.Client(connect_timeout=10, read_timeout=30, pool_idle_timeout=4, pool_max_idle_per_host=64,
                       pool_max_size=LIMITS.total, allow_redirects=False, gzip=False, brotli=False, deflate=False,
                       zstd=False)


def transports() -> dict[str, Callable[[], httpx.AsyncBaseTransport]]:
    """``c:`` modes: the transport behind ``GatewayClient``."""
    made: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {}
    if ClientBuilder is not None:
        made["c:pyreqwest own"] = PyreqwestTransport
        made["c:pyreqwest stock"] = lambda: PyreqwestStock(pyreqwest_client())
    if pyqwest is not None:
        made["c:pyqwest own"] = PyqwestTransport
        made["c:pyqwest stock"] = lambda: AsyncPyqwestTransport(pyqwest_transport())
    if AsyncPyCurlTransport is not None:
        made["c:pycurl stock"] = AsyncPyCurlTransport
    return made
