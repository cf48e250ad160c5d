"""What every route module shares: the error envelope, the caller's key, the JSON body
and the service. Route modules import this, never ``app.py`` (which imports them)."""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
from collections.abc import Mapping
from typing import Any, BinaryIO, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic_core import to_json
from starlette.requests import ClientDisconnect

from gateway.keys import ApiKey
from gateway.server.service import Service

#: the ``order`` of list routes: ``desc`` newest first (the default), ``asc`` oldest first
Order = Literal["asc", "desc"]


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str, type_: str = "invalid_request_error",
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = status, message, code, type_, param
        self.headers = headers


class JsonBody(JSONResponse):
    """A ``JSONResponse`` encoded by pydantic-core: Starlette's builds a stdlib
    ``JSONEncoder`` per response and walks the object in it (~4x the CPU for a video
    object, measured in docs/benchmarks.md 6.inbound). The same UTF-8, compact JSON; a
    non-finite float becomes ``null``, never the invalid ``NaN`` (none is ever sent: bodies
    refuse them on the way in and costs are decimals)."""

    def render(self, content: Any) -> bytes:
        return to_json(content, inf_nan_mode="null")

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        # Starlette's, for the usual answer (no headers of its own, a status with a body):
        # the same two headers in the same order, without its general case's checks
        if headers is None and self.status_code >= 200 and self.status_code not in (204, 304):
            self.raw_headers = [(b"content-length", str(len(self.body)).encode()), _JSON_TYPE]
        else:
            super().init_headers(headers)


_JSON_TYPE = (b"content-type", JsonBody.media_type.encode("latin-1"))


def envelope(status: int, message: str, *, code: str, type_: str, param: str | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JsonBody(body, status_code=status, headers=headers)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"no {what} with that id", code="not_found")


def header_of(request: Request, name: bytes) -> str | None:
    """``request.headers.get(name)`` (``name`` lower case): the first value, as Starlette
    gives it, read straight from the scope. ``request.headers`` builds a ``Headers`` and
    lowers and encodes the name again on every lookup: a few µs per request on the hot
    routes, which read two or three headers each (docs/benchmarks.md, section 6.inbound2)."""
    key: bytes
    value: bytes
    for key, value in request.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def caller(request: Request) -> ApiKey | None:
    """The API key of the caller; 401 when one is required and missing or wrong."""
    service = service_of(request)
    if not service.settings.service.require_api_key:
        return None
    header = header_of(request, b"authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing API key: send Authorization: Bearer <key> (create one with "
                       "`reelgate keys create --name NAME`)", code="missing_api_key", type_="authentication_error")
    key = await service.keys.averify(token.strip())
    if key is None:
        raise ApiError(401, "invalid or revoked API key", code="invalid_api_key", type_="authentication_error")
    return key



#: how much of a body arriving is held in memory before the rest goes to a temporary file
SPOOL_BYTES = 1024 * 1024
#: deeper JSON than this is refused before anything walks it (a request is ~3 levels deep)
MAX_JSON_DEPTH = 32


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a 4xx that says what is wrong with it: 415 for another
    content type (a missing one is read as JSON), 400 for bad JSON."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json":
        raise ApiError(415, f"send the body as application/json, not {media}", code="unsupported_media_type")
    return parse_json_object(await read_body(request))


async def read_body(request: Request) -> bytes:
    """The whole body. While it arrives at most ``SPOOL_BYTES`` of it sit in memory, the
    rest in a temporary file: a body cut off at the size limit (413, guard.py) costs disk
    for a moment, not memory, however many arrive at once. Read from ``receive`` as
    Starlette's ``Request.stream`` does, without its async generator (registered with the
    loop on each use) and with a body that came in one message returned as it is."""
    receive = request.receive
    pending = bytearray()
    spool: BinaryIO | None = None
    try:
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            if not more and not pending and spool is None:
                return chunk  # the usual case: the whole body in one message
            pending += chunk
            if len(pending) >= SPOOL_BYTES:
                if spool is None:
                    spool = await asyncio.to_thread(tempfile.TemporaryFile)
                await asyncio.to_thread(spool.write, pending)
                pending = bytearray()
        if spool is None:
            return bytes(pending)
        return await asyncio.to_thread(_read_back, spool, pending)
    finally:
        if spool is not None:
            spool.close()


def _read_back(spool: BinaryIO, tail: bytearray) -> bytes:
    spool.write(tail)
    spool.seek(0)
    return spool.read()


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object. Refused with a 400 naming the reason: invalid JSON,
    ``NaN``/``Infinity`` or a number too large for a float (they are not JSON numbers and
    no store keeps them), nesting deeper than ``MAX_JSON_DEPTH`` (never a RecursionError),
    and strings that are not valid Unicode (lone surrogates such as ``"\\ud83d"``)."""
    try:
        # ``json.loads`` with these hooks, without building a decoder per body
        raw = raw or b"{}"
        data = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except RecursionError:
        raise ApiError(400, f"the body nests deeper than {MAX_JSON_DEPTH} levels", code="too_deep") from None
    except json.JSONDecodeError as exc:  # where, never what: the text may be anything
        raise ApiError(400, f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                       code="invalid_json") from None
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: not {exc.encoding} text at byte {exc.start}",
                       code="invalid_json") from None
    except ValueError:  # int(): a number of more digits than Python converts (4300)
        raise ApiError(400, "the body is not valid JSON: a number has too many digits", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    _check_tree(data)
    return data


class _NotFinite:
    """Stands in for ``NaN``/``Infinity``/an overflowing number until the walk below can
    name the field that holds it."""

    def __init__(self, text: str) -> None:
        self.text = text


def _finite_float(text: str) -> float | _NotFinite:
    value = float(text)
    return value if math.isfinite(value) else _NotFinite(text)


_DECODER = json.JSONDecoder(parse_constant=_NotFinite, parse_float=_finite_float)


def _check_tree(data: Any) -> None:
    """Walk the parsed body once, without recursion: depth, finite numbers and string
    validity, each refusal naming the field (``metadata.note``, ``providers.0``). A body
    that passes the quick walk (``_plainly_fine``) is not walked again with the fields' names."""
    if not _plainly_fine(data):
        _name_problem(data)


def _plainly_fine(data: dict[str, Any]) -> bool:
    """Whether nothing in the body can be refused: not too deep, no non-finite number, and
    every string (keys too) ASCII (so valid Unicode). Anything else (also any non-ASCII
    text, however valid) goes to ``_name_problem``, which decides and names the field."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if isinstance(node, dict):
            for key in node:
                if not key.isascii():
                    return False
            node = node.values()
        for item in node:
            if isinstance(item, str):
                if not item.isascii():
                    return False
            elif isinstance(item, dict | list):
                stack.append((item, depth + 1))
            elif isinstance(item, _NotFinite):
                return False
    return True


def _name_problem(data: Any) -> None:
    """The walk that raises the 400 for the first problem found, naming its field."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ApiError(400, f"the body nests deeper than {MAX_JSON_DEPTH} levels", code="too_deep")
            pairs = node.items() if isinstance(node, dict) else enumerate(node)
            for name, item in pairs:
                child = f"{path}.{name}" if path else str(name)
                _check_string(name, child)
                stack.append((item, depth + 1, child))
        elif isinstance(node, _NotFinite):
            field = _field_of(path)
            raise ApiError(400, f"{field}: {node.text[:40]} is not a finite number", code="invalid_json",
                           param=field)
        else:
            _check_string(node, path)


def _check_string(value: Any, path: str) -> None:
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            field = _field_of(path)
            raise ApiError(400, f"{field or 'the body'}: holds a string that is not valid Unicode (a lone surrogate)",
                           code="invalid_json", param=field) from None


def _field_of(path: str) -> str | None:
    """The top-level field a path is in: the request model's name for it."""
    return path.split(".", 1)[0] or None
