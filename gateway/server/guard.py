"""The service's outermost layer: what every request passes before any route runs.

* **Body limits while streaming.** ``max_upload_bytes`` is checked against a declared
  ``Content-Length`` and again against the bytes actually received, so a chunked body
  without a length is cut off at the limit too (413); no route ever sees, or buffers,
  more than the limit. After a 413 the server reads and discards what the client still
  sends, so the client gets to read the answer; memory stays flat.
* **Slow bodies time out.** A body that pauses longer than ``body_timeout_s`` gets 408
  and its connection is closed (a half-sent body must not hold a connection forever).
* **No NUL in the URL.** A path or query parameter holding ``%00`` is a 400 naming it before
  any route runs: no id or cursor holds one, and PostgreSQL refuses NUL in text outright (the
  look-up of ``/v1/videos/%00`` was a 500 there).
* **Cross-origin writes are refused** unless the origin is in ``cors_allow_origins``:
  a page on another origin can send "simple" requests (form posts, ``text/plain``)
  without a preflight, and with ``require_api_key: false`` that would create jobs.
  Browsers always send ``Origin`` on such requests; SDKs and curl do not.
* **Every request is counted** in ``reelgate_http_requests_total``, also the ones that
  fail: an unhandled exception becomes the JSON 500 envelope (logged once, with its
  traceback), a client that hangs up mid-body is one log line and status 499.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import ServiceConfig
from gateway.server.http import ApiError, envelope

log = logging.getLogger("reelgate.server")

#: nginx's name for "the client closed the connection before the answer"
CLIENT_CLOSED = 499
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CORS_HEADERS = ["authorization", "content-type", "idempotency-key"]


class BodyReader:
    """``receive`` with the body counted and timed: raises 413 past ``limit`` bytes and
    408 when the next piece does not come within ``timeout_s``. Once the body is
    complete it passes messages through untimed (a streamed answer listens for the
    disconnect for as long as it runs)."""

    def __init__(self, receive: Receive, limit: int, timeout_s: float) -> None:
        self._receive, self.limit, self.timeout_s = receive, limit, timeout_s
        self.received = 0
        self.complete = False

    async def __call__(self) -> Message:
        if self.complete:
            return await self._receive()
        try:
            async with asyncio.timeout(self.timeout_s):  # not wait_for: it can swallow a cancel (3.11)
                message = await self._receive()
        except TimeoutError:
            raise ApiError(408, f"the request body stopped arriving for {self.timeout_s:g} s", code="body_timeout",
                           headers={"Connection": "close"}) from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise too_large(self.limit)
            self.complete = not message.get("more_body", False)
        return message


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body larger than {limit} bytes", code="too_large")


def same_or_allowed_origin(origin: str, host: str, allowed: Sequence[str]) -> bool:
    """Whether a browser page at ``origin`` may send a state-changing request: the
    service's own origin (the one its ``Host`` names) or one on the allow-list."""
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.lower()


class Guard:
    """ASGI middleware applying the module docstring to every HTTP request. The settings
    come from the service the app starts (``app.state.service``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cors: ASGIApp | None = None

    def _inner(self, conf: ServiceConfig) -> ASGIApp:
        if not conf.cors_allow_origins:
            return self.app
        if self._cors is None:
            self._cors = CORSMiddleware(self.app, allow_origins=conf.cors_allow_origins,
                                        allow_methods=["GET", "POST", "DELETE"], allow_headers=_CORS_HEADERS,
                                        expose_headers=["Retry-After"], allow_credentials=False)
        return self._cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service = scope["app"].state.service
        conf: ServiceConfig = service.settings.service
        tracked = _Tracked(send)
        refusal = _refusal(scope, conf)
        # one coroutine for the whole request (this runs on every one): no helper awaited per layer
        if refusal is not None:
            response = envelope(refusal.status, refusal.message, code=refusal.code, type_=refusal.type,
                                param=refusal.param)
            await response(scope, receive, tracked)
        else:
            try:
                await self._inner(conf)(scope, BodyReader(receive, conf.max_upload_bytes, conf.body_timeout_s),
                                        tracked)
            except ClientDisconnect:
                tracked.status = CLIENT_CLOSED
                log.info("%s %s: the client hung up before sending its whole body", scope["method"], scope["path"])
            except Exception:
                tracked.status = 500
                log.exception("%s %s failed", scope["method"], scope["path"])
                if not tracked.started:
                    response = envelope(500, "the server failed to handle this request; it has been logged",
                                        code="internal_error", type_="server_error")
                    await response(scope, receive, tracked)
        route = getattr(scope.get("route"), "path", "unmatched")
        service.metrics.requests_of(scope["method"], route, str(tracked.status)).inc()


class _Tracked:
    """``send``, noting the status the response started with (what the request is counted
    under) and whether it started (a 500 envelope can only go before). One object per
    request instead of two closures: this wraps every message of every response."""

    __slots__ = ("_send", "started", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.status = 500  # until a response starts: a request that fails before is a 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
        await self._send(message)


def _refusal(scope: Scope, conf: ServiceConfig) -> ApiError | None:
    """A request answered before any route runs: a NUL in its URL, a cross-origin write, or
    a body whose declared length is over the limit (its bytes are never read)."""
    if "\x00" in scope["path"]:
        return ApiError(400, "the URL path holds a NUL character (%00), which no id or route contains",
                        code="invalid_path")
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        return _nul_in_query(query)
    # one pass picking the three headers read here, decoding only those (this runs on every
    # request); a repeated header counts as its last value, as a dict of them would
    origin_raw = host_raw = length_raw = None
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            origin_raw = value
        elif name == b"host":
            host_raw = value
        elif name == b"content-length":
            length_raw = value
    origin = origin_raw.decode("latin-1") if origin_raw is not None else None
    if origin and scope["method"] not in _SAFE_METHODS and not same_or_allowed_origin(
            origin, (host_raw or b"").decode("latin-1"), conf.cors_allow_origins):
        return ApiError(403, f"requests from origin {origin!r} are not allowed (service.cors_allow_origins)",
                        code="origin_not_allowed")
    length = length_raw.decode("latin-1") if length_raw is not None else None
    if length is not None and (not length.isdigit() or int(length) > conf.max_upload_bytes):
        return too_large(conf.max_upload_bytes)
    return None


def _nul_in_query(query: bytes) -> ApiError:
    """The 400 for a query string holding a NUL, naming the parameter that holds it."""
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    name = next((k for k, v in pairs if "\x00" in k + v), "").replace("\x00", "")
    if not (name.isprintable() and 0 < len(name) <= 64):  # echoed in the answer: only a plain name
        return ApiError(400, "the query string holds a NUL character (%00), which no value contains",
                        code="invalid_request")
    return ApiError(400, f"{name}: holds a NUL character (%00), which no id or value contains",
                    code="invalid_request", param=name)
