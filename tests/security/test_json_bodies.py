"""Response bodies encoded by pydantic-core (``gateway.server.http.JsonBody``): byte for
byte what Starlette's stdlib encoding gave for what the service sends, and never the
invalid ``NaN``/``Infinity``; and the hot routes' other shortcuts on the way in and out
(headers, body reading, JSON parsing and its checks) giving what the general code gives."""

from __future__ import annotations

import json

import pytest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from gateway.frames import video_size
from gateway.request import AspectRatio, Resolution
from gateway.server.http import (
    _DECODER,
    MAX_JSON_DEPTH,
    ApiError,
    JsonBody,
    _plainly_fine,
    envelope,
    header_of,
    parse_json_object,
    read_body,
)
from gateway.server.openai_compat import _SIZE_OF


def test_a_video_object_encodes_to_the_same_bytes_as_before(make_app):
    with make_app() as app:
        made = app.client.post("/v1/videos", headers=app.auth,
                               json={"prompt": "un renard roux dans la neige, \u00e9t\u00e9 \u2603 \U0001f98a",
                                     "seconds": "5", "size": "1280x720"})
        assert made.status_code == 200
        got = app.client.get(f"/v1/videos/{made.json()['id']}", headers=app.auth)
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/json"
        # what Starlette's JSONResponse made of the same object: equal bytes, raw UTF-8
        assert got.content == JSONResponse(got.json()).body
        assert "\U0001f98a".encode() in got.content


def test_an_error_envelope_encodes_as_before():
    body = envelope(404, "no video with that id \u00ab\u00bb", code="not_found", type_="invalid_request_error")
    assert body.body == JSONResponse(json.loads(body.body), status_code=404).body
    assert body.status_code == 404 and body.headers["content-type"] == "application/json"


def test_a_non_finite_number_is_sent_as_null_never_as_invalid_json():
    body = JsonBody({"cost_usd": float("nan"), "over": float("inf"), "ok": 0.25}).body
    assert json.loads(body, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) == \
        {"cost_usd": None, "over": None, "ok": 0.25}


# -- the hot routes' shortcuts (docs/benchmarks.md, section 6.inbound2) ---------------------

def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("status", "headers"), [(200, None), (201, None), (404, None), (204, None), (304, None),
                                                 (101, None), (503, {"Retry-After": "3"}),
                                                 (200, {"Content-Type": "text/plain"})])
def test_json_body_headers_are_starlettes(status, headers):
    body = {"id": "v", "n": [1, 2.5, None], "s": "\u00e9"}
    ours, theirs = JsonBody(body, status_code=status, headers=headers), JSONResponse(body, status_code=status,
                                                                                      headers=headers)
    assert ours.raw_headers == theirs.raw_headers


def _request(headers: list[tuple[bytes, bytes]], messages: list[dict[str, object]] | None = None) -> Request:
    pending = list(messages or [])

    async def receive() -> dict[str, object]:
        return pending.pop(0)

    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


def test_header_of_reads_as_starlette_does():
    request = _request([(b"content-type", b"application/json"), (b"x-twice", b"first"), (b"x-twice", b"second"),
                        (b"x-latin", "caf\u00e9".encode("latin-1"))])
    for name in ("content-type", "x-twice", "x-latin", "authorization"):
        assert header_of(request, name.encode()) == request.headers.get(name)


@pytest.mark.parametrize("messages", [
    [{"type": "http.request", "body": b'{"a": 1}', "more_body": False}],
    [{"type": "http.request", "body": b'{"a"', "more_body": True}, {"type": "http.request", "body": b"",
                                                                     "more_body": True},
     {"type": "http.request", "body": b": 1}", "more_body": False}],
    [{"type": "http.request"}],
])
async def test_read_body_joins_the_messages(messages):
    expected = b"".join(m.get("body", b"") for m in messages)  # type: ignore[misc]
    assert await read_body(_request([], messages)) == expected


async def test_read_body_raises_client_disconnect():
    with pytest.raises(ClientDisconnect):
        await read_body(_request([], [{"type": "http.request", "body": b"{", "more_body": True},
                                      {"type": "http.disconnect"}]))


@pytest.mark.parametrize("raw", [
    b'{"prompt": "a fox", "n": [1, 2.5, {"x": null}]}',
    '\ufeff{"prompt": "caf\u00e9"}'.encode(),
    '{"prompt": "\u2603"}'.encode("utf-16"),
    '{"prompt": "\u2603"}'.encode("utf-32-le"),
    b"",
])
def test_bodies_parse_as_json_loads_parses_them(raw):
    assert parse_json_object(raw) == json.loads(raw or b"{}")


@pytest.mark.parametrize(("body", "plain"), [
    ({"prompt": "a fox", "providers": ["a", "b"], "metadata": {"k": [1, 2.5, True, None]}}, True),
    ({"prompt": "caf\u00e9"}, False),  # valid, but only the naming walk says so
    ({"caf\u00e9": 1}, False),
    ({"n": 1e400}, False),
    ({"n": [float("nan")]}, False),
    ({"d": _nested(MAX_JSON_DEPTH)}, False),
    ({"d": _nested(MAX_JSON_DEPTH - 2)}, True),
])
def test_the_quick_walk_passes_only_plain_bodies(body, plain):
    raw = json.dumps(body, allow_nan=True).encode()
    parsed = None
    try:
        parsed = parse_json_object(raw)
    except ApiError:
        assert not plain
    assert _plainly_fine(_DECODER.decode(raw.decode())) is plain
    if plain:
        assert parsed == body


def test_sizes_of_video_objects_are_video_size():
    assert _SIZE_OF == {(a, r): video_size(a, r) for a in AspectRatio for r in Resolution}
