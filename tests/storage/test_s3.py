"""S3Storage against a real S3-compatible server on loopback (moto's server mode)."""

from __future__ import annotations

import functools
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from gateway.provider import Secret
from gateway.storage import (
    InvalidKey,
    ObjectTooLarge,
    S3Config,
    StorageConfig,
    StorageError,
    build_storage,
)
from gateway.storage.s3 import MIN_PART_BYTES, S3Settings, S3Storage
from tests.storage.contract import check_a_failing_producer_leaves_the_previous_object, check_exists_and_delete

ACCESS_KEY = "reelgate-test-access"
SECRET_KEY = "reelgate-test-secret-0001"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(endpoint: str) -> str:
    name = f"reelgate-{uuid.uuid4().hex[:12]}"
    admin(endpoint).create_bucket(Bucket=name)
    return name


@functools.cache
def admin(endpoint: str) -> Any:
    """A plain boto3 client: how the test inspects the bucket behind the storage's back."""
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)


def settings(endpoint: str, bucket: str, **overrides: Any) -> S3Settings:
    return S3Settings(bucket=bucket, endpoint_url=endpoint, region=REGION, addressing_style="path",
                      access_key_id=ACCESS_KEY, secret_access_key=Secret(SECRET_KEY),
                      **{"prefix": "reelgate/videos", **overrides})


@pytest.fixture
async def storage(endpoint: str, bucket: str) -> AsyncIterator[S3Storage]:
    backend = S3Storage(settings(endpoint, bucket))
    yield backend
    await backend.aclose()


async def chunks_of(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def read_all(storage: S3Storage, uri: str) -> bytes:
    return b"".join([chunk async for chunk in storage.open(uri)])


def keys_in(endpoint: str, bucket: str) -> list[str]:
    listing = admin(endpoint).list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in listing.get("Contents", [])]


async def test_small_object_round_trip_under_the_prefix(storage: S3Storage, endpoint: str, bucket: str) -> None:
    data = b"\x00\x00\x00\x18ftypmp42" + os.urandom(100_000)
    stored = await storage.put("jobs/job_1.mp4", chunks_of(data, 4096), "video/mp4")
    assert stored.uri == f"s3://{bucket}/reelgate/videos/jobs/job_1.mp4" == storage.uri_for("jobs/job_1.mp4")
    assert (stored.size_bytes, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert await read_all(storage, stored.uri) == data
    head = admin(endpoint).head_object(Bucket=bucket, Key="reelgate/videos/jobs/job_1.mp4")
    assert head["ContentType"] == "video/mp4" and head["ContentLength"] == len(data)


async def test_large_object_goes_up_in_parts(storage: S3Storage, endpoint: str, bucket: str) -> None:
    data = os.urandom(2 * MIN_PART_BYTES + 12_345)
    backend = S3Storage(settings(endpoint, bucket, part_size=MIN_PART_BYTES))
    try:
        stored = await backend.put("big.mp4", chunks_of(data), "video/mp4")
    finally:
        await backend.aclose()
    head = admin(endpoint).head_object(Bucket=bucket, Key="reelgate/videos/big.mp4")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart ETag names its part count
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await read_all(storage, stored.uri) == data


async def test_over_the_cap_aborts_the_upload_and_stores_nothing(endpoint: str, bucket: str) -> None:
    backend = S3Storage(settings(endpoint, bucket, part_size=MIN_PART_BYTES))
    try:
        with pytest.raises(ObjectTooLarge):
            await backend.put("big.mp4", chunks_of(os.urandom(2 * MIN_PART_BYTES)), "video/mp4",
                              max_bytes=MIN_PART_BYTES + 1)
    finally:
        await backend.aclose()
    assert keys_in(endpoint, bucket) == []
    assert admin(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_a_failing_producer_leaves_the_previous_object_intact(storage: S3Storage, endpoint: str,
                                                                   bucket: str) -> None:
    await check_a_failing_producer_leaves_the_previous_object(storage)
    assert keys_in(endpoint, bucket) == ["reelgate/videos/a.mp4"]
    assert admin(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_exists_delete_and_missing_objects(storage: S3Storage) -> None:
    await check_exists_and_delete(storage)


@pytest.mark.parametrize("uri", [
    "s3://another-bucket/reelgate/videos/a.mp4",   # another bucket
    "s3://{bucket}/elsewhere/a.mp4",               # outside the prefix
    "s3://{bucket}/reelgate/videos/../a.mp4",      # climbing out
    "file:///etc/passwd",
])
async def test_uris_outside_the_bucket_and_prefix_are_rejected(storage: S3Storage, bucket: str, uri: str) -> None:
    with pytest.raises(InvalidKey):
        await storage.exists(uri.format(bucket=bucket))


async def test_keys_follow_the_same_rule_as_local_storage(storage: S3Storage) -> None:
    with pytest.raises(InvalidKey):
        await storage.put("../a.mp4", b"x", "video/mp4")


async def test_a_missing_bucket_is_a_storage_error_without_the_secret(endpoint: str, bucket: str) -> None:
    backend = S3Storage(settings(endpoint, "no-such-bucket-here"))
    try:
        with pytest.raises(StorageError) as caught:
            await backend.put("a.mp4", b"x", "video/mp4")
    finally:
        await backend.aclose()
    assert "NoSuchBucket" in str(caught.value) and SECRET_KEY not in str(caught.value)


def test_part_size_below_the_s3_minimum_is_refused(bucket: str) -> None:
    with pytest.raises(ValueError, match="part_size"):
        S3Settings(bucket=bucket, part_size=MIN_PART_BYTES - 1)


async def test_build_storage_reads_credentials_from_the_environment(endpoint: str, bucket: str) -> None:
    config = StorageConfig(kind="s3", s3=S3Config(bucket=bucket, prefix="p", endpoint_url=endpoint,
                                                  region=REGION, addressing_style="path"))
    env = {"REELGATE_S3_ACCESS_KEY_ID": ACCESS_KEY, "REELGATE_S3_SECRET_ACCESS_KEY": SECRET_KEY}
    backend = build_storage(config, env)
    try:
        assert isinstance(backend, S3Storage)
        assert SECRET_KEY not in repr(backend.settings)
        stored = await backend.put("a.mp4", b"abc", "video/mp4")
        assert stored.uri == f"s3://{bucket}/p/a.mp4" and keys_in(endpoint, bucket) == ["p/a.mp4"]
    finally:
        await backend.aclose()


def test_build_storage_s3_without_a_bucket_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="storage.s3"):
        build_storage(StorageConfig(kind="s3"), {})
