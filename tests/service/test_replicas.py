"""Three ``reelgate serve`` replicas as separate processes on one PostgreSQL, one Redis and
one ``reelgate sandbox``: a few hundred jobs spread across them, some announced to the app
by webhook, fal's calling back through the one replica the "load balancer" sends vendor
callbacks to. One replica is SIGKILLed mid-flight. Every job still ends, each paid once at
the emulators, each terminal state reaches the app once (verified by ``standardwebhooks``,
as any app would), and each video is served by a surviving replica from the shared directory.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

from gateway.emulation.sandbox import BackgroundServer
from tests.service.conftest import WEBHOOK_SECRET, Processes
from tests.service.replicas import TERMINAL, VENDORS, Receiver, start_cluster, wait_until
from tests.shared.conftest import prefix  # noqa: F401 (a fixture: a Redis prefix of this test's own)
from tests.store.conftest import pg_schema  # noqa: F401 (a fixture: a schema of this test's own)

JOBS = 240
#: short, so the dead replica's jobs move on within seconds; long enough for a replica on a
#: 2-core machine shared with other work to renew in time
LEASE_S = 15.0


def test_three_replicas_one_killed_every_job_ends_paid_once_announced_once_and_served(
        pg_schema: str, prefix: str, processes: Processes, tmp_path: Path) -> None:  # noqa: F811
    # (the schema and prefix fixtures come first: they are dropped after the processes stop)
    # fal calls back to replica 2 (which survives) for jobs that replicas 0 and 1 follow
    cluster = start_cluster(processes, tmp_path, replicas=3, schema=pg_schema, prefix=prefix,
                            timing={"queue_s": 1.0, "run_s": 20.0}, polling={"initial_s": 1.0, "max_s": 2.0},
                            lease_s=LEASE_S, public=2)
    app = Receiver()
    with cluster.http, BackgroundServer(app.app) as receiver, ThreadPoolExecutor(8) as pool:
        hook = f"{receiver.url}/hook"

        def submit(i: int) -> tuple[int, str]:
            body: dict[str, object] = {"prompt": f"a fox {i}", "providers": [VENDORS[i % 3]]}
            if i % 2 == 0:
                body["webhook_url"] = hook
            response = cluster.http.post(f"{cluster.urls[i % 3]}/v1/jobs", json=body, headers=cluster.auth)
            return i, response.raise_for_status().json()["id"]

        # replica 0's share last, so its jobs are still running at the vendors when it dies
        ids = dict(pool.map(submit, sorted(range(JOBS), key=lambda i: i % 3 == 0)))
        announced = {ids[i] for i in range(0, JOBS, 2)}
        doomed = {ids[i] for i in range(0, JOBS, 3)}  # replica 0's

        def doomed_jobs() -> list[dict[str, Any]]:
            return [j for i, j in cluster.jobs(cluster.urls[1]).items() if i in doomed]

        wait_until("replica 0's jobs reached their vendors", lambda: all(
            j["status"] in TERMINAL or j["attempts"] and j["attempts"][-1]["vendor_job_id"]
            for j in doomed_jobs()), 60, 1)
        before = [j["status"] for j in doomed_jobs()]
        assert sum(s not in TERMINAL for s in before) >= 10, before  # killed with jobs mid-flight
        processes.kill(cluster.procs[0])
        killed = time.monotonic()

        left: list[tuple[str, str]] = []

        def settled() -> bool:  # terminal, and a video kept where one was made
            left[:] = [(i, j["status"]) for i, j in cluster.jobs(cluster.urls[1]).items() if j["status"] not in TERMINAL
                       or (j["status"] == "succeeded" and not (j["output"] or {}).get("uri"))]
            return not left

        wait_until("every job reached a terminal state, its video kept", settled, 120, 1, left)
        wait_until("every terminal state was announced",
                   lambda: len({h["webhook-id"] for h, _ in app.received()}) >= len(announced), 60)
        # the job's own record of its message is written just after the app's answer
        unrecorded: list[tuple[str, object]] = []

        def recorded() -> bool:
            unrecorded[:] = [(i, j["webhooks"]) for i, j in cluster.jobs(cluster.urls[2]).items()
                             if any(w["delivered"] for w in j["webhooks"]) != (i in announced)]
            return not unrecorded

        wait_until("every delivery recorded on its job", recorded, 60, 1, unrecorded)
        jobs = list(cluster.jobs(cluster.urls[2]).values())
        survivors = cluster.urls[1:]
        videos = list(pool.map(lambda n: cluster.http.get(f"{survivors[n % 2]}/v1/videos/{ids[n]}/content",
                                                          headers=cluster.auth), range(JOBS)))
        accepted, duplicates = cluster.accepted(), cluster.duplicates()

    assert len(jobs) == JOBS
    assert Counter(j["status"] for j in jobs) == {"succeeded": JOBS}, [
        (j["id"], j["error"]) for j in jobs if j["status"] != "succeeded"]
    assert all(len(j["attempts"]) == 1 for j in jobs)  # never resubmitted after the kill
    # exactly one accepted submission per job at the emulators (else: which job, from where, when)
    assert accepted == JOBS and not duplicates, (accepted, duplicates, {i: ids[i] for i in range(JOBS)})

    verifier = Webhook(WEBHOOK_SECRET)
    posts = app.received()
    by_id = Counter(h["webhook-id"] for h, _ in posts)
    # each message once; twice only when the killed replica had sent it, unrecorded (at least once)
    first = {h["webhook-id"]: t for (h, _), t in reversed(list(zip(posts, app.times, strict=True)))}
    assert all(n == 1 or (n == 2 and first[m] <= killed) for m, n in by_id.items()), [
        (m, n, first[m] - killed) for m, n in by_id.items() if n > 1]
    events = {headers["webhook-id"]: verifier.verify(body, headers) for headers, body in posts}
    assert Counter(e["data"]["id"] for e in events.values()) == Counter(announced)  # one per terminal state
    assert {e["type"] for e in events.values()} == {"video.completed"}
    assert all(e["data"]["output"]["uri"] for e in events.values())  # announced once the video was kept
    events_of = {e["data"]["id"]: m for m, e in events.items()}

    by_id_job = {j["id"]: j for j in jobs}
    assert [v.status_code for v in videos] == [200] * JOBS, [
        (n, v.text, by_id_job[ids[n]]["notes"], by_id_job[ids[n]]["output"]) for n, v in enumerate(videos)
        if v.status_code != 200]
    assert all(v.content[4:8] == b"ftyp" for v in videos)
    assert all([w["message_id"] for w in j["webhooks"]] == ([events_of[j["id"]]] if j["id"] in announced else [])
               for j in jobs)
    assert not any("emulated-" in json.dumps(j) for j in jobs)
