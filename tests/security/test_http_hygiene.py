"""HTTP hygiene: content types, cross-origin callers, Retry-After on 503, no existence
oracle in cursors, private files under REELGATE_HOME, and the address vetter's ranges."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import stat
import time
from pathlib import Path

import httpx
import pytest

from gateway.errors import InvalidRequest

WRONG_TYPES = [
    ("text/plain", b'{"prompt": "a fox"}'),
    ("application/xml", b"<prompt>a fox</prompt>"),
    ("text/xml", b"<prompt>a fox</prompt>"),
    ("application/x-www-form-urlencoded", b"prompt=a+fox"),
    ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na\r\n--x--\r\n'),
]


def test_json_routes_answer_415_for_other_content_types(make_app):
    with make_app() as app:
        for path in ("/v1/jobs", "/v1/quotes"):
            for content_type, body in WRONG_TYPES:
                response = app.client.post(path, headers={**app.auth, "content-type": content_type}, content=body)
                assert response.status_code == 415, (path, content_type, response.text)
                assert response.json()["error"]["code"] == "unsupported_media_type"
        assert app.client.get("/v1/jobs", headers=app.auth).json()["data"] == []
        # decided: a JSON body without any content type is read as JSON (cross-origin pages
        # cannot use that: they are refused by their Origin)
        response = app.client.post("/v1/quotes", headers=app.auth, content=b'{"prompt": "a fox"}')
        assert "content-type" not in response.request.headers
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(("content_type", "body"), [
    ("text/plain", b'{"prompt": "a fox"}'),
    ("application/x-www-form-urlencoded", b"prompt=a+fox"),
    ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na\r\n--x--\r\n'),
    (None, b'{"prompt": "a fox"}'),
])
@pytest.mark.parametrize("path", ["/v1/videos", "/v1/jobs"])
def test_a_page_on_another_origin_cannot_create_jobs_without_keys(make_app, path, content_type, body):
    """The "simple requests" a browser sends cross-origin with no preflight."""
    with make_app(require_api_key=False) as app:
        headers = {"origin": "https://evil.example"} | ({"content-type": content_type} if content_type else {})
        response = app.client.post(path, headers=headers, content=body)
        assert response.status_code in (403, 415), response.text
        assert "access-control-allow-origin" not in response.headers
        assert app.client.get("/v1/jobs").json()["data"] == []
        # the same request from a non-browser client (no Origin) works
        ok = app.client.post("/v1/videos", json={"prompt": "a fox"})
        assert ok.status_code == 200, ok.text


def test_cors_is_off_by_default_and_follows_the_allow_list(make_app):
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization,content-type"}
    with make_app() as app:
        answer = app.client.options("/v1/videos", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
        assert app.client.post("/v1/videos", headers={**app.auth, "origin": "https://app.example"},
                               json={"prompt": "a fox"}).status_code == 403
    with make_app(cors_allow_origins=["https://app.example"]) as app:
        answer = app.client.options("/v1/videos", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in answer.headers["access-control-allow-headers"].lower()
        created = app.client.post("/v1/videos", headers={**app.auth, "origin": "https://app.example"},
                                  json={"prompt": "a fox"})
        assert created.status_code == 200, created.text
        assert created.headers["access-control-allow-origin"] == "https://app.example"
        other = app.client.post("/v1/videos", headers={**app.auth, "origin": "https://evil.example"},
                                json={"prompt": "a fox"})
        assert other.status_code == 403 and "access-control-allow-origin" not in other.headers


def test_503_with_every_circuit_open_says_when_to_retry(make_app):
    with make_app() as app:
        health = app.service.gateway.health
        for provider in app.service.gateway.providers:
            for _ in range(app.service.settings.circuit.consecutive_failures):
                health.record_failure(provider, "any-model")
        response = app.client.post("/v1/videos", headers=app.auth, json={"prompt": "a fox"})
        assert response.status_code == 503, response.text
        cooldown = app.service.settings.circuit.cooldown_s
        assert 1 <= int(response.headers["retry-after"]) <= cooldown


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/videos"])
def test_a_cursor_naming_another_callers_job_is_an_unknown_id(make_app, path):
    with make_app() as app:
        from gateway.keys import KeyStore

        _, other_key = KeyStore(app.home / "keys.db").create("other")
        other = {"Authorization": f"Bearer {other_key}"}
        theirs = app.client.post("/v1/videos", headers=other, json={"prompt": "a fox"}).json()["id"]
        foreign = app.client.get(path, headers=app.auth, params={"after": theirs})
        unknown = app.client.get(path, headers=app.auth, params={"after": "vid_" + "0" * 32})
        assert foreign.status_code == unknown.status_code == 400
        assert foreign.json()["error"]["param"] == unknown.json()["error"]["param"] == "after"
        assert foreign.json()["error"]["code"] == unknown.json()["error"]["code"]
        assert app.client.get(path, headers=other, params={"after": theirs}).status_code == 200


@pytest.fixture
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def wait_for_status(app, video_id: str, status: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while (video := app.client.get(f"/v1/videos/{video_id}", headers=app.auth).json())["status"] != status:
        assert time.monotonic() < deadline, video
        time.sleep(0.05)
    return video


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_home_keys_and_videos_are_private_even_with_an_open_umask(make_app, open_umask):
    with make_app() as app:
        video = app.client.post("/v1/videos", headers=app.auth, json={"prompt": "a fox"}).json()
        wait_for_status(app, video["id"], "completed")
        content = app.client.get(f"/v1/videos/{video['id']}/content", headers=app.auth)  # waits until kept
        assert content.status_code == 200
        home = app.home
        assert _mode(home) == 0o700
        assert _mode(home / "keys.db") == 0o600
        assert _mode(home / "reelgate.db") == 0o600
        kept = [p for p in (home / "videos").rglob("*") if p.is_file()]
        assert kept and all(_mode(p) == 0o600 for p in kept)
        assert all(_mode(p) == 0o700 for p in (home / "videos").rglob("*") if p.is_dir())


ADDRESSES = [
    ("fec0::1", "site-local"), ("feff::1", "site-local"), ("fec0::a00:1", "site-local"),
    ("fc00::1", None), ("fd12:3456::1", None), ("fe80::1", None), ("ff02::1", None), ("::", None), ("::1", None),
    ("::ffff:10.0.0.1", None), ("::ffff:127.0.0.1", None), ("64:ff9b::a9fe:a9fe", None), ("64:ff9b:1::1", None),
    ("2002:a00:1::", None), ("2001:db8::1", None), ("3fff::1", None), ("100::1", None), ("::127.0.0.1", None),
    ("0.1.2.3", None), ("10.0.0.1", None), ("100.64.0.1", None), ("127.0.0.1", None), ("169.254.169.254", None),
    ("172.16.0.1", None), ("192.0.0.1", None), ("192.0.2.1", None), ("192.88.99.1", None), ("192.168.1.1", None),
    ("198.18.0.1", None), ("198.51.100.1", None), ("203.0.113.1", None), ("224.0.0.1", None), ("240.0.0.1", None),
    ("255.255.255.255", None),
]


PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "2a00:1450:4001:80b::200e"]


def test_the_vetter_refuses_every_non_global_address():
    from gateway.safe_fetch import AddressVetter, blocked_reason

    for address, reason in ADDRESSES:
        found = blocked_reason(ipaddress.ip_address(address))
        assert found is not None and (reason is None or found == reason), (address, found)
        host = f"[{address}]" if ":" in address else address
        with pytest.raises(InvalidRequest) as refused:
            asyncio.run(AddressVetter().address(httpx.URL(f"http://{host}/a.png"), "start_image"))
        assert refused.value.field == "start_image"
    for address in PUBLIC:
        assert blocked_reason(ipaddress.ip_address(address)) is None, address
