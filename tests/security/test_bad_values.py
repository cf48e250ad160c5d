"""Values no job can be made of: non-finite numbers, text no store or response can hold,
and fields past their caps. Each is a 400 naming the field, before any budget is reserved,
any job stored or any vendor called."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from tests.security.conftest import Harness, MakeService

NON_FINITE = ["1e309", "-1e309", "Infinity", "-Infinity", "NaN"]


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/videos"])
def test_non_finite_numbers_are_refused_before_any_money_is_reserved(make_service: MakeService, route: str) -> None:
    harness = make_service(per_day_usd=1.0)  # five leaked reservations used to exhaust it
    for field in ("deadline_s", "max_cost_usd"):
        for literal in NON_FINITE:
            body = f'{{"prompt": "a fox", "{field}": {literal}}}'.encode()
            response = harness.post(route, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400, (field, literal, response.text)
            assert response.json()["error"]["param"] == field
            assert harness.reserved() == (Decimal(0), Decimal(0))
    assert harness.submissions() == 0 and harness.jobs() == []
    assert harness.post(route, json={"prompt": "a fox"}).status_code in (200, 202)  # the budget is intact


# (route, body, the field the 400 names): text with a lone surrogate or a NUL
BAD_TEXT: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/jobs", {"prompt": "a fox \ud83d"}, "prompt"),
    ("/v1/jobs", {"prompt": "a fox", "metadata": {"order": "\ud83d"}}, "metadata"),
    ("/v1/jobs", {"prompt": "a fox", "metadata": {"\udc00": "x"}}, "metadata"),
    ("/v1/jobs", {"prompt": "a fox", "idempotency_key": "k\ud83d"}, "idempotency_key"),
    ("/v1/jobs", {"prompt": "a fox", "providers": ["fal\ud83d"]}, "providers"),
    ("/v1/jobs", {"prompt": "a fox", "webhook_url": "https://example.com/\ud83d"}, "webhook_url"),
    ("/v1/jobs", {"prompt": "a fox", "start_image": "https://example.com/\ud83d.png"}, "start_image"),
    ("/v1/jobs", {"prompt": "a\x00fox"}, "prompt"),
    ("/v1/jobs", {"prompt": "a fox", "metadata": {"order": "4\x002"}}, "metadata"),
    ("/v1/jobs", {"prompt": "a fox", "metadata": {"a\x00": "x"}}, "metadata"),
    ("/v1/quotes", {"prompt": "a\x00fox"}, "prompt"),
    ("/v1/videos", {"prompt": "a fox \ud83d"}, "prompt"),
    ("/v1/videos", {"prompt": "a fox", "metadata": {"order": "\ud83d"}}, "metadata"),
    ("/v1/videos", {"prompt": "a fox", "model": "ray\ud83d"}, "model"),
    ("/v1/videos", {"prompt": "a fox", "input_reference": {"image_url": "https://example.com/\ud83d"}},
     "input_reference"),
    ("/v1/videos", {"prompt": "a\x00fox"}, "prompt"),
]


@pytest.mark.parametrize(("route", "body", "field"), BAD_TEXT, ids=[f"{r}-{f}-{i}" for i, (r, _, f) in
                                                                   enumerate(BAD_TEXT)])
def test_text_no_store_can_hold_is_refused_and_poisons_nothing(harness: Harness, route: str,
                                                               body: dict[str, Any], field: str) -> None:
    # json.dumps escapes a lone surrogate as \ud83d and NUL as \u0000, as a client would
    response = harness.post(route, content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}: ")
    assert ("NUL character" if "\\u0000" in json.dumps(body) else "lone surrogate") in error["message"]
    assert harness.submissions() == 0
    assert harness.jobs() == []  # the key's listing still answers


CONCEPTS = ["pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "push_in", "pull_out", "orbit_left"]

# (body, the field the 400 names, the reason): every field has a cap
OVER_CAPS: list[tuple[dict[str, Any], str, str]] = [
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16 are allowed"),
    ({"metadata": {"k" * 65: "v"}}, "metadata", "1 to 64 characters"),
    ({"metadata": {"k": "v" * 513}}, "metadata", "longer than 512 characters"),
    ({"metadata": {f"k{i}": "é" * 512 for i in range(16)}}, "metadata", "at most 8192 are allowed"),  # 16 KB
    ({"idempotency_key": "order 42"}, "idempotency_key", "printable ASCII"),
    ({"idempotency_key": "заказ-42"}, "idempotency_key", "printable ASCII"),
    ({"providers": ["fal"] * 17}, "providers", "at most 16 are allowed"),
    ({"providers": ["f" * 65]}, "providers", "longer than 64 characters"),
    ({"concepts": CONCEPTS}, "concepts", "at most 8 are allowed"),
    ({"allow": ["higher_resolution"] * 9}, "allow", "at most 8 are allowed"),
    ({"deadline_s": 1e9}, "deadline_s", "less than or equal to 604800"),
    ({"webhook_url": "https://example.com/" + "a" * 3000}, "webhook_url", "at most 2048 characters"),
    ({"start_image": "https://example.com/" + "a" * 3000 + ".png"}, "start_image", "longer than 2048 characters"),
]


@pytest.mark.parametrize(("extra", "field", "reason"), OVER_CAPS,
                         ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(OVER_CAPS)])
def test_every_field_has_a_cap(harness: Harness, extra: dict[str, Any], field: str, reason: str) -> None:
    response = harness.post("/v1/jobs", json={"prompt": "a fox", **extra})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and reason in error["message"], error
    assert harness.submissions() == 0 and harness.jobs() == []


@pytest.mark.parametrize(("route", "field"), [("/v1/videos", "model"), ("/v1/videos", "size"),
                                              ("/v1/videos", "seconds")])
def test_an_error_quotes_a_huge_value_cut_short(harness: Harness, route: str, field: str) -> None:
    response = harness.post(route, json={"prompt": "a fox", field: "x" * 100_000})
    assert response.status_code == 400, response.text[:200]
    error = response.json()["error"]
    assert error["param"] == field and len(error["message"]) < 400


# (route, body, the field the 400 names): JSON true where a number is meant. pydantic's lax
# mode read it as 1: max_cost_usd true was a $1 cap, deadline_s true a 1 s deadline, and
# duration_s true answered "True seconds is not offered"
BOOLEANS: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/jobs", {"prompt": "a fox", "max_cost_usd": True}, "max_cost_usd"),
    ("/v1/jobs", {"prompt": "a fox", "deadline_s": True}, "deadline_s"),
    ("/v1/jobs", {"prompt": "a fox", "duration_s": True}, "duration_s"),
    ("/v1/quotes", {"prompt": "a fox", "max_cost_usd": False}, "max_cost_usd"),
    ("/v1/videos", {"prompt": "a fox", "max_cost_usd": True}, "max_cost_usd"),
]


@pytest.mark.parametrize(("route", "body", "field"), BOOLEANS, ids=[f"{r}-{f}" for r, _, f in BOOLEANS])
def test_a_boolean_is_no_number(harness: Harness, route: str, body: dict[str, Any], field: str) -> None:
    response = harness.post(route, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and str(body[field]).lower() in error["message"], error
    assert "True" not in error["message"] and harness.submissions() == 0 and harness.jobs() == []


@pytest.mark.parametrize(("raw", "says"), [
    (b'{"prompt": "a fox",}', "the body is not valid JSON: Expecting property name enclosed in double quotes "
                              "(line 1, column 20)"),
    (b'{"prompt": "a\x00fox"}', "the body is not valid JSON: Invalid control character at (line 1, column 14)"),
    (b'{"prompt": "a fox\xff"}', "the body is not valid JSON: not utf-8 text at byte 17"),
    (b'{"prompt": "a fox", "duration_s": 1' + b"0" * 5000 + b"}", "the body is not valid JSON: a number has too many"),
])
def test_a_body_that_is_not_json_says_where(harness: Harness, raw: bytes, says: str) -> None:
    response = harness.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["message"].startswith(says), response.text


def test_an_input_reference_that_is_no_image_is_named_as_sent(harness: Harness) -> None:
    # the fetched URL's check said "start_image", a field the OpenAI-style caller never sent
    response = harness.post("/v1/videos", json={"prompt": "a fox",
                                                "input_reference": {"image_url": "https://no-such-host.invalid/a.png"}})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "input_reference.image_url" and error["message"].startswith("input_reference.image_url:")
