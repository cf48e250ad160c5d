"""``PublicOnlyTransport``: calls the service makes later to a URL a caller gave it (a job's
webhook) go only to an address vetted at that moment, pinned, with the name in Host and SNI."""

from __future__ import annotations

import httpx
import pytest

from gateway.safe_fetch import AddressRefused, PublicOnlyTransport, SafeFetcher
from tests.unit.test_safe_fetch import FakeDNS, refuse_to_resolve


def recording_transport(sent: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)
    return httpx.MockTransport(handle)


async def test_a_call_goes_to_the_vetted_address_with_the_name_in_host_and_sni() -> None:
    sent: list[httpx.Request] = []
    dns = FakeDNS({"hooks.example": ["93.184.216.34"]})
    transport = PublicOnlyTransport(resolver=dns, transport=recording_transport(sent))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.post("https://hooks.example/in?token=t", content=b'{"a":1}',
                                     headers={"webhook-id": "msg_1"})
    assert response.status_code == 204
    (request,) = sent
    assert str(request.url) == "https://93.184.216.34/in?token=t"
    assert request.headers["host"] == "hooks.example" and request.headers["webhook-id"] == "msg_1"
    assert request.extensions["sni_hostname"] == "hooks.example"
    assert request.content == b'{"a":1}'


async def test_a_name_that_turned_private_since_the_check_is_refused_unsent() -> None:
    sent: list[httpx.Request] = []
    dns = FakeDNS({"hooks.example": ["93.184.216.34"]})
    async with SafeFetcher(resolver=dns) as fetcher:
        await fetcher.check_public("https://hooks.example/in", field="webhook_url")  # at submit: public
    dns.answers["hooks.example"] = ["93.184.216.34", "127.0.0.1"]  # rebinding, before the delivery
    transport = PublicOnlyTransport(resolver=dns, transport=recording_transport(sent))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(AddressRefused, match="loopback"):
            await client.post("https://hooks.example/in", content=b"{}")
        with pytest.raises(AddressRefused, match="link-local"):
            await client.post("http://169.254.169.254/latest", content=b"{}")
    assert sent == []


async def test_private_addresses_are_allowed_only_when_asked() -> None:
    sent: list[httpx.Request] = []
    transport = PublicOnlyTransport(allow_private=True, resolver=refuse_to_resolve,
                                    transport=recording_transport(sent))
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.post("http://127.0.0.1:9/hook", content=b"{}")).status_code == 204
    assert [str(r.url) for r in sent] == ["http://127.0.0.1:9/hook"] and "sni_hostname" not in sent[0].extensions
