"""The schemathesis fuzz run, made hostile: every operation that takes a body gets cases
from its own schema with one hostile change each -- a non-finite number, deep nesting, a
lone surrogate, a NUL byte, an oversized chunked body, or a wrong content type -- and no
case may answer 5xx.

tests/service/test_fuzz.py covers what the schema allows; this covers what it forbids.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES_PER_OPERATION = 60
LIMIT = 256 * 1024
_MARK = "\x00reelgate-hostile\x00"

#: raw JSON text put where one value was (json.dumps cannot write most of these)
HOSTILE_VALUES = [
    "NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1" + "0" * 400,
    '"\\ud83d"', '"a\\udfffb"', '{"\\ud800": "x"}', '"\\u0000"', '"a\\u0000b"',
    "[" * 40 + "]" * 40, "[" * 3_000 + "]" * 3_000, '{"a": ' * 50 + "1" + "}" * 50,
]
WRONG_TYPES = ["text/plain", "application/xml", "text/html", "application/x-www-form-urlencoded",
               "application/octet-stream", "multipart/form-data", "multipart/form-data; boundary=zz"]


def _with_hostile(body: Any, key: str, raw: str) -> bytes:
    """``body`` as JSON with ``key`` set to the raw text ``raw``."""
    data = dict(body) if isinstance(body, dict) else {}
    data[key] = _MARK
    return json.dumps(data).replace(json.dumps(_MARK), raw).encode()


def _oversized(head: bytes) -> Iterator[bytes]:
    yield head
    piece = b" " * 16_384
    for _ in range(2 * LIMIT // len(piece)):
        yield piece


def test_hostile_bodies_never_make_the_service_fail(make_app):
    with make_app(max_upload_bytes=LIMIT) as app:
        schema = schemathesis.openapi.from_dict(app.client.get("/openapi.json").json())
        failures: list[tuple[Any, ...]] = []
        operations = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.method.upper() != "POST" or not operation.body:
                continue
            operations += 1

            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                      database=None, derandomize=True)
            @given(case=operation.as_strategy(), kind=st.sampled_from(["value", "type", "oversized", "form"]),
                   raw=st.sampled_from(HOSTILE_VALUES), key=st.sampled_from(
                       ["prompt", "metadata", "max_cost_usd", "deadline_s", "providers", "size", "x"]),
                   content_type=st.sampled_from(WRONG_TYPES))
            def send(case: Any, kind: str, raw: str, key: str, content_type: str) -> None:
                headers = {**(case.headers or {}), **app.auth}
                body: Any
                if kind == "value":
                    body, headers["content-type"] = _with_hostile(case.body, key, raw), "application/json"
                elif kind == "type":
                    body, headers["content-type"] = json.dumps(case.body).encode(), content_type
                elif kind == "oversized":
                    body, headers["content-type"] = _oversized(b'{"prompt": "'), "application/json"
                else:  # multipart fields carrying NUL bytes and invalid UTF-8 (lone surrogates)
                    headers["content-type"] = "multipart/form-data; boundary=zz"
                    body = (b'--zz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na\x00\xed\xa0\xbd b\r\n'
                            b'--zz\r\nContent-Disposition: form-data; name="' + key.encode() + b'"\r\n\r\n'
                            + raw.encode() + b"\r\n--zz--\r\n")
                response = app.client.request("POST", case.formatted_path, headers=headers, params=case.query,
                                              content=body)
                if response.status_code >= 500:
                    failures.append((case.formatted_path, kind, raw, key, content_type, response.status_code,
                                     response.text[:300]))

            send()
        assert operations >= 3
        assert not failures, failures[:5]
