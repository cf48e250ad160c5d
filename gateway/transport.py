"""Sending an adapter's ``httpx.Request`` and turning transport failures into gateway errors.

What a transport failure *means* depends on whether the request may have reached the
vendor: a refused connection sent nothing (safe to go elsewhere); a submit whose answer
was cut off may have created a paid job (``AmbiguousSubmit``).

Every vendor call goes through ``client.send`` and through :class:`TimedTransport`, which
times it by provider, operation and outcome: the call is tagged (:func:`tag`) with whom it is
for and what it does. The aiohttp transport itself is ``gateway.transport_aiohttp``.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from gateway.errors import AmbiguousSubmit, ProviderError, Unavailable
from gateway.logs import vendor_called
from gateway.transport_aiohttp import CLOSED_STREAM, WHOLE_BODY_BYTES, AiohttpTransport, ConnectionLimits, small_body
from gateway.transport_tags import CALL_EXTENSION, CallObserver, Phase, tag

__all__ = ["CALL_EXTENSION", "WHOLE_BODY_BYTES", "AiohttpTransport", "CallObserver", "ConnectionLimits",
           "GatewayClient", "NoCookies", "Phase", "TimedTransport", "URLPrefix", "json_model", "make_client",
           "post_json", "send", "small_body", "tag", "unbound"]

#: failures that happen before a byte of the request left this process
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


# -- timing every vendor call ----------------------------------------------------------------

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
    keeps no cookies (:class:`NoCookies`).

    ``send`` goes straight to ``timing`` when nothing of httpx's client machinery can act
    on the call: no auth (client's, per call, or ``user:pass@`` in the URL), no event hooks,
    redirects not followed (the client never follows them), no cookies (:class:`NoCookies`),
    no mounts (a client given its transport has no proxy mounts). httpx's ``send`` would
    then still run an auth flow generator, a redirect loop and three more coroutine frames
    per call (with the transport's ``_read_whole``, 15 % of a job's vendor-call instructions,
    docs/benchmarks.md 6.vendorhttp). What
    it would have done to the request and response is done here alike: the client's
    timeouts on a request without its own, the request set on the response and on a
    transport error, ``next_request`` on a redirect, ``elapsed`` stamped when a streamed
    answer is closed, httpx's request log line. Anything else takes httpx's own ``send``."""

    def __init__(self, transport: httpx.AsyncBaseTransport, timeout: httpx.Timeout) -> None:
        self.timing = TimedTransport(transport)
        self._no_cookies = NoCookies()
        super().__init__(transport=self.timing, timeout=timeout, follow_redirects=False)
        #: set once httpx's own send has opened the client (its open/closed state is its own)
        self._opened = False
        self._timeouts: tuple[httpx.Timeout, Mapping[str, float | None]] | None = None

    async def send(self, request: httpx.Request, *, stream: bool = False, **options: Any) -> httpx.Response:
        """httpx's ``send`` (``options``: its ``auth`` and ``follow_redirects``); a response
        read whole comes back :func:`unbound`."""
        if (options or not self._opened or self.auth is not None or request.url.userinfo
                or self.follow_redirects or any(self.event_hooks.values())):
            response = await super().send(request, stream=stream, **options)
            self._opened = True
            return response if stream else unbound(response)
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        if "timeout" not in request.extensions:
            request.extensions = {**request.extensions, "timeout": self._timeout_items()}
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise RuntimeError("Attempted to send an sync request with an AsyncClient instance.")
        start = time.perf_counter()
        try:
            response = await self.timing.handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request  # as httpx's client does
            raise
        response.request = request
        if response.has_redirect_location:  # not followed: said where it would go, as httpx does
            response.next_request = self._build_redirect_request(request, response)
        if _httpx_log.isEnabledFor(logging.INFO):
            _httpx_log.info('HTTP Request: %s %s "%s %d %s"', request.method, request.url,
                            response.http_version, response.status_code, response.reason_phrase)
        if response.is_closed:  # read whole by the transport
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Timed(response.stream, response, start)
        if stream:
            return response
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return unbound(response)

    def _timeout_items(self) -> Mapping[str, float | None]:
        """The client's timeouts as a request carries them; one read-only mapping per
        ``Timeout`` (httpx makes a dict per call)."""
        timeout = self.timeout
        if self._timeouts is None or self._timeouts[0] is not timeout:
            self._timeouts = (timeout, MappingProxyType(timeout.as_dict()))
        return self._timeouts[1]

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        if cookies:
            raise ValueError("the gateway's client keeps no cookies: set them on the request")


_httpx_log = logging.getLogger("httpx")


class _Timed(httpx.AsyncByteStream):
    """A streamed answer's body that stamps ``response.elapsed`` when closed (httpx's
    client does the same with its own wrapper)."""

    def __init__(self, stream: httpx.AsyncByteStream, response: httpx.Response, start: float) -> None:
        self._stream, self._response, self._start = stream, response, start

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        self._response.elapsed = datetime.timedelta(seconds=time.perf_counter() - self._start)
        await self._stream.aclose()


def unbound(response: httpx.Response) -> httpx.Response:
    """``response`` (once closed) without its reference cycle: httpx's client wraps every
    response's stream in one that points back to the response (to stamp ``elapsed`` at
    close), so a response, its request, headers, URL and aiohttp's response behind it could
    only be freed by the cyclic garbage collector, a few dozen objects per vendor call. Under
    load they outlived young collections and were walked again in full ones (~7 % of the
    service's CPU in the collector; docs/benchmarks.md, section 6.gcloop). Unbound, they go
    the moment the last reference does."""
    if response.is_closed:
        response.stream = CLOSED_STREAM
    return response


#: what may follow a :class:`URLPrefix` unparsed: unreserved characters and slashes, no dot
#: (so no dot segment), nothing httpx would quote or normalise
_PLAIN_TAIL = re.compile(r"[A-Za-z0-9_\-/]{1,512}")


#: a GET's body, as ``httpx.Request`` makes it for a request without content
_EMPTY_BODY = httpx.ByteStream(b"")


class URLPrefix:
    """``httpx.URL``s of the URLs under one prefix (a vendor's base URL), the prefix parsed once.

    httpx parses every URL string in Python, character by character: about 60 % of building
    a request to a job's status or content URL (docs/benchmarks.md 6.vendorhttp). A URL that
    is this prefix plus a plain tail (a job id, ``/content``) is the prefix's parse with the
    tail added to its path -- exactly what parsing the whole string gives, since the tail
    has nothing httpx would quote and no dot segment, and the prefix is kept only when it
    reads back unchanged. (``httpx.URL`` has no public constructor from parsed parts: it is
    made on httpx 0.28's parse result, pinned by tests/unit/test_transport_direct.py.) Any
    other URL comes back as its string, for httpx to parse."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix.rstrip("/") + "/"
        try:
            parsed = httpx.URL(self._prefix)
        except httpx.InvalidURL:
            parsed = None
        exact = parsed is not None and str(parsed) == self._prefix and parsed.query == b"" and not parsed.fragment
        self._parsed = getattr(parsed, "_uri_reference", None) if exact else None
        self._host = parsed.netloc if parsed is not None and exact else b""
        #: for :meth:`get`: the provider's headers after a Host header (:func:`_per_headers`)
        self._with_host: dict[int, tuple[httpx.Headers, httpx.Headers | None]] = {}

    def url(self, url: str) -> httpx.URL | str:
        prefix = self._prefix
        if self._parsed is None or not url.startswith(prefix) or not _PLAIN_TAIL.fullmatch(url, len(prefix)):
            return url
        made = httpx.URL.__new__(httpx.URL)
        made._uri_reference = self._parsed._replace(path=self._parsed.path + url[len(prefix):])
        return made

    def get(self, url: str, headers: httpx.Headers) -> httpx.Request:
        """``httpx.Request("GET", url, headers=headers)`` for a status or content call, the
        same request (``Host`` first, then ``headers``, an empty body read) made without
        httpx's preparation of it: a body encoder, five header lookups and the header list
        normalised twice, ~4x the CPU of the request itself (docs/benchmarks.md
        6.vendorhttp). ``headers`` is a provider's own, the same object call after call."""
        made = self.url(url)
        with_host = _per_headers(self._with_host, headers, self._after_host)
        if isinstance(made, str) or with_host is None:
            return httpx.Request("GET", made, headers=headers)
        request = httpx.Request("GET", made, headers=with_host, stream=_EMPTY_BODY)
        request.read()
        return request

    def _after_host(self, headers: httpx.Headers) -> httpx.Headers | None:
        """``headers`` after the ``Host`` header httpx would put first (``None``: they set one)."""
        return None if "host" in headers else httpx.Headers([(b"Host", self._host), *headers.raw])


_Derived = TypeVar("_Derived")


def _per_headers(table: dict[int, tuple[httpx.Headers, _Derived]], headers: httpx.Headers,
                derive: Callable[[httpx.Headers], _Derived]) -> _Derived:
    """``derive(headers)``, remembered in ``table`` for that headers object: a provider's
    own, the same object call after call. Headers made per call would only fill the table,
    so past 16 entries it starts again (the object is kept beside its id, so a reused id
    of a freed object is never taken for it)."""
    entry = table.get(id(headers))
    if entry is None or entry[0] is not headers:
        if len(table) >= 16:
            table.clear()
        entry = table[id(headers)] = (headers, derive(headers))
    return entry[1]


def _plain_post(headers: httpx.Headers) -> bool:
    """Whether httpx would add all of Host, Content-Length and Content-Type to ``headers``."""
    return not any(name in headers for name in ("host", "content-length", "content-type", "transfer-encoding"))


#: httpx's JSON body encoding (its ``json.dumps`` arguments), made once: ``json.dumps`` with
#: arguments makes its encoder anew per call
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

#: for :func:`post_json`: which headers objects are :func:`_plain_post`
_PLAIN_POST: dict[int, tuple[httpx.Headers, bool]] = {}


def post_json(url: httpx.URL, body: Any, headers: httpx.Headers) -> httpx.Request:
    """``httpx.Request("POST", url, json=body, headers=headers)`` -- the same request (the
    same JSON bytes, ``Host`` first, then ``headers``, then ``Content-Length`` and
    ``Content-Type``, the body read) without httpx's preparation of it: the body encoder's
    type checks, header lookups and the header list normalised twice were most of a submit
    request's CPU (docs/benchmarks.md 6.vendorhttp). ``headers`` is a provider's own, the
    same object call after call; any it sets itself leave the request to httpx."""
    if not _per_headers(_PLAIN_POST, headers, _plain_post) or not url.host:
        return httpx.Request("POST", url, json=body, headers=headers)
    content = _JSON.encode(body).encode("utf-8")
    request = httpx.Request("POST", url, stream=httpx.ByteStream(content), headers=httpx.Headers([
        (b"Host", url.netloc), *headers.raw,
        (b"Content-Length", str(len(content)).encode()), (b"Content-Type", b"application/json")]))
    request.read()
    return request


Model = TypeVar("Model", bound=BaseModel)


def json_model(model: type[Model], response: httpx.Response) -> Model:
    """``model.model_validate(response.json())``, read by pydantic straight from the bytes
    when it can: ``json.loads`` into a dict then validating that dict was ~4x the CPU of one
    pass (docs/benchmarks.md 6.vendorhttp). Whatever pydantic's JSON reader refuses (a BOM,
    UTF-16, a lone surrogate escape, a control character in a string, a body that is not
    the model) is read the old way, so an answer means, and fails, as it did."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError:
        return model.model_validate(response.json())


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
