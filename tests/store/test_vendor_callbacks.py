"""Vendor callbacks naming an attempt (``bind_callback`` / ``bound_job``), on SQLite and a
real PostgreSQL: durable across a reopen, one-to-one, forgotten when they expire."""

from __future__ import annotations

import asyncio

from gateway.store.base import JobStore
from tests.store.conftest import Backend
from tests.support import FakeClock


async def test_a_bound_callback_survives_a_restart_and_expires(backend: Backend, store: JobStore,
                                                                clock: FakeClock) -> None:
    assert await store.bound_job("fal", "job_1.1") is None
    assert await store.bind_callback("fal", "req-1", "job_1.1", ttl_s=60)
    async with backend.make() as reopened:  # a restarted process finds it
        assert await reopened.bound_job("fal", "job_1.1") == "req-1"
        assert await reopened.bound_job("apiframe", "job_1.1") is None  # per vendor
    clock.t += 61
    assert await store.bound_job("fal", "job_1.1") is None


async def test_a_binding_is_one_to_one_and_idempotent(store: JobStore) -> None:
    assert await store.bind_callback("fal", "req-1", "job_1.1", ttl_s=60)
    assert await store.bind_callback("fal", "req-1", "job_1.1", ttl_s=60)  # the vendor's retry: same pair
    assert not await store.bind_callback("fal", "req-1", "job_2.1", ttl_s=60)  # that job has its attempt
    assert not await store.bind_callback("fal", "req-2", "job_1.1", ttl_s=60)  # that attempt has its job
    assert await store.bound_job("fal", "job_1.1") == "req-1" and await store.bound_job("fal", "job_2.1") is None
    assert await store.bind_callback("apiframe", "req-1", "job_2.1", ttl_s=60)  # another vendor's ids


async def test_concurrent_bindings_of_one_vendor_job_admit_one_attempt(backend: Backend, store: JobStore) -> None:
    async with backend.make() as other:  # another replica on the same database
        bound = await asyncio.gather(*(s.bind_callback("fal", "req-9", f"job_{i}.1", ttl_s=60)
                                       for i, s in enumerate([store, other] * 10)))
    assert sum(bound) == 1
