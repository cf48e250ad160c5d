"""Where finished videos are kept: a local directory (default) or an S3-compatible bucket.

``build_storage(config, env)`` turns the ``storage:`` section of ``reelgate.yaml``
into a backend::

    storage:
      kind: s3                       # local (default) | s3
      mirror: true                   # copy every finished video here
      max_bytes: 1073741824
      s3:
        bucket: my-videos
        prefix: reelgate
        endpoint_url: http://127.0.0.1:9000   # omit for AWS
        region: us-east-1
        addressing_style: path
        # credentials: REELGATE_S3_ACCESS_KEY_ID / REELGATE_S3_SECRET_ACCESS_KEY,
        # else boto3's chain (AWS_ACCESS_KEY_ID..., profiles, instance roles)

The S3 backend needs boto3; it is imported only when chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.storage.base import (
    InvalidKey,
    ObjectNotFound,
    ObjectTooLarge,
    ResultStorage,
    StorageError,
    StoredObject,
    validate_key,
)
from gateway.storage.local import LocalStorage, default_videos_dir
from gateway.storage.mirror import DEFAULT_MAX_BYTES, MirrorOptions, capped, mirror

ACCESS_KEY_ENV = "REELGATE_S3_ACCESS_KEY_ID"
SECRET_KEY_ENV = "REELGATE_S3_SECRET_ACCESS_KEY"
SESSION_TOKEN_ENV = "REELGATE_S3_SESSION_TOKEN"

__all__ = [
    "InvalidKey", "LocalStorage", "MirrorOptions", "ObjectNotFound", "ObjectTooLarge",
    "ResultStorage", "S3Config", "StorageConfig", "StorageError", "StoredObject",
    "build_storage", "capped", "default_videos_dir", "mirror", "validate_key",
]


class S3Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(min_length=3)
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    part_size_mb: int = Field(default=8, ge=5)


class StorageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "s3"] = "local"
    #: copy each finished video into storage (vendor URLs expire)
    mirror: bool = False
    #: the local directory; default ``$REELGATE_HOME/videos``
    path: str | None = None
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, gt=0)
    s3: S3Config | None = None


def build_storage(config: StorageConfig, env: Mapping[str, str]) -> ResultStorage:
    """The backend ``config`` names; secrets come from ``env`` only."""
    if config.kind == "local":
        return LocalStorage(Path(config.path).expanduser() if config.path else default_videos_dir(env))
    if config.s3 is None:
        raise StorageError("storage.kind is s3 but storage.s3 (bucket, ...) is missing")
    from gateway.provider import Secret
    from gateway.storage.s3 import S3Settings, S3Storage

    def secret(name: str) -> Secret | None:
        return Secret(env[name]) if env.get(name) else None

    return S3Storage(S3Settings(
        bucket=config.s3.bucket, prefix=config.s3.prefix, endpoint_url=config.s3.endpoint_url,
        region=config.s3.region, addressing_style=config.s3.addressing_style,
        part_size=config.s3.part_size_mb * 1024 * 1024,
        access_key_id=env.get(ACCESS_KEY_ENV) or None,
        secret_access_key=secret(SECRET_KEY_ENV), session_token=secret(SESSION_TOKEN_ENV),
    ))
