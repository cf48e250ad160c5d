"""Response bodies encoded by pydantic-core (``gateway.server.http.JsonBody``): byte for
byte what Starlette's stdlib encoding gave for what the service sends, and never the
invalid ``NaN``/``Infinity``."""

from __future__ import annotations

import json

from starlette.responses import JSONResponse

from gateway.server.http import JsonBody, envelope


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
