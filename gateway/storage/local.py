"""Results in a local directory (default ``$REELGATE_HOME/videos``).

Writes go to a hidden temporary file in the target's own directory and are renamed
into place (``os.replace`` is atomic on one filesystem), so a crash or a cap hit
mid-download never leaves a truncated video under a real key. File I/O runs in a
worker thread so a slow disk does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from gateway.home import reelgate_home
from gateway.permissions import open_private, private_dirs
from gateway.storage.base import (
    ChunkDigest,
    Chunks,
    InvalidKey,
    ObjectNotFound,
    ResultStorage,
    StoredObject,
    iter_chunks,
    validate_key,
)

VIDEOS_DIR = "videos"
READ_CHUNK_BYTES = 1024 * 1024
#: network chunks are ~16 KiB and a thread hop per chunk dominated (a 64 MiB mirror
#: over loopback: 40 MiB/s writing each chunk, 150 MiB/s batched), so writes are batched
WRITE_BUFFER_BYTES = 1024 * 1024
_TEMP_PREFIX = ".part-"


def default_videos_dir(env: Mapping[str, str]) -> Path:
    """``$REELGATE_HOME/videos``, with ``REELGATE_HOME`` defaulting to ``~/.reelgate``."""
    return reelgate_home(env) / VIDEOS_DIR


class LocalStorage(ResultStorage):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def uri_for(self, key: str) -> str:
        return self._path_for_key(key).as_uri()

    async def put(self, key: str, chunks: Chunks, content_type: str, *,
                  max_bytes: int | None = None) -> StoredObject:
        target = self._path_for_key(key)
        # a caller's video is for that caller: 0600 from the first byte (the rename keeps it)
        digest = await write_file(target, chunks, max_bytes=max_bytes, private=True)
        return StoredObject(target.as_uri(), digest.size, digest.sha256, content_type)

    async def open(self, uri: str) -> AsyncIterator[bytes]:
        path = self._path_for_uri(uri)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"no stored object at {uri}") from None
        try:
            while chunk := await asyncio.to_thread(handle.read, READ_CHUNK_BYTES):
                yield chunk
        finally:
            handle.close()

    async def exists(self, uri: str) -> bool:
        return await asyncio.to_thread(self._path_for_uri(uri).is_file)

    async def delete(self, uri: str) -> bool:
        path = self._path_for_uri(uri)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True

    # -- keys and URIs -------------------------------------------------------------------------
    def _path_for_key(self, key: str) -> Path:
        return self._inside_root(self.root.joinpath(*validate_key(key).split("/")), key)

    def _path_for_uri(self, uri: str) -> Path:
        parts = urlsplit(uri)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise InvalidKey(f"{uri!r} is not a file:// URI of this storage")
        path = Path(unquote(parts.path))
        try:
            key = path.relative_to(self.root).as_posix()
        except ValueError:
            raise InvalidKey(f"{uri!r} is outside {self.root}") from None
        return self._path_for_key(key)

    def _inside_root(self, path: Path, key: str) -> Path:
        # Segments are plain names, but a symlink planted inside the root could still
        # point out of it; the resolved path must stay under the root.
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise InvalidKey(f"key {key!r} resolves outside {self.root}")
        return path


async def write_file(target: Path, chunks: Chunks, *, max_bytes: int | None = None,
                     private: bool = False) -> ChunkDigest:
    """Write ``chunks`` to ``target`` all-or-nothing (a temporary file renamed into place),
    counted and hashed; ``ObjectTooLarge`` past ``max_bytes`` leaves nothing behind.
    ``private``: missing directories 0700 and the file 0600 whatever the umask (kept videos
    under ``REELGATE_HOME``); otherwise as the umask says (a caller's own ``--output``)."""
    if private:
        await asyncio.to_thread(private_dirs, target.parent)
    else:
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    temp = target.with_name(f"{_TEMP_PREFIX}{uuid.uuid4().hex}-{target.name}")
    digest = ChunkDigest(max_bytes)
    handle = await _open_new(temp, private=private)
    try:
        pending = bytearray()
        async with contextlib.aclosing(iter_chunks(chunks)) as stream:
            async for chunk in stream:
                pending += digest.add(chunk)
                if len(pending) >= WRITE_BUFFER_BYTES:
                    await asyncio.to_thread(handle.write, pending)
                    pending = bytearray()
        await asyncio.to_thread(_write_and_sync, handle, pending)
        handle.close()
        await asyncio.to_thread(os.replace, temp, target)
    except BaseException:
        handle.close()
        temp.unlink(missing_ok=True)
        raise
    return digest


async def _open_new(path: Path, *, private: bool) -> BinaryIO:
    """``path`` created and opened for writing in a thread. Cancelled meanwhile, the file
    the thread opens anyway is closed and removed, not left to the garbage collector."""
    opening = asyncio.ensure_future(asyncio.to_thread(
        lambda: os.fdopen(open_private(path), "wb") if private else open(path, "xb")))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        handle = await opening
        handle.close()
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise


def _write_and_sync(handle: BinaryIO, data: bytes | bytearray) -> None:
    handle.write(data)
    handle.flush()
    os.fsync(handle.fileno())
