"""What every ``ResultStorage`` promises, written once and run against each backend
(test_local.py, test_s3.py); each file keeps its own fixture and backend-specific checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.storage import ObjectNotFound, ResultStorage


async def read_bytes(storage: ResultStorage, uri: str) -> bytes:
    return b"".join([chunk async for chunk in storage.open(uri)])


async def check_exists_and_delete(storage: ResultStorage) -> None:
    """``exists`` and ``delete`` answer whether there was an object; a deleted one cannot be read."""
    stored = await storage.put("a.mp4", b"abc", "video/mp4")
    assert await storage.exists(stored.uri)
    assert await storage.delete(stored.uri) is True
    assert not await storage.exists(stored.uri)
    assert await storage.delete(stored.uri) is False
    with pytest.raises(ObjectNotFound):
        await read_bytes(storage, stored.uri)


async def check_a_failing_producer_leaves_the_previous_object(storage: ResultStorage) -> None:
    """A put whose source fails half way leaves the object stored before it whole."""
    first = await storage.put("a.mp4", b"complete video", "video/mp4")

    async def cut_off() -> AsyncIterator[bytes]:
        yield b"half a vid"
        raise ConnectionResetError("vendor went away")

    with pytest.raises(ConnectionResetError):
        await storage.put("a.mp4", cut_off(), "video/mp4")
    assert await read_bytes(storage, first.uri) == b"complete video"
