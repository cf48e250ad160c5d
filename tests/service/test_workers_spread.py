"""``reelgate serve --workers 2``: new connections land on both workers (each worker slot
listens on its own SO_REUSEPORT socket, gateway/serving.py ``WorkerSockets``), those the
kernel hands a killed worker's socket wait for its replacement, and a second ``serve`` on
the port is refused as it always was."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import yaml

from tests.service.conftest import Processes, wait_until_up
from tests.service.test_workers import workers_of


def serve_two(processes: Processes, tmp_path: Path) -> tuple[str, subprocess.Popen[bytes]]:
    config = tmp_path / "reelgate.yaml"
    config.write_text(yaml.safe_dump({"service": {"workers": 2}}))
    processes.env.pop("REELGATE_REDIS_URL", None)
    url, supervisor = processes.spawn("serve", "--config", str(config), "--sandbox", "--replica-id", "box",
                                      "--log-level", "info", log=tmp_path / "serve.log")
    wait_until_up(url, supervisor)
    return url, supervisor


def burst(url: str, count: int) -> Counter[str]:
    """The replica ids answering ``count`` connections opened at once (as a load generator's
    keep-alive pool is), each asked /readyz once all are open."""
    host, port = url.removeprefix("http://").split(":")
    connections = [http.client.HTTPConnection(host, int(port), timeout=90) for _ in range(count)]
    for c in connections:
        c.connect()  # queued by the kernel before any worker accepts one
    answered: Counter[str] = Counter()
    for c in connections:
        c.request("GET", "/readyz")
        answered[json.loads(c.getresponse().read())["replica"]["id"]] += 1
        c.close()
    return answered


def test_new_connections_land_on_both_workers_and_wait_for_a_killed_ones_replacement(
        processes: Processes, tmp_path: Path) -> None:
    url, supervisor = serve_two(processes, tmp_path)
    # a new connection per request; a replacement worker's imports take seconds on a loaded machine
    with httpx.Client(timeout=90, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        workers = workers_of(url, http)

        def answered(count: int) -> Counter[str]:
            return Counter(http.get(f"{url}/readyz").raise_for_status().json()["replica"]["id"] for _ in range(count))

        spread = burst(url, 64)
        os.kill(workers["box-w1"], signal.SIGKILL)
        after = answered(32)  # none reset: those hashed to w1's socket are queued until its replacement accepts
        again = workers_of(url, http)
    # hashed over the two sockets: a share below 12 of 64 is 1 in 10^6. One shared socket gave
    # the whole burst to the worker woken first
    assert set(spread) == {"box-w0", "box-w1"} and min(spread.values()) >= 12, spread
    assert set(after) == {"box-w0", "box-w1"}, after
    assert again["box-w0"] == workers["box-w0"] and again["box-w1"] != workers["box-w1"]
    assert supervisor.poll() is None


def test_a_second_serve_on_the_port_is_one_line_and_exit_2(processes: Processes, tmp_path: Path) -> None:
    url, supervisor = serve_two(processes, tmp_path)
    port = url.rsplit(":", 1)[1]
    for workers in ("2", "1"):  # SO_REUSEPORT would let a second group of the same user join this one
        done = processes.cli("serve", "--sandbox", "--workers", workers, "--port", port)
        assert done.returncode == 2, done.stderr
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert supervisor.poll() is None
    with httpx.Client(timeout=30) as http:
        assert http.get(f"{url}/healthz").status_code == 200
