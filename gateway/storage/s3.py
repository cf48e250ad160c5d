"""Results in any S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, Ceph, moto...).

Why boto3 in a worker thread rather than aiobotocore: boto3 is the client every
S3-compatible server is tested against, and aiobotocore pins a narrow botocore range
that then fights any boto3 the host application installs. A mirror makes a handful
of large calls per video, so a thread per call costs nothing measurable. boto3
clients are thread-safe; one is shared by all calls.

Uploads stream: bytes are buffered up to ``part_size`` and a multipart upload is
started only when an object outgrows one part, so small videos cost one PUT and a
large one never sits whole in memory. S3 makes an object visible only when its PUT
or CompleteMultipartUpload succeeds, and a failed multipart upload is aborted, so a
write is all-or-nothing as the interface requires.

Credentials: given explicitly (``S3Settings``), else boto3's own chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError

from gateway.provider import Secret
from gateway.storage.base import (
    ChunkDigest,
    Chunks,
    InvalidKey,
    ObjectNotFound,
    ResultStorage,
    StorageError,
    StoredObject,
    iter_chunks,
    validate_key,
)

#: S3 refuses parts under 5 MiB (except the last); 8 MiB is boto3's own default
MIN_PART_BYTES = 5 * 1024 * 1024
DEFAULT_PART_BYTES = 8 * 1024 * 1024
READ_CHUNK_BYTES = 1024 * 1024
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    #: folder inside the bucket, e.g. ``reelgate/videos``
    prefix: str = ""
    #: the server, for anything but AWS (``http://127.0.0.1:9000`` for a local MinIO)
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    #: ``path`` for servers without virtual-host buckets (MinIO, moto); ``auto`` otherwise
    addressing_style: str = "auto"
    part_size: int = DEFAULT_PART_BYTES

    def __post_init__(self) -> None:
        if self.part_size < MIN_PART_BYTES:
            raise ValueError(f"part_size must be at least {MIN_PART_BYTES} bytes (an S3 limit)")
        if self.prefix.strip("/"):
            validate_key(self.prefix.strip("/"))


def _reveal(secret: Secret | None) -> str | None:
    return secret.reveal() if secret is not None else None


def make_s3_client(settings: S3Settings) -> Any:
    config = botocore.config.Config(
        s3={"addressing_style": settings.addressing_style},
        retries={"mode": "standard", "max_attempts": 3},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=_reveal(settings.secret_access_key),
        aws_session_token=_reveal(settings.session_token),
        config=config,
    )


class S3Storage(ResultStorage):
    def __init__(self, settings: S3Settings, *, client: Any | None = None) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix.strip("/")
        self._client = client if client is not None else make_s3_client(settings)

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    async def put(self, key: str, chunks: Chunks, content_type: str, *,
                  max_bytes: int | None = None) -> StoredObject:
        upload = _MultipartUpload(self, self._object_key(key), content_type)
        digest = ChunkDigest(max_bytes)
        buffer = bytearray()
        try:
            async with contextlib.aclosing(iter_chunks(chunks)) as stream:
                async for chunk in stream:
                    buffer += digest.add(chunk)
                    while len(buffer) >= self.settings.part_size:
                        await upload.add_part(bytes(buffer[: self.settings.part_size]))
                        del buffer[: self.settings.part_size]
            if upload.started:
                if buffer:
                    await upload.add_part(bytes(buffer))
                await upload.complete()
            else:
                await self._call(self._client.put_object, Bucket=self.bucket, Key=upload.key,
                                 Body=bytes(buffer), ContentType=content_type)
        except BaseException:
            await asyncio.shield(upload.abort())
            raise
        return StoredObject(self.uri_for(key), digest.size, digest.sha256, content_type)

    async def open(self, uri: str) -> AsyncIterator[bytes]:
        response = await self._call(self._client.get_object, Bucket=self.bucket, Key=self._key_for_uri(uri))
        body = response["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, READ_CHUNK_BYTES):
                yield chunk
        finally:
            body.close()

    async def exists(self, uri: str) -> bool:
        try:
            await self._call(self._client.head_object, Bucket=self.bucket, Key=self._key_for_uri(uri))
        except ObjectNotFound:
            return False
        return True

    async def delete(self, uri: str) -> bool:
        # S3's DELETE succeeds whether or not the object existed; ask first to answer.
        if not await self.exists(uri):
            return False
        await self._call(self._client.delete_object, Bucket=self.bucket, Key=self._key_for_uri(uri))
        return True

    async def aclose(self) -> None:
        self._client.close()

    # -- internals -----------------------------------------------------------------------------
    async def _call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(method, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            where = f"s3://{self.bucket}/{kwargs.get('Key', '')}"
            if code in _MISSING_CODES:
                raise ObjectNotFound(f"no stored object at {where}") from exc
            raise StorageError(f"S3 {method.__name__} on {where} failed: {code or 'error'}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 {method.__name__} failed: {type(exc).__name__}") from exc

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _key_for_uri(self, uri: str) -> str:
        parts = urlsplit(uri)
        if parts.scheme != "s3" or parts.netloc != self.bucket:
            raise InvalidKey(f"{uri!r} is not in bucket {self.bucket!r}")
        object_key = parts.path.lstrip("/")
        key = object_key.removeprefix(f"{self.prefix}/") if self.prefix else object_key
        if self.prefix and key == object_key:
            raise InvalidKey(f"{uri!r} is outside prefix {self.prefix!r}")
        return self._object_key(key)


class _MultipartUpload:
    """One multipart upload, started lazily at its first part."""

    def __init__(self, storage: S3Storage, key: str, content_type: str) -> None:
        self.storage = storage
        self.key = key
        self.content_type = content_type
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    @property
    def started(self) -> bool:
        return self.upload_id is not None

    async def add_part(self, data: bytes) -> None:
        s3 = self.storage._client
        if self.upload_id is None:
            created = await self.storage._call(s3.create_multipart_upload, Bucket=self.storage.bucket,
                                               Key=self.key, ContentType=self.content_type)
            self.upload_id = created["UploadId"]
        number = len(self.parts) + 1
        sent = await self.storage._call(s3.upload_part, Bucket=self.storage.bucket, Key=self.key,
                                        UploadId=self.upload_id, PartNumber=number, Body=data)
        self.parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    async def complete(self) -> None:
        await self.storage._call(self.storage._client.complete_multipart_upload, Bucket=self.storage.bucket,
                                 Key=self.key, UploadId=self.upload_id,
                                 MultipartUpload={"Parts": self.parts})

    async def abort(self) -> None:
        if self.upload_id is None:
            return
        try:
            await self.storage._call(self.storage._client.abort_multipart_upload, Bucket=self.storage.bucket,
                                     Key=self.key, UploadId=self.upload_id)
        except StorageError:
            pass  # the original failure matters more; a bucket lifecycle rule reaps leftovers
        self.upload_id = None
