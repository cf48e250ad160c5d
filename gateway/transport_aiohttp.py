"""httpx requests over one aiohttp session (the transport under the gateway's client).

At 64 concurrent submit+status pairs httpx 0.28's own pool did 87 pairs/s here and aiohttp
under httpx's API 456 (docs/benchmarks.md). aiohttp's errors are mapped by what they say
about the request (``httpx_aiohttp``, which does the same conversion, turns a server that
dropped the connection after reading a request into ``httpx.ConnectTimeout`` -- "nothing was
sent" -- which would let a paid submit be repeated elsewhere).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import aiohttp
import httpx
import multidict
import yarl

from gateway.transport_tags import CALL_EXTENSION, Phase


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
#: what a closed response's ``stream`` becomes: it is never read again (httpx raises
#: ``StreamClosed`` / ``StreamConsumed`` first) and its ``aclose`` is never called twice
CLOSED_STREAM = httpx.ByteStream(b"")


def _read_whole(response: aiohttp.ClientResponse, body: bytes, request: httpx.Request) -> httpx.Response:
    """httpx's response to an answer read whole: what ``httpx.Response(content=body)`` makes
    (the body read, the response closed, ``Content-Length`` added if the answer had none),
    without running httpx's reading machinery (a decoder, a chunker, two generators and
    context managers per answer; with the client's direct send, 15 % of a job's vendor-call
    instructions, docs/benchmarks.md 6.vendorhttp) over bytes it would hand back unchanged.
    An answer with any ``Content-Encoding`` goes through httpx, which decodes it."""
    headers = response.headers
    if "Content-Encoding" in headers:
        return httpx.Response(response.status, headers=response.raw_headers, content=body,
                              request=request, extensions=_EXTENSIONS)
    raw = response.raw_headers
    if "Content-Length" not in headers:  # chunked: httpx's content= would declare the length
        raw = (*raw, (b"Content-Length", str(len(body)).encode()))
    answer = httpx.Response(response.status, headers=_headers(raw), stream=CLOSED_STREAM, request=request,
                            extensions=_EXTENSIONS)
    answer._content = body  # what read() would set; pinned by tests/unit/test_transport_direct.py
    answer.is_stream_consumed = answer.is_closed = True
    return answer


async def _body(response: aiohttp.ClientResponse) -> bytes:
    """The whole body, the connection back in the pool. A small answer has usually come in
    with its head: aiohttp's parser has then put all of it in the body's buffer and its
    end released the connection, and the buffer is taken as it is (``read()`` would walk
    its read loop, chunk joins and release checks for the same bytes)."""
    content = response.content
    if content.is_eof() and response.connection is None:
        return content.read_nowait(-1)  # raises what the body failed with, as read() does
    try:
        body = await response.read()
    except BaseException:
        response.release()
        raise
    if response.connection is not None:  # not back in the pool by itself (read() saw to it)
        response.release()
    return body


def _headers(raw: tuple[tuple[bytes, bytes], ...]) -> httpx.Headers:
    """``httpx.Headers(raw)`` for aiohttp's raw header list (bytes names and values, as
    read off the wire): the same entries (name, lowercased name, value; encoding left to
    be guessed), without httpx's per-header type checks and coercions, which were ~70 %
    of an answer's ``httpx.Response``. (httpx's ``_list``/``_encoding``: pinned by
    tests/unit/test_transport_direct.py.)"""
    made = httpx.Headers.__new__(httpx.Headers)
    made._list = [(name, name.lower(), value) for name, value in raw]
    made._encoding = None
    return made


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
                return _read_whole(response, await _body(response), request)
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
        # the session's own coroutine, not ``request()``'s wrapper around it (an awaitable
        # context manager and every keyword packed again, per call)
        return self.session()._request(
            request.method,
            _yarl_url(request.url),
            headers=_aiohttp_headers(request.headers),
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
    if _last_timeout and _last_timeout[0][0] is timeout:  # the client's one mapping, call after call
        return _last_timeout[0][1]
    key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
    made = _TIMEOUTS.get(key)
    if made is None:
        if len(_TIMEOUTS) >= 64:  # per-request timeouts of every value: keep the table small
            _TIMEOUTS.clear()
        made = _TIMEOUTS[key] = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
    if isinstance(timeout, MappingProxyType):  # read-only: its figures cannot change under it
        _last_timeout[:] = [(timeout, made)]
    return made


#: the last read-only timeout mapping seen (``GatewayClient``'s) and its aiohttp timeout
_last_timeout: list[tuple[Mapping[str, float | None], aiohttp.ClientTimeout]] = []


#: origin (scheme, host, port) -> its yarl URL, for :func:`_yarl_url`
_ORIGINS: dict[tuple[str, str, int | None], yarl.URL] = {}


def _yarl_url(url: httpx.URL) -> yarl.URL:
    """yarl's URL of httpx's, which has already parsed and percent-encoded it (so yarl
    must not redo that). yarl parses a URL string in Python (~9 µs for a job's status or
    content URL: a new string each job, past yarl's cache); a URL without user info, query
    or fragment is its origin's yarl URL, made once, with httpx's encoded path put in
    (~3 µs). (httpx's ``_uri_reference``, as :class:`gateway.transport.URLPrefix` reads it:
    pinned by tests/unit/test_transport_direct.py.)"""
    ref = url._uri_reference
    if (not ref.host or ref.userinfo or ref.query is not None or ref.fragment is not None
            or not ref.path.startswith("/")):
        return yarl.URL(str(url), encoded=True)
    key = (ref.scheme, ref.host, ref.port)
    origin = _ORIGINS.get(key)
    if origin is None:
        if len(_ORIGINS) >= 64:
            _ORIGINS.clear()
        origin = _ORIGINS[key] = yarl.URL(str(url), encoded=True).origin()
    return origin.with_path(ref.path, encoded=True)


#: (encoding, a request's header entries) -> aiohttp's read-only copy of them, for
#: :func:`_aiohttp_headers`
_HEADERS: dict[tuple[str | None, tuple[tuple[bytes, bytes, bytes], ...]], multidict.CIMultiDictProxy[str]] = {}


def _aiohttp_headers(headers: httpx.Headers) -> multidict.CIMultiDictProxy[str]:
    """``headers.multi_items()`` as aiohttp takes them. A vendor's requests carry the same
    few header lists call after call (its key, Accept, Host; a submit's Content-Length
    varies with its body), and httpx decodes every name and value again per call (a
    list and an encoding guess each time): the decoded copy is kept per list of entries
    and the encoding they are decoded with (set, or else guessed from those entries),
    read-only (aiohttp copies it into each request's own). (httpx's ``_list`` and
    ``_encoding``: pinned by tests/unit/test_transport_direct.py.)"""
    key = (headers._encoding, tuple(headers._list))
    made = _HEADERS.get(key)
    if made is None:
        if len(_HEADERS) >= 256:
            _HEADERS.clear()
        made = _HEADERS[key] = multidict.CIMultiDictProxy(multidict.CIMultiDict(headers.multi_items()))
    return made


def _session(limits: ConnectionLimits) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limits.total, limit_per_host=limits.per_host,
                                     keepalive_timeout=limits.keepalive_s)
    # Cookies are httpx's business (and a vendor's cookie must never reach another call).
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
