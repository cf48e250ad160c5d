"""Caller keys on both backends: PostgreSQL's ``api_keys`` table (over the store's pool)
and SQLite's ``keys.db`` (one kept connection). Hashed at rest, revocable, a verified key
trusted for ``cache_s`` at most, and no new connection per lookup."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from gateway.errors import InvalidRequest
from gateway.keys import Keys, KeyStore, open_keys
from gateway.store.postgres import PostgresJobStore
from gateway.store.postgres_keys import PostgresKeys
from gateway.store.sqlite import SqliteJobStore
from tests.store.conftest import PG_DSN
from tests.support import FakeClock

MakeKeys = Callable[..., Keys]


@pytest.fixture(params=["sqlite", "postgres"])
async def make_keys(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeKeys]:
    """``make_keys(cache_s=..., clock=...)``: one replica's view of the same keys."""
    made: list[Keys] = []
    if request.param == "sqlite":
        def make(**options: object) -> Keys:
            made.append(KeyStore(tmp_path / "home" / "keys.db", **options))  # type: ignore[arg-type]
            return made[-1]
        yield make
    else:
        schema = request.getfixturevalue("pg_schema")
        store = PostgresJobStore(PG_DSN, schema=schema)
        await store.open()

        def make(**options: object) -> Keys:
            made.append(PostgresKeys(store, **options))  # type: ignore[arg-type]
            return made[-1]
        yield make
        await store.close()
    for keys in made:
        await keys.aclose()


async def test_a_key_verifies_lists_and_revokes(make_keys: MakeKeys) -> None:
    keys = make_keys(cache_s=0)
    key, plaintext = await keys.acreate("app", budget_usd_per_day=5.0, allowed_providers=["fal"])
    assert plaintext.startswith(f"rg_{key.id}_")
    assert await keys.averify(plaintext) == key
    assert key.budget_usd_per_day == 5.0 and key.allowed_providers == ("fal",)
    assert await keys.averify(plaintext + "x") is None
    assert await keys.averify(f"rg_{key.id}_wrong") is None
    assert await keys.averify("rg_nosuchid_secret") is None
    assert [k.name for k in await keys.alist()] == ["app"]
    with pytest.raises(InvalidRequest) as taken:
        await keys.acreate("app")
    assert taken.value.field == "name"
    other, _ = await keys.acreate("other")
    revoked = await keys.arevoke("app")
    assert revoked.id == key.id and not revoked.active
    assert await keys.averify(plaintext) is None
    with pytest.raises(InvalidRequest):
        await keys.arevoke("app")  # already revoked
    assert (await keys.arevoke(other.id)).name == "other"  # by id too
    assert [k.active for k in await keys.alist()] == [False, False]


async def test_a_revocation_elsewhere_holds_here_within_cache_s(make_keys: MakeKeys) -> None:
    clock = FakeClock(start=100.0)
    here, elsewhere = make_keys(cache_s=2.0, clock=clock.now), make_keys(cache_s=2.0)
    key, plaintext = await elsewhere.acreate("app")
    assert await here.averify(plaintext) == key
    await elsewhere.arevoke("app")  # another replica, or the CLI
    clock.t += 1.0
    assert await here.averify(plaintext) == key  # trusted from the cache for now...
    clock.t += 1.0
    assert await here.averify(plaintext) is None  # ...never longer than cache_s
    clock.t += 10.0
    assert await here.averify(plaintext) is None


async def test_sqlite_keys_open_no_connection_per_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = KeyStore(tmp_path / "keys.db", cache_s=0)
    _, plaintext = keys.create("app")
    opened: list[object] = []
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: opened.append(a) or real(*a, **k))
    for _ in range(20):
        assert await keys.averify(plaintext) is not None
    assert opened == []
    await keys.aclose()


async def test_postgres_keys_use_the_stores_pool_and_keep_only_a_digest(pg_schema: str) -> None:
    async with PostgresJobStore(PG_DSN, schema=pg_schema, max_size=2) as store:
        keys = PostgresKeys(store, cache_s=0)
        _, plaintext = await keys.acreate("app")
        before = store.pool.get_stats().get("connections_num", 0)
        for _ in range(20):
            assert await keys.averify(plaintext) is not None
        assert store.pool.get_stats().get("connections_num", 0) == before
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        rows = conn.execute("SELECT k::text FROM api_keys k").fetchall()
    secret = plaintext.split("_", 2)[2]
    assert rows and secret not in str(rows)


async def test_open_keys_follows_the_store(tmp_path: Path, pg_schema: str) -> None:
    async with SqliteJobStore(tmp_path / "reelgate.db") as lite:
        chosen = open_keys(lite, tmp_path / "home")
        assert isinstance(chosen, KeyStore) and chosen.path == tmp_path / "home" / "keys.db"
        await chosen.aclose()
    async with PostgresJobStore(PG_DSN, schema=pg_schema) as pg:
        assert isinstance(open_keys(pg, tmp_path / "home"), PostgresKeys)
