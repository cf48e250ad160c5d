"""The FastAPI application: routes, caller authentication, error envelopes, limits.

Every error leaves in OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``
with a 4xx for anything the caller can fix; a ``ReelgateError`` never becomes a 500, and
no response carries a vendor key.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from gateway.errors import (
    BudgetExceeded,
    IdempotencyConflict,
    InvalidRequest,
    NoRouteAvailable,
    ReelgateError,
    StoreUnavailable,
    Unsupported,
)
from gateway.server.guard import Guard
from gateway.server.http import ApiError, envelope
from gateway.server.service import Service

if TYPE_CHECKING:
    from gateway.server.hot_routes import HotRoutes

log = logging.getLogger("reelgate.server")

_STATUS: list[tuple[type[ReelgateError], int, str]] = [
    (IdempotencyConflict, 409, "invalid_request_error"),
    (InvalidRequest, 400, "invalid_request_error"),
    (Unsupported, 400, "invalid_request_error"),
    (BudgetExceeded, 402, "budget_error"),
    (NoRouteAvailable, 503, "unavailable_error"),
    (StoreUnavailable, 503, "unavailable_error"),  # PostgreSQL down: try again shortly, maybe at another replica
]


class ReelgateApp(FastAPI):
    """FastAPI, with the hot routes (hot_routes.py) answered before its middleware stack."""

    hot: HotRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hot is not None and not self.root_path and self.hot.claim(scope):
            await self.hot.guarded(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(start: Callable[[], Awaitable[Service]]) -> FastAPI:
    """The app; ``start`` builds the service when the server starts (and it is stopped at exit)."""
    from gateway.server.hot_routes import HotRoutes
    from gateway.server.native_routes import router as native
    from gateway.server.openai_edit_routes import router as openai_edits
    from gateway.server.openai_routes import router as openai
    from gateway.server.ops_routes import router as ops
    from gateway.server.webhook_routes import router as webhooks

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = await start()
        try:
            yield
        finally:
            await app.state.service.stop()

    app = ReelgateApp(title="reelgate", version="0.1.0", lifespan=lifespan,
                  description="One API for video generation: OpenAI-compatible /v1/videos plus the native API.")
    app.include_router(openai)
    app.include_router(openai_edits)
    app.include_router(native)
    app.include_router(ops)
    app.include_router(webhooks)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    app.add_middleware(Guard)
    app.hot = HotRoutes(app)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return envelope(exc.status, exc.message, code=exc.code, type_=exc.type, param=exc.param, headers=exc.headers)

    @app.exception_handler(ReelgateError)
    async def reelgate_error(_request: Request, exc: ReelgateError) -> JSONResponse:
        for cls, status, type_ in _STATUS:
            if isinstance(exc, cls):
                return envelope(status, exc.message, code=exc.code, type_=type_, param=getattr(exc, "field", None),
                                headers=_retry_after(exc))
        log.warning("unmapped gateway error: %s", exc.message)
        return envelope(502, exc.message, code=exc.code, type_="upstream_error")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        param = ".".join(loc) or None
        return envelope(400, f"{param or 'request'}: {err.get('msg', 'is invalid')}", code="invalid_request",
                        type_="invalid_request_error", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405) and exc.detail in ("Not Found", "Method Not Allowed"):
            # no route, or a path that only matched a ``{id}`` pattern of another method (POST
            # /v1/videos/edits used to be a bare 405): say so, and name what is served nearby
            return envelope(404, unknown_route(app, request.method, request.url.path), code="unknown_route",
                            type_="invalid_request_error")
        return envelope(exc.status_code, str(exc.detail), code="http_error", type_="invalid_request_error")

    return app


def unknown_route(app: FastAPI, method: str, path: str) -> str:
    """"POST /v1/videos/nope is not served; under /v1/videos: GET /v1/videos, POST ..." """
    prefix = "/".join(path.split("/")[:3]) or "/"
    # from the OpenAPI paths: the documented routes, however the routers were included
    paths: dict[str, dict[str, Any]] = _openapi(app).get("paths", {})
    served = [f"{m.upper()} {p}" for p, ops in sorted(paths.items()) if p.startswith(prefix) for m in sorted(ops)]
    where = f"under {prefix}: " if served else "see GET /docs; "
    return f"{method} {path[:200]} is not served; {where}{', '.join(served) or 'nothing matches that prefix'}"


def _retry_after(exc: ReelgateError) -> dict[str, str] | None:
    """``Retry-After`` for a 503 that knows when a vendor may take work again (the next
    probe of an open circuit) or the store may answer, in whole seconds as HTTP wants, never 0."""
    wait = exc.retry_after if isinstance(exc, NoRouteAvailable | StoreUnavailable) else None
    return None if wait is None else {"Retry-After": str(max(1, math.ceil(wait)))}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request bodies the routes parse themselves (so that JSON
    and multipart share one handler and errors stay in the OpenAI envelope)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        from gateway.request import VideoRequest
        from gateway.server.openai_routes import CreateVideo

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (CreateVideo, VideoRequest):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        app.openapi_schema = schema
    return app.openapi_schema
