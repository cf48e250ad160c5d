"""Results in a local directory (default ``$REELGATE_HOME/videos``).

Writes are :func:`gateway.storage.atomic_file.write_file`: an unnamed file (or a hidden
temporary one) in the target's own directory, fsynced and then named, the directory fsynced
after, so a crash or a cap hit mid-download never leaves a truncated video under a real key
and a put that returned survives a crash. A small video is written on the event loop (into
the page cache) and made durable by the keeper thread's ``syncfs`` rounds, shared with the
puts finishing at the same time (:mod:`gateway.storage.keeper`); a larger one is written by
a worker thread (one call per MiB), so a slow disk does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gateway.home import reelgate_home
from gateway.permissions import private_dirs
from gateway.storage.atomic_file import write_into
from gateway.storage.base import (
    Chunks,
    InvalidKey,
    ObjectNotFound,
    ResultStorage,
    StoredObject,
    validate_key,
)

VIDEOS_DIR = "videos"
READ_CHUNK_BYTES = 1024 * 1024
#: directories checked to lie under the root, remembered by identity; past this many the
#: table starts again (a forgotten one is checked again, nothing more)
_MAX_CHECKED_DIRS = 1024


def default_videos_dir(env: Mapping[str, str]) -> Path:
    """``$REELGATE_HOME/videos``, with ``REELGATE_HOME`` defaulting to ``~/.reelgate``."""
    return reelgate_home(env) / VIDEOS_DIR


class LocalStorage(ResultStorage):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        #: the root's URI: a key's characters need no quoting, so an object's URI is this, ``/``
        #: and the key (what ``Path.as_uri`` gives, without quoting the whole path per put)
        self._root_uri = self.root.as_uri().rstrip("/")
        #: directory -> (st_dev, st_ino) when it was found under the root
        self._checked: dict[Path, tuple[int, int]] = {}
        #: a key's directory part (``jobs``) -> that directory: one ``Path`` each, whose string
        #: and hash are computed once (see :func:`write_into`)
        self._folders: dict[str, Path] = {}

    def uri_for(self, key: str) -> str:
        return self._path_for_key(key).as_uri()

    async def put(self, key: str, chunks: Chunks, content_type: str, *,
                  max_bytes: int | None = None) -> StoredObject:
        folder, _, name = validate_key(key).rpartition("/")
        directory = self._folders.get(folder) or self._folder(folder)  # checked in the write
        # a caller's video is for that caller: 0600 from the first byte (its link or rename keeps it)
        digest = await write_into(directory, name, chunks, max_bytes=max_bytes, private=True,
                                  prepare_dir=self._ready_dir)
        return StoredObject(f"{self._root_uri}/{key}", digest.size, digest.sha256, content_type)

    def _folder(self, folder: str) -> Path:
        if len(self._folders) >= _MAX_CHECKED_DIRS:
            self._folders.clear()
        directory = self._folders[folder] = self.root.joinpath(*folder.split("/")) if folder else self.root
        return directory

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

    def _ready_dir(self, directory: Path) -> None:
        """``directory`` (a put's, in its worker thread) made 0700 if missing, and under the
        root. Resolving every component of every put's path was the dearest part of a
        small put, so a directory found under the root is remembered by its identity: one
        ``stat`` then shows it is still that directory, whatever path leads there (a symlink
        planted since leads to another directory, which is checked again). The file itself
        cannot lead out: it is created unnamed (or ``O_EXCL``) and linked or renamed, and none of
        these follows a symlink at the name."""
        try:
            info = os.stat(directory)
        except FileNotFoundError:
            info = None
        if info is not None and self._checked.get(directory) == (info.st_dev, info.st_ino):
            return
        self._inside_root(directory, directory.relative_to(self.root).as_posix() or ".")
        if info is None:
            private_dirs(directory)
            info = os.stat(directory)
        if len(self._checked) >= _MAX_CHECKED_DIRS:
            self._checked.clear()
        self._checked[directory] = (info.st_dev, info.st_ino)

    def _inside_root(self, path: Path, key: str) -> Path:
        # Segments are plain names, but a symlink planted inside the root could still
        # point out of it; the resolved path must stay under the root.
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise InvalidKey(f"key {key!r} resolves outside {self.root}")
        return path
