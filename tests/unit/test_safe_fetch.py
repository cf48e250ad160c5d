"""SafeFetcher: image URLs are fetched only from public addresses, within limits.

Every test's traffic stays on this machine: servers listen on 127.0.0.1, host names
go through fake resolvers, and where a "public" address is needed the test transport
carries it to the loopback server (and refuses any other destination).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.errors import InvalidRequest
from gateway.safe_fetch import FetchedImage, SafeFetcher, blocked_reason

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
BIG_PNG = PNG + b"\x00" * 5000
#: stands for "somewhere on the internet"; LoopbackInternet carries it to 127.0.0.1
PUBLIC_IP = "93.184.216.34"
FIELD = "start_image"


class ImageHost:
    """The loopback server: records what reached it."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, str]] = []  # (path, Host header)
        self.released = threading.Event()  # set by the test; the server waits in its own thread

    async def record(self, request: Request) -> None:
        self.hits.append((request.url.path, request.headers["host"]))

    def app(self) -> Starlette:
        async def image(request: Request) -> Response:
            await self.record(request)
            return Response(PNG, media_type="text/plain")  # a lying Content-Type is ignored

        async def redirect(request: Request) -> Response:
            await self.record(request)
            return RedirectResponse(request.query_params["to"], status_code=302)

        async def loop(request: Request) -> Response:
            await self.record(request)
            return RedirectResponse("/loop", status_code=307)

        async def text(request: Request) -> Response:
            await self.record(request)
            return Response("hello, not an image", media_type="image/png")

        async def big_streamed(request: Request) -> Response:
            await self.record(request)
            return StreamingResponse(iter([BIG_PNG[:2000], BIG_PNG[2000:]]), media_type="image/png")

        async def big_declared(request: Request) -> Response:
            await self.record(request)
            return Response(BIG_PNG, media_type="image/png")

        async def missing(request: Request) -> Response:
            await self.record(request)
            return Response(status_code=404)

        async def hang(request: Request) -> Response:
            await self.record(request)
            await asyncio.to_thread(self.released.wait, 10)  # until the test is done with it
            return Response(PNG)

        return Starlette(routes=[
            Route("/img.png", image), Route("/redirect", redirect), Route("/loop", loop),
            Route("/text", text), Route("/big-streamed", big_streamed), Route("/big-declared", big_declared),
            Route("/missing", missing), Route("/hang", hang),
        ])


class LoopbackInternet(httpx.AsyncBaseTransport):
    """Delivers requests for PUBLIC_IP to the loopback server; refuses every other address."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        assert request.url.host == PUBLIC_IP, f"test traffic must not go to {request.url.host}"
        return await self.inner.handle_async_request(
            httpx.Request(request.method, request.url.copy_with(host="127.0.0.1"), headers=request.headers))

    async def aclose(self) -> None:
        await self.inner.aclose()


class NoTraffic(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"nothing may be sent, yet {request.url} was")


class FakeDNS:
    def __init__(self, answers: dict[str, Sequence[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError("no such host")
        return self.answers[host]


async def refuse_to_resolve(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"{host} must not need resolving")


@pytest.fixture
def host() -> ImageHost:
    return ImageHost()


@pytest.fixture
def port(serve, host: ImageHost) -> int:
    return httpx.URL(serve(host.app())).port


async def fetch(url: str, **options: Any) -> FetchedImage:
    async with SafeFetcher(**options) as fetcher:
        return await fetcher.fetch(url, field=FIELD)


async def rejected(url: str, **options: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        await fetch(url, **options)
    assert caught.value.field == FIELD
    return caught.value


# -- loopback: refused by default, allowed for the sandbox ---------------------------------------

async def test_a_loopback_server_is_refused_by_default(host: ImageHost, port: int) -> None:
    error = await rejected(f"http://127.0.0.1:{port}/img.png")
    assert "loopback" in error.reason and host.hits == []


async def test_a_loopback_server_is_allowed_with_allow_private(host: ImageHost, port: int) -> None:
    image = await fetch(f"http://127.0.0.1:{port}/img.png", allow_private=True)
    assert (image.data, image.content_type) == (PNG, "image/png")
    assert image.url == f"http://127.0.0.1:{port}/img.png"
    assert image.as_data_uri() == "data:image/png;base64," + base64.b64encode(PNG).decode()


async def test_a_name_that_resolves_to_loopback_is_refused(host: ImageHost, port: int) -> None:
    dns = FakeDNS({"images.internal": ["127.0.0.1"]})
    error = await rejected(f"http://images.internal:{port}/img.png", resolver=dns)
    assert "images.internal resolves to 127.0.0.1, a loopback address" in error.reason and host.hits == []


# -- private literals: refused before any traffic ------------------------------------------------

@pytest.mark.parametrize(("url", "reason"), [
    ("http://10.0.0.1/a.png", "private"),
    ("http://172.16.5.4/a.png", "private"),
    ("http://192.168.1.1/a.png", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://100.64.0.1/a.png", "non-public"),           # carrier-grade NAT
    ("http://0.0.0.0/a.png", "unspecified"),
    ("http://224.0.0.1/a.png", "multicast"),
    ("http://240.0.0.1/a.png", "private"),
    ("http://255.255.255.255/a.png", "private"),
    ("http://[::1]/a.png", "loopback"),
    ("http://[::]/a.png", "unspecified"),
    ("http://[fe80::1]/a.png", "link-local"),
    ("http://[fc00::1]/a.png", "private"),
    ("http://[ff02::1]/a.png", "multicast"),
    ("http://[::ffff:127.0.0.1]/a.png", "loopback"),     # IPv4-mapped
    ("http://[::ffff:a00:1]/a.png", "private"),          # ::ffff:10.0.0.1
    ("http://[2002:7f00:1::]/a.png", "loopback"),        # 6to4 around 127.0.0.1
    ("http://[64:ff9b::a9fe:a9fe]/a.png", "link-local"), # NAT64 around 169.254.169.254
])
async def test_private_literals_are_refused_without_traffic(url: str, reason: str) -> None:
    error = await rejected(url, resolver=refuse_to_resolve, transport=NoTraffic())
    assert f"a {reason} address" in error.reason


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "::ffff:192.168.0.1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "64:ff9b::7f00:1",
])
def test_blocked_reason_sees_through_ipv6_wrappers(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_not_blocked(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


async def test_a_name_with_any_private_answer_is_refused() -> None:
    dns = FakeDNS({"mixed.example": [PUBLIC_IP, "10.0.0.7"]})
    error = await rejected("http://mixed.example/a.png", resolver=dns, transport=NoTraffic())
    assert "10.0.0.7" in error.reason


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.com/a.png", "must be an http(s) URL"),
    ("http://user:pw@example.com/a.png", "credentials"),
    ("http://unknown.example/a.png", "cannot be resolved"),
])
async def test_unfetchable_urls_are_refused_without_traffic(url: str, reason: str) -> None:
    error = await rejected(url, resolver=FakeDNS({}), transport=NoTraffic())
    assert reason in error.reason


# -- redirects -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("target", "answers", "reason"), [
    ("http://169.254.169.254/latest/meta-data/", {}, "link-local"),
    ("http://[::ffff:127.0.0.1]:{port}/img.png", {}, "loopback"),
    ("http://internal.example:{port}/img.png", {"internal.example": ["10.1.2.3"]}, "private"),
])
async def test_a_redirect_to_a_private_address_is_refused(host: ImageHost, port: int, target: str,
                                                         answers: dict[str, list[str]], reason: str) -> None:
    internet = LoopbackInternet()
    dns = FakeDNS({"cdn.example": [PUBLIC_IP], **answers})
    url = str(httpx.URL(f"http://cdn.example:{port}/redirect", params={"to": target.format(port=port)}))
    error = await rejected(url, resolver=dns, transport=internet)
    assert f"a {reason} address" in error.reason
    assert len(internet.sent) == 1 and [path for path, _ in host.hits] == ["/redirect"]


async def test_a_redirect_to_a_public_address_is_followed(host: ImageHost, port: int) -> None:
    dns = FakeDNS({"cdn.example": [PUBLIC_IP], "img.example": [PUBLIC_IP]})
    url = str(httpx.URL(f"http://cdn.example:{port}/redirect", params={"to": f"http://img.example:{port}/img.png"}))
    image = await fetch(url, resolver=dns, transport=LoopbackInternet())
    assert image.data == PNG and image.url == f"http://img.example:{port}/img.png"
    assert host.hits == [("/redirect", f"cdn.example:{port}"), ("/img.png", f"img.example:{port}")]


async def test_redirects_are_bounded(host: ImageHost, port: int) -> None:
    error = await rejected(f"http://127.0.0.1:{port}/loop", allow_private=True, max_redirects=3)
    assert "more than 3 times" in error.reason and len(host.hits) == 4


# -- pinning: the vetted address is the one connected to -----------------------------------------

async def test_dns_rebinding_cannot_swap_the_address(host: ImageHost, port: int) -> None:
    """A resolver that answers public once and loopback afterwards is only asked once."""
    answers = iter([[PUBLIC_IP], ["127.0.0.1"]])

    async def rebinding(name: str, _port: int) -> Sequence[str]:
        return next(answers)

    internet = LoopbackInternet()
    image = await fetch(f"http://cdn.example:{port}/img.png", resolver=rebinding, transport=internet)
    assert image.data == PNG
    [sent] = internet.sent
    assert sent.url.host == PUBLIC_IP                       # connected to the vetted address
    assert sent.extensions["sni_hostname"] == "cdn.example"  # TLS would verify the name
    assert host.hits == [("/img.png", f"cdn.example:{port}")]


# -- the body: size, type, status, time ----------------------------------------------------------

@pytest.mark.parametrize("path", ["/big-streamed", "/big-declared"])
async def test_an_oversize_body_is_refused(port: int, path: str) -> None:
    error = await rejected(f"http://127.0.0.1:{port}{path}", allow_private=True, max_bytes=len(PNG) + 100)
    assert f"larger than the {len(PNG) + 100}-byte limit" in error.reason


async def test_a_body_that_is_not_an_image_is_refused(port: int) -> None:
    error = await rejected(f"http://127.0.0.1:{port}/text", allow_private=True)
    assert "is not a PNG, JPEG, GIF or WebP image" in error.reason


async def test_an_http_error_is_refused_with_its_status(port: int) -> None:
    error = await rejected(f"http://127.0.0.1:{port}/missing", allow_private=True)
    assert "answered HTTP 404" in error.reason


async def test_a_server_that_never_answers_times_out(host: ImageHost, port: int) -> None:
    try:
        error = await rejected(f"http://127.0.0.1:{port}/hang", allow_private=True, timeout_s=0.2)
    finally:
        host.released.set()
    assert "took longer than 0.2 s" in error.reason


# -- TLS: pinned to an address, the certificate is still checked against the name ----------------

def self_signed(name: str, directory: Path) -> tuple[str, str]:
    """A certificate for ``name`` (and its key), as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


async def tls_image_server(cert: str, key: str, sni_seen: list[str | None]) -> asyncio.Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: sni_seen.append(name)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(PNG) + PNG)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)


@pytest.mark.parametrize(("cert_name", "succeeds"), [("cdn.example", True), ("other.example", False)])
async def test_https_is_pinned_yet_verified_against_the_name(tmp_path: Path, cert_name: str, succeeds: bool) -> None:
    cert, key = self_signed(cert_name, tmp_path)
    sni_seen: list[str | None] = []
    server = await tls_image_server(cert, key, sni_seen)
    port = server.sockets[0].getsockname()[1]
    trusting = ssl.create_default_context(cafile=cert)
    options = dict(allow_private=True, resolver=FakeDNS({"cdn.example": ["127.0.0.1"]}),
                   transport=httpx.AsyncHTTPTransport(verify=trusting))
    try:
        if succeeds:
            image = await fetch(f"https://cdn.example:{port}/img.png", **options)
            assert image.data == PNG
        else:
            error = await rejected(f"https://cdn.example:{port}/img.png", **options)
            assert "cannot fetch" in error.reason
    finally:
        server.close()
        await server.wait_closed()
    assert sni_seen == ["cdn.example"]  # the socket went to 127.0.0.1; TLS spoke the name


@pytest.mark.parametrize("host_name", ["2130706433", "127.1", "0x7f.1"])
async def test_numeric_spellings_of_loopback_are_refused(host_name: str) -> None:
    """The OS parses these numerically (no DNS query) to 127.0.0.1; the check sees that."""
    error = await rejected(f"http://{host_name}/a.png", transport=NoTraffic())
    assert f"{host_name} resolves to 127.0.0.1, a loopback address" in error.reason

