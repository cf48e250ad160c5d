"""The two routes a client calls most, served without FastAPI's layers in between.

``POST /v1/videos`` and ``GET /v1/videos/{id}`` are most of the service's traffic (create,
then poll). Through FastAPI each passes five middlewares (telemetry, body limit, server
errors, exception handlers, exit stack), a router that tries every route in turn, and a
dependency solver, before the endpoint runs: measured, those cost more CPU than the
endpoint itself (docs/benchmarks.md, section 6.asgi). Here they are matched by path and
run directly, with what users see kept identical:

* the same endpoint functions (``openai_routes``) and the same ``caller`` authentication;
* the same ``Guard`` (origin check, body size and timeout, 500 and 499, the request
  counter labelled with the route's path) in front of them;
* an exception they raise gets the response of the handler the app registers for it
  (``app.exception_handlers``, looked up by class as Starlette does).

The routes stay registered with FastAPI: ``/openapi.json`` documents them, and any request
this module does not claim (another method, a trailing slash, a ``root_path``) goes the
usual way.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.server.guard import Guard
from gateway.server.http import caller
from gateway.server.openai_routes import create_video, retrieve_video
from gateway.server.openai_routes import router as openai_router

_VIDEOS = "/v1/videos"
_ONE_VIDEO = "/v1/videos/"


class HotRoutes:
    """Claims the hot requests of one app (:meth:`claim`) and serves them behind a ``Guard``."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.create = _route(create_video.__name__)
        self.retrieve = _route(retrieve_video.__name__)
        self.guarded = Guard(self._endpoint)

    def claim(self, scope: Scope) -> bool:
        """Whether the request is one of the hot routes; if so its route and path parameters
        are set on ``scope`` as FastAPI's router would set them."""
        path: str = scope["path"]
        method = scope["method"]
        if method == "POST" and path == _VIDEOS:
            route, params = self.create, {}
        elif method == "GET" and path.startswith(_ONE_VIDEO) and "/" not in path[len(_ONE_VIDEO):] \
                and len(path) > len(_ONE_VIDEO):
            route, params = self.retrieve, {"video_id": path[len(_ONE_VIDEO):]}
        else:
            return False
        scope["app"] = self.app
        scope["router"] = self.app.router
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        return True

    async def _endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            key = await caller(request)
            if scope["route"] is self.create:
                response: Response = await create_video(request, key)
            else:
                response = await retrieve_video(scope["path_params"]["video_id"], request, key)
        except Exception as exc:
            handler = _handler_for(self.app, exc)
            if handler is None:
                raise  # Guard's 500
            response = await handler(request, exc)
        await response(scope, receive, send)


def _route(endpoint_name: str) -> APIRoute:
    for route in openai_router.routes:
        if isinstance(route, APIRoute) and route.endpoint.__name__ == endpoint_name:
            return route
    raise LookupError(endpoint_name)


def _handler_for(app: FastAPI, exc: Exception) -> Any:
    """The exception handler the app registered for ``exc``'s class or its nearest base."""
    for cls in type(exc).__mro__:
        if cls in app.exception_handlers:
            return app.exception_handlers[cls]
    return None
