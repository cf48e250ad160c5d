"""The ``ResultStorage`` interface: where finished videos are kept once mirrored.

A backend stores bytes under a *key* (``jobs/<job id>.mp4``) and answers with a
:class:`StoredObject` whose ``uri`` names the object from then on: job records keep
the URI, ``/content`` streams it back with :meth:`ResultStorage.open`.

Writes are all-or-nothing in every backend: an upload that fails or is cut off by
the size cap leaves nothing behind under the key, so a retry starts clean and a
reader never sees half a video.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

# re-exported: the errors a backend raises are part of this interface (PEP 484 explicit form)
from gateway.errors import InvalidKey as InvalidKey
from gateway.errors import ObjectNotFound as ObjectNotFound
from gateway.errors import ObjectTooLarge as ObjectTooLarge
from gateway.errors import StorageError as StorageError

MAX_KEY_SEGMENTS = 8
#: what a key segment may contain: no separators, no shell or URL metacharacters
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
#: a whole key: 1-8 segments (one match, not a split and a match per segment; ``fullmatch``,
#: so no trailing newline slips through as ``$`` would let it)
_KEY = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT}){{0,{MAX_KEY_SEGMENTS - 1}}}")

Chunks = AsyncIterable[bytes] | bytes
_Bytes = TypeVar("_Bytes", bytes, bytearray, memoryview)


@dataclass(frozen=True)
class StoredObject:
    uri: str
    size_bytes: int
    sha256: str
    content_type: str

    def to_dict(self) -> dict[str, object]:
        return {"uri": self.uri, "size_bytes": self.size_bytes, "sha256": self.sha256,
                "content_type": self.content_type}


def validate_key(key: str) -> str:
    """``key`` if every ``/``-separated segment is a plain name, else ``InvalidKey``.

    Keys are rejected rather than rewritten: two different keys must never be
    silently mapped onto one object. The same rule holds in every backend, so a key
    that works on a laptop works on S3.
    """
    if _KEY.fullmatch(key) is None:
        raise InvalidKey(f"key {key!r} must be 1-{MAX_KEY_SEGMENTS} '/'-separated names of "
                         "letters, digits, '.', '_' and '-', none starting with '.'")
    return key


class ChunkDigest:
    """Counts and hashes bytes as they stream past, optionally enforcing a size cap."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._sha = hashlib.sha256()

    def add(self, chunk: bytes) -> bytes:
        self._sha.update(self.count(chunk))
        return chunk

    def count(self, chunk: _Bytes) -> _Bytes:
        """``chunk`` counted against the cap but not hashed (:meth:`hash` it later, in order)."""
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise ObjectTooLarge(f"object is larger than the {self.max_bytes}-byte limit")
        return chunk

    def hash(self, data: bytes | bytearray | memoryview) -> None:
        self._sha.update(data)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


async def iter_chunks(chunks: Chunks) -> AsyncGenerator[bytes, None]:
    """``bytes`` or an async iterable of ``bytes``, as an async iterator of non-empty chunks."""
    if isinstance(chunks, (bytes, bytearray, memoryview)):
        if chunks:
            yield bytes(chunks)
        return
    try:
        async for chunk in chunks:
            if chunk:
                yield chunk
    finally:
        # A consumer that stops early (size cap, failed upload) must not leave the
        # producer -- often an open HTTP response -- to the garbage collector.
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class ResultStorage(ABC):
    """Where finished videos live. Implementations: ``LocalStorage``, ``S3Storage``."""

    @abstractmethod
    def uri_for(self, key: str) -> str:
        """The URI an object stored under ``key`` has (whether or not it exists yet)."""

    @abstractmethod
    async def put(self, key: str, chunks: Chunks, content_type: str, *,
                  max_bytes: int | None = None) -> StoredObject:
        """Store ``chunks`` under ``key`` atomically, replacing any object there.

        Raises ``ObjectTooLarge`` (nothing stored) past ``max_bytes``; any error raised
        by ``chunks`` propagates, also with nothing stored.
        """

    @abstractmethod
    def open(self, uri: str) -> AsyncIterator[bytes]:
        """The object's bytes, streamed; ``ObjectNotFound`` when it is not there."""

    @abstractmethod
    async def exists(self, uri: str) -> bool: ...

    @abstractmethod
    async def delete(self, uri: str) -> bool:
        """Remove the object; True when there was one."""

    async def aclose(self) -> None:  # noqa: B027 -- a default, not abstract: most backends hold nothing
        """Release clients or pools (nothing to do for most backends)."""
