"""A finished job names its kept video only once the video is on disk for good: the file
fsynced, renamed, and its directory fsynced, all before the save that records its URI."""

from __future__ import annotations

from gateway.store.sqlite import SqliteJobStore
from tests.service.conftest import wait_kept
from tests.support import record_disk_steps


def test_the_kept_video_is_synced_before_the_job_record_names_it(service, monkeypatch):
    steps = record_disk_steps(monkeypatch)
    real_save = SqliteJobStore.save

    async def save(self, job, **kwargs):
        if job.output is not None and job.output.uri:
            steps.append(("save", job.output.uri))
        await real_save(self, job, **kwargs)

    monkeypatch.setattr(SqliteJobStore, "save", save)
    job_id = service.client.post("/v1/jobs", headers=service.auth, json={"prompt": "a fox"}).json()["id"]
    wait_kept(service, job_id)
    video = service.home / "videos" / "jobs" / f"{job_id}.mp4"
    file_synced = next(i for i, (kind, path) in enumerate(steps)
                       if kind == "fsync" and path.endswith(f"-{job_id}.mp4"))
    renamed = steps.index(("rename", str(video)))
    dir_synced = next(i for i, step in enumerate(steps) if i > renamed and step == ("fsync", str(video.parent)))
    saved = steps.index(("save", video.as_uri()))
    assert file_synced < renamed < dir_synced < saved
