"""A finished job names its kept video only once the video is on disk for good: the file
fsynced, renamed, and its directory fsynced, all before the save that records its URI."""

from __future__ import annotations

import os
import time

from gateway.store.sqlite import SqliteJobStore


def test_the_kept_video_is_synced_before_the_job_record_names_it(service, monkeypatch):
    steps: list[tuple[str, str]] = []
    real_fsync, real_replace, real_save = os.fsync, os.replace, SqliteJobStore.save

    def fsync(fd: int) -> None:
        real_fsync(fd)
        steps.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def replace(src, dst) -> None:
        real_replace(src, dst)
        steps.append(("rename", str(dst)))

    async def save(self, job, **kwargs):
        if job.output is not None and job.output.uri:
            steps.append(("save", job.output.uri))
        await real_save(self, job, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(SqliteJobStore, "save", save)
    job_id = service.client.post("/v1/jobs", headers=service.auth, json={"prompt": "a fox"}).json()["id"]
    deadline = time.monotonic() + 20
    while not (job := service.client.get(f"/v1/jobs/{job_id}", headers=service.auth).json())["output"] \
            or not job["output"]["sha256"]:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    video = service.home / "videos" / "jobs" / f"{job_id}.mp4"
    file_synced = next(i for i, (kind, path) in enumerate(steps)
                       if kind == "fsync" and path.endswith(f"-{job_id}.mp4"))
    renamed = steps.index(("rename", str(video)))
    dir_synced = next(i for i, step in enumerate(steps) if i > renamed and step == ("fsync", str(video.parent)))
    saved = steps.index(("save", video.as_uri()))
    assert file_synced < renamed < dir_synced < saved
