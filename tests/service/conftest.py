"""Fixtures that run ``reelgate serve`` (and ``reelgate sandbox``) as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.conftest import keep_log, log_tail
from tests.store.conftest import PG_DSN
from tests.support import free_port

KEY_VARS = ("FAL_KEY", "APIFRAME_API_KEY", "RAILWAIL_API_KEY")
#: the signing secret of the in-process service's outbound webhooks (a test value)
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def wait_until_up(url: str, proc: subprocess.Popen, path: str = "/healthz", log: Path | None = None) -> None:
    """Until ``path`` answers 2xx while ``proc`` is alive: any other answer is not yet this
    process's (a 404 is some other server on the port). Fails with ``log``'s last lines."""
    deadline = time.monotonic() + 60  # imports alone take seconds on a busy 2-core machine
    answer = "nothing"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            status = httpx.get(url + path, timeout=1).status_code
        except httpx.TransportError as exc:
            answer = type(exc).__name__
        else:
            if 200 <= status < 300 and proc.poll() is None:
                return
            answer = f"HTTP {status}"
        time.sleep(0.05)
    state = "did not come up" if proc.poll() is None else f"exited with {proc.returncode}"
    tail = f"; last lines of {log}:\n{log_tail(log)}" if log is not None else ""
    raise AssertionError(f"{url}: the process {state} (last answer to {path}: {answer}){tail}")


def stored_at_vendor(home: Path, ids: Collection[str]) -> bool:
    """Every one of ``ids`` has its vendor job in the SQLite store under ``home``. What the API
    shows is not enough before a kill: a process answers with its own copy of a job it
    follows, whose vendor id is set a moment before it is stored; killed in that moment, the
    submit is rightly taken as in flight (and, where the vendor cannot be asked, failed)."""
    with contextlib.closing(sqlite3.connect(home / "reelgate.db")) as db:
        docs = {i: json.loads(doc) for i, doc in db.execute("SELECT id, doc FROM jobs")}
    return all(i in docs and docs[i]["attempts"] and docs[i]["attempts"][-1]["vendor_job"] for i in ids)


@dataclass
class Processes:
    home: Path
    env: dict[str, str]
    #: where each process's log goes unless ``log`` is given (the test's tmp_path)
    logs: Path
    #: the test: a failure shows the last lines of every log (``keep_log``)
    node: pytest.Item
    procs: list[subprocess.Popen] = field(default_factory=list)
    _logs: dict[int, Path] = field(default_factory=dict)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                              env=self.env, timeout=60)

    def create_key(self, name: str, *options: str) -> str:
        done = self.cli("keys", "create", "--name", name, *options)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def start(self, *args: str, health_path: str = "/healthz", port: int | None = None,
              log: Path | None = None) -> tuple[str, subprocess.Popen]:
        """Start a CLI process and wait until it answers; its stderr goes to ``log`` if given,
        else to ``<command>-<n>.log`` in ``logs`` (a failing test shows their last lines)."""
        url, proc = self.spawn(*args, port=port, log=log)
        wait_until_up(url, proc, health_path, self.log_of(proc))
        return url, proc

    def spawn(self, *args: str, port: int | None = None, log: Path | None = None) -> tuple[str, subprocess.Popen]:
        """``start`` without waiting: several processes start side by side. A ``port`` given
        (a restart on the old one) is held again first; a failure to is the server's to report."""
        if port is None:
            port = free_port()
        else:
            with contextlib.suppress(OSError):
                free_port(port)
        command = [sys.executable, "-m", "gateway.cli", *args, "--port", str(port)]
        log = log or self.logs / f"{args[0]}-{len(self.procs)}.log"
        keep_log(self.node, log)
        with log.open("ab") as stderr:  # the child holds its own copy
            proc = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL, stderr=stderr)
        self.procs.append(proc)
        self._logs[proc.pid] = log
        return f"http://127.0.0.1:{port}", proc

    def log_of(self, proc: subprocess.Popen) -> Path:
        return self._logs[proc.pid]

    def kill(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def processes(tmp_path, request) -> Iterator[Processes]:
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    env["REELGATE_HOME"] = str(tmp_path / "home")
    env.pop("REELGATE_CONFIG", None)
    p = Processes(tmp_path / "home", env, tmp_path, request.node)
    yield p
    for proc in p.procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class InProcess:
    client: object  # starlette TestClient
    auth: dict[str, str]
    home: Path


def wait_kept(service: InProcess, job_id: str, timeout_s: float = 20.0) -> dict:
    """The job's record (``/v1/jobs/{id}``) once its video is kept (it has a checksum)."""
    deadline = time.monotonic() + timeout_s
    while not (job := service.client.get(f"/v1/jobs/{job_id}", headers=service.auth).json())["output"] \
            or not job["output"]["sha256"]:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


@pytest.fixture
def service(tmp_path) -> Iterator[InProcess]:
    """The service app in this process (TestClient), on the sandbox, with one caller key."""
    from starlette.testclient import TestClient

    from gateway.config import PollingConfig, Settings
    from gateway.emulation.base import Timing
    from gateway.emulation.sandbox import BackgroundServer, Sandbox
    from gateway.keys import KeyStore
    from gateway.plugins import discover
    from gateway.server import create_app
    from gateway.server.service import Service

    home = tmp_path / "home"
    env = {"REELGATE_HOME": str(home), "REELGATE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    settings = Settings(polling=PollingConfig(initial_s=0.05, max_s=0.2))
    sandbox = Sandbox.from_providers(discover().providers, timing=Timing(queue_s=0.1, run_s=0.3))
    with BackgroundServer(sandbox.app) as emulators:
        app = create_app(lambda: Service.start(settings, sandbox_url=emulators.url, env=env))
        home.mkdir(parents=True)
        _, key = KeyStore(home / "keys.db").create("tests")
        with TestClient(app, raise_server_exceptions=False) as client:
            yield InProcess(client, {"Authorization": f"Bearer {key}"}, home)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """The DSN of a new, empty PostgreSQL database, for ``reelgate`` processes (which use the
    default schema), dropped afterwards. Fails, never skips, when PostgreSQL does not answer."""
    name = f"reelgate_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield PG_DSN.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
