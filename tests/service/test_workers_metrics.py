"""``reelgate serve --workers 2``: ``/metrics`` answers for the whole host, whichever
worker takes the scrape (prometheus-client's multi-process mode, gateway/server/metrics.py).
Jobs go in through many connections, so both workers take some; every scrape counts every
``POST /v1/videos``; the jobs-in-flight gauge is the host's sum, and stays so after one
worker is SIGKILLed and replaced (its live gauges forgotten, its counts kept); the
metrics folder is private and gone when the supervisor exits."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.server.metrics import MULTIPROC_DIR_ENV
from tests.service.conftest import Processes
from tests.service.replicas import VENDORS, wait_until
from tests.service.test_workers import fresh, serve_two_workers, workers_of

JOBS = 24
SCRAPES = 8


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> (labels, value) of each sample, through a new connection (either worker)."""
    with fresh() as http:
        text = http.get(f"{url}/metrics").raise_for_status().text
    got: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            got.setdefault(sample.name, []).append((sample.labels, sample.value))
    return got


def posts(got: dict[str, list[tuple[dict[str, str], float]]]) -> float:
    """``POST /v1/videos`` requests counted, whatever their status."""
    return sum(v for labels, v in got.get("reelgate_http_requests_total", [])
               if labels["method"] == "POST" and labels["route"] == "/v1/videos")


def one(got: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    """The host's one value of a gauge (no per-process samples)."""
    [(labels, value)] = got[name]
    assert labels == {}, labels
    return value


def multiproc_dir(pid: int) -> Path:
    """The metrics folder a worker was started with (from its environment)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    [folder] = [e.split(b"=", 1)[1] for e in environ if e.startswith(f"{MULTIPROC_DIR_ENV}=".encode())]
    return Path(folder.decode())


def test_two_workers_metrics_count_every_request_and_sum_the_hosts_jobs(processes: Processes, tmp_path: Path) -> None:
    # the jobs stay running at the emulators for the whole test: in flight at both workers
    url, supervisor, auth, _ = serve_two_workers(processes, tmp_path, run_s=600.0)
    with fresh() as http, ThreadPoolExecutor(8) as pool:
        workers = workers_of(url, http)
        folder = multiproc_dir(workers["box-w0"])
        assert folder == multiproc_dir(workers["box-w1"])
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(folder.parent.stat().st_mode) == 0o700

        def submit(i: int) -> str:
            with fresh() as each:  # a connection per job: the kernel hands each to either worker
                body = {"prompt": f"a fox {i}", "providers": [VENDORS[i % 3]]}
                return str(each.post(f"{url}/v1/videos", json=body, headers=auth).raise_for_status().json()["id"])

        assert len(set(pool.map(submit, range(JOBS)))) == JOBS
        with sqlite3.connect(processes.home / "reelgate.db") as db:  # each worker took some
            held = Counter(owner for owner, in db.execute("SELECT lease_owner FROM jobs"))
        assert held["box-w0"] > 0 and held["box-w1"] > 0 and sum(held.values()) == JOBS, held

        # the counter is bumped once the answer is sent: wait for the last, then every scrape agrees
        wait_until("every POST counted", lambda: posts(scrape(url)) == JOBS, 10)
        wait_until("both workers' jobs in flight summed",
                   lambda: one(scrape(url), "reelgate_jobs_in_flight") == JOBS, 15)
        for _ in range(SCRAPES):
            got = scrape(url)
            assert posts(got) == JOBS
            assert one(got, "reelgate_jobs_in_flight") == JOBS
            assert one(got, "reelgate_shared_state_up") == 0  # no Redis: every worker on local state

        os.kill(workers["box-w1"], signal.SIGKILL)
        wait_until("the supervisor replaced the killed worker",
                   lambda: workers_of(url, http).get("box-w1") not in (None, workers["box-w1"]), 90, 0.5)
        # the new w1 claims its predecessor's jobs; the dead one's gauge no longer counts them
        wait_until("the host's jobs in flight, counted once",
                   lambda: one(scrape(url), "reelgate_jobs_in_flight") == JOBS
                   and not list(folder.glob(f"gauge_live*_{workers['box-w1']}.db")), 60, 0.5)
        for _ in range(SCRAPES):
            got = scrape(url)
            assert posts(got) == JOBS  # the dead worker's counts stay
            assert one(got, "reelgate_jobs_in_flight") == JOBS

    supervisor.terminate()
    assert supervisor.wait(timeout=60) == 0
    assert not folder.exists()
