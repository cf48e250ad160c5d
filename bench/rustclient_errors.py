"""``bench/rustclient.py --errors``: a submit-shaped POST with each client, directly and
behind ``GatewayClient`` through ``gateway.transport.send`` (``Phase.SUBMIT``), at loopback
servers that fail in known ways: what each raised and what the gateway made of it (split out
of ``bench/rustclient.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import threading
import time
from collections.abc import Callable

import aiohttp
import httpx

from bench.rustclient_transports import LIMITS, ClientBuilder, pyqwest, rnet, transports
from gateway.transport import AiohttpTransport, GatewayClient, Phase, send

# -- failures: does the error say whether the request may have left? ----------------------

class Server:
    """A loopback TCP server in a thread that does ``behaviour`` with each connection."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        data = b""
        conn.settimeout(5)
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    conn.close()
                    return
                data += chunk
            self.requests += 1
            if self.behaviour == "close after reading":
                conn.close()
            elif self.behaviour == "reset after reading":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
            elif self.behaviour == "half an answer":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: application/json\r\n\r\n{\"id\"")
                conn.close()
            elif self.behaviour == "never answers":
                self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def full_backlog() -> tuple[int, list[socket.socket]]:
    """A port whose accept queue is full (listen(0), never accepted): a SYN gets no answer,
    so connecting times out -- a connect timeout on loopback."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    port = s.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.2)
    return port, [s, *fillers]


BODY = b'{"model":"m","prompt":"p"}'
HEADERS = [("Authorization", "Bearer sk-bench"), ("Accept", "application/json"), ("Content-Type", "application/json")]


async def direct_post(client: str, url: str) -> str:
    """POST with the client's own API (short timeouts); what it raised."""
    try:
        if client == "aiohttp":
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_connect=1, sock_read=1)) as s:
                async with s.post(url, headers=HEADERS, data=BODY) as r:
                    await r.read()
        elif client == "pyreqwest":
            c = (ClientBuilder().connect_timeout(datetime.timedelta(seconds=1))
                 .read_timeout(datetime.timedelta(seconds=1)).build())
            try:
                r = await c.post(url).headers(HEADERS).body_bytes(BODY).build().send()
                await r.bytes()
            finally:
                await c.close()
        elif client == "pyqwest":
            c = pyqwest.Client(pyqwest.HTTPTransport(connect_timeout=1.0, read_timeout=1.0, enable_otel=False))
            await c.post(url, HEADERS, BODY)
        elif client == "rnet":
            c = rnet.Client(connect_timeout=1, read_timeout=1)
            r = await c.post(url, headers=dict(HEADERS), body=BODY)
            await r.bytes()
        else:
            return "-"
    except Exception as exc:  # noqa: BLE001 (what it raised is the finding)
        return _describe(exc)
    return "no error"


def _describe(exc: BaseException) -> str:
    mro = [c.__name__ for c in type(exc).__mro__ if c not in (object, BaseException, Exception)]
    text = str(exc).replace("\n", " ")[:110]
    return f"{type(exc).__module__}.{' < '.join(mro[:4])}: {text}"


async def gateway_post(transport: Callable[[], httpx.AsyncBaseTransport] | None, url: str) -> str:
    """The submit through ``GatewayClient`` and ``gateway.transport.send``: what the gateway decided."""
    client = (GatewayClient(AiohttpTransport(LIMITS), httpx.Timeout(1.0)) if transport is None
              else GatewayClient(transport(), httpx.Timeout(1.0)))
    request = httpx.Request("POST", url, content=BODY, headers=HEADERS)
    try:
        await send(client, "x", request, Phase.SUBMIT)
    except Exception as exc:  # noqa: BLE001
        cause = exc.__cause__
        return f"{type(exc).__name__} ({type(cause).__name__ if cause else ''})"
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return "no error"


def errors() -> None:
    """Each client at each failure; short timeouts so the timeouts show in ~1 s."""
    scenarios: list[tuple[str, Callable[[], tuple[str, Callable[[], None]]]]] = []

    def refused() -> tuple[str, Callable[[], None]]:
        return f"http://127.0.0.1:{closed_port()}/v1/videos", lambda: None

    def backlog() -> tuple[str, Callable[[], None]]:
        port, socks = full_backlog()
        return f"http://127.0.0.1:{port}/v1/videos", lambda: [s.close() for s in socks]

    def serving(behaviour: str) -> Callable[[], tuple[str, Callable[[], None]]]:
        def make() -> tuple[str, Callable[[], None]]:
            server = Server(behaviour)
            return f"http://127.0.0.1:{server.port}/v1/videos", server.close
        return make

    scenarios = [("connection refused (closed port)", refused), ("connect timeout (full backlog)", backlog),
                 ("server closes after reading", serving("close after reading")),
                 ("server resets after reading", serving("reset after reading")),
                 ("answer cut off mid-body", serving("half an answer")),
                 ("read timeout (never answers)", serving("never answers"))]
    gateway_modes: dict[str, Callable[[], httpx.AsyncBaseTransport] | None] = {"aiohttp (make_client)": None}
    gateway_modes.update({k[2:]: v for k, v in transports().items()})
    for title, make in scenarios:
        print(f"\n## {title}")
        for client in ("aiohttp", "pyreqwest", "pyqwest", "rnet"):
            url, done = make()
            print(f"  direct  {client:22s} {asyncio.run(direct_post(client, url))}")
            done()
        for name, transport in gateway_modes.items():
            url, done = make()
            print(f"  gateway {name:22s} {asyncio.run(gateway_post(transport, url))}")
            done()
