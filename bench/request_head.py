"""What bounding the request head costs the server (gateway/request_head.py): uvicorn's
httptools protocol against ``BoundedHeadProtocol``, serving the same tiny ASGI app.

    python -m bench.request_head [--requests 5000] [--rounds 5]

Per round, each protocol serves ``requests`` keep-alive GETs (one connection, one request
at a time) in a child process of its own; the server's CPU seconds (its ``resource`` usage,
read by the child at the end) per request are compared, as a ratio, round by round. The
client's load is the same for both. CPU, not wall time: the machine is shared.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time

CHILD = r"""
import asyncio, resource, socket, sys, threading
import uvicorn
from gateway.request_head import BoundedHeadProtocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})

protocol = BoundedHeadProtocol if sys.argv[1] == "bounded" else HttpToolsProtocol
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(128)
server = uvicorn.Server(uvicorn.Config(app, http=protocol, loop="uvloop", lifespan="off", log_level="warning"))
print(sock.getsockname()[1], flush=True)
threading.Thread(target=lambda: (sys.stdin.readline(), setattr(server, "should_exit", True)), daemon=True).start()
before = resource.getrusage(resource.RUSAGE_SELF)
asyncio.run(server.serve(sockets=[sock]))
after = resource.getrusage(resource.RUSAGE_SELF)
print((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), flush=True)
"""

REQUEST = (b"GET /v1/videos/vid_0123456789abcdef HTTP/1.1\r\nHost: reelgate\r\nUser-Agent: OpenAI/Python 3.57\r\n"
           b"Authorization: Bearer rg_0123456789ab_abcdefghijklmnopqrstuvwxyz0123456789ABCDE\r\n"
           b"Accept: application/json\r\n\r\n")


def serve_and_measure(kind: str, requests: int) -> float:
    """CPU seconds per request of a server of ``kind`` answering ``requests`` GETs."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None and child.stdin is not None
    port = int(child.stdout.readline())
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(requests):
            sock.sendall(REQUEST)
            answer = b""
            while not answer.endswith(b"ok"):
                answer += sock.recv(65536)
    child.stdin.write("\n")
    child.stdin.flush()
    cpu = float(child.stdout.readline())
    child.wait(timeout=30)
    return cpu / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ratios = []
    for round_ in range(1, args.rounds + 1):
        plain = serve_and_measure("plain", args.requests)
        bounded = serve_and_measure("bounded", args.requests)
        ratios.append(bounded / plain)
        print(f"round {round_}: httptools {plain * 1e6:.1f} us/request, bounded head {bounded * 1e6:.1f} us/request, "
              f"ratio {bounded / plain:.3f}")
    print(f"median ratio (bounded / plain): {statistics.median(ratios):.3f} over {args.rounds} rounds")


if __name__ == "__main__":
    main()
