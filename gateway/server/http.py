"""What every route module shares: the error envelope, the caller's key, the JSON body
and the service. Route modules import this, never ``app.py`` (which imports them)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from gateway.keys import ApiKey
from gateway.server.service import Service


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str, type_: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = status, message, code, type_, param
        self.headers = headers


def envelope(status: int, message: str, *, code: str, type_: str, param: str | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"no {what} with that id", code="not_found")


async def caller(request: Request) -> ApiKey | None:
    """The API key of the caller; 401 when one is required and missing or wrong."""
    service = service_of(request)
    if not service.settings.service.require_api_key:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing API key: send Authorization: Bearer <key> (create one with "
                       "`reelgate keys create --name NAME`)", code="missing_api_key", type_="authentication_error")
    key = await service.keys.averify(token.strip())
    if key is None:
        raise ApiError(401, "invalid or revoked API key", code="invalid_api_key", type_="authentication_error")
    return key



async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    raw = await request.body()
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    return data
