"""The request head (request line and headers) bounded in size and in time, for the servers
``reelgate serve`` and ``reelgate sandbox`` run.

uvicorn's httptools protocol bounds neither: measured on a replica, a 50 MB header was read
whole and answered 200 after 8 s of CPU, and a client sending a header line every 5 s held
its connection for as long as it liked (a slowloris needs only many such connections). The
body has its limits (``max_upload_bytes``, ``body_timeout_s``: gateway/server/guard.py); a
load balancer bounds the head in front of the replicas (nginx: 8 KiB lines,
``client_header_timeout`` 60 s), but a replica reached directly did not. Now:

* a head larger than :data:`HEAD_LIMIT_BYTES` gets ``431`` and the connection is closed;
* a head not complete within :data:`HEAD_TIMEOUT_S` of its first byte (or of the
  connection, for the first request) gets ``408`` and the connection is closed.

Idle keep-alive connections between requests stay uvicorn's business (closed after 5 s).
h11, the fallback when httptools is missing, has a head size limit of its own (16 KiB).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: the largest request head accepted: nginx's default allows 4 lines of 8 KiB; API keys,
#: cookies and tracing headers fit many times over
HEAD_LIMIT_BYTES = 64 * 1024
#: the longest a request head may take to arrive whole (nginx's client_header_timeout is 60 s;
#: a client on any network sends a few hundred bytes of head in well under a second)
HEAD_TIMEOUT_S = 30.0
#: after a refusal, how long what the client still sends is read and dropped before the
#: connection closes: closing with unread bytes resets it, and the client would lose the answer
LINGER_S = 2.0

_ANSWERS = {
    408: b"HTTP/1.1 408 Request Timeout\r\n",
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
}


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the head of every request bounded (module docstring)."""

    head_limit_bytes = HEAD_LIMIT_BYTES
    head_timeout_s = HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True  # a new connection's first bytes are a head
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering after a refusal: dropped unread
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # checked after the parser had the bytes: a piece that ends the head also carries the
        # start of the body (a balancer sends both at once), which is not the head's size
        if self._in_head and self._head_bytes > self.head_limit_bytes:
            self._refuse(431, f"the request head is larger than {self.head_limit_bytes} bytes")

    # parser callbacks: a head starts with its message and ends with its headers
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # the next request on a kept-alive connection
            self._in_head, self._head_bytes = True, 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:  # a pipelined head waits for
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)  # its turn
            return
        self._refuse(408, f"the request head did not arrive within {self.head_timeout_s:g} s")

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` in the service's error envelope, then read and drop what still
        comes for :data:`LINGER_S` and close. Nothing of the request reached the app, so no
        response is under way to interfere with."""
        self._stop_head_timer()
        self._in_head, self._refused = False, True
        code = "head_timeout" if status == 408 else "head_too_large"
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": code}}, separators=(",", ":")).encode()
        self.transport.write(_ANSWERS[status] + b"content-type: application/json\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the answer, then its end
        self.loop.call_later(LINGER_S, self.transport.close)


def http_protocol() -> str:
    """uvicorn's ``http`` setting for the servers: this protocol where httptools is installed
    (a core dependency), else uvicorn's choice (h11, which bounds the head's size itself)."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "auto"
    return f"{__name__}:{BoundedHeadProtocol.__name__}"
