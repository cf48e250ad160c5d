"""A replica frozen (SIGSTOP: a VM pause, a process starved of CPU) longer than its lease
while its jobs are being submitted, then thawed (SIGCONT), beside a live replica that takes
its jobs over meanwhile: no job is paid twice, no vendor job is paid and followed by no one.

Frozen right after its creates were answered, the replica leaves jobs in every state of the
submit path: created but not yet tried, an attempt on record whose POST has not left, a POST
sent whose answer has not been read, accepted. The other replica claims them all once their
leases expire and resumes each as a crash resume does (a POST that may have left is adopted
or ends unknown, never resent blindly). Thawed, the frozen replica must not send the POSTs
it had queued (its leases are gone: docs/storage.md, "A submit leaves under a live lease"),
and writes nothing more.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.service.conftest import Processes
from tests.service.replicas import TERMINAL, VENDORS, start_cluster, wait_until
from tests.shared.conftest import prefix  # noqa: F401 (a fixture: a Redis prefix of this test's own)
from tests.store.conftest import pg_schema  # noqa: F401 (a fixture: a schema of this test's own)

JOBS = 36
LEASE_S = 3.0


def test_a_replica_frozen_past_its_leases_mid_submit_pays_nothing_twice_and_leaves_no_job_unfollowed(
        pg_schema: str, prefix: str, processes: Processes, tmp_path: Path) -> None:  # noqa: F811
    cluster = start_cluster(processes, tmp_path, replicas=2, schema=pg_schema, prefix=prefix,
                            timing={"queue_s": 0.5, "run_s": 2.0}, polling={"initial_s": 0.5, "max_s": 1.0},
                            lease_s=LEASE_S, public=1, adoption_window_s=12)
    frozen = cluster.procs[0]
    with cluster.http, ThreadPoolExecutor(12) as pool:
        def submit(i: int) -> str:
            body = {"prompt": f"a fox {i}", "providers": [VENDORS[i % 3]]}
            response = cluster.http.post(f"{cluster.urls[0]}/v1/jobs", json=body, headers=cluster.auth)
            return str(response.raise_for_status().json()["id"])

        try:
            ids = list(pool.map(submit, range(JOBS)))
            os.kill(frozen.pid, signal.SIGSTOP)  # its submits queued, in flight, or answered
            time.sleep(LEASE_S * 2.5)  # its leases expire; the other replica claims the jobs
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        left: list[tuple[str, str]] = []

        def settled() -> bool:
            left[:] = [(i, j["status"]) for i, j in cluster.jobs(cluster.urls[1]).items()
                       if j["status"] not in TERMINAL]
            return not left

        wait_until("every job reached a terminal state", settled, 90, 1, left)
        time.sleep(2)  # a POST the thawed replica still sent would have landed by now
        jobs = cluster.jobs(cluster.urls[1])
        accepted, duplicates = cluster.accepted(), cluster.duplicates()

    assert sorted(jobs) == sorted(ids)
    assert all(len(j["attempts"]) == 1 for j in jobs.values())  # never resubmitted elsewhere
    assert not duplicates, duplicates  # no job paid twice
    # every vendor job made is one a job follows: none paid and left unfollowed
    followed = [j for j in jobs.values() if j["attempts"][0]["vendor_job_id"]]
    assert accepted == len(followed), (accepted, len(followed), {i: (j["status"], j["attempts"][0]["outcome"])
                                                                  for i, j in jobs.items()})
    # a job not succeeded is an attempt whose submit may have left, unadopted: unknown and at
    # risk, never silently failed (nothing was sent for it: the vendor made no job)
    for job in jobs.values():
        assert job["status"] == "succeeded" or job["attempts"][0]["outcome"] == "unknown", job
