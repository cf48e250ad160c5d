"""Verified API keys are remembered (no thread hop or file read per request), and a
revocation still takes effect on the very next request, from this process or another."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from gateway.keys import VERIFIED_MAX_AGE_S, KeyStore


@pytest.fixture
def store(tmp_path):
    keys = KeyStore(tmp_path / "keys.db")
    yield keys
    keys.close()


def count_file_reads(store: KeyStore, monkeypatch) -> list[str]:
    reads: list[str] = []
    verify = store.verify

    def counted(presented: str):
        reads.append(presented)
        return verify(presented)

    monkeypatch.setattr(store, "verify", counted)
    return reads


async def test_a_verified_key_is_answered_from_memory(store, monkeypatch):
    key, secret = store.create("app")
    reads = count_file_reads(store, monkeypatch)
    for _ in range(5):
        assert (await store.averify(secret)).id == key.id
    assert len(reads) == 1
    assert await store.averify(secret + "x") is None  # a wrong secret is never a hit
    assert len(reads) == 2


async def test_a_revocation_in_this_process_takes_effect_on_the_next_request(store):
    _, secret = store.create("app")
    assert await store.averify(secret) is not None
    store.revoke("app")
    assert await store.averify(secret) is None


async def test_a_revocation_by_another_process_takes_effect_on_the_next_request(store, tmp_path):
    _, secret = store.create("app")
    _, other = store.create("other")
    assert await store.averify(secret) is not None
    assert await store.averify(other) is not None
    script = textwrap.dedent(f"""
        from gateway.keys import KeyStore
        KeyStore({str(tmp_path / "keys.db")!r}).revoke("app")
    """)
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script], check=True)
    assert await store.averify(secret) is None
    assert await store.averify(other) is not None  # the others still pass, read again


async def test_memory_is_bounded_in_time(store, monkeypatch):
    _, secret = store.create("app")
    reads = count_file_reads(store, monkeypatch)
    clock = [1000.0]
    store.clock = lambda: clock[0]
    await store.averify(secret)
    clock[0] += VERIFIED_MAX_AGE_S - 0.1
    await store.averify(secret)
    assert len(reads) == 1
    clock[0] += 0.2
    await store.averify(secret)
    assert len(reads) == 2
