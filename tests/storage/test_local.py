"""LocalStorage: round trips, atomic writes, the size cap and path-traversal defences."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.storage import (
    InvalidKey,
    LocalStorage,
    ObjectTooLarge,
    StorageConfig,
    build_storage,
    default_videos_dir,
)
from gateway.storage.local import READ_CHUNK_BYTES
from tests.storage.contract import check_a_failing_producer_leaves_the_previous_object, check_exists_and_delete

VIDEO = b"\x00\x00\x00\x18ftypmp42" + os.urandom(3 * READ_CHUNK_BYTES // 2)


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def read_all(storage: LocalStorage, uri: str) -> list[bytes]:
    return [chunk async for chunk in storage.open(uri)]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "videos")


async def test_put_streams_to_a_file_and_open_streams_it_back(storage: LocalStorage) -> None:
    stored = await storage.put("jobs/job_1.mp4", chunks_of(VIDEO), "video/mp4")
    assert stored.size_bytes == len(VIDEO)
    assert stored.sha256 == hashlib.sha256(VIDEO).hexdigest()
    assert stored.content_type == "video/mp4"
    assert stored.uri == (storage.root / "jobs" / "job_1.mp4").as_uri() == storage.uri_for("jobs/job_1.mp4")
    chunks = await read_all(storage, stored.uri)
    assert len(chunks) == 2 and b"".join(chunks) == VIDEO  # streamed, not read whole
    assert files_under(storage.root) == ["jobs/job_1.mp4"]


async def test_put_accepts_plain_bytes(storage: LocalStorage) -> None:
    stored = await storage.put("a.mp4", b"abc", "video/mp4")
    assert (stored.size_bytes, b"".join(await read_all(storage, stored.uri))) == (3, b"abc")


async def test_exists_and_delete(storage: LocalStorage) -> None:
    await check_exists_and_delete(storage)


async def test_put_replaces_an_existing_object(storage: LocalStorage) -> None:
    await storage.put("a.mp4", b"old", "video/mp4")
    stored = await storage.put("a.mp4", b"newer", "video/mp4")
    assert b"".join(await read_all(storage, stored.uri)) == b"newer"


async def test_over_the_cap_nothing_is_stored(storage: LocalStorage) -> None:
    with pytest.raises(ObjectTooLarge):
        await storage.put("a.mp4", chunks_of(VIDEO), "video/mp4", max_bytes=len(VIDEO) - 1)
    assert files_under(storage.root) == []  # no temp file left either


async def test_a_failing_producer_leaves_the_previous_object_intact(storage: LocalStorage) -> None:
    await check_a_failing_producer_leaves_the_previous_object(storage)
    assert files_under(storage.root) == ["a.mp4"]  # no temporary file left beside it


@pytest.mark.parametrize("key", [
    "../escape.mp4", "a/../../escape.mp4", "/etc/passwd", "a//b.mp4", ".hidden", "a/./b.mp4",
    "a\\..\\b.mp4", "nul\x00.mp4", "", "a/", "sp ace.mp4", "%2e%2e/x.mp4",
])
async def test_traversal_keys_are_rejected(storage: LocalStorage, tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidKey):
        await storage.put(key, b"x", "video/mp4")
    assert files_under(tmp_path) == []


async def test_a_symlink_inside_the_root_cannot_lead_out(storage: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    storage.root.mkdir(parents=True)
    (storage.root / "link").symlink_to(outside)
    with pytest.raises(InvalidKey):
        await storage.put("link/x.mp4", b"x", "video/mp4")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("uri", [
    "file:///etc/passwd", "s3://bucket/a.mp4", "https://cdn.example/a.mp4", "file://otherhost/videos/a.mp4",
])
async def test_uris_outside_the_storage_are_rejected(storage: LocalStorage, uri: str) -> None:
    with pytest.raises(InvalidKey):
        await read_all(storage, uri)
    with pytest.raises(InvalidKey):
        await storage.delete(uri)


async def test_a_uri_that_climbs_out_of_the_root_is_rejected(storage: LocalStorage) -> None:
    with pytest.raises(InvalidKey):
        await storage.exists(storage.root.as_uri() + "/../secret.mp4")


def test_default_directory_is_under_reelgate_home(tmp_path: Path) -> None:
    assert default_videos_dir({"REELGATE_HOME": str(tmp_path)}) == tmp_path / "videos"
    assert default_videos_dir({}) == Path("~/.reelgate/videos").expanduser()


def test_build_storage_makes_a_local_directory_storage(tmp_path: Path) -> None:
    built = build_storage(StorageConfig(), {"REELGATE_HOME": str(tmp_path)})
    assert isinstance(built, LocalStorage) and built.root == (tmp_path / "videos").resolve()
    chosen = build_storage(StorageConfig(path=str(tmp_path / "elsewhere")), {})
    assert isinstance(chosen, LocalStorage) and chosen.root == (tmp_path / "elsewhere").resolve()


async def test_a_write_cancelled_while_its_file_is_being_opened_leaves_nothing_open(tmp_path, monkeypatch):
    """The open runs in a thread that a cancel cannot stop: the file it opens is closed and
    removed, not left to the garbage collector (a ResourceWarning, an error in this suite),
    and the write it was part of (open, write, fsync, name in one call) is not named."""
    import gc
    import threading

    from gateway.storage import atomic_file as local

    opening, release = threading.Event(), threading.Event()
    real_open = local._TempFile._open

    def slow_open(self):
        opening.set()
        release.wait(30)
        return real_open(self)

    monkeypatch.setattr(local._TempFile, "_open", slow_open)

    async def chunks():
        yield b"never written"

    target = tmp_path / "kept" / "video.mp4"
    task = asyncio.ensure_future(local.write_file(target, chunks(), private=True))
    await asyncio.to_thread(opening.wait, 30)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    gc.collect()
    assert list(target.parent.iterdir()) == []


async def test_a_puts_uri_is_its_paths_uri_under_a_root_that_needs_quoting(tmp_path: Path) -> None:
    """The URI is the root's (quoted once) plus the key, which needs no quoting: the same
    string as ``Path.as_uri()`` of the file, for any root."""
    storage = LocalStorage(tmp_path / "vidéos 100%#?")
    for key in ("jobs/job_1.mp4", "a.mp4", "a/b-c/d_e.f.mp4"):
        stored = await storage.put(key, b"x", "video/mp4")
        assert stored.uri == storage.root.joinpath(*key.split("/")).as_uri() == storage.uri_for(key)
        assert b"".join(await read_all(storage, stored.uri)) == b"x"


@pytest.mark.parametrize("key", ["a.mp4\n", "jobs/a.mp4\n", "a/b/c/d/e/f/g/h/i.mp4", "x" * 201])
async def test_a_trailing_newline_too_many_segments_or_a_long_name_are_rejected(storage: LocalStorage,
                                                                                tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidKey):
        await storage.put(key, b"x", "video/mp4")
    assert files_under(tmp_path) == []
