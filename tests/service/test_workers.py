"""``reelgate serve --workers 2`` on SQLite (no Redis) against one ``reelgate sandbox``:
jobs spread over both workers through the one port, one worker SIGKILLed with jobs
mid-flight. The supervisor starts a worker in its place under the same replica id, every
job still succeeds, each paid once at the emulators, each announced to the app once, and
each video downloads through the port."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml
from standardwebhooks.webhooks import Webhook

from gateway.emulation.sandbox import BackgroundServer
from tests.service.conftest import WEBHOOK_SECRET, Processes, stored_at_vendor, wait_until_up
from tests.service.replicas import TERMINAL, VENDORS, Receiver, wait_until

JOBS = 48


def fresh() -> httpx.Client:
    """A new connection per request: the kernel hands each to either worker."""
    return httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def workers_of(url: str, http: httpx.Client, count: int = 2) -> dict[str, int]:
    """Replica id -> pid of each worker, asking /readyz until ``count`` have answered."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(seen) < count:
        assert time.monotonic() < deadline, seen
        replica = http.get(f"{url}/readyz").raise_for_status().json()["replica"]
        assert replica["store"] == "sqlite" and replica["leases"] and replica["workers"] == count
        seen[replica["id"]] = replica["pid"]
    return seen


def serve_two_workers(processes: Processes, tmp_path: Path, run_s: float
                      ) -> tuple[str, subprocess.Popen[bytes], dict[str, str], str]:
    """``reelgate serve --workers 2 --replica-id box`` against a new sandbox whose jobs run
    ``run_s``, answering: its URL, the supervisor, a caller key's headers, the sandbox's URL.
    SQLite under REELGATE_HOME, videos kept there too: one machine, one store, no Redis."""
    sandbox_url, _ = processes.start("sandbox", health_path="/_sandbox/stats")
    httpx.post(f"{sandbox_url}/_sandbox/timing", json={v: {"queue_s": 1.0, "run_s": run_s} for v in VENDORS}
               ).raise_for_status()
    config = tmp_path / "reelgate.yaml"
    config.write_text(yaml.safe_dump({"polling": {"initial_s": 1.0, "max_s": 2.0},
                                      "service": {"workers": 2, "lease_s": 15}}))
    processes.env.pop("REELGATE_REDIS_URL", None)
    auth = {"Authorization": f"Bearer {processes.create_key('app', '--config', str(config))}"}
    url, supervisor = processes.spawn("serve", "--config", str(config), "--sandbox-url", sandbox_url,
                                      "--replica-id", "box", "--log-level", "info", log=tmp_path / "serve.log")
    wait_until_up(url, supervisor, log=processes.log_of(supervisor))
    return url, supervisor, auth, sandbox_url


def test_two_workers_one_killed_every_job_ends_paid_once_announced_once_and_served(
        processes: Processes, tmp_path: Path) -> None:
    processes.env["REELGATE_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    url, supervisor, auth, sandbox_url = serve_two_workers(processes, tmp_path, run_s=12.0)
    app = Receiver()
    with fresh() as http, BackgroundServer(app.app) as receiver, ThreadPoolExecutor(8) as pool:
        workers = workers_of(url, http)
        assert set(workers) == {"box-w0", "box-w1"}

        def submit(i: int) -> str:
            body: dict[str, object] = {"prompt": f"a fox {i}", "providers": [VENDORS[i % 3]]}
            if i % 2 == 0:
                body["webhook_url"] = f"{receiver.url}/hook"
            return str(http.post(f"{url}/v1/jobs", json=body, headers=auth).raise_for_status().json()["id"])

        ids = list(pool.map(submit, range(JOBS)))
        announced = set(ids[::2])

        def jobs() -> dict[str, dict[str, Any]]:
            page = http.get(f"{url}/v1/jobs", params={"limit": 100}, headers=auth).raise_for_status().json()
            return {j["id"]: j for j in page["data"]}

        wait_until("every job reached its vendor, as the store says",
                   lambda: stored_at_vendor(processes.home, ids), 60, 0.5)
        with sqlite3.connect(processes.home / "reelgate.db") as db:  # who follows what, as the store says
            held = Counter(owner for owner, in db.execute(
                "SELECT lease_owner FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')"))
        assert held["box-w1"] >= 5 and held["box-w0"] >= 5, held  # both followed jobs; w1 dies mid-flight
        os.kill(workers["box-w1"], signal.SIGKILL)
        killed = time.monotonic()

        left: list[tuple[str, str]] = []

        def settled() -> bool:  # terminal, and a video kept where one was made
            left[:] = [(i, j["status"]) for i, j in jobs().items() if j["status"] not in TERMINAL
                       or (j["status"] == "succeeded" and not (j["output"] or {}).get("uri"))]
            return not left

        wait_until("every job reached a terminal state, its video kept", settled, 120, 1, left)
        wait_until("every terminal state was announced",
                   lambda: len({h["webhook-id"] for h, _ in app.received()}) >= len(announced), 60)
        again = workers_of(url, http)
        final = list(jobs().values())
        videos = list(pool.map(lambda i: http.get(f"{url}/v1/videos/{i}/content", headers=auth), ids))
        accepted = http.get(f"{sandbox_url}/_sandbox/stats").raise_for_status().json()

    # the supervisor put a new process in the dead one's place, under its replica id
    assert again["box-w0"] == workers["box-w0"] and again["box-w1"] != workers["box-w1"]
    assert supervisor.poll() is None
    assert len(final) == JOBS
    assert Counter(j["status"] for j in final) == {"succeeded": JOBS}, [
        (j["id"], j["error"]) for j in final if j["status"] != "succeeded"]
    assert all(len(j["attempts"]) == 1 for j in final)  # never resubmitted after the kill
    assert sum(int(accepted[v]["accepted_submissions"]) for v in VENDORS) == JOBS  # paid once each
    assert [v.status_code for v in videos] == [200] * JOBS, [v.text for v in videos if v.status_code != 200]
    assert all(v.content[4:8] == b"ftyp" for v in videos)

    posts = app.received()
    # each message once; twice only when the killed worker had sent it, unrecorded (at least once)
    first = {h["webhook-id"]: t for (h, _), t in reversed(list(zip(posts, app.times, strict=True)))}
    assert all(n == 1 or (n == 2 and first[m] <= killed) for m, n in Counter(h["webhook-id"] for h, _ in posts).items())
    events = {headers["webhook-id"]: Webhook(WEBHOOK_SECRET).verify(body, headers) for headers, body in posts}
    assert Counter(e["data"]["id"] for e in events.values()) == Counter(announced)  # one per terminal state
    assert all(e["type"] == "video.completed" and e["data"]["output"]["uri"] for e in events.values())

    # SIGTERM to the supervisor stops every worker gracefully, then the supervisor itself
    supervisor.terminate()
    assert supervisor.wait(timeout=60) == 0
    assert not [pid for pid in again.values() if Path(f"/proc/{pid}").exists()], again


def test_a_worker_that_cannot_start_stops_them_all_with_exit_3(processes: Processes, tmp_path: Path) -> None:
    config = tmp_path / "reelgate.yaml"
    config.write_text(yaml.safe_dump({"service": {"workers": 2}}))
    processes.env.pop("REELGATE_REDIS_URL", None)
    (processes.home / "keys.db").mkdir(parents=True)  # the key store no worker can open: each start fails
    _, supervisor = processes.spawn("serve", "--config", str(config), "--sandbox", log=tmp_path / "serve.log")
    assert supervisor.wait(timeout=120) == 3
    assert "a worker failed to start" in (tmp_path / "serve.log").read_text()


def test_a_store_that_cannot_be_opened_is_one_line_before_any_worker(processes: Processes, tmp_path: Path) -> None:
    config = tmp_path / "reelgate.yaml"
    config.write_text(yaml.safe_dump({"service": {"workers": 2, "store_url": "sqlite:////proc/no/reelgate.db"}}))
    processes.env.pop("REELGATE_REDIS_URL", None)
    _, supervisor = processes.spawn("serve", "--config", str(config), "--sandbox", log=tmp_path / "serve.log")
    assert supervisor.wait(timeout=120) == 3
    log = (tmp_path / "serve.log").read_text()
    assert "service.store_url: the job store (SQLite) cannot be opened at //proc/no/reelgate.db: No such file" in log
    assert "Traceback" not in log and "worker" not in log
