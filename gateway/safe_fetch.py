"""Fetching a request's image URL without letting a caller reach our own network (SSRF).

A gateway that fetches URLs its callers choose would otherwise fetch
``http://169.254.169.254/`` (cloud credentials), ``http://127.0.0.1:5432`` or an
intranet host for them. So, for every hop:

1. the host is resolved once, and *every* address it resolves to must be public:
   loopback, private, link-local, multicast, reserved, unspecified and shared (CGNAT)
   ranges are refused, also when wrapped in IPv6 (``::ffff:10.0.0.1``, 6to4, Teredo,
   NAT64) -- unless ``allow_private`` (the sandbox serves images on loopback);
2. the connection is made to the vetted address itself, with the name kept in the
   ``Host`` header and TLS SNI (so certificates are still checked against the name):
   a DNS answer that changes between the check and the connect (rebinding) is
   never consulted;
3. redirects are followed by hand, at most ``max_redirects``, each hop vetted again;
4. the body is read up to ``max_bytes`` and the whole fetch is bounded by
   ``timeout_s``; the bytes must be a PNG, JPEG, GIF or WebP image.

Environment proxies are ignored (a proxy would connect on its own terms), and
connections are not kept alive: two names on one address must never share a TLS
connection verified for only one of them. Every refusal is an ``InvalidRequest``
naming the request field and the reason.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

import httpx

from gateway.errors import InvalidRequest
from gateway.request import MAX_IMAGE_BYTES, sniff_image_type

DEFAULT_MAX_REDIRECTS = 3
DEFAULT_TIMEOUT_S = 20.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: RFC 6052's well-known NAT64 prefix: the last 32 bits are an IPv4 address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: ranges that are not globally reachable but that ``is_global`` accepts on some Python
#: versions (the stdlib's tables lag the IANA registries)
_NOT_GLOBAL = tuple(ipaddress.ip_network(net) for net in (
    "192.88.99.0/24",   # 6to4 relay anycast, deprecated (RFC 7526)
    "64:ff9b:1::/48",   # local-use IPv4/IPv6 translation (RFC 8215)
    "3fff::/20",        # documentation (RFC 9637)
))

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system resolves ``host`` to."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _embedded(ip: IPAddress) -> Iterator[IPAddress]:
    """Every IPv4 address an IPv6 address carries inside it, then ``ip`` itself (the
    inner address first: it names the reason precisely)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            yield ip.ipv4_mapped
        if ip.sixtofour is not None:
            yield ip.sixtofour
        if ip.teredo is not None:
            yield from ip.teredo
        if ip in _NAT64:
            yield ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    yield ip


def blocked_reason(ip: IPAddress) -> str | None:
    """Why a fetch must not connect to ``ip`` ("loopback", "private", ...), or None if public."""
    for candidate in _embedded(ip):
        for reason, hit in (
            ("unspecified", candidate.is_unspecified), ("loopback", candidate.is_loopback),
            ("link-local", candidate.is_link_local), ("multicast", candidate.is_multicast),
            ("private", candidate.is_private), ("reserved", candidate.is_reserved),
            ("site-local", isinstance(candidate, ipaddress.IPv6Address) and candidate.is_site_local),
            ("non-public", not candidate.is_global or any(candidate in net for net in _NOT_GLOBAL)),
        ):
            if hit:
                return reason
    return None


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    #: sniffed from the bytes, never taken from the server's Content-Type
    content_type: str
    #: where the bytes finally came from, after redirects
    url: str

    def as_data_uri(self) -> str:
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode()}"


class AddressVetter:
    """Decides which address a URL may be reached at (module docstring, points 1 and 2)."""

    def __init__(self, *, allow_private: bool = False, resolver: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        self._resolve = resolver

    async def address(self, url: httpx.URL, field: str) -> IPAddress:
        host = url.host
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
            is_literal = True
        except ValueError:
            addresses = await self._addresses_of(host, url.port or _default_port(url), field)
            is_literal = False
        if not self.allow_private:
            for address in addresses:
                reason = blocked_reason(address)
                if reason is not None:
                    subject = f"{host} is" if is_literal else f"{host} resolves to {address},"
                    raise InvalidRequest(field, f"{subject} a {reason} address; only public addresses may be fetched")
        return addresses[0]

    async def _addresses_of(self, host: str, port: int, field: str) -> list[IPAddress]:
        try:
            answers = await self._resolve(host, port)
        except OSError:
            answers = []
        if not answers:
            raise InvalidRequest(field, f"host {host} cannot be resolved")
        return [ipaddress.ip_address(answer) for answer in answers]

    async def pin(self, request: httpx.Request, *, field: str) -> httpx.Request:
        """``request`` addressed to a vetted address of its host (``InvalidRequest`` when
        there is none): the name travels in Host and TLS SNI, the socket goes to the
        vetted address only, so a DNS answer that changes afterwards is never consulted."""
        url = request.url
        address = str(await self.address(url, field))
        extensions = dict(request.extensions)
        if url.host != address:
            extensions["sni_hostname"] = url.host
        headers = request.headers.copy()
        headers["host"] = url.netloc.decode("ascii")
        return httpx.Request(request.method, url.copy_with(host=address), headers=headers,
                             content=request.content, extensions=extensions)


class SafeFetcher:
    """Fetches image URLs only from public addresses (see the module docstring).

    ``resolver`` and ``transport`` are seams for tests; the fetcher owns (and closes)
    the transport it is given.
    """

    def __init__(self, *, allow_private: bool = False, max_bytes: int = MAX_IMAGE_BYTES,
                 max_redirects: int = DEFAULT_MAX_REDIRECTS, timeout_s: float = DEFAULT_TIMEOUT_S,
                 resolver: Resolver = system_resolver,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.vetter = AddressVetter(allow_private=allow_private, resolver=resolver)
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0)),
            trust_env=False, follow_redirects=False, timeout=httpx.Timeout(timeout_s),
        )

    async def __aenter__(self) -> SafeFetcher:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str, *, field: str, sniff: Callable[[bytes], str | None] = sniff_image_type,
                    what: str = "a PNG, JPEG, GIF or WebP image") -> FetchedImage:
        """The image (or, with another ``sniff``, the video) at ``url``; ``InvalidRequest(field,
        reason)`` when it may not or cannot be had."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._follow(url, field, sniff, what)
        except TimeoutError:
            raise InvalidRequest(field, f"fetching {url} took longer than {self.timeout_s:g} s") from None

    async def check_public(self, url: str, *, field: str) -> None:
        """Refuse ``url`` unless its host resolves to public addresses only (no request is
        sent). For URLs the service will call later, such as a job's own webhook."""
        await self.vetter.address(_parse_url(url, field), field)

    async def _follow(self, url: str, field: str, sniff: Callable[[bytes], str | None], what: str) -> FetchedImage:
        current = _parse_url(url, field)
        for _hop in range(self.max_redirects + 1):
            response = await self._send(current, field)
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    current = _parse_url(str(current.join(response.headers["location"])), field)
                    continue
                if not response.is_success:
                    raise InvalidRequest(field, f"{current} answered HTTP {response.status_code}")
                data = await self._read_capped(response, current, field)
            finally:
                await response.aclose()
            content_type = sniff(data)
            if content_type is None:
                raise InvalidRequest(field, f"{current} is not {what}")
            return FetchedImage(data, content_type, str(current))
        raise InvalidRequest(field, f"{url} redirected more than {self.max_redirects} times")

    async def _send(self, url: httpx.URL, field: str) -> httpx.Response:
        request = await self.vetter.pin(httpx.Request("GET", url, headers={"accept": "image/*"}), field=field)
        try:
            return await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise InvalidRequest(field, f"cannot fetch {url} ({type(exc).__name__})") from None

    async def _read_capped(self, response: httpx.Response, url: httpx.URL, field: str) -> bytes:
        too_large = InvalidRequest(field, f"{url} is larger than the {self.max_bytes}-byte limit")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise too_large
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise too_large
        except httpx.TransportError as exc:
            raise InvalidRequest(field, f"{url} was cut off ({type(exc).__name__})") from None
        return bytes(body)


class AddressRefused(httpx.ConnectError):
    """A call refused before connecting: its host resolves to an address it may not reach."""


class PublicOnlyTransport(httpx.AsyncBaseTransport):
    """Sends each request only to a vetted public address of its host, pinned as
    :meth:`AddressVetter.pin` does: for URLs a caller gave us that we call later, such as a
    job's webhook (checked at submit, and again here, where a DNS answer could since have
    turned to ``127.0.0.1``). A refusal is an :class:`AddressRefused` transport error."""

    def __init__(self, *, allow_private: bool = False, resolver: Resolver = system_resolver,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._vetter = AddressVetter(allow_private=allow_private, resolver=resolver)
        # no keep-alive: two names on one address must never share a connection
        self._inner = transport or httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            pinned = await self._vetter.pin(request, field="url")
        except InvalidRequest as exc:
            raise AddressRefused(exc.reason, request=request) from None
        return await self._inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _parse_url(url: str, field: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise InvalidRequest(field, f"{url!r} is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidRequest(field, f"{url!r} must be an http(s) URL with a host")
    if parsed.userinfo:
        raise InvalidRequest(field, "URLs with credentials in them are not fetched")
    return parsed


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80
