"""The request head is bounded in size and in time at a replica reached directly, not only
behind nginx: before, ``reelgate serve`` read a 50 MB header whole (8 s of CPU, then 200) and
kept a connection open for as long as its client dripped header lines (slowloris)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from gateway.request_head import HEAD_LIMIT_BYTES, BoundedHeadProtocol
from gateway.serving import bind
from tests.security.conftest import Server


def _exchange(port: int, head: bytes, *, timeout_s: float = 30) -> bytes:
    """Send ``head`` (as fast as the server reads) and return all the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-head: the answer was written before the close
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _error(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)["error"]


def test_serve_refuses_a_huge_head_with_431_and_answers_normal_ones(reelgate_serve: Callable[..., Server]) -> None:
    server = reelgate_serve()
    port = int(server.url.rsplit(":", 1)[1])
    started = time.process_time()
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (20 * 1024 * 1024) + b"\r\n\r\n"
    status, error = _error(_exchange(port, huge))
    assert status == 431 and error["code"] == "head_too_large", error
    assert str(HEAD_LIMIT_BYTES) in error["message"]
    # many headers adding up count the same as one long one
    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 200)
                                                             for i in range(2000)) + b"\r\n"
    assert _error(_exchange(port, many))[0] == 431
    # a head of ordinary size, twice on one kept-alive connection: both answered
    ordinary = (f"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.key}\r\n"
                f"X-Trace: {'t' * 8000}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for _ in range(2):
            sock.sendall(ordinary)
            answer = b""
            while not answer.endswith(b"}"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ") and b'"has_more"' in answer
    assert server.proc.poll() is None
    assert time.process_time() - started < 10  # (the test's own CPU: a sanity bound)


class _QuickHead(BoundedHeadProtocol):
    head_timeout_s = 0.5


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def quick_server() -> Iterator[int]:
    """uvicorn with the bounded head (timeout 0.5 s) serving a hello app, on a free port."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(_hello, http=_QuickHead, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_a_head_dripped_slowly_is_cut_off_with_408(quick_server: int) -> None:
    with socket.create_connection(("127.0.0.1", quick_server), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        try:
            for _ in range(40):  # a header line every 0.1 s: never a whole head
                time.sleep(0.1)
                sock.sendall(b"X-a: b\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        while chunk := sock.recv(65536):
            answer += chunk
    status, error = _error(answer)
    assert status == 408 and error["code"] == "head_timeout"
    assert time.monotonic() - started < 3


def test_a_silent_connection_is_closed_and_a_kept_alive_one_is_timed_per_request(quick_server: int) -> None:
    with socket.create_connection(("127.0.0.1", quick_server), timeout=10) as sock:
        assert _error(sock.recv(65536))[0] == 408  # nothing sent at all
    with socket.create_connection(("127.0.0.1", quick_server), timeout=10) as sock:
        for _ in range(3):  # each head arrives in time, the connection lives past the timeout
            time.sleep(0.3)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"ok"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ")


def test_a_body_sent_with_its_head_does_not_count_as_head(quick_server: int) -> None:
    # a balancer sends a request's head and the start of its body in one piece (nginx passes a
    # 1 MiB JSON body on a kept-alive upstream connection): only the head is bounded
    body = b"x" * (4 * HEAD_LIMIT_BYTES)
    for _ in range(2):  # on a new connection, then on a kept-alive one
        with socket.create_connection(("127.0.0.1", quick_server), timeout=10) as sock:
            for _ in range(2):
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                answer = b""
                while not answer.endswith(b"ok"):
                    answer += sock.recv(65536)
                assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]


def test_one_timer_times_each_head_of_a_kept_alive_connection_from_its_own_start(quick_server: int) -> None:
    """The connection's timer, armed at its start (fires at 0.5 s), finds the second head
    begun at ~0.4 s and times that one from its own start: cut off ~0.5 s after it began,
    neither at the first firing nor never."""
    with socket.create_connection(("127.0.0.1", quick_server), timeout=10) as sock:
        time.sleep(0.3)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"ok"):
            answer += sock.recv(65536)
        time.sleep(0.1)
        began = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        waited = time.monotonic() - began
    status, error = _error(answer)
    assert status == 408 and error["code"] == "head_timeout"
    assert 0.45 <= waited < 2.0, waited
