"""Several ``reelgate serve`` processes on one PostgreSQL schema, one Redis prefix and one
``reelgate sandbox`` process, with the app's webhook receiver (for tests/service/test_replicas*.py)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.service.conftest import WEBHOOK_SECRET, Processes, free_port, wait_until_up
from tests.shared.conftest import REDIS_URL
from tests.store.conftest import PG_DSN

VENDORS = ("fal", "apiframe", "railwail")
TERMINAL = ("succeeded", "failed", "cancelled")


class Receiver:
    """The app's webhook endpoint: records every POST (headers, body)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.posts: list[tuple[dict[str, str], bytes]] = []
        #: when each POST arrived (time.monotonic), in the order of ``posts``
        self.times: list[float] = []
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> JSONResponse:
        body, headers = await request.body(), dict(request.headers)
        with self.lock:
            self.posts.append((headers, body))
            self.times.append(time.monotonic())
        return JSONResponse({"ok": True})

    def received(self) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return list(self.posts)


@dataclass
class Cluster:
    processes: Processes
    sandbox_url: str
    config: Path
    auth: dict[str, str]
    urls: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: one pool of connections for the whole test (a client per call costs CPU the replicas need)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30, limits=httpx.Limits(
        max_connections=32, max_keepalive_connections=32)))

    def job(self, url: str, job_id: str) -> dict[str, Any]:
        return self.http.get(f"{url}/v1/jobs/{job_id}", headers=self.auth).raise_for_status().json()

    def jobs(self, url: str) -> dict[str, dict[str, Any]]:
        """Every job, as ``url`` reads them from the store, by id (pages of 100)."""
        found: dict[str, dict[str, Any]] = {}
        params: dict[str, str | int] = {"limit": 100}
        while True:
            page = self.http.get(f"{url}/v1/jobs", params=params, headers=self.auth).raise_for_status().json()
            found.update((j["id"], j) for j in page["data"])
            if not page["has_more"]:
                return found
            params["after"] = page["data"][-1]["id"]

    def accepted(self) -> int:
        stats = self.http.get(f"{self.sandbox_url}/_sandbox/stats").raise_for_status().json()
        return sum(int(stats[v]["accepted_submissions"]) for v in VENDORS)

    def duplicates(self) -> dict[str, dict[str, list[list[object]]]]:
        """Per vendor, each reference (attempt key, else prompt) the emulators accepted more
        than once, with each acceptance's time, client address and vendor job id: a failing
        ``accepted == jobs`` names the job paid twice (its id is the attempt key's stem)."""
        stats = self.http.get(f"{self.sandbox_url}/_sandbox/stats").raise_for_status().json()
        return {v: stats[v]["duplicates"] for v in VENDORS if stats[v]["duplicates"]}


def start_cluster(processes: Processes, tmp_path: Path, *, replicas: int, schema: str, prefix: str,
                  timing: dict[str, float], polling: dict[str, float], lease_s: float,
                  public: int | None = None, own_homes: bool = False, max_claimed: int | None = None,
                  redis_url: str | None = REDIS_URL, adoption_window_s: float = 30) -> Cluster:
    """``replicas`` serve processes; vendor callbacks go to replica number ``public`` (a load
    balancer that happens to send them there), or nowhere when None. With ``own_homes`` each
    has a ``REELGATE_HOME`` of its own (``replica-<i>-home``), as replicas on separate hosts do.
    ``redis_url`` None: no shared state (each replica on its own, as while Redis is away)."""
    sandbox_url, _ = processes.start("sandbox", health_path="/_sandbox/stats")
    httpx.post(f"{sandbox_url}/_sandbox/timing", json={v: timing for v in VENDORS}).raise_for_status()
    ports = [free_port() for _ in range(replicas)]
    config = tmp_path / "reelgate.yaml"
    config.write_text(yaml.safe_dump({
        **({"redis_url": redis_url} if redis_url else {}),
        "polling": polling,
        "adoption_window_s": adoption_window_s,
        "providers": {"fal": {"options": {"webhook_jwks_url": f"{sandbox_url}/fal/.well-known/jwks.json"}}},
        "storage": {"kind": "local", "path": str(tmp_path / "shared-videos")},  # one directory for all
        "service": {"store_url": PG_DSN, "store_schema": schema, "leases": True, "lease_s": lease_s,
                    **({"max_claimed_jobs": max_claimed} if max_claimed is not None else {}),
                    **({"public_url": f"http://127.0.0.1:{ports[public]}"} if public is not None else {})},
    }))
    processes.env.update({"REELGATE_WEBHOOK_SECRET": WEBHOOK_SECRET, "REELGATE_REDIS_PREFIX": prefix})
    # the key lives in the store the replicas share (PostgreSQL), made as an operator would
    auth = {"Authorization": f"Bearer {processes.create_key('app', '--config', str(config))}"}
    cluster = Cluster(processes, sandbox_url, config, auth)
    for i, port in enumerate(ports):  # side by side: each takes seconds to import on a busy machine
        if own_homes:  # read by ``spawn`` as the process starts
            processes.env["REELGATE_HOME"] = str(tmp_path / f"replica-{i}-home")
        url, proc = processes.spawn("serve", "--config", str(config), "--sandbox-url", sandbox_url,
                                    "--replica-id", f"replica-{i}", "--log-level", "warning", port=port,
                                    log=tmp_path / f"replica-{i}.log")
        cluster.urls.append(url)
        cluster.procs.append(proc)
    for url, proc in zip(cluster.urls, cluster.procs, strict=True):
        wait_until_up(url, proc, log=processes.log_of(proc))
    return cluster


def wait_until(what: str, done: Callable[[], bool], timeout_s: float = 60.0, every_s: float = 0.2,
               left: object = None) -> None:
    """Until ``done()``; fails naming ``what`` (and ``left``, what was still missing)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, (what, left)
        time.sleep(every_s)
