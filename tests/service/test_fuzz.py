"""Fuzz the service from its own OpenAPI schema: whatever comes in, no 5xx goes out.

The cases come from schemathesis's strategies for every operation in the schema; they
are sent through the same in-process client the other service tests use.
"""

from __future__ import annotations

import json

import schemathesis
from hypothesis import HealthCheck, given, settings

EXAMPLES_PER_OPERATION = 40


def test_no_generated_request_makes_the_service_fail(service):
    schema = schemathesis.openapi.from_dict(service.client.get("/openapi.json").json())
    failures = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, derandomize=True)
        @given(case=operation.as_strategy())
        def send(case) -> None:
            kwargs: dict = {"headers": {**(case.headers or {}), **service.auth}, "params": case.query}
            if case.body is not None and case.media_type == "application/json":
                kwargs["content"] = json.dumps(case.body)
                kwargs["headers"]["content-type"] = "application/json"
            elif case.body is not None and case.media_type == "multipart/form-data":
                kwargs["data"] = {k: v for k, v in case.body.items() if isinstance(v, str)}
            response = service.client.request(case.method, case.formatted_path, **kwargs)
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, case.body, response.status_code, response.text))

        send()
    assert operations >= 10
    assert not failures, failures[:3]
