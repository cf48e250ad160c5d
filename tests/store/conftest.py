"""Store fixtures: every contract test runs against SQLite and a real PostgreSQL.

PostgreSQL is the server at ``$REELGATE_TEST_PG_DSN`` (default: trust auth on
127.0.0.1:5432, database ``test``). Each test gets a fresh schema with a random name,
dropped afterwards, so runs never see each other's rows.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from gateway.store.base import JobStore
from gateway.store.postgres import PostgresJobStore
from gateway.store.sqlite import SqliteJobStore
from tests.support import FakeClock

PG_DSN = os.environ.get("REELGATE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Backend:
    name: str
    #: a new, unopened store over this test's database (another process or replica)
    make: Callable[[], JobStore]
    #: every row of every table, as text: what an attacker reading the database sees
    dump: Callable[[], str]
    #: the rows of schema_version
    versions: Callable[[], list[int]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=10_000.0)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = f"reelgate_test_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def sqlite_backend(path: Path, clock: FakeClock) -> Backend:
    def dump() -> str:
        with sqlite3.connect(path) as conn:
            text = "\n".join(conn.iterdump())
        # the raw files too: the WAL holds recent pages that iterdump reads through
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        return text + raw.decode("latin-1")

    def versions() -> list[int]:
        with sqlite3.connect(path) as conn:
            return [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]

    return Backend("sqlite", lambda: SqliteJobStore(path, clock=clock.now), dump, versions)


def postgres_backend(schema: str, clock: FakeClock) -> Backend:
    def query(text: str) -> list[tuple]:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            return conn.execute(text).fetchall()

    def dump() -> str:
        rows = query("SELECT t::text FROM jobs t UNION ALL SELECT v::text FROM schema_version v")
        return "\n".join(r for (r,) in rows)

    def versions() -> list[int]:
        return [v for (v,) in query("SELECT version FROM schema_version ORDER BY version")]

    return Backend("postgres", lambda: PostgresJobStore(PG_DSN, schema=schema, clock=clock.now),
                   dump, versions)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Backend:
    if request.param == "sqlite":
        return sqlite_backend(tmp_path / "home" / "reelgate.db", clock)
    return postgres_backend(request.getfixturevalue("pg_schema"), clock)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[JobStore]:
    async with backend.make() as opened:
        yield opened
