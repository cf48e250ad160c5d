"""Body limits hold while the body streams (chunked or declared, JSON or multipart), slow
bodies time out, and hostile JSON (non-finite numbers, deep nesting) is a 400 naming why."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
LIMIT = 64 * 1024


def chunks(total: int, piece: bytes = b"a" * 4096, head: bytes = b"", tail: bytes = b"") -> Iterator[bytes]:
    """``total`` bytes in pieces, with no Content-Length (httpx sends a generator chunked)."""
    yield head
    for _ in range(total // len(piece)):
        yield piece
    yield tail


def test_chunked_json_over_the_limit_is_413_and_stores_nothing(make_app):
    with make_app(max_upload_bytes=LIMIT) as app:
        body = chunks(4 * LIMIT, head=b'{"prompt": "a fox", "metadata": {"x": "', tail=b'"}}')
        response = app.client.post("/v1/jobs", headers={**app.auth, "content-type": "application/json"},
                                   content=body)
        assert "content-length" not in response.request.headers
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "too_large"
        listed = app.client.get("/v1/jobs", headers=app.auth)
        assert listed.json()["data"] == [] and len(listed.content) < 1024


BOUNDARY = "reelgate-test"
#: a form with a prompt and the start of an image upload
FORM_HEAD = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na fox\r\n"
             f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"input_reference\"; filename=\"a.png\"\r\n"
             "Content-Type: image/png\r\n\r\n").encode() + PNG


def test_chunked_multipart_over_the_limit_is_413(make_app):
    with make_app(max_upload_bytes=LIMIT) as app:
        response = app.client.post(
            "/v1/videos", headers={**app.auth, "content-type": f"multipart/form-data; boundary={BOUNDARY}"},
            content=chunks(4 * LIMIT, piece=b"\x00" * 4096, head=FORM_HEAD, tail=f"\r\n--{BOUNDARY}--\r\n".encode()))
        assert response.status_code == 413, response.text


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"prompt": "x", "max_cost_usd": Infinity}', "Infinity"),
    (b'{"prompt": "x", "deadline_s": NaN}', "NaN"),
    (b'{"prompt": "x", "deadline_s": -Infinity}', "-Infinity"),
    (b'{"prompt": "x", "max_cost_usd": 1e309}', "1e309"),
])
def test_non_finite_numbers_are_refused_when_parsed(make_app, body, reason):
    with make_app() as app:
        for path in ("/v1/jobs", "/v1/quotes", "/v1/videos"):
            response = app.client.post(path, headers={**app.auth, "content-type": "application/json"}, content=body)
            assert response.status_code == 400, (path, response.text)
            message = response.json()["error"]["message"]
            assert reason in message and "finite" in message


@pytest.mark.parametrize("depth", [40, 2_000, 100_000])
def test_deep_nesting_is_a_400_not_a_recursion_error(make_app, depth):
    nested = b'{"prompt": "x", "metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    with make_app() as app:
        for path in ("/v1/jobs", "/v1/quotes", "/v1/videos"):
            response = app.client.post(path, headers={**app.auth, "content-type": "application/json"},
                                       content=nested)
            assert response.status_code == 400, (path, response.text[:200])
            assert "nests deeper than" in response.json()["error"]["message"]


def test_a_half_sent_body_gets_408_and_its_connection_closed(reelgate_serve):
    server = reelgate_serve(body_timeout_s=1)
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "a fox"}).encode()
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {server.key}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n\r\n".encode() + body)
        answer = b""
        while chunk := sock.recv(65536):  # waits for the server's answer, then for it to close
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body_timeout" in answer


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_four_concurrent_200_mb_chunked_uploads_keep_the_server_flat(reelgate_serve):
    """Done means of issue 7: RSS stays under idle + 100 MB, and each upload gets 413."""
    import asyncio

    import httpx

    server = reelgate_serve()  # the default 20 MiB limit
    httpx.post(f"{server.url}/v1/quotes", headers=server.auth, json={"prompt": "warm up"}).raise_for_status()
    idle_kb = _status_kb(server.proc.pid, "VmRSS")
    with open(f"/proc/{server.proc.pid}/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak (VmHWM) to now: what follows is measured, not start-up
    piece = b"x" * (64 * 1024)

    async def stream(head: bytes) -> object:
        yield head
        for _ in range(200 * 1024 * 1024 // len(piece)):
            yield piece

    async def upload(client: httpx.AsyncClient, path: str, content_type: str) -> int:
        head = FORM_HEAD if content_type.startswith("multipart/") else b'{"prompt": "'
        response = await client.post(f"{server.url}{path}", content=stream(head),
                                     headers={**server.auth, "content-type": content_type})
        return response.status_code

    async def main() -> list[int]:
        json_, form = "application/json", f"multipart/form-data; boundary={BOUNDARY}"
        async with httpx.AsyncClient(timeout=300) as client:
            return list(await asyncio.gather(*(upload(client, p, t) for p, t in (
                ("/v1/jobs", json_), ("/v1/videos", form), ("/v1/quotes", json_), ("/v1/videos", json_)))))

    statuses = asyncio.run(main())
    peak_kb = _status_kb(server.proc.pid, "VmHWM")
    print(f"idle RSS {idle_kb / 1024:.0f} MB, peak during 4 x 200 MB uploads {peak_kb / 1024:.0f} MB")
    assert statuses == [413] * 4
    assert peak_kb < idle_kb + 100 * 1024
