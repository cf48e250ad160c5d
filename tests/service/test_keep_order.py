"""A finished job names its kept video only once the video is on disk for good: the file
fsynced, named, and its directory fsynced, all before the save that records its URI."""

from __future__ import annotations

from gateway.store.sqlite import SqliteJobStore
from tests.service.conftest import wait_kept
from tests.support import record_disk_steps


def test_the_kept_video_is_synced_before_the_job_record_names_it(service, monkeypatch):
    steps = record_disk_steps(monkeypatch)
    real_save = SqliteJobStore.save

    async def save(self, job, **kwargs):
        if job.output is not None and job.output.uri:
            steps.append(("save", job.output.uri, 0))
        await real_save(self, job, **kwargs)

    monkeypatch.setattr(SqliteJobStore, "save", save)
    job_id = service.client.post("/v1/jobs", headers=service.auth, json={"prompt": "a fox"}).json()["id"]
    wait_kept(service, job_id)
    video = service.home / "videos" / "jobs" / f"{job_id}.mp4"
    inode = video.stat().st_ino
    file_synced = next(i for i, (kind, _, ino) in enumerate(steps) if kind == "fsync" and ino == inode)
    named = next(i for i, (kind, path, _) in enumerate(steps) if kind in ("link", "rename") and path == str(video))
    dir_synced = next(i for i, (kind, path, _) in enumerate(steps)
                      if i > named and (kind, path) == ("fsync", str(video.parent)))
    saved = steps.index(("save", video.as_uri(), 0))
    assert file_synced < named < dir_synced < saved
