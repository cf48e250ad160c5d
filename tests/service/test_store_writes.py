"""How many times the service writes a job: each write carries a fact the order guarantees
need (tests/store/test_write_order.py), and every write costs CPU and, on PostgreSQL, a
round trip (bench/store_writes.py). This fails if the count grows back."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

#: created; its attempt before the submit; the vendor job id; the terminal state; the kept video
WRITES_PER_JOB = 5


def test_a_job_is_written_five_times_from_create_to_kept_video(service):
    state = service.client.app.state.service
    store = state.gateway.store
    writes: Counter[str] = Counter()
    create, save = store.create_or_get, store.save

    async def counted_create(job: Any, **kw: Any) -> Any:
        writes[job.id] += 1
        return await create(job, **kw)

    async def counted_save(job: Any, **kw: Any) -> None:
        writes[job.id] += 1
        await save(job, **kw)

    store.create_or_get, store.save = counted_create, counted_save
    job_id = service.client.post("/v1/jobs", headers=service.auth, json={"prompt": "a fox"}).json()["id"]
    deadline = time.monotonic() + 20
    while not (service.client.get(f"/v1/jobs/{job_id}", headers=service.auth).json()["output"] or {}).get("uri"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.2)  # nothing more comes after the kept video
    assert writes == {job_id: WRITES_PER_JOB}
