"""A NUL (``%00``) in a job id or a query parameter is a 400 naming it, on SQLite and on
PostgreSQL alike. PostgreSQL refuses NUL in text outright, so before the service looked such
an id up and answered 500 (``DataError``) on every route taking an id, and on ``after=``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.store.conftest import PG_DSN, pg_schema  # noqa: F401 (a fixture: a schema of this test's own)

# every route that takes an id in its path, with the method it is served under
ID_ROUTES = [
    ("GET", "/v1/videos/{id}"), ("GET", "/v1/videos/{id}/content"), ("DELETE", "/v1/videos/{id}"),
    ("POST", "/v1/videos/{id}/cancel"), ("POST", "/v1/videos/{id}/remix"),
    ("GET", "/v1/jobs/{id}"), ("POST", "/v1/jobs/{id}/cancel"),
]
IDS = ["%00", "vid_%00", "vid_ab%00cd"]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite":
        return {}
    schema = request.getfixturevalue("pg_schema")
    return {"store_url": PG_DSN, "store_schema": schema}


def test_a_nul_in_an_id_is_a_400_on_every_route(make_app: Callable[..., Any], store_settings: dict[str, Any]) -> None:
    with make_app(require_api_key=False, **store_settings) as app:
        for method, route in ID_ROUTES:
            for job_id in IDS:
                response = app.client.request(method, route.format(id=job_id), json={"prompt": "x"})
                assert response.status_code == 400, (method, route, job_id, response.text)
                error = response.json()["error"]
                assert error["code"] == "invalid_path" and "NUL" in error["message"], error
        # the service still answers for real ids afterwards
        assert app.client.get("/v1/jobs").status_code == 200


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/videos"])
def test_a_nul_in_a_query_parameter_is_a_400_naming_it(make_app: Callable[..., Any], store_settings: dict[str, Any],
                                                      path: str) -> None:
    with make_app(require_api_key=False, **store_settings) as app:
        for query in ("after=%00", "after=vid_%00x", "limit=5&after=vid_1%00"):
            response = app.client.get(f"{path}?{query}")
            assert response.status_code == 400, (query, response.text)
            error = response.json()["error"]
            assert error["param"] == "after" and error["message"].startswith("after: holds a NUL"), error
        # a parameter whose name is not fit to echo is not echoed
        response = app.client.get(f"{path}?%1b%00=1")
        assert response.status_code == 400 and response.json()["error"]["param"] is None
        assert "\x1b" not in response.text
