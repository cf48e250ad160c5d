"""A sequence across ``reelgate serve`` replicas as processes (one PostgreSQL, one Redis, one
``reelgate sandbox``, a ``REELGATE_HOME`` each): the replica driving a 4-segment extend is
SIGKILLed with segment 2 at its vendor. One survivor claims the parent with its segments,
reuses segment 1, polls segment 2 where it is, makes 3 and 4, and joins them; each segment is
accepted exactly once at the emulators, and the joined video downloads from every survivor."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import av

from gateway.emulation.render import render_mp4
from tests.service.conftest import Processes
from tests.service.replicas import TERMINAL, start_cluster, wait_until
from tests.shared.conftest import prefix  # noqa: F401 (a fixture: a Redis prefix of this test's own)
from tests.store.conftest import pg_schema  # noqa: F401 (a fixture: a schema of this test's own)

#: short, so the dead replica's sequence moves on within seconds
LEASE_S = 6.0


def test_a_sequence_whose_replica_is_killed_finishes_on_a_survivor_each_segment_paid_once(
        pg_schema: str, prefix: str, processes: Processes, tmp_path: Path) -> None:  # noqa: F811
    cluster = start_cluster(processes, tmp_path, replicas=3, schema=pg_schema, prefix=prefix,
                            timing={"queue_s": 0.5, "run_s": 3.0}, polling={"initial_s": 0.2, "max_s": 0.5},
                            lease_s=LEASE_S, own_homes=True, max_claimed=1)
    # (one job per survivor's claim: were segments claimable on their own, the oldest unfinished
    # job (the parent) would go to one survivor and segment 2 to the other)
    with cluster.http as http:
        source = "data:video/mp4;base64," + base64.b64encode(render_mp4(1280, 720, 5)).decode()
        created = http.post(f"{cluster.urls[0]}/v1/jobs", headers=cluster.auth, json={
            "prompt": "a long walk", "resolution": "720p",
            "edit": {"operation": "extend", "source": source, "target_seconds": 25}})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        second = f"{job_id}-s2"

        def at_vendor() -> bool:  # read from the store, at a replica that does not follow it
            segment = http.get(f"{cluster.urls[1]}/v1/jobs/{second}", headers=cluster.auth)
            return segment.status_code == 200 and bool(segment.json()["attempts"]) and bool(
                segment.json()["attempts"][-1]["vendor_job_id"])

        wait_until("segment 2 reached its vendor", at_vendor, 90, 0.05)
        before = cluster.job(cluster.urls[1], second)
        processes.kill(cluster.procs[0])  # segment 1 done, 2 at its vendor, 3 and 4 never created
        assert before["status"] not in TERMINAL, before
        killed = time.monotonic()

        survivors = cluster.urls[1:]
        wait_until("the sequence finished on a survivor",
                   lambda: cluster.job(survivors[0], job_id)["status"] in TERMINAL, 180, 0.5)
        final = cluster.job(survivors[0], job_id)
        assert final["status"] == "succeeded", final["error"]
        taken_over_s = time.monotonic() - killed
        assert cluster.accepted() == 4, taken_over_s  # one per segment: none twice, none lost
        segments = [cluster.job(survivors[1], s["job_id"]) for s in final["segments"]]
        assert [len(s["attempts"]) for s in segments] == [1, 1, 1, 1]
        assert all(s["status"] == "succeeded" for s in segments)
        # never claimed as jobs of their own (to be "finished off": their clips kept apart)
        assert [(s["output"] or {}).get("uri") for s in segments] == [None] * 4
        # segment 2 was polled where it was: the vendor job accepted before the kill
        assert segments[1]["attempts"][0]["vendor_job_id"] == before["attempts"][-1]["vendor_job_id"]
        assert final["cost_usd"] == sum(s["cost_usd"] for s in segments) > 0
        assert len(final["attempts"]) == 4

        for url in survivors:  # kept in the shared directory before it was stored succeeded
            content = http.get(f"{url}/v1/videos/{job_id}/content", headers=cluster.auth)
            assert content.status_code == 200, content.text
            with av.open(io.BytesIO(content.content)) as container:
                assert container.duration is not None and abs(container.duration / av.time_base - 25) <= 0.5
        # the survivor's clips and joined file went once kept; the killed one's stay where it died
        for i in (1, 2):
            assert not (tmp_path / f"replica-{i}-home" / "sequences" / job_id).exists()
