"""Two ``reelgate serve`` processes on one PostgreSQL and one Redis: the same idempotency key
at both at once makes one job, and a vendor callback reaching the replica that does not
follow its job moves that job on at once (relayed over Redis), adoption included; with
Redis down, a callback adopting a lost submit still reaches its attempt (through the store)."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.service.conftest import Processes, free_port
from tests.service.replicas import TERMINAL, start_cluster, wait_until
from tests.shared.conftest import prefix  # noqa: F401 (a fixture: a Redis prefix of this test's own)
from tests.store.conftest import pg_schema  # noqa: F401 (a fixture: a schema of this test's own)

ROUNDS = 50


def test_one_idempotency_key_at_two_replicas_at_once_makes_one_job(
        pg_schema: str, prefix: str, processes: Processes, tmp_path: Path) -> None:  # noqa: F811
    cluster = start_cluster(processes, tmp_path, replicas=2, schema=pg_schema, prefix=prefix,
                            timing={"queue_s": 0.1, "run_s": 0.2}, polling={"initial_s": 0.2, "max_s": 0.5},
                            lease_s=5.0)
    gate = threading.Barrier(2)

    def post(url: str, key: str) -> dict[str, object]:
        gate.wait()  # both requests leave together
        response = cluster.http.post(f"{url}/v1/jobs", json={"prompt": "a fox", "providers": ["fal"]},
                                     headers={**cluster.auth, "Idempotency-Key": key})
        return response.raise_for_status().json()

    ids = []
    with cluster.http, ThreadPoolExecutor(2) as pool:
        for _ in range(ROUNDS):
            key = f"order-{uuid.uuid4().hex}"
            a, b = pool.map(post, cluster.urls, [key, key])
            assert a["id"] == b["id"], (a, b)
            ids.append(a["id"])
        assert len(set(ids)) == ROUNDS
        wait_until("every job ended",
                   lambda: all(j["status"] in TERMINAL for j in cluster.jobs(cluster.urls[0]).values()), 60, 0.5)
        jobs = cluster.jobs(cluster.urls[1])
        assert set(jobs) == set(ids)  # no other job was made
        assert {j["status"] for j in jobs.values()} == {"succeeded"}
        assert cluster.accepted() == ROUNDS  # one vendor submission per key


def test_a_callback_at_the_other_replica_moves_the_job_on_without_waiting_for_a_poll(
        pg_schema: str, prefix: str, processes: Processes, tmp_path: Path) -> None:  # noqa: F811
    # polls 20 s apart: a job done within seconds was moved on by its callback
    cluster = start_cluster(processes, tmp_path, replicas=2, schema=pg_schema, prefix=prefix,
                            timing={"queue_s": 0.2, "run_s": 1.0}, polling={"initial_s": 20.0, "max_s": 20.0},
                            lease_s=10.0, public=1)
    with cluster.http:
        a, b = cluster.urls  # fal calls back to b; a follows the jobs

        def run(body: dict[str, object]) -> tuple[dict[str, object], float]:
            started = time.monotonic()
            job_id = cluster.http.post(f"{a}/v1/jobs", json=body, headers=cluster.auth).raise_for_status().json()["id"]
            wait_until("the job ended", lambda: cluster.job(b, job_id)["status"] in TERMINAL, 60, 0.1)
            return cluster.job(b, job_id), time.monotonic() - started

        job, took = run({"prompt": "a fox", "providers": ["fal"]})
        assert job["status"] == "succeeded" and took < 10, (job["status"], took)

        # fal takes the next job but its answer is lost: only the callback (at b) says which job
        # it made; a, waiting to adopt it, gets it relayed, and polls it (20 s later)
        cluster.http.post(f"{cluster.sandbox_url}/_sandbox/faults", json={"fal": ["drop-after-accept:times=1"]}
                          ).raise_for_status()
        job, took = run({"prompt": "a kite", "providers": ["fal"]})
        accepted = cluster.accepted()
    assert job["status"] == "succeeded", job["error"]
    (attempt,) = job["attempts"]  # adopted, never resent
    assert attempt["vendor_job_id"] and job["at_risk"] == []
    assert accepted == 2


def test_a_lost_submit_answer_is_adopted_through_the_store_while_redis_is_down(
        pg_schema: str, prefix: str, processes: Processes, tmp_path: Path) -> None:  # noqa: F811
    # Redis names a port nobody listens on: no relay reaches a. The callback binds the attempt
    # in the store at b, and a, waiting to adopt, finds the binding there (every 2 s)
    cluster = start_cluster(processes, tmp_path, replicas=2, schema=pg_schema, prefix=prefix,
                            timing={"queue_s": 0.2, "run_s": 1.0}, polling={"initial_s": 0.5, "max_s": 1.0},
                            lease_s=10.0, public=1, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with cluster.http:
        a, b = cluster.urls  # fal calls back to b; a follows the job
        cluster.http.post(f"{cluster.sandbox_url}/_sandbox/faults", json={"fal": ["drop-after-accept:times=1"]}
                          ).raise_for_status()
        started = time.monotonic()
        job_id = cluster.http.post(f"{a}/v1/jobs", json={"prompt": "a kite", "providers": ["fal"]},
                                   headers=cluster.auth).raise_for_status().json()["id"]
        wait_until("the job ended", lambda: cluster.job(b, job_id)["status"] in TERMINAL, 60, 0.1)
        took = time.monotonic() - started
        job, accepted = cluster.job(a, job_id), cluster.accepted()
        ready = cluster.http.get(f"{a}/readyz").json()
    assert ready["shared_state"]["state"] == "local fallback", ready  # Redis really was away
    assert job["status"] == "succeeded", job["error"]
    (attempt,) = job["attempts"]  # adopted, never resent: paid once, for this job
    assert attempt["vendor_job_id"] and job["at_risk"] == []
    assert accepted == 1
    assert took < 20, took  # well inside adoption_window_s (30 s), not at its end
